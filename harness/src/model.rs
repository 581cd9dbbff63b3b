//! The reference model: a pure function from a validated case and the system's facts to the
//! outcome the kernel should produce. No syscalls, no raw pointers: addresses here are numbers
//! describing the declared layout.
//!
//! It follows mm/process_vm_access.c (`process_vm_rw` → `process_vm_rw_core` →
//! `process_vm_rw_single_vec` → `process_vm_rw_pages`) and the helpers it calls; each rule is
//! described, with its source, in docs/SEMANTICS.md under the same `decided_by` name.

use crate::caps::{self, CapSet, Credentials};
use crate::case::{Entry, Pkey, Prot, Ptracer, RegionKind, Syscall, TargetKind, TargetParent};
use crate::expr::{IOV_MAX, MAX_RW_COUNT, PAGE};
use crate::facts::Facts;
use crate::plan::{ArrayImage, Creds, Plan, Region};
use std::fmt;

/// Every step that can decide an outcome, in the kernel's order.
pub const STEPS: &[&str] = &[
    "flags",
    "local_count",
    "local_array_fault",
    "local_negative_len",
    "local_access_ok",
    "local_zero_shortcut",
    "remote_count",
    "remote_array_fault",
    "remote_negative_len",
    "remote_zero_shortcut",
    "pid_lookup",
    "no_mm",
    "perm_ids",
    "perm_dumpable",
    "perm_caps",
    "perm_yama",
    "remote_fault",
    "local_fault",
    "complete",
];

/// Behaviour that differs between kernel versions (see docs/SEMANTICS.md, "Differences between
/// kernel versions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `__import_iovec` imports a single segment as ITER_UBUF: `import_ubuf` clamps the length
    /// to MAX_RW_COUNT *before* `access_ok`.
    pub ubuf_single_segment: bool,
    /// `copy_iovec_from_user` reads element by element and stops at the first negative length
    /// (older kernels `copy_from_user` the whole array first, so a fault anywhere wins).
    pub native_iovec_elementwise: bool,
    /// `__get_user_pages` looks the VMA up with `find_extend_vma`, which expands a
    /// `VM_GROWSDOWN` VMA down to the address (mm/mmap.c `expand_downwards`). Later kernels
    /// use `vma_lookup` / `gup_vma_lookup` and never grow a stack from GUP.
    pub gup_expands_stack: bool,
    /// The generic vDSO datastore's `[vvar]` is VM_IO (7.2.13 lib/vdso/datastore.c
    /// `vdso_install_vvar_mapping`: `VM_IO | VM_DONTDUMP | VM_MIXEDMAP`), so GUP refuses it.
    /// 7.3 (read in 7.3-rc7) drops VM_IO ("vdso/datastore: Allow prefaulting by mlockall()")
    /// and its `vvar_fault` refuses remote faults, so a pin takes only pages the target
    /// already maps (see `View::reachable_end`). `[vvar_vclock]` and the pre-6.13 x86
    /// `[vvar]` keep VM_IO|VM_PFNMAP.
    pub vvar_io: bool,
    /// `io_uring_mmap` puts the ring and SQE pages in with `vm_insert_pages` (a
    /// VM_MIXEDMAP VMA of ordinary pages, which GUP pins) rather than `remap_pfn_range`
    /// (VM_IO|VM_PFNMAP, which `check_vma_flags` refuses): "io_uring: get rid of
    /// remap_pfn_range() for mapping rings/sqes", v6.10 (6.12.107 io_uring/memmap.c
    /// `io_uring_mmap_pages`), backported to 6.1.132 (Debian's changelog; 6.1.176
    /// io_uring/io_uring.c). 5.10.223 still uses `remap_pfn_range`.
    pub io_uring_pages: bool,
    /// Where `struct io_rings` keeps the masks and sizes setup writes.
    pub io_rings: crate::pattern::IoRingsLayout,
}

impl Rules {
    pub fn for_version(v: (u32, u32, u32)) -> Rules {
        let at_least = |maj: u32, min: u32| (v.0, v.1) >= (maj, min);
        // "mm: always expand the stack with the mmap write lock held" (8d7071af8907) and
        // "gup: add warning if some caller would seem to want stack expansion" (a425ac5365f6),
        // v6.5-rc1; backported to 6.1.37, 6.3.11 and 6.4.1. 6.2.y had ended (6.2.16) before
        // them. 5.10.y (5.10.223) still calls find_extend_vma.
        let gup_expands_stack = match (v.0, v.1) {
            (6, 1) => v.2 < 37,
            (6, 3) => v.2 < 11,
            (6, 4) => v.2 < 1,
            _ => !at_least(6, 5),
        };
        Rules {
            ubuf_single_segment: at_least(6, 4),
            native_iovec_elementwise: at_least(6, 4),
            gup_expands_stack,
            vvar_io: !at_least(7, 3),
            io_uring_pages: at_least(6, 10) || ((v.0, v.1) == (6, 1) && v.2 >= 132),
            // 6.1.176 and 5.10.223 give `head` and `tail` of `struct io_uring` a cache line
            // each (____cacheline_aligned_in_smp); 6.12.107 and 7.2.13 pack them. The change
            // lies between 6.1 and 6.12 and was not read: 6.2 to 6.11 are predicted packed.
            io_rings: if at_least(6, 2) {
                crate::pattern::IoRingsLayout::Packed
            } else {
                crate::pattern::IoRingsLayout::Padded
            },
        }
    }
}

/// `[vvar]` pages present in every target when a case names `vvar`: the time page
/// (`VDSO_TIME_PAGE_OFFSET` = 0, include/vdso/datapage.h), which the harness reads before it
/// forks.
pub const VVAR_PRESENT_PAGES: u64 = 1;

/// One contiguous piece of the transfer: `len` bytes between `local` (caller) and `remote`
/// (target) addresses. Direction follows the syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub local: u64,
    pub remote: u64,
    pub len: u64,
}

