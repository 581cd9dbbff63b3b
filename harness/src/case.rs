//! The case language: one YAML file per scenario, parsed strictly (unknown fields are errors).
//!
//! This module is only the *shape* of a file. [`crate::plan`] turns it into a validated,
//! fully-resolved plan (addresses, counts, credentials) before anything is forked.

use serde::Deserialize;

/// One scenario, as written in `cases/<group>/<name>.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// What the case checks and why it matters, in a sentence or two.
    pub description: String,
    /// What the machine must offer; an unmet requirement makes the case `skip`, never `pass`.
    #[serde(default)]
    pub requires: RequiresSpec,
    /// The process whose memory is read or written.
    #[serde(default)]
    pub target: TargetSpec,
    /// The process that makes the call: its buffers and credentials.
    #[serde(default)]
    pub caller: CallerSpec,
    /// The call itself, with raw, unclamped arguments.
    pub call: CallSpec,
    /// Optional pin of the model's prediction; always explained by `why`.
    pub expect: Option<ExpectSpec>,
}

/// A case file as read from YAML: the [`CaseFile`] fields and the optional `race` section.
/// Races are kept out of [`CaseFile`] itself, which the fuzz input format builds directly
/// (it never races); [`CaseDoc::split`] hands the two on separately.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseDoc {
    pub description: String,
    #[serde(default)]
    pub requires: RequiresSpec,
    #[serde(default)]
    pub target: TargetSpec,
    #[serde(default)]
    pub caller: CallerSpec,
    pub call: CallSpec,
    pub expect: Option<ExpectSpec>,
    /// The target changes while the call is in flight (docs/CASES.md, "Races").
    pub race: Option<RaceSpec>,
}

impl CaseDoc {
    pub fn split(self) -> (CaseFile, Option<RaceSpec>) {
        (
            CaseFile {
                description: self.description,
                requires: self.requires,
                target: self.target,
                caller: self.caller,
                call: self.call,
                expect: self.expect,
            },
            self.race,
        )
    }
}

/// A racer: a target thread that acts on the target while the call is in flight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaceSpec {
    pub action: RaceActionSpec,
    /// The target region acted on (`munmap`, `mprotect`, `write`).
    pub region: Option<String>,
    /// The new protection (`mprotect` only).
    pub prot: Option<Prot>,
    /// How many racing calls (default [`crate::race::DEFAULT_RUNS`]).
    pub runs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RaceActionSpec {
    Munmap,
    Mprotect,
    Write,
    /// The whole target exits (`exit_group`).
    Exit,
    /// The call names a target thread by its TID, and that thread exits.
    ThreadExit,
}

