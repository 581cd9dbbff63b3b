//! Running one case on the live kernel: build the target, fork the caller, make the raw
//! call, bring back every byte, and tear everything down.
//!
//! Processes per case: the target (unless it is the caller itself, its thread or a CLONE_VM
//! child, or a pid with no process), and always a forked caller, so credentials can be
//! dropped and the harness's own address space is never touched. Every child is guarded by
//! [`proc::Child`]: killed and reaped whatever happens.
//!
//! `nix` wraps pipes, memfd, pread, uname and signals here. Code that runs in a child after
//! the fork uses `libc` directly: it must not allocate (the parent may be multi-threaded) and
//! must hand fixed addresses to mmap/mprotect unchanged, including ones nix's typed wrappers
//! would reject.

#![allow(unsafe_code)]

pub mod evolving;
pub mod layout;
pub mod persistent;
pub mod proc;
pub mod race;

use crate::case::{Entry, Ptracer, RegionKind, Syscall, TargetKind, TargetParent};
use crate::facts::Facts;
use crate::plan::{Plan, Region, Side};
use proc::Child;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// Test hooks for the harness's own fault handling (`PVMTEST_INJECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inject {
    #[default]
    None,
    /// The target never reports ready.
    TargetHang,
    /// The caller never makes the call.
    CallerHang,
    /// The harness panics after the target is up.
    Panic,
    /// The fuzzers' persistent executor reports one byte fewer than the kernel moved whenever
    /// it moved more than a page: a made-up disagreement with the model, to try the fuzz →
    /// tmin → `import-crash` loop end to end (docs/FUZZING.md).
    Miscount,
    /// The caller reports ENOSYS instead of making the call, as a kernel or runtime without
    /// it would (the case must skip as "not implemented").
    Enosys,
    /// A `clone_vm` target is cloned without CLONE_PARENT, as gVisor does whatever the flag
    /// (the case must skip: the runtime cannot express it).
    NoCloneParent,
}

impl Inject {
    pub fn from_env() -> Inject {
        match std::env::var("PVMTEST_INJECT").as_deref() {
            Ok("target_hang") => Inject::TargetHang,
            Ok("caller_hang") => Inject::CallerHang,
            Ok("panic") => Inject::Panic,
            Ok("miscount") => Inject::Miscount,
            Ok("enosys") => Inject::Enosys,
            Ok("no_clone_parent") => Inject::NoCloneParent,
            _ => Inject::None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long a target may take to become ready, and a caller to report. Default 5 s.
    pub timeout: Duration,
    pub inject: Inject,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(5),
            inject: Inject::None,
        }
    }
}

/// The bytes of one region after the call.
#[derive(Debug, Clone)]
pub struct Dump {
    pub side: Side,
    pub name: String,
    /// The region's backed bytes `[0, backed_len)`.
    pub memory: Vec<u8>,
    /// For file-backed regions, the file's contents read back with pread.
    pub file: Option<Vec<u8>>,
}

impl Dump {
    /// The bytes read back from `r`.
    pub fn of(r: &Region, memory: Vec<u8>, file: Option<Vec<u8>>) -> Dump {
        Dump {
            side: r.side,
            name: r.name.clone(),
            memory,
            file,
        }
    }
}

/// What the kernel did.
#[derive(Debug, Clone)]
pub struct Observed {
    pub result: Result<u64, i32>,
    /// The pid the call was made with (for the JSON event; never in snapshots).
    pub pid: i32,
    pub dumps: Vec<Dump>,
}

fn make_file(r: &Region) -> Result<OwnedFd, String> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    if r.kind == RegionKind::Secretmem {
        // Secretmem has no read/write: size it here; the layout fills it through the mapping.
        let fd = crate::sys::memfd_secret()
            .map_err(|e| format!("memfd_secret: {}", crate::errno::name(e)))?;
        nix::unistd::ftruncate(&fd, r.len as i64).map_err(|e| format!("ftruncate: {e}"))?;
        return Ok(fd);
    }
    let fd = match r.kind {
        RegionKind::MemfdPrivate | RegionKind::MemfdShared => {
            memfd_create(c"pvmtest-region", MFdFlags::empty())
                .map_err(|e| format!("memfd_create: {e}"))?
        }
        _ => OwnedFd::from(anonymous_file(&std::env::temp_dir())?),
    };
    let content = crate::pattern::initial_file(r);
    let file = std::fs::File::from(fd);
    use std::os::unix::fs::FileExt;
    file.write_all_at(&content, 0)
        .map_err(|e| format!("writing the region file: {e}"))?;
    file.set_len(r.file_size.unwrap_or(0))
        .map_err(|e| format!("ftruncate: {e}"))?;
    Ok(OwnedFd::from(file))
}

