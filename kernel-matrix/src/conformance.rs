//! Known divergences of a runtime from Linux, kept as data per runtime version
//! (`kernel-matrix/conformance/<runtime-id>.yaml`), so a runtime's CI gates on them like on a
//! snapshot: `run` fails on a new divergence, a changed answer, or a known divergence that
//! disappeared. The model stays Linux's; these files only say what the runtime does instead
//! and why, citing the runtime's source for the version tested.

use crate::matrix::KernelResult;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The groups of the report: the model step (`decided_by`) that gave Linux's answer, folded
/// into the classes a sandbox implementer reads (docs/CONFORMANCE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Flags,
    Counts,
    ZeroLengthShortcuts,
    OrderOfChecks,
    Permission,
    RemoteFault,
    LocalFault,
    SpecialMappings,
    /// Copies whose source and destination are the same memory (a self/thread/clone_vm
    /// target): the bytes follow the runtime's copy order, not Linux's page-by-page one.
    OverlappingCopies,
    /// Decided by `complete` (the copy itself) and not one of the above.
    Other,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::Flags,
        Class::Counts,
        Class::ZeroLengthShortcuts,
        Class::OrderOfChecks,
        Class::Permission,
        Class::RemoteFault,
        Class::LocalFault,
        Class::SpecialMappings,
        Class::OverlappingCopies,
        Class::Other,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Class::Flags => "flags",
            Class::Counts => "counts",
            Class::ZeroLengthShortcuts => "zero-length shortcuts",
            Class::OrderOfChecks => "order of checks",
            Class::Permission => "permission",
            Class::RemoteFault => "remote fault",
            Class::LocalFault => "local fault",
            Class::SpecialMappings => "special mappings",
            Class::OverlappingCopies => "overlapping copies",
            Class::Other => "other (the copy itself)",
        }
    }

    /// The default class of a divergence from the step that decided Linux's answer; a known
    /// divergence's file may say better (a `[vvar]` case decided by `remote_fault` is a
    /// special mapping).
    pub fn of_step(decided_by: &str) -> Class {
        match decided_by {
            "flags" => Class::Flags,
            "local_count" | "remote_count" => Class::Counts,
            "local_zero_shortcut" | "remote_zero_shortcut" => Class::ZeroLengthShortcuts,
            "local_access_ok"
            | "local_array_fault"
            | "remote_array_fault"
            | "local_negative_len"
            | "remote_negative_len"
            | "pid_lookup"
            | "no_mm" => Class::OrderOfChecks,
            s if s.starts_with("perm_") => Class::Permission,
            "remote_fault" => Class::RemoteFault,
            "local_fault" => Class::LocalFault,
            _ => Class::Other,
        }
    }
}

/// One known divergence: what the runtime answers instead of Linux, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    /// The runtime's answer as the harness renders it ("0", "4096", "EFAULT").
    pub observed: String,
    pub class: Class,
    /// Why, citing the runtime's source (file and function) for the version tested.
    pub why: String,
    /// The divergence depends on a race (say, with the target's exit): its absence in a run
    /// is not reported as "gone"; a different answer still is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intermittent: bool,
}

/// A conformance file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// The runtime id of runtimes.yaml.
    pub runtime: String,
    /// The Debian package version the entries were checked against.
    pub version: String,
    /// Set when the runtime does not implement the calls at all (every call ENOSYS): the
    /// reason, with the source. Then `divergences` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_implemented: Option<String>,
    #[serde(default)]
    pub divergences: BTreeMap<String, Known>,
}

/// The directory of the conformance files: `--conformance DIR`, else the workspace's.
pub fn default_dir() -> Option<PathBuf> {
    crate::matrix::workspace_root()
        .map(|w| w.join("kernel-matrix/conformance"))
        .filter(|d| d.is_dir())
}

/// `<dir>/<id>.yaml` if it exists.
pub fn load(dir: &Path, id: &str) -> Result<Option<Baseline>> {
    let path = dir.join(format!("{id}.yaml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::new(format!("{}: {e}", path.display()))),
    };
    let b: Baseline = serde_yaml::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map_or(String::new(), |l| format!(":{}", l.line()));
        Error::new(format!(
            "{}{at}: {e} (a conformance file has runtime, version, optional not_implemented, and divergences: CASE -> {{observed, class, why}})",
            path.display()
        ))
    })?;
    if b.runtime != id {
        return Err(Error::new(format!(
            "{}: runtime '{}' does not match the file name (expected '{id}'; fix the runtime field)",
            path.display(),
            b.runtime
        )));
    }
    for (case, k) in &b.divergences {
        if k.why.trim().is_empty() {
            return Err(Error::new(format!(
                "{}: divergence {case} has no why (say which source file and function of the runtime explain it)",
                path.display()
            )));
        }
    }
    Ok(Some(b))
}

