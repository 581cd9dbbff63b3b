//! `kernel-matrix build SRC [--patch FILE]... [--config minimal|FILE] [--out DIR]`: a bootable
//! bzImage from a kernel source tree, the way a kernel developer iterates on mm/ or
//! lib/iov_iter.c.
//!
//! The user's tree is never written to. Everything lives under `<cache>/builds/<key>/`, where
//! the key hashes the tree's path and the configuration (not the patches, so that switching
//! between "unpatched" and "patched" rebuilds only the files the patches touch):
//!
//! ```text
//! src/        a scratch tree: `git worktree add` of HEAD for a git tree, else a farm of hard
//!             links to the user's files; patched files are private copies (GNU patch writes
//!             a new file and renames it over the link, so the user's inode is never opened
//!             for writing)
//! obj/        the O= build directory (or --out DIR)
//! build.log   the last build's make output
//! state.json  what src/ currently holds: the HEAD commit, the patches applied, the files
//!             they touched, the configuration stamp
//! images/<patch-set>/bzImage   a copy of each result, so compare can boot two of them
//! lock        flock(2), so two runs never share src/ or obj/ at once
//! ```
//!
//! The configuration is `make tinyconfig`, then `config/minimal.config` (plus a user's
//! fragment), then `make olddefconfig`; every symbol asked for must be one the tree's Kconfig
//! defines and must keep its value, or the build stops before compiling. `config/features.txt`
//! maps the catalogue's features to symbols, to say which cases will skip.
//!
//! A coverage build (`BuildRequest::gcov`, for `kernel-matrix coverage`) adds
//! [`GCOV_CONFIG`] and instruments [`GCOV_OBJECTS`] through private copies of their
//! directories' Makefiles; the configuration stamp includes both, so it gets its own key.

use crate::cache::{self, Cache};
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pvmtest::case::Feature;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fragment `--config minimal` applies on top of `make tinyconfig`.
pub const MINIMAL_CONFIG: &str = include_str!("../config/minimal.config");
/// Catalogue feature → configuration it needs.
pub const FEATURES: &str = include_str!("../config/features.txt");
/// A build that has not finished after this long is stuck (a cold minimal build takes about
/// 10 minutes on 2 cores).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// `--config`: the minimal guest, or the minimal guest plus a fragment of the user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChoice {
    Minimal,
    Fragment(PathBuf),
}

impl std::str::FromStr for ConfigChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<ConfigChoice, String> {
        Ok(if s == "minimal" {
            ConfigChoice::Minimal
        } else {
            ConfigChoice::Fragment(PathBuf::from(s))
        })
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub src: PathBuf,
    pub patches: Vec<PathBuf>,
    pub config: ConfigChoice,
    pub out: Option<PathBuf>,
    pub jobs: usize,
    /// A coverage build (`kernel-matrix coverage`): [`GCOV_CONFIG`] on top of the
    /// configuration and [`GCOV_OBJECTS`] instrumented, in a build directory of its own.
    pub gcov: bool,
    /// Niceness added to make's (0: as this process).
    pub nice: i32,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The copy under images/ (stable for this tree, configuration and patch set).
    pub image: PathBuf,
    /// What `uname -r` says.
    pub release: String,
    pub log: PathBuf,
    pub obj: PathBuf,
    /// The scratch source tree make ran in (the `.gcno` files name sources under it).
    pub src: PathBuf,
    /// The patch files' names, for naming the kernel in a comparison.
    pub patch_names: Vec<String>,
    /// Whether make had anything to do.
    pub seconds: f64,
}

// ---------------------------------------------------------------------------------------------
// The source tree

/// A kernel source tree, recognised by its top Makefile, Kconfig and arch/x86.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTree {
    pub root: PathBuf,
    pub version: (u32, u32, u32),
    pub git: bool,
}

pub fn detect_tree(src: &Path) -> Result<KernelTree> {
    let not = |why: &str| {
        Error::new(format!(
            "{} is not a kernel source tree ({why}); give the top directory of a Linux tree (a git clone or an unpacked linux_X.orig.tar.xz)",
            src.display()
        ))
    };
    if !src.is_dir() {
        return Err(not("no such directory"));
    }
    let makefile = std::fs::read_to_string(src.join("Makefile"))
        .map_err(|_| not("no Makefile with VERSION and PATCHLEVEL"))?;
    let var = |name: &str| -> Option<u32> {
        makefile.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().parse().ok())?
        })
    };
    let (Some(major), Some(minor)) = (var("VERSION"), var("PATCHLEVEL")) else {
        return Err(not("its Makefile sets no VERSION and PATCHLEVEL"));
    };
    if !src.join("Kconfig").is_file() {
        return Err(not("no Kconfig"));
    }
    if !src.join("arch/x86/Kconfig").is_file() {
        return Err(not("no arch/x86"));
    }
    let root = src
        .canonicalize()
        .map_err(|e| Error::new(format!("{}: {e}", src.display())))?;
    Ok(KernelTree {
        git: root.join(".git").exists(),
        version: (major, minor, var("SUBLEVEL").unwrap_or(0)),
        root,
    })
}

/// Every symbol the tree's Kconfig files define (`config X` / `menuconfig X`).
pub fn kconfig_symbols(root: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if !name.starts_with('.') && name != "Documentation" {
                    stack.push(e.path());
                }
            } else if ft.is_file() && name.starts_with("Kconfig") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                for l in text.lines() {
                    let l = l.trim_start();
                    let rest = l
                        .strip_prefix("config")
                        .or_else(|| l.strip_prefix("menuconfig"));
                    if let Some(rest) = rest.filter(|r| r.starts_with([' ', '\t'])) {
                        if let Some(sym) = rest.split_whitespace().next() {
                            out.insert(sym.to_string());
                        }
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Fragments

/// One `CONFIG_X=v` of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub symbol: String,
    /// `y`, `m`, `n`, a number or a quoted string, as written.
    pub value: String,
    /// `# optional: CONFIG_X=v`: applied when the tree knows X, never an error.
    pub optional: bool,
    /// `file:line`, for errors.
    pub at: String,
}

/// Parses a Kconfig fragment: `CONFIG_X=v`, `# CONFIG_X is not set` (= n),
/// `# optional: CONFIG_X=v`, comments and blank lines.
pub fn parse_fragment(text: &str, name: &str) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        let l = raw.trim();
        let (body, optional) = match l.strip_prefix("# optional:") {
            Some(b) => (b.trim(), true),
            None => (l, false),
        };
        let setting = if let Some(sym) = body
            .strip_prefix("# CONFIG_")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            Some((sym.to_string(), "n".to_string()))
        } else if body.starts_with('#') || body.is_empty() {
            None
        } else {
            let (k, v) = body
                .strip_prefix("CONFIG_")
                .and_then(|r| r.split_once('='))
                .ok_or_else(|| {
                    Error::new(format!(
                        "{at}: '{raw}' is not a config line (write CONFIG_NAME=value, '# CONFIG_NAME is not set' or a # comment)"
                    ))
                })?;
            Some((k.to_string(), v.trim().to_string()))
        };
        if let Some((symbol, value)) = setting {
            let ok_name = !symbol.is_empty()
                && symbol
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !ok_name || value.is_empty() {
                return Err(Error::new(format!(
                    "{at}: '{raw}' is not a config line (write CONFIG_NAME=value with an upper-case NAME)"
                )));
            }
            out.push(Setting {
                symbol,
                value,
                optional,
                at,
            });
        }
    }
    Ok(out)
}

