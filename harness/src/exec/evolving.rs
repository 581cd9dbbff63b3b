//! A persistent target whose layout evolves on command, and a persistent caller that calls it
//! on command, for the state-machine tests and the race cases (the catalogue's executor forks
//! a fresh target and caller per case instead).
//!
//! The target ([`Evolving`]) is a forked child (registered with [`proc`], so it is killed and
//! reaped when it drops, on a panic, or on SIGINT) that reads fixed-size commands from a pipe
//! and applies each: map, unmap, mprotect, write, start or end a thread, send back bytes, map
//! regions afresh, or race one of these against a call. Started with a layout
//! ([`Evolving::start_laid`]) it maps it before its first command, and maps any subset of it
//! afresh on one command ([`Evolving::relay`], or as part of arming a racer).
//!
//! The caller ([`Caller`]) is a forked child too: it builds the plan's caller regions and
//! iovec arrays once (as [`super::execute`]'s caller does), then makes the plan's call on
//! command, as often as asked, answering with the result and leaving the bytes of its regions
//! in a [`Shared`] mapping. After each call it maps afresh whatever the call or that read-back
//! can have changed, so every call starts from the bytes and protections of a fresh caller.
//! For races ([`Caller::race`]) it releases the armed racer itself, the moment before it makes
//! the call.
//!
//! Like every forked child here both run raw syscalls only, on data that existed before the
//! fork: no allocation, no locks.

#![allow(unsafe_code)]

use super::layout;
use super::proc::{self, Child};
use crate::case::{Fill, RegionKind, Syscall};
use crate::plan::{Plan, Region};
use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Threads a target can have at once besides its main thread.
pub const MAX_THREADS: usize = 16;

/// The stack of a racing thread ([`OP_RACE`] with `thread_exit`), unmapped once it exited.
static STACKS: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
/// The racer's parameters, for a racing thread: the shared page, its CPU, its delay, and
/// whether it yields while it waits (one CPU).
static RACE_SHARED: AtomicU64 = AtomicU64::new(0);
static RACE_CPU: AtomicU64 = AtomicU64::new(0);
static RACE_DELAY: AtomicU64 = AtomicU64::new(0);
static RACE_YIELD: AtomicU64 = AtomicU64::new(0);

/// Set to 1 to tell the thread in that slot to exit (futex word).
static STOP: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(0) }; MAX_THREADS];
/// The thread's TID while it lives: CLONE_PARENT_SETTID writes it, CLONE_CHILD_CLEARTID
/// clears it and wakes a futex on it when the thread has released its mm.
static TIDS: [AtomicI32; MAX_THREADS] = [const { AtomicI32::new(0) }; MAX_THREADS];

const OP_MAP: u64 = 1;
const OP_UNMAP: u64 = 2;
const OP_PROTECT: u64 = 3;
const OP_WRITE: u64 = 4;
const OP_SPAWN: u64 = 5;
const OP_EXIT_THREAD: u64 = 6;
const OP_DUMP: u64 = 7;
const OP_RACE: u64 = 8;
const OP_RELAY: u64 = 9;
/// A command: sixteen little-endian u64 words (one atomic pipe write).
const MSG_WORDS: usize = 16;
const MSG: usize = MSG_WORDS * 8;

/// How [`Evolving::map`] fills fresh pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapFill {
    /// The offset-encoding pattern of [`crate::pattern`] with this tag (offsets from the
    /// mapping's start).
    Pattern(u8),
    /// Every byte of page `i` of the mapping is `page_byte(tag, i)` (fast for big mappings).
    PerPage(u8),
    /// Left as mapped: zero, and no memory used until touched (`fill: untouched`).
    Zero,
    /// Not anonymous memory: the `[aio]` ring of a new AIO context, moved here
    /// ([`crate::sys::aio_ring_at`]); the kernel fills it.
    AioRing,
}

impl MapFill {
    /// The fill as the `arg` word of a map command.
    fn arg(self) -> u64 {
        match self {
            MapFill::Pattern(tag) => tag as u64,
            MapFill::PerPage(tag) => 1 << 8 | tag as u64,
            MapFill::Zero => 2 << 8,
            MapFill::AioRing => 3 << 8,
        }
    }
}

/// The byte that fills page `i` of a [`MapFill::PerPage`] mapping: never 0xff, which
/// [`RaceAction::Write`] callers may use as the "new" value.
pub fn page_byte(tag: u8, i: u64) -> u8 {
    (tag as u64 + i) as u8 % 0xfe + 1
}

/// One region of a target's layout ([`Evolving::start_laid`]): fresh read-write anonymous
/// memory at `addr` (as [`Evolving::map`] makes it), filled, then given PROT_* bits `prot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lay {
    pub addr: u64,
    pub len: u64,
    pub fill: MapFill,
    pub prot: i32,
}

impl Lay {
    /// A plan's mapped anonymous region as a race target lays it out: its pattern (or
    /// zero, for `fill: untouched`) and its protection.
    pub fn of(r: &Region) -> Lay {
        Lay {
            addr: r.start,
            len: r.len,
            fill: match (r.kind, r.fill) {
                (crate::case::RegionKind::AioRing, _) => MapFill::AioRing,
                (_, Fill::Pattern) => MapFill::Pattern(r.tag),
                (_, Fill::Untouched) => MapFill::Zero,
            },
            prot: r.prot.bits(),
        }
    }
}

/// The most regions a layout may have: one bit each in a mask ([`Evolving::relay`]).
pub const MAX_LAID: usize = 64;

