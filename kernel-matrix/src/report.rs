//! What a matrix run prints and writes: the case × kernel table, the cross-kernel
//! differences, report.md, one KTAP file per kernel and report.json.

use crate::boot::Accel;
use crate::matrix::KernelResult;
use crate::{Error, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A case's outcome on one kernel, as compared across kernels: status and the kernel's
/// result (ret or errno). Timing and pids are not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: String,
    pub observed: Option<String>,
    pub model: Option<String>,
    pub decided_by: Option<String>,
    pub detail: Option<String>,
    pub reason: Option<String>,
    pub call: String,
}

impl Outcome {
    pub fn of(v: &Value) -> Outcome {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        Outcome {
            status: s("status").unwrap_or_else(|| "broken".into()),
            observed: s("observed"),
            model: s("expected"),
            decided_by: s("decided_by"),
            detail: s("detail"),
            reason: s("reason"),
            call: s("call").unwrap_or_default(),
        }
    }

    /// `pass 4096`, `skip`, `FAIL EFAULT`, `BROKEN`.
    pub fn short(&self) -> String {
        let obs = self.observed.clone().unwrap_or_default();
        match self.status.as_str() {
            "pass" => format!("pass {obs}"),
            "skip" => "skip".into(),
            "fail" => format!("FAIL {obs}"),
            _ => "BROKEN".into(),
        }
        .trim_end()
        .to_string()
    }

    /// What the kernel did, for a difference: the result, or why there is none.
    pub fn long(&self) -> String {
        match self.status.as_str() {
            "skip" => format!("skip ({})", self.reason.clone().unwrap_or_default()),
            "pass" => format!(
                "{} (model agrees: {})",
                self.observed.clone().unwrap_or_default(),
                self.rule()
            ),
            "fail" => format!(
                "{} but the model says {} ({}): {}",
                self.observed.clone().unwrap_or_else(|| "nothing".into()),
                self.model.clone().unwrap_or_default(),
                self.rule(),
                self.reason.clone().unwrap_or_default()
            ),
            _ => format!("broken ({})", self.reason.clone().unwrap_or_default()),
        }
    }

    fn rule(&self) -> String {
        match (&self.decided_by, &self.detail) {
            (Some(d), Some(x)) => format!("{d}, {x}"),
            (Some(d), None) => d.clone(),
            _ => "no prediction".into(),
        }
    }
}

/// case id → kernel id → outcome.
pub fn outcomes(kernels: &[KernelResult]) -> BTreeMap<String, BTreeMap<String, Outcome>> {
    let mut m: BTreeMap<String, BTreeMap<String, Outcome>> = BTreeMap::new();
    for k in kernels {
        for r in &k.results {
            if let Some(case) = r["case"].as_str() {
                m.entry(case.to_string())
                    .or_default()
                    .insert(k.kernel.id.clone(), Outcome::of(r));
            }
        }
    }
    m
}

/// Cases whose outcome is not the same on every kernel that ran them: a different status
/// or a different result.
pub fn differences(kernels: &[KernelResult]) -> Vec<(String, BTreeMap<String, Outcome>)> {
    outcomes(kernels)
        .into_iter()
        .filter(|(_, per)| {
            let set: BTreeSet<(String, Option<String>)> = per
                .values()
                .map(|o| (o.status.clone(), o.observed.clone()))
                .collect();
            set.len() > 1
        })
        .collect()
}

