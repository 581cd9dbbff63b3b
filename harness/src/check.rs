//! Judging a case: requirements (skip), the model's prediction against a pinned expectation,
//! and the kernel's result and every byte against the model.

use crate::case::RegionKind;
use crate::case::{Feature, Syscall};
use crate::exec::{Dump, Observed};
use crate::facts::Facts;
use crate::model::{self, Prediction};
use crate::plan::{Expected, Plan, Region, Side};

/// Why a case cannot run here, or `None` when it can.
pub fn unmet_requirement(plan: &Plan, facts: &Facts) -> Option<String> {
    let r = &plan.requires;
    if r.root && !facts.is_root() {
        return Some("needs root (run as uid 0)".into());
    }
    for (name, bit) in &r.caps {
        if !facts.creds.effective.has(*bit) {
            return Some(format!("needs {name}"));
        }
    }
    let v = (facts.version.0, facts.version.1);
    if let Some(min) = r.min_kernel {
        if v < min {
            return Some(format!(
                "needs kernel >= {}.{}, this is {}.{}",
                min.0, min.1, v.0, v.1
            ));
        }
    }
    if let Some(max) = r.max_kernel {
        if v > max {
            return Some(format!(
                "needs kernel <= {}.{}, this is {}.{}",
                max.0, max.1, v.0, v.1
            ));
        }
    }
    if let Some(want) = r.yama_scope {
        match facts.yama_scope {
            None => return Some("needs the Yama LSM".into()),
            Some(have) if have != want => {
                return Some(format!("needs Yama ptrace_scope {want}, this is {have}"))
            }
            Some(_) => {}
        }
    }
    if let Some(a) = &r.arch {
        if *a != facts.arch {
            return Some(format!("needs arch {a}"));
        }
    }
    for f in &r.features {
        let (ok, what) = match f {
            Feature::Compat => (
                facts.compat,
                "the int 0x80 compat entry (CONFIG_IA32_EMULATION)",
            ),
            Feature::Thp => (facts.thp, "transparent huge pages"),
            Feature::Memfd => (facts.memfd, "memfd_create"),
            Feature::Yama => (facts.yama_scope.is_some(), "the Yama LSM"),
            Feature::Pidns => (facts.pidns, "CAP_SYS_ADMIN to create a PID namespace"),
            Feature::Kthreadd => (
                facts.kthreadd,
                "pid 2 to be kthreadd (not in a PID namespace)",
            ),
            Feature::Secretmem => (
                facts.secretmem,
                "memfd_secret (5.14+, CONFIG_SECRETMEM; 6.1 also needs secretmem.enable=1)",
            ),
            Feature::GuardPages => (facts.guard_pages, "MADV_GUARD_INSTALL (6.13+)"),
            Feature::Mseal => (facts.mseal, "mseal (6.10+)"),
            Feature::Hugetlb => (
                facts.hugepages_free >= plan.hugetlb_pages(),
                "free hugetlb pages (HugePages_Free in /proc/meminfo; set vm.nr_hugepages)",
            ),
            Feature::VsyscallXonly => (
                facts.vsyscall != crate::facts::Vsyscall::Emulate,
                "vsyscall=xonly or none (this kernel emulates the vsyscall page, whose contents are not modelled)",
            ),
            Feature::Userfaultfd => (
                facts.userfaultfd,
                "userfaultfd with UFFD_FEATURE_SIGBUS (CONFIG_USERFAULTFD; without root also vm.unprivileged_userfaultfd=1)",
            ),
            Feature::Vdso => (facts.vdso.is_some(), "a [vdso] mapping"),
            Feature::Vvar => (facts.vvar.is_some(), "a [vvar] mapping"),
            Feature::VvarVclock => (
                facts.vvar_vclock.is_some(),
                "a [vvar_vclock] mapping (the generic vDSO datastore, newer than 6.12)",
            ),
        };
        if !ok {
            return Some(format!("needs {what}"));
        }
    }
    None
}

