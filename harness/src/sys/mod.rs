//! The raw layer: every argument goes to the kernel exactly as given. No clamping, no
//! validation, no pointer checks: a conformance harness must be able to lie to the kernel.
//!
//! C prototypes (process_vm_readv(2)):
//!
//! ```c
//! ssize_t process_vm_readv(pid_t pid, const struct iovec *local_iov, unsigned long liovcnt,
//!                          const struct iovec *remote_iov, unsigned long riovcnt,
//!                          unsigned long flags);
//! ssize_t process_vm_writev(/* same arguments */);
//! ```
//!
//! The native entry is `syscall(2)` with x86-64 numbers 310/311. The compat entry is
//! `int 0x80` with i386 numbers 347/348: arguments go in ebx, ecx, edx, esi, edi, ebp as 32-bit
//! values, and the kernel reads `struct compat_iovec` (two u32) arrays because
//! `in_compat_syscall()` is true.

#![allow(unsafe_code)]

pub mod creds;
pub mod uffd;

/// The arguments exactly as the kernel will see them (the compat entry uses the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawArgs {
    pub pid: i32,
    pub lvec: u64,
    pub liovcnt: u64,
    pub rvec: u64,
    pub riovcnt: u64,
    pub flags: u64,
}

impl RawArgs {
    /// A plan's call as made on `pid`, every argument exactly as planned.
    pub fn of(call: &crate::plan::Call, pid: i32) -> RawArgs {
        RawArgs {
            pid,
            lvec: call.lvec,
            liovcnt: call.liovcnt,
            rvec: call.rvec,
            riovcnt: call.riovcnt,
            flags: call.flags,
        }
    }
}

/// `len` bytes of this process's own memory at `addr`, read through `/proc/self/mem` (so an
/// unreadable address is an error, not a fault). Used for the vdso bytes a copy moved.
pub fn own_memory(addr: u64, len: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/mem").ok()?;
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    f.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

/// Reads one byte of this process's memory at `addr` with a plain load, so that a page of a
/// special mapping is faulted in (and its PTE exists in every later fork).
///
/// # Safety
/// `addr` must be readable by this process (a page of its `[vvar]` that the kernel's fault
/// handler serves to the owner).
pub unsafe fn touch(addr: u64) {
    // SAFETY: the caller guarantees `addr` is readable; a volatile read has no other effect.
    unsafe { std::ptr::read_volatile(addr as *const u8) };
}

pub const NR_READV_64: libc::c_long = libc::SYS_process_vm_readv;
pub const NR_WRITEV_64: libc::c_long = libc::SYS_process_vm_writev;
pub const NR_READV_32: u32 = 347;
pub const NR_WRITEV_32: u32 = 348;

/// Calls process_vm_readv (`write == false`) or process_vm_writev through `syscall(2)`.
/// Returns the byte count or the errno.
pub fn call_native(write: bool, a: &RawArgs) -> Result<u64, i32> {
    let nr = if write { NR_WRITEV_64 } else { NR_READV_64 };
    // SAFETY: the kernel validates every pointer it is given (that is what is under test); a
    // bad pointer yields EFAULT, never a fault in this process. The only memory the kernel may
    // write is the caller's local buffers, which the case declared as the call's destination.
    let ret = unsafe {
        libc::syscall(
            nr,
            a.pid as libc::c_long,
            a.lvec as libc::c_ulong,
            a.liovcnt as libc::c_ulong,
            a.rvec as libc::c_ulong,
            a.riovcnt as libc::c_ulong,
            a.flags as libc::c_ulong,
        )
    };
    if ret < 0 {
        Err(nix::errno::Errno::last_raw())
    } else {
        Ok(ret as u64)
    }
}

/// `int 0x80` with six arguments; returns the raw `eax` (negative errno on failure).
///
/// rbx and rbp cannot be named as asm operands (LLVM reserves them), so they are saved on the
/// stack and loaded inside the block from r12/r13. Those two are named explicitly: with a plain
/// `reg` operand the allocator may pick rbx itself, and `mov ebx, …` would then overwrite the
/// sixth argument before it is read.
fn int80(nr: u32, a1: u32, a2: u32, a3: u32, a4: u32, a5: u32, a6: u32) -> i32 {
    let ret: u32;
    // SAFETY: int 0x80 enters the kernel's compat syscall path; it touches only the registers
    // declared here (r8-r11 are declared clobbered because the 32-bit ABI does not promise to
    // preserve them) and rbx/rbp, which are restored before the block ends. Memory effects are
    // those of the syscall, as for `call_native`.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "push rbp",
            "mov ebx, r12d",
            "mov ebp, r13d",
            "int 0x80",
            "pop rbp",
            "pop rbx",
            in("r12") a1,
            in("r13") a6,
            inlateout("eax") nr => ret,
            in("ecx") a2,
            in("edx") a3,
            in("esi") a4,
            in("edi") a5,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
    }
    ret as i32
}

