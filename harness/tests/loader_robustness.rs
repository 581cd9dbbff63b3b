//! Inputs that once made the loader or validator panic (found by the `case_file` and
//! `model_vs_kernel` fuzz targets). Each must load or be rejected with an error, never panic.

use pvmtest::runner::load_str;

/// plan.rs `expand_iovs`: the label of a repeated iovec multiplied `k * stride` without
/// wrapping (the address itself always wrapped).
#[test]
fn repeat_stride_overflow_wraps() {
    let y = "description: x\ncaller:\n  regions: [{name: b, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: b, len: 1, repeat: 3, stride: u64max}]\n";
    let plan = load_str("t.yaml", "t", y).expect("valid");
    assert_eq!(plan.call.local.len(), 3);
    assert_eq!(
        plan.call.local[2].base,
        plan.call.local[0].base.wrapping_sub(2)
    );
}
