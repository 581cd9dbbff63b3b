//! The persistent executor (the fuzzer's) against the fork-per-case executor (`pvmtest run`'s):
//! for generated fuzz inputs both must see the same result and the same bytes, and both must
//! agree with the model.

use pvmtest::exec::persistent::Persistent;
use pvmtest::exec::{self, Dump, Options};
use pvmtest::fuzzcase::{self, FuzzCase, Verdict};
use std::time::{Duration, Instant};

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    pvmtest::fuzzcase::SplitMix64(seed).bytes(n)
}

/// Inputs biased towards sane lengths, so most calls move bytes.
fn input(seed: u64) -> Vec<u8> {
    let mut b = bytes(seed, 64);
    if !seed.is_multiple_of(3) {
        // Default counts, flags and arrays; at least one region a side and one iovec.
        b[1] = (b[1] & 0x1f) | 0x09;
        b[2] = (b[2] & 0x3f) | 0x09;
        b[3] = 0;
    }
    for (i, x) in b.iter_mut().enumerate().skip(4) {
        if i % 3 == 0 && *x >= 0xe0 {
            *x &= 0x7f;
        }
    }
    b
}

/// A case built from sane pieces (most of them move bytes).
fn sane(seed: u64) -> FuzzCase {
    use pvmtest::case::{Prot, RegionKind, TargetKind};
    use pvmtest::fuzzcase::{Addr, Base, CredsChoice, IovDef, RegionDef};
    let r = bytes(seed, 96);
    let mut i = 0;
    let mut next = || {
        i += 1;
        r[i - 1] as u64
    };
    let kinds = [
        RegionKind::Anon,
        RegionKind::Anon,
        RegionKind::Hole,
        RegionKind::FilePrivate,
        RegionKind::FileShared,
        RegionKind::MemfdPrivate,
        RegionKind::MemfdShared,
    ];
    let prots = [
        Prot::Rw,
        Prot::Rw,
        Prot::Rw,
        Prot::Ro,
        Prot::None,
        Prot::Wo,
        Prot::Xo,
    ];
    let region = |next: &mut dyn FnMut() -> u64| {
        let kind = kinds[(next() % 7) as usize];
        let file = !matches!(kind, RegionKind::Anon | RegionKind::Hole);
        RegionDef {
            kind,
            prot: if kind == RegionKind::Hole {
                Prot::Rw
            } else {
                prots[(next() % 7) as usize]
            },
            pages: 1 + next() % 3,
            file_size: (file && next().is_multiple_of(3)).then(|| next() * 40),
        }
    };
    let target: Vec<RegionDef> = (0..1 + next() % 3).map(|_| region(&mut next)).collect();
    let caller: Vec<RegionDef> = (0..1 + next() % 2).map(|_| region(&mut next)).collect();
    let lens = [0, 1, 8, 100, 4095, 4096, 4097, 8192, 5000, 12288];
    let iov = |n: usize, next: &mut dyn FnMut() -> u64| IovDef {
        addr: Addr {
            base: Base::Region((next() as usize % n) as u8),
            off: next() * 32,
        },
        len: lens[(next() % 10) as usize],
        repeat: 1,
        stride: 0,
    };
    let local = (0..1 + next() % 3)
        .map(|_| iov(caller.len(), &mut next))
        .collect();
    let remote = (0..1 + next() % 3)
        .map(|_| iov(target.len(), &mut next))
        .collect();
    let target_kind = [
        TargetKind::Child,
        TargetKind::Child,
        TargetKind::Child,
        TargetKind::SelfProcess,
        TargetKind::Thread,
        TargetKind::CloneVm,
        TargetKind::Pid0,
    ][(next() % 7) as usize];
    FuzzCase {
        write: next() % 2 == 1,
        compat: next() % 4 == 0,
        creds: [
            CredsChoice::Harness,
            CredsChoice::Harness,
            CredsChoice::Uid1000,
            CredsChoice::RootNoPtrace,
        ][(next() % 4) as usize],
        target_kind,
        target,
        caller,
        local,
        remote,
        liovcnt: None,
        riovcnt: None,
        flags: None,
        lvec: None,
        rvec: None,
    }
}

/// Persistent executors map at the plans' fixed addresses in this process: two at once (tests
/// run on parallel threads) would take each other's ranges.
static ONE_EXECUTOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn key(d: &Dump) -> (String, String) {
    (format!("{:?}", d.side), d.name.clone())
}

