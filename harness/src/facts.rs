//! Facts about the running system that the model takes as input: kernel version, Yama scope,
//! the harness's own credentials, and which optional features exist. Facts are read from
//! `/proc` and `uname`, or probed by a harmless call (never by running the syscall under test).

use crate::caps::{CapSet, Credentials, Ids};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// `uname -r`.
    pub release: String,
    /// The Linux version whose rules the model applies: `(major, minor, patch)` parsed from
    /// the release, or the reference chosen with `--reference` ([`set_reference`]).
    pub version: (u32, u32, u32),
    /// The Linux version chosen to judge this system by (`pvmtest run --reference X.Y.Z`, or
    /// `pvmtest.reference=X.Y.Z` on a guest's kernel command line), written `X.Y.Z`; `None`
    /// when the version comes from `uname`. A runtime that re-implements the Linux ABI
    /// reports a release of its own (gVisor: 4.4.0) that says nothing about which rules it
    /// follows.
    pub reference: Option<String>,
    pub arch: String,
    /// Highest user address + 1 as `access_ok` sees it (TASK_SIZE_MAX): probed as the top
    /// of the user address space ([`crate::sys::user_top`]), so it is 47- or 56-bit on x86-64
    /// and whatever a runtime has (User-mode Linux: 0x7f_c000_0000); from cpuinfo's `la57`
    /// only when the probe fails. Native layouts are placed below it
    /// ([`crate::plan::native_windows`]).
    pub task_size_max: u64,
    /// The page size (`sysconf(_SC_PAGESIZE)`); cases are written for 4096.
    pub page_size: u64,
    /// The CPU has protection keys, so exec-only memory is unreadable even by the kernel.
    pub pku: bool,
    /// The harness's own credentials: the caller's and the target's unless a case changes them.
    pub creds: Credentials,
    /// `/proc/sys/kernel/yama/ptrace_scope`, or `None` without Yama.
    pub yama_scope: Option<u8>,
    /// `int 0x80` reaches the ia32 compat entry (`int80` is [`crate::sys::Int80::Ia32`]).
    pub compat: bool,
    /// What `int 0x80` reaches ([`crate::sys::int80_probe`]).
    pub int80: crate::sys::Int80,
    pub thp: bool,
    pub memfd: bool,
    pub pidns: bool,
    /// `io_setup(2)` works.
    pub aio: bool,
    /// The length of the `[aio]` ring of a one-event context, 0 when it is not laid out as
    /// Linux's ([`crate::sys::aio_ring_len`]).
    pub aio_ring_len: u64,
    /// A process without capabilities can create a user namespace.
    pub userns: bool,
    pub kthreadd: bool,
    pub pid_max: i32,
    /// `memfd_secret(2)` works.
    pub secretmem: bool,
    /// `madvise(MADV_GUARD_INSTALL)` is known.
    pub guard_pages: bool,
    /// `mseal(2)` exists.
    pub mseal: bool,
    /// `userfaultfd(2)` works with `UFFD_FEATURE_SIGBUS` and anonymous WP registration.
    pub userfaultfd: bool,
    /// `HugePages_Free` from /proc/meminfo (2 MiB pages on x86-64 by default).
    pub hugepages_free: u64,
    /// How the vsyscall page is mapped: from the `[vsyscall]` line of /proc/self/maps.
    pub vsyscall: Vsyscall,
    /// The harness's RLIMIT_STACK soft limit: the caller inherits it, and
    /// `acct_stack_growth` compares a stack expansion made by the caller's GUP against it.
    pub stack_rlimit: u64,
    /// The harness's `[vdso]`, `[vvar]` and `[vvar_vclock]` from /proc/self/maps. Targets and
    /// callers are forks of the harness and have them at the same addresses. Serialized as
    /// page counts only: output never carries addresses.
    pub vdso: Option<Span>,
    pub vvar: Option<Span>,
    pub vvar_vclock: Option<Span>,
}

/// An address range of the harness's own address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: u64,
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Span", 1)?;
        st.serialize_field("pages", &(self.len / 4096))?;
        st.end()
    }
}

