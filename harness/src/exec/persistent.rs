//! A persistent executor for fuzzing: no fork per case.
//!
//! [`execute`](super::execute) forks a target and a caller for every case (~0.4 ms). Here:
//!
//! - **The caller is this process.** Caller regions and the iovec arrays are mapped in this
//!   process at the plan's fixed addresses (`0x3000_0000_0000`, compat `0x8000_0000`) and
//!   kept from one case to the next while they are the same (same address, size, kind,
//!   protection, tag, file size); only what changed is unmapped and mapped again. The call is
//!   made on this thread for the harness's own credentials, and on a long-lived worker
//!   thread for `{uid: 1000}` and `{uid: 0, drop_caps: [CAP_SYS_PTRACE]}`: credentials are
//!   per thread in the kernel, and the workers change theirs once with raw syscalls (see
//!   [`crate::sys::creds::apply`]), so the access check sees exactly what a forked caller
//!   with those credentials would be.
//! - **`self`, `thread` and `clone_vm` targets** share this process's mm: their regions are
//!   mapped here too; the thread is an idle raw thread and the `clone_vm` target an idle
//!   CLONE_VM child, both started once.
//! - **A `child` target is one long-lived forked process** that this process forked, so the
//!   case says `parent: caller` (this process is the caller and the target's parent). Its
//!   layout changes over a control pipe: fixed-size records "unmap start,len" / "map region"
//!   that it carries out with the same [`layout`] code as a forked target, with no allocation.
//!   File and memfd regions use descriptors created before the fork (one per region index and
//!   kind), rewritten by this process before each (re)map exactly as a fresh file would be
//!   (truncated to 0, the pattern written, sized). Its bytes are read back through
//!   `/proc/<pid>/mem` (no syscall in the target); anonymous regions a writev changed are reset
//!   through the same file; any other changed region is mapped afresh on the next case.
//!
//! Where this differs from the fork-per-case executor, the fuzz vocabulary
//! ([`crate::fuzzcase`]) leaves the case out rather than diverge: no `fill: untouched`, no
//! growsdown/thp/hugetlb/secretmem/guard/sealed/userfaultfd regions, no target credentials,
//! no zombies, no Yama topology other than `parent: caller`.
//!
//! Every process is a [`Child`] in [`proc`]'s registry (SIGKILL + reap on drop, on
//! SIGINT/SIGTERM/SIGHUP when the handlers are installed, PR_SET_PDEATHSIG if this process
//! dies); [`Persistent::shutdown`] kills and reaps them at once.

#![allow(unsafe_code)]

use super::{layout, proc, Dump, Observed};
use crate::case::{Entry, Fill, Prot, RegionKind, Syscall, TargetKind};
use crate::facts::Facts;
use crate::plan::{ArrayImage, Creds, Plan, Region, Side};
use crate::sys::RawArgs;
use proc::Child;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Region indexes that can have a pre-made file in the target (per file kind).
const POOL: usize = 8;
const OP_SIZE: usize = 48;
const MAX_OPS: usize = 32;

/// Counters for `bench-fuzz.sh` and tuning.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub cases: u64,
    pub own_maps: u64,
    pub target_round_trips: u64,
    pub target_maps: u64,
    pub resets: u64,
}

/// A mapping this process keeps: a region, or an iovec array's pages.
struct Own {
    region: Region,
    fd: Option<OwnedFd>,
    initial: Images,
    stale: bool,
}

/// A region's initial memory and (file kinds) file contents, computed once per mapping.
struct Images {
    memory: Vec<u8>,
    file: Option<Vec<u8>>,
}

impl Images {
    fn of(r: &Region) -> Images {
        Images {
            memory: crate::pattern::initial(r),
            file: r.is_file().then(|| crate::pattern::initial_file(r)),
        }
    }
    /// Whether the dump differs from the initial state.
    fn changed(&self, memory: &[u8], file: &Option<Vec<u8>>) -> (bool, bool) {
        let file_changed = file.is_some() && *file != self.file;
        (memory != self.memory || file_changed, file_changed)
    }
}

