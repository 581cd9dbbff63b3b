//! From a parsed case file to a validated plan: every address, length, count and credential
//! resolved, every name checked, nothing forked yet.
//!
//! Address layout (all fixed, placed with MAP_FIXED_NOREPLACE):
//!
//! ```text
//!  side base ─┬─ page 0: `hole` (never mapped)
//!             ├─ region 0, region 1, … back to back in declaration order
//!             │  (`thp` regions start on a 2 MiB boundary; `hole` regions stay unmapped)
//!             └─ `guard`: the page after the last region (never mapped)
//!  caller only: the local iovec array, ending exactly on a page boundary, then an unmapped
//!               page; the remote iovec array likewise. So a count larger than the array makes
//!               the kernel read into an unmapped page.
//! ```

use crate::caps::{self, CapSet, Ids};
use crate::case::{
    CaseFile, CredSpec, Entry, Feature, Fill, IovSpec, NumOrName, Prot, Ptracer, RegionKind,
    RegionSpec, Syscall, TargetKind, TargetParent,
};
use crate::expr::PAGE;
use crate::facts::{Facts, Span};
use std::borrow::Cow;
use std::fmt;

/// Which process an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Target,
    Caller,
}

/// Named bad addresses: a case says `kernel`, never a hex constant.
pub const NULL: u64 = 0;
/// In the kernel's direct map on x86-64 (above TASK_SIZE_MAX, canonical, not the vsyscall page).
pub const KERNEL: u64 = 0xffff_8880_0000_0000;
/// Non-canonical with both 4- and 5-level paging (bits 63..57 disagree).
pub const NON_CANONICAL: u64 = 0x0800_0000_0000_0000;

const NATIVE_TARGET_BASE: u64 = 0x2000_0000_0000;
const NATIVE_CALLER_BASE: u64 = 0x3000_0000_0000;
const NATIVE_SPAN: u64 = 0x0800_0000_0000;
/// Compat iovecs hold 32-bit pointers, so compat layouts live below 4 GiB.
const COMPAT_TARGET_BASE: u64 = 0x4000_0000;
const COMPAT_CALLER_BASE: u64 = 0x8000_0000;
const COMPAT_SPAN: u64 = 0x4000_0000;
const THP_ALIGN: u64 = 2 << 20;
/// `stack_guard_gap` (mm/mmap.c): 256 pages unless `stack_guard_gap=` is on the command line.
pub const STACK_GUARD_GAP: u64 = 256 * PAGE;
/// The vsyscall page on x86-64 (`VSYSCALL_ADDR`), the only gate area.
pub const VSYSCALL: u64 = 0xffff_ffff_ff60_0000;

/// A mapping the kernel makes in every process at exec (the x86-64 vDSO and its data pages),
/// named in case files as `vdso`, `vvar` or `vvar_vclock`. The target and the caller are forks
/// of the harness, so they have the harness's own mappings at the same addresses; those are a
/// runtime fact ([`Facts::special`]). A plan built from a case holds a placeholder address for
/// each use (non-canonical, so it can never be mistaken for a real one) until
/// [`Plan::bind`] replaces it with the address the facts give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Vdso,
    Vvar,
    VvarVclock,
    /// The target's own `[uprobes]` XOL area: not the harness's (VM_DONTCOPY), made by a
    /// `child` target before it reports ready, at the address the kernel's hint gives
    /// (`get_unmapped_area(NULL, TASK_SIZE - PAGE_SIZE, ...)`, docs/SEMANTICS.md 12a'''''').
    Uprobes,
}

const SPECIAL_BASE: u64 = 0x5a00_0000_0000_0000;
const SPECIAL_STRIDE: u64 = 1 << 48;
/// How far an offset from a special name may reach (either way).
const SPECIAL_REACH: u64 = 1 << 40;

impl Special {
    pub const ALL: [Special; 4] = [
        Special::Vdso,
        Special::Vvar,
        Special::VvarVclock,
        Special::Uprobes,
    ];
    /// The name in case files, and the `/proc/self/maps` name without brackets.
    pub fn name(self) -> &'static str {
        match self {
            Special::Vdso => "vdso",
            Special::Vvar => "vvar",
            Special::VvarVclock => "vvar_vclock",
            Special::Uprobes => "uprobes",
        }
    }
    fn placeholder(self) -> u64 {
        SPECIAL_BASE + self as u64 * SPECIAL_STRIDE
    }
    pub fn feature(self) -> Feature {
        match self {
            Special::Vdso => Feature::Vdso,
            Special::Vvar => Feature::Vvar,
            Special::VvarVclock => Feature::VvarVclock,
            Special::Uprobes => Feature::Uprobes,
        }
    }
    /// The special name and offset a placeholder address stands for.
    pub fn of_placeholder(addr: u64) -> Option<(Special, i64)> {
        Special::ALL.into_iter().find_map(|s| {
            let d = addr.wrapping_sub(s.placeholder()) as i64;
            (d.unsigned_abs() < SPECIAL_REACH).then_some((s, d))
        })
    }
    /// The region the model sees for this mapping at `span`. The vdso text is
    /// `VM_READ|VM_EXEC|VM_MAYWRITE` (arch/x86/entry/vdso/vma.c `map_vdso`); the data pages are
    /// `VM_READ|VM_IO|VM_PFNMAP` (`VM_MIXEDMAP` for the generic datastore's `[vvar]`).
    pub fn region(self, span: Span) -> Region {
        let (prot, kind) = match self {
            Special::Vdso => (Prot::Rx, RegionKind::Vdso),
            Special::Vvar => (Prot::Ro, RegionKind::Vvar),
            Special::VvarVclock => (Prot::Ro, RegionKind::VvarVclock),
            // kernel/events/uprobes.c xol_add_vma: VM_EXEC|VM_MAYEXEC|VM_DONTCOPY|VM_IO.
            Special::Uprobes => (Prot::Xo, RegionKind::Uprobes),
        };
        Region {
            name: self.name().into(),
            side: Side::Target,
            tag: 0,
            start: span.start,
            len: span.len,
            prot,
            kind,
            file_size: None,
            fill: Fill::Untouched,
            pkey: None,
        }
    }
}

/// A mapped (or deliberately unmapped) range at a fixed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub side: Side,
    /// Byte stamped into every pattern word of this region (see [`crate::pattern`]).
    pub tag: u8,
    pub start: u64,
    pub len: u64,
    pub prot: Prot,
    pub kind: RegionKind,
    /// File length for file-backed kinds.
    pub file_size: Option<u64>,
    pub fill: Fill,
    /// The protection key its owner tags it with (`pkey`).
    pub pkey: Option<crate::case::Pkey>,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
    pub fn is_file(&self) -> bool {
        matches!(
            self.kind,
            RegionKind::FilePrivate
                | RegionKind::FileShared
                | RegionKind::MemfdPrivate
                | RegionKind::MemfdShared
        )
    }
    pub fn is_shared_file(&self) -> bool {
        matches!(self.kind, RegionKind::FileShared | RegionKind::MemfdShared)
    }
    /// Registered with userfaultfd by the target.
    pub fn is_uffd(&self) -> bool {
        matches!(
            self.kind,
            RegionKind::UffdSigbus | RegionKind::Uffd | RegionKind::UffdWp
        )
    }
    /// A mapping of an io_uring instance's rings or SQEs (made by the target).
    pub fn is_io_uring(&self) -> bool {
        self.kind.is_io_uring()
    }
    pub fn is_hole(&self) -> bool {
        self.kind == RegionKind::Hole
    }
    /// The harness opens a descriptor for it (file kinds and secretmem).
    pub fn needs_fd(&self) -> bool {
        self.is_file() || self.kind == RegionKind::Secretmem
    }
    /// Bytes from the start that are backed by the file (whole pages up to EOF); pages past
    /// EOF raise SIGBUS on access (mmap(2), "SIGBUS").
    pub fn backed_len(&self) -> u64 {
        match self.file_size {
            Some(fs) if self.is_file() => fs.div_ceil(PAGE).saturating_mul(PAGE).min(self.len),
            // Holes are unmapped; guard markers fault on every access, so nothing is readable.
            // A userfaultfd SIGBUS region is never populated: every fault in it fails.
            _ if self.is_hole()
                || matches!(self.kind, RegionKind::Guarded | RegionKind::UffdSigbus) =>
            {
                0
            }
            _ => self.len,
        }
    }
}