/// A regular file with no name in `dir`, open for reading and writing: `O_TMPFILE`, or where
/// the filesystem refuses that (gVisor's gofer gives EISDIR; EOPNOTSUPP on filesystems
/// without tmpfile support) an ordinary file created in a fresh private (0700) directory and
/// unlinked at once with its directory. `PVMTEST_NO_O_TMPFILE=1` forces the second way (a
/// test hook).
pub fn anonymous_file(dir: &std::path::Path) -> Result<std::fs::File, String> {
    anonymous_file_with(
        dir,
        std::env::var_os("PVMTEST_NO_O_TMPFILE").is_none_or(|v| v != "1"),
    )
}

fn anonymous_file_with(dir: &std::path::Path, tmpfile: bool) -> Result<std::fs::File, String> {
    if tmpfile {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_tmpfile()
            .open(dir)
        {
            Ok(f) => return Ok(f),
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EISDIR | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOENT)
                ) =>
            {
                return Err(format!("O_TMPFILE in {}: {e}", dir.display()))
            }
            Err(_) => {}
        }
    }
    let private = nix::unistd::mkdtemp(&dir.join("pvmtest.XXXXXX"))
        .map_err(|e| format!("a private directory in {}: {e}", dir.display()))?;
    let path = private.join("region");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    // Nameless from here on, whether the open worked or not.
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&private);
    f.map_err(|e| format!("{}: {e}", path.display()))
}

trait TmpFile {
    fn custom_flags_tmpfile(&mut self) -> &mut Self;
}
impl TmpFile for std::fs::OpenOptions {
    fn custom_flags_tmpfile(&mut self) -> &mut Self {
        self.custom_flags(libc::O_TMPFILE)
    }
}

