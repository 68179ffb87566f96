//! The engine's overflow volumes: `overflow init` and `delete`, a compact set's `attach` and
//! `detach`, and the compact shadow a set is given when it is enabled or restored.

use std::sync::Arc;

use super::compact::{Compact, MapProblem};
use super::enable::check_set_name;
use super::error::{busy, exists, invalid, not_found, not_permitted, Error, Result, Role};
use super::overflow::{slot_end, Overflow, OverflowHeader};
use super::tracking::{new_bitmap_id, Map, Tracking};
use super::volume::Volume;
use super::Engine;

/// What the registry keeps of an overflow volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverflowRecord {
    pub name: String,
    pub path: String,
}

/// A set's shadow as the engine installs it: the volume, and for a compact set the same
/// volume seen as slots.
pub struct ShadowVolume {
    pub vol: Arc<dyn Volume>,
    pub compact: Option<Arc<Compact>>,
}

/// An overflow `init` made: the bytes it overwrote, to put back if it is taken back.
pub struct InitUndo {
    name: String,
    old: Vec<u8>,
}

impl Engine {
    /// The shadow of the set `name` over `file`, compact when its header says so; `overflow` is
    /// the overflow volume it spills into. A compact shadow's chunk map is checked (no slot
    /// twice, none outside its volume) and entries leaked by a crash are reclaimed.
    pub(super) fn shadow_of(
        &self,
        name: &str,
        file: Arc<dyn Volume>,
        tracking: &Tracking,
        overflow: Option<Arc<Overflow>>,
    ) -> Result<ShadowVolume> {
        let h = tracking.header();
        let Some(map) = tracking.chunk_map().filter(|_| h.is_compact()) else {
            return Ok(ShadowVolume {
                vol: file,
                compact: None,
            });
        };
        let live = |c| tracking.test(Map::Shadow, c) || tracking.test(Map::Copy, c);
        let opened = Compact::open(
            name,
            file,
            map,
            h.chunk_size as u64,
            h.master_size,
            h.shadow_slots,
            overflow,
            live,
        )
        .map_err(|e| {
            Error::io_on(
                Role::Bitmap,
                format!("reclaiming slots in the chunk map of bitmap {}", h.bitmap),
                &e,
            )
        })?;
        let (compact, leaks) = opened.map_err(|p| {
            let what = match p {
                MapProblem::Shadow(n) => format!("shadow slot {n} is outside the shadow or named twice"),
                MapProblem::Overflow(n) => format!(
                    "overflow slot {n} of overflow {} is outside it or used by another chunk or set",
                    h.overflow
                ),
                MapProblem::NoOverflow => "chunks are kept on an overflow volume, but none is attached".into(),
            };
            invalid(format!(
                "the chunk map in bitmap volume {} of set {name} does not hold together: {what}; \
                 the shadow's point in time cannot be trusted: disable the set and enable it again",
                h.bitmap
            ))
        })?;
        if leaks > 0 {
            log::warn!(
                "set {name}: reclaimed {leaks} slot(s) of its compact shadow that an interrupted \
                 copy-on-write had taken without preserving a chunk in them"
            );
        }
        let compact = Arc::new(compact);
        Ok(ShadowVolume {
            vol: compact.clone(),
            compact: Some(compact),
        })
    }

