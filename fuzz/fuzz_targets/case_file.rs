//! Arbitrary bytes into the case loader and validator (and, for a valid case, the model and
//! the renderers): none of them may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(plan) = pvmtest::runner::load_str("fuzz.yaml", "fuzz/case", text) {
        let _ = pvmtest::runner::render_call(&plan);
        if plan_is_cheap(&plan) {
            let facts = facts();
            let pred = pvmtest::model::predict(&plan, facts);
            let _ = pvmtest::report::explain(&plan, &pred, facts);
        }
    }
});

fn facts() -> &'static pvmtest::facts::Facts {
    static F: std::sync::OnceLock<pvmtest::facts::Facts> = std::sync::OnceLock::new();
    F.get_or_init(pvmtest::facts::Facts::detect)
}

/// The model walks transfers page by page; a case that moves gigabytes is valid but takes
/// seconds, which libFuzzer would report as a timeout rather than a bug.
fn plan_is_cheap(plan: &pvmtest::plan::Plan) -> bool {
    let total = |v: &[pvmtest::plan::Iov]| v.iter().fold(0u64, |a, i| a.saturating_add(i.len));
    total(&plan.call.local).min(total(&plan.call.remote)) <= 1 << 24
}
