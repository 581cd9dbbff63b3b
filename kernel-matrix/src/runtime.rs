//! Runtimes as matrix rows: gVisor (`runsc`), User-mode Linux and qemu-user re-implement
//! `process_vm_readv(2)`/`process_vm_writev(2)` (or not), and run the same static harness and
//! the same cases as the kernels, judged against a chosen Linux (`--reference`), never the
//! version string they report. runtimes.yaml lists them; they are fetched by the kernels' code
//! (fetch.rs) and their results are [`KernelResult`]s like a kernel's, so every report works.
//!
//! How each runs (docs/CONFORMANCE.md has the measurements behind these choices):
//! - gvisor: `runsc --root=STATE --network=none --platform=P do HARNESS run --format json
//!   --reference R CASES`, stdin /dev/null (with an inherited terminal stdin `runsc do` hangs),
//!   STATE a fresh directory in the run's scratch directory;
//! - uml: `linux.uml` boots the matrix initramfs; the guest's PID-1 protocol goes over UML
//!   serial lines (`ssl1`, `ssl3`) into the same port files QEMU uses (boot::watch);
//! - qemu-user: `qemu-x86_64-static HARNESS run --format json --reference R CASES`.
//!
//! Each runs in its own process group with PR_SET_PDEATHSIG, killed as a group on every way
//! out (boot.rs's guard), so Ctrl-C, a hang or a crash leaves no sandbox or UML process.

use crate::matrix::{counts, KernelResult, Prepared};
use crate::{boot, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kinds of runtime the matrix knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Gvisor,
    Uml,
    QemuUser,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gvisor => "gvisor",
            Kind::Uml => "uml",
            Kind::QemuUser => "qemu-user",
        }
    }
}

/// One runtime of the matrix, as written in runtimes.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEntry {
    pub id: String,
    pub kind: Kind,
    pub suite: String,
    pub package: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub program: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl RuntimeEntry {
    /// The entry as the fetch code sees a package: the program is the "image".
    pub fn as_package(&self) -> crate::kernels::KernelEntry {
        crate::kernels::KernelEntry {
            id: self.id.clone(),
            suite: self.suite.clone(),
            package: self.package.clone(),
            version: self.version.clone(),
            image: self.program.clone(),
            config: None,
            description: self.description.clone(),
        }
    }
}

const BUILTIN_YAML: &str = include_str!("../runtimes.yaml");

/// The crate's own runtimes.yaml.
pub fn builtin() -> Vec<RuntimeEntry> {
    // Compiled in and covered by a unit test: failing here is a build bug, not bad input.
    parse(BUILTIN_YAML, "kernel-matrix/runtimes.yaml (built in)")
        .unwrap_or_else(|e| panic!("built-in runtimes.yaml is invalid: {e}"))
}

/// Reads and validates a runtimes.yaml.
pub fn load(path: &Path) -> Result<Vec<RuntimeEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(format!(
            "cannot read runtimes file {}: {e} (check the path, or omit --runtimes to use the built-in list)",
            path.display()
        ))
    })?;
    parse(&text, &path.display().to_string())
}

pub fn parse(text: &str, source: &str) -> Result<Vec<RuntimeEntry>> {
    let entries: Vec<RuntimeEntry> = serde_yaml::from_str(text).map_err(|e| {
        let at = match e.location() {
            Some(l) => format!("{source}:{}", l.line()),
            None => source.to_string(),
        };
        Error::new(format!(
            "{at}: {e} (each entry is a mapping with id, kind (gvisor, uml, qemu-user), suite, package, program and optional version, platform, description)"
        ))
    })?;
    for (i, e) in entries.iter().enumerate() {
        let at = format!("{source} (entry {}, id '{}')", i + 1, e.id);
        let id_ok = !e.id.is_empty()
            && e.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
            && e.id.chars().any(|c| c.is_ascii_alphabetic());
        if !id_ok {
            return Err(Error::new(format!(
                "{at}: id must be letters, digits and ._+- with at least one letter, like gvisor-20240729 (a bare MAJOR.MINOR names a kernel)"
            )));
        }
        if entries[..i].iter().any(|p| p.id == e.id) {
            return Err(Error::new(format!(
                "{at}: id '{}' is listed twice; ids must be unique",
                e.id
            )));
        }
        if e.program.is_empty() || e.program.starts_with('/') || e.program.starts_with("./") {
            return Err(Error::new(format!(
                "{at}: program '{}' must be a path inside the package without a leading / or ./, like usr/bin/runsc",
                e.program
            )));
        }
        if e.platform.is_some() && e.kind != Kind::Gvisor {
            return Err(Error::new(format!(
                "{at}: platform is a runsc option; remove it from this {} entry",
                e.kind.name()
            )));
        }
    }
    Ok(entries)
}

