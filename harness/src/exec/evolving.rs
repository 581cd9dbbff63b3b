//! A persistent target whose layout evolves on command, for the state-machine and
//! concurrency tests (the catalogue's executor forks a fresh target per case instead).
//!
//! The target is a forked child (registered with [`proc`], so it is killed and reaped when
//! [`Evolving`] drops, on a panic, or on SIGINT) that reads fixed-size commands from a pipe
//! and applies each: map, unmap, mprotect, write, start or end a thread, send back bytes, or
//! race one of these against a call the harness makes. Like every forked child here it runs
//! raw syscalls only, on data that existed before the fork: no allocation, no locks.
//!
//! Calls against it come from a forked caller per call ([`Evolving::call`], the plan's caller
//! regions and iovec arrays, as in [`super::execute`]); for races ([`Evolving::race_call`])
//! that caller releases the armed racer itself, the moment before it makes the call.

#![allow(unsafe_code)]

use super::layout;
use super::proc::{self, Child};
use crate::plan::{Plan, Region};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
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
/// A command: eight little-endian u64 words.
const MSG: usize = 64;

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
}

/// The byte that fills page `i` of a [`MapFill::PerPage`] mapping: never 0xff, which
/// [`RaceAction::Write`] callers may use as the "new" value.
pub fn page_byte(tag: u8, i: u64) -> u8 {
    (tag as u64 + i) as u8 % 0xfe + 1
}

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

/// A racer to arm for [`Evolving::race_call`]: its action on `[addr, addr+len)`, and when,
/// relative to the call: `offset_ns` after the caller releases it and starts the call, or,
/// when negative, that long before (the caller waits after the release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceSetup {
    pub action: RaceAction,
    pub addr: u64,
    pub len: u64,
    pub offset_ns: i64,
}

/// What one [`Evolving::race_call`] produced.
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
/// it waits, so the caller gets to release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceCpus {
    pub racer: usize,
    pub caller: Option<usize>,
}

impl RaceCpus {
    /// From the calling thread's CPU mask.
    pub fn detect() -> RaceCpus {
        let cpus: Vec<usize> = affinity()
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

/// A running persistent target; dropping it kills and reaps it.
pub struct Evolving {
    child: Option<Child>,
    cmd: OwnedFd,
    reply: OwnedFd,
    /// The target's pid (its main thread).
    pub pid: i32,
    timeout: Duration,
    /// One MAP_SHARED page shared with the target (and every caller forked while it lives):
    /// the u32 at 0 releases the racer, the u64 at 8 is when (CLOCK_MONOTONIC ns).
    shared: *mut AtomicU32,
}

fn errno() -> i64 {
    -(nix::errno::Errno::last_raw() as i64)
}

fn read_exact_raw(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads at most the rest of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return false;
        }
        got += n as usize;
    }
    true
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
    pin_to_cpu(RACE_CPU.load(Ordering::SeqCst) as usize);
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
    // SAFETY: a fresh anonymous mapping at a kernel-chosen address (never in the window the
    // tests lay out, which is fixed and far from mmap_base).
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return (errno(), 0);
    }
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
            (stack as *mut u8).add(STACK).cast(),
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

