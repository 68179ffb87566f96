//! Enable: the checks a new set passes before anything is written, the making of its bitmap
//! volume, and the undo that puts the bitmap volume back as it was when the set is refused or
//! withdrawn.

use std::io;
use std::sync::Arc;

use super::error::{self, exists, invalid, Error, Kind, Result};
use super::header::{self, flags, new_uuid, Durability, Header, SetKind};
use super::memory;
use super::opener::Opener;
use super::set::{self, Set};
use super::tracking::Tracking;
use super::volume::{Volume, VolumeId};
use super::Engine;

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

/// A set `Engine::enable_prepared` made: in the tables, its copy not started yet.
pub struct Enabled<'a> {
    pub set: Arc<Set>,
    /// What the enable did that the administrator should hear of (a bitmap file it made).
    pub note: Option<String>,
    pub(super) undo: BitmapUndo<'a>,
}

/// How to put a bitmap volume back as it was before a refused enable: remove the file the
/// enable made, or write back the bytes it overwrote and give it back its old length.
pub(super) struct BitmapUndo<'a> {
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

impl Engine {
    /// The undo of a bitmap volume a new set is about to write (`created`: the open made it).
    pub(super) fn bitmap_undo(&self, path: &str, created: bool, old_len: u64) -> BitmapUndo<'_> {
        BitmapUndo {
            opener: self.opener.as_ref(),
            path: path.to_string(),
            created,
            old_len,
            grown: false,
            saved: None,
            kept: false,
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
        let (bitmap, missing) = self.open_or_create("bitmap", &spec.bitmap, true)?;
        // From here on every refusal puts the bitmap volume back as it was (see `BitmapUndo`).
        let mut undo = self.bitmap_undo(&spec.bitmap, missing, bitmap.len());
        let (mid, sid, bid) = (master.id(), shadow.id(), bitmap.id());
        if mid == sid || mid == bid || sid == bid {
            return Err(invalid(
                "master, shadow and bitmap must be three different volumes (a loop device is \
                 the same volume as the file behind it)"
                    .to_string(),
            ));
        }
        for (id, role, path) in [
            (sid, "shadow", &spec.shadow),
            (bid, "bitmap", &spec.bitmap),
            (mid, "master", &spec.master),
        ] {
            // Sets may share a master; every other volume is a set's own.
            if role == "master" && self.tables().masters.contains_key(&id) {
                continue;
            }
            if let Some(what) = self.use_of(id) {
                return Err(exists(format!(
                    "{role} volume {path} is already {what}; a set's volumes must be volumes \
                     of their own (only a master may be shared)"
                )));
            }
        }
        {
            let t = self.tables();
            // Every set of one master must agree on its size: the I/O paths index each set's
            // bitmaps by master offsets.
            if let Some(m) = t.masters.get(&mid) {
                if m.len() != master.len() {
                    let names: Vec<String> =
                        m.sets().iter().map(|s| s.name().to_string()).collect();
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
        // A dependent shadow smaller than its master is compact: its chunks get slots on demand.
        let shadow_slots = if shadow.len() >= master.len() {
            0
        } else if spec.kind == SetKind::Independent {
            return Err(invalid(format!(
                "shadow volume {} ({} bytes) is smaller than master {} ({} bytes); an independent shadow must be at least as large",
                spec.shadow, shadow.len(), spec.master, master.len()
            )));
        } else {
            match shadow.len() / spec.chunk_size {
                0 => {
                    return Err(invalid(format!(
                        "shadow volume {} ({} bytes) holds no whole chunk of {} bytes; a compact \
                         shadow needs room for at least one",
                        spec.shadow,
                        shadow.len(),
                        spec.chunk_size
                    )))
                }
                n => n,
            }
        };
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
            shadow_slots,
            overflow: String::new(),
            overflow_id: 0,
            group_seq: 0,
            uuid: new_uuid(),
            origin: 0,
        };
        let tracking = self.write_bitmap(&spec.name, bitmap, &mut undo, header)?;
        // The master's content when the set appears is the point in time: under strict
        // durability it is made durable first.
        let shadow = self.shadow_of(&spec.name, shadow, &tracking, None)?;
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

    /// Write a new set's bitmap volume (`path`, opened as `bitmap`) for `header`: grown if it
    /// is a file too small, the bytes it overwrites kept in `undo`.
    pub(super) fn write_bitmap(
        &self,
        name: &str,
        mut bitmap: Arc<dyn Volume>,
        undo: &mut BitmapUndo<'_>,
        header: Header,
    ) -> Result<Tracking> {
        let path = undo.path.clone();
        header.encode()?;
        let need = header.volume_len();
        // The bytes of the bitmap volume the set overwrites are kept to put back on refusal.
        let keep = undo.old_len.min(need);
        memory::check(name, &header, keep)?;
        if bitmap.len() < need {
            // The grown file is opened anew: drop this descriptor first, or the open would
            // find it again, with its old length.
            drop(bitmap);
            let grown = self
                .opener
                .grow(&path, need)
                .map_err(|e| grow_error(&path, need, &e))?;
            if !grown {
                return Err(Error::new(
                    Kind::TooBig,
                    format!(
                        "bitmap volume {} is too small: it needs {need} bytes (a block device \
                         cannot be grown; use a larger one, a file, or a larger chunk size)",
                        path
                    ),
                ));
            }
            undo.grown = true;
            bitmap = self.open_volume("bitmap", &path)?;
        }
        if keep > 0 {
            let mut old = vec![0u8; keep as usize];
            bitmap
                .read_at(&mut old, 0)
                .map_err(|e| Error::io(format!("reading bitmap volume {}", path), &e))?;
            undo.saved = Some((bitmap.clone(), old));
        }
        let tracking = Tracking::create(bitmap, header).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => Error::new(
                Kind::NoSpace,
                format!(
                    "bitmap volume {} has no space for {need} bytes: free space on its file system",
                    path
                ),
            ),
            _ => Error::io(format!("initialising bitmap volume {}", path), &e),
        })?;
        Ok(tracking)
    }

    /// What volume `id` is here already, for a refusal ("the shadow of set db"), if anything.
    pub(super) fn use_of(&self, id: VolumeId) -> Option<String> {
        let t = self.tables();
        if let Some((set, used)) = t.taken.get(&id) {
            return Some(format!("the {used} of set {set}"));
        }
        if let Some(m) = t.masters.get(&id) {
            let names: Vec<String> = m.sets().iter().map(|s| s.name().to_string()).collect();
            return Some(format!("a master volume (of set {})", names.join(", ")));
        }
        t.overflows
            .values()
            .find(|o| o.vol.id() == id)
            .map(|o| format!("overflow volume {}", o.name))
    }

    /// Start a set `enable_prepared` made (its first copy, for an independent set).
    pub fn start(&self, enabled: Enabled<'_>) -> Arc<Set> {
        let Enabled { set, mut undo, .. } = enabled;
        undo.kept = true;
        if set.copy_active() {
            self.start_copier(&set);
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
                    s.name(),
                    s.last_error()
                        .unwrap_or_else(|| "the master failed".to_string()),
                    s.name()
                ),
            )),
        }
    }

    /// Take back a set `enable_prepared` made (its registry entry could not be written): it is
    /// removed, its shadow left as it is and its bitmap volume put back as it was.
    pub fn withdraw(&self, enabled: Enabled<'_>) -> Result<()> {
        let result = self.remove(&enabled.set.name, false);
        drop(enabled);
        result
    }
}