impl RaceActionSpec {
    pub fn name(self) -> &'static str {
        match self {
            RaceActionSpec::Munmap => "munmap",
            RaceActionSpec::Mprotect => "mprotect",
            RaceActionSpec::Write => "write",
            RaceActionSpec::Exit => "exit",
            RaceActionSpec::ThreadExit => "thread_exit",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiresSpec {
    /// The harness must run as root (uid 0 with the capabilities it needs).
    #[serde(default)]
    pub root: bool,
    /// Capabilities the harness must hold, e.g. `CAP_SYS_PTRACE`.
    #[serde(default)]
    pub caps: Vec<String>,
    /// Lowest kernel, `major.minor` (e.g. `"5.10"`).
    pub min_kernel: Option<String>,
    /// Highest kernel, `major.minor`, for behaviour that later kernels changed.
    pub max_kernel: Option<String>,
    /// Machine architecture, e.g. `x86_64`.
    pub arch: Option<String>,
    /// Kernel features probed at run time.
    #[serde(default)]
    pub features: Vec<Feature>,
    /// The Yama LSM with exactly this `kernel.yama.ptrace_scope` (0-3). The case is skipped
    /// at any other scope; a runner that can change the scope runs such cases in a pass of
    /// their own (docs/CASES.md).
    pub yama_scope: Option<u8>,
}

/// A kernel or machine feature a case may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// The i386 `int 0x80` entry (CONFIG_IA32_EMULATION, not disabled at boot).
    Compat,
    /// Transparent huge pages available (`madvise` or `always`).
    Thp,
    /// `memfd_create(2)`.
    Memfd,
    /// The Yama LSM is active.
    Yama,
    /// Creating a PID namespace (needs CAP_SYS_ADMIN).
    Pidns,
    /// A process without capabilities can create a user namespace (`unshare(CLONE_NEWUSER)`;
    /// `user.max_user_namespaces`, Debian's `kernel.unprivileged_userns_clone`).
    Userns,
    /// PID 2 is `kthreadd` (false inside a container's PID namespace).
    Kthreadd,
    /// `memfd_secret(2)` works (5.14+; 6.1 needs `secretmem.enable=1`).
    Secretmem,
    /// `madvise(MADV_GUARD_INSTALL)` (6.13+).
    GuardPages,
    /// `mseal(2)` (6.10+, 64-bit).
    Mseal,
    /// `io_setup(2)` works (CONFIG_AIO, `fs.aio-max-nr` not exhausted).
    Aio,
    /// `io_uring_setup(2)` works (CONFIG_IO_URING, not refused by `kernel.io_uring_disabled`).
    IoUring,
    /// A target can make its `[uprobes]` XOL area: root, and the `uprobe` perf PMU
    /// (CONFIG_UPROBE_EVENTS; implied by naming `uprobes`).
    Uprobes,
    /// Memory protection keys: the CPU has PKU and the kernel enabled it (`pku` and `ospke` in
    /// /proc/cpuinfo), so `pkey_alloc(2)` works.
    Pkeys,
    /// Free 2 MiB huge pages in the hugetlb pool (`HugePages_Free` in /proc/meminfo).
    Hugetlb,
    /// The vsyscall page is not readable (`vsyscall=xonly`, the default since 5.18's
    /// Kconfig, or `none`); with `emulate` its contents are not modelled.
    VsyscallXonly,
    /// `userfaultfd(2)` with `UFFD_FEATURE_SIGBUS` and anonymous write-protect registration
    /// (as root; an unprivileged harness also needs `vm.unprivileged_userfaultfd=1`).
    Userfaultfd,
    /// The harness has a `[vdso]` mapping (implied by naming `vdso`).
    Vdso,
    /// The harness has a `[vvar]` mapping (implied by naming `vvar`).
    Vvar,
    /// The harness has a `[vvar_vclock]` mapping (the generic vDSO datastore, after 6.12;
    /// implied by naming `vvar_vclock`).
    VvarVclock,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    #[serde(default)]
    pub kind: TargetKind,
    #[serde(default)]
    pub regions: Vec<RegionSpec>,
    /// Credentials the target switches to after building its layout.
    pub creds: Option<CredSpec>,
    /// `prctl(PR_SET_DUMPABLE)`; default true (set again after a credential change, which
    /// would otherwise leave the target non-dumpable).
    pub dumpable: Option<bool>,
    /// `prctl(PR_SET_PTRACER)` after the credential change: `any` (PR_SET_PTRACER_ANY) or
    /// `harness` (the target's parent, an ancestor of the caller). Child targets only.
    pub ptracer: Option<Ptracer>,
    /// Which process forks the target: the harness (default; the caller is then its sibling)
    /// or the caller (the target is then the caller's descendant). Child targets only.
    #[serde(default)]
    pub parent: TargetParent,
    /// After its credential change the target unshares a new user namespace
    /// (`unshare(CLONE_NEWUSER)`): its credentials then belong to a namespace owned by its
    /// effective uid, while its mm keeps the harness's (`mm->user_ns`). Child targets only.
    #[serde(default)]
    pub userns: bool,
}

/// Whom a target declares as its ptracer (Yama's PR_SET_PTRACER exception).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ptracer {
    /// `PR_SET_PTRACER_ANY`: any process may attach.
    Any,
    /// The harness's pid: the caller, its child, descends from it.
    Harness,
}

/// Who forks a `child` target.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetParent {
    /// The harness: caller and target are siblings.
    #[default]
    Harness,
    /// The caller, before it changes credentials: the target is its child.
    Caller,
}

/// Who the `pid` argument names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A forked child that builds the layout and waits.
    #[default]
    Child,
    /// The caller itself (`pid = getpid()`).
    #[serde(rename = "self")]
    SelfProcess,
    /// A thread of the caller, named by its TID.
    Thread,
    /// A child created with `CLONE_VM` (shares the caller's mm, not its thread group).
    CloneVm,
    /// A child that has exited and has not been reaped.
    Zombie,
    /// A child that has exited and been reaped.
    Reaped,
    /// A pid no process can have (`/proc/sys/kernel/pid_max`).
    UnusedPid,
    /// `pid = 0`.
    Pid0,
    /// `pid = -1`.
    PidMinus1,
    /// A kernel thread (`kthreadd`, pid 2).
    Kthread,
    /// A thread-group leader that exited while another thread lives; named by the leader's pid.
    ZombieLeader,
    /// The live thread of such a group, named by its TID.
    ZombieLeaderThread,
    /// A child in a new PID namespace, named by its pid in the caller's namespace.
    PidnsChild,
}

