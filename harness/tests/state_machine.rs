//! A proptest-state-machine test: one persistent target (exec::evolving) whose layout
//! evolves — mmap, munmap, mprotect, writes by the target, threads starting and exiting —
//! interleaved with process_vm_readv/process_vm_writev calls against it (naming the main
//! thread, a live thread or an exited one). The reference state is the window's pages
//! (protection and bytes) and the threads; before every call the state is written as a case
//! in the YAML case language, the model predicts the call from it, and the kernel's result
//! and every byte on both sides are compared. After every step the target's whole window is
//! read back and compared with the reference.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use pvmtest::case::Prot;
use pvmtest::exec::evolving::{Evolving, MapFill};
use pvmtest::facts::Facts;
use pvmtest::model::predict;
use pvmtest::plan::Plan;
use pvmtest::runner::load_str;
use std::sync::OnceLock;
use std::time::Duration;

const PAGE: u64 = 4096;
/// Pages 1..=WINDOW of the target side (page 0 is the case language's `hole`).
const WINDOW: usize = 10;
const SLOTS: usize = 3;
/// Caller regions: `buf` (3 pages, rw) then `ro` (1 page).
const CALLER: &str = "    - {name: buf, pages: 3}\n    - {name: ro, pages: 1, prot: ro}\n";
const CI_SEED: u64 = 0x5056_4d54_534d_0001;

fn facts() -> &'static Facts {
    static F: OnceLock<Facts> = OnceLock::new();
    F.get_or_init(Facts::detect)
}

#[derive(Clone, Debug)]
struct Page {
    prot: Prot,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Thread {
    Never,
    Live,
    Exited,
}

#[derive(Clone, Debug)]
struct State {
    pages: Vec<Option<Page>>,
    threads: [Thread; SLOTS],
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Leader,
    Thread(usize),
}

#[derive(Clone, Debug)]
enum Step {
    Map {
        page: usize,
        n: usize,
        tag: u8,
    },
    Unmap {
        page: usize,
        n: usize,
    },
    Protect {
        page: usize,
        n: usize,
        prot: Prot,
    },
    TargetWrite {
        page: usize,
        off: u64,
        len: u64,
        byte: u8,
    },
    Spawn {
        slot: usize,
    },
    ExitThread {
        slot: usize,
    },
    Call(Call),
}

#[derive(Clone, Debug)]
struct Call {
    readv: bool,
    who: Who,
    /// (byte offset from `buf`, len): `buf` is 3 pages, `ro` follows it, then unmapped.
    local: Vec<(u64, u64)>,
    /// (byte offset from window page 1, len).
    remote: Vec<(u64, u64)>,
}

fn writable(p: Prot) -> bool {
    matches!(p, Prot::Rw | Prot::Wo | Prot::Rwx)
}

/// The state and the call as a case in the case language.
fn yaml(s: &State, c: &Call) -> String {
    let kind = match c.who {
        Who::Thread(slot) if s.threads[slot] == Thread::Exited => "reaped",
        _ => "child",
    };
    let mut y = format!("description: state machine step\ntarget:\n  kind: {kind}\n  regions:");
    let mut any = false;
    let mut i = 0;
    while i < WINDOW {
        let Some(p) = &s.pages[i] else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < WINDOW && s.pages[j].as_ref().is_some_and(|q| q.prot == p.prot) {
            j += 1;
        }
        y += &format!(
            "\n    - {{name: p{}, pages: {}, at: {}, prot: {}}}",
            i + 1,
            j - i,
            i + 1,
            p.prot.name()
        );
        any = true;
        i = j;
    }
    if !any {
        y += " []";
    }
    y += &format!(
        "\ncaller:\n  regions:\n{CALLER}call:\n  syscall: {}\n  local:",
        if c.readv { "readv" } else { "writev" }
    );
    for (off, len) in &c.local {
        y += &format!("\n    - {{base: buf+{off}, len: {len}}}");
    }
    y += "\n  remote:";
    for (off, len) in &c.remote {
        y += &format!("\n    - {{base: hole+{}, len: {len}}}", PAGE + off);
    }
    y += "\n";
    y
}

fn plan_of(s: &State, c: &Call) -> Plan {
    load_str("state.yaml", "state_machine/step", &yaml(s, c))
        .unwrap_or_else(|e| panic!("{e}\n{}", yaml(s, c)))
}

fn window_base() -> u64 {
    static B: OnceLock<u64> = OnceLock::new();
    *B.get_or_init(|| {
        let s = State {
            pages: vec![None; WINDOW],
            threads: [Thread::Never; SLOTS],
        };
        let c = Call {
            readv: true,
            who: Who::Leader,
            local: vec![],
            remote: vec![],
        };
        let p = plan_of(&s, &c);
        p.landmarks.iter().find(|l| l.0 == "hole").unwrap().1 + PAGE
    })
}

/// The caller's initial byte at `addr`, as the plan fills it (canary pattern).
fn caller_byte(plan: &Plan, addr: u64) -> u8 {
    let r = plan
        .caller_regions
        .iter()
        .find(|r| addr >= r.start && addr < r.end())
        .expect("the model copied from outside the caller regions");
    pvmtest::model::byte_of(r, addr - r.start)
}

fn target_byte(s: &State, addr: u64) -> u8 {
    let off = addr - window_base();
    let p = s.pages[(off / PAGE) as usize]
        .as_ref()
        .expect("the model copied from an unmapped target page");
    p.bytes[(off % PAGE) as usize]
}

struct Machine;

impl ReferenceStateMachine for Machine {
    type State = State;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<State> {
        Just(State {
            pages: vec![None; WINDOW],
            threads: [Thread::Never; SLOTS],
        })
        .boxed()
    }

