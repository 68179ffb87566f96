//! The imaging engine: sets of master, shadow and bitmap volumes, copy-on-write, background
//! copies and crash-safe persistent state. It knows nothing of FUSE, clap or YAML.

pub mod bitmap;
pub mod commit;
pub mod copier;
pub mod error;
pub mod faulty;
mod fileopen;
pub mod header;
pub mod master;
pub mod memory;
pub mod powerloss;
pub mod set;
pub mod tracking;
pub mod volume;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

pub use error::{Error, Kind, Result};
pub use header::{Durability, SetKind};
pub use set::{Direction, Set, Status};

use error::{exists, invalid, not_found};
pub use fileopen::FileOpener;
use header::{flags, Header};
use master::Master;
use tracking::Tracking;
use volume::{Volume, VolumeId};

/// How long `disable` waits for the releases of files closed just before it.
pub const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How the engine finds volumes by path: files for the daemon, memory for tests.
pub trait Opener: Send + Sync {
    fn open(&self, path: &str) -> io::Result<Arc<dyn Volume>>;
    /// Open, or make the volume if it is missing and can be made (a bitmap file); true when
    /// it was made.
    fn create(&self, path: &str) -> io::Result<(Arc<dyn Volume>, bool)> {
        Ok((self.open(path)?, false))
    }
    /// Grow the volume to `len` bytes if it can (regular files); false if it cannot.
    fn grow(&self, path: &str, len: u64) -> io::Result<bool>;
    /// Give a grown volume its old length back (a refused enable changes nothing).
    fn shrink(&self, _path: &str, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Remove a volume `create` made (a refused enable changes nothing).
    fn remove(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }
}

/// Volumes looked up by name in a fixed table: for tests (memory and fault-injecting volumes).
#[derive(Default)]
pub struct MapOpener {
    volumes: Mutex<HashMap<String, Arc<dyn Volume>>>,
}

impl MapOpener {
    pub fn new() -> MapOpener {
        MapOpener::default()
    }

    pub fn insert(&self, path: &str, vol: Arc<dyn Volume>) {
        if let Ok(mut v) = self.volumes.lock() {
            v.insert(path.to_string(), vol);
        }
    }
}

impl Opener for MapOpener {
    fn open(&self, path: &str) -> io::Result<Arc<dyn Volume>> {
        self.volumes
            .lock()
            .map_err(|_| volume::poisoned())?
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such volume"))
    }
    fn grow(&self, _path: &str, _len: u64) -> io::Result<bool> {
        Ok(false)
    }
}

/// What `enable` needs.
#[derive(Debug, Clone)]
pub struct EnableSpec {
    pub kind: SetKind,
    pub master: String,
    pub shadow: String,
    pub bitmap: String,
    pub name: String,
    pub chunk_size: u64,
    pub durability: Durability,
}

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

/// Calls the hook the daemon registers (it writes the registry) when a set went offline and
/// its bitmap volume could not record it. On a thread of its own: the set's I/O path that
/// failed holds locks the registry writer may need.
#[derive(Default)]
pub struct OfflineNotifier {
    hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl OfflineNotifier {
    pub fn notify(&self) {
        let hook = match self.hook.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(hook) = hook {
            let spawned = std::thread::Builder::new()
                .name("iifs-offline-record".into())
                .spawn(move || hook());
            if let Err(e) = spawned {
                log::error!("cannot start the thread that records an offline set: {e}");
            }
        }
    }
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

/// The longest name of one path component Linux file systems take.
const NAME_MAX: usize = 255;

/// A set `Engine::enable_prepared` made: in the tables, its copy not started yet.
pub struct Enabled<'a> {
    pub set: Arc<Set>,
    /// What the enable did that the administrator should hear of (a bitmap file it made).
    pub note: Option<String>,
    undo: BitmapUndo<'a>,
}

/// How to put a bitmap volume back as it was before a refused enable: remove the file the
/// enable made, or write back the bytes it overwrote and give it back its old length.
struct BitmapUndo<'a> {
    opener: &'a dyn Opener,
    path: String,
    created: bool,
    old_len: u64,
    grown: bool,
    saved: Option<(Arc<dyn Volume>, Vec<u8>)>,
    /// The set is enabled: nothing to undo.
    kept: bool,
}

impl Drop for BitmapUndo<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let path = &self.path;
        if self.created {
            if let Err(e) = self.opener.remove(path) {
                log::error!("cannot remove bitmap {path}, made by a refused enable: {e}");
            }
            return;
        }
        if let Some((vol, old)) = &self.saved {
            if let Err(e) = vol.write_at(old, 0).and_then(|_| vol.sync()) {
                log::error!("cannot restore bitmap {path} after a refused enable: {e}");
            }
        }
        if self.grown {
            if let Err(e) = self.opener.shrink(path, self.old_len) {
                log::error!("cannot shrink bitmap {path} back after a refused enable: {e}");
            }
        }
    }
}