/// The long-lived `child` target.
struct Target {
    child: Child,
    ctl: OwnedFd,
    reply: OwnedFd,
    mem: File,
    layout: Vec<(Region, bool)>,
    initial: Vec<Images>,
    /// `[file kinds, memfd kinds][region index]`.
    pool: [Vec<OwnedFd>; 2],
}

struct Job {
    write: bool,
    compat: bool,
    args: RawArgs,
}

/// A thread that made its credentials those of a case once and makes calls with them.
struct Worker {
    creds: Creds,
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Result<u64, i32>>,
}

pub struct Persistent {
    facts: Facts,
    timeout: Duration,
    own: Vec<Own>,
    target: Option<Target>,
    thread_tid: Option<i32>,
    clone_vm: Option<Child>,
    workers: Vec<Worker>,
    self_mem: File,
    /// Descriptors of files and memfds whose mappings went away, `[file, memfd]`, rewritten
    /// and reused for the next file region (creating an O_TMPFILE inode and evicting it on
    /// close cost more than the rest of a remap).
    spare: [Vec<OwnedFd>; 2],
    inject: super::Inject,
    /// Mappings this process had at start inside the plans' ranges (AddressSanitizer's
    /// shadow covers the compat caller range): (start, end, what /proc/self/maps names).
    foreign: Vec<(u64, u64, String)>,
    unplaceable: String,
    pub stats: Stats,
}

/// Which spare list a file-backed region's descriptor belongs to.
fn file_class(k: RegionKind) -> Option<usize> {
    match k {
        RegionKind::FilePrivate | RegionKind::FileShared => Some(0),
        RegionKind::MemfdPrivate | RegionKind::MemfdShared => Some(1),
        _ => None,
    }
}

fn errno_str(e: i32) -> String {
    crate::errno::name(e)
}

fn prot_index(p: Prot) -> u8 {
    [
        Prot::Rw,
        Prot::Ro,
        Prot::None,
        Prot::Wo,
        Prot::Xo,
        Prot::Rwx,
        Prot::Rx,
    ]
    .iter()
    .position(|&x| x == p)
    .unwrap_or(0) as u8
}

fn prot_of(i: u8) -> Prot {
    match i {
        1 => Prot::Ro,
        2 => Prot::None,
        3 => Prot::Wo,
        4 => Prot::Xo,
        5 => Prot::Rwx,
        6 => Prot::Rx,
        _ => Prot::Rw,
    }
}

fn kind_index(k: RegionKind) -> Option<u8> {
    Some(match k {
        RegionKind::Anon => 0,
        RegionKind::FilePrivate => 1,
        RegionKind::FileShared => 2,
        RegionKind::MemfdPrivate => 3,
        RegionKind::MemfdShared => 4,
        _ => return None,
    })
}

fn kind_of(i: u8) -> RegionKind {
    match i {
        1 => RegionKind::FilePrivate,
        2 => RegionKind::FileShared,
        3 => RegionKind::MemfdPrivate,
        4 => RegionKind::MemfdShared,
        _ => RegionKind::Anon,
    }
}

fn readable(p: Prot) -> bool {
    matches!(p, Prot::Rw | Prot::Ro | Prot::Rwx | Prot::Rx)
}

fn writable(p: Prot) -> bool {
    matches!(p, Prot::Rw | Prot::Wo | Prot::Rwx)
}

/// The iovec array's pages as a region (anonymous, read-write, contents written per case).
fn array_region(a: &ArrayImage) -> Region {
    Region {
        name: a.name.to_string(),
        side: Side::Caller,
        tag: 0,
        start: a.map_start,
        len: a.map_len,
        prot: Prot::Rw,
        kind: RegionKind::Anon,
        file_size: None,
        fill: Fill::Untouched,
        pkey: None,
    }
}

/// Whether the executor reproduces a region exactly.
fn supported(r: &Region) -> bool {
    r.is_hole() || (kind_index(r.kind).is_some() && r.fill == Fill::Pattern)
}

