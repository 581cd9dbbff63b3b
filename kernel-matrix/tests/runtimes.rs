//! The runtime rows (runtimes.yaml: gVisor, User-mode Linux, qemu-user) against their
//! known-divergence files (kernel-matrix/conformance/<id>.yaml): each row runs the whole
//! catalogue inside its runtime, judged as the newest kernel of the matrix, and its
//! divergences must be exactly the file's. A runtime that cannot start here is a visible skip
//! with the reason, never a pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn skip(test: &str, why: &str) {
    // Past the capture, so a skip is never silent.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Why runtime rows cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    for var in ["PVMTEST_SKIP_RUNTIMES", "PVMTEST_SKIP_MATRIX"] {
        if std::env::var(var).is_ok_and(|v| v == "1") {
            return Some(format!("{var}=1 (no runtime was started)"));
        }
    }
    // runsc do and UML's ptrace-based user space need root on this kind of host.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (runsc do needs root)".into());
    }
    None
}

fn km(tag: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.env("PVMTEST_TEST_TAG", tag).current_dir(ws());
    if let Ok(h) = std::env::var("PVMTEST_GUEST_HARNESS") {
        c.env("PVMTEST_GUEST_HARNESS", h);
    }
    c
}

/// Fetches the runtime (from the cache when it is there); `Err(reason)` when it cannot.
fn fetch(id: &str) -> Result<(), String> {
    let out = km("fetch")
        .args(["fetch", "--kernel", id])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

struct Row {
    code: i32,
    stderr: String,
    verdict: serde_json::Value,
    kernel: serde_json::Value,
}

fn run(id: &str, extra: &[&str]) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let out = km(id)
        .args([
            "run",
            "--kernel",
            id,
            "--timeout",
            "240",
            "--format",
            "json",
        ])
        .arg("--report")
        .arg(dir.path())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let conf = std::fs::read_to_string(dir.path().join("conformance.json"))
        .unwrap_or_else(|e| panic!("{id}: no conformance.json ({e}); stderr:\n{stderr}"));
    let conf: serde_json::Value = serde_json::from_str(&conf).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    Row {
        code: out.status.code().unwrap_or(-1),
        stderr,
        verdict: conf[0]["verdict"].clone(),
        kernel: report["kernels"][0].clone(),
    }
}

fn matches(v: &serde_json::Value) -> bool {
    v["new"].as_array().is_some_and(|a| a.is_empty())
        && v["gone"].as_array().is_some_and(|a| a.is_empty())
        && v["status_change"].is_null()
}

