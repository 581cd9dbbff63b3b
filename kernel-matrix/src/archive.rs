//! The Debian archive: which mirror, its Packages indexes, choosing a package by Debian version
//! order, and downloading a .deb with its size and SHA256 checked against the index.
//!
//! Mirrors are http://, https:// or file:/// (a local directory laid out like the archive, used
//! by the tests and by anyone with an offline copy).

use std::cmp::Ordering;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kernels::{glob_match, KernelEntry};
use crate::{cache, Error, Result};

pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
pub const MIRROR_ENV: &str = "PVMTEST_MIRROR";
/// Every connection attempt gives up after this long, whatever the download timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No index or package we fetch comes near this; a body past it is a broken mirror.
const MAX_BODY: u64 = 1 << 30;

/// Appended to every network error so the user knows the three ways out.
/// In every "the file is not there" message, so [`is_not_found`] can tell it from "the mirror
/// is unreachable".
const NOT_FOUND: &str = "not on the mirror";

pub const NETWORK_HINT: &str =
    "check the network, pass --mirror URL or set PVMTEST_MIRROR, or use --offline with a warm cache";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Without a trailing slash, e.g. "http://deb.debian.org/debian" or "file:///srv/debian".
    pub url: String,
}

impl Mirror {
    /// Checks the scheme and normalises the trailing slash.
    pub fn new(url: &str) -> Result<Mirror> {
        let url = url.trim().trim_end_matches('/');
        let ok = url.starts_with("http://") && url.len() > "http://".len()
            || url.starts_with("https://") && url.len() > "https://".len()
            || url.starts_with("file:///");
        if !ok {
            return Err(Error::new(format!(
                "mirror '{url}' is not an http://, https:// or file:/// URL (pass e.g. --mirror {DEFAULT_MIRROR})"
            )));
        }
        Ok(Mirror {
            url: url.to_string(),
        })
    }

    /// `explicit` (from --mirror) wins, then $PVMTEST_MIRROR, then the first Debian mirror in
    /// /etc/apt (a machine's configured mirror is usually the closest one), then
    /// deb.debian.org.
    pub fn from_env_or_apt(explicit: Option<&str>) -> Result<Mirror> {
        let env = std::env::var(MIRROR_ENV).ok();
        Mirror::from_sources(explicit, env.as_deref(), Path::new("/etc/apt"))
    }

    /// [`Mirror::from_env_or_apt`] with the environment and the apt directory passed in.
    pub fn from_sources(
        explicit: Option<&str>,
        env: Option<&str>,
        apt_dir: &Path,
    ) -> Result<Mirror> {
        if let Some(url) = explicit.filter(|s| !s.trim().is_empty()) {
            return Mirror::new(url).map_err(|e| Error::new(format!("--mirror: {e}")));
        }
        if let Some(url) = env.filter(|s| !s.trim().is_empty()) {
            return Mirror::new(url).map_err(|e| Error::new(format!("{MIRROR_ENV}: {e}")));
        }
        if let Some(url) = apt_mirror(apt_dir) {
            if let Ok(m) = Mirror::new(&url) {
                return Ok(m);
            }
        }
        Mirror::new(DEFAULT_MIRROR)
    }

    pub fn index_url(&self, suite: &str) -> String {
        format!("{}/dists/{suite}/main/binary-amd64/Packages.xz", self.url)
    }

    pub fn file_url(&self, filename: &str) -> String {
        format!("{}/{}", self.url, filename.trim_start_matches('/'))
    }

    /// A directory name for this mirror in the cache: indexes differ between mirrors (a stale
    /// one may lag), package files do not.
    pub fn cache_key(&self) -> String {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let key: String = rest
            .trim_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if key.is_empty() {
            "mirror".to_string()
        } else {
            key
        }
    }
}

/// The first http(s) Debian mirror in apt's configuration, if any.
fn apt_mirror(apt_dir: &Path) -> Option<String> {
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let found = if f.extension().is_some_and(|x| x == "sources") {
            deb822_mirror(&text)
        } else {
            one_line_mirror(&text)
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// A Debian archive rather than debian-security, a vendor repository laid out under
/// ".../debian" (Docker's is /linux/debian with component "stable"), or a snapshot.
fn is_debian_archive(uri: &str, components: &[&str]) -> bool {
    let u = uri.trim_end_matches('/');
    (u.starts_with("http://") || u.starts_with("https://"))
        && u.ends_with("/debian")
        && !u.contains("security")
        && components.contains(&"main")
}

fn one_line_mirror(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("deb") | Some("deb-src")) {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        // Options: "[arch=amd64 signed-by=...]", possibly split over several words.
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let Some(end) = rest.iter().position(|w| w.ends_with(']')) else {
                continue;
            };
            rest.drain(..=end);
        }
        if rest.len() >= 3 && is_debian_archive(rest[0], &rest[2..]) {
            return Some(rest[0].trim_end_matches('/').to_string());
        }
    }
    None
}