/// Checks a pinned `expect` against the model; `Err` explains the disagreement.
///
/// A pin states what the case does when Yama does not interfere: unless the case declares
/// `requires.yama_scope`, the pin is checked against the model with Yama taken as absent
/// (Debian's default scope 0 behaves the same). A kernel whose Yama restricts the caller
/// (an upstream build defaults to scope 1) is still compared with the model under its real
/// scope when the case runs; only the pin, which is about something else, ignores it.
/// `yama/` cases declare their scope and pin what Yama does at it.
pub fn check_pin(plan: &Plan, facts: &Facts, pred: &Prediction) -> Result<(), String> {
    if plan.requires.yama_scope.is_none() && facts.yama_scope.is_some() {
        let without = Facts {
            yama_scope: None,
            ..facts.clone()
        };
        return check_pin_against(plan, &model::predict(plan, &without));
    }
    check_pin_against(plan, pred)
}

fn check_pin_against(plan: &Plan, pred: &Prediction) -> Result<(), String> {
    let Some(e) = &plan.expect else { return Ok(()) };
    let matches = match (e.result, pred.result) {
        (Expected::Count(n), Ok(m)) => n == m,
        (Expected::Errno(a), Err(b)) => a == b,
        _ => false,
    };
    let step_ok = e.decided_by.as_deref().is_none_or(|d| d == pred.decided_by);
    if matches && step_ok {
        return Ok(());
    }
    let want = match e.result {
        Expected::Count(n) => n.to_string(),
        Expected::Errno(x) => crate::errno::name(x),
    };
    Err(format!(
        "the model predicts {pred} but the case pins {want}{} (why: {})",
        e.decided_by
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default(),
        e.why.trim()
    ))
}

/// Contents of source bytes `[addr, addr+len)` on `side`, from the initial layout. Bytes of a
/// special mapping (`mappings`, the vdso) are external: the model never knows them, so they
/// are read here from the harness's own mapping, which every target and caller shares
/// (forks of the harness; the vdso text is the same kernel image page in every process).
///
/// Bytes of a live mapping (`[vvar]`, `[vvar_vclock]`: clock data the kernel rewrites at every
/// tick) are `None`, not checked: only the count and the bytes around the copy are. (Comparing
/// the bytes that were equal in the harness's own snapshots before and after the call was
/// tried and is racy: on a HZ=1000 kernel a byte can change and change back in between.)
fn source_bytes(
    plan: &Plan,
    mappings: &[Region],
    side: Side,
    addr: u64,
    len: u64,
    out: &mut Vec<Option<u8>>,
) {
    let regions: Vec<&Region> = if plan.target_shares_caller_mm() {
        plan.target_regions
            .iter()
            .chain(&plan.caller_regions)
            .collect()
    } else {
        plan.regions(side).iter().collect()
    };
    // Pages a stack expansion added read as zero (the windows are `fill: untouched`).
    let regions: Vec<&Region> = regions
        .into_iter()
        .chain(plan.stack_windows.iter())
        .collect();
    let mut a = addr;
    while a < addr + len {
        if let Some(m) = mappings.iter().find(|r| a >= r.start && a < r.end()) {
            let stop = (addr + len).min(m.end());
            if matches!(m.kind, RegionKind::Vvar | RegionKind::VvarVclock) {
                out.extend(std::iter::repeat_n(None, (stop - a) as usize));
            } else {
                match crate::sys::own_memory(a, stop - a) {
                    Some(bytes) => out.extend(bytes.into_iter().map(Some)),
                    None => out.extend(std::iter::repeat_n(Some(0xEE), (stop - a) as usize)),
                }
            }
            a = stop;
            continue;
        }
        // The iovec arrays' pages are caller memory too (readable and writable): a local
        // iovec may point into them, and so may a remote one when the target shares the
        // caller's mm. Their bytes are the encoded array at its address, zero before it.
        let array = (side == Side::Caller || plan.target_shares_caller_mm())
            .then(|| {
                plan.arrays
                    .iter()
                    .find(|m| a >= m.map_start && a < m.map_start + m.map_len)
            })
            .flatten();
        if let Some(img) = array {
            let stop = (addr + len).min(img.map_start + img.map_len);
            out.extend((a..stop).map(|x| {
                let byte = x
                    .checked_sub(img.addr)
                    .and_then(|o| img.bytes.get(o as usize).copied());
                Some(byte.unwrap_or(0))
            }));
            a = stop;
            continue;
        }
        match regions.iter().find(|r| a >= r.start && a < r.end()) {
            Some(r) => {
                let stop = (addr + len).min(r.end());
                out.extend((a..stop).map(|x| Some(model::byte_of(r, x - r.start))));
                a = stop;
            }
            None => {
                // The model never copies from unmapped memory; mark it so a bug shows up.
                out.push(Some(0xEE));
                a += 1;
            }
        }
    }
}