/// Names of the rules a step of the trace can name besides the deciding [`STEPS`]: stages the
/// call passed without being decided there. docs/SEMANTICS.md describes each under its name.
pub const PASS_RULES: &[&str] = &[
    "local_import",
    "remote_import",
    "same_mm",
    "remote_pin",
    "transfer",
];

/// One step of the model's walk through the kernel: the rule (a [`STEPS`] or [`PASS_RULES`]
/// name, as docs/SEMANTICS.md names it) and what it found, with the source that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub rule: &'static str,
    pub text: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.text)
    }
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// Bytes moved, or the errno.
    pub result: Result<u64, i32>,
    /// The step that decided the result (one of [`STEPS`]).
    pub decided_by: &'static str,
    /// Where or why it was decided: `at data+4096` for a fault, a phrase otherwise.
    pub detail: Option<String>,
    /// Every step taken, each naming the rule that let the call through it, for
    /// `pvmtest explain`.
    pub trace: Vec<Step>,
    /// What moved, in order; later copies overwrite earlier ones.
    pub copies: Vec<Copy>,
    /// The special mappings (vdso, vvar) at the addresses the prediction used: a copy from
    /// the vdso has external source bytes, which the checker reads (the model never does).
    pub mappings: Vec<Region>,
    /// The `struct io_rings` layout the prediction used for io_uring ring regions.
    pub io_rings: crate::pattern::IoRingsLayout,
}

impl Prediction {
    pub fn result_string(&self) -> String {
        match self.result {
            Ok(n) => n.to_string(),
            Err(e) => crate::errno::name(e),
        }
    }
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.result_string(), self.decided_by)?;
        match &self.detail {
            Some(d) if d.starts_with("at ") => write!(f, " {d}")?,
            Some(d) => write!(f, ": {d}")?,
            None => {}
        }
        write!(f, ")")
    }
}

/// How the kernel touches a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `pin_user_pages_remote` without FOLL_WRITE: `check_vma_flags` wants VM_READ.
    PinRead,
    /// `pin_user_pages_remote` with FOLL_WRITE: wants VM_WRITE (no FOLL_FORCE).
    PinWrite,
    /// `copy_from_user` on the caller: the x86 fault handler allows reads of any accessible
    /// VMA (`vma_is_accessible`: read, write or exec), unless protection keys make exec-only
    /// memory unreadable.
    UserRead,
    /// `copy_to_user` on the caller: needs VM_WRITE.
    UserWrite,
}

/// Whether `access` may touch a (backed) byte of `r` under these rules.
fn region_allows(r: &Region, access: Access, pku: bool, rules: &Rules) -> bool {
    let vvar_io = rules.vvar_io;
    // check_vma_flags: `if (vma_is_secretmem(vma)) return -EFAULT;` (5.14+). The owner's
    // own user copies go through its page tables and work.
    if r.kind == RegionKind::Secretmem && matches!(access, Access::PinRead | Access::PinWrite) {
        return false;
    }
    // check_vma_flags: `if (vm_flags & (VM_IO | VM_PFNMAP)) return -EFAULT;` first of all. The
    // vDSO data mappings are VM_IO|VM_PFNMAP (x86 `map_vdso`, 5.10 to 6.12, and
    // `[vvar_vclock]` later) or VM_IO|VM_MIXEDMAP (lib/vdso/datastore.c
    // `vdso_install_vvar_mapping`): never pinnable.
    // io_uring mappings are VM_IO|VM_PFNMAP where `io_uring_mmap` uses `remap_pfn_range`
    // (5.10.223; `remap_pfn_range_notrack` sets them), pinnable VM_MIXEDMAP otherwise.
    let io = match r.kind {
        RegionKind::Vvar => vvar_io,
        RegionKind::VvarVclock => true,
        // xol_add_vma: VM_EXEC|VM_MAYEXEC|VM_DONTCOPY|VM_IO (5.10 to 7.2).
        RegionKind::Uprobes => true,
        k if k.is_io_uring() => !rules.io_uring_pages,
        _ => false,
    };
    if io && matches!(access, Access::PinRead | Access::PinWrite) {
        return false;
    }
    // A write fault on a userfaultfd-write-protected PTE goes to handle_userfault
    // (do_wp_page, `userfaultfd_pte_wp`), which returns VM_FAULT_SIGBUS under
    // UFFD_FEATURE_SIGBUS: GUP's FOLL_WRITE pin fails. Only the target's pins reach it.
    if r.kind == RegionKind::UffdWp && access == Access::PinWrite {
        return false;
    }
    // A protection key binds the user copies of the process that allocated it, which is the
    // caller for every region a user copy touches (its own, or a same-mm target's it built):
    // the CPU checks PKRU on each user access the kernel makes for it (a fault, then
    // do_user_addr_fault → bad_area_access_error → -EFAULT). A pin ignores keys:
    // pin_user_pages_remote passes FOLL_REMOTE, so check_vma_flags and handle_mm_fault call
    // arch_vma_access_permitted with foreign = true, which allows (the target's PKRU is
    // never consulted, and neither is the caller's for its own mm).
    if let Some(k) = r.pkey {
        let denied = matches!(
            (k, access),
            (Pkey::DenyAccess, Access::UserRead | Access::UserWrite)
                | (Pkey::DenyWrite, Access::UserWrite)
        );
        if denied {
            return false;
        }
    }
    prot_allows(r.prot, access, pku)
}

fn prot_allows(prot: Prot, access: Access, pku: bool) -> bool {
    let (r, w, x) = match prot {
        Prot::Rw => (true, true, false),
        Prot::Ro => (true, false, false),
        Prot::None => (false, false, false),
        Prot::Wo => (false, true, false),
        Prot::Xo => (false, false, true),
        Prot::Rwx => (true, true, true),
        Prot::Rx => (true, false, true),
    };
    match access {
        Access::PinRead => r,
        Access::PinWrite | Access::UserWrite => w,
        Access::UserRead => r || w || (x && !pku),
    }
}

