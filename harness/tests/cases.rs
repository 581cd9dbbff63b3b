//! Every case under cases/ on the running kernel, as insta snapshots per kernel series
//! (`snapshots/<major.minor>/`). A snapshot holds names and counts only — status, the
//! kernel's result, the model's prediction and the deciding step — never addresses or pids,
//! so any change in kernel behaviour is a reviewable diff.

use pvmtest::exec::Options;
use pvmtest::facts::Facts;
use pvmtest::runner::{self, Status};
use serde::Serialize;
use std::cell::RefCell;

#[derive(Serialize)]
struct Snap {
    status: Status,
    kernel: Option<String>,
    model: Option<String>,
    decided_by: Option<&'static str>,
    skip_reason: Option<String>,
}

#[test]
fn cases() {
    let facts = Facts::detect();
    let series = format!("{}.{}", facts.version.0, facts.version.1);
    let bad = RefCell::new(Vec::new());
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(format!("snapshots/{series}"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        insta::glob!("../../cases", "**/*.yaml", |path| {
            let plan = match runner::load(path) {
                Ok(p) => p,
                Err(e) => {
                    bad.borrow_mut().push(format!("invalid: {e}"));
                    return;
                }
            };
            let r = runner::run_case(&plan, &facts, &Options::default());
            if matches!(r.status, Status::Fail | Status::Broken) {
                bad.borrow_mut().push(format!(
                    "{:?} {}: {}\n    {}",
                    r.status,
                    plan.id,
                    pvmtest::report::failure_line(&r),
                    r.reason.clone().unwrap_or_default()
                ));
            }
            let snap = Snap {
                status: r.status,
                kernel: r.observed.map(pvmtest::check::result_string),
                model: r.prediction.as_ref().map(|p| p.result_string()),
                decided_by: r.prediction.as_ref().map(|p| p.decided_by),
                skip_reason: (r.status == Status::Skip)
                    .then(|| r.reason.clone())
                    .flatten(),
            };
            insta::assert_yaml_snapshot!(snap);
        });
    });
    let bad = bad.into_inner();
    assert!(
        bad.is_empty(),
        "{} case(s) failed or broke on {}:\n{}",
        bad.len(),
        facts.release,
        bad.join("\n")
    );
}
