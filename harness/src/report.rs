//! Output formats: human (default; colour on a terminal), KTAP version 1, JSON and JUnit XML.

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

/// One line of KTAP text: a reason or detail with its line breaks joined by `; `.
fn ktap_line(s: &str) -> String {
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// KTAP version 1 (Documentation/dev-tools/ktap.rst): one test line per case. A skip is
/// `ok N name # SKIP reason`, a failure `not ok` after its details as `#` diagnostic lines, a
/// broken case `not ok N name # ERROR reason` (a `#` in a reason written `%23`). Names are case
/// ids with spaces and `#` (which would start a directive) replaced by `_`. harness/tests/ktap.rs checks the output with the
/// kernel's own parser (tools/testing/kunit/kunit_parser.py).
pub fn ktap(results: &[CaseResult], kernel: &str) -> String {
    let mut out = format!(
        "KTAP version 1\n# pvmtest on {kernel}\n1..{}\n",
        results.len()
    );
    for (i, r) in results.iter().enumerate() {
        let n = i + 1;
        let name = r.plan.id.replace([' ', '#'], "_");
        let reason = ktap_line(r.reason.as_deref().unwrap_or(""));
        // After a directive, a `#` could start another: kunit_parser takes the last ` # SKIP`
        // on a result line as the directive.
        let after_directive = reason.replace('#', "%23");
        match r.status {
            Status::Pass => out.push_str(&format!("ok {n} {name}\n")),
            Status::Skip => out.push_str(&format!("ok {n} {name} # SKIP {after_directive}\n")),
            Status::Fail => {
                out.push_str(&format!("# {}\n", ktap_line(&failure_line(r))));
                if !reason.is_empty() {
                    out.push_str(&format!("# {reason}\n"));
                }
                out.push_str(&format!("not ok {n} {name}\n"));
            }
            Status::Broken => {
                out.push_str(&format!("not ok {n} {name} # ERROR {after_directive}\n"))
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
        "skip_by": r.skip_by,
        "unsupported": r.unsupported,
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
        "reference": facts.reference,
        "facts": facts,
        "summary": Summary::of(results),
        "results": results.iter().map(json_result).collect::<Vec<_>>(),
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// Characters XML 1.0 cannot carry at all (control characters other than tab, newline and
/// carriage return; U+FFFE, U+FFFF) become U+FFFD.
fn xml_char(c: char) -> char {
    match c {
        '\t' | '\n' | '\r' => c,
        c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => '\u{fffd}',
        c => c,
    }
}

/// Text for a double-quoted XML attribute value. Tab and line breaks are written as character
/// references so a parser gives them back instead of normalising them to spaces.
fn xml_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().map(xml_char) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// Text as a CDATA section: element text stays as written for readers that take character
/// data literally (a `]]>` inside is split across two sections; see [`xml_char`]).
fn cdata(s: &str) -> String {
    let clean: String = s.chars().map(xml_char).collect();
    format!("<![CDATA[{}]]>", clean.replace("]]>", "]]]]><![CDATA[>"))
}

/// This machine's name for the JUnit `hostname` (the kernel's UTS nodename).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// JUnit XML (the schema Jenkins, GitLab and most CI reporters read): one `<testsuite
/// name="pvmtest">` for the run, the kernel release and hostname as properties, one
/// `<testcase name="group/name" classname="group">` per case; a skip is `<skipped
/// message=reason/>`, a failure `<failure>` with the call, the kernel's and the model's
/// results and the reason, a broken case (a harness or setup failure) `<error>`. Times are
/// seconds; the suite's is the sum of its cases' (they may run in parallel).
pub fn junit(results: &[CaseResult], facts: &crate::facts::Facts) -> String {
    let s = Summary::of(results);
    let total: f64 = results.iter().map(|r| r.duration.as_secs_f64()).sum();
    let host = hostname();
    let a = xml_attr;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"pvmtest\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{total:.6}\">\n",
        results.len(),
        s.fail,
        s.broken,
        s.skip
    ));
    out.push_str(&format!(
        "  <testsuite name=\"pvmtest\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{total:.6}\" hostname=\"{}\">\n",
        results.len(),
        s.fail,
        s.broken,
        s.skip,
        a(&host)
    ));
    out.push_str("    <properties>\n");
    let reference = facts.reference.as_deref().map(|r| ("reference", r));
    for (k, v) in [
        ("kernel", facts.release.as_str()),
        ("arch", facts.arch.as_str()),
        ("hostname", host.as_str()),
    ]
    .into_iter()
    .chain(reference)
    {
        out.push_str(&format!(
            "      <property name=\"{k}\" value=\"{}\"/>\n",
            a(v)
        ));
    }
    out.push_str("    </properties>\n");
    for r in results {
        let id = &r.plan.id;
        let group = id.split_once('/').map_or("cases", |g| g.0);
        let open = format!(
            "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" time=\"{:.6}\"",
            a(id),
            a(group),
            a(&r.plan.path),
            r.duration.as_secs_f64()
        );
        let reason = r.reason.as_deref().unwrap_or("");
        let details = || {
            let mut d = failure_line(r);
            if !reason.is_empty() {
                d.push('\n');
                d.push_str(reason);
            }
            d.push('\n');
            d.push_str(&r.plan.path);
            cdata(&d)
        };
        match r.status {
            Status::Pass => out.push_str(&format!("{open}/>\n")),
            Status::Skip => out.push_str(&format!(
                "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                a(reason)
            )),
            Status::Fail => {
                let message = if reason.is_empty() {
                    failure_line(r)
                } else {
                    reason.to_string()
                };
                out.push_str(&format!(
                    "{open}>\n      <failure message=\"{}\" type=\"mismatch\">{}</failure>\n    </testcase>\n",
                    a(&message),
                    details()
                ));
            }
            Status::Broken => out.push_str(&format!(
                "{open}>\n      <error message=\"{}\" type=\"broken\">{}</error>\n    </testcase>\n",
                a(reason),
                details()
            )),
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// `explain`: the model's steps for one case, each naming its rule, and whether the case's
/// pinned `expect` disagrees with the model (flagged in the text; `pvmtest explain` exits 1).
pub fn explain(
    plan: &crate::plan::Plan,
    pred: &crate::model::Prediction,
    facts: &crate::facts::Facts,
) -> (String, bool) {
    let mut out = format!(
        "{}\n  {}\n\n{}\n\nmodel on {}:\n",
        plan.id,
        plan.description,
        render_call(plan),
        facts.judged()
    );
    for (i, t) in pred.trace.iter().enumerate() {
        out.push_str(&format!("  {}. {t}\n", i + 1));
    }
    out.push_str(&format!("  => {pred}\n"));
    let unmet = crate::check::unmet_requirement(plan, facts);
    let mut disagrees = false;
    if let Some(e) = &plan.expect {
        out.push_str(&format!(
            "\npinned: {}{}, for a harness running as {} — {}\n",
            e.result,
            e.decided_by
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
            crate::check::describe_harness(&crate::check::pin_harness(plan)),
            e.why.trim()
        ));
        // As `pvmtest check`: the pin is judged for the harness the case declares
        // (check::pin_harness), wherever the model can judge it here.
        if crate::check::unmet_for_pin(plan, facts).is_none() {
            if let Err(why) = crate::check::check_pin(plan, facts) {
                disagrees = true;
                out.push_str(&format!("PIN DISAGREES: {why}\n"));
            }
        }
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
    if let Some(why) = unmet {
        out.push_str(&format!(
            "\nwould skip here: {why}{}\n",
            if plan.expect.is_some() {
                " (the pin is not checked)"
            } else {
                ""
            }
        ));
    }
    (out, disagrees)
}

/// The reason of a skip this machine decided ([`crate::check::SkipBy::Machine`]: who runs the
/// harness, how the host is set up), from one entry of `run --format json`; `None` for any
/// other result. The snapshot tests do not hold such a result against `snapshots/<series>/`,
/// which records what the series' kernel did: another user or host runs the case. An empty
/// reason comes back as `""` for the caller to reject.
pub fn machine_skip(v: &serde_json::Value) -> Option<String> {
    (v["status"].as_str() == Some("skip") && v["skip_by"].as_str() == Some("machine"))
        .then(|| v["reason"].as_str().unwrap_or_default().to_string())
}

/// `reason (n), reason (n)`, most frequent first, for one summary line.
pub fn count_reasons(reasons: &[String]) -> String {
    let mut n: Vec<(&str, usize)> = Vec::new();
    for r in reasons {
        match n.iter_mut().find(|(x, _)| *x == r.as_str()) {
            Some(e) => e.1 += 1,
            None => n.push((r.as_str(), 1)),
        }
    }
    n.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    n.iter()
        .map(|(r, c)| format!("{r} ({c})"))
        .collect::<Vec<_>>()
        .join(", ")
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