/// A process's address space as the plan declares it.
struct View<'a> {
    regions: Vec<&'a Region>,
    arrays: &'a [ArrayImage],
    pku: bool,
    rules: Rules,
}

enum Area<'a> {
    Region(&'a Region),
    Array(&'a ArrayImage),
}

impl<'a> View<'a> {
    fn area(&self, addr: u64) -> Option<Area<'a>> {
        if let Some(r) = self
            .regions
            .iter()
            .find(|r| !r.is_hole() && addr >= r.start && addr < r.end())
        {
            return Some(Area::Region(r));
        }
        self.arrays
            .iter()
            .find(|a| addr >= a.map_start && addr < a.map_start + a.map_len)
            .map(Area::Array)
    }

    /// Where the accessible part of `r` ends. A pin of the 7.3 `[vvar]` (no VM_IO) can only
    /// take a page the target already has a PTE for: lib/vdso/datastore.c `vvar_fault` returns
    /// VM_FAULT_SIGBUS for FAULT_FLAG_REMOTE, which `faultin_page` sets for FOLL_REMOTE
    /// (`pin_user_pages_remote`). The harness reads the time page (page 0) before it forks
    /// (exec `execute`) and `copy_page_range` copies VM_MIXEDMAP PTEs (`vma_needs_copy`,
    /// VM_COPY_ON_FORK); the timens page (1) and the unused arch page (3) are never touched
    /// outside a time namespace; cases may not start in the rng page (2) (plan validation).
    fn reachable_end(&self, r: &Region, access: Access) -> u64 {
        let end = r.start + r.backed_len();
        if r.kind == RegionKind::Vvar
            && !self.rules.vvar_io
            && matches!(access, Access::PinRead | Access::PinWrite)
        {
            return end.min(r.start + VVAR_PRESENT_PAGES * PAGE);
        }
        end
    }

    /// Bytes accessible from `addr`, at most `max`. Areas are page-aligned, so the answer is
    /// page-granular for pinning and byte-exact for user copies alike.
    fn run(&self, addr: u64, max: u64, access: Access) -> u64 {
        let mut cur = addr;
        loop {
            let end = match self.area(cur) {
                Some(Area::Region(r))
                    if region_allows(r, access, self.pku, &self.rules)
                        && cur < self.reachable_end(r, access) =>
                {
                    self.reachable_end(r, access)
                }
                Some(Area::Array(a)) => a.map_start + a.map_len,
                _ => return (cur - addr).min(max),
            };
            if end - addr >= max {
                return max;
            }
            cur = end;
        }
    }

    /// The kernel's `copy_from_user` of `len` bytes of initial caller memory, or `None` on a fault.
    fn read(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
        if self.run(addr, len, Access::UserRead) < len {
            return None;
        }
        // One area lookup per area crossed, not per byte: arrays of 1,000+ iovecs are read
        // here on every fuzz input.
        let mut out = Vec::with_capacity(len as usize);
        let mut a = addr;
        while a < addr + len {
            match self.area(a)? {
                Area::Region(r) => {
                    let stop = (addr + len).min(r.end());
                    out.extend((a..stop).map(|x| byte_in(r, x - r.start, self.rules.io_rings)));
                    a = stop;
                }
                Area::Array(img) => {
                    let stop = (addr + len).min(img.map_start + img.map_len);
                    out.extend((a..stop).map(|x| {
                        x.checked_sub(img.addr)
                            .and_then(|o| img.bytes.get(o as usize).copied())
                            .unwrap_or(0)
                    }));
                    a = stop;
                }
            }
        }
        Some(out)
    }
}

/// The initial byte at `off` of a region (see [`crate::pattern::initial`]).
pub fn byte_of(r: &Region, off: u64) -> u8 {
    debug_assert!(
        !r.kind.is_io_uring(),
        "an io_uring region's contents depend on the kernel: byte_in"
    );
    byte_in(r, off, crate::pattern::IoRingsLayout::Packed)
}

/// [`byte_of`] for any region; `io_rings` lays out io_uring ring regions.
pub fn byte_in(r: &Region, off: u64, io_rings: crate::pattern::IoRingsLayout) -> u8 {
    if r.kind == RegionKind::AioRing {
        return crate::pattern::aio_ring_byte(r.len, off);
    }
    if let Some(b) = crate::pattern::io_uring_byte(r.kind, io_rings, off) {
        return b;
    }
    let in_file = r.file_size.is_none_or(|fs| off < fs);
    if r.fill == crate::case::Fill::Pattern && in_file {
        crate::pattern::byte(r.tag, off)
    } else {
        0
    }
}

/// `access_ok(ptr, size)` on x86-64: the range must end at or below TASK_SIZE_MAX without
/// wrapping (arch/x86/include/asm/uaccess_64.h `__access_ok`; asm-generic/access_ok.h before).
fn access_ok(facts: &Facts, ptr: u64, size: u64) -> bool {
    ptr.checked_add(size)
        .is_some_and(|end| end <= facts.task_size_max)
}

type Fail = (i32, &'static str, Option<String>);

struct Model<'a> {
    plan: &'a Plan,
    facts: &'a Facts,
    rules: Rules,
    caller: View<'a>,
    target: View<'a>,
    trace: Vec<Step>,
}

impl<'a> Model<'a> {
    fn step(&mut self, rule: &'static str, text: impl Into<String>) {
        self.trace.push(Step {
            rule,
            text: text.into(),
        });
    }