/// What the racing target thread does while the call is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaceAction {
    /// `munmap(addr, len)`.
    Munmap,
    /// `mprotect(addr, len, prot)` with these PROT_* bits.
    Mprotect(i32),
    /// `memset(addr, byte, len)` (the range must be writable).
    Write(u8),
    /// `exit_group(0)`: the whole target exits.
    Exit,
    /// A new thread of the target is the racer, and the call names it by its TID: it
    /// `exit`s (that thread only).
    ThreadExit,
}

/// A racer to arm for [`Caller::race`]: its action on `[addr, addr+len)`, and when,
/// relative to the call: `offset_ns` after the caller releases it and starts the call, or,
/// when negative, that long before (the caller waits after the release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceSetup {
    pub action: RaceAction,
    pub addr: u64,
    pub len: u64,
    pub offset_ns: i64,
}

/// What one [`Caller::race`] produced.
#[derive(Debug, Clone)]
pub struct RaceCall {
    /// The call's result.
    pub call: Result<u64, i32>,
    /// The racer's own result (0, or -errno); `None` without a racer, or when the target
    /// exited.
    pub action: Option<i64>,
    /// How long the call took, measured in the caller around the syscall.
    pub call_ns: u64,
    /// The caller's dumped regions after the call, in plan order.
    pub caller_dumps: Vec<Vec<u8>>,
}

/// Where the racer and the caller run: on different CPUs when there are two they may use,
/// so that neither waits for the other to be preempted. With one CPU the racer yields while
/// it waits, so the caller gets to release it, and the caller sleeps through its lead, so
/// the racer gets to go first ([`CallerOpts::one_cpu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceCpus {
    pub racer: usize,
    pub caller: Option<usize>,
}

impl RaceCpus {
    /// From the calling thread's CPU mask.
    pub fn detect() -> RaceCpus {
        let cpus: Vec<usize> = crate::sys::affinity()
            .map(|s| {
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| {
                        // SAFETY: reads the bit of a CPU below CPU_SETSIZE.
                        unsafe { libc::CPU_ISSET(c, &s) }
                    })
                    .collect()
            })
            .unwrap_or_default();
        match cpus.as_slice() {
            [a, b, ..] => RaceCpus {
                racer: *a,
                caller: Some(*b),
            },
            [a] => RaceCpus {
                racer: *a,
                caller: None,
            },
            [] => RaceCpus {
                racer: 0,
                caller: None,
            },
        }
    }
}

/// Where the read-back room starts in a [`Shared`] mapping: after its control page.
const ROOM: usize = 4096;

/// A MAP_SHARED anonymous mapping, the same memory in every process forked while it lives:
/// its first page holds the racer's release word (a u32 at 0) and the release time
/// (CLOCK_MONOTONIC ns, a u64 at 8); the rest is room for bytes read back from a caller or a
/// target, so they need not go through a pipe. Unmapped when the last [`Rc`] drops.
pub struct Shared {
    ptr: *mut u8,
    len: usize,
}

impl Shared {
    /// The control page and `room` bytes of room (rounded up to pages; reserved lazily).
    pub fn new(room: u64) -> Result<Rc<Shared>, String> {
        let len = ROOM + (room as usize).next_multiple_of(4096);
        // Used only through this struct (and by children that inherit it), unmapped in Drop.
        let ptr = super::map_fresh(len, libc::MAP_SHARED | libc::MAP_NORESERVE)
            .map_err(|e| format!("mmap(shared): {}", crate::errno::name(e)))?;
        Ok(Rc::new(Shared { ptr, len }))
    }

    fn release(&self) -> &AtomicU32 {
        // SAFETY: the first word of the control page, aligned, alive as long as `self`.
        unsafe { &*(self.ptr as *const AtomicU32) }
    }

    /// Bytes of room.
    fn room(&self) -> usize {
        self.len - ROOM
    }

