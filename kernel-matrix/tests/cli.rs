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
