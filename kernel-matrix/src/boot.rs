//! Booting one kernel under QEMU and collecting what the guest says.
//!
//! The guest (pvmtest as `/init`, see `pvmtest::guest`) talks on four 8250 serial ports,
//! each backed by a file in the VM's work directory: ttyS0 the console (kept as the boot
//! log), ttyS1 data, ttyS2 a program's stderr, ttyS3 control (`up`, then `exit N`).
//!
//! A boot ends one of four ways, and only the first is a result: the guest reported `exit`;
//! the kernel panicked or oopsed (`oops=panic panic=-1` turn both into a reset, which
//! `-no-reboot` turns into QEMU exiting); QEMU exited without the guest reporting; the
//! deadline passed. The last three are `broken`, with the console tail. QEMU runs in its own
//! is killed on every path out of here, including panics (a guard) and Ctrl-C (pvmtest's
//! signal handler kills every tracked pid).

use crate::{Error, Result};
use pvmtest::guest::Line;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How QEMU executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// One VM. Defaults: see [`VmConfig::new`].
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Guest RAM in MiB (3 GiB by default: room for the hugetlb pool and the 4 MiB buffers of
    /// many cases; the MAX_RW_COUNT cases' 2 GiB regions are untouched and take none).
    pub memory_mib: u64,
    pub cpus: u32,
    pub accel: Accel,
    /// Where the serial logs go.
    pub workdir: PathBuf,
    /// From QEMU's start to the guest's `up` line.
    pub boot_timeout: Duration,
    /// From QEMU's start to the guest's `exit` line.
    pub timeout: Duration,
}

impl VmConfig {
    /// 3 GiB, 1 vCPU (two VMs then share this machine's two cores), TCG, 60 s to come up,
    /// 300 s in all.
    pub fn new(qemu: PathBuf, kernel: PathBuf, initrd: PathBuf, workdir: PathBuf) -> VmConfig {
        VmConfig {
            qemu,
            kernel,
            initrd,
            memory_mib: 3072,
            cpus: 1,
            accel: Accel::Tcg,
            workdir,
            boot_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(300),
        }
    }

    /// The QEMU command line.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.qemu);
        let port = |n: usize| {
            format!(
                "file,id=s{n},path={}",
                self.workdir.join(PORTS[n]).display()
            )
        };
        c.arg("-nodefaults")
            .args(["-display", "none"])
            .arg("-no-reboot")
            .args(["-machine", "q35"])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()]);
        match self.accel {
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => c.args([
                "-accel",
                "tcg",
                "-cpu",
                &std::env::var("PVMTEST_TCG_CPU").unwrap_or_else(|_| TCG_CPU.into()),
            ]),
        };
        for n in 0..PORTS.len() {
            c.args(["-chardev", &port(n)])
                .args(["-serial", &format!("chardev:s{n}")]);
        }
        c.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(self.cmdline());
        if let Ok(extra) = std::env::var("PVMTEST_QEMU_ARGS") {
            c.args(extra.split_whitespace());
        }
        c
    }

    /// The kernel command line: [`CMDLINE`] plus `$PVMTEST_KERNEL_APPEND` (e.g.
    /// `secretmem.enable=1`).
    pub fn cmdline(&self) -> String {
        match std::env::var("PVMTEST_KERNEL_APPEND") {
            Ok(extra) if !extra.trim().is_empty() => format!("{CMDLINE} {}", extra.trim()),
            _ => CMDLINE.to_string(),
        }
    }
}

/// The guest kernel's command line. quiet: the console is a log, not a transcript
/// (warnings still show); `oops=panic panic=-1` with QEMU's `-no-reboot` end the VM at the
/// first oops.
pub const CMDLINE: &str =
    "console=ttyS0 rdinit=/init panic=-1 oops=panic quiet loglevel=4 8250.nr_uarts=4 nokaslr";

/// The TCG CPU model (override: `$PVMTEST_TCG_CPU`; docs/MATRIX.md has the measurements):
/// - no `la57`: QEMU 7.2's TCG double-faults 6.12 early in boot with 5-level paging on;
/// - no `cx16`: with CMPXCHG16B, 6.12's SLUB fast path (`this_cpu_cmpxchg128`) crashes under
///   TCG on about one boot in six when the host is busy (corrupted EFLAGS, NULL
///   dereferences, double faults); without it the kernel takes its locked fallback;
/// - no `erms`/`fsrm`: otherwise `copy_to/from_user` use `rep movsb`, which TCG runs a byte
///   per iteration, and the MAX_RW_COUNT cases (2 GiB copies) take 4–20 s instead of ~1 s.
///
/// None of these changes what the syscall returns: every copy routine reports the exact
/// uncopied tail, and the allocator's fast path is invisible to it.
pub const TCG_CPU: &str = "max,-la57,-cx16,-erms,-fsrm";

