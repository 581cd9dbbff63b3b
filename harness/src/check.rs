//! Judging a case: requirements (skip), the model's prediction against a pinned expectation,
//! and the kernel's result and every byte against the model.

use crate::caps::{CapSet, Credentials, Ids};
use crate::case::RegionKind;
use crate::case::{Feature, Syscall};
use crate::exec::{Dump, Observed};
use crate::facts::Facts;
use crate::model::{self, Prediction};
use crate::plan::{Expected, Plan, Region, Side};

/// What decided that a case cannot run: the kernel, or this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipBy {
    /// The kernel's series or build (`min_kernel`, `max_kernel`, a syscall or mapping the
    /// kernel has or lacks): the same wherever that kernel runs, so a per-series snapshot
    /// records it.
    Kernel,
    /// Who runs the harness (root, capabilities, a PID namespace, unprivileged userfaultfd,
    /// credentials that change the pinned outcome) or how the host is set up (Yama, its scope,
    /// huge pages, THP, a container's PID namespace, the architecture). Another user or host
    /// with the same kernel runs the case, so a snapshot never records such a skip.
    Machine,
}

/// Why a case cannot run here and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub reason: String,
    pub by: SkipBy,
    /// Set when the system lacks what the case needs (a feature, a set-up step, an address),
    /// as opposed to a case written for other kernel versions or another Yama scope.
    pub unsupported: Option<Unsupported>,
}

/// Why a skipped case could not run, for a conformance report that counts what a kernel or
/// runtime lacks apart from its divergences (`"unsupported"` in the JSON results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsupported {
    /// The call under test gave ENOSYS.
    NotImplemented,
    /// A feature, a set-up step or an address the case needs is missing here.
    Feature,
}

/// Why a case cannot run here, or `None` when it can.
pub fn unmet_requirement(plan: &Plan, facts: &Facts) -> Option<String> {
    unmet(plan, facts, true).map(|u| u.reason)
}

/// [`unmet_requirement`] with what decided it. The kernel's requirements are checked before
/// the machine's, so a case the kernel excludes gives the same reason for every user and host.
pub fn unmet_here(plan: &Plan, facts: &Facts) -> Option<Unmet> {
    unmet(plan, facts, true)
}

/// Why the model cannot judge the case's pin on this machine (a kernel series or feature the
/// case excludes), or `None`. Unlike [`unmet_requirement`] it ignores what depends on who
/// runs the harness (root, capabilities, a PID namespace, unprivileged userfaultfd) and the
/// Yama scope, which the pin fixes itself ([`check_pin`]): `pvmtest check` gives the same
/// verdict for every user.
pub fn unmet_for_pin(plan: &Plan, facts: &Facts) -> Option<String> {
    unmet(plan, facts, false).map(|u| u.reason)
}

/// `harness`: also the requirements on the harness's privileges and the Yama scope.
fn unmet(plan: &Plan, facts: &Facts, harness: bool) -> Option<Unmet> {
    let r = &plan.requires;
    let kernel = |reason: String| {
        Some(Unmet {
            reason,
            by: SkipBy::Kernel,
            unsupported: None,
        })
    };
    let lacks = |reason: String| {
        Some(Unmet {
            reason,
            by: SkipBy::Kernel,
            unsupported: Some(Unsupported::Feature),
        })
    };
    let machine = |reason: String| {
        Some(Unmet {
            reason,
            by: SkipBy::Machine,
            unsupported: None,
        })
    };
    if facts.page_size != crate::expr::PAGE {
        return lacks(format!(
            "needs {} KiB pages (every layout is written in them), this system has {} KiB",
            crate::expr::PAGE / 1024,
            facts.page_size / 1024
        ));
    }
    if let Some(why) = &plan.unplaceable {
        return lacks(format!("needs {why}"));
    }
    let v = (facts.version.0, facts.version.1);
    if let Some(min) = r.min_kernel {
        if v < min {
            return kernel(format!(
                "needs kernel >= {}.{}, this is {}.{}",
                min.0, min.1, v.0, v.1
            ));
        }
    }
    if let Some(max) = r.max_kernel {
        if v > max {
            return kernel(format!(
                "needs kernel <= {}.{}, this is {}.{}",
                max.0, max.1, v.0, v.1
            ));
        }
    }
    // Who runs the harness decides pidns and userfaultfd; a pin fixes the Yama state itself.
    // Neither counts for a pin, whichever of kernel and machine decides it here.
    let unmet_features = || {
        r.features
            .iter()
            .filter(|f| {
                harness || !matches!(f, Feature::Pidns | Feature::Userfaultfd | Feature::Yama)
            })
            .map(|f| (f, feature(*f, plan, facts)))
            .filter(|(_, (ok, _))| !ok)
    };
    if let Some((_, (_, what))) =
        unmet_features().find(|(f, _)| feature_by(**f, facts) == SkipBy::Kernel)
    {
        return lacks(format!("needs {what}"));
    }
    if harness && r.root && !facts.is_root() {
        return machine("needs root (run as uid 0)".into());
    }
    for (name, bit) in &r.caps {
        if harness && !facts.creds.effective.has(*bit) {
            return machine(format!("needs {name}"));
        }
    }
    if let Some(want) = r.yama_scope.filter(|_| harness) {
        match facts.yama_scope {
            None => return machine("needs the Yama LSM".into()),
            Some(have) if have != want => {
                return machine(format!("needs Yama ptrace_scope {want}, this is {have}"))
            }
            Some(_) => {}
        }
    }
    if let Some(a) = &r.arch {
        if *a != facts.arch {
            return machine(format!("needs arch {a}"));
        }
    }
    if let Some((_, (_, what))) = unmet_features().next() {
        return machine(format!("needs {what}"));
    }
    None
}

