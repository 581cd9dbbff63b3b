//! Output formats: human (default; colour on a terminal), KTAP version 1, and JSON.

use crate::check::result_string;
use crate::runner::{render_call, CaseResult, Status, Summary};
use serde_json::json;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

fn paint(on: bool, colour: &str, s: &str) -> String {
    if on {
        format!("{colour}{s}{RESET}")
    } else {
        s.to_string()
    }
}

/// The line a failure prints: the call, what the kernel did, and the model's prediction.
pub fn failure_line(r: &CaseResult) -> String {
    let observed = r
        .observed
        .map(result_string)
        .unwrap_or_else(|| "not run".into());
    let model = r
        .prediction
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default();
    format!("{} = {observed}; model: {model}", render_call(&r.plan))
}

/// One line per case (details under failures), then the summary.
pub fn human(results: &[CaseResult], kernel: &str, colour: bool) -> String {
    let mut out = String::new();
    for r in results {
        let (c, word) = match r.status {
            Status::Pass => (GREEN, "PASS"),
            Status::Fail => (RED, "FAIL"),
            Status::Skip => (YELLOW, "SKIP"),
            Status::Broken => (MAGENTA, "BROKEN"),
        };
        let tail = match (r.status, &r.prediction) {
            (Status::Pass, Some(p)) => match &r.race {
                Some(race) => paint(
                    colour,
                    DIM,
                    &format!("{p}; {}: {}", race.racer, race.frequencies()),
                ),
                None => paint(colour, DIM, &p.to_string()),
            },
            (Status::Skip, _) => r.reason.clone().unwrap_or_default(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{} {:<48} {}\n",
            paint(colour, c, &format!("{word:<6}")),
            r.plan.id,
            tail
        ));
        if matches!(r.status, Status::Fail | Status::Broken) {
            out.push_str(&format!("       {}\n", failure_line(r)));
            if let Some(reason) = &r.reason {
                out.push_str(&format!("       {reason}\n"));
            }
            out.push_str(&format!("       {}\n", paint(colour, DIM, &r.plan.path)));
        }
    }
    let s = Summary::of(results);
    out.push_str(&format!(
        "\nkernel {kernel}: {}\n",
        crate::words::count_usize(results.len(), "case", "cases")
    ));
    out.push_str(&format!(
        "pvmtest: {} passed, {} failed, {} skipped\n",
        s.pass, s.fail, s.skip
    ));
    if s.broken > 0 {
        out.push_str(&paint(
            colour,
            MAGENTA,
            &format!("pvmtest: {} broken (harness or setup failures)\n", s.broken),
        ));
    }
    out
}

/// KTAP version 1 (Documentation/dev-tools/ktap.rst): one test line per case.
pub fn ktap(results: &[CaseResult], kernel: &str) -> String {
    let mut out = format!(
        "KTAP version 1\n# pvmtest on {kernel}\n1..{}\n",
        results.len()
    );
    for (i, r) in results.iter().enumerate() {
        let n = i + 1;
        let name = r.plan.id.replace(' ', "_");
        match r.status {
            Status::Pass => out.push_str(&format!("ok {n} {name}\n")),
            Status::Skip => out.push_str(&format!(
                "ok {n} {name} # SKIP {}\n",
                r.reason.as_deref().unwrap_or("")
            )),
            Status::Fail => {
                out.push_str(&format!("# {}\n", failure_line(r)));
                if let Some(reason) = &r.reason {
                    out.push_str(&format!("# {reason}\n"));
                }
                out.push_str(&format!("not ok {n} {name}\n"));
            }
            Status::Broken => {
                out.push_str(&format!(
                    "not ok {n} {name} # ERROR {}\n",
                    r.reason.as_deref().unwrap_or("")
                ));
            }
        }
    }
    let s = Summary::of(results);
    out.push_str(&format!(
        "# totals: pass:{} fail:{} skip:{} error:{}\n",
        s.pass, s.fail, s.skip, s.broken
    ));
    out
}

