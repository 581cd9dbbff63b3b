//! The child side of a case: map a declared layout at its fixed addresses, fill it, and later
//! send its bytes back. Runs after fork, so: no allocation, no locks, raw syscalls only, on
//! data prepared by the parent before the fork.

#![allow(unsafe_code)]

use crate::case::{Fill, Prot, RegionKind};
use crate::plan::{ArrayImage, Plan, Region};
use crate::sys::uffd;
use std::os::fd::RawFd;

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

/// Unmaps everything in the plans' reserved ranges ([`crate::plan::reserved_ranges`]), taking
/// `ranges` computed before the fork. A child forked from a process that holds plan mappings
/// (the persistent executor, or a test running one next to the fork-per-case executor) gets
/// copies of them; its layout must start from nothing there, or MAP_FIXED_NOREPLACE fails with
/// EEXIST and the model would not know the stale memory.
pub fn clear_reserved(ranges: &[(u64, u64)]) {
    for &(start, len) in ranges {
        // SAFETY: the reserved ranges hold only plan mappings, which no code, stack or heap of
        // this process lives in; munmap of a range with nothing mapped is a no-op.
        unsafe { libc::munmap(start as *mut libc::c_void, len as usize) };
    }
}

/// Maps `regions` (holes stay unmapped); `fds[i]` is the file for file-backed region `i`.
pub fn build(regions: &[Region], fds: &[Option<RawFd>]) -> Result<(), (i32, &'static str)> {
    for (i, r) in regions.iter().enumerate() {
        if r.is_hole() {
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
            RegionKind::Hole | RegionKind::Vdso | RegionKind::Vvar | RegionKind::VvarVclock => {
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

/// A caller's memory as every caller builds it: the plans' reserved ranges emptied of what
/// the harness had there, then the plan's caller regions and its iovec arrays.
pub fn build_caller(plan: &Plan, fds: &[Option<RawFd>]) -> Result<(), (i32, &'static str)> {
    clear_reserved(&crate::plan::reserved_ranges());
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