/// A bitmap volume that could not be grown, said so a person can act on it.
fn grow_error(path: &str, need: u64, e: &io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EFBIG) => Error::new(
            Kind::TooBig,
            format!(
                "bitmap volume {path} would need {need} bytes, more than its file system \
                 takes in one file; use a larger chunk size"
            ),
        ),
        Some(libc::ENOSPC) => Error::new(
            Kind::NoSpace,
            format!("bitmap volume {path} needs {need} bytes: free space on its file system"),
        ),
        _ => Error::io(format!("growing bitmap volume {path} to {need} bytes"), e),
    }
}

pub const MIN_CHUNK: u64 = 4096;
pub const MAX_CHUNK: u64 = 1 << 20;

pub fn check_chunk_size(size: u64) -> Result<()> {
    if !size.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&size) {
        return Err(invalid(format!(
            "chunk size {size} is not a power of two from {MIN_CHUNK} to {MAX_CHUNK} bytes"
        )));
    }
    Ok(())
}

pub fn check_set_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+@:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "set name '{name}' is not valid: use 1 to 255 letters, digits or . _ - + @ : (not starting with -)"
        )))
    }
}

impl Engine {
    pub fn new(opener: Box<dyn Opener>) -> Engine {
        Engine {
            opener,
            tables: Mutex::new(Tables {
                sets: BTreeMap::new(),
                masters: HashMap::new(),
                taken: HashMap::new(),
            }),
            commands: Mutex::new(()),
            offline_notifier: Arc::default(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Run `hook` (on a thread of its own) whenever a set goes offline and its bitmap volume
    /// cannot record it: `records` then carries the state, for the registry to keep.
    pub fn on_unrecorded_offline(&self, hook: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut h) = self.offline_notifier.hook.lock() {
            *h = Some(Arc::new(hook));
        }
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
                }
            })
            .collect()
    }

    pub fn volumes(&self) -> Vec<VolumeUse> {
        let mut out = Vec::new();
        for s in self.sets() {
            out.push(VolumeUse {
                path: s.paths.master.clone(),
                size: s.master.len(),
                role: "master",
                set: s.name.clone(),
            });
            out.push(VolumeUse {
                path: s.paths.shadow.clone(),
                size: s.shadow.len(),
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
        out
    }

    fn open_volume(&self, role: &str, path: &str) -> Result<Arc<dyn Volume>> {
        Ok(self.open_or_create(role, path, false)?.0)
    }

    /// Open the `role` volume at `path`; with `create`, a missing file is made (mode 0600), and
    /// true says so.
    fn open_or_create(
        &self,
        role: &str,
        path: &str,
        create: bool,
    ) -> Result<(Arc<dyn Volume>, bool)> {
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "the {role} volume must be an absolute path: {path}"
            )));
        }
        let longest = Path::new(path)
            .components()
            .map(|c| c.as_os_str().len())
            .max()
            .unwrap_or(0);
        if path.len() >= libc::PATH_MAX as usize || longest > NAME_MAX {
            return Err(invalid(format!(
                "the {role} volume path is too long for the system ({} bytes, a name of \
                 {longest}; at most {} bytes, {NAME_MAX} per name): {}...",
                path.len(),
                libc::PATH_MAX - 1,
                path.chars().take(64).collect::<String>()
            )));
        }
        let opened = if create {
            self.opener.create(path)
        } else {
            self.opener.open(path).map(|v| (v, false))
        };
        opened.map_err(|e| {
            // The opener's own sentence, where it has one, says more than the errno.
            let said = e.get_ref().map(|m| m.to_string());
            let say = |plain: &str| match &said {
                Some(m) => format!("{role} volume {path}: {m}"),
                None => format!("{role} volume {path} {plain}"),
            };
            match e.kind() {
                io::ErrorKind::NotFound => not_found(say("does not exist")),
                io::ErrorKind::PermissionDenied => Error::new(
                    Kind::Access,
                    say("cannot be opened for reading and writing: permission denied"),
                ),
                io::ErrorKind::ResourceBusy => error::busy(say("is in use")),
                _ if e.raw_os_error() == Some(libc::EISDIR) => invalid(format!(
                    "{role} volume {path} is a directory, not a regular file or block device"
                )),
                _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => invalid(format!(
                    "{role} volume {path}: the path is too long for the system"
                )),
                io::ErrorKind::InvalidInput => {
                    invalid(say("is not a regular file or block device"))
                }
                _ => Error::io(format!("open of {role} volume {path}"), &e),
            }
        })
    }

    /// Create a set. Nothing is written to any volume until every check has passed.
    pub fn enable(&self, spec: &EnableSpec) -> Result<Arc<Set>> {
        self.enable_throttled(spec, 0, set::DEFAULT_UNITS)
    }

    /// `enable` with a copy throttle in force from the start (an independent set's first copy
    /// starts at once): sleep `delay_ms` after every `units` chunks.
    pub fn enable_throttled(
        &self,
        spec: &EnableSpec,
        delay_ms: u32,
        units: u32,
    ) -> Result<Arc<Set>> {
        let enabled = self.enable_prepared(spec, delay_ms, units)?;
        Ok(self.start(enabled))
    }

    /// `enable_throttled` up to the set being in the tables, its first copy not started: the
    /// caller records the set durably, then `start`s it, or takes it back with `withdraw`
    /// (which leaves every volume as it was before).
    pub fn enable_prepared(
        &self,
        spec: &EnableSpec,
        delay_ms: u32,
        units: u32,
    ) -> Result<Enabled<'_>> {
        set::check_params(delay_ms, units)?;
        check_set_name(&spec.name)?;
        check_chunk_size(spec.chunk_size)?;
        if self.tables().sets.contains_key(&spec.name) {
            return Err(exists(format!(
                "a set named '{}' exists already",
                spec.name
            )));
        }
        let master = self.open_volume("master", &spec.master)?;
        let shadow = self.open_volume("shadow", &spec.shadow)?;
        let (mut bitmap, missing) = self.open_or_create("bitmap", &spec.bitmap, true)?;
        // From here on every refusal puts the bitmap volume back as it was (see `BitmapUndo`).
        let mut undo = BitmapUndo {
            opener: self.opener.as_ref(),
            path: spec.bitmap.clone(),
            created: missing,
            old_len: bitmap.len(),
            grown: false,
            saved: None,
            kept: false,
        };
        let (mid, sid, bid) = (master.id(), shadow.id(), bitmap.id());
        if mid == sid || mid == bid || sid == bid {
            return Err(invalid(
                "master, shadow and bitmap must be three different volumes (a loop device is \
                 the same volume as the file behind it)"
                    .to_string(),
            ));
        }
        {
            let t = self.tables();
            for (id, role, path) in [(sid, "shadow", &spec.shadow), (bid, "bitmap", &spec.bitmap)] {
                if let Some((set, used)) = t.taken.get(&id) {
                    return Err(exists(format!(
                        "{role} volume {path} is already the {used} of set {set}"
                    )));
                }
                if t.masters.contains_key(&id) {
                    return Err(exists(format!(
                        "{role} volume {path} is already a master volume"
                    )));
                }
            }
            if let Some((set, used)) = t.taken.get(&mid) {
                return Err(exists(format!(
                    "master volume {} is already the {used} of set {set}",
                    spec.master
                )));
            }
            // Every set of one master must agree on its size: the I/O paths index each set's
            // bitmaps by master offsets.
            if let Some(m) = t.masters.get(&mid) {
                if m.len() != master.len() {
                    let names: Vec<String> = m.sets().iter().map(|s| s.name.clone()).collect();
                    return Err(invalid(format!(
                        "master volume {} is {} bytes now, but set {} on it was made for {} \
                         bytes; disable the sets on it first, then enable them again",
                        spec.master,
                        master.len(),
                        names.join(", "),
                        m.len()
                    )));
                }
            }
        }
        self.check_master_not_failed(mid, &spec.master)?;
        if let Some(m) = self.tables().masters.get(&mid) {
            if let Some(other) = m.copying_to_master(None) {
                return Err(error::busy(format!(
                    "set {other} is copying its shadow onto master {}; wait for it first",
                    spec.master
                )));
            }
        }
        if master.is_empty() {
            return Err(invalid(format!("master volume {} is empty", spec.master)));
        }
        if shadow.len() < master.len() {
            return Err(match spec.kind {
                SetKind::Independent => invalid(format!(
                    "shadow volume {} ({} bytes) is smaller than master {} ({} bytes); an independent shadow must be at least as large",
                    spec.shadow, shadow.len(), spec.master, master.len()
                )),
                SetKind::Dependent => invalid(format!(
                    "shadow volume {} ({} bytes) is smaller than master {} ({} bytes); compact dependent shadows are not supported yet",
                    spec.shadow, shadow.len(), spec.master, master.len()
                )),
            });
        }
        let ind = spec.kind == SetKind::Independent;
        let header = Header {
            seq: 0,
            kind: spec.kind,
            chunk_size: spec.chunk_size as u32,
            master_size: master.len(),
            shadow_size: shadow.len(),
            flags: if ind {
                flags::TO_SHADOW | flags::ACTIVE | flags::FULL_COPY | flags::PENDING_FILL_COPY
            } else {
                0
            },
            throttle_delay_ms: delay_ms,
            throttle_units: units,
            pit_time: set::now_secs(),
            durability: spec.durability,
            name: spec.name.clone(),
            master: spec.master.clone(),
            shadow: spec.shadow.clone(),
            bitmap: spec.bitmap.clone(),
            layout: header::Layout::Checked,
            copy_total: 0,
            generation: 1,
            bitmap_id: 0,
            last_error: String::new(),
        };
        header.encode()?;
        let need = header.volume_len();
        // The bytes of the bitmap volume the set overwrites are kept to put back on refusal.
        let keep = undo.old_len.min(need);
        memory::check(&spec.name, &header, keep)?;
        if bitmap.len() < need {
            // The grown file is opened anew: drop this descriptor first, or the open would
            // find it again, with its old length.
            drop(bitmap);
            let grown = self
                .opener
                .grow(&spec.bitmap, need)
                .map_err(|e| grow_error(&spec.bitmap, need, &e))?;
            if !grown {
                return Err(invalid(format!(
                    "bitmap volume {} is too small: it needs {need} bytes",
                    spec.bitmap
                )));
            }
            undo.grown = true;
            bitmap = self.open_volume("bitmap", &spec.bitmap)?;
        }
        if keep > 0 {
            let mut old = vec![0u8; keep as usize];
            bitmap
                .read_at(&mut old, 0)
                .map_err(|e| Error::io(format!("reading bitmap volume {}", spec.bitmap), &e))?;
            undo.saved = Some((bitmap.clone(), old));
        }
        let tracking = Tracking::create(bitmap, header).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => Error::new(
                Kind::NoSpace,
                format!(
                    "bitmap volume {} has no space for {need} bytes: free space on its file system",
                    spec.bitmap
                ),
            ),
            _ => Error::io(format!("initialising bitmap volume {}", spec.bitmap), &e),
        })?;
        // The master's content when the set appears is the point in time: under strict
        // durability it is made durable first.
        let set = self.install(
            master,
            shadow,
            tracking,
            spec.durability == Durability::Strict,
        )?;
        let note = missing.then(|| {
            format!(
                "created bitmap {} ({} bytes, mode 0600)",
                spec.bitmap,
                set.tracking.vol.len()
            )
        });
        Ok(Enabled { set, note, undo })
    }

    /// Start a set `enable_prepared` made (its first copy, for an independent set).
    pub fn start(&self, enabled: Enabled<'_>) -> Arc<Set> {
        let Enabled { set, mut undo, .. } = enabled;
        undo.kept = true;
        if set.copy_active() {
            set.spawn_copier();
        }
        log::info!("enabled {} set {}", set.kind.word(), set.name);
        set
    }

    /// Refuse a new set on a master that some set took offline as failed (or left half
    /// restored): its content cannot be trusted as a point in time until that set is reset.
    fn check_master_not_failed(&self, mid: VolumeId, path: &str) -> Result<()> {
        let Some(m) = self.tables().masters.get(&mid).cloned() else {
            return Ok(());
        };
        let failed = m.sets().iter().find(|s| s.master_offline()).cloned();
        match failed {
            None => Ok(()),
            Some(s) => Err(Error::new(
                Kind::Io,
                format!(
                    "master volume {path} is offline in set {} ({}); fix the volume and reset \
                     set {} before enabling another set on it",
                    s.name,
                    s.last_error()
                        .unwrap_or_else(|| "the master failed".to_string()),
                    s.name
                ),
            )),
        }
    }

    /// Add a set to the tables and its master.
    fn install(
        &self,
        master: Arc<dyn Volume>,
        shadow: Arc<dyn Volume>,
        tracking: Tracking,
        sync_master: bool,
    ) -> Result<Arc<Set>> {
        let mut t = self.tables();
        let h = tracking.header();
        let m = t
            .masters
            .entry(master.id())
            .or_insert_with(|| Arc::new(Master::new(master, h.master.clone())))
            .clone();
        let (shadow_id, bitmap_id) = (shadow.id(), tracking.vol.id());
        let mut set = Set::new(m.clone(), shadow, tracking);
        set.unrecorded_offline = Some(self.offline_notifier.clone());
        let set = Arc::new(set);
        // No master write may be in flight across the moment the set appears (see
        // `Master::attach_exclusive`); the point in time is taken in that moment.
        m.attach_exclusive(
            set.clone(),
            || if sync_master { m.vol.sync() } else { Ok(()) },
        )
        .map_err(|e| Error::io(format!("sync of master {}", h.master), &e))?;
        t.taken.insert(shadow_id, (h.name.clone(), "shadow"));
        t.taken.insert(bitmap_id, (h.name.clone(), "bitmap"));
        t.sets.insert(h.name.clone(), set.clone());
        Ok(set)
    }

    /// Bring back the sets recorded in the registry, then resume their interrupted copies.
    /// Copies start only once every set is back: a copy onto a master must find all the sets
    /// whose points in time it has to preserve. Returns the records that could not come back.
    pub fn restore_all(&self, records: &[SetRecord]) -> Vec<(SetRecord, Error)> {
        let mut failed = Vec::new();
        for rec in records {
            if let Err(e) = self.restore(rec) {
                failed.push((rec.clone(), e));
            }
        }
        for set in self.sets() {
            if set.copy_active() && !set.is_offline() {
                set.spawn_copier();
            }
        }
        failed
    }

    /// Bring back one set from its bitmap volume (an interrupted bulk change is rolled
    /// forward); its recorded copy resumes with `restore_all`.
    fn restore(&self, rec: &SetRecord) -> Result<Arc<Set>> {
        let bitmap = self.open_volume("bitmap", &rec.bitmap)?;
        // A set too large for the memory the daemon has now is refused before its bitmaps are
        // allocated (a failed allocation would abort the daemon).
        let mut slots = vec![0u8; 2 * header::SLOT_SIZE as usize];
        if bitmap.read_at(&mut slots, 0).is_ok() {
            let (a, b) = slots.split_at(header::SLOT_SIZE as usize);
            if let Some((h, _)) = Header::pick(a, b) {
                memory::check(&rec.name, &h, 0)?;
            }
        }
        let tracking = Tracking::open(bitmap)
            .map_err(|e| Error::io(format!("reading bitmap volume {}", rec.bitmap), &e))?;
        let h = tracking.header();
        if h.name != rec.name || h.master != rec.master || h.shadow != rec.shadow {
            return Err(invalid(format!(
                "bitmap volume {} belongs to set {} ({} -> {}), not to {}",
                rec.bitmap, h.name, h.master, h.shadow, rec.name
            )));
        }
        // The registry saw this bitmap volume at a later generation: this is an older copy of
        // it (restored from a backup or a snapshot), whose bits no longer say which chunks of
        // the shadow are valid.
        if h.generation < rec.generation {
            return Err(Error::new(
                Kind::Io,
                format!(
                    "bitmap volume {} is an older copy of itself (generation {}, the registry \
                     recorded {}): its bitmaps are out of date; put the current bitmap volume \
                     back, or disable the set and enable it again",
                    rec.bitmap, h.generation, rec.generation
                ),
            ));
        }
        // Offline, but the bitmap volume could not record it: it must not come back online.
        if let Some(off) = &rec.offline {
            if h.seq <= off.seq && h.flags & flags::OFFLINE == 0 {
                tracking
                    .mark_offline(off.flags | flags::OFFLINE, &off.reason)
                    .map_err(|e| {
                        Error::io(
                            format!(
                                "set {} went offline ({}) and its bitmap volume {} still cannot \
                                 record it",
                                rec.name, off.reason, rec.bitmap
                            ),
                            &e,
                        )
                    })?;
            }
        }
        if self.tables().sets.contains_key(&rec.name) {
            return Err(exists(format!("a set named '{}' exists already", rec.name)));
        }
        let master = self.open_volume("master", &h.master)?;
        let shadow = self.open_volume("shadow", &h.shadow)?;
        if master.len() != h.master_size {
            return Err(invalid(format!(
                "master volume {} is {} bytes, but set {} was made for {} bytes",
                h.master,
                master.len(),
                h.name,
                h.master_size
            )));
        }
        if shadow.len() < h.master_size {
            return Err(invalid(format!(
                "shadow volume {} is smaller than the master",
                h.shadow
            )));
        }
        let set = self.install(master, shadow, tracking, false)?;
        // A copy of the bitmap volume taken from now on is older than what the registry saves.
        if let Err(e) = set.tracking.bump_generation() {
            let e = Error::io_on(
                error::Role::Bitmap,
                format!("write of bitmap {}", rec.bitmap),
                &e,
            );
            set.go_offline(&e);
        }
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

    /// Remove a set (REFERENCE-II 5.1), unless `check_disable` refuses.
    pub fn disable(&self, name: &str) -> Result<()> {
        self.check_disable(name)?;
        self.remove(name, true)
    }

    /// Take back a set `enable_prepared` made (its registry entry could not be written): it is
    /// removed, its shadow left as it is and its bitmap volume put back as it was.
    pub fn withdraw(&self, enabled: Enabled<'_>) -> Result<()> {
        let result = self.remove(&enabled.set.name, false);
        drop(enabled);
        result
    }

    fn remove(&self, name: &str, wipe_shadow: bool) -> Result<()> {
        let set = self.set(name)?;
        set.abort_copy();
        let _gate = set.gate_write();
        // A file opened after the check above (opens take no lock) must not go on reaching a
        // volume that no set protects any more: its I/O fails from now on.
        set.mark_detached();
        // A dependent shadow, or one left half copied, is not a usable image on its own:
        // wipe its first blocks (REFERENCE-II 5.1) so nothing mounts a torn file system.
        if wipe_shadow && (set.kind == SetKind::Dependent || set.direction().is_some()) {
            let start = 8192u64.min(set.shadow.len());
            let end = 65536u64.min(set.shadow.len());
            if end > start {
                let _ = set
                    .shadow
                    .write_at(&vec![0u8; (end - start) as usize], start);
                let _ = set.shadow.sync();
            }
        }
        if let Err(e) = set.tracking.invalidate() {
            log::warn!(
                "set {name}: could not invalidate bitmap {}: {e}",
                set.paths.bitmap
            );
        }
        let mut t = self.tables();
        t.sets.remove(name);
        t.taken.remove(&set.shadow.id());
        t.taken.remove(&set.tracking.vol.id());
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
