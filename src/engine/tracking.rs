//! The set's persistent state on its bitmap volume: the header and the two bitmaps, kept in
//! memory twice. The *disk* image is what has been (or is being) written to the volume; the
//! *live* image is what the I/O paths test. A bit that protects data is set in the disk image,
//! written, made durable, and only then published in the live image, so a fast-path writer that
//! sees a live bit can trust that the bit is on disk.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::bitmap::Bitmap;
use super::header::{flags, Header, SLOT_SIZE};
use super::volume::Volume;

const PAGE: u64 = 4096;
const PAGE_LOCKS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Map {
    /// Chunks that differ between master and shadow (for dependent sets also: materialised).
    Shadow,
    /// Chunks the current (or aborted) copy still has to move.
    Copy,
}

pub struct Tracking {
    pub vol: Arc<dyn Volume>,
    header: Mutex<(Header, usize)>,
    shd_live: Bitmap,
    shd_disk: Bitmap,
    cpy_live: Bitmap,
    cpy_disk: Bitmap,
    page_locks: Vec<Mutex<()>>,
    shd_offset: u64,
    cpy_offset: u64,
}

impl Tracking {
    fn with_header(vol: Arc<dyn Volume>, header: Header, slot: usize) -> Tracking {
        let chunks = header.chunks();
        let shd_offset = header.shadow_bitmap_offset();
        let cpy_offset = header.copy_bitmap_offset();
        Tracking {
            vol,
            header: Mutex::new((header, slot)),
            shd_live: Bitmap::new(chunks),
            shd_disk: Bitmap::new(chunks),
            cpy_live: Bitmap::new(chunks),
            cpy_disk: Bitmap::new(chunks),
            page_locks: (0..PAGE_LOCKS).map(|_| Mutex::new(())).collect(),
            shd_offset,
            cpy_offset,
        }
    }

    /// Initialise a fresh bitmap volume: both bitmaps as the header's flags say, then the header.
    pub fn create(vol: Arc<dyn Volume>, mut header: Header) -> io::Result<Tracking> {
        header.seq = 1;
        let pending = header.flags & flags::PENDING;
        header.flags &= !flags::PENDING;
        let t = Tracking::with_header(vol, header.clone(), 1);
        if pending & flags::PENDING_FILL_COPY != 0 {
            t.cpy_disk.fill();
            t.cpy_live.fill();
        }
        t.write_region(Map::Shadow)?;
        t.write_region(Map::Copy)?;
        // Invalidate the other slot so an old header of an earlier set can never win.
        t.vol.write_at(&[0u8; SLOT_SIZE as usize], SLOT_SIZE)?;
        t.vol
            .write_at(&header.encode().map_err(io::Error::other)?, 0)?;
        t.vol.sync()?;
        if let Ok(mut h) = t.header.lock() {
            h.1 = 0;
        }
        Ok(t)
    }

