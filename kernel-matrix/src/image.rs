//! What an x86 bzImage says about itself: the boot-protocol header (Documentation/arch/x86/
//! boot.rst) carries a pointer to the same string `uname -v`/`/proc/version` print, so a
//! kernel can be identified without booting it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const BOOT_FLAG_OFF: usize = 0x1FE; // u16 0xAA55
const HDRS_OFF: usize = 0x202; // "HdrS"
const VERSION_OFF: usize = 0x206; // u16 boot protocol version
const KERNEL_VERSION_OFF: usize = 0x20E; // u16, string at value + 0x200
/// The pointer is 16 bits, so the string starts below this; 256 bytes covers any version line.
const HEADER_SPAN: usize = 0x200 + 0xFFFF + 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// e.g. "6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC
    /// Debian 6.1.176-1 (...)"
    pub version_string: String,
    /// First word, what `uname -r` prints: "6.1.0-50-cloud-amd64".
    pub release: String,
    /// "6.1"
    pub series: String,
    /// What `uname -v` prints (UTS_VERSION: build number, flags, date): "#1 SMP
    /// PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-01)". arch/x86/boot/version.c writes the
    /// header string as `UTS_RELEASE " (" LINUX_COMPILE_BY "@" LINUX_COMPILE_HOST ") "
    /// UTS_VERSION`; empty when the string has no `#`.
    pub build: String,
}

/// Reads the header of a bzImage file.
pub fn inspect(path: &Path) -> Result<ImageInfo> {
    let f = File::open(path).map_err(|e| {
        Error::new(format!(
            "cannot open kernel image {}: {e} (check the path)",
            path.display()
        ))
    })?;
    let mut head = Vec::new();
    f.take(HEADER_SPAN as u64)
        .read_to_end(&mut head)
        .map_err(|e| {
            Error::new(format!(
                "cannot read kernel image {}: {e} (check the path)",
                path.display()
            ))
        })?;
    inspect_bytes(&head, &path.display().to_string())
}

/// [`inspect`] on bytes already in memory (at least the first 64 KiB of the image); `what`
/// names it in errors.
pub fn inspect_bytes(data: &[u8], what: &str) -> Result<ImageInfo> {
    let not = |why: &str| {
        Error::new(format!(
            "{what} is not a bzImage kernel image ({why}); pass arch/x86/boot/bzImage from your build tree"
        ))
    };
    let u16_at = |off: usize| {
        data.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if data.get(HDRS_OFF..HDRS_OFF + 4) != Some(b"HdrS") {
        return Err(not("no HdrS header at 0x202"));
    }
    if u16_at(BOOT_FLAG_OFF) != Some(0xAA55) {
        return Err(not("no 0xAA55 boot flag at 0x1FE"));
    }
    let proto = u16_at(VERSION_OFF).unwrap_or(0);
    // kernel_version exists since boot protocol 2.00; every bzImage is newer than that.
    if proto < 0x0200 {
        return Err(not(&format!(
            "boot protocol {proto:#06x} is older than 2.00"
        )));
    }
    let ptr = u16_at(KERNEL_VERSION_OFF).unwrap_or(0);
    if ptr == 0 {
        return Err(not("the kernel_version pointer at 0x20E is 0"));
    }
    let start = ptr as usize + 0x200;
    let tail = data.get(start..).unwrap_or(&[]);
    let end = tail.iter().take(256).position(|&b| b == 0);
    let raw = match end {
        Some(n) if n > 0 => &tail[..n],
        _ => {
            return Err(not(&format!(
                "no version string at {start:#x}, where kernel_version points"
            )))
        }
    };
    let version_string = String::from_utf8_lossy(raw).trim().to_string();
    let release = version_string
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let series = series_of(&release).ok_or_else(|| {
        not(&format!(
            "its version string '{version_string}' does not start with a kernel release"
        ))
    })?;
    let build = build_of(&version_string);
    Ok(ImageInfo {
        version_string,
        release,
        series,
        build,
    })
}

/// The `uname -v` part of a version string: from the first `#` that starts a word.
pub fn build_of(version_string: &str) -> String {
    version_string
        .match_indices(" #")
        .next()
        .map_or(String::new(), |(i, _)| {
            version_string[i + 1..].trim().to_string()
        })
}

/// "6.12.107+deb13-cloud-amd64" -> "6.12".
pub fn series_of(release: &str) -> Option<String> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let major = digits(release);
    if major == 0 || release.as_bytes().get(major) != Some(&b'.') {
        return None;
    }
    let minor = digits(&release[major + 1..]);
    if minor == 0 {
        return None;
    }
    Some(release[..major + 1 + minor].to_string())
}

