//! Chunk geometry: which chunks a byte range covers, the bytes of one chunk, and the 1 MiB
//! regions the stripe locks cover. Pure arithmetic, below every other part of the engine.

use super::error::{Error, Kind, Result};

/// Stripe regions are 1 MiB: the largest chunk, so any chunk of any set on a master lies
/// within one region (and is covered by one stripe lock).
pub const REGION_SHIFT: u32 = 20;

/// The region holding byte `offset`.
pub fn region_of(offset: u64) -> u64 {
    offset >> REGION_SHIFT
}

/// Byte offset and length of `chunk` of a volume of `size` bytes (the last chunk may be short).
pub fn chunk_span(chunk_size: u64, size: u64, chunk: u64) -> (u64, u64) {
    let off = chunk * chunk_size;
    (off, chunk_size.min(size.saturating_sub(off)))
}

/// The chunks (of `chunks` in all) that bytes `[offset, offset+len)` touch; an empty range
/// touches the chunk at `offset`.
pub fn chunks_of(
    chunk_size: u64,
    chunks: u64,
    offset: u64,
    len: u64,
) -> std::ops::RangeInclusive<u64> {
    let first = offset / chunk_size;
    let last = (offset + len.max(1) - 1) / chunk_size;
    first..=last.min(chunks.saturating_sub(1))
}

/// Split the byte range `[offset, offset+len)` at 1 MiB region boundaries: (offset, index
/// into the range, length) of each piece.
pub fn region_spans(offset: u64, len: u64) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut at = 0u64;
    std::iter::from_fn(move || {
        if at >= len {
            return None;
        }
        let off = offset + at;
        let region_end = ((off >> REGION_SHIFT) + 1) << REGION_SHIFT;
        let n = (region_end - off).min(len - at);
        let piece = (off, at as usize, n as usize);
        at += n;
        Some(piece)
    })
}

pub fn check_range(offset: u64, len: u64, size: u64, path: &str) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::new(
            Kind::NoSpace,
            format!("write past the end of {path} ({size} bytes)"),
        )),
    }
}