/// `--runtimes FILE` or the built-in list.
pub fn load_list(path: Option<&Path>) -> Result<Vec<RuntimeEntry>> {
    match path {
        Some(p) => load(p),
        None => Ok(builtin()),
    }
}

/// How to run one runtime row.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The static guest harness (the initramfs's /init).
    pub harness: PathBuf,
    /// The catalogue laid out on disk as in the initramfs (`<dir>/cases/...`).
    pub cases: PathBuf,
    /// The initramfs itself (UML boots it).
    pub initrd: PathBuf,
    /// X.Y.Z of the Linux the runtime is judged against; empty for UML judged as itself.
    pub reference: String,
    /// Scratch directory of this row (state dirs, logs).
    pub workdir: PathBuf,
    /// Whole-row deadline.
    pub timeout: Duration,
    /// Per-case step timeout given to the harness.
    pub case_timeout: Duration,
}

/// Runs the catalogue in one runtime. Like a kernel, a runtime that misbehaves is this row's
/// `broken` result, never an error of the run.
pub fn run_one(p: &Prepared, entry: &RuntimeEntry, spec: &RunSpec) -> KernelResult {
    let start = Instant::now();
    let mut res = KernelResult {
        kernel: p.clone(),
        accel: None,
        status: "ok",
        failure: None,
        boot_s: None,
        run_s: 0.0,
        summary: Default::default(),
        facts: None,
        results: Vec::new(),
        console_tail: None,
        total: None,
        gcov: Vec::new(),
    };
    let got = match entry.kind {
        Kind::Gvisor | Kind::QemuUser => run_process(p, entry, spec),
        Kind::Uml => run_uml(p, spec),
    };
    match got {
        Ok(g) => {
            res.facts = g.facts;
            res.results = g.results;
            res.total = Some(res.results.len());
            res.boot_s = g.boot_s;
            if let Some(f) = g.failure {
                res.status = "broken";
                res.failure = Some(f);
                res.console_tail = g.tail;
            }
        }
        Err(e) => {
            res.status = "broken";
            res.failure = Some(e.to_string());
        }
    }
    res.results
        .sort_by(|a, b| a["case"].as_str().cmp(&b["case"].as_str()));
    res.run_s = start.elapsed().as_secs_f64();
    res.summary = counts(&res.results);
    if res.status == "ok" {
        if let Some(why) = not_implemented(&res.results) {
            res.status = "not-implemented";
            res.failure = Some(why);
        }
    }
    res
}

/// "Not implemented": no case passed and every case that made the call saw ENOSYS, which
/// Linux never returns from these calls (gVisor 20221219 registers both as ENOSYS stubs;
/// qemu-user 7.2 has no case for them in `do_syscall1`). The harness marks such a case as
/// an unsupported skip (`"unsupported": "not_implemented"`); an older harness reported it as
/// a failure with observed ENOSYS, which counts the same. Reported as one line, not hundreds
/// of skips or failures.
pub fn not_implemented(results: &[Value]) -> Option<String> {
    let enosys = |r: &&Value| {
        (r["status"] == "skip" && r["unsupported"] == "not_implemented")
            || (r["status"] == "fail" && r["observed"] == "ENOSYS")
    };
    let n = results.iter().filter(enosys).count();
    let other_answers = results
        .iter()
        .filter(|r| matches!(r["status"].as_str(), Some("pass" | "fail")))
        .filter(|r| !enosys(r))
        .count();
    (n > 0 && other_answers == 0).then(|| {
        format!(
            "process_vm_readv/process_vm_writev not implemented: ENOSYS in all {n} cases that make the call"
        )
    })
}

struct Got {
    facts: Option<Value>,
    results: Vec<Value>,
    failure: Option<String>,
    boot_s: Option<f64>,
    tail: Option<String>,
}