/// Subtracts the covered intervals from `[a, b)`; returns the uncovered pieces and records
/// `[a, b)` as covered. `covered` stays sorted, disjoint and merged, so each call costs a
/// binary search plus the intervals it touches (a case may have 4,096 copies).
fn uncovered(covered: &mut Vec<(u64, u64)>, a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut pieces = Vec::new();
    // The first interval that ends at or after `a` (touching intervals merge).
    let first = covered.partition_point(|&(_, e)| e < a);
    let mut last = first;
    let mut cur = a;
    let (mut lo, mut hi) = (a, b);
    while last < covered.len() && covered[last].0 <= b {
        let (s, e) = covered[last];
        if s > cur && cur < b {
            pieces.push((cur, s.min(b)));
        }
        cur = cur.max(e);
        lo = lo.min(s);
        hi = hi.max(e);
        last += 1;
    }
    if cur < b {
        pieces.push((cur, b));
    }
    covered.splice(first..last, std::iter::once((lo, hi)));
    pieces
}

/// The model's final contents of a region: the initial bytes with every copy applied in
/// order (computed backwards so that bytes overwritten later are never materialised), and
/// which bytes are checked (all but those copied from a live mapping, see [`source_bytes`]).
pub fn expected_memory(plan: &Plan, pred: &Prediction, region: &Region) -> (Vec<u8>, Vec<bool>) {
    let mut mem = crate::pattern::initial(region);
    let mut checked = vec![true; mem.len()];
    let write = plan.call.syscall == Syscall::Writev;
    let dst_side = if write { Side::Target } else { Side::Caller };
    // With a self/thread/clone_vm target both sides are one address space: an address on
    // either side can land in any region.
    let reachable = region.side == dst_side || plan.target_shares_caller_mm();
    if !reachable || pred.result.is_err() {
        return (mem, checked);
    }
    let (rs, re) = (region.start, region.start + region.backed_len());
    let mut covered = Vec::new();
    for c in pred.copies.iter().rev() {
        let (dst, src) = if write {
            (c.remote, c.local)
        } else {
            (c.local, c.remote)
        };
        let (a, b) = (dst.max(rs), (dst + c.len).min(re));
        if a >= b {
            continue;
        }
        for (pa, pb) in uncovered(&mut covered, a, b) {
            let mut bytes = Vec::with_capacity((pb - pa) as usize);
            let src_side = if write { Side::Caller } else { Side::Target };
            source_bytes(
                plan,
                &pred.mappings,
                src_side,
                src + (pa - dst),
                pb - pa,
                &mut bytes,
            );
            let at = (pa - rs) as usize;
            for (k, b) in bytes.into_iter().enumerate() {
                mem[at + k] = b.unwrap_or(0);
                checked[at + k] = b.is_some();
            }
        }
    }
    (mem, checked)
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    first_diff_masked(a, b, None)
}

/// The first differing byte and how many differ, ignoring bytes `checked` marks false.
fn first_diff_masked(a: &[u8], b: &[u8], checked: Option<&[bool]>) -> Option<(usize, usize)> {
    // Equal bytes differ nowhere, masked or not: one memcmp for the common case.
    if a == b {
        return None;
    }
    let is_checked = |i: usize| checked.is_none_or(|c| c.get(i).copied().unwrap_or(true));
    let differs = |(i, (x, y)): (usize, (&u8, &u8))| x != y && is_checked(i);
    let first = a.iter().zip(b).enumerate().position(differs)?;
    let count = a.iter().zip(b).enumerate().filter(|&p| differs(p)).count();
    Some((first, count))
}