/// A divergence seen in this run.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub case: String,
    pub call: String,
    /// Linux's answer (the model's).
    pub linux: String,
    /// The runtime's answer.
    pub runtime: String,
    pub decided_by: String,
    pub class: Class,
    /// From the conformance file, when known.
    pub why: Option<String>,
}

/// The verdict on one runtime row against its conformance file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Every divergence seen (failing cases), with its class.
    pub divergences: Vec<Seen>,
    /// Cases that skipped because the runtime lacks a feature (reason as the harness said).
    pub unsupported: Vec<(String, String)>,
    /// Divergences not in the file, or with another answer than the file's.
    pub new: Vec<String>,
    /// Known divergences that did not happen (the case passed, skipped or did not run).
    pub gone: Vec<String>,
    /// The file and the run disagree on "not implemented".
    pub status_change: Option<String>,
    /// The package version differs from the file's (a warning: the entries may be stale).
    pub version_note: Option<String>,
}

impl Verdict {
    pub fn matches(&self) -> bool {
        self.new.is_empty() && self.gone.is_empty() && self.status_change.is_none()
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// Judges a runtime row's results against its baseline (`None`: no file, so every divergence
/// is new).
pub fn judge(k: &KernelResult, baseline: Option<&Baseline>) -> Verdict {
    let mut v = Verdict::default();
    let empty = BTreeMap::new();
    let known = baseline.map_or(&empty, |b| &b.divergences);
    let not_impl = k.status == "not-implemented";
    for r in &k.results {
        let case = s(r, "case");
        match r["status"].as_str() {
            Some("fail") => {
                let observed = s(r, "observed");
                let decided_by = s(r, "decided_by");
                let kn = known.get(&case);
                v.divergences.push(Seen {
                    case: case.clone(),
                    call: s(r, "call"),
                    linux: s(r, "expected"),
                    runtime: observed.clone(),
                    class: kn.map_or_else(|| Class::of_step(&decided_by), |k| k.class),
                    decided_by,
                    why: kn.map(|k| k.why.clone()),
                });
                // A runtime that implements nothing is judged as a whole, not per case.
                if !not_impl && kn.is_none_or(|k| k.observed != observed) {
                    v.new.push(match kn {
                        Some(k) => format!("{case}: {observed} where {} was known", k.observed),
                        None => format!("{case}: {observed}, Linux {}", s(r, "expected")),
                    });
                }
            }
            Some("skip") => v.unsupported.push((case, s(r, "reason"))),
            _ => {}
        }
    }
    let failing: std::collections::BTreeSet<&str> =
        v.divergences.iter().map(|d| d.case.as_str()).collect();
    for (case, kn) in known {
        if failing.contains(case.as_str()) || kn.intermittent {
            continue;
        }
        // A case missing from the results was not selected (`--filter`); a row that broke
        // before reporting is broken anyway.
        if let Some(r) = k.results.iter().find(|r| r["case"] == case.as_str()) {
            v.gone.push(format!(
                "{case}: known {} ({}), now {}",
                kn.observed,
                kn.class.title(),
                s(r, "status")
            ));
        }
    }
    let file_says = baseline.and_then(|b| b.not_implemented.as_ref()).is_some();
    if baseline.is_some() && file_says != not_impl {
        v.status_change = Some(if not_impl {
            "the run found the calls not implemented; the conformance file says they are".into()
        } else {
            "the conformance file says the calls are not implemented; this run found them implemented".into()
        });
    }
    if let Some(b) = baseline {
        if b.version != k.kernel.version {
            v.version_note = Some(format!(
                "conformance file written for {}, this run is {}",
                b.version, k.kernel.version
            ));
        }
    }
    v
}

/// report.md's section for one runtime: divergences by class with totals, unsupported
/// features apart, and the verdict against the conformance file.
pub fn markdown(k: &KernelResult, v: &Verdict, file: Option<&Path>) -> String {
    let mut out = format!(
        "## Conformance of {} ({} {}, judged as Linux {})\n\n",
        k.kernel.id,
        k.kernel.runtime.unwrap_or("runtime"),
        k.kernel.version,
        k.kernel.reference.as_deref().unwrap_or("?")
    );
    if k.status == "not-implemented" {
        out.push_str(&format!(
            "**Not implemented**: {}.\n\n",
            k.failure.as_deref().unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "Known-divergence file: {}. Verdict: {}.\n\n",
        file.map_or("none".into(), |p| format!("`{}`", p.display())),
        if file.is_none() {
            "no file, every divergence is new".to_string()
        } else if v.matches() {
            "matches".to_string()
        } else {
            format!(
                "{} new or changed, {} gone{}",
                v.new.len(),
                v.gone.len(),
                v.status_change
                    .as_ref()
                    .map_or(String::new(), |c| format!(", {c}"))
            )
        }
    ));
    if let Some(n) = &v.version_note {
        out.push_str(&format!("Note: {n}.\n\n"));
    }
    out.push_str("| class | divergences |\n|---|---|\n");
    for c in Class::ALL {
        let n = v.divergences.iter().filter(|d| d.class == c).count();
        out.push_str(&format!("| {} | {n} |\n", c.title()));
    }
    out.push_str(&format!(
        "| **total** | {} |\n| unsupported (skipped) | {} |\n\n",
        v.divergences.len(),
        v.unsupported.len()
    ));
    if k.status != "not-implemented" {
        for c in Class::ALL {
            let ds: Vec<&Seen> = v.divergences.iter().filter(|d| d.class == c).collect();
            if ds.is_empty() {
                continue;
            }
            out.push_str(&format!("### {} ({})\n\n", c.title(), ds.len()));
            out.push_str(
                "| case | call | Linux | runtime | decided_by | why |\n|---|---|---|---|---|---|\n",
            );
            for d in ds {
                out.push_str(&format!(
                    "| {} | `{}` | {} | {} | {} | {} |\n",
                    d.case,
                    d.call.replace('|', "\\|"),
                    d.linux,
                    d.runtime,
                    d.decided_by,
                    d.why.as_deref().unwrap_or("**new**").replace('|', "\\|")
                ));
            }
            out.push('\n');
        }
    }
    for (what, list) in [("New or changed", &v.new), ("Gone", &v.gone)] {
        if !list.is_empty() {
            out.push_str(&format!("### {what}\n\n"));
            for l in list {
                out.push_str(&format!("- {l}\n"));
            }
            out.push('\n');
        }
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in &v.unsupported {
        *reasons.entry(r.as_str()).or_default() += 1;
    }
    if !reasons.is_empty() {
        out.push_str(
            "### Unsupported (skipped, not divergences)\n\n| cases | reason |\n|---|---|\n",
        );
        for (r, n) in reasons {
            out.push_str(&format!("| {n} | {} |\n", r.replace('|', "\\|")));
        }
        out.push('\n');
    }
    out
}

/// A conformance file with every divergence of this run, each `why` to be written by hand
/// from the runtime's source: what `--write-conformance` prints as a start.
pub fn draft(k: &KernelResult, v: &Verdict) -> String {
    let mut b = Baseline {
        runtime: k.kernel.id.clone(),
        version: k.kernel.version.clone(),
        not_implemented: (k.status == "not-implemented")
            .then(|| "TODO: cite the source that makes both calls ENOSYS".to_string()),
        divergences: BTreeMap::new(),
    };
    if b.not_implemented.is_none() {
        for d in &v.divergences {
            b.divergences.insert(
                d.case.clone(),
                Known {
                    intermittent: false,
                    observed: d.runtime.clone(),
                    class: d.class,
                    why: d
                        .why
                        .clone()
                        .unwrap_or_else(|| "TODO: the runtime's source file and function".into()),
                },
            );
        }
    }
    serde_yaml::to_string(&b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(status: &'static str, results: Vec<Value>) -> KernelResult {
        let mut k = crate::report::tests::kernel("gvisor-x", Vec::new());
        k.status = status;
        k.results = results;
        k
    }

    fn r(case: &str, status: &str, observed: &str, expected: &str, step: &str) -> Value {
        json!({"case": case, "status": status, "observed": observed, "expected": expected,
               "decided_by": step, "call": "process_vm_readv(...)", "reason": "why"})
    }

    fn base(entries: &[(&str, &str, bool)]) -> Baseline {
        Baseline {
            runtime: "gvisor-x".into(),
            version: "gvisor-x.1-1".into(),
            not_implemented: None,
            divergences: entries
                .iter()
                .map(|(c, o, i)| {
                    (
                        c.to_string(),
                        Known {
                            observed: o.to_string(),
                            class: Class::Flags,
                            why: "sys_process_vm.go, processVMOp".into(),
                            intermittent: *i,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn same_divergences_match() {
        let k = row(
            "ok",
            vec![
                r("a", "fail", "4096", "EINVAL", "flags"),
                r("b", "pass", "0", "0", "complete"),
            ],
        );
        let v = judge(&k, Some(&base(&[("a", "4096", false)])));
        assert!(v.matches(), "{v:?}");
        assert_eq!(v.divergences[0].class, Class::Flags);
    }

    #[test]
    fn a_changed_answer_a_new_case_and_a_gone_one_are_reported() {
        let k = row(
            "ok",
            vec![
                r("a", "fail", "0", "EINVAL", "flags"),
                r("b", "pass", "0", "0", "complete"),
                r("c", "fail", "EFAULT", "4096", "remote_fault"),
            ],
        );
        let v = judge(
            &k,
            Some(&base(&[("a", "4096", false), ("b", "EPERM", false)])),
        );
        assert_eq!(
            v.new,
            ["a: 0 where 4096 was known", "c: EFAULT, Linux 4096"]
        );
        assert_eq!(v.gone, ["b: known EPERM (flags), now pass"]);
        assert!(!v.matches());
        // The class of an unknown divergence comes from the step that decided Linux's answer.
        assert_eq!(v.divergences[1].class, Class::RemoteFault);
    }

    #[test]
    fn unselected_and_intermittent_cases_are_not_gone() {
        let k = row("ok", vec![r("b", "pass", "0", "0", "complete")]);
        let v = judge(
            &k,
            Some(&base(&[("not_run", "0", false), ("b", "ESRCH", true)])),
        );
        assert!(v.matches(), "{v:?}");
    }

    #[test]
    fn not_implemented_must_agree_with_the_file() {
        let enosys = vec![r("a", "fail", "ENOSYS", "0", "complete")];
        let mut b = base(&[]);
        b.not_implemented = Some("linux64.go: ENOSYS stubs".into());
        assert!(judge(&row("not-implemented", enosys.clone()), Some(&b)).matches());
        let v = judge(&row("not-implemented", enosys), Some(&base(&[])));
        assert!(v.status_change.is_some());
        let v = judge(
            &row("ok", vec![r("a", "pass", "0", "0", "complete")]),
            Some(&b),
        );
        assert!(v.status_change.is_some());
    }

    #[test]
    fn no_file_makes_every_divergence_new() {
        let k = row("ok", vec![r("a", "fail", "0", "EINVAL", "flags")]);
        assert_eq!(judge(&k, None).new.len(), 1);
    }

    #[test]
    fn shipped_files_load_and_cite_a_source() {
        let dir = default_dir().expect("kernel-matrix/conformance");
        for r in crate::runtime::builtin() {
            let b = load(&dir, &r.id)
                .unwrap()
                .unwrap_or_else(|| panic!("no conformance file for {}", r.id));
            for (case, k) in &b.divergences {
                assert!(
                    k.why.contains(".go") || k.why.contains(".c"),
                    "{}: {case}: why cites no source file",
                    r.id
                );
                assert!(
                    crate::matrix::workspace_root()
                        .unwrap()
                        .join(format!("cases/{case}.yaml"))
                        .is_file(),
                    "{}: {case} is no case of the catalogue",
                    r.id
                );
            }
        }
    }

    #[test]
    fn a_file_for_another_runtime_or_without_why_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.yaml"),
            "runtime: y\nversion: \"1\"\ndivergences: {}\n",
        )
        .unwrap();
        let e = load(dir.path(), "x").unwrap_err().to_string();
        assert!(e.contains("does not match the file name"), "{e}");
        std::fs::write(
            dir.path().join("x.yaml"),
            "runtime: x\nversion: \"1\"\ndivergences:\n  a: {observed: \"0\", class: flags, why: \" \"}\n",
        )
        .unwrap();
        let e = load(dir.path(), "x").unwrap_err().to_string();
        assert!(e.contains("has no why"), "{e}");
        std::fs::write(
            dir.path().join("x.yaml"),
            "runtime: x\nversion: \"1\"\ndivergences:\n  a: {observed: \"0\", class: colour, why: w}\n",
        )
        .unwrap();
        let e = load(dir.path(), "x").unwrap_err().to_string();
        assert!(e.contains("x.yaml:") && !e.contains('\n'), "{e}");
        assert!(load(dir.path(), "absent").unwrap().is_none());
    }
}
