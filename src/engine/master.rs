//! A master volume and the sets that image it. Every change to the master's bytes, whether a
//! user write through any set's `master` file or an update copying a shadow back, goes through
//! `Master::change`, which first lets every set on this master preserve what it needs. The
//! master is the only writer of master bytes: user writes and discards here, and the copies of
//! a shadow back onto it (`Master::copy_in`), which the sets ask for.
//!
//! The master knows its sets only as `Imager`s (implemented by `set::Set`): the set module
//! builds on this one, never the other way round.

use std::io;
use std::sync::{Arc, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::ahead::{Streams, AHEAD_REGIONS};
use super::chunk::{check_range, region_spans, REGION_SHIFT};
use super::error::{Error, Result, Role};
use super::hold::{Hold, InFlight};
use super::stripe::Stripes;
use super::tracking::Map;
use super::volume::{copy_range_ends, Access, CopyEnd, Volume};

/// The data moves and bit changes one I/O needs, planned under the stripe lock and applied in
/// the order that keeps the point in time safe: data, then (durable) bits, then publication.
#[derive(Default)]
pub struct Work {
    pub(crate) to_shadow: Vec<u64>,
    pub(crate) to_master: Vec<u64>,
    pub(crate) bits: Vec<(Map, u64, bool)>,
}

impl Work {
    /// Add `more`, whose chunks all come after this work's.
    fn append(&mut self, mut more: Work) {
        self.to_shadow.append(&mut more.to_shadow);
        self.to_master.append(&mut more.to_master);
        self.bits.append(&mut more.bits);
    }

    pub fn is_empty(&self) -> bool {
        self.to_shadow.is_empty() && self.to_master.is_empty() && self.bits.is_empty()
    }
}

/// What the master asks of each set imaging it before its bytes change, and on its reads.
pub trait Imager: Send + Sync {
    fn name(&self) -> &str;
    /// The set's gate, for reading: held across one I/O.
    fn gate_read(&self) -> RwLockReadGuard<'_, ()>;
    /// The set's gate, for writing: no I/O of the set is in flight while it is held.
    fn gate_write(&self) -> RwLockWriteGuard<'_, ()>;
    fn is_copying_to_master(&self) -> bool;
    /// The set is suspended: its point in time is parked, so its master must not change.
    fn is_suspended(&self) -> bool;
    fn master_offline(&self) -> bool;
    fn last_error(&self) -> Option<String>;
    fn go_offline(&self, err: &Error);
    /// True when a change of master bytes `[offset, offset+len)` needs nothing from this set.
    fn needs_nothing_before_change(&self, offset: u64, len: u64) -> bool;
    /// Whether what the set does before a change waits for a flush (strict durability).
    fn flushes_before_change(&self) -> bool;
    /// Before the master is flushed: make durable what the master's new bytes rely on in this
    /// set that is not durable yet (under relaxed durability, its preserved chunks and bits).
    fn sync_ahead_of_master(&self) -> Result<()>;
    /// The span of the chunks the set would push onto the master before that change.
    fn push_span(&self, offset: u64, len: u64) -> Option<(u64, u64)>;
    /// (preserve, push): what the set must do before master bytes `[offset, offset+len)` change.
    fn plan_master_change(&self, offset: u64, len: u64) -> (Work, Work);
    /// What the set would preserve of the whole chunks within `[offset, offset+len)` ahead of
    /// a sequential writer (nothing when it preserves nothing there, or copies or is compact).
    fn plan_preserve_ahead(&self, offset: u64, len: u64) -> Work;
    fn apply(&self, work: Work) -> Result<()>;
    /// A master read while this set copies its shadow onto the master.
    fn read_master_through(&self, master: &Master, buf: &mut [u8], offset: u64) -> Result<()>;
}

pub struct Master {
    pub vol: Arc<dyn Volume>,
    pub path: String,
    stripes: Stripes,
    /// Replaced whole on attach/detach (rare), so the I/O path takes one reference count.
    sets: RwLock<Arc<Vec<Arc<dyn Imager>>>>,
    /// Holds the writes through the mount for one instant across masters (`hold`).
    pub hold: Hold,
    /// Where sequential writers are expected next (see `ahead`).
    streams: Streams,
}

impl Master {
    pub fn new(vol: Arc<dyn Volume>, path: String) -> Master {
        Master {
            vol,
            path,
            stripes: Stripes::default(),
            sets: RwLock::new(Arc::new(Vec::new())),
            hold: Hold::default(),
            streams: Streams::default(),
        }
    }

    pub fn len(&self) -> u64 {
        self.vol.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vol.len() == 0
    }

    pub fn sets(&self) -> Arc<Vec<Arc<dyn Imager>>> {
        match self.sets.read() {
            Ok(s) => Arc::clone(&s),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn replace_sets(&self, change: impl FnOnce(&mut Vec<Arc<dyn Imager>>)) -> usize {
        let mut guard = match self.sets.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let mut next = guard.as_ref().clone();
        change(&mut next);
        let n = next.len();
        *guard = Arc::new(next);
        n
    }

    pub fn attach(&self, set: Arc<dyn Imager>) {
        self.replace_sets(|sets| sets.push(set));
    }

    pub fn detach_all(&self) {
        self.replace_sets(Vec::clear);
    }

    /// Remove a set; returns how many sets still use this master.
    pub fn detach(&self, name: &str) -> usize {
        self.replace_sets(|sets| sets.retain(|s| s.name() != name))
    }

    /// The set (other than `except`) whose shadow is being copied onto this master, if any.
    pub fn copying_to_master(&self, except: Option<&str>) -> Option<String> {
        self.sets()
            .iter()
            .find(|s| Some(s.name()) != except && s.is_copying_to_master())
            .map(|s| s.name().to_string())
    }

    pub fn lock_region(&self, offset: u64) -> MutexGuard<'_, ()> {
        self.stripes.lock(offset)
    }

    /// Copy bytes `[off, off+len)` of `from` (a shadow) onto the master. The caller holds the
    /// region's stripe lock and has let the other sets preserve what they need
    /// (`prepare_change`).
    pub fn copy_in(
        &self,
        from: &dyn Volume,
        off: u64,
        len: u64,
        access: Access,
    ) -> std::result::Result<(), (CopyEnd, io::Error)> {
        copy_range_ends(from, self.vol.as_ref(), off, len, access)
    }

    /// A user write to the master.
    pub fn write(&self, data: &[u8], offset: u64) -> Result<()> {
        check_range(offset, data.len() as u64, self.len(), &self.path)?;
        let in_flight = self.hold.enter();
        self.write_entered(data, offset, in_flight)
    }

    /// `write`, unless a hold is in force (None: the caller, which must not wait here, waits
    /// elsewhere with `write`).
    pub fn try_write(&self, data: &[u8], offset: u64) -> Option<Result<()>> {
        if let Err(e) = check_range(offset, data.len() as u64, self.len(), &self.path) {
            return Some(Err(e));
        }
        let in_flight = self.hold.try_enter()?;
        Some(self.write_entered(data, offset, in_flight))
    }

    /// A write that passed the hold (`_in_flight` counts it until it ends).
    fn write_entered(&self, data: &[u8], offset: u64, _in_flight: InFlight<'_>) -> Result<()> {
        self.with_sets(|sets| {
            self.check_not_parked(sets)?;
            let change = Change {
                offset,
                len: data.len() as u64,
                what: "write to",
                ahead: true,
            };
            self.change(sets, change, |off, at, n| {
                self.vol.write_at(&data[at..at + n], off)
            })
        })
    }

    /// Whether a change of bytes `[offset, offset+len)` would first have to preserve or copy
    /// something (and so wait for the disk) rather than only write: a hint, read without the
    /// gates, for the caller to decide where to run the change; the change decides again.
    pub fn change_waits_for_disk(&self, offset: u64, len: u64) -> bool {
        let sets = self.sets();
        region_spans(offset, len).any(|(off, _, n)| {
            sets.iter()
                .any(|s| s.flushes_before_change() && !s.needs_nothing_before_change(off, n as u64))
        })
    }

    /// fsync of the master: first what every set on it has preserved and not yet made durable
    /// (the master's new bytes must not outlive, in a power cut, the old ones they replaced),
    /// then the master itself. A set that cannot make its part durable goes offline, as when
    /// it cannot preserve: the master's own flush still runs.
    pub fn sync(&self) -> Result<()> {
        for set in self.sets().iter() {
            if let Err(e) = set.sync_ahead_of_master() {
                set.go_offline(&e);
            }
        }
        self.vol
            .sync()
            .map_err(|e| Error::io_on(Role::Master, format!("sync of master {}", self.path), &e))
    }

    /// A user discard (punch hole) on the master: to the point in time, a write of zeros; the
    /// backing file gives the space back where it can.
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.len(), &self.path)?;
        let _in_flight = self.hold.enter();
        self.with_sets(|sets| {
            self.check_not_parked(sets)?;
            let change = Change {
                offset,
                len,
                what: "discard on",
                ahead: false,
            };
            self.change(sets, change, |off, _, n| self.vol.punch_hole(off, n as u64))
        })
    }

    /// Refuse a change of the master while a set on it is suspended: the suspended set does
    /// not preserve its point in time, so a change would break it silently.
    fn check_not_parked(&self, sets: &[Arc<dyn Imager>]) -> Result<()> {
        match sets.iter().find(|s| s.is_suspended()) {
            None => Ok(()),
            Some(s) => Err(Error::new(
                super::error::Kind::Io,
                format!(
                    "master {} does not take writes while set {} on it is suspended (its point \
                     in time would break); resume it first",
                    self.path,
                    s.name()
                ),
            )),
        }
    }

    /// Change master bytes `[offset, offset+len)` region by region with `apply(offset, index
    /// into the request, length)`, once every set has preserved what it needs.
    fn change(
        &self,
        sets: &[Arc<dyn Imager>],
        change: Change,
        apply: impl Fn(u64, usize, usize) -> std::io::Result<()>,
    ) -> Result<()> {
        let Change {
            offset,
            len,
            what,
            ahead,
        } = change;
        for (off, at, n) in region_spans(offset, len) {
            // Fast path: every set has this range preserved and no copy runs that could need
            // it; the bits were published only once durable, so no lock is needed.
            if sets
                .iter()
                .all(|s| s.needs_nothing_before_change(off, n as u64))
            {
                apply(off, at, n).map_err(|e| self.failed(what, sets, &e))?;
                continue;
            }
            let _stripe = self.lock_region(off);
            let end = off + n as u64;
            let sequential = ahead && end == offset + len && self.streams.continues(off);
            let ahead = match sequential {
                true => self.lock_ahead(sets, end),
                false => None,
            };
            let ahead_span = ahead.as_ref().map(|(_, to)| (end, *to));
            self.prepare(sets, (off, n as u64), None, ahead_span);
            self.streams.expect(ahead_span.map_or(end, |(_, to)| to));
            drop(ahead);
            apply(off, at, n).map_err(|e| self.failed(what, sets, &e))?;
        }
        Ok(())
    }

    /// The locks of the regions after byte `end` (the rest of its own region is locked by the
    /// caller) that a sequential writer's chunks may be preserved in ahead of it, and where that
    /// span ends: as many regions as are free now, up to `AHEAD_REGIONS`. None when there is
    /// nothing to gain or a set is updating the master (its pushes are the copier's to make).
    fn lock_ahead(
        &self,
        sets: &[Arc<dyn Imager>],
        end: u64,
    ) -> Option<(Vec<MutexGuard<'_, ()>>, u64)> {
        if end >= self.len() || sets.iter().any(|s| s.is_copying_to_master()) {
            return None;
        }
        let region = 1u64 << REGION_SHIFT;
        // `end` inside a region: its rest is under the caller's lock; at a region boundary
        // the next region is the first to lock.
        let mut to = end.div_ceil(region) * region;
        let mut guards = Vec::new();
        while guards.len() < AHEAD_REGIONS as usize && to < self.len() {
            match self.stripes.try_lock(to) {
                Some(g) => guards.push(g),
                None => break,
            }
            to += region;
        }
        let to = to.min(self.len());
        (to > end).then_some((guards, to))
    }

    /// A user read of the master: chunks still waiting for an update from a shadow are read there.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let sets = self.sets();
        // At most one set has a copy onto this master recorded (a second one is refused). If
        // it went offline, the chunks that copy had not finished read as errors, not as the
        // old master (see `Set::read_master_through`).
        let restoring = sets.iter().find(|s| s.is_copying_to_master());
        let result = match restoring {
            Some(set) => set.read_master_through(self, buf, offset),
            None => self.vol.read_at(buf, offset).map_err(|e| {
                Error::io_on(Role::Master, format!("read of master {}", self.path), &e)
            }),
        };
        result.inspect_err(|e| {
            // A volume that fails a read (or shrank under the sets) takes offline the sets
            // that rely on it: all of them for the master, the restoring set for its shadow.
            match e.volume {
                Some(Role::Master) => sets.iter().for_each(|s| s.go_offline(e)),
                Some(_) => restoring.iter().for_each(|s| s.go_offline(e)),
                None => {}
            }
        })
    }

    /// Before bytes `[offset, offset+len)` of the master change: every set (except `writer`, the
    /// set whose own update writes them) preserves old chunks and marks them as differing. The
    /// caller holds the region's stripe lock and the sets' gates. A set that fails here goes
    /// offline; the master write itself proceeds (a production volume keeps working).
    pub fn prepare_change(
        &self,
        sets: &[Arc<dyn Imager>],
        offset: u64,
        len: u64,
        writer: Option<&dyn Imager>,
    ) {
        self.prepare(sets, (offset, len), writer, None)
    }

    /// `prepare_change` of `(offset, len)`, and with it, when `ahead` is `(from, to)`, the
    /// chunks wholly within `[from, to)` that a sequential writer will reach next (the caller
    /// holds their stripe locks too): one round of copies and flushes for both.
    fn prepare(
        &self,
        sets: &[Arc<dyn Imager>],
        (offset, len): (u64, u64),
        writer: Option<&dyn Imager>,
        ahead: Option<(u64, u64)>,
    ) {
        // A set updating the master pushes whole chunks of its own shadow first; with a larger
        // chunk than a sibling's, that overwrites more than the write: preserve all of it.
        let (offset, len) = sets
            .iter()
            .filter(|s| !is_writer(writer, s.as_ref()))
            .filter_map(|s| s.push_span(offset, len))
            .fold((offset, len), |(o, l), (po, pl)| {
                let start = o.min(po);
                (start, (o + l).max(po + pl) - start)
            });
        let mut preserve: Vec<(&Arc<dyn Imager>, Work)> = Vec::new();
        let mut push: Vec<(&Arc<dyn Imager>, Work)> = Vec::new();
        for set in sets {
            if is_writer(writer, set.as_ref()) {
                continue;
            }
            let (mut p, q) = set.plan_master_change(offset, len);
            if let Some((from, to)) = ahead {
                // Chunks after the write's own: the copies stay in ascending order.
                p.append(set.plan_preserve_ahead(from, to - from));
            }
            preserve.push((set, p));
            push.push((set, q));
        }
        // Old master data goes to every shadow before any shadow is copied onto the master.
        for (set, work) in preserve.into_iter().chain(push) {
            if !work.is_empty() {
                if let Err(e) = set.apply(work) {
                    set.go_offline(&e);
                }
            }
        }
    }

    fn failed(&self, what: &str, sets: &[Arc<dyn Imager>], err: &std::io::Error) -> Error {
        let e = Error::io_on(
            Role::Master,
            format!("{what} the master {}", self.path),
            err,
        );
        for s in sets {
            s.go_offline(&e);
        }
        e
    }
}

