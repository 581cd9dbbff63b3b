//! `pvmtest run --format junit` read back by a JUnit XML parser (the `junit-parser` crate, as
//! a CI test reporter would): counts, names, classnames, skip reasons, failure and error
//! details, and text that needs escaping; and `--filter`.

mod common;

use common::PAGE;
use pvmtest::facts::Facts;
use pvmtest::runner::Status;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_pvmtest");

fn parse(xml: &str) -> junit_parser::TestSuites {
    junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes()))
        .unwrap_or_else(|e| panic!("not JUnit XML a parser accepts: {e}\n{xml}"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pvmtest-junit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("cases/grp")).unwrap();
    d
}

/// A passing case, a failing one (its pin disagrees with the model: a `fail` before anything
/// runs), a skipped one (a kernel older than any that runs this), and a writev case.
fn catalogue(dir: &Path) -> PathBuf {
    let cases = dir.join("cases");
    let put = |name: &str, head: &str, tail: &str| {
        std::fs::write(
            cases.join("grp").join(name),
            format!("description: {name}\n{head}{PAGE}{tail}"),
        )
        .unwrap()
    };
    put("pass_readv.yaml", "", "");
    put(
        "wrong_pin.yaml",
        "",
        "expect:\n  result: 65\n  why: 'wrong on purpose & \"quoted\" <here>'\n",
    );
    put("old_kernel.yaml", "requires:\n  max_kernel: \"3.0\"\n", "");
    std::fs::write(
        cases.join("grp/pass_writev.yaml"),
        format!("description: w\n{}", PAGE.replace("readv", "writev")),
    )
    .unwrap();
    cases
}

