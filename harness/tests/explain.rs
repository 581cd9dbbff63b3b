//! `pvmtest explain`: every step names the rule that decided it (docs/SEMANTICS.md), a pin
//! that disagrees with the model is flagged and exits 1, and no Rust Debug formatting reaches
//! the text — over the whole catalogue, on every kernel series and Yama state the model knows.

use pvmtest::facts::Facts;
use pvmtest::model::{predict, PASS_RULES, STEPS};
use pvmtest::report::explain;
use pvmtest::runner::{collect, load, load_str};
use std::path::{Path, PathBuf};
use std::process::Command;

const SERIES: [(u32, u32, u32); 5] = [(5, 10, 223), (6, 1, 170), (6, 12, 0), (7, 2, 13), (7, 3, 4)];

/// What Rust's Debug formatting of the model's and the plan's types looks like.
const DEBUG_SHAPES: [&str; 6] = ["Count(", "Errno(", "Some(", "Ok(", "Err(", "Step {"];

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases")
}

fn explained(path: &str, facts: &Facts) -> (String, bool) {
    let plan = load(&cases_dir().join(path)).unwrap_or_else(|e| panic!("{e}"));
    let pred = predict(&plan, facts);
    explain(&plan, &pred, facts)
}

/// The numbered step lines of an explain text.
fn steps(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (n, rest) = l.split_once(". ")?;
            n.parse::<u32>().ok().map(|_| rest)
        })
        .collect()
}

