//! Concurrency: the outcomes the kernel allows when a target thread changes the target while
//! a call is in flight (docs/SEMANTICS.md, "Concurrency"). Pure, like [`crate::model`], and
//! built on it: every allowed outcome is the model's prediction for a layout the transfer can
//! have seen.
//!
//! Why that set (mm/process_vm_access.c, mm/gup.c, 5.10 to 7.3): `process_vm_rw_single_vec`
//! pins the remote pages in batches of up to `PVM_MAX_USER_PAGES` (1024) with
//! `pin_user_pages_remote` under `mmap_read_lock`, then copies from the pinned pages with the
//! lock released. munmap and mprotect take `mmap_write_lock`, so each lands between two pins:
//! between batches, or between two pages of a batch when GUP had to drop the lock to fault a
//! page in (`__get_user_pages_locked` retries the rest one page at a time with FOLL_TRIED).
//! Pages are pinned in ascending order, so the transfer sees the pages of the changed region
//! below some page boundary as they were and the rest as they became: for a region of `n`
//! pages, one of the `n + 1` layouts "first `k` pages old, the rest new". Pinned pages stay
//! valid after a munmap, so every byte moved is an old byte. A write by the target is not
//! serialised with anything: the count is unaffected and each byte moved is the old or the
//! new value (copies are plain memcpy, no atomicity across bytes). An exit: `mm_access` takes
//! a reference on the mm (`get_task_mm`), which keeps every mapping alive to the end of the
//! call, so the call either found no mm (ESRCH: after `exit_mm`, or the pid already gone) or
//! completes as if nothing happened.

use crate::case::{Prot, RegionKind, TargetKind};
use crate::expr::PAGE;
use crate::facts::Facts;
use crate::model::{predict, Prediction};
use crate::plan::Plan;

/// What the racing target thread does to one target region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Racer {
    Munmap {
        region: String,
    },
    Mprotect {
        region: String,
        prot: Prot,
    },
    /// The target writes new bytes over the region (it must be writable).
    Write {
        region: String,
    },
    /// The target process exits.
    Exit,
}

/// The allowed outcomes: the model's prediction for each layout the call can have seen
/// (deduplicated by result), and whether each byte moved may be either the old or the new
/// value (a racing write) rather than the old one only.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub outcomes: Vec<Prediction>,
    pub old_or_new_bytes: bool,
}

impl Allowed {
    pub fn allows(&self, r: Result<u64, i32>) -> bool {
        self.outcomes.iter().any(|p| p.result == r)
    }
}

/// The plan with the first `k` pages of `region` as they are and the rest replaced by
/// `after` (a hole or another protection).
fn hybrid(plan: &Plan, region: &str, k: u64, after: &dyn Fn(&mut crate::plan::Region)) -> Plan {
    let mut p = plan.clone();
    let Some(i) = p.target_regions.iter().position(|r| r.name == region) else {
        return p;
    };
    let r = p.target_regions[i].clone();
    let mut new = r.clone();
    new.name = format!("{region}_after");
    new.start = r.start + k * PAGE;
    new.len = r.len - k * PAGE;
    after(&mut new);
    let mut old = r;
    old.len = k * PAGE;
    p.target_regions.remove(i);
    if new.len > 0 {
        p.target_regions.insert(i, new);
    }
    if old.len > 0 {
        p.target_regions.insert(i, old);
    }
    p
}

/// The outcomes the kernel may produce for `plan`'s call while `racer` runs.
pub fn allowed(plan: &Plan, facts: &Facts, racer: &Racer) -> Allowed {
    let mut outcomes: Vec<Prediction> = Vec::new();
    let mut add = |p: Prediction| {
        if !outcomes.iter().any(|q| q.result == p.result) {
            outcomes.push(p);
        }
    };
    let pages = |name: &str| {
        plan.target_regions
            .iter()
            .find(|r| r.name == name)
            .map_or(0, |r| r.len / PAGE)
    };
    match racer {
        Racer::Munmap { region } => {
            for k in 0..=pages(region) {
                let p = hybrid(plan, region, k, &|r| r.kind = RegionKind::Hole);
                add(predict(&p, facts));
            }
        }
        Racer::Mprotect { region, prot } => {
            for k in 0..=pages(region) {
                let p = hybrid(plan, region, k, &|r| r.prot = *prot);
                add(predict(&p, facts));
            }
        }
        Racer::Write { .. } => add(predict(plan, facts)),
        Racer::Exit => {
            add(predict(plan, facts));
            let mut gone = plan.clone();
            gone.target_kind = TargetKind::Reaped;
            add(predict(&gone, facts));
        }
    }
    Allowed {
        outcomes,
        old_or_new_bytes: matches!(racer, Racer::Write { .. }),
    }
}