    fn transitions(s: &State) -> BoxedStrategy<Step> {
        let prot = prop_oneof![
            3 => Just(Prot::Rw),
            2 => Just(Prot::Ro),
            2 => Just(Prot::None),
            1 => Just(Prot::Wo),
            1 => Just(Prot::Xo),
            1 => Just(Prot::Rwx),
            1 => Just(Prot::Rx),
        ];
        let range = (0..WINDOW).prop_flat_map(|p| (Just(p), 1..=(WINDOW - p).min(4)));
        let off = prop_oneof![Just(0u64), Just(1), Just(100), Just(4095), 0..3 * PAGE];
        let len = prop_oneof![Just(0u64), Just(1), Just(4096), 1..2 * PAGE, 1..5 * PAGE];
        let spawned: Vec<usize> = (0..SLOTS)
            .filter(|&i| s.threads[i] != Thread::Never)
            .collect();
        let who = if spawned.is_empty() {
            Just(Who::Leader).boxed()
        } else {
            prop_oneof![
                2 => Just(Who::Leader),
                1 => prop::sample::select(spawned).prop_map(Who::Thread),
            ]
            .boxed()
        };
        let remote_off = prop_oneof![
            3 => (0..WINDOW as u64).prop_map(|p| p * PAGE),
            2 => 0..WINDOW as u64 * PAGE,
        ];
        let call = (
            any::<bool>(),
            who,
            prop::collection::vec((off.clone(), len.clone()), 1..=3),
            prop::collection::vec((remote_off, len), 1..=3),
        )
            .prop_map(|(readv, who, local, remote)| {
                Step::Call(Call {
                    readv,
                    who,
                    local,
                    remote,
                })
            });
        prop_oneof![
            4 => (range.clone(), 0x10..0x40u8).prop_map(|((page, n), tag)| Step::Map { page, n, tag }),
            1 => range.clone().prop_map(|(page, n)| Step::Unmap { page, n }),
            2 => (range.clone(), prot).prop_map(|((page, n), prot)| Step::Protect { page, n, prot }),
            1 => (0..WINDOW, 0..PAGE, 1..PAGE, any::<u8>())
                .prop_map(|(page, off, len, byte)| Step::TargetWrite { page, off, len, byte }),
            1 => (0..SLOTS).prop_map(|slot| Step::Spawn { slot }),
            1 => (0..SLOTS).prop_map(|slot| Step::ExitThread { slot }),
            6 => call,
        ]
        .boxed()
    }

    fn preconditions(s: &State, t: &Step) -> bool {
        match t {
            Step::Protect { page, n, .. } => (*page..page + n).all(|i| s.pages[i].is_some()),
            Step::TargetWrite { page, off, len, .. } => {
                let last = ((page * PAGE as usize) as u64 + off + len - 1) / PAGE;
                (*page as u64..=last).all(|i| {
                    s.pages
                        .get(i as usize)
                        .and_then(|p| p.as_ref())
                        .is_some_and(|p| writable(p.prot))
                })
            }
            Step::Spawn { slot } => s.threads[*slot] != Thread::Live,
            Step::ExitThread { slot } => s.threads[*slot] == Thread::Live,
            Step::Call(c) => match c.who {
                Who::Thread(slot) => s.threads[slot] != Thread::Never,
                Who::Leader => true,
            },
            _ => true,
        }
    }