/// Rewrites a file as [`super::make_file`] creates it: empty, the pattern, the size.
fn refill(fd: &OwnedFd, r: &Region) -> Result<(), String> {
    let f = fd.as_raw_fd();
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(f, 0) } != 0 {
        return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
    }
    let content = crate::pattern::initial_file(r);
    let mut done = 0;
    while done < content.len() {
        // SAFETY: writes from a live buffer, within its length.
        let n = unsafe {
            libc::pwrite(
                f,
                content[done..].as_ptr().cast(),
                content.len() - done,
                done as libc::off_t,
            )
        };
        if n <= 0 {
            return Err(format!("pwrite: {}", std::io::Error::last_os_error()));
        }
        done += n as usize;
    }
    // SAFETY: as above.
    if unsafe { libc::ftruncate(f, r.file_size.unwrap_or(0) as libc::off_t) } != 0 {
        return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn read_file(fd: &OwnedFd, len: u64) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len as usize];
    let n = nix::sys::uio::pread(fd, &mut buf, 0).map_err(|e| format!("pread: {e}"))?;
    buf.truncate(n);
    Ok(buf)
}

/// The target's loop: read a batch of records, carry it out, answer `K` or `E errno`.
/// No allocation (this is a fork of a possibly multi-threaded process).
fn target_loop(ctl: RawFd, reply: RawFd) -> i32 {
    // The fork copied this executor's caller and `self`-target mappings (and, in a test, any
    // other persistent executor's).
    layout::drop_inherited_plan_mappings();
    let mut buf = [0u8; OP_SIZE * MAX_OPS];
    loop {
        let mut hdr = [0u8; 4];
        if !proc::read_exact_raw(ctl, &mut hdr) {
            return 0;
        }
        let n = u32::from_le_bytes(hdr) as usize;
        if n > MAX_OPS || !proc::read_exact_raw(ctl, &mut buf[..n * OP_SIZE]) {
            return 4;
        }
        let mut err = 0i32;
        for op in buf[..n * OP_SIZE].chunks_exact(OP_SIZE) {
            let word = |i: usize| u64::from_le_bytes(op[8 + 8 * i..16 + 8 * i].try_into().unwrap());
            let (start, len, fd, file_size) = (word(0), word(1), word(2) as i32, word(3));
            match op[0] {
                b'U' => {
                    // SAFETY: the parent only unmaps ranges it had this process map (regions
                    // of earlier cases, in the plan's reserved address range).
                    if unsafe { libc::munmap(start as *mut libc::c_void, len as usize) } != 0 {
                        err = nix::errno::Errno::last_raw();
                    }
                }
                _ => {
                    let r = Region {
                        name: String::new(),
                        side: Side::Target,
                        tag: op[4],
                        start,
                        len,
                        prot: prot_of(op[2]),
                        kind: kind_of(op[1]),
                        file_size: (op[3] != 0).then_some(file_size),
                        fill: Fill::Pattern,
                        pkey: None,
                    };
                    let fds = [(fd >= 0).then_some(fd)];
                    if let Err((e, _)) = layout::build(std::slice::from_ref(&r), &fds) {
                        err = e.max(1);
                    }
                }
            }
            if err != 0 {
                break;
            }
        }
        let mut m = [0u8; 5];
        m[0] = if err == 0 { b'K' } else { b'E' };
        m[1..5].copy_from_slice(&err.to_le_bytes());
        if !proc::write_all_raw(reply, &m) {
            return 5;
        }
    }
}

fn op(kind: u8, r: &Region, fd: RawFd) -> [u8; OP_SIZE] {
    let mut m = [0u8; OP_SIZE];
    m[0] = kind;
    m[1] = kind_index(r.kind).unwrap_or(0);
    m[2] = prot_index(r.prot);
    m[3] = r.file_size.is_some() as u8;
    m[4] = r.tag;
    m[8..16].copy_from_slice(&r.start.to_le_bytes());
    m[16..24].copy_from_slice(&r.len.to_le_bytes());
    m[24..32].copy_from_slice(&(fd as i64 as u64).to_le_bytes());
    m[32..40].copy_from_slice(&r.file_size.unwrap_or(0).to_le_bytes());
    m
}

fn call(write: bool, compat: bool, args: &RawArgs) -> Result<u64, i32> {
    if compat {
        crate::sys::call_compat(write, args)
    } else {
        crate::sys::call_native(write, args)
    }
}

