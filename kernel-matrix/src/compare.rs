//! `compare`'s sides and its verdict on each changed case.
//!
//! A side is a matrix id, an image path, or a kernel source tree (built first, with its
//! `--baseline-patch`/`--candidate-patch` files, by [`crate::build`]). Each case whose
//! outcome changed is labelled by where the model stands: the baseline agreed with it and
//! the candidate does not ("candidate departs from documented semantics"), or the reverse
//! ("candidate now matches the model").

use crate::build::{self, BuildRequest, ConfigChoice};
use crate::cache::Cache;
use crate::matrix::{KernelResult, Selected};
use crate::report::Outcome;
use crate::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A side that is not a source tree, selected by `pick` (an id or an image path); `None`
/// for a source tree, whose tree and patches are checked here (it is built later).
pub fn pre_side(
    side: &str,
    patches: &[PathBuf],
    pick: &dyn Fn(&str) -> Result<Selected>,
) -> Result<Option<Selected>> {
    if Path::new(side).is_dir() {
        build::detect_tree(Path::new(side))?;
        for p in patches {
            build::read_patch(p)?;
        }
        return Ok(None);
    }
    if !patches.is_empty() {
        return Err(crate::Error::new(format!(
            "'{side}' is not a source tree, so its patches cannot be applied (give a kernel source directory, or drop the --*-patch options for this side)"
        )));
    }
    pick(side).map(Some)
}

/// Whether two source-tree sides would build the same kernel (same tree, same patches).
pub fn same_build(b: &str, bp: &[PathBuf], c: &str, cp: &[PathBuf]) -> bool {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let patches = |v: &[PathBuf]| v.iter().map(|p| canon(p)).collect::<Vec<_>>();
    canon(Path::new(b)) == canon(Path::new(c)) && patches(bp) == patches(cp)
}

/// A source-tree side built into an image.
pub fn build_side(
    side: &str,
    patches: &[PathBuf],
    config: &ConfigChoice,
    cache: &Cache,
    cases: &Path,
) -> Result<Selected> {
    let req = BuildRequest {
        src: PathBuf::from(side),
        patches: patches.to_vec(),
        config: config.clone(),
        out: None,
        jobs: default_jobs(),
        gcov: false,
        nice: 0,
    };
    let say = |l: &str| eprintln!("{l}");
    let built = build::build(&req, cache, cases, &say)?;
    eprintln!(
        "kernel-matrix: built {} ({}, make {:.0} s)",
        built.image.display(),
        built.release,
        built.seconds
    );
    crate::matrix::select_image(&crate::matrix::ImageArg {
        name: Some(side_id(&built.release, &built.patch_names)),
        path: built.image,
    })
}

/// `src-<release>` for an unpatched tree, `src-<release>+<patch stem>...` for a patched one.
pub fn side_id(release: &str, patch_names: &[String]) -> String {
    let mut id = format!("src-{release}");
    for p in patch_names {
        id.push('+');
        id.push_str(p);
    }
    id
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where the model stands on a changed case.
pub fn verdict(baseline: Option<&Outcome>, candidate: Option<&Outcome>) -> &'static str {
    fn st(o: Option<&Outcome>) -> &str {
        o.map_or("not run", |o| o.status.as_str())
    }
    match (st(baseline), st(candidate)) {
        ("pass", "fail") => "candidate departs from documented semantics",
        ("fail", "pass") => "candidate now matches the model",
        ("fail", "fail") => "both depart from the model, differently",
        ("pass", "pass") => "both match the model (it predicts a different result on each kernel)",
        (_, "skip") | ("skip", _) => "runs on one side only (skipped on the other)",
        _ => "broken or not run on one side",
    }
}

/// One changed case, as printed and as written to compare.json.
pub struct Change {
    pub case: String,
    pub call: String,
    pub verdict: &'static str,
    pub baseline: Option<Outcome>,
    pub candidate: Option<Outcome>,
}

pub fn changes(ks: &[KernelResult], diffs: &[(String, BTreeMap<String, Outcome>)]) -> Vec<Change> {
    diffs
        .iter()
        .map(|(case, per)| {
            let b = per.get(&ks[0].kernel.id).cloned();
            let c = per.get(&ks[1].kernel.id).cloned();
            Change {
                case: case.clone(),
                call: per
                    .values()
                    .next()
                    .map(|o| o.call.clone())
                    .unwrap_or_default(),
                verdict: verdict(b.as_ref(), c.as_ref()),
                baseline: b,
                candidate: c,
            }
        })
        .collect()
}

