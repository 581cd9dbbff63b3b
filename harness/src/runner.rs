//! Loading case files and running them: validation first (nothing forked for a bad file),
//! then each valid case through requirements, the model and the kernel.

use crate::case::{CaseDoc, TargetKind};
use crate::check;
use crate::exec::{self, Options};
use crate::facts::Facts;
use crate::model::{self, Prediction};
use crate::plan::{self, Plan};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A case file that cannot be used, with where and why.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub path: String,
    /// 1-based line and column of the field that is wrong, where known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.path, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.path, self.message),
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// The file that marks the root of a case catalogue (`cases/.pvmtest-catalogue`). A case's
/// name is its path under the nearest such root, without `.yaml`, so a copy of the catalogue
/// (`cp -r`), a group directory or a single file given on the command line all name a case
/// alike: `eperm/root_vs_nondumpable_root_writev`.
pub const CATALOGUE_MARKER: &str = ".pvmtest-catalogue";

/// A case file found by [`collect_named`], with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub name: String,
}

/// All `*.yaml` files under the given paths (files are taken as given), sorted.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    Ok(collect_named(paths)?.into_iter().map(|f| f.path).collect())
}

/// All `*.yaml` files under the given paths, sorted, each with its name: the path under the
/// nearest catalogue root ([`CATALOGUE_MARKER`]), else under the directory argument it was
/// found in, else (a file given by itself) its stem. Two files with one name are refused:
/// results, reports and snapshots are keyed by name.
pub fn collect_named(paths: &[PathBuf]) -> Result<Vec<Found>, LoadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files).map_err(|e| LoadError {
                path: p.display().to_string(),
                line: None,
                column: None,
                message: e.to_string(),
            })?;
            out.extend(files.into_iter().map(|f| Found {
                name: case_name(&f, Some(p)),
                path: f,
            }));
        } else if p.exists() {
            out.push(Found {
                name: case_name(p, None),
                path: p.clone(),
            });
        } else {
            return Err(LoadError {
                path: p.display().to_string(),
                line: None,
                column: None,
                message: "no such file or directory (give a case file or a directory of them)"
                    .into(),
            });
        }
    }
    // The same file reached through two arguments is one case (named by the first).
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    let mut seen: std::collections::HashMap<&str, &Path> = std::collections::HashMap::new();
    for f in &out {
        if let Some(other) = seen.insert(&f.name, &f.path) {
            return Err(LoadError {
                path: f.path.display().to_string(),
                line: None,
                column: None,
                message: format!(
                    "two cases named `{}`: this file and {} (rename one or run them separately; a name is the path under the catalogue root, docs/CASES.md \"Case names\")",
                    f.name,
                    other.display()
                ),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Loads every case under `paths`; returns the valid plans and the number of invalid files,
/// each of which is handed to `bad` (to print) and never run.
pub fn load_all(
    paths: &[PathBuf],
    bad: &mut dyn FnMut(&LoadError),
) -> Result<(Vec<Plan>, usize), LoadError> {
    Ok(load_files(&collect_named(paths)?, bad))
}

/// Loads the given case files; returns the valid plans and the number of invalid files, each
/// of which is handed to `bad` (to print) and never run.
pub fn load_files(files: &[Found], bad: &mut dyn FnMut(&LoadError)) -> (Vec<Plan>, usize) {
    let mut plans = Vec::new();
    let mut n_bad = 0;
    for f in files {
        match load_named(&f.path, &f.name) {
            Ok(p) => plans.push(p),
            Err(e) => {
                n_bad += 1;
                bad(&e);
            }
        }
    }
    (plans, n_bad)
}

/// The name of a case file given by itself: its path under the nearest catalogue root
/// (`eperm/root_vs_nondumpable_root_writev`), else its stem.
pub fn case_id(path: &Path) -> String {
    case_name(path, None)
}

/// [`collect_named`]'s name for `file`, found under the directory argument `arg` if any.
fn case_name(file: &Path, arg: Option<&Path>) -> String {
    let under_marker = std::fs::canonicalize(file).ok().and_then(|abs| {
        let root = abs
            .ancestors()
            .skip(1)
            .find(|d| d.join(CATALOGUE_MARKER).is_file())?;
        abs.strip_prefix(root).ok().map(Path::to_path_buf)
    });
    let rel = under_marker
        .or_else(|| arg.and_then(|a| file.strip_prefix(a).ok().map(Path::to_path_buf)))
        .filter(|r| r.file_name().is_some())
        .unwrap_or_else(|| file.file_name().map_or_else(PathBuf::new, PathBuf::from));
    let mut name = rel
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    for ext in [".yaml", ".yml"] {
        if let Some(stem) = name.strip_suffix(ext) {
            name.truncate(stem.len());
            break;
        }
    }
    if name.is_empty() {
        "case".into()
    } else {
        name
    }
}

/// Parses and validates one case file.
pub fn load(path: &Path) -> Result<Plan, LoadError> {
    load_named(path, &case_id(path))
}

/// [`load`] with the name [`collect_named`] gave the file.
pub fn load_named(path: &Path, name: &str) -> Result<Plan, LoadError> {
    let shown = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| LoadError {
        path: shown.clone(),
        line: None,
        column: None,
        message: e.to_string(),
    })?;
    load_str(&shown, name, &src)
}

/// Parses and validates case text (used by `load`, the fuzz targets and tests).
pub fn load_str(shown: &str, id: &str, src: &str) -> Result<Plan, LoadError> {
    let doc: CaseDoc = serde_yaml::from_str(src).map_err(|e| {
        let at = e.location();
        let mut msg = e.to_string();
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        LoadError {
            path: shown.to_string(),
            line: at.as_ref().map(|l| l.line()),
            column: at.as_ref().map(|l| l.column()),
            message: format!("{msg} (see docs/CASES.md)"),
        }
    })?;
    let (case, race) = doc.split();
    // The source is read for positions only when there is an error to place.
    let err = |e: plan::PlanError| {
        let at = crate::positions::Positions::of(src).locate(&e.field);
        LoadError {
            path: shown.to_string(),
            line: at.map(|p| p.line),
            column: at.map(|p| p.column),
            message: e.to_string(),
        }
    };
    let mut plan = plan::build(id, shown, &case).map_err(err)?;
    // A pin only root (or only a non-root user) gets, in a case that admits both, is a defect
    // of the file whoever runs it and on any machine: refused here, so `check` and `run` agree.
    check::pin_depends_on_harness(&plan).map_err(|m| err(plan::PlanError::new("expect", m)))?;
    if let Some(spec) = &race {
        plan.race = Some(crate::race::resolve(spec, &plan).map_err(err)?);
    }
    Ok(plan)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    Skip,
    Broken,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub plan: Plan,
    pub status: Status,
    /// Skip reason, failure detail or setup error.
    pub reason: Option<String>,
    /// For a skip: whether the kernel or this machine decided it (check::SkipBy).
    pub skip_by: Option<check::SkipBy>,
    /// For a skip: set when this system lacks what the case needs (check::Unsupported).
    pub unsupported: Option<check::Unsupported>,
    pub prediction: Option<Prediction>,
    pub observed: Option<Result<u64, i32>>,
    pub pid: Option<i32>,
    pub duration: Duration,
    /// For a race case: the allowed set and how often each outcome happened.
    pub race: Option<crate::race::RaceReport>,
}

/// Runs one validated case on the running kernel.
pub fn run_case(plan: &Plan, facts: &Facts, opts: &Options) -> CaseResult {
    let start = Instant::now();
    // Laid out in this system's address space (and its special mappings named): the model,
    // the requirements and every executor see the same addresses.
    let bound = plan.bind(facts);
    let plan: &Plan = &bound;
    let mut res = CaseResult {
        plan: plan.clone(),
        status: Status::Skip,
        reason: None,
        skip_by: None,
        unsupported: None,
        prediction: None,
        observed: None,
        pid: None,
        duration: Duration::ZERO,
        race: None,
    };
    let pred = model::predict(plan, facts);
    res.prediction = Some(pred.clone());
    if let Some(u) = check::unmet_here(plan, facts) {
        res.reason = Some(u.reason);
        res.skip_by = Some(u.by);
        res.unsupported = u.unsupported;
        res.duration = start.elapsed();
        return res;
    }
    // The pin is judged for the harness the case declares (check::pin_harness), so a
    // disagreement is the same for every user; a harness whose own credentials change the
    // model's outcome cannot check the pin and skips.
    if let Err(e) = check::check_pin(plan, facts) {
        res.status = Status::Fail;
        res.reason = Some(e);
        res.duration = start.elapsed();
        return res;
    }
    if let Some(why) = check::pin_not_checkable_here(plan, facts) {
        res.reason = Some(why);
        res.skip_by = Some(check::SkipBy::Machine);
        res.duration = start.elapsed();
        return res;
    }
    if let Some(race) = &plan.race {
        if let Some(out) = guarded(&mut res, || exec::race::execute(plan, race, facts, opts)) {
            res.race = Some(out.report);
            match out.failure {
                Some((r, _)) if not_implemented(&mut res, plan, r) => {}
                None => res.status = Status::Pass,
                Some((r, why)) => {
                    res.status = Status::Fail;
                    res.observed = Some(r);
                    res.reason = Some(why);
                }
            }
        }
    } else if let Some(obs) = guarded(&mut res, || exec::execute(plan, facts, opts)) {
        res.observed = Some(obs.result);
        res.pid = Some(obs.pid);
        match check::compare(plan, &pred, &obs) {
            Ok(()) => res.status = Status::Pass,
            Err(_) if not_implemented(&mut res, plan, obs.result) => {}
            Err(e) => {
                res.status = Status::Fail;
                res.reason = Some(e);
            }
        }
    }
    res.duration = start.elapsed();
    res
}

/// Runs an executor; a panic or an executor error makes the case `broken` (a harness
/// failure, not a kernel result) with the reason, and gives `None`.
fn guarded<T>(res: &mut CaseResult, f: impl FnOnce() -> Result<T, String>) -> Option<T> {
    let reason = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(e)) => e,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            format!("harness panicked: {msg}")
        }
    };
    match reason.strip_prefix(exec::UNSUPPORTED) {
        Some(why) => {
            res.status = Status::Skip;
            res.skip_by = Some(check::SkipBy::Kernel);
            res.unsupported = Some(check::Unsupported::Feature);
            res.reason = Some(why.to_string());
        }
        None => {
            res.status = Status::Broken;
            res.reason = Some(reason);
        }
    }
    None
}