impl Persistent {
    pub fn new(timeout: Duration) -> Result<Persistent, String> {
        let self_mem = File::options()
            .read(true)
            .write(true)
            .open("/proc/self/mem")
            .map_err(|e| format!("/proc/self/mem: {e}"))?;
        let facts = Facts::detect();
        let foreign = foreign_mappings(facts.task_size_max)?;
        Ok(Persistent {
            facts,
            timeout,
            own: Vec::new(),
            target: None,
            thread_tid: None,
            clone_vm: None,
            workers: Vec::new(),
            self_mem,
            spare: [Vec::new(), Vec::new()],
            inject: super::Inject::from_env(),
            foreign,
            unplaceable: String::new(),
            stats: Stats::default(),
        })
    }

    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Why the last case could not be placed (see [`Persistent::execute`]).
    pub fn last_unplaceable(&self) -> String {
        self.unplaceable.clone()
    }

    /// Whether a plan is within what this executor reproduces exactly.
    pub fn supports(plan: &Plan) -> bool {
        let kind_ok = matches!(
            plan.target_kind,
            TargetKind::Child
                | TargetKind::SelfProcess
                | TargetKind::Thread
                | TargetKind::CloneVm
                | TargetKind::Pid0
                | TargetKind::PidMinus1
                | TargetKind::UnusedPid
        );
        kind_ok
            && (plan.target_kind != TargetKind::Child
                || plan.target_parent == crate::case::TargetParent::Caller)
            && plan.target_creds.is_none()
            && plan.target_dumpable
            && plan.target_ptracer.is_none()
            && plan.specials.is_empty()
            && plan.stack_windows.is_empty()
            && plan.target_regions.len() <= POOL
            && plan
                .target_regions
                .iter()
                .chain(&plan.caller_regions)
                .all(supported)
    }

    /// Runs the plan's call. `Ok(None)`: the layout cannot be placed in this process (an
    /// address range is taken, e.g. by a sanitizer's shadow memory; see
    /// [`Persistent::last_unplaceable`]). `Err`: the executor broke (a harness bug).
    pub fn execute(&mut self, plan: &Plan) -> Result<Option<Observed>, String> {
        // Laid out in this system's address space, as the model sees it.
        let bound = plan.bind(&self.facts);
        let plan: &Plan = &bound;
        if !Self::supports(plan) {
            return Err("the persistent executor does not reproduce this case exactly".into());
        }
        self.stats.cases += 1;
        // The model takes the plan's ranges to hold nothing but the plan's mappings; with
        // something else there (a sanitizer's shadow) a stray pointer would read it.
        for (start, len) in crate::plan::reserved_ranges(plan.call.entry, self.facts.task_size_max)
        {
            if let Some((a, b, what)) = self
                .foreign
                .iter()
                .find(|(a, b, _)| *a < start + len && *b > start)
            {
                self.unplaceable = format!(
                    "{a:#x}-{b:#x} ({what}) lies in the {} range {start:#x}+{len:#x}",
                    if plan.call.entry == Entry::Compat {
                        "compat"
                    } else {
                        "native"
                    }
                );
                return Ok(None);
            }
        }
        let shares = plan.target_shares_caller_mm();
        // 1. This process's mappings: caller regions, arrays, and shared-mm target regions.
        let mut want: Vec<Region> = plan
            .caller_regions
            .iter()
            .filter(|r| !r.is_hole())
            .cloned()
            .collect();
        if shares {
            want.extend(plan.target_regions.iter().filter(|r| !r.is_hole()).cloned());
        }
        want.extend(plan.arrays.iter().map(array_region));
        if let Err(e) = self.sync_own(&want) {
            self.unplaceable = e;
            return Ok(None);
        }
        for a in &plan.arrays {
            // SAFETY: [a.map_start, a.addr + len) is the array mapping just synced
            // (plan::place_array), which this process mapped read-write and nothing else uses.
            // The bytes before the array are zero, as in a fresh mapping (a local iovec may
            // read them).
            unsafe {
                std::ptr::write_bytes(a.map_start as *mut u8, 0, (a.addr - a.map_start) as usize);
                std::ptr::copy_nonoverlapping(a.bytes.as_ptr(), a.addr as *mut u8, a.bytes.len())
            };
        }
        // 2. The target.
        let pid = match plan.target_kind {
            TargetKind::Child => {
                self.sync_target(&plan.target_regions)?;
                self.target.as_ref().map_or(0, |t| t.child.pid)
            }
            TargetKind::SelfProcess => std::process::id() as i32,
            TargetKind::Thread => self.thread()?,
            TargetKind::CloneVm => self.clone_vm()?,
            TargetKind::Pid0 => 0,
            TargetKind::PidMinus1 => -1,
            TargetKind::UnusedPid => self.facts.pid_max,
            _ => unreachable!("checked by supports"),
        };
        // 3. The call.
        let c = &plan.call;
        let args = RawArgs::of(c, pid);
        let write = c.syscall == Syscall::Writev;
        let compat = c.entry == Entry::Compat;
        let mut result = match &plan.caller_creds {
            None => call(write, compat, &args),
            Some(cr) => self.call_as(*cr, write, compat, args)?,
        };
        if self.inject == super::Inject::Miscount {
            result = result.map(|n| if n > 4096 { n - 1 } else { n });
        }
        // 4. Every byte back, and changed regions reset for the next case.
        let mut dumps = Vec::new();
        self.dump_own(&plan.caller_regions, &mut dumps)?;
        if shares {
            self.dump_own(&plan.target_regions, &mut dumps)?;
        } else if plan.target_kind == TargetKind::Child {
            self.dump_target(&plan.target_regions, &mut dumps)?;
        }
        Ok(Some(Observed { result, pid, dumps }))
    }

