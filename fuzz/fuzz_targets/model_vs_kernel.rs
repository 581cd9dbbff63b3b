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
            let s = &p.stats;
            eprintln!(
                "model_vs_kernel executor: {} cases checked, {} own maps, {} target round trips, {} target maps, {} resets",
                s.cases, s.own_maps, s.target_round_trips, s.target_maps, s.resets
            );
            p.shutdown();
        }
    }
}

fuzz_target!(
    init: {
        // AddressSanitizer maps terabytes of shadow memory, one range over the compat caller
        // range; the model takes everything the plan does not map to be unmapped, so a stray
        // iovec reads shadow memory and "disagrees", and compat layouts cannot be placed at
        // all (MSan, TSan and HWASan reserve shadow ranges too). Such a build would check
        // nothing while libFuzzer counts runs, and `cargo fuzz run` builds with ASan by
        // default: refuse before the first input and name the command that fuzzes
        // (docs/FUZZING.md, "Sanitizers").
        if cfg!(any(
            sanitize = "address",
            sanitize = "memory",
            sanitize = "thread",
            sanitize = "hwaddress"
        )) {
            eprintln!(
                "model_vs_kernel: refusing to start: built with a sanitizer, whose shadow memory the model cannot know, so no input would be checked; fuzz without one: cargo +nightly fuzz run -O -s none model_vs_kernel"
            );
            std::process::exit(2);
        }
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