fn files_for(regions: &[Region]) -> Result<Vec<Option<OwnedFd>>, String> {
    regions
        .iter()
        .map(|r| {
            if r.needs_fd() {
                make_file(r).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect()
}

fn raw_fds(v: &[Option<OwnedFd>]) -> Vec<Option<RawFd>> {
    v.iter()
        .map(|f| f.as_ref().map(|f| f.as_raw_fd()))
        .collect()
}

/// Child → parent messages: `R pid` ready, `C ret` call result (ret < 0 is -errno),
/// `E errno len step` setup failure.
fn send_ready(fd: RawFd, pid: i32) {
    let mut m = [0u8; 9];
    m[0] = b'R';
    m[1..5].copy_from_slice(&pid.to_le_bytes());
    proc::write_all_raw(fd, &m);
}

fn send_result(fd: RawFd, r: Result<u64, i32>) {
    let mut m = [0u8; 9];
    m[0] = b'C';
    m[1..9].copy_from_slice(&result_word(r).to_le_bytes());
    proc::write_all_raw(fd, &m);
}

/// A call's result as one word on a pipe: the count, or -errno.
fn result_word(r: Result<u64, i32>) -> i64 {
    match r {
        Ok(n) => n as i64,
        Err(e) => -(e as i64),
    }
}

/// The inverse of [`result_word`].
fn word_result(v: i64) -> Result<u64, i32> {
    if v < 0 {
        Err((-v) as i32)
    } else {
        Ok(v as u64)
    }
}

fn send_error(fd: RawFd, err: (i32, &'static str)) -> i32 {
    let mut m = [0u8; 9 + 40];
    m[0] = b'E';
    m[1..5].copy_from_slice(&err.0.to_le_bytes());
    let s = err.1.as_bytes();
    let n = s.len().min(40);
    m[5..9].copy_from_slice(&(n as u32).to_le_bytes());
    m[9..9 + n].copy_from_slice(&s[..n]);
    proc::write_all_raw(fd, &m[..9 + n]);
    3
}

/// The prefix of an executor error that is not a harness failure but a set-up step this
/// kernel or runtime cannot do, which Linux can: the case skips with the rest as its reason
/// ([`crate::runner::run_case`]).
pub const UNSUPPORTED: &str = "unsupported: ";

/// Why a set-up step that failed with `errno` means "this system cannot express the case"
/// rather than a broken harness, or `None`. Only failures Linux never gives for these steps
/// qualify.
pub fn unsupported(errno: i32, step: &str) -> Option<String> {
    match (errno, step) {
        (_, CLONE_PARENT_STEP) => Some(
            "the runtime cannot express a clone_vm target: clone(CLONE_VM | CLONE_PARENT) did not make it the harness's child (CLONE_PARENT without CLONE_THREAD is ignored)".into(),
        ),
        (libc::ENOSYS, step) => Some(format!(
            "the runtime does not implement {step} (ENOSYS), which the case's set-up needs"
        )),
        (libc::EINVAL, "clone") => Some(
            "the runtime refuses clone() with the target's flags (EINVAL; Linux accepts them)"
                .into(),
        ),
        // x86-64 Linux leaves the MAP_32BIT window of a fresh target free and fills it
        // bottom-up (arch/x86/kernel/sys_x86_64.c); a runtime with another layout there
        // (UML) cannot put an io_uring ring, which takes no address hint, where the plan
        // says.
        (libc::EEXIST, "mmap(io_uring filler below the ring)")
        | (_, "mmap(io_uring) landed off its place") => Some(format!(
            "the runtime cannot place an io_uring ring where the case needs it ({step}: the x86-64 MAP_32BIT window is not laid out as Linux's)"
        )),
        (_, "io_setup: ring size differs") => Some(
            "the runtime's io_setup makes an [aio] ring of another size than the case's".into(),
        ),
        _ => None,
    }
}

/// A failed fork of `who` with extra clone `flags`: EINVAL for CLONE_NEWPID, which Linux
/// accepts from the harness (the case requires CAP_SYS_ADMIN), is a runtime that cannot
/// make the namespace (qemu-user's `do_fork` refuses flags it does not emulate).
fn fork_error(who: &str, flags: libc::c_ulong, e: &std::io::Error) -> String {
    if flags & libc::CLONE_NEWPID as libc::c_ulong != 0 && e.raw_os_error() == Some(libc::EINVAL) {
        format!("{UNSUPPORTED}the runtime refuses clone(CLONE_NEWPID) for {who} (EINVAL; Linux accepts it with CAP_SYS_ADMIN)")
    } else {
        format!("forking {who}: {e}")
    }
}

/// `e`, and for a process that died before it reported, how: the signal that killed it
/// (qemu-user aborts a process that creates a thread now and then) or its exit status.
fn how_it_died(e: String, child: Child) -> String {
    if !e.contains("(it died)") || !child.wait_zombie(Duration::from_millis(500)) {
        return e;
    }
    match child.reap() {
        Some(st) if libc::WIFSIGNALED(st) => {
            let sig = libc::WTERMSIG(st);
            let name = nix::sys::signal::Signal::try_from(sig).map_or("?", |s| s.as_str());
            format!("{e}: killed by signal {sig} ({name})")
        }
        Some(st) if libc::WIFEXITED(st) => format!("{e}: exit status {}", libc::WEXITSTATUS(st)),
        _ => e,
    }
}

/// The set-up step a caller reports when its CLONE_VM target is not the harness's child.
const CLONE_PARENT_STEP: &str = "clone(CLONE_PARENT)";

/// Reads one message; `Ok((kind, value))`.
fn recv(fd: &OwnedFd, deadline: Instant, who: &str) -> Result<(u8, i64), String> {
    let mut h = [0u8; 9];
    proc::read_exact_until(fd, &mut h, deadline).map_err(|e| format!("{who}: {e}"))?;
    match h[0] {
        b'R' => Ok((b'R', i32::from_le_bytes(h[1..5].try_into().unwrap()) as i64)),
        b'C' => Ok((b'C', i64::from_le_bytes(h[1..9].try_into().unwrap()))),
        b'E' => {
            let errno = i32::from_le_bytes(h[1..5].try_into().unwrap());
            let n = u32::from_le_bytes(h[5..9].try_into().unwrap()) as usize;
            let mut s = vec![0u8; n.min(40)];
            proc::read_exact_until(fd, &mut s, deadline).map_err(|e| format!("{who}: {e}"))?;
            if let Some(why) = unsupported(errno, &String::from_utf8_lossy(&s)) {
                return Err(format!("{UNSUPPORTED}{why}"));
            }
            Err(format!(
                "{who} setup failed at {}: {}",
                String::from_utf8_lossy(&s),
                crate::errno::name(errno)
            ))
        }
        other => Err(format!("{who}: unexpected message byte {other:#x}")),
    }
}

fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// A fresh anonymous read-write mapping of `len` bytes at a kernel-chosen address, with
/// `flags` (MAP_PRIVATE or MAP_SHARED, and any extras): its lowest address, or the errno.
/// Raw syscalls only (usable after fork).
fn map_fresh(len: usize, flags: libc::c_int) -> Result<*mut u8, i32> {
    // SAFETY: a fresh anonymous mapping at a kernel-chosen address replaces nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(nix::errno::Errno::last_raw());
    }
    Ok(p.cast())
}

/// A fresh `size`-byte thread stack: its lowest address, or the errno.
fn map_stack(size: usize) -> Result<*mut u8, i32> {
    map_fresh(size, libc::MAP_PRIVATE | libc::MAP_STACK)
}

/// A stack for a raw clone child, mapped in the current process: its top.
fn clone_stack() -> Result<*mut u8, (i32, &'static str)> {
    const SIZE: usize = 256 << 10;
    let p = map_stack(SIZE).map_err(|e| (e, "mmap(stack)"))?;
    // SAFETY: one past the end of the mapping is the initial stack pointer for clone.
    Ok(unsafe { p.add(SIZE) })
}

extern "C" fn idle_thread(_: *mut libc::c_void) -> libc::c_int {
    pause_forever()
}

extern "C" fn idle_clone_vm(arg: *mut libc::c_void) -> libc::c_int {
    // `arg` carries the harness's pid, our parent through CLONE_PARENT: die with it.
    // SAFETY: integer prctl and getppid.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != arg as usize as i32 {
            libc::_exit(111);
        }
    }
    pause_forever()
}

const THREAD_FLAGS: libc::c_int = libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM;

/// Starts a thread (or a CLONE_VM process) running `f` on its own stack; returns its TID.
fn spawn_raw(
    f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    flags: libc::c_int,
    arg: *mut libc::c_void,
) -> Result<i32, (i32, &'static str)> {
    let stack = clone_stack()?;
    // SAFETY: `stack` is the top of a fresh 256 KiB mapping used by nothing else; `f` only
    // makes raw syscalls on data that stays mapped for the life of the process.
    let tid = unsafe { libc::clone(f, stack.cast(), flags, arg) };
    if tid < 0 {
        return Err((nix::errno::Errno::last_raw(), "clone"));
    }
    Ok(tid)
}

/// What a target needs to report and serve dumps (also a zombie-leader's surviving thread).
#[derive(Clone, Copy)]
struct ServeCtx<'a> {
    regions: &'a [Region],
    up: RawFd,
    down: RawFd,
    /// Where `R pid` / `E …` goes: `up`, or a pipe to the caller when the caller forked the
    /// target (`parent: caller`).
    ready: RawFd,
}

