//! Export, import and join: a shadow handed to another host, run there with its own change
//! tracking, and joined back so that only the chunks changed on either side move.
//!
//! - `export`: an independent, settled set lets go of its shadow (status `exported`), after
//!   writing the export record beside it (`bundle`); master changes go on being tracked.
//! - `import` (the other host): a set with no master whose bitmap volume records every write
//!   to the shadow (status `imported`); its `disable` leaves that bitmap final (`RELEASED`).
//! - `join` (back home): the final bitmap's chunks join the set's own, then the shadow is
//!   served again; the next update moves exactly the chunks changed on either side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::bundle::{self, ExportRecord};
use super::enable::{check_chunk_size, check_set_name, Enabled};
use super::error::{busy, exists, invalid, not_permitted, Error, Kind, Result};
use super::header::{self, flags, new_uuid, uuid_text, Durability, Header, SetKind};
use super::set::{self, Set};
use super::swappable::Absent;
use super::tracking::{self, Map, Tracking};
use super::volume::{Volume, VolumeId};
use super::Engine;

/// Why an imported set's master refuses I/O (none reaches it: the control tree does not
/// serve it).
const NO_MASTER: &str = "an imported set has no master on this host";

/// A made-up identity, one per call, for a volume that is not here (an imported set's master,
/// an exported shadow that cannot be looked at): it shares no table entry with any other
/// volume of this host.
pub(super) fn absent_id() -> VolumeId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    VolumeId(u64::MAX - 3, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The stand-in master of an imported set of `size` bytes.
pub(super) fn absent_master(size: u64) -> Arc<dyn Volume> {
    Arc::new(Absent::new(size, absent_id(), NO_MASTER))
}

impl Engine {
    /// Export set `name`'s shadow: check, write the export record, record the export, let go
    /// of the shadow. Refused (nothing changed) unless `Set::check_exportable` passes.
    pub fn export(&self, name: &str) -> Result<ExportRecord> {
        let set = self.set(name)?;
        set.check_exportable()?;
        set.hold_for_export(true);
        let result = self.write_record_and_export(&set);
        if result.is_err() {
            set.hold_for_export(false);
            bundle::discard_pending(&set.paths.shadow);
        }
        result
    }

    fn write_record_and_export(&self, set: &Arc<Set>) -> Result<ExportRecord> {
        // Checked again now that no shadow I/O can start: a file opened meanwhile keeps it.
        set.check_exportable()?;
        let shadow = &set.paths.shadow;
        let h = set.header();
        let crc = bundle::chunk_list_crc(set.shadow.as_ref(), set.size, set.chunk_size)
            .map_err(|e| Error::io(format!("reading shadow {shadow} for its export record"), &e))?;
        let rec = ExportRecord {
            format: bundle::FORMAT,
            uuid: uuid_text(h.uuid),
            set: set.name.clone(),
            size: set.size,
            chunk_size: set.chunk_size,
            chunks: set.chunks,
            pit_time: h.pit_time,
            exported_from: bundle::host_name(),
            exported_at: set::now_secs(),
            shadow: shadow.clone(),
            chunk_list_crc32: crc,
        };
        bundle::write_pending(&rec).map_err(|e| {
            Error::new(
                Kind::Access,
                format!(
                    "cannot write the export record {}: {e}; export needs to write it beside the \
                     shadow",
                    bundle::path_of(shadow).display()
                ),
            )
        })?;
        set.mark_exported()?;
        if let Err(e) = bundle::commit(shadow) {
            // The export is recorded; the next start puts the record in place.
            log::error!(
                "set {}: exported, but the export record could not be put in place ({e}); \
                 restart iifs to finish it",
                set.name
            );
        }
        log::info!(
            "exported set {} (uuid {}): shadow {shadow} let go, record {}",
            set.name,
            rec.uuid,
            bundle::path_of(shadow).display()
        );
        Ok(rec)
    }

    /// Take in a shadow another host exported, as set `name` (default: the shadow's file name)
    /// whose bitmap volume `bitmap` records every write to it. Like `enable_prepared`: the
    /// caller records it, then `start`s it (or `withdraw`s it).
    pub fn import_prepared(
        &self,
        shadow_path: &str,
        bitmap_path: &str,
        name: &str,
        durability: Durability,
    ) -> Result<Enabled<'_>> {
        check_set_name(name)?;
        if self.tables().sets.contains_key(name) {
            return Err(exists(format!("a set named '{name}' exists already")));
        }
        // Opened first: the opener refuses a path into an iifs mount before anything beside
        // it is read.
        let shadow = self.open_volume("shadow", shadow_path)?;
        let rec = bundle::read(shadow_path).map_err(invalid)?;
        check_chunk_size(rec.chunk_size)
            .map_err(|e| invalid(format!("export record of {shadow_path}: {}", e.message)))?;
        let origin = rec.origin().unwrap_or(0);
        if let Some(what) = self.use_of(shadow.id()) {
            return Err(exists(format!(
                "shadow volume {shadow_path} is {what} on this host; an exported shadow is \
                 imported on another host (or joined back here)"
            )));
        }
        if shadow.len() < rec.size {
            return Err(invalid(format!(
                "shadow volume {shadow_path} is {} bytes, smaller than the {} bytes its export \
                 record describes: it was not copied whole",
                shadow.len(),
                rec.size
            )));
        }
        let crc = bundle::chunk_list_crc(shadow.as_ref(), rec.size, rec.chunk_size)
            .map_err(|e| Error::io(format!("reading shadow {shadow_path}"), &e))?;
        if crc != rec.chunk_list_crc32 {
            return Err(invalid(format!(
                "shadow volume {shadow_path} does not hold the image its export record describes \
                 (chunk checksum {crc}, the record says {}): it was changed or not copied whole \
                 since set {} exported it",
                rec.chunk_list_crc32, rec.set
            )));
        }
        let (bitmap, missing) = self.open_or_create("bitmap", bitmap_path, true)?;
        let mut undo = self.bitmap_undo(bitmap_path, missing, bitmap.len());
        if bitmap.id() == shadow.id() {
            return Err(invalid(
                "shadow and bitmap must be two different volumes".to_string(),
            ));
        }
        if let Some(what) = self.use_of(bitmap.id()) {
            return Err(exists(format!(
                "bitmap volume {bitmap_path} is already {what}"
            )));
        }
        check_import_bitmap(&bitmap, bitmap_path, origin)?;
        let header = Header {
            seq: 0,
            kind: SetKind::Independent,
            chunk_size: rec.chunk_size as u32,
            master_size: rec.size,
            shadow_size: shadow.len(),
            flags: flags::IMPORTED,
            throttle_delay_ms: 0,
            throttle_units: set::DEFAULT_UNITS,
            pit_time: rec.pit_time,
            durability,
            name: name.to_string(),
            master: String::new(),
            shadow: shadow_path.to_string(),
            bitmap: bitmap_path.to_string(),
            layout: header::Layout::Checked,
            copy_total: 0,
            generation: 1,
            bitmap_id: 0,
            last_error: String::new(),
            shadow_slots: 0,
            overflow: String::new(),
            overflow_id: 0,
            group_seq: 0,
            uuid: new_uuid(),
            origin,
        };
        let tracking = self.write_bitmap(name, bitmap, &mut undo, header)?;
        let shadow = self.shadow_of(name, shadow, &tracking, None)?;
        let set = self.install(absent_master(rec.size), shadow, tracking, false)?;
        log::info!(
            "imported shadow {shadow_path} of set {} (uuid {}, exported from {}) as set {name}",
            rec.set,
            rec.uuid,
            rec.exported_from
        );
        let note = Some(format!(
            "imported shadow of set {} (uuid {}) exported from {}; writes to it are tracked in \
             {bitmap_path}",
            rec.set, rec.uuid, rec.exported_from
        ));
        Ok(Enabled { set, note, undo })
    }

    /// Join the exported shadow of set `name` back, merging `bitmap_path`, the bitmap volume
    /// of the set that imported it (disabled there). Returns the chunks that now differ.
    pub fn join(&self, name: &str, bitmap_path: &str) -> Result<u64> {
        let set = self.set(name)?;
        if !set.is_exported() {
            return Err(not_permitted(format!(
                "set {name} is not exported; join takes back the shadow of an exported set"
            )));
        }
        let theirs_vol = self.open_volume("bitmap", bitmap_path)?;
        if theirs_vol.id() == set.tracking.vol.id() {
            return Err(invalid(format!(
                "{bitmap_path} is set {name}'s own bitmap volume; join takes the bitmap volume of \
                 the set that imported the shadow on the other host"
            )));
        }
        if let Some(what) = self.use_of(theirs_vol.id()) {
            return Err(busy(format!(
                "bitmap volume {bitmap_path} is {what} on this host; disable that set first"
            )));
        }
        let theirs = read_import_bitmap(theirs_vol, bitmap_path, &set)?;
        // The shadow comes back under its name: the same file, or a copy brought back.
        let shadow_path = set.paths.shadow.clone();
        let vol = self.open_volume("shadow", &shadow_path)?;
        if vol.id() != set.shadow.id() {
            if let Some(what) = self.use_of(vol.id()) {
                return Err(exists(format!(
                    "shadow volume {shadow_path} is now {what}; put set {name}'s shadow back \
                     under its name"
                )));
            }
            log::info!("set {name}: the shadow at {shadow_path} is another file than the one exported (a copy brought back)");
        }
        if vol.len() < set.size {
            return Err(invalid(format!(
                "shadow volume {shadow_path} is {} bytes now, smaller than set {name} ({} bytes)",
                vol.len(),
                set.size
            )));
        }
        let merged = theirs.count(Map::Shadow);
        let old_id = set.shadow.id();
        let differ = set.join(&theirs, vol)?;
        {
            let mut t = self.tables();
            t.taken.remove(&old_id);
            t.taken
                .insert(set.shadow.id(), (name.to_string(), "shadow"));
        }
        if let Err(e) = bundle::remove(&shadow_path) {
            log::warn!(
                "set {name}: could not remove the export record {}: {e}",
                bundle::path_of(&shadow_path).display()
            );
        }
        log::info!(
            "joined set {name}: {merged} chunks changed on the importing host; {differ} chunks \
             now differ"
        );
        Ok(differ)
    }

    /// At start, a set recorded as exported: its shadow is not opened (another host, or
    /// another daemon here, may hold it); its export record is put in place if a crash came
    /// between recording the export and that.
    pub(super) fn exported_shadow(&self, h: &Header) -> Arc<dyn Volume> {
        if let Err(e) = bundle::commit(&h.shadow) {
            log::error!(
                "set {}: the export record {} could not be put in place: {e}",
                h.name,
                bundle::path_of(&h.shadow).display()
            );
        }
        let id = self
            .opener
            .identify(&h.shadow)
            .unwrap_or_else(|_| absent_id());
        Arc::new(Absent::new(
            h.shadow_size,
            id,
            "the shadow is exported to another host",
        ))
    }
}

