//! The imaging engine: sets of master, shadow and bitmap volumes, copy-on-write, background
//! copies and crash-safe persistent state. It knows nothing of FUSE or clap; its one YAML file
//! is the export record an `export` writes beside the shadow (`bundle`).
//!
//! # Layers
//!
//! Imports inside the engine run one way, from the bottom up (`tests/engine_layers.rs` fails
//! on a cycle):
//!
//! ```text
//! error
//!   -> volume, bitmap, header, chunk, commit, memory   (bytes, bits, layout, geometry)
//!   -> swappable, bundle                               (volumes let go of and taken back;
//!                                                       the export record)
//!   -> slots, chunkmap, overflow                       (slot pools, the compact chunk map,
//!                                                       overflow volumes)
//!   -> stripe, hold, ahead                             (stripe locks over chunk regions; a
//!                                                       master's hold on writes; telling a
//!                                                       sequential writer)
//!   -> tracking                                        (bitmaps + header on the bitmap volume)
//!   -> compact                                         (a compact shadow over its slots)
//!   -> master                                          (master bytes; knows sets as `Imager`s)
//!   -> set                                             (one set: copy-on-write, shadow I/O, state)
//!   -> check                                           (the bitmap volume's checker)
//!   -> copier                                          (the background copy; `CopyControl`)
//!   -> opener, enable, restore, overflows, groups,     (the tables of sets, volumes and
//!      exports, Engine                                  groups)
//! ```
//!
//! The master holds its sets as `master::Imager` trait objects and a set holds its copy's
//! control as a `set::CopyControl` trait object (a `copier::Copier` the engine gives it), so
//! neither needs to name the layer above it.
//!
//! # Locks, in the order they are taken
//!
//! 1. `Engine::commands` (the command lock): set-changing commands, one at a time.
//! 2. `Engine::tables`: the tables of sets, masters and volumes in use; held briefly, and
//!    never across I/O, except that `install` takes the gates of a master's sets (for writing)
//!    under it and `remove` takes it under a set's gate. Both run only under the command lock
//!    (or in a single-threaded test), which serialises them.
//! 3. The gates of the sets of one master (`Set::gate`, a read-write lock): every I/O on a
//!    master or shadow holds them all for reading (`Master::with_sets`); commands that switch a
//!    point in time (copy start, reset, enable, disable) hold one or all of them for writing.
//!    A command stops its copier (`CopyControl::abort`, which joins the copy thread) before it
//!    takes a gate: the copier takes gates itself.
//! 4. The stripe lock of a region (`stripe::Stripes`), under the gates.
//! 5. Leaf locks, under any of the above and never held while taking another: the tracking's
//!    header and page locks, the group commits, the master's list of sets, a set's
//!    `last_error`, the copier's state and wake-ups, the offline notifier's hook, a compact
//!    shadow's slot pool and overflow handle, an overflow volume's use, the chunk map's page
//!    locks.
//!
//! The engine (`Engine`) composes the kinds 1 to 3. The one other place that takes more
//! than one kind is the I/O path itself (`Master::write`, `discard`, `Set::write_shadow`,
//! `discard_shadow` and the copier's batch): gates, then a stripe lock, then leaves. It is
//! there because every I/O needs both and takes them per request, far too often to go
//! through the engine's tables.

mod ahead;
pub mod bitmap;
pub mod bundle;
pub mod check;
pub mod chunk;
pub mod chunkmap;
pub mod commit;
pub mod compact;
pub mod copier;
mod enable;
pub mod error;
mod exports;
mod groups;
pub mod header;
pub mod hold;
pub mod master;
pub mod memory;
mod opener;
pub mod overflow;
mod overflows;
mod restore;
pub mod set;
pub mod slots;
pub mod stripe;
pub mod swappable;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tracking;
pub mod volume;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

