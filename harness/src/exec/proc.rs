//! Forked processes that can never outlive the harness: every child is registered, killed
//! with SIGKILL and reaped when its guard drops (success, failure, panic unwinding), on
//! SIGINT/SIGTERM/SIGHUP (the handler kills everything registered), and when the harness dies
//! outright (every child sets PR_SET_PDEATHSIG).

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

const SLOTS: usize = 256;
static LIVE: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// Puts a process started elsewhere (QEMU, by std::process::Command) under the signal
/// handler's care: SIGINT/SIGTERM/SIGHUP kill and reap it too.
pub fn track(pid: i32) {
    register(pid)
}

/// Undoes [`track`] once the process has been reaped.
pub fn untrack(pid: i32) {
    unregister(pid)
}

fn register(pid: i32) {
    for s in &LIVE {
        if s.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister(pid: i32) {
    for s in &LIVE {
        if s.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

/// Kills every registered child. Async-signal-safe (atomics and kill(2) only).
pub fn kill_all() {
    for s in &LIVE {
        let pid = s.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    kill_all();
    for s in &LIVE {
        let pid = s.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: waitpid with a null status pointer is allowed and async-signal-safe.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
    // SAFETY: restore the default action and re-raise so the exit status says "killed by sig".
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler (the CLI does this once at start).
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` is async-signal-safe (atomics, kill, waitpid, signal, raise).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// A forked child; dropping it kills and reaps it.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    reaped: bool,
}

impl Child {
    /// Takes charge of a process that is already our child but was created elsewhere (a
    /// CLONE_PARENT child of the caller): it is killed and reaped like the others.
    pub fn adopt(pid: i32) -> Child {
        register(pid);
        Child { pid, reaped: false }
    }

    /// Waits for the child to exit and reaps it (for `reaped` targets).
    pub fn reap(mut self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.reaped = true;
        unregister(self.pid);
        (r == self.pid).then_some(status)
    }

    /// Waits, without reaping, until the child has exited (it stays a zombie).
    pub fn wait_zombie(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // A pidfd turns readable when the process has exited: one poll instead of a sleep
        // loop. Without pidfd_open (before 5.3) the loop below does it.
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd >= 0 {
            // SAFETY: the descriptor was just returned by the kernel and nothing else owns it.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe {
                    libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32)
                };
                if r > 0 {
                    break;
                }
                let interrupted = r < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
                if !interrupted || left.is_zero() {
                    break;
                }
            }
        }
        loop {
            // SAFETY: a zeroed siginfo_t is a valid out buffer for waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
                )
            };
            // SAFETY: si_pid is valid to read after a successful waitid.
            if r == 0 && unsafe { info.si_pid() } == self.pid {
                return true;
            }
            if r != 0 || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: kill/waitpid on our own child's pid, which we have not reaped yet, so it
        // cannot have been reused.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), libc::__WALL);
        }
        unregister(self.pid);
    }
}

/// Runs `body` in the child half of a fork-like split; the child never returns into the
/// caller's frames. `parent_pid` is checked after PR_SET_PDEATHSIG so a child whose parent
/// already died exits at once.
fn child_prologue(parent_pid: i32, name: &[u8], new_pid_ns: bool) {
    // SAFETY: integer/short-buffer prctls and getppid; `name` is NUL-terminated by the callers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // In a new PID namespace the parent lies outside it and getppid() reads 0.
        let expected = if new_pid_ns { 0 } else { parent_pid };
        if libc::getppid() != expected {
            libc::_exit(111);
        }
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
    }
}

/// Forks; the child runs `body` and `_exit`s with its return value (101 on panic).
/// `body` must be async-signal-safe in spirit: no allocation, no locks, no printing.
pub fn fork_child(name: &'static [u8], body: impl FnOnce() -> i32) -> std::io::Result<Child> {
    fork_with(name, 0, body)
}

/// Like [`fork_child`], with extra clone flags (e.g. CLONE_NEWPID). Uses the raw clone syscall
/// with a null stack, which duplicates the address space like fork(2).
pub fn fork_with(
    name: &'static [u8],
    clone_flags: libc::c_ulong,
    body: impl FnOnce() -> i32,
) -> std::io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: raw clone without CLONE_VM copies the address space like fork; the child runs
    // only `body` (which the callers keep to raw syscalls on pre-built data) and _exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            clone_flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        child_prologue(
            parent,
            name,
            clone_flags & libc::CLONE_NEWPID as libc::c_ulong != 0,
        );
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let pid = pid as i32;
    register(pid);
    Ok(Child { pid, reaped: false })
}

/// A pipe pair with close-on-exec ends.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// Reads exactly `buf.len()` bytes before `deadline`; `Err` says timeout or EOF.
pub fn read_exact_until(fd: &OwnedFd, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        if r == 0 {
            continue;
        }
        // SAFETY: writes at most the remaining length into `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("read: {e}"));
        }
        if n == 0 {
            return Err("the process closed its pipe (it died)".into());
        }
        got += n as usize;
    }
    Ok(())
}

/// Raw write of all of `buf` (child side; no allocation).
pub fn write_all_raw(fd: i32, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: reads at most `buf.len()` bytes from `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Raw write of `len` bytes starting at address `addr` of this process's memory.
pub fn write_mem_raw(fd: i32, addr: u64, len: u64) -> bool {
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(1 << 20) as usize;
        // SAFETY: the caller guarantees [addr, addr+len) is mapped readable in this process
        // (a region it built and made readable before dumping).
        let n = unsafe { libc::write(fd, (addr + done) as *const libc::c_void, chunk) };
        if n < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return false;
        }
        done += n as u64;
    }
    true
}

/// Raw blocking read of exactly `buf.len()` bytes; `false` on EOF or error (child side).
pub fn read_exact_raw(fd: i32, buf: &mut [u8]) -> bool {
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

/// Raw blocking read of one byte; `None` on EOF or error (child side).
pub fn read_byte_raw(fd: i32) -> Option<u8> {
    let mut b = 0u8;
    loop {
        // SAFETY: one-byte read into a local.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        if n == 1 {
            return Some(b);
        }
        if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        return None;
    }
}

/// For PID 1 in a VM guest: reaps every process that dies (orphans are re-parented to us and
/// nobody else would) until `main` exits; returns `main`'s wait status.
pub fn reap_all_until(main: Child) -> Option<i32> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out buffer for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on any child with WNOWAIT only reports; `info` is valid.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::__WALL,
            )
        };
        if r != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        // SAFETY: si_pid is valid to read after a successful waitid.
        let pid = unsafe { info.si_pid() };
        if pid == main.pid {
            return main.reap();
        }
        // SAFETY: reaps the zombie waitid just reported, which is our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) };
    }
}