/// One JSON result, with `event` shaped like Tracee's process_vm_readv/writev event.
pub fn json_result(r: &CaseResult) -> serde_json::Value {
    let c = &r.plan.call;
    let event_name = match c.syscall {
        crate::case::Syscall::Readv => "process_vm_readv",
        crate::case::Syscall::Writev => "process_vm_writev",
    };
    let ret: Option<i64> = r.observed.map(|o| match o {
        Ok(n) => n as i64,
        Err(e) => -(e as i64),
    });
    // A race case's detail is how often each outcome happened (never snapshotted).
    let detail = match &r.race {
        Some(race) => Some(format!("{}: {}", race.racer, race.frequencies())),
        None => r.prediction.as_ref().and_then(|p| p.detail.clone()),
    };
    let mut v = json!({
        "case": r.plan.id,
        "status": r.status,
        "reason": r.reason,
        "expected": r.prediction.as_ref().map(|p| p.result_string()),
        "observed": r.observed.map(result_string),
        "decided_by": r.prediction.as_ref().map(|p| p.decided_by),
        "detail": detail,
        "call": render_call(&r.plan),
        "duration_us": r.duration.as_micros() as u64,
        "event": {
            "eventName": event_name,
            "args": {
                "pid": r.pid,
                "local_iov": c.lvec,
                "liovcnt": c.liovcnt,
                "remote_iov": c.rvec,
                "riovcnt": c.riovcnt,
                "flags": c.flags,
            },
            "returnValue": ret,
        },
    });
    if let Some(race) = &r.race {
        v["race"] = json!({
            "racer": race.racer,
            "runs": race.runs,
            "done": race.done,
            "all_within": race.all_within,
            "allowed": race.allowed,
            "outcomes": race.outcomes,
            "torn": race.can_tear.then_some(race.torn),
            "call_us": race.call_us,
        });
    }
    v
}

pub fn json(results: &[CaseResult], facts: &crate::facts::Facts) -> String {
    let doc = json!({
        "kernel": facts.release,
        "facts": facts,
        "summary": Summary::of(results),
        "results": results.iter().map(json_result).collect::<Vec<_>>(),
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// `explain`: the model's steps for one case.
pub fn explain(
    plan: &crate::plan::Plan,
    pred: &crate::model::Prediction,
    facts: &crate::facts::Facts,
) -> String {
    let mut out = format!(
        "{}\n  {}\n\n{}\n\nmodel on {}:\n",
        plan.id,
        plan.description,
        render_call(plan),
        facts.release
    );
    for (i, t) in pred.trace.iter().enumerate() {
        out.push_str(&format!("  {}. {t}\n", i + 1));
    }
    out.push_str(&format!("  => {pred}\n"));
    if let Some(e) = &plan.expect {
        out.push_str(&format!("\npinned: {:?} — {}\n", e.result, e.why.trim()));
    }
    if let Some(race) = &plan.race {
        let allowed = crate::race::allowed(plan, facts, &race.racer);
        out.push_str(&format!(
            "\nrace: the target does `{}` during the call, {}; allowed: {}\n",
            race.racer.describe(),
            crate::words::count(race.runs, "run", "runs"),
            allowed.names().join(", ")
        ));
    }
    if let Some(why) = crate::check::unmet_requirement(plan, facts) {
        out.push_str(&format!("\nwould skip here: {why}\n"));
    }
    out
}

/// What an insta snapshot holds for one case on one kernel series: names and counts only
/// (status, the kernel's result, the model's prediction, the deciding step, the skip reason),
/// never addresses or pids. The host test (harness/tests/cases.rs) and the kernel matrix test
/// (kernel-matrix/tests/matrix.rs) both write this into `snapshots/<series>/`, so a case
/// has one snapshot per series whichever way it ran.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub status: Status,
    pub kernel: Option<String>,
    pub model: Option<String>,
    pub decided_by: Option<String>,
    pub skip_reason: Option<String>,
    /// Race cases only: what the runs were held to, never how often each outcome happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub race: Option<RaceSnapshot>,
}

/// The deterministic part of a race case's result: the racer, the number of runs, whether
/// every run was within the allowed set, and that set (names and counts).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RaceSnapshot {
    pub racer: String,
    pub runs: u32,
    pub all_within: bool,
    pub allowed: Vec<String>,
}

impl Snapshot {
    pub fn of(r: &CaseResult) -> Snapshot {
        Snapshot {
            status: r.status,
            kernel: r.observed.map(result_string),
            model: r.prediction.as_ref().map(|p| p.result_string()),
            decided_by: r.prediction.as_ref().map(|p| p.decided_by.to_string()),
            skip_reason: (r.status == Status::Skip)
                .then(|| r.reason.clone())
                .flatten(),
            race: r.race.as_ref().map(|x| RaceSnapshot {
                racer: x.racer.clone(),
                runs: x.runs,
                all_within: x.all_within,
                allowed: x.allowed.clone(),
            }),
        }
    }

    /// The same from one entry of `run --format json` (what a VM guest sends back).
    pub fn of_json(v: &serde_json::Value) -> Snapshot {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let status = Status::from_name(v["status"].as_str());
        Snapshot {
            status,
            kernel: s("observed"),
            model: s("expected"),
            decided_by: s("decided_by"),
            skip_reason: (status == Status::Skip).then(|| s("reason")).flatten(),
            race: v
                .get("race")
                .filter(|x| x.is_object())
                .map(|x| RaceSnapshot {
                    racer: x["racer"].as_str().unwrap_or_default().to_string(),
                    runs: x["runs"].as_u64().unwrap_or(0) as u32,
                    all_within: x["all_within"].as_bool().unwrap_or(false),
                    allowed: x["allowed"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
        }
    }
}