/// Whether the feature holds here, and what it is.
fn feature(f: Feature, plan: &Plan, facts: &Facts) -> (bool, &'static str) {
    match f {
        Feature::Compat => (
            facts.compat,
            if facts.int80 == crate::sys::Int80::Table64 {
                "the int 0x80 compat entry (here int 0x80 runs the 64-bit syscall table: there is no compat entry)"
            } else {
                "the int 0x80 compat entry (CONFIG_IA32_EMULATION)"
            },
        ),
        Feature::Thp => (facts.thp, "transparent huge pages"),
        Feature::Memfd => (facts.memfd, "memfd_create"),
        Feature::Yama => (facts.yama_scope.is_some(), "the Yama LSM"),
        Feature::Pidns => (facts.pidns, "CAP_SYS_ADMIN to create a PID namespace"),
        Feature::Userns => (
            facts.userns,
            "unprivileged user namespaces (user.max_user_namespaces > 0; Debian's kernel.unprivileged_userns_clone = 1)",
        ),
        Feature::Kthreadd => (
            facts.kthreadd,
            "pid 2 to be kthreadd (not in a PID namespace)",
        ),
        Feature::Secretmem => (
            facts.secretmem,
            "memfd_secret (5.14+, CONFIG_SECRETMEM; 6.1 also needs secretmem.enable=1)",
        ),
        Feature::GuardPages => (facts.guard_pages, "MADV_GUARD_INSTALL (6.13+)"),
        Feature::Mseal => (facts.mseal, "mseal (6.10+)"),
        Feature::Aio if facts.aio && !aio_rings_fit(plan, facts) => (
            false,
            "io_setup to make a Linux [aio] ring of the case's size (32-byte header, 32 + 32 x events bytes, the events rounded up by the possible CPUs; fs/aio.c aio_setup_ring)",
        ),
        Feature::Aio => (
            facts.aio,
            "io_setup (CONFIG_AIO, and room under fs.aio-max-nr)",
        ),
        Feature::IoUring => (
            facts.io_uring,
            "io_uring_setup (CONFIG_IO_URING, and kernel.io_uring_disabled = 0, or 1 with the harness in kernel.io_uring_group)",
        ),
        Feature::Uprobes => (
            facts.uprobes,
            "a target-made [uprobes] area (root with CAP_SYS_ADMIN, and the uprobe perf PMU: CONFIG_UPROBE_EVENTS)",
        ),
        Feature::Pkeys => (
            facts.pku,
            "memory protection keys (a CPU with PKU, enabled by the kernel: pku and ospke in /proc/cpuinfo)",
        ),
        Feature::Hugetlb => (
            facts.hugepages_free >= plan.hugetlb_pages(),
            "free hugetlb pages (HugePages_Free in /proc/meminfo; set vm.nr_hugepages)",
        ),
        Feature::VsyscallXonly => (
            facts.vsyscall != crate::facts::Vsyscall::Emulate,
            "vsyscall=xonly or none (this kernel emulates the vsyscall page, whose contents are not modelled)",
        ),
        Feature::Userfaultfd => (
            facts.userfaultfd,
            "userfaultfd with UFFD_FEATURE_SIGBUS (CONFIG_USERFAULTFD; without root also vm.unprivileged_userfaultfd=1)",
        ),
        Feature::Vdso => (facts.vdso.is_some(), "a [vdso] mapping"),
        Feature::Vvar => (facts.vvar.is_some(), "a [vvar] mapping"),
        Feature::VvarVclock => (
            facts.vvar_vclock.is_some(),
            "a [vvar_vclock] mapping (the generic vDSO datastore, newer than 6.12)",
        ),
    }
}

/// Every `aio_ring` region of the plan has the length of the ring io_setup makes here.
fn aio_rings_fit(plan: &Plan, facts: &Facts) -> bool {
    plan.target_regions
        .iter()
        .chain(&plan.caller_regions)
        .filter(|r| r.kind == crate::case::RegionKind::AioRing)
        .all(|r| r.len == facts.aio_ring_len)
}

/// What decides whether a missing feature is missing: the kernel's series and build (boot
/// options of the kernel included: the matrix boots each series the same way), or the
/// machine — a sysctl, sysfs or the pool of huge pages, a container, who runs the harness.
/// userfaultfd is the kernel's as root (CONFIG_USERFAULTFD), the machine's otherwise
/// (vm.unprivileged_userfaultfd).
fn feature_by(f: Feature, facts: &Facts) -> SkipBy {
    match f {
        Feature::Compat
        | Feature::Memfd
        | Feature::Secretmem
        | Feature::GuardPages
        | Feature::Mseal
        | Feature::Aio
        | Feature::IoUring
        | Feature::VsyscallXonly
        | Feature::Vdso
        | Feature::Vvar
        | Feature::VvarVclock => SkipBy::Kernel,
        Feature::Userfaultfd | Feature::Uprobes if facts.is_root() => SkipBy::Kernel,
        Feature::Thp
        | Feature::Yama
        | Feature::Pidns
        | Feature::Pkeys
        | Feature::Userns
        | Feature::Kthreadd
        | Feature::Hugetlb
        | Feature::Uprobes
        | Feature::Userfaultfd => SkipBy::Machine,
    }
}

/// The harness a pin describes: root with every capability when the case requires root
/// (declared, or implied by `creds`), otherwise an unprivileged user holding only the
/// capabilities `requires.caps` names.
///
/// Why fixed, and why these two: a pin is a statement about the case, so whether it holds must
/// not depend on who runs `pvmtest`. The declared requirements say who may run it; the pin is
/// checked for the least privileged harness they admit. A case that admits an unprivileged
/// harness is also run by root, so the loader ([`pin_depends_on_harness`]) refuses a pinned
/// case whose outcome differs between the two unless it declares `requires.root`; then the
/// only harness it admits is root, and the pin describes root with the capability sets
/// `sudo` and the kernel-matrix guests give.
pub fn pin_harness(plan: &Plan) -> Credentials {
    if plan.requires.root {
        root_harness()
    } else {
        unprivileged_harness(plan)
    }
}

/// uid 0 with every capability.
pub fn root_harness() -> Credentials {
    Credentials {
        ids: Ids::default(),
        permitted: CapSet::all(),
        effective: CapSet::all(),
    }
}

/// The ids of the unprivileged harness a pin is checked for: `nobody`, as sandboxed CI runs.
/// Any non-zero value gives the same answers: without `creds` the caller and the target both
/// carry the harness's ids, and `creds` imply root.
pub const UNPRIVILEGED_ID: u32 = 65534;

