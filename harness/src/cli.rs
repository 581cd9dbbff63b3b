//! `pvmtest run | check | explain`.

use crate::exec::{Inject, Options};
use crate::facts::Facts;
use crate::runner::{self, CaseResult, LoadError, Summary};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pvmtest",
    version,
    about = "Conformance harness for process_vm_readv/process_vm_writev"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    /// KTAP version 1, the kernel's test output format (Documentation/dev-tools/ktap.rst).
    Ktap,
    Json,
    /// JUnit XML, which GitLab, Jenkins and most CI test reporters read.
    Junit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Colour {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run cases on the running kernel and compare with the model.
    Run {
        /// Case files or directories (default: cases/).
        paths: Vec<PathBuf>,
        /// Only the cases whose name (`group/name`, e.g. `eperm/caller_gid_differs`) matches
        /// GLOB: `*` any characters (`/` included), `?` one character; the whole name must
        /// match. Repeatable: a case runs if any filter matches. A filter that matches no case
        /// is an error (exit 2).
        #[arg(long, value_name = "GLOB")]
        filter: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        #[arg(long, value_enum, default_value_t = Colour::Auto)]
        color: Colour,
        /// Per-step timeout for a target or caller, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Cases run at once (default: the number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Judge by the rules of Linux X.Y[.Z] instead of the version `uname` reports: for a
        /// runtime that re-implements the Linux ABI (gVisor reports 4.4.0) or a kernel whose
        /// release string is not its version. Reports record both.
        #[arg(long, value_name = "X.Y.Z")]
        reference: Option<String>,
    },
    /// Validate case files without running anything.
    Check { paths: Vec<PathBuf> },
    /// Show the model's step-by-step prediction for one case; exits 1 when the case's pinned
    /// `expect` disagrees with the model.
    Explain { case: PathBuf },
    /// Write a model_vs_kernel fuzz artifact (a crash input) as a case file.
    ImportCrash {
        artifact: PathBuf,
        /// Where the case file goes.
        #[arg(long, default_value = "cases/regressions")]
        out: PathBuf,
    },
    /// Write a seed corpus for the model_vs_kernel fuzz target from case files (each case
    /// the fuzz input format can express).
    Corpus {
        dir: PathBuf,
        /// Case files or directories (default: cases/).
        #[arg(long = "cases")]
        paths: Vec<PathBuf>,
    },
}

fn default_paths(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from("cases")]
    } else {
        paths
    }
}

/// Loads every case; returns the valid plans and prints one line per bad file to stderr.
fn load_all(paths: Vec<PathBuf>) -> Result<(Vec<crate::plan::Plan>, usize), LoadError> {
    runner::load_all(&default_paths(paths), &mut |e| eprintln!("error: {e}"))
}

/// The cases under `paths` whose names match `filters` (see [`crate::filter`]), loaded; `Err`
/// is the one-line message for exit 2.
fn load_filtered(
    paths: Vec<PathBuf>,
    filters: &[String],
) -> Result<(Vec<crate::plan::Plan>, usize), String> {
    let files = runner::collect_named(&default_paths(paths)).map_err(|e| e.to_string())?;
    let files = crate::filter::select(files, filters)?;
    Ok(runner::load_files(&files, &mut |e| eprintln!("error: {e}")))
}

