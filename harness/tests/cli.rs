//! The `pvmtest` binary end to end: exit statuses, bad input, and that no process outlives a
//! run — after success, a panic, a target that never becomes ready, and SIGINT.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pvmtest");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pvmtest-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = "description: one page\ntarget:\n  regions: [{name: data, pages: 1}]\ncaller:\n  regions: [{name: buf, pages: 1}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 4096}]\n  remote: [{base: data, len: 4096}]\n";

/// A tag in the environment of every process one test starts, so leftovers can be found
/// without confusing them with other tests' processes.
fn tagged(tag: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("PVMTEST_TEST_TAG", tag).env("NO_COLOR", "1");
    c
}

/// Live (non-zombie) processes whose environment carries `tag`.
fn leftovers(tag: &str) -> Vec<String> {
    let needle = format!("PVMTEST_TEST_TAG={tag}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            out.push(format!("{name} {}", comm.trim()));
        }
    }
    out
}

fn assert_nothing_left(tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = leftovers(tag);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn good_case_passes_and_leaves_nothing() {
    let d = scratch("good");
    let f = write(&d, "good.yaml", GOOD);
    let out = run(tagged("good").arg("run").arg(&f));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 passed, 0 failed, 0 skipped"), "{stdout}");
    assert!(
        stdout.contains(": 1 case\n"),
        "one case, singular: {stdout}"
    );
    assert_nothing_left("good");
}

/// One case per target kind, all in one run: nothing of any kind may survive it.
#[test]
fn every_target_kind_leaves_nothing() {
    let d = scratch("kinds");
    for kind in [
        "child",
        "self",
        "thread",
        "clone_vm",
        "zombie",
        "reaped",
        "zombie_leader",
        "zombie_leader_thread",
        "pidns_child",
    ] {
        let extra = if kind == "pidns_child" {
            "requires: {features: [pidns]}\n"
        } else {
            ""
        };
        let text = GOOD.replace("target:\n", &format!("{extra}target:\n  kind: {kind}\n"));
        write(&d, &format!("{kind}.yaml"), &text);
    }
    let out = run(tagged("kinds").arg("run").arg(&d));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("BROKEN") && !stdout.contains("FAIL"),
        "{stdout}"
    );
    assert_nothing_left("kinds");
}

#[test]
fn sigint_with_a_clone_vm_target_leaves_nothing() {
    // pvmtest, the caller and its CLONE_VM target (which the harness adopted).
    interrupt_mid_case(
        "sigint_vm",
        &GOOD.replace("target:\n", "target:\n  kind: clone_vm\n"),
        3,
    );
}

#[test]
fn formats() {
    let d = scratch("formats");
    let f = write(&d, "good.yaml", GOOD);
    let out = run(Command::new(BIN).args(["run", "--format", "ktap"]).arg(&f));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("KTAP version 1\n"), "{s}");
    assert!(s.contains("1..1\nok 1 good"), "{s}");
    let out = run(Command::new(BIN).args(["run", "--format", "json"]).arg(&f));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["pass"], 1);
    assert_eq!(v["results"][0]["status"], "pass");
    assert_eq!(v["results"][0]["event"]["args"]["liovcnt"], 1);
    assert_eq!(v["results"][0]["event"]["returnValue"], 4096);
}