/// Refuse to import onto a bitmap volume that holds something a person would lose: the
/// exporting set's own bitmap (shared storage), or a record of writes an earlier import of the
/// same shadow tracked and nobody joined. An import of it that tracked nothing (a crash before
/// it was recorded) may be overwritten.
fn check_import_bitmap(bitmap: &Arc<dyn Volume>, path: &str, origin: u128) -> Result<()> {
    // Bytes past a short volume's end read as zeros: no header.
    let Ok(Some((h, _))) = tracking::peek_header(bitmap.as_ref()) else {
        return Ok(());
    };
    if h.uuid == origin && h.flags & flags::IMPORTED == 0 {
        return Err(exists(format!(
            "bitmap volume {path} is the bitmap volume of set {} itself, the set that exported \
             this shadow; give the import a bitmap volume of its own",
            h.name
        )));
    }
    if h.flags & flags::IMPORTED != 0 && h.origin == origin {
        // A bitmap that cannot be read counts as holding changes: nothing is overwritten.
        let tracked = Tracking::open(bitmap.clone())
            .map(|t| t.count(Map::Shadow))
            .unwrap_or(1);
        if tracked > 0 {
            return Err(exists(format!(
                "bitmap volume {path} holds the changes an earlier import of this shadow (set {}) \
                 tracked ({tracked} chunks) and that were not joined; join it on the exporting \
                 host, or give this import another bitmap volume",
                h.name
            )));
        }
    }
    Ok(())
}