fn run(args: &[&str], cases: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("run")
        .args(args)
        .arg(cases)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_format_junit_is_read_back_by_a_junit_parser() {
    let d = scratch("run");
    let cases = catalogue(&d);
    let (code, xml, err) = run(&["--format", "junit"], &cases);
    assert_eq!(code, Some(1), "one case fails: {err}\n{xml}");
    let doc = parse(&xml);
    assert_eq!(doc.suites.len(), 1, "{xml}");
    let s = &doc.suites[0];
    assert_eq!(s.name, "pvmtest");
    assert_eq!(
        (s.tests, s.failures, s.errors, s.skipped),
        (4, 1, 0, 1),
        "{xml}"
    );
    let release = Facts::detect().release;
    assert_eq!(
        s.properties.hashmap.get("kernel").map(String::as_str),
        Some(release.as_str())
    );
    assert!(s.properties.hashmap.contains_key("hostname"), "{xml}");
    let case = |name: &str| {
        s.cases
            .iter()
            .find(|c| c.original_name == name)
            .unwrap_or_else(|| panic!("no testcase {name} in\n{xml}"))
    };
    for c in &s.cases {
        assert_eq!(c.classname.as_deref(), Some("grp"), "{xml}");
        assert!(c.time >= 0.0 && c.time < 60.0, "{xml}");
    }
    assert!(case("grp/pass_readv").status.is_success());
    assert!(case("grp/pass_writev").status.is_success());
    let skipped = case("grp/old_kernel");
    assert!(skipped.status.is_skipped(), "{xml}");
    assert!(
        skipped
            .status
            .skipped_as_ref()
            .message
            .starts_with("needs kernel <= 3.0, this is "),
        "{xml}"
    );
    let failed = case("grp/wrong_pin");
    assert!(failed.status.is_failure(), "{xml}");
    let f = failed.status.failure_as_ref();
    // The message and the details come back unescaped, as written.
    assert!(
        f.message.starts_with("the case pins 65, the model predicts 64 (complete) (the pin's why: wrong on purpose & \"quoted\" <here>)"),
        "{}",
        f.message
    );
    assert!(
        f.text
            .contains("process_vm_readv(pid=<target>, local=[{buf,64}]"),
        "{}",
        f.text
    );
    assert!(f.text.contains("wrong_pin.yaml"), "{}", f.text);
    let _ = std::fs::remove_dir_all(&d);
}

/// Broken cases are `<error>`; hostile characters in any reason (markup, quotes, control
/// characters, a CDATA end) still give a document the parser accepts, with the text intact.
#[test]
fn every_status_and_hostile_text_survive_the_parser() {
    let hostile = "a < b && c > d \"q\" 'a' ]]> \x1b[31mred\x1b[0m\ttab\nline two";
    let (results, facts) = common::results(
        &[
            (Status::Pass, "grp/pass", None, Some(Ok(64))),
            (Status::Skip, "grp/skip", Some(hostile), None),
            (
                Status::Fail,
                "grp/fail",
                Some(hostile),
                Some(Err(libc::EFAULT)),
            ),
            (Status::Broken, "other/broken", Some(hostile), None),
            (
                Status::Broken,
                "bare",
                Some("target never became ready within 5000 ms"),
                None,
            ),
        ],
        Duration::from_millis(12),
    );
    let xml = pvmtest::report::junit(&results, &facts);
    let doc = parse(&xml);
    let s = &doc.suites[0];
    assert_eq!(
        (s.tests, s.failures, s.errors, s.skipped),
        (5, 1, 2, 1),
        "{xml}"
    );
    assert!((s.time - 0.060).abs() < 1e-6, "{xml}");
    let readable = "a < b && c > d \"q\" 'a' ]]> \u{fffd}[31mred\u{fffd}[0m\ttab\nline two";
    let by = |n: &str| s.cases.iter().find(|c| c.original_name == n).unwrap();
    assert_eq!(by("grp/skip").status.skipped_as_ref().message, readable);
    let f = by("grp/fail").status.failure_as_ref();
    assert_eq!(f.message, readable);
    assert!(
        f.text.contains("= EFAULT; model: 64 (complete)"),
        "{}",
        f.text
    );
    // junit-parser joins consecutive CDATA sections with a newline; the document has the
    // `]]>` split across two sections (the only way to write it in CDATA).
    assert!(
        f.text.replace("]]\n>", "]]>").contains(readable),
        "{}",
        f.text
    );
    let e = by("other/broken").status.error_as_ref();
    assert_eq!(e.message, readable);
    assert_eq!(by("other/broken").classname.as_deref(), Some("other"));
    assert_eq!(by("bare").classname.as_deref(), Some("cases"));
    assert!((by("grp/pass").time - 0.012).abs() < 1e-6);
    // An empty run is still a document.
    let empty = parse(&pvmtest::report::junit(&[], &facts));
    assert_eq!(empty.suites[0].tests, 0);
}

#[test]
fn filter_selects_by_name_ors_and_rejects_a_filter_matching_nothing() {
    let d = scratch("filter");
    let cases = catalogue(&d);
    let (code, out, err) = run(&["--filter", "grp/pass_*"], &cases);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2 passed, 0 failed, 0 skipped"), "{out}");
    let (code, out, err) = run(&["--filter", "*writev", "--filter", "*/old_?ernel"], &cases);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1 passed, 0 failed, 1 skipped"), "{out}");
    assert!(
        out.contains("kernel ") && out.contains(": 2 cases"),
        "{out}"
    );
    let (code, out, err) = run(&["--filter", "*pass_readv*", "--format", "ktap"], &cases);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1..1\nok 1 grp/pass_readv\n"), "{out}");
    // A typo is an error, one line, exit 2, nothing run.
    let (code, out, err) = run(&["--filter", "grp/pass_*", "--filter", "eperm/*"], &cases);
    assert_eq!(code, Some(2), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: --filter 'eperm/*' matches none of the 4 cases (names look like 'grp/old_kernel';"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    // The whole name must match: a group name alone is not a glob for it.
    let (code, _, err) = run(&["--filter", "grp"], &cases);
    assert_eq!(code, Some(2), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
