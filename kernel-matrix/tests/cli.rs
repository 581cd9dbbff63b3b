//! Bad input and broken infrastructure: each is one line on stderr naming the thing and the
//! fix, exit status 2, no panic, and no VM started. None of these boot a kernel or touch
//! the network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn km(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        // Never the real mirror or the user's cache from a test.
        .env("PVMTEST_MIRROR", "http://127.0.0.1:9/debian")
        .env("PVMTEST_QEMU", "/bin/true")
        .env_remove("PVMTEST_CACHE_DIR");
    c
}

/// Exit 2 and exactly one stderr line containing every `needle`.
fn one_line_error(out: Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {stderr}");
    assert!(lines[0].starts_with("kernel-matrix: error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "missing {n:?} in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn empty_cache() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cache");
    (d, p)
}

#[test]
fn unknown_kernel_id() {
    let out = km(&["run", "--kernel", "6.3"]).output().unwrap();
    one_line_error(
        out,
        &[
            "unknown kernel id '6.3'",
            "5.10, 6.1, 6.12, 7.2, 7.3",
            "--kernel-image",
        ],
    );
}

#[test]
fn not_a_kernel_image() {
    let out = km(&["run", "--kernel-image", "Cargo.toml"])
        .output()
        .unwrap();
    one_line_error(out, &["Cargo.toml", "not a bzImage", "bzImage"]);
}

#[test]
fn missing_kernel_image() {
    let out = km(&[
        "compare",
        "--baseline",
        "6.1",
        "--candidate",
        "/nonexistent/bzImage",
    ])
    .output()
    .unwrap();
    one_line_error(out, &["/nonexistent/bzImage"]);
}

#[test]
fn qemu_missing() {
    let out = km(&["run", "--kernel", "6.1"])
        .env_remove("PVMTEST_QEMU")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    one_line_error(
        out,
        &[
            "qemu-system-x86_64 not found",
            "apt-get install qemu-system-x86",
        ],
    );
    let out = km(&["run", "--kernel", "6.1"])
        .env("PVMTEST_QEMU", "/nonexistent/qemu")
        .output()
        .unwrap();
    one_line_error(out, &["PVMTEST_QEMU=/nonexistent/qemu"]);
}

#[test]
fn archive_unreachable() {
    let (_d, cache) = empty_cache();
    let out = km(&["run", "--kernel", "6.1", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    one_line_error(
        out,
        &["kernel 6.1", "http://127.0.0.1:9/debian", "--mirror"],
    );
}

#[test]
fn offline_with_empty_cache() {
    let (_d, cache) = empty_cache();
    let out = km(&["fetch", "--kernel", "7.3", "--offline", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    one_line_error(out, &["kernel 7.3", "offline"]);
}

/// A file:// mirror whose index promises a different SHA256 than the .deb has: refused,
/// and nothing is cached.
#[test]
fn sha256_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let mirror = d.path().join("mirror");
    let pool = mirror.join("pool/main/l/linux");
    std::fs::create_dir_all(&pool).unwrap();
    let deb = b"!<arch>\nnot really a deb";
    std::fs::write(
        pool.join("linux-image-6.1.0-9-cloud-amd64-unsigned_6.1.1-1_amd64.deb"),
        deb,
    )
    .unwrap();
    let index = format!(
        "Package: linux-image-6.1.0-9-cloud-amd64-unsigned\nVersion: 6.1.1-1\nFilename: pool/main/l/linux/linux-image-6.1.0-9-cloud-amd64-unsigned_6.1.1-1_amd64.deb\nSize: {}\nSHA256: {}\n\n",
        deb.len(),
        "0".repeat(64)
    );
    let dists = mirror.join("dists/bookworm/main/binary-amd64");
    std::fs::create_dir_all(&dists).unwrap();
    let mut xz = Vec::new();
    {
        use std::io::Write;
        let mut enc = liblzma::write::XzEncoder::new(&mut xz, 6);
        enc.write_all(index.as_bytes()).unwrap();
        enc.finish().unwrap();
    }
    std::fs::write(dists.join("Packages.xz"), xz).unwrap();
    let cache = d.path().join("cache");
    let out = km(&["fetch", "--kernel", "6.1", "--cache-dir"])
        .arg(&cache)
        .arg("--mirror")
        .arg(format!("file://{}", mirror.display()))
        .output()
        .unwrap();
    one_line_error(out, &["kernel 6.1", "SHA256"]);
    let debs = cache.join("debs");
    let cached: Vec<_> = std::fs::read_dir(&debs)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(cached.is_empty(), "a bad .deb was cached: {cached:?}");
}

#[test]
fn bad_kernels_yaml() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("kernels.yaml");
    std::fs::write(
        &f,
        "- id: \"6.1\"\n  suite: bookworm\n  package: x\n  image: y\n  colour: blue\n",
    )
    .unwrap();
    let out = km(&["list", "--kernels"]).arg(&f).output().unwrap();
    one_line_error(out, &["kernels.yaml", "colour"]);
}

#[test]
fn invalid_case_file_stops_before_anything_boots() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("bad.yaml"),
        "description: x\ncall: {syscall: readv, bogus: 1}\n",
    )
    .unwrap();
    let out = km(&["run", "--kernel", "6.1", "--cases"])
        .arg(d.path())
        .output()
        .unwrap();
    one_line_error(out, &["bad.yaml", "bogus"]);
}

#[test]
fn bad_shard() {
    let out = km(&["run", "--shard", "4/3"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--shard '4/3'"), "{stderr}");
}

#[test]
fn list_shows_the_builtin_kernels() {
    let out = km(&["list"]).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for id in ["5.10", "6.1", "6.12", "7.2", "7.3"] {
        assert!(s.lines().any(|l| l.starts_with(&format!("{id} "))), "{s}");
    }
}

/// A tree `kernel-matrix build` recognises: a top Makefile whose every target fails (so
/// nothing real is compiled), Kconfig defining every symbol minimal.config requires, and
/// mm/process_vm_access.c as the patch fixture expects it.
fn fake_kernel_tree(root: &Path) {
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "Makefile",
        "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 107\n%:\n\t@echo 'fake.c:1:1: error: no compiler here'; exit 2\n",
    );
    let fragment = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/minimal.config"),
    )
    .unwrap();
    let kconfig: String = fragment
        .lines()
        .filter_map(|l| l.strip_prefix("CONFIG_")?.split_once('='))
        .map(|(sym, _)| format!("config {sym}\n\tbool \"{sym}\"\n"))
        .collect();
    w("Kconfig", &kconfig);
    w("arch/x86/Kconfig", "config X86\n\tdef_bool y\n");
    let real = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/accept-flag-1.patch"),
    )
    .unwrap();
    // The fixture's context lines, unpatched: enough for it to apply.
    let before: String = real
        .lines()
        .skip_while(|l| !l.starts_with("@@"))
        .skip(1)
        .filter(|l| !l.starts_with('+'))
        .map(|l| format!("{}\n", &l[1..]))
        .collect();
    w("mm/process_vm_access.c", &before);
}

fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn build_src_not_a_kernel_tree() {
    let (_d, cache) = empty_cache();
    let out = km(&["build", "harness", "--cache-dir", cache.to_str().unwrap()])
        .output()
        .unwrap();
    one_line_error(
        out,
        &[
            "harness is not a kernel source tree (no Makefile with VERSION and PATCHLEVEL)",
            "linux_X.orig.tar.xz",
        ],
    );
    assert!(!cache.exists(), "nothing is created for a bad SRC");
}

#[test]
fn build_fragment_with_an_unknown_symbol() {
    let (d, cache) = empty_cache();
    let tree = d.path().join("linux");
    fake_kernel_tree(&tree);
    let frag = d.path().join("extra.config");
    std::fs::write(
        &frag,
        "# mine\nCONFIG_CROSS_MEMORY_ATTACH=y\nCONFIG_KASAM=y\n",
    )
    .unwrap();
    let out = km(&[
        "build",
        tree.to_str().unwrap(),
        "--config",
        frag.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    one_line_error(
        out,
        &[
            "extra.config:3: CONFIG_KASAM is not a symbol of",
            "fix the name",
        ],
    );
}

/// `kernel-matrix build TREE --patch <the accept-flag-1 fixture>` with its own cache.
fn build_with_fixture(tree: &Path, cache: &Path) -> Output {
    km(&[
        "build",
        tree.to_str().unwrap(),
        "--patch",
        "kernel-matrix/tests/fixtures/accept-flag-1.patch",
        "--cache-dir",
        cache.to_str().unwrap(),
    ])
    .output()
    .unwrap()
}

#[test]
fn build_patch_that_does_not_apply_leaves_the_tree_alone() {
    let (d, cache) = empty_cache();
    let tree = d.path().join("linux");
    fake_kernel_tree(&tree);
    std::fs::write(tree.join("mm/process_vm_access.c"), "something else\n").unwrap();
    let before = snapshot(&tree);
    let out = build_with_fixture(&tree, &cache);
    one_line_error(
        out,
        &[
            "--patch kernel-matrix/tests/fixtures/accept-flag-1.patch does not apply to the tree",
            "rebase it",
        ],
    );
    assert_eq!(snapshot(&tree), before, "the user's tree changed");
}

#[test]
fn build_failure_names_the_log_and_the_tree_stays_untouched() {
    let (d, cache) = empty_cache();
    let tree = d.path().join("linux");
    fake_kernel_tree(&tree);
    let before = snapshot(&tree);
    let out = build_with_fixture(&tree, &cache);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kernel-matrix: error: make tinyconfig failed (make exited with 2): fake.c:1:1: error: no compiler here; the build log is "),
        "{stderr}"
    );
    let log = PathBuf::from(last.rsplit("the build log is ").next().unwrap());
    assert!(log.starts_with(&cache), "{}", log.display());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("no compiler here"));
    assert_eq!(snapshot(&tree), before, "the user's tree changed");
    // The scratch copy has the patch.
    let scratch = log.parent().unwrap().join("src/mm/process_vm_access.c");
    assert!(std::fs::read_to_string(scratch)
        .unwrap()
        .contains("if (flags & ~1UL)"));
}

#[test]
fn compare_side_not_a_kernel_tree() {
    let (d, cache) = empty_cache();
    let out = km(&[
        "compare",
        "--baseline",
        d.path().to_str().unwrap(),
        "--candidate",
        "6.12",
        "--cache-dir",
        cache.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    one_line_error(out, &["is not a kernel source tree"]);
}

#[test]
fn compare_patch_for_an_id_side() {
    let (_d, cache) = empty_cache();
    let out = km(&[
        "compare",
        "--baseline",
        "6.1",
        "--candidate",
        "6.12",
        "--patch",
        "kernel-matrix/tests/fixtures/accept-flag-1.patch",
        "--cache-dir",
        cache.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    one_line_error(out, &["'6.12' is not a source tree", "patches"]);
}

#[test]
fn compare_the_same_tree_twice_without_a_patch() {
    let (d, cache) = empty_cache();
    let tree = d.path().join("linux");
    fake_kernel_tree(&tree);
    let t = tree.to_str().unwrap();
    let out = km(&[
        "compare",
        "--baseline",
        t,
        "--candidate",
        t,
        "--cache-dir",
        cache.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    one_line_error(
        out,
        &["same tree with the same patches", "--candidate-patch"],
    );
    assert!(!cache.exists(), "nothing is built");
}

/// `--filter` is applied before anything is fetched or booted: a filter that matches no case
/// stops `run` and `compare` with one line naming it.
#[test]
fn filter_matching_no_case() {
    let (_d, cache) = empty_cache();
    let cache = cache.to_str().unwrap();
    let out = km(&[
        "run",
        "--kernel",
        "6.1",
        "--filter",
        "nope/*",
        "--cache-dir",
        cache,
    ])
    .output()
    .unwrap();
    one_line_error(out, &["--filter 'nope/*' matches none of the", "'group/*'"]);
    let out = km(&[
        "compare",
        "--baseline",
        "6.1",
        "--candidate",
        "6.12",
        "--filter",
        "eperm/*",
        "--filter",
        "eprem/*",
        "--cache-dir",
        cache,
    ])
    .output()
    .unwrap();
    one_line_error(out, &["--filter 'eprem/*' matches none of the"]);
}

/// Two local images: the same contents are one kernel, so `compare` refuses them naming both
/// paths; two files that `run` would both call `bzImage` need names.
#[test]
fn same_image_and_colliding_ids() {
    let d = tempfile::tempdir().unwrap();
    let img = kernel_matrix::image::synthetic_bzimage("6.12.107 (me@box) #1 SMP", 4096);
    for sub in ["a", "b"] {
        std::fs::create_dir_all(d.path().join(sub)).unwrap();
        std::fs::write(d.path().join(sub).join("bzImage"), &img).unwrap();
    }
    let (a, b) = (d.path().join("a/bzImage"), d.path().join("b/bzImage"));
    let out = km(&["compare", "--baseline"])
        .arg(&a)
        .arg("--candidate")
        .arg(&b)
        .output()
        .unwrap();
    one_line_error(
        out,
        &[
            &format!("--baseline {}", a.display()),
            &format!("--candidate {}", b.display()),
            "are the same image (sha256 ",
        ],
    );
    let out = km(&["run", "--kernel-image"])
        .arg(&a)
        .arg("--kernel-image")
        .arg(&b)
        .output()
        .unwrap();
    one_line_error(
        out,
        &["both have the id 'bzImage'", "--kernel-image NAME=PATH"],
    );
}

/// A directory of stand-ins for gcc and gcov (saying the given versions) and gcovr
/// (`None` / `false`: not installed).
fn fake_tools(dir: &Path, gcc: &str, gcov: Option<&str>, gcovr: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let w = |name: &str, body: String| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    w(
        "gcc",
        format!(
            "case \"$1\" in -dumpfullversion) echo {gcc};; *) echo 'gcc (Fake) {gcc}';; esac\n"
        ),
    );
    if let Some(v) = gcov {
        w("gcov", format!("echo 'gcov (Debian {v}-1) {v}'\n"));
    }
    if gcovr {
        w("gcovr", "echo 'gcovr 5.2'\n".into());
    }
    bin
}

fn coverage(tree: &Path, cache: &Path, path: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "coverage",
        tree.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    km(&args).env("PATH", path).output().unwrap()
}

#[test]
fn coverage_src_not_a_kernel_tree() {
    let (_d, cache) = empty_cache();
    let out = coverage(
        Path::new("harness"),
        &cache,
        &std::env::var("PATH").unwrap(),
        &[],
    );
    one_line_error(out, &["harness is not a kernel source tree"]);
    assert!(!cache.exists(), "nothing is created for a bad SRC");
}

#[test]
fn coverage_without_gcovr_or_gcov_names_the_package() {
    let (d, cache) = empty_cache();
    let tree = d.path().join("linux");
    fake_kernel_tree(&tree);
    let bin = fake_tools(d.path(), "12.2.0", Some("12.2.0"), false);
    let out = coverage(&tree, &cache, bin.to_str().unwrap(), &[]);
    one_line_error(out, &["gcovr not found", "apt-get install gcovr"]);
    let d2 = tempfile::tempdir().unwrap();
    let bin = fake_tools(d2.path(), "12.2.0", None, true);
    let out = coverage(&tree, &cache, bin.to_str().unwrap(), &[]);
    one_line_error(out, &["gcov not found", "apt-get install gcc"]);
    assert!(!cache.exists(), "nothing is built without the tools");
}

#[test]
fn coverage_gcov_of_another_compiler() {
    let (d, cache) = empty_cache();
    let tree = d.path().join("linux");
    fake_kernel_tree(&tree);
    let bin = fake_tools(d.path(), "12.2.0", Some("13.1.0"), true);
    let out = coverage(&tree, &cache, bin.to_str().unwrap(), &[]);
    one_line_error(
        out,
        &[
            "gcov (gcov (Debian 13.1.0-1) 13.1.0) is not the gcov of the compiler that builds the kernel (gcc 12.2.0)",
            "gcov-12",
        ],
    );
}

#[test]
fn coverage_patch_that_does_not_apply_leaves_the_tree_alone() {
    let (d, cache) = empty_cache();
    let tree = d.path().join("linux");
    fake_kernel_tree(&tree);
    std::fs::write(tree.join("mm/process_vm_access.c"), "something else\n").unwrap();
    let before = snapshot(&tree);
    let bin = fake_tools(d.path(), "12.2.0", Some("12.2.0"), true);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = coverage(
        &tree,
        &cache,
        &path,
        &[
            "--patch",
            "kernel-matrix/tests/fixtures/accept-flag-1.patch",
        ],
    );
    one_line_error(
        out,
        &["--patch kernel-matrix/tests/fixtures/accept-flag-1.patch does not apply to the tree"],
    );
    assert_eq!(snapshot(&tree), before, "the user's tree changed");
}
