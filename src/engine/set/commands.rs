//! The commands of a set: start of an update or a full copy, abort, wait, the copy throttle.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::error::{busy, invalid, not_permitted, Error, Result, Role};
use super::super::header::flags;
use super::super::tracking::Map;
use super::super::volume::Volume;
use super::{direction_flag, now_secs, Direction, Set, FULL_COPY, MAX_DELAY_MS, MAX_UNITS};

pub fn check_params(delay_ms: u32, units: u32) -> Result<()> {
    if delay_ms > MAX_DELAY_MS || units == 0 || units > MAX_UNITS {
        return Err(invalid(format!(
            "the copy throttle takes DELAY in milliseconds (0..{MAX_DELAY_MS}) and UNITS in chunks (1..{MAX_UNITS})"
        )));
    }
    Ok(())
}

impl Set {
    /// Start an update (only the chunks marked as differing move) or a full copy (every
    /// chunk moves) in direction `dir`; the copier does the moving in the background.
    pub fn start_copy(self: &Arc<Self>, dir: Direction, full: bool) -> Result<()> {
        self.check_can_copy(dir)?;
        let _gate = self.gate_write();
        // Re-check under the gate: another command may have started meanwhile.
        self.check_can_copy(dir)?;
        self.sync_source(dir)?;
        self.start_copy_held(dir, full, None)
    }

    /// The source's content now becomes the target's: under strict durability it must be on
    /// disk first, or a power loss could take back writes the new image already shows. The
    /// caller holds the gate, which holds writers back meanwhile.
    pub(in crate::engine) fn sync_source(&self, dir: Direction) -> Result<()> {
        if self.strict() {
            let (source, path, role) = match dir {
                Direction::Shadow => (self.master.vol.as_ref(), &self.paths.master, Role::Master),
                Direction::Master => (
                    self.shadow.as_ref() as &dyn Volume,
                    &self.paths.shadow,
                    Role::Shadow,
                ),
            };
            source
                .sync()
                .map_err(|e| self.fail(Error::io_on(role, format!("sync of {path}"), &e)))?;
        }
        Ok(())
    }

    /// `start_copy` once the caller holds the gate and has checked and synced
    /// (`check_can_copy`, `sync_source`). A group operation gives its number, recorded with
    /// the set's new state in the same header write.
    pub(in crate::engine) fn start_copy_held(
        self: &Arc<Self>,
        dir: Direction,
        full: bool,
        group_seq: Option<u64>,
    ) -> Result<()> {
        // A compact shadow has no room for a full copy: `copy shadow` is an update (as in the
        // original), and `copy master` of a dependent set is one anyway.
        let full = full && self.compact.is_none();
        let group = |h: &mut super::super::header::Header| {
            if let Some(seq) = group_seq {
                h.group_seq = seq;
            }
        };
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
            (Direction::Shadow, true, false) => self
                .tracking
                .reset_all(|h| {
                    h.flags &= !(flags::TO_SHADOW
                        | flags::TO_MASTER
                        | flags::ACTIVE
                        | FULL_COPY
                        | flags::OUT_OF_SPACE);
                    h.pit_time = pit;
                    group(h);
                })
                .map(|()| self.flags.fetch_and(!flags::OUT_OF_SPACE, Ordering::SeqCst))
                .and_then(|_| self.release_all_slots().map_err(std::io::Error::other)),
            // A dependent shadow's unchanged chunks are the master's: copy = update, and the
            // differ bits stay until each chunk is back on the master.
            (Direction::Master, true, _) => self.tracking.bulk(flags::PENDING_OR_COPY, |h| {
                h.flags &= !FULL_COPY;
                h.flags |= flags::TO_MASTER | flags::ACTIVE;
                group(h);
            }),
            (dir, _, _) => self
                .tracking
                .bulk(copy_ops | flags::PENDING_CLEAR_SHADOW, |h| {
                    h.flags &= !FULL_COPY;
                    h.flags |= direction_flag(dir) | flags::ACTIVE | full_flag;
                    if dir == Direction::Shadow {
                        h.pit_time = pit;
                    }
                    group(h);
                }),
        };
        result.map_err(|e| self.fail(self.bitmap_error("write", &e)))?;
        // A compact chunk that lost its point in time has nothing to copy to the master (the
        // copy skips such chunks anyway, should a crash come before this).
        if dir == Direction::Master && self.is_out_of_space() {
            let lost: Vec<u64> = (0..self.chunks)
                .filter(|&c| self.slotless(c) && self.tracking.test(Map::Copy, c))
                .collect();
            self.tracking
                .clear_now(Map::Copy, &lost)
                .map_err(|e| self.fail(self.bitmap_error("write", &e)))?;
        }
        let h = self.tracking.header();
        self.flags.store(h.flags, Ordering::SeqCst);
        // The copy's control is the copier's, given by the engine (see `CopyControl`).
        if h.flags & flags::ACTIVE != 0 {
            self.copier.clone().start(self);
        }
        Ok(())
    }

    pub(in crate::engine) fn check_can_copy(&self, dir: Direction) -> Result<()> {
        self.check_not_away(dir)?;
        if self.is_suspended() {
            return Err(not_permitted(format!(
                "set {} is suspended; resume it first",
                self.name
            )));
        }
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
            // Out of space: the shadow is not a whole image. A copy to the master already
            // recorded may go on (it moves only chunks that have their slots; the lost ones
            // were changed on the master after it started).
            (Direction::Master, None) if self.is_out_of_space() => {
                return Err(Error::new(
                    super::super::error::Kind::NoSpace,
                    format!(
                    "set {} is out of space: chunks of its shadow could not be preserved, so the \
                         shadow is not a whole image to copy onto the master; 'update shadow' \
                         takes a new point in time",
                    self.name
                ),
                ))
            }
            (Direction::Shadow, Some(Direction::Master)) => {
                return Err(busy(format!(
                "set {} has an unfinished copy to the master; finish it with 'update master' first",
                self.name
            )))
            }
            _ => {}
        }
        // A suspended set on this master does not protect its point in time: its master stays
        // as it is until the set is resumed.
        if dir == Direction::Master {
            if let Some(s) = self
                .master
                .sets()
                .iter()
                .find(|s| s.name() != self.name && s.is_suspended())
            {
                return Err(not_permitted(format!(
                    "set {} on master {} is suspended: the master takes no copy until it is \
                     resumed",
                    s.name(),
                    self.paths.master
                )));
            }
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

    /// Stop the copy in progress (no-op when none runs); the direction stays recorded.
    pub fn abort_copy(&self) {
        self.copier.abort();
    }

    /// Stop the copier for a daemon shutdown: the copy stays recorded and resumes at next start.
    pub fn stop_copier(&self) {
        self.copier.stop();
    }

    /// Block until no copy runs. Err if the set went offline meanwhile.
    pub fn wait_copy(&self) -> Result<()> {
        self.wait_copy_or(&|| false)
    }

    /// As `wait_copy`, but give up (with Ok, the copy going on) as soon as `stop` says so;
    /// `stop` is asked every 50 ms. The caller knows why it stopped.
    pub fn wait_copy_or(&self, stop: &dyn Fn() -> bool) -> Result<()> {
        if self
            .copier
            .wait(&|| self.copy_active() && !self.is_offline(), stop)
        {
            return Ok(());
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
}