    fn apply(mut s: State, t: &Step) -> State {
        match t {
            Step::Map { page, n, tag } => {
                for k in 0..*n {
                    let mut bytes = vec![0u8; PAGE as usize];
                    pvmtest::pattern::fill(&mut bytes, *tag, k as u64 * PAGE);
                    s.pages[page + k] = Some(Page {
                        prot: Prot::Rw,
                        bytes,
                    });
                }
            }
            Step::Unmap { page, n } => (*page..page + n).for_each(|i| s.pages[i] = None),
            Step::Protect { page, n, prot } => (*page..page + n).for_each(|i| {
                if let Some(p) = &mut s.pages[i] {
                    p.prot = *prot;
                }
            }),
            Step::TargetWrite {
                page,
                off,
                len,
                byte,
            } => {
                let start = *page as u64 * PAGE + off;
                for a in start..start + len {
                    s.pages[(a / PAGE) as usize].as_mut().unwrap().bytes[(a % PAGE) as usize] =
                        *byte;
                }
            }
            Step::Spawn { slot } => s.threads[*slot] = Thread::Live,
            Step::ExitThread { slot } => s.threads[*slot] = Thread::Exited,
            Step::Call(c) if !c.readv => {
                // The model's copies, with the caller's initial bytes as the source.
                let plan = plan_of(&s, c);
                let pred = predict(&plan, facts());
                if pred.result.is_ok() {
                    for cp in &pred.copies {
                        for k in 0..cp.len {
                            let b = caller_byte(&plan, cp.local + k);
                            let off = cp.remote + k - window_base();
                            s.pages[(off / PAGE) as usize].as_mut().unwrap().bytes
                                [(off % PAGE) as usize] = b;
                        }
                    }
                }
            }
            Step::Call(_) => {}
        }
        s
    }
}

struct Sut {
    target: Evolving,
    tids: [i32; SLOTS],
}

struct EvolvingTest;

impl StateMachineTest for EvolvingTest {
    type SystemUnderTest = Sut;
    type Reference = Machine;

    fn init_test(_: &State) -> Sut {
        Sut {
            target: Evolving::start(Duration::from_secs(5)).expect("starting the target"),
            tids: [0; SLOTS],
        }
    }

    fn apply(mut sut: Sut, after: &State, t: Step) -> Sut {
        let base = window_base();
        let at = |page: usize| base + page as u64 * PAGE;
        let t_ = &sut.target;
        match &t {
            Step::Map { page, n, tag } => t_
                .map(at(*page), *n as u64 * PAGE, MapFill::Pattern(*tag))
                .unwrap(),
            Step::Unmap { page, n } => t_.unmap(at(*page), *n as u64 * PAGE).unwrap(),
            Step::Protect { page, n, prot } => t_
                .protect(at(*page), *n as u64 * PAGE, prot.bits())
                .unwrap(),
            Step::TargetWrite {
                page,
                off,
                len,
                byte,
            } => t_.write(at(*page) + off, *len, *byte).unwrap(),
            Step::Spawn { slot } => sut.tids[*slot] = t_.spawn_thread(*slot).unwrap(),
            Step::ExitThread { slot } => t_.exit_thread(*slot, sut.tids[*slot]).unwrap(),
            Step::Call(c) => {
                // Calls leave the layout as it was: `after` describes it (for a writev, with
                // the model's copies applied; the prediction does not depend on contents).
                let plan = plan_of(after, c);
                let pred = predict(&plan, facts());
                let pid = match c.who {
                    Who::Leader => t_.pid,
                    Who::Thread(slot) => sut.tids[slot],
                };
                let (result, dumps) = t_.call(&plan, pid).unwrap();
                assert_eq!(
                    result,
                    pred.result,
                    "kernel {result:?}, model {pred}\n{}",
                    yaml(after, c)
                );
                // Caller regions: the canary, with the model's copies from the target's
                // bytes for a readv that moved something.
                let dumped = plan
                    .caller_regions
                    .iter()
                    .filter(|r| pvmtest::exec::layout::dumped(r));
                for (r, got) in dumped.zip(&dumps) {
                    let mut want = pvmtest::pattern::initial(r);
                    if c.readv && pred.result.is_ok() {
                        for cp in &pred.copies {
                            for k in 0..cp.len {
                                let a = cp.local + k;
                                if a >= r.start && a < r.start + want.len() as u64 {
                                    want[(a - r.start) as usize] =
                                        target_byte(after, cp.remote + k);
                                }
                            }
                        }
                    }
                    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                        panic!(
                            "caller region {} byte {i}: kernel left {:#04x}, model expects {:#04x} ({pred})\n{}",
                            r.name,
                            got[i],
                            want[i],
                            yaml(after, c)
                        );
                    }
                }
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, s: &State) {
        // The whole window, read back by the target, equals the reference.
        let base = window_base();
        for (i, p) in s.pages.iter().enumerate() {
            let Some(p) = p else { continue };
            let got = sut
                .target
                .dump(base + i as u64 * PAGE, PAGE, p.prot.bits())
                .unwrap();
            if let Some(k) = got.iter().zip(&p.bytes).position(|(a, b)| a != b) {
                panic!(
                    "target window page {} byte {k}: {:#04x}, reference {:#04x}",
                    i + 1,
                    got[k],
                    p.bytes[k]
                );
            }
        }
    }
}

fn config() -> Config {
    let mut c = Config {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/state_machine.txt"
        )))),
        ..Config::default()
    };
    if std::env::var_os("CI").is_some() && std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(CI_SEED);
    }
    c
}

prop_state_machine! {
    #![proptest_config(config())]

    /// Up to 20 steps per case; the kernel and the model agree after every one.
    #[test]
    fn evolving_target_matches_model(sequential 1..20 => EvolvingTest);
}