/// Required symbols the tree does not define: the first is an error naming it.
pub fn check_symbols(settings: &[Setting], known: &HashSet<String>, src: &Path) -> Result<()> {
    match settings
        .iter()
        .find(|s| !s.optional && !known.contains(&s.symbol))
    {
        Some(s) => Err(Error::new(format!(
            "{}: CONFIG_{} is not a symbol of {}'s Kconfig (fix the name, or mark the line '# optional: CONFIG_{}={}' if only some versions have it)",
            s.at,
            s.symbol,
            src.display(),
            s.symbol,
            s.value
        ))),
        None => Ok(()),
    }
}

/// A .config as symbol → value (`n` for `# CONFIG_X is not set`; absent symbols are not
/// in the map).
pub fn parse_dotconfig(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        if let Some(sym) = l
            .strip_prefix("# CONFIG_")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            out.insert(sym.to_string(), "n".to_string());
        } else if let Some((k, v)) = l.strip_prefix("CONFIG_").and_then(|r| r.split_once('=')) {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// The first required setting olddefconfig did not keep (a dependency is missing).
pub fn check_kept(settings: &[Setting], config: &BTreeMap<String, String>) -> Result<()> {
    for s in settings.iter().filter(|s| !s.optional) {
        let got = config.get(&s.symbol).map_or("n", String::as_str);
        if got != s.value {
            return Err(Error::new(format!(
                "{}: CONFIG_{}={} did not survive make olddefconfig (it reads {got}: a dependency is off or it is not selectable on x86_64); add what it depends on to the fragment",
                s.at, s.symbol, s.value
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Coverage: which catalogue features a .config lacks

/// One need of a feature: `SYM`, `!SYM`, alternatives `A|B`, or a version `>=X.Y`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    AnyOf(Vec<(String, bool)>),
    Since(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureNeeds {
    pub name: String,
    pub feature: Feature,
    pub needs: Vec<Need>,
}

/// Parses features.txt; every name must be a catalogue feature.
pub fn parse_features(text: &str) -> Result<Vec<FeatureNeeds>> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bad = |why: String| Error::new(format!("features.txt:{}: {why}", i + 1));
        let mut words = l.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let feature: Feature = serde_yaml::from_str(&name).map_err(|_| {
            bad(format!(
                "'{name}' is not a catalogue feature (harness/src/case.rs)"
            ))
        })?;
        let mut needs = Vec::new();
        for w in words {
            if w == "-" {
                continue;
            }
            if let Some(v) = w.strip_prefix(">=") {
                let (a, b) = v
                    .split_once('.')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .ok_or_else(|| bad(format!("'{w}': write >=MAJOR.MINOR")))?;
                needs.push(Need::Since(a, b));
            } else {
                needs.push(Need::AnyOf(
                    w.split('|')
                        .map(|a| match a.strip_prefix('!') {
                            Some(s) => (s.to_string(), false),
                            None => (a.to_string(), true),
                        })
                        .collect(),
                ));
            }
        }
        out.push(FeatureNeeds {
            name,
            feature,
            needs,
        });
    }
    Ok(out)
}

/// A feature the configuration (or the tree's version) does not provide, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lack {
    pub name: String,
    pub feature: Feature,
    pub why: String,
}

/// The features `config` (of a tree at `version`) lacks.
pub fn coverage(
    features: &[FeatureNeeds],
    config: &BTreeMap<String, String>,
    version: (u32, u32),
) -> Vec<Lack> {
    let is_y = |s: &str| config.get(s).is_some_and(|v| v == "y");
    let mut out = Vec::new();
    for f in features {
        let mut why = Vec::new();
        for n in &f.needs {
            match n {
                Need::Since(a, b) if version < (*a, *b) => why.push(format!(
                    "needs {a}.{b}+, the tree is {}.{}",
                    version.0, version.1
                )),
                Need::Since(..) => {}
                Need::AnyOf(alts) => {
                    if !alts.iter().any(|(s, want)| is_y(s) == *want) {
                        why.push(
                            alts.iter()
                                .map(|(s, want)| {
                                    if *want {
                                        format!("CONFIG_{s}=y")
                                    } else {
                                        format!("CONFIG_{s} off")
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(" or "),
                        );
                    }
                }
            }
        }
        if !why.is_empty() {
            out.push(Lack {
                name: f.name.clone(),
                feature: f.feature,
                why: why.join(", "),
            });
        }
    }
    out
}

/// How many catalogue cases under `cases` need `f` (0 when the catalogue cannot be read:
/// the count is information, the run validates the cases itself).
pub fn cases_needing(cases: &Path, f: Feature) -> usize {
    let Ok(files) = pvmtest::runner::collect(&[cases.to_path_buf()]) else {
        return 0;
    };
    files
        .iter()
        .filter_map(|p| pvmtest::runner::load(p).ok())
        .filter(|plan| {
            plan.requires.features.contains(&f)
                || (f == Feature::Yama && plan.requires.yama_scope.is_some())
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// Patches and the scratch tree

/// The files a unified diff touches, with one leading component stripped (`patch -p1`).
pub fn patch_paths(text: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("--- ").or_else(|| l.strip_prefix("+++ ")) else {
            continue;
        };
        let p = rest.split('\t').next().unwrap_or("").trim();
        if p == "/dev/null" {
            continue;
        }
        if let Some((_, tail)) = p.split_once('/') {
            if !tail.is_empty() && !tail.split('/').any(|c| c == "..") {
                out.insert(tail.to_string());
            }
        }
    }
    out.into_iter().collect()
}

/// A patch file read and checked: it exists and touches at least one file.
#[derive(Debug, Clone)]
pub struct Patch {
    /// As the user gave it (for messages).
    pub path: PathBuf,
    pub abs: PathBuf,
    pub sha256: String,
    pub files: Vec<String>,
}

pub fn read_patch(path: &Path) -> Result<Patch> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::new(format!(
            "--patch {}: {e} (give a unified diff, e.g. from git format-patch or diff -u)",
            path.display()
        ))
    })?;
    let files = patch_paths(&String::from_utf8_lossy(&bytes));
    if files.is_empty() {
        return Err(Error::new(format!(
            "--patch {}: no '--- a/FILE' / '+++ b/FILE' lines; give a unified diff with one leading directory (patch -p1), e.g. from git format-patch",
            path.display()
        )));
    }
    // patch -d changes directory before it opens -i: give it an absolute path.
    let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    Ok(Patch {
        path: path.to_path_buf(),
        abs,
        sha256: cache::sha256_hex(&bytes),
        files,
    })
}

/// Applies `patch` to `dir` (GNU patch -p1, no backups, no reject files).
pub fn apply_patch(dir: &Path, patch: &Patch) -> Result<()> {
    let out = Command::new("patch")
        .args(["-p1", "--forward", "--batch", "--no-backup-if-mismatch"])
        .args(["--reject-file=-", "-d"])
        .arg(dir)
        .arg("-i")
        .arg(&patch.abs)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::new(format!(
                "cannot run patch: {e} (install it: apt-get install patch)"
            ))
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let why = text
        .lines()
        .find(|l| {
            l.contains("FAILED")
                || l.contains("Reversed")
                || l.contains("can't find file")
                || l.contains("malformed")
                || l.contains("Only garbage")
        })
        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("patch failed")
        .trim()
        .to_string();
    Err(Error::new(format!(
        "--patch {} does not apply to the tree ({why}); rebase it onto this tree",
        patch.path.display()
    )))
}

/// What src/ holds, kept in state.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The git commit the worktree is at ("" for a plain tree).
    pub head: String,
    /// SHA-256 of each patch applied, in order; `None` while patching is unfinished.
    pub patches: Option<Vec<String>>,
    /// Files any patch applied since the last full sync touched (restored before the next
    /// patch set).
    pub touched: Vec<String>,
    /// The configuration stamp obj/.config was made from.
    pub config: String,
    /// The user's tree as last seen: the HEAD commit, or [`sync_farm`]'s stamp.
    #[serde(default)]
    pub source: String,
    /// Patch set → the `source` its image under images/ was built from: a run that finds
    /// its set built from the current source has nothing to compile.
    #[serde(default)]
    pub built: BTreeMap<String, String>,
}

fn read_state(path: &Path) -> State {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_state(path: &Path, s: &State) -> Result<()> {
    let text = serde_json::to_string_pretty(s).unwrap_or_default();
    cache::write_atomic(path, text.as_bytes())
}

fn run_quiet(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(format!(
            "{what} failed: {}",
            err.lines().next().unwrap_or("no message").trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn git_head(root: &Path) -> Result<String> {
    run_quiet(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["rev-parse", "HEAD"]),
        &format!("git rev-parse HEAD in {}", root.display()),
    )
}

/// Makes `scratch` a hard-link farm of `src`: every regular file of `src` not in `private`
/// is a link to the user's file (relinked when the user's file was replaced), every
/// directory a real one. Files in `private` are left to the caller. Returns a stamp of the
/// user's tree (newest mtime, file count, sum of inode numbers): it changes when a file is
/// edited in place, replaced, added or removed.
pub fn sync_farm(src: &Path, scratch: &Path, private: &HashSet<String>) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let err = |p: &Path, e: std::io::Error| {
        Error::new(format!(
            "cannot build the scratch tree at {}: {e} (check free space, or set {}=DIR)",
            p.display(),
            cache::CACHE_ENV
        ))
    };
    let mut newest: i128 = 0;
    let (mut files, mut inodes) = (0u64, 0u64);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let from = src.join(&rel);
        let to = scratch.join(&rel);
        std::fs::create_dir_all(&to).map_err(|e| err(&to, e))?;
        let rd = std::fs::read_dir(&from).map_err(|e| err(&from, e))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let r = rel.join(&name);
            if rel.as_os_str().is_empty() && name == ".git" {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            let dst = scratch.join(&r);
            if ft.is_dir() {
                stack.push(r);
            } else if ft.is_symlink() {
                if std::fs::symlink_metadata(&dst).is_err() {
                    let target = std::fs::read_link(e.path()).map_err(|x| err(&e.path(), x))?;
                    std::os::unix::fs::symlink(target, &dst).map_err(|x| err(&dst, x))?;
                }
            } else if ft.is_file() {
                let m = e.metadata().map_err(|x| err(&e.path(), x))?;
                newest = newest.max(m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128);
                files += 1;
                inodes = inodes.wrapping_add(m.ino());
                if private.contains(&r.to_string_lossy().into_owned()) {
                    continue;
                }
                match std::fs::symlink_metadata(&dst) {
                    Ok(d) if d.ino() == m.ino() && d.dev() == m.dev() => {}
                    Ok(_) => {
                        std::fs::remove_file(&dst).map_err(|x| err(&dst, x))?;
                        link_or_copy(&e.path(), &dst).map_err(|x| err(&dst, x))?;
                    }
                    Err(_) => link_or_copy(&e.path(), &dst).map_err(|x| err(&dst, x))?,
                }
            }
        }
    }
    Ok(format!("{newest}/{files}/{inodes}"))
}

fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    // A cache on another filesystem cannot link: copy instead (slower, same result).
    std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(|_| ()))
}

/// Puts `rel` back to the user's version as a private copy with a fresh mtime (a link
/// would carry the user's old mtime, older than the object built from the patched file,
/// and make would not rebuild it), or removes it when the user's tree has no such file.
fn restore_file(src: &Path, scratch: &Path, rel: &str) -> Result<()> {
    let dst = scratch.join(rel);
    let _ = std::fs::remove_file(&dst);
    let from = src.join(rel);
    if from.is_file() {
        if let Some(d) = dst.parent() {
            cache::create_dir(d)?;
        }
        std::fs::copy(&from, &dst).map_err(|e| {
            Error::new(format!(
                "cannot restore {} in the scratch tree: {e}",
                dst.display()
            ))
        })?;
    }
    Ok(())
}

/// Brings `scratch` to "the user's tree plus `patches`", touching as few files as possible
/// (so make rebuilds only what changed). Returns the updated state.
pub fn prepare_scratch(
    tree: &KernelTree,
    scratch: &Path,
    patches: &[Patch],
    state: State,
    state_path: &Path,
) -> Result<State> {
    prepare_scratch_owning(tree, scratch, patches, state, state_path, &[])
}

/// [`prepare_scratch`], leaving the files `own` (relative paths) to the caller: a plain
/// tree's farm never relinks them to the user's files.
pub fn prepare_scratch_owning(
    tree: &KernelTree,
    scratch: &Path,
    patches: &[Patch],
    mut state: State,
    state_path: &Path,
    own: &[&str],
) -> Result<State> {
    let want: Vec<String> = patches.iter().map(|p| p.sha256.clone()).collect();
    if tree.git {
        let head = git_head(&tree.root)?;
        if !scratch.join(".git").exists() {
            let _ = std::fs::remove_dir_all(scratch);
            let _ = Command::new("git")
                .arg("-C")
                .arg(&tree.root)
                .args(["worktree", "prune"])
                .output();
            run_quiet(
                Command::new("git")
                    .arg("-C")
                    .arg(&tree.root)
                    .args(["worktree", "add", "--detach", "--force"])
                    .arg(scratch)
                    .arg(&head),
                "git worktree add",
            )?;
            state = State {
                head: head.clone(),
                config: state.config,
                ..State::default()
            };
            state.patches = Some(vec![]);
        }
        state.source = head.clone();
        if state.head == head && state.patches.as_ref() == Some(&want) {
            return Ok(state);
        }
        // Back to HEAD: checkout rewrites only the files that differ (fresh mtimes), clean
        // drops files earlier patches created. obj/ is outside the worktree.
        run_quiet(
            Command::new("git")
                .arg("-C")
                .arg(scratch)
                .args(["checkout", "--force", "--detach", "--quiet"])
                .arg(&head),
            "git checkout in the scratch worktree",
        )?;
        run_quiet(
            Command::new("git")
                .arg("-C")
                .arg(scratch)
                .args(["clean", "-fdq"]),
            "git clean in the scratch worktree",
        )?;
        state.head = head;
        state.touched.clear();
    } else {
        // A plain tree: relink whatever the user replaced, then restore what earlier
        // patches touched and what these will touch, as private copies.
        let mut private: HashSet<String> = state.touched.iter().cloned().collect();
        private.extend(own.iter().map(|s| s.to_string()));
        let same = state.patches.as_ref() == Some(&want);
        if !same {
            private.extend(patches.iter().flat_map(|p| p.files.iter().cloned()));
        }
        state.source = sync_farm(&tree.root, scratch, &private)?;
        if same {
            return Ok(state);
        }
        for rel in &private {
            restore_file(&tree.root, scratch, rel)?;
        }
        state.touched.clear();
    }
    state.patches = None;
    state
        .touched
        .extend(patches.iter().flat_map(|p| p.files.iter().cloned()));
    state.touched.sort();
    state.touched.dedup();
    write_state(state_path, &state)?;
    for p in patches {
        apply_patch(scratch, p)?;
    }
    state.patches = Some(want);
    write_state(state_path, &state)?;
    Ok(state)
}

// ---------------------------------------------------------------------------------------------
// make

/// The build tools, checked before anything runs.
pub fn check_tools() -> Result<()> {
    let missing: Vec<&str> = ["make", "gcc", "flex", "bison", "bc", "patch"]
        .into_iter()
        .filter(|t| {
            Command::new(t)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "kernel build tools missing: {} (apt-get install gcc make flex bison bc libelf-dev cpio patch)",
            missing.join(", ")
        )))
    }
}

/// Runs `make -C src O=obj ARGS` with its output appended to `log`, showing progress on a
/// terminal. A failure is one line naming the log.
fn make(src: &Path, obj: &Path, args: &[String], log: &Path, what: &str, nice: i32) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::new(format!("cannot write the build log {}: {e}", log.display())))?;
    let start_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let err_file = file
        .try_clone()
        .map_err(|e| Error::new(format!("{}: {e}", log.display())))?;
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(src)
        .arg(format!("O={}", obj.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err_file);
    if nice != 0 {
        // SAFETY: nice(2) is async-signal-safe and touches no memory of the parent. A
        // failure leaves make at this process's priority, which only costs speed.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                libc::nice(nice);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(format!(
            "cannot run make: {e} (apt-get install gcc make flex bison bc libelf-dev cpio)"
        ))
    })?;
    pvmtest::exec::proc::track(child.id() as i32);
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_prefix(what.to_string());
        b
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        if start.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if !bar.is_hidden() {
            bar.set_message(last_line(log, start_len).unwrap_or_default());
            bar.tick();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    pvmtest::exec::proc::untrack(child.id() as i32);
    bar.finish_and_clear();
    match status {
        Some(s) if s.success() => Ok(()),
        other => {
            let why = match other {
                Some(s) => format!("make exited with {}", s.code().unwrap_or(-1)),
                None => format!("make did not finish within {} s", BUILD_TIMEOUT.as_secs()),
            };
            let first_error = std::fs::read_to_string(log)
                .ok()
                .and_then(|t| {
                    t.get(start_len as usize..).and_then(|t| {
                        t.lines()
                            .find(|l| l.contains("error:") || l.contains("Error "))
                            .map(|l| l.trim().to_string())
                    })
                })
                .map_or(String::new(), |l| format!(": {l}"));
            Err(Error::new(format!(
                "{what} failed ({why}){first_error}; the build log is {}",
                log.display()
            )))
        }
    }
}