/// Runs the CLI; returns the exit status (0 ok, 1 failures, 2 bad input).
pub fn main_with(cli: Cli) -> i32 {
    match cli.command {
        Command::Check { paths } => match load_all(paths) {
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
            Ok((plans, bad)) => {
                let facts = Facts::detect();
                let mut pin_errors = 0;
                for p in &plans {
                    // Pins are judged for the harness the case declares, not for this user
                    // (check::pin_harness): the verdict is the same for root and non-root.
                    if crate::check::unmet_for_pin(p, &facts).is_none() {
                        if let Err(e) = crate::check::check_pin(p, &facts) {
                            pin_errors += 1;
                            eprintln!("error: {}: expect: {e}", p.path);
                        }
                    }
                }
                println!(
                    "{} valid, {} invalid",
                    plans.len() - pin_errors,
                    bad + pin_errors
                );
                if bad + pin_errors > 0 {
                    2
                } else {
                    0
                }
            }
        },
        Command::Explain { case } => match runner::load(&case) {
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
            Ok(plan) => {
                let facts = Facts::detect();
                let pred = crate::model::predict(&plan, &facts);
                let (text, disagrees) = crate::report::explain(&plan, &pred, &facts);
                print!("{text}");
                i32::from(disagrees)
            }
        },
        Command::ImportCrash { artifact, out } => import_crash(&artifact, &out),
        Command::Corpus { dir, paths } => corpus(&dir, paths),
        Command::Run {
            paths,
            filter,
            format,
            color,
            timeout_ms,
            jobs,
            reference,
        } => {
            if let Some(r) = reference {
                match crate::facts::parse_reference(&r) {
                    Ok(v) => crate::facts::set_reference(v),
                    Err(e) => {
                        eprintln!("error: --reference: {e}");
                        return 2;
                    }
                }
            }
            crate::exec::proc::install_signal_handlers();
            let (plans, bad) = match load_filtered(paths, &filter) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 2;
                }
            };
            let facts = Facts::detect();
            let opts = Options {
                timeout: Duration::from_millis(timeout_ms),
                inject: Inject::from_env(),
            };
            let colour = match color {
                Colour::Always => true,
                Colour::Never => false,
                Colour::Auto => {
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            // Yama is never changed here: a `<case>@yama0` run skips on its requirement unless
            // this machine's scope is already 0 (then there is none).
            let plans = runner::with_yama0_variants(plans, &facts);
            let results: Vec<CaseResult> = runner::run_all(&plans, &facts, &opts, jobs);
            let text = match format {
                Format::Human => crate::report::human(&results, &facts.judged(), colour),
                Format::Ktap => crate::report::ktap(&results, &facts.judged()),
                Format::Json => crate::report::json(&results, &facts),
                Format::Junit => crate::report::junit(&results, &facts),
            };
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            let s = Summary::of(&results);
            if bad > 0 {
                eprintln!("error: {bad} case file(s) invalid (see above); the valid ones ran");
                2
            } else if s.fail + s.broken > 0 {
                1
            } else {
                0
            }
        }
    }
}

/// `pvmtest import-crash`: the artifact's bytes decoded as a fuzz input, written as YAML.
fn import_crash(artifact: &std::path::Path, out: &std::path::Path) -> i32 {
    use crate::fuzzcase::{fnv64, FuzzCase};
    let bytes = match std::fs::read(artifact) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}", artifact.display());
            return 2;
        }
    };
    let hash = fnv64(&bytes);
    let case = FuzzCase::decode(&bytes);
    let shown = artifact.file_name().map_or_else(
        || artifact.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let description = format!(
        "Imported by `pvmtest import-crash` from the model_vs_kernel fuzz artifact {shown} (FNV-1a 64 of its bytes: {hash:016x}). Not pinned: `pvmtest run` compares the kernel with the model's prediction."
    );
    let yaml = case.to_yaml(&description);
    let name = format!("fuzz_{hash:016x}.yaml");
    let path = out.join(&name);
    if let Err(e) = runner::load_str(&path.display().to_string(), &name, &yaml) {
        eprintln!("error: the artifact decodes to a case the validator rejects ({e}): no case file to write (a mismatch found before the validator learnt this rule; add a loader test instead)");
        return 2;
    }
    if let Err(e) = std::fs::create_dir_all(out).and_then(|()| std::fs::write(&path, yaml)) {
        eprintln!("error: {}: {e}", path.display());
        return 2;
    }
    println!("{}", path.display());
    0
}

/// `pvmtest corpus`: every case the fuzz input format can express, encoded, one file each.
fn corpus(dir: &std::path::Path, paths: Vec<PathBuf>) -> i32 {
    use crate::fuzzcase::FuzzCase;
    let files = match runner::collect_named(&default_paths(paths)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: {}: {e}", dir.display());
        return 2;
    }
    let mut written = 0;
    for f in &files {
        let Ok(text) = std::fs::read_to_string(&f.path) else {
            continue;
        };
        let Ok(case) = serde_yaml::from_str::<crate::case::CaseFile>(&text) else {
            continue;
        };
        let Some(fc) = FuzzCase::from_case_file(&case) else {
            continue;
        };
        if fc.plan("corpus").is_err() {
            continue;
        }
        let name = f.name.replace('/', "__");
        if let Err(e) = std::fs::write(dir.join(name), fc.encode()) {
            eprintln!("error: {}: {e}", dir.display());
            return 2;
        }
        written += 1;
    }
    println!(
        "{written} of {} encoded into {}",
        crate::words::count_usize(files.len(), "case", "cases"),
        dir.display()
    );
    0
}