/// One `struct iovec` with the expression it came from, for rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iov {
    pub base: u64,
    pub len: u64,
    /// The entry (index into the side's [`IovGroup`]s) this iovec repeats.
    pub group: u32,
    /// The offset from the entry's base (`k * stride`), when this is repeat `k > 0`.
    pub offset: Option<u64>,
}

impl Iov {
    /// How the case names this iovec's base: `buf+8`, or `buf+8+4096` for a repeat.
    /// Formatted only for error messages: an entry may repeat thousands of times.
    pub fn label(&self, groups: &[IovGroup]) -> String {
        let base = groups
            .get(self.group as usize)
            .map_or("?", |g| g.label.as_str());
        match self.offset {
            None => base.to_string(),
            Some(o) => format!("{base}+{o}"),
        }
    }
}

/// A run of identical-shape iovecs, kept for compact rendering (`{buf+0,1}×1024`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IovGroup {
    pub label: String,
    pub len: u64,
    pub count: u64,
    pub stride: u64,
}

/// An iovec array the harness writes into the caller's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayImage {
    /// `lvec` or `rvec`.
    pub name: &'static str,
    pub addr: u64,
    pub bytes: Vec<u8>,
    /// The page-aligned range mapped to hold it (readable and writable).
    pub map_start: u64,
    pub map_len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Creds {
    pub ids: Ids,
    pub keep_caps: bool,
    pub drop: CapSet,
    pub drop_effective: CapSet,
    /// Raised in the effective set after the uid change (if still permitted).
    pub raise: CapSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirements {
    pub root: bool,
    pub caps: Vec<(String, u32)>,
    pub min_kernel: Option<(u32, u32)>,
    pub max_kernel: Option<(u32, u32)>,
    pub arch: Option<String>,
    pub features: Vec<Feature>,
    pub yama_scope: Option<u8>,
}

/// An expected result pinned by the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Count(u64),
    Errno(i32),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Count(n) => write!(f, "{n}"),
            Expected::Errno(e) => f.write_str(&crate::errno::name(*e)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub result: Expected,
    pub decided_by: Option<String>,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub syscall: Syscall,
    pub entry: Entry,
    pub local: Vec<Iov>,
    pub remote: Vec<Iov>,
    pub local_groups: Vec<IovGroup>,
    pub remote_groups: Vec<IovGroup>,
    pub liovcnt: u64,
    pub riovcnt: u64,
    pub flags: u64,
    /// The pointers passed as `lvec` / `rvec`.
    pub lvec: u64,
    pub rvec: u64,
    /// Set when the case overrode the array pointer (rendered instead of the iovecs).
    pub lvec_label: Option<String>,
    pub rvec_label: Option<String>,
}

/// A validated case, ready for the model and the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `group/name`, from the path under `cases/`.
    pub id: String,
    pub path: String,
    pub description: String,
    pub requires: Requirements,
    pub target_kind: TargetKind,
    pub target_regions: Vec<Region>,
    pub target_creds: Option<Creds>,
    pub target_dumpable: bool,
    pub target_ptracer: Option<Ptracer>,
    pub target_parent: TargetParent,
    pub caller_regions: Vec<Region>,
    pub caller_creds: Option<Creds>,
    /// The caller is pid 1 of a new PID namespace (`caller.pidns`).
    pub caller_pidns: bool,
    /// The caller unshares a user namespace after its credential change (`caller.userns`).
    pub caller_userns: bool,
    /// The target unshares a user namespace after its credential change (`target.userns`).
    pub target_userns: bool,
    pub arrays: Vec<ArrayImage>,
    /// Named unmapped pages, for labelling addresses: `hole`/`guard` of each side.
    pub landmarks: Vec<(&'static str, u64)>,
    /// For each `growsdown` region, the unmapped range below it into which the kernel could
    /// expand it (`expand_downwards`): down to the previous mapping, or to `STACK_GUARD_GAP`
    /// above it when that mapping is accessible, and not below the side's base. Named like
    /// the region, zero-filled; the model decides whether an access may use it.
    pub stack_windows: Vec<Region>,
    pub call: Call,
    pub expect: Option<Expect>,
    /// The special mappings the case names (`vdso`, `vvar`, `vvar_vclock`).
    pub specials: Vec<Special>,
    /// Every special mapping of the harness at its real address: empty until
    /// [`Plan::bind`], then all the facts know of (so an access running into a neighbour is
    /// judged and named right).
    pub special_regions: Vec<Region>,
    /// The case's `race` section, validated ([`crate::race::resolve`]); `None` for a case
    /// run once against an undisturbed target.
    pub race: Option<crate::race::Race>,
    /// The ranges the layout lies in, target side then caller side (`(start, len)`): the
    /// [`reserved_ranges`] of a 47-bit x86-64 address space when built, those of the running
    /// system once bound ([`Plan::bind`] moves the layout there).
    pub windows: [(u64, u64); 2],
    /// Set by [`Plan::bind`] when the layout cannot keep its meaning in this system's address
    /// space: why (the case skips with it).
    pub unplaceable: Option<String>,
}

impl Plan {
    /// The plan with every special-name placeholder replaced by the real address from the
    /// facts (and the iovec arrays re-encoded). Plans that name none are returned as they are.
    /// A special mapping the facts lack leaves its placeholder (the case is skipped anyway).
    pub fn bind(&self, facts: &Facts) -> Cow<'_, Plan> {
        let windows = reserved_ranges(self.call.entry, facts.task_size_max);
        if self.specials.is_empty() && windows == self.windows {
            return Cow::Borrowed(self);
        }
        let mut p = self.clone();
        if windows != p.windows {
            p.relocate(windows, facts.task_size_max);
        }
        let map = |v: u64| match Special::of_placeholder(v) {
            Some((s, d)) => facts
                .special(s)
                .map_or(v, |span| span.start.wrapping_add(d as u64)),
            None => v,
        };
        for iov in p.call.local.iter_mut().chain(p.call.remote.iter_mut()) {
            iov.base = map(iov.base);
        }
        for a in &mut p.arrays {
            let list = if a.name == "lvec" {
                &p.call.local
            } else {
                &p.call.remote
            };
            a.bytes = encode_iovs(list, p.call.entry);
        }
        if !p.specials.is_empty() {
            // The [uprobes] area exists only in a target that made it, i.e. when the case
            // names it.
            p.special_regions = Special::ALL
                .into_iter()
                .filter(|s| *s != Special::Uprobes || p.specials.contains(s))
                .filter_map(|s| facts.special(s).map(|span| s.region(span)))
                .collect();
        }
        Cow::Owned(p)
    }

    /// Moves the layout from [`Plan::windows`] to `to` (an address space whose user part
    /// ends at `top`). Every address the plan derived from a side's base (regions, growth
    /// windows, landmarks, iovec bases, the arrays and their pointers) keeps its offset into
    /// that side; every other address (`null`, `kernel`, an offset that left both sides) keeps
    /// its value. Where that changes what an address is — an offset the smaller side cannot
    /// hold, or a user address of the 47-bit layout that lies above `top` here — the plan is
    /// marked [`Plan::unplaceable`]. The iovec arrays are re-encoded by [`Plan::bind`].
    fn relocate(&mut self, to: [(u64, u64); 2], top: u64) {
        let from = self.windows;
        let sides = ["target", "caller"];
        // The moved address, and why its meaning is lost. `len`: the bytes from `v` that must
        // stay inside the same side.
        let map = |v: u64, len: u64, what: &dyn Fn() -> String| -> (u64, Option<String>) {
            for i in 0..2 {
                let ((ob, os), (nb, ns)) = (from[i], to[i]);
                if v >= ob && v - ob < os {
                    let off = v - ob;
                    let lost = (off.saturating_add(len) > ns).then(|| {
                        format!(
                            "an address this system cannot map: {} lies {off:#x} bytes into the {} layout, whose range here holds {ns:#x} (top of user space {top:#x})",
                            what(),
                            sides[i]
                        )
                    });
                    return (nb.wrapping_add(off), lost);
                }
            }
            let lost = (v >= top && v < X86_64_TASK_SIZE).then(|| {
                format!(
                    "an address this system cannot map: {} is the user address {v:#x}, above this system's top of user space {top:#x}",
                    what()
                )
            });
            (v, lost)
        };
        let mut problem: Option<String> = None;
        let mut take = |(v, lost): (u64, Option<String>)| {
            if let Some(p) = lost {
                problem.get_or_insert(p);
            }
            v
        };
        for r in self
            .target_regions
            .iter_mut()
            .chain(self.caller_regions.iter_mut())
            .chain(self.stack_windows.iter_mut())
        {
            let name = r.name.clone();
            r.start = take(map(r.start, r.len, &|| format!("region `{name}`")));
        }
        for (name, v) in &mut self.landmarks {
            let n = *name;
            *v = take(map(*v, 0, &|| format!("`{n}`")));
        }
        for a in &mut self.arrays {
            let n = a.name;
            a.map_start = take(map(a.map_start, a.map_len, &|| format!("the {n} array")));
            a.addr = take(map(a.addr, 0, &|| format!("the {n} array")));
        }
        let c = &mut self.call;
        for (field, list, groups) in [
            ("call.local", &mut c.local, &c.local_groups),
            ("call.remote", &mut c.remote, &c.remote_groups),
        ] {
            for iov in list.iter_mut() {
                let shown = iov.clone();
                let what = || format!("{field} `{}`", shown.label(groups));
                let old = iov.base;
                iov.base = take(map(old, 0, &what));
                // Where the range ends matters too: one that stays inside its side on x86-64
                // must do so here, and one that ends in (or beyond) user space there must
                // end in (or beyond) it here.
                let len = iov.len;
                let inside = |b: u64, (wb, ws): (u64, u64)| {
                    b >= wb && b - wb < ws && (b - wb).saturating_add(len) <= ws
                };
                let user_end = |b: u64, top: u64| b.checked_add(len).is_some_and(|e| e <= top);
                let lost = ((0..2).any(|i| inside(old, from[i]))
                    && !(0..2).any(|i| inside(iov.base, to[i]))
                    || user_end(old, X86_64_TASK_SIZE) != user_end(iov.base, top))
                .then(|| {
                    format!(
                        "an address this system cannot map: {} ends {len:#x} bytes further, which its user address space (top {top:#x}) cannot place as x86-64's",
                        what()
                    )
                });
                take((0, lost));
            }
        }
        c.lvec = take(map(c.lvec, 0, &|| "lvec".to_string()));
        c.rvec = take(map(c.rvec, 0, &|| "rvec".to_string()));
        self.windows = to;
        self.unplaceable = problem;
    }
    /// Target regions live in the caller's own address space for these kinds.
    pub fn target_shares_caller_mm(&self) -> bool {
        self.target_kind.shares_caller_mm()
    }
    pub fn regions(&self, side: Side) -> &[Region] {
        match side {
            Side::Target => &self.target_regions,
            Side::Caller => &self.caller_regions,
        }
    }
    pub fn region(&self, side: Side, name: &str) -> Option<&Region> {
        self.regions(side).iter().find(|r| r.name == name)
    }
    /// 2 MiB huge pages the case's hugetlb regions need.
    pub fn hugetlb_pages(&self) -> u64 {
        self.target_regions
            .iter()
            .chain(&self.caller_regions)
            .filter(|r| r.kind == RegionKind::Hugetlb)
            .map(|r| r.len / THP_ALIGN)
            .sum::<u64>()
            .max(1)
    }
}

