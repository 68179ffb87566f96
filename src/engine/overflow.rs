//! Overflow volumes: a shared spill area for compact shadows. Its first chunk holds a header
//! (magic, version, chunk size, size, a random id and the name, sealed with a CRC); chunks
//! 1.. are slots that the compact sets attached to it take when their own shadow is full.
//!
//! Which slots are in use is recorded only in the sets' chunk maps: the pool in memory is
//! rebuilt from them when the sets come back (`claim`), so the overflow volume itself is
//! written only by `init` and `wipe`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::slots::Pool;
use super::volume::Volume;

const MAGIC: &[u8; 8] = b"IIFSOVFL";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 4096;
const CRC_AT: usize = HEADER_LEN - 4;
const NAME_AT: usize = 40;

/// What the header of an initialised overflow volume says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowHeader {
    pub chunk_size: u64,
    pub size: u64,
    pub id: u64,
    pub name: String,
}

impl OverflowHeader {
    fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.chunk_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b[32..40].copy_from_slice(&self.id.to_le_bytes());
        let name = self.name.as_bytes();
        let n = name.len().min(CRC_AT - NAME_AT - 2);
        b[NAME_AT..NAME_AT + 2].copy_from_slice(&(n as u16).to_le_bytes());
        b[NAME_AT + 2..NAME_AT + 2 + n].copy_from_slice(&name[..n]);
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The header on `vol`, if it holds a sound one.
    pub fn read(vol: &dyn Volume) -> Option<OverflowHeader> {
        if vol.len() < HEADER_LEN as u64 {
            return None;
        }
        let mut b = vec![0u8; HEADER_LEN];
        vol.read_at(&mut b, 0).ok()?;
        let u64_at = |at: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(v)
        };
        let crc = u32::from_le_bytes([b[CRC_AT], b[CRC_AT + 1], b[CRC_AT + 2], b[CRC_AT + 3]]);
        if &b[0..8] != MAGIC
            || b[8..12] != VERSION.to_le_bytes()
            || crc32fast::hash(&b[..CRC_AT]) != crc
        {
            return None;
        }
        let n = u16::from_le_bytes([b[NAME_AT], b[NAME_AT + 1]]) as usize;
        let name = String::from_utf8(b.get(NAME_AT + 2..NAME_AT + 2 + n)?.to_vec()).ok()?;
        Some(OverflowHeader {
            chunk_size: u64_at(16),
            size: u64_at(24),
            id: u64_at(32),
            name,
        })
    }
}

/// Slots of an overflow volume of `size` bytes in chunks of `chunk_size` (its slot 0 is the
/// header): `1..end`.
pub fn slot_end(size: u64, chunk_size: u64) -> u64 {
    size / chunk_size
}

struct Use {
    pool: Pool,
    /// Slots in use, by set.
    by_set: BTreeMap<String, BTreeSet<u64>>,
    /// Sets attached (with or without slots in use).
    attached: BTreeSet<String>,
}

pub struct Overflow {
    pub name: String,
    pub path: String,
    pub vol: Arc<dyn Volume>,
    pub chunk_size: u64,
    pub id: u64,
    state: Mutex<Use>,
}

/// A snapshot of an overflow volume for its status file.
#[derive(Debug, Clone)]
pub struct OverflowStatus {
    pub name: String,
    pub path: String,
    pub size: u64,
    pub chunk_size: u64,
    pub total: u64,
    pub used: u64,
    /// Every attached set, with the slots it uses.
    pub sets: Vec<(String, u64)>,
}

impl Overflow {
    /// Write a fresh header on `vol` (made durable) and take it as overflow `name`.
    pub fn init(
        vol: Arc<dyn Volume>,
        name: &str,
        path: &str,
        chunk_size: u64,
        id: u64,
    ) -> io::Result<Overflow> {
        let header = OverflowHeader {
            chunk_size,
            size: vol.len(),
            id,
            name: name.to_string(),
        };
        vol.write_at(&header.encode(), 0)?;
        vol.sync()?;
        Ok(Overflow::with_header(vol, path, header))
    }

