//! An imaging set: master + shadow + bitmap volume. This file holds the set itself (its
//! construction and accessors); its jobs live beside it, one file each:
//!
//! - `cow`: copy-on-write planning (the one per-chunk decision, for master and shadow changes)
//!   and the copier's steps;
//! - `shadow`: the shadow's I/O and the redirected reads (shadow and master);
//! - `offline`: which volumes a failure takes offline, and `reset`;
//! - `commands`: start of a copy or update, abort, wait, params;
//! - `space`: a compact set's space (out of space, the space warning, lost chunks);
//! - `status`: the typed state and the status snapshot;
//! - `suspend`: suspend and resume;
//! - `export`: export and join (the shadow let go of and taken back).

mod commands;
mod cow;
mod export;
mod offline;
mod shadow;
mod space;
mod status;
mod suspend;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::chunk;
use super::commit::GroupCommit;
use super::compact::Compact;
use super::error::{Error, Role};
use super::header::{flags, Durability, Header, SetKind};
use super::master::Master;
use super::swappable::Swappable;
use super::tracking::Tracking;
use super::volume::Volume;

pub use commands::check_params;
pub use offline::OfflineNotifier;
pub use space::{set_space_warning, space_warning, Space, DEFAULT_SPACE_WARNING};
pub use status::{Condition, OfflineVolumes, SetState, Status};

/// The control of a set's background copy: its thread, abort and stop requests, its progress
/// total and the wake-ups of `wait`. Implemented by `copier::Copier`, which the engine gives
/// every set it installs: the set asks it to start, abort or wait, without knowing the copier
/// (imports run one way, from the copier to the set).
pub trait CopyControl: Send + Sync {
    /// Start the copier for the copy recorded in the header (an earlier finished one is
    /// joined first).
    fn start(self: Arc<Self>, set: &Arc<Set>);
    /// Stop the copy in progress and join its thread (no-op when none runs).
    fn abort(&self);
    /// Stop the copier for a daemon shutdown: the copy stays recorded as active.
    fn stop(&self);
    /// Chunks to copy when the current copy started (for progress).
    fn total(&self) -> u64;
    /// The copy state changed (ended, went offline): wake `wait`.
    fn changed(&self);
    /// Block while `running` says so; give up (true) as soon as `stop` does, asked every 50 ms.
    fn wait(&self, running: &dyn Fn() -> bool, stop: &dyn Fn() -> bool) -> bool;
}

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

pub const MAX_DELAY_MS: u32 = 10_000;
pub const MAX_UNITS: u32 = 60_000;
pub const DEFAULT_UNITS: u32 = 100;

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
    /// Swappable: an exported shadow is let go here and taken again at `join`.
    pub shadow: Arc<Swappable>,
    pub tracking: Tracking,
    /// Mirror of the header's state flags, read lock-free by the I/O paths.
    flags: AtomicU32,
    gate: RwLock<()>,
    shadow_commit: GroupCommit,
    master_commit: GroupCommit,
    bitmap_commit: GroupCommit,
    /// The background copy's control (see `CopyControl`).
    copier: Arc<dyn CopyControl>,
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
    pub(in crate::engine) unrecorded_offline: Option<Arc<OfflineNotifier>>,
    /// A compact set's shadow (the same volume as `shadow`, seen as slots).
    pub compact: Option<Arc<Compact>>,
    /// The space warning (percent of shadow and overflow used) was crossed and logged.
    space_warned: AtomicBool,
    /// Suspended: its files are not served, its copy is stopped, its master takes no writes.
    suspended: AtomicBool,
    /// An export is making its record: the shadow is not served meanwhile.
    exporting: AtomicBool,
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

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Set {
    pub fn new(
        master: Arc<Master>,
        shadow: Arc<dyn Volume>,
        tracking: Tracking,
        copier: Arc<dyn CopyControl>,
    ) -> Set {
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
            shadow: Arc::new(Swappable::new(shadow)),
            flags: AtomicU32::new(h.flags),
            gate: RwLock::new(()),
            shadow_commit: GroupCommit::default(),
            master_commit: GroupCommit::default(),
            bitmap_commit: GroupCommit::default(),
            copier,
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
            compact: None,
            space_warned: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            exporting: AtomicBool::new(false),
            tracking,
        }
    }

    fn open_counter(&self, role: Role) -> &AtomicUsize {
        match role {
            Role::Master => &self.open_files[0],
            // The bitmap and overflow files are read-only and never counted.
            Role::Shadow | Role::Bitmap | Role::Overflow => &self.open_files[1],
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
        self.wait_until(within, || self.open_files() == 0);
    }

    /// `wait_files_closed` for the files of one role (the shadow, before an export).
    pub fn wait_role_closed(&self, role: Role, within: std::time::Duration) {
        self.wait_until(within, || self.open_files_of(role) == 0);
    }

    fn wait_until(&self, within: std::time::Duration, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + within;
        while !done() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub(in crate::engine) fn mark_detached(&self) {
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

    pub(in crate::engine) fn gate_read(&self) -> RwLockReadGuard<'_, ()> {
        match self.gate.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(in crate::engine) fn gate_write(&self) -> RwLockWriteGuard<'_, ()> {
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
        chunk::chunk_span(self.chunk_size, self.size, chunk)
    }

    fn chunks_of(&self, offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
        chunk::chunks_of(self.chunk_size, self.chunks, offset, len)
    }

    /// The control of this set's background copy (the engine starts copies through it).
    pub(in crate::engine) fn copier(&self) -> Arc<dyn CopyControl> {
        self.copier.clone()
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

    /// Change the header durably (an attachment, say); a failed write is the bitmap's.
    pub(in crate::engine) fn record(&self, change: impl FnOnce(&mut Header)) -> Result<(), Error> {
        self.tracking
            .update_header(change)
            .map_err(|e| self.bitmap_error("write", &e))
    }

    fn fail(&self, e: Error) -> Error {
        self.go_offline(&e);
        e
    }

    pub fn header(&self) -> Header {
        self.tracking.header()
    }
}
