//! The matrix: which kernels, their images, one initramfs, VMs in parallel, results.
//!
//! Everything that can be wrong with the input (ids, images, cases, qemu, the guest build)
//! is checked by [`plan`] before the first VM starts; from then on a kernel that misbehaves
//! is that kernel's `broken` result, never an error of the run.

use crate::boot::{self, Accel, VmConfig};
use crate::fetch::{self, FetchConfig, FetchEvent};
use crate::initramfs::Initramfs;
use crate::kernels::{self, KernelEntry};
use crate::{image, vmlinux, Error, Result};
use pvmtest::guest::{GuestConfig, Line, Task};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Where a kernel comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Debian(KernelEntry),
    /// A bzImage from a developer's tree (`--kernel-image`), and its SHA-256: two images are
    /// the same kernel only if their contents are, whatever their release says.
    Local {
        path: PathBuf,
        sha256: String,
    },
    /// Another implementation of the calls (runtimes.yaml), judged against a Linux release.
    Runtime(crate::runtime::RuntimeEntry),
}

/// A kernel chosen for this run, before its image exists locally.
#[derive(Debug, Clone)]
pub struct Selected {
    pub id: String,
    pub source: Source,
}

/// A kernel whose image is on disk and verified.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    pub id: String,
    /// `major.minor`, the snapshot directory.
    pub series: String,
    /// The exact version that runs: Debian's package version, or the image's release.
    pub version: String,
    /// What `uname -r` will say.
    pub release: String,
    /// What `uname -v` will say: build number, flags and date.
    pub build: String,
    /// The image's full version string (compiler, build date).
    pub version_string: String,
    /// `debian:<package>` or `local:<path>`.
    pub origin: String,
    pub image: PathBuf,
    /// SHA-256 of `image`.
    pub sha256: String,
    /// What QEMU boots: the vmlinux extracted from `image` into the cache, or `image`.
    pub boot_image: PathBuf,
    /// Why `image` itself boots (no vmlinux with a PVH entry), if it does.
    pub bzimage_reason: Option<String>,
    /// For a runtime row: its kind (gvisor, uml, qemu-user); `image` is its program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
    /// For a runtime row: the Linux release (X.Y.Z) it is judged against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip)]
    pub runtime_entry: Option<crate::runtime::RuntimeEntry>,
}

/// `--kernel-image [NAME=]PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArg {
    /// The matrix id; from the file name when not given.
    pub name: Option<String>,
    pub path: PathBuf,
}

/// Characters of a kernel id: it names report files and VM directories.
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')
}

impl std::str::FromStr for ImageArg {
    type Err = String;
    /// `NAME=PATH` when the part before the first `=` is a valid id, else all of it is a path
    /// (a path may contain `=`).
    fn from_str(s: &str) -> std::result::Result<ImageArg, String> {
        if s.is_empty() {
            return Err("--kernel-image needs a path: [NAME=]PATH".into());
        }
        match s.split_once('=') {
            Some((name, path)) if !name.is_empty() && name.chars().all(id_char) => {
                if path.is_empty() {
                    return Err(format!("--kernel-image {s}: no path after '{name}='"));
                }
                Ok(ImageArg {
                    name: Some(name.to_string()),
                    path: PathBuf::from(path),
                })
            }
            _ => Ok(ImageArg {
                name: None,
                path: PathBuf::from(s),
            }),
        }
    }
}

impl ImageArg {
    /// The id: NAME, else the file name with characters other than letters, digits and
    /// `._+-` replaced by `_`.
    pub fn id(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let base = self
            .path
            .file_name()
            .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
        base.chars()
            .map(|c| if id_char(c) { c } else { '_' })
            .collect()
    }
}

/// Chooses kernels: `ids` from the list (all when both `ids` and `images` are empty) and
/// every `--kernel-image`, then keeps this shard's share. Errors for unknown ids, bad
/// images and two kernels with one id, before anything is fetched.
pub fn select(
    list: &[KernelEntry],
    ids: &[String],
    images: &[ImageArg],
    shard: Option<Shard>,
) -> Result<Vec<Selected>> {
    select_with(list, &[], ids, images, shard)
}