    fn sync_own(&mut self, want: &[Region]) -> Result<(), String> {
        let mut keep = vec![false; want.len()];
        let mut i = 0;
        while i < self.own.len() {
            let o = &self.own[i];
            match want.iter().position(|w| *w == o.region) {
                Some(j) if !o.stale => {
                    keep[j] = true;
                    i += 1;
                }
                _ => {
                    let o = self.own.swap_remove(i);
                    layout::untrack(o.region.start);
                    // SAFETY: this process mapped exactly this range for an earlier case (in
                    // the plan's reserved ranges, MAP_FIXED_NOREPLACE) and nothing else uses it.
                    unsafe {
                        libc::munmap(o.region.start as *mut libc::c_void, o.region.len as usize)
                    };
                    // With the mapping gone nothing else refers to the file: reusable.
                    if let (Some(fd), Some(c)) = (o.fd, file_class(o.region.kind)) {
                        if self.spare[c].len() < POOL {
                            self.spare[c].push(fd);
                        }
                    }
                }
            }
        }
        for (w, _) in want.iter().zip(&keep).filter(|(_, k)| !**k) {
            self.stats.own_maps += 1;
            let fd = match file_class(w.kind).and_then(|c| self.spare[c].pop()) {
                Some(fd) => {
                    refill(&fd, w)?;
                    Some(fd)
                }
                None if w.needs_fd() => Some(super::make_file(w)?),
                None => None,
            };
            let fds = [fd.as_ref().map(|f| f.as_raw_fd())];
            layout::build(std::slice::from_ref(w), &fds).map_err(|(e, step)| {
                format!("{step} of {} at {:#x}: {}", w.name, w.start, errno_str(e))
            })?;
            layout::track(w.start, w.len);
            self.own.push(Own {
                region: w.clone(),
                fd,
                initial: Images::of(w),
                stale: false,
            });
        }
        Ok(())
    }