/// Cases where a kernel and the model disagree (`fail`) or the case broke.
pub fn disagreements(kernels: &[KernelResult]) -> Vec<(String, String, Outcome)> {
    let mut out = Vec::new();
    for (case, per) in outcomes(kernels) {
        for (k, o) in per {
            if o.status == "fail" || o.status == "broken" {
                out.push((case.clone(), k, o));
            }
        }
    }
    out
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// The case × kernel table for a terminal: one row per case, one column per kernel, then a
/// line per kernel with its version, times and counts.
pub fn table(kernels: &[KernelResult], colour: bool) -> String {
    let all = outcomes(kernels);
    let w = all.keys().map(String::len).max().unwrap_or(4).max(4);
    // Each column is as wide as its widest cell (`pass 4199304`), so columns stay aligned.
    let cols: Vec<usize> = kernels
        .iter()
        .map(|k| {
            all.values()
                .filter_map(|per| per.get(&k.kernel.id))
                .map(|o| o.short().len())
                .chain([k.kernel.id.len(), "skip".len()])
                .max()
                .unwrap_or(4)
        })
        .collect();
    let mut out = String::new();
    for k in kernels {
        out.push_str(&kernel_header(k, false));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&format!("{:w$}", "case"));
    for (k, c) in kernels.iter().zip(&cols) {
        out.push_str(&format!("  {:>c$}", k.kernel.id));
    }
    out.push('\n');
    for (case, per) in &all {
        out.push_str(&format!("{case:w$}"));
        for (k, c) in kernels.iter().zip(&cols) {
            let cell = per
                .get(&k.kernel.id)
                .map_or("-".to_string(), Outcome::short);
            let painted = match (colour, per.get(&k.kernel.id).map(|o| o.status.as_str())) {
                (true, Some("pass")) => format!("{GREEN}{cell:>c$}{RESET}"),
                (true, Some("skip")) => format!("{YELLOW}{cell:>c$}{RESET}"),
                (true, Some(_)) => format!("{RED}{cell:>c$}{RESET}"),
                _ => format!("{cell:>c$}"),
            };
            out.push_str("  ");
            out.push_str(&painted);
        }
        out.push('\n');
    }
    out.push('\n');
    for k in kernels {
        out.push_str(&kernel_line(k));
        out.push('\n');
    }
    out
}

/// Which kernel exactly: `6.1: 6.1.0-50-cloud-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1
/// (2026-07-02), sha256 3f2a…` — the first 12 hex digits of the image's SHA-256 unless
/// `full_sha`.
pub fn kernel_header(k: &KernelResult, full_sha: bool) -> String {
    let p = &k.kernel;
    let sha = if full_sha {
        &p.sha256
    } else {
        &p.sha256[..p.sha256.len().min(12)]
    };
    let build = if p.build.is_empty() {
        String::new()
    } else {
        format!(" {}", p.build)
    };
    format!("{}: {}{build}, sha256 {sha}", p.id, p.release)
}

/// `6.1 (6.1.176-1, tcg): boot 3.0 s, run 11.1 s: 250 pass, 0 fail, 20 skip, 0 broken`.
pub fn kernel_line(k: &KernelResult) -> String {
    let s = &k.summary;
    // A runtime row says what it runs in and which Linux judges it, not a QEMU accelerator.
    let how = match (&k.kernel.runtime, &k.kernel.reference) {
        (Some(kind), Some(r)) => format!("{kind}, judged as Linux {r}"),
        (Some(kind), None) => kind.to_string(),
        _ => k.accel.map_or("-", Accel::name).to_string(),
    };
    let mut line = format!(
        "{} ({}, {how}): boot {}, run {:.1} s: {} pass, {} fail, {} skip, {} broken",
        k.kernel.id,
        k.kernel.version,
        k.boot_s.map_or("-".into(), |b| format!("{b:.1} s")),
        k.run_s,
        s.pass,
        s.fail,
        s.skip,
        s.broken
    );
    match (&k.failure, k.status) {
        (Some(f), "not-implemented") => line.push_str(&format!(" — NOT IMPLEMENTED: {f}")),
        (Some(f), _) if k.kernel.runtime.is_some() => {
            line.push_str(&format!(" — RUNTIME BROKEN: {f}"))
        }
        (Some(f), _) => line.push_str(&format!(" — KERNEL BROKEN: {f}")),
        (None, _) => {}
    }
    line
}

/// One KTAP document for a kernel.
pub fn ktap(k: &KernelResult) -> String {
    let mut out = String::from("KTAP version 1\n");
    out.push_str(&format!(
        "# kernel: {} ({})\n# build: {}\n# sha256: {}\n",
        k.kernel.release, k.kernel.version, k.kernel.build, k.kernel.sha256
    ));
    if let Some(f) = &k.failure {
        out.push_str(&format!("# kernel broken: {f}\n"));
    }
    out.push_str(&format!("1..{}\n", k.results.len()));
    for (i, r) in k.results.iter().enumerate() {
        let o = Outcome::of(r);
        let case = r["case"].as_str().unwrap_or("?");
        let line = match o.status.as_str() {
            "pass" => format!("ok {} {case}", i + 1),
            "skip" => format!(
                "ok {} {case} # SKIP {}",
                i + 1,
                o.reason.clone().unwrap_or_default()
            ),
            _ => format!("not ok {} {case}", i + 1),
        };
        out.push_str(&line);
        out.push('\n');
        if o.status == "fail" || o.status == "broken" {
            out.push_str(&format!("# {}: {}\n", o.call, o.long()));
        }
    }
    let s = &k.summary;
    out.push_str(&format!(
        "# totals: pass:{} fail:{} skip:{} error:{}\n",
        s.pass, s.fail, s.skip, s.broken
    ));
    out
}

/// report.json: `{"kernels":[{id, version, status, boot_s, run_s, summary, results, …}]}`.
pub fn json(kernels: &[KernelResult]) -> String {
    let doc = json!({ "kernels": kernels });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// report.md. `describe` gives a case's description, for explaining differences.
pub fn markdown(kernels: &[KernelResult], describe: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::from("# pvmtest kernel matrix\n\n");
    out.push_str("## Kernels\n\n| id | version | release | build | sha256 | accel | status | boot s | run s | pass | fail | skip | broken |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for k in kernels {
        let s = &k.summary;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |\n",
            k.kernel.id,
            k.kernel.version,
            k.kernel.release,
            k.kernel.build,
            &k.kernel.sha256[..k.kernel.sha256.len().min(12)],
            k.kernel.runtime.or(k.accel.map(Accel::name)).unwrap_or("-"),
            k.status,
            k.boot_s.map_or("-".into(), |b| format!("{b:.1}")),
            k.run_s,
            s.pass,
            s.fail,
            s.skip,
            s.broken
        ));
    }
    out.push_str("\nImages:\n\n");
    for k in kernels {
        out.push_str(&format!(
            "- **{}**: {} — `{}` — sha256 `{}`\n",
            k.kernel.id, k.kernel.origin, k.kernel.version_string, k.kernel.sha256
        ));
    }
    for k in kernels.iter().filter(|k| k.failure.is_some()) {
        out.push_str(&format!(
            "\n**{} is broken:** {}\n\n```\n{}\n```\n",
            k.kernel.id,
            k.failure.clone().unwrap_or_default(),
            k.console_tail.clone().unwrap_or_default()
        ));
    }

    let diffs = differences(kernels);
    out.push_str(&format!(
        "\n## Cases whose outcome differs between kernels ({})\n\n",
        diffs.len()
    ));
    if diffs.is_empty() {
        out.push_str("None: every case had the same status and result on every kernel.\n");
    }
    // Behaviour first: kernels that ran the case got different results. Then coverage: the
    // case ran on some kernels and skipped (a missing feature, a version twin) on others.
    let (behaviour, coverage): (Vec<_>, Vec<_>) = diffs.iter().partition(|(_, per)| {
        let results: BTreeSet<&Option<String>> = per
            .values()
            .filter(|o| o.status != "skip")
            .map(|o| &o.observed)
            .collect();
        results.len() > 1
    });
    for (title, list) in [
        ("Different results", behaviour),
        ("Run on some kernels, skipped on others", coverage),
    ] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!("### {title} ({})\n\n", list.len()));
        for (case, per) in list {
            out.push_str(&format!("#### {case}\n\n"));
            if let Some(d) = describe(case) {
                out.push_str(&format!("{}\n\n", d.trim()));
            }
            if let Some(o) = per.values().next() {
                out.push_str(&format!("`{}`\n\n", o.call));
            }
            for k in kernels {
                if let Some(o) = per.get(&k.kernel.id) {
                    out.push_str(&format!("- **{}**: {}\n", k.kernel.id, o.long()));
                }
            }
            out.push('\n');
        }
    }

    let dis = disagreements(kernels);
    out.push_str(&format!(
        "## Cases where a kernel differs from the model ({})\n\n",
        dis.len()
    ));
    if dis.is_empty() {
        out.push_str("None: on every kernel that ran, each case matched the model.\n");
    }
    for (case, k, o) in &dis {
        out.push_str(&format!(
            "- **{case}** on {k}: `{}` — {}\n",
            o.call,
            o.long()
        ));
    }

    out.push_str("\n## Matrix\n\n| case |");
    for k in kernels {
        out.push_str(&format!(" {} |", k.kernel.id));
    }
    out.push_str("\n|---|");
    for _ in kernels {
        out.push_str("---|");
    }
    out.push('\n');
    for (case, per) in outcomes(kernels) {
        out.push_str(&format!("| {case} |"));
        for k in kernels {
            out.push_str(&format!(
                " {} |",
                per.get(&k.kernel.id).map_or("-".into(), Outcome::short)
            ));
        }
        out.push('\n');
    }
    out
}

