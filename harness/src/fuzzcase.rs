//! The input of the `model_vs_kernel` fuzz target: a case from a bounded vocabulary, in a
//! compact byte format that every byte string decodes to (docs/FUZZING.md has the format).
//!
//! A [`FuzzCase`] is never run as such: it becomes a [`CaseFile`] (the structs `serde`
//! would build from YAML) and goes through [`plan::build`], [`model::predict`] and
//! [`check::compare`], exactly like a case file. [`FuzzCase::to_yaml`] writes the same case
//! as YAML (`pvmtest import-crash`), and [`FuzzCase::from_case_file`] encodes a catalogue case
//! when the vocabulary can express it (`pvmtest corpus`).
//!
//! The vocabulary is what the persistent executor ([`crate::exec::persistent`]) reproduces
//! exactly: regions `anon`, `hole`, `file_private`, `file_shared`, `memfd_private`,
//! `memfd_shared` with prot `rw`, `ro`, `none`, `wo`, `xo`, 1 to 4 pages, filled with the
//! pattern; up to 5 target and 3 caller regions; up to 7 iovec entries a side (each may
//! repeat); targets `child` (forked by the caller: `parent: caller`), `self`, `thread`,
//! `clone_vm`, `pid0`, `pid_minus1`, `unused_pid`; caller credentials: the harness's, uid
//! 1000 without capabilities, or root without CAP_SYS_PTRACE.

use crate::case::{
    CallSpec, CallerSpec, CaseFile, CredSpec, Entry, Fill, IovSpec, NumSpec, Prot, RegionKind,
    RegionSpec, RequiresSpec, Syscall, TargetKind, TargetParent, TargetSpec,
};
use crate::check;
use crate::exec::persistent::Persistent;
use crate::model;
use crate::plan::{self, Plan};
use std::fmt::Write as _;

pub const MAX_TARGET_REGIONS: usize = 5;
pub const MAX_CALLER_REGIONS: usize = 3;
pub const MAX_IOVS: usize = 7;
pub const MAX_PAGES: u64 = 4;
/// Largest file size the vocabulary keeps (larger decodes to the default, the mapping size).
pub const MAX_FILE_SIZE: u64 = 16 * 4096;
/// Largest `repeat` of one iovec entry.
pub const MAX_REPEAT: u64 = 1100;

const KINDS: [RegionKind; 6] = [
    RegionKind::Anon,
    RegionKind::Hole,
    RegionKind::FilePrivate,
    RegionKind::FileShared,
    RegionKind::MemfdPrivate,
    RegionKind::MemfdShared,
];
const PROTS: [Prot; 5] = [Prot::Rw, Prot::Ro, Prot::None, Prot::Wo, Prot::Xo];
const TARGETS: [TargetKind; 8] = [
    TargetKind::Child,
    TargetKind::Child,
    TargetKind::SelfProcess,
    TargetKind::Thread,
    TargetKind::CloneVm,
    TargetKind::Pid0,
    TargetKind::PidMinus1,
    TargetKind::UnusedPid,
];

/// Numbers worth hitting with one byte (`num` tags 0x80..=0xdf).
const TABLE: &[u64] = &[
    4095,
    4096,
    4097,
    4000,
    4088,
    8191,
    8192,
    8193,
    12287,
    12288,
    16383,
    16384,
    200,
    255,
    256,
    511,
    512,
    1023,
    1024,
    1025,
    2047,
    2048,
    65535,
    65536,
    1 << 20,
    0x7fff_f000,
    0x7fff_f001,
    0x7fff_efff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_f000,
    0xffff_fffe,
    0xffff_ffff,
    1 << 32,
    (1 << 32) + 1,
    (1 << 32) + 2,
    (1 << 32) + 1024,
    (1 << 32) + 1025,
    1 << 40,
    1 << 47,
    (1 << 47) - 4096,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
    u64::MAX - 4095,
    0x8000_0000_0000_0000 - 4096,
    0xffff_8880_0000_0000,
];