/// The last non-empty line written to `log` after `from`, for the progress line.
fn last_line(log: &Path, from: u64) -> Option<String> {
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(4096).max(from);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = String::new();
    f.take(4096).read_to_string(&mut buf).ok()?;
    buf.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().chars().take(70).collect())
}

/// An exclusive lock on the build directory, released on drop.
struct Lock(std::fs::File);

impl Lock {
    fn take(path: &Path) -> Result<Lock> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "kernel-matrix: waiting for another build of this tree ({})",
                path.display()
            );
            // SAFETY: as above, blocking this time; the other build has its own timeout.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(Error::new(format!(
                    "cannot lock {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok(Lock(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking our own descriptor.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Reports to the user as the build goes (stderr).
pub type Say<'a> = &'a dyn Fn(&str);

/// Everything `build` does. Errors (exit 2) come before anything compiles, except a
/// compile failure, which names the log.
pub fn build(req: &BuildRequest, cache: &Cache, cases: &Path, say: Say) -> Result<Built> {
    let tree = detect_tree(&req.src)?;
    let mut settings = parse_fragment(MINIMAL_CONFIG, "minimal.config")?;
    let mut config_stamp = format!("tinyconfig\n{MINIMAL_CONFIG}");
    if let ConfigChoice::Fragment(p) = &req.config {
        let text = std::fs::read_to_string(p).map_err(|e| {
            Error::new(format!(
                "--config {}: {e} (give 'minimal' or a Kconfig fragment file)",
                p.display()
            ))
        })?;
        settings.extend(parse_fragment(&text, &p.display().to_string())?);
        config_stamp.push_str(&text);
    }
    if req.gcov {
        settings.extend(parse_fragment(GCOV_CONFIG, "the coverage settings")?);
        config_stamp.push_str(GCOV_CONFIG);
        for (mk, block) in gcov_makefiles() {
            config_stamp.push_str(&format!("{mk}:{block}"));
        }
    }
    let patches = req
        .patches
        .iter()
        .map(|p| read_patch(p))
        .collect::<Result<Vec<_>>>()?;
    let features = parse_features(FEATURES)?;
    check_tools()?;

    let key = cache::sha256_hex(
        format!(
            "{}\n{}",
            tree.root.display(),
            cache::sha256_hex(config_stamp.as_bytes())
        )
        .as_bytes(),
    );
    let dir = cache.root.join("builds").join(&key[..16]);
    cache::create_dir(&dir)?;
    let _lock = Lock::take(&dir.join("lock"))?;
    let state_path = dir.join("state.json");
    let scratch = dir.join("src");
    let obj = match &req.out {
        Some(o) => {
            cache::create_dir(o)?;
            o.canonicalize()
                .map_err(|e| Error::new(format!("--out {}: {e}", o.display())))?
        }
        None => dir.join("obj"),
    };
    let log = dir.join("build.log");
    let _ = std::fs::write(
        dir.join("source.txt"),
        format!("{}\n{config_stamp}", tree.root.display()),
    );
    let state = read_state(&state_path);
    let gcov_mk = if req.gcov { gcov_makefiles() } else { vec![] };
    let own: Vec<&str> = gcov_mk.iter().map(|(m, _)| *m).collect();
    let mut state = prepare_scratch_owning(&tree, &scratch, &patches, state, &state_path, &own)?;
    for (mk, block) in &gcov_mk {
        instrument_makefile(&tree.root, &scratch, mk, block)?;
    }

    let known = kconfig_symbols(&scratch);
    check_symbols(&settings, &known, &req.src)?;

    say(&format!(
        "kernel-matrix: {} {}.{}.{}{} → {}",
        tree.root.display(),
        tree.version.0,
        tree.version.1,
        tree.version.2,
        if patches.is_empty() {
            String::new()
        } else {
            format!(
                " + {}",
                patches
                    .iter()
                    .map(|p| p.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" + ")
            )
        },
        obj.display()
    ));
    if tree.git {
        let dirty = Command::new("git")
            .arg("-C")
            .arg(&tree.root)
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        if dirty {
            say("kernel-matrix: note: the tree has uncommitted changes; a git tree builds its HEAD commit (commit them, or pass `git diff` as a --patch)");
        }
    }

    // Configure when obj/.config was made from another configuration (or never).
    let stamp = cache::sha256_hex(config_stamp.as_bytes());
    let dotconfig = obj.join(".config");
    std::fs::write(&log, b"").map_err(|e| Error::new(format!("{}: {e}", log.display())))?;
    if state.config != stamp || !dotconfig.is_file() {
        cache::create_dir(&obj)?;
        make(
            &scratch,
            &obj,
            &["tinyconfig".into()],
            &log,
            "make tinyconfig",
            req.nice,
        )?;
        let mut text = std::fs::read_to_string(&dotconfig)
            .map_err(|e| Error::new(format!("{}: {e}", dotconfig.display())))?;
        text.push_str("\n# kernel-matrix build: the fragment\n");
        for s in settings
            .iter()
            .filter(|s| !s.optional || known.contains(&s.symbol))
        {
            if s.value == "n" {
                text.push_str(&format!("# CONFIG_{} is not set\n", s.symbol));
            } else {
                text.push_str(&format!("CONFIG_{}={}\n", s.symbol, s.value));
            }
        }
        std::fs::write(&dotconfig, text)
            .map_err(|e| Error::new(format!("{}: {e}", dotconfig.display())))?;
        make(
            &scratch,
            &obj,
            &["olddefconfig".into()],
            &log,
            "make olddefconfig",
            req.nice,
        )?;
        state.config = stamp;
        write_state(&state_path, &state)?;
    }
    let config = parse_dotconfig(&std::fs::read_to_string(&dotconfig).unwrap_or_default());
    check_kept(&settings, &config)?;

    let lacks = coverage(&features, &config, (tree.version.0, tree.version.1));
    if lacks.is_empty() {
        say("kernel-matrix: the configuration has every catalogue feature");
    } else {
        say("kernel-matrix: the configuration lacks (their cases will skip):");
        for l in &lacks {
            say(&format!(
                "  {:<15} {}: {}",
                l.name,
                pvmtest::words::count_usize(cases_needing(cases, l.feature), "case", "cases"),
                l.why
            ));
        }
    }

    let set = patch_set(&patches);
    let image_dir = dir.join("images").join(&set);
    let image = image_dir.join("bzImage");
    let release_file = image_dir.join("release");
    // With --out the user asked for that directory to be built, so make always runs there.
    // A coverage build always runs make too: gcov reads the counters against the `.gcno`
    // files in obj/, which must be those of the image that boots, and obj/ may hold another
    // patch set's objects (make, incremental, puts them back).
    if req.out.is_none()
        && !req.gcov
        && state.built.get(&set) == Some(&state.source)
        && image.is_file()
    {
        // Nothing changed since this patch set was built: the source, the patches and the
        // configuration are those of the image already there.
        say("kernel-matrix: up to date (nothing changed since this image was built)");
        return Ok(Built {
            image,
            release: std::fs::read_to_string(&release_file)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            log,
            obj,
            src: scratch,
            patch_names: patch_names(&patches),
            seconds: 0.0,
        });
    }
    let start = Instant::now();
    let jobs = req.jobs.max(1);
    make(
        &scratch,
        &obj,
        &[format!("-j{jobs}"), "bzImage".into()],
        &log,
        "make bzImage",
        req.nice,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let release = std::fs::read_to_string(obj.join("include/config/kernel.release"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let data = std::fs::read(obj.join("arch/x86/boot/bzImage")).map_err(|e| {
        Error::new(format!(
            "make succeeded but {} is missing: {e}; the build log is {}",
            obj.join("arch/x86/boot/bzImage").display(),
            log.display()
        ))
    })?;
    cache::write_atomic(&image, &data)?;
    cache::write_atomic(&release_file, release.as_bytes())?;
    state.built.insert(set, state.source.clone());
    write_state(&state_path, &state)?;
    Ok(Built {
        image,
        release,
        log,
        obj,
        src: scratch,
        patch_names: patch_names(&patches),
        seconds,
    })
}

// ---------------------------------------------------------------------------------------------
// Coverage builds

/// What a coverage build adds to the configuration: gcov's debugfs interface
/// (kernel/gcov/Kconfig: GCOV_KERNEL depends on DEBUG_FS and selects CONSTRUCTORS).
/// `CONFIG_GCOV_PROFILE_ALL` stays off: only [`GCOV_OBJECTS`] are instrumented.
pub const GCOV_CONFIG: &str = "CONFIG_DEBUG_FS=y\nCONFIG_GCOV_KERNEL=y\nCONFIG_CONSTRUCTORS=y\n";

/// The objects on process_vm_readv/writev's path that a coverage build instruments, as
/// paths relative to the tree (and to the O= directory).
pub const GCOV_OBJECTS: [&str; 6] = [
    "mm/process_vm_access.o",
    "mm/gup.o",
    "lib/iov_iter.o",
    "kernel/ptrace.o",
    "kernel/fork.o",
    "security/yama/yama_lsm.o",
];

/// The first line of what [`instrument_makefile`] appends.
const GCOV_MARK: &str = "# kernel-matrix coverage: instrumented objects";

/// Each subdirectory Makefile and the block that instruments its objects:
/// `GCOV_PROFILE_<obj>.o := y` is a kbuild variable only the object's own directory's
/// Makefile can set (scripts/Makefile.lib, `_c_flags += $(CFLAGS_GCOV)`).
pub fn gcov_makefiles() -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for o in GCOV_OBJECTS {
        let (dir, file) = o.rsplit_once('/').unwrap_or(("", o));
        let mk: &'static str = match dir {
            "mm" => "mm/Makefile",
            "lib" => "lib/Makefile",
            "kernel" => "kernel/Makefile",
            _ => "security/yama/Makefile",
        };
        let line = format!("GCOV_PROFILE_{file} := y\n");
        match out.iter_mut().find(|(m, _)| *m == mk) {
            Some((_, b)) => b.push_str(&line),
            None => out.push((mk, format!("\n{GCOV_MARK}\n{line}"))),
        }
    }
    out
}

/// Appends `block` to the scratch tree's `rel` unless it is there already. The file is
/// written as a new file (remove, then create), so a hard link to the user's Makefile is
/// broken, never written through.
pub fn instrument_makefile(src: &Path, scratch: &Path, rel: &str, block: &str) -> Result<()> {
    let dst = scratch.join(rel);
    let current = std::fs::read_to_string(&dst)
        .or_else(|_| std::fs::read_to_string(src.join(rel)))
        .map_err(|e| {
            Error::new(format!(
                "{}: {e} (a coverage build needs the tree's {rel})",
                src.join(rel).display()
            ))
        })?;
    if current.contains(GCOV_MARK) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&dst);
    std::fs::write(&dst, format!("{current}{block}"))
        .map_err(|e| Error::new(format!("cannot write {}: {e}", dst.display())))
}