    fn dump_own(&mut self, regions: &[Region], out: &mut Vec<Dump>) -> Result<(), String> {
        for r in regions.iter().filter(|r| layout::dumped(r)) {
            let len = r.backed_len();
            let mut memory = vec![0u8; len as usize];
            if len > 0 {
                if readable(r.prot) {
                    // SAFETY: the region is mapped readable in this process for this case
                    // (sync_own) and `len` is within its backed bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            r.start as *const u8,
                            memory.as_mut_ptr(),
                            len as usize,
                        )
                    };
                } else {
                    self.self_mem
                        .read_exact_at(&mut memory, r.start)
                        .map_err(|e| format!("/proc/self/mem at {}: {e}", r.name))?;
                }
            }
            let o = self
                .own
                .iter_mut()
                .find(|o| o.region == *r)
                .ok_or("a dumped region is not mapped")?;
            let file = match (&o.fd, r.is_file()) {
                (Some(fd), true) => Some(read_file(fd, r.file_size.unwrap_or(0))?),
                _ => None,
            };
            let (changed, file_changed) = o.initial.changed(&memory, &file);
            if changed {
                self.stats.resets += 1;
                if r.kind == RegionKind::Anon && writable(r.prot) && !file_changed {
                    let init = &o.initial.memory;
                    // SAFETY: as above, and the region is writable by this process.
                    unsafe {
                        std::ptr::copy_nonoverlapping(init.as_ptr(), r.start as *mut u8, init.len())
                    };
                } else {
                    o.stale = true;
                }
            }
            out.push(Dump::of(r, memory, file));
        }
        Ok(())
    }

    fn start_target(&mut self) -> Result<(), String> {
        let mut pool: [Vec<OwnedFd>; 2] = [Vec::new(), Vec::new()];
        for (k, kind) in [RegionKind::FilePrivate, RegionKind::MemfdPrivate]
            .into_iter()
            .enumerate()
        {
            for _ in 0..POOL {
                let r = Region {
                    name: String::new(),
                    side: Side::Target,
                    tag: 0,
                    start: 0,
                    len: 0,
                    prot: Prot::Rw,
                    kind,
                    file_size: Some(0),
                    fill: Fill::Pattern,
                    pkey: None,
                };
                pool[k].push(super::make_file(&r)?);
            }
        }
        let (ctl_r, ctl_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (rep_r, rep_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (cr, rw) = (ctl_r.as_raw_fd(), rep_w.as_raw_fd());
        let child = proc::fork_child(b"pvmtest-ftarget\0", || target_loop(cr, rw))
            .map_err(|e| format!("forking the target: {e}"))?;
        drop(ctl_r);
        drop(rep_w);
        let mem = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", child.pid))
            .map_err(|e| format!("/proc/{}/mem: {e}", child.pid))?;
        self.target = Some(Target {
            child,
            ctl: ctl_w,
            reply: rep_r,
            mem,
            layout: Vec::new(),
            initial: Vec::new(),
            pool,
        });
        Ok(())
    }

    fn sync_target(&mut self, want: &[Region]) -> Result<(), String> {
        if self.target.is_none() {
            self.start_target()?;
        }
        let want: Vec<(usize, &Region)> = want
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_hole())
            .collect();
        let t = self.target.as_mut().expect("started above");
        let mut ops: Vec<[u8; OP_SIZE]> = Vec::new();
        let mut keep = vec![false; want.len()];
        let mut next = Vec::new();
        let mut initial = Vec::new();
        for ((r, stale), init) in t.layout.drain(..).zip(t.initial.drain(..)) {
            match want.iter().position(|(_, w)| **w == r) {
                Some(j) if !stale => {
                    keep[j] = true;
                    next.push((r, false));
                    initial.push(init);
                }
                _ => ops.push(op(b'U', &r, -1)),
            }
        }
        for ((i, w), _) in want.iter().zip(&keep).filter(|(_, k)| !**k) {
            let fd = match w.kind {
                RegionKind::FilePrivate | RegionKind::FileShared => Some(&t.pool[0][*i]),
                RegionKind::MemfdPrivate | RegionKind::MemfdShared => Some(&t.pool[1][*i]),
                _ => None,
            };
            if let Some(fd) = fd {
                refill(fd, w)?;
            }
            ops.push(op(b'M', w, fd.map_or(-1, |f| f.as_raw_fd())));
            next.push(((*w).clone(), false));
            initial.push(Images::of(w));
            self.stats.target_maps += 1;
        }
        t.layout = next;
        t.initial = initial;
        if ops.is_empty() {
            return Ok(());
        }
        self.stats.target_round_trips += 1;
        let mut msg = (ops.len() as u32).to_le_bytes().to_vec();
        for o in &ops {
            msg.extend_from_slice(o);
        }
        let result = if proc::write_all_raw(t.ctl.as_raw_fd(), &msg) {
            let mut m = [0u8; 5];
            proc::read_exact_until(&t.reply, &mut m, Instant::now() + self.timeout).and_then(|()| {
                match m[0] {
                    b'K' => Ok(()),
                    _ => Err(format!(
                        "the target could not map its layout: {}",
                        errno_str(i32::from_le_bytes(m[1..5].try_into().unwrap()))
                    )),
                }
            })
        } else {
            Err("the target's control pipe is closed (it died)".into())
        };
        if let Err(e) = result {
            // Start afresh next time; the old one is killed and reaped here.
            self.target = None;
            return Err(e);
        }
        Ok(())
    }

    fn dump_target(&mut self, regions: &[Region], out: &mut Vec<Dump>) -> Result<(), String> {
        let t = self.target.as_mut().ok_or("no target")?;
        for (i, r) in regions.iter().enumerate() {
            if !layout::dumped(r) {
                continue;
            }
            let len = r.backed_len();
            let mut memory = vec![0u8; len as usize];
            if len > 0 {
                t.mem
                    .read_exact_at(&mut memory, r.start)
                    .map_err(|e| format!("/proc/{}/mem at {}: {e}", t.child.pid, r.name))?;
            }
            let pool = match r.kind {
                RegionKind::FilePrivate | RegionKind::FileShared => Some(&t.pool[0][i]),
                RegionKind::MemfdPrivate | RegionKind::MemfdShared => Some(&t.pool[1][i]),
                _ => None,
            };
            let file = match pool {
                Some(fd) => Some(read_file(fd, r.file_size.unwrap_or(0))?),
                None => None,
            };
            let k = t
                .layout
                .iter()
                .position(|(l, _)| l == r)
                .ok_or("a dumped target region is not mapped")?;
            let (changed, _) = t.initial[k].changed(&memory, &file);
            if changed {
                self.stats.resets += 1;
                if r.kind == RegionKind::Anon {
                    // A write through /proc/pid/mem (FOLL_FORCE) puts the pattern back into
                    // the same anonymous pages; the mapping itself is unchanged.
                    t.mem
                        .write_all_at(&t.initial[k].memory, r.start)
                        .map_err(|e| format!("resetting {}: {e}", r.name))?;
                } else {
                    t.layout[k].1 = true;
                }
            }
            out.push(Dump::of(r, memory, file));
        }
        Ok(())
    }

    fn thread(&mut self) -> Result<i32, String> {
        if let Some(t) = self.thread_tid {
            return Ok(t);
        }
        let tid = super::spawn_raw(
            super::idle_thread,
            super::THREAD_FLAGS,
            std::ptr::null_mut(),
        )
        .map_err(|(e, s)| format!("{s}: {}", errno_str(e)))?;
        self.thread_tid = Some(tid);
        Ok(tid)
    }

    fn clone_vm(&mut self) -> Result<i32, String> {
        if let Some(c) = &self.clone_vm {
            return Ok(c.pid);
        }
        let me = std::process::id() as usize;
        let pid = super::spawn_raw(
            super::idle_clone_vm,
            libc::CLONE_VM | libc::SIGCHLD,
            me as *mut libc::c_void,
        )
        .map_err(|(e, s)| format!("{s}: {}", errno_str(e)))?;
        self.clone_vm = Some(Child::adopt(pid));
        Ok(pid)
    }

    fn call_as(
        &mut self,
        creds: Creds,
        write: bool,
        compat: bool,
        args: RawArgs,
    ) -> Result<Result<u64, i32>, String> {
        if !self.workers.iter().any(|w| w.creds == creds) {
            self.workers.push(spawn_worker(creds, self.timeout)?);
            // A credential change makes the mm non-dumpable (commit_creds sets it to
            // suid_dumpable), and this mm is the caller's and every later target's (fork
            // copies it): put it back as a fresh caller would have it.
            crate::sys::creds::set_dumpable(true)
                .map_err(|(e, s)| format!("{s}: {}", errno_str(e)))?;
        }
        let w = self
            .workers
            .iter()
            .find(|w| w.creds == creds)
            .expect("pushed above");
        w.jobs
            .send(Job {
                write,
                compat,
                args,
            })
            .map_err(|_| "a credential worker is gone")?;
        w.results
            .recv_timeout(self.timeout)
            .map_err(|_| "a credential worker did not answer in time".into())
    }

    /// Unmaps every mapping this executor made in this process (so that a fork of it can
    /// build the same layout, e.g. the fork-per-case executor in a test).
    pub fn unmap_own(&mut self) {
        for o in self.own.drain(..) {
            layout::untrack(o.region.start);
            // SAFETY: as in sync_own: a range this process mapped for a case.
            unsafe { libc::munmap(o.region.start as *mut libc::c_void, o.region.len as usize) };
        }
    }

    /// Kills and reaps every process this executor started, now.
    pub fn shutdown(&mut self) {
        self.target = None;
        self.clone_vm = None;
    }
}

