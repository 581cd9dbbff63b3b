//! The download cache. Layout under the root:
//!
//! ```text
//! indexes/<mirror>/<suite>/Packages.tsv        slim copy of Packages.xz; mtime = last check
//! indexes/<mirror>/<suite>/resolved/<glob>.json which package a glob picked from that index
//! debs/<basename>.deb                           as downloaded; size + SHA256 from the index
//! kernels/<id>/<debian-version>/vmlinuz         extracted image (+ config), meta.json
//! ```
//!
//! Every file is written to a temporary name in its own directory, fsynced and renamed, so a
//! reader (or a concurrent writer in another thread or process) sees either the old file or
//! the complete new one, never a torn one.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::archive::{hex, Mirror};
use crate::{Error, Result};

pub const CACHE_ENV: &str = "PVMTEST_CACHE_DIR";
pub const TTL_ENV: &str = "PVMTEST_INDEX_TTL_SECS";
/// Debian's archive is published four times a day; checking more often gains nothing.
pub const DEFAULT_INDEX_TTL: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `explicit`, else $PVMTEST_CACHE_DIR, else $XDG_CACHE_HOME/pvmtest, else
    /// $HOME/.cache/pvmtest.
    pub fn from_env(explicit: Option<&Path>) -> Result<Cache> {
        Cache::from_vars(explicit, &|k| std::env::var(k).ok())
    }

    /// [`Cache::from_env`] with the environment passed in.
    pub fn from_vars(
        explicit: Option<&Path>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Cache> {
        if let Some(p) = explicit {
            return Ok(Cache::new(p));
        }
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        if let Some(p) = var(CACHE_ENV) {
            return Ok(Cache::new(p));
        }
        // The XDG spec says to ignore a relative XDG_CACHE_HOME.
        if let Some(p) = var("XDG_CACHE_HOME").filter(|p| p.starts_with('/')) {
            return Ok(Cache::new(Path::new(&p).join("pvmtest")));
        }
        if let Some(home) = var("HOME") {
            return Ok(Cache::new(Path::new(&home).join(".cache/pvmtest")));
        }
        Err(Error::new(format!(
            "no cache directory: HOME, XDG_CACHE_HOME and {CACHE_ENV} are all unset (set {CACHE_ENV}=DIR or pass --cache-dir DIR)"
        )))
    }

    pub fn index_dir(&self, mirror: &Mirror, suite: &str) -> PathBuf {
        self.root
            .join("indexes")
            .join(component(&mirror.cache_key()))
            .join(component(suite))
    }

    pub fn index_path(&self, mirror: &Mirror, suite: &str) -> PathBuf {
        self.index_dir(mirror, suite).join("Packages.tsv")
    }

    pub fn resolved_path(&self, mirror: &Mirror, suite: &str, glob: &str) -> PathBuf {
        self.index_dir(mirror, suite)
            .join("resolved")
            .join(format!("{}.json", component(glob)))
    }

    /// debs/<basename of the pool path>; the pool path was checked by `archive::resolve`, but
    /// the basename is checked again here because it becomes a file name.
    pub fn deb_path(&self, filename: &str) -> Result<PathBuf> {
        let base = filename.rsplit('/').next().unwrap_or("");
        if base.is_empty() || base == "." || base == ".." {
            return Err(Error::new(format!(
                "package file name '{filename}' has no usable basename (the index is corrupt; pass --mirror URL)"
            )));
        }
        Ok(self.root.join("debs").join(base))
    }

    pub fn kernel_dir(&self, id: &str, version: &str) -> PathBuf {
        self.root
            .join("kernels")
            .join(component(id))
            .join(component(version))
    }
}

/// One path component: no separators, never "." or "..".
fn component(s: &str) -> String {
    let c: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if c.is_empty() || c == "." || c == ".." {
        format!("_{c}")
    } else {
        c
    }
}

/// The index TTL from $PVMTEST_INDEX_TTL_SECS, default 6 h.
pub fn index_ttl_from_env() -> Result<Duration> {
    parse_ttl(std::env::var(TTL_ENV).ok().as_deref())
}

pub fn parse_ttl(value: Option<&str>) -> Result<Duration> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_INDEX_TTL),
        Some(v) => v.parse::<u64>().map(Duration::from_secs).map_err(|_| {
            Error::new(format!(
                "{TTL_ENV}='{v}' is not a whole number of seconds (unset it for the default 21600, or 0 to always re-check)"
            ))
        }),
    }
}

pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::new(format!(
            "cannot create cache directory {}: {e} (check permissions, or set {CACHE_ENV}=DIR)",
            dir.display()
        ))
    })
}

/// A temporary file in `dir` (created if needed) to be [`commit`]ted; dropped, it vanishes.
pub fn temp_in(dir: &Path) -> Result<NamedTempFile> {
    create_dir(dir)?;
    tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| {
            Error::new(format!(
                "cannot create a temporary file in {}: {e} (check permissions and free space, or set {CACHE_ENV}=DIR)",
                dir.display()
            ))
        })
}

/// fsync and rename `tmp` onto `dest`, then fsync the directory so the rename survives a crash.
pub fn commit(tmp: NamedTempFile, dest: &Path) -> Result<()> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::new(format!(
            "cannot {what} {}: {e} (check free space and permissions in the cache directory)",
            dest.display()
        ))
    };
    tmp.as_file().sync_all().map_err(|e| fail("sync", &e))?;
    tmp.persist(dest).map_err(|e| fail("write", &e.error))?;
    if let Some(dir) = dest.parent() {
        // Best effort: some filesystems refuse to fsync a directory, and the data is safe.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

pub fn write_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = temp_in(dir)?;
    tmp.as_file_mut().write_all(data).map_err(|e| {
        Error::new(format!(
            "cannot write {}: {e} (check free space and permissions in the cache directory)",
            dest.display()
        ))
    })?;
    commit(tmp, dest)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Size and SHA256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex(&h.finalize())))
}

/// Deletes a cache file that failed verification. A file we cannot delete would be found
/// and rejected again next time, so failure here is not worth stopping for.
pub fn discard(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let all = env(&[
            ("PVMTEST_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            Cache::from_vars(Some(Path::new("/e")), &all).unwrap().root,
            PathBuf::from("/e")
        );
        assert_eq!(
            Cache::from_vars(None, &all).unwrap().root,
            PathBuf::from("/c")
        );
        let xdg = env(&[
            ("PVMTEST_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            Cache::from_vars(None, &xdg).unwrap().root,
            PathBuf::from("/x/pvmtest")
        );
        let rel = env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")]);
        assert_eq!(
            Cache::from_vars(None, &rel).unwrap().root,
            PathBuf::from("/h/.cache/pvmtest")
        );
        let e = Cache::from_vars(None, &env(&[])).unwrap_err().to_string();
        assert!(e.contains("PVMTEST_CACHE_DIR=DIR"), "{e}");
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl(None).unwrap(), DEFAULT_INDEX_TTL);
        assert_eq!(parse_ttl(Some("")).unwrap(), DEFAULT_INDEX_TTL);
        assert_eq!(parse_ttl(Some("0")).unwrap(), Duration::ZERO);
        assert_eq!(parse_ttl(Some(" 60 ")).unwrap(), Duration::from_secs(60));
        let e = parse_ttl(Some("6h")).unwrap_err().to_string();
        assert!(e.starts_with("PVMTEST_INDEX_TTL_SECS='6h' is not"), "{e}");
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let c = Cache::new("/r");
        let m = Mirror::new("http://deb.debian.org/debian").unwrap();
        assert_eq!(
            c.index_path(&m, "bookworm"),
            PathBuf::from("/r/indexes/deb.debian.org_debian/bookworm/Packages.tsv")
        );
        assert_eq!(
            c.deb_path("pool/main/l/linux/a_1_amd64.deb").unwrap(),
            PathBuf::from("/r/debs/a_1_amd64.deb")
        );
        assert!(c.deb_path("pool/..").is_err());
        assert_eq!(
            c.kernel_dir("..", "1:2/3"),
            PathBuf::from("/r/kernels/_../1:2_3")
        );
        assert_eq!(
            c.resolved_path(&m, "sid", "linux-*"),
            PathBuf::from("/r/indexes/deb.debian.org_debian/sid/resolved/linux-*.json")
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
        assert_eq!(sha256_file(&p).unwrap(), (3, sha256_hex(b"two")));
    }

    #[test]
    fn concurrent_atomic_writers_never_tear() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let a = vec![b'a'; 1 << 20];
        let b = vec![b'b'; 1 << 20];
        std::thread::scope(|s| {
            for data in [&a, &b] {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..10 {
                        write_atomic(p, data).unwrap();
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..50 {
                    if let Ok(d) = std::fs::read(&p) {
                        assert!(d == a || d == b, "torn read of {} bytes", d.len());
                    }
                }
            });
        });
    }
}