/// A non-root harness with no capabilities but those the case requires.
pub fn unprivileged_harness(plan: &Plan) -> Credentials {
    let caps = CapSet(plan.requires.caps.iter().fold(0, |a, (_, b)| a | 1u64 << b));
    let id = UNPRIVILEGED_ID;
    Credentials {
        ids: Ids {
            uid: id,
            euid: id,
            suid: id,
            gid: id,
            egid: id,
            sgid: id,
        },
        permitted: caps,
        effective: caps,
    }
}

/// The facts a pin is judged under: this machine's, with the harness of [`pin_harness`] and
/// the Yama state the case declares. Unless the case declares `requires.yama_scope`, Yama is
/// taken as absent (Debian's default scope 0 behaves the same): a kernel whose Yama restricts
/// the caller (an upstream build defaults to scope 1) is still compared with the model under
/// its real scope when the case runs; only the pin, which is about something else, ignores
/// it. `yama/` cases declare their scope and pin what Yama does at it.
fn pin_facts(plan: &Plan, facts: &Facts, creds: Credentials) -> Facts {
    Facts {
        creds,
        yama_scope: plan.requires.yama_scope,
        ..facts.clone()
    }
}

/// Checks a pinned `expect` against the model; `Err` explains the disagreement. The verdict
/// depends on the case and the machine's kernel, never on who runs the harness (see
/// [`pin_harness`] and [`pin_facts`]).
pub fn check_pin(plan: &Plan, facts: &Facts) -> Result<(), String> {
    if plan.expect.is_none() {
        return Ok(());
    }
    let f = pin_facts(plan, facts, pin_harness(plan));
    check_pin_against(plan, &model::predict(plan, &f))
}

/// Why this harness cannot check the case's pin, or `None` when it can: the pin holds for the
/// harness it describes ([`check_pin`]), but the model gives another outcome for the
/// credentials this harness has (root in a container without CAP_SYS_PTRACE, a user holding
/// file capabilities). Such a run would test another scenario than the case states, so it is
/// a skip, never a pin failure.
pub fn pin_not_checkable_here(plan: &Plan, facts: &Facts) -> Option<String> {
    let e = plan.expect.as_ref()?;
    let want = pin_harness(plan);
    if facts.creds == want {
        return None;
    }
    let pred = model::predict(plan, &pin_facts(plan, facts, facts.creds));
    check_pin_against(plan, &pred).err()?;
    Some(format!(
        "the pin ({}) describes a harness running as {}; as {} the model predicts {pred}",
        e.result,
        describe_harness(&want),
        describe_harness(&facts.creds),
    ))
}

/// A pinned case whose outcome depends on whether root or an unprivileged user runs the
/// harness must declare `requires.root`, or its pin would hold for one and not the other.
/// Checked at load time, on the model alone: the permission step (`__ptrace_may_access`,
/// model `check_target`) is the same on every kernel series, so any series the case admits
/// shows the dependence: the case's `min_kernel` is used (else its `max_kernel`, else 6.12)
/// with a typical machine's other facts. `Err` is the one-line message with the fix.
pub fn pin_depends_on_harness(plan: &Plan) -> Result<(), String> {
    let Some(e) = &plan.expect else { return Ok(()) };
    if plan.requires.root {
        return Ok(());
    }
    let v = plan.requires.min_kernel.or(plan.requires.max_kernel);
    let machine = Facts::example(v.map_or((6, 12, 0), |(a, b)| (a, b, 0)));
    let root = model::predict(plan, &pin_facts(plan, &machine, root_harness()));
    let unpriv = model::predict(plan, &pin_facts(plan, &machine, unprivileged_harness(plan)));
    if (root.result, root.decided_by) == (unpriv.result, unpriv.decided_by) {
        return Ok(());
    }
    let fix = if check_pin_against(plan, &unpriv).is_ok() {
        "give the caller `creds:` with the ids the pin assumes (creds imply `requires: {root: true}`)"
    } else {
        "add `requires: {root: true}` (the pin then describes a root harness)"
    };
    Err(format!(
        "the outcome depends on who runs the harness (as root the model predicts {root}, as an unprivileged user {unpriv}) but the case pins {} without `requires: {{root: true}}`: {fix}",
        e.result,
    ))
}

/// `root with every capability`, `uid 65534 with no capabilities`, `root without
/// CAP_SYS_PTRACE, CAP_SYS_ADMIN`: whichever of the held or the missing set is shorter.
pub fn describe_harness(c: &Credentials) -> String {
    let who = if c.ids.euid == 0 {
        "root".to_string()
    } else {
        format!("uid {}", c.ids.euid)
    };
    let held = c.effective.names();
    let missing = CapSet::all().without(c.effective).names();
    let caps = if missing.is_empty() {
        "with every capability".to_string()
    } else if held.is_empty() {
        "with no capabilities".to_string()
    } else if missing.len() < held.len() {
        format!("without {}", missing.join(", "))
    } else {
        format!("with {}", held.join(", "))
    };
    format!("{who} {caps}")
}

fn check_pin_against(plan: &Plan, pred: &Prediction) -> Result<(), String> {
    let Some(e) = &plan.expect else { return Ok(()) };
    let matches = match (e.result, pred.result) {
        (Expected::Count(n), Ok(m)) => n == m,
        (Expected::Errno(a), Err(b)) => a == b,
        _ => false,
    };
    let step_ok = e.decided_by.as_deref().is_none_or(|d| d == pred.decided_by);
    if matches && step_ok {
        return Ok(());
    }
    Err(format!(
        "the case pins {}{}, the model predicts {pred} (the pin's why: {})",
        e.result,
        e.decided_by
            .as_deref()
            .map(|d| format!(" (decided_by {d})"))
            .unwrap_or_default(),
        e.why.trim()
    ))
}

