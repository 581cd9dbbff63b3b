//! The matrix: which kernels, their images, one initramfs, VMs in parallel, results.
//!
//! Everything that can be wrong with the input (ids, images, cases, qemu, the guest build)
//! is checked by [`plan`] before the first VM starts; from then on a kernel that misbehaves
//! is that kernel's `broken` result, never an error of the run.

use crate::boot::{self, Accel, VmConfig};
use crate::fetch::{self, FetchConfig, FetchEvent};
use crate::initramfs::Initramfs;
use crate::kernels::{self, KernelEntry};
use crate::{image, Error, Result};
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
    /// A bzImage from a developer's tree (`--kernel-image`).
    Local(PathBuf),
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
    /// The image's full version string (compiler, build date).
    pub version_string: String,
    /// `debian:<package>` or `local:<path>`.
    pub origin: String,
    pub image: PathBuf,
}

/// Chooses kernels: `ids` from the list (all when both `ids` and `images` are empty) and
/// every `--kernel-image`, then keeps this shard's share. Errors for unknown ids and bad
/// images, before anything is fetched.
pub fn select(
    list: &[KernelEntry],
    ids: &[String],
    images: &[PathBuf],
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
    for id in ids {
        kernels::find(list, id)?;
    }
    for p in images {
        let info = image::inspect(p)?;
        out.push(Selected {
            id: local_id(&info.release),
            source: Source::Local(p.clone()),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|s| seen.insert(s.id.clone()));
    Ok(match shard {
        Some(s) => s.take(out),
        None => out,
    })
}

/// A local image's matrix id: its release, so reports name the build.
pub fn local_id(release: &str) -> String {
    format!("local-{release}")
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
    match &sel.source {
        Source::Debian(entry) => {
            let k = fetch::ensure_kernel(entry, cfg, progress)?;
            Ok(Prepared {
                id: sel.id.clone(),
                series: entry.id.clone(),
                version: k.version,
                release: k.info.release,
                version_string: k.info.version_string,
                origin: format!("debian:{}", k.package),
                image: k.image,
            })
        }
        Source::Local(path) => {
            let info = image::inspect(path)?;
            progress(FetchEvent::Cached);
            Ok(Prepared {
                id: sel.id.clone(),
                series: info.series,
                version: info.release.clone(),
                release: info.release,
                version_string: info.version_string,
                origin: format!("local:{}", path.display()),
                image: path.clone(),
            })
        }
    }
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

/// The guest path for a host case directory or file: the part after the last `cases`
/// component (so case ids stay `group/name`), under /cases.
fn guest_case_path(host: &Path) -> String {
    let comps: Vec<String> = host
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let rel: Vec<String> = match comps.iter().rposition(|c| c == "cases") {
        Some(i) => comps[i + 1..].to_vec(),
        None => comps.last().cloned().into_iter().collect(),
    };
    format!("/cases/{}", rel.join("/"))
}

/// The initramfs for `kernel-matrix run`: the harness as /init, the cases, the task.
pub fn run_initramfs(
    harness: &Path,
    cases: &[PathBuf],
    jobs: usize,
    case_timeout: Duration,
) -> Result<Initramfs> {
    let mut fs = Initramfs::new();
    fs.file("/init", harness)?;
    fs.dir("/cases");
    for c in cases {
        let at = guest_case_path(c);
        if c.is_dir() {
            fs.tree(&at, c, &[])?;
        } else {
            fs.file(&at, c)?;
        }
    }
    let cfg = GuestConfig {
        task: Task::Run {
            paths: vec!["/cases".into()],
            jobs,
            timeout_ms: case_timeout.as_millis() as u64,
        },
        hugepages: 64,
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
}

impl RunOptions {
    /// TCG, one VM per core, 3 GiB each, 60 s to boot, 600 s per VM.
    pub fn new(qemu: PathBuf, workdir: PathBuf) -> RunOptions {
        RunOptions {
            qemu,
            accel: Accel::Tcg,
            vms: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: 3072,
            boot_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(600),
            workdir,
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
    pub accel: Accel,
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
    progress(&k.id, VmEvent::Booting);
    let mut cfg = VmConfig::new(
        opts.qemu.clone(),
        k.image.clone(),
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
        _ => {}
    });
    progress(&k.id, VmEvent::Done);
    // Results arrive in completion order; reports want case order.
    results.sort_by(|a, b| a["case"].as_str().cmp(&b["case"].as_str()));
    let mut res = KernelResult {
        kernel: k.clone(),
        accel: opts.accel,
        status: "ok",
        failure: None,
        boot_s: None,
        run_s: 0.0,
        summary: Counts::default(),
        facts,
        results,
        console_tail: None,
        total,
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

    #[test]
    fn guest_paths_keep_case_ids() {
        assert_eq!(guest_case_path(Path::new("/w/cases")), "/cases/");
        assert_eq!(guest_case_path(Path::new("cases/yama")), "/cases/yama");
        assert_eq!(guest_case_path(Path::new("/x/mine")), "/cases/mine");
        assert_eq!(
            guest_case_path(Path::new("/w/cases/zero/a.yaml")),
            "/cases/zero/a.yaml"
        );
    }
}