/// What a side did: the observed result (or skip/broken and why).
fn did(o: Option<&Outcome>) -> String {
    match o {
        None => "not run".into(),
        Some(o) => match o.status.as_str() {
            "pass" | "fail" => o.observed.clone().unwrap_or_else(|| "nothing".into()),
            "skip" => format!("skip ({})", o.reason.clone().unwrap_or_default()),
            _ => format!("broken ({})", o.reason.clone().unwrap_or_default()),
        },
    }
}

/// The model's prediction for the case (the candidate's, else the baseline's: they differ
/// only when the two kernels' facts differ).
fn model(ch: &Change) -> String {
    let m = |o: &Option<Outcome>| o.as_ref().and_then(|o| o.model.clone());
    let rule = |o: &Option<Outcome>| o.as_ref().and_then(|o| o.decided_by.clone());
    match m(&ch.candidate).or_else(|| m(&ch.baseline)) {
        Some(v) => match rule(&ch.candidate).or_else(|| rule(&ch.baseline)) {
            Some(r) => format!("{v} ({r})"),
            None => v,
        },
        None => "no prediction".into(),
    }
}

/// The changed cases for a terminal or a CI log.
pub fn render(ks: &[KernelResult], changes: &[Change]) -> String {
    let (b, c) = (&ks[0].kernel.id, &ks[1].kernel.id);
    let w = b.len().max(c.len());
    if changes.is_empty() {
        return format!("\nno case changed between {b} (baseline) and {c} (candidate)\n");
    }
    let mut s = format!(
        "\n{} changed between {b} (baseline) and {c} (candidate):\n",
        pvmtest::words::count_usize(changes.len(), "case", "cases")
    );
    for ch in changes {
        s.push_str(&format!(
            "\n{} — {}\n  {}\n  {:>w$}: {}\n  {:>w$}: {}\n  {:>w$}: {}\n",
            ch.case,
            ch.verdict,
            ch.call,
            b,
            did(ch.baseline.as_ref()),
            c,
            did(ch.candidate.as_ref()),
            "model",
            model(ch),
        ));
    }
    s
}

/// compare.json: the two kernels and every changed case with both outcomes and the model.
pub fn json(ks: &[KernelResult], changes: &[Change]) -> String {
    let side = |o: &Option<Outcome>| {
        o.as_ref()
            .map(|o| json!({"status": o.status, "observed": o.observed, "reason": o.reason}))
    };
    let v = json!({
        "baseline": ks[0].kernel.id,
        "candidate": ks[1].kernel.id,
        "changed": changes.iter().map(|ch| json!({
            "case": ch.case,
            "call": ch.call,
            "verdict": ch.verdict,
            "baseline": side(&ch.baseline),
            "candidate": side(&ch.candidate),
            "model": model(ch),
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(status: &str, observed: &str) -> Outcome {
        Outcome {
            status: status.into(),
            observed: Some(observed.into()),
            model: Some("EINVAL".into()),
            decided_by: Some("flags".into()),
            detail: None,
            reason: None,
            call: "process_vm_readv(...)".into(),
        }
    }

    #[test]
    fn verdicts_follow_the_model() {
        let pass = o("pass", "EINVAL");
        let fail = o("fail", "8");
        let skip = o("skip", "");
        assert_eq!(
            verdict(Some(&pass), Some(&fail)),
            "candidate departs from documented semantics"
        );
        assert_eq!(
            verdict(Some(&fail), Some(&pass)),
            "candidate now matches the model"
        );
        assert_eq!(
            verdict(Some(&skip), Some(&pass)),
            "runs on one side only (skipped on the other)"
        );
        assert_eq!(verdict(None, Some(&pass)), "broken or not run on one side");
        // Two kernels the model treats differently (a version gate): both right.
        let other = o("pass", "4096");
        assert_eq!(
            verdict(Some(&pass), Some(&other)),
            "both match the model (it predicts a different result on each kernel)"
        );
    }

    #[test]
    fn side_ids_name_the_patches() {
        assert_eq!(side_id("6.12.107", &[]), "src-6.12.107");
        assert_eq!(
            side_id("6.12.107", &["a".into(), "b".into()]),
            "src-6.12.107+a+b"
        );
    }
}
