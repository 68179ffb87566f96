//! The set's persistent state on its bitmap volume: the header and the two bitmaps, kept in
//! memory twice. The *disk* image is what has been (or is being) written to the volume; the
//! *live* image is what the I/O paths test. A bit that protects data is set in the disk image,
//! written, made durable, and only then published in the live image, so a fast-path writer that
//! sees a live bit can trust that the bit is on disk.
//!
//! Each bitmap page carries its own CRC (layout `Checked`), computed from the same buffer and
//! written with it in one write: the page writes of the write path and their flush are
//! unchanged, and a crash leaves every page with either its old or its new content, each
//! sealed. `open` refuses a bitmap volume with a page that fails its CRC.
//!
//! (Over 500 lines with its unit tests, which drive the disk and live images together.)

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::bitmap::Bitmap;
use super::chunkmap::ChunkMap;
use super::error::VolumeFault;
use super::header::{self, flags, Header, Layout, PAGE_SIZE, SLOT_SIZE};
use super::volume::Volume;

const PAGE_LOCKS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Map {
    /// Chunks that differ between master and shadow (for dependent sets also: materialised).
    Shadow,
    /// Chunks the current (or aborted) copy still has to move.
    Copy,
}

impl Map {
    fn word(self) -> &'static str {
        match self {
            Map::Shadow => "shadow",
            Map::Copy => "copy",
        }
    }
}

/// A bitmap id unlikely to repeat: the clock, the process and a counter, mixed.
/// The header a bitmap volume holds now (the newer sound slot, and which), if it holds one;
/// nothing else is read.
pub fn peek_header(vol: &dyn Volume) -> io::Result<Option<(Header, usize)>> {
    let mut slots = vec![0u8; 2 * SLOT_SIZE as usize];
    vol.read_at(&mut slots, 0)?;
    let (a, b) = slots.split_at(SLOT_SIZE as usize);
    Ok(Header::pick(a, b))
}

pub fn new_bitmap_id() -> u64 {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ ((std::process::id() as u64) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)).max(1)
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
    layout: Layout,
    bitmap_id: u64,
    /// The header in memory says offline but no header write has recorded it yet.
    offline_unrecorded: AtomicBool,
    /// The chunk map of a compact set.
    map: Option<Arc<ChunkMap>>,
}

impl Tracking {
    fn with_header(vol: Arc<dyn Volume>, header: Header, slot: usize) -> Tracking {
        let chunks = header.chunks();
        let shd_offset = header.shadow_bitmap_offset();
        let cpy_offset = header.copy_bitmap_offset();
        let (layout, bitmap_id) = (header.layout, header.bitmap_id);
        let map = header.is_compact().then(|| {
            Arc::new(ChunkMap::new(
                vol.clone(),
                header.map_offset(),
                chunks,
                bitmap_id,
            ))
        });
        Tracking {
            map,
            vol,
            header: Mutex::new((header, slot)),
            shd_live: Bitmap::new(chunks),
            shd_disk: Bitmap::new(chunks),
            cpy_live: Bitmap::new(chunks),
            cpy_disk: Bitmap::new(chunks),
            page_locks: (0..PAGE_LOCKS).map(|_| Mutex::new(())).collect(),
            shd_offset,
            cpy_offset,
            layout,
            bitmap_id,
            offline_unrecorded: AtomicBool::new(false),
        }
    }

    /// Initialise a fresh bitmap volume: both bitmaps as the header's flags say, then the header.
    pub fn create(vol: Arc<dyn Volume>, mut header: Header) -> io::Result<Tracking> {
        header.seq = 1;
        header.generation = header.generation.max(1);
        if header.bitmap_id == 0 {
            header.bitmap_id = new_bitmap_id();
        }
        let pending = header.flags & flags::PENDING;
        header.flags &= !flags::PENDING;
        if pending & flags::PENDING_FILL_COPY != 0 {
            header.copy_total = header.chunks();
        }
        let t = Tracking::with_header(vol, header.clone(), 1);
        if pending & flags::PENDING_FILL_COPY != 0 {
            t.cpy_disk.fill();
            t.cpy_live.fill();
        }
        t.write_region(Map::Shadow)?;
        t.write_region(Map::Copy)?;
        if let Some(map) = &t.map {
            map.write_all()?;
        }
        // Invalidate the other slot so an old header of an earlier set can never win.
        t.vol.write_at(&[0u8; SLOT_SIZE as usize], SLOT_SIZE)?;
        // The pages are durable before the header that vouches for them: a power cut must not
        // keep a header whose pages fail their checksums.
        t.vol.sync()?;
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
        let (header, slot) = peek_header(vol.as_ref())?
            .ok_or_else(|| VolumeFault::NoHeader.into_io(io::ErrorKind::InvalidData))?;
        if vol.len() < header.volume_len() {
            return Err(VolumeFault::BitmapTooShort {
                len: vol.len(),
                need: header.volume_len(),
            }
            .into_io(io::ErrorKind::InvalidData));
        }
        let mut t = Tracking::with_header(vol, header.clone(), slot);
        t.load_region(Map::Shadow)?;
        t.load_region(Map::Copy)?;
        if header.is_compact() {
            t.map = Some(Arc::new(ChunkMap::load(
                t.vol.clone(),
                header.map_offset(),
                header.chunks(),
                header.bitmap_id,
            )?));
        }
        if header.flags & flags::PENDING != 0 {
            t.apply_bulk(header.flags & flags::PENDING)?;
            t.update_header(|h| h.flags &= !flags::PENDING)?;
        }
        t.shd_live.copy_from(&t.shd_disk);
        t.cpy_live.copy_from(&t.cpy_disk);
        Ok(t)
    }