    /// Names an address for humans: `region+off`, or a named bad address, or hex.
    fn label(&self, addr: u64) -> String {
        for r in self
            .plan
            .target_regions
            .iter()
            .chain(&self.plan.caller_regions)
            .chain(&self.plan.special_regions)
        {
            if addr >= r.start && addr < r.end() {
                return format!("{}+{}", r.name, addr - r.start);
            }
        }
        for w in &self.plan.stack_windows {
            if addr >= w.start && addr < w.end() {
                return format!("{}-{}", w.name, w.end() - addr);
            }
        }
        for &(name, at) in &self.plan.landmarks {
            if addr >= at && addr - at < PAGE {
                return format!("{name}+{}", addr - at);
            }
        }
        for a in &self.plan.arrays {
            if addr >= a.addr && addr <= a.map_start + a.map_len + PAGE {
                return format!("{}+{}", a.name, addr - a.addr);
            }
        }
        match addr {
            crate::plan::NULL => "null".into(),
            crate::plan::KERNEL => "kernel".into(),
            crate::plan::NON_CANONICAL => "non_canonical".into(),
            a if a >= crate::plan::VSYSCALL && a - crate::plan::VSYSCALL < PAGE => {
                format!("vsyscall+{}", a - crate::plan::VSYSCALL)
            }
            _ => format!("{addr:#x}"),
        }
    }

    /// `iovec_from_user` / `copy_iovec_from_user` / `copy_compat_iovec_from_user`: the
    /// elements as (base, len), or the failure. `elementwise` reads element by element.
    fn read_array(
        &self,
        ptr: u64,
        n: u64,
        side: &str,
        elementwise: bool,
    ) -> Result<Vec<(u64, u64)>, Fail> {
        let compat = self.plan.call.entry == Entry::Compat;
        let esz: u64 = if compat { 8 } else { 16 };
        let (fault, negative) = if side == "local" {
            ("local_array_fault", "local_negative_len")
        } else {
            ("remote_array_fault", "remote_negative_len")
        };
        if !access_ok(self.facts, ptr, n * esz) {
            return Err((
                libc::EFAULT,
                fault,
                Some(format!("{side} array {} fails access_ok", self.label(ptr))),
            ));
        }
        let decode = |b: &[u8]| -> (u64, i64) {
            if compat {
                let base = u32::from_le_bytes(b[0..4].try_into().unwrap()) as u64;
                let len = i32::from_le_bytes(b[4..8].try_into().unwrap()) as i64;
                (base, len)
            } else {
                let base = u64::from_le_bytes(b[0..8].try_into().unwrap());
                let len = i64::from_le_bytes(b[8..16].try_into().unwrap());
                (base, len)
            }
        };
        let mut out = Vec::with_capacity(n as usize);
        if elementwise {
            for i in 0..n {
                let at = ptr + i * esz;
                let b = self.caller.read(at, esz).ok_or_else(|| {
                    (
                        libc::EFAULT,
                        fault,
                        Some(format!("{side} array element {i} at {}", self.label(at))),
                    )
                })?;
                let (base, len) = decode(&b);
                if len < 0 {
                    return Err((libc::EINVAL, negative, Some(format!("{side} element {i}"))));
                }
                out.push((base, len as u64));
            }
        } else {
            let b = self.caller.read(ptr, n * esz).ok_or_else(|| {
                (
                    libc::EFAULT,
                    fault,
                    Some(format!("{side} array at {}", self.label(ptr))),
                )
            })?;
            for (i, chunk) in b.chunks(esz as usize).enumerate() {
                let (base, len) = decode(chunk);
                if len < 0 {
                    return Err((libc::EINVAL, negative, Some(format!("{side} element {i}"))));
                }
                out.push((base, len as u64));
            }
        }
        Ok(out)
    }

    /// `import_iovec`: the local segments after access_ok and the MAX_RW_COUNT clamp.
    fn import_local(&mut self) -> Result<Vec<(u64, u64)>, Fail> {
        let call = &self.plan.call;
        // import_iovec takes `unsigned nr_segs`: liovcnt is truncated to 32 bits.
        let n = call.liovcnt as u32 as u64;
        if n != call.liovcnt {
            self.step(
                "local_count",
                format!(
                    "liovcnt {} truncated to {n}: import_iovec takes `unsigned nr_segs` (lib/iov_iter.c)",
                    call.liovcnt
                ),
            );
        }
        if n == 0 {
            self.step(
                "local_import",
                "0 segments: import_iovec returns an empty iterator before reading the array",
            );
            return Ok(Vec::new());
        }
        let compat = call.entry == Entry::Compat;
        if n == 1 && self.rules.ubuf_single_segment {
            // __import_iovec_ubuf → import_ubuf: clamp, then access_ok.
            let v = self.read_array(call.lvec, 1, "local", true)?;
            let (base, len) = v[0];
            let len = len.min(MAX_RW_COUNT);
            if !access_ok(self.facts, base, len) {
                return Err((
                    libc::EFAULT,
                    "local_access_ok",
                    Some(format!("local[0] {}", self.label(base))),
                ));
            }
            self.step(
                "local_import",
                format!(
                    "1 segment, imported as ITER_UBUF (__import_iovec_ubuf → import_ubuf: {} after the MAX_RW_COUNT clamp, then access_ok passes)",
                    crate::words::count(len, "byte", "bytes")
                ),
            );
            return Ok(vec![(base, len)]);
        }
        if n > IOV_MAX {
            return Err((
                libc::EINVAL,
                "local_count",
                Some(format!("liovcnt {n} > IOV_MAX")),
            ));
        }
        let elementwise = compat || self.rules.native_iovec_elementwise;
        let v = self.read_array(call.lvec, n, "local", elementwise)?;
        let mut total = 0u64;
        let mut out = Vec::with_capacity(v.len());
        for (i, (base, len)) in v.into_iter().enumerate() {
            if !access_ok(self.facts, base, len) {
                return Err((
                    libc::EFAULT,
                    "local_access_ok",
                    Some(format!("local[{i}] {}", self.label(base))),
                ));
            }
            let len = len.min(MAX_RW_COUNT - total);
            total += len;
            out.push((base, len));
        }
        self.step(
            "local_import",
            format!(
                "{} (import_iovec: count ≤ IOV_MAX, array read{}, no negative length, every base passes access_ok; {} after the MAX_RW_COUNT clamp)",
                crate::words::count(n, "segment", "segments"),
                if elementwise { " element by element" } else { " whole" },
                crate::words::count(total, "byte", "bytes")
            ),
        );
        Ok(out)
    }

