//! Getting a kernel image for a kernels.yaml entry: resolve the package in the suite's index,
//! download and verify the .deb, extract the image, and keep all of it in the cache so the
//! next run does no network I/O.
//!
//! Trust chain: the index gives size + SHA256 of the .deb; the .deb is verified against them
//! whenever we extract from it; meta.json records the extracted image's SHA256, which is
//! re-checked on every use. A file that fails a check is deleted and rebuilt, never used.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::archive::{self, Index, Mirror, PackageRecord, Resolved};
use crate::cache::{self, Cache};
use crate::image::{self, ImageInfo};
use crate::kernels::KernelEntry;
use crate::{deb, Error, Result};

pub const TIMEOUT_ENV: &str = "PVMTEST_DOWNLOAD_TIMEOUT_SECS";
/// A 30 MB package over a slow link; a stalled transfer should not hang a CI run forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

const INDEX_MAGIC: &str = "pvmtest-index 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    pub mirror: Mirror,
    pub cache: Cache,
    /// Use only what is cached, whatever its age; never touch the network.
    pub offline: bool,
    /// Bound on each whole download (connecting is bounded separately, by 10 s).
    pub timeout: Duration,
    /// How long a cached index is used before the mirror is asked again.
    pub index_ttl: Duration,
}

impl FetchConfig {
    /// Defaults: online, 300 s downloads, 6 h index TTL.
    pub fn new(mirror: Mirror, cache: Cache) -> FetchConfig {
        FetchConfig {
            mirror,
            cache,
            offline: false,
            timeout: DEFAULT_TIMEOUT,
            index_ttl: cache::DEFAULT_INDEX_TTL,
        }
    }

    /// From command-line values where given, else the environment: mirror as in
    /// [`Mirror::from_env_or_apt`], cache as in [`Cache::from_env`], $PVMTEST_INDEX_TTL_SECS,
    /// $PVMTEST_DOWNLOAD_TIMEOUT_SECS.
    pub fn from_env(
        mirror: Option<&str>,
        cache_dir: Option<&Path>,
        offline: bool,
    ) -> Result<FetchConfig> {
        let timeout = match std::env::var(TIMEOUT_ENV).ok().filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_TIMEOUT,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(s) if s > 0 => Duration::from_secs(s),
                _ => {
                    return Err(Error::new(format!(
                        "{TIMEOUT_ENV}='{v}' is not a positive whole number of seconds (unset it for the default 300)"
                    )))
                }
            },
        };
        Ok(FetchConfig {
            mirror: Mirror::from_env_or_apt(mirror)?,
            cache: Cache::from_env(cache_dir)?,
            offline,
            timeout,
            index_ttl: cache::index_ttl_from_env()?,
        })
    }
}

/// Progress of [`ensure_kernel`], in order: `ResolvingIndex`, then either `Cached` (done), or
/// `Downloading` (zero or more times) and `Extracting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchEvent {
    ResolvingIndex,
    Downloading {
        done: u64,
        total: u64,
    },
    Extracting,
    /// The verified image was already in the cache.
    Cached,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchedKernel {
    pub id: String,
    pub package: String,
    /// Debian version, e.g. "6.1.176-1".
    pub version: String,
    pub image: PathBuf,
    pub config: Option<PathBuf>,
    pub info: ImageInfo,
    /// SHA256 of the image file.
    pub sha256: String,
}