/// [`select`] where `ids` may also name runtimes of `runtimes` (never selected by default:
/// "all" means all kernels). A runtime id given twice runs once.
pub fn select_with(
    list: &[KernelEntry],
    runtimes: &[crate::runtime::RuntimeEntry],
    ids: &[String],
    images: &[ImageArg],
    shard: Option<Shard>,
) -> Result<Vec<Selected>> {
    let mut out = Vec::new();
    let all = ids.is_empty() && images.is_empty();
    for e in list {
        if all || ids.iter().any(|i| i == &e.id) {
            out.push(Selected {
                id: e.id.clone(),
                source: Source::Debian(e.clone()),
            });
        }
    }
    for r in runtimes {
        if ids.iter().any(|i| i == &r.id) {
            out.push(Selected {
                id: r.id.clone(),
                source: Source::Runtime(r.clone()),
            });
        }
    }
    for id in ids {
        if runtimes.iter().any(|r| &r.id == id) {
            continue;
        }
        kernels::find(list, id).map_err(|e| {
            if runtimes.is_empty() {
                return e;
            }
            let known: Vec<&str> = runtimes.iter().map(|r| r.id.as_str()).collect();
            Error::new(format!("{} (runtimes: {})", e.0, known.join(", ")))
        })?;
    }
    for img in images {
        out.push(select_image(img)?);
    }
    for (k, s) in out.iter().enumerate() {
        let Some(first) = out[..k].iter().find(|o| o.id == s.id) else {
            continue;
        };
        if let Some(e) = id_collision(first, s) {
            return Err(e);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|s| seen.insert(s.id.clone()));
    Ok(match shard {
        Some(s) => s.take(out),
        None => out,
    })
}

/// A `--kernel-image`, checked and hashed.
pub fn select_image(img: &ImageArg) -> Result<Selected> {
    image::inspect(&img.path)?;
    let (_, sha256) = crate::cache::sha256_file(&img.path).map_err(|e| {
        Error::new(format!(
            "cannot read kernel image {}: {e} (check the path)",
            img.path.display()
        ))
    })?;
    Ok(Selected {
        id: img.id(),
        source: Source::Local {
            path: img.path.clone(),
            sha256,
        },
    })
}

/// The error for a second kernel with the id of an earlier one; `None` when it is the same
/// Debian kernel named twice, which runs once.
fn id_collision(first: &Selected, again: &Selected) -> Option<Error> {
    let what = |s: &Selected| match &s.source {
        Source::Debian(e) => format!("--kernel {}", e.id),
        Source::Local { path, .. } => format!("--kernel-image {}", path.display()),
        Source::Runtime(r) => format!("--kernel {}", r.id),
    };
    if matches!(
        (&first.source, &again.source),
        (Source::Debian(_), Source::Debian(_)) | (Source::Runtime(_), Source::Runtime(_))
    ) {
        return None;
    }
    Some(Error::new(format!(
        "{} and {} both have the id '{}'; name the images apart with --kernel-image NAME=PATH",
        what(first),
        what(again),
        again.id
    )))
}

/// `--shard I/N`: the I-th of N deterministic slices (1-based) of the kernels, in list
/// order, so a CI job matrix can spread the kernels over machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("--shard '{s}': expected I/N with 1 <= I <= N, e.g. 2/5");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Round-robin by position: kernel k goes to shard (k mod N) + 1.
    pub fn take<T>(self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index - 1)
            .map(|(_, t)| t)
            .collect()
    }
}

/// Gets every selected kernel's image, fetching in parallel. `progress(id, event)` sees
/// fetch events.
pub fn prepare(
    selected: &[Selected],
    cfg: &FetchConfig,
    progress: &(dyn Fn(&str, FetchEvent) + Sync),
) -> Result<Vec<Prepared>> {
    let results: Vec<Mutex<Option<Result<Prepared>>>> =
        selected.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for (k, sel) in selected.iter().enumerate() {
            let slot = &results[k];
            s.spawn(move || {
                let r = prepare_one(sel, cfg, &mut |e| progress(&sel.id, e));
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(Error::new("internal: a fetch thread died")))
        })
        .collect()
}