/// Caller credentials the vocabulary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredsChoice {
    /// The harness's own (no `caller.creds`).
    Harness,
    /// `{uid: 1000}`: every id 1000, no capabilities.
    Uid1000,
    /// `{uid: 0, drop_caps: [CAP_SYS_PTRACE]}`.
    RootNoPtrace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionDef {
    pub kind: RegionKind,
    pub prot: Prot,
    /// 1..=MAX_PAGES.
    pub pages: u64,
    /// File kinds only; `None` is the mapping's size.
    pub file_size: Option<u64>,
}

/// What an address is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// Region `i` of the side (`t<i>` or `c<i>`).
    Region(u8),
    Null,
    Kernel,
    NonCanonical,
    Hole,
    Guard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub base: Base,
    /// Added with wrap-around (so a "negative" offset is below the base).
    pub off: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovDef {
    pub addr: Addr,
    pub len: u64,
    /// 1..=MAX_REPEAT.
    pub repeat: u64,
    pub stride: u64,
}

/// One fuzz input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzCase {
    pub write: bool,
    pub compat: bool,
    pub creds: CredsChoice,
    pub target_kind: TargetKind,
    pub target: Vec<RegionDef>,
    pub caller: Vec<RegionDef>,
    pub local: Vec<IovDef>,
    pub remote: Vec<IovDef>,
    pub liovcnt: Option<u64>,
    pub riovcnt: Option<u64>,
    pub flags: Option<u64>,
    pub lvec: Option<Addr>,
    pub rvec: Option<Addr>,
}

/// Reads bytes; past the end every read is zero, so every input decodes.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let v = self.b.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        v
    }
    fn le(&mut self, n: usize) -> u64 {
        (0..n).fold(0u64, |acc, i| acc | (self.u8() as u64) << (8 * i))
    }
    /// `0x00..=0x7f` the value; `0x80..=0xdf` [`TABLE`]; `0xe1`/`0xe2`/`0xe3` a little-endian
    /// u16/u32/u64 follows; `0xe4..=0xff` 1..=28 pages; `0xe0` zero.
    fn num(&mut self) -> u64 {
        match self.u8() {
            t @ 0..=0x7f => t as u64,
            t @ 0x80..=0xdf => TABLE[(t - 0x80) as usize % TABLE.len()],
            0xe0 => 0,
            0xe1 => self.le(2),
            0xe2 => self.le(4),
            0xe3 => self.le(8),
            t => (t as u64 - 0xe3) * 4096,
        }
    }
    fn region(&mut self) -> RegionDef {
        let r = self.u8();
        let kind = KINDS[(r & 7) as usize % KINDS.len()];
        let prot = if kind == RegionKind::Hole {
            Prot::Rw
        } else {
            PROTS[((r >> 3) & 7) as usize % PROTS.len()]
        };
        let pages = 1 + (r >> 6) as u64;
        let file_size = if is_file(kind) {
            Some(self.num()).filter(|&fs| fs <= MAX_FILE_SIZE)
        } else {
            None
        };
        RegionDef {
            kind,
            prot,
            pages,
            file_size,
        }
    }
    /// Selector byte: bits 0-3 the base (0-7 region `sel % n`, or null with no regions; 8
    /// null, 9 kernel, 10 non_canonical, 11 hole, 12 guard, 13-15 region 0), bit 4: an
    /// offset follows, bit 5: it is subtracted, bit 6: repeat and stride follow (iovecs).
    fn addr(&mut self, nregions: usize) -> (Addr, u8) {
        let s = self.u8();
        let region = |i: u8| {
            if nregions == 0 {
                Base::Null
            } else {
                Base::Region((i as usize % nregions) as u8)
            }
        };
        let base = match s & 15 {
            i @ 0..=7 => region(i),
            8 => Base::Null,
            9 => Base::Kernel,
            10 => Base::NonCanonical,
            11 => Base::Hole,
            12 => Base::Guard,
            _ => region(0),
        };
        let mut off = 0;
        if s & 0x10 != 0 {
            off = self.num();
            if s & 0x20 != 0 {
                off = off.wrapping_neg();
            }
        }
        (Addr { base, off }, s)
    }
    fn iov(&mut self, nregions: usize) -> IovDef {
        let (addr, s) = self.addr(nregions);
        let len = self.num();
        let (mut repeat, mut stride) = (1, 0);
        if s & 0x40 != 0 {
            // Any value outside 1..=MAX_REPEAT is a small repeat: long runs of iovecs cost
            // the model and the checker time, so they must be asked for exactly.
            let v = self.num();
            repeat = if (1..=MAX_REPEAT).contains(&v) {
                v
            } else {
                1 + v % 4
            };
            stride = self.num();
        }
        IovDef {
            addr,
            len,
            repeat,
            stride,
        }
    }
}