/// A validation error: which field (a path like `call.remote[1].base`, which also places the
/// error in the file: [`crate::positions`]) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl PlanError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A field's name in an error message, formatted only when there is an error (plans are
/// built on every fuzz input).
trait FieldName {
    fn name(self) -> String;
}

impl FieldName for &str {
    fn name(self) -> String {
        self.to_string()
    }
}

impl<F: FnOnce() -> String> FieldName for F {
    fn name(self) -> String {
        self()
    }
}

fn num(field: impl FieldName, n: &crate::case::NumSpec) -> Result<u64, PlanError> {
    n.eval().map_err(|e| PlanError::new(field.name(), e))
}

fn kernel_version(field: &str, s: &str) -> Result<(u32, u32), PlanError> {
    crate::facts::parse_version(s).ok_or_else(|| {
        PlanError::new(
            field,
            format!("`{s}` is not a kernel version like \"5.10\""),
        )
    })
}

fn creds(field: &str, c: &CredSpec) -> Result<Creds, PlanError> {
    let gid = c.gid.unwrap_or(c.uid);
    Ok(Creds {
        ids: Ids {
            uid: c.uid,
            euid: c.euid.unwrap_or(c.uid),
            suid: c.suid.unwrap_or(c.uid),
            gid,
            egid: c.egid.unwrap_or(gid),
            sgid: c.sgid.unwrap_or(gid),
        },
        keep_caps: c.keep_caps,
        drop: caps::set_from_names(&c.drop_caps)
            .map_err(|e| PlanError::new(format!("{field}.drop_caps"), e))?,
        drop_effective: caps::set_from_names(&c.drop_effective_caps)
            .map_err(|e| PlanError::new(format!("{field}.drop_effective_caps"), e))?,
        raise: caps::set_from_names(&c.raise_caps)
            .map_err(|e| PlanError::new(format!("{field}.raise_caps"), e))?,
    })
}

/// TASK_SIZE_MAX of x86-64 with 4-level paging: the address space the layout is written
/// for (a user address of a case means one below it).
pub const X86_64_TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// The address ranges a plan for `entry` places its regions and arrays in on a system whose
/// user space ends at `top`, as (start, len), target side then caller side. The model takes
/// everything there that the plan does not map to be unmapped.
pub fn reserved_ranges(entry: Entry, top: u64) -> [(u64, u64); 2] {
    match entry {
        Entry::Native => native_windows(top),
        Entry::Compat => [
            side_bases(entry, Side::Target),
            side_bases(entry, Side::Caller),
        ],
    }
}

/// Where native layouts go below `top`: the fixed 8 TiB ranges at 32 and 48 TiB when the
/// address space has room above them (x86-64 has 128 TiB or more), otherwise (User-mode
/// Linux's 511 GiB) two ranges of an eighth of it each, at one and three eighths, aligned
/// so that every 2 MiB (and 1 GiB) boundary of a layout stays one: below the runtime's
/// executable, heap, mmap area and stack, which live in the upper half.
pub fn native_windows(top: u64) -> [(u64, u64); 2] {
    let default = [
        (NATIVE_TARGET_BASE, NATIVE_SPAN),
        (NATIVE_CALLER_BASE, NATIVE_SPAN),
    ];
    if top >= 2 * NATIVE_CALLER_BASE {
        return default;
    }
    let align = if top >= 16 << 30 { 1 << 30 } else { THP_ALIGN };
    let span = top / 8 / align * align;
    [(span, span), (3 * span, span)]
}

