//! The whole catalogue as an unprivileged user, the way sandboxed CI runs it: `pvmtest run`
//! must end with no failure and nothing broken, every skip saying why, and `pvmtest check`
//! must give the same verdict as for root. Run as root, the binary and the cases are copied
//! to a world-readable scratch directory and run as `nobody` (uid and gid 65534, no
//! supplementary groups, no capabilities); run as anyone else, as that user.
//!
//! Before pins were judged for the harness the case declares (check::pin_harness), this
//! failed: eperm/root_vs_nondumpable_root_writev pinned what only a root caller gets, so a
//! non-root run reported `1 failed` and `pvmtest check` called the file invalid for non-root
//! and valid for root.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pvmtest");
const NOBODY: u32 = 65534;
/// The catalogue takes about 20 s on two CPUs; this only bounds a hang.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Held for writing while a binary is copied and for reading while a child is spawned: a fork
/// of the test process made while the copy is open for writing would hold that descriptor
/// at the copy's exec, which then fails with ETXTBSY ("Text file busy").
static SPAWN: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What one run of the binary left.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A scratch directory holding a copy of the binary and of `cases/` that `nobody` can read
/// and execute (a checkout under a root-only home would not be); removed on drop.
struct Scratch {
    dir: PathBuf,
    bin: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("pvmtest-unpriv-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
        copy_tree(&src, &dir.join("cases"));
        let bin = dir.join("pvmtest");
        {
            let _no_fork = SPAWN.write().unwrap_or_else(|e| e.into_inner());
            std::fs::copy(BIN, &bin).unwrap();
        }
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { dir, bin }
    }

    /// Runs the copied binary in the scratch directory (see [`run`]).
    fn run(&self, args: &[&str], uid: Option<u32>) -> Out {
        run(&self.bin, &self.dir, args, uid)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Runs `bin args` in `dir`, as `uid` (gid the same, no supplementary groups: std drops
/// them when root sets a uid) when given, killing it if it outlives [`TIMEOUT`].
fn run(bin: &Path, dir: &Path, args: &[&str], uid: Option<u32>) -> Out {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        // Root's TMPDIR may be private to root; file regions are O_TMPFILE files there.
        .env_remove("TMPDIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(u) = uid {
        cmd.uid(u).gid(u);
    }
    let mut child = {
        let _no_copy = SPAWN.read().unwrap_or_else(|e| e.into_inner());
        cmd.spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
    };
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let ro = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let re = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            // SIGINT first: pvmtest kills and reaps its targets and callers on it.
            // SAFETY: signals our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let grace = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("`pvmtest {}` did not finish in {TIMEOUT:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Out {
        code: status.code().or(status.signal().map(|s| 128 + s)),
        stdout: ro.join().unwrap(),
        stderr: re.join().unwrap(),
    }
}

/// Who the unprivileged runs are: `nobody` when this test is root, else this user.
fn unprivileged() -> Option<u32> {
    is_root().then_some(NOBODY)
}

#[test]
fn whole_catalogue_runs_clean_unprivileged() {
    let s = Scratch::new("run");
    // Inside a matrix VM (TCG) a case takes many times as long: the matrix's own per-case
    // budget, not the host's default.
    let timeout = if std::env::var_os("PVMTEST_GUEST").is_some() {
        "60000"
    } else {
        "5000"
    };
    let out = s.run(
        &["run", "--format", "json", "--timeout-ms", timeout, "cases"],
        unprivileged(),
    );
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {:?}, stderr:\n{}",
            out.code, out.stderr
        )
    });
    let results = doc["results"].as_array().expect("results");
    let mut bad = Vec::new();
    for r in results {
        let case = r["case"].as_str().unwrap_or("?");
        let reason = r["reason"].as_str().unwrap_or("").trim();
        match r["status"].as_str() {
            Some("pass") => {}
            Some("skip") if !reason.is_empty() => {}
            Some("skip") => bad.push(format!("skip without a reason: {case}")),
            other => bad.push(format!(
                "{}: {case}: {reason}",
                other.unwrap_or("no status")
            )),
        }
    }
    assert!(
        bad.is_empty(),
        "as uid {:?}:\n{}",
        unprivileged(),
        bad.join("\n")
    );
    let files = pvmtest::runner::collect(&[s.dir.join("cases")]).unwrap();
    assert_eq!(results.len(), files.len(), "every case file has a result");
    let passed = results.iter().filter(|r| r["status"] == "pass").count();
    assert!(
        passed * 2 > files.len(),
        "most cases need no privilege: {passed} passed"
    );
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
    assert_eq!(doc["summary"]["fail"], 0);
    assert_eq!(doc["summary"]["broken"], 0);
}

/// `pvmtest check` gives the same output and exit status for root and for an unprivileged
/// user: on the catalogue (all valid), and on a pin only a root harness gets, in a case that
/// does not require root (invalid for both, with the fix).
#[test]
fn check_verdict_does_not_depend_on_the_user() {
    let s = Scratch::new("check");
    let src = std::fs::read_to_string(
        s.dir
            .join("cases/eperm/root_vs_nondumpable_root_writev.yaml"),
    )
    .unwrap();
    let undeclared = src.replace("requires:\n  root: true\n", "");
    assert_ne!(
        undeclared, src,
        "the case declares `requires: {{root: true}}`"
    );
    let extra = s.dir.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = extra.join("root_only_pin.yaml");
    std::fs::write(&f, undeclared).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (what, want) in [("cases", 0), ("extra", 2)] {
        let unpriv = s.run(&["check", what], unprivileged());
        assert_eq!(
            unpriv.code,
            Some(want),
            "check {what} as uid {:?}:\n{}{}",
            unprivileged(),
            unpriv.stdout,
            unpriv.stderr
        );
        if want == 2 {
            assert!(
                unpriv.stderr.contains(
                    "root_only_pin.yaml:15:1: expect: the outcome depends on who runs the harness"
                ) && unpriv.stderr.contains("add `requires: {root: true}`"),
                "{}",
                unpriv.stderr
            );
        }
        if is_root() {
            let root = s.run(&["check", what], None);
            assert_eq!(
                (root.code, &root.stdout, &root.stderr),
                (unpriv.code, &unpriv.stdout, &unpriv.stderr),
                "check {what}: root and nobody disagree"
            );
        }
    }
}
