//! The uncompressed kernel inside a bzImage, for booting without the decompressor.
//!
//! Under TCG the bzImage's own decompressor (arch/x86/boot/compressed/misc.c) is a large part
//! of every boot: 50–60 MB of output produced by emulated code. The same ELF (`vmlinux.bin`,
//! which is vmlinux with symbols stripped) is the payload of the bzImage, so it is
//! decompressed once on the host into the cache. QEMU boots an ELF directly only through the
//! PVH entry point (arch/x86/platform/pvh/head.S, CONFIG_PVH), which the kernel advertises
//! with a `XEN_ELFNOTE_PHYS32_ENTRY` note (include/xen/interface/elfnote.h: type 18 in a
//! "Xen" note, from arch/x86/platform/pvh/head.S). Without that note the bzImage is booted.
//!
//! Where the payload is (Documentation/arch/x86/boot.rst, protocol 2.08+): `payload_offset`
//! (0x248) from the start of the protected-mode code, which starts after `setup_sects`
//! (0x1F1, 0 means 4) sectors of setup plus the boot sector, `payload_length` (0x24C)
//! bytes. Its format is told by its magic; the kernel build appends the uncompressed size as
//! a little-endian u32 after every format (scripts/Makefile.lib, `size_append`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cache::{self, Cache};
use crate::Result;

const SETUP_SECTS_OFF: usize = 0x1F1;
const VERSION_OFF: usize = 0x206;
const PAYLOAD_OFFSET_OFF: usize = 0x248;
const PAYLOAD_LENGTH_OFF: usize = 0x24C;
/// `XEN_ELFNOTE_PHYS32_ENTRY`.
const NT_PHYS32_ENTRY: u32 = 18;
/// No kernel decompresses to more than this; a header that says so is corrupt.
const MAX_VMLINUX: usize = 1 << 30;

/// How a kernel is booted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootImage {
    /// The uncompressed ELF, through its PVH entry.
    Elf(PathBuf),
    /// The bzImage itself, and why not the ELF.
    BzImage { reason: String },
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    d.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The compressed payload of a bzImage and its format name.
pub fn payload(bz: &[u8]) -> std::result::Result<(&'static str, &[u8]), String> {
    let proto = bz
        .get(VERSION_OFF..VERSION_OFF + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    if proto < 0x0208 {
        return Err(format!(
            "boot protocol {proto:#06x} has no payload fields (2.08+ has)"
        ));
    }
    let sects = match bz.get(SETUP_SECTS_OFF).copied().unwrap_or(0) {
        0 => 4,
        n => n as usize,
    };
    let (Some(off), Some(len)) = (
        u32_at(bz, PAYLOAD_OFFSET_OFF),
        u32_at(bz, PAYLOAD_LENGTH_OFF),
    ) else {
        return Err("the header is cut short".into());
    };
    let start = (sects + 1) * 512 + off as usize;
    let data = bz
        .get(start..start + len as usize)
        .ok_or_else(|| format!("the payload ({len} bytes at {start:#x}) is past the file's end"))?;
    let kind = match data {
        [0x1F, 0x8B, ..] => "gzip",
        [0xFD, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x28, 0xB5, 0x2F, 0xFD, ..] => "zstd",
        [0x02, 0x21, 0x4C, 0x18, ..] => "lz4",
        [b'B', b'Z', b'h', ..] => "bzip2",
        [0x5D, 0, 0, ..] => "lzma",
        [0x89, b'L', b'Z', b'O', ..] => "lzo",
        _ => "unknown",
    };
    Ok((kind, data))
}

/// Decompresses the payload of a bzImage: the kernel's ELF image.
pub fn extract(bz: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let (kind, data) = payload(bz)?;
    if !["gzip", "xz", "zstd", "lz4"].contains(&kind) {
        return Err(format!("the payload is {kind}-compressed, not supported"));
    }
    if data.len() < 8 {
        return Err(format!("the {kind} payload is only {} bytes", data.len()));
    }
    let (body, size) = data.split_at(data.len() - 4);
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if size > MAX_VMLINUX {
        return Err(format!("the payload claims {size} bytes uncompressed"));
    }
    let mut out = Vec::with_capacity(size);
    let bad = |e: String| format!("decompressing the {kind} payload: {e}");
    match kind {
        // gzip's own trailer ends in the size; the decoder reads the whole member.
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .map_err(|e| bad(e.to_string()))?;
        }
        "xz" => {
            liblzma::read::XzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| bad(e.to_string()))?;
        }
        "zstd" => {
            out = zstd::bulk::decompress(body, size).map_err(|e| bad(e.to_string()))?;
        }
        "lz4" => lz4_legacy(&body[4..], &mut out, size).map_err(bad)?,
        _ => return Err(format!("the payload is {kind}-compressed, not supported")),
    }
    if out.len() != size {
        return Err(format!(
            "the {kind} payload gave {} bytes, its trailer says {size}",
            out.len()
        ));
    }
    Ok(out)
}