/// images/<set>: `base`, or a hash of the patches in order.
fn patch_set(patches: &[Patch]) -> String {
    if patches.is_empty() {
        return "base".to_string();
    }
    let all: Vec<&str> = patches.iter().map(|p| p.sha256.as_str()).collect();
    cache::sha256_hex(all.join("\n").as_bytes())[..16].to_string()
}

fn patch_names(patches: &[Patch]) -> Vec<String> {
    patches
        .iter()
        .map(|p| {
            p.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_parse_and_reject_junk() {
        let s = parse_fragment(
            "# c\n\nCONFIG_A=y\n# CONFIG_B is not set\n# optional: CONFIG_C_1=m\nCONFIG_S=\"x y\"\n",
            "f",
        )
        .unwrap();
        let got: Vec<(&str, &str, bool)> = s
            .iter()
            .map(|s| (s.symbol.as_str(), s.value.as_str(), s.optional))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "y", false),
                ("B", "n", false),
                ("C_1", "m", true),
                ("S", "\"x y\"", false)
            ]
        );
        assert_eq!(s[2].at, "f:5");
        let e = parse_fragment("CONFIG_A=y\nFOO=y\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:2: 'FOO=y' is not a config line"), "{e}");
        assert!(parse_fragment("CONFIG_lower=y", "f").is_err());
        assert!(parse_fragment("CONFIG_A=", "f").is_err());
    }

    #[test]
    fn the_shipped_fragment_and_feature_map_parse() {
        let s = parse_fragment(MINIMAL_CONFIG, "minimal.config").unwrap();
        assert!(s
            .iter()
            .any(|s| s.symbol == "CROSS_MEMORY_ATTACH" && !s.optional));
        let f = parse_features(FEATURES).unwrap();
        // Every catalogue feature is mapped (a new Feature must get a line).
        for name in [
            "compat",
            "thp",
            "memfd",
            "yama",
            "pidns",
            "kthreadd",
            "secretmem",
            "guard_pages",
            "mseal",
            "hugetlb",
            "vsyscall_xonly",
            "userfaultfd",
            "vdso",
            "vvar",
            "vvar_vclock",
            "userns",
            "aio",
            "io_uring",
            "pkeys",
            "uprobes",
        ] {
            assert!(
                f.iter().any(|x| x.name == name),
                "{name} not in features.txt"
            );
        }
    }

    #[test]
    fn unknown_and_dropped_symbols_are_named() {
        let s =
            parse_fragment("CONFIG_A=y\n# optional: CONFIG_OLD=y\nCONFIG_TYPO=y\n", "f").unwrap();
        let known: HashSet<String> = ["A".to_string()].into();
        let e = check_symbols(&s, &known, Path::new("/k"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f:3: CONFIG_TYPO is not a symbol of /k's Kconfig"),
            "{e}"
        );
        let s = parse_fragment("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n", "f").unwrap();
        let cfg = parse_dotconfig("CONFIG_A=y\n# CONFIG_C is not set\n");
        let e = check_kept(&s, &cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("f:3: CONFIG_C=y did not survive make olddefconfig (it reads n"),
            "{e}"
        );
        assert!(check_kept(&s[..2], &cfg).is_ok());
    }

    #[test]
    fn coverage_names_what_is_missing() {
        let f = parse_features(
            "compat IA32_EMULATION !IA32_EMULATION_DEFAULT_DISABLED\n\
             thp TRANSPARENT_HUGEPAGE TRANSPARENT_HUGEPAGE_ALWAYS|TRANSPARENT_HUGEPAGE_MADVISE\n\
             guard_pages MMU >=6.13\nkthreadd -\n",
        )
        .unwrap();
        let cfg = parse_dotconfig(
            "CONFIG_IA32_EMULATION=y\nCONFIG_IA32_EMULATION_DEFAULT_DISABLED=y\n\
             CONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\nCONFIG_MMU=y\n",
        );
        let l = coverage(&f, &cfg, (6, 12));
        let got: Vec<(&str, &str)> = l
            .iter()
            .map(|l| (l.name.as_str(), l.why.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("compat", "CONFIG_IA32_EMULATION_DEFAULT_DISABLED off"),
                ("guard_pages", "needs 6.13+, the tree is 6.12")
            ]
        );
        assert!(coverage(&f, &cfg, (6, 13)).len() == 1);
        assert!(parse_features("nosuch X\n").is_err());
        assert!(parse_features("thp >=6\n").is_err());
    }

    #[test]
    fn patch_paths_strip_one_component() {
        let p = "diff --git a/mm/x.c b/mm/x.c\n--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1 +1 @@\n\
                 --- /dev/null\n+++ b/new/file.c\t2024-01-01\n--- a/../etc/passwd\n";
        assert_eq!(patch_paths(p), ["mm/x.c", "new/file.c"]);
    }

    #[test]
    fn trees_are_recognised() {
        let d = tempfile::tempdir().unwrap();
        let e = detect_tree(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("is not a kernel source tree (no Makefile"),
            "{e}"
        );
        fake_tree(d.path());
        let t = detect_tree(d.path()).unwrap();
        assert_eq!(t.version, (6, 12, 107));
        assert!(!t.git);
        assert!(kconfig_symbols(d.path()).contains("CROSS_MEMORY_ATTACH"));
    }

    pub(crate) fn fake_tree(root: &Path) {
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("Makefile", "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 107\n");
        w("Kconfig", "source \"init/Kconfig\"\n");
        w(
            "init/Kconfig",
            "config CROSS_MEMORY_ATTACH\n\tbool \"x\"\nmenuconfig EXPERT\n",
        );
        w("arch/x86/Kconfig", "config X86\n");
        w("mm/process_vm_access.c", "a\nif (flags != 0)\nc\n");
    }

    /// Applies a one-line flags patch to `tree` in a scratch copy under `work` and checks the
    /// copy: the scratch dir, its state file, the patched file, the state and the patch.
    fn patch_flags(tree: &KernelTree, work: &Path) -> (PathBuf, PathBuf, PathBuf, State, Patch) {
        let patch_file = work.join("p.patch");
        std::fs::write(
            &patch_file,
            "--- a/mm/process_vm_access.c\n+++ b/mm/process_vm_access.c\n@@ -1,3 +1,3 @@\n a\n-if (flags != 0)\n+if (flags & ~1UL)\n c\n",
        )
        .unwrap();
        let scratch = work.join("src");
        let state_path = work.join("state.json");
        let p = read_patch(&patch_file).unwrap();
        let st = prepare_scratch(
            tree,
            &scratch,
            std::slice::from_ref(&p),
            State::default(),
            &state_path,
        )
        .unwrap();
        let sf = scratch.join("mm/process_vm_access.c");
        assert_eq!(
            std::fs::read_to_string(&sf).unwrap(),
            "a\nif (flags & ~1UL)\nc\n"
        );
        (scratch, state_path, sf, st, p)
    }

    #[test]
    fn patching_a_git_tree_uses_a_worktree_of_head() {
        let user = tempfile::tempdir().unwrap();
        fake_tree(user.path());
        let git = |dir: &Path, args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        git(user.path(), &["init", "-q"]);
        git(user.path(), &["add", "."]);
        git(user.path(), &["commit", "-qm", "base"]);
        let tree = detect_tree(user.path()).unwrap();
        assert!(tree.git);
        let work = tempfile::tempdir().unwrap();
        let (scratch, state_path, sf, st, _) = patch_flags(&tree, work.path());
        assert_eq!(git(user.path(), &["status", "--porcelain"]), "");
        assert!(git(user.path(), &["worktree", "list"]).contains(&scratch.display().to_string()));
        let head = git(user.path(), &["rev-parse", "HEAD"]);
        assert_eq!(st.source, head.trim());
        let st = prepare_scratch(&tree, &scratch, &[], st, &state_path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&sf).unwrap(),
            "a\nif (flags != 0)\nc\n"
        );
        assert_eq!(st.patches, Some(vec![]));
        assert_eq!(git(user.path(), &["status", "--porcelain"]), "");
    }

    #[test]
    fn the_farm_stamp_notices_edits_replacements_and_new_files() {
        let user = tempfile::tempdir().unwrap();
        fake_tree(user.path());
        let work = tempfile::tempdir().unwrap();
        let farm = work.path().join("src");
        let none = HashSet::new();
        let s0 = sync_farm(user.path(), &farm, &none).unwrap();
        assert_eq!(sync_farm(user.path(), &farm, &none).unwrap(), s0);
        let f = user.path().join("mm/process_vm_access.c");
        // Replaced by a file with an older mtime (cp -p, an editor's rename): new inode.
        let tmp = user.path().join("mm/new");
        std::fs::write(&tmp, "a\nif (flags != 0)\nc\n").unwrap();
        let old = std::fs::File::open(&f)
            .unwrap()
            .metadata()
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        let s1 = sync_farm(user.path(), &farm, &none).unwrap();
        assert_ne!(s1, s0);
        // The farm follows the replacement.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(farm.join("mm/process_vm_access.c"))
                .unwrap()
                .ino(),
            std::fs::metadata(&f).unwrap().ino()
        );
        std::fs::write(user.path().join("mm/extra.c"), "x").unwrap();
        assert_ne!(sync_farm(user.path(), &farm, &none).unwrap(), s1);
    }

    #[test]
    fn patching_a_plain_tree_leaves_the_users_files_alone() {
        use std::os::unix::fs::MetadataExt;
        let user = tempfile::tempdir().unwrap();
        fake_tree(user.path());
        let f = user.path().join("mm/process_vm_access.c");
        let before = std::fs::metadata(&f).unwrap();
        let work = tempfile::tempdir().unwrap();
        let tree = detect_tree(user.path()).unwrap();
        let (scratch, state_path, sf, st, p) = patch_flags(&tree, work.path());
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "a\nif (flags != 0)\nc\n"
        );
        let after = std::fs::metadata(&f).unwrap();
        assert_eq!(
            (after.ino(), after.nlink(), after.mtime()),
            (before.ino(), before.nlink(), before.mtime()),
            "the user's file was linked to the patched copy"
        );
        // Unpatched files are links to the user's.
        let mk = std::fs::metadata(scratch.join("Makefile")).unwrap();
        assert_eq!(
            mk.ino(),
            std::fs::metadata(user.path().join("Makefile"))
                .unwrap()
                .ino()
        );
        // Back to no patches: the file is the user's text again, as a private copy.
        let st = prepare_scratch(&tree, &scratch, &[], st, &state_path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&sf).unwrap(),
            "a\nif (flags != 0)\nc\n"
        );
        assert!(st.touched.is_empty());
        // A patch that does not apply is one line naming it; the user's tree is untouched.
        let bad = work.path().join("bad.patch");
        std::fs::write(
            &bad,
            "--- a/mm/process_vm_access.c\n+++ b/mm/process_vm_access.c\n@@ -1,3 +1,3 @@\n a\n-if (nothing)\n+if (x)\n c\n",
        )
        .unwrap();
        let e = prepare_scratch(
            &tree,
            &scratch,
            &[read_patch(&bad).unwrap()],
            st,
            &state_path,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad.patch does not apply to the tree"), "{e}");
        assert!(!e.contains('\n'));
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "a\nif (flags != 0)\nc\n"
        );
        // The next run starts from a clean copy again.
        let st = read_state(&state_path);
        assert!(st.patches.is_none());
        let st = prepare_scratch(&tree, &scratch, &[p], st, &state_path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&sf).unwrap(),
            "a\nif (flags & ~1UL)\nc\n"
        );
        assert_eq!(st.touched, ["mm/process_vm_access.c"]);
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "a\nif (flags != 0)\nc\n"
        );
    }

    /// The four Makefiles get one block each, naming every instrumented object, written as
    /// new files: the user's file (a hard link in the farm) keeps its inode and its text,
    /// and a second run neither appends again nor relinks the file.
    #[test]
    fn coverage_makefiles_are_private_copies() {
        use std::os::unix::fs::MetadataExt;
        let mk = gcov_makefiles();
        let names: Vec<&str> = mk.iter().map(|(m, _)| *m).collect();
        assert_eq!(
            names,
            [
                "mm/Makefile",
                "lib/Makefile",
                "kernel/Makefile",
                "security/yama/Makefile"
            ]
        );
        assert!(mk[0]
            .1
            .contains("GCOV_PROFILE_process_vm_access.o := y\nGCOV_PROFILE_gup.o := y\n"));
        assert!(mk[2]
            .1
            .contains("GCOV_PROFILE_ptrace.o := y\nGCOV_PROFILE_fork.o := y\n"));
        assert!(mk[3].1.contains("GCOV_PROFILE_yama_lsm.o := y"));
        let d = tempfile::tempdir().unwrap();
        let (src, scratch) = (d.path().join("src"), d.path().join("scratch"));
        for (m, _) in &mk {
            std::fs::create_dir_all(src.join(m).parent().unwrap()).unwrap();
            std::fs::write(src.join(m), "obj-y += x.o\n").unwrap();
        }
        let own: HashSet<String> = names.iter().map(|s| s.to_string()).collect();
        sync_farm(&src, &scratch, &HashSet::new()).unwrap();
        let ino = std::fs::metadata(src.join("mm/Makefile")).unwrap().ino();
        assert_eq!(
            std::fs::metadata(scratch.join("mm/Makefile"))
                .unwrap()
                .ino(),
            ino
        );
        for _ in 0..2 {
            for (m, b) in &mk {
                instrument_makefile(&src, &scratch, m, b).unwrap();
            }
            sync_farm(&src, &scratch, &own).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(src.join("mm/Makefile")).unwrap(),
            "obj-y += x.o\n"
        );
        assert_eq!(
            std::fs::metadata(src.join("mm/Makefile")).unwrap().ino(),
            ino
        );
        let text = std::fs::read_to_string(scratch.join("mm/Makefile")).unwrap();
        assert!(text.starts_with("obj-y += x.o\n"), "{text}");
        assert_eq!(text.matches(GCOV_MARK).count(), 1, "{text}");
        assert_ne!(
            std::fs::metadata(scratch.join("mm/Makefile"))
                .unwrap()
                .ino(),
            ino
        );
    }
}
