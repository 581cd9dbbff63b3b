//! Every case under cases/ on the running kernel, as insta snapshots per kernel series
//! (`snapshots/<major.minor>/`). A snapshot holds names and counts only — status, the
//! kernel's result, the model's prediction and the deciding step — never addresses or pids,
//! so any change in kernel behaviour is a reviewable diff. The kernel matrix test
//! (kernel-matrix/tests/matrix.rs) writes the other series' snapshots into the same tree, and
//! this test reads them when it runs inside a matrix kernel (`cargo vmtest`).
//!
//! A snapshot records what the series' kernel did: the outcome of a case that ran, or a skip
//! the kernel decided (`min_kernel`, a syscall it lacks). A case skipped here because of who
//! runs the harness or how this host is set up (check::SkipBy::Machine: root, capabilities,
//! Yama, huge pages...) is checked to be a skip with a reason and counted in one line printed
//! past cargo's capture, but not compared with the snapshot, which another user or host
//! recorded by running it. Every case that ran here, and every kernel skip, is compared. Inside
//! a matrix guest (PVMTEST_GUEST=1, root with Yama and huge pages) a machine skip fails.

use pvmtest::exec::Options;
use pvmtest::runner::{self, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;

#[test]
fn cases() {
    // Run everything first, in Yama passes (scopes are only ever set inside a kernel-matrix
    // VM, which says so with PVMTEST_GUEST=1), then assert one snapshot per file.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    let files = runner::collect(&[dir]).expect("cases/");
    let mut bad = Vec::new();
    let mut plans = Vec::new();
    for f in &files {
        match runner::load(f) {
            Ok(p) => plans.push(p),
            Err(e) => bad.push(format!("invalid: {e}")),
        }
    }
    let in_vm = std::env::var_os("PVMTEST_GUEST").is_some();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = Options {
        // Under QEMU's TCG the MAX_RW_COUNT cases take the kernel several seconds to copy.
        timeout: std::time::Duration::from_secs(if in_vm { 60 } else { 5 }),
        ..Options::default()
    };
    // Where the kernel's own Yama scope hides the permission checks a case reaches, the case
    // also runs at scope 0 as `<case>@yama0`, with a snapshot of its own.
    let plans = runner::with_yama0_variants(plans, &pvmtest::facts::Facts::detect());
    let (results, facts) = runner::run_in_scope_passes(&plans, &opts, jobs, in_vm, &|_| {});
    let by_id: HashMap<String, runner::CaseResult> = results
        .into_iter()
        .map(|r| (r.plan.id.clone(), r))
        .collect();
    let series = format!("{}.{}", facts.version.0, facts.version.1);
    let bad = RefCell::new(bad);
    let not_compared = RefCell::new(Vec::new());
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(format!("snapshots/{series}"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        insta::glob!("../../cases", "**/*.yaml", |path| {
            let id = runner::case_id(path);
            let Some(r) = by_id.get(&id) else {
                return; // invalid, reported above
            };
            check_one(r, in_vm, &bad, &not_compared);
            if let Some(v) = by_id.get(&format!("{id}{}", runner::YAMA0_SUFFIX)) {
                // cases@<group>__<name>@yama0.yaml.snap, as kernel-matrix/tests/matrix.rs
                // names it from the result.
                let mut s = insta::Settings::clone_current();
                s.set_snapshot_suffix(format!("{}.yaml", v.plan.id.replace('/', "__")));
                s.bind(|| check_one(v, in_vm, &bad, &not_compared));
            }
        });
    });
    let not_compared = not_compared.into_inner();
    if !not_compared.is_empty() {
        // Past the capture, so what was not compared is never silent.
        let _ = writeln!(
            std::io::stderr(),
            "cases: {} skipped by this machine, not compared with snapshots/{series}: {}",
            pvmtest::words::count_usize(not_compared.len(), "case", "cases"),
            pvmtest::report::count_reasons(&not_compared)
        );
    }
    let bad = bad.into_inner();
    assert!(
        bad.is_empty(),
        "{} failed or broke on {}:\n{}",
        pvmtest::words::count_usize(bad.len(), "case", "cases"),
        facts.release,
        bad.join("\n")
    );
}

/// Checks one result and asserts its snapshot (`cases@<suffix>.snap`, the suffix set by the
/// caller's settings): a failure is collected in `bad`, a machine's skip in `not_compared`.
fn check_one(
    r: &runner::CaseResult,
    in_vm: bool,
    bad: &RefCell<Vec<String>>,
    not_compared: &RefCell<Vec<String>>,
) {
    if matches!(r.status, Status::Fail | Status::Broken) {
        let line = format!(
            "{:?} {}: {}\n    {}",
            r.status,
            r.plan.id,
            pvmtest::report::failure_line(r),
            r.reason.clone().unwrap_or_default()
        );
        // Shown even when a snapshot assertion ends the test first.
        eprintln!("{line}");
        bad.borrow_mut().push(line);
    }
    // The same snapshot a kernel-matrix guest run produces from JSON.
    let json = pvmtest::report::json_result(r);
    let snap = pvmtest::report::Snapshot::of(r);
    assert_eq!(snap, pvmtest::report::Snapshot::of_json(&json));
    if let Some(why) = pvmtest::report::machine_skip(&json) {
        assert!(!why.is_empty(), "{}: a skip without a reason", r.plan.id);
        if in_vm {
            // A matrix guest is root with Yama and huge pages: it runs every case its
            // kernel admits, as kernel-matrix/tests/matrix.rs requires.
            bad.borrow_mut().push(format!(
                "{}: skipped by the guest's machine: {why}",
                r.plan.id
            ));
        }
        not_compared.borrow_mut().push(why);
        return;
    }
    insta::assert_yaml_snapshot!("cases", snap);
}