/// The same call through the i386 entry. Arguments are truncated to 32 bits, as a 32-bit
/// process would pass them.
pub fn call_compat(write: bool, a: &RawArgs) -> Result<u64, i32> {
    let nr = if write { NR_WRITEV_32 } else { NR_READV_32 };
    let r = int80(
        nr,
        a.pid as u32,
        a.lvec as u32,
        a.liovcnt as u32,
        a.rvec as u32,
        a.riovcnt as u32,
        a.flags as u32,
    );
    if r < 0 {
        Err(-r)
    } else {
        Ok(r as u64)
    }
}

/// What `int 0x80` reaches in this process: probed in a forked child, because without
/// CONFIG_IA32_EMULATION (or with `ia32_emulation=0`, or in gVisor) the instruction raises
/// SIGSEGV or gives ENOSYS. Two harmless numbers tell the tables apart: 20 is getpid in the
/// i386 table (arch/x86/entry/syscalls/syscall_32.tbl) and `writev(0, NULL, 0)` in the 64-bit
/// one; 39 is getpid in the 64-bit table and `mkdir(NULL)` (EFAULT) in the i386 one. Every
/// argument register either table reads is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Int80 {
    /// The ia32 compat entry: what the `compat` cases need.
    Ia32,
    /// `int 0x80` runs the 64-bit syscall table, so there is no compat entry to test. Seen in
    /// User-mode Linux 6.1, gVisor 20221219 and qemu-user 7.2 (docs/CONFORMANCE.md).
    Table64,
    /// A fault, ENOSYS or anything else.
    Absent,
}

pub fn int80_probe() -> Int80 {
    // SAFETY: the child only makes raw syscalls and _exits; it never returns into Rust code
    // that could observe state copied from other threads.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Int80::Absent,
        0 => {
            let via80_getpid = int80(20, 0, 0, 0, 0, 0, 0);
            let via80_64_getpid = int80(39, 0, 0, 0, 0, 0, 0);
            // SAFETY: getpid has no preconditions; _exit ends the child without unwinding.
            let real = unsafe { libc::getpid() };
            let code = if via80_getpid == real {
                0
            } else if via80_64_getpid == real {
                2
            } else {
                1
            };
            unsafe { libc::_exit(code) }
        }
        child => {
            let mut status = 0;
            // SAFETY: waits for the child forked just above; `status` is a valid out pointer.
            let r = unsafe { libc::waitpid(child, &mut status, 0) };
            match (r == child && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status)) {
                Some(0) => Int80::Ia32,
                Some(2) => Int80::Table64,
                _ => Int80::Absent,
            }
        }
    }
}

/// Keeps glibc's malloc from holding on to freed big buffers: `mallopt(M_MMAP_THRESHOLD,
/// 128 KiB)` fixes the threshold that glibc otherwise raises to the size of each big block
/// freed (up to 32 MiB), after which 4 MiB region images and dumps came from the heap and
/// stayed resident. The harness forks a target and a caller per case, and every fork copies
/// the page tables of what is resident: under TCG that copying was a large part of a small
/// case. Setting the threshold also fixes the trim threshold (glibc's mallopt).
pub fn keep_malloc_small() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// `sysconf(_SC_PAGESIZE)`, 4096 if it fails.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

/// Whether `int 0x80` reaches the ia32 compat entry ([`int80_probe`]).
pub fn compat_available() -> bool {
    int80_probe() == Int80::Ia32
}

