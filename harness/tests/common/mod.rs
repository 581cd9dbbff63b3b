//! Fixtures shared by the report tests (junit.rs, ktap.rs): results made without running
//! anything, so every status and any reason text can be fed to a formatter.

use pvmtest::facts::Facts;
use pvmtest::runner::{load_str, CaseResult, Status};
use std::time::Duration;

/// A one-page readv case, as a case file's body (after `description:`).
pub const PAGE: &str = "target:\n  regions: [{name: data, pages: 1}]\ncaller:\n  regions: [{name: buf, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 64}]\n  remote: [{base: data, len: 64}]\n";

/// One made-up result: (status, case name, reason, what the kernel returned).
pub type Spec<'a> = (Status, &'a str, Option<&'a str>, Option<Result<u64, i32>>);

/// The [`PAGE`] case under each spec's name and status, predicted on 6.12, each taking
/// `duration`; and the facts the prediction used.
pub fn results(specs: &[Spec], duration: Duration) -> (Vec<CaseResult>, Facts) {
    let plan = load_str(
        "cases/grp/x.yaml",
        "grp/x",
        &format!("description: x\n{PAGE}"),
    )
    .unwrap();
    let facts = Facts::example((6, 12, 0));
    let pred = pvmtest::model::predict(&plan, &facts);
    let out = specs
        .iter()
        .map(|&(status, id, reason, observed)| {
            let mut p = plan.clone();
            p.id = id.into();
            CaseResult {
                plan: p,
                status,
                reason: reason.map(str::to_string),
                skip_by: None,
                unsupported: None,
                prediction: Some(pred.clone()),
                observed,
                pid: None,
                duration,
                race: None,
            }
        })
        .collect();
    (out, facts)
}