impl TargetKind {
    /// The target is the caller's own address space: the caller itself, one of its threads,
    /// or a `CLONE_VM` child (mm_access then skips the ptrace check).
    pub fn shares_caller_mm(self) -> bool {
        matches!(
            self,
            TargetKind::SelfProcess | TargetKind::Thread | TargetKind::CloneVm
        )
    }
    /// The name used in case files.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Child => "child",
            TargetKind::SelfProcess => "self",
            TargetKind::Thread => "thread",
            TargetKind::CloneVm => "clone_vm",
            TargetKind::Zombie => "zombie",
            TargetKind::Reaped => "reaped",
            TargetKind::UnusedPid => "unused_pid",
            TargetKind::Pid0 => "pid0",
            TargetKind::PidMinus1 => "pid_minus1",
            TargetKind::Kthread => "kthread",
            TargetKind::ZombieLeader => "zombie_leader",
            TargetKind::ZombieLeaderThread => "zombie_leader_thread",
            TargetKind::PidnsChild => "pidns_child",
        }
    }
}

/// A named range of pages. Regions are laid out back to back in declaration order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub name: String,
    pub pages: NumSpec,
    /// Optional placement: the page index from the side's base (page 0 is `hole`). Without
    /// it the region follows the previous one.
    pub at: Option<NumSpec>,
    #[serde(default)]
    pub prot: Prot,
    #[serde(default)]
    pub kind: RegionKind,
    /// For file-backed kinds: the file's length in bytes (default: the mapping's length).
    pub file_size: Option<NumSpec>,
    /// Initial contents (default: `pattern`; caller regions default to the canary pattern).
    #[serde(default)]
    pub fill: Fill,
    /// A protection key: the process that maps the region allocates one with these rights in
    /// its own PKRU (`pkey_alloc(0, rights)`) and tags the region with it (`pkey_mprotect`).
    /// Anonymous regions only; needs `features: [pkeys]`.
    pub pkey: Option<Pkey>,
}

/// The access rights a region's protection key leaves its owner (`pkey_alloc`'s `init_val`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pkey {
    /// `PKEY_DISABLE_ACCESS`: no data access at all.
    DenyAccess,
    /// `PKEY_DISABLE_WRITE`: reads only.
    DenyWrite,
}