extern "C" fn uffd_handler_thread(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points into `target_main`'s frame, which lives as long as the process:
    // `target_main` of a `child` target (the only kind with userfaultfd regions) ends in
    // `serve`, which never returns.
    let h = unsafe { &*(arg as *const crate::sys::uffd::Handler) };
    crate::sys::uffd::serve(h)
}

extern "C" fn serving_thread(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to a ServeCtx built by the parent before fork; it lives in this
    // process's copy of the parent's memory for the whole life of the process.
    let ctx = unsafe { &*(arg as *const ServeCtx<'_>) };
    // SAFETY: gettid has no preconditions.
    send_ready(ctx.ready, unsafe { libc::gettid() });
    serve(ctx.regions, ctx.up, ctx.down)
}

/// Answers dump requests until the parent closes the pipe.
fn serve(regions: &[Region], up: RawFd, down: RawFd) -> ! {
    while let Some(b'D') = proc::read_byte_raw(down) {
        layout::dump(regions, up);
    }
    // SAFETY: exit_group ends the whole target.
    unsafe { libc::_exit(0) }
}

fn target_main(plan: &Plan, fds: &[Option<RawFd>], ctx: &ServeCtx<'_>, inject: Inject) -> i32 {
    if inject == Inject::TargetHang {
        pause_forever();
    }
    let setup = || -> Result<(), (i32, &'static str)> {
        layout::drop_inherited_plan_mappings();
        layout::build(&plan.target_regions, fds)?;
        if let Some(x) = plan
            .special_regions
            .iter()
            .find(|r| r.kind == crate::case::RegionKind::Uprobes)
            .filter(|_| plan.specials.contains(&crate::plan::Special::Uprobes))
        {
            crate::sys::make_xol_area(x.start)?;
        }
        if let Some(c) = &plan.target_creds {
            crate::sys::creds::apply(c)?;
        }
        if plan.target_userns {
            crate::sys::unshare_userns()?;
        }
        if plan.target_creds.is_some() || plan.target_userns || !plan.target_dumpable {
            // A credential change resets dumpable to suid_dumpable; set what the case asked.
            crate::sys::creds::set_dumpable(plan.target_dumpable)?;
        }
        if plan.target_creds.is_some() {
            // A credential change clears PR_SET_PDEATHSIG (prctl(2)); arm it again so a
            // target forked by the caller still dies with it.
            crate::sys::creds::rearm_pdeathsig()?;
        }
        if let Some(p) = plan.target_ptracer {
            let tracer = match p {
                Ptracer::Any => libc::PR_SET_PTRACER_ANY,
                // SAFETY: getppid has no preconditions.
                Ptracer::Harness => (unsafe { libc::getppid() }) as libc::c_ulong,
            };
            crate::sys::creds::set_ptracer(tracer)?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        return send_error(ctx.ready, e);
    }
    // userfaultfd regions, after the credential change (the descriptors are this process's).
    // The handlers live in this frame, which never returns (`serve` exits the process).
    let mut handlers = [None::<crate::sys::uffd::Handler>; 8];
    for r in plan.target_regions.iter().filter(|r| r.is_uffd()) {
        match layout::register_uffd(r) {
            Ok(None) => {}
            Ok(Some(h)) => match handlers.iter_mut().find(|s| s.is_none()) {
                Some(slot) => *slot = Some(h),
                None => return send_error(ctx.ready, (libc::ENOSPC, "more than 8 uffd regions")),
            },
            Err(e) => return send_error(ctx.ready, e),
        }
    }
    for h in handlers.iter().flatten() {
        let arg = h as *const crate::sys::uffd::Handler as *mut libc::c_void;
        if let Err(e) = spawn_raw(uffd_handler_thread, THREAD_FLAGS, arg) {
            return send_error(ctx.ready, e);
        }
    }
    match plan.target_kind {
        TargetKind::ZombieLeader | TargetKind::ZombieLeaderThread => {
            let arg = ctx as *const ServeCtx<'_> as *mut libc::c_void;
            if let Err(e) = spawn_raw(serving_thread, THREAD_FLAGS, arg) {
                return send_error(ctx.ready, e);
            }
            // Only this thread exits; the group lives on in the serving thread.
            // SAFETY: SYS_exit ends the calling thread only.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            0
        }
        _ => {
            // SAFETY: getpid has no preconditions.
            send_ready(ctx.ready, unsafe { libc::getpid() });
            serve(&plan.target_regions, ctx.up, ctx.down)
        }
    }
}

struct CallerCtx<'a> {
    plan: &'a Plan,
    harness_pid: i32,
    target_pid: i32,
    caller_fds: Vec<Option<RawFd>>,
    target_fds: Vec<Option<RawFd>>,
    up: RawFd,
    inject: Inject,
    /// Set when the caller forks the target itself (`parent: caller`).
    own_target: Option<ServeCtx<'a>>,
    /// The harness's ends of that target's pipes: the caller closes its inherited copies so
    /// the target sees EOF (and exits) when the harness closes them.
    harness_ends: [RawFd; 2],
}

/// Forks the target as the caller's child and waits for it to report; its pid, or the raw
/// error message it sent (forwarded to the harness as the caller's own).
fn fork_own_target(c: &CallerCtx<'_>, ctx: ServeCtx<'_>) -> Result<(Child, i32), [u8; 9]> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(error_message(nix::errno::Errno::last_raw()));
    }
    let ctx = ServeCtx {
        ready: fds[1],
        ..ctx
    };
    let child = match proc::fork_child(b"pvmtest-target\0", || {
        target_main(c.plan, &c.target_fds, &ctx, c.inject)
    }) {
        Ok(ch) => ch,
        Err(e) => return Err(error_message(e.raw_os_error().unwrap_or(0))),
    };
    // SAFETY: closes our copy of the write end so a dead target reads as EOF.
    unsafe { libc::close(fds[1]) };
    let mut m = [0u8; 9];
    if !proc::read_exact_raw(fds[0], &mut m) {
        return Err(error_message(libc::ECHILD));
    }
    if m[0] != b'R' {
        return Err(m);
    }
    let pid = child.pid;
    Ok((child, pid))
}

