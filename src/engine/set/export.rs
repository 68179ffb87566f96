//! Export and join as a set sees them: whether its state allows an export, the durable change
//! of state, and the shadow volume let go of and taken again. (The export record and the
//! checks of the other host's bitmap are the engine's: `exports`.)

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::error::{busy, not_permitted, Error, Kind, Result, Role};
use super::super::header::flags;
use super::super::tracking::Tracking;
use super::super::volume::Volume;
use super::{Direction, Set};

/// Why an exported shadow's I/O fails (none reaches it: the control tree does not serve it).
const EXPORTED: &str = "the shadow is exported to another host";

impl Set {
    pub fn is_exported(&self) -> bool {
        self.has(flags::EXPORTED)
    }

    pub fn is_imported(&self) -> bool {
        self.has(flags::IMPORTED)
    }

    /// The set's identity (see `Header::uuid`).
    pub fn uuid(&self) -> u128 {
        self.tracking.header().uuid
    }

    /// Err unless the set may be exported now: an independent set whose shadow is a whole,
    /// settled image, that nothing here uses.
    pub fn check_exportable(&self) -> Result<()> {
        let name = &self.name;
        if self.is_exported() {
            return Err(not_permitted(format!(
                "set {name} is already exported; 'join BITMAP' takes its shadow back"
            )));
        }
        if self.is_imported() {
            return Err(not_permitted(format!(
                "set {name} is an imported shadow: it belongs to the host that exported it; \
                 disable it here and join its bitmap there"
            )));
        }
        if self.is_dependent() {
            return Err(not_permitted(format!(
                "set {name} is dependent: its shadow is not a whole image without the master; \
                 only an independent set can be exported"
            )));
        }
        if self.is_suspended() {
            return Err(not_permitted(format!(
                "set {name} is suspended; resume it first"
            )));
        }
        if self.is_offline() {
            return Err(Error::new(
                Kind::Io,
                format!(
                    "set {name} is offline ({}); reset it first",
                    self.last_error().unwrap_or_default()
                ),
            ));
        }
        if self.copy_active() {
            return Err(busy(format!(
                "set {name} is copying; wait for the copy to end ('wait') before exporting"
            )));
        }
        if let Some(dir) = self.direction() {
            return Err(not_permitted(format!(
                "the last copy of set {name} (to the {}) was aborted, so its shadow is not a \
                 whole image; finish it with 'update {}' first",
                dir.word(),
                dir.word()
            )));
        }
        if self.master.copying_to_master(Some(name)).is_some() {
            return Err(busy(format!(
                "another set is copying onto master {}; wait for it before exporting",
                self.paths.master
            )));
        }
        match self.open_files_of(Role::Shadow) {
            0 => Ok(()),
            n => Err(busy(format!(
                "the shadow file of set {name} is open ({n} open): a loop device, a mounted file \
                 system or a process still uses it; close it (umount, losetup -d) before \
                 exporting"
            ))),
        }
    }

    /// Hold the shadow back from local I/O while its export record is made (`true`), or give
    /// it back when the export is refused (`false`).
    pub(in crate::engine) fn hold_for_export(&self, on: bool) {
        let _gate = self.gate_write();
        self.exporting.store(on, Ordering::SeqCst);
    }

    /// Record the export durably and let go of the shadow volume (its lock goes with it, so
    /// another host, or another daemon here, can take it).
    pub(in crate::engine) fn mark_exported(&self) -> Result<()> {
        let _gate = self.gate_write();
        self.record(|h| h.flags |= flags::EXPORTED)?;
        self.flags.fetch_or(flags::EXPORTED, Ordering::SeqCst);
        self.exporting.store(false, Ordering::SeqCst);
        self.shadow.release(EXPORTED);
        Ok(())
    }

    /// Take the shadow back: the chunks the other host changed (`theirs`, its bitmap) join the
    /// chunks that differ here, durably, before the state changes; then the shadow `vol` is
    /// served again. A crash in between leaves the set exported with some bits merged: a
    /// second `join` merges them again (a union is the same however often it is taken).
    /// Returns how many chunks differ now.
    pub(in crate::engine) fn join(&self, theirs: &Tracking, vol: Arc<dyn Volume>) -> Result<u64> {
        let _gate = self.gate_write();
        self.tracking
            .merge_shadow(theirs)
            .map_err(|e| self.fail(self.bitmap_error("write", &e)))?;
        self.record(|h| h.flags &= !flags::EXPORTED)
            .map_err(|e| self.fail(e))?;
        self.flags.fetch_and(!flags::EXPORTED, Ordering::SeqCst);
        self.shadow.swap(vol);
        Ok(self.tracking.count_either())
    }

    /// Err when the set's state forbids a copy or update because its shadow lives on another
    /// host (exported) or its master does (imported).
    pub(in crate::engine) fn check_not_away(&self, dir: Direction) -> Result<()> {
        if self.is_exported() {
            return Err(not_permitted(format!(
                "set {} is exported: its shadow is on another host; 'join BITMAP' takes it back \
                 before 'update {}'",
                self.name,
                dir.word()
            )));
        }
        if self.is_imported() {
            return Err(not_permitted(format!(
                "set {} is an imported shadow with no master here; write to it as you need, \
                 then disable it and join its bitmap on the host that exported it",
                self.name
            )));
        }
        Ok(())
    }

    /// Err when the file of `role` is not served because its volume is on another host.
    pub fn check_here(&self, role: Role) -> Result<()> {
        let away = match role {
            Role::Shadow if self.is_exported() || self.exporting.load(Ordering::SeqCst) => {
                "its shadow is exported to another host ('join BITMAP' takes it back)"
            }
            Role::Master if self.is_imported() => {
                "it is an imported shadow: its master is on the host that exported it"
            }
            _ => return Ok(()),
        };
        Err(not_permitted(format!(
            "the {role} of set {} is not served here: {away}",
            self.name
        )))
    }
}