/// Restricts the calling thread to one CPU (best effort: a CPU it may not use is ignored).
fn pin_to_cpu(cpu: usize) {
    if cpu >= libc::CPU_SETSIZE as usize {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes the bit of a CPU below
    // CPU_SETSIZE inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads one cpu_set_t for this thread (tid 0).
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// The calling thread's CPU mask.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid out buffer for sched_getaffinity.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: writes at most size_of::<cpu_set_t>() bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (r == 0).then_some(set)
}

fn reply(fd: RawFd, v: i64) {
    proc::write_all_raw(fd, &v.to_le_bytes());
}

fn target_main(cmd: RawFd, up: RawFd, shared: *const AtomicU32, hang: bool) -> i32 {
    if hang {
        loop {
            // SAFETY: pause has no preconditions (the test hook: a target that never answers).
            unsafe { libc::pause() };
        }
    }
    loop {
        let mut m = [0u8; MSG];
        if !read_exact_raw(cmd, &mut m) {
            return 0;
        }
        let w = |i: usize| u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().unwrap());
        let (op, addr, len, arg) = (w(0), w(1), w(2), w(3));
        match op {
            OP_MAP | OP_UNMAP | OP_PROTECT | OP_WRITE => reply(up, act(op, addr, len, arg)),
            OP_SPAWN => reply(up, spawn(arg as usize)),
            OP_EXIT_THREAD => reply(up, exit_thread(arg as usize)),
            OP_DUMP => {
                // `arg`: the range's current PROT_* bits, restored after reading.
                let prot = arg as i32;
                let p = addr as *mut libc::c_void;
                if prot & libc::PROT_READ == 0 {
                    // SAFETY: the harness asks only for pages it mapped in the window.
                    if unsafe { libc::mprotect(p, len as usize, libc::PROT_READ) } != 0 {
                        reply(up, errno());
                        continue;
                    }
                }
                reply(up, 0);
                proc::write_mem_raw(up, addr, len);
                if prot & libc::PROT_READ == 0 {
                    // SAFETY: as above; puts back the protection the harness gave.
                    unsafe { libc::mprotect(p, len as usize, prot) };
                }
            }
            OP_RACE => {
                // w(4): the racer's op (OP_* or 0 for exit), w(5): delay in ns after the
                // release, w(6): the CPU the racer runs on (the caller takes another),
                // w(7): 1 when the racer must yield while it waits (one CPU).
                let (action, delay, cpu, yields) = (w(4), w(5), w(6), w(7) != 0);
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
                pin_to_cpu(cpu as usize);
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
        // SAFETY: a fresh shared anonymous page at a kernel-chosen address; it holds atomics
        // only and is unmapped in Drop.
        let shared = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if shared == libc::MAP_FAILED {
            return Err(format!("mmap(shared): {}", std::io::Error::last_os_error()));
        }
        let shared = shared as *mut AtomicU32;
        let (cmd_r, cmd_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (up_r, up_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (cr, uw) = (cmd_r.as_raw_fd(), up_w.as_raw_fd());
        let sh = shared as *const AtomicU32;
        let child = proc::fork_child(b"pvmtest-evolve\0", || target_main(cr, uw, sh, hang))
            .map_err(|e| format!("forking the target: {e}"))?;
        let pid = child.pid;
        Ok(Evolving {
            child: Some(child),
            cmd: cmd_w,
            reply: up_r,
            pid,
            timeout,
            shared,
        })
    }

    fn send(&self, words: [u64; 8]) -> Result<(), String> {
        let mut m = [0u8; MSG];
        for (i, w) in words.iter().enumerate() {
            m[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        if proc::write_all_raw(self.cmd.as_raw_fd(), &m) {
            Ok(())
        } else {
            Err("the evolving target went away".into())
        }
    }

    fn recv(&self) -> Result<i64, String> {
        let mut b = [0u8; 8];
        proc::read_exact_until(&self.reply, &mut b, Instant::now() + self.timeout)
            .map_err(|e| format!("evolving target: {e}"))?;
        Ok(i64::from_le_bytes(b))
    }

    fn command(&self, op: u64, addr: u64, len: u64, arg: u64) -> Result<i64, String> {
        self.send([op, addr, len, arg, 0, 0, 0, 0])?;
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
        let arg = match fill {
            MapFill::Pattern(tag) => tag as u64,
            MapFill::PerPage(tag) => 1 << 8 | tag as u64,
            MapFill::Zero => 2 << 8,
        };
        self.command(OP_MAP, addr, len, arg).map(drop)
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
    /// the target itself.
    pub fn dump(&self, addr: u64, len: u64, prot: i32) -> Result<Vec<u8>, String> {
        self.command(OP_DUMP, addr, len, prot as u64)?;
        let mut buf = vec![0u8; len as usize];
        proc::read_exact_until(&self.reply, &mut buf, Instant::now() + self.timeout)
            .map_err(|e| format!("evolving target dump: {e}"))?;
        Ok(buf)
    }

    /// Runs the plan's call against this target (the plan's own target regions are not
    /// built: they describe what this target has now) from a forked caller that builds the
    /// plan's caller regions and iovec arrays. The result and the caller regions' bytes.
    #[allow(clippy::type_complexity)]
    pub fn call(&self, plan: &Plan, pid: i32) -> Result<(Result<u64, i32>, Vec<Vec<u8>>), String> {
        let no_files: Vec<Option<RawFd>> = vec![None; plan.caller_regions.len()];
        let (up_r, up_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let uw = up_w.as_raw_fd();
        let caller = proc::fork_child(b"pvmtest-caller\0", || {
            if let Err((e, _)) = layout::build(&plan.caller_regions, &no_files)
                .and_then(|_| layout::build_arrays(&plan.arrays))
            {
                proc::write_all_raw(uw, &(i64::MIN + e as i64).to_le_bytes());
                return 3;
            }
            let c = &plan.call;
            let args = crate::sys::RawArgs::of(c, pid);
            let r = crate::sys::call_native(c.syscall == crate::case::Syscall::Writev, &args);
            let v: i64 = match r {
                Ok(n) => n as i64,
                Err(e) => -(e as i64),
            };
            proc::write_all_raw(uw, &v.to_le_bytes());
            layout::dump(&plan.caller_regions, uw);
            0
        })
        .map_err(|e| format!("forking the caller: {e}"))?;
        drop(up_w);
        let deadline = Instant::now() + self.timeout;
        let mut b = [0u8; 8];
        proc::read_exact_until(&up_r, &mut b, deadline).map_err(|e| format!("caller: {e}"))?;
        let v = i64::from_le_bytes(b);
        if v < i64::MIN + 4096 {
            return Err(format!(
                "caller setup failed: {}",
                crate::errno::name((v - i64::MIN) as i32)
            ));
        }
        let result = if v < 0 {
            Err((-v) as i32)
        } else {
            Ok(v as u64)
        };
        let mut dumps = Vec::new();
        for r in plan.caller_regions.iter().filter(|r| layout::dumped(r)) {
            dumps.push(read_region(&up_r, r, deadline)?);
        }
        drop(caller);
        Ok((result, dumps))
    }

    /// The plan's call against this target from a forked caller (its regions and iovec
    /// arrays built as in [`Evolving::call`]) with `racer`, if any, armed in the target:
    /// the caller releases the racer right before it makes the call. Without a racer the
    /// call is undisturbed (and measured). With `hang` the caller never makes the call (the
    /// `caller_hang` test hook).
    pub fn race_call(
        &mut self,
        plan: &Plan,
        racer: Option<RaceSetup>,
        cpus: RaceCpus,
        hang: bool,
    ) -> Result<RaceCall, String> {
        // SAFETY: `shared` is this process's MAP_SHARED page, mapped until Drop.
        let go = unsafe { &*self.shared };
        go.store(0, Ordering::SeqCst);
        let no_files: Vec<Option<RawFd>> = vec![None; plan.caller_regions.len()];
        let (up_r, up_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (down_r, down_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (uw, dr) = (up_w.as_raw_fd(), down_r.as_raw_fd());
        let shared = self.shared as *const AtomicU32;
        let caller = proc::fork_child(b"pvmtest-caller\0", || {
            if let Err((e, _)) = layout::build(&plan.caller_regions, &no_files)
                .and_then(|_| layout::build_arrays(&plan.arrays))
            {
                proc::write_all_raw(uw, &(i64::MIN + e as i64).to_le_bytes());
                return 3;
            }
            proc::write_all_raw(uw, &0i64.to_le_bytes()); // ready
                                                          // The pid to call, and how long to wait between the release and the call.
            let mut m = [0u8; 16];
            if !read_exact_raw(dr, &mut m) {
                return 4;
            }
            let word = |i: usize| u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().unwrap());
            if hang {
                loop {
                    // SAFETY: pause has no preconditions.
                    unsafe { libc::pause() };
                }
            }
            if let Some(c) = cpus.caller {
                pin_to_cpu(c);
            }
            let args = crate::sys::RawArgs::of(&plan.call, word(0) as i64 as i32);
            let write = plan.call.syscall == crate::case::Syscall::Writev;
            // SAFETY: the MAP_SHARED page this process inherited; word 0 and the u64 at byte
            // 8 are atomics, aligned.
            let (go, at) = unsafe { (&*shared, &*(shared as *const AtomicU64).add(1)) };
            let released = now_ns();
            at.store(released, Ordering::SeqCst);
            go.store(1, Ordering::SeqCst);
            while now_ns() < released + word(1) {
                if cpus.caller.is_none() {
                    // SAFETY: sched_yield has no preconditions (one CPU: let the racer run).
                    unsafe { libc::sched_yield() };
                }
            }
            let t0 = now_ns();
            let r = crate::sys::call_native(write, &args);
            let took = now_ns() - t0;
            let v: i64 = match r {
                Ok(n) => n as i64,
                Err(e) => -(e as i64),
            };
            proc::write_all_raw(uw, &v.to_le_bytes());
            proc::write_all_raw(uw, &took.to_le_bytes());
            layout::dump(&plan.caller_regions, uw);
            0
        })
        .map_err(|e| format!("forking the caller: {e}"))?;
        drop(up_w);
        drop(down_r);
        let deadline = Instant::now() + self.timeout;
        let mut b = [0u8; 8];
        proc::read_exact_until(&up_r, &mut b, deadline)
            .map_err(|e| format!("race caller never became ready: {e}"))?;
        let v = i64::from_le_bytes(b);
        if v != 0 {
            return Err(format!(
                "race caller setup failed: {}",
                crate::errno::name((v.wrapping_sub(i64::MIN)) as i32)
            ));
        }
        let lead = racer.map_or(0, |r| r.offset_ns.min(0).unsigned_abs());
        let pid = match racer {
            None => self.pid,
            Some(r) => {
                let (op, arg) = match r.action {
                    RaceAction::Munmap => (OP_UNMAP, 0),
                    RaceAction::Mprotect(p) => (OP_PROTECT, p as u64),
                    RaceAction::Write(b) => (OP_WRITE, b as u64),
                    RaceAction::Exit => (0, 0),
                    RaceAction::ThreadExit => (OP_EXIT_THREAD, 0),
                };
                let yields = cpus.caller.is_none() as u64;
                self.send([
                    OP_RACE,
                    r.addr,
                    r.len,
                    arg,
                    op,
                    r.offset_ns.max(0) as u64,
                    cpus.racer as u64,
                    yields,
                ])?;
                let armed = self.recv().map_err(|e| format!("arming the racer: {e}"))?;
                if armed < 0 {
                    return Err(format!(
                        "arming the racer: {}",
                        crate::errno::name((-armed) as i32)
                    ));
                }
                if r.action == RaceAction::ThreadExit {
                    armed as i32
                } else {
                    self.pid
                }
            }
        };
        let mut go_msg = [0u8; 16];
        go_msg[..8].copy_from_slice(&(pid as i64).to_le_bytes());
        go_msg[8..].copy_from_slice(&lead.to_le_bytes());
        if !proc::write_all_raw(down_w.as_raw_fd(), &go_msg) {
            return Err("the race caller went away before the call".into());
        }
        let deadline = Instant::now() + self.timeout;
        let mut b = [0u8; 16];
        proc::read_exact_until(&up_r, &mut b, deadline).map_err(|e| format!("race caller: {e}"))?;
        let v = i64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let call_ns = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
        let call = if v < 0 {
            Err((-v) as i32)
        } else {
            Ok(v as u64)
        };
        let mut caller_dumps = Vec::new();
        for r in plan.caller_regions.iter().filter(|r| layout::dumped(r)) {
            caller_dumps.push(read_region(&up_r, r, deadline)?);
        }
        drop(caller);
        let action = match racer.map(|r| r.action) {
            None => None,
            Some(RaceAction::Exit) => {
                // The caller released it, so it exits within its delay.
                if let Some(c) = self.child.take() {
                    if !c.wait_zombie(self.timeout) {
                        return Err("the racing target never exited".into());
                    }
                    c.reap();
                }
                None
            }
            Some(_) => Some(self.recv().map_err(|e| format!("the racer: {e}"))?),
        };
        Ok(RaceCall {
            call,
            action,
            call_ns,
            caller_dumps,
        })
    }
}

fn read_region(fd: &OwnedFd, r: &Region, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut memory = vec![0u8; r.backed_len() as usize];
    if !memory.is_empty() {
        proc::read_exact_until(fd, &mut memory, deadline)
            .map_err(|e| format!("caller dump of {}: {e}", r.name))?;
    }
    Ok(memory)
}

impl Drop for Evolving {
    fn drop(&mut self) {
        drop(self.child.take());
        // SAFETY: the shared page mapped in `start`, no longer used by anyone (the target is
        // dead and reaped).
        unsafe { libc::munmap(self.shared.cast(), 4096) };
    }
}
