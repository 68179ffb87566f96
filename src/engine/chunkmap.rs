//! The chunk map of a compact set: for every master chunk, the slot that holds its preserved
//! content, on the shadow volume or on the attached overflow volume. It lives on the bitmap
//! volume after the two bitmaps (`Header::map_offset`), one 8-byte entry per master chunk, 511
//! entries to a 4 KiB page sealed with a CRC like the bitmap pages (map number 2), so a page and
//! its CRC are one write and a crash leaves each page old or new, never torn.
//!
//! An entry is 0 (no slot), `slot + 1` (shadow slot), or `OVERFLOW_BIT | (slot + 1)` (overflow
//! slot). The map is the only record of which slots are in use: the allocators are rebuilt from
//! it at start.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::VolumeFault;
use super::header::{self, MAP_ENTRIES_PER_PAGE, MAP_ENTRY, PAGE_SIZE};
use super::volume::Volume;

/// The map number salted into the page CRCs (0 and 1 are the bitmaps).
const MAP_CODE: u8 = 2;
const OVERFLOW_BIT: u64 = 1 << 63;
const PAGE_LOCKS: usize = 16;

/// Where a preserved chunk lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// Slot n of the shadow volume (bytes `n * chunk_size ..`).
    Shadow(u64),
    /// Slot n of the attached overflow volume (n >= 1: its slot 0 holds its header).
    Overflow(u64),
}

impl Slot {
    fn encode(slot: Option<Slot>) -> u64 {
        match slot {
            None => 0,
            Some(Slot::Shadow(n)) => n + 1,
            Some(Slot::Overflow(n)) => OVERFLOW_BIT | (n + 1),
        }
    }

    fn decode(v: u64) -> Option<Slot> {
        match v {
            0 => None,
            v if v & OVERFLOW_BIT != 0 => Some(Slot::Overflow((v & !OVERFLOW_BIT) - 1)),
            v => Some(Slot::Shadow(v - 1)),
        }
    }
}

pub struct ChunkMap {
    vol: Arc<dyn Volume>,
    offset: u64,
    bitmap_id: u64,
    entries: Vec<AtomicU64>,
    page_locks: Vec<Mutex<()>>,
}