/// The range of the `/proc/<pid>/maps` line named `[name]`.
fn maps_span(maps: &str, name: &str) -> Option<Span> {
    let tag = format!("[{name}]");
    let line = maps
        .lines()
        .find(|l| l.split_whitespace().nth(5) == Some(&tag))?;
    let (a, b) = line.split_whitespace().next()?.split_once('-')?;
    let start = u64::from_str_radix(a, 16).ok()?;
    let end = u64::from_str_radix(b, 16).ok()?;
    (end > start).then_some(Span {
        start,
        len: end - start,
    })
}

/// The end of the highest mapping in a `/proc/<pid>/maps` text below the kernel half (the
/// vsyscall page is not user memory).
fn highest_user_end(maps: &str) -> Option<u64> {
    maps.lines()
        .filter_map(|l| {
            let (_, b) = l.split_whitespace().next()?.split_once('-')?;
            u64::from_str_radix(b, 16).ok()
        })
        .filter(|&end| end < 1 << 63)
        .max()
}

/// The `vsyscall=` boot mode as /proc/self/maps shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Vsyscall {
    /// `r-xp`: the page is mapped and readable.
    Emulate,
    /// `--xp`: a gate VMA with no page table entry behind it.
    Xonly,
    /// No `[vsyscall]` line.
    None,
}

fn vsyscall_mode(maps: &str) -> Vsyscall {
    match maps.lines().find(|l| l.ends_with("[vsyscall]")) {
        None => Vsyscall::None,
        Some(l)
            if l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.starts_with('r')) =>
        {
            Vsyscall::Emulate
        }
        Some(_) => Vsyscall::Xonly,
    }
}

/// Parses `5.10`, `6.12.117-cloud-amd64` or `7.3.4+deb13` into `(major, minor)`.
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let v = parse_release(s)?;
    Some((v.0, v.1))
}

fn parse_release(s: &str) -> Option<(u32, u32, u32)> {
    let mut nums = s
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse::<u32>().ok());
    let major = nums.next()??;
    let minor = nums.next()??;
    let patch = nums.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The running kernel's `(major, minor, patch)`. Debian's release string carries the ABI
/// name, not the patch level (`6.1.0-50-cloud-amd64` runs 6.1.170); the real upstream version
/// is in `uname -v` (`#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2026-…)`), which is used when
/// it names the same series.
pub fn kernel_version(release: &str, uts_version: &str) -> (u32, u32, u32) {
    let from_release = parse_release(release).unwrap_or((0, 0, 0));
    let debian = uts_version
        .split_once("Debian ")
        .and_then(|(_, rest)| parse_release(rest.split_whitespace().next().unwrap_or("")));
    match debian {
        Some(d) if (d.0, d.1) == (from_release.0, from_release.1) => d,
        _ => from_release,
    }
}

/// The reference version set for this process ([`set_reference`]), read by [`Facts::detect`].
static REFERENCE: std::sync::Mutex<Option<(u32, u32, u32)>> = std::sync::Mutex::new(None);

/// Makes every later [`Facts::detect`] of this process judge by Linux `v` instead of the
/// version `uname` reports. Targets and callers are forks, so they inherit it.
pub fn set_reference(v: (u32, u32, u32)) {
    *REFERENCE.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
}