/// Where a native target with io_uring regions lives: inside the x86-64 `MAP_32BIT` window
/// (`[0x40000000, 0x80000000)`), where the kernel's own choice of address can be steered
/// (exec::layout `io_uring_build`), above the 32 MiB its randomisation may skip.
const IO_URING_TARGET_BASE: u64 = 0x4400_0000;
const IO_URING_TARGET_SPAN: u64 = 0x8000_0000 - IO_URING_TARGET_BASE;

fn side_bases(entry: Entry, side: Side) -> (u64, u64) {
    match (entry, side) {
        (Entry::Native, Side::Target) => (NATIVE_TARGET_BASE, NATIVE_SPAN),
        (Entry::Native, Side::Caller) => (NATIVE_CALLER_BASE, NATIVE_SPAN),
        (Entry::Compat, Side::Target) => (COMPAT_TARGET_BASE, COMPAT_SPAN),
        (Entry::Compat, Side::Caller) => (COMPAT_CALLER_BASE, COMPAT_SPAN),
    }
}

/// Places a side's regions; returns them and the `guard` address.
fn lay_out(
    specs: &[RegionSpec],
    side: Side,
    bases: (u64, u64),
    tag_base: u8,
    field: &str,
) -> Result<(Vec<Region>, u64), PlanError> {
    let (base, span) = bases;
    let mut cursor = base + PAGE; // page 0 is the `hole`
    let mut out: Vec<Region> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let f = || format!("{field}[{i}]");
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(PlanError::new(
                format!("{}.name", f()),
                format!("`{}` must be letters, digits and `_`", s.name),
            ));
        }
        if RESERVED.contains(&s.name.as_str()) {
            return Err(PlanError::new(
                format!("{}.name", f()),
                format!("`{}` is a reserved address name; pick another", s.name),
            ));
        }
        if out.iter().any(|r| r.name == s.name) {
            return Err(PlanError::new(
                format!("{}.name", f()),
                format!("region `{}` is declared twice", s.name),
            ));
        }
        let pages = num(|| format!("{}.pages", f()), &s.pages)?;
        if pages == 0 {
            return Err(PlanError::new(
                format!("{}.pages", f()),
                "a region needs at least one page",
            ));
        }
        let len = pages
            .checked_mul(PAGE)
            .ok_or_else(|| PlanError::new(format!("{}.pages", f()), "too many pages"))?;
        if let Some(at) = &s.at {
            let page = num(|| format!("{}.at", f()), at)?;
            let start = page.checked_mul(PAGE).and_then(|o| o.checked_add(base));
            match (start, out.last()) {
                (Some(st), Some(prev)) if st < cursor => {
                    return Err(PlanError::new(
                        format!("{}.at", f()),
                        format!(
                            "region `{}` overlaps region `{}`; place it at page {} or later",
                            s.name,
                            prev.name,
                            (cursor - base) / PAGE
                        ),
                    ));
                }
                (Some(st), _) if st >= base + PAGE => cursor = st,
                _ => {
                    return Err(PlanError::new(
                        format!("{}.at", f()),
                        "page 0 is the `hole`; use page 1 or later",
                    ));
                }
            }
        }
        if matches!(s.kind, RegionKind::Thp | RegionKind::Hugetlb) {
            cursor = cursor.div_ceil(THP_ALIGN) * THP_ALIGN;
        }
        if s.kind == RegionKind::Hugetlb && len % THP_ALIGN != 0 {
            return Err(PlanError::new(
                format!("{}.pages", f()),
                "a hugetlb region is made of 2 MiB pages: use a multiple of 512 pages",
            ));
        }
        if s.kind == RegionKind::Sealed && !matches!(s.prot, Prot::Rw | Prot::Ro | Prot::Rwx) {
            return Err(PlanError::new(
                format!("{}.prot", f()),
                "a sealed region cannot be made readable for the dump later: use rw, ro or rwx",
            ));
        }
        let is_file = matches!(
            s.kind,
            RegionKind::FilePrivate
                | RegionKind::FileShared
                | RegionKind::MemfdPrivate
                | RegionKind::MemfdShared
        );
        let file_size = match &s.file_size {
            Some(fs) if is_file => Some(num(|| format!("{}.file_size", f()), fs)?),
            Some(_) => {
                return Err(PlanError::new(
                    format!("{}.file_size", f()),
                    "only file and memfd kinds have a file size",
                ))
            }
            None if is_file => Some(len),
            None => None,
        };
        if s.kind == RegionKind::Hole && s.prot != Prot::Rw {
            return Err(PlanError::new(
                format!("{}.prot", f()),
                "a hole is unmapped; it has no protection",
            ));
        }
        let end = cursor
            .checked_add(len)
            .filter(|e| *e + PAGE <= base + span)
            .ok_or_else(|| {
                PlanError::new(
                    format!("{}.pages", f()),
                    format!(
                        "the layout does not fit: this {field} side has {} MiB of address space",
                        span >> 20
                    ),
                )
            })?;
        out.push(Region {
            name: s.name.clone(),
            side,
            tag: tag_base + i as u8,
            start: cursor,
            len,
            prot: s.prot,
            kind: s.kind,
            file_size,
            fill: s.fill,
            pkey: s.pkey,
        });
        cursor = end;
    }
    if specs.len() > 60 {
        return Err(PlanError::new(field, "at most 60 regions per side"));
    }
    Ok((out, cursor))
}

const RESERVED: &[&str] = &[
    "null",
    "kernel",
    "non_canonical",
    "hole",
    "guard",
    "vsyscall",
    "vdso",
    "vvar",
    "vvar_vclock",
    "uprobes",
];

/// The expansion windows below a side's `growsdown` regions (see [`Plan::stack_windows`]).
fn growth_windows(regions: &[Region], side_base: u64) -> Vec<Region> {
    let mut out = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        if r.kind != RegionKind::Growsdown {
            continue;
        }
        // expand_downwards: the previous VMA, if accessible and not itself growing down,
        // must stay stack_guard_gap away.
        let prev = regions[..i]
            .iter()
            .filter(|p| !p.is_hole() && p.end() <= r.start)
            .max_by_key(|p| p.end());
        let low = match prev {
            Some(p) if p.prot != Prot::None && p.kind != RegionKind::Growsdown => {
                p.end() + STACK_GUARD_GAP
            }
            Some(p) => p.end(),
            None => side_base,
        };
        if low < r.start {
            out.push(Region {
                start: low,
                len: r.start - low,
                kind: RegionKind::Anon,
                fill: Fill::Untouched,
                file_size: None,
                ..r.clone()
            });
        }
    }
    out
}

/// Resolves an address expression against one side's regions.
fn resolve_addr(
    expr: &str,
    regions: &[Region],
    hole: u64,
    guard: u64,
    field: &str,
) -> Result<u64, PlanError> {
    let e = expr.trim();
    let split = e.find(['+', '-']).unwrap_or(e.len());
    let (name, rest) = e.split_at(split);
    let name = name.trim();
    let base = match name {
        "null" => NULL,
        "kernel" => KERNEL,
        "non_canonical" => NON_CANONICAL,
        "hole" => hole,
        "guard" => guard,
        "vsyscall" => VSYSCALL,
        "vdso" => Special::Vdso.placeholder(),
        "vvar" => Special::Vvar.placeholder(),
        "vvar_vclock" => Special::VvarVclock.placeholder(),
        "uprobes" => Special::Uprobes.placeholder(),
        _ => regions.iter().find(|r| r.name == name).map(|r| r.start).ok_or_else(|| {
            let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
            PlanError::new(
                field,
                format!(
                    "`{name}` is not a declared region here (declared: {}; or use null, kernel, non_canonical, hole, guard, vsyscall, vdso, vvar, vvar_vclock, uprobes)",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ),
            )
        })?,
    };
    if rest.is_empty() {
        return Ok(base);
    }
    let off = crate::expr::eval(&format!("0{rest}")).map_err(|m| PlanError::new(field, m))?;
    Ok(base.wrapping_add(off))
}