fn spawn_worker(creds: Creds, timeout: Duration) -> Result<Worker, String> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let (res_tx, res_rx) = mpsc::channel::<Result<u64, i32>>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("pvmtest-creds".into())
        .spawn(move || {
            // Raw per-thread syscalls: only this thread's credentials change.
            let r =
                crate::sys::creds::apply(&creds).map_err(|(e, s)| format!("{s}: {}", errno_str(e)));
            let ok = r.is_ok();
            let _ = ready_tx.send(r);
            if !ok {
                return;
            }
            while let Ok(j) = jobs_rx.recv() {
                if res_tx.send(call(j.write, j.compat, &j.args)).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| format!("spawning a credential worker: {e}"))?;
    ready_rx
        .recv_timeout(timeout)
        .map_err(|_| "a credential worker did not start".to_string())??;
    Ok(Worker {
        creds,
        jobs: jobs_tx,
        results: res_rx,
    })
}

impl Drop for Persistent {
    fn drop(&mut self) {
        self.shutdown();
        self.unmap_own();
    }
}

/// This process's mappings that overlap the plans' ranges, from `/proc/self/maps`.
fn foreign_mappings(top: u64) -> Result<Vec<(u64, u64, String)>, String> {
    let maps =
        std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let ranges: Vec<(u64, u64)> = [Entry::Native, Entry::Compat]
        .iter()
        .flat_map(|&e| crate::plan::reserved_ranges(e, top))
        .collect();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let Some((a, b)) = fields.next().and_then(|r| r.split_once('-')) else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        if ranges.iter().any(|&(s, l)| a < s + l && b > s) {
            let what = fields.nth(4).unwrap_or("anonymous").to_string();
            out.push((a, b, what));
        }
    }
    Ok(out)
}