/// Writes report.md, report.json and `<id>.ktap` for each kernel into `dir`.
pub fn write_dir(
    dir: &Path,
    kernels: &[KernelResult],
    describe: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| {
        Error::new(format!(
            "--report {}: {e} (choose a writable directory)",
            p.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let w = |name: String, text: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| io(&p, e))
    };
    w("report.md".into(), markdown(kernels, describe))?;
    w("report.json".into(), json(kernels))?;
    for k in kernels {
        w(format!("{}.ktap", k.kernel.id), ktap(k))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::boot::Accel;
    use crate::matrix::counts;

    pub(crate) fn kernel(id: &str, results: Vec<Value>) -> KernelResult {
        KernelResult {
            kernel: crate::matrix::Prepared {
                id: id.into(),
                series: id.into(),
                version: format!("{id}.1-1"),
                release: format!("{id}.0-1-cloud-amd64"),
                build: "#1 SMP".into(),
                version_string: format!("{id}.0-1-cloud-amd64 (x) #1 SMP"),
                origin: "debian:x".into(),
                image: "/cache/vmlinuz".into(),
                runtime: None,
                reference: None,
                runtime_entry: None,
                sha256: format!("{:0>64}", id.replace('.', "")),
                boot_image: "/cache/vmlinux".into(),
                bzimage_reason: None,
            },
            accel: Some(Accel::Tcg),
            status: "ok",
            failure: None,
            boot_s: Some(3.0),
            run_s: 10.0,
            summary: counts(&results),
            facts: None,
            total: Some(results.len()),
            results,
            console_tail: None,
            gcov: vec![],
        }
    }

    fn r(case: &str, status: &str, observed: &str) -> Value {
        json!({"case": case, "status": status, "observed": observed, "expected": observed,
               "decided_by": "complete", "call": "process_vm_readv(...)"})
    }

    #[test]
    fn differences_need_a_different_status_or_result() {
        let a = kernel(
            "5.10",
            vec![r("g/same", "pass", "10"), r("g/stack", "pass", "4096")],
        );
        let b = kernel(
            "6.1",
            vec![r("g/same", "pass", "10"), r("g/stack", "pass", "EFAULT")],
        );
        let d = differences(&[a.clone(), b.clone()]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "g/stack");
        let md = markdown(&[a, b], &|_| Some("why it differs".into()));
        assert!(md.contains("### Different results (1)"), "{md}");
        assert!(md.contains("#### g/stack"), "{md}");
        assert!(md.contains("why it differs"));
        assert!(
            md.contains("- **5.10**: 4096 (model agrees: complete)"),
            "{md}"
        );
        assert!(md.contains("differs from the model (0)"));
    }

    /// A cell wider than the kernel id (`pass 4199304`, 12 characters) widens its column
    /// instead of pushing the rest of the row out of line.
    #[test]
    fn table_columns_fit_the_widest_cell() {
        let a = kernel(
            "5.10",
            vec![r("g/big", "pass", "4199304"), r("g/short", "pass", "10")],
        );
        let mut s = r("g/big", "skip", "");
        s["reason"] = json!("needs kernel >= 6.4");
        let b = kernel("6.1", vec![s, r("g/short", "fail", "EFAULT")]);
        let t = table(&[a, b], false);
        // One header line per kernel, a blank line, then the rows.
        let rows: Vec<&str> = t
            .lines()
            .skip_while(|l| !l.is_empty())
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(rows.len(), 3, "{t}");
        for row in &rows {
            assert_eq!(row.len(), rows[0].len(), "rows of different widths:\n{t}");
        }
        assert!(rows[1].contains("  pass 4199304  "), "{t}");
        assert!(rows[2].ends_with("  FAIL EFAULT"), "{t}");
        let summaries = t.lines().filter(|l| l.contains(" pass, ")).count();
        assert_eq!(summaries, 2, "one summary line per kernel:\n{t}");
    }

    #[test]
    fn ktap_counts_and_skips() {
        let mut s = r("g/b", "skip", "");
        s["reason"] = json!("needs kernel >= 6.4, this is 6.1");
        let k = kernel("6.1", vec![r("g/a", "pass", "1"), s, r("g/c", "fail", "2")]);
        let t = ktap(&k);
        assert!(t.starts_with("KTAP version 1\n"));
        assert!(t.contains("1..3\nok 1 g/a\nok 2 g/b # SKIP needs kernel >= 6.4"));
        assert!(t.contains("not ok 3 g/c"));
        assert!(t.contains("# totals: pass:1 fail:1 skip:1 error:0"));
    }
}
