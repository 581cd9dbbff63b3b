//! Differential fuzzing: a generated case (pvmtest::fuzzcase) runs on the running kernel
//! through the persistent executor and is compared with the model, bytes included. A
//! mismatch panics with the call and the case as YAML (`pvmtest import-crash` turns the
//! artifact into a case file).
#![no_main]
#![feature(cfg_sanitize)]

use libfuzzer_sys::fuzz_target;
use pvmtest::exec::persistent::Persistent;
use pvmtest::fuzzcase::{self, FuzzCase, Verdict};
use std::sync::Mutex;
use std::time::Duration;

static EXEC: Mutex<Option<Persistent>> = Mutex::new(None);

/// `PVMTEST_FUZZ_STOP_AFTER` = `decode`, `plan` or `model`: a benchmark of the floor, not a
/// fuzzing mode. The input is decoded and, up to that stage, planned and predicted, and
/// nothing runs on the kernel; `scripts/bench-fuzz.sh` with `STAGES=1` reports the exec/s of
/// each (docs/BENCHMARKS.md, "Fuzzing").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd)]
enum Stop {
    Decode,
    Plan,
    Model,
    Never,
}

fn stop_after() -> Stop {
    static STOP: std::sync::OnceLock<Stop> = std::sync::OnceLock::new();
    *STOP.get_or_init(|| {
        match std::env::var("PVMTEST_FUZZ_STOP_AFTER").as_deref() {
            Ok("decode") => Stop::Decode,
            Ok("plan") => Stop::Plan,
            Ok("model") => Stop::Model,
            Ok("") | Err(_) => Stop::Never,
            Ok(other) => {
                eprintln!("model_vs_kernel: PVMTEST_FUZZ_STOP_AFTER={other}: use decode, plan or model (or leave it unset to fuzz)");
                std::process::exit(2);
            }
        }
    })
}

extern "C" fn shutdown() {
    if let Ok(mut g) = EXEC.lock() {
        if let Some(p) = g.as_mut() {
            eprintln!("model_vs_kernel executor: {:?}", p.stats);
            p.shutdown();
        }
    }
}

fuzz_target!(
    init: {
        match pvmtest::exec::persistent::pin_for_fuzzing() {
            Ok(what) => eprintln!("model_vs_kernel: {what}"),
            Err(e) => {
                eprintln!("model_vs_kernel: {e}");
                std::process::exit(2);
            }
        }
        let p = Persistent::new(Duration::from_secs(5)).expect("persistent executor");
        *EXEC.lock().unwrap() = Some(p);
        // Kills and reaps the target at
        // a normal exit (-max_total_time, -runs). Crashes and signals rely on
        // PR_SET_PDEATHSIG in every child.
        pvmtest::exec::persistent::at_exit(shutdown);
    },
    |case: FuzzCase| {
        // AddressSanitizer maps terabytes of shadow memory (one range covers the compat
        // caller range); the model takes everything the plan does not map to be unmapped, so
        // a stray iovec would read shadow memory and "disagree". Nothing is run: fuzz
        // model_vs_kernel built with `-s none` (docs/FUZZING.md, "ClusterFuzzLite").
        if cfg!(sanitize = "address") {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| eprintln!("model_vs_kernel: built with AddressSanitizer, whose shadow memory the model cannot know: every input is skipped; build with `-s none`"));
            return;
        }
        let stop = stop_after();
        if stop < Stop::Never {
            if stop >= Stop::Plan {
                if let Ok(plan) = case.plan("fuzz/input") {
                    if stop >= Stop::Model {
                        let g = EXEC.lock().unwrap();
                        let facts = g.as_ref().expect("initialised").facts();
                        std::hint::black_box(pvmtest::model::predict(&plan, facts));
                    }
                    std::hint::black_box(plan);
                }
            }
            return;
        }
        let mut g = EXEC.lock().unwrap();
        let p = g.as_mut().expect("initialised");
        match fuzzcase::run_one(p, &case) {
            Ok(Verdict::Unplaceable(why)) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| eprintln!("model_vs_kernel: some inputs cannot be placed in this process ({why}); build with `-s none`"));
            }
            Ok(_) => {}
            Err(report) => {
                p.shutdown();
                panic!("{report}");
            }
        }
    }
);
