//! The child side of a case: map a declared layout at its fixed addresses, fill it, and later
//! send its bytes back. Runs after fork, so: no allocation, no locks, raw syscalls only, on
//! data prepared by the parent before the fork.

#![allow(unsafe_code)]

use crate::case::{Fill, Prot, RegionKind};
use crate::plan::{ArrayImage, Plan, Region};
use crate::sys::uffd;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

const THP_SIZE: u64 = 2 << 20;

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// Writes the offset-encoding pattern into mapped, writable memory, a word at a time.
fn fill_words(start: u64, len: u64, tag: u8) {
    let mut off = 0u64;
    while off < len {
        let word = ((tag as u64) << 56) | off;
        // SAFETY: [start, start+len) was just mapped read-write by this process and is
        // page-aligned, so every 8-byte word is in bounds and aligned.
        unsafe { ((start + off) as *mut u64).write(word) };
        off += 8;
    }
}

/// How many long-lived plan mappings [`track`] remembers (a persistent executor holds at most
/// ten: three caller regions, five target regions, two iovec arrays).
const TRACKED: usize = 64;

/// Plan mappings this process keeps across cases (the persistent executor's), as
/// (start, len); start 0 is a free slot. Atomics, not a lock: a forked child reads them, and a
/// lock another thread held at the fork would never be released in the child.
static PLAN_MAPPINGS: [(AtomicU64, AtomicU64); TRACKED] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; TRACKED];

/// Records a plan mapping this process keeps (after it is mapped).
pub fn track(start: u64, len: u64) {
    for (s, l) in &PLAN_MAPPINGS {
        // Claim the slot, then fill in the length (a fork in between sees length 0, and its
        // munmap fails harmlessly).
        if s.compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            l.store(len, Ordering::Release);
            return;
        }
    }
}