/// Bad input: one line naming file, line and field; exit 2; never a panic.
#[test]
fn bad_input_is_one_line_and_exit_2() {
    let d = scratch("bad");
    let cases: &[(&str, &str, &str)] = &[
        (
            "malformed.yaml",
            "description: [unclosed\n",
            "malformed.yaml:",
        ),
        (
            "unknown_field.yaml",
            &GOOD.replace("description: one page\n", "description: x\nbogus: 1\n"),
            "unknown field `bogus`",
        ),
        (
            "unknown_errno.yaml",
            &format!("{GOOD}expect:\n  result: EWHAT\n  why: x\n"),
            "unknown errno name `EWHAT`",
        ),
        (
            "undeclared.yaml",
            &GOOD.replace("{base: data, len: 4096}", "{base: nothere, len: 4096}"),
            "`nothere` is not a declared region",
        ),
        (
            "overlap.yaml",
            &GOOD.replace(
                "regions: [{name: data, pages: 1}]",
                "regions: [{name: a, pages: 4}, {name: data, pages: 1, at: 2}]",
            ),
            "overlaps region `a`",
        ),
        (
            "too_big.yaml",
            &GOOD.replace("{name: data, pages: 1}", "{name: data, pages: 2^40}"),
            "does not fit",
        ),
        (
            "no_why.yaml",
            &format!("{GOOD}expect:\n  result: 4096\n  why: \"\"\n"),
            "must say why",
        ),
        (
            "root_only_pin.yaml",
            &format!(
                "{}expect:\n  result: 4096\n  why: CAP_SYS_PTRACE\n",
                GOOD.replace(
                    "target:\n  regions: [{name: data, pages: 1}]\n",
                    "target:\n  regions: [{name: data, pages: 1}]\n  dumpable: false\n",
                )
            ),
            "expect: the outcome depends on who runs the harness (as root the model predicts 4096 (complete), as an unprivileged user EPERM (perm_dumpable: target is not dumpable)) but the case pins 4096 without `requires: {root: true}`: add `requires: {root: true}`",
        ),
        (
            "race_no_region.yaml",
            &format!("{GOOD}race:\n  action: munmap\n"),
            "race.region: `munmap` acts on a target region",
        ),
        (
            "race_prot.yaml",
            &format!("{GOOD}race:\n  action: exit\n  prot: none\n"),
            "race.prot: only `mprotect` takes a protection",
        ),
    ];
    for (name, text, needle) in cases {
        let f = write(&d, name, text);
        let out = run(Command::new(BIN).arg("check").arg(&f));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(err.contains(name), "{name} must be named: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one line expected: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // The line number points at the offending text.
    let out = run(Command::new(BIN)
        .arg("check")
        .arg(d.join("undeclared.yaml")));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("undeclared.yaml:9:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_reports_valid_cases_despite_an_invalid_one() {
    let d = scratch("mixed");
    write(&d, "a_good.yaml", GOOD);
    write(
        &d,
        "b_bad.yaml",
        "description: x\ncall: {syscall: sideways}\n",
    );
    let out = run(Command::new(BIN).arg("run").arg(&d));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout.contains("PASS") && stdout.contains("a_good"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("b_bad.yaml"));
}

#[test]
fn usage_errors_exit_2() {
    let out = run(Command::new(BIN).arg("frobnicate"));
    assert_eq!(out.status.code(), Some(2));
    let out = run(Command::new(BIN).args(["run", "/nonexistent/path"]));
    assert_eq!(out.status.code(), Some(2));
}

/// Runs GOOD with a fault injected; the case must be reported broken with `needle`, the run
/// must exit 1 quickly, and nothing may be left running.
fn injected_fault_is_broken(tag: &str, inject: &str, needle: &str) {
    let elapsed = run_broken(tag, inject, needle, GOOD);
    assert!(elapsed < Duration::from_secs(5));
}

/// Runs the case `yaml` with `PVMTEST_INJECT=inject`: it must be BROKEN with `needle` in the
/// output, exit 1, and leave nothing running. Returns how long it took.
fn run_broken(tag: &str, inject: &str, needle: &str, yaml: &str) -> Duration {
    let d = scratch(tag);
    let f = write(&d, "case.yaml", yaml);
    let t = Instant::now();
    let out = run(tagged(tag)
        .env("PVMTEST_INJECT", inject)
        .args(["run", "--timeout-ms", "300"])
        .arg(&f));
    let elapsed = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("BROKEN") && stdout.contains(needle),
        "{stdout}"
    );
    assert_nothing_left(tag);
    elapsed
}

/// GOOD with a racer: a few runs of each kind of racer process (the target's main thread,
/// a racing thread, an exiting target replaced every run).
fn race(action: &str) -> String {
    let region = if matches!(action, "exit" | "thread_exit") {
        ""
    } else {
        "  region: data\n"
    };
    format!("{GOOD}race:\n  action: {action}\n{region}  runs: 3\n")
}

#[test]
fn race_cases_pass_and_leave_nothing() {
    let d = scratch("races");
    for action in ["munmap", "write", "exit", "thread_exit"] {
        write(&d, &format!("{action}.yaml"), &race(action));
    }
    let out = run(tagged("races").arg("run").arg(&d));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("3 runs"), "frequencies shown: {stdout}");
    assert_nothing_left("races");
}

#[test]
fn race_faults_are_broken_and_leave_nothing() {
    for (tag, inject, needle) in [
        (
            "race_hang",
            "target_hang",
            "the race target never built its layout",
        ),
        ("race_panic", "panic", "injected panic"),
    ] {
        run_broken(tag, inject, needle, &race("exit"));
    }
}

#[test]
fn sigint_mid_race_leaves_nothing() {
    // pvmtest, the persistent target and the caller, which never makes its call.
    interrupt_mid_case("sigint_race", &race("thread_exit"), 3);
}

#[test]
fn target_that_never_gets_ready_is_broken_and_killed() {
    injected_fault_is_broken("hang", "target_hang", "never became ready");
}

#[test]
fn panic_in_a_case_is_broken_and_leaves_nothing() {
    injected_fault_is_broken("panic", "panic", "injected panic");
}

#[test]
fn sigint_mid_case_leaves_nothing() {
    // pvmtest, the target and the caller.
    interrupt_mid_case("sigint", GOOD, 3);
}

/// Starts a run whose caller hangs, waits for `procs` tagged processes, sends SIGINT to
/// pvmtest, and checks that nothing it started survives.
fn interrupt_mid_case(tag: &str, text: &str, procs: usize) {
    let d = scratch(tag);
    let f = write(&d, "case.yaml", text);
    let mut child = tagged(tag)
        .env("PVMTEST_INJECT", "caller_hang")
        .args(["run", "--timeout-ms", "60000"])
        .arg(&f)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while leftovers(tag).len() < procs {
        assert!(
            Instant::now() < deadline,
            "processes never started: {:?}",
            leftovers(tag)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(!child.wait().unwrap().success());
    assert_nothing_left(tag);
}

/// `pvmtest check FILE` with one bad field: exit 2 and one line `FILE:LINE:COLUMN: FIELD: …`.
fn check_error_at(d: &Path, name: &str, text: &str, at: (usize, usize), field: &str) {
    let f = write(d, name, text);
    let out = run(Command::new(BIN).arg("check").arg(&f));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    assert_eq!(err.lines().count(), 1, "{name}: one line expected: {err}");
    let want = format!("{}:{}:{}: {field}: ", f.display(), at.0, at.1);
    assert!(err.contains(&want), "{name}: want `{want}`, got: {err}");
}

/// Errors name the line and column of the field that is wrong, not the first line where its
/// text happens to appear (the description, another region list, the caller side).
#[test]
fn errors_point_at_the_field_that_is_wrong() {
    let d = scratch("lines");
    // An unknown region `g` in remote[1]: `g` first appears in the description ("page").
    check_error_at(
        &d,
        "g_in_remote1.yaml",
        "description: one page, then a region that is not there\ntarget:\n  regions: [{name: data, pages: 2}]\ncaller:\n  regions: [{name: buf, pages: 2}]\ncall:\n  syscall: readv\n  local: [{base: buf, len: 8192}]\n  remote:\n    - {base: data, len: 4096}\n    - {base: g, len: 4096}\n",
        (11, 8),
        "call.remote[1].base",
    );
    // `buf` in remote: declared, but on the caller side (its declaration comes first).
    check_error_at(
        &d,
        "caller_buf_in_remote.yaml",
        &GOOD.replace("{base: data, len: 4096}", "{base: buf, len: 4096}"),
        (9, 13),
        "call.remote[0].base",
    );
    // A flow sequence over several lines: the entry on its third line.
    check_error_at(
        &d,
        "multiline_flow.yaml",
        &GOOD.replace(
            "  remote: [{base: data, len: 4096}]\n",
            "  remote: [{base: data, len: 1},\n           {base: data+1, len: 1},\n           {len: 1, base: nothere}]\n",
        ),
        (11, 21),
        "call.remote[2].base",
    );
    // A number expression that does not parse (no line at all before).
    check_error_at(
        &d,
        "bad_number.yaml",
        &GOOD.replace(
            "  regions: [{name: data, pages: 1}]\n",
            "  regions:\n    - name: data\n      pages: 4*\n",
        ),
        (5, 7),
        "target.regions[0].pages",
    );
    // A `requires` field whose text ("6") first appears in the description.
    check_error_at(
        &d,
        "requires.yaml",
        &GOOD.replace(
            "description: one page\n",
            "description: one page of 6\nrequires:\n  root: false\n  min_kernel: \"6\"\n",
        ),
        (4, 3),
        "requires.min_kernel",
    );
    check_error_at(
        &d,
        "requires_caps.yaml",
        &GOOD.replace(
            "description: one page\n",
            "description: one page\nrequires: {caps: [CAP_SYS_PTRACE,\n  CAP_NOPE]}\n",
        ),
        (3, 3),
        "requires.caps[1]",
    );
    // A race field: the region is read-only; `data` and `ro` appear in the regions first.
    check_error_at(
        &d,
        "race_region.yaml",
        &format!(
            "{}race: {{action: write, region: data}}\n",
            GOOD.replace("{name: data, pages: 1}", "{name: data, pages: 1, prot: ro}")
        ),
        (10, 23),
        "race.region",
    );
    // A missing race field: the `race` section itself.
    check_error_at(
        &d,
        "race_missing.yaml",
        &format!("{GOOD}race:\n  action: mprotect\n  region: data\n"),
        (10, 1),
        "race.prot",
    );
}

/// Writes a small catalogue: the marker iff `marked`, `eperm/root_vs_nondumpable_root_writev`
/// and one file name (`flags_1`) in two groups, copied from cases/.
fn small_catalogue(d: &Path, marked: bool) {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    for f in [
        "eperm/root_vs_nondumpable_root_writev.yaml",
        "compat/flags_1.yaml",
        "einval/flags_1.yaml",
    ] {
        std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
        std::fs::copy(cases.join(f), d.join(f)).unwrap();
    }
    if marked {
        std::fs::copy(
            cases.join(pvmtest::runner::CATALOGUE_MARKER),
            d.join(pvmtest::runner::CATALOGUE_MARKER),
        )
        .unwrap();
    }
}

/// Case names as a KTAP run of `path` prints them.
fn ktap_names(path: &Path) -> Vec<String> {
    let out = run(Command::new(BIN)
        .args(["run", "--format", "ktap"])
        .arg(path));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("ok ")
                .or_else(|| l.strip_prefix("not ok "))?;
            let name = rest.split_once(' ')?.1;
            Some(name.split(" # ").next()?.to_string())
        })
        .collect()
}

/// A case is named by its path under the catalogue root however the catalogue is given: the
/// root, a copy of it under another name, a group, one file.
#[test]
fn copied_catalogue_keeps_group_names() {
    let d = scratch("copy").join("cases-copy");
    small_catalogue(&d, true);
    let all = [
        "compat/flags_1",
        "einval/flags_1",
        "eperm/root_vs_nondumpable_root_writev",
    ];
    assert_eq!(ktap_names(&d), all);
    assert_eq!(ktap_names(&d.join("eperm")), &all[2..]);
    assert_eq!(
        ktap_names(&d.join("eperm/root_vs_nondumpable_root_writev.yaml")),
        &all[2..]
    );
    // The whole catalogue, copied: every name as in the original, none without its group.
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    let copy = scratch("copy-all").join("cases-copy");
    copy_tree(&cases, &copy);
    let names = |p: &Path| -> Vec<String> {
        pvmtest::runner::collect_named(&[p.to_path_buf()])
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect()
    };
    let original = names(&cases);
    assert_eq!(names(&copy), original);
    assert!(original.iter().all(|n| n.contains('/')), "{original:?}");
    // Without the marker, names are paths under the directory given.
    let bare = scratch("bare").join("mine");
    small_catalogue(&bare, false);
    assert_eq!(ktap_names(&bare), all);
    assert_eq!(
        ktap_names(&bare.join("eperm")),
        ["root_vs_nondumpable_root_writev"]
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Two cases with one name in one run: refused before anything runs, one line naming both
/// files and the fix, exit 2.
#[test]
fn duplicate_names_are_refused() {
    let d = scratch("dupes");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
        write(&d.join(sub), "same.yaml", GOOD);
    }
    write(&d.join("a"), "other.yml", GOOD);
    write(&d.join("a"), "other.yaml", GOOD);
    for (args, files) in [
        (
            vec![d.join("a/same.yaml"), d.join("b/same.yaml")],
            ["a/same.yaml", "b/same.yaml"],
        ),
        (
            vec![d.join("a"), d.join("b")],
            ["a/other.yaml", "a/other.yml"],
        ),
    ] {
        for cmd in ["run", "check"] {
            let out = run(tagged("dupes").arg(cmd).args(&args));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
            assert_eq!(err.lines().count(), 1, "{cmd}: one line expected: {err}");
            assert!(err.contains("two cases named"), "{err}");
            assert!(err.contains("rename one"), "{err}");
            for f in files {
                assert!(err.contains(f), "{cmd}: {f} must be named: {err}");
            }
            assert!(
                out.stdout.is_empty(),
                "nothing runs: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // The same file given twice is one case.
    let out = run(Command::new(BIN)
        .arg("check")
        .arg(d.join("b"))
        .arg(d.join("b/same.yaml")));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left("dupes");
}

/// `--reference` replaces uname's version in the model's gates, and the output keeps both.
#[test]
fn reference_chooses_the_rules() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cases/einval/local_negative_then_unreadable_6_4.yaml");
    let out = run(Command::new(BIN)
        .args(["run", "--format", "json", "--reference", "5.10.0"])
        .arg(&case));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uname = nix::sys::utsname::uname().unwrap();
    assert_eq!(v["kernel"], *uname.release().to_string_lossy());
    assert_eq!(v["reference"], "5.10.0");
    assert_eq!(v["facts"]["version"], serde_json::json!([5, 10, 0]));
    let reason = v["results"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("this is 5.10"), "{v}");
    let out = run(Command::new(BIN)
        .args(["run", "--format", "json"])
        .arg(&case));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reference"], serde_json::Value::Null);
    for bad in ["6", "latest", "6.12-rc1", "6.1.2.3"] {
        let out = run(Command::new(BIN)
            .args(["run", "--reference", bad])
            .arg(&case));
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: --reference:"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// File-backed regions without O_TMPFILE (gVisor's /tmp refuses it): the harness falls back
/// to a file unlinked at once from a private directory; the cases still pass and nothing is
/// left in TMPDIR.
#[test]
fn file_regions_without_o_tmpfile() {
    let tmp = scratch("no_tmpfile");
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    let out = run(Command::new(BIN)
        .env("PVMTEST_NO_O_TMPFILE", "1")
        .env("TMPDIR", &tmp)
        .args(["run", "--format", "json"])
        .arg(cases.join("success/file_private.yaml"))
        .arg(cases.join("writev/file_shared_writes_file.yaml")));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["pass"], 2, "{v}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A call that gives ENOSYS (a runtime without it, simulated by `PVMTEST_INJECT=enosys`) is
/// "not implemented", a skip with that reason; the observed ENOSYS stays in the JSON.
#[test]
fn enosys_from_the_call_is_not_implemented() {
    let d = scratch("enosys");
    let f = write(&d, "good.yaml", GOOD);
    let out = run(tagged("enosys")
        .env("PVMTEST_INJECT", "enosys")
        .args(["run", "--format", "json"])
        .arg(&f));
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["results"][0];
    assert_eq!(r["status"], "skip", "{v}");
    assert_eq!(r["skip_by"], "kernel", "{v}");
    assert!(r["reason"]
        .as_str()
        .unwrap()
        .starts_with("not implemented: process_vm_readv returned ENOSYS"));
    assert_eq!(r["observed"], "ENOSYS", "{v}");
    assert_eq!(r["unsupported"], "not_implemented", "{v}");
    assert_nothing_left("enosys");
}

/// A CLONE_VM target that is not the harness's child (gVisor ignores CLONE_PARENT; simulated
/// by `PVMTEST_INJECT=no_clone_parent`) is a skip saying the runtime cannot express the case,
/// not an ESRCH counted as a failure; the target is reaped.
#[test]
fn clone_parent_ignored_is_a_skip() {
    let d = scratch("no_clone_parent");
    let f = write(
        &d,
        "vm.yaml",
        &GOOD.replace("target:\n", "target:\n  kind: clone_vm\n"),
    );
    let out = run(tagged("no_clone_parent")
        .env("PVMTEST_INJECT", "no_clone_parent")
        .args(["run", "--format", "json"])
        .arg(&f));
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["results"][0];
    assert_eq!(r["status"], "skip", "{v}");
    assert!(r["reason"]
        .as_str()
        .unwrap()
        .starts_with("the runtime cannot express a clone_vm target"));
    assert_eq!(r["unsupported"], "feature", "{v}");
    assert_nothing_left("no_clone_parent");
}