/// A call that gives ENOSYS where Linux gives something else: the kernel or runtime does not
/// implement it (CONFIG_CROSS_MEMORY_ATTACH=n; gVisor 20221219, qemu-user 7.2). That is no
/// divergence of the call's rules to judge: the case skips, saying so.
fn not_implemented(res: &mut CaseResult, plan: &Plan, observed: Result<u64, i32>) -> bool {
    let predicted = res.prediction.as_ref().map(|p| p.result);
    if observed != Err(libc::ENOSYS) || predicted == Some(Err(libc::ENOSYS)) {
        return false;
    }
    let name = match plan.call.syscall {
        crate::case::Syscall::Readv => "process_vm_readv",
        crate::case::Syscall::Writev => "process_vm_writev",
    };
    res.status = Status::Skip;
    res.skip_by = Some(check::SkipBy::Kernel);
    res.unsupported = Some(check::Unsupported::NotImplemented);
    res.observed = Some(observed);
    res.reason = Some(format!(
        "not implemented: {name} returned ENOSYS (a kernel without CONFIG_CROSS_MEMORY_ATTACH, or a runtime without the call)"
    ));
    true
}

/// Summary counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
    pub broken: usize,
}

impl Summary {
    pub fn of(results: &[CaseResult]) -> Summary {
        Summary::of_statuses(results.iter().map(|r| r.status))
    }