    /// A copy of room bytes `[off, off+len)`, which a child finished writing before it
    /// answered on a pipe.
    fn read_room(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.room(), "read past the shared room");
        fence(Ordering::SeqCst);
        let mut v = vec![0u8; len];
        // SAFETY: `[ROOM+off, ROOM+off+len)` lies in the mapping (asserted above); no process
        // writes it now (the writer answered on a pipe after writing, and waits for a command).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(ROOM + off), v.as_mut_ptr(), len) };
        v
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, which nothing in this process uses any more
        // (children keep their own copies of the mapping).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A running persistent target; dropping it kills and reaps it.
pub struct Evolving {
    child: Option<Child>,
    cmd: OwnedFd,
    reply: OwnedFd,
    /// The target's pid (its main thread).
    pub pid: i32,
    timeout: Duration,
    shared: Rc<Shared>,
    /// A reply on the way that says whether the layout was built ([`Evolving::start_laid`]).
    unlaid: Cell<bool>,
}

fn errno() -> i64 {
    -(nix::errno::Errno::last_raw() as i64)
}

fn futex(word: *const u32, op: i32, val: u32) {
    // SAFETY: `word` points to a static futex word of this process; FUTEX_WAIT/FUTEX_WAKE
    // with a null timeout read it and touch nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            op,
            val,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

extern "C" fn idle_thread(arg: *mut libc::c_void) -> libc::c_int {
    let slot = arg as usize;
    loop {
        if STOP[slot].load(Ordering::SeqCst) != 0 {
            // SAFETY: SYS_exit ends this thread only; CLONE_CHILD_CLEARTID then clears its TID.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
        }
        futex(STOP[slot].as_ptr(), libc::FUTEX_WAIT, 0);
    }
}

fn spawn(slot: usize) -> i64 {
    spawn_with(slot, idle_thread).0
}

/// Waits for the racer's release and then for its delay: spinning (its own CPU) or yielding
/// (one CPU, where the caller must run to release it).
fn await_release(shared: *const AtomicU32, delay: u64, yields: bool) {
    let pause = || {
        if yields {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            std::hint::spin_loop();
        }
    };
    // SAFETY: `shared` is the MAP_SHARED page mapped before the fork; word 0 and the u64 at
    // byte 8 are atomics, aligned.
    let (go, at) = unsafe { (&*shared, &*(shared as *const AtomicU64).add(1)) };
    while go.load(Ordering::SeqCst) == 0 {
        pause();
    }
    let until = at.load(Ordering::SeqCst).saturating_add(delay);
    while now_ns() < until {
        pause();
    }
}

extern "C" fn racing_exit_thread(_: *mut libc::c_void) -> libc::c_int {
    let _ = crate::sys::pin_to_cpu(RACE_CPU.load(Ordering::SeqCst) as usize);
    await_release(
        RACE_SHARED.load(Ordering::SeqCst) as *const AtomicU32,
        RACE_DELAY.load(Ordering::SeqCst),
        RACE_YIELD.load(Ordering::SeqCst) != 0,
    );
    // SAFETY: SYS_exit ends this thread only; CLONE_CHILD_CLEARTID then clears its TID.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    0
}

/// Starts a thread running `f` in `slot`; its TID (or -errno) and its stack.
fn spawn_with(slot: usize, f: extern "C" fn(*mut libc::c_void) -> libc::c_int) -> (i64, u64) {
    if slot >= MAX_THREADS || TIDS[slot].load(Ordering::SeqCst) != 0 {
        return (-(libc::EBUSY as i64), 0);
    }
    // At a kernel-chosen address, never in the window the tests lay out (fixed, and far
    // from mmap_base).
    let stack = match super::map_stack(STACK) {
        Ok(p) => p,
        Err(e) => return (-(e as i64), 0),
    };
    STOP[slot].store(0, Ordering::SeqCst);
    let flags = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID;
    let tid_word = TIDS[slot].as_ptr();
    // SAFETY: the stack top is the end of the fresh 64 KiB mapping, used by nothing else (an
    // idle thread's is left mapped after it exits, a racing thread's unmapped only once its
    // TID is cleared, when it no longer runs in user space); `idle_thread` and
    // `racing_exit_thread` make raw syscalls on statics only. The TID words are statics,
    // alive as long as the process.
    let tid = unsafe {
        libc::clone(
            f,
            stack.add(STACK).cast(),
            flags,
            slot as *mut libc::c_void,
            tid_word,
            std::ptr::null_mut::<libc::c_void>(),
            tid_word,
        )
    };
    if tid < 0 {
        return (errno(), stack as u64);
    }
    (tid as i64, stack as u64)
}

const STACK: usize = 64 << 10;

/// Waits until the thread in `slot` has released its mm (CLONE_CHILD_CLEARTID).
fn await_thread_gone(slot: usize) {
    loop {
        let tid = TIDS[slot].load(Ordering::SeqCst);
        if tid == 0 {
            return;
        }
        futex(TIDS[slot].as_ptr().cast(), libc::FUTEX_WAIT, tid as u32);
    }
}

/// Arms a racing thread that exits after its release; its TID (the call's pid), or -errno.
fn arm_exiting_thread(
    shared: *const AtomicU32,
    cpu: u64,
    delay: u64,
    yields: bool,
) -> (i64, usize) {
    let Some(slot) = (0..MAX_THREADS).find(|&s| TIDS[s].load(Ordering::SeqCst) == 0) else {
        return (-(libc::EBUSY as i64), 0);
    };
    RACE_SHARED.store(shared as u64, Ordering::SeqCst);
    RACE_CPU.store(cpu, Ordering::SeqCst);
    RACE_DELAY.store(delay, Ordering::SeqCst);
    RACE_YIELD.store(yields as u64, Ordering::SeqCst);
    let (tid, stack) = spawn_with(slot, racing_exit_thread);
    STACKS[slot].store(stack, Ordering::SeqCst);
    (tid, slot)
}

fn exit_thread(slot: usize) -> i64 {
    if slot >= MAX_THREADS {
        return -(libc::EINVAL as i64);
    }
    STOP[slot].store(1, Ordering::SeqCst);
    futex(STOP[slot].as_ptr(), libc::FUTEX_WAKE, 1);
    await_thread_gone(slot);
    0
}

fn fill(addr: u64, len: u64, how: u64, tag: u8) {
    if how == 2 {
        return;
    }
    if how == 0 {
        let mut off = 0;
        while off < len {
            // SAFETY: [addr, addr+len) was just mapped read-write and is page-aligned, so
            // every aligned word is in bounds.
            unsafe { ((addr + off) as *mut u64).write(((tag as u64) << 56) | off) };
            off += 8;
        }
    } else {
        for i in 0..len / 4096 {
            // SAFETY: page `i` of the mapping just made read-write.
            unsafe {
                libc::memset(
                    (addr + i * 4096) as *mut libc::c_void,
                    page_byte(tag, i) as i32,
                    4096,
                )
            };
        }
    }
}

/// Sleeps until CLOCK_MONOTONIC reads `ns` (early on a signal: callers check the clock).
fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: reads one timespec; no remainder is asked for (TIMER_ABSTIME).
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn act(op: u64, addr: u64, len: u64, arg: u64) -> i64 {
    let p = addr as *mut libc::c_void;
    // SAFETY (all arms): the commands name ranges in the fixed window the tests lay out,
    // which nothing else in this process uses; MAP_FIXED there replaces only the tests' own
    // mappings. A write is only sent for a range the harness knows is mapped writable.
    let r = unsafe {
        match op {
            OP_MAP => {
                let m = libc::mmap(
                    p,
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                );
                if m == libc::MAP_FAILED {
                    -1
                } else {
                    fill(addr, len, arg >> 8, arg as u8);
                    0
                }
            }
            OP_UNMAP => libc::munmap(p, len as usize),
            OP_PROTECT => libc::mprotect(p, len as usize, arg as i32),
            OP_WRITE => {
                libc::memset(p, arg as i32, len as usize);
                0
            }
            _ => {
                return -(libc::EINVAL as i64);
            }
        }
    };
    if r != 0 {
        errno()
    } else {
        0
    }
}

/// Maps one region of a layout afresh: fresh memory, filled, protected.
fn lay(l: &Lay) -> i64 {
    if l.fill == MapFill::AioRing {
        return match crate::sys::aio_ring_at(l.addr, l.len) {
            Ok(()) => 0,
            Err((e, _)) => -(e as i64),
        };
    }
    let r = act(OP_MAP, l.addr, l.len, l.fill.arg());
    if r != 0 || l.prot == libc::PROT_READ | libc::PROT_WRITE {
        return r;
    }
    act(OP_PROTECT, l.addr, l.len, l.prot as u64)
}

/// Maps afresh the regions of `layout` whose bit is set in `mask`; 0 or the first -errno.
fn relay(layout: &[Lay], mask: u64) -> i64 {
    for (i, l) in layout.iter().enumerate().take(MAX_LAID) {
        if mask >> i & 1 != 0 {
            let r = lay(l);
            if r != 0 {
                return r;
            }
        }
    }
    0
}

fn reply(fd: RawFd, v: i64) {
    proc::write_all_raw(fd, &v.to_le_bytes());
}

/// What a target is started with (built before the fork).
struct TargetCtx<'a> {
    cmd: RawFd,
    up: RawFd,
    /// The [`Shared`] mapping's address and its room in bytes.
    shared: usize,
    room: usize,
    hang: bool,
    /// Mapped before the first command, which is preceded by a reply saying whether it was.
    layout: Option<&'a [Lay]>,
}

fn target_main(t: &TargetCtx<'_>) -> i32 {
    let (cmd, up) = (t.cmd, t.up);
    let shared = t.shared as *const AtomicU32;
    if t.hang {
        loop {
            // SAFETY: pause has no preconditions (the test hook: a target that never answers).
            unsafe { libc::pause() };
        }
    }
    // What this process inherited of the harness's plan mappings is not the target's.
    layout::drop_inherited_plan_mappings();
    let layout = t.layout.unwrap_or_default();
    if t.layout.is_some() {
        reply(up, relay(layout, u64::MAX));
    }
    loop {
        let mut m = [0u8; MSG];
        if !proc::read_exact_raw(cmd, &mut m) {
            return 0;
        }
        let w = |i: usize| u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().unwrap());
        let (op, addr, len, arg) = (w(0), w(1), w(2), w(3));
        match op {
            OP_MAP | OP_UNMAP | OP_PROTECT | OP_WRITE => reply(up, act(op, addr, len, arg)),
            OP_SPAWN => reply(up, spawn(arg as usize)),
            OP_EXIT_THREAD => reply(up, exit_thread(arg as usize)),
            OP_RELAY => reply(up, relay(layout, arg)),
            OP_DUMP => {
                // `arg`: the range's current PROT_* bits, restored after reading; w(4): 1 to
                // copy the bytes into the shared room rather than send them.
                let (prot, to_room) = (arg as i32, w(4) != 0);
                let p = addr as *mut libc::c_void;
                if to_room && len as usize > t.room {
                    reply(up, -(libc::E2BIG as i64));
                    continue;
                }
                if prot & libc::PROT_READ == 0 {
                    // SAFETY: the harness asks only for pages it mapped in the window.
                    if unsafe { libc::mprotect(p, len as usize, libc::PROT_READ) } != 0 {
                        reply(up, errno());
                        continue;
                    }
                }
                if to_room {
                    // SAFETY: `[addr, addr+len)` is mapped readable (above); the room holds
                    // at least `len` bytes (checked above) and the harness reads it only
                    // after the reply.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            addr as *const u8,
                            (t.shared + ROOM) as *mut u8,
                            len as usize,
                        )
                    };
                    reply(up, 0);
                } else {
                    reply(up, 0);
                    proc::write_mem_raw(up, addr, len);
                }
                if prot & libc::PROT_READ == 0 {
                    // SAFETY: as above; puts back the protection the harness gave.
                    unsafe { libc::mprotect(p, len as usize, prot) };
                }
            }
            OP_RACE => {
                // w(4): the racer's op (OP_* or 0 for exit), w(5): delay in ns after the
                // release, w(6): the CPU the racer runs on (the caller takes another),
                // w(7): 1 when the racer must yield while it waits (one CPU), w(8): the
                // regions of the layout to map afresh first.
                let (action, delay, cpu, yields) = (w(4), w(5), w(6), w(7) != 0);
                let laid = relay(layout, w(8));
                if laid != 0 {
                    reply(up, laid);
                    continue;
                }
                if action == OP_EXIT_THREAD {
                    let (tid, slot) = arm_exiting_thread(shared, cpu, delay, yields);
                    reply(up, tid); // armed: the TID to call, or -errno
                    if tid < 0 {
                        continue;
                    }
                    await_thread_gone(slot);
                    let stack = STACKS[slot].swap(0, Ordering::SeqCst);
                    // SAFETY: the exited thread's own stack mapping; its TID is cleared, so
                    // it runs in the kernel only, never again on this stack.
                    unsafe { libc::munmap(stack as *mut libc::c_void, STACK) };
                    reply(up, 0);
                    continue;
                }
                let _ = crate::sys::pin_to_cpu(cpu as usize);
                reply(up, 0); // armed
                await_release(shared, delay, yields);
                if action == 0 {
                    // SAFETY: ends the whole target, as asked.
                    unsafe { libc::syscall(libc::SYS_exit_group, 0) };
                }
                reply(up, act(action, addr, len, arg));
            }
            _ => reply(up, -(libc::EINVAL as i64)),
        }
    }
}