pub use enable::{check_chunk_size, check_set_name, EnableSpec, Enabled, MAX_CHUNK, MIN_CHUNK};
pub use error::{Error, Kind, Result};
pub use groups::{GroupIntent, GroupRecord, GroupStatus};
pub use header::{Durability, SetKind};
pub use opener::FileOpener;
pub use opener::Opener;
pub use overflows::OverflowRecord;
pub use set::{Condition, Direction, OfflineNotifier, OfflineVolumes, Set, SetState, Status};

use copier::Copier;
use error::not_found;
use header::flags;
use master::{Imager, Master};
use overflow::Overflow;
use overflows::ShadowVolume;
use tracking::Tracking;
use volume::{Volume, VolumeId};

/// How long `disable` waits for the releases of files closed just before it.
pub const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the registry keeps of a set to find it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetRecord {
    pub name: String,
    pub master: String,
    pub shadow: String,
    pub bitmap: String,
    /// The bitmap volume's generation when the record was written (0: not known). A bitmap
    /// volume whose header has an older one is an older copy of itself.
    pub generation: u64,
    /// An offline state the bitmap volume could not record.
    pub offline: Option<UnrecordedOffline>,
    /// The administrator suspended the set: it comes back suspended.
    pub suspended: bool,
}

impl SetRecord {
    /// What the bitmap volume's checker compares the volume's header with.
    pub fn recorded(&self) -> check::Recorded<'_> {
        check::Recorded {
            name: &self.name,
            master: &self.master,
            shadow: &self.shadow,
            bitmap: &self.bitmap,
            generation: self.generation,
        }
    }
}

/// An offline state that only the registry holds: the header write that should have recorded
/// it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnrecordedOffline {
    /// The offline flags (`header::flags::OFFLINE_ALL` bits).
    pub flags: u32,
    pub reason: String,
    /// The sequence number of the last header written before: a header written after it (a
    /// later write that succeeded) carries the state itself and wins.
    pub seq: u64,
}

/// A volume in use and what for (for the `volumes` file).
#[derive(Debug, Clone)]
pub struct VolumeUse {
    pub path: String,
    pub size: u64,
    pub role: &'static str,
    pub set: String,
}

struct Tables {
    sets: BTreeMap<String, Arc<Set>>,
    masters: HashMap<VolumeId, Arc<Master>>,
    /// Shadow and bitmap volumes in use, by identity.
    taken: HashMap<VolumeId, (String, &'static str)>,
    /// Overflow volumes, by name.
    overflows: BTreeMap<String, Arc<Overflow>>,
    /// Groups and their members, by name.
    groups: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Chunks the copies of each group's last operation had to move (for its progress).
    group_totals: HashMap<String, u64>,
}

pub struct Engine {
    opener: Box<dyn Opener>,
    tables: Mutex<Tables>,
    /// Commands that change sets run one at a time (I/O does not take this lock).
    commands: Mutex<()>,
    offline_notifier: Arc<OfflineNotifier>,
    /// The generations were raised for a clean stop.
    stopped: std::sync::atomic::AtomicBool,
}

impl Engine {
    pub fn new(opener: Box<dyn Opener>) -> Engine {
        Engine {
            opener,
            tables: Mutex::new(Tables {
                sets: BTreeMap::new(),
                masters: HashMap::new(),
                taken: HashMap::new(),
                overflows: BTreeMap::new(),
                groups: BTreeMap::new(),
                group_totals: HashMap::new(),
            }),
            commands: Mutex::new(()),
            offline_notifier: Arc::default(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Run `hook` (on a thread of its own) whenever a set goes offline and its bitmap volume
    /// cannot record it: `records` then carries the state, for the registry to keep.
    pub fn on_unrecorded_offline(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.offline_notifier.set_hook(Arc::new(hook));
    }

    /// Start the copier of `set` for the copy recorded in its header.
    fn start_copier(&self, set: &Arc<Set>) {
        set.copier().start(set);
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        match self.tables.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        }
    }

    /// Serialise set-changing commands.
    pub fn command_lock(&self) -> MutexGuard<'_, ()> {
        match self.commands.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        }
    }

