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
    Ktap,
    Json,
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
    },
    /// Validate case files without running anything.
    Check { paths: Vec<PathBuf> },
    /// Show the model's step-by-step prediction for one case.
    Explain { case: PathBuf },
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
                    let pred = crate::model::predict(p, &facts);
                    if crate::check::unmet_requirement(p, &facts).is_none() {
                        if let Err(e) = crate::check::check_pin(p, &facts, &pred) {
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
                print!("{}", crate::report::explain(&plan, &pred, &facts));
                0
            }
        },
        Command::Run {
            paths,
            format,
            color,
            timeout_ms,
            jobs,
        } => {
            crate::exec::proc::install_signal_handlers();
            let (plans, bad) = match load_all(paths) {
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
            let results: Vec<CaseResult> = runner::run_all(&plans, &facts, &opts, jobs);
            let text = match format {
                Format::Human => crate::report::human(&results, &facts.release, colour),
                Format::Ktap => crate::report::ktap(&results, &facts.release),
                Format::Json => crate::report::json(&results, &facts),
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