fn row_matches_its_file(id: &str) {
    let test = format!("runtime_{}", id.replace(['-', '.'], "_"));
    if let Some(why) = unavailable() {
        return skip(&test, &why);
    }
    if let Err(why) = fetch(id) {
        return skip(&test, &format!("{id} cannot be fetched: {why}"));
    }
    let r = run(id, &[]);
    if r.kernel["status"] == "broken" {
        return skip(
            &test,
            &format!(
                "{id} could not run the catalogue here: {}",
                r.kernel["failure"].as_str().unwrap_or("?")
            ),
        );
    }
    assert!(
        matches(&r.verdict),
        "{id}: divergences differ from kernel-matrix/conformance/{id}.yaml:\n{}",
        r.stderr
    );
    // A runtime runs on the host's CPU: report.json names no QEMU accelerator for it.
    assert!(
        r.kernel["accel"].is_null(),
        "{id}: report.json says accel {}, for a row that is not a QEMU guest",
        r.kernel["accel"]
    );
    // A broken case is a harness failure inside the runtime (issue 12 item 4: 0 broken on
    // every runtime); it also fails the row's exit status.
    let broken = r.kernel["summary"]["broken"].as_u64().unwrap_or(0);
    assert_eq!(
        broken, 0,
        "{id}: broken cases inside the runtime:\n{}",
        r.stderr
    );
    // One result per case (a variant has its own name, `case@yama0`): UML's restart once ran
    // /init a second time and its results were read too.
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<&str> = r.kernel["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["case"].as_str())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !seen.insert(*c))
        .collect();
    assert!(twice.is_empty(), "{id}: results reported twice: {twice:?}");
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn runtime_gvisor_20240729() {
    row_matches_its_file("gvisor-20240729");
}

#[test]
fn runtime_gvisor_20221219() {
    row_matches_its_file("gvisor-20221219");
}

#[test]
fn runtime_uml_6_1() {
    row_matches_its_file("uml-6.1");
}

#[test]
fn runtime_qemu_user_7_2() {
    row_matches_its_file("qemu-user-7.2");
}

/// Changing one known outcome makes the run fail, naming the case; the file as shipped
/// passes the same run.
#[test]
fn editing_one_known_outcome_fails_the_run() {
    let test = "editing_one_known_outcome_fails_the_run";
    let id = "gvisor-20240729";
    if let Some(why) = unavailable() {
        return skip(test, &why);
    }
    if let Err(why) = fetch(id) {
        return skip(test, &format!("{id} cannot be fetched: {why}"));
    }
    let filter = ["--filter", "einval/flags_2pow*"];
    let shipped = ws().join("kernel-matrix/conformance");
    let ok = run(
        id,
        &[&filter[..], &["--conformance", shipped.to_str().unwrap()]].concat(),
    );
    assert!(matches(&ok.verdict), "{}", ok.stderr);
    assert_eq!(ok.code, 0, "{}", ok.stderr);

    let edited = tempfile::tempdir().unwrap();
    let file = format!("{id}.yaml");
    let text = std::fs::read_to_string(shipped.join(&file)).unwrap();
    let needle = "  einval/flags_2pow32:\n    observed: \"4096\"";
    assert!(text.contains(needle), "the shipped file changed shape");
    std::fs::write(
        edited.path().join(&file),
        text.replace(needle, "  einval/flags_2pow32:\n    observed: \"0\""),
    )
    .unwrap();
    let bad = run(
        id,
        &[
            &filter[..],
            &["--conformance", edited.path().to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(
        bad.stderr
            .contains("new: einval/flags_2pow32: 4096 where 0 was known"),
        "{}",
        bad.stderr
    );
}

/// Processes whose environment carries the tag (zombies aside).
fn leftovers(tag: &str) -> Vec<String> {
    let needle = format!("PVMTEST_TEST_TAG={tag}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(env) = std::fs::read(p.join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            if !stat.contains(") Z ") {
                out.push(stat.split(' ').take(2).collect::<Vec<_>>().join(" "));
            }
        }
    }
    out
}

/// SIGKILL or Ctrl-C while a runtime row runs: no runsc sandbox or gofer, no UML process is
/// left (PR_SET_PDEATHSIG on the runtime's leader; the signal handler kills its group).
fn killed_mid_run_leaves_nothing(id: &str, program: &str, kill_arg: &str, signal: i32) {
    let test = format!(
        "{}_sig{}_leaves_nothing",
        id.replace(['-', '.'], "_"),
        kill_arg.trim_start_matches('-').to_lowercase()
    );
    if let Some(why) = unavailable() {
        return skip(&test, &why);
    }
    if let Err(why) = fetch(id) {
        return skip(&test, &format!("{id} cannot be fetched: {why}"));
    }
    let tag = format!("{test}-{}", std::process::id());
    // Its own TMPDIR, to see the scratch directory the killed run leaves.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = km(&tag)
        .env("TMPDIR", tmp.path())
        .args(["run", "--kernel", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !leftovers(&tag).iter().any(|p| p.contains(program)) {
        assert!(Instant::now() < deadline, "{program} never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args([kill_arg, &child.id().to_string()])
        .status();
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(signal), "{st:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leftovers(&tag).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            leftovers(&tag)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // No handler can remove the scratch directory (runsc's state, UML's uml_dir) on SIGKILL;
    // the next run does.
    let scratch = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("kernel-matrix-"))
            .collect()
    };
    assert_eq!(scratch().len(), 1, "{:?}", scratch());
    let st = km(&tag)
        .env("TMPDIR", tmp.path())
        .args(["run", "--kernel", id, "--filter", "einval/flags_1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.code().is_some(), "{st:?}");
    assert!(scratch().is_empty(), "not swept: {:?}", scratch());
}

#[test]
fn sigkill_leaves_no_runsc() {
    killed_mid_run_leaves_nothing("gvisor-20240729", "runsc", "-KILL", 9);
}

#[test]
fn sigint_leaves_no_runsc() {
    killed_mid_run_leaves_nothing("gvisor-20240729", "runsc", "-INT", 2);
}

#[test]
fn sigkill_leaves_no_uml() {
    killed_mid_run_leaves_nothing("uml-6.1", "linux.uml", "-KILL", 9);
}

/// `compare` takes runtime ids like kernel ids: bookworm's gVisor (no calls) against
/// trixie's on the flags cases, every case differing.
#[test]
fn compare_accepts_runtime_rows() {
    let test = "compare_accepts_runtime_rows";
    if let Some(why) = unavailable() {
        return skip(test, &why);
    }
    for id in ["gvisor-20221219", "gvisor-20240729"] {
        if let Err(why) = fetch(id) {
            return skip(test, &format!("{id} cannot be fetched: {why}"));
        }
    }
    let out = km(test)
        .args([
            "compare",
            "--baseline",
            "gvisor-20221219",
            "--candidate",
            "gvisor-20240729",
            "--filter",
            "einval/flags_writev",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("einval/flags_writev — runs on one side only")
            && stdout.contains("gvisor-20240729: EINVAL"),
        "{stdout}"
    );
}

/// `fuzz` against a runtime: generated cases have no entries in the conformance file, so a
/// mismatch in one of its classes is counted and kept, not listed, and does not fail the run
/// (seed 1's first 40 cases diverge in gVisor only by the order of checks).
#[test]
fn fuzz_counts_a_runtimes_known_classes() {
    let test = "fuzz_counts_a_runtimes_known_classes";
    let id = "gvisor-20240729";
    if let Some(why) = unavailable() {
        return skip(test, &why);
    }
    if let Err(why) = fetch(id) {
        return skip(test, &format!("{id} cannot be fetched: {why}"));
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = km(test)
        .args([
            "fuzz", "--kernel", id, "--count", "40", "--seed", "1", "--out",
        ])
        .arg(out_dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let known = stdout
        .lines()
        .find(|l| l.contains("kept, not listed"))
        .unwrap_or_else(|| panic!("no known class counted:\n{stdout}"));
    assert!(known.contains(&format!("conformance/{id}.yaml")), "{known}");
    // Counted, not listed: no per-case lines, but every YAML is kept.
    assert!(!stdout.contains("\n  fuzz/"), "{stdout}");
    let kept = std::fs::read_dir(out_dir.path()).unwrap().count();
    assert!(kept > 0, "{stdout}");
}
