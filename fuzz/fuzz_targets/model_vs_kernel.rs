//! Differential fuzzing: a generated case (pvmtest::fuzzcase) runs on the running kernel
//! through the persistent executor and is compared with the model, bytes included. A
//! mismatch panics with the call and the case as YAML (`pvmtest import-crash` turns the
//! artifact into a case file).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvmtest::exec::persistent::Persistent;
use pvmtest::fuzzcase::{self, FuzzCase, Verdict};
use std::sync::Mutex;
use std::time::Duration;

static EXEC: Mutex<Option<Persistent>> = Mutex::new(None);

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
