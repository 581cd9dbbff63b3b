//! Concurrency (issue 5): a target thread munmaps, mprotects, writes or exits while a
//! process_vm_readv/process_vm_writev call is in flight. The model (`pvmtest::race`) gives the
//! set of allowed outcomes; every observed result must lie in it, and every byte moved must
//! be an old byte (or, for a racing write, old or new). Each racer runs many iterations in
//! bounded time with the racer released at a random moment of the call, and the test prints
//! how often each outcome and tearing occurred (`cargo test --test concurrency --
//! --nocapture`); docs/SEMANTICS.md, "Concurrency", has measured numbers.

use pvmtest::case::Prot;
use pvmtest::exec::evolving::{page_byte, Evolving, MapFill, RaceAction};
use pvmtest::facts::Facts;
use pvmtest::race::{allowed, Racer};
use pvmtest::runner::load_str;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
/// Two pin batches of PVM_MAX_USER_PAGES (1024) pages.
const PAGES: usize = 2048;
const TAG: u8 = 0x21;
const NEW: u8 = 0xff;
/// Iterations per racer, and a time bound per racer.
const ITERATIONS: usize = 200;
const TIME: Duration = Duration::from_millis(1500);
/// Runs each racer makes however long they take.
const MIN_RUNS: usize = 10;

fn plan(writev: bool) -> pvmtest::plan::Plan {
    let y = format!(
        "description: race\ntarget:\n  regions:\n    - {{name: data, pages: {PAGES}}}\ncaller:\n  regions:\n    - {{name: buf, pages: {PAGES}}}\ncall:\n  syscall: {}\n  local: [{{base: buf, len: {PAGES}*page}}]\n  remote: [{{base: data, len: {PAGES}*page}}]\n",
        if writev { "writev" } else { "readv" }
    );
    load_str("race.yaml", "concurrency/race", &y).unwrap()
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, usize>,
    torn: usize,
    runs: usize,
}

fn label(r: Result<u64, i32>) -> String {
    match r {
        Ok(n) if n as usize == PAGES * PAGE => "full".into(),
        Ok(n) if (n as usize).is_multiple_of(1024 * PAGE) => {
            format!("partial {} pages (batch boundary)", n as usize / PAGE)
        }
        Ok(n) if (n as usize).is_multiple_of(PAGE) => {
            format!("partial {} pages", n as usize / PAGE)
        }
        Ok(n) => format!("partial {n} bytes (not a page boundary)"),
        Err(e) => pvmtest::errno::name(e),
    }
}

/// Checks the bytes a readv left in `buf`: the first `n` are the target's old bytes (or, with
/// `old_or_new`, each old or NEW); the rest are untouched (zero). Returns whether the buffer
/// holds both old and new bytes (a torn read).
fn check_bytes(buf: &[u8], n: usize, old_or_new: bool) -> Result<bool, String> {
    let (mut saw_old, mut saw_new) = (false, false);
    let new_page = [NEW; PAGE];
    let zero = [0u8; PAGE];
    for (i, got) in buf.chunks(PAGE).enumerate() {
        let old_page = [page_byte(TAG, i as u64); PAGE];
        let moved = n.saturating_sub(i * PAGE).min(PAGE);
        let (head, tail) = got.split_at(moved);
        if tail != &zero[..tail.len()] {
            return Err(format!("page {i}: a byte past the count was written"));
        }
        if head == &old_page[..moved] {
            saw_old |= moved > 0;
            continue;
        }
        if old_or_new && head == &new_page[..moved] {
            saw_new = true;
            continue;
        }
        for (k, &b) in head.iter().enumerate() {
            if b == old_page[0] {
                saw_old = true;
            } else if old_or_new && b == NEW {
                saw_new = true;
            } else {
                return Err(format!(
                    "page {i} byte {k}: {b:#04x} is neither the old byte {:#04x}{}",
                    old_page[0],
                    if old_or_new { " nor the new one" } else { "" }
                ));
            }
        }
    }
    Ok(saw_old && saw_new)
}