#[test]
fn every_step_of_every_case_names_a_documented_rule_and_no_debug_leaks() {
    let semantics =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SEMANTICS.md"))
            .unwrap();
    let documented: Vec<&str> = STEPS
        .iter()
        .chain(PASS_RULES)
        .copied()
        .filter(|r| semantics.contains(&format!("`{r}`")))
        .collect();
    let files = collect(&[cases_dir()]).unwrap();
    assert!(files.len() > 100, "the catalogue went missing");
    let mut bad = Vec::new();
    let mut host = Facts::detect();
    host.release = "host".into();
    let mut all = vec![host];
    // Every series without Yama, and one series at every Yama scope (the permission steps
    // differ by scope, not by series: SEMANTICS.md rule 11).
    all.extend(SERIES.map(Facts::example));
    for yama in 0..=3 {
        let mut f = Facts::example((6, 12, 0));
        f.yama_scope = Some(yama);
        all.push(f);
    }
    for path in &files {
        let plan = load(path).unwrap_or_else(|e| panic!("{e}"));
        for facts in &all {
            let pred = predict(&plan, facts);
            let (text, disagrees) = explain(&plan, &pred, facts);
            let on = format!(
                "{} on {} (Yama {:?})",
                plan.id, facts.release, facts.yama_scope
            );
            // The description is the case author's prose; everything after it is ours.
            let ours = text.split_once("\n\n").map_or(&*text, |x| x.1);
            for shape in DEBUG_SHAPES {
                if ours.contains(shape) {
                    bad.push(format!("{on}: Debug formatting `{shape}` in\n{ours}"));
                }
            }
            for step in &pred.trace {
                if !STEPS.contains(&step.rule) && !PASS_RULES.contains(&step.rule) {
                    bad.push(format!("{on}: step `{step}` names no rule"));
                }
                if !documented.contains(&step.rule) {
                    bad.push(format!("{on}: rule `{}` is not in SEMANTICS.md", step.rule));
                }
                if step.text.is_empty() {
                    bad.push(format!("{on}: step `{}` says nothing", step.rule));
                }
            }
            let lines = steps(&text);
            assert_eq!(lines.len(), pred.trace.len(), "{on}: {text}");
            for (line, step) in lines.iter().zip(&pred.trace) {
                if !line.starts_with(&format!("{}: ", step.rule)) {
                    bad.push(format!("{on}: `{line}` does not start with its rule"));
                }
            }
            // The catalogue's pins hold wherever a case can run (model_rules.rs checks the
            // same through check_pin); explain must not flag them.
            if disagrees != text.contains("PIN DISAGREES") {
                bad.push(format!("{on}: flag and text disagree:\n{text}"));
            }
            if disagrees && facts.release != "host" {
                bad.push(format!("{on}: a catalogue pin flagged:\n{text}"));
            }
        }
    }
    bad.truncate(20);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn allowed_by_same_ids_names_each_permission_rule() {
    let (text, disagrees) = explained("eperm/both_keep_caps.yaml", &Facts::example((6, 12, 0)));
    assert!(!disagrees, "{text}");
    for want in [
        "perm_ids: allowed: the caller's real uid and gid equal the target's real, effective and saved uids and gids",
        "caller uid 1000 gid 1000; target uids 1000/1000/1000 gids 1000/1000/1000",
        "perm_dumpable: allowed: the target is dumpable",
        "perm_caps: allowed: same user namespace and the target's permitted capabilities",
        "are a subset of the caller's",
        "perm_yama: allowed: no Yama LSM on this kernel",
        "pinned: 128 (complete), for a harness running as ",
        "=> 128 (complete)",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
    assert!(!text.contains("CAP_SYS_PTRACE"), "{text}");
}

#[test]
fn allowed_by_capability_says_the_capability_overrides() {
    let (text, disagrees) = explained(
        "eperm/raised_cap_sys_ptrace_other_uid.yaml",
        &Facts::example((6, 12, 0)),
    );
    assert!(!disagrees, "{text}");
    for want in [
        "perm_ids: allowed: the ids differ (caller uid 1000 gid 1000; target uids 2000/2000/2000",
        "but CAP_SYS_PTRACE in the caller's effective set (ptrace_has_cap → ns_capable in the target's user namespace) overrides the mismatch",
        "perm_dumpable: allowed: the target is dumpable",
        "=> 100 (complete)",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
    // Yama scope 2 lets the capability through too, and says so.
    let mut facts = Facts::example((6, 12, 0));
    facts.yama_scope = Some(2);
    let (text, _) = explained("eperm/raised_cap_sys_ptrace_other_uid.yaml", &facts);
    assert!(
        text.contains(
            "perm_yama: allowed: Yama ptrace_scope 2 (admin-only attach) and CAP_SYS_PTRACE"
        ),
        "{text}"
    );
}

#[test]
fn self_target_skips_the_permission_checks_and_says_why() {
    let (text, disagrees) = explained("writev/self_target.yaml", &Facts::example((6, 12, 0)));
    assert!(!disagrees, "{text}");
    assert!(
        text.contains("same_mm: allowed: the target is the caller itself, so it shares the caller's mm; mm_access calls ptrace_may_access only when mm != current->mm (kernel/fork.c)"),
        "{text}"
    );
    assert!(!text.contains("perm_"), "{text}");
}

#[test]
fn yama_scope_one_names_the_exception_that_allowed_it() {
    let yaml = |target: &str| {
        format!("description: t\nrequires:\n  features: [yama]\ntarget:\n  regions: [{{name: data, pages: 1}}]\n  creds: {{uid: 1000}}\n{target}caller:\n  regions: [{{name: buf, pages: 1}}]\n  creds: {{uid: 1000}}\ncall:\n  syscall: readv\n  local: [{{base: buf, len: 8}}]\n  remote: [{{base: data, len: 8}}]\n")
    };
    let mut facts = Facts::example((6, 12, 0));
    facts.yama_scope = Some(1);
    for (target, want) in [
        ("  parent: caller\n", "Yama ptrace_scope 1 and the target is the caller's child (task_is_descendant)"),
        ("  ptracer: any\n", "Yama ptrace_scope 1 and the target set PR_SET_PTRACER_ANY (ptracer_exception_found)"),
        ("  ptracer: harness\n", "Yama ptrace_scope 1 and the target registered the harness, the caller's parent, with PR_SET_PTRACER"),
    ] {
        let plan = load_str("t.yaml", "t", &yaml(target)).unwrap_or_else(|e| panic!("{e}"));
        let (text, _) = explain(&plan, &predict(&plan, &facts), &facts);
        assert!(
            text.contains(&format!("perm_yama: allowed: {want}")),
            "missing `{want}` in\n{text}"
        );
    }
}

#[test]
fn counts_are_plural_only_when_they_should_be() {
    let (text, _) = explained("eperm/both_keep_caps.yaml", &Facts::example((6, 12, 0)));
    for want in [
        "local_import: 1 segment,",
        "(1 page, 1 pin batch;",
        "moved 128 bytes in 1 copy ",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
    for wrong in [
        "1 segments",
        "1 pages",
        "1 pin batches",
        "1 copies",
        "1 runs",
        "1 cases",
    ] {
        assert!(!text.contains(wrong), "`{wrong}` in\n{text}");
    }
}

const DISAGREEING: &str = "description: one page, pinned wrongly\ntarget:\n  regions: [{name: data, pages: 1}]\ncaller:\n  regions: [{name: buf, pages: 2}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 8192}]\n  remote: [{base: data, len: 8192}]\nexpect:\n  result: 8192\n  decided_by: complete\n  why: wrong on purpose, data is one page\n";

#[test]
fn a_disagreeing_pin_is_flagged_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("pvmtest-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let case = dir.join("wrong_pin.yaml");
    std::fs::write(&case, DISAGREEING).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pvmtest"))
        .arg("explain")
        .arg(&case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("pinned: 8192 (complete), for a harness running as uid 65534 with no capabilities — wrong on purpose, data is one page"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PIN DISAGREES: the case pins 8192 (decided_by complete), the model predicts 4096 (remote_fault at guard+0)"),
        "{stdout}"
    );
    for shape in DEBUG_SHAPES {
        assert!(!stdout.contains(shape), "`{shape}` in\n{stdout}");
    }
    // The same case pinned right exits 0.
    let right = DISAGREEING.replace(
        "result: 8192\n  decided_by: complete",
        "result: 4096\n  decided_by: remote_fault",
    );
    let plan = load_str("t.yaml", "t", &right).unwrap();
    let facts = Facts::detect();
    let (text, disagrees) = explain(&plan, &predict(&plan, &facts), &facts);
    assert!(!disagrees && !text.contains("PIN DISAGREES"), "{text}");
}