    pub fn of_statuses(statuses: impl IntoIterator<Item = Status>) -> Summary {
        let mut s = Summary::default();
        for st in statuses {
            match st {
                Status::Pass => s.pass += 1,
                Status::Fail => s.fail += 1,
                Status::Skip => s.skip += 1,
                Status::Broken => s.broken += 1,
            }
        }
        s
    }
}

impl Status {
    /// From the JSON name (`"pass"`, …); anything else is `Broken`.
    pub fn from_name(name: Option<&str>) -> Status {
        match name {
            Some("pass") => Status::Pass,
            Some("fail") => Status::Fail,
            Some("skip") => Status::Skip,
            _ => Status::Broken,
        }
    }
}

/// How the `pid` argument is shown: never a number that changes between runs.
pub fn pid_label(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Child => "<target>",
        TargetKind::SelfProcess => "<self>",
        TargetKind::Thread => "<thread>",
        TargetKind::CloneVm => "<clone_vm child>",
        TargetKind::Zombie => "<zombie>",
        TargetKind::Reaped => "<reaped>",
        TargetKind::UnusedPid => "<pid_max>",
        TargetKind::Pid0 => "0",
        TargetKind::PidMinus1 => "-1",
        TargetKind::Kthread => "2",
        TargetKind::ZombieLeader => "<zombie leader>",
        TargetKind::ZombieLeaderThread => "<live thread>",
        TargetKind::PidnsChild => "<pidns child>",
    }
}