/// The bitmap volume of the set that imported set `set`'s shadow, checked for `join`: a
/// sound iifs bitmap volume, of an import of this very set, released (disabled there), of the
/// same chunks.
fn read_import_bitmap(vol: Arc<dyn Volume>, path: &str, set: &Set) -> Result<Tracking> {
    let theirs = Tracking::open(vol).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => invalid(format!(
            "bitmap volume {path} cannot be joined: {e}; it is not an iifs bitmap volume, or it \
             is damaged"
        )),
        _ => Error::io(format!("reading bitmap volume {path}"), &e),
    })?;
    let h = theirs.header();
    let name = &set.name;
    if h.flags & flags::IMPORTED == 0 {
        return Err(invalid(format!(
            "bitmap volume {path} is the bitmap of set {}, which is not an imported set; join \
             takes the bitmap volume of the set that imported this shadow on the other host",
            h.name
        )));
    }
    if h.origin != set.uuid() {
        return Err(invalid(format!(
            "bitmap volume {path} tracked an import of another set (uuid {}), not of set {name} \
             (uuid {})",
            uuid_text(h.origin),
            uuid_text(set.uuid())
        )));
    }
    if h.flags & flags::RELEASED == 0 {
        return Err(busy(format!(
            "bitmap volume {path} is still in use by imported set {} on its host; disable that \
             set there first (its disable writes the final bitmap)",
            h.name
        )));
    }
    if h.chunk_size as u64 != set.chunk_size || h.master_size != set.size {
        return Err(invalid(format!(
            "bitmap volume {path} tracks {} bytes in chunks of {}, set {name} has {} bytes in \
             chunks of {}",
            h.master_size, h.chunk_size, set.size, set.chunk_size
        )));
    }
    Ok(theirs)
}
