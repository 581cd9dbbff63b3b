//! `kernel-matrix coverage SRC [--patch FILE]... [--out DIR] [--report DIR] [--filter GLOB]`:
//! which lines of the kernel code behind
//!
//! ```c
//! ssize_t process_vm_readv(pid_t pid, const struct iovec *local_iov, unsigned long liovcnt,
//!                          const struct iovec *remote_iov, unsigned long riovcnt, unsigned long flags);
//! ```
//!
//! (and `process_vm_writev`) the whole catalogue never executes.
//!
//! The tree is built as `kernel-matrix build --config minimal` builds it, plus gcov
//! ([`build::GCOV_CONFIG`], [`build::GCOV_OBJECTS`]), in a build directory of its own. The
//! catalogue runs once in it, every Yama pass included, and the guest sends the `.gcda`
//! files on the data port before power-off (`pvmtest::guest::Line::Gcov`). They are written
//! next to their `.gcno` in the O= directory; `gcov -b -j` gives the per-function table
//! (gcovr reports per file only) and gcovr the annotated HTML. docs/COVERAGE.md has the
//! measurement and what is unreachable, and why.

use crate::build::{self, BuildRequest, ConfigChoice};
use crate::cli::{self, Common};
use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The functions of the syscall path the table reports, by source file.
pub const FUNCTIONS: [(&str, &str); 12] = [
    ("mm/process_vm_access.c", "process_vm_rw"),
    ("mm/process_vm_access.c", "process_vm_rw_core"),
    ("mm/process_vm_access.c", "process_vm_rw_single_vec"),
    ("mm/process_vm_access.c", "process_vm_rw_pages"),
    ("lib/iov_iter.c", "__import_iovec"),
    ("lib/iov_iter.c", "__import_iovec_ubuf"),
    ("lib/iov_iter.c", "iovec_from_user"),
    ("lib/iov_iter.c", "copy_iovec_from_user"),
    ("lib/iov_iter.c", "copy_compat_iovec_from_user"),
    ("kernel/ptrace.c", "__ptrace_may_access"),
    ("kernel/ptrace.c", "ptrace_has_cap"),
    ("kernel/ptrace.c", "task_still_dumpable"),
];

/// gcov and gcovr each get this long per object / per report.
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// gcov's JSON (`gcov -b -j -t`, format of gcc 9 and later)