fn run(name: &str, racer: Racer, action: RaceAction, writev: bool) -> Tally {
    let facts = Facts::detect();
    let plan = plan(writev);
    let data = plan.region(pvmtest::plan::Side::Target, "data").unwrap();
    let (addr, len) = (data.start, data.len);
    let allowed = allowed(&plan, &facts, &racer);
    let mut tally = Tally::default();
    let mut buf = vec![0u8; PAGES * PAGE];
    let mut target: Option<Evolving> = None;
    // How long an undisturbed call takes: the racer starts at a uniformly random moment within
    // that time after the release (xorshift; the seed is fixed so a run is repeatable in
    // shape, not in outcome).
    let mut span_ns = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let start = Instant::now();
    while tally.runs < MIN_RUNS || (tally.runs < ITERATIONS && start.elapsed() < TIME) {
        let t = match target.take() {
            Some(t) => t,
            None => Evolving::start(Duration::from_secs(5)).unwrap(),
        };
        t.map(addr, len, MapFill::PerPage(TAG)).unwrap();
        buf.fill(0);
        if span_ns == 0 {
            // The fastest of three undisturbed reads (the machine may be busy).
            let mut best = u64::MAX;
            for _ in 0..3 {
                let t0 = Instant::now();
                let r = pvmtest::exec::evolving::readv_once(t.pid, addr, &mut buf);
                best = best.min(t0.elapsed().as_nanos() as u64);
                assert_eq!(r, Ok(len), "an undisturbed read");
            }
            span_ns = best.max(1000);
            buf.fill(0);
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = match std::env::var("PVMTEST_RACE_DELAY_NS") {
            Ok(v) => v.parse().unwrap(),
            Err(_) => rng % span_ns,
        };
        let mut t = t;
        let r = t
            .race(action, addr, len, delay, (addr, len), &mut buf, writev)
            .unwrap();
        assert!(
            allowed.allows(r.call),
            "{name}: {:?} is not among the allowed outcomes {:?}",
            r.call,
            allowed
                .outcomes
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        );
        if let Some(a) = r.action {
            assert_eq!(a, 0, "{name}: the racer's own call failed");
        }
        if !writev {
            let n = r.call.map_or(0, |n| n as usize);
            match check_bytes(&buf, n, allowed.old_or_new_bytes) {
                Ok(torn) => tally.torn += torn as usize,
                Err(e) => panic!("{name}: {e} (result {:?})", r.call),
            }
        }
        *tally.outcomes.entry(label(r.call)).or_default() += 1;
        tally.runs += 1;
        if action != RaceAction::Exit {
            target = Some(t);
        }
    }
    eprintln!(
        "{name}: {} runs in {:.2?} (call ~{} µs): {:?}{}; allowed: {:?}",
        tally.runs,
        start.elapsed(),
        span_ns / 1000,
        tally.outcomes,
        if writev {
            String::new()
        } else {
            format!(", torn {}", tally.torn)
        },
        summary(&allowed)
    );
    tally
}

/// The allowed set in a line: its size and its extremes.
fn summary(a: &pvmtest::race::Allowed) -> String {
    let counts: Vec<u64> = a.outcomes.iter().filter_map(|p| p.result.ok()).collect();
    let errs: Vec<String> = a
        .outcomes
        .iter()
        .filter_map(|p| p.result.err())
        .map(pvmtest::errno::name)
        .collect();
    format!(
        "{} outcomes: {:?}, counts {}",
        a.outcomes.len(),
        errs,
        match (counts.iter().min(), counts.iter().max()) {
            (Some(lo), Some(hi)) if lo != hi => format!("{lo}..={hi} in whole pages"),
            (Some(n), _) => n.to_string(),
            _ => "none".into(),
        }
    )
}

fn data() -> String {
    "data".into()
}

/// One test, the racers one after another: in parallel they would compete for the two cores
/// and shift each other's timing.
#[test]
fn racing_target_changes() {
    run(
        "readv vs munmap",
        Racer::Munmap { region: data() },
        RaceAction::Munmap,
        false,
    );
    run(
        "readv vs mprotect(PROT_NONE)",
        Racer::Mprotect {
            region: data(),
            prot: Prot::None,
        },
        RaceAction::Mprotect(libc::PROT_NONE),
        false,
    );
    run(
        "writev vs mprotect(PROT_READ)",
        Racer::Mprotect {
            region: data(),
            prot: Prot::Ro,
        },
        RaceAction::Mprotect(libc::PROT_READ),
        true,
    );
    run(
        "readv vs target write",
        Racer::Write { region: data() },
        RaceAction::Write(NEW),
        false,
    );
    run("readv vs exit", Racer::Exit, RaceAction::Exit, false);
}
