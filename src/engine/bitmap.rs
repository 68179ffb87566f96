//! In-memory bitmaps of atomics: one bit per chunk, LSB-first within each byte, so the words
//! serialise to the on-disk byte order directly (little-endian u64).

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Bitmap {
    words: Vec<AtomicU64>,
    bits: u64,
}

impl Bitmap {
    pub fn new(bits: u64) -> Bitmap {
        let n = bits.div_ceil(64) as usize;
        Bitmap {
            words: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bits,
        }
    }

    pub fn len(&self) -> u64 {
        self.bits
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// The word holding `bit`; `None` past the end. A bit past the end is never set: no
    /// offset a size can produce indexes past a bitmap (a panic would kill a FUSE thread).
    #[inline]
    fn word(&self, bit: u64) -> Option<&AtomicU64> {
        if bit >= self.bits {
            return None;
        }
        self.words.get((bit / 64) as usize)
    }

    #[inline]
    pub fn get(&self, bit: u64) -> bool {
        self.word(bit)
            .is_some_and(|w| w.load(Ordering::SeqCst) & (1 << (bit % 64)) != 0)
    }

    #[inline]
    pub fn set(&self, bit: u64) {
        if let Some(w) = self.word(bit) {
            w.fetch_or(1 << (bit % 64), Ordering::SeqCst);
        }
    }

    #[inline]
    pub fn clear(&self, bit: u64) {
        if let Some(w) = self.word(bit) {
            w.fetch_and(!(1 << (bit % 64)), Ordering::SeqCst);
        }
    }

    pub fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as u64)
            .sum()
    }

    /// Bits set in either `self` or `other`.
    pub fn count_union(&self, other: &Bitmap) -> u64 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| {
                (a.load(Ordering::Relaxed) | b.load(Ordering::Relaxed)).count_ones() as u64
            })
            .sum()
    }

    pub fn clear_all(&self) {
        for w in &self.words {
            w.store(0, Ordering::SeqCst);
        }
    }

    pub fn fill(&self) {
        for (i, w) in self.words.iter().enumerate() {
            w.store(self.word_mask(i), Ordering::SeqCst);
        }
    }

    /// `self |= other`.
    pub fn or_with(&self, other: &Bitmap) {
        for (a, b) in self.words.iter().zip(&other.words) {
            a.fetch_or(b.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    pub fn copy_from(&self, other: &Bitmap) {
        for (a, b) in self.words.iter().zip(&other.words) {
            a.store(b.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    /// The first set bit at or after `from`, skipping clean words quickly.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        if from >= self.bits {
            return None;
        }
        let mut wi = (from / 64) as usize;
        let mut word = self.words[wi].load(Ordering::SeqCst) & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                let bit = wi as u64 * 64 + word.trailing_zeros() as u64;
                return (bit < self.bits).then_some(bit);
            }
            wi += 1;
            if wi >= self.words.len() {
                return None;
            }
            word = self.words[wi].load(Ordering::SeqCst);
        }
    }

    /// Serialise bytes `[start, start+out.len())` of the bitmap (little-endian words).
    pub fn read_bytes(&self, start: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            let byte = start + i;
            let wi = byte / 8;
            *b = if wi < self.words.len() {
                (self.words[wi].load(Ordering::SeqCst) >> ((byte % 8) * 8)) as u8
            } else {
                0
            };
        }
    }

    /// Load from serialised bytes (bits beyond `len` are ignored).
    pub fn load_bytes(&self, bytes: &[u8]) {
        for (i, w) in self.words.iter().enumerate() {
            let mut v = [0u8; 8];
            let start = i * 8;
            if start < bytes.len() {
                let n = (bytes.len() - start).min(8);
                v[..n].copy_from_slice(&bytes[start..start + n]);
            }
            w.store(u64::from_le_bytes(v) & self.word_mask(i), Ordering::SeqCst);
        }
    }

    fn word_mask(&self, i: usize) -> u64 {
        let first = i as u64 * 64;
        let valid = self.bits.saturating_sub(first).min(64);
        if valid == 64 {
            !0
        } else {
            (1u64 << valid) - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_geometry_is_lsb_first() {
        let b = Bitmap::new(100);
        b.set(9);
        let mut bytes = [0u8; 4];
        b.read_bytes(0, &mut bytes);
        assert_eq!(bytes, [0, 0x02, 0, 0]);
    }

    #[test]
    fn fill_stops_at_len_and_scan_finds_bits() {
        let b = Bitmap::new(70);
        b.fill();
        assert_eq!(b.count(), 70);
        b.clear_all();
        b.set(3);
        b.set(69);
        assert_eq!(b.next_set(0), Some(3));
        assert_eq!(b.next_set(4), Some(69));
        assert_eq!(b.next_set(70), None);
    }

    #[test]
    fn bytes_round_trip() {
        let a = Bitmap::new(1000);
        for i in (0..1000).step_by(7) {
            a.set(i);
        }
        let mut bytes = vec![0u8; 125];
        a.read_bytes(0, &mut bytes);
        let b = Bitmap::new(1000);
        b.load_bytes(&bytes);
        for i in 0..1000 {
            assert_eq!(a.get(i), b.get(i));
        }
    }
}
