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

/// Found by model_vs_kernel: a literal address near the vdso placeholder (`null+` a large
/// offset, or a repeat stride that lands there) was taken for `vdso+off`, so the case
/// silently named the vdso (and required it). Such an address is now rejected.
#[test]
fn literal_address_in_placeholder_range_is_rejected() {
    let y = |base: &str, extra: &str| {
        format!(
            "description: x\ncaller:\n  regions: [{{name: c0, pages: 1}}]\ncall:\n  syscall: readv\n  local: [{{base: \"{base}\", len: 1{extra}}}]\n"
        )
    };
    let e = load_str("t.yaml", "t", &y("null+0x5a00000000000000", "")).unwrap_err();
    assert!(e.message.contains("placeholder"), "{e}");
    let e = load_str(
        "t.yaml",
        "t",
        &y("null", ", repeat: 2, stride: 0x5a00000000000010"),
    )
    .unwrap_err();
    assert!(e.message.contains("placeholder"), "{e}");
    let ok = load_str("t.yaml", "t", &y("vdso+16", "")).expect("vdso is still a name");
    assert_eq!(ok.specials.len(), 1);
    assert!(load_str("t.yaml", "t", &y("non_canonical", "")).is_ok());
}