/// The head of an `E` message with no step text (`E errno 0`).
fn error_message(errno: i32) -> [u8; 9] {
    let mut m = [0u8; 9];
    m[0] = b'E';
    m[1..5].copy_from_slice(&errno.to_le_bytes());
    m
}

/// The caller's credentials, then its user namespace: unshared after the id change, which a
/// process holding no capability in the harness's namespace could not make any more.
fn enter_caller_creds(plan: &Plan) -> Result<(), (i32, &'static str)> {
    if let Some(cr) = &plan.caller_creds {
        crate::sys::creds::apply(cr)?;
    }
    if plan.caller_userns {
        crate::sys::unshare_userns()?;
    }
    Ok(())
}

fn caller_main(c: &CallerCtx<'_>) -> i32 {
    let plan = c.plan;
    let mut own_target: Option<Child> = None;
    if c.own_target.is_some() {
        for fd in c.harness_ends {
            // SAFETY: closes this process's inherited copy of a pipe end it never uses.
            unsafe { libc::close(fd) };
        }
    }
    let mut setup = || -> Result<i32, (i32, &'static str)> {
        layout::build_caller(plan, &c.caller_fds)?;
        if let Some(ctx) = c.own_target {
            // Before the caller changes credentials: the target sets its own.
            match fork_own_target(c, ctx) {
                Ok((child, pid)) => {
                    own_target = Some(child);
                    enter_caller_creds(plan)?;
                    return Ok(pid);
                }
                Err(m) => {
                    proc::write_all_raw(c.up, &m);
                    return Err((0, ""));
                }
            }
        }
        let pid = match plan.target_kind {
            TargetKind::SelfProcess | TargetKind::Thread | TargetKind::CloneVm => {
                layout::build(&plan.target_regions, &c.target_fds)?;
                match plan.target_kind {
                    // SAFETY: getpid has no preconditions.
                    TargetKind::SelfProcess => unsafe { libc::getpid() },
                    TargetKind::Thread => {
                        spawn_raw(idle_thread, THREAD_FLAGS, std::ptr::null_mut())?
                    }
                    // CLONE_PARENT makes it the harness's child, so the harness kills and
                    // reaps it like every other process (it learns the pid from `R`).
                    _ => {
                        let parent = if c.inject == Inject::NoCloneParent {
                            0
                        } else {
                            libc::CLONE_PARENT
                        };
                        let tid = spawn_raw(
                            idle_clone_vm,
                            libc::CLONE_VM | parent | libc::SIGCHLD,
                            c.harness_pid as usize as *mut libc::c_void,
                        )?;
                        // Our sibling if CLONE_PARENT worked: waitpid gives ECHILD. A runtime
                        // that ignores it (gVisor, docs/CONFORMANCE.md class K) made it our
                        // child, which exits at once (idle_clone_vm): reap it and say so.
                        let mut st = 0;
                        // SAFETY: waitpid with a valid out pointer.
                        let r =
                            unsafe { libc::waitpid(tid, &mut st, libc::WNOHANG | libc::__WALL) };
                        if r >= 0 {
                            // SAFETY: our own child: kill and reap it.
                            unsafe {
                                libc::kill(tid, libc::SIGKILL);
                                libc::waitpid(tid, &mut st, libc::__WALL);
                            }
                            return Err((libc::ENOTSUP, CLONE_PARENT_STEP));
                        }
                        tid
                    }
                }
            }
            _ => c.target_pid,
        };
        enter_caller_creds(plan)?;
        Ok(pid)
    };
    let pid = match setup() {
        Ok(v) => v,
        Err((0, "")) => return 3, // the target's own error was forwarded
        Err(e) => return send_error(c.up, e),
    };
    send_ready(c.up, pid);
    if c.inject == Inject::CallerHang {
        pause_forever();
    }
    let call = &plan.call;
    let args = crate::sys::RawArgs::of(call, pid);
    let write = call.syscall == Syscall::Writev;
    let r = match call.entry {
        _ if c.inject == Inject::Enosys => Err(libc::ENOSYS),
        Entry::Native => crate::sys::call_native(write, &args),
        Entry::Compat => crate::sys::call_compat(write, &args),
    };
    send_result(c.up, r);
    layout::dump(&plan.caller_regions, c.up);
    if plan.target_shares_caller_mm() {
        layout::dump(&plan.target_regions, c.up);
    }
    if let Some(t) = own_target {
        // The target dies with us (PR_SET_PDEATHSIG): stay until the harness has its dump
        // and closes its pipes, or kills us.
        t.reap();
    }
    0
}

