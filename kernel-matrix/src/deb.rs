//! Unpacking a .deb without dpkg: an `ar` archive whose data.tar.{xz,zst,gz} member holds the
//! files. Only the members we ask for are kept in memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::kernels::glob_match;
use crate::{Error, Result};

/// Kernel images are ~10-15 MB; anything this large matching the glob is not one.
const MAX_MEMBER: u64 = 512 << 20;

/// What [`extract`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Path inside the package, without the leading "./".
    pub image_path: String,
    pub image: Vec<u8>,
    /// (path, contents) of the config, when a config glob was given and matched.
    pub config: Option<(String, Vec<u8>)>,
}

/// The one regular file in `deb` whose path matches `glob`.
pub fn extract_matching(deb: &Path, glob: &str) -> Result<(String, Vec<u8>)> {
    let x = extract(deb, glob, None)?;
    Ok((x.image_path, x.image))
}

/// The one file matching `image_glob` (required) and at most one matching `config_glob`
/// (optional), found in a single pass: the data member is decompressed only once.
pub fn extract(deb: &Path, image_glob: &str, config_glob: Option<&str>) -> Result<Extracted> {
    let name = deb.file_name().map_or_else(
        || deb.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let file = File::open(deb).map_err(|e| {
        Error::new(format!(
            "cannot open {}: {e} (delete it and rerun to re-fetch)",
            deb.display()
        ))
    })?;
    let corrupt = |what: String| {
        Error::new(format!(
            "{} is not a valid Debian package: {what} (delete it and rerun to re-fetch)",
            deb.display()
        ))
    };
    let mut ar = ar::Archive::new(file);
    while let Some(member) = ar.next_entry() {
        let member = member.map_err(|e| corrupt(format!("bad ar archive ({e})")))?;
        let id = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let id = id.trim_end_matches('/');
        let decoder: Box<dyn Read> = match id {
            "data.tar" => Box::new(member),
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new(member)),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(member)),
            "data.tar.zst" => Box::new(
                zstd::stream::read::Decoder::new(member)
                    .map_err(|e| corrupt(format!("cannot start zstd ({e})")))?,
            ),
            other if other.starts_with("data.tar") => {
                return Err(corrupt(format!(
                    "unsupported data member {other} (only .xz, .zst, .gz and plain tar)"
                )))
            }
            _ => continue,
        };
        return scan_tar(decoder, &name, image_glob, config_glob).map_err(|e| match e {
            Scan::Corrupt(what) => corrupt(format!("{id}: {what}")),
            Scan::Other(e) => e,
        });
    }
    Err(corrupt("no data.tar member".to_string()))
}

enum Scan {
    Corrupt(String),
    Other(Error),
}

