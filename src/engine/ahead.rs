//! Preserving ahead of a sequential writer. A first write to a chunk waits for the old chunk
//! and its bit to be made durable (under strict durability, two flushes); a writer going
//! through the volume in order would pay that once per chunk. When a write that needs
//! preserving continues where an earlier one stopped, the chunks ahead of it (the rest of its
//! 1 MiB region and up to `AHEAD_REGIONS` more) are preserved in the same round, so the
//! writes that follow find them preserved and go straight to the master.
//!
//! Only a hint decides what is sequential (where recent slow writes ended); preserving a chunk
//! early is always safe: it is what its first write would do, done under the same stripe
//! locks, in the same order (chunk, flush, bit, flush, publish).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many 1 MiB regions past the write's own are preserved with it, at most.
pub const AHEAD_REGIONS: u64 = 3;

const STREAMS: usize = 8;
const NONE: u64 = u64::MAX;

/// Where the last few writes that needed preserving expect the next one of their stream: a
/// write starting at one of these points continues a sequential stream.
pub struct Streams {
    next_at: [AtomicU64; STREAMS],
    victim: AtomicUsize,
}

impl Default for Streams {
    fn default() -> Streams {
        Streams {
            next_at: std::array::from_fn(|_| AtomicU64::new(NONE)),
            victim: AtomicUsize::new(0),
        }
    }
}

impl Streams {
    /// Whether a write at `offset` continues a stream (and take that stream's entry).
    pub fn continues(&self, offset: u64) -> bool {
        self.next_at.iter().any(|e| {
            e.compare_exchange(offset, NONE, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Remember that a stream's next write needing preserving is expected at `offset`.
    pub fn expect(&self, offset: u64) {
        let i = self.victim.fetch_add(1, Ordering::Relaxed) % STREAMS;
        self.next_at[i].store(offset, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_where_another_stopped_continues_its_stream_once() {
        let s = Streams::default();
        assert!(!s.continues(0), "nothing recorded yet");
        s.expect(4096);
        assert!(!s.continues(8192));
        assert!(s.continues(4096));
        assert!(!s.continues(4096), "the entry is taken");
    }

    #[test]
    fn interleaved_streams_are_told_apart() {
        let s = Streams::default();
        s.expect(1 << 20);
        s.expect(7 << 20);
        assert!(s.continues(7 << 20));
        assert!(s.continues(1 << 20));
    }
}
