//! Running a case with a `race:` section: a persistent [`Evolving`] target lays out the
//! case's target regions, a racer is armed in it for each run, and a persistent [`Caller`]
//! releases the racer and makes the case's call at once. Every run's result must be one the
//! model allows ([`crate::race::allowed`]) and every byte read back must follow the race's
//! byte rules ([`crate::race::expect_region`]).
//!
//! Before the runs, one undisturbed call (no racer armed) must match the model's plain
//! prediction exactly; it also measures how long the call takes (`span`). Each run's racer
//! then acts at an offset from the start of the call drawn uniformly from
//! `[-span/2, span)`: a third of the runs let the racer start first (so the "everything
//! changed" outcomes, and an exit before the pid lookup, are reached too), the rest land
//! while the call runs. The draw is a fixed-seed xorshift per case: runs are repeatable in
//! shape, not in outcome.
//!
//! Every run starts from the memory of a fresh target and a fresh caller: the target maps
//! afresh, in the same command that arms the racer, each region the last call or racer can
//! have changed (the raced region; for writev every writable region, which the call writes;
//! for readv the untouched ones, which it may fault in), and the caller does the same for
//! its own after each call (see [`Caller`]). A readv changes no byte of the target, and the
//! racer only the region it acts on, so nothing else needs mapping again. For `exit` each
//! run has a fresh target, which maps its layout as it starts.
//!
//! Processes: the target (and, for `exit`, a fresh one per run) and the caller, each a
//! [`super::proc::Child`]: killed and reaped when dropped, on every path out of here (a panic
//! included) and on SIGINT. Every wait is bounded by the runner's timeout.

use super::evolving::{
    Caller, CallerOpts, Evolving, Lay, RaceAction, RaceCall, RaceCpus, RaceSetup, Shared,
};
use super::{layout, Inject, Options};
use crate::case::{Fill, Syscall};
use crate::facts::Facts;
use crate::model::Prediction;
use crate::plan::{Plan, Region, Side};
use crate::race::{self, Race, RaceReport, Racer, RegionExpect};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;

/// Race cases run one at a time: each pins its racer and its caller to the CPUs it may use,
/// and two at once would take each other's CPUs and shift each other's timing.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a race case did.
#[derive(Debug, Clone)]
pub struct RaceOutcome {
    pub report: RaceReport,
    /// The first run that broke a rule: its result and what was wrong.
    pub failure: Option<(Result<u64, i32>, String)>,
}

/// The target's layout: every mapped target region, in plan order.
fn target_layout(plan: &Plan) -> Vec<(&Region, Lay)> {
    plan.target_regions
        .iter()
        .filter(|r| !r.is_hole())
        .map(|r| (r, Lay::of(r)))
        .collect()
}