    /// Read a bitmap region into the disk image, checking every page's CRC.
    fn load_region(&self, map: Map) -> io::Result<()> {
        let region = self.layout.region_len(self.shd_disk.len());
        let mut raw = vec![0u8; region as usize];
        self.vol.read_at(&mut raw, self.offset(map))?;
        let bytes = match self.layout {
            Layout::Plain => raw,
            Layout::Checked => {
                let keep = self.layout.page_bytes() as usize;
                let mut bits = Vec::with_capacity(raw.len());
                for (page, p) in raw.chunks(PAGE_SIZE as usize).enumerate() {
                    if !header::page_is_sound(self.bitmap_id, map as u8, page as u64, p) {
                        return Err(VolumeFault::BadPage {
                            map: map.word(),
                            page: page as u64,
                            offset: self.offset(map) + page as u64 * PAGE_SIZE,
                        }
                        .into_io(io::ErrorKind::InvalidData));
                    }
                    bits.extend_from_slice(&p[..keep]);
                }
                bits
            }
        };
        self.disk(map).load_bytes(&bytes);
        Ok(())
    }

    /// The chunk map, for a compact set.
    pub fn chunk_map(&self) -> Option<Arc<ChunkMap>> {
        self.map.clone()
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
        self.write_header(&mut guard, next)
    }