/// Writes the format [`Reader`] reads.
#[derive(Default)]
struct Writer {
    b: Vec<u8>,
}

impl Writer {
    fn num(&mut self, v: u64) {
        if v < 0x80 {
            self.b.push(v as u8);
        } else if let Some(i) = TABLE.iter().position(|&t| t == v) {
            self.b.push(0x80 + i as u8);
        } else if v.is_multiple_of(4096) && (1..=28).contains(&(v / 4096)) {
            self.b.push(0xe3 + (v / 4096) as u8);
        } else if v <= u16::MAX as u64 {
            self.b.push(0xe1);
            self.b.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= u32::MAX as u64 {
            self.b.push(0xe2);
            self.b.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            self.b.push(0xe3);
            self.b.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn region(&mut self, r: &RegionDef) {
        let k = KINDS.iter().position(|&k| k == r.kind).unwrap_or(0) as u8;
        let p = PROTS.iter().position(|&p| p == r.prot).unwrap_or(0) as u8;
        self.b.push(k | p << 3 | ((r.pages - 1) as u8) << 6);
        if is_file(r.kind) {
            // u64max is past MAX_FILE_SIZE: it decodes to the default.
            self.num(r.file_size.unwrap_or(u64::MAX));
        }
    }
    fn addr(&mut self, a: &Addr, extra: u8) {
        let base = match a.base {
            Base::Region(i) => i,
            Base::Null => 8,
            Base::Kernel => 9,
            Base::NonCanonical => 10,
            Base::Hole => 11,
            Base::Guard => 12,
        };
        let neg = (a.off as i64) < 0 && a.off != 1 << 63;
        let has_off = a.off != 0;
        self.b.push(
            base | extra | if has_off { 0x10 } else { 0 } | if has_off && neg { 0x20 } else { 0 },
        );
        if has_off {
            self.num(if neg { a.off.wrapping_neg() } else { a.off });
        }
    }
    fn iov(&mut self, v: &IovDef) {
        let rep = v.repeat != 1 || v.stride != 0;
        self.addr(&v.addr, if rep { 0x40 } else { 0 });
        self.num(v.len);
        if rep {
            self.num(v.repeat);
            self.num(v.stride);
        }
    }
}

fn is_file(k: RegionKind) -> bool {
    matches!(
        k,
        RegionKind::FilePrivate
            | RegionKind::FileShared
            | RegionKind::MemfdPrivate
            | RegionKind::MemfdShared
    )
}

impl<'a> arbitrary::Arbitrary<'a> for FuzzCase {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.len();
        Ok(FuzzCase::decode(u.bytes(n)?))
    }
    fn arbitrary_take_rest(mut u: arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

impl FuzzCase {
    /// Decodes any byte string (missing bytes read as zero).
    pub fn decode(bytes: &[u8]) -> FuzzCase {
        let mut r = Reader { b: bytes, at: 0 };
        let h0 = r.u8();
        let h1 = r.u8();
        let h2 = r.u8();
        let h3 = r.u8();
        // Other credentials need bit 7 as well: their calls go through a worker thread,
        // which costs a thread switch each way.
        let creds = match ((h0 >> 2) & 3, h0 >> 7) {
            (1, 1) => CredsChoice::Uid1000,
            (2, 1) => CredsChoice::RootNoPtrace,
            _ => CredsChoice::Harness,
        };
        let nt = ((h1 & 7) as usize).min(MAX_TARGET_REGIONS);
        let nc = ((h1 >> 3) & 3) as usize;
        let nl = ((h2 & 7) as usize).min(MAX_IOVS);
        let nr = (((h2 >> 3) & 7) as usize).min(MAX_IOVS);
        let target: Vec<RegionDef> = (0..nt).map(|_| r.region()).collect();
        let caller: Vec<RegionDef> = (0..nc).map(|_| r.region()).collect();
        let local = (0..nl).map(|_| r.iov(nc)).collect();
        let remote = (0..nr).map(|_| r.iov(nt)).collect();
        let lvec = (h1 & 0x20 != 0).then(|| r.addr(nc).0);
        let rvec = (h1 & 0x40 != 0).then(|| r.addr(nc).0);
        let liovcnt = (h2 & 0x40 != 0).then(|| r.num());
        let riovcnt = (h2 & 0x80 != 0).then(|| r.num());
        let flags = (h3 & 1 != 0).then(|| r.num());
        FuzzCase {
            write: h0 & 1 != 0,
            compat: h0 & 2 != 0,
            creds,
            target_kind: TARGETS[((h0 >> 4) & 7) as usize],
            target,
            caller,
            local,
            remote,
            liovcnt,
            riovcnt,
            flags,
            lvec,
            rvec,
        }
    }

    /// The bytes [`FuzzCase::decode`] turns back into this case.
    pub fn encode(&self) -> Vec<u8> {
        let creds = match self.creds {
            CredsChoice::Harness => 0,
            CredsChoice::Uid1000 => 1,
            CredsChoice::RootNoPtrace => 2,
        };
        let kind = match self.target_kind {
            TargetKind::SelfProcess => 2,
            TargetKind::Thread => 3,
            TargetKind::CloneVm => 4,
            TargetKind::Pid0 => 5,
            TargetKind::PidMinus1 => 6,
            TargetKind::UnusedPid => 7,
            _ => 0,
        };
        let mut w = Writer::default();
        let other = (creds != 0) as u8;
        w.b.push(self.write as u8 | (self.compat as u8) << 1 | creds << 2 | kind << 4 | other << 7);
        w.b.push(
            self.target.len() as u8
                | (self.caller.len() as u8) << 3
                | (self.lvec.is_some() as u8) << 5
                | (self.rvec.is_some() as u8) << 6,
        );
        w.b.push(
            self.local.len() as u8
                | (self.remote.len() as u8) << 3
                | (self.liovcnt.is_some() as u8) << 6
                | (self.riovcnt.is_some() as u8) << 7,
        );
        w.b.push(self.flags.is_some() as u8);
        for r in self.target.iter().chain(&self.caller) {
            w.region(r);
        }
        for v in self.local.iter().chain(&self.remote) {
            w.iov(v);
        }
        for a in [&self.lvec, &self.rvec].into_iter().flatten() {
            w.addr(a, 0);
        }
        for n in [self.liovcnt, self.riovcnt, self.flags]
            .into_iter()
            .flatten()
        {
            w.num(n);
        }
        w.b
    }

    fn addr_expr(a: &Addr, prefix: char) -> String {
        let base = match a.base {
            Base::Region(i) => format!("{prefix}{i}"),
            Base::Null => "null".into(),
            Base::Kernel => "kernel".into(),
            Base::NonCanonical => "non_canonical".into(),
            Base::Hole => "hole".into(),
            Base::Guard => "guard".into(),
        };
        let s = a.off as i64;
        if a.off == 0 {
            base
        } else if s < 0 && s != i64::MIN {
            format!("{base}-{}", s.unsigned_abs())
        } else {
            format!("{base}+{}", a.off)
        }
    }

    fn region_specs(defs: &[RegionDef], prefix: char) -> Vec<RegionSpec> {
        defs.iter()
            .enumerate()
            .map(|(i, r)| RegionSpec {
                name: format!("{prefix}{i}"),
                pages: NumSpec::U(r.pages),
                at: None,
                prot: r.prot,
                kind: r.kind,
                file_size: r.file_size.map(NumSpec::U),
                fill: Fill::Pattern,
                pkey: None,
            })
            .collect()
    }

    fn iov_specs(defs: &[IovDef], prefix: char) -> Vec<IovSpec> {
        defs.iter()
            .map(|v| {
                let rep = v.repeat != 1 || v.stride != 0;
                IovSpec {
                    base: Self::addr_expr(&v.addr, prefix),
                    len: NumSpec::U(v.len),
                    repeat: rep.then_some(NumSpec::U(v.repeat)),
                    stride: rep.then_some(NumSpec::U(v.stride)),
                }
            })
            .collect()
    }

    fn needs_memfd(&self) -> bool {
        self.target
            .iter()
            .chain(&self.caller)
            .any(|r| matches!(r.kind, RegionKind::MemfdPrivate | RegionKind::MemfdShared))
    }

    fn cred_spec(&self) -> Option<CredSpec> {
        let spec = |uid, drop: Vec<String>| CredSpec {
            uid,
            euid: None,
            suid: None,
            gid: None,
            egid: None,
            sgid: None,
            keep_caps: false,
            drop_caps: drop,
            drop_effective_caps: Vec::new(),
            raise_caps: Vec::new(),
        };
        match self.creds {
            CredsChoice::Harness => None,
            CredsChoice::Uid1000 => Some(spec(1000, Vec::new())),
            CredsChoice::RootNoPtrace => Some(spec(0, vec!["CAP_SYS_PTRACE".into()])),
        }
    }

    /// The case as the structs a YAML file parses into.
    pub fn to_case_file(&self, description: &str) -> CaseFile {
        CaseFile {
            description: description.into(),
            requires: RequiresSpec {
                features: if self.needs_memfd() {
                    vec![crate::case::Feature::Memfd]
                } else {
                    Vec::new()
                },
                ..RequiresSpec::default()
            },
            target: TargetSpec {
                kind: self.target_kind,
                regions: Self::region_specs(&self.target, 't'),
                creds: None,
                dumpable: None,
                ptracer: None,
                parent: if self.target_kind == TargetKind::Child {
                    TargetParent::Caller
                } else {
                    TargetParent::Harness
                },
                userns: false,
            },
            caller: CallerSpec {
                regions: Self::region_specs(&self.caller, 'c'),
                creds: self.cred_spec(),
                pidns: false,
                userns: false,
            },
            call: CallSpec {
                syscall: if self.write {
                    Syscall::Writev
                } else {
                    Syscall::Readv
                },
                entry: if self.compat {
                    Entry::Compat
                } else {
                    Entry::Native
                },
                local: Self::iov_specs(&self.local, 'c'),
                remote: Self::iov_specs(&self.remote, 't'),
                liovcnt: self.liovcnt.map(NumSpec::U),
                riovcnt: self.riovcnt.map(NumSpec::U),
                flags: self.flags.map(NumSpec::U),
                lvec: self.lvec.map(|a| Self::addr_expr(&a, 'c')),
                rvec: self.rvec.map(|a| Self::addr_expr(&a, 'c')),
            },
            expect: None,
        }
    }

    /// The validated plan (`Err` when the validator rejects the combination, e.g. a compat
    /// case naming `kernel`).
    pub fn plan(&self, id: &str) -> Result<Plan, plan::PlanError> {
        plan::build(id, id, &self.to_case_file(DESCRIPTION))
    }

    /// The same case as a YAML case file (parses to the same plan as [`FuzzCase::plan`]
    /// when given the same description).
    pub fn to_yaml(&self, description: &str) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "description: {}", yaml_str(description));
        if self.needs_memfd() {
            y.push_str("requires:\n  features: [memfd]\n");
        }
        let regions = |y: &mut String, defs: &[RegionDef], prefix: char| {
            if defs.is_empty() {
                return;
            }
            y.push_str("  regions:\n");
            for (i, r) in defs.iter().enumerate() {
                let _ = write!(
                    y,
                    "    - {{name: {prefix}{i}, pages: {}, kind: {}, prot: {}",
                    r.pages,
                    kind_name(r.kind),
                    r.prot.name()
                );
                if let Some(fs) = r.file_size {
                    let _ = write!(y, ", file_size: {fs}");
                }
                y.push_str("}\n");
            }
        };
        y.push_str("target:\n");
        let _ = writeln!(y, "  kind: {}", self.target_kind.name());
        if self.target_kind == TargetKind::Child {
            y.push_str("  parent: caller\n");
        }
        regions(&mut y, &self.target, 't');
        y.push_str("caller:\n");
        if self.caller.is_empty() {
            y.push_str("  regions: []\n");
        }
        regions(&mut y, &self.caller, 'c');
        match self.creds {
            CredsChoice::Harness => {}
            CredsChoice::Uid1000 => y.push_str("  creds: {uid: 1000}\n"),
            CredsChoice::RootNoPtrace => {
                y.push_str("  creds: {uid: 0, drop_caps: [CAP_SYS_PTRACE]}\n")
            }
        }
        y.push_str("call:\n");
        let _ = writeln!(
            y,
            "  syscall: {}",
            if self.write { "writev" } else { "readv" }
        );
        if self.compat {
            y.push_str("  entry: compat\n");
        }
        let iovs = |y: &mut String, key: &str, defs: &[IovDef], prefix: char| {
            let _ = write!(y, "  {key}: [");
            for (i, v) in defs.iter().enumerate() {
                if i > 0 {
                    y.push_str(", ");
                }
                let _ = write!(
                    y,
                    "{{base: \"{}\", len: {}",
                    Self::addr_expr(&v.addr, prefix),
                    v.len
                );
                if v.repeat != 1 || v.stride != 0 {
                    let _ = write!(y, ", repeat: {}, stride: {}", v.repeat, v.stride);
                }
                y.push('}');
            }
            y.push_str("]\n");
        };
        iovs(&mut y, "local", &self.local, 'c');
        iovs(&mut y, "remote", &self.remote, 't');
        for (k, v) in [
            ("liovcnt", self.liovcnt),
            ("riovcnt", self.riovcnt),
            ("flags", self.flags),
        ] {
            if let Some(v) = v {
                let _ = writeln!(y, "  {k}: {v}");
            }
        }
        for (k, a) in [("lvec", self.lvec), ("rvec", self.rvec)] {
            if let Some(a) = a {
                let _ = writeln!(y, "  {k}: \"{}\"", Self::addr_expr(&a, 'c'));
            }
        }
        y
    }

    /// Encodes a catalogue case, if the vocabulary can express it. Normalised on the way:
    /// region names become `t0…`/`c0…`, a `child` target gets `parent: caller` (the fuzzer
    /// is the caller and the target's parent), requirements other than features implied by
    /// the regions are dropped, and any `expect` pin.
    pub fn from_case_file(c: &CaseFile) -> Option<FuzzCase> {
        use crate::case::Feature;
        let r = &c.requires;
        if !r.caps.is_empty()
            || r.yama_scope.is_some()
            || r.features
                .iter()
                .any(|f| !matches!(f, Feature::Memfd | Feature::Compat))
        {
            return None;
        }
        let t = &c.target;
        if t.creds.is_some() || t.dumpable.is_some() || t.ptracer.is_some() {
            return None;
        }
        if !TARGETS.contains(&t.kind) {
            return None;
        }
        let regions = |specs: &[RegionSpec], max: usize| -> Option<Vec<RegionDef>> {
            if specs.len() > max {
                return None;
            }
            specs
                .iter()
                .map(|s| {
                    let pages = s.pages.eval().ok()?;
                    let file_size = match &s.file_size {
                        Some(fs) => Some(fs.eval().ok().filter(|&v| v <= MAX_FILE_SIZE)?),
                        None => None,
                    };
                    let ok = s.at.is_none()
                        && s.fill == Fill::Pattern
                        && KINDS.contains(&s.kind)
                        && PROTS.contains(&s.prot)
                        && (1..=MAX_PAGES).contains(&pages);
                    ok.then_some(RegionDef {
                        kind: s.kind,
                        prot: s.prot,
                        pages,
                        file_size,
                    })
                })
                .collect()
        };
        let target = regions(&t.regions, MAX_TARGET_REGIONS)?;
        let caller = regions(&c.caller.regions, MAX_CALLER_REGIONS)?;
        let creds = match &c.caller.creds {
            None => CredsChoice::Harness,
            Some(cr) => {
                let plain = cr.euid.is_none()
                    && cr.suid.is_none()
                    && cr.gid.is_none()
                    && cr.egid.is_none()
                    && cr.sgid.is_none()
                    && !cr.keep_caps
                    && cr.drop_effective_caps.is_empty()
                    && cr.raise_caps.is_empty();
                match (plain, cr.uid, cr.drop_caps.as_slice()) {
                    (true, 1000, []) => CredsChoice::Uid1000,
                    (true, 0, [c]) if c == "CAP_SYS_PTRACE" => CredsChoice::RootNoPtrace,
                    _ => return None,
                }
            }
        };
        let names = |specs: &[RegionSpec]| -> Vec<String> {
            specs.iter().map(|s| s.name.clone()).collect()
        };
        let (tnames, cnames) = (names(&t.regions), names(&c.caller.regions));
        let addr = |e: &str, names: &[String]| -> Option<Addr> {
            let e = e.trim();
            let split = e.find(['+', '-']).unwrap_or(e.len());
            let (name, rest) = e.split_at(split);
            let base = match name.trim() {
                "null" => Base::Null,
                "kernel" => Base::Kernel,
                "non_canonical" => Base::NonCanonical,
                "hole" => Base::Hole,
                "guard" => Base::Guard,
                n => Base::Region(names.iter().position(|x| x == n)? as u8),
            };
            let off = if rest.is_empty() {
                0
            } else {
                crate::expr::eval(&format!("0{rest}")).ok()?
            };
            Some(Addr { base, off })
        };
        let iovs = |specs: &[IovSpec], names: &[String]| -> Option<Vec<IovDef>> {
            if specs.len() > MAX_IOVS {
                return None;
            }
            specs
                .iter()
                .map(|s| {
                    let repeat = match &s.repeat {
                        Some(n) => n.eval().ok().filter(|r| (1..=MAX_REPEAT).contains(r))?,
                        None => 1,
                    };
                    let stride = match &s.stride {
                        Some(n) => n.eval().ok()?,
                        None => 0,
                    };
                    Some(IovDef {
                        addr: addr(&s.base, names)?,
                        len: s.len.eval().ok()?,
                        repeat,
                        stride,
                    })
                })
                .collect()
        };
        let num = |n: &Option<NumSpec>| -> Option<Option<u64>> {
            match n {
                None => Some(None),
                Some(n) => n.eval().ok().map(Some),
            }
        };
        let call = &c.call;
        let opt_addr = |e: &Option<String>| -> Option<Option<Addr>> {
            match e {
                None => Some(None),
                Some(e) => addr(e, &cnames).map(Some),
            }
        };
        Some(FuzzCase {
            write: call.syscall == Syscall::Writev,
            compat: call.entry == Entry::Compat,
            creds,
            target_kind: t.kind,
            target,
            caller,
            local: iovs(&call.local, &cnames)?,
            remote: iovs(&call.remote, &tnames)?,
            liovcnt: num(&call.liovcnt)?,
            riovcnt: num(&call.riovcnt)?,
            flags: num(&call.flags)?,
            lvec: opt_addr(&call.lvec)?,
            rvec: opt_addr(&call.rvec)?,
        })
    }
}

/// The description of a generated case.
pub const DESCRIPTION: &str = "Generated by the model_vs_kernel fuzz target.";

fn yaml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn kind_name(k: RegionKind) -> &'static str {
    match k {
        RegionKind::Anon => "anon",
        RegionKind::Hole => "hole",
        RegionKind::FilePrivate => "file_private",
        RegionKind::FileShared => "file_shared",
        RegionKind::MemfdPrivate => "memfd_private",
        RegionKind::MemfdShared => "memfd_shared",
        _ => "anon",
    }
}

/// What one fuzz input came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The validator rejected the case (not a finding: the vocabulary is wider than the
    /// language's rules, e.g. a compat case naming `kernel`).
    Invalid,
    /// A requirement is not met here (e.g. compat without IA32 emulation, creds without root).
    Skipped,
    /// The executor could not set the case up in this process (e.g. the compat caller range
    /// is taken by a sanitizer's shadow memory).
    Unplaceable(String),
    /// Kernel and model agree, bytes included.
    Agree,
}