/// The top of this process's user address space (TASK_SIZE): the end of the highest page a
/// fixed mapping can take. Probed with one-page `PROT_NONE` `MAP_FIXED_NOREPLACE` mappings,
/// bisecting between `low` (the end of the highest mapping: user space reaches at least
/// there) and 2^57: above TASK_SIZE `get_unmapped_area` gives ENOMEM, below it the page is
/// either free (mapped, then unmapped at once) or taken (EEXIST). A kernel that ignores
/// MAP_FIXED_NOREPLACE (older than 4.17) treats the address as a hint and maps elsewhere when
/// it is out of range. `None` when not even `low` can be confirmed.
pub fn user_top(low: u64) -> Option<u64> {
    const PAGE: u64 = 4096;
    let fits = |a: u64| -> bool {
        // SAFETY: a fresh PROT_NONE anonymous page at a fixed address that must not replace
        // anything (MAP_FIXED_NOREPLACE); unmapped at once. Nothing else uses the range.
        let p = unsafe {
            libc::mmap(
                a as *mut libc::c_void,
                PAGE as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return nix::errno::Errno::last_raw() == libc::EEXIST;
        }
        // SAFETY: unmaps exactly the page this closure just mapped.
        unsafe { libc::munmap(p, PAGE as usize) };
        p as u64 == a
    };
    let low = low / PAGE * PAGE;
    if low < PAGE || !fits(low - PAGE) {
        return None;
    }
    // Invariant: the page at `ok` fits, the one at `bad` does not (2^57 never does on x86-64).
    let (mut ok, mut bad) = (low / PAGE - 1, (1u64 << 57) / PAGE);
    while bad - ok > 1 {
        let mid = ok + (bad - ok) / 2;
        if fits(mid * PAGE) {
            ok = mid;
        } else {
            bad = mid;
        }
    }
    Some(bad * PAGE)
}

/// Whether memfd_create(2) works.
pub fn memfd_available() -> bool {
    nix::sys::memfd::memfd_create(c"pvmtest-probe", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).is_ok()
}

/// `memfd_secret(2)` on x86-64 (not yet in every libc crate release).
pub const NR_MEMFD_SECRET: libc::c_long = 447;
/// `mseal(2)`.
pub const NR_MSEAL: libc::c_long = 462;
/// `MADV_GUARD_INSTALL` (uapi asm-generic/mman-common.h, 6.13).
pub const MADV_GUARD_INSTALL: i32 = 102;

/// A new secretmem descriptor, or the errno (ENOSYS without CONFIG_SECRETMEM or when
/// `secretmem.enable` is off).
pub fn memfd_secret() -> Result<std::os::fd::OwnedFd, i32> {
    // SAFETY: memfd_secret takes one integer flag and returns a new descriptor we own.
    let fd = unsafe { libc::syscall(NR_MEMFD_SECRET, libc::O_CLOEXEC as libc::c_long) };
    if fd < 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Whether a process without capabilities can create a user namespace: a forked child drops
/// to uid/gid 65534 (when it is root) and calls `unshare(CLONE_NEWUSER)`. Debian's
/// `kernel.unprivileged_userns_clone` and `user.max_user_namespaces` refuse it with EPERM or
/// ENOSPC; a root-only probe would miss both. The child is killed and reaped after 2 s.
pub fn userns_available() -> bool {
    // SAFETY: a raw fork; the child makes raw syscalls only and _exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        // SAFETY: integer syscalls in the child, which ends with _exit.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::geteuid() == 0
                && (libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>())
                    != 0
                    || libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534) != 0
                    || libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) != 0)
            {
                libc::_exit(2);
            }
            let ok = libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) == 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let pid = pid as libc::pid_t;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, writing into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if r < 0 || std::time::Instant::now() > deadline {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Enters a new user namespace (`unshare(CLONE_NEWUSER)`). Async-signal-safe.
pub fn unshare_userns() -> Result<(), (i32, &'static str)> {
    // SAFETY: an integer syscall; the process is single-threaded (a forked child).
    if unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) } != 0 {
        return Err((nix::errno::Errno::last_raw(), "unshare(CLONE_NEWUSER)"));
    }
    Ok(())
}

/// Whether io_setup(2) works: a one-event context, destroyed again.
pub fn aio_available() -> bool {
    aio_ring_len().is_some()
}