    pub fn set(&self, name: &str) -> Result<Arc<Set>> {
        self.tables()
            .sets
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(format!("no set named '{name}'")))
    }

    pub fn sets(&self) -> Vec<Arc<Set>> {
        self.tables().sets.values().cloned().collect()
    }

    pub fn records(&self) -> Vec<SetRecord> {
        self.sets()
            .iter()
            .map(|s| {
                let h = s.tracking.header();
                SetRecord {
                    name: s.name.clone(),
                    master: s.paths.master.clone(),
                    shadow: s.paths.shadow.clone(),
                    bitmap: s.paths.bitmap.clone(),
                    generation: h.generation,
                    offline: s.tracking.offline_unrecorded().then(|| UnrecordedOffline {
                        flags: h.flags & flags::OFFLINE_ALL,
                        reason: h.last_error.clone(),
                        seq: h.seq,
                    }),
                    suspended: s.is_suspended(),
                }
            })
            .collect()
    }

    pub fn volumes(&self) -> Vec<VolumeUse> {
        let mut out = Vec::new();
        for s in self.sets() {
            // An imported set's master is on another host.
            if !s.is_imported() {
                out.push(VolumeUse {
                    path: s.paths.master.clone(),
                    size: s.master.len(),
                    role: "master",
                    set: s.name.clone(),
                });
            }
            out.push(VolumeUse {
                path: s.paths.shadow.clone(),
                size: s.compact.as_ref().map_or(s.shadow.len(), |c| c.file.len()),
                role: "shadow",
                set: s.name.clone(),
            });
            out.push(VolumeUse {
                path: s.paths.bitmap.clone(),
                size: s.tracking.vol.len(),
                role: "bitmap",
                set: s.name.clone(),
            });
        }
        for o in self.overflows() {
            out.push(VolumeUse {
                path: o.path.clone(),
                size: o.vol.len(),
                role: "overflow",
                set: match o.attached_sets() {
                    sets if sets.is_empty() => "-".to_string(),
                    sets => sets.join(","),
                },
            });
        }
        out
    }

    /// Add a set to the tables and its master.
    fn install(
        &self,
        master: Arc<dyn Volume>,
        shadow: ShadowVolume,
        tracking: Tracking,
        sync_master: bool,
    ) -> Result<Arc<Set>> {
        let ShadowVolume {
            vol: shadow,
            compact,
        } = shadow;
        let mut t = self.tables();
        let h = tracking.header();
        let m = t
            .masters
            .entry(master.id())
            .or_insert_with(|| Arc::new(Master::new(master, h.master.clone())))
            .clone();
        let (shadow_id, bitmap_id) = (shadow.id(), tracking.vol.id());
        let copier = Arc::new(Copier::new(tracking.copy_total()));
        let mut set = Set::new(m.clone(), shadow, tracking, copier);
        set.unrecorded_offline = Some(self.offline_notifier.clone());
        set.compact = compact;
        let set = Arc::new(set);
        // No master write may be in flight across the moment the set appears (see
        // `Master::attach_exclusive`); the point in time is taken in that moment.
        m.attach_exclusive(set.clone() as Arc<dyn Imager>, || {
            if sync_master {
                m.vol.sync()
            } else {
                Ok(())
            }
        })
        .map_err(|e| Error::io(format!("sync of master {}", h.master), &e))?;
        t.taken.insert(shadow_id, (h.name.clone(), "shadow"));
        t.taken.insert(bitmap_id, (h.name.clone(), "bitmap"));
        t.sets.insert(h.name.clone(), set.clone());
        Ok(set)
    }