    fn import_remote(&mut self) -> Result<Vec<(u64, u64)>, Fail> {
        let call = &self.plan.call;
        // iovec_from_user takes `unsigned long nr_segs`: no truncation.
        let n = call.riovcnt;
        if n == 0 {
            self.step("remote_import", "0 segments: iovec_from_user is not called");
            return Ok(Vec::new());
        }
        if n > IOV_MAX {
            return Err((
                libc::EINVAL,
                "remote_count",
                Some(format!("riovcnt {n} > IOV_MAX")),
            ));
        }
        let elementwise = call.entry == Entry::Compat || self.rules.native_iovec_elementwise;
        let v = self.read_array(call.rvec, n, "remote", elementwise)?;
        self.step(
            "remote_import",
            format!(
                "{} (iovec_from_user: count ≤ IOV_MAX, array read{}, no negative length; remote bases get no access_ok and no clamp)",
                crate::words::count(n, "segment", "segments"),
                if elementwise { " element by element" } else { " whole" }
            ),
        );
        Ok(v)
    }

    /// `mm_access` and `__ptrace_may_access(PTRACE_MODE_ATTACH_REALCREDS)`.
    fn check_target(&mut self) -> Result<(), Fail> {
        let kind = self.plan.target_kind;
        // find_get_task_by_vpid → find_vpid looks the number up in the caller's own PID
        // namespace (task_active_pid_ns(current), kernel/pid.c). A caller that is pid 1 of a
        // new namespace sees itself, its threads and the processes it forked there, nothing
        // made outside it (exec refuses an outside pid that is 1 or 2).
        if self.plan.caller_pidns {
            let inside = match kind {
                TargetKind::SelfProcess | TargetKind::Thread => true,
                TargetKind::Child => self.plan.target_parent == TargetParent::Caller,
                _ => false,
            };
            if !inside {
                return Err((
                    libc::ESRCH,
                    "pid_lookup",
                    Some(format!(
                        "the {} target's pid was made outside the caller's PID namespace, so find_vpid finds no task there",
                        kind.name()
                    )),
                ));
            }
        }
        match kind {
            TargetKind::Pid0
            | TargetKind::PidMinus1
            | TargetKind::Reaped
            | TargetKind::UnusedPid => {
                return Err((
                    libc::ESRCH,
                    "pid_lookup",
                    Some(format!("{} has no task", kind.name())),
                ));
            }
            TargetKind::Zombie | TargetKind::Kthread | TargetKind::ZombieLeader => {
                self.found_pid(kind);
                return Err((
                    libc::ESRCH,
                    "no_mm",
                    Some(format!("{} has no mm", kind.name())),
                ));
            }
            TargetKind::SelfProcess | TargetKind::Thread | TargetKind::CloneVm => {
                self.found_task(kind);
                let who = match kind {
                    TargetKind::SelfProcess => "the target is the caller itself",
                    TargetKind::Thread => "the target is a thread of the caller",
                    _ => "the target is a clone(CLONE_VM) sibling",
                };
                self.step(
                    "same_mm",
                    format!(
                        "allowed: {who}, so it shares the caller's mm; mm_access calls ptrace_may_access only when mm != current->mm (kernel/fork.c), so no permission check runs"
                    ),
                );
                return Ok(());
            }
            TargetKind::Child | TargetKind::ZombieLeaderThread | TargetKind::PidnsChild => {
                self.found_task(kind);
            }
        }
        let caller = proc_creds(self.plan.caller_creds.as_ref(), self.facts);
        let target = proc_creds(self.plan.target_creds.as_ref(), self.facts);
        // ptrace_has_cap → ns_capable(ns, CAP_SYS_PTRACE) → cap_capable, asked of two
        // namespaces: the target's credentials' (`tcred->user_ns`, for the ids, the
        // capability subset and Yama) and its mm's (`mm->user_ns`, for dumpable). The mm's is
        // always the harness's: mm_alloc takes current_user_ns() at exec and dup_mm copies it
        // at fork (kernel/fork.c); unshare never changes it.
        let (caller_ns, target_ns) = user_namespaces(self.plan);
        let (ptrace_cap, cap_text) = ns_capable(caller_ns, &caller, target_ns, target.ids.euid);
        let (mm_cap, mm_text) = ns_capable(caller_ns, &caller, UserNs::Harness, target.ids.euid);
        let cap = cap_text.as_str();
        let in_ns = caller_ns != UserNs::Harness || target_ns != UserNs::Harness;
        let (c, t) = (caller.ids, target.ids);
        let ids_match = [t.uid, t.euid, t.suid].iter().all(|&u| u == c.uid)
            && [t.gid, t.egid, t.sgid].iter().all(|&g| g == c.gid);
        if !ids_match && !ptrace_cap {
            return Err((
                libc::EPERM,
                "perm_ids",
                Some(if in_ns {
                    format!("real ids differ from the target's and {cap}")
                } else {
                    "real ids differ from the target's and no CAP_SYS_PTRACE".into()
                }),
            ));
        }
        let ids = format!(
            "caller uid {} gid {}; target uids {}/{}/{} gids {}/{}/{}",
            c.uid, c.gid, t.uid, t.euid, t.suid, t.gid, t.egid, t.sgid
        );
        self.step(
            "perm_ids",
            if ids_match {
                format!(
                    "allowed: the caller's real uid and gid equal the target's real, effective and saved uids and gids (__ptrace_may_access, PTRACE_MODE_REALCREDS; {ids})"
                )
            } else {
                format!("allowed: the ids differ ({ids}), but {cap} overrides the mismatch")
            },
        );
        if !self.plan.target_dumpable && !mm_cap {
            return Err((
                libc::EPERM,
                "perm_dumpable",
                Some(if in_ns {
                    format!("target is not dumpable and, for its mm's user namespace, {mm_text}")
                } else {
                    "target is not dumpable".into()
                }),
            ));
        }
        self.step(
            "perm_dumpable",
            if self.plan.target_dumpable {
                "allowed: the target is dumpable (get_dumpable == SUID_DUMP_USER in __ptrace_may_access)".to_string()
            } else {
                format!("allowed: the target is not dumpable, but {mm_text} overrides it")
            },
        );
        // cap_ptrace_access_check: the subset rule holds only within one user namespace
        // (`cred->user_ns == child_cred->user_ns`); otherwise only ns_capable counts.
        let same_ns = caller_ns == target_ns;
        let subset = same_ns && target.permitted.is_subset_of(caller.permitted);
        if !subset && !ptrace_cap {
            return Err((
                libc::EPERM,
                "perm_caps",
                Some(if same_ns {
                    "target's permitted capabilities exceed the caller's".into()
                } else {
                    format!(
                        "caller and target credentials are in different user namespaces, so only CAP_SYS_PTRACE counts, and {cap}"
                    )
                }),
            ));
        }
        self.step(
            "perm_caps",
            if !same_ns {
                format!(
                    "allowed: caller and target credentials are in different user namespaces, and {cap} (cap_ptrace_access_check)"
                )
            } else if subset {
                format!(
                    "allowed: same user namespace and the target's permitted capabilities ({:#x}) are a subset of the caller's ({:#x}) (security/commoncap.c cap_ptrace_access_check)",
                    target.permitted.0, caller.permitted.0
                )
            } else {
                format!(
                    "allowed: the target's permitted capabilities ({:#x}) exceed the caller's ({:#x}), but {cap} overrides (cap_ptrace_access_check)",
                    target.permitted.0, caller.permitted.0
                )
            },
        );
        let yama = yama_check(self.facts.yama_scope, self.plan, ptrace_cap, cap);
        match yama {
            Ok(why) => {
                self.step("perm_yama", why);
                Ok(())
            }
            Err(why) => Err((libc::EPERM, "perm_yama", Some(why.into()))),
        }
    }