/// The length of the `[aio]` ring a one-event io_setup(2) makes, `Some(0)` when the ring is
/// not Linux's (`struct aio_ring` with AIO_RING_MAGIC 0xa10a10a1 and a 32-byte header, sized
/// `32 + 32 * nr` to fill its pages exactly, fs/aio.c `aio_setup_ring`), `None` when
/// io_setup fails.
pub fn aio_ring_len() -> Option<u64> {
    let mut ctx: u64 = 0;
    // SAFETY: io_setup writes the context id into a local; on Linux that id is the ring's
    // address, readable until io_destroy; the header is read only when the mapping says so.
    unsafe {
        if libc::syscall(libc::SYS_io_setup, 1usize, &mut ctx as *mut u64) != 0 {
            return None;
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        // The context id is the ring's address on Linux: read it only if a mapping starts there.
        let is_ring = maps.lines().any(|l| {
            l.split('-')
                .next()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
                == Some(ctx)
        });
        let len = if is_ring {
            let word = |i: u64| ((ctx + 4 * i) as *const u32).read_volatile();
            let (nr, magic, header) = (word(1) as u64, word(4), word(7));
            let len = 32 + 32 * nr;
            if magic == 0xa10a_10a1 && header == 32 && len % 4096 == 0 {
                len
            } else {
                0
            }
        } else {
            0
        };
        libc::syscall(libc::SYS_io_destroy, ctx);
        Some(len)
    }
}

/// Creates a one-event AIO context and moves its `[aio]` ring to `[start, start+len)`, which
/// must be unmapped. Fails (EINVAL) when the kernel sized the ring differently: io_setup
/// rounds the event count up with num_possible_cpus (fs/aio.c `ioctx_alloc`), and
/// `ring->nr` says what it made (the ring fills its pages exactly, `aio_setup_ring`).
/// Async-signal-safe.
pub fn aio_ring_at(start: u64, len: u64) -> Result<(), (i32, &'static str)> {
    let mut ctx: u64 = 0;
    // SAFETY: io_setup writes the ring's address into a local; the ring is readable memory
    // of this process from then on, and mremap moves only that mapping.
    unsafe {
        if libc::syscall(libc::SYS_io_setup, 1usize, &mut ctx as *mut u64) != 0 {
            return Err((nix::errno::Errno::last_raw(), "io_setup"));
        }
        let nr = ((ctx + 4) as *const u32).read_volatile() as u64;
        let ring_len = 32 + 32 * nr;
        if ring_len != len {
            return Err((libc::EINVAL, "io_setup: ring size differs"));
        }
        let p = libc::mremap(
            ctx as *mut libc::c_void,
            len as usize,
            len as usize,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            start as *mut libc::c_void,
        );
        if p as u64 != start {
            return Err((nix::errno::Errno::last_raw(), "mremap([aio])"));
        }
    }
    Ok(())
}

/// `io_uring_setup(1, &params)`: a one-entry io_uring instance (one SQE, two CQEs); its
/// descriptor. Async-signal-safe.
pub fn io_uring_setup1() -> Result<i32, (i32, &'static str)> {
    // struct io_uring_params: 120 bytes, all input fields zero (no flags).
    let mut params = [0u32; 30];
    // SAFETY: the kernel writes at most sizeof(struct io_uring_params) = 120 bytes into it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1usize,
            params.as_mut_ptr() as *mut libc::c_void,
        )
    };
    if fd < 0 {
        return Err((nix::errno::Errno::last_raw(), "io_uring_setup"));
    }
    Ok(fd as i32)
}

/// Whether io_uring_setup(2) works: a one-entry instance, closed again.
pub fn io_uring_available() -> bool {
    match io_uring_setup1() {
        Ok(fd) => {
            // SAFETY: closes the descriptor just made.
            unsafe { libc::close(fd) };
            true
        }
        Err(_) => false,
    }
}

/// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_32BIT|MAP_POPULATE, fd, off)`: a
/// mapping the kernel places in the x86-64 `MAP_32BIT` window, lowest free address first
/// (arch_get_unmapped_area_topdown sends MAP_32BIT to the bottom-up search). Async-signal-safe.
pub fn mmap_shared_32bit(fd: i32, len: u64, off: u64) -> Result<u64, (i32, &'static str)> {
    // SAFETY: no address is given, so the kernel picks a free range; nothing is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_32BIT | libc::MAP_POPULATE,
            fd,
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err((nix::errno::Errno::last_raw(), "mmap(io_uring)"));
    }
    Ok(p as u64)
}

/// What a target needs to make its `[uprobes]` area: the `uprobe` perf PMU's type, and the
/// file and offset of [`xol_trigger`], whose first instruction (`mov rax, rdi`) x86 uprobes
/// single-step out of line (they emulate only branches, `push` and, later, `nop`s).
#[derive(Debug)]
pub struct XolProbe {
    pmu_type: u32,
    path: std::ffi::CString,
    offset: u64,
}

static XOL_PROBE: std::sync::OnceLock<Option<XolProbe>> = std::sync::OnceLock::new();

std::arch::global_asm!(
    ".pushsection .text.pvmtest_xol_trigger,\"ax\",@progbits",
    ".globl pvmtest_xol_trigger",
    ".p2align 4",
    "pvmtest_xol_trigger:",
    "mov rax, rdi",
    "ret",
    ".popsection",
);

extern "C" {
    fn pvmtest_xol_trigger(x: u64) -> u64;
}

/// The probe (computed once, before any fork: it reads sysfs and /proc/self/maps), or `None`
/// without the `uprobe` PMU (CONFIG_UPROBE_EVENTS) or when the trigger's file is unknown.
pub fn xol_probe() -> Option<&'static XolProbe> {
    XOL_PROBE
        .get_or_init(|| {
            let pmu_type = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let addr = pvmtest_xol_trigger as *const () as usize as u64;
            let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
            maps.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                let (lo, hi) = w.next()?.split_once('-')?;
                let (lo, hi) = (
                    u64::from_str_radix(lo, 16).ok()?,
                    u64::from_str_radix(hi, 16).ok()?,
                );
                let _perms = w.next()?;
                let off = u64::from_str_radix(w.next()?, 16).ok()?;
                let (_dev, _inode) = (w.next()?, w.next()?);
                let path: Vec<&str> = w.collect();
                let path = path.join(" ");
                if !(lo..hi).contains(&addr)
                    || !path.starts_with('/')
                    || path.ends_with("(deleted)")
                {
                    return None;
                }
                Some(XolProbe {
                    pmu_type,
                    path: std::ffi::CString::new(path).ok()?,
                    offset: off + (addr - lo),
                })
            })
        })
        .as_ref()
}

/// In a forked target: makes this process's `[uprobes]` area and checks it is at `at`. Opens
/// a `uprobe` perf event on [`xol_trigger`] for this process only (pid 0), calls it (the
/// breakpoint traps, and the single-step out of line maps the area: kernel/events/uprobes.c
/// `xol_add_vma`), and closes the event (the area stays until the mm goes). The probe must
/// have been prepared before the fork ([`xol_probe`]). Async-signal-safe.
pub fn make_xol_area(at: u64) -> Result<(), (i32, &'static str)> {
    let Some(Some(p)) = XOL_PROBE.get() else {
        return Err((
            libc::ENOSYS,
            "uprobe perf PMU (not prepared before the fork)",
        ));
    };
    // struct perf_event_attr up to config2 (PERF_ATTR_SIZE_VER1, 72 bytes): type and size,
    // then config (0: not a return probe), ..., config1 = uprobe_path, config2 =
    // probe_offset; flags 0: enabled at once.
    let mut attr = [0u64; 9];
    attr[0] = p.pmu_type as u64 | (72u64 << 32);
    attr[7] = p.path.as_ptr() as u64;
    attr[8] = p.offset;
    const PERF_FLAG_FD_CLOEXEC: usize = 8;
    // SAFETY: the attr and the path it points to outlive the call; the event is this
    // process's own (pid 0, any CPU).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0usize,
            -1isize,
            -1isize,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err((nix::errno::Errno::last_raw(), "perf_event_open(uprobe)"));
    }
    // SAFETY: the trigger reads a register and returns; the probe only traps it.
    std::hint::black_box(unsafe { pvmtest_xol_trigger(std::hint::black_box(1)) });
    // SAFETY: closes the event just opened.
    unsafe { libc::close(fd as i32) };
    // Something must now be at `at`: a PROT_NONE probe mapping there fails with EEXIST.
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; a success is unmapped again.
    let q = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if q != libc::MAP_FAILED {
        // SAFETY: the mapping just made.
        unsafe { libc::munmap(q, 4096) };
        return Err((libc::ENOENT, "no [uprobes] area at TASK_SIZE - PAGE_SIZE"));
    }
    if nix::errno::Errno::last_raw() != libc::EEXIST {
        return Err((
            nix::errno::Errno::last_raw(),
            "mmap probe of the [uprobes] area",
        ));
    }
    Ok(())
}