#[derive(Debug, Clone, Deserialize)]
pub struct GcovJson {
    #[serde(default)]
    pub current_working_directory: String,
    pub files: Vec<GcovFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GcovFile {
    pub file: String,
    pub functions: Vec<GcovFunction>,
    pub lines: Vec<GcovLine>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GcovFunction {
    pub name: String,
    pub start_line: u32,
    pub end_line: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GcovLine {
    pub line_number: u32,
    pub count: u64,
    #[serde(default)]
    pub branches: Vec<GcovBranch>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GcovBranch {
    pub count: u64,
}

/// One `gcov -j -t` document; `what` names it in the error.
pub fn parse_gcov_json(text: &str, what: &str) -> Result<GcovJson> {
    serde_json::from_str(text)
        .map_err(|e| Error::new(format!("{what}: not gcov's JSON output ({e})")))
}

/// One function's line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub file: String,
    pub name: String,
    /// False when the data has no such function (its object not instrumented).
    pub found: bool,
    /// Lines with code that ran / lines with code, ENOMEM lines that never ran excluded.
    pub lines_hit: usize,
    pub lines_total: usize,
    /// Branch arcs taken / all, the arcs of ENOMEM branches excluded.
    pub arcs_taken: usize,
    pub arcs_total: usize,
    /// Lines with code that never ran.
    pub unreached: Vec<u32>,
    /// Lines with an arc never taken.
    pub untaken: Vec<u32>,
    /// Lines left out above because they are an allocation failure's branch.
    pub enomem: Vec<u32>,
}

impl Row {
    pub fn percent(&self) -> f64 {
        if self.lines_total == 0 {
            0.0
        } else {
            100.0 * self.lines_hit as f64 / self.lines_total as f64
        }
    }
}

/// Whether line `n` (1-based) of `source` is an allocation failure's branch: the line
/// itself or the next (the body of its `if`) says ENOMEM. At -O2 a bare `return -ENOMEM;`
/// often has no code of its own, so its path shows only as an untaken arc on the `if`.
pub fn is_enomem(source: &str, n: u32) -> bool {
    let mut lines = source.lines().skip((n as usize).saturating_sub(1));
    let (a, b) = (lines.next(), lines.next());
    a.is_some_and(|l| l.contains("ENOMEM")) || b.is_some_and(|l| l.contains("ENOMEM"))
}

/// The table's rows: for each `(file, function)` of `functions`, the lines gcov lists inside
/// the function's `[start_line, end_line]` in the file whose path ends with `file`.
/// `source(file)` gives a file's text, to recognise ENOMEM branches (none when `None`).
pub fn rows(
    docs: &[GcovJson],
    functions: &[(&str, &str)],
    source: &dyn Fn(&GcovJson, &GcovFile) -> Option<String>,
) -> Vec<Row> {
    functions
        .iter()
        .map(|&(file, name)| {
            let mut row = Row {
                file: file.to_string(),
                name: name.to_string(),
                found: false,
                lines_hit: 0,
                lines_total: 0,
                arcs_taken: 0,
                arcs_total: 0,
                unreached: vec![],
                untaken: vec![],
                enomem: vec![],
            };
            let hit = docs.iter().find_map(|d| {
                d.files
                    .iter()
                    .filter(|f| f.file == file || f.file.ends_with(&format!("/{file}")))
                    .find_map(|f| {
                        let func = f.functions.iter().find(|x| x.name == name)?;
                        Some((d, f, func))
                    })
            });
            let Some((doc, f, func)) = hit else {
                return row;
            };
            row.found = true;
            let text = source(doc, f).unwrap_or_default();
            let mut enomem = std::collections::BTreeSet::new();
            for l in f
                .lines
                .iter()
                .filter(|l| (func.start_line..=func.end_line).contains(&l.line_number))
            {
                let n = l.line_number;
                let alloc_failure = is_enomem(&text, n);
                if l.count == 0 {
                    if alloc_failure {
                        enomem.insert(n);
                        continue;
                    }
                    row.unreached.push(n);
                } else {
                    row.lines_hit += 1;
                }
                row.lines_total += 1;
                let untaken = l.branches.iter().any(|b| b.count == 0);
                if untaken && alloc_failure {
                    enomem.insert(n);
                    continue;
                }
                row.arcs_total += l.branches.len();
                row.arcs_taken += l.branches.iter().filter(|b| b.count > 0).count();
                if untaken {
                    row.untaken.push(n);
                }
            }
            row.enomem = enomem.into_iter().collect();
            row
        })
        .collect()
}

fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// The terminal table: one line per function, then, indented under it, what it misses
/// (lists of line numbers vary too much in length for columns); a total line at the end.
pub fn table(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(8).max(8);
    let mut out = format!(
        "{:<w$}  {:>9}  {:>6}  {:>7}\n",
        "function", "lines", "cover", "arcs"
    );
    let (mut hit, mut total) = (0, 0);
    for r in rows {
        if !r.found {
            out.push_str(&format!(
                "{:<w$}  not in the data ({} not instrumented?)\n",
                r.name, r.file
            ));
            continue;
        }
        hit += r.lines_hit;
        total += r.lines_total;
        out.push_str(&format!(
            "{:<w$}  {:>9}  {:>5.1}%  {:>7}\n",
            r.name,
            format!("{}/{}", r.lines_hit, r.lines_total),
            r.percent(),
            format!("{}/{}", r.arcs_taken, r.arcs_total),
        ));
        for (what, v) in [
            ("unreached lines", &r.unreached),
            ("untaken arcs at", &r.untaken),
            ("ENOMEM, excepted", &r.enomem),
        ] {
            if !v.is_empty() {
                out.push_str(&format!("    {what}: {}\n", list(v)));
            }
        }
    }
    let pct = if total == 0 {
        0.0
    } else {
        100.0 * hit as f64 / total as f64
    };
    out.push_str(&format!(
        "{:<w$}  {:>9}  {:>5.1}%\n",
        format!("all {}", rows.len()),
        format!("{hit}/{total}"),
        pct
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// The tools

/// Runs `cmd` with stdout to `out` (a file, so a large output never blocks on a pipe),
/// killing it after `timeout`. Returns stderr's text; a non-zero exit is an error.
fn run_tool(cmd: &mut Command, out: &Path, what: &str, timeout: Duration) -> Result<String> {
    let f = std::fs::File::create(out)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))?;
    let err_path = out.with_extension("stderr");
    let ef = std::fs::File::create(&err_path)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", err_path.display())))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(ef)
        .spawn()
        .map_err(|e| Error::new(format!("cannot run {what}: {e}")))?;
    pvmtest::exec::proc::track(child.id() as i32);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    pvmtest::exec::proc::untrack(child.id() as i32);
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    match status {
        Some(s) if s.success() => Ok(err),
        Some(s) => Err(Error::new(format!(
            "{what} failed ({s}): {}",
            err.lines().next().unwrap_or("no message").trim()
        ))),
        None => Err(Error::new(format!(
            "{what} did not finish within {} s",
            timeout.as_secs()
        ))),
    }
}

/// The first line of `prog --version`, or `None` when it does not run.
fn version_line(prog: &str) -> Option<String> {
    let o = Command::new(prog)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

/// `major.minor` of the last word of a `--version` line (`gcov (Debian 12.2.0-14) 12.2.0`).
pub fn major_minor(version_line: &str) -> Option<String> {
    let v = version_line.split_whitespace().last()?;
    let mut it = v.split('.');
    let (a, b) = (it.next()?, it.next()?);
    (a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok()).then(|| format!("{a}.{b}"))
}

/// gcov and gcovr are there, and gcov is the compiler's (a `.gcno` of another gcc is
/// unreadable, or read wrong).
pub fn check_tools() -> Result<()> {
    let gcov = version_line("gcov").ok_or_else(|| {
        Error::new("gcov not found (it comes with the compiler: apt-get install gcc)")
    })?;
    version_line("gcovr").ok_or_else(|| {
        Error::new("gcovr not found (apt-get install gcovr, or pip install gcovr)")
    })?;
    let o = Command::new("gcc")
        .arg("-dumpfullversion")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("cannot run gcc: {e} (apt-get install gcc)")))?;
    let gcc = String::from_utf8_lossy(&o.stdout).trim().to_string();
    match (major_minor(&gcov), major_minor(&gcc)) {
        (Some(a), Some(b)) if a == b => Ok(()),
        _ => Err(Error::new(format!(
            "gcov ({}) is not the gcov of the compiler that builds the kernel (gcc {gcc}); put gcc's own gcov first on PATH (gcov-{})",
            gcov.trim(),
            gcc.split('.').next().unwrap_or("N")
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// The command

/// `kernel-matrix coverage`'s arguments.
pub struct Request {
    pub src: PathBuf,
    pub patches: Vec<PathBuf>,
    pub out: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub filters: Vec<String>,
    pub jobs: usize,
}

/// `mm/gup.o` → `mm/gup.gcda`.
fn gcda_name(object: &str) -> String {
    format!("{}.gcda", object.trim_end_matches(".o"))
}

/// The `.gcda` for `object` (`mm/gup.o`) among the files the guest sent: the one whose
/// path ends with `/mm/gup.gcda` (debugfs mirrors the build directory's absolute path).
pub fn gcda_for<'a>(object: &str, sent: &'a [(String, Vec<u8>)]) -> Option<&'a [u8]> {
    let want = format!("/{}", gcda_name(object));
    sent.iter()
        .find(|(p, _)| p.ends_with(&want))
        .map(|(_, d)| d.as_slice())
}

/// Each object's counters among those the guest sent; a missing one is an error naming it
/// (a silent 0% would be a broken measurement, not a result).
pub fn collect_gcda<'a, 'o>(
    objects: &[&'o str],
    sent: &'a [(String, Vec<u8>)],
    failure: Option<&str>,
) -> Result<Vec<(&'o str, &'a [u8])>> {
    objects
        .iter()
        .map(|&o| {
            gcda_for(o, sent).map(|d| (o, d)).ok_or_else(|| {
                Error::new(format!(
                    "the guest sent no counters for {o} ({} of {} .gcda files arrived{}); nothing was measured",
                    objects.iter().filter(|x| gcda_for(x, sent).is_some()).count(),
                    objects.len(),
                    failure.map_or(String::new(), |f| format!("; the kernel is broken: {f}"))
                ))
            })
        })
        .collect()
}

pub fn command(common: &Common, req: &Request) -> Result<i32> {
    // Everything that can be wrong with the input is said before the build.
    build::detect_tree(&req.src)?;
    for p in &req.patches {
        build::read_patch(p)?;
    }
    check_tools()?;
    let cases = vec![crate::matrix::default_cases()];
    cli::check_cases(&cases, &req.filters)?;
    crate::boot::find_qemu()?;
    let cache = crate::cache::Cache::from_env(common.cache_dir.as_deref())?;

    let breq = BuildRequest {
        src: req.src.clone(),
        patches: req.patches.clone(),
        config: ConfigChoice::Minimal,
        out: req.out.clone(),
        jobs: req.jobs,
        gcov: true,
        nice: 15,
    };
    let say = |l: &str| eprintln!("{l}");
    let built = build::build(&breq, &cache, &cases[0], &say)?;
    if built.seconds > 0.0 {
        eprintln!(
            "kernel-matrix: built {} in {:.0} s (make bzImage, nice 15); build log {}",
            built.release,
            built.seconds,
            built.log.display()
        );
    }
    for o in build::GCOV_OBJECTS {
        let gcno = built.obj.join(format!("{}.gcno", o.trim_end_matches(".o")));
        if !gcno.is_file() {
            return Err(Error::new(format!(
                "the build made no {} ({o} was not instrumented); the build log is {}",
                gcno.display(),
                built.log.display()
            )));
        }
        // Counters of an earlier run must not pass for this one's.
        let _ = std::fs::remove_file(built.obj.join(gcda_name(o)));
    }

    let sel = crate::matrix::select_image(&crate::matrix::ImageArg {
        name: Some(format!("cov-{}", built.release)),
        path: built.image.clone(),
    })?;
    let results = cli::run_selected_full(
        common,
        std::slice::from_ref(&sel),
        &cases,
        &req.filters,
        None,
        &|_| Ok(()),
        true,
    )?;
    let k = results
        .kernels
        .first()
        .ok_or_else(|| Error::new("the coverage kernel did not run"))?;
    println!("{}", crate::report::kernel_line(k));

    let failure = k.failure.as_deref();
    for (o, data) in collect_gcda(&build::GCOV_OBJECTS, &k.gcov, failure)? {
        crate::cache::write_atomic(&built.obj.join(gcda_name(o)), data)?;
    }

    let report = match &req.report {
        Some(r) => r.clone(),
        None => built
            .log
            .parent()
            .map_or_else(|| PathBuf::from("coverage"), |d| d.join("coverage")),
    };
    crate::cache::create_dir(&report)?;
    let mut docs = Vec::new();
    for o in [
        "mm/process_vm_access.o",
        "lib/iov_iter.o",
        "kernel/ptrace.o",
    ] {
        let gcda = built.obj.join(gcda_name(o));
        let dir = gcda.parent().unwrap_or(&built.obj).to_path_buf();
        let json = report.join(format!(
            "{}.gcov.json",
            Path::new(o)
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
        ));
        let err = run_tool(
            Command::new("gcov")
                .args(["-b", "-j", "-t", "-o"])
                .arg(&dir)
                .arg(&gcda)
                .current_dir(&built.obj),
            &json,
            &format!("gcov on {o}"),
            TOOL_TIMEOUT,
        )?;
        if let Some(l) = err.lines().find(|l| l.contains("version")) {
            return Err(Error::new(format!(
                "gcov cannot read {o}'s counters: {} (use the gcov of the gcc that built the kernel)",
                l.trim()
            )));
        }
        let text = std::fs::read_to_string(&json)
            .map_err(|e| Error::new(format!("{}: {e}", json.display())))?;
        docs.push(parse_gcov_json(&text, &json.display().to_string())?);
    }
    let source = |d: &GcovJson, f: &GcovFile| {
        let p = Path::new(&d.current_working_directory).join(&f.file);
        std::fs::read_to_string(p).ok()
    };
    let rs = rows(&docs, &FUNCTIONS, &source);
    let text = table(&rs);
    crate::cache::write_atomic(&report.join("functions.txt"), text.as_bytes())?;

    let filter = format!(
        ".*/({})\\.c$",
        build::GCOV_OBJECTS
            .iter()
            .map(|o| o.trim_end_matches(".o"))
            .collect::<Vec<_>>()
            .join("|")
    );
    run_tool(
        Command::new("gcovr")
            .arg("--root")
            .arg(&built.src)
            .arg("--object-directory")
            .arg(&built.obj)
            .args(["-f", &filter, "--html-details"])
            .arg(report.join("index.html"))
            .arg(&built.obj)
            .current_dir(&built.obj),
        &report.join("gcovr.txt"),
        "gcovr",
        TOOL_TIMEOUT,
    )?;
    print!("{text}");
    eprintln!(
        "kernel-matrix: HTML report {}; gcov JSON and this table in {}",
        report.join("index.html").display(),
        report.display()
    );
    Ok(if k.is_clean() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (GcovJson, String) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gcov");
        let json = std::fs::read_to_string(dir.join("demo.gcov.json")).unwrap();
        let src = std::fs::read_to_string(dir.join("demo.c")).unwrap();
        (parse_gcov_json(&json, "demo.gcov.json").unwrap(), src)
    }

    fn demo_rows(funcs: &[(&str, &str)]) -> Vec<Row> {
        let (doc, src) = fixture();
        rows(&[doc], funcs, &|_, f| {
            (f.file == "demo.c").then(|| src.clone())
        })
    }

    /// The fixture is real `gcov -b -j` output of tests/fixtures/gcov/demo.c run once; the
    /// expected figures are read off that source (see the comments there).
    #[test]
    fn rows_follow_the_fixture() {
        let rs = demo_rows(&[
            ("demo.c", "grow"),
            ("demo.c", "classify"),
            ("demo.c", "never"),
            ("demo.c", "main"),
            ("lib/other.c", "absent"),
        ]);
        // grow: malloc never fails; `if (!p)` (12) and `return -ENOMEM;` (13) are excepted.
        let g = &rs[0];
        assert!(g.found);
        assert_eq!((g.lines_hit, g.lines_total), (6, 6));
        assert_eq!((g.arcs_taken, g.arcs_total), (0, 0));
        assert_eq!(g.unreached, Vec::<u32>::new());
        assert_eq!(g.enomem, vec![12, 13]);
        // classify(1), classify(0): never negative.
        let c = &rs[1];
        assert_eq!((c.lines_hit, c.lines_total), (5, 6));
        assert_eq!((c.arcs_taken, c.arcs_total), (3, 4));
        assert_eq!(c.unreached, vec![22]);
        assert_eq!(c.untaken, vec![21]);
        assert!(c.enomem.is_empty());
        // never: not called.
        assert_eq!((rs[2].lines_hit, rs[2].lines_total), (0, 2));
        assert_eq!(rs[2].unreached, vec![28, 30]);
        // main: grow never fails, so the arc past free() is untaken; not an ENOMEM line.
        assert_eq!((rs[3].lines_hit, rs[3].lines_total), (4, 4));
        assert_eq!((rs[3].arcs_taken, rs[3].arcs_total), (1, 2));
        assert_eq!(rs[3].untaken, vec![38]);
        assert!(!rs[4].found);
    }

    /// Without the source no line is an ENOMEM branch: grow's lines count in full.
    #[test]
    fn enomem_needs_the_source() {
        let (doc, _) = fixture();
        let rs = rows(&[doc], &[("demo.c", "grow")], &|_, _| None);
        assert_eq!((rs[0].lines_hit, rs[0].lines_total), (6, 7));
        assert_eq!(rs[0].unreached, vec![13]);
        assert_eq!(rs[0].untaken, vec![12]);
        assert!(rs[0].enomem.is_empty());
    }

    #[test]
    fn table_reads_well() {
        let rs = demo_rows(&[("demo.c", "classify"), ("demo.c", "grow"), ("x.c", "gone")]);
        let t = table(&rs);
        let want = "\
function      lines   cover     arcs
classify        5/6   83.3%      3/4
    unreached lines: 22
    untaken arcs at: 21
grow            6/6  100.0%      0/0
    ENOMEM, excepted: 12, 13
gone      not in the data (x.c not instrumented?)
all 3         11/12   91.7%
";
        assert_eq!(t, want);
    }

    #[test]
    fn bad_json_is_one_line() {
        let e = parse_gcov_json("{\"files\": 3}", "x.json").unwrap_err().0;
        assert!(e.starts_with("x.json: not gcov's JSON output"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn enomem_lines() {
        let src = "a\nif (!p)\n\treturn -ENOMEM;\nb\n";
        assert!(is_enomem(src, 2));
        assert!(is_enomem(src, 3));
        assert!(!is_enomem(src, 4));
        assert!(!is_enomem(src, 1));
        assert!(!is_enomem(src, 99));
    }

    #[test]
    fn versions_and_gcda_names() {
        assert_eq!(
            major_minor("gcov (Debian 12.2.0-14+deb12u1) 12.2.0").as_deref(),
            Some("12.2")
        );
        assert_eq!(major_minor("12.2.0").as_deref(), Some("12.2"));
        assert_eq!(major_minor("gcov (GCC)"), None);
        let sent = vec![
            (
                "/sys/kernel/debug/gcov/b/obj/mm/gup.gcda".to_string(),
                vec![1],
            ),
            (
                "/sys/kernel/debug/gcov/b/obj/lib/iov_iter.gcda".to_string(),
                vec![2],
            ),
        ];
        assert_eq!(gcda_for("mm/gup.o", &sent), Some(&[1u8][..]));
        assert_eq!(gcda_for("lib/iov_iter.o", &sent), Some(&[2u8][..]));
        assert_eq!(gcda_for("kernel/fork.o", &sent), None);
        let got = collect_gcda(&["lib/iov_iter.o", "mm/gup.o"], &sent, None).unwrap();
        assert_eq!(
            got,
            vec![("lib/iov_iter.o", &[2u8][..]), ("mm/gup.o", &[1u8][..])]
        );
        let e = collect_gcda(&["mm/gup.o", "kernel/fork.o"], &sent, Some("timed out"))
            .unwrap_err()
            .0;
        assert_eq!(
            e,
            "the guest sent no counters for kernel/fork.o (1 of 2 .gcda files arrived; the kernel is broken: timed out); nothing was measured"
        );
    }
}