fn render_iovs(label: &Option<String>, groups: &[plan::IovGroup]) -> String {
    if let Some(l) = label {
        return l.clone();
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|g| {
            let len = if g.len > 1 << 40 {
                format!("{:#x}", g.len)
            } else {
                g.len.to_string()
            };
            let one = format!("{{{},{}}}", g.label, len);
            if g.count > 1 {
                format!(
                    "{one}×{}{}",
                    g.count,
                    if g.stride > 0 {
                        format!(" stride {}", g.stride)
                    } else {
                        String::new()
                    }
                )
            } else {
                one
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn count(n: u64) -> String {
    if n > 1 << 20 {
        format!("{n:#x}")
    } else {
        n.to_string()
    }
}

/// The call as a C-like line, with names instead of addresses.
pub fn render_call(plan: &Plan) -> String {
    let c = &plan.call;
    let name = match c.syscall {
        crate::case::Syscall::Readv => "process_vm_readv",
        crate::case::Syscall::Writev => "process_vm_writev",
    };
    let entry = if c.entry == crate::case::Entry::Compat {
        " [int 0x80]"
    } else {
        ""
    };
    format!(
        "{name}(pid={}, local={}, remote={}, liovcnt={}, riovcnt={}, flags={}){entry}",
        pid_label(plan.target_kind),
        render_iovs(&c.lvec_label, &c.local_groups),
        render_iovs(&c.rvec_label, &c.remote_groups),
        count(c.liovcnt),
        count(c.riovcnt),
        count(c.flags),
    )
}

/// Runs every plan, `jobs` at a time, and returns the results in the plans' order. Cases are
/// independent: each forks its own target and caller and touches nothing in this process's
/// address space, so they can overlap.
pub fn run_all(plans: &[Plan], facts: &Facts, opts: &Options, jobs: usize) -> Vec<CaseResult> {
    run_all_with(plans, facts, opts, jobs, &|_| {})
}

/// [`run_all`], calling `done` with each result as soon as it exists (in completion order),
/// so a caller can stream progress.
pub fn run_all_with(
    plans: &[Plan],
    facts: &Facts,
    opts: &Options,
    jobs: usize,
    done: &(dyn Fn(&CaseResult) + Sync),
) -> Vec<CaseResult> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<CaseResult>>> = plans.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(plans.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(plan) = plans.get(i) else { break };
                let r = run_case(plan, facts, opts);
                done(&r);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// The suffix of a case's second run with Yama out of the way ([`with_yama0_variants`]).
pub const YAMA0_SUFFIX: &str = "@yama0";

/// The plans, each followed by its `<case>@yama0` variant when Yama at the facts' scope hides
/// the permission checks the case reaches ([`crate::model::yama_hides_permission_checks`]):
/// the same plan requiring `ptrace_scope` 0, so it runs in that pass (inside a VM) or skips on
/// the requirement (anywhere else). A case that declares a scope is left alone: it is about
/// Yama. Without Yama or at scope 0 (Debian's default) the list is returned unchanged.
pub fn with_yama0_variants(plans: Vec<Plan>, facts: &Facts) -> Vec<Plan> {
    let mut out = Vec::with_capacity(plans.len());
    for p in plans {
        let variant = (p.requires.yama_scope.is_none()
            && crate::model::yama_hides_permission_checks(&p, facts))
        .then(|| {
            let mut v = p.clone();
            v.id = format!("{}{YAMA0_SUFFIX}", p.id);
            v.requires.yama_scope = Some(0);
            v
        });
        out.push(p);
        out.extend(variant);
    }
    out
}

/// The case a result belongs to: its id without [`YAMA0_SUFFIX`].
pub fn case_of(id: &str) -> &str {
    id.strip_suffix(YAMA0_SUFFIX).unwrap_or(id)
}

/// Runs plans in passes by the Yama `ptrace_scope` they require: first the cases that require
/// none, at whatever scope the machine has, then, for each required scope in ascending order
/// (3 last: it can never be lowered again), the cases that require it. Only when `set_scope`
/// is true (inside a kernel-matrix VM, which is thrown away afterwards) is the scope written;
/// otherwise those cases meet a different scope and skip on their requirement. Facts are read
/// afresh for each pass. Returns the results in plan order and the first pass's facts.
pub fn run_in_scope_passes(
    plans: &[Plan],
    opts: &Options,
    jobs: usize,
    set_scope: bool,
    done: &(dyn Fn(&CaseResult) + Sync),
) -> (Vec<CaseResult>, Facts) {
    let mut scopes: Vec<Option<u8>> = plans.iter().map(|p| p.requires.yama_scope).collect();
    scopes.sort();
    scopes.dedup();
    let mut first_facts = None;
    let mut out: Vec<Option<CaseResult>> = plans.iter().map(|_| None).collect();
    for scope in scopes {
        if let (Some(s), true) = (scope, set_scope) {
            // Without Yama the file is absent and these cases skip on the requirement.
            let _ = std::fs::write("/proc/sys/kernel/yama/ptrace_scope", s.to_string());
        }
        let facts = Facts::detect();
        let idx: Vec<usize> = (0..plans.len())
            .filter(|&i| plans[i].requires.yama_scope == scope)
            .collect();
        let batch: Vec<Plan> = idx.iter().map(|&i| plans[i].clone()).collect();
        let results = run_all_with(&batch, &facts, opts, jobs, done);
        for (i, r) in idx.into_iter().zip(results) {
            out[i] = Some(r);
        }
        first_facts.get_or_insert(facts);
    }
    (
        out.into_iter().flatten().collect(),
        first_facts.unwrap_or_else(Facts::detect),
    )
}