/// Take every set's gate for reading: bulk bitmap changes (update, copy start) wait for
/// in-flight I/O and hold new I/O back while they switch the point in time.
fn gates(sets: &[Arc<dyn Imager>]) -> Vec<RwLockReadGuard<'_, ()>> {
    sets.iter().map(|s| s.gate_read()).collect()
}

impl Master {
    /// Run `f` with the sets of this master and all their gates held for reading. Enable and
    /// disable change the list while holding the gates of the sets concerned for writing, so a
    /// list that is still current once the gates are held stays current until they are
    /// released; a stale one (a set came or went meanwhile) is dropped and taken again.
    pub fn with_sets<T>(&self, f: impl FnOnce(&[Arc<dyn Imager>]) -> T) -> T {
        loop {
            let sets = self.sets();
            let guards = gates(&sets);
            if Arc::ptr_eq(&sets, &self.sets()) {
                let result = f(&sets);
                drop(guards);
                return result;
            }
        }
    }

    /// Attach a new set while every set already here holds its gate for writing: no master
    /// write is in flight, and none that started with the old list can finish after the new
    /// set is visible. `before` runs under those gates (the new point in time is taken there).
    /// The set is attached only if `before` succeeds.
    pub fn attach_exclusive(
        &self,
        set: Arc<dyn Imager>,
        before: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let sets = self.sets();
        let _guards: Vec<_> = sets.iter().map(|s| s.gate_write()).collect();
        before()?;
        self.attach(set);
        Ok(())
    }
}

/// One change of master bytes, for `Master::change`: where, what it is (for errors), and
/// whether a sequential writer's next chunks may be preserved with it.
struct Change {
    offset: u64,
    len: u64,
    what: &'static str,
    ahead: bool,
}

/// Whether `set` is the set `writer` (compared by address).
fn is_writer(writer: Option<&dyn Imager>, set: &dyn Imager) -> bool {
    writer.is_some_and(|w| std::ptr::addr_eq(w, set))
}