fn expand_iovs(
    specs: &[IovSpec],
    regions: &[Region],
    hole: u64,
    guard: u64,
    field: &str,
) -> Result<(Vec<Iov>, Vec<IovGroup>), PlanError> {
    let mut out = Vec::new();
    let mut groups = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        // Field names are formatted only for an error: this runs on every fuzz input.
        let f = || format!("{field}[{i}]");
        let at = |sub: &'static str| {
            move |e: PlanError| PlanError {
                field: format!("{field}[{i}].{sub}"),
                ..e
            }
        };
        let base = resolve_addr(&s.base, regions, hole, guard, "").map_err(at("base"))?;
        let len = num("", &s.len).map_err(at("len"))?;
        let repeat = match &s.repeat {
            Some(r) => num("", r).map_err(at("repeat"))?,
            None => 1,
        };
        if repeat == 0 || repeat > 4096 {
            return Err(PlanError::new(
                format!("{}.repeat", f()),
                "repeat must be 1..=4096",
            ));
        }
        let stride = match &s.stride {
            Some(st) => num("", st).map_err(at("stride"))?,
            None => 0,
        };
        if s.stride.is_some() && s.repeat.is_none() {
            return Err(PlanError::new(
                format!("{}.stride", f()),
                "stride needs repeat",
            ));
        }
        // Addresses near the vdso/vvar placeholders stand for those mappings (Plan::bind);
        // a literal one there would silently become the vdso. They are non-canonical:
        // `non_canonical` names one.
        let special_name = ["vdso", "vvar", "uprobes"]
            .iter()
            .any(|n| s.base.trim().starts_with(n));
        for k in 0..repeat {
            let addr = base.wrapping_add(k.wrapping_mul(stride));
            if !special_name && Special::of_placeholder(addr).is_some() {
                return Err(PlanError::new(
                    f(),
                    format!("{addr:#x} lies in the range reserved for vdso/vvar placeholders; use `non_canonical` for a non-canonical address"),
                ));
            }
            out.push(Iov {
                base: addr,
                len,
                group: i as u32,
                offset: (k > 0).then(|| k.wrapping_mul(stride)),
            });
        }
        groups.push(IovGroup {
            label: s.base.clone(),
            len,
            count: repeat,
            stride,
        });
    }
    if out.len() > 4096 {
        return Err(PlanError::new(field, "at most 4096 iovecs per array"));
    }
    Ok((out, groups))
}

/// Encodes an iovec array as the kernel reads it: 16-byte `struct iovec` (native) or
/// 8-byte `struct compat_iovec` (u32 base, u32 len).
pub fn encode_iovs(iovs: &[Iov], entry: Entry) -> Vec<u8> {
    let mut b = Vec::with_capacity(iovs.len() * 16);
    for v in iovs {
        match entry {
            Entry::Native => {
                b.extend_from_slice(&v.base.to_le_bytes());
                b.extend_from_slice(&v.len.to_le_bytes());
            }
            Entry::Compat => {
                b.extend_from_slice(&(v.base as u32).to_le_bytes());
                b.extend_from_slice(&(v.len as u32).to_le_bytes());
            }
        }
    }
    b
}

/// Places an array so that it ends exactly on a page boundary with an unmapped page after.
fn place_array(cursor: &mut u64, name: &'static str, bytes: Vec<u8>) -> ArrayImage {
    let map_len = (bytes.len() as u64).div_ceil(PAGE).max(1) * PAGE;
    let map_start = *cursor;
    let addr = map_start + map_len - bytes.len() as u64;
    *cursor = map_start + map_len + PAGE;
    ArrayImage {
        name,
        addr,
        bytes,
        map_start,
        map_len,
    }
}