/// Runs one input on the running kernel through `exec` and compares with the model.
/// `Err` is a mismatch (or an executor failure), with the call and the case as YAML.
pub fn run_one(exec: &mut Persistent, case: &FuzzCase) -> Result<Verdict, String> {
    let Ok(plan) = case.plan("fuzz/input") else {
        return Ok(Verdict::Invalid);
    };
    if check::unmet_requirement(&plan, exec.facts()).is_some() {
        return Ok(Verdict::Skipped);
    }
    let pred = model::predict(&plan, exec.facts());
    let obs = match exec.execute(&plan) {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(Verdict::Unplaceable(exec.last_unplaceable())),
        Err(e) => return Err(report(case, &plan, &format!("executor failed: {e}"))),
    };
    match check::compare(&plan, &pred, &obs) {
        Ok(()) => Ok(Verdict::Agree),
        Err(e) => Err(report(
            case,
            &plan,
            &format!(
                "{e}\nkernel: {}, model: {pred}",
                check::result_string(obs.result)
            ),
        )),
    }
}

fn report(case: &FuzzCase, plan: &Plan, what: &str) -> String {
    format!(
        "model_vs_kernel mismatch\n{}\n{what}\n--- case (save as a .yaml file, run with `pvmtest run`) ---\n{}",
        crate::runner::render_call(plan),
        case.to_yaml(DESCRIPTION)
    )
}