    /// `find_get_task_by_vpid` found the target's task.
    fn found_pid(&mut self, kind: TargetKind) {
        let ns = if self.plan.caller_pidns {
            ", made inside the caller's own PID namespace, where find_vpid looks"
        } else {
            ""
        };
        self.step(
            "pid_lookup",
            format!(
                "the pid names a task ({}{ns}; find_get_task_by_vpid in process_vm_rw_core)",
                kind.name()
            ),
        );
    }

    /// The steps a target with a task and an mm passes before the permission checks.
    fn found_task(&mut self, kind: TargetKind) {
        self.found_pid(kind);
        self.step(
            "no_mm",
            "the task has an mm (mm_access → get_task_mm returns it)",
        );
    }
}

/// A user namespace a case's credentials can live in: the harness's, or a child of it that
/// the caller or the target unshared after its credential change (owned by that process's
/// euid, `create_user_ns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserNs {
    Harness,
    Caller,
    Target,
}

/// `ns_capable(ns, CAP_SYS_PTRACE)` for the caller (security/commoncap.c `cap_capable`, the
/// same loop 5.10 to 7.3): in its own namespace its effective set counts (after
/// `unshare(CLONE_NEWUSER)` that is every capability, kernel/cred.c `set_cred_user_ns`); a
/// namespace at its own level or above that is not its own gives nothing; the owner of a
/// child namespace of the caller's holds every capability in it; otherwise the walk goes on
/// to the parent. `owner`: the target namespace's owner (the target's euid). With the
/// verdict, a noun phrase (held) or a clause (not held) saying why, for the trace.
fn ns_capable(caller_ns: UserNs, caller: &Credentials, ns: UserNs, owner: u32) -> (bool, String) {
    let effective = caller.effective.has(caps::SYS_PTRACE);
    match (caller_ns, ns) {
        (UserNs::Harness, UserNs::Harness) => (
            effective,
            if effective {
                "CAP_SYS_PTRACE in the caller's effective set (ptrace_has_cap → ns_capable in the target's user namespace)".into()
            } else {
                "the caller has no CAP_SYS_PTRACE in its effective set".into()
            },
        ),
        (UserNs::Harness, _) if owner == caller.ids.euid => (
            true,
            format!(
                "ownership of the target's user namespace (it is a child of the caller's, and its owner, uid {owner}, is the caller's euid: cap_capable grants the owner every capability)"
            ),
        ),
        (UserNs::Harness, _) => (
            effective,
            if effective {
                "CAP_SYS_PTRACE in the caller's effective set, which holds in the target's child user namespace too (cap_capable walks up to the caller's)".into()
            } else {
                format!(
                    "the caller neither owns the target's user namespace (owner uid {owner}, caller euid {}) nor has CAP_SYS_PTRACE in its parent (cap_capable)",
                    caller.ids.euid
                )
            },
        ),
        (UserNs::Caller, UserNs::Caller) => (
            true,
            "every capability, in the caller's own user namespace".into(),
        ),
        _ => (
            false,
            "the caller's capabilities belong to the user namespace it unshared, which is no ancestor of the one asked about (cap_capable: ns->level <= cred->user_ns->level gives -EPERM)".into(),
        ),
    }
}

