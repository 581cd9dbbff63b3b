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

/// Found by model_vs_kernel: a compat case whose `lvec`/`rvec` override lies above 4 GiB was
/// accepted, but `int 0x80` passes only the low 32 bits, so the kernel read another array
/// than the one the model judged (kernel EINVAL, model EFAULT). Such a case is now invalid.
#[test]
fn compat_array_override_above_4gib_is_rejected() {
    let y = |rvec: &str| {
        format!(
            "description: x\ncaller:\n  regions: [{{name: c0, pages: 1}}]\ncall:\n  syscall: readv\n  entry: compat\n  local: [{{base: c0, len: 1}}]\n  riovcnt: 1\n  rvec: \"{rvec}\"\n"
        )
    };
    let e = load_str("t.yaml", "t", &y("c0+140737488355328")).unwrap_err();
    assert!(e.message.contains("32-bit"), "{e}");
    assert!(load_str("t.yaml", "t", &y("c0+100")).is_ok());
    assert!(load_str("t.yaml", "t", &y("null")).is_ok());
}
