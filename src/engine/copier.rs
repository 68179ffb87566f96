//! The background copier of a set: moves the chunks marked in the copy bitmap in the recorded
//! direction, in batches, honouring the throttle and abort requests. Foreground I/O that meets
//! a chunk first copies it itself (copy-on-access), so the copier never blocks it for long.
//!
//! The copier owns its control state (`Copier`: the thread, the abort and stop requests, the
//! progress total, the wake-ups of waiters); the engine gives one to every set it installs
//! (as the set's `CopyControl`) and starts the copies it resumes through it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::chunk::region_of;
use super::error::{Error, Result};
use super::master::Imager;
use super::set::{CopyControl, Direction, Set};
use super::tracking::Map;

/// Live copy bookkeeping, outside the header.
#[derive(Default)]
struct CopyState {
    thread: Option<JoinHandle<()>>,
    /// Chunks to copy when the current copy started (for progress).
    total: u64,
}

/// The control of one set's background copy.
#[derive(Default)]
pub struct Copier {
    state: Mutex<CopyState>,
    done: Condvar,
    abort: AtomicBool,
    /// The daemon is stopping: the copier exits and leaves the copy recorded as active.
    shutting_down: AtomicBool,
    abort_wake: (Mutex<()>, Condvar),
}

impl Copier {
    /// The control of a set whose recorded copy had `total` chunks to copy at its start.
    pub fn new(total: u64) -> Copier {
        Copier {
            state: Mutex::new(CopyState {
                thread: None,
                total,
            }),
            ..Copier::default()
        }
    }

    fn state(&self) -> MutexGuard<'_, CopyState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }
}

impl CopyControl for Copier {
    fn start(self: Arc<Self>, set: &Arc<Set>) {
        // Join a finished earlier copier without holding the lock it takes on its way out.
        let old = self.state().thread.take();
        if let Some(old) = old {
            let _ = old.join();
        }
        // The total first: the tracking's lock is a leaf lock, never taken under another.
        let total = set.tracking.copy_total();
        let mut st = self.state();
        self.abort.store(false, Ordering::SeqCst);
        // A copy stopped by `stop` (a suspend) goes on when started again (a resume).
        self.shutting_down.store(false, Ordering::SeqCst);
        st.total = total;
        let (run_set, ctl) = (Arc::clone(set), Arc::clone(&self));
        let spawned = std::thread::Builder::new()
            .name(format!("iifs-copy-{}", set.name))
            .spawn(move || run(run_set, ctl));
        match spawned {
            Ok(handle) => st.thread = Some(handle),
            Err(e) => {
                drop(st);
                set.go_offline(&Error::io("start of the copy thread", &e));
            }
        }
    }

    fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        {
            let _g = self.abort_wake.0.lock();
            self.abort_wake.1.notify_all();
        }
        let handle = self.state().thread.take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn stop(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.abort();
    }

    fn total(&self) -> u64 {
        self.state().total
    }

    fn changed(&self) {
        let _guard = self.state();
        self.done.notify_all();
    }

