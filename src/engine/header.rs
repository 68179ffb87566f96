//! The iifs bitmap-volume header: a versioned, checksummed record of the set's persistent state.
//!
//! Layout of a bitmap volume (all integers little-endian):
//! ```text
//! 0      header slot A (4 KiB)
//! 4096   header slot B (4 KiB)   - updates alternate between slots; the valid slot with the
//!                                  higher sequence number wins, so a torn write loses nothing
//! 8192   shadow bitmap  ("chunks that differ"), LSB-first, padded to 4 KiB
//! 8192+L copy bitmap    ("chunks still to copy")
//! ```
//! Header slot: magic "IIFSBMAP", version, sequence, set type, chunk size, master and shadow
//! sizes, state flags, throttle, PIT time, bitmap offsets, durability, then the set name and
//! the three volume paths as length-prefixed strings, and a CRC-32 of everything before it.

use super::error::{invalid, Result};

pub const MAGIC: &[u8; 8] = b"IIFSBMAP";
pub const VERSION: u32 = 1;
pub const SLOT_SIZE: u64 = 4096;
pub const BITMAPS_OFFSET: u64 = 2 * SLOT_SIZE;
const CRC_OFFSET: usize = SLOT_SIZE as usize - 4;
const STRINGS_OFFSET: usize = 128;
pub const MAX_PATH: usize = 1024;

/// State flags kept in the header.
pub mod flags {
    /// A copy runs (or ran and was aborted) master -> shadow.
    pub const TO_SHADOW: u32 = 1 << 0;
    /// A copy runs (or ran and was aborted) shadow -> master.
    pub const TO_MASTER: u32 = 1 << 1;
    /// The copy is active: resume it after a restart.
    pub const ACTIVE: u32 = 1 << 2;
    /// Roll-forward intents, written before a bulk bitmap change and cleared after it:
    /// `copy := all ones`, then `copy |= shadow`, then `shadow := 0`.
    pub const PENDING_FILL_COPY: u32 = 1 << 3;
    pub const PENDING_OR_COPY: u32 = 1 << 4;
    pub const PENDING_CLEAR_SHADOW: u32 = 1 << 5;
    /// The set is offline: a backing volume failed.
    pub const OFFLINE: u32 = 1 << 6;
    /// With OFFLINE: which volumes can no longer be trusted (REFERENCE-II 7.3), so that
    /// `reset` rebuilds the right one (7.4).
    pub const OFFLINE_MASTER: u32 = 1 << 7;
    pub const OFFLINE_SHADOW: u32 = 1 << 8;
    pub const OFFLINE_BITMAP: u32 = 1 << 9;
    pub const OFFLINE_ALL: u32 = OFFLINE | OFFLINE_MASTER | OFFLINE_SHADOW | OFFLINE_BITMAP;
    /// Roll-forward intent `shadow := all ones` (every chunk differs: a reset that keeps a
    /// sound shadow).
    pub const PENDING_FILL_SHADOW: u32 = 1 << 10;
    pub const PENDING: u32 =
        PENDING_FILL_COPY | PENDING_OR_COPY | PENDING_CLEAR_SHADOW | PENDING_FILL_SHADOW;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Independent,
    Dependent,
}