impl Evolving {
    /// Forks the target with an empty window.
    pub fn start(timeout: Duration) -> Result<Evolving, String> {
        Evolving::start_with(timeout, false)
    }

    /// [`Evolving::start`]; with `hang` the target never answers a command (the
    /// `target_hang` test hook).
    pub fn start_with(timeout: Duration, hang: bool) -> Result<Evolving, String> {
        Evolving::fork(timeout, hang, None, Shared::new(0)?)
    }

    /// Forks a target that maps `layout` (at most [`MAX_LAID`] regions) before anything
    /// else, and shares `shared` with the harness (the racer's release word; dumps that fit
    /// its room go through it). It does not wait: [`Evolving::laid`] does, and so does every
    /// command. With `hang` the target never answers.
    pub fn start_laid(
        timeout: Duration,
        hang: bool,
        layout: &[Lay],
        shared: &Rc<Shared>,
    ) -> Result<Evolving, String> {
        if layout.len() > MAX_LAID {
            return Err(format!(
                "a laid-out target has at most {MAX_LAID} regions, not {}",
                layout.len()
            ));
        }
        Evolving::fork(timeout, hang, Some(layout), Rc::clone(shared))
    }

    fn fork(
        timeout: Duration,
        hang: bool,
        layout: Option<&[Lay]>,
        shared: Rc<Shared>,
    ) -> Result<Evolving, String> {
        let (cmd_r, cmd_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (up_r, up_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let ctx = TargetCtx {
            cmd: cmd_r.as_raw_fd(),
            up: up_w.as_raw_fd(),
            shared: shared.ptr as usize,
            room: shared.room(),
            hang,
            layout,
        };
        let child = proc::fork_child(b"pvmtest-evolve\0", || target_main(&ctx))
            .map_err(|e| format!("forking the target: {e}"))?;
        let pid = child.pid;
        Ok(Evolving {
            child: Some(child),
            cmd: cmd_w,
            reply: up_r,
            pid,
            timeout,
            shared,
            unlaid: Cell::new(layout.is_some()),
        })
    }

    /// Waits until the target has mapped the layout it was started with.
    pub fn laid(&self) -> Result<(), String> {
        if !self.unlaid.replace(false) {
            return Ok(());
        }
        let r = self.recv_raw()?;
        if r < 0 {
            return Err(format!(
                "mapping its layout: {}",
                crate::errno::name((-r) as i32)
            ));
        }
        Ok(())
    }

    fn send(&self, words: &[u64]) -> Result<(), String> {
        let mut m = [0u8; MSG];
        for (i, w) in words.iter().take(MSG_WORDS).enumerate() {
            m[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        if proc::write_all_raw(self.cmd.as_raw_fd(), &m) {
            Ok(())
        } else {
            Err("the evolving target went away".into())
        }
    }

    fn recv_raw(&self) -> Result<i64, String> {
        let mut b = [0u8; 8];
        proc::read_exact_until(&self.reply, &mut b, Instant::now() + self.timeout)
            .map_err(|e| format!("evolving target: {e}"))?;
        Ok(i64::from_le_bytes(b))
    }

    /// The reply to the last command (after the layout's, if that is still on its way).
    fn recv(&self) -> Result<i64, String> {
        self.laid()?;
        self.recv_raw()
    }

    fn command(&self, op: u64, addr: u64, len: u64, arg: u64) -> Result<i64, String> {
        self.send(&[op, addr, len, arg])?;
        let r = self.recv()?;
        if r < 0 {
            return Err(format!(
                "evolving target: op {op} at {addr:#x}+{len:#x}: {}",
                crate::errno::name((-r) as i32)
            ));
        }
        Ok(r)
    }

    /// `mmap(MAP_FIXED)` of fresh read-write anonymous memory, filled as asked.
    pub fn map(&self, addr: u64, len: u64, fill: MapFill) -> Result<(), String> {
        self.command(OP_MAP, addr, len, fill.arg()).map(drop)
    }

    pub fn unmap(&self, addr: u64, len: u64) -> Result<(), String> {
        self.command(OP_UNMAP, addr, len, 0).map(drop)
    }

    /// `mprotect` with PROT_* bits.
    pub fn protect(&self, addr: u64, len: u64, prot: i32) -> Result<(), String> {
        self.command(OP_PROTECT, addr, len, prot as u64).map(drop)
    }

    /// The target writes `byte` over `[addr, addr+len)`, which must be mapped writable.
    pub fn write(&self, addr: u64, len: u64, byte: u8) -> Result<(), String> {
        self.command(OP_WRITE, addr, len, byte as u64).map(drop)
    }

    /// Maps afresh the regions of the target's layout whose bit is set in `mask`, as
    /// [`Evolving::start_laid`] first mapped them.
    pub fn relay(&self, mask: u64) -> Result<(), String> {
        self.command(OP_RELAY, 0, 0, mask).map(drop)
    }

    /// Starts an idle thread in `slot`; its TID.
    pub fn spawn_thread(&self, slot: usize) -> Result<i32, String> {
        self.command(OP_SPAWN, 0, 0, slot as u64).map(|t| t as i32)
    }

    /// Ends the thread in `slot` and waits until no lookup can find its TID any more.
    pub fn exit_thread(&self, slot: usize, tid: i32) -> Result<(), String> {
        self.command(OP_EXIT_THREAD, 0, 0, slot as u64)?;
        let path = format!("/proc/{}/task/{tid}", self.pid);
        let deadline = Instant::now() + self.timeout;
        while std::path::Path::new(&path).exists() {
            if Instant::now() > deadline {
                return Err(format!("thread {tid} never went away"));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// The bytes of `[addr, addr+len)` (mapped, currently with PROT_* bits `prot`), read by
    /// the target itself: through the shared room when they fit, else through the pipe.
    pub fn dump(&self, addr: u64, len: u64, prot: i32) -> Result<Vec<u8>, String> {
        let fits = len as usize <= self.shared.room();
        self.send(&[OP_DUMP, addr, len, prot as u64, fits as u64])?;
        let r = self.recv()?;
        if r < 0 {
            return Err(format!(
                "evolving target: dump at {addr:#x}+{len:#x}: {}",
                crate::errno::name((-r) as i32)
            ));
        }
        if fits {
            return Ok(self.shared.read_room(0, len as usize));
        }
        let mut buf = vec![0u8; len as usize];
        proc::read_exact_until(&self.reply, &mut buf, Instant::now() + self.timeout)
            .map_err(|e| format!("evolving target dump: {e}"))?;
        Ok(buf)
    }

    /// Runs the plan's call against this target (the plan's own target regions are not
    /// built: they describe what this target has now) from a forked [`Caller`] that builds
    /// the plan's caller regions and iovec arrays. The result and the caller regions' bytes.
    #[allow(clippy::type_complexity)]
    pub fn call(&self, plan: &Plan, pid: i32) -> Result<(Result<u64, i32>, Vec<Vec<u8>>), String> {
        let shared = Shared::new(Caller::room(plan))?;
        let mut caller = Caller::start(plan, &shared, CallerOpts::default(), self.timeout)?;
        let c = caller.call(pid, 0)?;
        Ok((c.result, c.dumps))
    }
}

impl Drop for Evolving {
    fn drop(&mut self) {
        // Kills and reaps it; the shared mapping goes with the last Rc.
        drop(self.child.take());
    }
}

/// How a [`Caller`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallerOpts {
    /// The CPU it is pinned to, if any.
    pub pin: Option<usize>,
    /// It shares one CPU with the racer: it sleeps (rather than spins) between a release
    /// and its call, so that the racer runs.
    pub one_cpu: bool,
    /// Never make the call (the `caller_hang` test hook).
    pub hang: bool,
}

/// What one [`Caller::call`] produced.
#[derive(Debug, Clone)]
pub struct Called {
    pub result: Result<u64, i32>,
    /// How long the call took, measured in the caller around the syscall.
    pub call_ns: u64,
    /// The caller's dumped regions after the call, in plan order.
    pub dumps: Vec<Vec<u8>>,
}

/// A persistent caller for one plan: a forked child that has built the plan's caller regions
/// and iovec arrays and makes the plan's call (native entry) on command. Dropping it kills
/// and reaps it.
pub struct Caller<'p> {
    plan: &'p Plan,
    shared: Rc<Shared>,
    opts: CallerOpts,
    timeout: Duration,
    /// Caller regions a call or its read-back can change (mapped afresh after each call).
    dirty: Vec<usize>,
    /// The iovec arrays too (a readv may write anywhere the caller can).
    arrays_dirty: bool,
    /// Whether it can map afresh everything a call changes (a sealed region cannot be
    /// unmapped); if not, a fresh caller is forked for every call.
    reusable: bool,
    /// Room offset and length of each dumped region, in plan order.
    dumps: Vec<(usize, usize)>,
    proc: Option<CallerProc>,
}

struct CallerProc {
    child: Child,
    go: OwnedFd,
    up: OwnedFd,
}

/// What a caller child is started with (built before the fork).
struct CallerCtx<'a> {
    plan: &'a Plan,
    files: &'a [Option<RawFd>],
    dirty: &'a [usize],
    arrays_dirty: bool,
    shared: usize,
    opts: CallerOpts,
    go: RawFd,
    up: RawFd,
}

/// A caller reply for a failure outside the call: the errno, below every result.
fn failure(errno: i32) -> i64 {
    i64::MIN + errno as i64
}

fn failed(v: i64) -> Option<i32> {
    (v < i64::MIN + 4096).then(|| v.wrapping_sub(i64::MIN) as i32)
}

fn caller_main(c: &CallerCtx<'_>) -> i32 {
    let plan = c.plan;
    if let Err((e, _)) = layout::build_caller(plan, c.files) {
        proc::write_all_raw(c.up, &failure(e).to_le_bytes());
        return 3;
    }
    if let Some(cpu) = c.opts.pin {
        let _ = crate::sys::pin_to_cpu(cpu);
    }
    if c.opts.one_cpu {
        // One CPU: the caller sleeps through its lead (below) so that the racer runs first,
        // with timers that expire within 1 ns of their time (not 50 µs later), and as
        // SCHED_BATCH, which never preempts the task running when it wakes: a racer that got
        // the CPU finishes its action, as it did when every run forked a new caller (a
        // yielding caller would hand the CPU over only while it had had more of it than the
        // racer lately).
        // SAFETY: an integer prctl.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
        let p = libc::sched_param { sched_priority: 0 };
        // SAFETY: reads one sched_param; SCHED_BATCH needs no privilege.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &p) };
    }
    proc::write_all_raw(c.up, &0i64.to_le_bytes()); // ready
    let args = |pid| crate::sys::RawArgs::of(&plan.call, pid);
    let write = plan.call.syscall == Syscall::Writev;
    // SAFETY: the MAP_SHARED mapping this process inherited; word 0 and the u64 at byte 8
    // are atomics, aligned.
    let (go, at) = unsafe {
        (
            &*(c.shared as *const AtomicU32),
            &*(c.shared as *const AtomicU64).add(1),
        )
    };
    let mut broken = 0;
    loop {
        // The pid to call, and how long to wait between the release and the call.
        let mut m = [0u8; 16];
        if !proc::read_exact_raw(c.go, &mut m) {
            return 0;
        }
        if c.opts.hang {
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            }
        }
        if broken != 0 {
            proc::write_all_raw(c.up, &failure(broken).to_le_bytes());
            return 3;
        }
        let word = |i: usize| u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().unwrap());
        let args = args(word(0) as i64 as i32);
        let released = now_ns();
        at.store(released, Ordering::SeqCst);
        go.store(1, Ordering::SeqCst);
        let until = released + word(1);
        if c.opts.one_cpu && until > released {
            sleep_until(until);
        }
        while now_ns() < until {}
        let t0 = now_ns();
        let r = crate::sys::call_native(write, &args);
        let took = now_ns() - t0;
        // The bytes, into the room, before the answer (the harness sized it: one region
        // after another, in plan order).
        let mut room = c.shared + ROOM;
        let dumped = layout::dump_with(&plan.caller_regions, |addr, len| {
            // SAFETY: the region is mapped readable for `len` bytes (dump_with made it so);
            // the room holds every dumped region, and the harness reads it only after the
            // answer below.
            unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, room as *mut u8, len) };
            room += len;
            true
        });
        if !dumped {
            proc::write_all_raw(c.up, &failure(nix::errno::Errno::last_raw()).to_le_bytes());
            return 3;
        }
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&super::result_word(r).to_le_bytes());
        out[8..].copy_from_slice(&took.to_le_bytes());
        proc::write_all_raw(c.up, &out);
        // Back to the bytes and protections of a fresh caller, while the harness judges.
        for &i in c.dirty {
            let r = &plan.caller_regions[i];
            // SAFETY: one of this process's own caller regions, mapped afresh at once.
            unsafe { libc::munmap(r.start as *mut libc::c_void, r.len as usize) };
            if let Err((e, _)) = layout::build(std::slice::from_ref(r), &c.files[i..=i]) {
                broken = e;
            }
        }
        if c.arrays_dirty {
            for a in &plan.arrays {
                // SAFETY: this process's own iovec array mapping, mapped afresh at once.
                unsafe { libc::munmap(a.map_start as *mut libc::c_void, a.map_len as usize) };
                if let Err((e, _)) = layout::build_arrays(std::slice::from_ref(a)) {
                    broken = e;
                }
            }
        }
    }
}

