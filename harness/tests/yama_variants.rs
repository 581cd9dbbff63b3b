//! Which cases get a second run with Yama out of the way (`<case>@yama0`,
//! `runner::with_yama0_variants`), on the real catalogue and hand-written facts: a kernel
//! whose Yama scope refuses a call that reaches the permission checks hides those checks, so
//! faults in them (dumpable, saved uid, saved gid ignored) only show at scope 0. Never touches
//! the kernel.

use pvmtest::facts::Facts;
use pvmtest::model::{predict, yama_hides_permission_checks, PERM_STEPS_BEFORE_YAMA};
use pvmtest::plan::Plan;
use pvmtest::runner::{self, YAMA0_SUFFIX};

const V612: (u32, u32, u32) = (6, 12, 0);

fn catalogue() -> Vec<Plan> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    runner::collect(&[dir])
        .expect("cases/")
        .iter()
        .map(|f| runner::load(f).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn facts(scope: Option<u8>) -> Facts {
    let mut f = Facts::example(V612);
    f.yama_scope = scope;
    f
}

fn variant_ids(scope: Option<u8>) -> Vec<String> {
    runner::with_yama0_variants(catalogue(), &facts(scope))
        .into_iter()
        .filter_map(|p| p.id.strip_suffix(YAMA0_SUFFIX).map(str::to_string))
        .collect()
}

#[test]
fn no_variants_without_yama_or_at_scope_0() {
    let ids: Vec<String> = catalogue().into_iter().map(|p| p.id).collect();
    for scope in [None, Some(0)] {
        let out: Vec<String> = runner::with_yama0_variants(catalogue(), &facts(scope))
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(
            out, ids,
            "scope {scope:?}: the run must be today's, case for case"
        );
    }
}

#[test]
fn scope_1_reruns_the_sibling_cases_whose_permission_checks_it_hides() {
    let v = variant_ids(Some(1));
    // The seeded faults of docs/BENCHMARKS.md: each is caught by one of these.
    for id in [
        "eperm/nondumpable_matching_ids",         // dumpable ignored
        "eperm/target_suid_differs_unprivileged", // saved uid ignored
        "eperm/target_suid_differs",
        "eperm/target_sgid_differs",  // saved gid ignored
        "eperm/target_euid_differs",  // perm_ids
        "eperm/target_keeps_caps",    // perm_caps
        "eperm/matching_ids_readv",   // allowed at scope 0, Yama refuses at 1
        "eperm/unpriv_vs_root_readv", // perm_ids
        "eperm/caller_gid_differs",   // perm_ids
    ] {
        assert!(v.iter().any(|x| x == id), "{id} has no @yama0 run: {v:?}");
    }
    for id in [
        // Yama 1 lets a caller at its own child: the kernel's default already shows the checks.
        "eperm/descendant_matching_ids_writev",
        // Same mm: ptrace_may_access is never called.
        "eperm/self_unpriv_readv",
        "eperm/thread_unpriv_readv",
        "eperm/clone_vm_unpriv_readv",
        // Root with CAP_SYS_PTRACE: Yama 1 allows it, nothing is hidden.
        "success/single_page",
        "eperm/root_vs_nondumpable",
    ] {
        assert!(!v.iter().any(|x| x == id), "{id} needs no @yama0 run");
    }
    // A case that declares a scope is about Yama and runs only there.
    assert!(!v.iter().any(|x| x.starts_with("yama/")), "{v:?}");
}

#[test]
fn every_variant_is_the_case_at_scope_0_and_reaches_the_permission_checks() {
    for scope in [Some(1), Some(2), Some(3)] {
        let plans = runner::with_yama0_variants(catalogue(), &facts(scope));
        let mut n = 0;
        for w in plans.windows(2) {
            let (case, v) = (&w[0], &w[1]);
            let Some(base) = v.id.strip_suffix(YAMA0_SUFFIX) else {
                continue;
            };
            n += 1;
            assert_eq!(base, case.id, "a variant follows its case");
            assert_eq!(runner::case_of(&v.id), case.id);
            assert_eq!(v.requires.yama_scope, Some(0));
            assert_eq!(case.requires.yama_scope, None);
            // What the variant predicts is what the case predicts without Yama: the pin.
            let open = predict(v, &facts(Some(0)));
            assert_eq!(open.result, predict(case, &facts(None)).result, "{}", v.id);
            assert!(
                PERM_STEPS_BEFORE_YAMA.contains(&open.decided_by)
                    || open.trace.iter().any(|s| s.rule == "perm_ids"),
                "{}: decided by {} without reaching ptrace_may_access",
                v.id,
                open.decided_by
            );
            // ...and at the kernel's scope Yama refuses it.
            let at = predict(case, &facts(scope));
            assert_eq!(at.result, Err(libc::EPERM), "{} at {scope:?}", case.id);
        }
        assert!(n > 0, "scope {scope:?}: no variants");
    }
}

#[test]
fn scope_2_and_3_also_hide_the_descendant() {
    for scope in [Some(2), Some(3)] {
        let v = variant_ids(scope);
        assert!(
            v.iter()
                .any(|x| x == "eperm/descendant_matching_ids_writev"),
            "scope {scope:?}: {v:?}"
        );
    }
    // Scope 2 lets CAP_SYS_PTRACE through, scope 3 nobody: root's cases rerun only at 3.
    assert!(!variant_ids(Some(2))
        .iter()
        .any(|x| x == "success/single_page"));
    assert!(variant_ids(Some(3))
        .iter()
        .any(|x| x == "success/single_page"));
}

#[test]
fn the_decision_is_the_models() {
    // Every catalogue case: a variant exactly when the model says Yama hides the checks.
    for scope in [None, Some(0), Some(1), Some(2), Some(3)] {
        let f = facts(scope);
        let v = variant_ids(scope);
        for p in catalogue() {
            let want = p.requires.yama_scope.is_none() && yama_hides_permission_checks(&p, &f);
            assert_eq!(v.contains(&p.id), want, "{} at {scope:?}", p.id);
        }
    }
}

#[test]
fn where_the_scope_cannot_be_written_a_variant_is_a_machine_skip_and_its_pin_holds() {
    // `pvmtest run` on a scope-1 host never writes the sysctl: the variant meets scope 1.
    let f = facts(Some(1));
    let plans = runner::with_yama0_variants(catalogue(), &f);
    let v = plans
        .iter()
        .find(|p| p.id == format!("eperm/target_suid_differs_unprivileged{YAMA0_SUFFIX}"))
        .expect("variant");
    let u = pvmtest::check::unmet_here(v, &f).expect("a skip");
    assert_eq!(u.by, pvmtest::check::SkipBy::Machine);
    assert_eq!(u.reason, "needs Yama ptrace_scope 0, this is 1");
    // The variant keeps the case's pin, judged with Yama out of the way.
    for p in plans.iter().filter(|p| p.id.ends_with(YAMA0_SUFFIX)) {
        assert_eq!(pvmtest::check::check_pin(p, &f), Ok(()), "{}", p.id);
    }
}