/// The credentials a process ends up with, computed from capabilities(7)'s rules for uid
/// changes (not read back from the kernel). `None`: the harness's own.
pub fn proc_creds(c: Option<&Creds>, facts: &Facts) -> Credentials {
    let Some(c) = c else { return facts.creds };
    // "If one or more of the real, effective, or saved set user IDs was previously 0, and as a
    // result of the UID changes all of these IDs have a nonzero value, then all capabilities
    // are cleared from the permitted, effective, and ambient capability sets" unless
    // PR_SET_KEEPCAPS; "If the effective user ID is changed from 0 to nonzero, then all
    // capabilities are cleared from the effective set."
    let ids = c.ids;
    let all_nonzero = ids.uid != 0 && ids.euid != 0 && ids.suid != 0;
    let permitted = if all_nonzero && !c.keep_caps {
        CapSet(0)
    } else {
        facts.creds.permitted
    };
    let effective = if ids.euid != 0 {
        CapSet(0)
    } else {
        facts.creds.effective
    };
    let permitted = permitted.without(c.drop);
    let effective =
        CapSet((effective.without(c.drop).without(c.drop_effective).0 | c.raise.0) & permitted.0);
    Credentials {
        ids,
        permitted,
        effective,
    }
}

/// The user namespaces of the caller and of the target's credentials (`caller.userns`,
/// `target.userns`): each its own after an unshare, else the harness's.
fn user_namespaces(plan: &Plan) -> (UserNs, UserNs) {
    (
        if plan.caller_userns {
            UserNs::Caller
        } else {
            UserNs::Harness
        },
        if plan.target_userns {
            UserNs::Target
        } else {
            UserNs::Harness
        },
    )
}

/// The permission steps before Yama's (`__ptrace_may_access` and `cap_ptrace_access_check`).
pub const PERM_STEPS_BEFORE_YAMA: &[&str] = &["perm_ids", "perm_dumpable", "perm_caps"];

/// security/yama/yama_lsm.c yama_ptrace_access_check at `scope` (same in 5.10 to 7.2): why
/// it allows the call, or why it refuses it. `ptrace_cap`: CAP_SYS_PTRACE in the caller's
/// effective set.
fn yama_check(
    scope: Option<u8>,
    plan: &Plan,
    ptrace_cap: bool,
    cap: &str,
) -> Result<String, &'static str> {
    match scope {
        None => Ok("allowed: no Yama LSM on this kernel".into()),
        Some(0) => {
            Ok("allowed: Yama ptrace_scope 0 (YAMA_SCOPE_DISABLED) restricts nothing".into())
        }
        Some(1) => {
            // task_is_descendant(current, child): only a target the caller forked.
            let descendant = plan.target_parent == TargetParent::Caller;
            // ptracer_exception_found: PR_SET_PTRACER_ANY, or a registered tracer that
            // is the caller or one of its ancestors (the harness is the caller's parent).
            let exception = match plan.target_ptracer {
                Some(Ptracer::Any) => Some("the target set PR_SET_PTRACER_ANY"),
                Some(Ptracer::Harness) => Some(
                    "the target registered the harness, the caller's parent, with PR_SET_PTRACER",
                ),
                None => None,
            };
            if descendant {
                Ok("allowed: Yama ptrace_scope 1 and the target is the caller's child (task_is_descendant)".into())
            } else if let Some(why) = exception {
                Ok(format!(
                    "allowed: Yama ptrace_scope 1 and {why} (ptracer_exception_found)"
                ))
            } else if ptrace_cap {
                Ok(format!(
                    "allowed: Yama ptrace_scope 1, not a descendant and no ptracer exception, but {cap}"
                ))
            } else {
                Err("ptrace_scope 1: not a descendant, no ptracer exception, no CAP_SYS_PTRACE")
            }
        }
        Some(2) if ptrace_cap => Ok(format!(
            "allowed: Yama ptrace_scope 2 (admin-only attach) and {cap}"
        )),
        Some(2) => Err("ptrace_scope 2: no CAP_SYS_PTRACE"),
        Some(_) => Err("ptrace_scope 3: no attach at all"),
    }
}

/// Whether Yama, at the facts' scope, refuses a call that reaches the permission checks, so
/// that the kernel's EPERM (or its success with Yama out of the way) says nothing about the
/// uid/gid, saved-id, dumpable and capability checks before it: `__ptrace_may_access` runs
/// them first, and every outcome they decide is the same EPERM Yama gives. Such a case tells
/// those checks apart only with Yama out of the way (scope 0), see docs/MATRIX.md "Yama".
/// False without Yama or at scope 0, where nothing is hidden.
pub fn yama_hides_permission_checks(plan: &Plan, facts: &Facts) -> bool {
    if matches!(facts.yama_scope, None | Some(0)) {
        return false;
    }
    let open = Facts {
        yama_scope: Some(0),
        ..facts.clone()
    };
    let p = predict(plan, &open);
    let reached = PERM_STEPS_BEFORE_YAMA.contains(&p.decided_by)
        || p.trace.iter().any(|s| s.rule == "perm_ids");
    let caller = proc_creds(plan.caller_creds.as_ref(), facts);
    let target = proc_creds(plan.target_creds.as_ref(), facts);
    let (caller_ns, target_ns) = user_namespaces(plan);
    let (cap, text) = ns_capable(caller_ns, &caller, target_ns, target.ids.euid);
    reached && yama_check(facts.yama_scope, plan, cap, &text).is_err()
}

/// The local iovec stream as `iov_iter` walks it.
struct LocalStream {
    segs: Vec<(u64, u64)>,
    idx: usize,
    off: u64,
    remaining: u64,
}