    fn wait(&self, running: &dyn Fn() -> bool, stop: &dyn Fn() -> bool) -> bool {
        let mut st = self.state();
        while running() {
            if stop() {
                return true;
            }
            st = match self.done.wait_timeout(st, Duration::from_millis(50)) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        false
    }
}

/// Chunks moved between two bitmap updates: big enough for large sequential extents.
const BATCH_BYTES: u64 = 32 << 20;
/// How far (in batches) one batch may range to collect its chunks.
const SPAN_BATCHES: u64 = 16;

fn run(set: Arc<Set>, ctl: Arc<Copier>) {
    let Some(dir) = set.direction() else {
        set.copy_ended(true);
        return;
    };
    let batch_chunks = (BATCH_BYTES / set.chunk_size).max(1);
    let mut next = 0u64;
    let mut since_pause = 0u64;
    loop {
        // `stop` raises `shutting_down` before `abort`, so a copier that sees the abort asks
        // again whether it is a stop: a stop leaves the copy recorded as active (it resumes at
        // the next start), only an abort records it as aborted.
        if ctl.abort.load(Ordering::SeqCst) || ctl.shutting_down.load(Ordering::SeqCst) {
            if !ctl.shutting_down.load(Ordering::SeqCst) {
                set.copy_ended(false);
            }
            return;
        }
        if set.is_offline() {
            return;
        }
        let Some(first) = set.tracking.next_set(Map::Copy, next) else {
            set.copy_ended(true);
            return;
        };
        // One batch: up to `batch` marked chunks from `first` on, within a span of at most
        // SPAN_BATCHES batches (sparse updates then share one flush among many chunks), copied
        // region by region under the region's stripe lock.
        let (delay_ms, units) = set.throttle();
        let batch = if delay_ms > 0 {
            batch_chunks.min(units as u64)
        } else {
            batch_chunks
        };
        let end = (first + batch * SPAN_BATCHES).min(set.chunks);
        prefetch(&set, dir, first, end, batch);

        let mut copied = Vec::new();
        let mut c = first;
        let mut failed = None;
        while c < end && failed.is_none() && (copied.len() as u64) < batch {
            match set
                .master
                .with_sets(|sets| copy_region(&set, sets, c, end, batch, &mut copied, dir))
            {
                Ok(next_chunk) => c = next_chunk,
                Err(e) => failed = Some(e),
            }
        }
        if failed.is_none() {
            if let Err(e) = set.finish_chunks(&copied, dir) {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            set.go_offline(&e);
            return;
        }
        next = c;
        since_pause += copied.len() as u64;
        if delay_ms > 0 && since_pause >= units as u64 {
            since_pause = 0;
            pause(&ctl, Duration::from_millis(delay_ms as u64));
        }
    }
}

/// Copy the marked chunks of the stripe region holding chunk `c` (stopping at `end` or once
/// `batch` chunks are copied) under the region's stripe lock, runs as single extents.
/// Returns the chunk to go on from.
fn copy_region(
    set: &Set,
    sets: &[Arc<dyn Imager>],
    mut c: u64,
    end: u64,
    batch: u64,
    copied: &mut Vec<u64>,
    dir: Direction,
) -> Result<u64> {
    let region = region_of(c * set.chunk_size);
    let _stripe = set.master.lock_region(c * set.chunk_size);
    while c < end && region_of(c * set.chunk_size) == region && (copied.len() as u64) < batch {
        // A set that went offline meanwhile copies nothing more (a user write may be waiting
        // for this lock to change chunks this copy would overwrite).
        if set.is_offline() {
            return Ok(end);
        }
        let run_start = c;
        let room = batch - copied.len() as u64;
        while c < end
            && region_of(c * set.chunk_size) == region
            && c - run_start < room
            && set.tracking.test(Map::Copy, c)
        {
            c += 1;
        }
        if c > run_start {
            set.copy_run(sets, run_start, c - run_start, dir)?;
            copied.extend(run_start..c);
        } else {
            c += 1;
        }
    }
    Ok(c)
}

/// Ask for every run of a batch's source at once (up to `batch` chunks, as the batch will
/// copy), so the disk reads them in parallel rather than one by one as the copy reaches them:
/// scattered chunks of an update as much as the long runs of a full copy.
fn prefetch(set: &Set, dir: Direction, first: u64, end: u64, batch: u64) {
    let source = match dir {
        Direction::Shadow => set.master.vol.as_ref(),
        Direction::Master => set.shadow.as_ref(),
    };
    let mut c = first;
    let mut asked = 0u64;
    while c < end && asked < batch {
        if !set.tracking.test(Map::Copy, c) {
            c += 1;
            continue;
        }
        let start = c;
        while c < end && asked < batch && set.tracking.test(Map::Copy, c) {
            c += 1;
            asked += 1;
        }
        source.will_need(start * set.chunk_size, (c - start) * set.chunk_size);
    }
}

/// Sleep for the throttle delay, waking early on abort.
fn pause(ctl: &Copier, delay: Duration) {
    let (lock, wake) = &ctl.abort_wake;
    let guard = match lock.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if ctl.abort.load(Ordering::SeqCst) {
        return;
    }
    let _ = wake.wait_timeout(guard, delay);
}