/// LZ4's legacy frame (what `lz4 -l` writes and lib/decompress_unlz4.c reads), after the
/// magic: blocks of `u32 LE compressed length` + an LZ4 block; a repeated magic starts
/// another frame.
fn lz4_legacy(mut d: &[u8], out: &mut Vec<u8>, limit: usize) -> std::result::Result<(), String> {
    while d.len() >= 4 {
        let n = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize;
        d = &d[4..];
        if n == 0x184C_2102 {
            continue;
        }
        let block = d
            .get(..n)
            .ok_or_else(|| format!("a block of {n} bytes runs past the payload"))?;
        lz4_block(block, out, limit)?;
        d = &d[n..];
    }
    Ok(())
}

/// One LZ4 block (lz4's doc/lz4_Block_format.md): sequences of a token (literal length in
/// the high nibble, match length - 4 in the low, 15 meaning "more bytes follow, each added,
/// until one is not 255"), the literals, and a 2-byte LE back offset — except the last
/// sequence, which has literals only.
fn lz4_block(b: &[u8], out: &mut Vec<u8>, limit: usize) -> std::result::Result<(), String> {
    let mut i = 0;
    let byte = |i: &mut usize| -> std::result::Result<u8, String> {
        let v = *b.get(*i).ok_or("a block ends inside a sequence")?;
        *i += 1;
        Ok(v)
    };
    let more = |i: &mut usize, mut n: usize| -> std::result::Result<usize, String> {
        if n == 15 {
            loop {
                let v = byte(i)?;
                n += v as usize;
                if v != 255 {
                    break;
                }
            }
        }
        Ok(n)
    };
    while i < b.len() {
        let token = byte(&mut i)?;
        let lit = more(&mut i, (token >> 4) as usize)?;
        let lits = b
            .get(i..i + lit)
            .ok_or("literals run past the end of a block")?;
        out.extend_from_slice(lits);
        i += lit;
        if i == b.len() {
            break;
        }
        let off = byte(&mut i)? as usize | (byte(&mut i)? as usize) << 8;
        let len = more(&mut i, (token & 15) as usize)? + 4;
        if off == 0 || off > out.len() {
            return Err(format!("a match offset {off} points before the output"));
        }
        if out.len() + len > limit {
            return Err(format!("the output grows past the {limit} bytes announced"));
        }
        let from = out.len() - off;
        // Byte by byte: a match may overlap the bytes it produces (a run).
        for k in 0..len {
            let v = out[from + k];
            out.push(v);
        }
    }
    if out.len() > limit {
        return Err(format!("the output grows past the {limit} bytes announced"));
    }
    Ok(())
}

/// The PVH entry point of a 64-bit little-endian ELF, from its PT_NOTE segments.
pub fn pvh_entry(elf: &[u8]) -> std::result::Result<u32, String> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("the payload is not an ELF file".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("the payload is not a 64-bit little-endian ELF".into());
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let short = || "the ELF header is cut short".to_string();
    let phoff = u64_at(0x20).ok_or_else(short)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(short)? as usize;
    let phnum = u16_at(0x3C).ok_or_else(short)? as usize;
    for k in 0..phnum {
        let ph = phoff + k * phentsize;
        if u32_at(elf, ph) != Some(4) {
            continue; // not PT_NOTE
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            return Err(short());
        };
        let notes = elf
            .get(off as usize..(off + size) as usize)
            .ok_or("a note segment is past the file's end")?;
        let mut p = 0;
        let align4 = |n: usize| (n + 3) & !3;
        while p + 12 <= notes.len() {
            let (Some(namesz), Some(descsz), Some(ty)) =
                (u32_at(notes, p), u32_at(notes, p + 4), u32_at(notes, p + 8))
            else {
                break;
            };
            let name = notes.get(p + 12..p + 12 + namesz as usize).unwrap_or(&[]);
            let desc_at = p + 12 + align4(namesz as usize);
            if name == b"Xen\0" && ty == NT_PHYS32_ENTRY {
                return u32_at(notes, desc_at).ok_or_else(short);
            }
            p = desc_at + align4(descsz as usize);
        }
    }
    Err("the kernel has no PVH entry note (built without CONFIG_PVH)".into())
}

