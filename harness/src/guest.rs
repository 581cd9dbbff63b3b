//! The harness as `/init` of a kernel-matrix VM.
//!
//! kernel-matrix boots a kernel with an initramfs whose `/init` is a static build of this
//! binary and whose [`CONFIG_PATH`] says what to do. As PID 1 we mount what a fresh initramfs
//! lacks (devtmpfs is not auto-mounted there), fork one worker for the task, reap every orphan
//! until the worker is gone (nothing else would), report on the control port and power off.
//!
//! Serial ports (8250, built into every kernel we boot):
//! - ttyS0: the console, kept by the host as the boot log;
//! - ttyS1: data — `@@PVMTEST` lines in run mode, the program's stdout in exec mode;
//! - ttyS2: the program's stderr in exec mode;
//! - ttyS3: control — one `@@PVMTEST exit N` line when the task is over.
//!
//! When the config asks for it (`gcov`, for `kernel-matrix coverage`), PID 1 sends the
//! kernel's gcov counters on the data port after the worker is gone and before `exit`: one
//! `@@PVMTEST gcov LEN HEX PATH` line per `.gcda` file under debugfs's `gcov/`.
//!
//! Facts are read inside the guest like anywhere else ([`Facts::detect`]); nothing about
//! Debian's configuration is assumed.

use crate::exec::Options;
use crate::facts::Facts;
use crate::runner;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the host puts the [`GuestConfig`] inside the initramfs.
pub const CONFIG_PATH: &str = "/pvmtest/guest.json";
/// The prefix of every protocol line on the data and control ports.
pub const TAG: &str = "@@PVMTEST";

/// What the guest is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    pub task: Task,
    /// 2 MiB huge pages to reserve (`vm.nr_hugepages`) before the task, so hugetlb cases can
    /// run; 0 leaves the kernel's setting alone.
    #[serde(default)]
    pub hugepages: u64,
    /// Send the kernel's gcov counters (`.gcda` files) on the data port before `exit`.
    #[serde(default)]
    pub gcov: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Task {
    /// Run case files and stream one `@@PVMTEST result {json}` line per case.
    Run {
        paths: Vec<String>,
        jobs: usize,
        timeout_ms: u64,
    },
    /// Run a program (a cargo test binary, say) with stdout on ttyS1 and stderr on ttyS2.
    Exec {
        argv: Vec<String>,
        cwd: String,
        env: Vec<(String, String)>,
    },
}

/// A line on the data port, as the host parses it.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Facts(serde_json::Value),
    Result(serde_json::Value),
    /// Cases loaded, so the host can size a progress bar.
    Total(usize),
    /// One `.gcda` file: its path in the guest's debugfs and its bytes. On the wire the
    /// length comes first and the line is refused unless the hex has exactly that many
    /// bytes, so a truncated or garbled line is a missing file, never a wrong one.
    Gcov {
        path: String,
        data: Vec<u8>,
    },
    /// On the control port: /init is running and set up (the end of "boot").
    Up,
    Exit(i32),
}

impl Line {
    pub fn render(&self) -> String {
        match self {
            Line::Facts(v) => format!("{TAG} facts {v}\n"),
            Line::Result(v) => format!("{TAG} result {v}\n"),
            Line::Total(n) => format!("{TAG} total {n}\n"),
            Line::Gcov { path, data } => {
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                format!("{TAG} gcov {} {hex} {path}\n", data.len())
            }
            Line::Up => format!("{TAG} up\n"),
            Line::Exit(c) => format!("{TAG} exit {c}\n"),
        }
    }

    /// Parses one line; `None` for anything that is not a protocol line (console noise).
    pub fn parse(line: &str) -> Option<Line> {
        let rest = line.trim_end_matches(['\r', '\n']).strip_prefix(TAG)?;
        let rest = rest.strip_prefix(' ')?;
        if rest == "up" {
            return Some(Line::Up);
        }
        let (kind, body) = rest.split_once(' ')?;
        match kind {
            "facts" => serde_json::from_str(body).ok().map(Line::Facts),
            "result" => serde_json::from_str(body).ok().map(Line::Result),
            "total" => body.trim().parse().ok().map(Line::Total),
            "exit" => body.trim().parse().ok().map(Line::Exit),
            "gcov" => parse_gcov(body),
            _ => None,
        }
    }
}