/// Files in the work directory, by serial port number.
pub const PORTS: [&str; 4] = ["console.log", "data.log", "stderr.log", "control.log"];

/// What a boot produced.
#[derive(Debug, Clone, Default)]
pub struct VmOutcome {
    /// The guest's task exit status, when it reported one.
    pub exit: Option<i32>,
    /// Why this boot has no result (timeout, panic, oops, QEMU died), if so.
    pub failure: Option<String>,
    /// Seconds from QEMU's start to the guest's `up`.
    pub boot_s: Option<f64>,
    /// Seconds from `up` to `exit` (or to the failure).
    pub run_s: f64,
    pub data: Vec<u8>,
    pub stderr: Vec<u8>,
    pub console: String,
}

impl VmOutcome {
    /// The console's last `n` lines, for a report.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Kills and reaps QEMU when dropped (success, failure, panic unwinding); registered with
/// pvmtest's signal handler so Ctrl-C kills it too.
struct Qemu {
    child: Child,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // A runtime started in its own process group (UML, runsc) has helpers of its own:
        // the group goes first. For QEMU there is no such group and this is a no-op (ESRCH).
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        pvmtest::exec::proc::untrack(self.child.id() as i32);
    }
}

/// Boots and waits. `on_line` sees every protocol line on the data port as it arrives.
pub fn run(cfg: &VmConfig, on_line: &mut dyn FnMut(&Line)) -> Result<VmOutcome> {
    std::fs::create_dir_all(&cfg.workdir)
        .map_err(|e| Error::new(format!("{}: {e}", cfg.workdir.display())))?;
    for p in PORTS {
        std::fs::write(cfg.workdir.join(p), b"")
            .map_err(|e| Error::new(format!("{}: {e}", cfg.workdir.join(p).display())))?;
    }
    let cmd = cfg.command();
    let hint = format!(
        "cannot start {}: {{e}} (install it: apt-get install qemu-system-x86)",
        cfg.qemu.display()
    );
    watch(
        cmd,
        &cfg.workdir,
        cfg.boot_timeout,
        cfg.timeout,
        &hint,
        on_line,
    )
}

/// Starts `cmd` (a VM or a runtime that speaks the guest protocol: the data and control
/// ports are the files [`PORTS`] in `workdir`, which must exist) and waits for the guest's
/// exit line, a timeout or the end of the process. `start_error` is the message when it
/// cannot start, with `{e}` for the reason. The process is killed and reaped on every way
/// out of this function, and dies with us if we are killed (PR_SET_PDEATHSIG).
pub fn watch(
    mut cmd: Command,
    workdir: &Path,
    boot_timeout: Duration,
    timeout: Duration,
    start_error: &str,
    on_line: &mut dyn FnMut(&Line),
) -> Result<VmOutcome> {
    let cfg = Watch {
        workdir: workdir.to_path_buf(),
        boot_timeout,
        timeout,
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // If kernel-matrix dies without running its drop guard or signal handler (SIGKILL, or a
    // parent that signalled only itself), QEMU dies with it instead of running on. The death
    // signal follows the spawning thread, which is this one: it waits for QEMU below and
    // kills it on the way out, so the signal never fires early.
    // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| Error::new(start_error.replace("{e}", &e.to_string())))?;
    pvmtest::exec::proc::track(child.id() as i32);
    let mut q = Qemu { child };
    let mut out = VmOutcome::default();
    let mut data = Tail::new(cfg.workdir.join(PORTS[1]));
    let mut control = Tail::new(cfg.workdir.join(PORTS[3]));
    let mut up_at: Option<Instant> = None;
    let mut qemu_status = None;
    loop {
        for l in data.lines() {
            if let Some(line) = Line::parse(&l) {
                on_line(&line);
            }
        }
        for l in control.lines() {
            match Line::parse(&l) {
                Some(Line::Up) if up_at.is_none() => {
                    up_at = Some(Instant::now());
                    out.boot_s = Some(start.elapsed().as_secs_f64());
                }
                Some(Line::Exit(c)) => out.exit = Some(c),
                _ => {}
            }
        }
        if out.exit.is_some() {
            // The guest powers off right after; give it a moment so the data port is
            // complete, but never wait on it.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(s)) = q.child.try_wait() {
                    qemu_status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // The guest writes the data port before `exit`, but this loop may have read
            // the data file just before those last lines landed.
            for l in data.lines() {
                if let Some(line) = Line::parse(&l) {
                    on_line(&line);
                }
            }
            break;
        }
        if let Ok(Some(s)) = q.child.try_wait() {
            qemu_status = Some(s);
            // Drain what arrived just before QEMU went away.
            for l in data.lines() {
                if let Some(line) = Line::parse(&l) {
                    on_line(&line);
                }
            }
            for l in control.lines() {
                if let Some(Line::Exit(c)) = Line::parse(&l) {
                    out.exit = Some(c);
                }
            }
            break;
        }
        let elapsed = start.elapsed();
        if up_at.is_none() && elapsed > cfg.boot_timeout {
            out.failure = Some(format!(
                "the guest did not come up within {} s (boot hang, or /init never ran)",
                cfg.boot_timeout.as_secs()
            ));
            break;
        }
        if elapsed > cfg.timeout {
            out.failure = Some(format!(
                "timed out after {} s before the guest reported its exit status",
                cfg.timeout.as_secs()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut qemu_err = String::new();
    if let Some(mut e) = q.child.stderr.take() {
        if qemu_status.is_some() {
            let _ = e.read_to_string(&mut qemu_err);
        }
    }
    drop(q);
    out.run_s = up_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
    out.console =
        String::from_utf8_lossy(&std::fs::read(cfg.workdir.join(PORTS[0])).unwrap_or_default())
            .into_owned();
    out.data = std::fs::read(cfg.workdir.join(PORTS[1])).unwrap_or_default();
    out.stderr = std::fs::read(cfg.workdir.join(PORTS[2])).unwrap_or_default();
    if let Some(why) = crash_in(&out.console) {
        out.failure = Some(why);
    } else if out.failure.is_none() && out.exit.is_none() {
        out.failure = Some(match qemu_status {
            Some(s) if !qemu_err.trim().is_empty() => format!(
                "qemu exited ({s}) before the guest reported: {}",
                qemu_err.lines().next().unwrap_or_default()
            ),
            Some(_) if up_at.is_none() => "the kernel stopped before /init ran".to_string(),
            _ => "the guest stopped without reporting an exit status".to_string(),
        });
    }
    Ok(out)
}

struct Watch {
    workdir: PathBuf,
    boot_timeout: Duration,
    timeout: Duration,
}

/// A kernel crash in the console log: panic, oops, BUG, or a warning splat.
pub fn crash_in(console: &str) -> Option<String> {
    const MARKS: [&str; 6] = [
        "Kernel panic",
        "Oops:",
        "BUG:",
        "general protection fault",
        "------------[ cut here ]------------",
        "double fault",
    ];
    console.lines().find_map(|l| {
        MARKS
            .iter()
            .any(|m| l.contains(m))
            .then(|| format!("kernel crash on the console: {}", clean(l)))
    })
}

fn clean(l: &str) -> String {
    l.trim().chars().filter(|c| !c.is_control()).collect()
}

/// Reads complete lines appended to a file since the last call.
struct Tail {
    path: PathBuf,
    pos: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            pos: 0,
            partial: Vec::new(),
        }
    }

    fn lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return out;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return out;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return out;
        }
        self.pos += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            out.push(String::from_utf8_lossy(&line).into_owned());
        }
        out
    }
}