/// Contents of source bytes `[addr, addr+len)` on `side`, from the initial layout. Bytes of a
/// special mapping (`mappings`, the vdso) are external: the model never knows them, so they
/// are read here from the harness's own mapping, which every target and caller shares
/// (forks of the harness; the vdso text is the same kernel image page in every process).
///
/// Bytes of a live mapping (`[vvar]`, `[vvar_vclock]`: clock data the kernel rewrites at every
/// tick) are `None`, not checked: only the count and the bytes around the copy are. (Comparing
/// the bytes that were equal in the harness's own snapshots before and after the call was
/// tried and is racy: on a HZ=1000 kernel a byte can change and change back in between.)
fn source_bytes(
    plan: &Plan,
    mappings: &[Region],
    io_rings: crate::pattern::IoRingsLayout,
    side: Side,
    addr: u64,
    len: u64,
    out: &mut Vec<Option<u8>>,
) {
    let regions: Vec<&Region> = if plan.target_shares_caller_mm() {
        plan.target_regions
            .iter()
            .chain(&plan.caller_regions)
            .collect()
    } else {
        plan.regions(side).iter().collect()
    };
    // Pages a stack expansion added read as zero (the windows are `fill: untouched`).
    let regions: Vec<&Region> = regions
        .into_iter()
        .chain(plan.stack_windows.iter())
        .collect();
    let mut a = addr;
    while a < addr + len {
        if let Some(m) = mappings.iter().find(|r| a >= r.start && a < r.end()) {
            let stop = (addr + len).min(m.end());
            if matches!(m.kind, RegionKind::Vvar | RegionKind::VvarVclock) {
                out.extend(std::iter::repeat_n(None, (stop - a) as usize));
            } else {
                match crate::sys::own_memory(a, stop - a) {
                    Some(bytes) => out.extend(bytes.into_iter().map(Some)),
                    None => out.extend(std::iter::repeat_n(Some(0xEE), (stop - a) as usize)),
                }
            }
            a = stop;
            continue;
        }
        // The iovec arrays' pages are caller memory too (readable and writable): a local
        // iovec may point into them, and so may a remote one when the target shares the
        // caller's mm. Their bytes are the encoded array at its address, zero before it.
        let array = (side == Side::Caller || plan.target_shares_caller_mm())
            .then(|| {
                plan.arrays
                    .iter()
                    .find(|m| a >= m.map_start && a < m.map_start + m.map_len)
            })
            .flatten();
        if let Some(img) = array {
            let stop = (addr + len).min(img.map_start + img.map_len);
            out.extend((a..stop).map(|x| {
                let byte = x
                    .checked_sub(img.addr)
                    .and_then(|o| img.bytes.get(o as usize).copied());
                Some(byte.unwrap_or(0))
            }));
            a = stop;
            continue;
        }
        match regions.iter().find(|r| a >= r.start && a < r.end()) {
            Some(r) => {
                let stop = (addr + len).min(r.end());
                region_bytes(r, a - r.start, stop - r.start, io_rings, out);
                a = stop;
            }
            None => {
                // The model never copies from unmapped memory; mark it so a bug shows up.
                out.push(Some(0xEE));
                a += 1;
            }
        }
    }
}

/// Bytes `[from, to)` of region `r` as the model has them ([`model::byte_in`]), a whole
/// pattern run at a time: byte by byte, a 4 MiB case spent most of its checking time here,
/// which under TCG is a large part of the case.
fn region_bytes(
    r: &Region,
    from: u64,
    to: u64,
    io_rings: crate::pattern::IoRingsLayout,
    out: &mut Vec<Option<u8>>,
) {
    if r.kind == RegionKind::AioRing || r.kind.is_io_uring() {
        out.extend((from..to).map(|o| Some(model::byte_in(r, o, io_rings))));
        return;
    }
    let pattern_end = match (r.fill, r.file_size) {
        (crate::case::Fill::Pattern, Some(fs)) => fs.clamp(from, to),
        (crate::case::Fill::Pattern, None) => to,
        _ => from,
    };
    let mut run = vec![0u8; (pattern_end - from) as usize];
    crate::pattern::fill(&mut run, r.tag, from);
    out.extend(run.into_iter().map(Some));
    out.extend(std::iter::repeat_n(Some(0), (to - pattern_end) as usize));
}

/// Subtracts the covered intervals from `[a, b)`; returns the uncovered pieces and records
/// `[a, b)` as covered. `covered` stays sorted, disjoint and merged, so each call costs a
/// binary search plus the intervals it touches (a case may have 4,096 copies).
fn uncovered(covered: &mut Vec<(u64, u64)>, a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut pieces = Vec::new();
    // The first interval that ends at or after `a` (touching intervals merge).
    let first = covered.partition_point(|&(_, e)| e < a);
    let mut last = first;
    let mut cur = a;
    let (mut lo, mut hi) = (a, b);
    while last < covered.len() && covered[last].0 <= b {
        let (s, e) = covered[last];
        if s > cur && cur < b {
            pieces.push((cur, s.min(b)));
        }
        cur = cur.max(e);
        lo = lo.min(s);
        hi = hi.max(e);
        last += 1;
    }
    if cur < b {
        pieces.push((cur, b));
    }
    covered.splice(first..last, std::iter::once((lo, hi)));
    pieces
}

/// The model's final contents of a region: the initial bytes with every copy applied in
/// order (computed backwards so that bytes overwritten later are never materialised), and
/// which bytes are checked (all but those copied from a live mapping, see [`source_bytes`]).
///
/// When the target shares the caller's mm and a copy reads bytes some copy of the same call
/// writes, the copies are replayed in Linux's order instead ([`in_copy_order`]).
pub fn expected_memory(plan: &Plan, pred: &Prediction, region: &Region) -> (Vec<u8>, Vec<bool>) {
    let mut mem = crate::pattern::initial_in(region, pred.io_rings);
    let mut checked = vec![true; mem.len()];
    let write = plan.call.syscall == Syscall::Writev;
    let dst_side = if write { Side::Target } else { Side::Caller };
    // With a self/thread/clone_vm target both sides are one address space: an address on
    // either side can land in any region.
    let reachable = region.side == dst_side || plan.target_shares_caller_mm();
    if !reachable || pred.result.is_err() {
        return (mem, checked);
    }
    if plan.target_shares_caller_mm() && sources_meet_destinations(pred, write) {
        return in_copy_order(plan, pred, region);
    }
    let (rs, re) = (region.start, region.start + region.backed_len());
    let mut covered = Vec::new();
    for c in pred.copies.iter().rev() {
        let (src, dst) = src_dst(c, write);
        let (a, b) = (dst.max(rs), (dst + c.len).min(re));
        if a >= b {
            continue;
        }
        for (pa, pb) in uncovered(&mut covered, a, b) {
            let mut bytes = Vec::with_capacity((pb - pa) as usize);
            let src_side = if write { Side::Caller } else { Side::Target };
            source_bytes(
                plan,
                &pred.mappings,
                pred.io_rings,
                src_side,
                src + (pa - dst),
                pb - pa,
                &mut bytes,
            );
            let at = (pa - rs) as usize;
            for (k, b) in bytes.into_iter().enumerate() {
                mem[at + k] = b.unwrap_or(0);
                checked[at + k] = b.is_some();
            }
        }
    }
    (mem, checked)
}

