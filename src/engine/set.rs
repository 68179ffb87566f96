//! An imaging set: master + shadow + bitmap volume. The read and write paths of its shadow,
//! the copy-on-write planning for changes of its master, and its commands.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use super::commit::GroupCommit;
use super::error::{busy, invalid, not_permitted, Error, Result, Role};
use super::header::{flags, Durability, Header, SetKind};
use super::master::{check_range, region_spans, Master};
use super::tracking::{Map, Tracking};
use super::volume::{copy_range_ends, Access, CopyEnd, Volume};

/// Which way a copy or update moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// master -> shadow
    Shadow,
    /// shadow -> master
    Master,
}

impl Direction {
    pub fn word(self) -> &'static str {
        match self {
            Direction::Shadow => "shadow",
            Direction::Master => "master",
        }
    }
}

/// Marks a full copy (as opposed to an update) in the header, for the status `state`; defined
/// with the other state flags.
pub use super::header::flags::FULL_COPY;

/// Copy-on-write runs from this size on read their source with readahead.
const SWEEP_BYTES: u64 = 256 << 10;

pub const MAX_DELAY_MS: u32 = 10_000;
pub const MAX_UNITS: u32 = 60_000;
pub const DEFAULT_UNITS: u32 = 100;

/// The data moves and bit changes one I/O needs, planned under the stripe lock and applied in
/// the order that keeps the point in time safe: data, then (durable) bits, then publication.
#[derive(Default)]
pub struct Work {
    to_shadow: Vec<u64>,
    to_master: Vec<u64>,
    bits: Vec<(Map, u64, bool)>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.to_shadow.is_empty() && self.to_master.is_empty() && self.bits.is_empty()
    }
}

/// Live copy bookkeeping, outside the header.
#[derive(Default)]
struct CopyState {
    thread: Option<JoinHandle<()>>,
    /// Chunks to copy when the current copy started (for progress).
    total: u64,
}

/// Volume paths of a set, as given at enable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub master: String,
    pub shadow: String,
    pub bitmap: String,
}

pub struct Set {
    pub name: String,
    pub kind: SetKind,
    pub chunk_size: u64,
    pub size: u64,
    pub chunks: u64,
    pub paths: Paths,
    pub durability: Durability,
    pub master: Arc<Master>,
    pub shadow: Arc<dyn Volume>,
    pub tracking: Tracking,
    /// Mirror of the header's state flags, read lock-free by the I/O paths.
    flags: AtomicU32,
    gate: RwLock<()>,
    shadow_commit: GroupCommit,
    master_commit: GroupCommit,
    bitmap_commit: GroupCommit,
    copy: Mutex<CopyState>,
    copy_done: Condvar,
    pub(super) abort: AtomicBool,
    /// The daemon is stopping: the copier exits and leaves the copy recorded as active.
    pub(super) shutting_down: AtomicBool,
    pub(super) abort_wake: (Mutex<()>, Condvar),
    /// Throttle as `delay_ms << 32 | units`.
    throttle: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Open `master` and `shadow` files of this set (loop devices, mounts, processes), counted
    /// per file: a set in use is not disabled under them, and a copy is not started onto a
    /// file that is open (`update shadow` under a mounted shadow).
    open_files: [AtomicUsize; 2],
    /// The set was disabled: files still open on it are no longer served.
    detached: AtomicBool,
    /// Told when the set went offline and its bitmap volume could not record it.
    pub(super) unrecorded_offline: Option<Arc<super::OfflineNotifier>>,
}

/// A snapshot of a set for the status file.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub kind: SetKind,
    pub state: &'static str,
    pub direction: &'static str,
    pub progress: u64,
    pub paths: Paths,
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: u64,
    pub chunks_differ: u64,
    pub chunks_to_copy: u64,
    pub delay_ms: u32,
    pub units: u32,
    pub durability: Durability,
    pub last_error: Option<String>,
    pub pit_time: u64,
}

/// The state flag recording a copy in direction `dir`.
fn direction_flag(dir: Direction) -> u32 {
    match dir {
        Direction::Shadow => flags::TO_SHADOW,
        Direction::Master => flags::TO_MASTER,
    }
}

/// The copy direction recorded in a set of state flags.
fn direction_of(f: u32) -> Option<Direction> {
    if f & flags::TO_SHADOW != 0 {
        Some(Direction::Shadow)
    } else if f & flags::TO_MASTER != 0 {
        Some(Direction::Master)
    } else {
        None
    }
}