fn prepare_one(
    sel: &Selected,
    cfg: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<Prepared> {
    let mut p = match &sel.source {
        Source::Debian(entry) => {
            let k = fetch::ensure_kernel(entry, cfg, progress)?;
            Prepared {
                id: sel.id.clone(),
                series: entry.id.clone(),
                version: k.version,
                release: k.info.release,
                build: k.info.build,
                version_string: k.info.version_string,
                origin: format!("debian:{}", k.package),
                boot_image: k.image.clone(),
                image: k.image,
                sha256: k.sha256,
                bzimage_reason: None,
                runtime: None,
                reference: None,
                runtime_entry: None,
            }
        }
        Source::Runtime(entry) => {
            let f = fetch::ensure_program(&entry.as_package(), cfg, progress)?;
            progress(FetchEvent::Cached);
            return Ok(Prepared {
                id: sel.id.clone(),
                series: String::new(),
                release: format!("{} {}", f.package, f.version),
                version: f.version,
                build: String::new(),
                version_string: String::new(),
                origin: format!("debian:{}", f.package),
                boot_image: f.path.clone(),
                image: f.path,
                sha256: f.sha256,
                bzimage_reason: None,
                runtime: Some(entry.kind.name()),
                reference: None,
                runtime_entry: Some(entry.clone()),
            });
        }
        Source::Local { path, sha256 } => {
            let info = image::inspect(path)?;
            Prepared {
                id: sel.id.clone(),
                series: info.series,
                version: info.release.clone(),
                release: info.release,
                build: info.build,
                version_string: info.version_string,
                origin: format!("local:{}", path.display()),
                image: path.clone(),
                boot_image: path.clone(),
                sha256: sha256.clone(),
                bzimage_reason: None,
                runtime: None,
                reference: None,
                runtime_entry: None,
            }
        }
    };
    match vmlinux::boot_image(&cfg.cache, &p.image, &p.sha256) {
        vmlinux::BootImage::Elf(elf) => p.boot_image = elf,
        vmlinux::BootImage::BzImage { reason } => p.bzimage_reason = Some(reason),
    }
    progress(FetchEvent::Cached);
    Ok(p)
}

/// The static pvmtest that becomes the guest's `/init`: `$PVMTEST_GUEST_HARNESS`, else built
/// from this workspace with `-C target-feature=+crt-static` into target/guest/ (its own
/// target directory, so it never waits on a cargo lock held by whoever runs us).
pub fn guest_harness(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PVMTEST_GUEST_HARNESS").map(PathBuf::from))
    {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::new(format!(
                "guest harness {}: no such file (build it with `cargo build --release -p pvmtest --target x86_64-unknown-linux-gnu` and RUSTFLAGS='-C target-feature=+crt-static', or unset PVMTEST_GUEST_HARNESS)",
                p.display()
            )))
        };
    }
    let ws = workspace_root().ok_or_else(|| {
        Error::new(
            "cannot find the pvmtest workspace to build the guest harness (pass --harness PATH or set PVMTEST_GUEST_HARNESS to a static pvmtest)",
        )
    })?;
    let target_dir = ws.join("target").join("guest");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(&ws)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "pvmtest",
            "--bin",
            "pvmtest",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .map_err(|e| Error::new(format!("cannot run cargo to build the guest harness: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or_else(|| err.lines().last().unwrap_or("no output"));
        return Err(Error::new(format!(
            "building the static guest harness failed: {first} (run `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p pvmtest --target x86_64-unknown-linux-gnu` to see why)"
        )));
    }
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/pvmtest"))
}

/// The workspace this binary was built from, if it is still there.
pub fn workspace_root() -> Option<PathBuf> {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    ws.join("harness/Cargo.toml").is_file().then_some(ws)
}

/// Where the catalogue is by default: ./cases, else the workspace's.
pub fn default_cases() -> PathBuf {
    let here = PathBuf::from("cases");
    if here.is_dir() {
        return here;
    }
    workspace_root().map_or(here, |w| w.join("cases"))
}

/// The guest path of a case named `name`: /cases/NAME.yaml, under a catalogue marker at
/// /cases, so the guest names every case as the host did however the host found it.
fn guest_case_path(name: &str) -> String {
    format!("/cases/{name}.yaml")
}

/// The initramfs for `kernel-matrix run`: the harness as /init, the cases, the task.
pub fn run_initramfs(
    harness: &Path,
    cases: &[pvmtest::runner::Found],
    jobs: usize,
    case_timeout: Duration,
    gcov: bool,
) -> Result<Initramfs> {
    let mut fs = Initramfs::new();
    fs.file("/init", harness)?;
    fs.dir("/cases");
    fs.bytes(
        &format!("/cases/{}", pvmtest::runner::CATALOGUE_MARKER),
        b"pvmtest case catalogue root (case names are paths under it)\n".to_vec(),
        0o644,
    );
    for c in cases {
        fs.file(&guest_case_path(&c.name), &c.path)?;
    }
    let cfg = GuestConfig {
        task: Task::Run {
            paths: vec!["/cases".into()],
            jobs,
            timeout_ms: case_timeout.as_millis() as u64,
        },
        hugepages: 64,
        gcov,
    };
    fs.bytes(
        pvmtest::guest::CONFIG_PATH,
        serde_json::to_vec(&cfg).unwrap_or_default(),
        0o644,
    );
    Ok(fs)
}

/// Writes an initramfs to `dir/name` and returns the path.
pub fn write_initramfs(fs: &Initramfs, dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::new(format!("{}: {e}", dir.display())))?;
    let path = dir.join(name);
    let f =
        std::fs::File::create(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
    let mut w = std::io::BufWriter::new(f);
    fs.write(&mut w)?;
    Ok(path)
}

/// Settings for booting the matrix. Defaults: see [`RunOptions::new`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub qemu: PathBuf,
    pub accel: Accel,
    /// VMs at once.
    pub vms: usize,
    pub memory_mib: u64,
    pub boot_timeout: Duration,
    /// Whole-VM deadline.
    pub timeout: Duration,
    /// Scratch space: the initramfs and each VM's serial logs.
    pub workdir: PathBuf,
    /// For runtime rows: the static harness, and the cases laid out as in the initramfs.
    pub harness: Option<PathBuf>,
    pub case_tree: Option<PathBuf>,
    /// The harness's per-case step budget (the matrix's 60 s, as inside a VM).
    pub case_timeout: Duration,
}

