//! Stripe locks of a master: one mutex per 1 MiB region (hashed into a fixed table). Every
//! change of a chunk's bits and bytes (copy-on-write, a shadow write, the copier's batch)
//! happens under the lock of its region, so two of them never interleave on one chunk.

use std::sync::{Mutex, MutexGuard};

use super::chunk::region_of;

/// Unrelated regions share a lock only by hash collision.
const STRIPES: usize = 1024;

pub struct Stripes {
    locks: Vec<Mutex<()>>,
}

impl Default for Stripes {
    fn default() -> Stripes {
        Stripes {
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl Stripes {
    /// Lock the region holding byte `offset` if nobody holds its lock now (for work that may
    /// be skipped, taken while another region's lock is held: never waiting, it cannot
    /// deadlock).
    pub fn try_lock(&self, offset: u64) -> Option<MutexGuard<'_, ()>> {
        let i = region_of(offset) as usize % STRIPES;
        self.locks[i].try_lock().ok()
    }

    /// Lock the region holding byte `offset`.
    pub fn lock(&self, offset: u64) -> MutexGuard<'_, ()> {
        let i = region_of(offset) as usize % STRIPES;
        match self.locks[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}