    /// Write `next` (one sequence number on) to the slot not holding the current header.
    fn write_header(&self, guard: &mut (Header, usize), mut next: Header) -> io::Result<()> {
        next.seq = guard.0.seq + 1;
        // The reason of an offline state goes when the state goes (reset).
        if next.flags & flags::OFFLINE == 0 {
            next.last_error.clear();
        }
        let slot = 1 - guard.1;
        let bytes = next.encode().map_err(io::Error::other)?;
        self.vol.write_at(&bytes, slot as u64 * SLOT_SIZE)?;
        self.vol.sync()?;
        *guard = (next, slot);
        // Whatever the header in memory said is on disk now, an offline state included.
        self.offline_unrecorded.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Record that the set went offline (flags `off`, reason `why`). The header in memory takes
    /// the change first, whether the write succeeds or not: every later header write carries
    /// it, so a failed write here cannot be undone by a later one (the end of a copy) that
    /// brings the set back online on disk.
    pub fn mark_offline(&self, off: u32, why: &str) -> io::Result<()> {
        let mut guard = self.header.lock().map_err(|_| super::volume::poisoned())?;
        guard.0.flags |= off;
        guard.0.last_error = why.to_string();
        self.offline_unrecorded.store(true, Ordering::SeqCst);
        let next = guard.0.clone();
        self.write_header(&mut guard, next)
    }

    /// True while the set is offline in memory but no header write could record it.
    pub fn offline_unrecorded(&self) -> bool {
        self.offline_unrecorded.load(Ordering::SeqCst)
    }

    /// Raise the generation (at every start and clean stop); returns the new one.
    pub fn bump_generation(&self) -> io::Result<u64> {
        self.update_header(|h| h.generation += 1)?;
        Ok(self.header().generation)
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
            pages.insert((map as u8, chunk / 8 / self.layout.page_bytes()));
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
        let buf = self.page_image(map, page);
        self.vol.write_at(&buf, self.offset(map) + page * PAGE_SIZE)
    }

    /// Page `page` of bitmap `map` as it goes to disk: bits of the disk image, sealed with its
    /// CRC in the checked layout.
    fn page_image(&self, map: Map, page: u64) -> Vec<u8> {
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        let keep = self.layout.page_bytes() as usize;
        self.disk(map)
            .read_bytes(page as usize * keep, &mut buf[..keep]);
        if self.layout == Layout::Checked {
            header::seal_page(self.bitmap_id, map as u8, page, &mut buf);
        }
        buf
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
        let region = self.layout.region_len(self.shd_disk.len());
        let mut buf = Vec::with_capacity(region as usize);
        for page in 0..region / PAGE_SIZE {
            buf.extend_from_slice(&self.page_image(map, page));
        }
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
        // What the copy bitmap holds now is what the copy (if one starts) has to move.
        let total = self.cpy_disk.count();
        self.update_header(|h| {
            h.flags &= !flags::PENDING;
            h.copy_total = total;
            extra_flags(h);
        })
    }

    /// Add the chunks `other` (a bitmap volume of the same chunks) marks as differing to this
    /// shadow bitmap, durably, then to the live image. The caller holds the set's gate
    /// exclusively. A union: merging twice is merging once.
    pub fn merge_shadow(&self, other: &Tracking) -> io::Result<()> {
        if other.shd_disk.len() != self.shd_disk.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the bitmaps are of different sizes",
            ));
        }
        self.shd_disk.or_with(&other.shd_disk);
        self.write_region(Map::Shadow)?;
        self.vol.sync()?;
        self.shd_live.or_with(&other.shd_disk);
        Ok(())
    }

    /// Chunks the recorded copy had to move when it started, as far as known: never fewer
    /// than it still has to move.
    pub fn copy_total(&self) -> u64 {
        self.header().copy_total.max(self.count(Map::Copy))
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
            h.copy_total = 0;
            extra_flags(h);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::header::flags;
    use super::super::testing::MapOpener;
    use super::super::testing::MemVolume;
    use super::super::volume::{Volume, VolumeId};
    use super::super::{Direction, Durability, EnableSpec, Engine, SetKind};
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Failing(MemVolume, AtomicBool);

    impl Volume for Failing {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.0.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            if self.1.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected"));
            }
            self.0.write_at(buf, offset)
        }
        fn sync(&self) -> io::Result<()> {
            Ok(())
        }
        fn id(&self) -> VolumeId {
            self.0.id()
        }
    }

    /// The end of a full copy clears the full-copy mark; racing with a failure of the master,
    /// it must not clear the record that the master failed (version 1 kept both in bit 7), or
    /// a reset would take the failed master for the good copy and overwrite the sound shadow.
    #[test]
    fn the_end_of_a_full_copy_keeps_a_failed_master_recorded() {
        let master = Arc::new(Failing(
            MemVolume::from_bytes(vec![5; 16 * 4096]),
            AtomicBool::new(false),
        ));
        let shadow = Arc::new(MemVolume::new(16 * 4096));
        let o = MapOpener::new();
        o.insert("/m", master.clone());
        o.insert("/s", shadow.clone());
        o.insert("/b", Arc::new(MemVolume::new(16384)));
        let e = Engine::new(Box::new(o));
        let spec = EnableSpec {
            kind: SetKind::Independent,
            master: "/m".into(),
            shadow: "/s".into(),
            bitmap: "/b".into(),
            name: "r".into(),
            chunk_size: 4096,
            durability: Durability::Strict,
        };
        let s = e.enable(&spec).expect("enable");
        s.wait_copy().expect("copy");
        // A restore of the master from the shadow (a full copy), slow; the master fails.
        s.set_params(10_000, 1).expect("params");
        s.start_copy(Direction::Master, true).expect("copy master");
        master.1.store(true, Ordering::SeqCst);
        let _ = s.master.write(&[1; 10], 15 * 4096);
        assert_eq!(
            s.flags() & flags::OFFLINE_ALL,
            flags::OFFLINE | flags::OFFLINE_MASTER
        );
        // The copier reaches its end in that same moment.
        s.copy_ended(true);
        assert_ne!(s.flags() & flags::OFFLINE_MASTER, 0);
        assert_ne!(s.header().flags & flags::OFFLINE_MASTER, 0);
        // The reset keeps the sound shadow: nothing is copied onto it.
        master.1.store(false, Ordering::SeqCst);
        let before = shadow.snapshot();
        s.reset().expect("reset");
        let st = s.status();
        assert_eq!((st.state, st.direction), ("idle", "-"));
        assert_eq!(shadow.snapshot(), before);
    }
}
