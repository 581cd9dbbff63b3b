//! `kernel-matrix exec --kernel ID -- PROGRAM ARGS`: a cargo runner that runs PROGRAM inside
//! a kernel of the matrix and gives back its stdout, stderr and exit status.
//!
//! "What it needs" is: the program and the shared libraries `ldd` lists for it, the
//! executables beside its `deps/` directory (cargo test binaries run `CARGO_BIN_EXE_*`
//! from there), and the cargo workspace around the current directory (cases, snapshots),
//! all at the same absolute paths as on the host, with the same environment and working
//! directory. Everything is read-only in spirit: writes inside the guest are lost.

use crate::boot::{self, VmConfig};
use crate::cli::{self, Common};
use crate::initramfs::Initramfs;
use crate::matrix;
use crate::{Error, Result};
use pvmtest::guest::{GuestConfig, Task};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Status when the VM failed (boot hang, kernel crash, timeout): not the program's.
pub const VM_FAILED: i32 = 125;

pub fn exec(common: &Common, kernel: Option<String>, argv: &[String]) -> Result<i32> {
    let kernel = kernel
        .or_else(|| std::env::var("PVMTEST_KERNEL").ok())
        .unwrap_or_else(|| "6.12".into());
    let list = cli::load_list(common.kernels.as_deref())?;
    let (ids, images) = cli::id_or_image(&list, &kernel)?;
    let sel = matrix::select(&list, &ids, &images, None)?;
    let program = which(&argv[0])?;
    let cwd = std::env::current_dir()
        .map_err(|e| Error::new(format!("cannot read the current directory: {e}")))?;
    let qemu = boot::find_qemu()?;
    let prepared = matrix::prepare(&sel, &cli::fetch_config(common)?, &|_, _| {})?;
    let k = &prepared[0];
    let harness = matrix::guest_harness(common.harness.as_deref())?;

    let mut fs = Initramfs::new();
    fs.file("/init", &harness)?;
    add_program(&mut fs, &program)?;
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(ws) = workspace_of(&cwd) {
        fs.tree(
            &ws.to_string_lossy(),
            &ws,
            &["target", ".git", "node_modules"],
        )?;
        // insta finds the workspace with `cargo metadata`, and there is no cargo inside.
        if !env.iter().any(|(k, _)| k == "INSTA_WORKSPACE_ROOT") {
            env.push((
                "INSTA_WORKSPACE_ROOT".into(),
                ws.to_string_lossy().into_owned(),
            ));
        }
    }
    let mut args = vec![program.to_string_lossy().into_owned()];
    args.extend(argv[1..].iter().cloned());
    let cfg = GuestConfig {
        task: Task::Exec {
            argv: args,
            cwd: cwd.to_string_lossy().into_owned(),
            env,
        },
        hugepages: 64,
        gcov: false,
    };
    fs.bytes(
        pvmtest::guest::CONFIG_PATH,
        serde_json::to_vec(&cfg).unwrap_or_default(),
        0o644,
    );
    fs.dir("/tmp");
    let work = tempfile::Builder::new()
        .prefix("kernel-matrix-exec-")
        .tempdir()
        .map_err(|e| Error::new(format!("cannot make a scratch directory: {e}")))?;
    let initrd = matrix::write_initramfs(&fs, work.path(), "initrd.cpio")?;
    let mut vm = VmConfig::new(qemu, k.boot_image.clone(), initrd, work.path().join("vm"));
    vm.accel = cli::choose_accel(common, &vm.qemu, k, &harness, work.path())?;
    vm.memory_mib = common.memory_mib;
    vm.timeout = Duration::from_secs(common.timeout);
    let o = boot::run(&vm, &mut |_| {})?;
    let _ = std::io::stdout().write_all(&o.data);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&o.stderr);
    match (o.exit, &o.failure) {
        (Some(code), None) => Ok(code),
        (_, f) => {
            eprintln!(
                "kernel-matrix exec: kernel {} ({}) failed: {}\n{}",
                k.id,
                k.version,
                f.clone().unwrap_or_default(),
                o.console_tail(20)
            );
            Ok(VM_FAILED)
        }
    }
}

/// PROGRAM as cargo gives it (absolute) or a name on PATH.
fn which(p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    let found = if p.contains('/') {
        Some(path.to_path_buf())
    } else {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    };
    let found = found
        .filter(|f| f.is_file())
        .ok_or_else(|| Error::new(format!("exec: program '{p}' not found (give a path)")))?;
    std::fs::canonicalize(&found).map_err(|e| Error::new(format!("{}: {e}", found.display())))
}

/// The program, its libraries, and its sibling executables (for `target/<profile>/deps/X`,
/// every executable in `target/<profile>/`).
fn add_program(fs: &mut Initramfs, program: &Path) -> Result<()> {
    let mut exes = vec![program.to_path_buf()];
    if let Some(profile) = program
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
    {
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(profile).into_iter().flatten().flatten() {
            let p = e.path();
            let exe = e
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if exe {
                exes.push(p);
            }
        }
    }
    let mut libs = std::collections::BTreeSet::new();
    for x in &exes {
        fs.file(&x.to_string_lossy(), x)?;
        libs.extend(shared_libraries(x));
    }
    for l in libs {
        let real = std::fs::canonicalize(&l).unwrap_or_else(|_| l.clone());
        fs.file(&l.to_string_lossy(), &real)?;
    }
    Ok(())
}

/// Absolute paths `ldd` prints for a dynamic executable; empty for a static one.
fn shared_libraries(exe: &Path) -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldd").arg(exe).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let path = match l.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The cargo workspace root containing `dir` (the outermost Cargo.toml with [workspace],
/// else the nearest Cargo.toml).
fn workspace_of(dir: &Path) -> Option<PathBuf> {
    let mut nearest = None;
    for d in dir.ancestors() {
        let toml = d.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&toml) {
            if text.contains("[workspace]") {
                return Some(d.to_path_buf());
            }
            nearest.get_or_insert_with(|| d.to_path_buf());
        }
    }
    nearest
}