/// `(source, destination)` of a copy: readv copies remote to local, writev local to remote.
fn src_dst(c: &model::Copy, write: bool) -> (u64, u64) {
    if write {
        (c.local, c.remote)
    } else {
        (c.remote, c.local)
    }
}

/// Whether some copy's source range meets some copy's destination range (one address space:
/// a self/thread/clone_vm target). Otherwise every source byte is read before anything in the
/// call writes it, and the initial layout gives it.
fn sources_meet_destinations(pred: &Prediction, write: bool) -> bool {
    // The destinations as sorted, merged intervals (`uncovered` keeps them so).
    let mut merged = Vec::new();
    for c in &pred.copies {
        let (_, d) = src_dst(c, write);
        uncovered(&mut merged, d, d.saturating_add(c.len));
    }
    pred.copies.iter().any(|c| {
        let (s, _) = src_dst(c, write);
        let e = s.saturating_add(c.len);
        // The first merged interval that ends after `s`.
        let i = merged.partition_point(|&(_, b)| b <= s);
        merged.get(i).is_some_and(|&(a, _)| a < e)
    })
}

/// Whether a page read-pinned by a readv is the page a later write through the caller's
/// page tables lands in, so that a copy from it sees that write: private anonymous memory the
/// process has written (its pages are present and exclusive: the pin takes a reference and a
/// user write needs no fault), and shared file mappings (the page cache page is both). Not
/// for a never-written page (a read pin may take the shared zero page, and the write then
/// faults in a new one), nor a private file page (the write copies it on write; the pin keeps
/// the page cache page), nor anything else.
fn read_pin_sees_writes(plan: &Plan, addr: u64) -> bool {
    if plan
        .arrays
        .iter()
        .any(|m| addr >= m.map_start && addr < m.map_start + m.map_len)
    {
        return true;
    }
    let r = plan
        .target_regions
        .iter()
        .chain(&plan.caller_regions)
        .find(|r| addr >= r.start && addr < r.end());
    r.is_some_and(|r| {
        r.is_shared_file()
            || (matches!(
                r.kind,
                RegionKind::Anon
                    | RegionKind::Thp
                    | RegionKind::Growsdown
                    | RegionKind::Sealed
                    | RegionKind::Hugetlb
            ) && r.fill == crate::case::Fill::Pattern)
    })
}

/// The address space of a self/thread/clone_vm call as Linux's copy loop leaves it
/// (docs/SEMANTICS.md, "Overlapping copies in one address space"): every copy is cut at the
/// remote page boundaries (`process_vm_rw_pages` copies one pinned page at a time, in
/// ascending order, each into or out of the local iterator's segments in order) and the
/// pieces are applied in that order, each reading memory as the earlier pieces left it. So a
/// self-read of `{r, 3 pages}` into `{r + page, 3 pages}` copies page 0 to page 1, then that
/// (now page 0's bytes) to page 2, and so on, where `memmove` would shift the region.
///
/// Bytes the source does not decide are unchecked (`false` in the second vector): a piece
/// whose source and destination overlap without being equal (inside one page copy the copy
/// routine's chunking decides what is read after being written), and, for a readv, bytes read
/// from a pinned page that an earlier piece wrote through the page tables when the pin need
/// not be the page that write went to ([`read_pin_sees_writes`]).
fn in_copy_order(plan: &Plan, pred: &Prediction, region: &Region) -> (Vec<u8>, Vec<bool>) {
    use crate::expr::PAGE;
    use std::collections::BTreeMap;
    let write = plan.call.syscall == Syscall::Writev;
    // The pages some piece wrote, as they are now; every other byte is the initial layout's.
    let mut pages: BTreeMap<u64, Vec<Option<u8>>> = BTreeMap::new();
    let initial = |a: u64, len: u64, out: &mut Vec<Option<u8>>| {
        source_bytes(
            plan,
            &pred.mappings,
            pred.io_rings,
            Side::Target,
            a,
            len,
            out,
        )
    };
    for c in &pred.copies {
        let (src, dst) = src_dst(c, write);
        let mut done = 0u64;
        while done < c.len {
            // The remote page this piece is in bounds it.
            let remote = c.remote + done;
            let n = (PAGE - remote % PAGE).min(c.len - done);
            let (s, d) = (src + done, dst + done);
            let mut bytes = Vec::with_capacity(n as usize);
            let mut a = s;
            while a < s + n {
                let p = a - a % PAGE;
                let stop = (s + n).min(p + PAGE);
                match pages.get(&p) {
                    Some(pg) => {
                        let sees = write || read_pin_sees_writes(plan, p);
                        let range = &pg[(a - p) as usize..(stop - p) as usize];
                        bytes.extend(range.iter().map(|b| b.filter(|_| sees)));
                    }
                    None => initial(a, stop - a, &mut bytes),
                }
                a = stop;
            }
            if s != d && s < d + n && d < s + n {
                bytes.iter_mut().for_each(|b| *b = None);
            }
            for (a, b) in (d..).zip(bytes) {
                let p = a - a % PAGE;
                let pg = pages.entry(p).or_insert_with(|| {
                    let mut v = Vec::with_capacity(PAGE as usize);
                    initial(p, PAGE, &mut v);
                    v
                });
                pg[(a - p) as usize] = b;
            }
            done += n;
        }
    }
    let mut mem = crate::pattern::initial_in(region, pred.io_rings);
    let mut checked = vec![true; mem.len()];
    let (rs, re) = (region.start, region.start + region.backed_len());
    for (&p, pg) in pages.range(rs - rs % PAGE..re) {
        for (k, b) in pg.iter().enumerate() {
            let a = p + k as u64;
            if a >= rs && a < re {
                let i = (a - rs) as usize;
                mem[i] = b.unwrap_or(0);
                checked[i] = b.is_some();
            }
        }
    }
    (mem, checked)
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    first_diff_masked(a, b, None)
}