impl<'p> Caller<'p> {
    /// Room the caller's read-back needs in a [`Shared`] mapping.
    pub fn room(plan: &Plan) -> u64 {
        plan.caller_regions
            .iter()
            .filter(|r| layout::dumped(r))
            .map(|r| r.backed_len())
            .sum()
    }

    /// Forks the caller for `plan` (its caller regions need no files) and waits until it
    /// has built its memory. `shared` must have [`Caller::room`] bytes of room.
    pub fn start(
        plan: &'p Plan,
        shared: &Rc<Shared>,
        opts: CallerOpts,
        timeout: Duration,
    ) -> Result<Caller<'p>, String> {
        let write = plan.call.syscall == Syscall::Writev;
        // A readv writes the caller's writable regions; the read-back makes unreadable ones
        // readable.
        let dirty: Vec<usize> = (0..plan.caller_regions.len())
            .filter(|&i| {
                let r = &plan.caller_regions[i];
                let written = !write && r.prot.bits() & libc::PROT_WRITE != 0;
                let reprotected = layout::dumped(r) && r.backed_len() > 0 && layout::unreadable(r);
                !r.is_hole() && (written || reprotected)
            })
            .collect();
        let reusable = dirty
            .iter()
            .all(|&i| plan.caller_regions[i].kind != RegionKind::Sealed);
        let mut off = 0;
        let dumps = plan
            .caller_regions
            .iter()
            .filter(|r| layout::dumped(r))
            .map(|r| {
                let len = r.backed_len() as usize;
                off += len;
                (off - len, len)
            })
            .collect();
        if Caller::room(plan) as usize > shared.room() {
            return Err("the shared mapping has no room for the caller's bytes".into());
        }
        let mut caller = Caller {
            plan,
            shared: Rc::clone(shared),
            opts,
            timeout,
            dirty: if reusable { dirty } else { Vec::new() },
            arrays_dirty: reusable && !write,
            reusable,
            dumps,
            proc: None,
        };
        caller.proc = Some(caller.spawn()?);
        Ok(caller)
    }

    fn spawn(&self) -> Result<CallerProc, String> {
        let files: Vec<Option<RawFd>> = vec![None; self.plan.caller_regions.len()];
        let (up_r, up_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (go_r, go_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let ctx = CallerCtx {
            plan: self.plan,
            files: &files,
            dirty: &self.dirty,
            arrays_dirty: self.arrays_dirty,
            shared: self.shared.ptr as usize,
            opts: self.opts,
            go: go_r.as_raw_fd(),
            up: up_w.as_raw_fd(),
        };
        let child = proc::fork_child(b"pvmtest-caller\0", || caller_main(&ctx))
            .map_err(|e| format!("forking the caller: {e}"))?;
        drop(up_w);
        drop(go_r);
        let mut b = [0u8; 8];
        proc::read_exact_until(&up_r, &mut b, Instant::now() + self.timeout)
            .map_err(|e| format!("the caller never became ready: {e}"))?;
        if let Some(e) = failed(i64::from_le_bytes(b)) {
            return Err(format!("caller setup failed: {}", crate::errno::name(e)));
        }
        Ok(CallerProc {
            child,
            go: go_w,
            up: up_r,
        })
    }

    /// Makes the call on `pid`, `lead` ns after releasing the racer (if one is armed).
    pub fn call(&mut self, pid: i32, lead: u64) -> Result<Called, String> {
        let p = match self.proc.take() {
            Some(p) => p,
            None => self.spawn()?,
        };
        let mut go = [0u8; 16];
        go[..8].copy_from_slice(&(pid as i64).to_le_bytes());
        go[8..].copy_from_slice(&lead.to_le_bytes());
        if !proc::write_all_raw(p.go.as_raw_fd(), &go) {
            return Err("the caller went away before the call".into());
        }
        let mut b = [0u8; 16];
        proc::read_exact_until(&p.up, &mut b, Instant::now() + self.timeout)
            .map_err(|e| format!("caller: {e}"))?;
        let v = i64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        if let Some(e) = failed(v) {
            return Err(format!(
                "the caller could not read back or map afresh its regions: {}",
                crate::errno::name(e)
            ));
        }
        let dumps = self
            .dumps
            .iter()
            .map(|&(off, len)| self.shared.read_room(off, len))
            .collect();
        if self.reusable {
            self.proc = Some(p);
        } else {
            drop(p.child);
        }
        Ok(Called {
            result: super::word_result(v),
            call_ns: u64::from_le_bytes(b[8..].try_into().unwrap_or_default()),
            dumps,
        })
    }

    /// The call against `target` with `racer`, if any, armed in it (on `cpus.racer`,
    /// yielding while it waits when the caller has no CPU of its own): the caller releases
    /// the racer right before it makes the call. Without a racer the call is undisturbed (and
    /// measured). Either way the regions of the target's layout in `relay` are first mapped
    /// afresh (what the last call and racer changed).
    pub fn race(
        &mut self,
        target: &mut Evolving,
        racer: Option<RaceSetup>,
        cpus: RaceCpus,
        relay: u64,
    ) -> Result<RaceCall, String> {
        if !Rc::ptr_eq(&self.shared, &target.shared) {
            return Err("the caller and the target share no release word".into());
        }
        self.shared.release().store(0, Ordering::SeqCst);
        let lead = racer.map_or(0, |r| r.offset_ns.min(0).unsigned_abs());
        let pid = match racer {
            None => {
                target.laid()?;
                if relay != 0 {
                    target.relay(relay)?;
                }
                target.pid
            }
            Some(r) => {
                let (op, arg) = match r.action {
                    RaceAction::Munmap => (OP_UNMAP, 0),
                    RaceAction::Mprotect(p) => (OP_PROTECT, p as u64),
                    RaceAction::Write(b) => (OP_WRITE, b as u64),
                    RaceAction::Exit => (0, 0),
                    RaceAction::ThreadExit => (OP_EXIT_THREAD, 0),
                };
                let yields = cpus.caller.is_none() as u64;
                target.send(&[
                    OP_RACE,
                    r.addr,
                    r.len,
                    arg,
                    op,
                    r.offset_ns.max(0) as u64,
                    cpus.racer as u64,
                    yields,
                    relay,
                ])?;
                let armed = target
                    .recv()
                    .map_err(|e| format!("arming the racer: {e}"))?;
                if armed < 0 {
                    return Err(format!(
                        "arming the racer: {}",
                        crate::errno::name((-armed) as i32)
                    ));
                }
                if r.action == RaceAction::ThreadExit {
                    armed as i32
                } else {
                    target.pid
                }
            }
        };
        let called = self.call(pid, lead)?;
        let action = match racer.map(|r| r.action) {
            None => None,
            Some(RaceAction::Exit) => {
                // The caller released it, so it exits within its delay.
                if let Some(c) = target.child.take() {
                    if !c.wait_zombie(self.timeout) {
                        return Err("the racing target never exited".into());
                    }
                    c.reap();
                }
                None
            }
            Some(_) => Some(target.recv().map_err(|e| format!("the racer: {e}"))?),
        };
        Ok(RaceCall {
            call: called.result,
            action,
            call_ns: called.call_ns,
            caller_dumps: called.dumps,
        })
    }
}
