//! Concurrency: the outcomes the kernel allows when a target thread changes the target while
//! a call is in flight (docs/SEMANTICS.md, "Concurrency"), and what a case's `race:` section
//! means (docs/CASES.md, "Races"). Pure, like [`crate::model`], and built on it: every allowed
//! outcome is the model's prediction for a layout the transfer can have seen.
//!
//! Why that set (mm/process_vm_access.c, mm/gup.c, 5.10 to 7.3): `process_vm_rw_single_vec`
//! pins the remote pages in batches of up to `PVM_MAX_USER_PAGES` (1024) with
//! `pin_user_pages_remote` under `mmap_read_lock`, then copies from the pinned pages with the
//! lock released. munmap and mprotect take `mmap_write_lock`, so each lands between two pins:
//! between batches, or between two pages of a batch when GUP had to drop the lock to fault a
//! page in (`__get_user_pages_locked` retries the rest one page at a time with FOLL_TRIED).
//! Pages are pinned in ascending order, so the transfer sees the pages of the changed region
//! below some page boundary as they were and the rest as they became: for a region of `n`
//! pages, one of the `n + 1` layouts "first `k` pages old, the rest new". Pinned pages stay
//! valid after a munmap, so every byte moved is an old byte. A write by the target is not
//! serialised with anything: the count is unaffected and each byte moved is the old or the
//! new value (copies are plain memcpy, no atomicity across bytes). An exit: `mm_access` takes
//! a reference on the mm (`get_task_mm`), which keeps every mapping alive to the end of the
//! call, so the call either found no mm (ESRCH: after `exit_mm`, or the pid already gone) or
//! completes as if nothing happened. A thread's exit is the same, with the mm shared with the
//! rest of the group: the TID's task is found until `release_task` unhashes it and has an mm
//! until its `exit_mm`; either miss is ESRCH, and otherwise nothing the call touches changes.

use crate::case::{
    Entry, Prot, RaceActionSpec, RaceSpec, RegionKind, Syscall, TargetKind, TargetParent,
};
use crate::expr::PAGE;
use crate::facts::Facts;
use crate::model::{predict, Prediction};
use crate::plan::{Plan, PlanError, Region, Side};
use std::collections::BTreeMap;

/// Runs per race case unless it says otherwise.
pub const DEFAULT_RUNS: u32 = 40;
/// The most a case may ask for: a race case must stay a few seconds under QEMU's TCG.
pub const MAX_RUNS: u32 = 1000;
/// The largest region a racer may munmap or mprotect: [`allowed`] predicts each of its page
/// boundaries, and `explain` and the fuzzed loader must stay quick.
pub const MAX_RACED_PAGES: u64 = 4096;
/// The byte a racing `write` stores over its region. Never byte 0 of a pattern word (those
/// are multiples of 8), so a torn copy is visible in every word it touches.
pub const NEW_BYTE: u8 = 0xa5;

/// What the racing target thread does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Racer {
    Munmap {
        region: String,
    },
    Mprotect {
        region: String,
        prot: Prot,
    },
    /// The target writes [`NEW_BYTE`] over the region (it must be writable).
    Write {
        region: String,
    },
    /// The target process exits.
    Exit,
    /// The call names a thread of the target by its TID, and that thread exits.
    ThreadExit,
}

impl Racer {
    /// The target region acted on, if any.
    pub fn region(&self) -> Option<&str> {
        match self {
            Racer::Munmap { region } | Racer::Mprotect { region, .. } | Racer::Write { region } => {
                Some(region)
            }
            Racer::Exit | Racer::ThreadExit => None,
        }
    }

    /// `munmap data`, `mprotect data none`, `exit`.
    pub fn describe(&self) -> String {
        match self {
            Racer::Munmap { region } => format!("munmap {region}"),
            Racer::Mprotect { region, prot } => format!("mprotect {region} {}", prot.name()),
            Racer::Write { region } => format!("write {region}"),
            Racer::Exit => "exit".into(),
            Racer::ThreadExit => "thread_exit".into(),
        }
    }
}

/// A validated `race:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Race {
    pub racer: Racer,
    pub runs: u32,
}