    /// Take an initialised overflow volume (its header read by the caller).
    pub fn with_header(vol: Arc<dyn Volume>, path: &str, h: OverflowHeader) -> Overflow {
        let end = slot_end(h.size.min(vol.len()), h.chunk_size);
        Overflow {
            name: h.name,
            path: path.to_string(),
            vol,
            chunk_size: h.chunk_size,
            id: h.id,
            state: Mutex::new(Use {
                pool: Pool::new(1, end),
                by_set: BTreeMap::new(),
                attached: BTreeSet::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, Use> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// Record `set` as attached, using `slots` (from its chunk map). Err with a slot that is
    /// outside the volume or already used: the maps disagree, nothing is recorded.
    pub fn attach(&self, set: &str, slots: &[u64]) -> Result<(), u64> {
        let mut s = self.state();
        let mut claimed = Vec::new();
        for &slot in slots {
            if !s.pool.claim(slot) {
                for c in claimed {
                    s.pool.give(c);
                }
                return Err(slot);
            }
            claimed.push(slot);
        }
        s.attached.insert(set.to_string());
        s.by_set
            .entry(set.to_string())
            .or_default()
            .extend(slots.iter().copied());
        Ok(())
    }

    /// `set` no longer uses this overflow; its slots (if any) are free again.
    pub fn detach(&self, set: &str) {
        let mut s = self.state();
        s.attached.remove(set);
        if let Some(slots) = s.by_set.remove(set) {
            for slot in slots {
                s.pool.give(slot);
            }
        }
    }

    /// A free slot for `set`, if any.
    pub fn take(&self, set: &str) -> Option<u64> {
        let mut s = self.state();
        let slot = s.pool.take()?;
        s.by_set.entry(set.to_string()).or_default().insert(slot);
        Some(slot)
    }

    /// Give back slots of `set` (nothing refers to them durably any more).
    pub fn give(&self, set: &str, slots: &[u64]) {
        let mut s = self.state();
        for &slot in slots {
            let owned = s.by_set.get_mut(set).is_some_and(|v| v.remove(&slot));
            if owned {
                s.pool.give(slot);
            }
        }
    }

    /// Slots `set` uses.
    pub fn used_by(&self, set: &str) -> u64 {
        self.state().by_set.get(set).map_or(0, |v| v.len() as u64)
    }

    /// Slots in all, and in use (without the per-set list `status` builds: for the I/O path).
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state();
        (s.pool.total(), s.pool.used())
    }

    /// Whether any set is attached.
    pub fn in_use(&self) -> bool {
        !self.state().attached.is_empty()
    }

    pub fn attached_sets(&self) -> Vec<String> {
        self.state().attached.iter().cloned().collect()
    }

    pub fn status(&self) -> OverflowStatus {
        let s = self.state();
        OverflowStatus {
            name: self.name.clone(),
            path: self.path.clone(),
            size: self.vol.len(),
            chunk_size: self.chunk_size,
            total: s.pool.total(),
            used: s.pool.used(),
            sets: s
                .attached
                .iter()
                .map(|n| (n.clone(), s.by_set.get(n).map_or(0, |v| v.len() as u64)))
                .collect(),
        }
    }

    /// Erase the header (the volume is no longer an overflow volume).
    pub fn wipe(&self) -> io::Result<()> {
        self.vol.write_at(&vec![0u8; HEADER_LEN], 0)?;
        self.vol.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::MemVolume;

    #[test]
    fn header_round_trips_and_slots_are_shared_out() {
        let vol: Arc<dyn Volume> = Arc::new(MemVolume::new(4 * 4096));
        let o = Overflow::init(vol.clone(), "pool", "/o", 4096, 42).unwrap();
        let h = OverflowHeader::read(vol.as_ref()).unwrap();
        assert_eq!(
            (h.chunk_size, h.size, h.id, h.name.as_str()),
            (4096, 16384, 42, "pool")
        );
        assert_eq!(o.status().total, 3);
        o.attach("a", &[]).unwrap();
        o.attach("b", &[2]).unwrap();
        assert_eq!(o.take("a"), Some(1));
        assert_eq!(o.take("a"), Some(3));
        assert_eq!(o.take("a"), None);
        assert_eq!(o.status().sets, vec![("a".into(), 2), ("b".into(), 1)]);
        assert!(o.attach("c", &[2]).is_err(), "a slot in use twice");
        o.detach("a");
        assert_eq!(o.status().used, 1);
        o.wipe().unwrap();
        assert!(OverflowHeader::read(vol.as_ref()).is_none());
    }
}