/// Forgets a plan mapping (before it is unmapped).
pub fn untrack(start: u64) {
    for (s, _) in &PLAN_MAPPINGS {
        if s.compare_exchange(start, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// In a forked child: unmaps the plan mappings the parent kept ([`track`]). A fork copies
/// them, and the child's layout must start from nothing there: a stale copy makes
/// MAP_FIXED_NOREPLACE fail with EEXIST, or is memory the model does not know. Only what was
/// tracked goes: the plan ranges may hold other mappings (AddressSanitizer's shadow covers
/// the compat caller range), which the child needs.
pub fn drop_inherited_plan_mappings() {
    for (s, l) in &PLAN_MAPPINGS {
        let start = s.load(Ordering::Acquire);
        if start != 0 {
            let len = l.load(Ordering::Acquire);
            // SAFETY: a tracked range is a plan mapping the parent made for a case; no code,
            // stack or heap of this process lives there.
            unsafe { libc::munmap(start as *mut libc::c_void, len as usize) };
        }
    }
}

/// Maps `regions` (holes stay unmapped); `fds[i]` is the file for file-backed region `i`.
pub fn build(regions: &[Region], fds: &[Option<RawFd>]) -> Result<(), (i32, &'static str)> {
    // First, while the window below them is still empty of the plan's own mappings.
    io_uring_build(regions)?;
    for (i, r) in regions.iter().enumerate() {
        if r.is_hole() || r.is_io_uring() {
            continue;
        }
        if r.kind == RegionKind::AioRing {
            crate::sys::aio_ring_at(r.start, r.len)?;
            continue;
        }
        let (flags, fd) = match r.kind {
            RegionKind::Anon
            | RegionKind::Thp
            | RegionKind::Guarded
            | RegionKind::Sealed
            | RegionKind::UffdSigbus
            | RegionKind::Uffd
            | RegionKind::UffdWp => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
            ),
            RegionKind::Growsdown => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_GROWSDOWN,
                -1,
            ),
            // Reserved at mmap time (no MAP_NORESERVE): a short pool fails here, not later
            // with SIGBUS while filling.
            RegionKind::Hugetlb => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
                -1,
            ),
            RegionKind::Secretmem => (libc::MAP_SHARED, fds[i].unwrap_or(-1)),
            RegionKind::FilePrivate | RegionKind::MemfdPrivate => {
                (libc::MAP_PRIVATE, fds[i].unwrap_or(-1))
            }
            RegionKind::FileShared | RegionKind::MemfdShared => {
                (libc::MAP_SHARED, fds[i].unwrap_or(-1))
            }
            // Holes stay unmapped; the kernel's special mappings are never built (a plan never
            // lists them as regions).
            RegionKind::Hole
            | RegionKind::AioRing
            | RegionKind::IoUringSqRing
            | RegionKind::IoUringCqRing
            | RegionKind::IoUringSqes
            | RegionKind::Vdso
            | RegionKind::Vvar
            | RegionKind::VvarVclock
            | RegionKind::Uprobes => {
                unreachable!()
            }
        };
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: it fails with EEXIST
        // instead, so nothing this process uses can be clobbered.
        let p = unsafe {
            libc::mmap(
                r.start as *mut libc::c_void,
                r.len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_FIXED_NOREPLACE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED || p as u64 != r.start {
            return Err((errno(), "mmap"));
        }
        if r.kind == RegionKind::Thp {
            // SAFETY: advice on a range this process just mapped.
            if unsafe { libc::madvise(p, r.len as usize, libc::MADV_HUGEPAGE) } != 0 {
                return Err((errno(), "madvise(MADV_HUGEPAGE)"));
            }
            debug_assert!(r.start % THP_SIZE == 0);
        }
        // File contents come from the file itself; anonymous memory gets the pattern, except
        // userfaultfd MISSING regions, which must stay unpopulated (their handler supplies
        // the pattern page by page).
        let unpopulated = matches!(r.kind, RegionKind::Uffd | RegionKind::UffdSigbus);
        if !r.is_file() && r.fill == Fill::Pattern && !unpopulated {
            fill_words(r.start, r.len, r.tag);
        }
        if r.prot != Prot::Rw {
            // SAFETY: changes protection of a range this process just mapped.
            if unsafe { libc::mprotect(p, r.len as usize, r.prot.bits()) } != 0 {
                return Err((errno(), "mprotect"));
            }
        }
        if let Some(k) = r.pkey {
            let key = crate::sys::pkey_alloc(k.rights())?;
            // SAFETY: tags a range this process just mapped; its protection stays as set.
            if unsafe {
                libc::syscall(
                    libc::SYS_pkey_mprotect,
                    p,
                    r.len as usize,
                    r.prot.bits(),
                    key,
                )
            } != 0
            {
                return Err((errno(), "pkey_mprotect"));
            }
        }
        if r.kind == RegionKind::Guarded {
            // SAFETY: installs guard markers in a range this process just mapped and never
            // touches again (the dump skips guarded regions).
            if unsafe { libc::madvise(p, r.len as usize, crate::sys::MADV_GUARD_INSTALL) } != 0 {
                return Err((errno(), "madvise(MADV_GUARD_INSTALL)"));
            }
        }
        if r.kind == RegionKind::Sealed {
            // SAFETY: seals a range this process just mapped; its protection is final
            // (plan validation keeps sealed regions readable for the dump).
            if unsafe { libc::syscall(crate::sys::NR_MSEAL, p, r.len as usize, 0usize) } != 0 {
                return Err((errno(), "mseal"));
            }
        }
    }
    Ok(())
}

/// The bottom of the x86-64 `MAP_32BIT` window (arch/x86/kernel/sys_x86_64.c
/// `find_start_end`: `0x40000000`, moved up by at most `0x02000000` under PF_RANDOMIZE).
pub const MAP_32BIT_LOW: u64 = 0x4000_0000;

/// Maps the io_uring regions (address order) of one instance the target creates. The kernel
/// refuses a chosen address for them (`io_uring_get_unmapped_area`: `if (addr) return
/// -EINVAL`, read in 6.1.176, 6.12.107 and 7.2.13), so each is steered: everything free below its planned start
/// in the `MAP_32BIT` window is covered with a PROT_NONE filler, and a hint-less MAP_32BIT
/// mmap, which takes the lowest free range of the window (bottom-up `vm_unmapped_area`),
/// lands exactly there. The fillers go again afterwards. An instance whose mapping lands
/// elsewhere is a setup failure.
fn io_uring_build(regions: &[Region]) -> Result<(), (i32, &'static str)> {
    if !regions.iter().any(|r| r.is_io_uring()) {
        return Ok(());
    }
    let fd = crate::sys::io_uring_setup1()?;
    // At most three io_uring regions, so at most three fillers.
    let mut fillers = [(0u64, 0u64); 3];
    let mut n = 0;
    let mut low = MAP_32BIT_LOW;
    let mut result = Ok(());
    for r in regions.iter().filter(|r| r.is_io_uring()) {
        if r.start > low && n < fillers.len() {
            // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping (EEXIST instead).
            let p = unsafe {
                libc::mmap(
                    low as *mut libc::c_void,
                    (r.start - low) as usize,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE
                        | libc::MAP_ANONYMOUS
                        | libc::MAP_NORESERVE
                        | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED || p as u64 != low {
                result = Err((errno(), "mmap(io_uring filler below the ring)"));
                break;
            }
            fillers[n] = (low, r.start - low);
            n += 1;
        }
        let off = r.kind.io_uring_offset().unwrap_or(0);
        match crate::sys::mmap_shared_32bit(fd, r.len, off) {
            Ok(at) if at == r.start => {}
            Ok(_) => {
                result = Err((libc::EADDRNOTAVAIL, "mmap(io_uring) landed off its place"));
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        low = r.end();
    }
    for &(start, len) in &fillers[..n] {
        // SAFETY: unmaps only the fillers made above.
        unsafe { libc::munmap(start as *mut libc::c_void, len as usize) };
    }
    // SAFETY: the mappings hold the instance's file; the descriptor is no longer needed.
    unsafe { libc::close(fd) };
    result
}

/// A caller's memory as every caller builds it: the plan mappings inherited from the harness
/// dropped, then the plan's caller regions and its iovec arrays.
pub fn build_caller(plan: &Plan, fds: &[Option<RawFd>]) -> Result<(), (i32, &'static str)> {
    drop_inherited_plan_mappings();
    build(&plan.caller_regions, fds)?;
    build_arrays(&plan.arrays)
}

/// Registers a built userfaultfd region with a new userfaultfd of this process (see
/// [`RegionKind::Uffd`] and its neighbours); for a `uffd` region, what its handler thread must
/// serve.
pub fn register_uffd(r: &Region) -> Result<Option<uffd::Handler>, (i32, &'static str)> {
    let (features, mode) = match r.kind {
        RegionKind::UffdSigbus => (uffd::UFFD_FEATURE_SIGBUS, uffd::MODE_MISSING),
        RegionKind::Uffd => (0, uffd::MODE_MISSING),
        RegionKind::UffdWp => (
            uffd::UFFD_FEATURE_SIGBUS | uffd::UFFD_FEATURE_PAGEFAULT_FLAG_WP,
            uffd::MODE_WP,
        ),
        _ => return Ok(None),
    };
    let fd = uffd::open(features)?;
    uffd::register(fd, r.start, r.len, mode)?;
    if r.kind == RegionKind::UffdWp {
        uffd::write_protect(fd, r.start, r.len)?;
        return Ok(None);
    }
    Ok((r.kind == RegionKind::Uffd).then_some(uffd::Handler {
        fd,
        start: r.start,
        len: r.len,
        tag: r.tag,
        zero: r.fill == Fill::Untouched,
    }))
}

/// Maps the iovec arrays and writes their bytes.
pub fn build_arrays(arrays: &[ArrayImage]) -> Result<(), (i32, &'static str)> {
    for a in arrays {
        // SAFETY: as in `build`, MAP_FIXED_NOREPLACE cannot clobber an existing mapping.
        let p = unsafe {
            libc::mmap(
                a.map_start as *mut libc::c_void,
                a.map_len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED || p as u64 != a.map_start {
            return Err((errno(), "mmap(iovec array)"));
        }
        // SAFETY: the array lies inside the mapping just made (plan::place_array).
        unsafe {
            std::ptr::copy_nonoverlapping(a.bytes.as_ptr(), a.addr as *mut u8, a.bytes.len())
        };
    }
    Ok(())
}

/// Whether a region's bytes are sent back after the call. Huge untouched regions (sparse
/// mappings for the MAX_RW_COUNT cases) are not: reading them back would cost seconds.
pub fn dumped(r: &Region) -> bool {
    let huge_sparse = r.fill == Fill::Untouched && r.len > 64 << 20;
    !r.is_hole() && !huge_sparse
}

/// Whether a region must be made readable before its bytes are read back.
pub fn unreadable(r: &Region) -> bool {
    !matches!(r.prot, Prot::Rw | Prot::Ro | Prot::Rwx | Prot::Rx)
}

/// Sends the backed bytes of every dumped region to `fd`, making each readable first.
pub fn dump(regions: &[Region], fd: RawFd) -> bool {
    dump_with(regions, |addr, len| {
        super::proc::write_mem_raw(fd, addr, len as u64)
    })
}

/// Hands `sink` the address and backed length of every dumped region with bytes, in order,
/// making each readable first (it stays so); `false` as soon as that or `sink` fails.
pub fn dump_with(regions: &[Region], mut sink: impl FnMut(u64, usize) -> bool) -> bool {
    // The dump reads the regions through write(2), whose copy_from_user obeys this thread's
    // PKRU: open every key first (the call the case is about has already been made).
    if regions.iter().any(|r| r.pkey.is_some()) {
        crate::sys::pkru_allow_all();
    }
    for r in regions.iter().filter(|r| dumped(r)) {
        let len = r.backed_len();
        if len == 0 {
            continue;
        }
        if unreadable(r) {
            // SAFETY: this process's own mapping; making it readable does not move it.
            if unsafe {
                libc::mprotect(
                    r.start as *mut libc::c_void,
                    r.len as usize,
                    libc::PROT_READ,
                )
            } != 0
            {
                return false;
            }
        }
        if !sink(r.start, len as usize) {
            return false;
        }
    }
    true
}