fn scan_tar(
    data: Box<dyn Read + '_>,
    package: &str,
    image_glob: &str,
    config_glob: Option<&str>,
) -> std::result::Result<Extracted, Scan> {
    let mut tar = tar::Archive::new(data);
    let mut images: Vec<(String, Vec<u8>)> = Vec::new();
    let mut configs: Vec<(String, Vec<u8>)> = Vec::new();
    let entries = tar.entries().map_err(|e| Scan::Corrupt(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Scan::Corrupt(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| Scan::Corrupt(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let path = path.strip_prefix("./").unwrap_or(&path).to_string();
        let is_image = glob_match(image_glob, &path);
        let is_config = config_glob.is_some_and(|g| glob_match(g, &path));
        if !is_image && !is_config {
            continue;
        }
        let size = entry.size();
        if size > MAX_MEMBER {
            return Err(Scan::Other(Error::new(format!(
                "{path} in {package} is {size} bytes, too large for a kernel image (the glob '{image_glob}' is too broad; fix it in kernels.yaml)"
            ))));
        }
        let mut buf = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut buf)
            .map_err(|e| Scan::Corrupt(format!("{path}: {e}")))?;
        if is_image {
            images.push((path.clone(), buf.clone()));
        }
        if is_config {
            configs.push((path, buf));
        }
    }
    let list = |v: &[(String, Vec<u8>)]| {
        v.iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if images.len() != 1 {
        let found = if images.is_empty() {
            "no file matches".to_string()
        } else {
            format!("{} files match ({})", images.len(), list(&images))
        };
        return Err(Scan::Other(Error::new(format!(
            "{found} the image glob '{image_glob}' in {package}; exactly one must (fix the image glob in kernels.yaml)"
        ))));
    }
    if configs.len() > 1 {
        return Err(Scan::Other(Error::new(format!(
            "{} files match ({}) the config glob '{}' in {package}; at most one may (fix the config glob in kernels.yaml)",
            configs.len(),
            list(&configs),
            config_glob.unwrap_or("")
        ))));
    }
    let (image_path, image) = images.remove(0);
    Ok(Extracted {
        image_path,
        image,
        config: configs.pop(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) enum Compression {
        Xz,
        Zst,
        Gz,
        None,
    }

    /// A .deb as dpkg-deb lays it out: debian-binary, control.tar.xz, data.tar.* with "./"
    /// paths and directory entries.
    pub(crate) fn build_deb(files: &[(&str, &[u8])], c: Compression) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for (path, _) in files {
            let mut d = Path::new(path).parent();
            while let Some(p) = d.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_path_buf());
                d = p.parent();
            }
        }
        for d in &dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, format!("./{}/", d.display()), &[][..])
                .unwrap();
        }
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, format!("./{path}"), *data).unwrap();
        }
        let raw = tar.into_inner().unwrap();
        let (name, data) = match c {
            Compression::Xz => ("data.tar.xz", xz(&raw)),
            Compression::Zst => (
                "data.tar.zst",
                zstd::stream::encode_all(&raw[..], 1).unwrap(),
            ),
            Compression::Gz => {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&raw).unwrap();
                ("data.tar.gz", e.finish().unwrap())
            }
            Compression::None => ("data.tar", raw),
        };
        let control = xz(&tar::Builder::new(Vec::new()).into_inner().unwrap());
        let mut ar = ar::Builder::new(Vec::new());
        for (n, d) in [
            ("debian-binary", &b"2.0\n"[..]),
            ("control.tar.xz", &control[..]),
            (name, &data[..]),
        ] {
            ar.append(&ar::Header::new(n.as_bytes().to_vec(), d.len() as u64), d)
                .unwrap();
        }
        ar.into_inner().unwrap()
    }

    pub(crate) fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 1)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    const FILES: &[(&str, &[u8])] = &[
        ("boot/vmlinuz-6.1.0-50-cloud-amd64", b"IMAGE"),
        ("boot/config-6.1.0-50-cloud-amd64", b"CONFIG"),
        ("boot/System.map-6.1.0-50-cloud-amd64", b"MAP"),
        ("usr/lib/modules/6.1.0-50-cloud-amd64/kernel/x.ko", b"KO"),
    ];

    #[test]
    fn extracts_from_every_compression() {
        let dir = tempfile::tempdir().unwrap();
        for (n, c) in [
            ("xz", Compression::Xz),
            ("zst", Compression::Zst),
            ("gz", Compression::Gz),
            ("none", Compression::None),
        ] {
            let deb = write(dir.path(), &format!("{n}.deb"), &build_deb(FILES, c));
            let x = extract(&deb, "boot/vmlinuz-*", Some("boot/config-*")).unwrap();
            assert_eq!(x.image_path, "boot/vmlinuz-6.1.0-50-cloud-amd64", "{n}");
            assert_eq!(x.image, b"IMAGE");
            let (p, c) = x.config.unwrap();
            assert_eq!(
                (p.as_str(), c.as_slice()),
                ("boot/config-6.1.0-50-cloud-amd64", &b"CONFIG"[..])
            );
            let (p, d) = extract_matching(&deb, "usr/lib/modules/*/kernel/x.ko").unwrap();
            assert_eq!(
                (p.as_str(), d.as_slice()),
                (
                    "usr/lib/modules/6.1.0-50-cloud-amd64/kernel/x.ko",
                    &b"KO"[..]
                )
            );
        }
    }

    #[test]
    fn missing_config_is_fine_missing_image_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let deb = write(
            dir.path(),
            "k.deb",
            &build_deb(&FILES[..1], Compression::Xz),
        );
        let x = extract(&deb, "boot/vmlinuz-*", Some("boot/config-*")).unwrap();
        assert!(x.config.is_none());
        let e = extract_matching(&deb, "usr/lib/modules/*/vmlinuz.unsigned")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "no file matches the image glob 'usr/lib/modules/*/vmlinuz.unsigned' in k.deb; exactly one must (fix the image glob in kernels.yaml)"
        );
    }

    #[test]
    fn ambiguous_glob_names_the_matches() {
        let dir = tempfile::tempdir().unwrap();
        let deb = write(dir.path(), "k.deb", &build_deb(FILES, Compression::Xz));
        let e = extract_matching(&deb, "boot/*").unwrap_err().to_string();
        assert!(e.starts_with("3 files match (boot/vmlinuz-"), "{e}");
        assert!(e.contains("'boot/*' in k.deb"), "{e}");
        let e = extract(&deb, "boot/vmlinuz-*", Some("boot/*"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("the config glob 'boot/*'"), "{e}");
    }

    #[test]
    fn not_a_deb_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in [
            ("empty.deb", &b""[..]),
            ("text.deb", &b"hello world, not ar"[..]),
        ] {
            let deb = write(dir.path(), name, data);
            let e = extract_matching(&deb, "boot/vmlinuz-*")
                .unwrap_err()
                .to_string();
            assert!(e.contains("is not a valid Debian package"), "{e}");
            assert!(e.contains(name) && !e.contains('\n'), "{e}");
        }
        // A truncated package: the ar header survives, the data member does not.
        let full = build_deb(FILES, Compression::Xz);
        let deb = write(dir.path(), "cut.deb", &full[..full.len() - 40]);
        let e = extract_matching(&deb, "boot/vmlinuz-*")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.deb is not a valid Debian package"), "{e}");
    }
}