/// What is cached next to an extracted vmlinux.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    /// SHA-256 of the vmlinux file as written.
    sha256: Option<String>,
    /// Its size and modification time, re-checked on every use: hashing 50–60 MB would
    /// cost ~0.2 s of CPU per kernel and run, and a file changed or cut short by anything
    /// but this code changes one of them.
    size: Option<u64>,
    mtime_ns: Option<u128>,
    /// Why there is no vmlinux for this image.
    reason: Option<String>,
}

fn size_mtime(p: &Path) -> Option<(u64, u128)> {
    let m = std::fs::metadata(p).ok()?;
    let t = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((m.len(), t.as_nanos()))
}

/// `$PVMTEST_BOOT=bzimage` boots the bzImage even when an ELF could be used (to compare).
pub const BOOT_ENV: &str = "PVMTEST_BOOT";

/// How to boot the bzImage `image` whose SHA-256 is `sha256`: its vmlinux, extracted once
/// into `<cache>/vmlinux/<sha256>/`, or the bzImage with the reason. Never an error: a
/// kernel this cannot take apart still boots the slow way.
pub fn boot_image(cache: &Cache, image: &Path, sha256: &str) -> BootImage {
    match std::env::var(BOOT_ENV).ok().as_deref() {
        Some("bzimage") => {
            return BootImage::BzImage {
                reason: format!("{BOOT_ENV}=bzimage"),
            }
        }
        Some("elf") | Some("") | None => {}
        Some(other) => {
            return BootImage::BzImage {
                reason: format!("{BOOT_ENV}={other} is neither elf nor bzimage"),
            }
        }
    }
    match cached_or_extract(cache, image, sha256) {
        Ok(p) => BootImage::Elf(p),
        Err(reason) => BootImage::BzImage { reason },
    }
}

