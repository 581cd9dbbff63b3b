//! Raw credential changes: setgroups, setresgid, setresuid, PR_SET_KEEPCAPS, capget/capset,
//! PR_SET_DUMPABLE. Used in forked children only, after their layout is built.

#![allow(unsafe_code)]

use crate::plan::Creds;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Applies `c`; on failure returns the errno and the step that failed. Async-signal-safe: no
/// allocation, raw syscalls only. The id changes are raw `syscall(2)`s, not glibc's wrappers:
/// those broadcast the change to every thread in glibc's list (`__nptl_setxid`), and in a
/// child made by a raw clone that list still names the parent's threads, so the broadcast can
/// wait forever. Our children are single-threaded, so the per-thread syscall is enough.
pub fn apply(c: &Creds) -> Result<(), (i32, &'static str)> {
    let err = || nix::errno::Errno::last_raw();
    // SAFETY: each call passes plain integers or pointers to locals that outlive the call.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0 {
            return Err((err(), "setgroups"));
        }
        if libc::syscall(libc::SYS_setresgid, c.ids.gid, c.ids.egid, c.ids.sgid) != 0 {
            return Err((err(), "setresgid"));
        }
        if c.keep_caps && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err((err(), "PR_SET_KEEPCAPS"));
        }
        if libc::syscall(libc::SYS_setresuid, c.ids.uid, c.ids.euid, c.ids.suid) != 0 {
            return Err((err(), "setresuid"));
        }
        if c.drop.0 != 0 || c.drop_effective.0 != 0 || c.raise.0 != 0 {
            let mut h = CapHeader {
                version: CAP_V3,
                pid: 0,
            };
            let mut d = [CapData::default(); 2];
            if libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) != 0 {
                return Err((err(), "capget"));
            }
            let eff_drop = c.drop.0 | c.drop_effective.0;
            for (i, w) in d.iter_mut().enumerate() {
                let shift = 32 * i as u32;
                w.permitted &= !((c.drop.0 >> shift) as u32);
                w.effective &= !((eff_drop >> shift) as u32);
                w.effective |= (c.raise.0 >> shift) as u32;
                w.effective &= w.permitted;
                w.inheritable &= w.permitted;
            }
            h = CapHeader {
                version: CAP_V3,
                pid: 0,
            };
            if libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) != 0 {
                return Err((err(), "capset"));
            }
        }
    }
    Ok(())
}

/// `prctl(PR_SET_DUMPABLE, on)`.
pub fn set_dumpable(on: bool) -> Result<(), (i32, &'static str)> {
    // SAFETY: integer-only prctl.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err((nix::errno::Errno::last_raw(), "PR_SET_DUMPABLE"));
    }
    Ok(())
}

/// `prctl(PR_SET_PTRACER, tracer)` (Yama; EINVAL without it).
pub fn set_ptracer(tracer: libc::c_ulong) -> Result<(), (i32, &'static str)> {
    // SAFETY: an integer prctl.
    if unsafe { libc::prctl(libc::PR_SET_PTRACER, tracer, 0, 0, 0) } != 0 {
        return Err((nix::errno::Errno::last_raw(), "PR_SET_PTRACER"));
    }
    Ok(())
}

/// `PR_SET_PDEATHSIG(SIGKILL)` again after a credential change cleared it; exits at once if
/// the parent is already gone (reparented).
pub fn rearm_pdeathsig() -> Result<(), (i32, &'static str)> {
    // SAFETY: integer prctl; getppid/_exit have no preconditions.
    unsafe {
        let parent = libc::getppid();
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err((nix::errno::Errno::last_raw(), "PR_SET_PDEATHSIG"));
        }
        if libc::getppid() != parent {
            libc::_exit(111);
        }
    }
    Ok(())
}