impl RunOptions {
    /// TCG, one VM per core (the command line's default is [`default_vms`]), 3 GiB each, 60 s to
    /// boot, 600 s per VM.
    pub fn new(qemu: PathBuf, workdir: PathBuf) -> RunOptions {
        RunOptions {
            qemu,
            accel: Accel::Tcg,
            vms: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: 3072,
            boot_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(600),
            workdir,
            harness: None,
            case_tree: None,
            case_timeout: Duration::from_secs(60),
        }
    }
}

/// Counts of case outcomes on one kernel.
pub type Counts = pvmtest::runner::Summary;

/// The counts of results as the guest sent them (`run --format json` entries).
pub fn counts(results: &[Value]) -> Counts {
    Counts::of_statuses(
        results
            .iter()
            .map(|r| pvmtest::runner::Status::from_name(r["status"].as_str())),
    )
}

/// One kernel's result: `ok` (the guest ran the catalogue and reported) or `broken`.
#[derive(Debug, Clone, Serialize)]
pub struct KernelResult {
    /// Which kernel, exactly (id, series, versions, origin, image).
    #[serde(flatten)]
    pub kernel: Prepared,
    /// QEMU's accelerator; null for a runtime row, which runs on the host's CPU (the row's
    /// `runtime` says what it runs in).
    pub accel: Option<Accel>,
    /// "ok" or "broken".
    pub status: &'static str,
    /// Why the kernel is broken.
    pub failure: Option<String>,
    pub boot_s: Option<f64>,
    pub run_s: f64,
    pub summary: Counts,
    /// The guest's facts (what the model was given), as the guest read them.
    pub facts: Option<Value>,
    /// One entry per case, as in `pvmtest run --format json`.
    pub results: Vec<Value>,
    /// The last console lines, when broken.
    pub console_tail: Option<String>,
    /// Cases the guest said it would run.
    pub total: Option<usize>,
    /// The `.gcda` files the guest sent (path in the guest, bytes), when asked for.
    #[serde(skip)]
    pub gcov: Vec<(String, Vec<u8>)>,
}

impl KernelResult {
    pub fn is_clean(&self) -> bool {
        self.status == "ok" && self.summary.fail == 0 && self.summary.broken == 0
    }
}

/// What a VM reports while it runs, for progress display.
#[derive(Debug, Clone)]
pub enum VmEvent {
    Booting,
    Up,
    Total(usize),
    Case { status: String },
    Done,
}

/// VMs at once when `--vms` is not given: every row of the run, as far as memory allows
/// (`MemAvailable` over the guest RAM, at least one per CPU).
///
/// Under TCG a VM is one host thread, busy from boot to its last case. One worker per core
/// queued the kernels: on two cores the five kernels ran three in a row on one core while
/// the other core idled for the last one's whole run. All at once, the cores stay shared
/// until the end (docs/BENCHMARKS.md has both).
pub fn default_vms(rows: usize, memory_mib: u64) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_available_kib(&m))
        .map(|kib| kib / 1024);
    vms_for(rows, cpus, available_mib, memory_mib)
}