fn cached_or_extract(
    cache: &Cache,
    image: &Path,
    sha256: &str,
) -> std::result::Result<PathBuf, String> {
    let dir = cache.root.join("vmlinux").join(sha256);
    let elf = dir.join("vmlinux");
    let meta_path = dir.join("meta.json");
    if let Some(meta) = std::fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
    {
        if let Some(r) = meta.reason {
            return Err(r);
        }
        if let (Some(now), Some(size), Some(mtime)) = (size_mtime(&elf), meta.size, meta.mtime_ns) {
            if now == (size, mtime) {
                touch(&meta_path);
                return Ok(elf);
            }
        }
        cache::discard(&elf);
        cache::discard(&meta_path);
    }
    let bz = std::fs::read(image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    evict(&cache.root.join("vmlinux"), KEEP, Duration::from_secs(3600));
    let meta = match extract(&bz).and_then(|v| pvh_entry(&v).map(|_| v)) {
        Ok(v) => {
            write(&dir, &elf, &v).map_err(|e| e.to_string())?;
            let (size, mtime) = size_mtime(&elf).unzip();
            Meta {
                sha256: Some(cache::sha256_hex(&v)),
                size,
                mtime_ns: mtime,
                reason: None,
            }
        }
        Err(reason) => Meta {
            sha256: None,
            size: None,
            mtime_ns: None,
            reason: Some(reason),
        },
    };
    let text = serde_json::to_vec(&meta).unwrap_or_default();
    write(&dir, &meta_path, &text).map_err(|e| e.to_string())?;
    match meta.reason {
        Some(r) => Err(r),
        None => Ok(elf),
    }
}

/// Extracted kernels kept: the five of kernels.yaml and a developer's recent builds. Each is
/// 50–60 MB, and every rebuilt tree is a new image.
const KEEP: usize = 12;

/// Marks an entry as used (its meta.json's mtime), for [`evict`].
fn touch(meta: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(meta) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used entries beyond `keep`, but none used within `grace`:
/// another run may be about to boot it.
fn evict(root: &Path, keep: usize, grace: Duration) {
    let mut entries: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let used = std::fs::metadata(e.path().join("meta.json"))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (used, e.path())
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let now = SystemTime::now();
    for (used, dir) in entries.into_iter().skip(keep) {
        if now.duration_since(used).is_ok_and(|age| age > grace) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn write(dir: &Path, path: &Path, data: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::Error::new(format!("cannot create {}: {e}", dir.display())))?;
    cache::write_atomic(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_literals_matches_and_overlapping_runs() {
        // "abc" then a match of 6 at offset 3 ("abcabc"), then "a" then a run: offset 1,
        // length 4+15+2 = 21, then the last literals "xy".
        let block = [
            0x32, b'a', b'b', b'c', 3, 0, // 3 literals, match len 2+4 at offset 3
            0x1F, b'a', 1, 0, 2, // 1 literal, match len 15+2+4 at offset 1
            0x20, b'x', b'y', // last sequence: literals only
        ];
        let mut out = Vec::new();
        lz4_block(&block, &mut out, 1000).unwrap();
        let want = format!("abcabcabca{}xy", "a".repeat(21));
        assert_eq!(String::from_utf8(out).unwrap(), want);
        let mut out = Vec::new();
        assert!(lz4_block(&block, &mut out, 10).is_err());
        let mut out = Vec::new();
        assert!(lz4_block(&[0x10, b'a', 5, 0], &mut out, 100).is_err());
        let mut out = Vec::new();
        assert!(lz4_block(&[0x50, b'a'], &mut out, 100).is_err());
    }

    fn bz_with(payload: &[u8]) -> Vec<u8> {
        let mut bz = crate::image::synthetic_bzimage("6.1.0-1-amd64 #1", 0x1000);
        bz[SETUP_SECTS_OFF] = 3;
        bz[VERSION_OFF..VERSION_OFF + 2].copy_from_slice(&0x020Fu16.to_le_bytes());
        bz[PAYLOAD_OFFSET_OFF..PAYLOAD_OFFSET_OFF + 4].copy_from_slice(&0x10u32.to_le_bytes());
        bz[PAYLOAD_LENGTH_OFF..PAYLOAD_LENGTH_OFF + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.truncate(4 * 512 + 0x10);
        bz.extend_from_slice(payload);
        bz.extend_from_slice(b"trailer after the payload");
        bz
    }

    /// An ELF with one PT_NOTE segment holding `notes`.
    fn elf_with(notes: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 0x40 + 0x38];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        e[0x3C..0x3E].copy_from_slice(&1u16.to_le_bytes());
        e[0x40..0x44].copy_from_slice(&4u32.to_le_bytes());
        let off = e.len() as u64;
        e[0x48..0x50].copy_from_slice(&off.to_le_bytes());
        e[0x60..0x68].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        e.extend_from_slice(notes);
        e
    }

    fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&ty.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn pvh_note_is_found_among_others() {
        let mut notes = note(b"GNU\0", 3, b"build-id-bytes");
        notes.extend(note(b"Xen\0", 6, b"xen-3.0\0"));
        notes.extend(note(b"Xen\0", 18, &0x0100_0400u32.to_le_bytes()));
        assert_eq!(pvh_entry(&elf_with(&notes)), Ok(0x0100_0400));
        let none = elf_with(&note(b"Xen\0", 6, b"xen-3.0\0"));
        assert!(pvh_entry(&none).unwrap_err().contains("CONFIG_PVH"));
        assert!(pvh_entry(b"MZ not elf").unwrap_err().contains("not an ELF"));
        let mut cut = elf_with(&notes);
        cut.truncate(0x60);
        assert!(pvh_entry(&cut).is_err());
    }

    #[test]
    fn payloads_of_each_format_decompress() {
        use std::io::Write;
        let elf = elf_with(&note(b"Xen\0", 18, &7u32.to_le_bytes()));
        let sized = |mut c: Vec<u8>| {
            c.extend_from_slice(&(elf.len() as u32).to_le_bytes());
            c
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&elf).unwrap();
        let gz = gz.finish().unwrap();
        let zst = sized(zstd::bulk::compress(&elf, 19).unwrap());
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&elf).unwrap();
        let xz = sized(xz.finish().unwrap());
        // An lz4 legacy frame with one all-literal block.
        let mut lz = vec![0x02, 0x21, 0x4C, 0x18];
        let mut block = vec![0xF0];
        let mut n = elf.len() - 15;
        while n >= 255 {
            block.push(255);
            n -= 255;
        }
        block.push(n as u8);
        block.extend_from_slice(&elf);
        lz.extend_from_slice(&(block.len() as u32).to_le_bytes());
        lz.extend_from_slice(&block);
        let lz = sized(lz);
        for (kind, p) in [("gzip", gz), ("zstd", zst), ("xz", xz), ("lz4", lz)] {
            let bz = bz_with(&p);
            assert_eq!(payload(&bz).unwrap().0, kind);
            let got = extract(&bz).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(got, elf, "{kind}");
            assert_eq!(pvh_entry(&got), Ok(7));
        }
        let bz = bz_with(b"BZh91AY&SY and so on");
        assert!(extract(&bz).unwrap_err().contains("bzip2"));
        let mut wrong_size = bz_with(&sized(zstd::bulk::compress(&elf, 3).unwrap()));
        let end = wrong_size.len() - 25 - 4;
        wrong_size[end] ^= 1;
        assert!(extract(&wrong_size).is_err());
        let mut old = bz_with(b"x");
        old[VERSION_OFF..VERSION_OFF + 2].copy_from_slice(&0x0206u16.to_le_bytes());
        assert!(extract(&old).unwrap_err().contains("2.08"));
        let mut past = bz_with(b"x");
        past[PAYLOAD_LENGTH_OFF..PAYLOAD_LENGTH_OFF + 4].copy_from_slice(&999u32.to_le_bytes());
        assert!(extract(&past).unwrap_err().contains("past the file"));
    }

    #[test]
    fn extracted_once_reused_and_rebuilt_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let elf = elf_with(&note(b"Xen\0", 18, &7u32.to_le_bytes()));
        let mut z = zstd::bulk::compress(&elf, 3).unwrap();
        z.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let img = dir.path().join("bzImage");
        std::fs::write(&img, bz_with(&z)).unwrap();
        let BootImage::Elf(p) = boot_image(&cache, &img, "abc") else {
            panic!("no ELF");
        };
        assert_eq!(std::fs::read(&p).unwrap(), elf);
        // Reused: the image is not read again.
        std::fs::write(&img, b"gone").unwrap();
        assert_eq!(boot_image(&cache, &img, "abc"), BootImage::Elf(p.clone()));
        // A cut-short vmlinux is never used: rebuilt from the image, here no longer one.
        std::fs::write(&p, &elf[..10]).unwrap();
        let BootImage::BzImage { reason } = boot_image(&cache, &img, "abc") else {
            panic!("a changed vmlinux was used");
        };
        assert!(reason.contains("payload"), "{reason}");
        // The reason is cached too.
        assert_eq!(
            boot_image(&cache, &img, "abc"),
            BootImage::BzImage { reason }
        );
    }

    #[test]
    fn least_recently_used_entries_go_past_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let day = Duration::from_secs(86400);
        for (k, age) in [("a", 3), ("b", 1), ("c", 2), ("d", 0)] {
            std::fs::create_dir_all(root.join(k)).unwrap();
            let meta = root.join(k).join("meta.json");
            std::fs::write(&meta, "{}").unwrap();
            let f = std::fs::File::options().append(true).open(&meta).unwrap();
            f.set_modified(SystemTime::now() - day * age).unwrap();
        }
        // Keep two: the two least recently used (a, c) go.
        evict(root, 2, Duration::from_secs(3600));
        let mut left: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b", "d"]);
        // Keep none, but nothing is older than the grace: nothing goes. Then only "d", used
        // within the hour, stays.
        evict(root, 0, day * 2);
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 2);
        evict(root, 0, Duration::from_secs(3600));
        assert_eq!(
            std::fs::read_dir(root)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>(),
            ["d"]
        );
    }

    #[test]
    fn cached_images_give_a_pvh_elf_if_present() {
        // A warm cache holds real Debian images: lz4 for 6.1 (and 5.10), zstd for 6.12 and
        // later. One of each keeps this quick in a debug build.
        let Ok(cache) = Cache::from_env(None) else {
            return;
        };
        for id in std::fs::read_dir(cache.root.join("kernels"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| ["6.1", "6.12"].contains(&&*e.file_name().to_string_lossy()))
        {
            for ver in std::fs::read_dir(id.path()).into_iter().flatten().flatten() {
                let Ok(bz) = std::fs::read(ver.path().join("vmlinuz")) else {
                    continue;
                };
                let elf = extract(&bz).unwrap_or_else(|e| panic!("{:?}: {e}", ver.path()));
                pvh_entry(&elf).unwrap_or_else(|e| panic!("{:?}: {e}", ver.path()));
            }
        }
    }
}
