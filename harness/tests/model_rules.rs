//! The reference model, rule by rule, on hand-written layouts. Each test names the rule in
//! docs/SEMANTICS.md it pins. These never touch the kernel.

use pvmtest::facts::Facts;
use pvmtest::model::{predict, Prediction};
use pvmtest::runner::load_str;

const V612: (u32, u32, u32) = (6, 12, 0);
const V61: (u32, u32, u32) = (6, 1, 0);

fn model_on(version: (u32, u32, u32), yaml: &str, tweak: impl FnOnce(&mut Facts)) -> Prediction {
    let plan = load_str("test.yaml", "test", yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut facts = Facts::example(version);
    tweak(&mut facts);
    predict(&plan, &facts)
}

fn model(yaml: &str) -> Prediction {
    model_on(V612, yaml, |_| {})
}

#[track_caller]
fn assert_ok(p: &Prediction, n: u64, step: &str) {
    assert_eq!(
        (p.result, p.decided_by),
        (Ok(n), step),
        "{p} trace: {:#?}",
        p.trace
    );
}

#[track_caller]
fn assert_err(p: &Prediction, errno: i32, step: &str) {
    assert_eq!(
        (p.result, p.decided_by),
        (Err(errno), step),
        "{p} trace: {:#?}",
        p.trace
    );
}

/// A one-page target `data`, a two-page caller `buf`, and the given call lines.
fn simple(call: &str) -> String {
    format!(
        "description: t\ntarget:\n  regions:\n    - {{name: data, pages: 1}}\n    - {{name: none, pages: 1, prot: none}}\ncaller:\n  regions:\n    - {{name: buf, pages: 2}}\n    - {{name: ro, pages: 1, prot: ro}}\ncall:\n{call}"
    )
}

#[test]
fn flags_nonzero_is_einval_before_anything() {
    let p = model(&simple(
        "  syscall: readv\n  flags: 1\n  lvec: kernel\n  local: []\n",
    ));
    assert_err(&p, libc::EINVAL, "flags");
}

#[test]
fn local_count_over_iov_max() {
    let p = model(&simple("  syscall: readv\n  local: [{base: buf, len: 1, repeat: 1025}]\n  remote: [{base: data, len: 1}]\n"));
    assert_err(&p, libc::EINVAL, "local_count");
}

#[test]
fn liovcnt_truncated_to_32_bits() {
    let zero = model(&simple("  syscall: readv\n  liovcnt: 2^32\n  local: [{base: buf, len: 8}]\n  remote: [{base: data, len: 8}]\n"));
    assert_ok(&zero, 0, "local_zero_shortcut");
    let one = model(&simple("  syscall: readv\n  liovcnt: 2^32+1\n  local: [{base: buf, len: 8}]\n  remote: [{base: data, len: 8}]\n"));
    assert_ok(&one, 8, "complete");
}

#[test]
fn riovcnt_not_truncated() {
    let p = model(&simple("  syscall: readv\n  riovcnt: 2^32+1\n  local: [{base: buf, len: 8}]\n  remote: [{base: data, len: 8}]\n"));
    assert_err(&p, libc::EINVAL, "remote_count");
}

#[test]
fn local_array_fault_and_count_past_array() {
    let p = model(&simple(
        "  syscall: readv\n  lvec: null+8\n  liovcnt: 2\n  remote: [{base: data, len: 8}]\n",
    ));
    assert_err(&p, libc::EFAULT, "local_array_fault");
    let p = model(&simple("  syscall: readv\n  liovcnt: 3\n  local: [{base: buf, len: 8}, {base: buf, len: 8}]\n  remote: [{base: data, len: 8}]\n"));
    assert_err(&p, libc::EFAULT, "local_array_fault");
}

#[test]
fn negative_lengths() {
    let p = model(&simple(
        "  syscall: readv\n  local: [{base: buf, len: -1}]\n  remote: [{base: data, len: 8}]\n",
    ));
    assert_err(&p, libc::EINVAL, "local_negative_len");
    let p = model(&simple(
        "  syscall: readv\n  local: [{base: buf, len: 8}]\n  remote: [{base: data, len: 2^63}]\n",
    ));
    assert_err(&p, libc::EINVAL, "remote_negative_len");
}

#[test]
fn negative_len_vs_unreadable_later_element_depends_on_version() {
    // Element 0 has a negative length; liovcnt 3 makes the kernel also read element 2, which
    // lies in the unmapped page after the array.
    let y = simple("  syscall: readv\n  liovcnt: 3\n  local: [{base: buf, len: -1}, {base: buf, len: 8}]\n  remote: [{base: data, len: 8}]\n");
    assert_err(
        &model_on(V612, &y, |_| {}),
        libc::EINVAL,
        "local_negative_len",
    );
    assert_err(
        &model_on(V61, &y, |_| {}),
        libc::EFAULT,
        "local_array_fault",
    );
}

#[test]
fn local_access_ok() {
    let p = model(&simple("  syscall: readv\n  local: [{base: kernel, len: 8}, {base: buf, len: 8}]\n  remote: [{base: data, len: 8}]\n"));
    assert_err(&p, libc::EFAULT, "local_access_ok");
    // access_ok(base, 0) still rejects a kernel address.
    let p = model(&simple("  syscall: readv\n  local: [{base: kernel, len: 0}, {base: buf, len: 8}]\n  remote: [{base: data, len: 8}]\n"));
    assert_err(&p, libc::EFAULT, "local_access_ok");
}

#[test]
fn single_segment_clamps_before_access_ok_from_6_4() {
    // base + 2^46 passes TASK_SIZE_MAX (2^47 - 4096) only after the clamp.
    let y = simple("  syscall: readv\n  local: [{base: buf, len: 2^47}]\n  remote: [{base: data, len: 4096}]\n");
    assert_ok(&model_on(V612, &y, |_| {}), 4096, "complete");
    assert_err(&model_on(V61, &y, |_| {}), libc::EFAULT, "local_access_ok");
}

#[test]
fn zero_shortcuts_skip_everything_after() {
    let p = model(&simple(
        "  syscall: readv\n  rvec: kernel\n  riovcnt: u64max\n  local: [{base: buf, len: 0}]\n",
    ));
    assert_ok(&p, 0, "local_zero_shortcut");
    let y = "description: t\ntarget:\n  kind: unused_pid\ncaller:\n  regions: [{name: buf, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 8}]\n  remote: [{base: null, len: 0}, {base: kernel, len: 0}]\n";
    assert_ok(&model(y), 0, "remote_zero_shortcut");
}

#[test]
fn remote_array_fault() {
    let p = model(&simple(
        "  syscall: readv\n  rvec: null\n  riovcnt: 1\n  local: [{base: buf, len: 8}]\n",
    ));
    assert_err(&p, libc::EFAULT, "remote_array_fault");
}

#[test]
fn pid_lookup_and_no_mm() {
    for (kind, step) in [
        ("pid0", "pid_lookup"),
        ("pid_minus1", "pid_lookup"),
        ("reaped", "pid_lookup"),
        ("unused_pid", "pid_lookup"),
        ("zombie", "no_mm"),
        ("zombie_leader", "no_mm"),
    ] {
        let y = format!("description: t\ntarget:\n  kind: {kind}\n  regions: [{{name: data, pages: 1}}]\ncaller:\n  regions: [{{name: buf, pages: 1}}]\ncall:\n  syscall: readv\n  local: [{{base: buf, len: 8}}]\n  remote: [{{base: data, len: 8}}]\n");
        assert_err(&model(&y), libc::ESRCH, step);
    }
}

fn perm_case(target: &str, caller: &str) -> String {
    format!("description: t\ntarget:\n  regions: [{{name: data, pages: 1}}]\n{target}caller:\n  regions: [{{name: buf, pages: 1}}]\n{caller}call:\n  syscall: readv\n  local: [{{base: buf, len: 8}}]\n  remote: [{{base: data, len: 8}}]\n")
}

#[test]
fn permission_rules() {
    let p = model(&perm_case("", "  creds: {uid: 1000}\n"));
    assert_err(&p, libc::EPERM, "perm_ids");
    // Real ids decide (PTRACE_MODE_REALCREDS): euid matching is not enough, real is enough.
    let p = model(&perm_case(
        "  creds: {uid: 1000}\n",
        "  creds: {uid: 2000, euid: 1000, gid: 1000}\n",
    ));
    assert_err(&p, libc::EPERM, "perm_ids");
    let p = model(&perm_case(
        "  creds: {uid: 1000}\n",
        "  creds: {uid: 1000, euid: 2000}\n",
    ));
    assert_ok(&p, 8, "complete");
    let p = model(&perm_case(
        "  creds: {uid: 1000, suid: 0}\n",
        "  creds: {uid: 1000}\n",
    ));
    assert_err(&p, libc::EPERM, "perm_ids");
    let p = model(&perm_case(
        "  creds: {uid: 1000}\n  dumpable: false\n",
        "  creds: {uid: 1000}\n",
    ));
    assert_err(&p, libc::EPERM, "perm_dumpable");
    let p = model(&perm_case("  creds: {uid: 1000}\n  dumpable: false\n", ""));
    assert_ok(&p, 8, "complete");
    let p = model(&perm_case(
        "  creds: {uid: 1000, keep_caps: true}\n",
        "  creds: {uid: 1000}\n",
    ));
    assert_err(&p, libc::EPERM, "perm_caps");
    let p = model(&perm_case(
        "",
        "  creds: {uid: 0, drop_caps: [CAP_SYS_PTRACE]}\n",
    ));
    assert_err(&p, libc::EPERM, "perm_caps");
    let p = model(&perm_case(
        "",
        "  creds: {uid: 0, drop_effective_caps: [CAP_SYS_PTRACE]}\n",
    ));
    assert_ok(&p, 8, "complete");
}

#[test]
fn same_mm_bypasses_permission() {
    for kind in ["self", "thread", "clone_vm"] {
        let y = format!("description: t\ntarget:\n  kind: {kind}\n  regions: [{{name: data, pages: 1}}]\ncaller:\n  regions: [{{name: buf, pages: 1}}]\n  creds: {{uid: 1000}}\ncall:\n  syscall: readv\n  local: [{{base: buf, len: 8}}]\n  remote: [{{base: data, len: 8}}]\n");
        assert_ok(&model(&y), 8, "complete");
    }
}

#[test]
fn yama_scopes() {
    let y = perm_case("  creds: {uid: 1000}\n", "  creds: {uid: 1000}\n");
    assert_ok(
        &model_on(V612, &y, |f| f.yama_scope = Some(0)),
        8,
        "complete",
    );
    assert_err(
        &model_on(V612, &y, |f| f.yama_scope = Some(1)),
        libc::EPERM,
        "perm_yama",
    );
    let root = perm_case("", "");
    assert_ok(
        &model_on(V612, &root, |f| f.yama_scope = Some(2)),
        8,
        "complete",
    );
    assert_err(
        &model_on(V612, &root, |f| f.yama_scope = Some(3)),
        libc::EPERM,
        "perm_yama",
    );
}

#[test]
fn remote_fault_is_page_granular() {
    let p = model(&simple("  syscall: readv\n  local: [{base: buf, len: 2*page}]\n  remote: [{base: data+100, len: 2*page}]\n"));
    assert_ok(&p, 3996, "remote_fault");
    let p = model(&simple(
        "  syscall: readv\n  local: [{base: buf, len: 8}]\n  remote: [{base: none, len: 8}]\n",
    ));
    assert_err(&p, libc::EFAULT, "remote_fault");
}

#[test]
fn stops_at_first_faulting_iovec() {
    let p = model(&simple(
        "  syscall: readv\n  local: [{base: buf, len: 30}]\n  remote: [{base: data, len: 10}, {base: none, len: 10}, {base: data+10, len: 10}]\n",
    ));
    assert_ok(&p, 10, "remote_fault");
}

#[test]
fn local_fault_is_byte_exact() {
    let p = model(&simple("  syscall: readv\n  local: [{base: buf+2*page-100, len: 200}]\n  remote: [{base: data, len: 200}]\n"));
    assert_ok(&p, 100, "local_fault");
    let p = model(&simple(
        "  syscall: readv\n  local: [{base: ro, len: 8}]\n  remote: [{base: data, len: 8}]\n",
    ));
    assert_err(&p, libc::EFAULT, "local_fault");
}

#[test]
fn remote_length_is_unbounded() {
    let p = model(&simple("  syscall: readv\n  local: [{base: buf, len: page}]\n  remote: [{base: data, len: 2^62}]\n"));
    assert_ok(&p, 4096, "complete");
}

#[test]
fn max_rw_count_clamps_the_local_total() {
    let y = "description: t\ntarget:\n  regions: [{name: big, pages: 600000, fill: untouched}]\ncaller:\n  regions: [{name: buf, pages: 1024}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 4*MiB, repeat: 600}]\n  remote: [{base: big, len: 600000*page}]\n";
    let p = model(y);
    assert_ok(&p, 0x7fff_f000, "complete");
}

#[test]
fn writev_needs_vm_write_remotely_and_reads_write_only_locally() {
    let y = "description: t\ntarget:\n  regions: [{name: ro, pages: 1, prot: ro}, {name: wo, pages: 1, prot: wo}]\ncaller:\n  regions: [{name: src, pages: 1, prot: wo}]\ncall:\n  syscall: writev\n  local: [{base: src, len: 8}]\n  remote: [{base: ro, len: 8}]\n";
    assert_err(&model(y), libc::EFAULT, "remote_fault");
    let y = y.replace("{base: ro, len: 8}", "{base: wo, len: 8}");
    assert_ok(&model(&y), 8, "complete");
}

#[test]
fn exec_only_local_source_depends_on_pku() {
    let y = "description: t\ntarget:\n  regions: [{name: d, pages: 1}]\ncaller:\n  regions: [{name: src, pages: 1, prot: xo}]\ncall:\n  syscall: writev\n  local: [{base: src, len: 8}]\n  remote: [{base: d, len: 8}]\n";
    assert_ok(&model_on(V612, y, |f| f.pku = false), 8, "complete");
    assert_err(
        &model_on(V612, y, |f| f.pku = true),
        libc::EFAULT,
        "local_fault",
    );
}

#[test]
fn file_pages_past_eof_fault() {
    let y = "description: t\ntarget:\n  regions: [{name: f, pages: 3, kind: file_private, file_size: 100}]\ncaller:\n  regions: [{name: buf, pages: 3}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 3*page}]\n  remote: [{base: f, len: 3*page}]\n";
    assert_ok(&model(y), 4096, "remote_fault");
}

#[test]
fn copies_record_where_bytes_go() {
    let p = model(&simple("  syscall: readv\n  local: [{base: buf, len: 4}, {base: buf+100, len: 4}]\n  remote: [{base: data+8, len: 8}]\n"));
    assert_ok(&p, 8, "complete");
    assert_eq!(p.copies.len(), 2);
    assert_eq!(p.copies[1].remote - p.copies[0].remote, 4);
    assert_eq!(p.copies[1].local - p.copies[0].local, 100);
}

#[test]
fn compat_length_at_2_31_is_negative() {
    let y = "description: t\ntarget:\n  regions: [{name: data, pages: 1}]\ncaller:\n  regions: [{name: buf, pages: 1}]\ncall:\n  syscall: readv\n  entry: compat\n  local: [{base: buf, len: 2^31}]\n  remote: [{base: data, len: 8}]\n";
    assert_err(&model(y), libc::EINVAL, "local_negative_len");
}

#[test]
fn bare_yaml_null_is_the_null_pointer() {
    let p = model(&simple(
        "  syscall: readv\n  lvec: null\n  liovcnt: 1\n  remote: [{base: data, len: 8}]\n",
    ));
    assert_err(&p, libc::EFAULT, "local_array_fault");
    let p = model(&simple(
        "  syscall: readv\n  local: [{base: buf, len: 8}]\n  remote: [{base: null, len: 8}]\n",
    ));
    assert_err(&p, libc::EFAULT, "remote_fault");
}

const V510: (u32, u32, u32) = (5, 10, 223);

fn stack_case(extra: &str, syscall: &str, base: &str, len: u64) -> String {
    format!("description: t\ntarget:\n  regions:\n{extra}    - {{name: stack, pages: 4, at: 512, kind: growsdown}}\ncaller:\n  regions:\n    - {{name: buf, pages: 2}}\ncall:\n  syscall: {syscall}\n  local: [{{base: buf, len: {len}}}]\n  remote: [{{base: {base}, len: {len}}}]\n")
}

/// SEMANTICS "Version differences" row 8: GUP grows a VM_GROWSDOWN vma (find_extend_vma)
/// before 6.5 / 6.1.37; afterwards vma_lookup / gup_vma_lookup never do.
#[test]
fn gup_stack_growth_is_version_gated() {
    let y = stack_case("", "readv", "stack-4096", 4096);
    assert_ok(&model_on(V510, &y, |_| {}), 4096, "complete");
    assert_ok(&model_on((6, 1, 36), &y, |_| {}), 4096, "complete");
    assert_err(
        &model_on((6, 1, 37), &y, |_| {}),
        libc::EFAULT,
        "remote_fault",
    );
    assert_err(&model_on(V612, &y, |_| {}), libc::EFAULT, "remote_fault");
    assert_err(
        &model_on((7, 2, 13), &y, |_| {}),
        libc::EFAULT,
        "remote_fault",
    );
    // Straddling the start: zeros, then the stack's own bytes.
    let y = stack_case("", "readv", "stack-100", 200);
    let p = model_on(V510, &y, |_| {});
    assert_ok(&p, 200, "complete");
    assert_err(&model_on(V612, &y, |_| {}), libc::EFAULT, "remote_fault");
    // Writes grow it too.
    let y = stack_case("", "writev", "stack-4096", 4096);
    assert_ok(&model_on(V510, &y, |_| {}), 4096, "complete");
}

#[test]
fn stack_growth_respects_guard_gap_and_rlimit() {
    // An accessible neighbour within stack_guard_gap: expand_downwards refuses.
    let y = stack_case(
        "    - {name: low, pages: 1, at: 300}\n",
        "readv",
        "stack-4096",
        4096,
    );
    assert_err(&model_on(V510, &y, |_| {}), libc::EFAULT, "remote_fault");
    // A PROT_NONE neighbour is not "accessible": no gap enforced.
    let y = stack_case(
        "    - {name: low, pages: 1, at: 508, prot: none}\n",
        "readv",
        "stack-4096",
        4096,
    );
    assert_ok(&model_on(V510, &y, |_| {}), 4096, "complete");
    // acct_stack_growth: the grown size may not exceed the caller's RLIMIT_STACK.
    let y = stack_case("", "readv", "stack-4096", 4096);
    assert_err(
        &model_on(V510, &y, |f| f.stack_rlimit = 4 * 4096),
        libc::EFAULT,
        "remote_fault",
    );
    assert_ok(
        &model_on(V510, &y, |f| f.stack_rlimit = 5 * 4096),
        4096,
        "complete",
    );
}

#[test]
fn secretmem_refused_remotely_but_not_locally() {
    let t = "description: t\nrequires: {features: [secretmem]}\ntarget:\n  regions:\n    - {name: data, pages: 1}\n    - {name: sec, pages: 1, kind: secretmem}\ncaller:\n  regions:\n    - {name: buf, pages: 2}\n    - {name: lsec, pages: 1, kind: secretmem}\ncall:\n";
    let p = model(&format!("{t}  syscall: readv\n  local: [{{base: buf, len: 2*page}}]\n  remote: [{{base: data+100, len: 2*page}}]\n"));
    assert_ok(&p, 3996, "remote_fault");
    let p = model(&format!("{t}  syscall: writev\n  local: [{{base: buf, len: 8}}]\n  remote: [{{base: sec, len: 8}}]\n"));
    assert_err(&p, libc::EFAULT, "remote_fault");
    let p = model(&format!("{t}  syscall: readv\n  local: [{{base: lsec, len: 8}}]\n  remote: [{{base: data, len: 8}}]\n"));
    assert_ok(&p, 8, "complete");
}

#[test]
fn guard_markers_fault_everything_and_mseal_changes_nothing() {
    let t = "description: t\nrequires: {features: [guard_pages, mseal]}\ntarget:\n  regions:\n    - {name: g, pages: 1, kind: guarded}\n    - {name: s, pages: 1, kind: sealed}\ncaller:\n  regions:\n    - {name: buf, pages: 1}\n    - {name: lg, pages: 1, kind: guarded}\ncall:\n";
    for sys in ["readv", "writev"] {
        let p = model(&format!("{t}  syscall: {sys}\n  local: [{{base: buf, len: 8}}]\n  remote: [{{base: g, len: 8}}]\n"));
        assert_err(&p, libc::EFAULT, "remote_fault");
        let p = model(&format!("{t}  syscall: {sys}\n  local: [{{base: buf, len: 8}}]\n  remote: [{{base: s, len: 8}}]\n"));
        assert_ok(&p, 8, "complete");
    }
    let p = model(&format!("{t}  syscall: readv\n  local: [{{base: buf+4090, len: 100}}]\n  remote: [{{base: s, len: 100}}]\n"));
    assert_ok(&p, 6, "local_fault");
}

/// Every case under cases/yama/ pins what yama_ptrace_access_check decides at its scope.
#[test]
fn yama_case_pins_hold_at_their_scope() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases/yama");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let plan = pvmtest::runner::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let scope = plan
            .requires
            .yama_scope
            .expect("yama cases declare a scope");
        for v in [V510, V61, V612, (7, 2, 13)] {
            let mut facts = Facts::example(v);
            facts.yama_scope = Some(scope);
            pvmtest::check::check_pin(&plan, &facts)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        n += 1;
    }
    assert_eq!(n, 28);
}