/// Compares the kernel's result and bytes with the model. `Err` describes the first
/// difference.
pub fn compare(plan: &Plan, pred: &Prediction, obs: &Observed) -> Result<(), String> {
    if obs.result != pred.result {
        return Err(format!(
            "result differs: kernel {}, model {pred}",
            result_string(obs.result)
        ));
    }
    let all: Vec<&Region> = plan
        .target_regions
        .iter()
        .chain(&plan.caller_regions)
        .collect();
    for d in &obs.dumps {
        let Some(region) = plan.region(d.side, &d.name) else {
            continue;
        };
        let (want, checked) = expected_memory(plan, pred, region);
        if d.memory.len() != want.len() {
            return Err(format!(
                "{} region {}: got {} bytes back, expected {}",
                side_name(d.side),
                d.name,
                d.memory.len(),
                want.len()
            ));
        }
        if let Some((at, count)) = first_diff_masked(&d.memory, &want, Some(&checked)) {
            return Err(describe_diff(d, "memory", at, count, &want, &all));
        }
        if let Some(file) = &d.file {
            let want_file = expected_file(region, &want);
            if let Some((at, count)) = first_diff(file, &want_file) {
                return Err(describe_diff(d, "file", at, count, &want_file, &all));
            }
            if file.len() != want_file.len() {
                return Err(format!(
                    "{} region {}: file is {} bytes, expected {}",
                    side_name(d.side),
                    d.name,
                    file.len(),
                    want_file.len()
                ));
            }
        }
    }
    Ok(())
}

/// A MAP_SHARED mapping writes through to the file; a MAP_PRIVATE one never does.
fn expected_file(region: &Region, memory: &[u8]) -> Vec<u8> {
    let size = region.file_size.unwrap_or(0) as usize;
    if region.is_shared_file() {
        let mut f = crate::pattern::initial_file(region);
        let n = size.min(memory.len());
        f[..n].copy_from_slice(&memory[..n]);
        f
    } else {
        crate::pattern::initial_file(region)
    }
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Target => "target",
        Side::Caller => "caller",
    }
}

fn describe_diff(
    d: &Dump,
    what: &str,
    at: usize,
    count: usize,
    want: &[u8],
    all: &[&Region],
) -> String {
    let got = if what == "file" {
        d.file.as_deref().unwrap_or(&[])
    } else {
        &d.memory
    };
    let looks = crate::pattern::describe(got, at, all)
        .map(|s| format!(" (looks like {s})"))
        .unwrap_or_default();
    let should = crate::pattern::describe(want, at, all)
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    format!(
        "{} region {} {what} byte {at}: kernel left {:#04x}{looks}, model expects {:#04x}{should}; {}",
        side_name(d.side),
        d.name,
        got[at],
        want[at],
        crate::words::count_usize(count, "byte differs", "bytes differ"),
    )
}

pub fn result_string(r: Result<u64, i32>) -> String {
    match r {
        Ok(n) => n.to_string(),
        Err(e) => crate::errno::name(e),
    }
}

#[cfg(test)]
mod tests {
    use super::uncovered;

    /// `uncovered` against a bitmap over small intervals, in pseudo-random orders.
    #[test]
    fn uncovered_matches_a_bitmap() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..500 {
            let mut covered = Vec::new();
            let mut bits = [false; 64];
            for _ in 0..(1 + next(12)) {
                let a = next(60);
                let b = a + 1 + next(64 - a);
                let got = uncovered(&mut covered, a, b);
                let mut want = Vec::new();
                let mut i = a;
                while i < b {
                    if bits[i as usize] {
                        i += 1;
                        continue;
                    }
                    let s = i;
                    while i < b && !bits[i as usize] {
                        i += 1;
                    }
                    want.push((s, i));
                }
                assert_eq!(got, want, "[{a}, {b}) after {covered:?}");
                (a..b).for_each(|k| bits[k as usize] = true);
                let mut expect = Vec::new();
                let mut k = 0;
                while k < 64 {
                    if !bits[k] {
                        k += 1;
                        continue;
                    }
                    let s = k;
                    while k < 64 && bits[k] {
                        k += 1;
                    }
                    expect.push((s as u64, k as u64));
                }
                // Touching intervals merge, so the list equals the bitmap's runs.
                assert_eq!(covered, expect);
            }
        }
    }
}