/// splitmix64: a tiny deterministic generator, so a seed names the same inputs everywhere
/// (`kernel-matrix fuzz --seed`, and the tests' generated inputs).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` bytes, one per draw.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// FNV-1a 64 of `bytes`, for naming imported artifacts.
pub fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        SplitMix64(seed).bytes(n)
    }

    #[test]
    fn encode_inverts_decode() {
        for seed in 0..3000 {
            let c = FuzzCase::decode(&bytes(seed, (seed % 97) as usize));
            assert_eq!(FuzzCase::decode(&c.encode()), c, "seed {seed}");
        }
    }

    #[test]
    fn yaml_parses_to_the_same_plan() {
        let mut valid = 0;
        for seed in 0..1500 {
            let c = FuzzCase::decode(&bytes(seed, 80));
            let Ok(p) = c.plan("fuzz/input") else {
                continue;
            };
            valid += 1;
            let y = c.to_yaml(DESCRIPTION);
            let q = crate::runner::load_str("fuzz/input", "fuzz/input", &y)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{y}"));
            assert_eq!(p, q, "seed {seed}\n{y}");
            let back = FuzzCase::from_case_file(&serde_yaml::from_str(&y).unwrap());
            assert_eq!(back.as_ref(), Some(&c), "seed {seed}\n{y}");
        }
        assert!(valid > 300, "only {valid} valid inputs");
    }

    #[test]
    fn num_round_trips() {
        for &v in TABLE
            .iter()
            .chain(&[0, 1, 127, 128, 4096 * 28, 4096 * 29, 70000, 1 << 33])
        {
            let mut w = Writer::default();
            w.num(v);
            assert_eq!(Reader { b: &w.b, at: 0 }.num(), v);
        }
    }
}