#[test]
fn persistent_matches_fork_executor() {
    let _one = ONE_EXECUTOR.lock().unwrap_or_else(|e| e.into_inner());
    let facts = pvmtest::facts::Facts::detect();
    let opts = Options::default();
    // The fork executor first (its children need this process's address ranges free), then
    // the persistent one over the same sequence twice, the second time backwards, so that
    // reused, reset and remapped regions are all exercised.
    // As many inputs as ran from 400 seeds as root: without root the inputs that give the
    // caller or the target other ids skip on their requirement, so more seeds are drawn.
    let mut runs = Vec::new();
    for seed in 0..2000 {
        if runs.len() == 300 {
            break;
        }
        let case = if seed % 2 == 0 {
            sane(seed)
        } else {
            FuzzCase::decode(&input(seed))
        };
        let Ok(plan) = case.plan("fuzz/input") else {
            continue;
        };
        if pvmtest::check::unmet_requirement(&plan, &facts).is_some() {
            continue;
        }
        let b = exec::execute(&plan, &facts, &opts).expect("fork executor");
        runs.push((seed, case, plan, b));
    }
    assert_eq!(runs.len(), 300, "only {} of 2000 inputs ran", runs.len());
    let moved = runs
        .iter()
        .filter(|r| matches!(r.3.result, Ok(n) if n > 0))
        .count();
    assert!(moved > 20, "only {moved} inputs moved bytes");
    let mut p = Persistent::new(Duration::from_secs(5)).expect("executor");
    let mut mismatches = Vec::new();
    let order: Vec<usize> = (0..runs.len()).chain((0..runs.len()).rev()).collect();
    for i in order {
        let (seed, case, plan, b) = &runs[i];
        let a = p
            .execute(plan)
            .expect("persistent executor")
            .expect("placeable");
        assert_eq!(a.result, b.result, "seed {seed}\n{}", case.to_yaml("x"));
        let mut da: Vec<_> = a
            .dumps
            .iter()
            .map(|d| (key(d), &d.memory, &d.file))
            .collect();
        let mut db: Vec<_> = b
            .dumps
            .iter()
            .map(|d| (key(d), &d.memory, &d.file))
            .collect();
        da.sort();
        db.sort();
        assert_eq!(da, db, "seed {seed}\n{}", case.to_yaml("x"));
        let pred = pvmtest::model::predict(plan, &facts);
        if let Err(e) = pvmtest::check::compare(plan, &pred, &a) {
            mismatches.push(format!("seed {seed}: {e}\n{}", case.to_yaml("x")));
        }
    }
    assert!(p.stats.resets > 10, "{:?}", p.stats);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The fork-per-case executor's children are forks of a process that may hold plan mappings
/// (here a persistent executor's, as when the two run in one test binary): they must build
/// their layouts from nothing (before `layout::clear_reserved` they failed with EEXIST).
#[test]
fn fork_executor_beside_a_persistent_one() {
    let _one = ONE_EXECUTOR.lock().unwrap_or_else(|e| e.into_inner());
    let facts = pvmtest::facts::Facts::detect();
    let mut p = Persistent::new(Duration::from_secs(5)).expect("executor");
    let mut ran = 0;
    for seed in 0..40 {
        let case = sane(seed);
        let Ok(plan) = case.plan("fuzz/input") else {
            continue;
        };
        if pvmtest::check::unmet_requirement(&plan, &facts).is_some() {
            continue;
        }
        let a = p.execute(&plan).expect("persistent").expect("placeable");
        let b = exec::execute(&plan, &facts, &Options::default())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", case.to_yaml("x")));
        assert_eq!(a.result, b.result, "seed {seed}\n{}", case.to_yaml("x"));
        ran += 1;
    }
    assert!(ran > 20, "only {ran} cases ran");
}

/// Prints how many inputs a second the persistent executor runs (model and checker
/// included); `cargo test --release --test persistent -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let _one = ONE_EXECUTOR.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "{}",
        pvmtest::exec::persistent::pin_for_fuzzing().expect("pin")
    );
    let mut p = Persistent::new(Duration::from_secs(5)).expect("executor");
    let cases: Vec<FuzzCase> = (0..2000)
        .map(|s| {
            if s % 2 == 0 {
                sane(s)
            } else {
                FuzzCase::decode(&input(s))
            }
        })
        .collect();
    let start = Instant::now();
    let mut n = 0u64;
    let mut verdicts = std::collections::BTreeMap::new();
    let repeat: usize = std::env::var("PVMTEST_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    while start.elapsed() < Duration::from_secs(5) {
        for c in cases.iter().flat_map(|c| std::iter::repeat_n(c, repeat)) {
            let v = fuzzcase::run_one(&mut p, c).unwrap_or_else(|e| panic!("{e}"));
            *verdicts
                .entry(match v {
                    Verdict::Agree => "agree",
                    Verdict::Invalid => "invalid",
                    Verdict::Skipped => "skipped",
                    Verdict::Unplaceable(_) => "unplaceable",
                })
                .or_insert(0u64) += 1;
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.0} inputs/s ({n} in {secs:.1} s); {verdicts:?}; {:?}",
        n as f64 / secs,
        p.stats
    );
}