    /// Whether `disable` would be refused, and why; changes nothing. Refused while an
    /// independent set's full copy runs (its shadow would be half a copy), while a copy onto
    /// the master is recorded (see `Set::check_restore_settled`) and while the set's
    /// `master` or `shadow` file is open (a loop device or a process would go on writing a
    /// volume that no set protects any more).
    pub fn check_disable(&self, name: &str) -> Result<()> {
        let set = self.set(name)?;
        set.check_restore_settled()?;
        if set.kind == SetKind::Independent && set.copy_active() && !set.is_offline() {
            return Err(error::busy(format!(
                "set {name} is copying; wait for the copy (or abort it) before disabling"
            )));
        }
        match set.open_files() {
            0 => Ok(()),
            n => Err(error::busy(format!(
                "the master or shadow file of set {name} is open ({n} open); a loop device, a \
                 mounted file system or a process still uses it: detach or close it \
                 (losetup -d, umount), then disable"
            ))),
        }
    }

    /// Remove a set, unless `check_disable` refuses.
    pub fn disable(&self, name: &str) -> Result<()> {
        self.check_disable(name)?;
        self.remove(name, true)
    }

    fn remove(&self, name: &str, wipe_shadow: bool) -> Result<()> {
        let set = self.set(name)?;
        set.abort_copy();
        let _gate = set.gate_write();
        // A file opened after the check above (opens take no lock) must not go on reaching a
        // volume that no set protects any more: its I/O fails from now on.
        set.mark_detached();
        // The bitmap volume first: a power cut before the wipe below is durable then leaves a
        // set that is refused at the next start (its bitmap says nothing), never one that comes
        // back serving a wiped shadow as its point in time. An imported set's bitmap volume is
        // what the exporting host joins: it stays, final.
        let released = if set.is_imported() {
            set.tracking.update_header(|h| h.flags |= flags::RELEASED)
        } else {
            set.tracking.invalidate()
        };
        if let Err(e) = released {
            log::warn!(
                "set {name}: could not {} bitmap {}: {e}",
                if set.is_imported() {
                    "release"
                } else {
                    "invalidate"
                },
                set.paths.bitmap
            );
        }
        // A dependent shadow, or one left half copied from the master, is not a usable image on
        // its own (the source of a copy onto the master is whole and kept):
        // wipe bytes 8 KiB to 64 KiB (the range Instant Image's disable clears) so nothing
        // mounts a torn file system.
        // (A compact shadow's file is wiped the same way: its slots hold no image of their own.)
        if wipe_shadow
            && (set.kind == SetKind::Dependent || set.direction() == Some(Direction::Shadow))
        {
            let file: Arc<dyn Volume> = match &set.compact {
                Some(c) => c.file.clone(),
                None => set.shadow.clone(),
            };
            let start = 8192u64.min(file.len());
            let end = 65536u64.min(file.len());
            if end > start {
                let _ = file.write_at(&vec![0u8; (end - start) as usize], start);
                let _ = file.sync();
            }
        }
        self.leave_group(name);
        let mut t = self.tables();
        t.sets.remove(name);
        t.taken.remove(&set.shadow.id());
        t.taken.remove(&set.tracking.vol.id());
        // The set's overflow slots are free once its bitmap volume no longer names them.
        if let Some(o) = set.compact.as_ref().and_then(|c| c.overflow()) {
            o.detach(name);
        }
        if set.master.detach(name) == 0 {
            t.masters.remove(&set.master.vol.id());
        }
        log::info!("disabled set {name}");
        Ok(())
    }

    /// Stop every copier (their state stays recorded for the next start), and raise every
    /// bitmap volume's generation, so that a copy taken before is recognised as older (the
    /// caller saves the registry afterwards).
    pub fn shutdown(&self) {
        for s in self.sets() {
            s.stop_copier();
        }
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for s in self.sets() {
            if let Err(e) = s.tracking.bump_generation() {
                log::warn!(
                    "set {}: could not write the generation to bitmap {}: {e}",
                    s.name,
                    s.paths.bitmap
                );
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
        let t = self.tables();
        // Masters and sets refer to each other: break the cycle.
        for m in t.masters.values() {
            m.detach_all();
        }
    }
}