pub fn check_params(delay_ms: u32, units: u32) -> Result<()> {
    if delay_ms > MAX_DELAY_MS || units == 0 || units > MAX_UNITS {
        return Err(invalid(format!(
            "the copy throttle takes DELAY in milliseconds (0..{MAX_DELAY_MS}) and UNITS in chunks (1..{MAX_UNITS})"
        )));
    }
    Ok(())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Set {
    pub fn new(master: Arc<Master>, shadow: Arc<dyn Volume>, tracking: Tracking) -> Set {
        let h = tracking.header();
        let units = if h.throttle_units == 0 {
            DEFAULT_UNITS
        } else {
            h.throttle_units
        };
        let chunks = h.chunks();
        Set {
            name: h.name.clone(),
            kind: h.kind,
            chunk_size: h.chunk_size as u64,
            size: h.master_size,
            chunks,
            paths: Paths {
                master: h.master.clone(),
                shadow: h.shadow.clone(),
                bitmap: h.bitmap.clone(),
            },
            durability: h.durability,
            master,
            shadow,
            flags: AtomicU32::new(h.flags),
            gate: RwLock::new(()),
            shadow_commit: GroupCommit::default(),
            master_commit: GroupCommit::default(),
            bitmap_commit: GroupCommit::default(),
            copy: Mutex::new(CopyState {
                thread: None,
                total: tracking.copy_total(),
            }),
            copy_done: Condvar::new(),
            abort: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            abort_wake: (Mutex::new(()), Condvar::new()),
            throttle: AtomicU64::new(((h.throttle_delay_ms as u64) << 32) | units as u64),
            // The header keeps the reason; a set taken offline by an older iifs has none.
            last_error: Mutex::new((h.flags & flags::OFFLINE != 0).then(|| {
                if h.last_error.is_empty() {
                    "the set was already offline when the daemon started (the reason is in the \
                     log of the daemon before); fix the volume, then reset the set"
                        .to_string()
                } else {
                    h.last_error.clone()
                }
            })),
            open_files: [AtomicUsize::new(0), AtomicUsize::new(0)],
            detached: AtomicBool::new(false),
            unrecorded_offline: None,
            tracking,
        }
    }

    fn open_counter(&self, role: Role) -> &AtomicUsize {
        match role {
            Role::Master => &self.open_files[0],
            // The bitmap file is read-only and never counted.
            Role::Shadow | Role::Bitmap => &self.open_files[1],
        }
    }

    /// This set's `master` (Role::Master) or `shadow` (Role::Shadow) file was opened.
    pub fn file_opened(&self, role: Role) {
        self.open_counter(role).fetch_add(1, Ordering::SeqCst);
    }

    /// This set's `master` or `shadow` file was released.
    pub fn file_closed(&self, role: Role) {
        let _ = self
            .open_counter(role)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// How many `master` and `shadow` files of this set are open.
    pub fn open_files(&self) -> usize {
        self.open_files_of(Role::Master) + self.open_files_of(Role::Shadow)
    }

    /// How many of this set's `master` (or `shadow`) files are open.
    pub fn open_files_of(&self, role: Role) -> usize {
        self.open_counter(role).load(Ordering::SeqCst)
    }

    /// Wait up to `within` for this set's open files to be released. The kernel sends the
    /// release of a closed file asynchronously: a script's `dd` that just ended may not be
    /// released yet when its `disable` arrives.
    pub fn wait_files_closed(&self, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.open_files() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub(super) fn mark_detached(&self) {
        self.detached.store(true, Ordering::SeqCst);
    }

    /// The set was disabled (or taken back): its files are no longer served.
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::SeqCst)
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::SeqCst)
    }

    fn has(&self, flag: u32) -> bool {
        self.flags() & flag != 0
    }

    pub fn is_offline(&self) -> bool {
        self.has(flags::OFFLINE)
    }

    pub fn is_dependent(&self) -> bool {
        self.kind == SetKind::Dependent
    }

    pub fn is_copying_to_master(&self) -> bool {
        self.has(flags::TO_MASTER)
    }

    pub fn copy_active(&self) -> bool {
        self.has(flags::ACTIVE)
    }

    pub fn direction(&self) -> Option<Direction> {
        direction_of(self.flags())
    }

    pub(super) fn gate_read(&self) -> RwLockReadGuard<'_, ()> {
        match self.gate.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(super) fn gate_write(&self) -> RwLockWriteGuard<'_, ()> {
        match self.gate.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn throttle(&self) -> (u32, u32) {
        let t = self.throttle.load(Ordering::Relaxed);
        ((t >> 32) as u32, t as u32)
    }

    pub fn last_error(&self) -> Option<String> {
        match self.last_error.lock() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn chunk_span(&self, chunk: u64) -> (u64, u64) {
        let off = chunk * self.chunk_size;
        (off, self.chunk_size.min(self.size.saturating_sub(off)))
    }

    fn chunks_of(&self, offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
        let first = offset / self.chunk_size;
        let last = (offset + len.max(1) - 1) / self.chunk_size;
        first..=last.min(self.chunks.saturating_sub(1))
    }

    fn strict(&self) -> bool {
        self.durability == Durability::Strict
    }

    /// A failed write or sync of the bitmap volume.
    fn bitmap_error(&self, what: &str, e: &std::io::Error) -> Error {
        Error::io_on(
            Role::Bitmap,
            format!("{what} of bitmap {}", self.paths.bitmap),
            e,
        )
    }

    /// Which volumes a failure leaves untrustworthy (REFERENCE-II 7.3): the one that failed,
    /// and those a copy in progress or a dependent shadow's reliance on the master implies. An
    /// error of no known volume implicates only what the copy in progress was writing.
    fn offline_flags(&self, failed: Option<Role>) -> u32 {
        let f = self.flags();
        let to_shadow = f & flags::TO_SHADOW != 0;
        let to_master = f & flags::TO_MASTER != 0;
        let dep = self.is_dependent();
        let mut off = flags::OFFLINE;
        match failed {
            Some(Role::Master) => {
                off |= flags::OFFLINE_MASTER;
                if to_shadow || dep {
                    off |= flags::OFFLINE_SHADOW;
                }
            }
            Some(Role::Shadow) => {
                off |= flags::OFFLINE_SHADOW;
                if to_master {
                    off |= flags::OFFLINE_MASTER;
                }
            }
            Some(Role::Bitmap) | None => {
                if failed.is_some() {
                    off |= flags::OFFLINE_BITMAP;
                }
                if to_shadow || (dep && !to_master) {
                    off |= flags::OFFLINE_SHADOW;
                }
                if to_master {
                    off |= flags::OFFLINE_MASTER;
                    if dep {
                        off |= flags::OFFLINE_SHADOW;
                    }
                }
            }
        }
        off
    }

    /// Take the set offline: its shadow can no longer be trusted; the reason is kept, and which
    /// volumes failed, for `reset`.
    pub fn go_offline(&self, err: &Error) {
        log::error!("set {}: offline: {}", self.name, err.message);
        let off = self.offline_flags(err.volume);
        self.flags.fetch_or(off, Ordering::SeqCst);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(err.message.clone());
        }
        // The bitmap volume may be what failed. The header in memory keeps the offline state
        // anyway (every later header write carries it), and the registry is asked to record it
        // meanwhile, so a restart does not bring the set back online.
        if let Err(e) = self.tracking.mark_offline(off, &err.message) {
            log::error!(
                "set {}: the offline state could not be written to bitmap {}: {e}",
                self.name,
                self.paths.bitmap
            );
            if let Some(n) = &self.unrecorded_offline {
                n.notify();
            }
        }
        // Under the lock `wait_copy` checks the state with, so its wake-up cannot be missed.
        let _guard = self.copy.lock();
        self.copy_done.notify_all();
    }

    fn offline_error(&self) -> Error {
        Error::new(
            super::error::Kind::Io,
            format!(
                "set {} is offline ({}); fix the volume, then reset the set",
                self.name,
                self.last_error()
                    .unwrap_or_else(|| "a volume failed".into())
            ),
        )
    }

    /// Whether this offline set's shadow is still a sound, complete image: an independent
    /// shadow that neither failed nor was half way through a copy to it, of a set that knows
    /// which volume failed (the master or the bitmap). Only the failed volume is then offline:
    /// the shadow goes on being read, and `reset` keeps it as it is.
    fn shadow_sound(&self) -> bool {
        let f = self.flags();
        let roles = flags::OFFLINE_MASTER | flags::OFFLINE_SHADOW | flags::OFFLINE_BITMAP;
        !self.is_dependent()
            && f & roles != 0
            && f & flags::OFFLINE_SHADOW == 0
            && f & flags::TO_SHADOW == 0
    }

    /// Whether the shadow may be written while the set is offline: it is sound, its writes
    /// need neither the master (no copy to the master recorded, whose chunks a shadow write
    /// pushes there first) nor a bitmap that failed (they record the chunk as differing).
    fn shadow_writable_offline(&self) -> bool {
        self.shadow_sound() && self.flags() & (flags::TO_MASTER | flags::OFFLINE_BITMAP) == 0
    }

    /// Whether the set is offline with its master recorded as failed or untrustworthy.
    pub fn master_offline(&self) -> bool {
        self.is_offline() && self.has(flags::OFFLINE_MASTER)
    }

    /// Refuse (EBUSY) to let the set go while a copy of its shadow onto the master is
    /// recorded, running or aborted: until it finishes, the master's chunks it has not reached
    /// read from the shadow (or, once the set is offline, fail), and without the set they would
    /// silently read as the old master again.
    pub fn check_restore_settled(&self) -> Result<()> {
        if !self.is_copying_to_master() {
            return Ok(());
        }
        let left = self.tracking.count(Map::Copy);
        if !self.is_offline() {
            let finish = if self.copy_active() {
                "wait for it to end ('wait')"
            } else {
                "it was aborted: finish it with 'update master' (then 'wait')"
            };
            return Err(busy(format!(
                "set {} has an unfinished copy of its shadow onto master {} ({left} chunks to \
                 go): until it ends, those chunks of the master read from the shadow, and \
                 without the set they would read as the old master again; {finish}, then \
                 disable",
                self.name, self.paths.master
            )));
        }
        // A bitmap that failed cannot record a reset either: disable is then the only way out.
        if self.has(flags::OFFLINE_BITMAP) {
            return Ok(());
        }
        Err(busy(format!(
            "set {} went offline during a copy of its shadow onto master {}: {left} chunks of \
             the master were not restored and read as errors; {}, then disable",
            self.name,
            self.paths.master,
            self.unsettled_advice()
        )))
    }

    /// What settles the master chunks a copy onto the master left unrestored when the set
    /// went offline (for the errors that name them).
    fn unsettled_advice(&self) -> String {
        if self.shadow_sound() {
            format!(
                "reset set {} (the master keeps what it holds now), then 'copy master' restores \
                 the master whole from the shadow",
                self.name
            )
        } else {
            format!(
                "the shadow cannot be trusted any more: reset set {} to accept the master as \
                 it is (the set takes it as its new point in time)",
                self.name
            )
        }
    }

    // ---------------------------------------------------------------- planning and applying

    /// What this set must do before master bytes `[offset, offset+len)` change (REFERENCE-II 4.1):
    /// `preserve` copies old master chunks to the shadow and marks them; `push` copies the
    /// shadow onto the master first where an update of the master has not reached the chunk.
    pub fn plan_master_change(&self, offset: u64, len: u64) -> (Work, Work) {
        let mut preserve = Work::default();
        let mut push = Work::default();
        if self.is_offline() {
            return (preserve, push);
        }
        let f = self.flags();
        for c in self.chunks_of(offset, len) {
            let shd = self.tracking.test(Map::Shadow, c);
            let cpy = self.tracking.test(Map::Copy, c);
            if f & flags::TO_SHADOW != 0 && cpy {
                preserve.to_shadow.push(c);
                preserve.bits.push((Map::Copy, c, false));
            } else if f & flags::TO_MASTER != 0 && cpy {
                push.to_master.push(c);
                push.bits.push((Map::Copy, c, false));
                if !shd {
                    push.bits.push((Map::Shadow, c, true));
                }
                continue;
            } else if self.is_dependent() && !shd {
                preserve.to_shadow.push(c);
            }
            if !shd {
                preserve.bits.push((Map::Shadow, c, true));
            }
        }
        (preserve, push)
    }

    /// True when a change of master bytes `[offset, offset+len)` needs nothing from this set:
    /// no copy in either direction is recorded and every chunk is already marked.
    pub fn needs_nothing_before_change(&self, offset: u64, len: u64) -> bool {
        let f = self.flags();
        if f & flags::OFFLINE != 0 {
            return true;
        }
        f & (flags::TO_SHADOW | flags::TO_MASTER) == 0
            && self
                .chunks_of(offset, len)
                .all(|c| self.tracking.test(Map::Shadow, c))
    }

    /// The byte span of the chunks this set would push onto the master before bytes
    /// `[offset, offset+len)` change (chunks an update of the master has not reached yet).
    pub fn push_span(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        if !self.is_copying_to_master() || self.is_offline() {
            return None;
        }
        let pushed: Vec<u64> = self
            .chunks_of(offset, len)
            .filter(|&c| self.tracking.test(Map::Copy, c))
            .collect();
        let (first, last) = (*pushed.first()?, *pushed.last()?);
        let start = first * self.chunk_size;
        let (last_off, last_len) = self.chunk_span(last);
        Some((start, last_off + last_len - start))
    }

    /// Carry out planned work: move data, make it durable, persist the bits, make them durable,
    /// publish them. Only then may the caller change the data the bits protect.
    pub fn apply(&self, work: Work) -> Result<()> {
        let master = self.master.vol.as_ref();
        self.copy_chunks(
            &work.to_shadow,
            master,
            self.shadow.as_ref(),
            (&self.paths.shadow, Role::Shadow),
        )?;
        self.copy_chunks(
            &work.to_master,
            self.shadow.as_ref(),
            master,
            (&self.paths.master, Role::Master),
        )?;
        if self.strict() {
            if !work.to_shadow.is_empty() {
                self.shadow_commit
                    .commit(|| self.shadow.sync())
                    .map_err(|e| {
                        Error::io_on(Role::Shadow, format!("sync of {}", self.paths.shadow), &e)
                    })?;
            }
            if !work.to_master.is_empty() {
                self.master_commit
                    .commit(|| self.master.vol.sync())
                    .map_err(|e| {
                        Error::io_on(Role::Master, format!("sync of {}", self.paths.master), &e)
                    })?;
            }
        }
        if !work.bits.is_empty() {
            self.tracking
                .persist(&work.bits)
                .map_err(|e| self.bitmap_error("write", &e))?;
            if self.strict() {
                self.bitmap_commit
                    .commit(|| self.tracking.vol.sync())
                    .map_err(|e| self.bitmap_error("sync", &e))?;
            }
            self.tracking.publish(&work.bits);
        }
        Ok(())
    }

    /// Copy the given chunks (ascending) from `from` to `to`, each run of adjacent chunks as
    /// one extent.
    fn copy_chunks(
        &self,
        chunks: &[u64],
        from: &dyn Volume,
        to: &dyn Volume,
        (path, role): (&str, Role),
    ) -> Result<()> {
        let mut i = 0;
        while i < chunks.len() {
            let mut j = i + 1;
            while j < chunks.len() && chunks[j] == chunks[j - 1] + 1 {
                j += 1;
            }
            let off = chunks[i] * self.chunk_size;
            let (last_off, last_len) = self.chunk_span(chunks[j - 1]);
            let len = last_off + last_len - off;
            // A large write preserving many chunks at once is a sequential sweep: read ahead.
            let access = if len >= SWEEP_BYTES {
                Access::Sequential
            } else {
                Access::Random
            };
            copy_range_ends(from, to, off, len, access).map_err(|(end, e)| {
                let what = format!("copy of chunks {}..={} to {path}", chunks[i], chunks[j - 1]);
                self.copy_error(end, role, &what, &e)
            })?;
            i = j;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- shadow I/O

    pub fn write_shadow(&self, data: &[u8], offset: u64) -> Result<()> {
        self.change_shadow(offset, data.len() as u64, "write to", |off, at, n| {
            self.shadow.write_at(&data[at..at + n], off)
        })
    }

    /// A user discard (punch hole) on the shadow: a write of zeros to the image; the backing
    /// file gives the space back where it can.
    pub fn discard_shadow(&self, offset: u64, len: u64) -> Result<()> {
        self.change_shadow(offset, len, "discard on", |off, _, n| {
            self.shadow.punch_hole(off, n as u64)
        })
    }

    /// Change shadow bytes `[offset, offset+len)` with `apply(offset, index into the request,
    /// length)`, region by region, once the copy rules have moved what must move first.
    fn change_shadow(
        &self,
        offset: u64,
        len: u64,
        what: &str,
        apply: impl Fn(u64, usize, usize) -> std::io::Result<()>,
    ) -> Result<()> {
        check_range(
            offset,
            len,
            self.size,
            &format!("the shadow of set {}", self.name),
        )?;
        if self.is_offline() && !self.shadow_writable_offline() {
            return Err(self.offline_error());
        }
        self.master
            .with_sets(|sets| self.change_shadow_pieces(sets, offset, len, what, &apply))
    }

    fn change_shadow_pieces(
        &self,
        sets: &[Arc<Set>],
        offset: u64,
        len: u64,
        what: &str,
        apply: &dyn Fn(u64, usize, usize) -> std::io::Result<()>,
    ) -> Result<()> {
        for (off, at, n) in region_spans(offset, len) {
            let _stripe = self.master.lock_region(off);
            let f = self.flags();
            let mut own = Work::default();
            let mut push = Work::default();
            for c in self.chunks_of(off, n as u64) {
                let shd = self.tracking.test(Map::Shadow, c);
                let cpy = self.tracking.test(Map::Copy, c);
                if f & flags::TO_MASTER != 0 && cpy {
                    // The master has not received this chunk yet: push it before it changes.
                    push.to_master.push(c);
                    push.bits.push((Map::Copy, c, false));
                    if !shd {
                        push.bits.push((Map::Shadow, c, true));
                    }
                    continue;
                }
                if f & flags::TO_SHADOW != 0 && cpy {
                    own.to_shadow.push(c);
                    own.bits.push((Map::Copy, c, false));
                } else if self.is_dependent() && !shd {
                    own.to_shadow.push(c);
                }
                if !shd {
                    own.bits.push((Map::Shadow, c, true));
                }
            }
            if !push.is_empty() {
                for &c in &push.to_master {
                    let (o, l) = self.chunk_span(c);
                    self.master.prepare_change(sets, o, l, Some(self));
                }
                self.apply(push).map_err(|e| self.fail(e))?;
            }
            self.apply(own).map_err(|e| self.fail(e))?;
            apply(off, at, n).map_err(|e| {
                self.fail(Error::io_on(
                    Role::Shadow,
                    format!("{what} shadow {}", self.paths.shadow),
                    &e,
                ))
            })?;
        }
        Ok(())
    }

    fn fail(&self, e: Error) -> Error {
        self.go_offline(&e);
        e
    }

    /// Where the shadow's content of `chunk` lives right now: on the master or on the shadow.
    fn shadow_reads_master(&self, chunk: u64) -> bool {
        let f = self.flags();
        (f & flags::TO_SHADOW != 0 && self.tracking.test(Map::Copy, chunk))
            || (self.is_dependent() && !self.tracking.test(Map::Shadow, chunk))
    }

    pub fn read_shadow(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        // A sound independent shadow reads from itself alone (no copy to it is recorded): it
        // stays readable when only the master or the bitmap failed.
        if self.is_offline() && !self.shadow_sound() {
            return Err(self.offline_error());
        }
        let _gate = self.gate_read();
        let shadow = (
            self.shadow.as_ref(),
            self.paths.shadow.as_str(),
            Role::Shadow,
        );
        let master = (
            self.master.vol.as_ref(),
            self.paths.master.as_str(),
            Role::Master,
        );
        self.read_redirected(buf, offset, shadow, master, |c| self.shadow_reads_master(c))
            .map_err(|e| self.fail(e))
    }

    /// A master read while this set updates the master: chunks not yet copied come from the shadow.
    pub fn read_master_through(&self, master: &Master, buf: &mut [u8], offset: u64) -> Result<()> {
        if self.is_offline() {
            return self.read_master_unsettled(master, buf, offset);
        }
        let home = (
            master.vol.as_ref(),
            self.paths.master.as_str(),
            Role::Master,
        );
        let shadow = (
            self.shadow.as_ref(),
            self.paths.shadow.as_str(),
            Role::Shadow,
        );
        self.read_redirected(buf, offset, home, shadow, |c| {
            self.is_copying_to_master() && self.tracking.test(Map::Copy, c)
        })
    }

    /// A master read after this set went offline with a copy onto the master recorded. The
    /// chunks that copy had not finished read as the shadow's until then; now they are neither
    /// that (the shadow failed, or an offline set no longer pushes it before master writes) nor
    /// surely the old master (the copy may have written part of them): reading them fails
    /// until `reset` or a finished `copy master` settles them. Other chunks read from the master.
    fn read_master_unsettled(&self, master: &Master, buf: &mut [u8], offset: u64) -> Result<()> {
        if let Some(c) = self
            .chunks_of(offset, buf.len() as u64)
            .find(|&c| self.tracking.test(Map::Copy, c))
        {
            return Err(Error::new(
                super::error::Kind::Io,
                format!(
                    "chunk {c} of master {} was not yet restored from the shadow of set {} \
                     when the set went offline ({}); its content is unknown: {}",
                    self.paths.master,
                    self.name,
                    self.last_error()
                        .unwrap_or_else(|| "a volume failed".into()),
                    self.unsettled_advice()
                ),
            ));
        }
        master
            .vol
            .read_at(buf, offset)
            .map_err(|e| Error::io_on(Role::Master, format!("read of master {}", master.path), &e))
    }

    /// Read chunk by chunk from `home`, or from `elsewhere` for chunks where `redirected` says
    /// the content lives there now. A writer moves the bit before it changes `elsewhere`, so a
    /// redirected read that sees the bit moved afterwards is done again from `home`.
    fn read_redirected(
        &self,
        buf: &mut [u8],
        offset: u64,
        home: (&dyn Volume, &str, Role),
        elsewhere: (&dyn Volume, &str, Role),
        redirected: impl Fn(u64) -> bool,
    ) -> Result<()> {
        let read = |(vol, path, role): (&dyn Volume, &str, Role), piece: &mut [u8], off: u64| {
            vol.read_at(piece, off)
                .map_err(|e| Error::io_on(role, format!("read of {path}"), &e))
        };
        let mut at = 0usize;
        while at < buf.len() {
            let off = offset + at as u64;
            let c = off / self.chunk_size;
            let chunk_end = ((c + 1) * self.chunk_size).min(self.size);
            let n = ((chunk_end - off) as usize).min(buf.len() - at);
            let piece = &mut buf[at..at + n];
            loop {
                if !redirected(c) {
                    read(home, piece, off)?;
                    break;
                }
                read(elsewhere, piece, off)?;
                if redirected(c) {
                    break;
                }
            }
            at += n;
        }
        Ok(())
    }

    /// fsync of either data file: the set's shadow and bitmap first, then the master.
    pub fn sync_all(&self) -> Result<()> {
        let sync = |vol: &dyn Volume, role: Role, path: &str| {
            vol.sync()
                .map_err(|e| Error::io_on(role, format!("sync of {path}"), &e))
        };
        sync(self.shadow.as_ref(), Role::Shadow, &self.paths.shadow)?;
        sync(self.tracking.vol.as_ref(), Role::Bitmap, &self.paths.bitmap)?;
        sync(self.master.vol.as_ref(), Role::Master, &self.paths.master)
    }

    // ---------------------------------------------------------------- the copier's steps

    /// Copy chunk `c` in the current direction (caller holds the stripe lock and the gates).
    /// Copy chunks `first..first+count` (contiguous, in one stripe region) in the current
    /// direction, as one extent (caller holds the stripe lock and the gates).
    pub(super) fn copy_run(
        &self,
        sets: &[Arc<Set>],
        first: u64,
        count: u64,
        dir: Direction,
    ) -> Result<()> {
        let off = first * self.chunk_size;
        let (last_off, last_len) = self.chunk_span(first + count - 1);
        let len = last_off + last_len - off;
        let (from, to, path, role): (&dyn Volume, &dyn Volume, &str, Role) = match dir {
            Direction::Shadow => (
                self.master.vol.as_ref(),
                self.shadow.as_ref(),
                &self.paths.shadow,
                Role::Shadow,
            ),
            Direction::Master => {
                // The master's bytes change: the other sets preserve what they need first.
                self.master.prepare_change(sets, off, len, Some(self));
                (
                    self.shadow.as_ref(),
                    self.master.vol.as_ref(),
                    &self.paths.master,
                    Role::Master,
                )
            }
        };
        copy_range_ends(from, to, off, len, Access::Sequential).map_err(|(end, e)| {
            let what = format!("copy of chunks {first}..{} to {path}", first + count);
            self.copy_error(end, role, &what, &e)
        })
    }

    /// The error of a copy between master and shadow towards `to`, charged to the volume that
    /// failed: a source that cannot be read is what goes offline, not the target; that
    /// decides what `reset` rebuilds.
    fn copy_error(&self, end: CopyEnd, to: Role, what: &str, e: &std::io::Error) -> Error {
        let source = match to {
            Role::Shadow => Role::Master,
            _ => Role::Shadow,
        };
        match end {
            CopyEnd::Target => Error::io_on(to, what, e),
            CopyEnd::Source => {
                let path = match source {
                    Role::Master => &self.paths.master,
                    _ => &self.paths.shadow,
                };
                Error::io_on(source, format!("read of {path} for the {what}"), e)
            }
        }
    }

    /// After a batch of copied chunks is durable: clear their copy bits, unless a writer
    /// already handled the chunk (it clears the bit itself, and may have marked it again).
    pub(super) fn finish_chunks(&self, copied: &[u64], dir: Direction) -> Result<()> {
        let (target, role, path): (&dyn Volume, Role, &str) = match dir {
            Direction::Shadow => (self.shadow.as_ref(), Role::Shadow, &self.paths.shadow),
            Direction::Master => (self.master.vol.as_ref(), Role::Master, &self.paths.master),
        };
        if self.strict() {
            target
                .sync()
                .map_err(|e| Error::io_on(role, format!("sync during copy to {path}"), &e))?;
        }
        let mut start = 0;
        while start < copied.len() {
            let region = (copied[start] * self.chunk_size) >> super::master::REGION_SHIFT;
            let mut end = start;
            while end < copied.len()
                && (copied[end] * self.chunk_size) >> super::master::REGION_SHIFT == region
            {
                end += 1;
            }
            let _stripe = self.master.lock_region(copied[start] * self.chunk_size);
            let mut clear_shd = Vec::new();
            let mut clear_cpy = Vec::new();
            for &c in &copied[start..end] {
                if self.tracking.test(Map::Copy, c) {
                    clear_cpy.push(c);
                    // A dependent shadow now equals the master there: read it from the master.
                    if dir == Direction::Master && self.is_dependent() {
                        clear_shd.push(c);
                    }
                }
            }
            self.tracking
                .clear_now(Map::Copy, &clear_cpy)
                .and_then(|_| self.tracking.clear_now(Map::Shadow, &clear_shd))
                .map_err(|e| self.bitmap_error("write", &e))?;
            start = end;
        }
        Ok(())
    }

    /// The copy ended (finished, aborted or failed): record it and wake waiters.
    pub(super) fn copy_ended(&self, finished: bool) {
        let clear = if finished {
            flags::ACTIVE | flags::TO_SHADOW | flags::TO_MASTER | FULL_COPY
        } else {
            flags::ACTIVE
        };
        if let Err(e) = self.tracking.update_header(|h| h.flags &= !clear) {
            self.go_offline(&self.bitmap_error("write", &e));
        }
        self.flags.fetch_and(!clear, Ordering::SeqCst);
        let _guard = self.copy.lock();
        self.copy_done.notify_all();
    }

    // ---------------------------------------------------------------- commands

    /// Start an update or a full copy (REFERENCE-II 4.6).
    pub fn start_copy(self: &Arc<Self>, dir: Direction, full: bool) -> Result<()> {
        self.check_can_copy(dir)?;
        let _gate = self.gate_write();
        // Re-check under the gate: another command may have started meanwhile.
        self.check_can_copy(dir)?;
        // The source's content now becomes the target's: under strict durability it must be
        // on disk first, or a power loss could take back writes the new image already shows.
        // The gate holds writers back meanwhile.
        if self.strict() {
            let (source, path, role) = match dir {
                Direction::Shadow => (self.master.vol.as_ref(), &self.paths.master, Role::Master),
                Direction::Master => (self.shadow.as_ref(), &self.paths.shadow, Role::Shadow),
            };
            source
                .sync()
                .map_err(|e| self.fail(Error::io_on(role, format!("sync of {path}"), &e)))?;
        }
        let dep = self.is_dependent();
        let pit = now_secs();
        let copy_ops = if full {
            flags::PENDING_FILL_COPY
        } else {
            flags::PENDING_OR_COPY
        };
        let full_flag = if full { FULL_COPY } else { 0 };
        let result = match (dir, dep, full) {
            // A dependent shadow's update is instant: the master as it is now is the new PIT.
            (Direction::Shadow, true, false) => self.tracking.reset_all(|h| {
                h.flags &= !(flags::TO_SHADOW | flags::TO_MASTER | flags::ACTIVE | FULL_COPY);
                h.pit_time = pit;
            }),
            // A dependent shadow's unchanged chunks are the master's: copy = update, and the
            // differ bits stay until each chunk is back on the master.
            (Direction::Master, true, _) => self.tracking.bulk(flags::PENDING_OR_COPY, |h| {
                h.flags &= !FULL_COPY;
                h.flags |= flags::TO_MASTER | flags::ACTIVE;
            }),
            (dir, _, _) => self
                .tracking
                .bulk(copy_ops | flags::PENDING_CLEAR_SHADOW, |h| {
                    h.flags &= !FULL_COPY;
                    h.flags |= direction_flag(dir) | flags::ACTIVE | full_flag;
                    if dir == Direction::Shadow {
                        h.pit_time = pit;
                    }
                }),
        };
        result.map_err(|e| self.fail(self.bitmap_error("write", &e)))?;
        let h = self.tracking.header();
        self.flags.store(h.flags, Ordering::SeqCst);
        if h.flags & flags::ACTIVE != 0 {
            self.spawn_copier();
        }
        Ok(())
    }

    fn check_can_copy(&self, dir: Direction) -> Result<()> {
        if self.is_offline() {
            return Err(not_permitted(format!(
                "set {} is offline ({}); reset it first",
                self.name,
                self.last_error().unwrap_or_default()
            )));
        }
        if self.copy_active() {
            return Err(busy(format!(
                "a copy is in progress on set {}; wait for it or abort it first",
                self.name
            )));
        }
        match (dir, self.direction()) {
            (Direction::Master, Some(Direction::Shadow)) => {
                return Err(busy(format!(
                "set {} has an unfinished copy to the shadow; finish it with 'update shadow' first",
                self.name
            )))
            }
            (Direction::Shadow, Some(Direction::Master)) => {
                return Err(busy(format!(
                "set {} has an unfinished copy to the master; finish it with 'update master' first",
                self.name
            )))
            }
            _ => {}
        }
        // While another set copies its shadow onto this master, the master's bytes are not yet
        // what the master reads as: no other set may take them as a point in time or write them.
        if let Some(other) = self.master.copying_to_master(Some(&self.name)) {
            return Err(busy(format!(
                "set {other} is copying its shadow onto master {}; wait for it (or finish its update) first",
                self.paths.master
            )));
        }
        Ok(())
    }

    /// Start the background copier for the copy recorded in the header.
    pub fn spawn_copier(self: &Arc<Self>) {
        // Join a finished earlier copier without holding the lock it takes on its way out.
        let old = match self.copy.lock() {
            Ok(mut s) => s.thread.take(),
            Err(p) => p.into_inner().thread.take(),
        };
        if let Some(old) = old {
            let _ = old.join();
        }
        let mut st = match self.copy.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        self.abort.store(false, Ordering::SeqCst);
        st.total = self.tracking.copy_total();
        let set = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("iifs-copy-{}", self.name))
            .spawn(move || super::copier::run(set));
        match spawned {
            Ok(handle) => st.thread = Some(handle),
            Err(e) => {
                drop(st);
                self.go_offline(&Error::io("start of the copy thread", &e));
            }
        }
    }

    /// Stop the copy in progress (no-op when none runs); the direction stays recorded.
    pub fn abort_copy(&self) {
        self.abort.store(true, Ordering::SeqCst);
        {
            let _g = self.abort_wake.0.lock();
            self.abort_wake.1.notify_all();
        }
        let handle = match self.copy.lock() {
            Ok(mut s) => s.thread.take(),
            Err(p) => p.into_inner().thread.take(),
        };
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Stop the copier for a daemon shutdown: the copy stays recorded and resumes at next start.
    pub fn stop_copier(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.abort_copy();
    }

    /// Block until no copy runs. Err if the set went offline meanwhile.
    pub fn wait_copy(&self) -> Result<()> {
        self.wait_copy_or(&|| false)
    }

    /// As `wait_copy`, but give up (with Ok, the copy going on) as soon as `stop` says so;
    /// `stop` is asked every 50 ms. The caller knows why it stopped.
    pub fn wait_copy_or(&self, stop: &dyn Fn() -> bool) -> Result<()> {
        let mut st = match self.copy.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        while self.copy_active() && !self.is_offline() {
            if stop() {
                return Ok(());
            }
            st = match self
                .copy_done
                .wait_timeout(st, std::time::Duration::from_millis(50))
            {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        if self.is_offline() {
            return Err(self.offline_error());
        }
        Ok(())
    }

    pub fn set_params(&self, delay_ms: u32, units: u32) -> Result<()> {
        check_params(delay_ms, units)?;
        if self.is_offline() {
            return Err(not_permitted(format!(
                "set {} is offline ({}); reset it first",
                self.name,
                self.last_error().unwrap_or_default()
            )));
        }
        self.tracking
            .update_header(|h| {
                h.throttle_delay_ms = delay_ms;
                h.throttle_units = units;
            })
            .map_err(|e| self.fail(self.bitmap_error("write", &e)))?;
        self.throttle
            .store(((delay_ms as u64) << 32) | units as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Bring an offline set back (REFERENCE-II 7.4). A dependent set starts a fresh point in
    /// time. An independent set whose shadow failed gets a full copy from the master (a new
    /// point in time). When the shadow is sound (the master or the bitmap failed) nothing is
    /// copied: the shadow keeps its point in time and every chunk is marked as differing, since
    /// the record of which do was lost. Unlike the original, whose offline master refused
    /// writes, iifs's master keeps taking them, so a reset never copies onto the master.
    pub fn reset(self: &Arc<Self>) -> Result<()> {
        if !self.is_offline() {
            return Ok(());
        }
        if let Some(other) = self.master.copying_to_master(Some(&self.name)) {
            return Err(busy(format!(
                "set {other} is copying its shadow onto master {}; wait for it before resetting",
                self.paths.master
            )));
        }
        self.abort_copy();
        let _gate = self.gate_write();
        let pit = now_secs();
        let f = self.flags();
        let clear =
            flags::OFFLINE_ALL | flags::ACTIVE | flags::TO_SHADOW | flags::TO_MASTER | FULL_COPY;
        // The shadow is rebuilt from the master when it cannot be trusted, or when nothing says
        // which volume failed (a set taken offline by an older iifs). It is never the other way
        // round: the master keeps taking writes while a set is offline, so copying the shadow
        // onto it would throw those away. The administrator decides that (`copy master`).
        let roles = flags::OFFLINE_MASTER | flags::OFFLINE_SHADOW | flags::OFFLINE_BITMAP;
        let rebuild_shadow = f & flags::OFFLINE_SHADOW != 0 || f & roles == 0;
        if self.strict() && (self.is_dependent() || rebuild_shadow) {
            // The master becomes the shadow's content: on disk first.
            self.master.vol.sync().map_err(|e| {
                Error::io_on(Role::Master, format!("sync of {}", self.paths.master), &e)
            })?;
        }
        let result = if self.is_dependent() {
            self.tracking.reset_all(|h| {
                h.flags &= !clear;
                h.pit_time = pit;
            })
        } else if rebuild_shadow {
            self.tracking.bulk(
                flags::PENDING_FILL_COPY | flags::PENDING_CLEAR_SHADOW,
                |h| {
                    h.flags &= !clear;
                    h.flags |= flags::TO_SHADOW | flags::ACTIVE | FULL_COPY;
                    h.pit_time = pit;
                },
            )
        } else {
            // The shadow is sound and keeps its point in time; which chunks differ from the
            // master is no longer known: all of them, until the next update or copy.
            log::info!(
                "set {}: reset keeps the shadow's point in time; every chunk counts as differing \
                 ('copy master' restores the master from it, 'update shadow' takes a new one)",
                self.name
            );
            self.tracking.bulk(flags::PENDING_FILL_SHADOW, |h| {
                h.flags &= !clear;
            })
        };
        result.map_err(|e| {
            Error::io(
                format!("reset of set {}: bitmap {}", self.name, self.paths.bitmap),
                &e,
            )
        })?;
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
        let h = self.tracking.header();
        self.flags.store(h.flags, Ordering::SeqCst);
        if h.flags & flags::ACTIVE != 0 {
            self.spawn_copier();
        }
        Ok(())
    }

    pub fn status(&self) -> Status {
        let f = self.flags();
        let total = self.copy.lock().map(|s| s.total).unwrap_or(0);
        let to_copy = self.tracking.count(Map::Copy);
        let state = if f & flags::OFFLINE != 0 {
            "offline"
        } else if f & flags::ACTIVE != 0 {
            if f & FULL_COPY != 0 {
                "copying"
            } else {
                "updating"
            }
        } else if f & (flags::TO_SHADOW | flags::TO_MASTER) != 0 {
            "aborted"
        } else {
            "idle"
        };
        let progress = if f & (flags::TO_SHADOW | flags::TO_MASTER) == 0 || total == 0 {
            100
        } else {
            (total.saturating_sub(to_copy) * 100 / total).min(100)
        };
        let (delay_ms, units) = self.throttle();
        let h = self.tracking.header();
        Status {
            name: self.name.clone(),
            kind: self.kind,
            state,
            direction: direction_of(f).map(|d| d.word()).unwrap_or("-"),
            progress,
            paths: self.paths.clone(),
            size: self.size,
            chunk_size: self.chunk_size,
            chunks: self.chunks,
            chunks_differ: self.tracking.count_either(),
            chunks_to_copy: to_copy,
            delay_ms,
            units,
            durability: self.durability,
            last_error: self.last_error(),
            pit_time: h.pit_time,
        }
    }

    pub fn header(&self) -> Header {
        self.tracking.header()
    }
}