    /// Read the header back, finish any interrupted bulk change, and load the bitmaps.
    pub fn open(vol: Arc<dyn Volume>) -> io::Result<Tracking> {
        // Pages a killed daemon wrote may sit in the page cache only: make them durable before
        // the fast path trusts the bits they hold.
        vol.sync()?;
        let mut slots = vec![0u8; 2 * SLOT_SIZE as usize];
        vol.read_at(&mut slots, 0)?;
        let (header, slot) =
            Header::pick(&slots[..SLOT_SIZE as usize], &slots[SLOT_SIZE as usize..]).ok_or_else(
                || {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "no valid iifs header on the bitmap volume",
                    )
                },
            )?;
        if vol.len() < header.volume_len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bitmap volume is shorter than its header says",
            ));
        }
        let t = Tracking::with_header(vol, header.clone(), slot);
        let mut bytes = vec![0u8; header.bitmap_len() as usize];
        t.vol.read_at(&mut bytes, t.shd_offset)?;
        t.shd_disk.load_bytes(&bytes);
        t.vol.read_at(&mut bytes, t.cpy_offset)?;
        t.cpy_disk.load_bytes(&bytes);
        if header.flags & flags::PENDING != 0 {
            t.apply_bulk(header.flags & flags::PENDING)?;
            t.update_header(|h| h.flags &= !flags::PENDING)?;
        }
        t.shd_live.copy_from(&t.shd_disk);
        t.cpy_live.copy_from(&t.cpy_disk);
        Ok(t)
    }

    pub fn header(&self) -> Header {
        match self.header.lock() {
            Ok(h) => h.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    /// Change the header and write it durably to the slot not holding the current one.
    pub fn update_header(&self, change: impl FnOnce(&mut Header)) -> io::Result<()> {
        let mut guard = self.header.lock().map_err(|_| super::volume::poisoned())?;
        let mut next = guard.0.clone();
        change(&mut next);
        next.seq = guard.0.seq + 1;
        let slot = 1 - guard.1;
        let bytes = next.encode().map_err(io::Error::other)?;
        self.vol.write_at(&bytes, slot as u64 * SLOT_SIZE)?;
        self.vol.sync()?;
        *guard = (next, slot);
        Ok(())
    }

    /// Mark the volume as no longer holding a set (after disable).
    pub fn invalidate(&self) -> io::Result<()> {
        let zeros = vec![0u8; 2 * SLOT_SIZE as usize];
        self.vol.write_at(&zeros, 0)?;
        self.vol.sync()
    }

    fn live(&self, map: Map) -> &Bitmap {
        match map {
            Map::Shadow => &self.shd_live,
            Map::Copy => &self.cpy_live,
        }
    }

    fn disk(&self, map: Map) -> &Bitmap {
        match map {
            Map::Shadow => &self.shd_disk,
            Map::Copy => &self.cpy_disk,
        }
    }

    fn offset(&self, map: Map) -> u64 {
        match map {
            Map::Shadow => self.shd_offset,
            Map::Copy => self.cpy_offset,
        }
    }

    #[inline]
    pub fn test(&self, map: Map, chunk: u64) -> bool {
        self.live(map).get(chunk)
    }

    pub fn count(&self, map: Map) -> u64 {
        self.live(map).count()
    }

    pub fn count_either(&self) -> u64 {
        self.shd_live.count_union(&self.cpy_live)
    }

    pub fn next_set(&self, map: Map, from: u64) -> Option<u64> {
        self.live(map).next_set(from)
    }

    /// Record bit changes in the disk image and write the pages they touch (no sync).
    pub fn persist(&self, changes: &[(Map, u64, bool)]) -> io::Result<()> {
        let mut pages = BTreeSet::new();
        for &(map, chunk, value) in changes {
            let disk = self.disk(map);
            if value {
                disk.set(chunk);
            } else {
                disk.clear(chunk);
            }
            pages.insert((map as u8, chunk / 8 / PAGE));
        }
        for (m, page) in pages {
            let map = if m == Map::Shadow as u8 {
                Map::Shadow
            } else {
                Map::Copy
            };
            self.write_page(map, page)?;
        }
        Ok(())
    }

    /// Make changes visible to the I/O paths (after `persist` and any sync).
    pub fn publish(&self, changes: &[(Map, u64, bool)]) {
        for &(map, chunk, value) in changes {
            if value {
                self.live(map).set(chunk);
            } else {
                self.live(map).clear(chunk);
            }
        }
    }

    /// Clear bits in the live image first (readers move to the other source, which already
    /// holds the data), then on disk.
    pub fn clear_now(&self, map: Map, chunks: &[u64]) -> io::Result<()> {
        let changes: Vec<_> = chunks.iter().map(|&c| (map, c, false)).collect();
        self.publish(&changes);
        self.persist(&changes)
    }

    fn write_page(&self, map: Map, page: u64) -> io::Result<()> {
        let _g = self.lock_page(map, page);
        let region = super::header::bitmap_region_len(self.shd_disk.len());
        let start = page * PAGE;
        let n = PAGE.min(region - start) as usize;
        let mut buf = vec![0u8; n];
        self.disk(map).read_bytes(start as usize, &mut buf);
        self.vol.write_at(&buf, self.offset(map) + start)
    }

    fn lock_page(&self, map: Map, page: u64) -> MutexGuard<'_, ()> {
        let i = (page as usize * 2 + map as usize) % PAGE_LOCKS;
        match self.page_locks[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Write a whole bitmap region from the disk image.
    fn write_region(&self, map: Map) -> io::Result<()> {
        let region = super::header::bitmap_region_len(self.shd_disk.len());
        let mut buf = vec![0u8; region as usize];
        self.disk(map).read_bytes(0, &mut buf);
        self.vol.write_at(&buf, self.offset(map))
    }

    /// A bulk change (`copy := 1s`, `copy |= shadow`, `shadow := 0`), crash-safe: the intent is
    /// recorded in the header first and cleared after, and `open` rolls it forward. The caller
    /// holds the set's gate exclusively, so no other bit changes meanwhile.
    pub fn bulk(&self, ops: u32, extra_flags: impl FnOnce(&mut Header)) -> io::Result<()> {
        self.update_header(|h| h.flags |= ops)?;
        self.apply_bulk(ops)?;
        self.shd_live.copy_from(&self.shd_disk);
        self.cpy_live.copy_from(&self.cpy_disk);
        self.update_header(|h| {
            h.flags &= !flags::PENDING;
            extra_flags(h);
        })
    }

    fn apply_bulk(&self, ops: u32) -> io::Result<()> {
        if ops & flags::PENDING_FILL_COPY != 0 {
            self.cpy_disk.fill();
        }
        if ops & flags::PENDING_OR_COPY != 0 {
            self.cpy_disk.or_with(&self.shd_disk);
        }
        if ops & (flags::PENDING_FILL_COPY | flags::PENDING_OR_COPY) != 0 {
            self.write_region(Map::Copy)?;
            self.vol.sync()?;
        }
        if ops & flags::PENDING_CLEAR_SHADOW != 0 {
            self.shd_disk.clear_all();
            self.write_region(Map::Shadow)?;
            self.vol.sync()?;
        }
        if ops & flags::PENDING_FILL_SHADOW != 0 {
            self.shd_disk.fill();
            self.write_region(Map::Shadow)?;
            self.vol.sync()?;
        }
        Ok(())
    }

    /// Both bitmaps cleared (a fresh point in time), crash-safe like `bulk`.
    pub fn reset_all(&self, extra_flags: impl FnOnce(&mut Header)) -> io::Result<()> {
        self.update_header(|h| h.flags |= flags::PENDING_CLEAR_SHADOW)?;
        self.cpy_disk.clear_all();
        self.write_region(Map::Copy)?;
        self.vol.sync()?;
        self.apply_bulk(flags::PENDING_CLEAR_SHADOW)?;
        self.shd_live.clear_all();
        self.cpy_live.clear_all();
        self.update_header(|h| {
            h.flags &= !flags::PENDING;
            extra_flags(h);
        })
    }
}