impl Pkey {
    /// `pkey_alloc`'s `init_val`.
    pub fn rights(self) -> u32 {
        match self {
            Pkey::DenyAccess => 0x1,
            Pkey::DenyWrite => 0x2,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prot {
    #[default]
    Rw,
    Ro,
    None,
    /// Write-only (`PROT_WRITE`).
    Wo,
    /// Exec-only (`PROT_EXEC`).
    Xo,
    Rwx,
    /// Read and execute (`PROT_READ|PROT_EXEC`), like a text segment or the vdso.
    Rx,
}

impl Prot {
    /// The name a case file uses.
    pub fn name(self) -> &'static str {
        match self {
            Prot::Rw => "rw",
            Prot::Ro => "ro",
            Prot::None => "none",
            Prot::Wo => "wo",
            Prot::Xo => "xo",
            Prot::Rwx => "rwx",
            Prot::Rx => "rx",
        }
    }

    /// The `PROT_*` bits for mmap/mprotect.
    pub fn bits(self) -> i32 {
        match self {
            Prot::Rw => libc::PROT_READ | libc::PROT_WRITE,
            Prot::Ro => libc::PROT_READ,
            Prot::None => libc::PROT_NONE,
            Prot::Wo => libc::PROT_WRITE,
            Prot::Xo => libc::PROT_EXEC,
            Prot::Rwx => libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            Prot::Rx => libc::PROT_READ | libc::PROT_EXEC,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionKind {
    /// Private anonymous memory.
    #[default]
    Anon,
    /// Unmapped address space (kept unmapped by the planner).
    Hole,
    /// `MAP_PRIVATE` of a regular temporary file.
    FilePrivate,
    /// `MAP_SHARED` of a regular temporary file.
    FileShared,
    /// `MAP_PRIVATE` of a memfd.
    MemfdPrivate,
    /// `MAP_SHARED` of a memfd.
    MemfdShared,
    /// Anonymous, 2 MiB aligned, `MADV_HUGEPAGE`.
    Thp,
    /// Anonymous `MAP_GROWSDOWN`: a stack-like VMA that may be expanded downwards.
    Growsdown,
    /// A `memfd_secret(2)` mapping (secretmem): removed from the kernel's direct map.
    Secretmem,
    /// Anonymous memory covered by `MADV_GUARD_INSTALL` guard markers (every access faults).
    Guarded,
    /// Anonymous memory sealed with `mseal(2)` after its protection is set.
    Sealed,
    /// `MAP_HUGETLB` anonymous memory in 2 MiB pages, 2 MiB aligned.
    Hugetlb,
    /// Anonymous memory the target registers with userfaultfd (`UFFDIO_REGISTER_MODE_MISSING`,
    /// `UFFD_FEATURE_SIGBUS`) and never populates: every fault in it is SIGBUS.
    UffdSigbus,
    /// Anonymous memory registered with userfaultfd (`UFFDIO_REGISTER_MODE_MISSING`); a
    /// handler thread in the target resolves each fault with `UFFDIO_COPY` of the region's
    /// pattern (`fill: pattern`) or `UFFDIO_ZEROPAGE` (`fill: untouched`).
    Uffd,
    /// Anonymous memory filled with the pattern, then registered with
    /// `UFFDIO_REGISTER_MODE_WP` (`UFFD_FEATURE_SIGBUS`) and write-protected
    /// (`UFFDIO_WRITEPROTECT`): reads work, a write fault is SIGBUS.
    UffdWp,
    /// The `[aio]` ring of an AIO context the target creates (`io_setup(1, &ctx)`) and moves
    /// here with `mremap` (fs/aio.c `aio_ring_mremap`): a `MAP_SHARED` mapping of the ring
    /// file, VM_DONTEXPAND, filled by the kernel (a header, then zeroed events). Target of a
    /// `child` only, prot `rw`, as many pages as the kernel sized the ring (1 up to 15
    /// possible CPUs).
    AioRing,
    /// The SQ ring of an io_uring instance the target creates (`io_uring_setup(1, &p)`),
    /// mapped at `IORING_OFF_SQ_RING`: `struct io_rings` as setup fills it. The kernel chooses
    /// an io_uring mapping's address (`io_uring_get_unmapped_area` refuses a hint), so the
    /// target steers it into place (docs/SEMANTICS.md 12a'''''). Target of a `child` only,
    /// prot `rw`, one page.
    IoUringSqRing,
    /// The same ring pages mapped at `IORING_OFF_CQ_RING` (IORING_FEAT_SINGLE_MMAP: one
    /// allocation for both rings).
    IoUringCqRing,
    /// The submission queue entries, mapped at `IORING_OFF_SQES`: one zeroed 64-byte SQE and
    /// the rest of its page.
    IoUringSqes,
    /// The process's `[vdso]`: a special mapping the kernel made at exec, named in cases as
    /// `vdso` (never declared as a region; see [`crate::plan::Special`]).
    #[serde(skip_deserializing)]
    Vdso,
    /// `[vvar]`: the vDSO data pages (VM_IO up to 7.2).
    #[serde(skip_deserializing)]
    Vvar,
    /// `[vvar_vclock]`: the x86 clock-source pages (VM_IO|VM_PFNMAP).
    #[serde(skip_deserializing)]
    VvarVclock,
    /// `[uprobes]`: the XOL area the kernel maps in a process at its first out-of-line
    /// single-step of a uprobe (VM_EXEC|VM_IO, no VM_READ), here the target's.
    #[serde(skip_deserializing)]
    Uprobes,
}

impl RegionKind {
    /// A mapping of an io_uring instance the target creates.
    pub fn is_io_uring(self) -> bool {
        matches!(
            self,
            RegionKind::IoUringSqRing | RegionKind::IoUringCqRing | RegionKind::IoUringSqes
        )
    }
    /// The `IORING_OFF_*` mmap offset of an io_uring kind.
    pub fn io_uring_offset(self) -> Option<u64> {
        match self {
            RegionKind::IoUringSqRing => Some(0),
            RegionKind::IoUringCqRing => Some(0x800_0000),
            RegionKind::IoUringSqes => Some(0x1000_0000),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// Offset-encoding pattern (target) or canary pattern (caller).
    #[default]
    Pattern,
    /// Never written: reads as zero, costs no memory until touched.
    Untouched,
}

/// Credentials a process switches to with setresgid/setresuid/capset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredSpec {
    pub uid: u32,
    pub euid: Option<u32>,
    pub suid: Option<u32>,
    pub gid: Option<u32>,
    pub egid: Option<u32>,
    pub sgid: Option<u32>,
    /// `PR_SET_KEEPCAPS` before the uid change: the permitted set survives it.
    #[serde(default)]
    pub keep_caps: bool,
    /// Capabilities removed from the effective and permitted sets after the uid change.
    #[serde(default)]
    pub drop_caps: Vec<String>,
    /// Capabilities removed from the effective set only.
    #[serde(default)]
    pub drop_effective_caps: Vec<String>,
    /// Capabilities raised in the effective set after the uid change (they must still be
    /// permitted, e.g. with `keep_caps`).
    #[serde(default)]
    pub raise_caps: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSpec {
    #[serde(default)]
    pub regions: Vec<RegionSpec>,
    /// When set, the call runs with these credentials (needs root to set up).
    pub creds: Option<CredSpec>,
    /// The caller is forked into a new PID namespace (`clone(CLONE_NEWPID)`), whose pid 1 it
    /// is: the call's pid is looked up there.
    #[serde(default)]
    pub pidns: bool,
    /// After its credential change the caller unshares a new user namespace
    /// (`unshare(CLONE_NEWUSER)`): it holds every capability there and none outside it.
    #[serde(default)]
    pub userns: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Syscall {
    Readv,
    Writev,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// `syscall(2)` with the x86-64 numbers 310/311.
    #[default]
    Native,
    /// `int 0x80` with the i386 numbers 347/348 and `struct compat_iovec` arrays.
    Compat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    pub syscall: Syscall,
    #[serde(default)]
    pub entry: Entry,
    #[serde(default)]
    pub local: Vec<IovSpec>,
    #[serde(default)]
    pub remote: Vec<IovSpec>,
    /// Default: the number of local iovecs.
    pub liovcnt: Option<NumSpec>,
    /// Default: the number of remote iovecs.
    pub riovcnt: Option<NumSpec>,
    #[serde(default)]
    pub flags: Option<NumSpec>,
    /// Override the local iovec array pointer with an address expression (e.g. `null+8`).
    /// A bare YAML `null` means the null pointer, not "no override".
    #[serde(default, deserialize_with = "null_is_address")]
    pub lvec: Option<String>,
    /// Override the remote iovec array pointer.
    #[serde(default, deserialize_with = "null_is_address")]
    pub rvec: Option<String>,
}

/// One `struct iovec`, or `repeat` of them with `base` advancing by `stride`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IovSpec {
    /// An address expression: `region`, `region+off`, `region-off`, or a named bad address
    /// (`null`, `kernel`, `non_canonical`, `hole`, `guard`), optionally `+off`. A bare YAML
    /// `null` is the null pointer.
    #[serde(deserialize_with = "null_is_address_required")]
    pub base: String,
    pub len: NumSpec,
    pub repeat: Option<NumSpec>,
    pub stride: Option<NumSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// A byte count or an errno name.
    pub result: NumOrName,
    /// The model step that decides the outcome.
    pub decided_by: Option<String>,
    /// Why this is the right answer (kernel source, man page). Required.
    pub why: String,
}

/// A present field whose YAML value is `null` names the null pointer: `lvec: null` must not
/// silently mean "use the real array".
fn null_is_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(
        Option::<String>::deserialize(d)?.unwrap_or_else(|| "null".into()),
    ))
}

fn null_is_address_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(|| "null".into()))
}

/// A number written as a YAML integer or as an expression string (see [`crate::expr`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NumSpec {
    U(u64),
    I(i64),
    S(String),
}

impl NumSpec {
    pub fn eval(&self) -> Result<u64, String> {
        match self {
            NumSpec::U(v) => Ok(*v),
            NumSpec::I(v) => Ok(*v as u64),
            NumSpec::S(s) => crate::expr::eval(s),
        }
    }
}

/// An expected result: a count or an errno name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NumOrName {
    U(u64),
    S(String),
}