fn parse_gcov(body: &str) -> Option<Line> {
    let mut it = body.splitn(3, ' ');
    let len: usize = it.next()?.parse().ok()?;
    let hex = it.next()?;
    let path = it.next()?;
    if hex.len() != 2 * len || path.is_empty() {
        return None;
    }
    let data = (0..len)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(Line::Gcov {
        path: path.to_string(),
        data,
    })
}

/// Whether PID 1 ends the machine with a power-off rather than a restart: with ACPI, or when
/// the host asks with `pvmtest.poweroff` on the command line. User-mode Linux asks: its
/// restart runs the kernel and /init again (arch/um `machine_restart`), and the second run's
/// results reached the port files the host was still reading, up to ~140 duplicate results
/// per row; its power-off ends the process.
fn power_off_wanted(cmdline: &str, acpi: bool) -> bool {
    acpi || cmdline.split_whitespace().any(|w| w == "pvmtest.poweroff")
}

/// True when this process is the first one a kernel started from an initramfs.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// PID 1's whole life. Never returns: the VM powers off.
pub fn init_main() -> ! {
    let control = |l: Line| {
        if let Ok(mut ctl) = std::fs::OpenOptions::new().write(true).open("/dev/ttyS3") {
            let _ = ctl.write_all(l.render().as_bytes());
            let _ = ctl.flush();
        }
    };
    let mut gcov = false;
    let code = match setup() {
        Ok(cfg) => {
            control(Line::Up);
            gcov = cfg.gcov;
            supervise(cfg)
        }
        Err(e) => {
            console(&format!("pvmtest guest: setup failed: {e}"));
            125
        }
    };
    if gcov {
        send_gcov();
    }
    control(Line::Exit(code));
    nix::unistd::sync();
    // Without ACPI (kernel-matrix's minimal configuration) a power-off only halts the CPU and
    // QEMU would have to be killed after a grace period; a restart always resets the machine
    // (keyboard controller, then triple fault: arch/x86/kernel/reboot.c), and the host runs
    // QEMU with `-no-reboot`, so a reset is QEMU's exit.
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mode = if power_off_wanted(&cmdline, Path::new("/sys/firmware/acpi").exists()) {
        nix::sys::reboot::RebootMode::RB_POWER_OFF
    } else {
        nix::sys::reboot::RebootMode::RB_AUTOBOOT
    };
    let _ = nix::sys::reboot::reboot(mode);
    // reboot(2) only returns on failure; PID 1 must not exit (that panics the kernel,
    // which the host would also report, but less clearly).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Sends every `.gcda` under debugfs's `gcov/` on the data port, one [`Line::Gcov`] each,
/// and waits until the port has transmitted them (power-off follows). The `.gcno` entries
/// there are symlinks into the build tree: skipped. A file that cannot be read is said on
/// the console; the host then names the object whose counters are missing.
fn send_gcov() {
    use nix::mount::{mount, MsFlags};
    let _ = mount(
        Some("debugfs"),
        "/sys/kernel/debug",
        Some("debugfs"),
        MsFlags::empty(),
        None::<&str>,
    );
    let Ok(mut out) = std::fs::OpenOptions::new().write(true).open("/dev/ttyS1") else {
        console("pvmtest guest: gcov: cannot open /dev/ttyS1");
        return;
    };
    let mut stack = vec![PathBuf::from("/sys/kernel/debug/gcov")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            console(&format!(
                "pvmtest guest: gcov: cannot read {}",
                dir.display()
            ));
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && p.extension().is_some_and(|x| x == "gcda") {
                match std::fs::read(&p) {
                    Ok(data) => {
                        let l = Line::Gcov {
                            path: p.display().to_string(),
                            data,
                        };
                        let _ = out.write_all(l.render().as_bytes());
                    }
                    Err(e) => console(&format!("pvmtest guest: gcov: {}: {e}", p.display())),
                }
            }
        }
    }
    let _ = out.flush();
    let _ = nix::sys::termios::tcdrain(&out);
}

fn console(msg: &str) {
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "{msg}");
    }
}