/// Predicts the outcome of the plan's call on a system with these facts.
pub fn predict(plan: &Plan, facts: &Facts) -> Prediction {
    // Special mappings (vdso, vvar) at the addresses the facts give.
    let bound = plan.bind(facts);
    let plan: &Plan = &bound;
    let pku = facts.pku;
    let shared = plan.target_shares_caller_mm();
    let rules = Rules::for_version(facts.version);
    let mut caller_regions: Vec<&Region> = plan.caller_regions.iter().collect();
    let mut target_regions: Vec<&Region> = plan.target_regions.iter().collect();
    if shared {
        caller_regions.extend(plan.target_regions.iter());
        target_regions.extend(plan.caller_regions.iter());
    }
    // Every process of a case is a fork of the harness: same vdso and vvar.
    // The [uprobes] area is the target's own (VM_DONTCOPY, made after the fork).
    caller_regions.extend(
        plan.special_regions
            .iter()
            .filter(|r| r.kind != RegionKind::Uprobes || shared),
    );
    target_regions.extend(plan.special_regions.iter());
    // Stack expansion below `growsdown` regions, bounded by RLIMIT_STACK (acct_stack_growth
    // checks the expanded size against the rlimit of `current`, the caller). A user fault
    // expands on every kernel; GUP only where the rules say so.
    let windows: Vec<Region> = plan
        .stack_windows
        .iter()
        .filter_map(|w| {
            let parent = plan.region(w.side, &w.name)?;
            let low = w.start.max(parent.end().saturating_sub(facts.stack_rlimit));
            (low < w.end()).then(|| Region {
                start: low,
                len: w.end() - low,
                ..w.clone()
            })
        })
        .collect();
    for w in &windows {
        let in_target = w.side == crate::plan::Side::Target || shared;
        let in_caller = w.side == crate::plan::Side::Caller || shared;
        if in_caller {
            caller_regions.push(w);
        }
        if in_target && rules.gup_expands_stack {
            target_regions.push(w);
        }
    }
    let mut m = Model {
        plan,
        facts,
        rules,
        caller: View {
            regions: caller_regions,
            arrays: &plan.arrays,
            pku,
            rules,
        },
        target: View {
            regions: target_regions,
            arrays: if shared { &plan.arrays } else { &[] },
            pku,
            rules,
        },
        trace: Vec::new(),
    };
    let mut copies = Vec::new();
    let outcome = run(&mut m, &mut copies);
    let (result, decided_by, detail) = outcome;
    Prediction {
        result,
        decided_by,
        detail,
        trace: m.trace,
        copies,
        mappings: plan.special_regions.clone(),
        io_rings: rules.io_rings,
    }
}

type Outcome = (Result<u64, i32>, &'static str, Option<String>);

fn fail(f: Fail) -> Outcome {
    (Err(f.0), f.1, f.2)
}

fn run(m: &mut Model<'_>, copies: &mut Vec<Copy>) -> Outcome {
    let call = &m.plan.call;
    if call.flags != 0 {
        return (
            Err(libc::EINVAL),
            "flags",
            Some(format!("flags {:#x}", call.flags)),
        );
    }
    let local = match m.import_local() {
        Ok(v) => v,
        Err(f) => return fail(f),
    };
    let total: u64 = local.iter().map(|s| s.1).sum();
    if total == 0 {
        return (Ok(0), "local_zero_shortcut", None);
    }
    let remote = match m.import_remote() {
        Ok(v) => v,
        Err(f) => return fail(f),
    };
    if remote.iter().all(|r| r.1 == 0) {
        return (Ok(0), "remote_zero_shortcut", None);
    }
    if let Err(f) = m.check_target() {
        return fail(f);
    }

    let write = call.syscall == Syscall::Writev;
    let (pin, user) = if write {
        (Access::PinWrite, Access::UserRead)
    } else {
        (Access::PinRead, Access::UserWrite)
    };
    let mut stream = LocalStream {
        segs: local,
        idx: 0,
        off: 0,
        remaining: total,
    };
    let mut moved_total = 0u64;
    let mut err: Option<Fail> = None;
    for (i, &(rbase, rlen)) in remote.iter().enumerate() {
        if stream.remaining == 0 {
            break;
        }
        if rlen == 0 {
            continue;
        }
        let avail = m.target.run(rbase, rlen, pin);
        let pages = (rbase % PAGE + avail).div_ceil(PAGE);
        let batches = pages.div_ceil(1024).max(1);
        let text = format!(
            "remote[{i}] {} len {rlen}: {} pinnable ({}, {}; pin_user_pages_remote{})",
            m.label(rbase),
            crate::words::count(avail, "byte", "bytes"),
            crate::words::count(pages, "page", "pages"),
            crate::words::count(batches, "pin batch", "pin batches"),
            if avail < rlen {
                " stops at the first page check_vma_flags or the fault path refuses"
            } else {
                ": every page's VMA allows the access"
            }
        );
        m.step("remote_pin", text);
        if avail == 0 {
            err = Some((
                libc::EFAULT,
                "remote_fault",
                Some(format!("at {}", m.label(rbase))),
            ));
            break;
        }
        let want = avail.min(stream.remaining);
        let mut moved = 0u64;
        while moved < want {
            let (base, len) = stream.segs[stream.idx];
            let left = len - stream.off;
            if left == 0 {
                stream.idx += 1;
                stream.off = 0;
                continue;
            }
            let chunk = left.min(want - moved);
            let at = base + stream.off;
            let ok = m.caller.run(at, chunk, user);
            if ok > 0 {
                copies.push(Copy {
                    local: at,
                    remote: rbase + moved,
                    len: ok,
                });
            }
            moved += ok;
            stream.off += ok;
            stream.remaining -= ok;
            if ok < chunk {
                err = Some((
                    libc::EFAULT,
                    "local_fault",
                    Some(format!("at {}", m.label(at + ok))),
                ));
                break;
            }
        }
        moved_total += moved;
        if err.is_some() {
            break;
        }
        if avail < rlen && stream.remaining > 0 {
            err = Some((
                libc::EFAULT,
                "remote_fault",
                Some(format!("at {}", m.label(rbase + avail))),
            ));
            break;
        }
    }
    let text = format!(
        "moved {} in {} (process_vm_rw_pages: copy_page_to_iter / copy_page_from_iter on the local segments)",
        crate::words::count(moved_total, "byte", "bytes"),
        crate::words::count(copies.len() as u64, "copy", "copies")
    );
    m.step("transfer", text);
    match err {
        // "If we have managed to copy any data at all then we return the number of bytes
        // copied. Otherwise we return the error code."
        Some((_, step, detail)) if moved_total > 0 => (Ok(moved_total), step, detail),
        Some(f) => fail(f),
        None => (Ok(moved_total), "complete", None),
    }
}