/// `pkey_alloc(0, rights)`: a new protection key whose rights this thread's PKRU gets.
pub fn pkey_alloc(rights: u32) -> Result<i32, (i32, &'static str)> {
    // SAFETY: integer arguments only.
    let k = unsafe { libc::syscall(libc::SYS_pkey_alloc, 0usize, rights as usize) };
    if k < 0 {
        return Err((nix::errno::Errno::last_raw(), "pkey_alloc"));
    }
    Ok(k as i32)
}

/// Sets this thread's PKRU to 0: every protection key allows every access. Only called where
/// a key was allocated, so the CPU has WRPKRU.
pub fn pkru_allow_all() {
    // SAFETY: WRPKRU (0f 01 ef) with ecx = edx = 0 writes eax into PKRU; it touches no memory.
    unsafe {
        std::arch::asm!(
            ".byte 0x0f, 0x01, 0xef",
            in("eax") 0u32,
            in("ecx") 0u32,
            in("edx") 0u32,
            options(nostack)
        );
    }
}

/// Whether memfd_secret(2) works.
pub fn secretmem_available() -> bool {
    memfd_secret().is_ok()
}

/// Whether mseal(2) exists: an empty range is accepted without touching any mapping
/// (mm/mseal.c `do_mseal`: `end == start` returns 0).
pub fn mseal_available() -> bool {
    // SAFETY: a zero-length seal changes nothing.
    unsafe { libc::syscall(NR_MSEAL, 0usize, 0usize, 0usize) == 0 }
}

/// Runs a probe on a fresh private anonymous page of our own (a kernel-chosen address that
/// nothing else uses), unmapped again afterwards; `None` if the page cannot be mapped.
pub fn with_scratch_page<T>(probe: impl FnOnce(u64) -> T) -> Option<T> {
    // SAFETY: maps a new page at an address the kernel chooses, so nothing is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let out = probe(p as u64);
    // SAFETY: unmaps exactly the page mapped above, which only `probe` has seen.
    unsafe { libc::munmap(p, 4096) };
    Some(out)
}

/// Whether madvise(MADV_GUARD_INSTALL) is known (older kernels return EINVAL for unknown
/// advice). Tried on a scratch page.
pub fn guard_pages_available() -> bool {
    with_scratch_page(|p| {
        // SAFETY: advice on the scratch page, which is ours alone.
        unsafe { libc::madvise(p as *mut libc::c_void, 4096, MADV_GUARD_INSTALL) == 0 }
    })
    .unwrap_or(false)
}

/// The soft RLIMIT_STACK of this process (`u64::MAX` for unlimited).
pub fn stack_rlimit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit into a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut r) } != 0 {
        return 8 << 20;
    }
    r.rlim_cur
}

/// The calling thread's CPU mask (`sched_getaffinity(2)`), `None` if it cannot be read.
pub fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid out buffer for sched_getaffinity.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: writes at most size_of::<cpu_set_t>() bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (r == 0).then_some(set)
}

/// Sets the calling thread's CPU mask (threads and processes it starts later inherit it).
pub fn set_affinity(set: &libc::cpu_set_t) -> Result<(), i32> {
    // SAFETY: reads one cpu_set_t for this thread (tid 0).
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if r == 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last_raw())
    }
}

/// Restricts the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<(), i32> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(libc::EINVAL);
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes the bit of a CPU below
    // CPU_SETSIZE inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set_affinity(&set)
}

/// The CPU the calling thread is running on (`sched_getcpu(3)`).
pub fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments; returns -1 on failure.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).ok()
}