/// Pins the calling thread, and so every thread and process the executor starts from it
/// later (credential workers, the `child`, `thread` and `clone_vm` targets), to one CPU.
///
/// Why: a case hands work to another task (a worker's call, the target's remap) and waits for
/// it. When the two run on different CPUs every hand-off is a cross-CPU wake-up, an IPI, and
/// in a virtual machine a VM exit; on one CPU it is a plain context switch. Measured with
/// `cargo test --release --test persistent throughput -- --ignored` on this 2-core VM: 6,100
/// inputs/s unpinned, 10,700 pinned (17,100 and 29,600 when layouts repeat).
///
/// `PVMTEST_PIN_CPU`: unset or `current` pins to the CPU the thread runs on now; a number pins
/// to that CPU; `none` leaves the mask alone. Returns what was done, for a log line.
pub fn pin_for_fuzzing() -> Result<String, String> {
    let want = std::env::var("PVMTEST_PIN_CPU").unwrap_or_default();
    let cpu = match want.trim() {
        "none" => return Ok("not pinned (PVMTEST_PIN_CPU=none)".into()),
        "" | "current" => crate::sys::current_cpu().ok_or("sched_getcpu failed")?,
        n => n.parse::<usize>().map_err(|_| {
            format!("PVMTEST_PIN_CPU={n}: expected a CPU number, `current` or `none`")
        })?,
    };
    crate::sys::pin_to_cpu(cpu).map_err(|e| {
        format!(
            "PVMTEST_PIN_CPU: cannot pin to CPU {cpu}: {}; use a CPU this process may run on, or `none`",
            errno_str(e)
        )
    })?;
    Ok(format!(
        "pinned to CPU {cpu} with its workers and targets (PVMTEST_PIN_CPU=none to disable)"
    ))
}

/// Registers `f` with libc's `atexit`, for fuzz targets to stop their executor at a normal
/// exit (libFuzzer's `-max_total_time`, `-runs`).
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function that stays valid for the life of the process.
    unsafe { libc::atexit(f) };
}
