//! The race executor's processes (`pvmtest::exec::evolving`): a persistent caller and a
//! laid-out target must give every call the memory a freshly forked caller and target would
//! have. The race cases cannot show a missed reset by their byte rules alone (a region left
//! unmapped only turns every run into an allowed EFAULT), so these check it directly.

use pvmtest::exec::evolving::{Caller, CallerOpts, Evolving, Lay, Shared};
use pvmtest::pattern;
use pvmtest::plan::Plan;
use pvmtest::runner::load_str;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

fn plan(yaml: &str) -> Plan {
    load_str("t.yaml", "race/t", yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn layout(p: &Plan) -> Vec<Lay> {
    p.target_regions
        .iter()
        .filter(|r| !r.is_hole())
        .map(Lay::of)
        .collect()
}

/// A readv whose caller has a write-only region (the read-back makes it readable; the next
/// call must find it write-only again, or its second iovec would fault) and a no-access one.
const READV: &str = "description: t
target:
  regions:
    - {name: data, pages: 2}
caller:
  regions:
    - {name: buf, pages: 2}
    - {name: w, pages: 1, prot: wo}
    - {name: shut, pages: 1, prot: none}
call:
  syscall: readv
  local: [{base: buf, len: 2*page}, {base: w, len: page}]
  remote: [{base: data, len: 3*page}]
";

#[test]
fn a_persistent_caller_calls_from_fresh_memory_every_time() {
    let p = plan(READV);
    let shared = Shared::new(Caller::room(&p)).unwrap();
    let target = Evolving::start_laid(TIMEOUT, false, &layout(&p), &shared).unwrap();
    target.laid().unwrap();
    let mut caller = Caller::start(&p, &shared, CallerOpts::default(), TIMEOUT).unwrap();
    // Two pages of data: the third page of the remote iovec is unmapped.
    let first = caller.call(target.pid, 0).unwrap();
    assert_eq!(first.result, Ok(8192));
    // Now only one page of data is left: the second page of buf must hold the canary again,
    // not what the first call wrote there.
    target
        .unmap(p.target_regions[0].start + 4096, 4096)
        .unwrap();
    for _ in 0..3 {
        let again = caller.call(target.pid, 0).unwrap();
        assert_eq!(again.result, Ok(4096));
        let buf = &p.caller_regions[0];
        let canary = pattern::initial(buf);
        assert_eq!(again.dumps[0][..4096], first.dumps[0][..4096]);
        assert!(
            again.dumps[0][4096..] == canary[4096..],
            "buf's second page was not mapped afresh"
        );
        for (i, r) in p.caller_regions.iter().enumerate().skip(1) {
            assert!(again.dumps[i] == pattern::initial(r), "{} changed", r.name);
        }
    }
    // Back to two pages: the write-only region must take the second page again.
    target.relay(1).unwrap();
    assert_eq!(caller.call(target.pid, 0).unwrap().result, Ok(8192));
}

#[test]
fn a_laid_out_target_maps_changed_regions_afresh() {
    let p = plan(
        "description: t
target:
  regions:
    - {name: a, pages: 2}
    - {name: z, pages: 1, fill: untouched}
    - {name: r, pages: 1, prot: ro}
    - {name: gap, pages: 1, kind: hole}
    - {name: keep, pages: 1}
caller:
  regions:
    - {name: buf, pages: 1}
call:
  syscall: readv
  local: [{base: buf, len: page}]
  remote: [{base: a, len: page}]
",
    );
    let shared = Shared::new(4 * 4096).unwrap();
    let target = Evolving::start_laid(TIMEOUT, false, &layout(&p), &shared).unwrap();
    let region = |name: &str| p.target_regions.iter().find(|r| r.name == name).unwrap();
    let (a, z, r, keep) = (region("a"), region("z"), region("r"), region("keep"));
    target.write(a.start, 4096, 0xa5).unwrap();
    target.write(z.start, 4096, 0xa5).unwrap();
    target.protect(r.start, r.len, libc::PROT_NONE).unwrap();
    target.write(keep.start, 4096, 0xa5).unwrap();
    // Every mapped region but `keep` (the hole has no bit).
    target.relay(0b0111).unwrap();
    for x in [a, z, r] {
        assert!(
            target.dump(x.start, x.len, x.prot.bits()).unwrap() == pattern::initial(x),
            "{} was not mapped afresh",
            x.name
        );
    }
    assert_eq!(
        target.dump(keep.start, 4096, keep.prot.bits()).unwrap(),
        vec![0xa5; 4096],
        "a region outside the mask was mapped again"
    );
    // `r` is read-only again.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", target.pid)).unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", r.start)))
        .unwrap_or_else(|| panic!("no mapping at {:#x}:\n{maps}", r.start));
    assert!(line.contains(" r--p "), "{line}");
}

#[test]
fn a_persistent_caller_gets_its_protections_back() {
    // The read-back makes `shut` readable; a writev from it must fault again next time.
    let p = plan(
        "description: t
target:
  regions:
    - {name: data, pages: 2}
caller:
  regions:
    - {name: buf, pages: 1}
    - {name: shut, pages: 1, prot: none}
call:
  syscall: writev
  local: [{base: buf, len: page}, {base: shut, len: page}]
  remote: [{base: data, len: 2*page}]
",
    );
    let shared = Shared::new(Caller::room(&p)).unwrap();
    let target = Evolving::start_laid(TIMEOUT, false, &layout(&p), &shared).unwrap();
    // Until the target has mapped `data`, a call meets an unmapped range (EFAULT).
    target.laid().unwrap();
    let mut caller = Caller::start(&p, &shared, CallerOpts::default(), TIMEOUT).unwrap();
    for _ in 0..3 {
        let c = caller.call(target.pid, 0).unwrap();
        assert_eq!(c.result, Ok(4096));
        assert!(c.dumps[1] == pattern::initial(&p.caller_regions[1]));
    }
}