fn deb822_mirror(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut uris = Vec::new();
        let mut components = Vec::new();
        let mut types = Vec::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.split_whitespace();
            match k.trim().to_ascii_lowercase().as_str() {
                "uris" => uris.extend(v),
                "components" => components.extend(v),
                "types" => types.extend(v),
                "enabled" => enabled = !v.into_iter().any(|w| w.eq_ignore_ascii_case("no")),
                _ => {}
            }
        }
        if !enabled || !types.iter().any(|t| *t == "deb" || *t == "deb-src") {
            continue;
        }
        if let Some(u) = uris.iter().find(|u| is_debian_archive(u, &components)) {
            return Some(u.trim_end_matches('/').to_string());
        }
    }
    None
}

/// The fields of one Packages paragraph that we use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub package: String,
    pub version: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// One suite's binary-amd64 index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub suite: String,
    /// Where it came from, for error messages.
    pub url: String,
    pub packages: Vec<PackageRecord>,
}

/// Parses a Packages file. Paragraphs missing a field we need (or with an unparsable Size) are
/// skipped: they cannot be downloaded and verified anyway.
pub fn parse_packages(text: &str) -> Vec<PackageRecord> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut package, mut version, mut filename, mut size, mut sha256) =
            (None, None, None, None, None);
        for line in para.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => package = Some(v),
                "Version" => version = Some(v),
                "Filename" => filename = Some(v),
                "Size" => size = v.parse::<u64>().ok(),
                "SHA256" => sha256 = Some(v),
                _ => {}
            }
        }
        if let (Some(p), Some(v), Some(f), Some(s), Some(h)) =
            (package, version, filename, size, sha256)
        {
            out.push(PackageRecord {
                package: p.to_string(),
                version: v.to_string(),
                filename: f.to_string(),
                size: s,
                sha256: h.to_ascii_lowercase(),
            });
        }
    }
    out
}

/// Decompresses a Packages.xz body.
pub fn decompress_xz(data: &[u8], what: &str) -> Result<String> {
    let mut out = Vec::with_capacity(data.len() * 6);
    liblzma::read::XzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::new(format!(
                "{what} is not a valid xz file: {e} (the mirror or a proxy mangled it; rerun, or pass --mirror URL)"
            ))
        })?;
    String::from_utf8(out).map_err(|_| {
        Error::new(format!(
            "{what} decompresses to non-UTF-8 text (not a Packages index; pass --mirror URL)"
        ))
    })
}

/// The package chosen for a kernel entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub id: String,
    pub package: String,
    pub version: String,
    /// Path relative to the mirror root, e.g. pool/main/l/linux/....deb
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// Picks the newest package (by Debian version order) whose name matches the entry's glob.
pub fn resolve(entry: &KernelEntry, index: &Index) -> Result<Resolved> {
    let best = index
        .packages
        .iter()
        .filter(|r| glob_match(&entry.package, &r.package))
        .filter(|r| entry.version.as_ref().is_none_or(|v| glob_match(v, &r.version)))
        .max_by(|a, b| {
            compare_versions(&a.version, &b.version).then_with(|| a.package.cmp(&b.package))
        })
        .ok_or_else(|| {
            Error::new(format!(
                "no package matching '{}'{} in {} ({} packages in {}; the archive may have dropped or renamed it: fix the package glob in kernels.yaml, or pass --mirror URL)",
                entry.package,
                entry.version.as_ref().map_or(String::new(), |v| format!(" at version '{v}'")),
                entry.suite,
                index.packages.len(),
                index.url
            ))
        })?;
    let bad = |field: &str, value: &str| {
        Error::new(format!(
            "{}: package {} has a malformed {field} field '{value}' (the mirror is corrupt; pass --mirror URL)",
            index.url, best.package
        ))
    };
    if best.sha256.len() != 64 || !best.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("SHA256", &best.sha256));
    }
    if !is_safe_pool_path(&best.filename) {
        return Err(bad("Filename", &best.filename));
    }
    Ok(Resolved {
        id: entry.id.clone(),
        package: best.package.clone(),
        version: best.version.clone(),
        filename: best.filename.clone(),
        size: best.size,
        sha256: best.sha256.clone(),
    })
}