/// Makes sure the entry's newest image is in the cache, verified, and says where it is.
/// Safe to call from several threads at once.
pub fn ensure_kernel(
    entry: &KernelEntry,
    cfg: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<FetchedKernel> {
    ensure_inner(entry, cfg, progress)
        .map_err(|e| Error::new(format!("kernel {}: {}", entry.id, e.0)))
}

fn ensure_inner(
    entry: &KernelEntry,
    cfg: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<FetchedKernel> {
    progress(FetchEvent::ResolvingIndex);
    let (resolved, index_fetched) = resolve_cached(entry, cfg, false)?;
    let dir = cfg.cache.kernel_dir(&entry.id, &resolved.version);
    if let Some(k) = cached_kernel(entry, &resolved, &dir) {
        progress(FetchEvent::Cached);
        return Ok(k);
    }
    let (resolved, deb_path) = verified_deb(entry, cfg, resolved, index_fetched, progress)?;
    let dir = cfg.cache.kernel_dir(&entry.id, &resolved.version);
    progress(FetchEvent::Extracting);
    extract_to_cache(entry, &resolved, &deb_path, &dir)
}

/// The Debian version the entry resolves to now (the index only; nothing is downloaded).
pub fn resolve_version(entry: &KernelEntry, cfg: &FetchConfig) -> Result<String> {
    resolve_cached(entry, cfg, false)
        .map(|(r, _)| r.version)
        .map_err(|e| Error::new(format!("kernel {}: {}", entry.id, e.0)))
}

/// One executable taken from a package (a runtime: runsc, linux.uml, qemu-x86_64-static).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchedProgram {
    pub id: String,
    pub package: String,
    /// Debian version, e.g. "0.0~20240729.0-4+b7".
    pub version: String,
    pub path: PathBuf,
    /// SHA-256 of the program file.
    pub sha256: String,
}

/// [`ensure_kernel`] for a runtime: the same index, SHA-256 and cache, but the one file the
/// entry's `image` glob names is kept as an executable under `runtimes/<id>/<version>/`,
/// whatever it is (no kernel image checks).
pub fn ensure_program(
    entry: &KernelEntry,
    cfg: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<FetchedProgram> {
    program_inner(entry, cfg, progress)
        .map_err(|e| Error::new(format!("runtime {}: {}", entry.id, e.0)))
}

fn program_inner(
    entry: &KernelEntry,
    cfg: &FetchConfig,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<FetchedProgram> {
    progress(FetchEvent::ResolvingIndex);
    let (resolved, index_fetched) = resolve_cached(entry, cfg, false)?;
    if let Some(p) = cached_program(entry, &resolved, cfg) {
        progress(FetchEvent::Cached);
        return Ok(p);
    }
    let (resolved, deb_path) = verified_deb(entry, cfg, resolved, index_fetched, progress)?;
    progress(FetchEvent::Extracting);
    let (inner, data) = deb::extract_matching(&deb_path, &entry.image)?;
    let dir = program_dir(cfg, &entry.id, &resolved.version);
    let name = inner.rsplit('/').next().unwrap_or("program");
    let path = dir.join(name);
    let sha256 = cache::sha256_hex(&data);
    cache::write_atomic(&path, &data)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::new(format!("chmod {}: {e}", path.display())))?;
    let meta = ProgramMeta {
        package: resolved.package.clone(),
        version: resolved.version.clone(),
        deb_sha256: resolved.sha256.clone(),
        glob: entry.image.clone(),
        path: inner.clone(),
        sha256: sha256.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::new(format!("cannot encode {}: {e}", dir.display())))?;
    // Last, so its presence means the program beside it is complete.
    cache::write_atomic(&dir.join(META_FILE), &json)?;
    Ok(FetchedProgram {
        id: entry.id.clone(),
        package: resolved.package,
        version: resolved.version,
        path,
        sha256,
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct ProgramMeta {
    package: String,
    version: String,
    deb_sha256: String,
    glob: String,
    /// The file's path inside the package.
    path: String,
    sha256: String,
}

fn program_dir(cfg: &FetchConfig, id: &str, version: &str) -> PathBuf {
    let k = cfg.cache.kernel_dir(id, version);
    // kernels/<id>/<version> -> runtimes/<id>/<version>: same sanitising, own tree.
    let rel = k.strip_prefix(cfg.cache.root.join("kernels")).unwrap_or(&k);
    cfg.cache.root.join("runtimes").join(rel)
}

fn cached_program(entry: &KernelEntry, r: &Resolved, cfg: &FetchConfig) -> Option<FetchedProgram> {
    let dir = program_dir(cfg, &entry.id, &r.version);
    let meta: ProgramMeta =
        serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).ok()?).ok()?;
    if meta.package != r.package
        || meta.version != r.version
        || meta.deb_sha256 != r.sha256
        || meta.glob != entry.image
    {
        return None;
    }
    let name = meta.path.rsplit('/').next().unwrap_or("program");
    let path = dir.join(name);
    match cache::sha256_file(&path) {
        Ok((_, sha)) if sha == meta.sha256 => Some(FetchedProgram {
            id: entry.id.clone(),
            package: r.package.clone(),
            version: r.version.clone(),
            path,
            sha256: sha,
        }),
        _ => {
            cache::discard(&dir.join(META_FILE));
            cache::discard(&path);
            None
        }
    }
}

/// The resolved package's .deb in the cache, verified against the index (downloading it when
/// missing or damaged). A cached index can name a package the mirror has since replaced: then
/// the index is fetched again and the package resolved anew, which is what is returned.
fn verified_deb(
    entry: &KernelEntry,
    cfg: &FetchConfig,
    mut resolved: Resolved,
    index_fetched: bool,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<(Resolved, PathBuf)> {
    let mut deb_path = cfg.cache.deb_path(&resolved.filename)?;
    if !deb_is_valid(&deb_path, &resolved)? {
        if cfg.offline {
            return Err(Error::new(format!(
                "--offline but {} {} ({}) is not in the cache {} (run once without --offline to fetch it)",
                resolved.package,
                resolved.version,
                deb_path.display(),
                cfg.cache.root.display()
            )));
        }
        let mut on_bytes = |done, total| progress(FetchEvent::Downloading { done, total });
        match archive::download_deb(
            &cfg.mirror,
            &resolved,
            &deb_path,
            cfg.timeout,
            &mut on_bytes,
        ) {
            // A cached index can name a package the mirror has since replaced: look again.
            Err(e) if archive::is_not_found(&e) && !index_fetched => {
                resolved = resolve_cached(entry, cfg, true)?.0;
                deb_path = cfg.cache.deb_path(&resolved.filename)?;
                if !deb_is_valid(&deb_path, &resolved)? {
                    archive::download_deb(
                        &cfg.mirror,
                        &resolved,
                        &deb_path,
                        cfg.timeout,
                        &mut on_bytes,
                    )?;
                }
            }
            other => other?,
        }
    }
    Ok((resolved, deb_path))
}

/// Where the entry resolves to, from the cached index when it is fresh (or we are offline),
/// else after refreshing it. The bool says whether this call asked the mirror.
fn resolve_cached(entry: &KernelEntry, cfg: &FetchConfig, force: bool) -> Result<(Resolved, bool)> {
    let path = cfg.cache.index_path(&cfg.mirror, &entry.suite);
    let url = cfg.mirror.index_url(&entry.suite);
    let mut header = read_index_header(&path);
    let mut fetched = false;
    if cfg.offline {
        if header.is_none() {
            return Err(Error::new(format!(
                "--offline but no cached index for {} from {} in {} (run once without --offline to fill the cache)",
                entry.suite,
                cfg.mirror.url,
                cfg.cache.root.display()
            )));
        }
    } else if force || header.is_none() || age(&path) >= cfg.index_ttl {
        header = Some(refresh_index(cfg, &entry.suite, &path, header.as_ref())?);
        fetched = true;
    }
    let Some(header) = header else {
        return Err(Error::new(format!(
            "{}: index vanished while reading it (rerun)",
            path.display()
        )));
    };

    let memo_path = cfg
        .cache
        .resolved_path(&cfg.mirror, &entry.suite, &memo_key(entry));
    if let Some(memo) = std::fs::read(&memo_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Memo>(&b).ok())
    {
        if memo.glob == memo_key(entry) && memo.index_sha256 == header.sha256 {
            return Ok((
                Resolved {
                    id: entry.id.clone(),
                    ..memo.resolved
                },
                fetched,
            ));
        }
    }

    let (index, index_sha256) = match read_index(&path, &entry.suite, &url) {
        Ok(i) => i,
        Err(e) if cfg.offline => return Err(e),
        Err(_) => {
            // Damaged on disk: fetch it again rather than trust any of it.
            cache::discard(&path);
            let _ = refresh_index(cfg, &entry.suite, &path, None)?;
            fetched = true;
            read_index(&path, &entry.suite, &url)?
        }
    };
    let resolved = archive::resolve(entry, &index)?;
    let memo = Memo {
        glob: memo_key(entry),
        index_sha256,
        resolved: resolved.clone(),
    };
    if let Ok(json) = serde_json::to_vec_pretty(&memo) {
        // Only a speed-up: if it cannot be written, the next run resolves again.
        let _ = cache::write_atomic(&memo_path, &json);
    }
    Ok((resolved, fetched))
}

/// The package glob, and the version glob when there is one: what a resolution depends on.
fn memo_key(entry: &KernelEntry) -> String {
    match &entry.version {
        Some(v) => format!("{}@{v}", entry.package),
        None => entry.package.clone(),
    }
}

/// What a package glob resolved to in one version of an index, so a warm run need not parse
/// the (tens of MB) index again.
#[derive(Debug, Serialize, Deserialize)]
struct Memo {
    glob: String,
    index_sha256: String,
    resolved: Resolved,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexHeader {
    sha256: String,
    last_modified: Option<String>,
}

fn age(path: &Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        // A missing file is infinitely old; a timestamp in the future (clock skew) is new.
        .unwrap_or(if path.exists() {
            Duration::ZERO
        } else {
            Duration::MAX
        })
}

/// Downloads the suite's Packages.xz (conditionally, when we have a copy) and stores its slim
/// form. The file's mtime records when the mirror was last asked.
fn refresh_index(
    cfg: &FetchConfig,
    suite: &str,
    path: &Path,
    have: Option<&IndexHeader>,
) -> Result<IndexHeader> {
    let url = cfg.mirror.index_url(suite);
    let ims = have.and_then(|h| h.last_modified.as_deref());
    let fetched = archive::fetch_index_xz(&cfg.mirror, suite, cfg.timeout, ims)?;
    let (xz, last_modified) = match fetched {
        Some(x) => x,
        None => {
            if let Some(h) = have {
                touch(path);
                return Ok(h.clone());
            }
            // 304 without a copy of ours cannot happen unless a proxy misbehaves.
            archive::fetch_index_xz(&cfg.mirror, suite, cfg.timeout, None)?
                .ok_or_else(|| Error::new(format!("{url}: 304 Not Modified to an unconditional request (a proxy is misbehaving; pass --mirror URL)")))?
        }
    };
    let sha256 = cache::sha256_hex(&xz);
    if let Some(h) = have.filter(|h| h.sha256 == sha256) {
        touch(path);
        return Ok(h.clone());
    }
    let text = archive::decompress_xz(&xz, &url)?;
    let packages = archive::parse_packages(&text);
    if packages.is_empty() {
        return Err(Error::new(format!(
            "{url} lists no packages (not a Debian archive index; pass --mirror URL)"
        )));
    }
    let header = IndexHeader {
        sha256,
        last_modified,
    };
    cache::write_atomic(path, &index_tsv(&url, &header, &packages))?;
    Ok(header)
}

fn touch(path: &Path) {
    // Only moves the next check later; failing means we check again sooner.
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

// The slim index: a few header lines, a blank line, then one tab-separated record per package.
// Debian field values never hold tabs or newlines; a record that did is dropped.
fn index_tsv(url: &str, h: &IndexHeader, packages: &[PackageRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packages.len() * 200);
    let _ = writeln!(out, "{INDEX_MAGIC}");
    let _ = writeln!(out, "url\t{url}");
    let _ = writeln!(out, "sha256\t{}", h.sha256);
    if let Some(lm) = &h.last_modified {
        let _ = writeln!(out, "last-modified\t{lm}");
    }
    out.push(b'\n');
    for p in packages {
        let fields = [&p.package, &p.version, &p.filename, &p.sha256];
        if fields.iter().any(|f| f.contains(['\t', '\n', '\r'])) {
            continue;
        }
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            p.package, p.version, p.filename, p.size, p.sha256
        );
    }
    out
}

fn read_index_header(path: &Path) -> Option<IndexHeader> {
    let f = std::fs::File::open(path).ok()?;
    let mut lines = BufReader::new(f).lines();
    if lines.next()?.ok()? != INDEX_MAGIC {
        return None;
    }
    let mut sha256 = None;
    let mut last_modified = None;
    for line in lines {
        let line = line.ok()?;
        if line.is_empty() {
            break;
        }
        match line.split_once('\t') {
            Some(("sha256", v)) => sha256 = Some(v.to_string()),
            Some(("last-modified", v)) => last_modified = Some(v.to_string()),
            _ => {}
        }
    }
    Some(IndexHeader {
        sha256: sha256?,
        last_modified,
    })
}

/// The parsed index and the SHA256 its header records, from one read of the file.
fn read_index(path: &Path, suite: &str, url: &str) -> Result<(Index, String)> {
    let corrupt = |why: String| {
        Error::new(format!(
            "cached index {} is damaged ({why}); delete it and rerun without --offline",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| corrupt(e.to_string()))?;
    let Some((head, body)) = text.split_once("\n\n") else {
        return Err(corrupt("no header".into()));
    };
    if head.lines().next() != Some(INDEX_MAGIC) {
        return Err(corrupt("unknown format".into()));
    }
    let sha256 = head
        .lines()
        .find_map(|l| l.strip_prefix("sha256\t"))
        .ok_or_else(|| corrupt("no sha256 in the header".into()))?
        .to_string();
    let mut packages = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let size = f.get(3).and_then(|s| s.parse::<u64>().ok());
        match (f.len(), size) {
            (5, Some(size)) => packages.push(PackageRecord {
                package: f[0].to_string(),
                version: f[1].to_string(),
                filename: f[2].to_string(),
                size,
                sha256: f[4].to_string(),
            }),
            _ => return Err(corrupt(format!("bad record {}", n + 1))),
        }
    }
    let index = Index {
        suite: suite.to_string(),
        url: url.to_string(),
        packages,
    };
    Ok((index, sha256))
}

/// True when `path` is exactly the package the index names. Anything else there (short,
/// long, corrupt) is deleted so it is fetched again.
fn deb_is_valid(path: &Path, r: &Resolved) -> Result<bool> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(false);
    };
    // The size check is free and catches the common case, an interrupted copy.
    if meta.len() == r.size {
        match cache::sha256_file(path) {
            Ok((_, sha)) if sha == r.sha256 => return Ok(true),
            _ => {}
        }
    }
    cache::discard(path);
    if path.exists() {
        return Err(Error::new(format!(
            "cached {} is corrupt and cannot be deleted (delete it by hand)",
            path.display()
        )));
    }
    Ok(false)
}

/// meta.json beside an extracted image: enough to know the image came from exactly this
/// package and glob, and to re-check it without opening the .deb.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    id: String,
    package: String,
    version: String,
    deb: String,
    deb_sha256: String,
    image_glob: String,
    image_path: String,
    image_sha256: String,
    config_glob: Option<String>,
    config_path: Option<String>,
    config_sha256: Option<String>,
    release: String,
}

const IMAGE_FILE: &str = "vmlinuz";
const CONFIG_FILE: &str = "config";
const META_FILE: &str = "meta.json";

/// The cached image if meta.json matches this package and entry and the files hash to what
/// it says. A mismatch deletes the extracted files so they are rebuilt from the .deb.
fn cached_kernel(entry: &KernelEntry, r: &Resolved, dir: &Path) -> Option<FetchedKernel> {
    let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).ok()?).ok()?;
    if meta.package != r.package
        || meta.version != r.version
        || meta.deb_sha256 != r.sha256
        || meta.image_glob != entry.image
        || meta.config_glob != entry.config
    {
        return None;
    }
    let image = dir.join(IMAGE_FILE);
    let config = dir.join(CONFIG_FILE);
    let bad = || {
        for f in [META_FILE, IMAGE_FILE, CONFIG_FILE] {
            cache::discard(&dir.join(f));
        }
        None
    };
    let Ok(bytes) = std::fs::read(&image) else {
        return bad();
    };
    let sha256 = cache::sha256_hex(&bytes);
    if sha256 != meta.image_sha256 {
        return bad();
    }
    if let Some(want) = &meta.config_sha256 {
        match std::fs::read(&config) {
            Ok(c) if &cache::sha256_hex(&c) == want => {}
            _ => return bad(),
        }
    }
    let Ok(info) = image::inspect_bytes(&bytes, &image.display().to_string()) else {
        return bad();
    };
    Some(FetchedKernel {
        id: entry.id.clone(),
        package: r.package.clone(),
        version: r.version.clone(),
        image,
        config: meta.config_sha256.is_some().then_some(config),
        info,
        sha256,
    })
}

fn extract_to_cache(
    entry: &KernelEntry,
    r: &Resolved,
    deb_path: &Path,
    dir: &Path,
) -> Result<FetchedKernel> {
    let x = deb::extract(deb_path, &entry.image, entry.config.as_deref())?;
    let deb_name = deb_path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let info = image::inspect_bytes(&x.image, &format!("{} in {deb_name}", x.image_path))?;
    if info.series != entry.id {
        return Err(Error::new(format!(
            "{} in {deb_name} is kernel {} (series {}), not {} (the package glob '{}' picks the wrong series; fix it in kernels.yaml)",
            x.image_path, info.release, info.series, entry.id, entry.package
        )));
    }
    let image = dir.join(IMAGE_FILE);
    let config = dir.join(CONFIG_FILE);
    let sha256 = cache::sha256_hex(&x.image);
    cache::write_atomic(&image, &x.image)?;
    let config_sha256 = match &x.config {
        Some((_, data)) => {
            cache::write_atomic(&config, data)?;
            Some(cache::sha256_hex(data))
        }
        None => {
            cache::discard(&config);
            None
        }
    };
    let meta = Meta {
        id: entry.id.clone(),
        package: r.package.clone(),
        version: r.version.clone(),
        deb: r.filename.clone(),
        deb_sha256: r.sha256.clone(),
        image_glob: entry.image.clone(),
        image_path: x.image_path.clone(),
        image_sha256: sha256.clone(),
        config_glob: entry.config.clone(),
        config_path: x.config.as_ref().map(|(p, _)| p.clone()),
        config_sha256: config_sha256.clone(),
        release: info.release.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| {
        Error::new(format!(
            "cannot encode {}: {e}",
            dir.join(META_FILE).display()
        ))
    })?;
    // Last, so its presence means the files beside it are complete.
    cache::write_atomic(&dir.join(META_FILE), &json)?;
    Ok(FetchedKernel {
        id: entry.id.clone(),
        package: r.package.clone(),
        version: r.version.clone(),
        image,
        config: config_sha256.map(|_| config),
        info,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::tests::{build_deb, xz, Compression};
    use crate::image::synthetic_bzimage;
    use std::sync::Mutex;

    /// A file:// mirror and a cache, both in one tempdir.
    struct Fixture {
        dir: tempfile::TempDir,
        cfg: FetchConfig,
        /// Every package published so far, per suite: the index lists them all.
        published: Mutex<Vec<(String, String)>>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::new(&format!("file://{}/mirror", dir.path().display())).unwrap();
        let cfg = FetchConfig::new(mirror, Cache::new(dir.path().join("cache")));
        Fixture {
            dir,
            cfg,
            published: Mutex::new(Vec::new()),
        }
    }

    impl Fixture {
        fn mirror_dir(&self) -> PathBuf {
            self.dir.path().join("mirror")
        }

        /// Puts a .deb in the pool and its paragraph in the suite's index. `tamper` edits the
        /// paragraph after the real values are filled in.
        fn publish(
            &self,
            suite: &str,
            package: &str,
            version: &str,
            files: &[(&str, &[u8])],
            tamper: impl FnOnce(String) -> String,
        ) -> String {
            let deb = build_deb(files, Compression::Xz);
            let filename = format!("pool/main/l/linux/{package}_{version}_amd64.deb");
            let path = self.mirror_dir().join(&filename);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &deb).unwrap();
            let para = format!(
                "Package: {package}\nSource: linux\nVersion: {version}\nArchitecture: amd64\nDescription: Linux for tests\n a continuation line\nFilename: {filename}\nSize: {}\nMD5sum: 00\nSHA256: {}\n",
                deb.len(),
                cache::sha256_hex(&deb)
            );
            let mut published = self.published.lock().unwrap();
            published.push((suite.to_string(), tamper(para)));
            let text: Vec<&str> = published
                .iter()
                .filter(|(s, _)| s == suite)
                .map(|(_, p)| p.as_str())
                .collect();
            let index = self
                .mirror_dir()
                .join(format!("dists/{suite}/main/binary-amd64/Packages.xz"));
            std::fs::create_dir_all(index.parent().unwrap()).unwrap();
            std::fs::write(&index, xz(text.join("\n").as_bytes())).unwrap();
            filename
        }

        /// A Debian 6.1-style package: image and config under boot/.
        fn publish_61(&self, abi: u32, version: &str) -> String {
            self.publish_61_with(abi, version, |p| p)
        }

        fn publish_61_with(
            &self,
            abi: u32,
            version: &str,
            tamper: impl FnOnce(String) -> String,
        ) -> String {
            let release = format!("6.1.0-{abi}-cloud-amd64");
            let image = synthetic_bzimage(
                &format!("{release} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian {version} (2026-10-01)"),
                8192,
            );
            self.publish(
                "bookworm",
                &format!("linux-image-{release}-unsigned"),
                version,
                &[
                    (&format!("boot/vmlinuz-{release}"), &image),
                    (&format!("boot/config-{release}"), b"CONFIG_X86_64=y\n"),
                    (&format!("boot/System.map-{release}"), b"map"),
                ],
                tamper,
            )
        }

        fn ensure(&self, entry: &KernelEntry) -> (Result<FetchedKernel>, Vec<&'static str>) {
            let mut phases = Vec::new();
            let r = ensure_kernel(entry, &self.cfg, &mut |e| {
                let name = match e {
                    FetchEvent::ResolvingIndex => "resolve",
                    FetchEvent::Downloading { .. } => "download",
                    FetchEvent::Extracting => "extract",
                    FetchEvent::Cached => "cached",
                };
                if phases.last() != Some(&name) {
                    phases.push(name);
                }
            });
            (r, phases)
        }

        fn cache_files(&self, sub: &str) -> Vec<String> {
            let mut out = Vec::new();
            let mut stack = vec![self.cfg.cache.root.join(sub)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().unwrap().is_dir() {
                        stack.push(e.path());
                    } else {
                        out.push(
                            e.path()
                                .strip_prefix(&self.cfg.cache.root)
                                .unwrap()
                                .display()
                                .to_string(),
                        );
                    }
                }
            }
            out.sort();
            out
        }
    }

    fn entry_61() -> KernelEntry {
        crate::kernels::find(&crate::kernels::builtin(), "6.1")
            .unwrap()
            .clone()
    }

    fn one_line(e: &Error) -> String {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        s
    }

    #[test]
    fn resolves_newest_then_serves_from_cache_without_the_mirror() {
        let f = fixture();
        f.publish_61(47, "6.1.170-1");
        f.publish_61(50, "6.1.176-1");
        f.publish(
            "bookworm",
            "linux-image-6.1.0-99-cloud-amd64-unsigned-dbg",
            "6.1.999-1",
            &[],
            |p| p,
        );
        f.publish(
            "bookworm",
            "linux-image-6.1.0-99-amd64-unsigned",
            "6.1.999-1",
            &[],
            |p| p,
        );
        let (k, phases) = f.ensure(&entry_61());
        let k = k.unwrap();
        assert_eq!(phases, ["resolve", "download", "extract"]);
        assert_eq!(k.version, "6.1.176-1");
        assert_eq!(k.package, "linux-image-6.1.0-50-cloud-amd64-unsigned");
        assert_eq!(k.info.release, "6.1.0-50-cloud-amd64");
        assert_eq!(k.info.series, "6.1");
        assert!(
            k.image.ends_with("kernels/6.1/6.1.176-1/vmlinuz"),
            "{:?}",
            k.image
        );
        assert_eq!(
            std::fs::read(k.config.as_ref().unwrap()).unwrap(),
            b"CONFIG_X86_64=y\n"
        );
        assert_eq!(cache::sha256_file(&k.image).unwrap().1, k.sha256);

        // Warm: nothing on the mirror is needed any more.
        std::fs::remove_dir_all(f.mirror_dir()).unwrap();
        let (k2, phases) = f.ensure(&entry_61());
        assert_eq!(phases, ["resolve", "cached"]);
        assert_eq!(k2.unwrap(), k);
    }

    #[test]
    fn sha256_mismatch_is_one_line_and_caches_nothing() {
        let f = fixture();
        let bogus = "0".repeat(64);
        let mut real = String::new();
        let filename = f.publish_61_with(50, "6.1.176-1", |p| {
            real = p
                .lines()
                .find_map(|l| l.strip_prefix("SHA256: "))
                .unwrap()
                .to_string();
            p.replace(&real, &bogus)
        });

        let e = one_line(&f.ensure(&entry_61()).0.unwrap_err());
        assert_eq!(
            e,
            format!(
                "kernel 6.1: SHA256 mismatch for {filename} from {}: expected {bogus}, got {real} (the mirror or the cache is corrupt; rerun to re-fetch, or pass --mirror URL)",
                f.cfg.mirror.url
            )
        );
        assert_eq!(f.cache_files("debs"), Vec::<String>::new());
        assert_eq!(f.cache_files("kernels"), Vec::<String>::new());
    }

    #[test]
    fn size_mismatch_caches_nothing() {
        let f = fixture();
        f.publish(
            "bookworm",
            "linux-image-6.1.0-50-cloud-amd64-unsigned",
            "6.1.176-1",
            &[],
            |p| {
                let size = p
                    .lines()
                    .find_map(|l| l.strip_prefix("Size: "))
                    .unwrap()
                    .to_string();
                p.replace(&format!("Size: {size}"), "Size: 100000")
            },
        );
        let e = one_line(&f.ensure(&entry_61()).0.unwrap_err());
        assert!(e.starts_with("kernel 6.1: size mismatch for pool/main/l/linux/linux-image-6.1.0-50-cloud-amd64-unsigned_6.1.176-1_amd64.deb"), "{e}");
        assert!(e.contains("expected 100000 bytes, got "), "{e}");
        assert_eq!(f.cache_files("debs"), Vec::<String>::new());
    }

    #[test]
    fn truncated_or_corrupt_cached_deb_is_refetched() {
        let f = fixture();
        f.publish_61(50, "6.1.176-1");
        let k = f.ensure(&entry_61()).0.unwrap();
        let deb = f
            .cfg
            .cache
            .root
            .join("debs/linux-image-6.1.0-50-cloud-amd64-unsigned_6.1.176-1_amd64.deb");
        let good = std::fs::read(&deb).unwrap();
        for damage in ["truncate", "flip"] {
            std::fs::remove_dir_all(f.cfg.cache.root.join("kernels")).unwrap();
            let mut bad = good.clone();
            match damage {
                "truncate" => bad.truncate(good.len() / 2),
                _ => *bad.last_mut().unwrap() ^= 1,
            }
            std::fs::write(&deb, &bad).unwrap();
            let (k2, phases) = f.ensure(&entry_61());
            assert_eq!(phases, ["resolve", "download", "extract"], "{damage}");
            assert_eq!(k2.unwrap(), k, "{damage}");
            assert_eq!(std::fs::read(&deb).unwrap(), good, "{damage}");
        }
    }

    #[test]
    fn corrupt_cached_image_is_reextracted_from_the_cached_deb() {
        let f = fixture();
        f.publish_61(50, "6.1.176-1");
        let k = f.ensure(&entry_61()).0.unwrap();
        // The mirror's copy is gone, so only the cached .deb can repair the image.
        std::fs::remove_dir_all(f.mirror_dir().join("pool")).unwrap();
        let mut img = std::fs::read(&k.image).unwrap();
        img[5000] ^= 0xff;
        std::fs::write(&k.image, &img).unwrap();
        let (k2, phases) = f.ensure(&entry_61());
        assert_eq!(phases, ["resolve", "extract"]);
        assert_eq!(k2.unwrap(), k);
        assert_eq!(cache::sha256_file(&k.image).unwrap().1, k.sha256);

        // A damaged config counts too; a missing meta.json just means extract again.
        std::fs::write(k.config.as_ref().unwrap(), b"x").unwrap();
        assert_eq!(f.ensure(&entry_61()).1, ["resolve", "extract"]);
        std::fs::remove_file(k.image.parent().unwrap().join("meta.json")).unwrap();
        assert_eq!(f.ensure(&entry_61()).1, ["resolve", "extract"]);
        assert_eq!(f.ensure(&entry_61()).1, ["resolve", "cached"]);
    }

    #[test]
    fn corrupt_image_and_missing_deb_offline_is_an_error_online_a_refetch() {
        let f = fixture();
        f.publish_61(50, "6.1.176-1");
        let k = f.ensure(&entry_61()).0.unwrap();
        std::fs::write(&k.image, b"junk").unwrap();
        std::fs::remove_dir_all(f.cfg.cache.root.join("debs")).unwrap();
        let offline = FetchConfig {
            offline: true,
            ..f.cfg.clone()
        };
        let e = ensure_kernel(&entry_61(), &offline, &mut |_| {}).unwrap_err();
        let e = one_line(&e);
        assert!(
            e.starts_with(
                "kernel 6.1: --offline but linux-image-6.1.0-50-cloud-amd64-unsigned 6.1.176-1 ("
            ),
            "{e}"
        );
        assert!(
            e.ends_with("(run once without --offline to fetch it)"),
            "{e}"
        );
        let (k2, phases) = f.ensure(&entry_61());
        assert_eq!(phases, ["resolve", "download", "extract"]);
        assert_eq!(k2.unwrap(), k);
    }

    #[test]
    fn offline_uses_any_age_index_and_errors_when_nothing_is_cached() {
        let f = fixture();
        f.publish_61(50, "6.1.176-1");
        let offline = FetchConfig {
            offline: true,
            index_ttl: Duration::ZERO,
            ..f.cfg.clone()
        };
        let e = ensure_kernel(&entry_61(), &offline, &mut |_| {}).unwrap_err();
        assert_eq!(
            one_line(&e),
            format!(
                "kernel 6.1: --offline but no cached index for bookworm from {} in {} (run once without --offline to fill the cache)",
                f.cfg.mirror.url,
                f.cfg.cache.root.display()
            )
        );
        let k = f.ensure(&entry_61()).0.unwrap();
        std::fs::remove_dir_all(f.mirror_dir()).unwrap();
        let mut phases = Vec::new();
        let k2 = ensure_kernel(&entry_61(), &offline, &mut |e| phases.push(e)).unwrap();
        assert_eq!(k2, k);
        assert_eq!(phases, [FetchEvent::ResolvingIndex, FetchEvent::Cached]);
    }

    #[test]
    fn stale_index_is_refreshed_fresh_one_is_not() {
        let f = fixture();
        f.publish_61(47, "6.1.170-1");
        assert_eq!(f.ensure(&entry_61()).0.unwrap().version, "6.1.170-1");
        f.publish_61(50, "6.1.176-1");
        // Within the TTL the cached index stands.
        assert_eq!(f.ensure(&entry_61()).0.unwrap().version, "6.1.170-1");
        let stale = FetchConfig {
            index_ttl: Duration::ZERO,
            ..f.cfg.clone()
        };
        let k = ensure_kernel(&entry_61(), &stale, &mut |_| {}).unwrap();
        assert_eq!(k.version, "6.1.176-1");
        // And the refreshed index now serves the default config too.
        assert_eq!(f.ensure(&entry_61()).0.unwrap().version, "6.1.176-1");
    }

    #[test]
    fn package_gone_from_mirror_refreshes_the_index_once() {
        let f = fixture();
        let old = f.publish_61(47, "6.1.170-1");
        f.ensure(&entry_61()).0.unwrap();
        // The archive moves on: the old package is removed, a new one published.
        std::fs::remove_file(f.mirror_dir().join(&old)).unwrap();
        f.published.lock().unwrap().clear();
        f.publish_61(50, "6.1.176-1");
        std::fs::remove_dir_all(f.cfg.cache.root.join("kernels")).unwrap();
        std::fs::remove_dir_all(f.cfg.cache.root.join("debs")).unwrap();
        let (k, phases) = f.ensure(&entry_61());
        assert_eq!(k.unwrap().version, "6.1.176-1");
        assert_eq!(phases, ["resolve", "download", "extract"]);
    }

    #[test]
    fn unreachable_http_mirror_is_one_line_naming_the_url() {
        let f = fixture();
        let cfg = FetchConfig {
            mirror: Mirror::new("http://127.0.0.1:9/debian").unwrap(),
            timeout: Duration::from_secs(5),
            ..f.cfg.clone()
        };
        let e = ensure_kernel(&entry_61(), &cfg, &mut |_| {}).unwrap_err();
        let e = one_line(&e);
        assert!(
            e.starts_with("kernel 6.1: cannot download http://127.0.0.1:9/debian/dists/bookworm/main/binary-amd64/Packages.xz: "),
            "{e}"
        );
        for hint in ["--mirror", "PVMTEST_MIRROR", "--offline"] {
            assert!(e.contains(hint), "{e}");
        }
        assert_eq!(f.cache_files(""), Vec::<String>::new());
    }

    #[test]
    fn missing_suite_on_a_file_mirror() {
        let f = fixture();
        let mut e = entry_61();
        e.suite = "nosuch".into();
        let err = one_line(&f.ensure(&e).0.unwrap_err());
        assert!(
            err.starts_with(&format!(
                "kernel 6.1: cannot read {}/dists/nosuch/",
                f.cfg.mirror.url
            )),
            "{err}"
        );
    }

    #[test]
    fn not_a_bzimage_in_the_package() {
        let f = fixture();
        f.publish(
            "bookworm",
            "linux-image-6.1.0-50-cloud-amd64-unsigned",
            "6.1.176-1",
            &[(
                "boot/vmlinuz-6.1.0-50-cloud-amd64",
                &[0x7f, b'E', b'L', b'F', 0, 0, 0, 0][..],
            )],
            |p| p,
        );
        let e = one_line(&f.ensure(&entry_61()).0.unwrap_err());
        assert_eq!(
            e,
            "kernel 6.1: boot/vmlinuz-6.1.0-50-cloud-amd64 in linux-image-6.1.0-50-cloud-amd64-unsigned_6.1.176-1_amd64.deb is not a bzImage kernel image (no HdrS header at 0x202); pass arch/x86/boot/bzImage from your build tree"
        );
        assert_eq!(f.cache_files("kernels"), Vec::<String>::new());
    }

    #[test]
    fn wrong_series_is_caught() {
        let f = fixture();
        let image = synthetic_bzimage("6.12.107+deb13-cloud-amd64 #1 SMP Debian 6.12.107-1", 4096);
        f.publish(
            "bookworm",
            "linux-image-6.1.0-50-cloud-amd64-unsigned",
            "6.1.176-1",
            &[("boot/vmlinuz-6.1.0-50-cloud-amd64", &image)],
            |p| p,
        );
        let e = one_line(&f.ensure(&entry_61()).0.unwrap_err());
        assert!(
            e.contains("is kernel 6.12.107+deb13-cloud-amd64 (series 6.12), not 6.1"),
            "{e}"
        );
    }

    #[test]
    fn new_style_packages_pick_the_series_from_the_glob() {
        let f = fixture();
        for v in ["7.2.12", "7.3.4", "7.2.13"] {
            let release = format!("{v}+deb13-cloud-amd64");
            let image = synthetic_bzimage(&format!("{release} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian {v}-1~bpo13+1"), 4096);
            f.publish(
                "trixie-backports",
                &format!("linux-binary-unsigned-{release}"),
                &format!("{v}-1~bpo13+1"),
                &[(
                    &format!("usr/lib/modules/{release}/vmlinuz.unsigned"),
                    &image,
                )],
                |p| p,
            );
        }
        let b = crate::kernels::builtin();
        let k73 = f
            .ensure(crate::kernels::find(&b, "7.3").unwrap())
            .0
            .unwrap();
        assert_eq!(
            (k73.version.as_str(), k73.info.release.as_str()),
            ("7.3.4-1~bpo13+1", "7.3.4+deb13-cloud-amd64")
        );
        assert_eq!(k73.config, None);
        let mut k72 = crate::kernels::find(&b, "7.2").unwrap().clone();
        k72.suite = "trixie-backports".into();
        k72.package = "linux-binary-unsigned-7.2.*+deb13-cloud-amd64".into();
        assert_eq!(f.ensure(&k72).0.unwrap().version, "7.2.13-1~bpo13+1");
    }

    #[test]
    fn concurrent_fetches_share_an_index_safely() {
        let f = fixture();
        f.publish_61(50, "6.1.176-1");
        let image = synthetic_bzimage("6.12.107+deb13-cloud-amd64 #1 SMP Debian 6.12.107-1", 4096);
        f.publish(
            "bookworm",
            "linux-image-6.12.107+deb13-cloud-amd64-unsigned",
            "6.12.107-1",
            &[("boot/vmlinuz-6.12.107+deb13-cloud-amd64", &image)],
            |p| p,
        );
        let mut e612 = crate::kernels::find(&crate::kernels::builtin(), "6.12")
            .unwrap()
            .clone();
        e612.suite = "bookworm".into();
        let stale = FetchConfig {
            index_ttl: Duration::ZERO,
            ..f.cfg.clone()
        };
        let entries = [entry_61(), e612, entry_61(), entry_61()];
        let results: Vec<FetchedKernel> = std::thread::scope(|s| {
            let handles: Vec<_> = entries
                .iter()
                .map(|e| {
                    let cfg = &stale;
                    s.spawn(move || ensure_kernel(e, cfg, &mut |_| {}).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results[0], results[2]);
        assert_eq!(results[0], results[3]);
        assert_eq!(results[1].version, "6.12.107-1");
        assert!(
            f.cache_files("").iter().all(|p| !p.contains(".tmp-")),
            "{:?}",
            f.cache_files("")
        );
    }

    #[test]
    fn slim_index_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("Packages.tsv");
        let recs = vec![
            PackageRecord {
                package: "a".into(),
                version: "1:2.0~rc1-1".into(),
                filename: "pool/a.deb".into(),
                size: 12,
                sha256: "ab".repeat(32),
            },
            PackageRecord {
                package: "bad\tname".into(),
                version: "1".into(),
                filename: "pool/b.deb".into(),
                size: 1,
                sha256: "cd".repeat(32),
            },
        ];
        let h = IndexHeader {
            sha256: "ef".repeat(32),
            last_modified: Some("Sat, 01 Jan 2000 00:00:00 GMT".into()),
        };
        cache::write_atomic(&p, &index_tsv("u", &h, &recs)).unwrap();
        assert_eq!(read_index_header(&p), Some(h));
        let (idx, sha) = read_index(&p, "s", "u").unwrap();
        assert_eq!(idx.packages, recs[..1]);
        assert_eq!(sha, "ef".repeat(32));

        std::fs::write(&p, format!("{INDEX_MAGIC}\nsha256\tx\n\na\tb\n")).unwrap();
        let e = read_index(&p, "s", "u").unwrap_err().to_string();
        assert!(e.contains("is damaged (bad record 1)"), "{e}");
        std::fs::write(&p, "garbage").unwrap();
        assert_eq!(read_index_header(&p), None);
    }

    /// Serves `root` over HTTP on loopback, answering If-Modified-Since with 304, and logs
    /// (path, status) of each request. Stops when the returned guard is dropped.
    struct Server {
        url: String,
        log: std::sync::Arc<Mutex<Vec<(String, u16)>>>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // Wake the accept loop so it sees the flag.
            let _ = std::net::TcpStream::connect(
                self.url
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap(),
            );
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn serve(root: PathBuf) -> Server {
        use std::io::Read as _;
        const LM: &str = "Sat, 01 Jan 2000 00:00:00 GMT";
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/debian", l.local_addr().unwrap());
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    request.push_str(&line);
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let ims = request.lines().any(|l| {
                    l.to_ascii_lowercase()
                        == format!("if-modified-since: {}", LM.to_ascii_lowercase())
                });
                let file = root.join(path.trim_start_matches("/debian/"));
                let (status, body) = match std::fs::File::open(&file) {
                    Ok(_) if ims => (304, Vec::new()),
                    Ok(mut f) => {
                        let mut b = Vec::new();
                        f.read_to_end(&mut b).unwrap();
                        (200, b)
                    }
                    Err(_) => (404, Vec::new()),
                };
                log2.lock().unwrap().push((path, status));
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nLast-Modified: {LM}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            }
        });
        Server {
            url,
            log,
            stop,
            thread: Some(thread),
        }
    }

    #[test]
    fn http_mirror_downloads_and_revalidates_with_if_modified_since() {
        let f = fixture();
        let deb = f.publish_61(50, "6.1.176-1");
        let server = serve(f.mirror_dir());
        let cfg = FetchConfig {
            mirror: Mirror::new(&server.url).unwrap(),
            index_ttl: Duration::ZERO,
            ..f.cfg.clone()
        };
        let mut downloads = Vec::new();
        let k = ensure_kernel(&entry_61(), &cfg, &mut |e| {
            if let FetchEvent::Downloading { done, total } = e {
                downloads.push((done, total));
            }
        })
        .unwrap();
        assert_eq!(k.version, "6.1.176-1");
        let size = std::fs::metadata(f.mirror_dir().join(&deb)).unwrap().len();
        assert_eq!(downloads.first(), Some(&(0, size)));
        assert_eq!(downloads.last(), Some(&(size, size)));

        let mut phases = Vec::new();
        let k2 = ensure_kernel(&entry_61(), &cfg, &mut |e| phases.push(e)).unwrap();
        assert_eq!(k2, k);
        assert_eq!(phases, [FetchEvent::ResolvingIndex, FetchEvent::Cached]);
        let index = "/debian/dists/bookworm/main/binary-amd64/Packages.xz".to_string();
        assert_eq!(
            *server.log.lock().unwrap(),
            [
                (index.clone(), 200),
                (format!("/debian/{deb}"), 200),
                (index, 304)
            ]
        );
    }

    /// Against the real Debian archive, into the real cache (~/.cache/pvmtest or
    /// $PVMTEST_CACHE_DIR): `cargo test --release -p kernel-matrix --lib real_debian -- --ignored
    /// --nocapture`. Fetches every built-in kernel in parallel, twice, and prints versions and
    /// timings; the second round must be served from the cache.
    #[test]
    #[ignore = "downloads ~100 MB from deb.debian.org into the real cache"]
    fn real_debian_mirror_fetches_every_builtin_kernel() {
        use std::time::Instant;
        let cfg = FetchConfig::new(
            Mirror::new(archive::DEFAULT_MIRROR).unwrap(),
            Cache::from_env(None).unwrap(),
        );
        println!("cache: {}", cfg.cache.root.display());
        let entries = crate::kernels::builtin();
        for round in ["first", "second"] {
            let t = Instant::now();
            let got: Vec<(FetchedKernel, f64, bool)> = std::thread::scope(|s| {
                let handles: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        let cfg = &cfg;
                        s.spawn(move || {
                            let t = Instant::now();
                            let mut cached = false;
                            let k =
                                ensure_kernel(e, cfg, &mut |ev| cached |= ev == FetchEvent::Cached)
                                    .unwrap_or_else(|err| panic!("{err}"));
                            (k, t.elapsed().as_secs_f64(), cached)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            println!(
                "{round} run: {:.3} s for all five, in parallel",
                t.elapsed().as_secs_f64()
            );
            for (k, secs, cached) in &got {
                println!(
                    "  {:<5} {:<46} {:<18} {:>7.3} s {:<7} {}\n        {}",
                    k.id,
                    k.package,
                    k.version,
                    secs,
                    if *cached { "cached" } else { "fetched" },
                    k.image.display(),
                    k.info.version_string,
                );
                assert_eq!(k.info.series, k.id);
            }
            if round == "second" {
                assert!(got.iter().all(|(_, _, cached)| *cached));
            }
        }
        // One kernel at a time, as a CLI call for a single kernel sees it.
        for e in &entries {
            let t = Instant::now();
            ensure_kernel(e, &cfg, &mut |_| {}).unwrap();
            println!("warm {:<5} {:.1} ms", e.id, t.elapsed().as_secs_f64() * 1e3);
        }
    }
}