fn read_dumps(
    fd: &OwnedFd,
    regions: &[Region],
    deadline: Instant,
    who: &str,
    out: &mut Vec<Dump>,
) -> Result<(), String> {
    for r in regions.iter().filter(|r| layout::dumped(r)) {
        let mut memory = vec![0u8; r.backed_len() as usize];
        proc::read_exact_until(fd, &mut memory, deadline)
            .map_err(|e| format!("{who} dump of {}: {e}", r.name))?;
        out.push(Dump::of(r, memory, None));
    }
    Ok(())
}

fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// Runs the plan's call on the running kernel. `Err` is a setup failure (the case is broken).
pub fn execute(plan: &Plan, facts: &Facts, opts: &Options) -> Result<Observed, String> {
    // Special mappings (vdso, vvar) at the harness's addresses, which every child inherits.
    let bound = plan.bind(facts);
    let plan: &Plan = &bound;
    // The pages of [vvar] the model takes as present in every fork (model::VVAR_PRESENT_PAGES:
    // the time page) are faulted in here, before any fork, whatever libc did so far.
    let live_span = facts
        .vvar
        .filter(|_| plan.specials.contains(&crate::plan::Special::Vvar))
        .map(|v| (v.start, v.len.min(crate::model::VVAR_PRESENT_PAGES * 4096)));
    if let Some((start, len)) = live_span {
        for page in (start..start + len).step_by(4096) {
            // SAFETY: the first page of the harness's own [vvar] is its time page, which
            // every vvar fault handler (x86 map_vdso 5.10-6.12, lib/vdso/datastore.c
            // vvar_fault later) serves to the owning process.
            unsafe { crate::sys::touch(page) };
        }
    }
    // The harness holds the files; children inherit the descriptors to map them.
    let target_files = files_for(&plan.target_regions)?;
    let caller_files = files_for(&plan.caller_regions)?;
    let target_fds = raw_fds(&target_files);
    let caller_fds = raw_fds(&caller_files);

    let mut target: Option<Child> = None;
    let mut target_pipes: Option<(OwnedFd, OwnedFd)> = None; // (up_r, down_w)
                                                             // The target's ends when the caller forks the target (`parent: caller`): (up_w, down_r).
    let mut own_pipes: Option<(OwnedFd, OwnedFd)> = None;
    let target_pid: i32 = match plan.target_kind {
        TargetKind::Child if plan.target_parent == TargetParent::Caller => {
            let (up_r, up_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
            let (down_r, down_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
            target_pipes = Some((up_r, down_w));
            own_pipes = Some((up_w, down_r));
            0
        }
        TargetKind::Child
        | TargetKind::ZombieLeader
        | TargetKind::ZombieLeaderThread
        | TargetKind::PidnsChild => {
            let (up_r, up_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
            let (down_r, down_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
            let ctx = ServeCtx {
                regions: &plan.target_regions,
                up: up_w.as_raw_fd(),
                down: down_r.as_raw_fd(),
                ready: up_w.as_raw_fd(),
            };
            let flags = if plan.target_kind == TargetKind::PidnsChild {
                libc::CLONE_NEWPID as libc::c_ulong
            } else {
                0
            };
            let child = proc::fork_with(b"pvmtest-target\0", flags, || {
                target_main(plan, &target_fds, &ctx, opts.inject)
            })
            .map_err(|e| fork_error("the target", flags, &e))?;
            drop(up_w);
            drop(down_r);
            let deadline = Instant::now() + opts.timeout;
            let (_, reported) = match recv(&up_r, deadline, "target") {
                Ok(v) => v,
                Err(e) if e.contains("timed out") => {
                    return Err(format!(
                        "target never became ready within {} ms",
                        opts.timeout.as_millis()
                    ))
                }
                Err(e) => return Err(how_it_died(e, child)),
            };
            let leader = child.pid;
            target = Some(child);
            target_pipes = Some((up_r, down_w));
            match plan.target_kind {
                TargetKind::ZombieLeader | TargetKind::ZombieLeaderThread => {
                    if !std::path::Path::new(&format!("/proc/{leader}/stat")).exists() {
                        return Err(format!("{UNSUPPORTED}the harness sees a zombie leader through /proc/<pid>/stat, which this system does not have"));
                    }
                    while proc_state(leader) != Some('Z') {
                        if Instant::now() > deadline {
                            return Err("the target's leader thread never became a zombie".into());
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    if plan.target_kind == TargetKind::ZombieLeader {
                        leader
                    } else {
                        reported as i32
                    }
                }
                _ => leader,
            }
        }
        TargetKind::Zombie => {
            let child =
                proc::fork_child(b"pvmtest-zombie\0", || 0).map_err(|e| format!("fork: {e}"))?;
            if !child.wait_zombie(opts.timeout) {
                return Err("the zombie target never exited".into());
            }
            let pid = child.pid;
            target = Some(child);
            pid
        }
        TargetKind::Reaped => {
            let child =
                proc::fork_child(b"pvmtest-reaped\0", || 0).map_err(|e| format!("fork: {e}"))?;
            let pid = child.pid;
            child.reap();
            pid
        }
        TargetKind::UnusedPid => facts.pid_max,
        TargetKind::Pid0 => 0,
        TargetKind::PidMinus1 => -1,
        TargetKind::Kthread => 2,
        TargetKind::SelfProcess | TargetKind::Thread | TargetKind::CloneVm => 0,
    };
    if opts.inject == Inject::Panic {
        panic!("injected panic (PVMTEST_INJECT=panic) with the target up");
    }

    // A caller in a new PID namespace names a target made outside it only when that
    // namespace holds nobody but the caller (pid 1): no thread, no target of its own. The
    // model takes such a pid to name nothing there, which fails only for pid 1.
    if plan.caller_pidns && target_pid == 1 {
        return Err(format!(
            "the target's pid {target_pid} would also name a task in the caller's new PID namespace"
        ));
    }
    let (up_r, up_w) = proc::pipe().map_err(|e| format!("pipe: {e}"))?;
    let ctx = CallerCtx {
        // SAFETY: getpid has no preconditions.
        harness_pid: unsafe { libc::getpid() },
        plan,
        target_pid,
        caller_fds,
        target_fds: target_fds.clone(),
        up: up_w.as_raw_fd(),
        inject: opts.inject,
        own_target: own_pipes.as_ref().map(|(up, down)| ServeCtx {
            regions: &plan.target_regions,
            up: up.as_raw_fd(),
            down: down.as_raw_fd(),
            ready: up.as_raw_fd(),
        }),
        harness_ends: target_pipes
            .as_ref()
            .map_or([-1, -1], |(up, down)| [up.as_raw_fd(), down.as_raw_fd()]),
    };
    let caller_flags = if plan.caller_pidns {
        libc::CLONE_NEWPID as libc::c_ulong
    } else {
        0
    };
    let caller = proc::fork_with(b"pvmtest-caller\0", caller_flags, || caller_main(&ctx))
        .map_err(|e| fork_error("the caller", caller_flags, &e))?;
    drop(up_w);
    drop(own_pipes);
    let deadline = Instant::now() + opts.timeout;
    let timed = |e: String| {
        if e.contains("timed out") {
            format!(
                "the caller did not report within {} ms",
                opts.timeout.as_millis()
            )
        } else {
            e
        }
    };
    let (_, pid) = match recv(&up_r, deadline, "caller") {
        Ok(v) => v,
        Err(e) => return Err(how_it_died(timed(e), caller)),
    };
    // A CLONE_VM target was created with CLONE_PARENT: it is ours to kill and reap.
    let _clone_vm_target =
        (plan.target_kind == TargetKind::CloneVm).then(|| Child::adopt(pid as i32));
    let (_, ret) = recv(&up_r, deadline, "caller").map_err(timed)?;
    let result = word_result(ret);
    let mut dumps = Vec::new();
    read_dumps(&up_r, &plan.caller_regions, deadline, "caller", &mut dumps)?;
    if plan.target_shares_caller_mm() {
        read_dumps(&up_r, &plan.target_regions, deadline, "caller", &mut dumps)?;
    }

    if let Some((up, down)) = &target_pipes {
        if plan.target_kind != TargetKind::ZombieLeader {
            if !proc::write_all_raw(down.as_raw_fd(), b"D") {
                return Err("the target went away before its dump".into());
            }
            read_dumps(
                up,
                &plan.target_regions,
                Instant::now() + opts.timeout,
                "target",
                &mut dumps,
            )?;
        }
    }
    drop(target_pipes);
    drop(target);
    // After the target's dump. A target the caller forked exits on the EOF above and the
    // caller reaps it and exits; wait for that rather than kill the caller first (its orphaned
    // target would then be reaped by init, not by anyone here).
    if plan.target_parent == TargetParent::Caller {
        caller.wait_zombie(opts.timeout);
    }
    drop(caller);

    // File contents, read through the harness's own descriptors.
    for (regions, fds) in [
        (&plan.target_regions, &target_files),
        (&plan.caller_regions, &caller_files),
    ] {
        for (r, fd) in regions.iter().zip(fds.iter()) {
            let Some(fd) = fd.as_ref().filter(|_| r.is_file()) else {
                continue;
            };
            let mut buf = vec![0u8; r.file_size.unwrap_or(0) as usize];
            let n = nix::sys::uio::pread(fd, &mut buf, 0).map_err(|e| format!("pread: {e}"))?;
            buf.truncate(n);
            if let Some(d) = dumps
                .iter_mut()
                .find(|d| d.side == r.side && d.name == r.name)
            {
                d.file = Some(buf);
            }
        }
    }
    Ok(Observed {
        result,
        pid: pid as i32,
        dumps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    /// Both ways give a nameless read-write file and leave nothing behind in the directory.
    #[test]
    fn anonymous_files_leave_no_name() {
        let dir = std::env::temp_dir().join(format!("pvmtest-anon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for tmpfile in [true, false] {
            let mut f = anonymous_file_with(&dir, tmpfile).unwrap();
            f.write_all(b"pattern").unwrap();
            f.rewind().unwrap();
            let mut back = String::new();
            f.read_to_string(&mut back).unwrap();
            assert_eq!(back, "pattern");
            assert_eq!(
                std::fs::read_dir(&dir).unwrap().count(),
                0,
                "tmpfile {tmpfile}"
            );
        }
        // The fallback reports a directory it cannot use in one line.
        let e = anonymous_file_with(&dir.join("missing"), false).unwrap_err();
        assert!(
            e.contains("a private directory in") && !e.contains('\n'),
            "{e}"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn only_steps_linux_never_fails_this_way_are_unsupported() {
        let filler = "mmap(io_uring filler below the ring)";
        assert!(unsupported(libc::EEXIST, filler).is_some_and(|w| w.contains("io_uring")));
        assert!(unsupported(0, "mmap(io_uring) landed off its place").is_some());
        // Any other failure of these steps is the harness's: broken, not a skip.
        assert_eq!(unsupported(libc::ENOMEM, filler), None);
        assert_eq!(unsupported(libc::EEXIST, "mmap"), None);
        assert!(unsupported(libc::ENOSYS, "io_uring_setup").is_some());
    }
}