impl SetKind {
    fn code(self) -> u32 {
        match self {
            SetKind::Independent => 1,
            SetKind::Dependent => 2,
        }
    }
    fn from_code(c: u32) -> Option<SetKind> {
        match c {
            1 => Some(SetKind::Independent),
            2 => Some(SetKind::Dependent),
            _ => None,
        }
    }
    pub fn word(self) -> &'static str {
        match self {
            SetKind::Independent => "independent",
            SetKind::Dependent => "dependent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Old chunk and its bit are durable before a master write is acknowledged or issued.
    Strict,
    /// Ordering only: survives a daemon crash, not a power loss.
    Relaxed,
}

impl Durability {
    pub fn word(self) -> &'static str {
        match self {
            Durability::Strict => "strict",
            Durability::Relaxed => "relaxed",
        }
    }
    pub fn parse(s: &str) -> Option<Durability> {
        match s {
            "strict" => Some(Durability::Strict),
            "relaxed" => Some(Durability::Relaxed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub kind: SetKind,
    pub chunk_size: u32,
    pub master_size: u64,
    pub shadow_size: u64,
    pub flags: u32,
    pub throttle_delay_ms: u32,
    pub throttle_units: u32,
    pub pit_time: u64,
    pub durability: Durability,
    pub name: String,
    pub master: String,
    pub shadow: String,
    pub bitmap: String,
}

impl Header {
    pub fn chunks(&self) -> u64 {
        self.master_size.div_ceil(self.chunk_size as u64)
    }

    /// Bytes of one bitmap region, padded to whole 4 KiB pages.
    pub fn bitmap_len(&self) -> u64 {
        bitmap_region_len(self.chunks())
    }

    pub fn shadow_bitmap_offset(&self) -> u64 {
        BITMAPS_OFFSET
    }

    pub fn copy_bitmap_offset(&self) -> u64 {
        BITMAPS_OFFSET + self.bitmap_len()
    }

    /// The smallest bitmap volume that holds this set.
    pub fn volume_len(&self) -> u64 {
        BITMAPS_OFFSET + 2 * self.bitmap_len()
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut b = vec![0u8; SLOT_SIZE as usize];
        b[0..8].copy_from_slice(MAGIC);
        put32(&mut b, 8, VERSION);
        put32(&mut b, 12, SLOT_SIZE as u32);
        put64(&mut b, 16, self.seq);
        put32(&mut b, 24, self.kind.code());
        put32(&mut b, 28, self.chunk_size);
        put64(&mut b, 32, self.master_size);
        put64(&mut b, 40, self.shadow_size);
        put32(&mut b, 48, self.flags);
        put32(&mut b, 52, self.throttle_delay_ms);
        put32(&mut b, 56, self.throttle_units);
        put64(&mut b, 64, self.pit_time);
        put64(&mut b, 72, self.shadow_bitmap_offset());
        put64(&mut b, 80, self.copy_bitmap_offset());
        put64(&mut b, 88, self.bitmap_len());
        put32(
            &mut b,
            96,
            match self.durability {
                Durability::Strict => 0,
                Durability::Relaxed => 1,
            },
        );
        let mut at = STRINGS_OFFSET;
        for s in [&self.name, &self.master, &self.shadow, &self.bitmap] {
            let bytes = s.as_bytes();
            if bytes.len() > MAX_PATH || at + 2 + bytes.len() > CRC_OFFSET {
                return Err(invalid(format!(
                    "name or path too long for the bitmap header (at most {MAX_PATH} bytes): {s}"
                )));
            }
            b[at..at + 2].copy_from_slice(&(bytes.len() as u16).to_le_bytes());
            b[at + 2..at + 2 + bytes.len()].copy_from_slice(bytes);
            at += 2 + bytes.len();
        }
        let crc = crc32fast::hash(&b[..CRC_OFFSET]);
        put32(&mut b, CRC_OFFSET, crc);
        Ok(b)
    }

    /// Decode one slot; `None` if it is not a valid iifs header (wrong magic, version or CRC).
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < SLOT_SIZE as usize || &b[0..8] != MAGIC || get32(b, 8) != VERSION {
            return None;
        }
        if crc32fast::hash(&b[..CRC_OFFSET]) != get32(b, CRC_OFFSET) {
            return None;
        }
        let mut at = STRINGS_OFFSET;
        let mut strings = Vec::with_capacity(4);
        for _ in 0..4 {
            let n = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
            if at + 2 + n > CRC_OFFSET {
                return None;
            }
            strings.push(String::from_utf8(b[at + 2..at + 2 + n].to_vec()).ok()?);
            at += 2 + n;
        }
        let bitmap = strings.pop()?;
        let shadow = strings.pop()?;
        let master = strings.pop()?;
        let name = strings.pop()?;
        let chunk_size = get32(b, 28);
        // The stripe locks assume no chunk is larger than 1 MiB.
        if !chunk_size.is_power_of_two() || !(512..=1 << 20).contains(&chunk_size) {
            return None;
        }
        Some(Header {
            seq: get64(b, 16),
            kind: SetKind::from_code(get32(b, 24))?,
            chunk_size,
            master_size: get64(b, 32),
            shadow_size: get64(b, 40),
            flags: get32(b, 48),
            throttle_delay_ms: get32(b, 52),
            throttle_units: get32(b, 56),
            pit_time: get64(b, 64),
            durability: if get32(b, 96) == 1 {
                Durability::Relaxed
            } else {
                Durability::Strict
            },
            name,
            master,
            shadow,
            bitmap,
        })
    }

    /// The newer of the two slots that decode, if any.
    pub fn pick(slot_a: &[u8], slot_b: &[u8]) -> Option<(Header, usize)> {
        match (Header::decode(slot_a), Header::decode(slot_b)) {
            (Some(a), Some(b)) => Some(if b.seq > a.seq { (b, 1) } else { (a, 0) }),
            (Some(a), None) => Some((a, 0)),
            (None, Some(b)) => Some((b, 1)),
            (None, None) => None,
        }
    }
}

pub fn bitmap_region_len(chunks: u64) -> u64 {
    chunks.div_ceil(8).div_ceil(SLOT_SIZE).max(1) * SLOT_SIZE
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            seq: 7,
            kind: SetKind::Dependent,
            chunk_size: 65536,
            master_size: 1 << 30,
            shadow_size: 1 << 30,
            flags: flags::TO_SHADOW | flags::ACTIVE,
            throttle_delay_ms: 5,
            throttle_units: 100,
            pit_time: 1_700_000_000,
            durability: Durability::Relaxed,
            name: "db".into(),
            master: "/srv/m".into(),
            shadow: "/srv/s".into(),
            bitmap: "/srv/b".into(),
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let bytes = h.encode().unwrap();
        assert_eq!(Header::decode(&bytes), Some(h));
    }

    #[test]
    fn corrupt_slot_is_rejected_and_newer_slot_wins() {
        let mut h = sample();
        let a = h.encode().unwrap();
        h.seq = 8;
        let mut b = h.encode().unwrap();
        assert_eq!(Header::pick(&a, &b).unwrap().0.seq, 8);
        b[200] ^= 1;
        assert_eq!(Header::pick(&a, &b).unwrap().0.seq, 7);
    }

    #[test]
    fn chunks_larger_than_a_stripe_are_rejected() {
        let mut h = sample();
        h.chunk_size = 2 << 20;
        assert_eq!(Header::decode(&h.encode().unwrap()), None);
        h.chunk_size = 1 << 20;
        assert!(Header::decode(&h.encode().unwrap()).is_some());
    }

    #[test]
    fn region_is_page_padded() {
        assert_eq!(bitmap_region_len(1), 4096);
        assert_eq!(bitmap_region_len(4096 * 8), 4096);
        assert_eq!(bitmap_region_len(4096 * 8 + 1), 8192);
    }
}
