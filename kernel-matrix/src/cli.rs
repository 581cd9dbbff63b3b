//! `kernel-matrix run | compare | build | coverage | exec | fetch | list`.
//!
//! Exit status: 0 every kernel ran and every case passed or skipped; 1 a case failed, a
//! kernel is broken, or (compare) an outcome changed; 2 bad input or infrastructure that
//! stopped the run before any kernel result existed (one line on stderr, with the fix).
//! `exec` exits with the program's status, or 125 when the VM itself failed.

use crate::boot::{self, Accel};
use crate::fetch::{FetchConfig, FetchEvent};
use crate::kernels::{self, KernelEntry};
use crate::matrix::{
    self, ImageArg, KernelResult, Prepared, RunOptions, Selected, Shard, Source, VmEvent,
};
use crate::{report, Error, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kernel-matrix",
    version,
    about = "Run the pvmtest catalogue inside Debian kernels (or your own bzImage) under QEMU"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    /// KVM when a probe boot succeeds (the verdict is cached for a day), else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Options every booting command shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The kernel list (default: the kernels.yaml built into this binary).
    #[arg(long, value_name = "FILE")]
    pub kernels: Option<PathBuf>,
    /// Debian mirror (default: $PVMTEST_MIRROR, else the Debian mirror in the apt sources,
    /// else http://deb.debian.org/debian).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Cache directory (default: $PVMTEST_CACHE_DIR, else $XDG_CACHE_HOME/pvmtest, else
    /// ~/.cache/pvmtest).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use only cached kernels and indexes; never touch the network.
    #[arg(long)]
    pub offline: bool,
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// The static pvmtest to use as the guest's /init (default: build it).
    #[arg(long, value_name = "PATH")]
    pub harness: Option<PathBuf>,
    /// Guest RAM per VM, MiB.
    #[arg(long, default_value_t = 3072)]
    pub memory_mib: u64,
    /// Deadline for each VM, seconds (boot included).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// The runtime list (default: the runtimes.yaml built into this binary); its ids are
    /// accepted by --kernel.
    #[arg(long, value_name = "FILE")]
    pub runtimes: Option<PathBuf>,
    /// The Linux a runtime row (gVisor, UML, qemu-user) is judged against: X.Y.Z, or a kernel
    /// series of the list (X.Y, resolved to its Debian upstream release). Default: the newest
    /// kernel of the list. Kernels are always judged as themselves.
    #[arg(long, value_name = "SERIES")]
    pub reference: Option<String>,
}