/// The first differing byte and how many differ, ignoring bytes `checked` marks false.
fn first_diff_masked(a: &[u8], b: &[u8], checked: Option<&[bool]>) -> Option<(usize, usize)> {
    // Equal bytes differ nowhere, masked or not: one memcmp for the common case.
    if a == b {
        return None;
    }
    let is_checked = |i: usize| checked.is_none_or(|c| c.get(i).copied().unwrap_or(true));
    let differs = |(i, (x, y)): (usize, (&u8, &u8))| x != y && is_checked(i);
    let first = a.iter().zip(b).enumerate().position(differs)?;
    let count = a.iter().zip(b).enumerate().filter(|&p| differs(p)).count();
    Some((first, count))
}

/// Compares the kernel's result and bytes with the model. `Err` describes the first
/// difference.
pub fn compare(plan: &Plan, pred: &Prediction, obs: &Observed) -> Result<(), String> {
    if obs.result != pred.result {
        return Err(format!(
            "result differs: kernel {}, model {pred}",
            result_string(obs.result)
        ));
    }
    let all: Vec<&Region> = plan
        .target_regions
        .iter()
        .chain(&plan.caller_regions)
        .collect();
    for d in &obs.dumps {
        let Some(region) = plan.region(d.side, &d.name) else {
            continue;
        };
        let (want, checked) = expected_memory(plan, pred, region);
        if d.memory.len() != want.len() {
            return Err(format!(
                "{} region {}: got {} bytes back, expected {}",
                side_name(d.side),
                d.name,
                d.memory.len(),
                want.len()
            ));
        }
        if let Some((at, count)) = first_diff_masked(&d.memory, &want, Some(&checked)) {
            return Err(describe_diff(d, "memory", at, count, &want, &all));
        }
        if let Some(file) = &d.file {
            let want_file = expected_file(region, &want);
            if let Some((at, count)) = first_diff(file, &want_file) {
                return Err(describe_diff(d, "file", at, count, &want_file, &all));
            }
            if file.len() != want_file.len() {
                return Err(format!(
                    "{} region {}: file is {} bytes, expected {}",
                    side_name(d.side),
                    d.name,
                    file.len(),
                    want_file.len()
                ));
            }
        }
    }
    Ok(())
}

/// A MAP_SHARED mapping writes through to the file; a MAP_PRIVATE one never does.
fn expected_file(region: &Region, memory: &[u8]) -> Vec<u8> {
    let size = region.file_size.unwrap_or(0) as usize;
    if region.is_shared_file() {
        let mut f = crate::pattern::initial_file(region);
        let n = size.min(memory.len());
        f[..n].copy_from_slice(&memory[..n]);
        f
    } else {
        crate::pattern::initial_file(region)
    }
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Target => "target",
        Side::Caller => "caller",
    }
}

fn describe_diff(
    d: &Dump,
    what: &str,
    at: usize,
    count: usize,
    want: &[u8],
    all: &[&Region],
) -> String {
    let got = if what == "file" {
        d.file.as_deref().unwrap_or(&[])
    } else {
        &d.memory
    };
    let looks = crate::pattern::describe(got, at, all)
        .map(|s| format!(" (looks like {s})"))
        .unwrap_or_default();
    let should = crate::pattern::describe(want, at, all)
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    format!(
        "{} region {} {what} byte {at}: kernel left {:#04x}{looks}, model expects {:#04x}{should}; {}",
        side_name(d.side),
        d.name,
        got[at],
        want[at],
        crate::words::count_usize(count, "byte differs", "bytes differ"),
    )
}