/// The harness as an ordinary process inside `runsc do` or under qemu-user.
fn run_process(p: &Prepared, entry: &RuntimeEntry, spec: &RunSpec) -> Result<Got> {
    std::fs::create_dir_all(&spec.workdir)
        .map_err(|e| Error::new(format!("{}: {e}", spec.workdir.display())))?;
    let harness_args = |c: &mut Command| {
        c.arg(&spec.harness)
            .args(["run", "--format", "json", "--reference", &spec.reference])
            .arg("--timeout-ms")
            .arg(spec.case_timeout.as_millis().to_string())
            .arg(&spec.cases);
    };
    let mut cmd = Command::new(&p.image);
    match entry.kind {
        Kind::Gvisor => {
            let state = spec.workdir.join("runsc-state");
            std::fs::create_dir_all(&state)
                .map_err(|e| Error::new(format!("{}: {e}", state.display())))?;
            cmd.arg(format!("--root={}", state.display()))
                .arg("--network=none")
                .arg(format!(
                    "--platform={}",
                    entry.platform.as_deref().unwrap_or("ptrace")
                ))
                .arg("do");
        }
        Kind::QemuUser => {}
        Kind::Uml => unreachable!("UML boots the initramfs"),
    }
    if entry.kind == Kind::Gvisor {
        // `runsc do` makes its command PID 1 of the sandbox, and a pvmtest that is PID 1 takes
        // itself for a VM's /init (guest.rs). A shell stays PID 1 instead; the `exit` keeps
        // it from exec'ing the harness in its place. The host's root is the sandbox's (read
        // only, under an overlay), so /bin/sh is there.
        cmd.args(["/bin/sh", "-c", "\"$@\"; exit $?", "sh"]);
    }
    harness_args(&mut cmd);
    let out_path = spec.workdir.join("stdout.json");
    let err_path = spec.workdir.join("stderr.log");
    let file = |p: &Path| {
        std::fs::File::create(p).map_err(|e| Error::new(format!("{}: {e}", p.display())))
    };
    cmd.current_dir(&spec.workdir)
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?);
    let status = supervise(cmd, spec.timeout, &p.image)?;
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let tail = || {
        let lines: Vec<&str> = stderr.lines().collect();
        Some(lines[lines.len().saturating_sub(20)..].join("\n"))
    };
    let Some(status) = status else {
        return Ok(Got {
            facts: None,
            results: Vec::new(),
            failure: Some(format!(
                "timed out after {} s (killed with its process group)",
                spec.timeout.as_secs()
            )),
            boot_s: None,
            tail: tail(),
        });
    };
    // qemu-user's glib assertions print "Bail out!" lines on stdout before the document.
    let doc = stdout
        .find("\n{")
        .map(|i| &stdout[i + 1..])
        .or_else(|| stdout.starts_with('{').then_some(stdout.as_str()));
    let parsed: Option<Value> = doc.and_then(|d| serde_json::from_str(d).ok());
    match parsed {
        Some(v) => {
            let failure = match status.code() {
                Some(0 | 1) => None,
                Some(2) => Some("the harness found invalid case files".to_string()),
                _ => Some(format!("the harness exited with {status}")),
            };
            Ok(Got {
                facts: v.get("facts").cloned(),
                results: v["results"].as_array().cloned().unwrap_or_default(),
                failure,
                boot_s: None,
                tail: tail(),
            })
        }
        None => Ok(Got {
            facts: None,
            results: Vec::new(),
            failure: Some(format!(
                "the harness gave no JSON report (exit {status}): {}",
                stderr
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("no output on stderr")
            )),
            boot_s: None,
            tail: tail(),
        }),
    }
}

/// Starts `cmd` in its own process group with PR_SET_PDEATHSIG and waits at most `timeout`;
/// `None` when it timed out. The group is killed and the leader reaped on every way out.
fn supervise(
    mut cmd: Command,
    timeout: Duration,
    program: &Path,
) -> Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        Error::new(format!(
            "cannot start {}: {e} (run `kernel-matrix fetch --kernel ID` again)",
            program.display()
        ))
    })?;
    let mut g = Group(child);
    pvmtest::exec::proc::track(g.0.id() as i32);
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = g.0.try_wait() {
            return Ok(Some(s));
        }
        if start.elapsed() > timeout {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A runtime's process group: killed and reaped when dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
        pvmtest::exec::proc::untrack(pid);
    }
}