impl Default for Common {
    /// The command-line defaults: builtin list, mirror and cache from the environment,
    /// online, accel auto, built harness, 3072 MiB, 600 s.
    fn default() -> Common {
        Common {
            kernels: None,
            mirror: None,
            cache_dir: None,
            offline: false,
            accel: AccelChoice::Auto,
            harness: None,
            memory_mib: 3072,
            timeout: 600,
            runtimes: None,
            reference: None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot kernels and run the catalogue in each; print the case × kernel table.
    Run {
        #[command(flatten)]
        common: Common,
        /// A kernel id from the list (repeatable; default: all of them).
        #[arg(long = "kernel", value_name = "ID")]
        kernel: Vec<String>,
        /// A bzImage from your own build (repeatable), named NAME in reports (default: its
        /// file name); its release and build are read from the image.
        #[arg(long = "kernel-image", value_name = "[NAME=]PATH")]
        kernel_image: Vec<ImageArg>,
        /// Case files or directories (default: cases/).
        #[arg(long = "cases", value_name = "PATH")]
        cases: Vec<PathBuf>,
        /// Only the cases whose name (`group/name`) matches GLOB, as `pvmtest run --filter`:
        /// `*` any characters (`/` included), `?` one; repeatable (OR). Matching nothing is an
        /// error.
        #[arg(long, value_name = "GLOB")]
        filter: Vec<String>,
        /// Only the I-th of N slices of the kernels, e.g. 2/5.
        #[arg(long, value_name = "I/N")]
        shard: Option<Shard>,
        /// Write report.md, report.json and one KTAP file per kernel here.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// VMs at once (default: every kernel of the run at once, as far as free memory
        /// allows for --memory-mib each, and at least one per CPU).
        #[arg(long)]
        vms: Option<usize>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Where the runtimes' known-divergence files are, `<runtime-id>.yaml` (default:
        /// kernel-matrix/conformance of this workspace). A runtime row passes when its
        /// divergences are exactly the file's and nothing is broken.
        #[arg(long, value_name = "DIR")]
        conformance: Option<PathBuf>,
        /// Write a draft known-divergence file per runtime row here (every divergence of
        /// this run; each `why` must then be written from the runtime's source).
        #[arg(long, value_name = "DIR")]
        write_conformance: Option<PathBuf>,
    },
    /// Build a bootable bzImage from a kernel source tree (out of tree, incremental), with
    /// patches applied to a scratch copy; prints the image path.
    Build {
        /// A kernel source tree: a git clone or an unpacked linux_X.orig.tar.xz (never
        /// written to).
        src: PathBuf,
        /// A unified diff (patch -p1) to apply to the scratch copy (repeatable, in order).
        #[arg(long = "patch", value_name = "FILE")]
        patch: Vec<PathBuf>,
        /// `minimal` (make tinyconfig + kernel-matrix/config/minimal.config), or a Kconfig
        /// fragment FILE applied on top of minimal.
        #[arg(long, value_name = "minimal|FILE", default_value = "minimal")]
        config: crate::build::ConfigChoice,
        /// The O= build directory (default: in the cache).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// make -j (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Cache directory (default: $PVMTEST_CACHE_DIR, else $XDG_CACHE_HOME/pvmtest, else
        /// ~/.cache/pvmtest).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Build a kernel source tree with gcov on the syscall path's objects, run the whole
    /// catalogue in it, and report line and branch coverage per function (terminal table,
    /// gcovr HTML). docs/COVERAGE.md.
    Coverage {
        #[command(flatten)]
        common: Common,
        /// A kernel source tree (never written to), as for `build`.
        src: PathBuf,
        /// A patch to apply to the scratch copy (repeatable, in order).
        #[arg(long = "patch", value_name = "FILE")]
        patch: Vec<PathBuf>,
        /// The O= build directory (default: in the cache).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Where the HTML report, gcov's JSON and the table go (default: `coverage/` in the
        /// build's cache directory).
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Only the cases whose name matches GLOB (as `run --filter`; repeatable).
        #[arg(long, value_name = "GLOB")]
        filter: Vec<String>,
        /// make -j (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run the catalogue on two kernels and print the cases whose outcome changed.
    Compare {
        #[command(flatten)]
        common: Common,
        /// Kernel id, bzImage as [NAME=]PATH, or kernel source tree (built first).
        #[arg(long)]
        baseline: String,
        /// Kernel id, bzImage as [NAME=]PATH, or kernel source tree (built first).
        #[arg(long)]
        candidate: String,
        /// A patch for a source-tree baseline (repeatable).
        #[arg(long = "baseline-patch", value_name = "FILE")]
        baseline_patch: Vec<PathBuf>,
        /// A patch for a source-tree candidate (repeatable).
        #[arg(long = "candidate-patch", alias = "patch", value_name = "FILE")]
        candidate_patch: Vec<PathBuf>,
        /// The configuration of source-tree sides, as for `build`.
        #[arg(long, value_name = "minimal|FILE", default_value = "minimal")]
        config: crate::build::ConfigChoice,
        #[arg(long = "cases", value_name = "PATH")]
        cases: Vec<PathBuf>,
        /// Only the cases whose name matches GLOB (as `run --filter`; repeatable).
        #[arg(long, value_name = "GLOB")]
        filter: Vec<String>,
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Boot one kernel with PROGRAM (and what it needs) and return its exit status and
    /// output: a cargo runner.
    Exec {
        #[command(flatten)]
        common: Common,
        /// Kernel id or bzImage path (default: $PVMTEST_KERNEL, else 6.12).
        #[arg(long)]
        kernel: Option<String>,
        /// PROGRAM and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
    /// Generate N cases from a seed and run them inside every kernel; report mismatches
    /// (cases where a kernel and the model disagree) per kernel, keeping their YAML. A
    /// runtime's mismatches in a class of its conformance file are counted, not listed.
    Fuzz {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 200)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A kernel id (repeatable; default: all of them).
        #[arg(long = "kernel", value_name = "ID")]
        kernel: Vec<String>,
        #[arg(long = "kernel-image", value_name = "[NAME=]PATH")]
        kernel_image: Vec<ImageArg>,
        /// Where the YAML of mismatching cases is written.
        #[arg(long, value_name = "DIR", default_value = "fuzz-mismatches")]
        out: PathBuf,
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Download and verify kernels into the cache; print what would run.
    Fetch {
        #[command(flatten)]
        common: Common,
        #[arg(long = "kernel", value_name = "ID")]
        kernel: Vec<String>,
    },
    /// List the kernels and the runtimes.
    List {
        #[arg(long, value_name = "FILE")]
        kernels: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        runtimes: Option<PathBuf>,
    },
}

pub fn main() -> i32 {
    pvmtest::exec::proc::install_signal_handlers();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kernel-matrix: error: {e}");
            2
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::List { kernels, runtimes } => {
            for e in load_list(kernels.as_deref())? {
                println!("{:6} {:18} {}  ({})", e.id, e.suite, e.package, e.image);
            }
            for r in crate::runtime::load_list(runtimes.as_deref())? {
                println!(
                    "{} {} {} {}{}  ({})",
                    r.id,
                    r.kind.name(),
                    r.suite,
                    r.package,
                    r.version
                        .as_ref()
                        .map_or(String::new(), |v| format!(" {v}")),
                    r.program
                );
            }
            Ok(0)
        }
        Command::Fetch { common, kernel } => {
            let list = load_list(common.kernels.as_deref())?;
            let rts = crate::runtime::load_list(common.runtimes.as_deref())?;
            let sel = matrix::select_with(&list, &rts, &kernel, &[], None)?;
            let ui = Ui::new(&sel);
            let prepared = fetch_all(&common, &sel, &ui)?;
            ui.clear();
            for p in prepared {
                println!(
                    "{:6} {:14} {}  {}",
                    p.id,
                    p.version,
                    p.release,
                    p.image.display()
                );
            }
            Ok(0)
        }
        Command::Run {
            common,
            kernel,
            kernel_image,
            cases,
            filter,
            shard,
            report: report_dir,
            vms,
            format,
            conformance,
            write_conformance,
        } => {
            let list = load_list(common.kernels.as_deref())?;
            let rts = crate::runtime::load_list(common.runtimes.as_deref())?;
            let sel = matrix::select_with(&list, &rts, &kernel, &kernel_image, shard)?;
            if sel.is_empty() {
                eprintln!(
                    "kernel-matrix: shard {} has no kernels (there are fewer kernels than shards)",
                    shard
                        .map(|s| format!("{}/{}", s.index, s.count))
                        .unwrap_or_default()
                );
                return Ok(0);
            }
            let results = run_selected(&common, &sel, &cases, &filter, vms)?;
            let kernels = &results.kernels;
            match format {
                Format::Human => {
                    let colour =
                        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                    print!("{}", report::table(kernels, colour));
                }
                Format::Json => {
                    print!("{}", report::json(kernels));
                    // The document is for a program; the person who started it sees the
                    // summary on stderr.
                    for k in kernels {
                        eprintln!("{}", report::kernel_line(k));
                    }
                }
            }
            let conf_dir = conformance.or_else(crate::conformance::default_dir);
            let mut clean = true;
            let mut conf_md = String::new();
            let mut conf_json = Vec::new();
            for k in kernels {
                if k.kernel.runtime.is_none() {
                    clean &= k.is_clean();
                    continue;
                }
                let base = match &conf_dir {
                    Some(d) => crate::conformance::load(d, &k.kernel.id)?,
                    None => None,
                };
                let file = conf_dir
                    .as_ref()
                    .map(|d| d.join(format!("{}.yaml", k.kernel.id)))
                    .filter(|_| base.is_some());
                let v = crate::conformance::judge(k, base.as_ref());
                let ok = base.is_some()
                    && v.matches()
                    && k.summary.broken == 0
                    && matches!(k.status, "ok" | "not-implemented");
                clean &= ok;
                eprintln!("{}", runtime_verdict_line(k, &v, file.as_deref()));
                conf_md.push_str(&crate::conformance::markdown(k, &v, file.as_deref()));
                conf_json.push(serde_json::json!({"id": k.kernel.id, "verdict": v}));
                if let Some(d) = &write_conformance {
                    std::fs::create_dir_all(d).map_err(|e| {
                        Error::new(format!("--write-conformance {}: {e}", d.display()))
                    })?;
                    let p = d.join(format!("{}.yaml", k.kernel.id));
                    std::fs::write(&p, crate::conformance::draft(k, &v))
                        .map_err(|e| Error::new(format!("{}: {e}", p.display())))?;
                    eprintln!("kernel-matrix: draft conformance file {}", p.display());
                }
            }
            if let Some(dir) = report_dir {
                report::write_dir(&dir, kernels, &|c| results.describe(c))?;
                if !conf_json.is_empty() {
                    let md = dir.join("report.md");
                    let mut text = std::fs::read_to_string(&md).unwrap_or_default();
                    text.push('\n');
                    text.push_str(&conf_md);
                    crate::cache::write_atomic(&md, text.as_bytes())?;
                    let doc = serde_json::to_string_pretty(&conf_json).unwrap_or_default();
                    crate::cache::write_atomic(&dir.join("conformance.json"), doc.as_bytes())?;
                }
                eprintln!("kernel-matrix: report written to {}", dir.display());
            }
            Ok(if clean { 0 } else { 1 })
        }
        Command::Build {
            src,
            patch,
            config,
            out,
            jobs,
            cache_dir,
        } => {
            let cache = crate::cache::Cache::from_env(cache_dir.as_deref())?;
            let req = crate::build::BuildRequest {
                src,
                patches: patch,
                config,
                out,
                jobs: jobs.unwrap_or_else(crate::compare::default_jobs),
                gcov: false,
                nice: 0,
            };
            let say = |l: &str| eprintln!("{l}");
            let b = crate::build::build(&req, &cache, &matrix::default_cases(), &say)?;
            eprintln!(
                "kernel-matrix: built {} in {:.0} s (make bzImage); build log {}",
                b.release,
                b.seconds,
                b.log.display()
            );
            println!("{}", b.image.display());
            Ok(0)
        }
        Command::Compare {
            common,
            baseline,
            candidate,
            baseline_patch,
            candidate_patch,
            config,
            cases,
            filter,
            report: report_dir,
        } => {
            let list = load_list(common.kernels.as_deref())?;
            let rts = crate::runtime::load_list(common.runtimes.as_deref())?;
            let pick = |s: &str| -> Result<Selected> {
                let (ids, imgs) = if rts.iter().any(|r| r.id == s) {
                    (vec![s.to_string()], vec![])
                } else {
                    id_or_image(&list, s)?
                };
                let mut v = matrix::select_with(&list, &rts, &ids, &imgs, None)?;
                v.pop()
                    .ok_or_else(|| Error::new(format!("'{s}' selects no kernel")))
            };
            // Ids and images are checked, and source trees and patches read, before either
            // side builds: a typo never waits for a kernel build.
            let (pb, pc) = (
                crate::compare::pre_side(&baseline, &baseline_patch, &pick)?,
                crate::compare::pre_side(&candidate, &candidate_patch, &pick)?,
            );
            if pb.is_none()
                && pc.is_none()
                && crate::compare::same_build(
                    &baseline,
                    &baseline_patch,
                    &candidate,
                    &candidate_patch,
                )
            {
                return Err(Error::new(
                    "--baseline and --candidate are the same tree with the same patches; give the candidate a --candidate-patch (or --patch)",
                ));
            }
            let cache = crate::cache::Cache::from_env(common.cache_dir.as_deref())?;
            let case_dir = cases.first().cloned().unwrap_or_else(matrix::default_cases);
            let side = |pre: Option<Selected>, s: &str, patches: &[PathBuf]| match pre {
                Some(sel) => Ok(sel),
                None => crate::compare::build_side(s, patches, &config, &cache, &case_dir),
            };
            let b = side(pb, &baseline, &baseline_patch)?;
            let c = side(pc, &candidate, &candidate_patch)?;
            let (b, c) = compare_pair(b, c)?;
            let results = run_selected_checked(&common, &[b, c], &cases, &filter, None, &|p| {
                same_image(&p[0], &p[1])
            })?;
            let ks = &results.kernels;
            if let Some(dir) = &report_dir {
                report::write_dir(dir, ks, &|c| results.describe(c))?;
            }
            let diffs = report::differences(ks);
            let changes = crate::compare::changes(ks, &diffs);
            if let Some(dir) = &report_dir {
                crate::cache::write_atomic(
                    &dir.join("compare.json"),
                    crate::compare::json(ks, &changes).as_bytes(),
                )?;
                eprintln!("kernel-matrix: report written to {}", dir.display());
            }
            for k in ks {
                println!("{}", report::kernel_header(k, false));
            }
            for k in ks {
                println!("{}", report::kernel_line(k));
            }
            print!("{}", crate::compare::render(ks, &changes));
            let broken = ks.iter().any(|k| k.status != "ok");
            Ok(if diffs.is_empty() && !broken { 0 } else { 1 })
        }
        Command::Coverage {
            common,
            src,
            patch,
            out,
            report,
            filter,
            jobs,
        } => crate::coverage::command(
            &common,
            &crate::coverage::Request {
                src,
                patches: patch,
                out,
                report,
                filters: filter,
                jobs: jobs.unwrap_or_else(crate::compare::default_jobs),
            },
        ),
        Command::Exec {
            common,
            kernel,
            argv,
        } => crate::exec::exec(&common, kernel, &argv),
        Command::Fuzz {
            common,
            count,
            seed,
            kernel,
            kernel_image,
            out,
            report: report_dir,
        } => {
            let list = load_list(common.kernels.as_deref())?;
            let rts = crate::runtime::load_list(common.runtimes.as_deref())?;
            let sel = matrix::select_with(&list, &rts, &kernel, &kernel_image, None)?;
            let cases = crate::fuzz::generate(seed, count);
            let work = tempfile::Builder::new()
                .prefix("kernel-matrix-fuzz-")
                .tempdir()
                .map_err(|e| Error::new(format!("cannot make a scratch directory: {e}")))?;
            let dir = crate::fuzz::write_cases(work.path(), &cases)?;
            let conf_dir = crate::conformance::default_dir();
            let results = run_selected(&common, &sel, std::slice::from_ref(&dir), &[], None)?;
            if let Some(d) = report_dir {
                report::write_dir(&d, &results.kernels, &|c| results.describe(c))?;
            }
            let mut mismatches = 0;
            for k in &results.kernels {
                let bad: Vec<&serde_json::Value> = k
                    .results
                    .iter()
                    .filter(|r| matches!(r["status"].as_str(), Some("fail") | Some("broken")))
                    .collect();
                println!(
                    "{}: {} (seed {seed}): {} pass, {} skip, {}{}",
                    k.kernel.id,
                    pvmtest::words::count_usize(
                        k.results.len(),
                        "generated case",
                        "generated cases"
                    ),
                    k.summary.pass,
                    k.summary.skip,
                    pvmtest::words::count_usize(bad.len(), "mismatch", "mismatches"),
                    k.failure
                        .as_ref()
                        .map_or(String::new(), |f| format!(" — KERNEL BROKEN: {f}"))
                );
                // A runtime row's conformance file names the classes it is known to diverge
                // in; generated cases have no entries of their own, so those classes are
                // counted, not listed, and do not fail the run.
                let (known, file) = match (&k.kernel.runtime, &conf_dir) {
                    (Some(_), Some(d)) => (
                        crate::fuzz::known_classes(
                            crate::conformance::load(d, &k.kernel.id)?.as_ref(),
                        ),
                        d.join(format!("{}.yaml", k.kernel.id)),
                    ),
                    _ => (Default::default(), PathBuf::new()),
                };
                for g in crate::fuzz::groups(&k.results, &known) {
                    if g.known {
                        println!(
                            " {}: {} (a class of {}; kept, not listed)",
                            g.title,
                            g.results.len(),
                            file.display()
                        );
                    } else {
                        println!(" {}: {}", g.title, g.results.len());
                        mismatches += g.results.len();
                    }
                    for r in g.results {
                        let case = r["case"].as_str().unwrap_or("?");
                        let name = case.trim_start_matches("fuzz/");
                        let src = dir.join(format!("{name}.yaml"));
                        let dest = out.join(format!("{}-{name}.yaml", k.kernel.id));
                        let _ = std::fs::create_dir_all(&out);
                        let _ = std::fs::copy(&src, &dest);
                        if !g.known {
                            println!(
                                "  {case}: {} — {}\n    kept as {}",
                                r["call"].as_str().unwrap_or_default(),
                                r["reason"].as_str().unwrap_or_default(),
                                dest.display()
                            );
                        }
                    }
                }
            }
            let broken = results.kernels.iter().any(|k| k.status != "ok");
            Ok(if mismatches == 0 && !broken { 0 } else { 1 })
        }
    }
}

/// A command-line kernel argument: a known id, or a bzImage as `[NAME=]PATH`.
pub fn id_or_image(list: &[KernelEntry], s: &str) -> Result<(Vec<String>, Vec<ImageArg>)> {
    if list.iter().any(|e| e.id == s) {
        return Ok((vec![s.to_string()], vec![]));
    }
    let img: ImageArg = s.parse().map_err(Error::new)?;
    if img.name.is_some() || s.contains('/') || Path::new(s).is_file() {
        return Ok((vec![], vec![img]));
    }
    kernels::find(list, s).map(|_| (vec![], vec![]))
}

/// `compare`'s two kernels. They are the same kernel only when they are the same list
/// entry or their images have the same contents (a patched build keeps its release); two
/// different images whose ids collide (both `bzImage`) are told apart as
/// `baseline-ID`/`candidate-ID`.
pub fn compare_pair(mut b: Selected, mut c: Selected) -> Result<(Selected, Selected)> {
    if let (
        Source::Local {
            path: pb,
            sha256: hb,
        },
        Source::Local {
            path: pc,
            sha256: hc,
        },
    ) = (&b.source, &c.source)
    {
        if hb == hc {
            return Err(Error::new(format!(
                "--baseline {} and --candidate {} are the same image (sha256 {hb}); compare two different builds",
                pb.display(),
                pc.display()
            )));
        }
    }
    if b.id == c.id {
        if matches!(
            (&b.source, &c.source),
            (Source::Debian(_), Source::Debian(_))
        ) {
            return Err(Error::new(format!(
                "--baseline and --candidate are the same kernel ({}); compare two different ones",
                b.id
            )));
        }
        b.id = format!("baseline-{}", b.id);
        c.id = format!("candidate-{}", c.id);
    }
    Ok((b, c))
}

/// After fetching: a Debian kernel and a local copy of its image are one kernel too.
fn same_image(b: &Prepared, c: &Prepared) -> Result<()> {
    if b.sha256 == c.sha256 {
        return Err(Error::new(format!(
            "--baseline {} and --candidate {} are the same image (sha256 {}); compare two different builds",
            b.image.display(),
            c.image.display(),
            b.sha256
        )));
    }
    Ok(())
}

pub fn load_list(path: Option<&Path>) -> Result<Vec<KernelEntry>> {
    match path {
        Some(p) => kernels::load(p),
        None => Ok(kernels::builtin()),
    }
}

/// A finished run, with the case descriptions for the report.
pub struct RunResults {
    pub kernels: Vec<KernelResult>,
    descriptions: HashMap<String, String>,
}

impl RunResults {
    /// A case's description; a `<case>@yama0` result is its case run again at Yama scope 0.
    pub fn describe(&self, case: &str) -> Option<String> {
        let base = pvmtest::runner::case_of(case);
        let d = self.descriptions.get(base)?;
        Some(if base == case {
            d.clone()
        } else {
            format!("{d} (Run again with Yama ptrace_scope 0: the kernel's own scope refuses the call before the permission checks it is about.)")
        })
    }
}

/// Validates the cases on the host (nothing boots for a bad file, nor for two files with one
/// name), returning the files with their names and name → description. `filters`: `--filter`
/// globs (pvmtest's syntax, `pvmtest::filter`): only the matching cases are validated and
/// packed into the initramfs; a filter that matches no case is an error.
pub fn check_cases(
    paths: &[PathBuf],
    filters: &[String],
) -> Result<(Vec<pvmtest::runner::Found>, HashMap<String, String>)> {
    let files = pvmtest::runner::collect_named(paths).map_err(|e| Error::new(e.to_string()))?;
    let files = pvmtest::filter::select(files, filters).map_err(Error::new)?;
    let mut out = HashMap::new();
    for f in &files {
        let plan =
            pvmtest::runner::load_named(&f.path, &f.name).map_err(|e| Error::new(e.to_string()))?;
        out.insert(plan.id.clone(), plan.description.clone());
    }
    if out.is_empty() {
        return Err(Error::new(format!(
            "no case files under {} (give --cases DIR with *.yaml files)",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok((files, out))
}

/// Everything `run` and `compare` do after choosing kernels: filter, validate, fetch, build,
/// boot. `filters`: `--filter` globs (see [`check_cases`]).
pub fn run_selected(
    common: &Common,
    sel: &[Selected],
    cases: &[PathBuf],
    filters: &[String],
    vms: Option<usize>,
) -> Result<RunResults> {
    run_selected_checked(common, sel, cases, filters, vms, &|_| Ok(()))
}

/// [`run_selected`], with `check` on the fetched kernels before anything boots.
pub fn run_selected_checked(
    common: &Common,
    sel: &[Selected],
    cases: &[PathBuf],
    filters: &[String],
    vms: Option<usize>,
    check: &dyn Fn(&[Prepared]) -> Result<()>,
) -> Result<RunResults> {
    run_selected_full(common, sel, cases, filters, vms, check, false)
}

/// [`run_selected_checked`]; `gcov`: each guest sends its kernel's gcov counters
/// ([`KernelResult::gcov`]).
pub fn run_selected_full(
    common: &Common,
    sel: &[Selected],
    cases: &[PathBuf],
    filters: &[String],
    vms: Option<usize>,
    check: &dyn Fn(&[Prepared]) -> Result<()>,
    gcov: bool,
) -> Result<RunResults> {
    let cases = if cases.is_empty() {
        vec![matrix::default_cases()]
    } else {
        cases.to_vec()
    };
    let (files, descriptions) = check_cases(&cases, filters)?;
    let any_kernel = sel.iter().any(|s| !matches!(s.source, Source::Runtime(_)));
    let qemu = if any_kernel {
        boot::find_qemu()?
    } else {
        PathBuf::new()
    };
    let any_runtime = sel.iter().any(|s| matches!(s.source, Source::Runtime(_)));
    let reference = if any_runtime {
        Some(reference_release(common)?)
    } else {
        None
    };
    let ui = Ui::new(sel);
    let mut prepared = fetch_all(common, sel, &ui)?;
    for p in &mut prepared {
        // User-mode Linux is Linux: unless told otherwise it is judged as its own release,
        // which the guest reads (uname), like a kernel row.
        if p.runtime == Some("uml") && common.reference.is_none() {
            continue;
        }
        if p.runtime.is_some() {
            p.reference = reference.clone();
            p.series = reference
                .as_deref()
                .and_then(crate::image::series_of)
                .unwrap_or_default();
        }
    }
    check(&prepared)?;
    for p in &prepared {
        if let Some(why) = &p.bzimage_reason {
            ui.say(&format!(
                "{}: booting the bzImage, not its vmlinux: {why}",
                p.id
            ));
        }
    }
    let harness = matrix::guest_harness(common.harness.as_deref())?;
    let work = tempfile::Builder::new()
        .prefix("kernel-matrix-")
        .tempdir()
        .map_err(|e| {
            Error::new(format!(
                "cannot make a scratch directory: {e} (check $TMPDIR)"
            ))
        })?;
    // A run killed by SIGKILL leaves its scratch directory (runsc state, UML's uml_dir):
    // the next run removes it.
    crate::runtime::claim(work.path())?;
    crate::runtime::sweep_stale(&std::env::temp_dir());
    let fs = matrix::run_initramfs(&harness, &files, 1, Duration::from_secs(60), gcov)?;
    let initrd = matrix::write_initramfs(&fs, work.path(), "initrd.cpio")?;
    let mut opts = RunOptions::new(qemu, work.path().to_path_buf());
    if let Some(first_kernel) = prepared.iter().find(|p| p.runtime.is_none()) {
        opts.accel = choose_accel(common, &opts.qemu, first_kernel, &harness, work.path())?;
    }
    if reference.is_some() {
        opts.case_tree = Some(crate::runtime::write_case_tree(work.path(), &files)?);
        // The runtime runs in its own directory: the harness must not be relative.
        opts.harness = Some(
            std::fs::canonicalize(&harness)
                .map_err(|e| Error::new(format!("guest harness {}: {e}", harness.display())))?,
        );
    }
    opts.memory_mib = common.memory_mib;
    opts.timeout = Duration::from_secs(common.timeout);
    opts.vms = match vms {
        Some(v) => v.max(1),
        None => matrix::default_vms(prepared.len(), opts.memory_mib),
    };
    let kernels = matrix::run(&prepared, &initrd, &opts, &|id, ev| ui.vm(id, ev));
    // No summary lines here: every command prints them once with its own output (the
    // table ends with them), and stdout and stderr usually share a terminal.
    ui.clear();
    Ok(RunResults {
        kernels,
        descriptions,
    })
}

pub fn fetch_config(common: &Common) -> Result<FetchConfig> {
    FetchConfig::from_env(
        common.mirror.as_deref(),
        common.cache_dir.as_deref(),
        common.offline,
    )
}

/// `gvisor-20240729: divergences match kernel-matrix/conformance/gvisor-20240729.yaml (41 known)`.
fn runtime_verdict_line(
    k: &KernelResult,
    v: &crate::conformance::Verdict,
    file: Option<&Path>,
) -> String {
    let mut line = match file {
        None => format!(
            "{}: no known-divergence file; {} divergences (write one with --write-conformance DIR)",
            k.kernel.id,
            v.divergences.len()
        ),
        Some(f) if v.matches() => format!(
            "{}: divergences match {} ({} known)",
            k.kernel.id,
            f.display(),
            v.divergences.len()
        ),
        Some(f) => format!(
            "{}: divergences differ from {}: {} new or changed, {} gone{}",
            k.kernel.id,
            f.display(),
            v.new.len(),
            v.gone.len(),
            v.status_change
                .as_ref()
                .map_or(String::new(), |c| format!("; {c}"))
        ),
    };
    for l in v.new.iter().take(20) {
        line.push_str(&format!("\n  new: {l}"));
    }
    for l in v.gone.iter().take(20) {
        line.push_str(&format!("\n  gone: {l}"));
    }
    if k.summary.broken > 0 {
        line.push_str(&format!(
            "\n  {} broken (harness failures inside the runtime; a broken case fails the row)",
            k.summary.broken
        ));
    }
    if let Some(n) = &v.version_note {
        line.push_str(&format!("\n  note: {n}"));
    }
    line
}

/// The X.Y.Z runtime rows are judged against: `--reference` as given when it is X.Y.Z; a
/// series of the kernel list (default: its newest) as the upstream release of the package
/// that series resolves to in its suite's index (no download beyond the index).
pub fn reference_release(common: &Common) -> Result<String> {
    let list = load_list(common.kernels.as_deref())?;
    let arg = match &common.reference {
        Some(r) => r.trim().to_string(),
        None => newest_series(&list)
            .ok_or_else(|| Error::new("the kernel list is empty: pass --reference X.Y.Z"))?,
    };
    if is_release(&arg) {
        return Ok(arg);
    }
    if !kernels::is_series(&arg) {
        return Err(Error::new(format!(
            "--reference '{arg}' is neither X.Y.Z nor a kernel series X.Y (e.g. --reference 6.12 or --reference 6.12.57)"
        )));
    }
    let entry = kernels::find(&list, &arg).map_err(|e| {
        Error::new(format!(
            "--reference {arg}: {} (or give the release as X.Y.Z)",
            e.0
        ))
    })?;
    let cfg = fetch_config(common)?;
    let version = crate::fetch::resolve_version(entry, &cfg)?;
    upstream_release(&version).ok_or_else(|| {
        Error::new(format!(
            "--reference {arg}: Debian version '{version}' of {} has no X.Y.Z upstream part (give the release as X.Y.Z)",
            entry.package
        ))
    })
}

/// The newest series of the list, by number (7.3 > 6.12 > 6.1).
pub fn newest_series(list: &[KernelEntry]) -> Option<String> {
    let key = |id: &str| -> (u32, u32) {
        let (a, b) = id.split_once('.').unwrap_or((id, "0"));
        (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
    };
    list.iter()
        .map(|e| e.id.as_str())
        .max_by_key(|id| key(id))
        .map(str::to_string)
}

fn is_release(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|c| c.is_ascii_digit()))
}

/// "6.12.57-1" -> "6.12.57", "1:7.3.4-1~bpo13+1" -> "7.3.4", "6.1.176-1" -> "6.1.176".
pub fn upstream_release(debian_version: &str) -> Option<String> {
    let v = debian_version
        .split_once(':')
        .map_or(debian_version, |(_, v)| v);
    let v = v.split(['-', '+', '~']).next()?;
    let parts: Vec<&str> = v.split('.').collect();
    match parts.len() {
        3 if is_release(v) => Some(v.to_string()),
        2 if is_release(&format!("{v}.0")) => Some(format!("{v}.0")),
        _ => None,
    }
}

fn fetch_all(common: &Common, sel: &[Selected], ui: &Ui) -> Result<Vec<Prepared>> {
    let cfg = fetch_config(common)?;
    matrix::prepare(sel, &cfg, &|id, ev| ui.fetch(id, ev))
}

/// KVM only when asked for, or when `auto` and a probe boot (cached for a day) worked:
/// on some machines /dev/kvm exists but guests hang.
pub fn choose_accel(
    common: &Common,
    qemu: &Path,
    kernel: &Prepared,
    harness: &Path,
    work: &Path,
) -> Result<Accel> {
    match common.accel {
        AccelChoice::Kvm => Ok(Accel::Kvm),
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Auto => {
            let cfg = fetch_config(common)?;
            let stamp = cfg.cache.root.join("kvm-probe.json");
            let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let key = format!("{}|{}", host.trim(), qemu.display());
            if let Ok(text) = std::fs::read_to_string(&stamp) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    let fresh = std::fs::metadata(&stamp)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age < Duration::from_secs(86400));
                    if fresh && v["key"] == key.as_str() {
                        return Ok(if v["kvm"] == true {
                            Accel::Kvm
                        } else {
                            Accel::Tcg
                        });
                    }
                }
            }
            let mut fs = crate::initramfs::Initramfs::new();
            fs.file("/init", harness)?;
            fs.bytes(
                pvmtest::guest::CONFIG_PATH,
                br#"{"task":{"mode":"run","paths":[],"jobs":1,"timeout_ms":1000}}"#.to_vec(),
                0o644,
            );
            let initrd = matrix::write_initramfs(&fs, work, "probe.cpio")?;
            let kvm = boot::kvm_works(qemu, &kernel.boot_image, &initrd, &work.join("kvm-probe"));
            let _ = crate::cache::write_atomic(
                &stamp,
                serde_json::json!({"key": key, "kvm": kvm})
                    .to_string()
                    .as_bytes(),
            );
            Ok(if kvm { Accel::Kvm } else { Accel::Tcg })
        }
    }
}

/// Progress bars on a terminal (indicatif); plain lines otherwise, so CI logs read well.
pub struct Ui {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    done: Mutex<HashMap<String, (usize, usize)>>,
}

impl Ui {
    pub fn new(sel: &[Selected]) -> Ui {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos:>4}/{len:4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let mut bars = HashMap::new();
        for s in sel {
            let b = multi.add(ProgressBar::new(1));
            b.set_style(style.clone());
            b.set_prefix(s.id.clone());
            b.set_message("waiting");
            bars.insert(s.id.clone(), b);
        }
        Ui {
            multi,
            bars,
            done: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, id: &str) -> Option<&ProgressBar> {
        self.bars.get(id)
    }

    pub fn fetch(&self, id: &str, ev: FetchEvent) {
        let Some(b) = self.bar(id) else { return };
        match ev {
            FetchEvent::ResolvingIndex => b.set_message("resolving the package index"),
            FetchEvent::Downloading { done, total } => {
                b.set_length(total.max(1) / 1024);
                b.set_position(done / 1024);
                b.set_message("KiB downloaded");
            }
            FetchEvent::Extracting => b.set_message("extracting the image"),
            FetchEvent::Cached => b.set_message("image ready"),
        }
    }

    pub fn vm(&self, id: &str, ev: VmEvent) {
        let Some(b) = self.bar(id) else { return };
        match ev {
            VmEvent::Booting => {
                b.set_length(1);
                b.set_position(0);
                b.set_message("booting");
            }
            VmEvent::Up => b.set_message("running cases"),
            VmEvent::Total(n) => b.set_length(n as u64),
            VmEvent::Case { status } => {
                b.inc(1);
                let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
                let e = d.entry(id.to_string()).or_default();
                if status == "fail" || status == "broken" {
                    e.1 += 1;
                    b.set_message(format!("{} failed", e.1));
                }
                e.0 += 1;
            }
            VmEvent::Done => b.finish_with_message("done"),
        }
    }

    /// A line that survives the bars (and is the only output without a terminal).
    pub fn say(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    pub fn clear(&self) {
        let _ = self.multi.clear();
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_releases_from_debian_versions() {
        assert_eq!(upstream_release("6.12.107-1").as_deref(), Some("6.12.107"));
        assert_eq!(
            upstream_release("7.3.4-1~bpo13+1").as_deref(),
            Some("7.3.4")
        );
        assert_eq!(upstream_release("1:6.1.176-1").as_deref(), Some("6.1.176"));
        assert_eq!(upstream_release("6.2-1").as_deref(), Some("6.2.0"));
        assert_eq!(upstream_release("20240729-1"), None);
        assert_eq!(newest_series(&kernels::builtin()).as_deref(), Some("7.3"));
        // X.Y.Z is taken as given, without the index.
        let c = Common {
            reference: Some("6.12.57".into()),
            ..Common::default()
        };
        assert_eq!(reference_release(&c).unwrap(), "6.12.57");
        for bad in ["six", "6.12.x", "6.3"] {
            let c = Common {
                reference: Some(bad.into()),
                ..Common::default()
            };
            let e = reference_release(&c).unwrap_err().to_string();
            assert!(e.starts_with("--reference") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn runtime_ids_are_selected_only_by_name() {
        let list = kernels::builtin();
        let rts = crate::runtime::builtin();
        let all = matrix::select_with(&list, &rts, &[], &[], None).unwrap();
        assert!(all.iter().all(|s| !matches!(s.source, Source::Runtime(_))));
        let one = matrix::select_with(&list, &rts, &["uml-6.1".into()], &[], None).unwrap();
        assert_eq!(one.len(), 1);
        assert!(matches!(&one[0].source, Source::Runtime(r) if r.id == "uml-6.1"));
        let e = matrix::select_with(&list, &rts, &["gvisor".into()], &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(runtimes: gvisor-20240729, gvisor-20221219"),
            "{e}"
        );
    }

    fn local(dir: &Path, sub: &str, version: &str) -> Selected {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        let p = dir.join(sub).join("bzImage");
        std::fs::write(&p, crate::image::synthetic_bzimage(version, 4096)).unwrap();
        matrix::select_image(&ImageArg {
            name: None,
            path: p,
        })
        .unwrap()
    }

    #[test]
    fn compare_tells_two_builds_of_one_release_apart() {
        let d = tempfile::tempdir().unwrap();
        let a = local(d.path(), "a", "6.12.107 (me@box) #1 SMP");
        let b = local(d.path(), "b", "6.12.107 (me@box) #2 SMP");
        assert_eq!((a.id.as_str(), b.id.as_str()), ("bzImage", "bzImage"));
        let (x, y) = compare_pair(a.clone(), b).unwrap();
        assert_eq!(
            (x.id.as_str(), y.id.as_str()),
            ("baseline-bzImage", "candidate-bzImage")
        );
        let e = compare_pair(a.clone(), local(d.path(), "c", "6.12.107 (me@box) #1 SMP"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/bzImage") && e.contains("c/bzImage"), "{e}");
        assert!(e.contains("are the same image (sha256 "), "{e}");
        let list = kernels::builtin();
        let deb = matrix::select(&list, &["6.1".into()], &[], None).unwrap();
        let e = compare_pair(deb[0].clone(), deb[0].clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("same kernel (6.1)"), "{e}");
    }
}
