//! The shadow of a compact set: a volume with the master's size whose chunks live in slots of
//! a smaller shadow volume, or of an attached overflow volume, as the chunk map says. The set
//! gives a chunk a slot (`reserve`) before it copies the chunk's old content there; a chunk
//! with no slot reads and writes as an error (the set never asks: it reads such a chunk from
//! the master, or refuses a chunk it could not preserve).
//!
//! Crash rules (the map is the one record of which slots are used):
//! - a slot is written to the map before data goes into it and before the chunk's bit is set,
//!   so a bit never points at a chunk without a slot that holds its data; a map entry whose
//!   chunk has no bit (a crash in between) is a leak, reclaimed at start;
//! - a slot is given back only once the map entry that held it is cleared, and, under strict
//!   durability, synced: a power loss can never bring back an old entry pointing at a slot that
//!   another chunk has taken since.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::chunkmap::{ChunkMap, Slot};
use super::overflow::Overflow;
use super::slots::Pool;
use super::volume::{copy_between, Access, CopyEnd, Volume, VolumeId};

pub struct Compact {
    /// The shadow volume itself (slots 0..`slots`).
    pub file: Arc<dyn Volume>,
    map: Arc<ChunkMap>,
    chunk_size: u64,
    /// The size the shadow shows: the master's.
    size: u64,
    /// Chunks the shadow volume holds.
    pub slots: u64,
    pool: Mutex<Pool>,
    overflow: RwLock<Option<Arc<Overflow>>>,
    set: String,
}

/// Why a compact shadow's chunk map cannot be taken as it is.
#[derive(Debug)]
pub enum MapProblem {
    /// A shadow slot outside the shadow, or two chunks on one slot.
    Shadow(u64),
    /// An overflow slot outside the overflow, or in use already.
    Overflow(u64),
    /// Overflow slots, but no overflow volume.
    NoOverflow,
}

