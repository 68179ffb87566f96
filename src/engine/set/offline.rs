//! Offline handling of a set: which volumes a failure leaves untrustworthy, what an offline
//! set still serves, and `reset`, which brings it back.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::super::error::{busy, Error, Kind, Result, Role};
use super::super::header::flags;
use super::super::tracking::Map;
use super::{now_secs, Set, FULL_COPY};

/// Calls the hook the daemon registers (it writes the registry) when a set went offline and
/// its bitmap volume could not record it. On a thread of its own: the set's I/O path that
/// failed holds locks the registry writer may need.
#[derive(Default)]
pub struct OfflineNotifier {
    hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl OfflineNotifier {
    /// Run `hook` from now on.
    pub fn set_hook(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        if let Ok(mut h) = self.hook.lock() {
            *h = Some(hook);
        }
    }

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

impl Set {
    /// Which volumes a failure leaves untrustworthy: the one that failed,
    /// and those a copy in progress or a dependent shadow's reliance on the master implies. An
    /// error of no known volume implicates only what the copy in progress was writing.
    pub(super) fn offline_flags(&self, failed: Option<Role>) -> u32 {
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
            // An overflow holds part of the shadow.
            Some(Role::Shadow) | Some(Role::Overflow) => {
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
        self.copier.changed();
    }

    pub(super) fn offline_error(&self) -> Error {
        Error::new(
            Kind::Io,
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
    pub(super) fn shadow_sound(&self) -> bool {
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
    pub(super) fn shadow_writable_offline(&self) -> bool {
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
    pub(super) fn unsettled_advice(&self) -> String {
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

    /// Bring an offline set back. A dependent set starts a fresh point in
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
        let clear = flags::OFFLINE_ALL
            | flags::ACTIVE
            | flags::TO_SHADOW
            | flags::TO_MASTER
            | FULL_COPY
            | flags::OUT_OF_SPACE;
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
            self.tracking
                .reset_all(|h| {
                    h.flags &= !clear;
                    h.pit_time = pit;
                })
                .and_then(|()| self.release_all_slots().map_err(std::io::Error::other))
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
            self.copier.clone().start(self);
        }
        Ok(())
    }
}