/// The layout's regions (a bit each) that the case's call can change: for writev every
/// writable one (the call writes it), for readv every untouched one (the call may fault
/// its pages in; its bytes stay zero).
fn changed_by_call(plan: &Plan, layout: &[(&Region, Lay)]) -> u64 {
    let write = plan.call.syscall == Syscall::Writev;
    layout
        .iter()
        .enumerate()
        .filter(|(_, (r, _))| {
            if write {
                r.prot.bits() & libc::PROT_WRITE != 0
            } else {
                r.fill == Fill::Untouched
            }
        })
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// Room for the bytes read back: the caller's regions, and the target's one at a time.
fn room(plan: &Plan) -> u64 {
    let target = plan
        .target_regions
        .iter()
        .filter(|r| layout::dumped(r))
        .map(|r| r.len)
        .max()
        .unwrap_or(0);
    Caller::room(plan).max(target)
}

/// Forks a target that maps the layout; with `wait`, waits until it has.
fn start(
    layout: &[Lay],
    shared: &Rc<Shared>,
    opts: &Options,
    wait: bool,
) -> Result<Evolving, String> {
    let t = Evolving::start_laid(
        opts.timeout,
        opts.inject == Inject::TargetHang,
        layout,
        shared,
    )?;
    if wait {
        t.laid()
            .map_err(|e| format!("the race target never built its layout: {e}"))?;
    }
    Ok(t)
}

/// The regions read back after a call: the caller's, and for writev the target's.
fn checked_regions(plan: &Plan) -> Vec<&Region> {
    let mut v: Vec<&Region> = plan
        .caller_regions
        .iter()
        .filter(|r| layout::dumped(r))
        .collect();
    if plan.call.syscall == Syscall::Writev {
        v.extend(plan.target_regions.iter().filter(|r| layout::dumped(r)));
    }
    v
}

type Expectations = Vec<Option<RegionExpect>>;

/// Checks one call's bytes: `Ok(torn)`, or the first wrong byte.
fn judge(
    plan: &Plan,
    racer: Option<&Racer>,
    pred: &Prediction,
    run: &RaceCall,
    target: &Evolving,
    cache: &mut HashMap<(bool, Result<u64, i32>), Expectations>,
) -> Result<bool, String> {
    let regions = checked_regions(plan);
    let exps = cache
        .entry((racer.is_some(), pred.result))
        .or_insert_with(|| {
            regions
                .iter()
                .map(|r| race::expect_region(plan, racer, pred, r))
                .collect()
        });
    let mut torn = false;
    let mut caller_dumps = run.caller_dumps.iter();
    for (r, exp) in regions.iter().zip(exps.iter()) {
        let got = match r.side {
            Side::Caller => caller_dumps
                .next()
                .ok_or("the caller sent fewer regions than it has")?
                .clone(),
            Side::Target => {
                let Some(_) = exp else { continue };
                let prot = match racer {
                    Some(Racer::Mprotect { region, prot }) if *region == r.name => *prot,
                    _ => r.prot,
                };
                target.dump(r.start, r.len, prot.bits())?
            }
        };
        let Some(exp) = exp else { continue };
        let what = format!(
            "{} region {}",
            if r.side == Side::Caller {
                "caller"
            } else {
                "target"
            },
            r.name
        );
        torn |= race::check_region(&what, exp, &got)?;
    }
    Ok(torn)
}

/// Runs a race case.
pub fn execute(
    plan: &Plan,
    race: &Race,
    facts: &Facts,
    opts: &Options,
) -> Result<RaceOutcome, String> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let allowed = race::allowed(plan, facts, &race.racer);
    let undisturbed = crate::model::predict(plan, facts);
    let mut report = RaceReport {
        racer: race.racer.describe(),
        runs: race.runs,
        allowed: allowed.names(),
        can_tear: allowed.old_or_new_bytes,
        ..RaceReport::default()
    };
    let fail = |report: RaceReport, r: Result<u64, i32>, why: String| RaceOutcome {
        report,
        failure: Some((r, why)),
    };
    let cpus = RaceCpus::detect();
    let raced = race
        .racer
        .region()
        .and_then(|n| plan.region(Side::Target, n));
    let (addr, len) = raced.map_or((0, 0), |r| (r.start, r.len));
    let action = match &race.racer {
        Racer::Munmap { .. } => RaceAction::Munmap,
        Racer::Mprotect { prot, .. } => RaceAction::Mprotect(prot.bits()),
        Racer::Write { .. } => RaceAction::Write(race::NEW_BYTE),
        Racer::Exit => RaceAction::Exit,
        Racer::ThreadExit => RaceAction::ThreadExit,
    };
    let laid = target_layout(plan);
    let layout: Vec<Lay> = laid.iter().map(|(_, l)| *l).collect();
    let by_call = changed_by_call(plan, &laid);
    // The raced region, which every racer but exit and thread_exit changes.
    let by_racer = raced.map_or(0, |r| {
        laid.iter()
            .position(|(l, _)| std::ptr::eq(*l, r))
            .map_or(0, |i| 1u64 << i)
    });
    let mut cache = HashMap::new();

    let shared = Shared::new(room(plan))?;
    let mut target = start(&layout, &shared, opts, true)?;
    let caller_opts = CallerOpts {
        pin: cpus.caller,
        one_cpu: cpus.caller.is_none(),
        hang: opts.inject == Inject::CallerHang,
    };
    let mut caller = Caller::start(plan, &shared, caller_opts, opts.timeout)?;
    if opts.inject == Inject::Panic {
        panic!("injected panic (PVMTEST_INJECT=panic) with the race target up");
    }
    let cal = caller.race(&mut target, None, cpus, 0)?;
    let call = crate::runner::render_call(plan);
    if cal.call != undisturbed.result {
        let why = format!(
            "the undisturbed call before the runs: {call} = {}, model: {undisturbed}",
            crate::check::result_string(cal.call)
        );
        return Ok(fail(report, cal.call, why));
    }
    if let Err(e) = judge(plan, None, &undisturbed, &cal, &target, &mut cache) {
        return Ok(fail(
            report,
            cal.call,
            format!("the undisturbed call before the runs: {e}"),
        ));
    }
    report.call_us = cal.call_ns / 1000;
    let span = cal.call_ns.max(1000);
    // FNV-1a of the case id: each case its own sequence of delays, the same every run.
    let mut rng = plan.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    // What the last call (and racer) changed in the target we go on with.
    let mut changed = by_call;
    let mut next = Some(target);
    for i in 1..=race.runs {
        let (mut t, relay) = match next.take() {
            Some(t) => (t, changed),
            None => (start(&layout, &shared, opts, false)?, 0),
        };
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let setup = RaceSetup {
            action,
            addr,
            len,
            offset_ns: (rng % (span + span / 2)) as i64 - (span / 2) as i64,
        };
        let run = caller.race(&mut t, Some(setup), cpus, relay)?;
        changed = by_call | by_racer;
        if let Some(a) = run.action.filter(|a| *a != 0) {
            return Err(format!(
                "run {i}: the racer's own {} failed: {}",
                race.racer.describe(),
                crate::errno::name((-a) as i32)
            ));
        }
        let result = crate::check::result_string(run.call);
        let Some(pred) = allowed.matching(run.call) else {
            let why = format!(
                "run {i} of {} (racer: {}): {result} is not in the allowed set {{{}}}",
                race.runs,
                race.racer.describe(),
                report.allowed.join(", "),
            );
            return Ok(fail(report, run.call, why));
        };
        match judge(plan, Some(&race.racer), pred, &run, &t, &mut cache) {
            Ok(torn) => report.torn += torn as u32,
            Err(e) => {
                let why = format!(
                    "run {i} of {} (racer: {}): {result} is allowed ({pred}), but {e}",
                    race.runs,
                    race.racer.describe()
                );
                return Ok(fail(report, run.call, why));
            }
        }
        *report
            .outcomes
            .entry(RaceReport::label(undisturbed.result, run.call))
            .or_default() += 1;
        report.done = i;
        if action != RaceAction::Exit {
            next = Some(t);
        }
    }
    report.all_within = true;
    Ok(RaceOutcome {
        report,
        failure: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(syscall: &str) -> Plan {
        let yaml = format!(
            "description: t
target:
  regions:
    - {{name: a, pages: 1}}
    - {{name: gap, pages: 1, kind: hole}}
    - {{name: ro, pages: 1, prot: ro}}
    - {{name: z, pages: 1, fill: untouched}}
    - {{name: w, pages: 1, prot: wo}}
caller:
  regions:
    - {{name: buf, pages: 1}}
call:
  syscall: {syscall}
  local: [{{base: buf, len: page}}]
  remote: [{{base: a, len: page}}]
race:
  action: munmap
  region: a
"
        );
        crate::runner::load_str("t.yaml", "race/t", &yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn what_a_call_changes_is_mapped_again() {
        // Bits of the layout: a, ro, z, w (the hole has none).
        let w = plan("writev");
        assert_eq!(
            changed_by_call(&w, &target_layout(&w)),
            0b1101,
            "writable ones"
        );
        let r = plan("readv");
        assert_eq!(
            changed_by_call(&r, &target_layout(&r)),
            0b0100,
            "untouched ones"
        );
        let laid: Vec<&str> = target_layout(&r)
            .iter()
            .map(|(r, _)| r.name.as_str())
            .collect();
        assert_eq!(laid, ["a", "ro", "z", "w"]);
    }
}