/// Validates a parsed case and resolves it into a plan. `id` is `group/name`.
pub fn build(id: &str, path: &str, case: &CaseFile) -> Result<Plan, PlanError> {
    let entry = case.call.entry;
    let r = &case.requires;
    let mut caps_req = Vec::new();
    for (i, c) in r.caps.iter().enumerate() {
        let bit = caps::from_name(c).ok_or_else(|| {
            PlanError::new(
                format!("requires.caps[{i}]"),
                format!("unknown capability `{c}` (use names like CAP_SYS_PTRACE)"),
            )
        })?;
        caps_req.push((c.clone(), bit));
    }
    let mut features = r.features.clone();
    if entry == Entry::Compat && !features.contains(&Feature::Compat) {
        features.push(Feature::Compat);
    }
    let mut requires = Requirements {
        root: r.root || case.caller.creds.is_some() || case.target.creds.is_some(),
        caps: caps_req,
        min_kernel: r
            .min_kernel
            .as_deref()
            .map(|v| kernel_version("requires.min_kernel", v))
            .transpose()?,
        max_kernel: r
            .max_kernel
            .as_deref()
            .map(|v| kernel_version("requires.max_kernel", v))
            .transpose()?,
        arch: r.arch.clone(),
        features,
        yama_scope: match r.yama_scope {
            Some(n) if n > 3 => {
                return Err(PlanError::new(
                    "requires.yama_scope",
                    format!("Yama's ptrace_scope is 0, 1, 2 or 3, not {n}"),
                ))
            }
            other => other,
        },
    };

    let io_uring = case.target.regions.iter().any(|r| r.kind.is_io_uring());
    if io_uring && entry == Entry::Compat {
        return Err(PlanError::new(
            "call.entry",
            "io_uring regions are laid out for a native case (they live above the compat layouts)",
        ));
    }
    let target_bases = if io_uring {
        (IO_URING_TARGET_BASE, IO_URING_TARGET_SPAN)
    } else {
        side_bases(entry, Side::Target)
    };
    let (target_regions, tguard) = lay_out(
        &case.target.regions,
        Side::Target,
        target_bases,
        0x10,
        "target.regions",
    )?;
    let (caller_regions, cguard) = lay_out(
        &case.caller.regions,
        Side::Caller,
        side_bases(entry, Side::Caller),
        0x80,
        "caller.regions",
    )?;
    let (thole, _) = target_bases;
    let (chole, _) = side_bases(entry, Side::Caller);
    let mut stack_windows = growth_windows(&target_regions, thole);
    stack_windows.extend(growth_windows(&caller_regions, chole));

    let call = &case.call;
    // A self/thread/clone_vm target is the caller's address space: each side's addresses may
    // name the other side's regions too (its own side's first), so a case can make a copy
    // whose source and destination overlap (docs/SEMANTICS.md, "Overlapping copies in one
    // address space").
    let one_mm = case.target.kind.shares_caller_mm();
    let names = |own: &[Region], other: &[Region]| -> Vec<Region> {
        let mut v = own.to_vec();
        if one_mm {
            v.extend(other.iter().cloned());
        }
        v
    };
    let (local, local_groups) = expand_iovs(
        &call.local,
        &names(&caller_regions, &target_regions),
        chole,
        cguard,
        "call.local",
    )?;
    let (remote, remote_groups) = expand_iovs(
        &call.remote,
        &names(&target_regions, &caller_regions),
        thole,
        tguard,
        "call.remote",
    )?;
    let mut specials: Vec<Special> = Vec::new();
    for (side, list, groups) in [
        ("call.local", &local, &local_groups),
        ("call.remote", &remote, &remote_groups),
    ] {
        for v in list {
            let Some((s, off)) = Special::of_placeholder(v.base) else {
                continue;
            };
            // The datastore's rng page (VDSO_RNG_PAGE_OFFSET = 2) has a PTE only if libc used
            // the vDSO getrandom before the fork; on 7.3 that decides a remote pin (see
            // model::VVAR_PRESENT_PAGES), and the harness cannot know it.
            if s == Special::Vvar
                && side == "call.remote"
                && v.len > 0
                && (2 * PAGE as i64..3 * PAGE as i64).contains(&off)
            {
                return Err(PlanError::new(
                    format!("{side}[{}].base", v.group),
                    format!("`{}`: a remote iovec starting in the [vvar] rng page (vvar+2*page) is not modelled: whether it is mapped depends on libc's use of the vDSO getrandom", v.label(groups)),
                ));
            }
            if entry == Entry::Compat {
                return Err(PlanError::new(
                    format!("{side}[{}].base", v.group),
                    format!(
                        "the {} of a 64-bit process lies above 4 GiB: a compat case cannot name it",
                        s.name()
                    ),
                ));
            }
            if s == Special::Uprobes
                && (side == "call.local" || case.target.kind != TargetKind::Child)
            {
                return Err(PlanError::new(
                    format!("{side}[{}].base", v.group),
                    format!("`{}`: the [uprobes] area is a `child` target's own (the caller has none: VM_DONTCOPY); name it in call.remote of a `child` target", v.label(groups)),
                ));
            }
            if side == "call.local" && s != Special::Vdso && case.call.syscall == Syscall::Writev {
                return Err(PlanError::new(
                    format!("{side}[{}].base", v.group),
                    format!("reading the {} as a local source is not modelled (its contents change and which of its pages fault depends on the clock source)", s.name()),
                ));
            }
            if !specials.contains(&s) {
                specials.push(s);
                if !requires.features.contains(&s.feature()) {
                    requires.features.push(s.feature());
                }
            }
        }
    }
    if entry == Entry::Compat {
        for (side, list, groups) in [
            ("call.local", &local, &local_groups),
            ("call.remote", &remote, &remote_groups),
        ] {
            for v in list {
                if v.base > u32::MAX as u64 || v.len > u32::MAX as u64 {
                    return Err(PlanError::new(
                        format!("{side}[{}]", v.group),
                        format!("`{}`: a compat iovec holds 32-bit base and length; use addresses and lengths below 2^32", v.label(groups)),
                    ));
                }
            }
        }
    }
    let liovcnt = match &call.liovcnt {
        Some(n) => num("call.liovcnt", n)?,
        None => local.len() as u64,
    };
    let riovcnt = match &call.riovcnt {
        Some(n) => num("call.riovcnt", n)?,
        None => remote.len() as u64,
    };
    let flags = match &call.flags {
        Some(n) => num("call.flags", n)?,
        None => 0,
    };
    if entry == Entry::Compat {
        for (f, v) in [
            ("call.liovcnt", liovcnt),
            ("call.riovcnt", riovcnt),
            ("call.flags", flags),
        ] {
            if v > u32::MAX as u64 {
                return Err(PlanError::new(
                    f,
                    "the compat entry passes 32-bit registers; use a value below 2^32",
                ));
            }
        }
    }

    // The arrays go after the caller's guard page.
    let mut cursor = cguard + PAGE;
    let mut arrays = Vec::new();
    let lvec_img = place_array(&mut cursor, "lvec", encode_iovs(&local, entry));
    let rvec_img = place_array(&mut cursor, "rvec", encode_iovs(&remote, entry));
    let (cbase, cspan) = side_bases(entry, Side::Caller);
    if cursor > cbase + cspan {
        return Err(PlanError::new(
            "call",
            "the iovec arrays do not fit in the caller's address space",
        ));
    }
    let lvec = match &call.lvec {
        Some(e) => resolve_addr(e, &caller_regions, chole, cguard, "call.lvec")?,
        None => lvec_img.addr,
    };
    let rvec = match &call.rvec {
        Some(e) => resolve_addr(e, &caller_regions, chole, cguard, "call.rvec")?,
        None => rvec_img.addr,
    };
    for (f, v) in [("call.lvec", lvec), ("call.rvec", rvec)] {
        // int 0x80 passes the low 32 bits of each register (sys::call_compat): a larger
        // pointer would reach the kernel as another address than the one the model judges.
        if entry == Entry::Compat && v > u32::MAX as u64 {
            return Err(PlanError::new(
                f,
                "the compat entry passes 32-bit registers; use an array address below 2^32",
            ));
        }
        if Special::of_placeholder(v).is_some() {
            return Err(PlanError::new(
                f,
                "an iovec array in the vdso or vvar is not modelled (the model never reads their contents)",
            ));
        }
    }
    if call.lvec.is_none() {
        arrays.push(lvec_img);
    }
    if call.rvec.is_none() {
        arrays.push(rvec_img);
    }

    let target_creds = case
        .target
        .creds
        .as_ref()
        .map(|c| creds("target.creds", c))
        .transpose()?;
    let caller_creds = case
        .caller
        .creds
        .as_ref()
        .map(|c| creds("caller.creds", c))
        .transpose()?;
    let target_kind = case.target.kind;
    let shares_mm = matches!(
        target_kind,
        TargetKind::SelfProcess | TargetKind::Thread | TargetKind::CloneVm
    );
    if shares_mm && target_creds.is_some() {
        return Err(PlanError::new(
            "target.creds",
            "a self/thread/clone_vm target shares the caller's credentials; set caller.creds instead",
        ));
    }
    if shares_mm && case.target.dumpable.is_some() {
        return Err(PlanError::new(
            "target.dumpable",
            "a self/thread/clone_vm target shares the caller's mm; drop this field",
        ));
    }
    if target_kind != TargetKind::Child
        && (case.target.ptracer.is_some() || case.target.parent != TargetParent::Harness)
    {
        return Err(PlanError::new(
            if case.target.ptracer.is_some() {
                "target.ptracer"
            } else {
                "target.parent"
            },
            "`ptracer` and `parent` apply to a `child` target only",
        ));
    }
    if case.target.ptracer.is_some()
        && requires.yama_scope.is_none()
        && !requires.features.contains(&Feature::Yama)
    {
        return Err(PlanError::new(
            "target.ptracer",
            "PR_SET_PTRACER needs Yama: add `yama_scope: N` or `features: [yama]`",
        ));
    }
    for (side, specs) in [
        ("target.regions", &case.target.regions),
        ("caller.regions", &case.caller.regions),
    ] {
        for (i, r) in specs.iter().enumerate().filter(|(_, r)| r.pkey.is_some()) {
            if r.kind != RegionKind::Anon {
                return Err(PlanError::new(
                    format!("{side}[{i}].pkey"),
                    "a protection key goes on an `anon` region",
                ));
            }
            // An exec-only mapping already carries the kernel's execute-only key
            // (arch/x86/mm/pkeys.c execute_only_pkey).
            if r.prot == Prot::Xo {
                return Err(PlanError::new(
                    format!("{side}[{i}].pkey"),
                    "an `xo` region already has the kernel's execute-only key; pick another prot",
                ));
            }
            if !requires.features.contains(&Feature::Pkeys) {
                return Err(PlanError::new(
                    "requires.features",
                    "a region with a `pkey` needs `features: [pkeys]`",
                ));
            }
        }
    }
    for (kind, feature, what) in [
        (RegionKind::Secretmem, Feature::Secretmem, "secretmem"),
        (RegionKind::Guarded, Feature::GuardPages, "guard_pages"),
        (RegionKind::Sealed, Feature::Mseal, "mseal"),
        (RegionKind::Hugetlb, Feature::Hugetlb, "hugetlb"),
        (RegionKind::AioRing, Feature::Aio, "aio"),
        (RegionKind::IoUringSqRing, Feature::IoUring, "io_uring"),
        (RegionKind::IoUringCqRing, Feature::IoUring, "io_uring"),
        (RegionKind::IoUringSqes, Feature::IoUring, "io_uring"),
        (RegionKind::UffdSigbus, Feature::Userfaultfd, "userfaultfd"),
        (RegionKind::Uffd, Feature::Userfaultfd, "userfaultfd"),
        (RegionKind::UffdWp, Feature::Userfaultfd, "userfaultfd"),
    ] {
        let used = case
            .target
            .regions
            .iter()
            .chain(&case.caller.regions)
            .any(|r| r.kind == kind);
        if used && !requires.features.contains(&feature) {
            return Err(PlanError::new(
                "requires.features",
                format!("a {what} region needs `features: [{what}]`"),
            ));
        }
    }
    // The target registers its own userfaultfd regions (and runs the handler thread), so
    // they belong to a forked target, read-write.
    for (side, regions) in [
        ("target.regions", &target_regions),
        ("caller.regions", &caller_regions),
    ] {
        for (i, r) in regions.iter().enumerate().filter(|(_, r)| r.is_uffd()) {
            if side == "caller.regions" || target_kind != TargetKind::Child {
                return Err(PlanError::new(
                    format!("{side}[{i}].kind"),
                    "userfaultfd regions belong to a `child` target",
                ));
            }
            if r.prot != Prot::Rw {
                return Err(PlanError::new(
                    format!("{side}[{i}].prot"),
                    "userfaultfd regions are `rw`",
                ));
            }
        }
    }
    // The target creates its AIO context itself (the ring belongs to its mm), once.
    for (side, regions) in [
        ("target.regions", &target_regions),
        ("caller.regions", &caller_regions),
    ] {
        for (i, r) in regions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == RegionKind::AioRing)
        {
            if side == "caller.regions" || target_kind != TargetKind::Child {
                return Err(PlanError::new(
                    format!("{side}[{i}].kind"),
                    "an aio_ring region belongs to a `child` target",
                ));
            }
            if r.prot != Prot::Rw || r.fill != Fill::Pattern {
                return Err(PlanError::new(
                    format!("{side}[{i}]"),
                    "an aio_ring is `rw` and filled by the kernel: drop `prot` and `fill`",
                ));
            }
        }
        if regions
            .iter()
            .filter(|r| r.kind == RegionKind::AioRing)
            .count()
            > 1
        {
            return Err(PlanError::new(side, "at most one aio_ring region"));
        }
    }
    // The target creates one io_uring instance (entries = 1) and maps each kind once; every
    // mapping of it is one page (the rings: `struct io_rings`, two CQEs and the SQ array; the
    // SQEs: one 64-byte entry).
    for (side, regions) in [
        ("target.regions", &target_regions),
        ("caller.regions", &caller_regions),
    ] {
        for (i, r) in regions.iter().enumerate().filter(|(_, r)| r.is_io_uring()) {
            let name = serde_json::to_value(r.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            if side == "caller.regions" || target_kind != TargetKind::Child {
                return Err(PlanError::new(
                    format!("{side}[{i}].kind"),
                    format!("an {name} region belongs to a `child` target"),
                ));
            }
            if r.prot != Prot::Rw || r.fill != Fill::Pattern || r.pkey.is_some() {
                return Err(PlanError::new(
                    format!("{side}[{i}]"),
                    format!("an {name} region is `rw` and filled by the kernel: drop `prot`, `fill` and `pkey`"),
                ));
            }
            if r.len != PAGE {
                return Err(PlanError::new(
                    format!("{side}[{i}].pages"),
                    format!("an {name} region is one page (the harness makes a one-entry ring)"),
                ));
            }
            if regions[..i].iter().any(|o| o.kind == r.kind) {
                return Err(PlanError::new(
                    format!("{side}[{i}].kind"),
                    format!("at most one {name} region"),
                ));
            }
        }
    }
    // A case that uses a feature declares it, so an unmet one is a skip with its reason.
    let need = |used: bool, f: Feature, what: &str, name: &str| {
        if used && !requires.features.contains(&f) {
            return Err(PlanError::new(
                "requires.features",
                format!("{what} needs `features: [{name}]`"),
            ));
        }
        Ok(())
    };
    need(
        target_kind == TargetKind::Kthread,
        Feature::Kthreadd,
        "a kthread target",
        "kthreadd",
    )?;
    need(
        case.caller.pidns,
        Feature::Pidns,
        "a caller in a new PID namespace",
        "pidns",
    )?;
    // kernel/fork.c copy_process: a namespace's init (SIGNAL_UNKILLABLE) may not create
    // siblings with CLONE_PARENT, which is how a clone_vm target is made.
    if case.caller.pidns && target_kind == TargetKind::CloneVm {
        return Err(PlanError::new(
            "caller.pidns",
            "a clone_vm target needs CLONE_PARENT, which a PID namespace's init may not use (copy_process); pick another target kind",
        ));
    }
    need(
        case.caller.userns || case.target.userns,
        Feature::Userns,
        "a user namespace",
        "userns",
    )?;
    // kernel/fork.c check_unshare_flags: CLONE_NEWUSER implies CLONE_THREAD, which a
    // process with a second thread may not unshare (EINVAL).
    if case.caller.userns && target_kind == TargetKind::Thread {
        return Err(PlanError::new(
            "caller.userns",
            "a caller with a thread target is multi-threaded, and unshare(CLONE_NEWUSER) refuses that (check_unshare_flags); pick another target kind",
        ));
    }
    if case.target.userns && target_kind != TargetKind::Child {
        return Err(PlanError::new(
            "target.userns",
            "only a `child` target unshares a user namespace; for the caller use `caller.userns`",
        ));
    }
    need(
        target_kind == TargetKind::PidnsChild,
        Feature::Pidns,
        "a pidns_child target",
        "pidns",
    )?;
    let needs_thp = case
        .target
        .regions
        .iter()
        .chain(&case.caller.regions)
        .any(|r| r.kind == RegionKind::Thp);
    need(needs_thp, Feature::Thp, "a thp region", "thp")?;
    let needs_memfd = case
        .target
        .regions
        .iter()
        .chain(&case.caller.regions)
        .any(|r| matches!(r.kind, RegionKind::MemfdPrivate | RegionKind::MemfdShared));
    need(needs_memfd, Feature::Memfd, "a memfd region", "memfd")?;

    let expect = match &case.expect {
        None => None,
        Some(e) => {
            if e.why.trim().is_empty() {
                return Err(PlanError::new(
                    "expect.why",
                    "a pinned expectation must say why (cite the kernel or man page)",
                ));
            }
            let result = match &e.result {
                NumOrName::U(n) => Expected::Count(*n),
                NumOrName::S(s) if s.starts_with('E') => {
                    Expected::Errno(crate::errno::from_name(s).ok_or_else(|| {
                        PlanError::new(
                            "expect.result",
                            format!(
                                "unknown errno name `{s}` (known: {})",
                                crate::errno::known_names().join(", ")
                            ),
                        )
                    })?)
                }
                NumOrName::S(s) => Expected::Count(
                    crate::expr::eval(s).map_err(|m| PlanError::new("expect.result", m))?,
                ),
            };
            if let Some(d) = &e.decided_by {
                if !crate::model::STEPS.contains(&d.as_str()) {
                    return Err(PlanError::new(
                        "expect.decided_by",
                        format!(
                            "unknown step `{d}` (known: {})",
                            crate::model::STEPS.join(", ")
                        ),
                    ));
                }
            }
            Some(Expect {
                result,
                decided_by: e.decided_by.clone(),
                why: e.why.clone(),
            })
        }
    };

    Ok(Plan {
        id: id.to_string(),
        path: path.to_string(),
        description: case.description.trim().to_string(),
        requires,
        target_kind,
        target_regions,
        target_creds,
        target_dumpable: case.target.dumpable.unwrap_or(true),
        target_ptracer: case.target.ptracer,
        target_parent: case.target.parent,
        caller_regions,
        caller_creds,
        caller_pidns: case.caller.pidns,
        caller_userns: case.caller.userns,
        target_userns: case.target.userns,
        arrays,
        landmarks: vec![
            ("hole", thole),
            ("guard", tguard),
            ("caller hole", chole),
            ("caller guard", cguard),
        ],
        stack_windows,
        call: Call {
            syscall: call.syscall,
            entry,
            local,
            remote,
            local_groups,
            remote_groups,
            liovcnt,
            riovcnt,
            flags,
            lvec,
            rvec,
            lvec_label: call.lvec.clone(),
            rvec_label: call.rvec.clone(),
        },
        expect,
        specials,
        special_regions: Vec::new(),
        race: None,
        windows: reserved_ranges(entry, X86_64_TASK_SIZE),
        unplaceable: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UML_TOP: u64 = 0x7f_c000_0000;

    fn plan(yaml: &str) -> Plan {
        crate::runner::load_str("t.yaml", "t/t", yaml).unwrap()
    }

    fn facts_with_top(top: u64) -> Facts {
        Facts {
            task_size_max: top,
            ..Facts::example((6, 1, 0))
        }
    }

    /// The catalogue under User-mode Linux's 511 GiB: every case keeps its meaning but those
    /// whose addresses need x86-64's larger space.
    #[test]
    fn the_catalogue_fits_a_small_address_space() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
        let (plans, bad) = crate::runner::load_all(&[dir], &mut |_| {}).unwrap();
        assert_eq!(bad, 0);
        let uml = facts_with_top(UML_TOP);
        let mut lost: Vec<String> = plans
            .iter()
            .filter(|p| p.bind(&uml).unplaceable.is_some())
            .map(|p| p.id.clone())
            .collect();
        lost.sort();
        assert_eq!(lost, UNPLACEABLE_IN_UML, "{lost:#?}");
        let x86 = facts_with_top(X86_64_TASK_SIZE);
        assert!(plans.iter().all(|p| p.bind(&x86).unplaceable.is_none()));
    }

    /// Both pin that `buf + 2^40` is still below TASK_SIZE_MAX (access_ok passes).
    const UNPLACEABLE_IN_UML: &[&str] = &[
        "max_rw/huge_local_total_small_remote",
        "max_rw/single_huge_iovec_local_fault",
    ];

    #[test]
    fn windows_fit_the_address_space() {
        let default = [
            (NATIVE_TARGET_BASE, NATIVE_SPAN),
            (NATIVE_CALLER_BASE, NATIVE_SPAN),
        ];
        assert_eq!(native_windows(X86_64_TASK_SIZE), default);
        assert_eq!(native_windows(0x00ff_ffff_ffff_f000), default);
        let [(tb, ts), (cb, cs)] = native_windows(UML_TOP);
        assert_eq!((tb, ts, cb, cs), (63 << 30, 63 << 30, 189 << 30, 63 << 30));
        // A small fake top: 2 MiB alignment, still inside and disjoint.
        let [(tb, ts), (cb, cs)] = native_windows(1 << 30);
        assert_eq!((tb % THP_ALIGN, ts, cb), (0, 128 << 20, 384 << 20));
        assert!(tb + ts <= cb && cb + cs <= 1 << 30);
        // Compat layouts never move.
        assert_eq!(
            reserved_ranges(Entry::Compat, UML_TOP),
            reserved_ranges(Entry::Compat, X86_64_TASK_SIZE)
        );
    }

    const GROWS: &str = "description: d\nrequires: {features: [thp]}\ntarget:\n  regions: [{name: low, pages: 2}, {name: stack, kind: growsdown, pages: 4, at: 600}]\ncaller:\n  regions: [{name: buf, pages: 2, kind: thp, at: 1}, {name: out, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 4096}, {base: out+8, len: 8}]\n  remote: [{base: stack-4096, len: 4096}, {base: low+4096, len: 16}]\n";

    #[test]
    fn layouts_move_below_a_small_top_keeping_offsets() {
        let p = plan(GROWS);
        let small = facts_with_top(UML_TOP);
        let b = p.bind(&small).into_owned();
        assert_eq!(b.unplaceable, None);
        assert_eq!(b.windows, native_windows(UML_TOP));
        let [(tb, _), (cb, _)] = b.windows;
        let [(otb, _), (ocb, _)] = p.windows;
        for (o, n) in p.target_regions.iter().zip(&b.target_regions) {
            assert_eq!(n.start - tb, o.start - otb, "{}", n.name);
        }
        for (o, n) in p.caller_regions.iter().zip(&b.caller_regions) {
            assert_eq!(n.start - cb, o.start - ocb, "{}", n.name);
            assert!(n.end() < UML_TOP);
        }
        // THP alignment survives the move.
        assert_eq!(b.region(Side::Caller, "buf").unwrap().start % THP_ALIGN, 0);
        assert_eq!(
            b.stack_windows[0].start - tb,
            p.stack_windows[0].start - otb
        );
        assert_eq!(
            b.call.remote[0].base,
            b.region(Side::Target, "stack").unwrap().start - PAGE
        );
        assert_eq!(
            b.call.local[1].base,
            b.region(Side::Caller, "out").unwrap().start + 8
        );
        // The arrays hold the moved bases, and the call points at them.
        let lvec = b.arrays.iter().find(|a| a.name == "lvec").unwrap();
        assert_eq!(b.call.lvec, lvec.addr);
        assert_eq!(lvec.bytes, encode_iovs(&b.call.local, Entry::Native));
        assert!(lvec.addr > cb && lvec.addr < cb + (1 << 30));
        for (name, v) in &b.landmarks {
            assert!(*v < UML_TOP, "{name}");
        }
        // Binding again changes nothing; on a 47-bit system nothing moves at all.
        assert_eq!(*b.bind(&small), b);
        assert!(matches!(
            p.bind(&facts_with_top(X86_64_TASK_SIZE)),
            Cow::Borrowed(_)
        ));
        // The model gives the same answer in both address spaces.
        let x86 = facts_with_top(X86_64_TASK_SIZE);
        let (a, z) = (
            crate::model::predict(&p, &x86),
            crate::model::predict(&p, &small),
        );
        assert_eq!((a.result, a.decided_by), (z.result, z.decided_by));
    }

    #[test]
    fn an_offset_the_small_space_cannot_hold_is_unplaceable() {
        // 1 TiB past `data`: inside the 8 TiB target range of x86-64, beyond UML's 63 GiB.
        let far = plan("description: d\ntarget:\n  regions: [{name: data, pages: 1}]\ncaller:\n  regions: [{name: buf, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 8}]\n  remote: [{base: data+0x10000000000, len: 8}]\n");
        let b = far.bind(&facts_with_top(UML_TOP)).into_owned();
        let why = b.unplaceable.clone().expect("unplaceable");
        assert!(why.contains("call.remote `data+0x10000000000`"), "{why}");
        assert!(why.contains("0x7fc0000000"), "{why}");
        let reason = crate::check::unmet_here(&b, &facts_with_top(UML_TOP))
            .unwrap()
            .reason;
        assert!(
            reason.starts_with("needs an address this system cannot map"),
            "{reason}"
        );
        // A user address outside both ranges that lies above the small top.
        let high = plan("description: d\ntarget:\n  regions: [{name: data, pages: 1}]\ncaller:\n  regions: [{name: buf, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 8}]\n  remote: [{base: data-0x100000000000, len: 8}]\n");
        let why = high.bind(&facts_with_top(UML_TOP)).into_owned().unplaceable;
        assert!(why.is_some_and(|w| w.contains("above this system's top")));
        // A range that ends inside user space on x86-64 but beyond it here (1 TiB long).
        let long = plan("description: d\ntarget:\n  regions: [{name: data, pages: 1}]\ncaller:\n  regions: [{name: buf, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 0x10000000000}]\n  remote: [{base: data, len: 8}]\n");
        let why = long.bind(&facts_with_top(UML_TOP)).into_owned().unplaceable;
        assert!(
            why.is_some_and(|w| w.contains("call.local `buf` ends 0x10000000000 bytes further"))
        );
        // `kernel` stays `kernel`: not a user address anywhere.
        let k = plan(&GROWS.replace("base: low+4096", "base: kernel"));
        let b = k.bind(&facts_with_top(UML_TOP)).into_owned();
        assert_eq!(b.unplaceable, None);
        assert_eq!(b.call.remote[1].base, KERNEL);
    }
}
