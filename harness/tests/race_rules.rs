//! The race rules (`pvmtest::race`, docs/SEMANTICS.md "Concurrency"), on hand-written
//! layouts: the allowed sets, the byte rules, and the validation of a case's `race:` section.
//! These never touch the kernel (the race cases in cases/race/ do).

use pvmtest::facts::Facts;
use pvmtest::model::predict;
use pvmtest::plan::{Plan, Side};
use pvmtest::race::{self, allowed, check_region, expect_region, Racer, NEW_BYTE};
use pvmtest::runner::load_str;

const V612: (u32, u32, u32) = (6, 12, 0);

fn case(regions: &str, syscall: &str, remote: &str, race: &str) -> String {
    format!(
        "description: t\ntarget:\n  regions:\n{regions}caller:\n  regions:\n    - {{name: buf, pages: 4}}\ncall:\n  syscall: {syscall}\n  local: [{{base: buf, len: 4*page}}]\n  remote: [{remote}]\nrace:\n{race}"
    )
}

fn plan(yaml: &str) -> Plan {
    load_str("t.yaml", "race/t", yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn names(p: &Plan) -> Vec<String> {
    let r = p.race.as_ref().expect("a race case");
    allowed(p, &Facts::example(V612), &r.racer).names()
}

const FOUR: &str = "    - {name: data, pages: 4}\n";

#[test]
fn munmap_allows_every_page_boundary_and_efault() {
    let p = plan(&case(
        FOUR,
        "readv",
        "{base: data, len: 4*page}",
        "  action: munmap\n  region: data\n",
    ));
    assert_eq!(names(&p), ["4096..=16384 step 4096", "EFAULT"]);
    assert_eq!(p.race.as_ref().unwrap().runs, race::DEFAULT_RUNS);
}

#[test]
fn munmap_of_a_middle_region_never_efaults() {
    let p = plan(&case(
        "    - {name: a, pages: 1}\n    - {name: mid, pages: 2}\n    - {name: c, pages: 1}\n",
        "readv",
        "{base: a, len: 4*page}",
        "  action: munmap\n  region: mid\n",
    ));
    assert_eq!(names(&p), ["4096", "8192", "16384"]);
}

#[test]
fn mprotect_read_only_does_not_disturb_a_read_but_cuts_a_write() {
    let read = plan(&case(
        FOUR,
        "readv",
        "{base: data, len: 4*page}",
        "  action: mprotect\n  region: data\n  prot: ro\n",
    ));
    assert_eq!(names(&read), ["16384"]);
    let write = plan(&case(
        FOUR,
        "writev",
        "{base: data, len: 4*page}",
        "  action: mprotect\n  region: data\n  prot: ro\n",
    ));
    assert_eq!(names(&write), ["4096..=16384 step 4096", "EFAULT"]);
}

#[test]
fn exits_allow_the_undisturbed_result_or_esrch() {
    for action in ["exit", "thread_exit"] {
        let p = plan(&case(
            FOUR,
            "readv",
            "{base: data, len: 4*page}",
            &format!("  action: {action}\n  runs: 5\n"),
        ));
        assert_eq!(names(&p), ["16384", "ESRCH"], "{action}");
        assert_eq!(p.race.as_ref().unwrap().runs, 5);
    }
}

#[test]
fn a_write_keeps_the_count() {
    let p = plan(&case(
        FOUR,
        "writev",
        "{base: data, len: 4*page}",
        "  action: write\n  region: data\n",
    ));
    assert_eq!(names(&p), ["16384"]);
}

/// readv racing a write: the bytes from the raced region may be the racer's, the rest of
/// the caller's buffer may not.
#[test]
fn readv_bytes_old_or_new_only_from_the_raced_region() {
    let p = plan(&case(
        "    - {name: data, pages: 2}\n    - {name: other, pages: 2}\n",
        "readv",
        "{base: data, len: 4*page}",
        "  action: write\n  region: data\n",
    ));
    let facts = Facts::example(V612);
    let racer = &p.race.as_ref().unwrap().racer;
    let pred = predict(&p, &facts);
    let buf = p.region(Side::Caller, "buf").unwrap();
    let exp = expect_region(&p, Some(racer), &pred, buf).unwrap();
    assert_eq!(exp.or_new, [(0, 8192)]);
    let mut got = exp.want.clone();
    assert_eq!(check_region("buf", &exp, &got), Ok(false));
    got[100] = NEW_BYTE;
    assert_eq!(check_region("buf", &exp, &got), Ok(true), "torn");
    got[8192 + 5] = NEW_BYTE;
    let e = check_region("buf", &exp, &got).unwrap_err();
    assert!(e.contains("buf byte 8197"), "{e}");
}

/// writev racing a write: in the raced region each byte the kernel wrote is the caller's or
/// the racer's, every other byte the racer's (its memset finished); other regions as usual.
#[test]
fn writev_bytes_in_the_raced_region() {
    let p = plan(&case(
        "    - {name: data, pages: 2}\n    - {name: other, pages: 2}\n",
        "writev",
        "{base: data+4096, len: 2*page}",
        "  action: write\n  region: data\n",
    ));
    let facts = Facts::example(V612);
    let racer = &p.race.as_ref().unwrap().racer;
    let pred = predict(&p, &facts);
    let data = p.region(Side::Target, "data").unwrap();
    let exp = expect_region(&p, Some(racer), &pred, data).unwrap();
    assert_eq!(exp.or_new, [(4096, 8192)]);
    assert!(exp.want[..4096].iter().all(|&b| b == NEW_BYTE));
    let mut got = exp.want.clone();
    got[4096..4200].fill(NEW_BYTE);
    assert_eq!(check_region("data", &exp, &got), Ok(true));
    got[10] = 0;
    assert!(check_region("data", &exp, &got).is_err());
    let other = p.region(Side::Target, "other").unwrap();
    let exp = expect_region(&p, Some(racer), &pred, other).unwrap();
    assert!(exp.or_new.is_empty());
    let mut got = exp.want.clone();
    got[0] = NEW_BYTE;
    assert!(check_region("other", &exp, &got).is_err());
}

#[test]
fn a_munmapped_or_exited_target_region_is_not_read_back() {
    let p = plan(&case(
        FOUR,
        "writev",
        "{base: data, len: 4*page}",
        "  action: munmap\n  region: data\n",
    ));
    let pred = predict(&p, &Facts::example(V612));
    let data = p.region(Side::Target, "data").unwrap();
    let buf = p.region(Side::Caller, "buf").unwrap();
    assert!(expect_region(&p, Some(&Racer::Exit), &pred, data).is_none());
    assert!(expect_region(&p, p.race.as_ref().map(|r| &r.racer), &pred, data).is_none());
    // The caller's buffer after writev is its canary, unchanged.
    let exp = expect_region(&p, Some(&Racer::Exit), &pred, buf).unwrap();
    assert_eq!(exp.want, pvmtest::pattern::initial(buf));
}

/// Every bad `race:` field is refused at load time, naming the field and the fix.
#[test]
fn bad_race_fields_are_refused_with_the_fix() {
    let read = |race: &str| case(FOUR, "readv", "{base: data, len: 4*page}", race);
    let bad: &[(String, &str)] = &[
        (read("  action: munmap\n"), "race.region: `munmap` acts on a target region: add `region: NAME` (declared: data)"),
        (read("  action: munmap\n  region: nope\n"), "race.region: `nope` is not a declared target region (declared: data)"),
        (read("  action: exit\n  region: data\n"), "race.region: `exit` acts on no region; drop `region`"),
        (read("  action: mprotect\n  region: data\n"), "race.prot: `mprotect` needs the new protection"),
        (read("  action: munmap\n  region: data\n  prot: ro\n"), "race.prot: only `mprotect` takes a protection, not `munmap`; drop `prot`"),
        (read("  action: munmap\n  region: data\n  runs: 0\n"), "race.runs: 0 runs: use 1 to 1000"),
        (read("  action: munmap\n  region: data\n  runs: 1001\n"), "race.runs: 1001 runs"),
        (read("  action: fork\n"), "unknown variant `fork`"),
        (
            case("    - {name: data, pages: 4097}\n", "readv", "{base: data, len: 4*page}", "  action: munmap\n  region: data\n"),
            "race.region: `data` has 4097 pages; a raced region has at most 4096",
        ),
        (read("  action: exit\n  when: later\n"), "unknown field `when`"),
        (
            case("    - {name: data, pages: 4, prot: ro}\n", "readv", "{base: data, len: 4*page}", "  action: write\n  region: data\n"),
            "race.region: the racer writes `data` with memset, which needs it writable (rw, wo or rwx), not ro",
        ),
        (
            case("    - {name: data, pages: 1}\n    - {name: gap, pages: 1, kind: hole}\n", "readv", "{base: data, len: 4*page}", "  action: munmap\n  region: gap\n"),
            "race.region: `gap` is a hole",
        ),
        (
            case("    - {name: data, pages: 4, kind: memfd_shared}\n", "readv", "{base: data, len: 4*page}", "  action: exit\n").replace("description: t\n", "description: t\nrequires: {features: [memfd]}\n"),
            "target.regions[0].kind: `data` is `memfd_shared`: a race target maps anonymous regions only",
        ),
        (
            read("  action: exit\n").replace("target:\n", "target:\n  kind: thread\n"),
            "target.kind: a race runs against a `child` target, not `thread`",
        ),
        (
            read("  action: exit\n").replace("target:\n", "target:\n  dumpable: false\n"),
            "target.dumpable: a race keeps the harness's credentials",
        ),
        (
            read("  action: exit\n").replace("caller:\n", "caller:\n  creds: {uid: 1000}\n"),
            "caller.creds: a race keeps the harness's credentials",
        ),
        (
            read("  action: exit\n").replace("  syscall: readv\n", "  syscall: readv\n  entry: compat\n"),
            "call.entry: a race calls through the native entry only",
        ),
    ];
    for (yaml, want) in bad {
        let e = load_str("t.yaml", "race/t", yaml)
            .expect_err(want)
            .to_string();
        assert!(e.contains(want), "want `{want}`, got `{e}`");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

/// A `race.*` error points at the line in the `race:` section, not at a region line that
/// happens to contain the same word.
#[test]
fn race_errors_point_into_the_race_section() {
    let y = case(
        "    - {name: data, pages: 4, prot: rw}\n",
        "readv",
        "{base: data, len: 4*page}",
        "  action: munmap\n  region: data\n  prot: ro\n",
    );
    let e = load_str("t.yaml", "race/t", &y).unwrap_err();
    let line = y.lines().position(|l| l == "  prot: ro").unwrap() + 1;
    assert_eq!(e.line, Some(line), "{e}");
}

/// An `[aio]` ring is made once per target, so only an `exit` race, which starts a new
/// target for every run, may lay one out; its allowed set is the exit rule's.
#[test]
fn aio_ring_only_in_exit_races() {
    let ring = "    - {name: data, pages: 3}\n    - {name: ring, pages: 1, kind: aio_ring}\n";
    let with = |race: &str| {
        case(ring, "readv", "{base: data, len: 4*page}", race).replacen(
            "description: t\n",
            "description: t\nrequires:\n  features: [aio]\n",
            1,
        )
    };
    let p = plan(&with("  action: exit\n"));
    assert_eq!(names(&p), ["16384", "ESRCH"]);
    let e = load_str(
        "t.yaml",
        "race/t",
        &with("  action: munmap\n  region: data\n"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("aio_ring"), "{e}");
}

/// The race executor's target makes no `[uprobes]` area, so a race may not name it.
#[test]
fn uprobes_not_in_races() {
    let y = case(
        "    - {name: data, pages: 4}\n",
        "readv",
        "{base: uprobes, len: page}",
        "  action: exit\n",
    )
    .replacen(
        "description: t\n",
        "description: t\nrequires:\n  root: true\n  features: [uprobes]\n",
        1,
    );
    let e = load_str("t.yaml", "race/t", &y).unwrap_err();
    assert!(e.to_string().contains("[uprobes]"), "{e}");
}