/// A minimal image with a real boot-protocol header, for tests here and in fetch.
pub fn synthetic_bzimage(version_string: &str, size: usize) -> Vec<u8> {
    let size = size.max(0x400 + version_string.len() + 1);
    let mut img = vec![0u8; size];
    img[BOOT_FLAG_OFF..BOOT_FLAG_OFF + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
    img[HDRS_OFF..HDRS_OFF + 4].copy_from_slice(b"HdrS");
    img[VERSION_OFF..VERSION_OFF + 2].copy_from_slice(&0x020Fu16.to_le_bytes());
    // Real images put the string in the setup code after the header; 0x200 past it is free.
    let ptr: u16 = 0x200;
    img[KERNEL_VERSION_OFF..KERNEL_VERSION_OFF + 2].copy_from_slice(&ptr.to_le_bytes());
    let at = ptr as usize + 0x200;
    img[at..at + version_string.len()].copy_from_slice(version_string.as_bytes());
    // Make the rest distinct per version so images hash differently.
    for (i, b) in img[at + version_string.len() + 1..].iter_mut().enumerate() {
        *b = (i as u8) ^ version_string.len() as u8;
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-01)";

    #[test]
    fn synthetic_header_parses() {
        let info = inspect_bytes(&synthetic_bzimage(V, 4096), "x").unwrap();
        assert_eq!(info.version_string, V);
        assert_eq!(info.release, "6.1.0-50-cloud-amd64");
        assert_eq!(info.series, "6.1");
        assert_eq!(
            info.build,
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-01)"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bzImage");
        std::fs::write(&p, synthetic_bzimage("7.3.4+deb13-cloud-amd64 #1", 0)).unwrap();
        let info = inspect(&p).unwrap();
        assert_eq!(
            (info.release.as_str(), info.series.as_str()),
            ("7.3.4+deb13-cloud-amd64", "7.3")
        );
    }

    #[test]
    fn not_a_bzimage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinux");
        std::fs::write(&p, b"\x7fELF not a bzImage").unwrap();
        let e = inspect(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{} is not a bzImage kernel image (no HdrS header at 0x202); pass arch/x86/boot/bzImage from your build tree", p.display())
        );
        let e = inspect(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot open kernel image"), "{e}");
    }

    #[test]
    fn broken_headers_are_errors_not_panics() {
        let good = synthetic_bzimage(V, 4096);
        let mut no_flag = good.clone();
        no_flag[BOOT_FLAG_OFF] = 0;
        assert!(inspect_bytes(&no_flag, "x")
            .unwrap_err()
            .0
            .contains("0xAA55"));
        let mut old = good.clone();
        old[VERSION_OFF..VERSION_OFF + 2].copy_from_slice(&0x0105u16.to_le_bytes());
        assert!(inspect_bytes(&old, "x")
            .unwrap_err()
            .0
            .contains("older than 2.00"));
        let mut null = good.clone();
        null[KERNEL_VERSION_OFF..KERNEL_VERSION_OFF + 2].copy_from_slice(&0u16.to_le_bytes());
        assert!(inspect_bytes(&null, "x")
            .unwrap_err()
            .0
            .contains("pointer at 0x20E is 0"));
        let mut far = good.clone();
        far[KERNEL_VERSION_OFF..KERNEL_VERSION_OFF + 2].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(inspect_bytes(&far, "x")
            .unwrap_err()
            .0
            .contains("no version string"));
        assert!(inspect_bytes(&good[..0x300], "x").is_err());
        let junk = synthetic_bzimage("garbage here", 4096);
        assert!(inspect_bytes(&junk, "x")
            .unwrap_err()
            .0
            .contains("does not start with a kernel release"));
        for n in 0..0x210 {
            assert!(inspect_bytes(&good[..n], "x").is_err());
        }
    }

    #[test]
    fn build_string_is_what_uname_v_prints() {
        assert_eq!(
            build_of("6.12.9 (me@box) (gcc 14.2, GNU ld 2.44) #3 SMP PREEMPT Sat Jan  4 10:00:00 UTC 2026"),
            "#3 SMP PREEMPT Sat Jan  4 10:00:00 UTC 2026"
        );
        assert_eq!(build_of("7.3.4+deb13-cloud-amd64 #1"), "#1");
        assert_eq!(build_of("6.1.0-x (a#b@c)"), "");
    }

    #[test]
    fn series_parsing() {
        assert_eq!(
            series_of("6.12.107+deb13-cloud-amd64").as_deref(),
            Some("6.12")
        );
        assert_eq!(series_of("5.10.0-32-cloud-amd64").as_deref(), Some("5.10"));
        assert_eq!(series_of("7.3").as_deref(), Some("7.3"));
        assert_eq!(series_of("6"), None);
        assert_eq!(series_of("x6.1"), None);
        assert_eq!(series_of("6.x"), None);
    }

    #[test]
    fn real_cached_images_parse_if_present() {
        // A warm ~/.cache/pvmtest (from the ignored network test) holds real Debian images;
        // without one there is nothing to check.
        let Ok(cache) = crate::cache::Cache::from_env(None) else {
            return;
        };
        let Ok(ids) = std::fs::read_dir(cache.root.join("kernels")) else {
            return;
        };
        for id in ids.flatten() {
            for ver in std::fs::read_dir(id.path()).into_iter().flatten().flatten() {
                let img = ver.path().join("vmlinuz");
                if !img.exists() {
                    continue;
                }
                let info = inspect(&img).unwrap();
                assert_eq!(info.series, id.file_name().to_string_lossy(), "{info:?}");
                assert!(info.version_string.contains("Debian"), "{info:?}");
            }
        }
    }
}