impl ChunkMap {
    /// An empty map of `chunks` entries at `offset` of `vol` (nothing written yet).
    pub fn new(vol: Arc<dyn Volume>, offset: u64, chunks: u64, bitmap_id: u64) -> ChunkMap {
        ChunkMap {
            vol,
            offset,
            bitmap_id,
            entries: (0..chunks).map(|_| AtomicU64::new(0)).collect(),
            page_locks: (0..PAGE_LOCKS).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Read the map back, checking every page's CRC.
    pub fn load(
        vol: Arc<dyn Volume>,
        offset: u64,
        chunks: u64,
        bitmap_id: u64,
    ) -> io::Result<ChunkMap> {
        let map = ChunkMap::new(vol, offset, chunks, bitmap_id);
        let mut raw = vec![0u8; header::map_region_len(chunks) as usize];
        map.vol.read_at(&mut raw, offset)?;
        for (page, p) in raw.chunks(PAGE_SIZE as usize).enumerate() {
            if !header::page_is_sound(bitmap_id, MAP_CODE, page as u64, p) {
                return Err(VolumeFault::BadPage {
                    map: "chunk",
                    page: page as u64,
                    offset: offset + page as u64 * PAGE_SIZE,
                }
                .into_io(io::ErrorKind::InvalidData));
            }
            let first = page as u64 * MAP_ENTRIES_PER_PAGE;
            for i in 0..MAP_ENTRIES_PER_PAGE {
                let c = first + i;
                if c >= chunks {
                    break;
                }
                let at = (i * MAP_ENTRY) as usize;
                let mut v = [0u8; 8];
                v.copy_from_slice(&p[at..at + 8]);
                map.entries[c as usize].store(u64::from_le_bytes(v), Ordering::Relaxed);
            }
        }
        Ok(map)
    }

    pub fn chunks(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn get(&self, chunk: u64) -> Option<Slot> {
        self.entries
            .get(chunk as usize)
            .and_then(|e| Slot::decode(e.load(Ordering::SeqCst)))
    }

    /// Every chunk that has a slot, with it.
    pub fn mapped(&self) -> Vec<(u64, Slot)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(c, e)| Slot::decode(e.load(Ordering::SeqCst)).map(|s| (c as u64, s)))
            .collect()
    }

    /// Change entries in memory and write the pages they touch (no sync).
    pub fn set(&self, changes: &[(u64, Option<Slot>)]) -> io::Result<()> {
        let mut pages = std::collections::BTreeSet::new();
        for &(c, slot) in changes {
            if let Some(e) = self.entries.get(c as usize) {
                e.store(Slot::encode(slot), Ordering::SeqCst);
                pages.insert(c / MAP_ENTRIES_PER_PAGE);
            }
        }
        for page in pages {
            let _g = self.lock_page(page);
            self.vol
                .write_at(&self.page_image(page), self.offset + page * PAGE_SIZE)?;
        }
        Ok(())
    }

    /// Make the map's writes durable (the bitmap volume's sync).
    pub fn sync(&self) -> io::Result<()> {
        self.vol.sync()
    }

    /// Clear every entry and write the whole map (no sync).
    pub fn clear_all(&self) -> io::Result<()> {
        for e in &self.entries {
            e.store(0, Ordering::SeqCst);
        }
        self.write_all()
    }

    /// Write the whole map from memory (no sync).
    pub fn write_all(&self) -> io::Result<()> {
        let pages = header::map_region_len(self.chunks()) / PAGE_SIZE;
        let mut buf = Vec::with_capacity((pages * PAGE_SIZE) as usize);
        for page in 0..pages {
            buf.extend_from_slice(&self.page_image(page));
        }
        self.vol.write_at(&buf, self.offset)
    }

    fn page_image(&self, page: u64) -> Vec<u8> {
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        let first = page * MAP_ENTRIES_PER_PAGE;
        for i in 0..MAP_ENTRIES_PER_PAGE {
            let Some(e) = self.entries.get((first + i) as usize) else {
                break;
            };
            let at = (i * MAP_ENTRY) as usize;
            buf[at..at + 8].copy_from_slice(&e.load(Ordering::SeqCst).to_le_bytes());
        }
        header::seal_page(self.bitmap_id, MAP_CODE, page, &mut buf);
        buf
    }

    fn lock_page(&self, page: u64) -> MutexGuard<'_, ()> {
        match self.page_locks[page as usize % PAGE_LOCKS].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::MemVolume;

    #[test]
    fn entries_survive_a_reload_and_a_flipped_bit_is_caught() {
        let vol: Arc<dyn Volume> = Arc::new(MemVolume::new(64 << 10));
        let map = ChunkMap::new(vol.clone(), 8192, 1500, 7);
        map.clear_all().unwrap();
        map.set(&[(0, Some(Slot::Shadow(0))), (1499, Some(Slot::Overflow(3)))])
            .unwrap();
        let back = ChunkMap::load(vol.clone(), 8192, 1500, 7).unwrap();
        assert_eq!(back.get(0), Some(Slot::Shadow(0)));
        assert_eq!(back.get(1499), Some(Slot::Overflow(3)));
        assert_eq!(back.get(700), None);
        assert_eq!(back.mapped().len(), 2);
        // A page of another set (other id) fails its CRC.
        assert!(ChunkMap::load(vol.clone(), 8192, 1500, 8).is_err());
        let mut b = [0u8; 1];
        vol.read_at(&mut b, 8192 + 5).unwrap();
        vol.write_at(&[b[0] ^ 1], 8192 + 5).unwrap();
        assert!(ChunkMap::load(vol, 8192, 1500, 7).is_err());
    }
}