/// UML's command line: the matrix initramfs as initrd, the console on fd 6, the guest's data
/// (ttyS1), stderr (ttyS2) and control (ttyS3) ports on fds 3-5, which are boot::PORTS files.
pub fn uml_cmdline(spec: &RunSpec) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "mem=512M".into(),
        format!("initrd={}", spec.initrd.display()),
        "rdinit=/init".into(),
        format!("uml_dir={}", spec.workdir.join("uml").display()),
        "con=null".into(),
        "con0=null,fd:6".into(),
        "ssl=null".into(),
        "ssl1=null,fd:3".into(),
        "ssl2=null,fd:4".into(),
        "ssl3=null,fd:5".into(),
        "panic=-1".into(),
        "quiet".into(),
        // The guest ends with a power-off, not a restart (which would run /init again).
        "pvmtest.poweroff".into(),
    ];
    // Without --reference UML is judged as the Linux it is (its own release, read inside).
    if !spec.reference.is_empty() {
        v.push(format!("pvmtest.reference={}", spec.reference));
    }
    v
}

fn run_uml(p: &Prepared, spec: &RunSpec) -> Result<Got> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(spec.workdir.join("uml"))
        .map_err(|e| Error::new(format!("{}: {e}", spec.workdir.display())))?;
    let mut files = Vec::new();
    for name in boot::PORTS {
        let path = spec.workdir.join(name);
        files.push(
            std::fs::File::create(&path)
                .map_err(|e| Error::new(format!("{}: {e}", path.display())))?,
        );
    }
    // PORTS: console, data, stderr, control -> fds 6, 3, 4, 5.
    let fds: Vec<(i32, i32)> = files
        .iter()
        .zip([6, 3, 4, 5])
        .map(|(f, to)| (f.as_raw_fd(), to))
        .collect();
    // UML forks helper processes that outlive its main process if that is SIGKILLed, and
    // PR_SET_PDEATHSIG is not inherited by them. So UML runs as PID 1 of its own PID
    // namespace: when it dies the kernel kills everything in the namespace. util-linux's
    // `unshare --kill-child` forks it there and kills it when unshare itself dies (which
    // happens with us, by the death signal set below).
    let mut cmd = match find_in_path("unshare") {
        Some(unshare) => {
            let mut c = Command::new(unshare);
            c.args(["--pid", "--fork", "--kill-child=SIGKILL", "--"])
                .arg(&p.image);
            c
        }
        None => Command::new(&p.image),
    };
    cmd.args(uml_cmdline(spec));
    // UML's memory is a file in TMPDIR: keep it off the disk.
    if Path::new("/dev/shm").is_dir() {
        cmd.env("TMPDIR", "/dev/shm");
    }
    cmd.process_group(0);
    // SAFETY: dup2 is async-signal-safe; the fds stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Every source above the targets first, so no source is overwritten before use.
            let mut high = [0; 4];
            for (k, &(from, _)) in fds.iter().enumerate() {
                high[k] = libc::fcntl(from, libc::F_DUPFD, 10);
                if high[k] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (k, &(_, to)) in fds.iter().enumerate() {
                if libc::dup2(high[k], to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut got = Got {
        facts: None,
        results: Vec::new(),
        failure: None,
        boot_s: None,
        tail: None,
    };
    let hint = format!(
        "cannot start {}: {{e}} (run `kernel-matrix fetch --kernel {}` again)",
        p.image.display(),
        p.id
    );
    let out = boot::watch(
        cmd,
        &spec.workdir,
        Duration::from_secs(60),
        spec.timeout,
        &hint,
        &mut |l| match l {
            pvmtest::guest::Line::Facts(v) => got.facts = Some(v.clone()),
            pvmtest::guest::Line::Result(v) => got.results.push(v.clone()),
            _ => {}
        },
    )?;
    drop(files);
    got.boot_s = out.boot_s;
    got.failure = out.failure.clone().or_else(|| match out.exit {
        Some(0 | 1) => None,
        Some(2) => Some("the guest found invalid case files".into()),
        Some(c) => Some(format!("the guest harness exited with status {c}")),
        None => Some("the guest never reported its exit status".into()),
    });
    if got.failure.is_some() {
        got.tail = Some(out.console_tail(30));
    }
    Ok(got)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Writes the cases as the initramfs has them (`dir/cases/<name>.yaml` and the catalogue
/// marker), so the harness inside a runtime names every case as the host does.
pub fn write_case_tree(dir: &Path, cases: &[pvmtest::runner::Found]) -> Result<PathBuf> {
    let root = dir.join("cases");
    let io = |p: &Path, e: std::io::Error| Error::new(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    std::fs::write(
        root.join(pvmtest::runner::CATALOGUE_MARKER),
        b"pvmtest case catalogue root (case names are paths under it)\n",
    )
    .map_err(|e| io(&root, e))?;
    for c in cases {
        let to = root.join(format!("{}.yaml", c.name));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::copy(&c.path, &to).map_err(|e| io(&to, e))?;
    }
    Ok(root)
}

/// The file in a run's scratch directory that names the process owning it: `PID STARTTIME`.
pub const OWNER_FILE: &str = "owner";

/// `PID STARTTIME` of `pid` (field 22 of /proc/PID/stat), which no later process with the
/// same pid shares.
fn process_identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Marks `dir` as this process's scratch directory (see [`sweep_stale`]).
pub fn claim(dir: &Path) -> Result<()> {
    let me = process_identity(std::process::id())
        .ok_or_else(|| Error::new("cannot read /proc/self/stat (is /proc mounted?)"))?;
    std::fs::write(dir.join(OWNER_FILE), me)
        .map_err(|e| Error::new(format!("{}: {e}", dir.display())))
}

/// Removes the scratch directories (`kernel-matrix-*` in `tmp`) of runs that were killed
/// before they could clean up (SIGKILL; a signal handler only kills the processes): runsc
/// state, UML's uml_dir, logs. Only directories with an [`OWNER_FILE`] whose process is gone
/// are touched. Returns how many were removed.
pub fn sweep_stale(tmp: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with("kernel-matrix-")
        {
            continue;
        }
        let Ok(owner) = std::fs::read_to_string(e.path().join(OWNER_FILE)) else {
            continue;
        };
        let alive = owner
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .and_then(process_identity)
            .is_some_and(|now| now == owner.trim());
        if !alive && std::fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_scratch_directories_are_swept_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str, owner: Option<&str>| {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(d.join("rt-x/runsc-state")).unwrap();
            if let Some(o) = owner {
                std::fs::write(d.join(OWNER_FILE), o).unwrap();
            }
            d
        };
        let live = mk("kernel-matrix-live", None);
        claim(&live).unwrap();
        // pid 1 exists but did not start at time 1; an unknown pid does not exist.
        let dead = mk("kernel-matrix-dead", Some("1 1"));
        let gone = mk("kernel-matrix-gone", Some("4194305 7"));
        let foreign = mk("kernel-matrix-foreign", None);
        let other = mk("other-dir", Some("4194305 7"));
        assert_eq!(sweep_stale(tmp.path()), 2);
        assert!(live.is_dir() && foreign.is_dir() && other.is_dir());
        assert!(!dead.exists() && !gone.exists());
    }

    #[test]
    fn builtin_lists_four_runtimes() {
        let b = builtin();
        let ids: Vec<&str> = b.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "gvisor-20240729",
                "gvisor-20221219",
                "uml-6.1",
                "qemu-user-7.2"
            ]
        );
        assert_eq!(b[2].kind, Kind::Uml);
        assert_eq!(b[3].program, "usr/bin/qemu-x86_64-static");
    }

    #[test]
    fn bad_entries_are_one_line_errors() {
        let one = "- id: x\n  kind: gvisor\n  suite: trixie\n  package: runsc\n  program: usr/bin/runsc\n";
        assert!(parse(one, "r.yaml").is_ok());
        let e = parse(&one.replace("gvisor", "docker"), "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.yaml:2") && !e.contains('\n'), "{e}");
        let e = parse(&one.replace("id: x", "id: \"6.1\""), "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a bare MAJOR.MINOR names a kernel"), "{e}");
        let e = parse(&format!("{one}{one}"), "r.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
        let e = parse(
            &one.replace("kind: gvisor", "kind: uml")
                .replace("program:", "platform: ptrace\n  program:"),
            "r.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("platform is a runsc option"), "{e}");
    }

    fn r(status: &str, observed: &str) -> Value {
        serde_json::json!({"case": "c", "status": status, "observed": observed})
    }

    #[test]
    fn enosys_everywhere_is_not_implemented() {
        let all = [r("fail", "ENOSYS"), r("skip", ""), r("fail", "ENOSYS")];
        assert!(not_implemented(&all)
            .unwrap()
            .contains("ENOSYS in all 2 cases"));
        // One real answer, or one pass, and it is an implementation with divergences.
        assert!(not_implemented(&[r("fail", "ENOSYS"), r("fail", "EINVAL")]).is_none());
        assert!(not_implemented(&[r("fail", "ENOSYS"), r("pass", "0")]).is_none());
        assert!(not_implemented(&[r("skip", "")]).is_none());
    }
}