impl Compact {
    /// A compact shadow over `file` with chunk map `map`, attached to `overflow`. Map entries of
    /// chunks that `live` says hold nothing (a crash between a slot's allocation and its bit)
    /// are cleared and their slots freed: the count is returned with the shadow.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        set: &str,
        file: Arc<dyn Volume>,
        map: Arc<ChunkMap>,
        chunk_size: u64,
        size: u64,
        slots: u64,
        overflow: Option<Arc<Overflow>>,
        live: impl Fn(u64) -> bool,
    ) -> io::Result<Result<(Compact, u64), MapProblem>> {
        let mut leaks = Vec::new();
        let mut leaked_slots = Vec::new();
        let mut shadow_used = Vec::new();
        let mut overflow_used = Vec::new();
        for (c, slot) in map.mapped() {
            if !live(c) {
                leaks.push((c, None));
                leaked_slots.push(slot);
                continue;
            }
            match slot {
                Slot::Shadow(n) => shadow_used.push(n),
                Slot::Overflow(n) => overflow_used.push(n),
            }
        }
        let pool = match Pool::with_used(0, slots, shadow_used) {
            Ok(p) => p,
            Err(n) => return Ok(Err(MapProblem::Shadow(n))),
        };
        match (&overflow, overflow_used.is_empty()) {
            (None, false) => return Ok(Err(MapProblem::NoOverflow)),
            (Some(o), _) => {
                if let Err(n) = o.attach(set, &overflow_used) {
                    return Ok(Err(MapProblem::Overflow(n)));
                }
            }
            (None, true) => {}
        }
        if !leaks.is_empty() {
            if let Err(e) = map.set(&leaks).and_then(|_| map.sync()) {
                if let Some(o) = &overflow {
                    o.detach(set);
                }
                return Err(e);
            }
            // Their space goes back to the file systems too.
            for slot in leaked_slots {
                punch_slot(file.as_ref(), chunk_size, overflow.as_deref(), slot);
            }
        }
        let compact = Compact {
            file,
            map,
            chunk_size,
            size,
            slots,
            pool: Mutex::new(pool),
            overflow: RwLock::new(overflow),
            set: set.to_string(),
        };
        Ok(Ok((compact, leaks.len() as u64)))
    }

    pub fn map(&self) -> &ChunkMap {
        &self.map
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        match self.pool.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        }
    }

    pub fn overflow(&self) -> Option<Arc<Overflow>> {
        match self.overflow.read() {
            Ok(o) => o.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Attach or detach (None) the overflow volume; the caller has checked and recorded it.
    pub fn set_overflow(&self, overflow: Option<Arc<Overflow>>) {
        match self.overflow.write() {
            Ok(mut o) => *o = overflow,
            Err(p) => *p.into_inner() = overflow,
        }
    }

    /// Slots used on the shadow and on the overflow.
    pub fn usage(&self) -> (u64, u64) {
        let overflow = self.overflow().map_or(0, |o| o.used_by(&self.set));
        (self.pool().used(), overflow)
    }

    /// Give a slot to each of `chunks` that has none (shadow first, then overflow) and write
    /// the map pages (no sync: the caller makes them durable before any bit that relies on
    /// them). Returns the chunks that got none (shadow and overflow are full), and whether any
    /// entry was written.
    pub fn reserve(&self, chunks: &[u64]) -> io::Result<(Vec<u64>, bool)> {
        let mut changes = Vec::new();
        let mut lost = Vec::new();
        let overflow = self.overflow();
        for &c in chunks {
            if self.map.get(c).is_some() {
                continue;
            }
            let slot = match self.pool().take() {
                Some(n) => Some(Slot::Shadow(n)),
                None => overflow
                    .as_ref()
                    .and_then(|o| o.take(&self.set))
                    .map(Slot::Overflow),
            };
            match slot {
                Some(s) => changes.push((c, Some(s))),
                None => lost.push(c),
            }
        }
        if !changes.is_empty() {
            self.map.set(&changes)?;
        }
        Ok((lost, !changes.is_empty()))
    }

    /// Whether every one of `chunks` has a slot or can get one now (for a write that must not
    /// begin when it cannot end). Nothing is taken.
    pub fn has_room_for(&self, chunks: &[u64]) -> bool {
        let need = chunks
            .iter()
            .filter(|&&c| self.map.get(c).is_none())
            .count() as u64;
        if need == 0 {
            return true;
        }
        let shadow_free = {
            let p = self.pool();
            p.total() - p.used()
        };
        let overflow_free = self.overflow().map_or(0, |o| {
            let (total, used) = o.counts();
            total - used
        });
        need <= shadow_free + overflow_free
    }

    /// Free the slots of `chunks` (whose bits the caller has cleared): their space goes back to
    /// the file systems first (a crash after it leaves nothing allocated behind entries that
    /// are about to go), then the map entries are cleared and written, made durable when
    /// `durable`, and only then are the slots given back.
    pub fn release(&self, chunks: &[u64], durable: bool) -> io::Result<()> {
        let freed: Vec<(u64, Slot)> = chunks
            .iter()
            .filter_map(|&c| self.map.get(c).map(|s| (c, s)))
            .collect();
        self.release_slots(&freed, durable, true)
    }

    /// Free every slot (a new point in time: no chunk is preserved any more), as `release`;
    /// the whole shadow volume's space goes back.
    pub fn release_all(&self, durable: bool) -> io::Result<()> {
        let _ = self.file.punch_hole(0, self.slots * self.chunk_size);
        let mapped = self.map.mapped();
        self.release_slots(&mapped, durable, false)
    }

    /// `release` of `freed`; the shadow's slots are punched one by one with `punch_shadow`
    /// (not when the caller punched the whole shadow file already).
    fn release_slots(
        &self,
        freed: &[(u64, Slot)],
        durable: bool,
        punch_shadow: bool,
    ) -> io::Result<()> {
        if freed.is_empty() {
            return Ok(());
        }
        let overflow = self.overflow();
        for &(_, slot) in freed {
            if punch_shadow || matches!(slot, Slot::Overflow(_)) {
                punch_slot(
                    self.file.as_ref(),
                    self.chunk_size,
                    overflow.as_deref(),
                    slot,
                );
            }
        }
        let clear: Vec<(u64, Option<Slot>)> = freed.iter().map(|&(c, _)| (c, None)).collect();
        self.map.set(&clear)?;
        if durable {
            self.map.sync()?;
        }
        let mut overflow_slots = Vec::new();
        for &(_, slot) in freed {
            match slot {
                Slot::Shadow(n) => self.pool().give(n),
                Slot::Overflow(n) => overflow_slots.push(n),
            }
        }
        if let Some(o) = overflow {
            o.give(&self.set, &overflow_slots);
        }
        Ok(())
    }

    /// Copy `[offset, offset+len)` of `src` (the master) into the slots of its chunks, in
    /// kernel where possible (every chunk has its slot: `reserve` came first).
    pub fn copy_in(
        &self,
        src: &dyn Volume,
        offset: u64,
        len: u64,
        access: Access,
    ) -> Result<(), (CopyEnd, io::Error)> {
        if access == Access::Sequential {
            src.will_need(offset, len);
        }
        let mut failed = None;
        let overflow = self.overflow();
        self.each_piece(offset, len, |vol, slot_off, at, n| {
            copy_between(
                src,
                offset + at as u64,
                vol,
                slot_off,
                n as u64,
                Access::Random,
            )
            .map_err(|(end, e)| {
                let kind = e.kind();
                let e = match (&end, &overflow) {
                    (CopyEnd::Target, Some(o)) if std::ptr::addr_eq(vol, o.vol.as_ref()) => {
                        overflow_error(o, e)
                    }
                    _ => e,
                };
                failed = Some((end, e));
                io::Error::from(kind)
            })
        })
        .map_err(|e| failed.unwrap_or((CopyEnd::Target, e)))
    }

    /// Run `io(volume, offset, piece start, piece length)` for each chunk piece of
    /// `[offset, offset+len)`, on the slot that holds it.
    /// Pieces whose slots lie one after the other on one volume (slots are handed out in
    /// order, so a sequential writer's chunks do) go to `io` as one.
    fn each_piece(
        &self,
        offset: u64,
        len: u64,
        mut io: impl FnMut(&dyn Volume, u64, usize, usize) -> io::Result<()>,
    ) -> io::Result<()> {
        let overflow = self.overflow();
        // A failure of the overflow volume names it: the set's errors name the shadow.
        let mut io = |v: &dyn Volume, t: u64, a: usize, m: usize| {
            io(v, t, a, m).map_err(|e| match &overflow {
                Some(o) if std::ptr::addr_eq(v, o.vol.as_ref()) => overflow_error(o, e),
                _ => e,
            })
        };
        // The run not yet given to `io`: volume, its offset there, start in the request, length.
        let mut run: Option<(&dyn Volume, u64, usize, usize)> = None;
        let mut at = 0u64;
        while at < len {
            let off = offset + at;
            let c = off / self.chunk_size;
            let within = off % self.chunk_size;
            let n = (self.chunk_size - within).min(len - at);
            let (vol, base): (&dyn Volume, u64) = match (self.map.get(c), &overflow) {
                (Some(Slot::Shadow(s)), _) => (self.file.as_ref(), s * self.chunk_size),
                (Some(Slot::Overflow(s)), Some(o)) => (o.vol.as_ref(), s * o.chunk_size),
                _ => {
                    return Err(io::Error::other(format!(
                        "chunk {c} of the compact shadow has no slot"
                    )))
                }
            };
            let target = base + within;
            run = match run {
                Some((v, t, a, m)) if std::ptr::addr_eq(v, vol) && t + m as u64 == target => {
                    Some((v, t, a, m + n as usize))
                }
                Some((v, t, a, m)) => {
                    io(v, t, a, m)?;
                    Some((vol, target, at as usize, n as usize))
                }
                None => Some((vol, target, at as usize, n as usize)),
            };
            at += n;
        }
        match run {
            Some((v, t, a, m)) => io(v, t, a, m),
            None => Ok(()),
        }
    }
}

/// An error of overflow volume `o`, naming it (its errno kept in the kind).
fn overflow_error(o: &Overflow, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("overflow {} ({}): {e}", o.name, o.path))
}