    pub fn overflow(&self, name: &str) -> Result<Arc<Overflow>> {
        self.tables()
            .overflows
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(format!("no overflow volume named '{name}'")))
    }

    pub fn overflows(&self) -> Vec<Arc<Overflow>> {
        self.tables().overflows.values().cloned().collect()
    }

    pub fn overflow_records(&self) -> Vec<OverflowRecord> {
        self.overflows()
            .iter()
            .map(|o| OverflowRecord {
                name: o.name.clone(),
                path: o.path.clone(),
            })
            .collect()
    }

    /// Initialise `path` as overflow volume `name` (default: its file name) of `chunk_size`
    /// bytes a chunk. The caller records it, or takes it back with `overflow_withdraw`.
    pub fn overflow_init(
        &self,
        path: &str,
        name: Option<&str>,
        chunk_size: u64,
    ) -> Result<(Arc<Overflow>, InitUndo)> {
        super::check_chunk_size(chunk_size)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => std::path::Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        check_set_name(&name).map_err(|_| {
            invalid(format!(
                "overflow name '{name}' is not valid: use 1 to 255 letters, digits or . _ - + @ : \
                 (not starting with -)"
            ))
        })?;
        let vol = self.open_volume("overflow", path)?;
        let id = vol.id();
        {
            let t = self.tables();
            if let Some(o) = t.overflows.values().find(|o| o.vol.id() == id) {
                return Err(if o.in_use() {
                    busy(format!(
                        "volume {path} is overflow {}, attached to set(s) {}: detach it from them \
                         ('detach'), then delete it, before initialising it again",
                        o.name,
                        o.attached_sets().join(", ")
                    ))
                } else {
                    exists(format!(
                        "volume {path} is overflow {} already; 'overflow delete {}' first to \
                         initialise it again",
                        o.name, o.name
                    ))
                });
            }
            if t.overflows.contains_key(&name) {
                return Err(exists(format!(
                    "an overflow volume named '{name}' exists already"
                )));
            }
            if let Some((set, role)) = t.taken.get(&id) {
                return Err(exists(format!(
                    "volume {path} is the {role} of set {set}; an overflow volume must be a volume of its own"
                )));
            }
            if t.masters.contains_key(&id) {
                return Err(exists(format!(
                    "volume {path} is a master volume; an overflow volume must be a volume of its own"
                )));
            }
        }
        if slot_end(vol.len(), chunk_size) < 2 {
            return Err(invalid(format!(
                "overflow volume {path} ({} bytes) is smaller than two chunks of {chunk_size} \
                 bytes (its first chunk holds its header): use a larger volume",
                vol.len()
            )));
        }
        let mut old = vec![0u8; 4096.min(vol.len()) as usize];
        vol.read_at(&mut old, 0)
            .map_err(|e| Error::io(format!("reading overflow volume {path}"), &e))?;
        let o = Overflow::init(vol.clone(), &name, path, chunk_size, new_bitmap_id())
            .map_err(|e| Error::io(format!("writing the header of overflow volume {path}"), &e))?;
        let o = Arc::new(o);
        self.tables().overflows.insert(name.clone(), o.clone());
        log::info!("initialised overflow volume {name} on {path}");
        Ok((o, InitUndo { name, old }))
    }

    /// Take back an `overflow_init` whose record could not be written: the volume's first bytes
    /// are put back.
    pub fn overflow_withdraw(&self, undo: InitUndo) {
        let o = self.tables().overflows.remove(&undo.name);
        if let Some(o) = o {
            if let Err(e) = o.vol.write_at(&undo.old, 0).and_then(|_| o.vol.sync()) {
                log::error!("cannot put back the first bytes of {}: {e}", o.path);
            }
        }
    }

    /// Whether `overflow_delete` would be refused, and why; changes nothing.
    pub fn check_overflow_delete(&self, name: &str) -> Result<Arc<Overflow>> {
        let o = self.overflow(name)?;
        if o.in_use() {
            return Err(busy(format!(
                "overflow {name} is attached to set(s) {}: detach it from them first ('detach'; a \
                 set holding chunks in it frees them with 'update shadow')",
                o.attached_sets().join(", ")
            )));
        }
        Ok(o)
    }

    /// Forget overflow `name` (no set may use it) and erase its header.
    pub fn overflow_delete(&self, name: &str) -> Result<()> {
        let o = self.check_overflow_delete(name)?;
        self.tables().overflows.remove(name);
        if let Err(e) = o.wipe() {
            log::warn!(
                "overflow {name}: could not erase the header of {}: {e}",
                o.path
            );
        }
        log::info!("deleted overflow volume {name} ({})", o.path);
        Ok(())
    }

    /// Bring back the overflow volumes in the registry (before the sets, which attach to them).
    pub fn restore_overflows(&self, records: &[OverflowRecord]) -> Vec<(OverflowRecord, Error)> {
        let mut failed = Vec::new();
        for rec in records {
            let restored =
                self.open_volume("overflow", &rec.path)
                    .and_then(|vol| match OverflowHeader::read(vol.as_ref()) {
                        Some(h) if h.name == rec.name => {
                            let o = Arc::new(Overflow::with_header(vol, &rec.path, h));
                            self.tables().overflows.insert(rec.name.clone(), o);
                            Ok(())
                        }
                        _ => Err(invalid(format!(
                            "volume {} no longer holds the header of overflow {}",
                            rec.path, rec.name
                        ))),
                    });
            if let Err(e) = restored {
                log::error!("overflow {} could not be restored: {e}", rec.name);
                failed.push((rec.clone(), e));
            }
        }
        failed
    }

    /// Attach overflow `which` (a name or a volume path) to the compact set `name`.
    pub fn attach(&self, name: &str, which: &str) -> Result<()> {
        let set = self.set(name)?;
        let Some(compact) = set.compact.clone() else {
            return Err(invalid(format!(
                "set {name} is not a compact dependent set (its shadow is not smaller than its \
                 master): only a compact set spills into an overflow volume"
            )));
        };
        if let Some(o) = compact.overflow() {
            return Err(exists(format!(
                "set {name} has overflow {} attached already; detach it first",
                o.name
            )));
        }
        if set.is_offline() {
            return Err(not_permitted(format!(
                "set {name} is offline ({}); reset it first",
                set.last_error().unwrap_or_default()
            )));
        }
        let o = self.find_overflow(which)?;
        if o.chunk_size != set.chunk_size {
            return Err(invalid(format!(
                "overflow {} has chunks of {} bytes, set {name} of {}: an overflow serves only \
                 sets of its chunk size",
                o.name, o.chunk_size, set.chunk_size
            )));
        }
        set.record(|h| {
            h.overflow = o.name.clone();
            h.overflow_id = o.id;
        })?;
        // No slot of it is used yet: nothing can conflict.
        let _ = o.attach(name, &[]);
        compact.set_overflow(Some(o.clone()));
        log::info!("set {name}: attached overflow {}", o.name);
        Ok(())
    }

    fn find_overflow(&self, which: &str) -> Result<Arc<Overflow>> {
        if let Ok(o) = self.overflow(which) {
            return Ok(o);
        }
        if !which.starts_with('/') {
            return Err(not_found(format!(
                "no overflow volume named '{which}'; initialise one with 'overflow init VOLUME \
                 [NAME]'"
            )));
        }
        if let Some(o) = self.overflows().into_iter().find(|o| o.path == which) {
            return Ok(o);
        }
        // Another name of a known overflow volume (a link, a loop device) is that volume.
        let vol = self.open_volume("overflow", which)?;
        if let Some(o) = self
            .overflows()
            .into_iter()
            .find(|o| o.vol.id() == vol.id())
        {
            return Ok(o);
        }
        Err(match OverflowHeader::read(vol.as_ref()) {
            None => invalid(format!(
                "{which} is not an initialised overflow volume; initialise it with 'overflow init \
                 {which}'"
            )),
            Some(h) => not_found(format!(
                "{which} holds overflow {}, which this daemon does not know (deleted, or made \
                 elsewhere); initialise it again with 'overflow init {which}'",
                h.name
            )),
        })
    }

    /// Detach the overflow of set `name`; refused while the set holds chunks in it.
    pub fn detach(&self, name: &str) -> Result<()> {
        let set = self.set(name)?;
        let Some(o) = set.compact.as_ref().and_then(|c| c.overflow()) else {
            return Ok(());
        };
        // No copy-on-write may take a slot of it meanwhile.
        let _gate = set.gate_write();
        let held = o.used_by(name);
        if held > 0 {
            return Err(busy(format!(
                "set {name} holds {held} chunk(s) of its point in time in overflow {}; 'update \
                 shadow' takes a new point in time and frees them, then detach",
                o.name
            )));
        }
        set.record(|h| {
            h.overflow.clear();
            h.overflow_id = 0;
        })?;
        if let Some(c) = &set.compact {
            c.set_overflow(None);
        }
        o.detach(name);
        log::info!("set {name}: detached overflow {}", o.name);
        Ok(())
    }

    /// Check the slot accounting of every compact set and overflow volume against the chunk
    /// maps: no slot is mapped twice, every pool counts exactly the slots its maps name, every
    /// overflow's count is the sum over its sets, and (online sets) every mapped chunk is
    /// marked in a bitmap. Err says what disagrees. For tests and checkers: call it while no
    /// I/O runs.
    pub fn check_slots(&self) -> std::result::Result<(), String> {
        let mut overflow_slots: std::collections::HashMap<String, std::collections::HashSet<u64>> =
            Default::default();
        for set in self.sets() {
            let Some(c) = &set.compact else { continue };
            let mut shadow = std::collections::HashSet::new();
            let mut spilled = 0u64;
            for (chunk, slot) in c.map().mapped() {
                match slot {
                    super::chunkmap::Slot::Shadow(n) => {
                        if n >= c.slots || !shadow.insert(n) {
                            return Err(format!(
                                "set {}: shadow slot {n} mapped twice or outside",
                                set.name
                            ));
                        }
                    }
                    super::chunkmap::Slot::Overflow(n) => {
                        let Some(o) = c.overflow() else {
                            return Err(format!(
                                "set {}: chunk {chunk} on an overflow, none attached",
                                set.name
                            ));
                        };
                        if !overflow_slots.entry(o.name.clone()).or_default().insert(n) {
                            return Err(format!("overflow {}: slot {n} mapped twice", o.name));
                        }
                        spilled += 1;
                    }
                }
                if !set.is_offline()
                    && !set.tracking.test(Map::Shadow, chunk)
                    && !set.tracking.test(Map::Copy, chunk)
                {
                    return Err(format!(
                        "set {}: chunk {chunk} holds a slot but no bit",
                        set.name
                    ));
                }
            }
            let (shadow_used, overflow_used) = c.usage();
            if shadow_used != shadow.len() as u64 || overflow_used != spilled {
                return Err(format!(
                    "set {}: pools count {shadow_used}+{overflow_used} slots, the map names {}+{spilled}",
                    set.name,
                    shadow.len()
                ));
            }
        }
        for o in self.overflows() {
            let st = o.status();
            let mapped = overflow_slots.get(&o.name).map_or(0, |s| s.len() as u64);
            let by_sets: u64 = st.sets.iter().map(|(_, n)| n).sum();
            if st.used != mapped || st.used != by_sets || st.used > st.total {
                return Err(format!(
                    "overflow {}: {} used of {}, the maps name {mapped}, its sets count {by_sets}",
                    o.name, st.used, st.total
                ));
            }
        }
        Ok(())
    }

    /// The overflow the header of a set being restored names, checked by its id.
    pub(super) fn overflow_of(
        &self,
        set: &str,
        tracking: &Tracking,
    ) -> Result<Option<Arc<Overflow>>> {
        let h = tracking.header();
        if h.overflow.is_empty() {
            return Ok(None);
        }
        match self.tables().overflows.get(&h.overflow) {
            Some(o) if o.id == h.overflow_id => Ok(Some(o.clone())),
            Some(o) => Err(invalid(format!(
                "set {set} spills into overflow {}, but volume {} now holds another overflow of \
                 that name",
                h.overflow, o.path
            ))),
            None => Err(not_found(format!(
                "set {set} spills into overflow {}, which could not be restored (see the log)",
                h.overflow
            ))),
        }
    }
}
