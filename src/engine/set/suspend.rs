//! Suspend and resume: a suspended set keeps its state on its bitmap volume (a copy in
//! progress stops and goes on from where it was at resume), its `master` and `shadow` files are
//! not served, and its master takes no writes through any set (its point in time would break).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::error::{busy, invalid, not_permitted, Error, Kind, Result, Role};
use super::Set;

impl Set {
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    /// Park the set. Refused while another set copies its shadow onto the same master (that
    /// copy changes the master, which a suspended set no longer protects).
    pub fn suspend(&self) -> Result<()> {
        if self.is_suspended() {
            return Ok(());
        }
        if let Some(other) = self.master.copying_to_master(Some(&self.name)) {
            return Err(busy(format!(
                "set {other} is copying its shadow onto master {}; wait for it before \
                 suspending set {}",
                self.paths.master, self.name
            )));
        }
        self.stop_copier();
        // No I/O of the set is in flight once the flag is up.
        let _gate = self.gate_write();
        self.suspended.store(true, Ordering::SeqCst);
        log::info!("set {} suspended", self.name);
        Ok(())
    }

    /// Mark the set suspended as the registry recorded it (at start, before any I/O).
    pub(in crate::engine) fn mark_suspended(&self) {
        self.suspended.store(true, Ordering::SeqCst);
    }

    /// Bring a suspended set back exactly as it was: its recorded copy goes on.
    pub fn resume(self: &Arc<Self>) -> Result<()> {
        if !self.is_suspended() {
            return Err(invalid(format!(
                "set {} is not suspended; only a suspended set can be resumed",
                self.name
            )));
        }
        self.suspended.store(false, Ordering::SeqCst);
        if self.copy_active() && !self.is_offline() {
            self.copier.clone().start(self);
        }
        log::info!("set {} resumed", self.name);
        Ok(())
    }

    /// Err while the set is suspended and `what` (an abort, a wait) would act on its copy,
    /// which is parked: an abort would be lost at resume, a wait would last until then.
    pub fn check_copy_not_parked(&self, what: &str) -> Result<()> {
        if self.is_suspended() && self.copy_active() {
            return Err(not_permitted(format!(
                "set {} is suspended: its copy is parked until 'resume', so '{what}' cannot act \
                 on it; resume it first",
                self.name
            )));
        }
        Ok(())
    }

    /// Err while the file of `role` is not served: the set is suspended, or the volume is on
    /// another host (an exported shadow, an imported set's master).
    pub fn check_served(&self, role: Role) -> Result<()> {
        self.check_here(role)?;
        if self.is_suspended() {
            return Err(Error::new(
                Kind::Io,
                format!(
                    "set {} is suspended: its master and shadow are not served until it is \
                     resumed ('resume')",
                    self.name
                ),
            ));
        }
        Ok(())
    }
}