/// A pin must hold wherever the case can run: for every Yama state a kernel may boot with
/// (absent, or any scope; an upstream build defaults to 1, Debian to 0) on every series the
/// case admits, and for every harness its requirements admit (root with every capability,
/// and an unprivileged user unless it requires root). Pins of cases without `yama_scope`
/// describe the case with Yama out of the way, and every pin describes the harness its
/// requirements fix (check::pin_harness). The Yama rule failed for five eperm cases before
/// it existed, found by booting a kernel built with upstream's default scope 1; the harness
/// rule for eperm/root_vs_nondumpable_root_writev, found by running as a non-root user.
/// Where the case's requirements are met, the runtime neither fails the pin nor skips the
/// case as one this harness cannot check.
#[test]
fn pins_hold_under_every_yama_state_and_harness() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    let files = pvmtest::runner::collect(&[dir]).unwrap();
    let mut bad = Vec::new();
    for path in files {
        let plan = pvmtest::runner::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let harnesses = [
            ("root", pvmtest::check::root_harness()),
            ("nobody", pvmtest::check::unprivileged_harness(&plan)),
        ];
        for v in [V510, V61, V612, (7, 2, 13), (7, 3, 4)] {
            for yama in [None, Some(0), Some(1), Some(2), Some(3)] {
                for (who, creds) in harnesses {
                    let mut facts = Facts::example(v);
                    facts.yama_scope = yama;
                    facts.creds = creds;
                    if pvmtest::check::unmet_requirement(&plan, &facts).is_some() {
                        continue;
                    }
                    let at = format!("{} on {v:?} with Yama {yama:?} as {who}", plan.id);
                    if let Err(e) = pvmtest::check::check_pin(&plan, &facts) {
                        bad.push(format!("{at}: {e}"));
                    }
                    if let Some(e) = pvmtest::check::pin_not_checkable_here(&plan, &facts) {
                        bad.push(format!("{at}: skipped: {e}"));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn yama_scope_one_exceptions() {
    let unpriv = "  creds: {uid: 1000}\n";
    for (target, ok) in [
        ("  creds: {uid: 1000}\n", false),
        ("  creds: {uid: 1000}\n  parent: caller\n", true),
        ("  creds: {uid: 1000}\n  ptracer: any\n", true),
        ("  creds: {uid: 1000}\n  ptracer: harness\n", true),
    ] {
        let y = perm_case(target, unpriv).replace(
            "description: t\n",
            "description: t\nrequires: {features: [yama]}\n",
        );
        let p = model_on(V612, &y, |f| f.yama_scope = Some(1));
        if ok {
            assert_ok(&p, 8, "complete");
        } else {
            assert_err(&p, libc::EPERM, "perm_yama");
        }
        // Scope 2 ignores relationships.
        let p = model_on(V612, &y, |f| f.yama_scope = Some(2));
        assert_err(&p, libc::EPERM, "perm_yama");
    }
    // A non-root caller with CAP_SYS_PTRACE raised in its effective set passes scope 2.
    let y = perm_case(
        "  creds: {uid: 2000}\n",
        "  creds: {uid: 1000, keep_caps: true, raise_caps: [CAP_SYS_PTRACE]}\n",
    );
    assert_ok(
        &model_on(V612, &y, |f| f.yama_scope = Some(2)),
        8,
        "complete",
    );
    assert_err(
        &model_on(V612, &y, |f| f.yama_scope = Some(3)),
        libc::EPERM,
        "perm_yama",
    );
}

#[test]
fn vdso_pins_for_read_only_and_vvar_never() {
    let read = |base: &str| {
        simple(&format!("  syscall: readv\n  local: [{{base: buf, len: 64}}]\n  remote: [{{base: {base}, len: 64}}]\n"))
    };
    let write = |base: &str| {
        simple(&format!("  syscall: writev\n  local: [{{base: buf, len: 64}}]\n  remote: [{{base: {base}, len: 64}}]\n"))
    };
    let p = model(&read("vdso+8"));
    assert_ok(&p, 64, "complete");
    // The bytes come from the harness's vdso: the copy records its real address, and the
    // prediction carries the mapping so the checker can read it.
    let vdso = Facts::example(V612).vdso.unwrap();
    assert_eq!(p.copies[0].remote, vdso.start + 8);
    assert!(p.mappings.iter().any(|m| m.name == "vdso"));
    assert_err(&model(&write("vdso")), libc::EFAULT, "remote_fault");
    assert_err(&model(&read("vvar")), libc::EFAULT, "remote_fault");
    assert_err(&model(&write("vvar")), libc::EFAULT, "remote_fault");
    // Below the vdso lies the data mapping: [vvar] up to 6.12, [vvar_vclock] later.
    let p = model(&read("vdso-8"));
    assert_eq!(p.detail.as_deref(), Some("at vvar+16376"));
    let p = model_on((7, 2, 0), &read("vdso-8"), |_| {});
    assert_eq!(p.detail.as_deref(), Some("at vvar_vclock+8184"));
    // A readv into the vdso faults at its first byte.
    let y = simple(
        "  syscall: readv\n  local: [{base: vdso, len: 64}]\n  remote: [{base: data, len: 64}]\n",
    );
    assert_err(&model(&y), libc::EFAULT, "local_fault");
}

#[test]
fn special_names_are_validated() {
    let bad = |call: &str| {
        load_str("t.yaml", "t", &simple(call))
            .unwrap_err()
            .to_string()
    };
    let e = bad("  syscall: readv\n  entry: compat\n  local: [{base: buf, len: 1}]\n  remote: [{base: vdso, len: 1}]\n");
    assert!(e.contains("above 4 GiB"), "{e}");
    let e = bad(
        "  syscall: writev\n  local: [{base: vvar, len: 1}]\n  remote: [{base: data, len: 1}]\n",
    );
    assert!(e.contains("not modelled"), "{e}");
    let e = bad("  syscall: readv\n  lvec: vdso\n  local: [{base: buf, len: 1}]\n  remote: [{base: data, len: 1}]\n");
    assert!(e.contains("not modelled"), "{e}");
    // Naming a mapping requires it, so a kernel without it skips the case.
    let plan = load_str("t.yaml", "t", &simple("  syscall: readv\n  local: [{base: buf, len: 1}]\n  remote: [{base: vvar_vclock, len: 1}]\n")).unwrap();
    let facts = Facts::example(V612);
    assert!(
        pvmtest::check::unmet_requirement(&plan, &facts).is_some_and(|w| w.contains("vvar_vclock"))
    );
}

#[test]
fn vvar_io_is_version_gated() {
    let y = simple(
        "  syscall: readv\n  local: [{base: buf, len: 64}]\n  remote: [{base: vvar, len: 64}]\n",
    );
    assert_err(
        &model_on((7, 2, 13), &y, |_| {}),
        libc::EFAULT,
        "remote_fault",
    );
    // 7.3: [vvar] without VM_IO is pinnable; [vvar_vclock] keeps VM_IO|VM_PFNMAP.
    assert_ok(&model_on((7, 3, 4), &y, |_| {}), 64, "complete");
    let y = y.replace("base: vvar,", "base: vvar_vclock,");
    assert_err(
        &model_on((7, 3, 4), &y, |_| {}),
        libc::EFAULT,
        "remote_fault",
    );
}

#[test]
fn vvar_on_7_3_pins_only_the_present_time_page() {
    // lib/vdso/datastore.c (7.3-rc7) vvar_fault: VM_FAULT_SIGBUS for FAULT_FLAG_REMOTE, so
    // only the time page the harness faulted in before forking can be pinned.
    let read = |base: &str, len: u64| {
        simple(&format!(
            "  syscall: readv\n  local: [{{base: buf, len: {len}}}]\n  remote: [{{base: {base}, len: {len}}}]\n"
        ))
    };
    let p = model_on((7, 3, 4), &read("vvar+page-100", 200), |_| {});
    assert_ok(&p, 100, "remote_fault");
    assert_eq!(p.detail.as_deref(), Some("at vvar+4096"));
    for v in [(6, 12, 0), (7, 2, 13), (7, 3, 4)] {
        assert_err(
            &model_on(v, &read("vvar+page", 64), |_| {}),
            libc::EFAULT,
            "remote_fault",
        );
    }
    // The rng page may or may not be mapped (libc's vDSO getrandom): not modelled.
    let e = load_str("t.yaml", "t", &read("vvar+2*page", 8)).unwrap_err();
    assert!(e.to_string().contains("rng page"), "{e}");
}

/// A case with `requires.features` and the given target and caller sections.
fn ns_case(features: &str, target: &str, caller: &str) -> String {
    format!("description: t\nrequires:\n  features: [{features}]\ntarget:\n  regions: [{{name: data, pages: 1}}]\n{target}caller:\n  regions: [{{name: buf, pages: 1}}]\n{caller}call:\n  syscall: readv\n  local: [{{base: buf, len: 8}}]\n  remote: [{{base: data, len: 8}}]\n")
}

/// pid_lookup (docs/SEMANTICS.md, "A caller in a new PID namespace"): find_vpid looks in the
/// caller's namespace, which holds the caller, its threads and what it forked.
#[test]
fn pidns_caller_sees_only_its_own_namespace() {
    let inside = "  pidns: true\n";
    for target in ["  kind: self\n", "  kind: thread\n", "  parent: caller\n"] {
        let p = model(&ns_case("pidns", target, inside));
        assert_ok(&p, 8, "complete");
    }
    for (target, features) in [
        ("", "pidns"),
        ("  kind: zombie\n", "pidns"),
        ("  kind: pidns_child\n", "pidns"),
        ("  kind: kthread\n", "pidns, kthreadd"),
        ("  kind: zombie_leader_thread\n", "pidns"),
    ] {
        let p = model(&ns_case(features, target, inside));
        assert_err(&p, libc::ESRCH, "pid_lookup");
    }
    // Permission checks run as usual on a task found inside.
    let p = model(&ns_case(
        "pidns",
        "  parent: caller\n",
        "  pidns: true\n  creds: {uid: 1000}\n",
    ));
    assert_err(&p, libc::EPERM, "perm_ids");
    // A namespace init may not use CLONE_PARENT, which a clone_vm target needs.
    let y = ns_case("pidns", "  kind: clone_vm\n", inside);
    let e = pvmtest::runner::load_str("t.yaml", "t", &y).unwrap_err();
    assert!(e.to_string().contains("caller.pidns"), "{e}");
    // Without the feature the case is refused, not run unprivileged.
    let y = ns_case("memfd", "", inside);
    assert!(pvmtest::runner::load_str("t.yaml", "t", &y).is_err());
}

/// perm_ids / perm_dumpable / perm_caps across user namespaces (docs/SEMANTICS.md, "11a. User
/// namespaces"): cap_capable asked of the target credentials' namespace and of its mm's.
#[test]
fn userns_capabilities_count_in_the_targets_namespace() {
    let u = "userns";
    // A caller that unshared: its capabilities stop at its own namespace.
    let p = model(&ns_case(
        u,
        "  creds: {uid: 1000}\n",
        "  creds: {uid: 1000}\n  userns: true\n",
    ));
    assert_err(&p, libc::EPERM, "perm_caps");
    let p = model(&ns_case(u, "", "  userns: true\n"));
    assert_err(&p, libc::EPERM, "perm_caps");
    let p = model(&ns_case(u, "  dumpable: false\n", "  userns: true\n"));
    assert_err(&p, libc::EPERM, "perm_dumpable");
    let p = model(&ns_case(
        u,
        "  kind: self\n",
        "  creds: {uid: 1000}\n  userns: true\n",
    ));
    assert_ok(&p, 8, "complete");
    // A target that unshared: its owner holds every capability there, not over its mm.
    let owned = "  creds: {uid: 1000}\n  userns: true\n";
    let p = model(&ns_case(u, owned, "  creds: {uid: 1000, gid: 1001}\n"));
    assert_ok(&p, 8, "complete");
    let p = model(&ns_case(u, owned, "  creds: {uid: 2000}\n"));
    assert_err(&p, libc::EPERM, "perm_ids");
    let p = model(&ns_case(
        u,
        "  creds: {uid: 1000}\n  userns: true\n  dumpable: false\n",
        "  creds: {uid: 1000, gid: 1001}\n",
    ));
    assert_err(&p, libc::EPERM, "perm_dumpable");
    // CAP_SYS_PTRACE in the parent covers the child namespace; without it, nothing does.
    let p = model(&ns_case(u, owned, ""));
    assert_ok(&p, 8, "complete");
    let p = model(&ns_case(
        u,
        owned,
        "  creds: {uid: 0, drop_effective_caps: [CAP_SYS_PTRACE]}\n",
    ));
    assert_err(&p, libc::EPERM, "perm_ids");
    // Both in namespaces of their own: siblings, neither an ancestor.
    let p = model(&ns_case(u, owned, "  creds: {uid: 1000}\n  userns: true\n"));
    assert_err(&p, libc::EPERM, "perm_caps");
    // Yama scope 2 asks for CAP_SYS_PTRACE in the target's namespace too.
    let y = ns_case(u, owned, "  creds: {uid: 1000, gid: 1001}\n");
    let p = model_on(V612, &y, |f| f.yama_scope = Some(2));
    assert_ok(&p, 8, "complete");
    // Refused shapes.
    for (target, caller, field) in [
        ("  kind: thread\n", "  userns: true\n", "caller.userns"),
        ("  kind: zombie\n  userns: true\n", "", "target.userns"),
    ] {
        let e = pvmtest::runner::load_str("t.yaml", "t", &ns_case(u, target, caller)).unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
    let e = pvmtest::runner::load_str("t.yaml", "t", &ns_case("memfd", owned, "")).unwrap_err();
    assert!(e.to_string().contains("userns"), "{e}");
}

/// Protection keys (docs/SEMANTICS.md, "12a'''. Protection keys"): pins ignore them
/// (FOLL_REMOTE → foreign), the caller's own user copies obey its PKRU.
#[test]
fn pkeys_bind_user_copies_not_pins() {
    let case = |target: &str, tregion: &str, cregion: &str, call: &str| {
        format!("description: t\nrequires:\n  features: [pkeys]\ntarget:\n{target}  regions: [{{name: data, pages: 2{tregion}}}]\ncaller:\n  regions: [{{name: buf, pages: 1}}, {{name: locked, pages: 1{cregion}}}]\ncall:\n{call}")
    };
    let readv = "  syscall: readv\n  local: [{base: buf, len: 8192}]\n  remote: [{base: data, len: 8192}]\n";
    let writev = "  syscall: writev\n  local: [{base: buf, len: 8192}]\n  remote: [{base: data, len: 8192}]\n";
    for k in [", pkey: deny_access", ", pkey: deny_write"] {
        for call in [readv, writev] {
            for target in ["", "  kind: self\n"] {
                let p = model(&case(target, k, "", call));
                assert_ok(&p, 8192, "complete");
            }
        }
    }
    // The caller's second page is keyed: the copy stops at its boundary.
    let p = model(&case("", "", ", pkey: deny_access", readv));
    assert_ok(&p, 4096, "local_fault");
    let p = model(&case("", "", ", pkey: deny_write", readv));
    assert_ok(&p, 4096, "local_fault");
    let p = model(&case("", "", ", pkey: deny_write", writev));
    assert_ok(&p, 8192, "complete");
    let p = model(&case("", "", ", pkey: deny_access", writev));
    assert_ok(&p, 4096, "local_fault");
    // Refused shapes.
    let y = "description: t\nrequires:\n  features: [pkeys]\ntarget:\n  regions: [{name: data, pages: 1, kind: memfd_shared, pkey: deny_write}]\ncall:\n  syscall: readv\n";
    assert!(pvmtest::runner::load_str("t.yaml", "t", y).is_err());
    let y = "description: t\ntarget:\n  regions: [{name: data, pages: 1, pkey: deny_write}]\ncall:\n  syscall: readv\n";
    let e = pvmtest::runner::load_str("t.yaml", "t", y).unwrap_err();
    assert!(e.to_string().contains("pkeys"), "{e}");
}

/// The `[aio]` ring (docs/SEMANTICS.md, "12a''''"): pinnable both ways, read as the kernel's
/// header and zeroed events.
#[test]
fn aio_ring_is_pinnable_and_holds_the_header() {
    let case = |call: &str| {
        format!("description: t\nrequires:\n  features: [aio]\ntarget:\n  regions:\n    - {{name: ring, pages: 1, kind: aio_ring}}\n    - {{name: gap, pages: 1, kind: hole}}\ncaller:\n  regions: [{{name: buf, pages: 2}}]\ncall:\n{call}")
    };
    let p = model(&case("  syscall: readv\n  local: [{base: buf, len: 8192}]\n  remote: [{base: ring, len: 8192}]\n"));
    assert_ok(&p, 4096, "remote_fault");
    let p = model(&case("  syscall: writev\n  local: [{base: buf, len: 100}]\n  remote: [{base: ring+32, len: 100}]\n"));
    assert_ok(&p, 100, "complete");
    // id 0, nr 127, head 0, tail 0, AIO_RING_MAGIC, compat 1, incompat 0, header_length 32.
    let header: Vec<u8> = [0u32, 127, 0, 0, 0xa10a_10a1, 1, 0, 32]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let got: Vec<u8> = (0..32)
        .map(|o| pvmtest::pattern::aio_ring_byte(4096, o))
        .collect();
    assert_eq!(got, header);
    assert!((32..4096).all(|o| pvmtest::pattern::aio_ring_byte(4096, o) == 0));
    // Only a child target's, rw.
    for (target, caller) in [
        ("  kind: self\n", ""),
        ("", "  regions: [{name: r, pages: 1, kind: aio_ring}]\n"),
    ] {
        let y = format!("description: t\nrequires:\n  features: [aio]\ntarget:\n{target}  regions: [{{name: ring, pages: 1, kind: aio_ring}}]\ncaller:\n{caller}call:\n  syscall: readv\n");
        assert!(pvmtest::runner::load_str("t.yaml", "t", &y).is_err(), "{y}");
    }
}

/// io_uring mappings (docs/SEMANTICS.md, "12a'''''"): VM_IO|VM_PFNMAP where io_uring_mmap
/// uses remap_pfn_range (5.10, 6.1 before 6.1.132, 6.2 to 6.9), pinnable VM_MIXEDMAP pages
/// where it uses vm_insert_pages; the ring holds the masks and sizes at a layout-dependent
/// offset.
#[test]
fn io_uring_pinnable_by_version_and_ring_layout() {
    let case = |kind: &str, call: &str| {
        format!("description: t\nrequires:\n  features: [io_uring]\ntarget:\n  regions:\n    - {{name: data, pages: 1}}\n    - {{name: ring, pages: 1, kind: {kind}}}\n    - {{name: gap, pages: 1, kind: hole}}\ncaller:\n  regions: [{{name: buf, pages: 3}}]\ncall:\n{call}")
    };
    let read = "  syscall: readv\n  local: [{base: buf, len: 3*page}]\n  remote: [{base: data, len: page}, {base: ring, len: 2*page}]\n";
    let write = "  syscall: writev\n  local: [{base: buf, len: 2*page}]\n  remote: [{base: ring, len: 2*page}]\n";
    for kind in ["io_uring_sq_ring", "io_uring_cq_ring", "io_uring_sqes"] {
        for (v, pinnable) in [
            ((5, 10, 223), false),
            ((6, 1, 131), false),
            ((6, 1, 132), true),
            ((6, 1, 176), true),
            ((6, 6, 0), false),
            ((6, 10, 0), true),
            ((6, 12, 117), true),
            ((7, 2, 13), true),
        ] {
            let p = model_on(v, &case(kind, read), |_| {});
            let p2 = model_on(v, &case(kind, write), |_| {});
            if pinnable {
                assert_ok(&p, 8192, "remote_fault");
                assert_ok(&p2, 4096, "remote_fault");
            } else {
                assert_ok(&p, 4096, "remote_fault");
                assert_err(&p2, libc::EFAULT, "remote_fault");
            }
        }
    }
    use pvmtest::case::RegionKind;
    use pvmtest::pattern::{io_uring_byte, IoRingsLayout};
    let ring = |layout, off| io_uring_byte(RegionKind::IoUringSqRing, layout, off).unwrap();
    // sq_ring_mask 0, cq_ring_mask 1, sq_ring_entries 1, cq_ring_entries 2.
    let want: Vec<u8> = [0u32, 1, 1, 2]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    for (layout, at) in [(IoRingsLayout::Packed, 16u64), (IoRingsLayout::Padded, 256)] {
        let got: Vec<u8> = (at..at + 16).map(|o| ring(layout, o)).collect();
        assert_eq!(got, want);
        assert!((0..4096)
            .filter(|o| !(at..at + 16).contains(o))
            .all(|o| ring(layout, o) == 0));
    }
    assert!((0..4096)
        .all(|o| io_uring_byte(RegionKind::IoUringSqes, IoRingsLayout::Padded, o) == Some(0)));
    assert_eq!(
        pvmtest::model::Rules::for_version((6, 1, 176)).io_rings,
        IoRingsLayout::Padded
    );
    assert_eq!(
        pvmtest::model::Rules::for_version((6, 12, 0)).io_rings,
        IoRingsLayout::Packed
    );
}

/// What an io_uring region may be: a `child` target's, `rw`, unfilled, one page, once per kind,
/// native only, declared `features: [io_uring]`.
#[test]
fn io_uring_regions_are_validated() {
    let ok = "description: t\nrequires:\n  features: [io_uring]\ntarget:\n  regions: [{name: r, pages: 1, kind: io_uring_sqes}]\ncaller:\n  regions: [{name: b, pages: 1}]\ncall:\n  syscall: readv\n";
    assert!(load_str("t.yaml", "t", ok).is_ok());
    for (from, to, what) in [
        ("  features: [io_uring]\n", "  features: []\n", "io_uring"),
        ("pages: 1, kind", "pages: 2, kind", "one page"),
        (
            "kind: io_uring_sqes}",
            "kind: io_uring_sqes, prot: ro}",
            "rw",
        ),
        (
            "kind: io_uring_sqes}]",
            "kind: io_uring_sqes}, {name: s, pages: 1, kind: io_uring_sqes}]",
            "at most one",
        ),
        ("target:\n", "target:\n  kind: self\n", "child"),
        (
            "  syscall: readv\n",
            "  syscall: readv\n  entry: compat\n",
            "native",
        ),
    ] {
        let y = ok.replace(from, to);
        assert_ne!(y, ok, "{from}");
        let e = load_str("t.yaml", "t", &y).unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
}

/// The target's `[uprobes]` area (docs/SEMANTICS.md, "12a''''''"): VM_IO, so every pin of it
/// fails; it is the target's own, named only in call.remote of a `child` target, and absent
/// from plans that do not name it.
#[test]
fn uprobes_area_refuses_pins_and_is_the_targets_own() {
    let case = |target: &str, call: &str| {
        format!("description: t\nrequires:\n  root: true\n  features: [uprobes]\ntarget:\n{target}  regions: [{{name: data, pages: 1}}]\ncaller:\n  regions: [{{name: buf, pages: 2}}]\ncall:\n{call}")
    };
    for v in [(5, 10, 223), (6, 1, 176), (6, 12, 117), (7, 2, 13)] {
        let p = model_on(v, &case("", "  syscall: readv\n  local: [{base: buf, len: page}]\n  remote: [{base: uprobes, len: page}]\n"), |_| {});
        assert_err(&p, libc::EFAULT, "remote_fault");
        let p = model_on(v, &case("", "  syscall: writev\n  local: [{base: buf, len: 2*page}]\n  remote: [{base: data, len: page}, {base: uprobes+100, len: 10}]\n"), |_| {});
        assert_ok(&p, 4096, "remote_fault");
    }
    for (target, call) in [
        ("", "  syscall: readv\n  local: [{base: uprobes, len: 1}]\n  remote: [{base: data, len: 1}]\n"),
        ("  kind: self\n", "  syscall: readv\n  local: [{base: buf, len: 1}]\n  remote: [{base: uprobes, len: 1}]\n"),
    ] {
        let e = load_str("t.yaml", "t", &case(target, call)).unwrap_err();
        assert!(e.to_string().contains("[uprobes]"), "{e}");
    }
    // A plan that does not name it has no [uprobes] region, even where the harness can make
    // one: an address there is unmapped as before.
    let y = case(
        "",
        "  syscall: readv\n  local: [{base: buf, len: 1}]\n  remote: [{base: data, len: 1}]\n",
    );
    let plan = load_str("t.yaml", "t", &y).unwrap();
    let facts = Facts::example((6, 12, 0));
    assert!(facts.uprobes);
    assert!(plan
        .bind(&facts)
        .special_regions
        .iter()
        .all(|r| r.kind != pvmtest::case::RegionKind::Uprobes));
}