/// A relative path without ".." that ends in a .deb, so it can neither escape the mirror nor
/// the cache directory.
fn is_safe_pool_path(f: &str) -> bool {
    !f.starts_with('/')
        && f.ends_with(".deb")
        && f.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// dpkg's version order: epoch numerically, then upstream version, then Debian revision, each
/// compared by dpkg's verrevcmp (letters before other symbols, `~` before everything, even the
/// end of the string).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a);
    let (eb, ub, rb) = split_version(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

fn split_version(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(|c| c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// What opening a URL gave.
pub enum Fetched {
    /// The server said 304 to our If-Modified-Since.
    NotModified,
    Body {
        reader: Box<dyn Read + Send>,
        len: Option<u64>,
        last_modified: Option<String>,
    },
}

/// Opens `url` for reading. `timeout` bounds the whole transfer, the connection gets
/// [`CONNECT_TIMEOUT`]. Errors are one line naming the URL.
pub fn open(url: &str, timeout: Duration, if_modified_since: Option<&str>) -> Result<Fetched> {
    if let Some(path) = url.strip_prefix("file://") {
        let f = File::open(path).map_err(|e| {
            let reason = if e.kind() == std::io::ErrorKind::NotFound {
                NOT_FOUND.to_string()
            } else {
                io_reason(&e)
            };
            Error::new(format!(
                "cannot read {url}: {reason} ({})",
                missing_hint(url)
            ))
        })?;
        let len = f.metadata().ok().map(|m| m.len());
        return Ok(Fetched::Body {
            reader: Box::new(f),
            len,
            last_modified: None,
        });
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("pvmtest-kernel-matrix/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(v) = if_modified_since {
        req = req.header("If-Modified-Since", v);
    }
    let resp = req.call().map_err(|e| {
        Error::new(format!(
            "cannot download {url}: {} ({NETWORK_HINT})",
            net_reason(&e)
        ))
    })?;
    let status = resp.status().as_u16();
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    if status == 404 || status == 410 {
        return Err(Error::new(format!(
            "cannot download {url}: HTTP {status}, {NOT_FOUND} ({})",
            missing_hint(url)
        )));
    }
    if status != 200 {
        return Err(Error::new(format!(
            "cannot download {url}: HTTP {status} ({NETWORK_HINT})"
        )));
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let last_modified = header("last-modified");
    let len = header("content-length").and_then(|v| v.parse().ok());
    let reader = resp.into_body().into_reader();
    Ok(Fetched::Body {
        reader: Box::new(reader),
        len,
        last_modified,
    })
}

/// True for errors that mean "the file is not on the mirror" rather than "the mirror is
/// unreachable", so the caller can refresh a stale index and retry.
pub fn is_not_found(e: &Error) -> bool {
    e.0.contains(NOT_FOUND)
}

fn missing_hint(url: &str) -> &'static str {
    if url.ends_with("/Packages.xz") {
        "is the suite in kernels.yaml right? otherwise pass --mirror URL or set PVMTEST_MIRROR"
    } else {
        "the mirror may be mid-update: rerun later, or pass --mirror URL or set PVMTEST_MIRROR"
    }
}

fn net_reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io_reason(io),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => other.to_string(),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    // io::Error's Display appends "(os error 111)"; the kind alone reads better in one line.
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}

/// Downloads a suite's Packages.xz into memory. `Ok(None)` means not modified since
/// `if_modified_since`. Returns the raw bytes and the Last-Modified header.
pub fn fetch_index_xz(
    mirror: &Mirror,
    suite: &str,
    timeout: Duration,
    if_modified_since: Option<&str>,
) -> Result<Option<(Vec<u8>, Option<String>)>> {
    let url = mirror.index_url(suite);
    match open(&url, timeout, if_modified_since)? {
        Fetched::NotModified => Ok(None),
        Fetched::Body {
            reader,
            last_modified,
            ..
        } => {
            let mut data = Vec::new();
            reader.take(MAX_BODY).read_to_end(&mut data).map_err(|e| {
                Error::new(format!(
                    "download of {url} broke off after {} bytes: {} ({NETWORK_HINT})",
                    data.len(),
                    io_reason(&e)
                ))
            })?;
            Ok(Some((data, last_modified)))
        }
    }
}

/// Downloads and parses one suite's index (no cache).
pub fn fetch_index(mirror: &Mirror, suite: &str, timeout: Duration) -> Result<Index> {
    let url = mirror.index_url(suite);
    let (xz, _) = fetch_index_xz(mirror, suite, timeout, None)?
        .ok_or_else(|| Error::new(format!("{url}: unexpected 304 Not Modified")))?;
    let text = decompress_xz(&xz, &url)?;
    Ok(Index {
        suite: suite.to_string(),
        url,
        packages: parse_packages(&text),
    })
}

/// Downloads `pkg` from the mirror to `dest`, which appears only once its size and SHA256
/// match the index: a failed or corrupt download leaves nothing behind.
pub fn download_deb(
    mirror: &Mirror,
    pkg: &Resolved,
    dest: &Path,
    timeout: Duration,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let url = mirror.file_url(&pkg.filename);
    let Fetched::Body { reader, .. } = open(&url, timeout, None)? else {
        return Err(Error::new(format!("{url}: unexpected 304 Not Modified")));
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = cache::temp_in(dir)?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    // One byte past the expected size is enough to know the file is wrong.
    let mut reader = reader.take(pkg.size + 1);
    progress(0, pkg.size);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::new(format!(
                    "download of {url} broke off after {done} of {} bytes: {} ({NETWORK_HINT})",
                    pkg.size,
                    io_reason(&e)
                )))
            }
        };
        hasher.update(&buf[..n]);
        tmp.as_file_mut().write_all(&buf[..n]).map_err(|e| {
            Error::new(format!(
                "cannot write {}: {e} (check free space and permissions in the cache directory)",
                tmp.path().display()
            ))
        })?;
        done += n as u64;
        progress(done.min(pkg.size), pkg.size);
    }
    if done != pkg.size {
        let got = if done > pkg.size {
            format!("more than {}", pkg.size)
        } else {
            done.to_string()
        };
        return Err(Error::new(format!(
            "size mismatch for {} from {}: expected {} bytes, got {got} (the mirror or a proxy is broken; rerun, or pass --mirror URL)",
            pkg.filename, mirror.url, pkg.size,
        )));
    }
    let got = hex(&hasher.finalize());
    if got != pkg.sha256 {
        return Err(Error::new(format!(
            "SHA256 mismatch for {} from {}: expected {}, got {got} (the mirror or the cache is corrupt; rerun to re-fetch, or pass --mirror URL)",
            pkg.filename, mirror.url, pkg.sha256
        )));
    }
    cache::commit(tmp, dest)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(glob: &str) -> KernelEntry {
        KernelEntry {
            id: "6.12".into(),
            suite: "trixie".into(),
            package: glob.into(),
            version: None,
            image: "boot/vmlinuz-*".into(),
            config: None,
            description: None,
        }
    }

    fn rec(package: &str, version: &str) -> PackageRecord {
        PackageRecord {
            package: package.into(),
            version: version.into(),
            filename: format!("pool/main/l/linux/{package}_{version}_amd64.deb"),
            size: 10,
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn dpkg_version_order() {
        use Ordering::*;
        let cases = [
            ("6.12.107-1", "6.12.94-1", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0~rc1", Greater),
            ("1.0~~", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+", Less),
            ("1.0", "1.0-0", Equal),
            ("1.0-1", "1.0-1", Equal),
            ("1:1.0", "2.0", Greater),
            ("0:2.0", "2.0", Equal),
            ("1.01", "1.1", Equal),
            ("1.0-2", "1.0-10", Less),
            ("7.3.4-1~bpo13+1", "7.3.4-1", Less),
            ("7.3.4-1~bpo13+1", "7.2.12-1~bpo13+1", Greater),
            ("6.1.176-1", "6.1.170-1", Greater),
            ("2.30-1", "2.3-1", Greater),
            ("1.2.3-4-5", "1.2.3-4-4", Greater),
            ("a", "", Greater),
            ("~", "", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn resolve_picks_newest_matching_version() {
        let index = Index {
            suite: "trixie".into(),
            url: "file:///m/dists/trixie/main/binary-amd64/Packages.xz".into(),
            packages: vec![
                rec(
                    "linux-image-6.12.94+deb13-cloud-amd64-unsigned",
                    "6.12.94-1",
                ),
                rec(
                    "linux-image-6.12.107+deb13-cloud-amd64-unsigned",
                    "6.12.107-1",
                ),
                rec(
                    "linux-image-6.12.99+deb13-cloud-amd64-unsigned",
                    "6.12.99-1",
                ),
                rec(
                    "linux-image-6.12.200+deb13-cloud-amd64-unsigned-dbg",
                    "6.12.200-1",
                ),
                rec("linux-image-6.12.200+deb13-amd64-unsigned", "6.12.200-1"),
            ],
        };
        let r = resolve(
            &entry("linux-image-6.12.*+deb13-cloud-amd64-unsigned"),
            &index,
        )
        .unwrap();
        assert_eq!(r.version, "6.12.107-1");
        assert_eq!(r.package, "linux-image-6.12.107+deb13-cloud-amd64-unsigned");
        assert_eq!(r.id, "6.12");

        let e = resolve(&entry("linux-image-9.9.*"), &index)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no package matching 'linux-image-9.9.*' in trixie"),
            "{e}"
        );
        assert!(e.contains("5 packages in file:///m/dists/trixie"), "{e}");
    }

    /// A runtime row pins its upstream release with a version glob: the newest build of that
    /// release wins, not the newest package.
    #[test]
    fn a_version_glob_pins_the_release() {
        let index = Index {
            suite: "sid".into(),
            url: "file:///m/dists/sid/main/binary-amd64/Packages.xz".into(),
            packages: vec![
                rec("runsc", "0.0~20240729.0-4+b7"),
                rec("runsc", "0.0~20240729.0-7+b1"),
                rec("runsc", "0.0~20250101.0-1"),
            ],
        };
        let mut e = entry("runsc");
        assert_eq!(resolve(&e, &index).unwrap().version, "0.0~20250101.0-1");
        e.version = Some("0.0~20240729.*".into());
        assert_eq!(resolve(&e, &index).unwrap().version, "0.0~20240729.0-7+b1");
        e.version = Some("0.0~2019*".into());
        let err = resolve(&e, &index).unwrap_err().to_string();
        assert!(
            err.contains("no package matching 'runsc' at version '0.0~2019*' in trixie"),
            "{err}"
        );
    }

    #[test]
    fn resolve_rejects_unsafe_filename_and_bad_hash() {
        let mut r = rec("linux-x", "1");
        r.filename = "../../etc/x.deb".into();
        let index = Index {
            suite: "s".into(),
            url: "u".into(),
            packages: vec![r],
        };
        let e = resolve(&entry("linux-x"), &index).unwrap_err().to_string();
        assert!(e.contains("malformed Filename"), "{e}");
        let mut r = rec("linux-x", "1");
        r.sha256 = "zz".into();
        let index = Index {
            packages: vec![r],
            ..index
        };
        let e = resolve(&entry("linux-x"), &index).unwrap_err().to_string();
        assert!(e.contains("malformed SHA256"), "{e}");
    }

    #[test]
    fn packages_paragraphs_parse() {
        let text = "Package: a\nVersion: 1.0-1\nDescription: x\n multi line\n .\nFilename: pool/a.deb\nSize: 12\nSHA256: ABCD\n\nPackage: b\nVersion: 2\n\nPackage: c\nVersion: 3\nFilename: pool/c.deb\nSize: 7\nSHA256: ff\n";
        let recs = parse_packages(text);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].package, "a");
        assert_eq!(recs[0].size, 12);
        assert_eq!(recs[0].sha256, "abcd");
        assert_eq!(recs[1].filename, "pool/c.deb");
    }

    #[test]
    fn real_index_copy_resolves_if_present() {
        // A copy of the live trixie-backports index (the small one, where 7.2.* and 7.3.*
        // packages sit side by side) may be in /tmp on a developer machine; skip otherwise.
        for e in crate::kernels::builtin()
            .iter()
            .filter(|e| e.suite == "trixie-backports")
        {
            let p = format!("/tmp/Packages-{}.xz", e.suite);
            let Ok(xz) = std::fs::read(&p) else { continue };
            let idx = Index {
                suite: e.suite.clone(),
                url: p.clone(),
                packages: parse_packages(&decompress_xz(&xz, &p).unwrap()),
            };
            let r = resolve(e, &idx).unwrap();
            assert!(r.version.starts_with(&format!("{}.", e.id)), "{r:?}");
        }
    }

    #[test]
    fn mirror_urls_and_validation() {
        let m = Mirror::new("http://deb.debian.org/debian/").unwrap();
        assert_eq!(m.url, "http://deb.debian.org/debian");
        assert_eq!(
            m.index_url("bookworm"),
            "http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz"
        );
        assert_eq!(
            m.file_url("pool/x.deb"),
            "http://deb.debian.org/debian/pool/x.deb"
        );
        assert_eq!(m.cache_key(), "deb.debian.org_debian");
        assert_eq!(Mirror::new("file:///srv/m").unwrap().cache_key(), "srv_m");
        let e = Mirror::new("ftp://x/debian").unwrap_err().to_string();
        assert!(e.contains("'ftp://x/debian' is not an http://"), "{e}");
        assert!(Mirror::new("http://").is_err());
    }

    #[test]
    fn mirror_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let apt = dir.path();
        std::fs::create_dir_all(apt.join("sources.list.d")).unwrap();
        let none = Mirror::from_sources(None, None, apt).unwrap();
        assert_eq!(none.url, DEFAULT_MIRROR);

        std::fs::write(
            apt.join("sources.list.d/debian.sources"),
            "Types: deb\n# comment\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb\nURIs: https://download.docker.com/linux/debian\nSuites: bookworm\nComponents: stable\n\n\
             Types: deb\nEnabled: no\nURIs: http://disabled.example/debian\nSuites: bookworm\nComponents: main\n\n\
             Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main contrib\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("sources.list.d/google.list"),
            "deb https://packages.cloud.google.com/apt cloud-sdk main\n",
        )
        .unwrap();
        assert_eq!(
            Mirror::from_sources(None, None, apt).unwrap().url,
            "http://mirror.example/debian"
        );

        std::fs::write(
            apt.join("sources.list"),
            "# deb http://commented.example/debian bookworm main\n\
             deb http://security.debian.org/debian-security bookworm-security main\n\
             deb [arch=amd64 signed-by=/k.gpg] http://ftp.example.org/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            Mirror::from_sources(None, None, apt).unwrap().url,
            "http://ftp.example.org/debian"
        );
        assert_eq!(
            Mirror::from_sources(None, Some("file:///srv/m"), apt)
                .unwrap()
                .url,
            "file:///srv/m"
        );
        assert_eq!(
            Mirror::from_sources(Some("https://x.example/debian"), Some("file:///srv/m"), apt)
                .unwrap()
                .url,
            "https://x.example/debian"
        );
        let e = Mirror::from_sources(None, Some("nonsense"), apt)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("PVMTEST_MIRROR: mirror 'nonsense'"), "{e}");
    }

    #[test]
    fn unreachable_http_names_url_and_ways_out() {
        let m = Mirror::new("http://127.0.0.1:9/debian").unwrap();
        let e = fetch_index(&m, "bookworm", Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with("cannot download http://127.0.0.1:9/debian/dists/bookworm/main/binary-amd64/Packages.xz: "),
            "{e}"
        );
        assert!(
            e.contains("--mirror") && e.contains("PVMTEST_MIRROR") && e.contains("--offline"),
            "{e}"
        );
    }

    #[test]
    fn http_against_local_server() {
        // A one-shot server on loopback: checks status handling and that the body streams.
        use std::io::{BufRead, BufReader};
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let replies = [
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_string(),
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLast-Modified: Sat, 01 Jan 2000 00:00:00 GMT\r\nConnection: close\r\n\r\nhello".to_string(),
            ];
            for reply in replies {
                let (mut s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/x");
        let t = Duration::from_secs(10);
        let e = open(&url, t, None).err().unwrap();
        assert!(is_not_found(&e), "{e}");
        assert!(matches!(
            open(&url, t, Some("x")).ok().unwrap(),
            Fetched::NotModified
        ));
        let Fetched::Body {
            mut reader,
            last_modified,
            ..
        } = open(&url, t, None).ok().unwrap()
        else {
            panic!("expected a body")
        };
        let mut s = String::new();
        reader.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert_eq!(
            last_modified.as_deref(),
            Some("Sat, 01 Jan 2000 00:00:00 GMT")
        );
        server.join().unwrap();
    }
}