/// Validates a case's `race:` section against its plan: everything the race executor (a
/// persistent [`crate::exec::evolving::Evolving`] target and a persistent
/// [`crate::exec::evolving::Caller`]) cannot reproduce is refused here, before anything
/// forks.
pub fn resolve(spec: &RaceSpec, plan: &Plan) -> Result<Race, PlanError> {
    let action = spec.action.name();
    let runs = spec.runs.unwrap_or(DEFAULT_RUNS as u64);
    if runs == 0 || runs > MAX_RUNS as u64 {
        return Err(err(
            "race.runs",
            format!("{runs} runs: use 1 to {MAX_RUNS} (default {DEFAULT_RUNS})"),
        ));
    }
    let declared = || {
        let names: Vec<&str> = plan
            .target_regions
            .iter()
            .filter(|r| !r.is_hole())
            .map(|r| r.name.as_str())
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let needs_region = matches!(
        spec.action,
        RaceActionSpec::Munmap | RaceActionSpec::Mprotect | RaceActionSpec::Write
    );
    let region = match (&spec.region, needs_region) {
        (None, true) => {
            return Err(err(
                "race.region",
                format!(
                    "`{action}` acts on a target region: add `region: NAME` (declared: {})",
                    declared()
                ),
            ))
        }
        (Some(_), false) => {
            return Err(err(
                "race.region",
                format!("`{action}` acts on no region; drop `region`"),
            ))
        }
        (None, false) => None,
        (Some(name), true) => {
            let r = plan.region(Side::Target, name).ok_or_else(|| {
                err(
                    "race.region",
                    format!(
                        "`{name}` is not a declared target region (declared: {})",
                        declared()
                    ),
                )
            })?;
            if r.len / PAGE > MAX_RACED_PAGES {
                return Err(err(
                    "race.region",
                    format!(
                        "`{name}` has {} pages; a raced region has at most {MAX_RACED_PAGES} (the allowed set holds one prediction per page boundary)",
                        r.len / PAGE
                    ),
                ));
            }
            if r.is_hole() {
                return Err(err(
                    "race.region",
                    format!("`{name}` is a hole (unmapped): name a mapped region"),
                ));
            }
            Some(r)
        }
    };
    match (spec.action, spec.prot) {
        (RaceActionSpec::Mprotect, None) => {
            return Err(err(
                "race.prot",
                "`mprotect` needs the new protection, e.g. `prot: none`",
            ))
        }
        (RaceActionSpec::Mprotect, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(err(
                "race.prot",
                format!("only `mprotect` takes a protection, not `{action}`; drop `prot`"),
            ))
        }
    }
    if let (RaceActionSpec::Write, Some(r)) = (spec.action, region) {
        if !matches!(r.prot, Prot::Rw | Prot::Wo | Prot::Rwx) {
            return Err(err(
                "race.region",
                format!(
                    "the racer writes `{}` with memset, which needs it writable (rw, wo or rwx), not {}",
                    r.name,
                    r.prot.name()
                ),
            ));
        }
    }
    // What the race executor builds: a forked `child` target of anonymous regions with the
    // harness's credentials, and a forked (persistent) caller making the native call.
    if plan.specials.contains(&crate::plan::Special::Uprobes) {
        return Err(err(
            "call.remote",
            "a race target does not make a [uprobes] area; `uprobes` is for plain cases"
                .to_string(),
        ));
    }
    if plan.target_kind != TargetKind::Child {
        return Err(err(
            "target.kind",
            format!(
                "a race runs against a `child` target, not `{}` (for a thread, use `action: thread_exit`)",
                plan.target_kind.name()
            ),
        ));
    }
    for (i, r) in plan.target_regions.iter().enumerate() {
        // An [aio] ring is made once per target (io_setup), so only a race that ends the
        // target takes one: the next run starts a new target.
        if r.kind == RegionKind::AioRing && spec.action == RaceActionSpec::Exit {
            continue;
        }
        if !matches!(r.kind, RegionKind::Anon | RegionKind::Hole) {
            return Err(err(
                format!("target.regions[{i}].kind"),
                format!(
                    "`{}` is `{}`: a race target maps anonymous regions only (kind anon or hole)",
                    r.name,
                    serde_name(r.kind)
                ),
            ));
        }
    }
    if let Some((i, r)) = plan
        .caller_regions
        .iter()
        .enumerate()
        .find(|(_, r)| r.needs_fd())
    {
        return Err(err(
            format!("caller.regions[{i}].kind"),
            format!(
                "`{}` needs a file: a race caller builds regions without descriptors (use anon)",
                r.name
            ),
        ));
    }
    let unsupported = [
        (plan.target_creds.is_some(), "target.creds"),
        (!plan.target_dumpable, "target.dumpable"),
        (plan.target_ptracer.is_some(), "target.ptracer"),
        (plan.target_parent != TargetParent::Harness, "target.parent"),
        (plan.caller_creds.is_some(), "caller.creds"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|u| u.0) {
        return Err(err(
            *field,
            "a race keeps the harness's credentials and process tree; drop this field",
        ));
    }
    if plan.call.entry == Entry::Compat {
        return Err(err(
            "call.entry",
            "a race calls through the native entry only; drop `entry: compat`",
        ));
    }
    if !plan.specials.is_empty() {
        return Err(err(
            "call",
            "a race case cannot name vdso, vvar or vvar_vclock (its target maps the case's regions only)",
        ));
    }
    let racer = match (spec.action, region) {
        (RaceActionSpec::Munmap, Some(r)) => Racer::Munmap {
            region: r.name.clone(),
        },
        (RaceActionSpec::Mprotect, Some(r)) => Racer::Mprotect {
            region: r.name.clone(),
            prot: spec.prot.unwrap_or_default(),
        },
        (RaceActionSpec::Write, Some(r)) => Racer::Write {
            region: r.name.clone(),
        },
        (RaceActionSpec::Exit, _) => Racer::Exit,
        (RaceActionSpec::ThreadExit, _) => Racer::ThreadExit,
        // Every region-taking action has a region by now.
        (_, None) => unreachable!("checked above"),
    };
    Ok(Race {
        racer,
        runs: runs as u32,
    })
}

fn err(field: impl Into<String>, message: impl Into<String>) -> PlanError {
    PlanError::new(field, message)
}

fn serde_name(k: RegionKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The allowed outcomes: the model's prediction for each layout the call can have seen
/// (deduplicated by result), and whether each byte moved may be either the old or the new
/// value (a racing write) rather than the old one only.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub outcomes: Vec<Prediction>,
    pub old_or_new_bytes: bool,
}

impl Allowed {
    pub fn allows(&self, r: Result<u64, i32>) -> bool {
        self.matching(r).is_some()
    }

    /// The prediction with this result (its copies say which bytes moved).
    pub fn matching(&self, r: Result<u64, i32>) -> Option<&Prediction> {
        self.outcomes.iter().find(|p| p.result == r)
    }

    /// The set as names and counts, deterministic and short: counts ascending, an
    /// arithmetic run of three or more as `first..=last step s`, then errno names.
    pub fn names(&self) -> Vec<String> {
        let mut counts: Vec<u64> = self.outcomes.iter().filter_map(|p| p.result.ok()).collect();
        counts.sort_unstable();
        let mut out = Vec::new();
        let mut i = 0;
        while i < counts.len() {
            let mut j = i + 1;
            if j < counts.len() {
                let step = counts[j] - counts[i];
                while j + 1 < counts.len() && counts[j + 1] - counts[j] == step {
                    j += 1;
                }
                if j - i >= 2 {
                    out.push(format!("{}..={} step {step}", counts[i], counts[j]));
                    i = j + 1;
                    continue;
                }
            }
            out.push(counts[i].to_string());
            i += 1;
        }
        let mut errs: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|p| p.result.err())
            .map(crate::errno::name)
            .collect();
        errs.sort();
        out.extend(errs);
        out
    }
}

/// The plan with the first `k` pages of `region` as they are and the rest replaced by
/// `after` (a hole or another protection). Only the prediction's result and copies are
/// used: the checker takes source bytes from the original plan, since the second part's
/// pattern offsets would restart at its own start here.
fn hybrid(plan: &Plan, region: &str, k: u64, after: &dyn Fn(&mut Region)) -> Plan {
    let mut p = plan.clone();
    let Some(i) = p.target_regions.iter().position(|r| r.name == region) else {
        return p;
    };
    let r = p.target_regions[i].clone();
    let mut new = r.clone();
    new.name = format!("{region}_after");
    new.start = r.start + k * PAGE;
    new.len = r.len - k * PAGE;
    after(&mut new);
    let mut old = r;
    old.len = k * PAGE;
    p.target_regions.remove(i);
    if new.len > 0 {
        p.target_regions.insert(i, new);
    }
    if old.len > 0 {
        p.target_regions.insert(i, old);
    }
    p
}

/// The outcomes the kernel may produce for `plan`'s call while `racer` runs.
pub fn allowed(plan: &Plan, facts: &Facts, racer: &Racer) -> Allowed {
    let mut outcomes: Vec<Prediction> = Vec::new();
    let mut add = |p: Prediction| {
        if !outcomes.iter().any(|q| q.result == p.result) {
            outcomes.push(p);
        }
    };
    let pages = |name: &str| {
        plan.target_regions
            .iter()
            .find(|r| r.name == name)
            .map_or(0, |r| r.len / PAGE)
    };
    match racer {
        Racer::Munmap { region } => {
            for k in 0..=pages(region) {
                let p = hybrid(plan, region, k, &|r| r.kind = RegionKind::Hole);
                add(predict(&p, facts));
            }
        }
        Racer::Mprotect { region, prot } => {
            for k in 0..=pages(region) {
                let p = hybrid(plan, region, k, &|r| r.prot = *prot);
                add(predict(&p, facts));
            }
        }
        Racer::Write { .. } => add(predict(plan, facts)),
        Racer::Exit | Racer::ThreadExit => {
            add(predict(plan, facts));
            let mut gone = plan.clone();
            gone.target_kind = TargetKind::Reaped;
            add(predict(&gone, facts));
        }
    }
    Allowed {
        outcomes,
        old_or_new_bytes: matches!(racer, Racer::Write { .. }),
    }
}

/// What one region must hold after a racing call whose result matched `matched`.
#[derive(Debug, Clone)]
pub struct RegionExpect {
    pub want: Vec<u8>,
    /// Bytes not checked (none in a race plan today; kept from [`crate::check`]).
    pub checked: Vec<bool>,
    /// Sorted, disjoint offset ranges where [`NEW_BYTE`] is allowed instead of `want`: bytes
    /// the kernel's copy and the racer's memset both wrote.
    pub or_new: Vec<(u64, u64)>,
}

/// Adds `[a, b)` to a sorted set of disjoint ranges, or removes it.
fn ranges_set(set: &mut Vec<(u64, u64)>, a: u64, b: u64, add: bool) {
    if a >= b {
        return;
    }
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(set.len() + 2);
    for &(s, e) in set.iter() {
        if e <= a || s >= b {
            out.push((s, e));
            continue;
        }
        if s < a {
            out.push((s, a));
        }
        if e > b {
            out.push((b, e));
        }
    }
    if add {
        out.push((a, b));
    }
    out.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
    for (s, e) in out {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *set = merged;
}

/// The bytes `region` must hold after a racing call with `matched`'s result, or `None` when
/// the region cannot be read back (munmapped by the racer, or the target exited). Without a
/// racer (the undisturbed call before the runs) it is the model's plain prediction.
///
/// - Every byte the copies wrote is the source's old byte (readv: the target's; writev: the
///   caller's), every other byte is as it was: [`crate::check::expected_memory`] on the
///   original plan (a hybrid plan's pattern offsets would be wrong).
/// - A racing target write (memset of [`NEW_BYTE`] over its region) and the kernel's copy
///   interleave byte by byte with no ordering: readv may move the old or the new byte from
///   each source byte of that region; writev leaves each destination byte in that region
///   as the caller's byte or the racer's. The racer's memset has finished before anything
///   is read back, so a byte of that region the kernel did not write is the racer's.
/// - A racing exit or thread exit changes no byte; munmap and mprotect change none either
///   (a pinned page is written or read whatever its mapping became).
pub fn expect_region(
    plan: &Plan,
    racer: Option<&Racer>,
    matched: &Prediction,
    region: &Region,
) -> Option<RegionExpect> {
    let gone = match racer {
        Some(Racer::Munmap { region: r }) => region.side == Side::Target && region.name == *r,
        Some(Racer::Exit) => region.side == Side::Target,
        _ => false,
    };
    if gone {
        return None;
    }
    let (mut want, checked) = crate::check::expected_memory(plan, matched, region);
    let mut or_new = Vec::new();
    let Some(Racer::Write { region: raced }) = racer else {
        return Some(RegionExpect {
            want,
            checked,
            or_new,
        });
    };
    let Some(raced) = plan.region(Side::Target, raced) else {
        return Some(RegionExpect {
            want,
            checked,
            or_new,
        });
    };
    let write = plan.call.syscall == Syscall::Writev;
    let (rs, re) = (region.start, region.end());
    if matched.result.is_ok() {
        for c in &matched.copies {
            let (dst, src) = if write {
                (c.remote, c.local)
            } else {
                (c.local, c.remote)
            };
            let dst_side = if write { Side::Target } else { Side::Caller };
            if region.side != dst_side {
                continue;
            }
            let (a, b) = (dst.max(rs), (dst + c.len).min(re));
            if a >= b {
                continue;
            }
            // A later copy overwrites what an earlier one left.
            ranges_set(&mut or_new, a - rs, b - rs, false);
            if write {
                if region.name == raced.name {
                    ranges_set(&mut or_new, a - rs, b - rs, true);
                }
            } else {
                // The part of this copy whose source lies in the raced region.
                let (sa, sb) = (src + (a - dst), src + (b - dst));
                let (ia, ib) = (sa.max(raced.start), sb.min(raced.end()));
                if ia < ib {
                    let (da, db) = (ia - src + dst, ib - src + dst);
                    ranges_set(&mut or_new, da - rs, db - rs, true);
                }
            }
        }
    }
    if write && region.side == Side::Target && region.name == raced.name {
        // Outside what the kernel wrote, the racer's finished memset.
        let mut at = 0usize;
        for &(s, e) in &or_new {
            want[at..s as usize].fill(NEW_BYTE);
            at = e as usize;
        }
        want[at..].fill(NEW_BYTE);
    }
    Some(RegionExpect {
        want,
        checked,
        or_new,
    })
}

/// Checks one region read back after a run. `Ok(true)` when the bytes the call moved hold
/// both a value of the call and the racer's (a torn copy); `Err` names the first wrong byte.
pub fn check_region(what: &str, exp: &RegionExpect, got: &[u8]) -> Result<bool, String> {
    if got.len() != exp.want.len() {
        return Err(format!(
            "{what}: got {} bytes back, expected {}",
            got.len(),
            exp.want.len()
        ));
    }
    if got == exp.want.as_slice() {
        return Ok(false);
    }
    let (mut saw_call, mut saw_new) = (false, false);
    let mut alt = exp.or_new.iter().peekable();
    for (i, (&g, &w)) in got.iter().zip(&exp.want).enumerate() {
        let i64_ = i as u64;
        while alt.peek().is_some_and(|&&(_, e)| e <= i64_) {
            alt.next();
        }
        let in_alt = alt.peek().is_some_and(|&&(s, _)| s <= i64_);
        if g == w || !exp.checked[i] {
            saw_call |= in_alt && g != NEW_BYTE;
            continue;
        }
        if in_alt && g == NEW_BYTE {
            saw_new = true;
            continue;
        }
        return Err(format!(
            "{what} byte {i}: {g:#04x}, expected {w:#04x}{}",
            if in_alt {
                format!(" or the racer's {NEW_BYTE:#04x}")
            } else {
                String::new()
            }
        ));
    }
    Ok(saw_call && saw_new)
}

/// A race case's runs, for reports: the allowed set (deterministic, for snapshots) and how
/// often each outcome happened (machine- and load-dependent, never in snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaceReport {
    /// `munmap data`, `exit`, …
    pub racer: String,
    /// Runs the case asked for.
    pub runs: u32,
    /// Runs made (fewer when one fell outside the allowed set, or the case broke).
    pub done: u32,
    /// Every run made was within the allowed set, bytes included.
    pub all_within: bool,
    /// [`Allowed::names`].
    pub allowed: Vec<String>,
    /// `full` (the undisturbed result), `partial N`, or an errno name → runs.
    pub outcomes: BTreeMap<String, u32>,
    /// Runs whose moved bytes held both the call's and the racer's values.
    pub torn: u32,
    /// Whether tearing can happen at all (a racing write).
    pub can_tear: bool,
    /// How long the undisturbed call took, in microseconds (the racer's delay is drawn
    /// uniformly below it).
    pub call_us: u64,
}

impl RaceReport {
    /// The label of one run's result: `full` when it equals the undisturbed prediction.
    pub fn label(undisturbed: Result<u64, i32>, r: Result<u64, i32>) -> String {
        match r {
            _ if r == undisturbed => "full".into(),
            Ok(n) => format!("partial {n}"),
            Err(e) => crate::errno::name(e),
        }
    }

    /// `40 runs (call ~850 µs): full 26, partial 10 (4194304 ×10), EFAULT 4; torn 0`.
    pub fn frequencies(&self) -> String {
        let mut parts = Vec::new();
        let full = self.outcomes.get("full").copied().unwrap_or(0);
        parts.push(format!("full {full}"));
        let partial: Vec<(&String, &u32)> = self
            .outcomes
            .iter()
            .filter(|(k, _)| k.starts_with("partial "))
            .collect();
        if !partial.is_empty() {
            let n: u32 = partial.iter().map(|(_, v)| **v).sum();
            let at: Vec<String> = partial
                .iter()
                .map(|(k, v)| format!("{} ×{v}", k.trim_start_matches("partial ")))
                .collect();
            parts.push(format!("partial {n} ({})", at.join(", ")));
        }
        for (k, v) in &self.outcomes {
            if k != "full" && !k.starts_with("partial ") {
                parts.push(format!("{k} {v}"));
            }
        }
        let torn = if self.can_tear {
            format!("; torn {}", self.torn)
        } else {
            String::new()
        };
        format!(
            "{} (call ~{} µs): {}{torn}",
            crate::words::count(self.done, "run", "runs"),
            self.call_us,
            parts.join(", ")
        )
    }
}