pub fn result_string(r: Result<u64, i32>) -> String {
    match r {
        Ok(n) => n.to_string(),
        Err(e) => crate::errno::name(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::load_str;

    /// A writev into a non-dumpable target with the caller's ids: only CAP_SYS_PTRACE lets
    /// it through (`__ptrace_may_access`), so root gets 4096 and anyone else EPERM.
    fn nondumpable(requires: &str, pin: &str) -> String {
        format!(
            "description: t\n{requires}target:\n  regions: [{{name: data, pages: 1}}]\n  dumpable: false\ncaller:\n  regions: [{{name: buf, pages: 1}}]\ncall:\n  syscall: writev\n  local: [{{base: buf, len: page}}]\n  remote: [{{base: data, len: page}}]\nexpect:\n  result: {pin}\n  why: w\n"
        )
    }

    fn unprivileged_facts() -> Facts {
        let mut f = Facts::example((6, 12, 0));
        f.creds.ids = Ids {
            uid: 1000,
            euid: 1000,
            suid: 1000,
            gid: 1000,
            egid: 1000,
            sgid: 1000,
        };
        f.creds.permitted = CapSet(0);
        f.creds.effective = CapSet(0);
        f
    }

    /// The run-at-a-time region bytes are `byte_in`'s, byte for byte: pattern and untouched
    /// fills, with and without a file size (inside the range, before it, after it), at
    /// unaligned offsets.
    #[test]
    fn region_bytes_are_byte_in() {
        use crate::case::{Fill, Prot};
        let rings = crate::pattern::IoRingsLayout::Packed;
        for (fill, file_size) in [
            (Fill::Pattern, None),
            (Fill::Untouched, None),
            (Fill::Pattern, Some(5000)),
            (Fill::Pattern, Some(3)),
            (Fill::Pattern, Some(9000)),
        ] {
            let r = Region {
                name: "r".into(),
                side: Side::Target,
                tag: 0x13,
                start: 0x10000,
                len: 3 * 4096,
                prot: Prot::Rw,
                kind: if file_size.is_some() {
                    RegionKind::FilePrivate
                } else {
                    RegionKind::Anon
                },
                file_size,
                fill,
                pkey: None,
            };
            for (from, to) in [(0, 3 * 4096), (5, 4999), (4997, 5003), (6001, 6002), (7, 7)] {
                let mut got = Vec::new();
                region_bytes(&r, from, to, rings, &mut got);
                let want: Vec<Option<u8>> = (from..to)
                    .map(|o| Some(model::byte_in(&r, o, rings)))
                    .collect();
                assert_eq!(got, want, "{fill:?} {file_size:?} [{from}, {to})");
            }
        }
    }

    /// What a runtime lacks is a skip marked unsupported, with the reason its probe found;
    /// a version gate is not.
    #[test]
    fn runtime_lacks_are_unsupported() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
        let compat = crate::runner::load(&dir.join("compat/basic_readv.yaml")).unwrap();
        let mut f = Facts::example((6, 12, 0));
        f.compat = false;
        f.int80 = crate::sys::Int80::Table64;
        let u = unmet_here(&compat, &f).unwrap();
        assert!(
            u.reason.contains("int 0x80 runs the 64-bit syscall table"),
            "{}",
            u.reason
        );
        assert_eq!(u.unsupported, Some(Unsupported::Feature));
        f.int80 = crate::sys::Int80::Absent;
        let u = unmet_here(&compat, &f).unwrap();
        assert!(
            u.reason.ends_with("(CONFIG_IA32_EMULATION)"),
            "{}",
            u.reason
        );
        // 64 KiB pages: nothing runs.
        let mut f = Facts::example((6, 12, 0));
        f.page_size = 65536;
        let u = unmet_here(&compat, &f).unwrap();
        assert!(u.reason.starts_with("needs 4 KiB pages"), "{}", u.reason);
        // A version gate is a skip, not something the system lacks.
        let gated =
            crate::runner::load(&dir.join("einval/local_negative_then_unreadable_6_4.yaml"))
                .unwrap();
        let u = unmet_here(&gated, &Facts::example((6, 1, 0))).unwrap();
        assert_eq!(u.unsupported, None);
        // An [aio] ring that is not Linux's (gVisor): the aio cases skip.
        let aio = crate::runner::load(&dir.join("special/aio_ring_readv.yaml")).unwrap();
        let mut f = Facts::example((6, 12, 0));
        assert!(unmet_here(&aio, &f).is_none());
        f.aio_ring_len = 0;
        let u = unmet_here(&aio, &f).unwrap();
        assert!(u.reason.contains("Linux [aio] ring"), "{}", u.reason);
    }

    #[test]
    fn root_only_pin_needs_declared_root() {
        let e = load_str("t.yaml", "t", &nondumpable("", "4096")).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert_eq!(
            e.message,
            "expect: the outcome depends on who runs the harness (as root the model predicts 4096 (complete), as an unprivileged user EPERM (perm_dumpable: target is not dumpable)) but the case pins 4096 without `requires: {root: true}`: add `requires: {root: true}` (the pin then describes a root harness)"
        );
        assert_eq!(e.to_string().lines().count(), 1);
        let plan = load_str(
            "t.yaml",
            "t",
            &nondumpable("requires: {root: true}\n", "4096"),
        )
        .expect("valid with the requirement");
        // Judged for root, whoever checks it.
        let root = Facts::example((6, 12, 0));
        assert_eq!(check_pin(&plan, &root), Ok(()));
        assert_eq!(check_pin(&plan, &unprivileged_facts()), Ok(()));
        assert_eq!(pin_not_checkable_here(&plan, &root), None);
    }

    #[test]
    fn unprivileged_only_pin_is_refused_too() {
        let e = load_str("t.yaml", "t", &nondumpable("", "EPERM")).unwrap_err();
        assert!(
            e.message
                .contains("but the case pins EPERM without `requires: {root: true}`: give the caller `creds:`"),
            "{e}"
        );
        // Without a pin nothing is refused: the kernel is compared with the model for
        // whoever runs it.
        let unpinned = nondumpable("", "EPERM");
        let unpinned = &unpinned[..unpinned.find("expect:").unwrap()];
        assert!(load_str("t.yaml", "t", unpinned).is_ok());
    }

    /// A pin that holds for every harness stays valid, and is judged the same for root and
    /// for an unprivileged user.
    #[test]
    fn pin_for_every_harness() {
        let y = nondumpable("", "4096").replace("  dumpable: false\n", "");
        let plan = load_str("t.yaml", "t", &y).expect("valid");
        assert_eq!(pin_harness(&plan).ids.euid, UNPRIVILEGED_ID);
        for f in [Facts::example((6, 12, 0)), unprivileged_facts()] {
            assert_eq!(check_pin(&plan, &f), Ok(()));
            assert_eq!(pin_not_checkable_here(&plan, &f), None);
        }
        let wrong = load_str("t.yaml", "t", &y.replace("result: 4096", "result: 4095")).unwrap();
        let e = check_pin(&wrong, &unprivileged_facts()).unwrap_err();
        assert_eq!(Err(e), check_pin(&wrong, &Facts::example((6, 12, 0))));
    }

    /// Root without CAP_SYS_PTRACE (a container) cannot check a pin that describes root with
    /// every capability: a skip that says so, not a failure.
    #[test]
    fn root_without_ptrace_skips_a_root_pin() {
        let plan = load_str(
            "t.yaml",
            "t",
            &nondumpable("requires: {root: true}\n", "4096"),
        )
        .unwrap();
        let mut f = Facts::example((6, 12, 0));
        let ptrace = CapSet(1 << crate::caps::SYS_PTRACE);
        f.creds.effective = f.creds.effective.without(ptrace);
        f.creds.permitted = f.creds.permitted.without(ptrace);
        assert_eq!(unmet_requirement(&plan, &f), None);
        assert_eq!(check_pin(&plan, &f), Ok(()));
        assert_eq!(
            pin_not_checkable_here(&plan, &f).as_deref(),
            Some("the pin (4096) describes a harness running as root with every capability; as root without CAP_SYS_PTRACE the model predicts EPERM (perm_dumpable: target is not dumpable)")
        );
    }

    /// A case the kernel excludes skips with the kernel's reason whoever runs it, so the
    /// snapshot of that series records it; only what the machine decides (root, Yama, huge
    /// pages, unprivileged userfaultfd) is a machine skip.
    #[test]
    fn skips_say_whether_the_kernel_or_the_machine_decided() {
        let case = |requires: &str| {
            let y = nondumpable(&format!("requires: {requires}\n"), "4096");
            let y = &y[..y.find("expect:").unwrap()];
            load_str("t.yaml", "t", y).unwrap()
        };
        let root = Facts::example((6, 12, 0));
        let nobody = unprivileged_facts();
        let at = |plan: &Plan, f: &Facts| unmet_here(plan, f).map(|u| (u.by, u.reason));
        let k = |r: &str| Some((SkipBy::Kernel, r.to_string()));
        let m = |r: &str| Some((SkipBy::Machine, r.to_string()));

        let p = case("{root: true, min_kernel: \"6.13\"}");
        for f in [&root, &nobody] {
            assert_eq!(at(&p, f), k("needs kernel >= 6.13, this is 6.12"));
        }
        let p = case("{root: true}");
        assert_eq!(at(&p, &root), None);
        assert_eq!(at(&p, &nobody), m("needs root (run as uid 0)"));

        // A kernel feature is checked before a machine one, whatever the declared order.
        let p = case("{features: [yama, hugetlb, mseal]}");
        let mut bare = root.clone();
        bare.yama_scope = None;
        bare.hugepages_free = 0;
        assert_eq!(at(&p, &bare), m("needs the Yama LSM"));
        bare.mseal = false;
        assert_eq!(at(&p, &bare), k("needs mseal (6.10+)"));
        let p = case("{features: [hugetlb]}");
        bare.mseal = true;
        assert_eq!(
            at(&p, &bare).map(|x| x.0),
            Some(SkipBy::Machine),
            "huge pages are the host's pool"
        );

        // userfaultfd: the kernel's build for root, a sysctl for anyone else.
        let p = case("{features: [userfaultfd]}");
        let (mut r, mut n) = (root.clone(), nobody.clone());
        r.userfaultfd = false;
        n.userfaultfd = false;
        assert_eq!(at(&p, &r).map(|x| x.0), Some(SkipBy::Kernel));
        assert_eq!(at(&p, &n).map(|x| x.0), Some(SkipBy::Machine));
        // Neither stops `pvmtest check` judging a pin, for root or anyone else.
        assert_eq!(unmet_for_pin(&p, &r), None);
        assert_eq!(unmet_for_pin(&p, &n), None);
    }

    /// A self-read or self-write of a 4-page region into itself shifted by one page: Linux
    /// copies page by page in ascending order through one address space, so the forward
    /// shift spreads page 0 over every page (memmove would give pages 0, 0, 1, 2) and the
    /// backward shift is the memmove shift (pages 1, 2, 3, 3). Every byte is checked.
    #[test]
    fn overlapping_self_copies_follow_linux_order() {
        let page = crate::expr::PAGE as usize;
        for (syscall, forward, local, remote) in [
            ("readv", true, "r+page", "r"),
            ("readv", false, "r", "r+page"),
            ("writev", true, "r", "r+page"),
            ("writev", false, "r+page", "r"),
        ] {
            let y = format!(
                "description: t\ntarget:\n  kind: self\n  regions: [{{name: r, pages: 4}}]\ncaller:\n  regions: [{{name: buf, pages: 1}}]\ncall:\n  syscall: {syscall}\n  local: [{{base: {local}, len: 3*page}}]\n  remote: [{{base: {remote}, len: 3*page}}]\n"
            );
            let plan = load_str("t.yaml", "t", &y).unwrap();
            let pred = model::predict(&plan, &Facts::example((6, 12, 0)));
            assert_eq!(pred.result, Ok(3 * page as u64), "{syscall}");
            let r = plan.region(Side::Target, "r").unwrap();
            let init = crate::pattern::initial_in(r, pred.io_rings);
            let (mem, checked) = expected_memory(&plan, &pred, r);
            assert!(checked.iter().all(|&c| c), "{syscall}");
            let pages: Vec<usize> = if forward {
                vec![0, 0, 0, 0]
            } else {
                vec![1, 2, 3, 3]
            };
            for (i, src) in pages.into_iter().enumerate() {
                assert_eq!(
                    mem[i * page..(i + 1) * page],
                    init[src * page..(src + 1) * page],
                    "{syscall} forward={forward}: page {i} should hold page {src}"
                );
            }
            if forward {
                // Not what memmove gives: page 2 would hold page 1.
                assert_ne!(mem[2 * page..3 * page], init[page..2 * page]);
            }
        }
    }

    /// A piece whose source and destination overlap inside one page copy (a shift by less
    /// than a page) is not decided by the source: the copy routine's chunking is. Those
    /// destination bytes are unchecked; the rest of the region is.
    #[test]
    fn overlap_inside_one_page_copy_is_unchecked() {
        let y = "description: t\ntarget:\n  kind: self\n  regions: [{name: r, pages: 2}]\ncaller:\n  regions: [{name: buf, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: r+8, len: 100}]\n  remote: [{base: r, len: 100}]\n";
        let plan = load_str("t.yaml", "t", y).unwrap();
        let pred = model::predict(&plan, &Facts::example((6, 12, 0)));
        let r = plan.region(Side::Target, "r").unwrap();
        let (_, checked) = expected_memory(&plan, &pred, r);
        assert!(checked[..8].iter().all(|&c| c));
        assert!(checked[8..108].iter().all(|&c| !c));
        assert!(checked[108..].iter().all(|&c| c));
    }

    /// `uncovered` against a bitmap over small intervals, in pseudo-random orders.
    #[test]
    fn uncovered_matches_a_bitmap() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..500 {
            let mut covered = Vec::new();
            let mut bits = [false; 64];
            for _ in 0..(1 + next(12)) {
                let a = next(60);
                let b = a + 1 + next(64 - a);
                let got = uncovered(&mut covered, a, b);
                let mut want = Vec::new();
                let mut i = a;
                while i < b {
                    if bits[i as usize] {
                        i += 1;
                        continue;
                    }
                    let s = i;
                    while i < b && !bits[i as usize] {
                        i += 1;
                    }
                    want.push((s, i));
                }
                assert_eq!(got, want, "[{a}, {b}) after {covered:?}");
                (a..b).for_each(|k| bits[k as usize] = true);
                let mut expect = Vec::new();
                let mut k = 0;
                while k < 64 {
                    if !bits[k] {
                        k += 1;
                        continue;
                    }
                    let s = k;
                    while k < 64 && bits[k] {
                        k += 1;
                    }
                    expect.push((s as u64, k as u64));
                }
                // Touching intervals merge, so the list equals the bitmap's runs.
                assert_eq!(covered, expect);
            }
        }
    }
}