fn setup() -> Result<GuestConfig, String> {
    use nix::mount::{mount, MsFlags};
    let mnt = |src: &str, dir: &str, fstype: &str| -> Result<(), String> {
        let _ = std::fs::create_dir_all(dir);
        mount(Some(src), dir, Some(fstype), MsFlags::empty(), None::<&str>)
            .map_err(|e| format!("mount {fstype} on {dir}: {e}"))
    };
    mnt("proc", "/proc", "proc")?;
    mnt("sysfs", "/sys", "sysfs")?;
    mnt("devtmpfs", "/dev", "devtmpfs")?;
    // The initramfs root is already a writable tmpfs; a fresh tmpfs on /tmp would hide
    // whatever the host put there (an `exec` from a workspace under /tmp).
    let tmp_has_files = std::fs::read_dir("/tmp").is_ok_and(|mut d| d.next().is_some());
    if !tmp_has_files {
        mnt("tmpfs", "/tmp", "tmpfs")?;
    }
    // World-writable and sticky, as on any host: the cpio creates /tmp 0755 when the host put
    // files under it, and an unprivileged run (tests/unprivileged.rs) makes its file regions
    // there.
    std::fs::set_permissions("/tmp", std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .map_err(|e| format!("chmod 1777 /tmp: {e}"))?;
    mnt("tmpfs", "/dev/shm", "tmpfs")?;
    for port in ["/dev/ttyS1", "/dev/ttyS2", "/dev/ttyS3"] {
        raw_tty(port)?;
    }
    let text = std::fs::read_to_string(CONFIG_PATH).map_err(|e| format!("{CONFIG_PATH}: {e}"))?;
    let cfg: GuestConfig =
        serde_json::from_str(&text).map_err(|e| format!("{CONFIG_PATH}: {e}"))?;
    if cfg.hugepages > 0 {
        // Best effort: a kernel without hugetlbfs has no such file, and its hugetlb cases
        // skip on the probe.
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", cfg.hugepages.to_string());
    }
    Ok(cfg)
}

/// A serial port in raw mode, so bytes pass unchanged (no `\n` → `\r\n`, no echo).
fn raw_tty(path: &str) -> Result<(), String> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let mut t = tcgetattr(&f).map_err(|e| format!("{path}: tcgetattr: {e}"))?;
    cfmakeraw(&mut t);
    tcsetattr(&f, SetArg::TCSANOW, &t).map_err(|e| format!("{path}: tcsetattr: {e}"))
}

/// Forks the worker and reaps everything until it exits; returns its exit status.
fn supervise(cfg: GuestConfig) -> i32 {
    let worker = crate::exec::proc::fork_child(b"pvmtest-guest\0", move || match &cfg.task {
        Task::Run {
            paths,
            jobs,
            timeout_ms,
        } => run_task(paths, *jobs, *timeout_ms),
        Task::Exec { argv, cwd, env } => exec_task(argv, cwd, env),
    });
    match worker {
        Err(e) => {
            console(&format!("pvmtest guest: fork: {e}"));
            125
        }
        Ok(w) => match crate::exec::proc::reap_all_until(w) {
            Some(st) if libc::WIFEXITED(st) => libc::WEXITSTATUS(st),
            Some(st) if libc::WIFSIGNALED(st) => {
                console(&format!(
                    "pvmtest guest: worker killed by signal {}",
                    libc::WTERMSIG(st)
                ));
                128 + libc::WTERMSIG(st)
            }
            _ => 125,
        },
    }
}

fn data_port() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/ttyS1")
        .unwrap_or_else(|e| {
            console(&format!("pvmtest guest: /dev/ttyS1: {e}"));
            std::process::exit(125)
        })
}