/// Whether KVM really runs a guest here: `/dev/kvm` existing is not enough (on some
/// machines KVM boots hang), so boot the given kernel and initramfs (whose task should be
/// trivial) under KVM with a short deadline.
pub fn kvm_works(qemu: &Path, kernel: &Path, initrd: &Path, workdir: &Path) -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let mut cfg = VmConfig::new(
        qemu.to_path_buf(),
        kernel.to_path_buf(),
        initrd.to_path_buf(),
        workdir.to_path_buf(),
    );
    cfg.accel = Accel::Kvm;
    cfg.memory_mib = 256;
    cfg.boot_timeout = Duration::from_secs(8);
    cfg.timeout = Duration::from_secs(10);
    matches!(run(&cfg, &mut |_| {}), Ok(o) if o.exit == Some(0))
}

/// Where QEMU is: `$PVMTEST_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PVMTEST_QEMU") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::new(format!(
                "PVMTEST_QEMU={}: no such file (point it at qemu-system-x86_64, or unset it)",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::new(
                "qemu-system-x86_64 not found on PATH (install it: apt-get install qemu-system-x86; \
                 or set PVMTEST_QEMU=/path/to/qemu-system-x86_64)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashes_are_recognised() {
        assert!(crash_in("[    0.1] ok\n[ 1.2] Kernel panic - not syncing: VFS").is_some());
        assert!(crash_in("[ 3.0] BUG: kernel NULL pointer dereference").is_some());
        assert!(crash_in("[ 3.0] Oops: 0000 [#1] SMP").is_some());
        assert!(crash_in("[ 0.5] Run /init as init process\n").is_none());
    }

    #[test]
    fn command_line_has_the_ports_and_tcg_cpu() {
        let cfg = VmConfig::new("qemu".into(), "/k".into(), "/i".into(), "/w".into());
        let c = cfg.command();
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let s = args.join(" ");
        assert!(s.contains("-cpu max,-la57"), "{s}");
        assert_eq!(args.iter().filter(|a| *a == "-serial").count(), 4);
        assert!(s.contains("path=/w/control.log"), "{s}");
        assert!(s.contains("-no-reboot"));
    }
}
