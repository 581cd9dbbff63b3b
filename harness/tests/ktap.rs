//! `pvmtest run --format ktap` read by the kernel's own KTAP parser
//! (tools/testing/kunit/kunit_parser.py, what `kunit.py parse` runs), through
//! scripts/ktap-check.py: no parse errors, and its passed/failed/skipped counts and test names
//! match ours.
//!
//! The parser is GPL-2.0 kernel code and is not in this repository: `export
//! PVMTEST_KUNIT_PARSER=$(scripts/kunit-parser.sh)` fetches it (.ci/run does). Without it the
//! test prints a SKIP line saying so, and fails when `CI` is set (outside a matrix VM, which
//! has no Python).

mod common;

use common::PAGE;
use pvmtest::runner::Status;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The directory holding kunit_parser.py, or `None` after printing why the test skips.
fn parser(test: &str) -> Option<PathBuf> {
    let why = if std::env::var_os("PVMTEST_GUEST").is_some() {
        "inside a matrix VM (no Python there)".to_string()
    } else {
        match std::env::var_os("PVMTEST_KUNIT_PARSER").map(PathBuf::from) {
            Some(p) => {
                let dir = if p.is_dir() {
                    p.clone()
                } else {
                    p.parent().map(Path::to_path_buf).unwrap_or_default()
                };
                if dir.join("kunit_parser.py").is_file() {
                    return Some(dir);
                }
                format!(
                    "PVMTEST_KUNIT_PARSER={} holds no kunit_parser.py",
                    p.display()
                )
            }
            None => "PVMTEST_KUNIT_PARSER is not set".to_string(),
        }
    };
    let msg = format!(
        "SKIP {test}: {why} (export PVMTEST_KUNIT_PARSER=$(scripts/kunit-parser.sh) to check KTAP with the kernel's parser)"
    );
    if std::env::var_os("CI").is_some() && std::env::var_os("PVMTEST_GUEST").is_none() {
        panic!("{msg}: CI must provide the parser (.ci/run does)");
    }
    // Straight to the process's stderr: libtest captures `eprintln!`, not this, so the line
    // shows in `cargo test` output without --nocapture.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
    None
}

#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    status: String,
    passed: u64,
    failed: u64,
    crashed: u64,
    skipped: u64,
    errors: u64,
    names: Vec<String>,
}

/// kunit_parser's verdict on a KTAP text.
fn kunit_parse(dir: &Path, ktap: &str, tag: &str) -> Verdict {
    let file = std::env::temp_dir().join(format!("pvmtest-ktap-{}-{tag}.ktap", std::process::id()));
    std::fs::write(&file, ktap).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ktap-check.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(&file)
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("ktap-check: "))
        .unwrap_or_else(|| panic!("no verdict from the parser:\n{stdout}\n{stderr}\n{ktap}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    let verdict = Verdict {
        status: v["status"].as_str().unwrap().to_string(),
        passed: n("passed"),
        failed: n("failed"),
        crashed: n("crashed"),
        skipped: n("skipped"),
        errors: n("errors"),
        names: v["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().trim().to_string())
            .collect(),
    };
    assert_eq!(
        verdict.errors, 0,
        "kunit_parser reported parse errors:\n{stderr}\n{ktap}"
    );
    assert!(out.status.success(), "{stderr}\n{ktap}");
    verdict
}

/// The binary's KTAP for a pass, a fail (a pin the model disagrees with), a skip, and a slice
/// of the real catalogue chosen with --filter.
#[test]
fn run_format_ktap_passes_the_kernels_parser() {
    let Some(dir) = parser("run_format_ktap_passes_the_kernels_parser") else {
        return;
    };
    let d = std::env::temp_dir().join(format!("pvmtest-ktap-{}", std::process::id()));
    let cases = d.join("cases/grp");
    std::fs::create_dir_all(&cases).unwrap();
    let put = |name: &str, text: String| std::fs::write(cases.join(name), text).unwrap();
    put("a_pass.yaml", format!("description: p\n{PAGE}"));
    put(
        "b_wrong_pin.yaml",
        format!("description: f\n{PAGE}expect:\n  result: 65\n  why: 'wrong # on purpose'\n"),
    );
    put(
        "c_old_kernel.yaml",
        format!("description: s\nrequires:\n  max_kernel: \"3.0\"\n{PAGE}"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pvmtest"))
        .args(["run", "--format", "ktap"])
        .arg(d.join("cases"))
        .output()
        .unwrap();
    let ktap = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{ktap}");
    let v = kunit_parse(&dir, &ktap, "scratch");
    assert_eq!(
        (v.status.as_str(), v.passed, v.failed, v.crashed, v.skipped),
        ("FAILURE", 1, 1, 0, 1),
        "{ktap}"
    );
    assert_eq!(
        v.names,
        ["grp/a_pass", "grp/b_wrong_pin", "grp/c_old_kernel"],
        "{ktap}"
    );
    let _ = std::fs::remove_dir_all(&d);

    // A slice of the real catalogue: the counts the parser finds are the ones we report.
    let out = Command::new(env!("CARGO_BIN_EXE_pvmtest"))
        .args([
            "run", "--format", "ktap", "--filter", "einval/*", "--filter", "yama/*",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases"))
        .output()
        .unwrap();
    let ktap = String::from_utf8_lossy(&out.stdout).into_owned();
    let totals = ktap
        .lines()
        .find_map(|l| l.strip_prefix("# totals: "))
        .unwrap_or_else(|| panic!("{ktap}"));
    let v = kunit_parse(&dir, &ktap, "catalogue");
    assert_eq!(
        totals,
        format!("pass:{} fail:0 skip:{} error:0", v.passed, v.skipped),
        "{ktap}"
    );
    assert_eq!((v.failed, v.crashed), (0, 0), "{ktap}");
    assert!(v.passed + v.skipped > 20, "{ktap}");
}

/// Every status, and reasons with line breaks and `#`, from the library's `ktap`.
#[test]
fn every_status_and_awkward_reasons_pass_the_kernels_parser() {
    let Some(dir) = parser("every_status_and_awkward_reasons_pass_the_kernels_parser") else {
        return;
    };
    let awkward = "first line\nnot ok 99 fake # SKIP\n# Subtest: fake\n1..7\nKTAP version 1";
    let fail = Some(Err(libc::EFAULT));
    let (results, facts) = common::results(
        &[
            (Status::Pass, "grp/pass", None, None),
            (Status::Skip, "grp/skip", Some(awkward), None),
            (Status::Fail, "grp/fail", Some(awkward), fail),
            (Status::Broken, "grp/broken", Some(awkward), None),
            (Status::Pass, "grp/with space#hash", None, None),
        ],
        Duration::from_millis(1),
    );
    let ktap = pvmtest::report::ktap(&results, &facts.release);
    let v = kunit_parse(&dir, &ktap, "statuses");
    // KTAP's ERROR directive falls back to "not ok": the parser counts a broken case failed.
    assert_eq!(
        (v.passed, v.failed, v.crashed, v.skipped),
        (2, 2, 0, 1),
        "{ktap}"
    );
    assert_eq!(
        v.names,
        [
            "grp/pass",
            "grp/skip",
            "grp/fail",
            "grp/broken",
            "grp/with_space_hash"
        ],
        "{ktap}"
    );
}