/// Runs the cases ([`runner::run_in_scope_passes`]: Yama scopes are set here, in a VM that
/// is thrown away) and streams one line per result.
fn run_task(paths: &[String], jobs: usize, timeout_ms: u64) -> i32 {
    crate::exec::proc::install_signal_handlers();
    let out = std::sync::Mutex::new(data_port());
    let send = |l: Line| {
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = o.write_all(l.render().as_bytes());
        let _ = o.flush();
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match crate::facts::reference_from_cmdline(&cmdline) {
        Ok(Some(v)) => crate::facts::set_reference(v),
        Ok(None) => {}
        Err(e) => {
            console(&format!("pvmtest guest: {e}"));
            return 2;
        }
    }
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let (plans, bad) =
        match runner::load_all(&paths, &mut |e| console(&format!("pvmtest guest: {e}"))) {
            Ok(v) => v,
            Err(e) => {
                console(&format!("pvmtest guest: {e}"));
                return 2;
            }
        };
    // The kernel as booted: the first pass runs at this scope, and where it hides the
    // permission checks a case reaches, the case runs again at scope 0 (`<case>@yama0`).
    let facts = Facts::detect();
    let plans = runner::with_yama0_variants(plans, &facts);
    send(Line::Total(plans.len()));
    let opts = Options {
        timeout: Duration::from_millis(timeout_ms),
        inject: crate::exec::Inject::from_env(),
    };
    send(Line::Facts(
        serde_json::to_value(&facts).unwrap_or_default(),
    ));
    let (results, _) = runner::run_in_scope_passes(&plans, &opts, jobs, true, &|r| {
        send(Line::Result(crate::report::json_result(r)))
    });
    let s = runner::Summary::of(&results);
    let failed = s.fail + s.broken;
    if bad > 0 {
        2
    } else if failed > 0 {
        1
    } else {
        0
    }
}

/// Runs the program with stdout on ttyS1 and stderr on ttyS2; returns its exit status.
fn exec_task(argv: &[String], cwd: &str, env: &[(String, String)]) -> i32 {
    let Some((prog, args)) = argv.split_first() else {
        return 2;
    };
    let open = |p: &str| std::fs::OpenOptions::new().write(true).open(p);
    let (out, err) = match (open("/dev/ttyS1"), open("/dev/ttyS2")) {
        (Ok(o), Ok(e)) => (o, e),
        _ => return 125,
    };
    let status = std::process::Command::new(prog)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().cloned())
        // Tells tests they are inside a throw-away VM (harness/tests/cases.rs may then set
        // the Yama scope, as the run task does).
        .env("PVMTEST_GUEST", "1")
        .stdout(out)
        .stderr(err)
        .status();
    match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(0)
        }),
        Err(e) => {
            let msg = format!("pvmtest guest: cannot run {prog} in {cwd}: {e}");
            console(&msg);
            if let Ok(mut err) = open("/dev/ttyS2") {
                let _ = writeln!(err, "{msg}");
            }
            127
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart only where nothing asks for a power-off: ACPI or the host's word (UML).
    #[test]
    fn power_off_when_acpi_or_asked() {
        assert!(!power_off_wanted("console=ttyS0 rdinit=/init quiet", false));
        assert!(power_off_wanted("console=ttyS0 quiet", true));
        assert!(power_off_wanted("mem=512M quiet pvmtest.poweroff", false));
        assert!(!power_off_wanted(
            "pvmtest.poweroffx pvmtest.reference=6.1.0",
            false
        ));
    }

    #[test]
    fn lines_round_trip() {
        for l in [
            Line::Total(3),
            Line::Up,
            Line::Exit(1),
            Line::Result(serde_json::json!({"case": "a/b", "status": "pass"})),
            Line::Facts(serde_json::json!({"release": "6.1.0"})),
        ] {
            assert_eq!(Line::parse(&l.render()), Some(l.clone()));
        }
        assert_eq!(Line::parse("[    1.0] random console noise"), None);
        assert_eq!(Line::parse("@@PVMTEST exit x"), None);
        assert_eq!(Line::parse("@@PVMTESTexit 1"), None);
    }

    /// A `.gcda` crosses intact, path spaces and all; a line whose hex does not have the
    /// announced length (truncated, garbled, odd digit) is no file at all.
    #[test]
    fn gcov_lines_carry_exact_bytes() {
        let data: Vec<u8> = (0..=255u8).chain([0, 10, 13]).collect();
        let l = Line::Gcov {
            path: "/sys/kernel/debug/gcov/a b/mm/gup.gcda".into(),
            data: data.clone(),
        };
        let wire = l.render();
        assert!(wire.starts_with("@@PVMTEST gcov 259 0001"), "{wire}");
        assert_eq!(wire.matches('\n').count(), 1);
        assert_eq!(Line::parse(&wire), Some(l));
        for bad in [
            "@@PVMTEST gcov 3 0a0b /p",
            "@@PVMTEST gcov 2 0a0b0c /p",
            "@@PVMTEST gcov 2 0a0g /p",
            "@@PVMTEST gcov 2 0a0b",
            "@@PVMTEST gcov x 0a0b /p",
        ] {
            assert_eq!(Line::parse(bad), None, "{bad}");
        }
        let noisy = "@@PVMTEST gcov 2 0a[ 3.1] printk0b /p";
        assert_eq!(Line::parse(noisy), None);
    }

    #[test]
    fn config_is_strict() {
        let ok = r#"{"task":{"mode":"run","paths":["/cases"],"jobs":1,"timeout_ms":5000}}"#;
        assert!(serde_json::from_str::<GuestConfig>(ok).is_ok());
        let bad = r#"{"task":{"mode":"run","paths":[],"jobs":1,"timeout_ms":1,"x":1}}"#;
        assert!(serde_json::from_str::<GuestConfig>(bad).is_err());
    }
}
