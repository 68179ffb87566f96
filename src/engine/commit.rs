//! Group commit: concurrent writers that each need a volume flushed share one `sync`.
//!
//! A writer finishes its writes, takes a ticket, and returns once a sync that started after
//! its ticket has completed. Whoever finds no sync running starts one on behalf of every
//! ticket issued so far; the others wait for it.

use std::io;
use std::sync::{Condvar, Mutex};

#[derive(Default)]
struct State {
    issued: u64,
    synced: u64,
    syncing: bool,
    /// The error of the last failed sync, handed to the tickets it covered.
    failed_through: u64,
    error: Option<String>,
}

#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupCommit {
    /// Make every write completed before this call durable, with `sync` (shared with others).
    pub fn commit(&self, sync: impl Fn() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.state.lock().map_err(|_| lock_error())?;
        st.issued += 1;
        let ticket = st.issued;
        loop {
            if st.synced >= ticket {
                if ticket <= st.failed_through {
                    if let Some(e) = &st.error {
                        return Err(io::Error::other(e.clone()));
                    }
                }
                return Ok(());
            }
            if !st.syncing {
                st.syncing = true;
                let target = st.issued;
                drop(st);
                let result = sync();
                st = self.state.lock().map_err(|_| lock_error())?;
                st.syncing = false;
                st.synced = target;
                if let Err(e) = &result {
                    st.failed_through = target;
                    st.error = Some(e.to_string());
                }
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).map_err(|_| lock_error())?;
        }
    }
}

fn lock_error() -> io::Error {
    io::Error::other("group commit lock poisoned")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_share_syncs() {
        let gc = Arc::new(GroupCommit::default());
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let gc = gc.clone();
                let syncs = syncs.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        gc.commit(|| {
                            syncs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!((50..400).contains(&n), "syncs = {n}");
    }

    #[test]
    fn failure_reaches_the_covered_writer() {
        let gc = GroupCommit::default();
        assert!(gc.commit(|| Err(io::Error::other("disk gone"))).is_err());
        assert!(gc.commit(|| Ok(())).is_ok());
    }
}