/// Give slot `slot`'s space back to its file system: a shadow slot of `file` (`chunk_size`
/// bytes each) or a slot of `overflow` (none attached: nothing to give back). Best effort: a
/// file system that cannot punch keeps the space, nothing else changes.
fn punch_slot(file: &dyn Volume, chunk_size: u64, overflow: Option<&Overflow>, slot: Slot) {
    let _ = match (slot, overflow) {
        (Slot::Shadow(n), _) => file.punch_hole(n * chunk_size, chunk_size),
        (Slot::Overflow(n), Some(o)) => o.vol.punch_hole(n * o.chunk_size, o.chunk_size),
        (Slot::Overflow(_), None) => Ok(()),
    };
}

impl Volume for Compact {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let len = buf.len() as u64;
        self.each_piece(offset, len, |vol, off, at, n| {
            vol.read_at(&mut buf[at..at + n], off)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.each_piece(offset, buf.len() as u64, |vol, off, at, n| {
            vol.write_at(&buf[at..at + n], off)
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync()?;
        match self.overflow() {
            Some(o) => o.vol.sync().map_err(|e| overflow_error(&o, e)),
            None => Ok(()),
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.each_piece(offset, len, |vol, off, _, n| vol.punch_hole(off, n as u64))
    }

    fn check_not_shrunk(&self) -> io::Result<()> {
        self.file.check_not_shrunk()
    }

    fn id(&self) -> VolumeId {
        self.file.id()
    }
}
