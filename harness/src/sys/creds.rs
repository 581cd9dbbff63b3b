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
/// allocation, raw syscalls only.
pub fn apply(c: &Creds) -> Result<(), (i32, &'static str)> {
    let err = || nix::errno::Errno::last_raw();
    // SAFETY: each call passes plain integers or pointers to locals that outlive the call.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err((err(), "setgroups"));
        }
        if libc::setresgid(c.ids.gid, c.ids.egid, c.ids.sgid) != 0 {
            return Err((err(), "setresgid"));
        }
        if c.keep_caps && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err((err(), "PR_SET_KEEPCAPS"));
        }
        if libc::setresuid(c.ids.uid, c.ids.euid, c.ids.suid) != 0 {
            return Err((err(), "setresuid"));
        }
        if c.drop.0 != 0 || c.drop_effective.0 != 0 {
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
