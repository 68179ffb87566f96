//! A hold on a master's writes, for one instant across several masters or hosts: while a hold
//! is in force, new writes through the mount wait (they do not fail) until `release` or until
//! the hold's lease runs out, whichever comes first. `hold` returns once the writes that were
//! in flight have ended, so from then on the master's bytes stand still.
//!
//! The lease is what keeps a forgotten hold (its holder crashed, its host went away) from
//! stopping a database for good. Writes the set itself makes (a copy onto the master) do not
//! pass here and are not held.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::error::{busy, invalid, Result};

/// The longest lease a hold may ask for.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct State {
    /// Held until then (monotonic), and the same instant on the wall clock (for status).
    until: Option<(Instant, SystemTime)>,
    /// Writes that passed the hold and have not ended.
    in_flight: usize,
}

impl State {
    fn held(&self) -> Option<Instant> {
        self.until.map(|(u, _)| u).filter(|&u| Instant::now() < u)
    }
}

#[derive(Default)]
pub struct Hold {
    state: Mutex<State>,
    changed: Condvar,
}

/// A write in flight: counted out when dropped.
pub struct InFlight<'a>(&'a Hold);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            self.0.changed.notify_all();
        }
    }
}

impl Hold {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// A write begins: wait while a hold is in force, then count it in flight.
    pub fn enter(&self) -> InFlight<'_> {
        let mut s = self.lock();
        while let Some(until) = s.held() {
            let left = until.saturating_duration_since(Instant::now());
            s = match self.changed.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        s.in_flight += 1;
        InFlight(self)
    }

    /// A write begins if no hold is in force (Some, counted in flight); None when it would
    /// have to wait (the caller then waits elsewhere, with `enter`).
    pub fn try_enter(&self) -> Option<InFlight<'_>> {
        let mut s = self.lock();
        if s.held().is_some() {
            return None;
        }
        s.in_flight += 1;
        Some(InFlight(self))
    }

    /// Whether a hold is in force now.
    pub fn is_held(&self) -> bool {
        self.lock().held().is_some()
    }

    /// When the hold in force ends on the wall clock (None: no hold).
    pub fn held_until(&self) -> Option<SystemTime> {
        let s = self.lock();
        s.held().and(s.until.map(|(_, w)| w))
    }

    /// Hold new writes for `lease`, then wait for the writes in flight to end. Err (and the
    /// hold taken back) when they do not end within the lease. A hold in force already is
    /// someone else's (another console's instant across hosts, a playbook): a second hold is
    /// refused, since either holder's `release` would end the other's hold under it.
    pub fn hold(&self, lease: Duration, what: &str) -> Result<()> {
        if lease.is_zero() || lease > MAX_LEASE {
            return Err(invalid(format!(
                "a hold's lease is 1 to {} seconds",
                MAX_LEASE.as_secs()
            )));
        }
        let until = Instant::now() + lease;
        let mut s = self.lock();
        if let Some(other) = s.held() {
            let left = other.saturating_duration_since(Instant::now()).as_secs() + 1;
            return Err(busy(format!(
                "{what} is held already (its lease ends within {left} s): another hold is in \
                 force; wait for its release, or end it with 'release'"
            )));
        }
        s.until = Some((until, SystemTime::now() + lease));
        while s.in_flight > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                s.until = None;
                drop(s);
                self.changed.notify_all();
                return Err(busy(format!(
                    "the writes in flight on {what} did not end within the lease; nothing is \
                     held"
                )));
            }
            s = match self.changed.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        Ok(())
    }

    /// End the hold (nothing to do when none is in force); the waiting writes go on.
    pub fn release(&self) {
        self.lock().until = None;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn try_enter_declines_under_a_hold_and_counts_in_flight_otherwise() {
        let h = Arc::new(Hold::default());
        let w = h.try_enter().expect("no hold: the write begins");
        // A hold waits for the write that began without waiting.
        let (h2, held) = (h.clone(), Arc::new(AtomicBool::new(false)));
        let held2 = held.clone();
        let t = std::thread::spawn(move || {
            h2.hold(Duration::from_secs(10), "m").unwrap();
            held2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !held.load(Ordering::SeqCst),
            "the hold waits for the write in flight"
        );
        drop(w);
        t.join().unwrap();
        assert!(held.load(Ordering::SeqCst));
        assert!(
            h.try_enter().is_none(),
            "under a hold a write does not begin here"
        );
        h.release();
        assert!(h.try_enter().is_some());
    }

    #[test]
    fn a_held_write_waits_for_the_release() {
        let h = Arc::new(Hold::default());
        h.hold(Duration::from_secs(10), "m").unwrap();
        assert!(h.is_held() && h.held_until().is_some());
        let done = Arc::new(AtomicBool::new(false));
        let (h2, d2) = (h.clone(), done.clone());
        let t = std::thread::spawn(move || {
            let _w = h2.enter();
            d2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!done.load(Ordering::SeqCst), "the write waits");
        h.release();
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst) && !h.is_held());
    }

    #[test]
    fn the_lease_ends_a_forgotten_hold() {
        let h = Hold::default();
        h.hold(Duration::from_millis(150), "m").unwrap();
        let t = Instant::now();
        drop(h.enter());
        assert!(t.elapsed() >= Duration::from_millis(100) && !h.is_held());
    }

    #[test]
    fn a_hold_waits_for_the_writes_in_flight() {
        let h = Arc::new(Hold::default());
        let w = h.enter();
        let h2 = h.clone();
        let t = std::thread::spawn(move || h2.hold(Duration::from_secs(10), "m"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!t.is_finished(), "the hold waits for the write in flight");
        drop(w);
        t.join().unwrap().unwrap();
        let h3 = Hold::default();
        let _w = h3.enter();
        assert!(
            h3.hold(Duration::from_millis(50), "m").is_err(),
            "the lease ran out"
        );
        assert!(!h3.is_held(), "a hold not in force is taken back");
        assert!(h3.hold(Duration::ZERO, "m").is_err());
    }
}
