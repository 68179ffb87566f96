//! Restore: the sets recorded in the registry come back from their bitmap volumes at start.

use super::check;
use super::error::{self, exists, invalid, Error, Kind, Result};
use super::header::{self, flags};
use super::memory;
use super::set::Set;
use super::tracking::{self, Tracking};
use super::{exports, Engine, SetRecord};
use std::sync::Arc;

impl Engine {
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
            if set.copy_active() && !set.is_offline() && !set.is_suspended() {
                self.start_copier(&set);
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
        if let Ok(Some((h, _))) = tracking::peek_header(bitmap.as_ref()) {
            memory::check(&rec.name, &h, 0)?;
        }
        // A volume that fails the checker stays as it is: the set is not brought back.
        let report = check::inspect(&bitmap, Some(&rec.recorded()), None)
            .map_err(|e| Error::io(format!("reading bitmap volume {}", rec.bitmap), &e))?;
        if let Some(problem) = report.corruption() {
            return Err(Error::new(
                Kind::Io,
                format!(
                    "{problem} (bitmap volume {} fails its check; it was left as it is: \
                     'iiadm check {}' gives the whole report)",
                    rec.bitmap, rec.name
                ),
            ));
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
        // An imported set has no master here; an exported one's shadow is on another host.
        let master = if h.flags & flags::IMPORTED != 0 {
            exports::absent_master(h.master_size)
        } else {
            self.open_volume("master", &h.master)?
        };
        let shadow = if h.flags & flags::EXPORTED != 0 {
            self.exported_shadow(&h)
        } else {
            self.open_volume("shadow", &h.shadow)?
        };
        let overflow = self.overflow_of(&rec.name, &tracking)?;
        if master.len() != h.master_size {
            return Err(invalid(format!(
                "master volume {} is {} bytes, but set {} was made for {} bytes",
                h.master,
                master.len(),
                h.name,
                h.master_size
            )));
        }
        let shadow_need = if h.is_compact() {
            h.shadow_slots * h.chunk_size as u64
        } else {
            h.master_size
        };
        if shadow.len() < shadow_need {
            return Err(invalid(format!(
                "shadow volume {} is {} bytes, smaller than the {shadow_need} bytes set {} was \
                 made with",
                h.shadow,
                shadow.len(),
                h.name
            )));
        }
        let shadow = self.shadow_of(&rec.name, shadow, &tracking, overflow.clone())?;
        let set = self
            .install(master, shadow, tracking, false)
            .inspect_err(|_| {
                if let Some(o) = &overflow {
                    o.detach(&rec.name);
                }
            })?;
        if rec.suspended {
            set.mark_suspended();
        }
        // A copy of the bitmap volume taken from now on is older than what the registry saves.
        // A set made before sets had an identity gets one in the same write.
        let give_uuid = h.uuid == 0;
        if let Err(e) = set.tracking.update_header(|h| {
            h.generation += 1;
            if give_uuid {
                h.uuid = header::new_uuid();
            }
        }) {
            let e = Error::io_on(
                error::Role::Bitmap,
                format!("write of bitmap {}", rec.bitmap),
                &e,
            );
            set.go_offline(&e);
        }
        Ok(set)
    }
}