fn mem_available_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn vms_for(rows: usize, cpus: usize, available_mib: Option<u64>, memory_mib: u64) -> usize {
    let fit = available_mib.map_or(cpus, |a| (a / memory_mib.max(1)) as usize);
    rows.min(fit.max(cpus)).max(1)
}

/// Boots every prepared kernel with the initramfs, `opts.vms` at a time.
pub fn run(
    kernels: &[Prepared],
    initrd: &Path,
    opts: &RunOptions,
    progress: &(dyn Fn(&str, VmEvent) + Sync),
) -> Vec<KernelResult> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<KernelResult>>> =
        kernels.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..opts.vms.max(1).min(kernels.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(k) = kernels.get(i) else { break };
                let r = run_one(k, initrd, opts, progress);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

fn run_one(
    k: &Prepared,
    initrd: &Path,
    opts: &RunOptions,
    progress: &(dyn Fn(&str, VmEvent) + Sync),
) -> KernelResult {
    if let Some(entry) = &k.runtime_entry {
        progress(&k.id, VmEvent::Booting);
        let spec = crate::runtime::RunSpec {
            harness: opts.harness.clone().unwrap_or_default(),
            cases: opts.case_tree.clone().unwrap_or_default(),
            initrd: initrd.to_path_buf(),
            reference: k.reference.clone().unwrap_or_default(),
            workdir: opts.workdir.join(format!("rt-{}", k.id)),
            timeout: opts.timeout,
            case_timeout: opts.case_timeout,
        };
        let r = crate::runtime::run_one(k, entry, &spec);
        progress(&k.id, VmEvent::Done);
        return r;
    }
    progress(&k.id, VmEvent::Booting);
    let mut cfg = VmConfig::new(
        opts.qemu.clone(),
        k.boot_image.clone(),
        initrd.to_path_buf(),
        opts.workdir.join(format!("vm-{}", k.id)),
    );
    cfg.accel = opts.accel;
    cfg.memory_mib = opts.memory_mib;
    cfg.boot_timeout = opts.boot_timeout;
    cfg.timeout = opts.timeout;
    let mut facts = None;
    let mut results = Vec::new();
    let mut total = None;
    let mut gcov = Vec::new();
    let mut up = false;
    let outcome = boot::run(&cfg, &mut |l| match l {
        Line::Facts(v) => facts = Some(v.clone()),
        Line::Total(n) => {
            if !up {
                up = true;
                progress(&k.id, VmEvent::Up);
            }
            total = Some(*n);
            progress(&k.id, VmEvent::Total(*n));
        }
        Line::Result(v) => {
            progress(
                &k.id,
                VmEvent::Case {
                    status: v["status"].as_str().unwrap_or("broken").to_string(),
                },
            );
            results.push(v.clone());
        }
        Line::Gcov { path, data } => gcov.push((path.clone(), data.clone())),
        _ => {}
    });
    progress(&k.id, VmEvent::Done);
    // Results arrive in completion order; reports want case order.
    results.sort_by(|a, b| a["case"].as_str().cmp(&b["case"].as_str()));
    let mut res = KernelResult {
        kernel: k.clone(),
        accel: Some(opts.accel),
        status: "ok",
        failure: None,
        boot_s: None,
        run_s: 0.0,
        summary: Counts::default(),
        facts,
        results,
        console_tail: None,
        total,
        gcov,
    };
    match outcome {
        Err(e) => {
            res.status = "broken";
            res.failure = Some(e.to_string());
        }
        Ok(o) => {
            res.boot_s = o.boot_s;
            res.run_s = o.run_s;
            let missing = match res.total {
                Some(t) if t > res.results.len() => Some(t - res.results.len()),
                None => Some(0),
                _ => None,
            };
            let failure = o.failure.clone().or_else(|| match (o.exit, missing) {
                (Some(2), _) => Some("the guest found invalid case files".to_string()),
                (Some(c), _) if c > 2 => Some(format!("the guest harness exited with status {c}")),
                (_, Some(n)) if n > 0 => Some(format!(
                    "{} never reported",
                    pvmtest::words::count_usize(n, "case", "cases")
                )),
                (_, Some(_)) if res.total.is_none() => {
                    Some("the guest never reported its case count".to_string())
                }
                _ => None,
            });
            if let Some(f) = failure {
                res.status = "broken";
                res.failure = Some(f);
                res.console_tail = Some(o.console_tail(30));
            }
        }
    }
    res.summary = counts(&res.results);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All rows at once when memory allows, never fewer than one per CPU, never more than
    /// the rows; MemAvailable read from /proc/meminfo's format.
    #[test]
    fn default_vms_shares_the_cores_among_all_rows() {
        assert_eq!(vms_for(5, 2, Some(20_000), 3072), 5);
        assert_eq!(vms_for(5, 2, Some(7_000), 3072), 2);
        assert_eq!(vms_for(5, 2, Some(10_000), 3072), 3);
        assert_eq!(vms_for(1, 8, Some(100_000), 3072), 1);
        assert_eq!(vms_for(5, 2, None, 3072), 2);
        assert_eq!(vms_for(0, 2, None, 3072), 1);
        let m = "MemTotal:       24598476 kB\nMemFree:        1 kB\nMemAvailable:   20123456 kB\n";
        assert_eq!(mem_available_kib(m), Some(20_123_456));
        assert_eq!(mem_available_kib("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn shards_partition_the_kernels() {
        let ks: Vec<u32> = (0..5).collect();
        let mut seen = Vec::new();
        for i in 1..=3 {
            let s: Shard = format!("{i}/3").parse().unwrap();
            seen.extend(s.take(ks.clone()));
        }
        seen.sort();
        assert_eq!(seen, ks);
        assert_eq!("2/3".parse::<Shard>().unwrap().take(ks.clone()), vec![1, 4]);
        for bad in ["0/3", "4/3", "x", "1/0", "1-3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    /// `--filter`: only the matching cases are packed, each at its host name.
    #[test]
    fn a_filter_packs_only_the_matching_cases() {
        let root = crate::matrix::workspace_root().unwrap().join("cases");
        let (sel, _) = crate::cli::check_cases(
            std::slice::from_ref(&root),
            &["eperm/caller_*".into(), "*/flags_1".into()],
        )
        .unwrap();
        let fs = run_initramfs(
            Path::new("/bin/true"),
            &sel,
            1,
            Duration::from_secs(1),
            false,
        )
        .unwrap();
        for want in [
            "/cases/eperm/caller_gid_differs.yaml",
            "/cases/einval/flags_1.yaml",
            "/cases/compat/flags_1.yaml",
        ] {
            assert!(fs.has(want), "{want}");
        }
        assert!(!fs.has("/cases/eperm/matching_ids_readv.yaml"));
        assert!(sel
            .iter()
            .all(|f| f.name.starts_with("eperm/caller_") || f.name.ends_with("/flags_1")));
        let e = crate::cli::check_cases(&[root], &["nope/*".into()]).unwrap_err();
        assert!(
            e.0.starts_with("--filter 'nope/*' matches none of the "),
            "{e}"
        );
    }

    #[test]
    fn image_args_name_or_file_name() {
        let a: ImageArg = "patched=/src/a/arch/x86/boot/bzImage".parse().unwrap();
        assert_eq!(a.name.as_deref(), Some("patched"));
        assert_eq!(a.path, PathBuf::from("/src/a/arch/x86/boot/bzImage"));
        assert_eq!(a.id(), "patched");
        let b: ImageArg = "/tmp/A.bzImage".parse().unwrap();
        assert_eq!((b.name.clone(), b.id()), (None, "A.bzImage".to_string()));
        // A path with '=' in it, or whose part before '=' is no id, stays a path.
        let c: ImageArg = "/tmp/x=y/bzImage".parse().unwrap();
        assert_eq!((c.name.clone(), c.id()), (None, "bzImage".to_string()));
        let d: ImageArg = "my kernel.img".parse().unwrap();
        assert_eq!(d.id(), "my_kernel.img");
        assert!("name=".parse::<ImageArg>().unwrap_err().contains("no path"));
        assert!("".parse::<ImageArg>().is_err());
    }

    fn two_builds(dir: &Path) -> (PathBuf, PathBuf) {
        // One release, two builds: what a one-line patch to a tree gives.
        let v = "6.12.107 (me@box) #1 SMP PREEMPT_DYNAMIC Sat Dec  5 10:00:00 UTC 2026";
        let w = "6.12.107 (me@box) #2 SMP PREEMPT_DYNAMIC Sat Dec  5 11:00:00 UTC 2026";
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        let (a, b) = (dir.join("a/bzImage"), dir.join("b/bzImage"));
        std::fs::write(&a, crate::image::synthetic_bzimage(v, 4096)).unwrap();
        std::fs::write(&b, crate::image::synthetic_bzimage(w, 4096)).unwrap();
        (a, b)
    }

    fn arg(s: String) -> ImageArg {
        s.parse().unwrap()
    }

    #[test]
    fn images_of_one_release_are_different_kernels() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_builds(dir.path());
        let list = kernels::builtin();
        let sel = select(
            &list,
            &["6.1".into()],
            &[
                arg(format!("base={}", a.display())),
                arg(format!("patched={}", b.display())),
            ],
            None,
        )
        .unwrap();
        let ids: Vec<&str> = sel.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["6.1", "base", "patched"]);
        let sha = |s: &Selected| match &s.source {
            Source::Local { sha256, .. } => sha256.clone(),
            Source::Debian(_) | Source::Runtime(_) => String::new(),
        };
        assert_eq!(sha(&sel[1]).len(), 64);
        assert_ne!(sha(&sel[1]), sha(&sel[2]));
        // Prepared kernels carry release, build and hash.
        let cfg = FetchConfig::new(
            crate::archive::Mirror::new("http://127.0.0.1:9/debian").unwrap(),
            crate::cache::Cache::new(dir.path().join("cache")),
        );
        let p = prepare(&sel[1..], &cfg, &|_, _| {}).unwrap();
        assert_eq!(p[0].release, p[1].release);
        assert_eq!(
            p[0].build,
            "#1 SMP PREEMPT_DYNAMIC Sat Dec  5 10:00:00 UTC 2026"
        );
        assert_eq!(p[1].build.get(..2), Some("#2"));
        assert_eq!(p[0].sha256, sha(&sel[1]));
        // Not a real kernel: it boots (or rather fails) as a bzImage, with the reason.
        assert_eq!(p[0].boot_image, a);
        assert!(p[0].bzimage_reason.is_some());
    }

    #[test]
    fn colliding_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_builds(dir.path());
        let list = kernels::builtin();
        let e = select(
            &list,
            &[],
            &[arg(a.display().to_string()), arg(b.display().to_string())],
            None,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            format!(
                "--kernel-image {} and --kernel-image {} both have the id 'bzImage'; name the images apart with --kernel-image NAME=PATH",
                a.display(),
                b.display()
            )
        );
        let e = select(
            &list,
            &["6.1".into()],
            &[arg(format!("6.1={}", a.display()))],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--kernel 6.1 and --kernel-image ") && e.contains("the id '6.1'"),
            "{e}"
        );
        // A list kernel named twice is one kernel.
        let sel = select(&list, &["6.1".into(), "6.1".into()], &[], None).unwrap();
        assert_eq!(sel.len(), 1);
    }

    /// The guest finds each case where [`run_initramfs`] puts it, next to the marker it
    /// writes, and names it as the host did, whatever directory the host found it in.
    #[test]
    fn guest_names_cases_as_the_host_did() {
        let host = tempfile::tempdir().unwrap();
        let mine = host.path().join("mine");
        std::fs::create_dir_all(mine.join("grp")).unwrap();
        std::fs::write(mine.join("grp/a.yaml"), "x").unwrap();
        std::fs::write(mine.join("b.yml"), "x").unwrap();
        let found = pvmtest::runner::collect_named(&[mine]).unwrap();
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b", "grp/a"]);
        let fs = run_initramfs(
            Path::new("/bin/true"),
            &found,
            1,
            Duration::from_secs(1),
            false,
        )
        .unwrap();
        let guest = tempfile::tempdir().unwrap();
        for f in &found {
            let at = guest
                .path()
                .join(guest_case_path(&f.name).trim_start_matches('/'));
            assert!(fs.has(&guest_case_path(&f.name)), "{}", f.name);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, "x").unwrap();
        }
        let marker = format!("/cases/{}", pvmtest::runner::CATALOGUE_MARKER);
        assert!(fs.has(&marker));
        std::fs::write(guest.path().join(&marker[1..]), "").unwrap();
        let guest_found = pvmtest::runner::collect_named(&[guest.path().join("cases")]).unwrap();
        let guest_names: Vec<&str> = guest_found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(guest_names, names);
    }
}
