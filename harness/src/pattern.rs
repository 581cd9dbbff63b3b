//! Fill patterns whose bytes encode where they came from.
//!
//! Every aligned 8-byte word of a region holds `tag << 56 | offset_of_word`, little-endian.
//! Target regions get tags from 0x10, caller regions (the canary) from 0x80, so a misplaced
//! byte can be traced to its source region and offset.

use crate::plan::Region;

/// The byte at `off` of a region stamped with `tag`.
pub fn byte(tag: u8, off: u64) -> u8 {
    let word = ((tag as u64) << 56) | (off & 0x00ff_ffff_ffff_fff8);
    word.to_le_bytes()[(off & 7) as usize]
}

/// Fills `buf` as bytes `start..start+buf.len()` of a region stamped with `tag`.
pub fn fill(buf: &mut [u8], tag: u8, start: u64) {
    // Byte by byte up to a word boundary, then whole words (the checker fills every region
    // of every case, so this is on the fuzzer's hot path), then the tail.
    let head = (((8 - start % 8) % 8) as usize).min(buf.len());
    for (i, b) in buf[..head].iter_mut().enumerate() {
        *b = byte(tag, start + i as u64);
    }
    let mut off = start + head as u64;
    let mut words = buf[head..].chunks_exact_mut(8);
    for w in &mut words {
        let word = ((tag as u64) << 56) | (off & 0x00ff_ffff_ffff_fff8);
        w.copy_from_slice(&word.to_le_bytes());
        off += 8;
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b = byte(tag, off + i as u64);
    }
}

/// The initial contents of a region's backed bytes `[0, region.backed_len())`: the pattern for
/// `fill: pattern` (file kinds: up to the file size, zero after it within the last page),
/// zero for `fill: untouched`.
pub fn initial(region: &Region) -> Vec<u8> {
    debug_assert!(
        !region.kind.is_io_uring(),
        "an io_uring region's contents depend on the kernel: initial_in"
    );
    initial_in(region, IoRingsLayout::Packed)
}

/// [`initial`] for any region; `io_rings` lays out io_uring ring regions ([`IoRingsLayout`]).
pub fn initial_in(region: &Region, io_rings: IoRingsLayout) -> Vec<u8> {
    let len = region.backed_len() as usize;
    if region.kind == crate::case::RegionKind::AioRing {
        return (0..len as u64)
            .map(|o| aio_ring_byte(len as u64, o))
            .collect();
    }
    if region.kind.is_io_uring() {
        return (0..len as u64)
            .map(|o| io_uring_byte(region.kind, io_rings, o).unwrap_or(0))
            .collect();
    }
    let mut v = vec![0u8; len];
    if region.fill == crate::case::Fill::Pattern {
        let upto = region.file_size.map_or(len, |fs| (fs as usize).min(len));
        fill(&mut v[..upto], region.tag, 0);
    }
    v
}

/// The byte at `off` of a fresh `len`-byte `[aio]` ring: `struct aio_ring` (fs/aio.c) as
/// `aio_setup_ring` writes it, `id` from `ioctx_add_table` (the first context of an mm takes
/// slot 0), `nr` the events that fill the pages exactly; the events are zero (the ring pages
/// are allocated `__GFP_ZERO`).
pub fn aio_ring_byte(len: u64, off: u64) -> u8 {
    const MAGIC: u32 = 0xa10a_10a1; // AIO_RING_MAGIC
    let nr = (len.saturating_sub(32) / 32) as u32;
    // id, nr, head, tail, magic, compat_features, incompat_features, header_length
    let header: [u32; 8] = [0, nr, 0, 0, MAGIC, 1, 0, 32];
    match off {
        0..32 => header[(off / 4) as usize].to_le_bytes()[(off % 4) as usize],
        _ => 0,
    }
}

/// The file's initial contents for a file-backed region.
pub fn initial_file(region: &Region) -> Vec<u8> {
    let size = region.file_size.unwrap_or(0) as usize;
    let mut v = vec![0u8; size];
    if region.fill == crate::case::Fill::Pattern {
        fill(&mut v, region.tag, 0);
    }
    v
}

/// Names the source of the aligned word containing `bytes[at]`, e.g. `data+4096`, when the
/// word decodes to a known region; used to explain a wrong byte.
pub fn describe(bytes: &[u8], at: usize, regions: &[&Region]) -> Option<String> {
    let w0 = at & !7;
    let word = bytes.get(w0..w0 + 8)?;
    let v = u64::from_le_bytes(word.try_into().ok()?);
    let tag = (v >> 56) as u8;
    let off = (v & 0x00ff_ffff_ffff_ffff) + (at as u64 & 7);
    let r = regions.iter().find(|r| r.tag == tag)?;
    (off < r.len).then(|| format!("{}+{}", r.name, off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_encode_tag_and_offset() {
        let mut b = [0u8; 16];
        fill(&mut b, 0x11, 8);
        assert_eq!(
            u64::from_le_bytes(b[0..8].try_into().unwrap()),
            0x1100_0000_0000_0008
        );
        assert_eq!(
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
            0x1100_0000_0000_0010
        );
        assert_eq!(byte(0x11, 9), b[1]);
    }

    #[test]
    fn word_fill_matches_bytes() {
        for start in 0..20u64 {
            for len in 0..40usize {
                let mut b = vec![0u8; len];
                fill(&mut b, 0x12, start);
                let want: Vec<u8> = (0..len as u64).map(|i| byte(0x12, start + i)).collect();
                assert_eq!(b, want, "start {start} len {len}");
            }
        }
    }
}

/// Where `struct io_rings` (include/linux/io_uring_types.h) keeps `sq_ring_mask`: its
/// `struct io_uring sq, cq` come first, `{ u32 head; u32 tail; }` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoRingsLayout {
    /// `head` and `tail` each `____cacheline_aligned_in_smp` (64 bytes on x86-64): the masks
    /// start at byte 256 (5.10, 6.1).
    Padded,
    /// `head` and `tail` packed: the masks start at byte 16 (6.12, 7.2).
    Packed,
}

/// The byte at `off` of a fresh mapping of a one-entry io_uring instance (`io_uring_setup(1)`:
/// `sq_entries` 1, `cq_entries` 2, io_uring_create), or `None` for other kinds. The ring
/// and SQE pages are allocated `__GFP_ZERO` (io_pages_map 6.1/6.12, io_region_allocate_pages
/// 7.2), and `io_allocate_scq_urings` writes only `sq_ring_mask` = 0, `cq_ring_mask` = 1,
/// `sq_ring_entries` = 1, `cq_ring_entries` = 2, in that order, into the ring; nothing is
/// ever submitted, so every other byte stays zero. SQ_RING and CQ_RING map the same pages.
pub fn io_uring_byte(kind: crate::case::RegionKind, layout: IoRingsLayout, off: u64) -> Option<u8> {
    use crate::case::RegionKind;
    match kind {
        RegionKind::IoUringSqes => Some(0),
        RegionKind::IoUringSqRing | RegionKind::IoUringCqRing => {
            let masks = match layout {
                IoRingsLayout::Padded => 256,
                IoRingsLayout::Packed => 16,
            };
            let words: [u32; 4] = [0, 1, 1, 2];
            Some(match off.checked_sub(masks) {
                Some(o) if o < 16 => words[(o / 4) as usize].to_le_bytes()[(o % 4) as usize],
                _ => 0,
            })
        }
        _ => None,
    }
}
