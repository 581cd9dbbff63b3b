//! Tests that boot real kernels under QEMU: the whole catalogue on every kernel in
//! kernels.yaml as per-series insta snapshots, a kernel that cannot start its /init, the
//! cargo-runner `exec`, `compare`, and Ctrl-C in the middle of a run.
//!
//! They need qemu-system-x86_64 and the kernels (fetched into the cache on first use). With
//! no qemu they fail with the install command, unless PVMTEST_SKIP_MATRIX=1, which skips
//! them with a note printed past cargo's output capture.

use kernel_matrix::cli::{self, Common};
use kernel_matrix::{boot, kernels, matrix};
use pvmtest::report::Snapshot;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether VM tests run here; panics with the fix when they cannot and were not told to
/// skip.
fn vms_available(test: &str) -> bool {
    if std::env::var("PVMTEST_SKIP_MATRIX").is_ok_and(|v| v == "1") {
        // Past the capture, so a skip is never silent.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: PVMTEST_SKIP_MATRIX=1 (no kernel was booted)"
        );
        return false;
    }
    if let Err(e) = boot::find_qemu() {
        panic!("{test}: {e} — or set PVMTEST_SKIP_MATRIX=1 to skip the kernel matrix");
    }
    true
}

/// A tag in the environment of every process a test starts, to find leftovers.
fn tag(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// Processes (other than zombies) whose environment carries the tag.
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

fn km(tag: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.env("PVMTEST_TEST_TAG", tag).current_dir(ws());
    c
}

/// Every case on every kernel of kernels.yaml, as snapshots in
/// harness/tests/snapshots/<series>/ (the same files harness/tests/cases.rs uses when it
/// runs inside that kernel). Every kernel must boot and every case must pass or skip, and a
/// skip must be one the kernel decided (pvmtest::check::SkipBy): the guests run as root with
/// Yama and huge pages, so the snapshots they record never hold a machine's skip.
#[test]
fn matrix_snapshots() {
    if !vms_available("matrix_snapshots") {
        return;
    }
    let list = kernels::builtin();
    let sel = matrix::select(&list, &[], &[], None).expect("select");
    let cases = ws().join("cases");
    let res = cli::run_selected(&Common::default(), &sel, &[cases], &[], None)
        .unwrap_or_else(|e| panic!("the matrix could not start: {e}"));
    let mut bad = Vec::new();
    for k in &res.kernels {
        if k.status != "ok" {
            bad.push(format!(
                "kernel {} ({}) broken: {}\n{}",
                k.kernel.id,
                k.kernel.version,
                k.failure.clone().unwrap_or_default(),
                k.console_tail.clone().unwrap_or_default()
            ));
            continue;
        }
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(format!("../../harness/tests/snapshots/{}", k.kernel.series));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        for r in &k.results {
            let case = r["case"].as_str().unwrap_or("?").to_string();
            // The recording side runs everything its kernel admits: a skip the machine decided
            // is a guest that lost root, Yama or its huge pages, and would leave the series
            // without a snapshot for the case.
            if let Some(why) = pvmtest::report::machine_skip(r) {
                bad.push(format!(
                    "{case} on {}: skipped by the guest's machine ({why}); the guests run as root with Yama and huge pages",
                    k.kernel.id
                ));
                continue;
            }
            let snap = Snapshot::of_json(r);
            if matches!(
                snap.status,
                pvmtest::runner::Status::Fail | pvmtest::runner::Status::Broken
            ) {
                bad.push(format!(
                    "{} on {}: {}: {}",
                    case,
                    k.kernel.id,
                    r["call"].as_str().unwrap_or_default(),
                    r["reason"].as_str().unwrap_or_default()
                ));
            }
            settings.set_snapshot_suffix(format!("{}.yaml", case.replace('/', "__")));
            settings.set_input_file(
                ws().join("cases")
                    .join(format!("{}.yaml", pvmtest::runner::case_of(&case))),
            );
            settings.bind(|| insta::assert_yaml_snapshot!("cases", snap));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(qemu_children().is_empty(), "{:?}", qemu_children());
}

/// QEMU processes whose parent is this test process.
fn qemu_children() -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|st| {
            let after = st.rsplit_once(") ").map_or("", |x| x.1);
            let f: Vec<&str> = after.split(' ').collect();
            st.contains("(qemu-system") && f.get(1) == Some(&me.as_str())
        })
        .collect()
}

/// A kernel that boots but cannot run /init (a dynamic binary in an initramfs without
/// libc) panics: that kernel is `broken` with the console tail, the run exits 1, and no
/// QEMU is left.
#[test]
fn kernel_without_init_is_broken() {
    if !vms_available("kernel_without_init_is_broken") {
        return;
    }
    let t = tag("no_init");
    let dir = tempfile::tempdir().unwrap();
    let out = km(&t)
        .args([
            "run",
            "--kernel",
            "6.1",
            "--harness",
            "/bin/true",
            "--accel",
            "tcg",
        ])
        .arg("--cases")
        .arg(ws().join("cases/zero"))
        .arg("--report")
        .arg(dir.path())
        .args(["--timeout", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("KERNEL BROKEN"), "{stdout}");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("**6.1 is broken:**"), "{md}");
    assert!(md.contains("Kernel panic"), "{md}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["kernels"][0]["status"], "broken");
    assert!(
        leftovers(&t).is_empty(),
        "left running: {:?}",
        leftovers(&t)
    );
}

/// The cargo runner: stdout, stderr and the exit status come back from inside the kernel,
/// and the program runs in the same directory with the workspace around it (here a
/// workspace under /tmp, which the guest must not hide behind a fresh tmpfs).
#[test]
fn exec_returns_output_and_status() {
    if !vms_available("exec_returns_output_and_status") {
        return;
    }
    let t = tag("exec");
    let ws_dir = tempfile::Builder::new()
        .prefix("pvmtest-ws-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(ws_dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
    std::fs::write(ws_dir.path().join("marker.txt"), "from-the-host\n").unwrap();
    let start = Instant::now();
    let out = km(&t)
        .current_dir(ws_dir.path())
        .args(["exec", "--kernel", "6.1", "--accel", "tcg", "--"])
        .args([
            "/bin/sh",
            "-c",
            "read r < /proc/sys/kernel/osrelease; echo $r; read m < marker.txt; echo $m; \
             echo to-stderr >&2; exit 3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("6.1.0-"), "{stdout}");
    assert!(stdout.contains("\nfrom-the-host\n"), "{stdout}");
    assert!(stderr.contains("to-stderr"), "{stderr}");
    assert!(
        leftovers(&t).is_empty(),
        "left running: {:?}",
        leftovers(&t)
    );
    // Written past the test harness's capture on purpose: this boot is most of the wait
    // in `cargo test`, and the log should say which test took it.
    let _ = writeln!(
        std::io::stderr(),
        "matrix.rs exec_returns_output_and_status: `kernel-matrix exec --kernel 6.1` (boot, program, power-off) took {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// compare prints the cases whose outcome changed, with the call and both outcomes, and
/// exits 1. 5.10.223 still grows a stack from GUP; 6.1.176 does not. The candidate is given
/// as an image path, as a developer's own bzImage would be, so this also covers
/// `--kernel-image`: its id is its file name, its release comes from the image header.
#[test]
fn compare_lists_changed_cases() {
    if !vms_available("compare_lists_changed_cases") {
        return;
    }
    let t = tag("compare");
    let fetched = km(&t).args(["fetch", "--kernel", "5.10"]).output().unwrap();
    assert!(fetched.status.success(), "{fetched:?}");
    let line = String::from_utf8_lossy(&fetched.stdout).into_owned();
    let image = line
        .split_whitespace()
        .last()
        .expect("fetch prints the image path");
    let out = km(&t)
        .args(["compare", "--baseline", "6.1", "--candidate", image])
        .args(["--accel", "tcg"])
        .arg("--cases")
        .arg(ws().join("cases/growsdown"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let local = "vmlinuz";
    assert!(
        stdout.contains(&format!("{local} (5.10.0-32-cloud-amd64, tcg)")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{local}: 5.10.0-32-cloud-amd64 #1 SMP Debian 5.10.223-1"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("growsdown/readv_just_below — both match the model"),
        "{stdout}"
    );
    assert!(stdout.contains("remote=[{stack-4096,4096}]"), "{stdout}");
    assert!(stdout.contains("6.1: EFAULT"), "{stdout}");
    assert!(stdout.contains(&format!("{local}: 4096")), "{stdout}");
    assert!(!stdout.contains("growsdown/readv_inside\n"), "{stdout}");
    assert!(
        leftovers(&t).is_empty(),
        "left running: {:?}",
        leftovers(&t)
    );
}

/// The cached 6.1 image and a copy whose header says build #2: one release, two builds, as
/// a one-line patch to a tree gives. The header's version string is only read by tools
/// (the kernel's `uname -v` comes from the kernel proper), so the copy boots like the
/// original.
fn two_builds_of_6_1(t: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let fetched = km(t).args(["fetch", "--kernel", "6.1"]).output().unwrap();
    assert!(fetched.status.success(), "{fetched:?}");
    let line = String::from_utf8_lossy(&fetched.stdout).into_owned();
    let image = line.split_whitespace().last().expect("an image path");
    let a = std::fs::read(image).unwrap();
    let mut b = a.clone();
    let ptr = u16::from_le_bytes([a[0x20E], a[0x20F]]) as usize + 0x200;
    let at = ptr
        + a[ptr..ptr + 256]
            .windows(4)
            .position(|w| w == b" #1 ")
            .unwrap();
    b[at + 2] = b'2';
    let (pa, pb) = (dir.join("A.bzImage"), dir.join("B.bzImage"));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    (pa, pb)
}

/// `run` with two images of one release runs both, and reports tell them apart by build
/// and SHA-256; `compare` of the two works and finds no change.
#[test]
fn two_builds_of_one_release() {
    if !vms_available("two_builds_of_one_release") {
        return;
    }
    let t = tag("two_builds");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_builds_of_6_1(&t, dir.path());
    let report = dir.path().join("report");
    let out = km(&t)
        .args(["run", "--accel", "tcg", "--kernel-image"])
        .arg(&a)
        .arg("--kernel-image")
        .arg(format!("patched={}", b.display()))
        .arg("--cases")
        .arg(ws().join("cases/zero"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("\nA.bzImage: 6.1.0-50-cloud-amd64 #1 SMP PREEMPT_DYNAMIC Debian")
            || stdout.starts_with("A.bzImage: 6.1.0-"),
        "{stdout}"
    );
    assert!(stdout.contains("patched: 6.1.0-"), "{stdout}");
    assert!(
        stdout.contains(" #2 SMP PREEMPT_DYNAMIC Debian"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    let ks = json["kernels"].as_array().unwrap();
    assert_eq!(ks.len(), 2, "{json}");
    assert_eq!(ks[0]["id"], "A.bzImage");
    assert_eq!(ks[1]["id"], "patched");
    assert_eq!(ks[0]["release"], ks[1]["release"]);
    assert_ne!(ks[0]["sha256"], ks[1]["sha256"]);
    assert_eq!(ks[0]["sha256"].as_str().unwrap().len(), 64);
    for k in ks {
        assert_eq!(k["status"], "ok", "{k}");
        assert!(!k["results"].as_array().unwrap().is_empty(), "{k}");
    }
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains(ks[1]["sha256"].as_str().unwrap()), "{md}");

    let out = km(&t)
        .args(["compare", "--accel", "tcg", "--baseline"])
        .arg(&a)
        .arg("--candidate")
        .arg(&b)
        .arg("--cases")
        .arg(ws().join("cases/zero"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("no case changed between A.bzImage (baseline) and B.bzImage (candidate)"),
        "{stdout}"
    );
    assert!(
        leftovers(&t).is_empty(),
        "left running: {:?}",
        leftovers(&t)
    );
}

/// `fuzz` generates cases from a seed and runs them inside a kernel; none may disagree with
/// the model.
#[test]
fn fuzz_runs_generated_cases_in_a_kernel() {
    if !vms_available("fuzz_runs_generated_cases_in_a_kernel") {
        return;
    }
    let t = tag("fuzz");
    let out_dir = tempfile::tempdir().unwrap();
    let out = km(&t)
        .args([
            "fuzz", "--count", "40", "--seed", "3", "--kernel", "6.1", "--accel", "tcg",
        ])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("6.1: 40 generated cases (seed 3):"),
        "{stdout}"
    );
    assert!(stdout.contains(", 0 mismatches"), "{stdout}");
    assert!(
        leftovers(&t).is_empty(),
        "left running: {:?}",
        leftovers(&t)
    );
}

/// Ctrl-C while VMs run: kernel-matrix dies of SIGINT and takes every QEMU with it.
#[test]
fn sigint_leaves_no_vm() {
    killed_mid_run_leaves_no_vm("sigint", "-INT", libc_sigint());
}

/// SIGKILL while VMs run: no handler runs, and every QEMU still dies with kernel-matrix
/// (PR_SET_PDEATHSIG), instead of running on until its guest powers off.
#[test]
fn sigkill_leaves_no_vm() {
    killed_mid_run_leaves_no_vm("sigkill", "-KILL", 9);
}

fn killed_mid_run_leaves_no_vm(name: &str, kill_arg: &str, signal: i32) {
    let test = format!("{name}_leaves_no_vm");
    if !vms_available(&test) {
        return;
    }
    let t = tag(name);
    let mut child = km(&t)
        .args([
            "run", "--kernel", "6.1", "--kernel", "6.12", "--accel", "tcg",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !leftovers(&t).iter().any(|p| p.contains("qemu")) {
        assert!(Instant::now() < deadline, "no QEMU ever started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args([kill_arg, &child.id().to_string()])
        .status();
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(signal), "{st:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leftovers(&t).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            leftovers(&t)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn libc_sigint() -> i32 {
    2
}