fn reference() -> Option<(u32, u32, u32)> {
    *REFERENCE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Parses a `--reference` value: `X.Y` or `X.Y.Z`, decimal numbers only (`6.12`, `6.12.107`).
/// `Err` is the message for a one-line error.
pub fn parse_reference(s: &str) -> Result<(u32, u32, u32), String> {
    let parts: Vec<&str> = s.split('.').collect();
    let num = |p: &str| -> Option<u32> {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let nums: Option<Vec<u32>> = parts.iter().map(|p| num(p)).collect();
    match nums.as_deref() {
        Some(&[a, b]) if a > 0 => Ok((a, b, 0)),
        Some(&[a, b, c]) if a > 0 => Ok((a, b, c)),
        _ => Err(format!(
            "reference {s:?} is not a Linux version: write X.Y or X.Y.Z, e.g. 6.12 or 6.12.107"
        )),
    }
}

/// The `pvmtest.reference=X.Y.Z` word of a kernel command line: `Ok(None)` without one.
pub fn reference_from_cmdline(cmdline: &str) -> Result<Option<(u32, u32, u32)>, String> {
    match cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pvmtest.reference="))
    {
        None => Ok(None),
        Some(v) => parse_reference(v)
            .map(Some)
            .map_err(|e| format!("kernel command line pvmtest.reference: {e}")),
    }
}

impl Facts {
    /// The facts a typical Debian x86-64 machine running as root would report; tests of the
    /// model start from this and change one fact at a time, and the loader asks the model
    /// with it whether a pin depends on who runs the harness (`check::pin_depends_on_harness`).
    pub fn example(version: (u32, u32, u32)) -> Facts {
        Facts {
            release: format!("{}.{}.{}", version.0, version.1, version.2),
            version,
            reference: None,
            arch: "x86_64".into(),
            task_size_max: 0x7fff_ffff_f000,
            page_size: 4096,
            pku: false,
            creds: Credentials {
                ids: Ids::default(),
                permitted: CapSet::all(),
                effective: CapSet::all(),
            },
            yama_scope: None,
            compat: true,
            int80: crate::sys::Int80::Ia32,
            thp: true,
            memfd: true,
            pidns: true,
            userns: true,
            aio: true,
            aio_ring_len: 4096,
            kthreadd: true,
            pid_max: 4_194_304,
            secretmem: true,
            guard_pages: true,
            mseal: true,
            userfaultfd: true,
            hugepages_free: 64,
            vsyscall: Vsyscall::Xonly,
            stack_rlimit: 8 << 20,
            // x86-64 map_vdso: the data pages right below a 2-page vdso; from the generic
            // datastore on (absent in 6.12, present in 6.18 and 7.2) `[vvar]` (4 pages) and
            // `[vvar_vclock]` (2 pages) before the text.
            vvar: Some(Span {
                start: 0x7fff_f7ff_0000,
                len: 4 * 4096,
            }),
            vvar_vclock: (version >= (6, 13, 0)).then_some(Span {
                start: 0x7fff_f7ff_4000,
                len: 2 * 4096,
            }),
            vdso: Some(Span {
                start: if version >= (6, 13, 0) {
                    0x7fff_f7ff_6000
                } else {
                    0x7fff_f7ff_4000
                },
                len: 2 * 4096,
            }),
        }
    }

    /// Where the harness (and so every target and caller) has a special mapping.
    pub fn special(&self, s: crate::plan::Special) -> Option<Span> {
        match s {
            crate::plan::Special::Vdso => self.vdso,
            crate::plan::Special::Vvar => self.vvar,
            crate::plan::Special::VvarVclock => self.vvar_vclock,
        }
    }

    /// The system as reports name it: the release, and the reference when one was chosen
    /// (`4.4.0, judged as Linux 6.12.0`).
    pub fn judged(&self) -> String {
        match &self.reference {
            None => self.release.clone(),
            Some(r) => format!("{}, judged as Linux {r}", self.release),
        }
    }

    pub fn is_root(&self) -> bool {
        self.creds.ids.euid == 0
    }

    /// Reads the running system. `compat_probe` says whether `int 0x80` works (see
    /// [`crate::sys::compat_available`]).
    pub fn detect() -> Facts {
        let uts = nix::sys::utsname::uname().ok();
        let release = uts
            .as_ref()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let arch = uts
            .as_ref()
            .map(|u| u.machine().to_string_lossy().into_owned())
            .unwrap_or_default();
        let uts_version = uts
            .as_ref()
            .map(|u| u.version().to_string_lossy().into_owned())
            .unwrap_or_default();
        let uname_version = kernel_version(&release, &uts_version);
        let chosen = reference();
        let version = chosen.unwrap_or(uname_version);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| -> Vec<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| {
                    rest.split_whitespace()
                        .filter_map(|t| {
                            t.parse::<u64>()
                                .ok()
                                .or_else(|| u64::from_str_radix(t, 16).ok())
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let id = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(u64::MAX) as u32;
        let uids = field("Uid:");
        let gids = field("Gid:");
        let hex = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| u64::from_str_radix(r.trim(), 16).ok())
                .unwrap_or(0)
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags"))
            .map(|r| {
                r.trim_start_matches([' ', '\t', ':'])
                    .split_whitespace()
                    .collect()
            })
            .unwrap_or_default();
        let read_trim = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
        };
        let cap_effective = CapSet(hex("CapEff:"));
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let int80 = crate::sys::int80_probe();
        let aio_ring_len = crate::sys::aio_ring_len();
        let task_size_max = crate::sys::user_top(highest_user_end(&maps).unwrap_or_else(|| {
            // Without /proc: the stack is near the top of user space on every layout.
            let here = 0u8;
            std::ptr::addr_of!(here) as u64 + 4096
        }))
        .unwrap_or(if flags.contains(&"la57") {
            0x00ff_ffff_ffff_f000
        } else {
            0x7fff_ffff_f000
        });
        let page_size = crate::sys::page_size();
        let thp = read_trim("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_some_and(|s| !s.contains("[never]"));
        Facts {
            release,
            version,
            reference: chosen.map(|v| format!("{}.{}.{}", v.0, v.1, v.2)),
            arch,
            task_size_max,
            page_size,
            pku: flags.contains(&"pku") && flags.contains(&"ospke"),
            creds: Credentials {
                ids: Ids {
                    uid: id(&uids, 0),
                    euid: id(&uids, 1),
                    suid: id(&uids, 2),
                    gid: id(&gids, 0),
                    egid: id(&gids, 1),
                    sgid: id(&gids, 2),
                },
                permitted: CapSet(hex("CapPrm:")),
                effective: cap_effective,
            },
            yama_scope: read_trim("/proc/sys/kernel/yama/ptrace_scope")
                .and_then(|s| s.parse().ok()),
            compat: int80 == crate::sys::Int80::Ia32,
            int80,
            thp,
            memfd: crate::sys::memfd_available(),
            pidns: cap_effective.has(crate::caps::SYS_ADMIN),
            userns: crate::sys::userns_available(),
            aio: aio_ring_len.is_some(),
            aio_ring_len: aio_ring_len.unwrap_or(0),
            kthreadd: read_trim("/proc/2/comm").as_deref() == Some("kthreadd"),
            pid_max: read_trim("/proc/sys/kernel/pid_max")
                .and_then(|s| s.parse().ok())
                .unwrap_or(4_194_304),
            secretmem: crate::sys::secretmem_available(),
            guard_pages: crate::sys::guard_pages_available(),
            mseal: crate::sys::mseal_available(),
            userfaultfd: crate::sys::uffd::available(),
            hugepages_free: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("HugePages_Free:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0),
            vsyscall: vsyscall_mode(&maps),
            stack_rlimit: crate::sys::stack_rlimit(),
            vdso: maps_span(&maps, "vdso"),
            vvar: maps_span(&maps, "vvar"),
            vvar_vclock: maps_span(&maps, "vvar_vclock"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("5.10"), Some((5, 10)));
        assert_eq!(parse_release("6.12.117-cloud-amd64"), Some((6, 12, 117)));
        assert_eq!(parse_release("7.3.4+deb13-cloud-amd64"), Some((7, 3, 4)));
        assert_eq!(parse_release("6.18"), Some((6, 18, 0)));
        assert_eq!(parse_version("six"), None);
    }

    #[test]
    fn debian_patch_level_comes_from_uname_v() {
        let v = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2026-01-02)";
        assert_eq!(kernel_version("6.1.0-50-cloud-amd64", v), (6, 1, 170));
        let v = "#1 SMP Debian 5.10.223-1 (2024-08-10)";
        assert_eq!(kernel_version("5.10.0-32-cloud-amd64", v), (5, 10, 223));
        assert_eq!(kernel_version("6.18.44-fc-v769", "#1 SMP"), (6, 18, 44));
        // A backport naming another series is not trusted.
        assert_eq!(
            kernel_version("6.12.0-0.deb12-amd64", "#1 Debian 6.1.9-1"),
            (6, 12, 0)
        );
    }

    #[test]
    fn references() {
        assert_eq!(parse_reference("6.12"), Ok((6, 12, 0)));
        assert_eq!(parse_reference("6.12.107"), Ok((6, 12, 107)));
        for bad in [
            "", "6", "6.", "six.1", "6.12.1.2", "6.12-rc1", "0.1", "+6.1", "6..1",
        ] {
            let e = parse_reference(bad).unwrap_err();
            assert!(e.contains("X.Y or X.Y.Z"), "{bad}: {e}");
            assert!(!e.contains('\n'));
        }
        assert_eq!(
            reference_from_cmdline("console=ttyS0 pvmtest.reference=6.1.170 quiet"),
            Ok(Some((6, 1, 170)))
        );
        assert_eq!(reference_from_cmdline("console=ttyS0"), Ok(None));
        assert!(reference_from_cmdline("pvmtest.reference=x")
            .unwrap_err()
            .starts_with("kernel command line pvmtest.reference:"));
    }

    #[test]
    fn detect_judges_by_the_reference() {
        // The only test in this binary that sets the process-wide reference.
        set_reference((6, 12, 3));
        let f = Facts::detect();
        assert_eq!(f.version, (6, 12, 3));
        assert_eq!(f.reference.as_deref(), Some("6.12.3"));
        let uts = nix::sys::utsname::uname().unwrap();
        assert_eq!(f.release, uts.release().to_string_lossy());
        *REFERENCE.lock().unwrap() = None;
        assert_eq!(Facts::detect().reference, None);
    }

    #[test]
    fn special_mappings() {
        let maps = "7f7889c89000-7f7889c8d000 r--p 00000000 00:00 0                          [vvar]\n\
                    7f7889c8d000-7f7889c8f000 r--p 00000000 00:00 0                          [vvar_vclock]\n\
                    7f7889c8f000-7f7889c91000 r-xp 00000000 00:00 0                          [vdso]\n";
        assert_eq!(
            maps_span(maps, "vdso"),
            Some(Span {
                start: 0x7f78_89c8_f000,
                len: 8192
            })
        );
        assert_eq!(maps_span(maps, "vvar").map(|s| s.len), Some(16384));
        assert_eq!(maps_span(maps, "vsyscall"), None);
        let json = serde_json::to_string(&maps_span(maps, "vdso")).unwrap();
        assert_eq!(json, r#"{"pages":2}"#);
    }

    #[test]
    fn highest_mapping() {
        // User-mode Linux's init: user space ends at 0x7f_c000_0000.
        let uml = "00400000-00500000 r-xp 00000000 00:0f 1 /init\n\
                   7fbfebf000-7fbfee0000 rw-p 00000000 00:00 0 [stack]\n\
                   7fbffff000-7fc0000000 r-xp 00000000 00:00 0 [vdso]\n";
        assert_eq!(highest_user_end(uml), Some(0x7f_c000_0000));
        let x86 = "7ffd1000-7ffd2000 r-xp 0 0:0 0 [vdso]\n\
                   ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]\n";
        assert_eq!(highest_user_end(x86), Some(0x7ffd_2000));
        assert_eq!(highest_user_end(""), None);
    }

    #[test]
    fn user_top_is_probed() {
        // This host: 47- or 56-bit x86-64 (the probe agrees with cpuinfo here), and never
        // below the mappings that exist.
        let f = Facts::detect();
        assert!(
            [0x7fff_ffff_f000, 0x00ff_ffff_ffff_f000].contains(&f.task_size_max),
            "{:#x}",
            f.task_size_max
        );
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let high = highest_user_end(&maps).unwrap();
        assert_eq!(crate::sys::user_top(high), Some(f.task_size_max));
        assert_eq!(f.page_size, 4096);
    }

    #[test]
    fn vsyscall_modes() {
        let line = |p: &str| {
            format!("ffffffffff600000-ffffffffff601000 {p} 00000000 00:00 0                  [vsyscall]\n")
        };
        assert_eq!(vsyscall_mode(&line("--xp")), Vsyscall::Xonly);
        assert_eq!(vsyscall_mode(&line("r-xp")), Vsyscall::Emulate);
        assert_eq!(
            vsyscall_mode("55d0-55d1 r-xp 0 0:0 0 /bin/x\n"),
            Vsyscall::None
        );
    }
}
