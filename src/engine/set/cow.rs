//! Copy-on-write: what a set must do before bytes of its master or its shadow change (the
//! per-chunk decision is `plan_chunk`, shared by both), carrying it out in the order that keeps
//! the point in time safe, and the copier's steps.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::chunk::region_of;
use super::super::error::{Error, Result, Role};
use super::super::header::flags;
use super::super::master::{Imager, Work};
use super::super::tracking::Map;
use super::super::volume::{copy_range_ends, Access, CopyEnd, Volume};
use super::{Direction, Set, FULL_COPY};

/// Copy-on-write runs from this size on read their source with readahead.
const SWEEP_BYTES: u64 = 256 << 10;

/// A copy of `[offset, offset+length)` between master and shadow, one way.
type CopyFn<'a> =
    dyn Fn(u64, u64, Access) -> std::result::Result<(), (CopyEnd, std::io::Error)> + 'a;

impl Set {
    /// What this set must do before master bytes `[offset, offset+len)` change:
    /// `preserve` copies old master chunks to the shadow and marks them; `push` copies the
    /// shadow onto the master first where an update of the master has not reached the chunk.
    pub fn plan_master_change(&self, offset: u64, len: u64) -> (Work, Work) {
        let mut preserve = Work::default();
        let mut push = Work::default();
        if self.is_offline() {
            return (preserve, push);
        }
        let f = self.flags();
        for c in self.chunks_of(offset, len) {
            self.plan_chunk(f, c, &mut preserve, &mut push);
        }
        (preserve, push)
    }

    /// The one decision of copy-on-write: what chunk `c` needs before its bytes change, on the
    /// master (a user write, or another set's update of it) or on the shadow (a shadow write),
    /// with the set's state flags `f`. The changes are added to `own` (the old master chunk
    /// goes to the shadow first and the chunk is marked as differing) or to `push` (an update
    /// of the master has not reached the chunk: the shadow's chunk goes onto the master first).
    /// A copy is recorded in one direction at most (a command refuses to start the other one).
    pub(super) fn plan_chunk(&self, f: u32, c: u64, own: &mut Work, push: &mut Work) {
        let shd = self.tracking.test(Map::Shadow, c);
        let cpy = self.tracking.test(Map::Copy, c);
        if f & flags::TO_MASTER != 0 && cpy && self.slotless(c) {
            // Lost (out of space): nothing to push; the master keeps what it gets.
            push.bits.push((Map::Copy, c, false));
            return;
        }
        if f & flags::TO_MASTER != 0 && cpy {
            push.to_master.push(c);
            push.bits.push((Map::Copy, c, false));
            if !shd {
                push.bits.push((Map::Shadow, c, true));
            }
            return;
        }
        if f & flags::TO_SHADOW != 0 && cpy {
            own.to_shadow.push(c);
            own.bits.push((Map::Copy, c, false));
        } else if self.is_dependent() && !shd {
            own.to_shadow.push(c);
        }
        if !shd {
            own.bits.push((Map::Shadow, c, true));
        }
    }

    /// What this set preserves ahead of a sequential writer in `[offset, offset+len)`: the old
    /// chunks wholly within it that a first write would preserve, for a full-size dependent
    /// set with no copy recorded (an independent set only marks chunks, and a compact set
    /// would spend its slots on chunks the writer may never reach).
    pub fn plan_preserve_ahead(&self, offset: u64, len: u64) -> Work {
        let mut work = Work::default();
        let f = self.flags();
        if !self.is_dependent()
            || self.compact.is_some()
            || f & (flags::OFFLINE | flags::TO_SHADOW | flags::TO_MASTER) != 0
        {
            return work;
        }
        let first = offset.div_ceil(self.chunk_size);
        let end = (offset + len).min(self.size);
        let mut c = first;
        while c < self.chunks {
            let (off, n) = self.chunk_span(c);
            if off + n > end {
                break;
            }
            if !self.tracking.test(Map::Shadow, c) {
                work.to_shadow.push(c);
                work.bits.push((Map::Shadow, c, true));
            }
            c += 1;
        }
        work
    }

    /// True when a change of master bytes `[offset, offset+len)` needs nothing from this set:
    /// no copy in either direction is recorded and every chunk is already marked.
    pub fn needs_nothing_before_change(&self, offset: u64, len: u64) -> bool {
        let f = self.flags();
        if f & flags::OFFLINE != 0 {
            // Its copier may still be inside a run onto the master: serialise on the stripe lock.
            return f & flags::TO_MASTER == 0;
        }
        f & (flags::TO_SHADOW | flags::TO_MASTER) == 0
            && self
                .chunks_of(offset, len)
                .all(|c| self.tracking.test(Map::Shadow, c))
    }

    /// The byte span of the chunks this set would push onto the master before bytes
    /// `[offset, offset+len)` change (chunks an update of the master has not reached yet).
    pub fn push_span(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        if !self.is_copying_to_master() || self.is_offline() {
            return None;
        }
        let pushed: Vec<u64> = self
            .chunks_of(offset, len)
            .filter(|&c| self.tracking.test(Map::Copy, c) && !self.slotless(c))
            .collect();
        let (first, last) = (*pushed.first()?, *pushed.last()?);
        let start = first * self.chunk_size;
        let (last_off, last_len) = self.chunk_span(last);
        Some((start, last_off + last_len - start))
    }

    /// Carry out planned work: move data, make it durable, persist the bits, make them durable,
    /// publish them. Only then may the caller change the data the bits protect.
    pub fn apply(&self, mut work: Work) -> Result<()> {
        // A compact shadow's chunks get their slots first (see `compact`).
        let mut mapped = false;
        if let Some(compact) = self.compact.as_ref().filter(|_| !work.to_shadow.is_empty()) {
            let lost;
            (lost, mapped) = compact
                .reserve(&work.to_shadow)
                .map_err(|e| self.bitmap_error("write", &e))?;
            if !lost.is_empty() {
                self.record_out_of_space(&lost)?;
                work.to_shadow.retain(|c| !lost.contains(c));
            }
            self.check_space();
        }
        let (master, shadow) = (self.master.vol.as_ref(), self.shadow.as_ref());
        self.copy_chunks(
            &work.to_shadow,
            &|off, len, access| match &self.compact {
                Some(c) => c.copy_in(master, off, len, access),
                None => copy_range_ends(master, shadow, off, len, access),
            },
            (&self.paths.shadow, Role::Shadow),
        )?;
        // The master writes its own bytes.
        self.copy_chunks(
            &work.to_master,
            &|off, len, access| self.master.copy_in(shadow, off, len, access),
            (&self.paths.master, Role::Master),
        )?;
        if self.strict() {
            // New map entries are durable before any bit relies on them (a power cut keeping a
            // bit alone would leave a preserved chunk with no slot): their sync runs beside the
            // shadow's, so a first write to a compact set still waits for one round of flushes.
            let sync_map = || {
                self.bitmap_commit
                    .commit(|| self.tracking.vol.sync())
                    .map_err(|e| self.bitmap_error("sync", &e))
            };
            let sync_shadow = || {
                self.shadow_commit
                    .commit(|| self.shadow.sync())
                    .map_err(|e| {
                        Error::io_on(Role::Shadow, format!("sync of {}", self.paths.shadow), &e)
                    })
            };
            match (mapped, work.to_shadow.is_empty()) {
                (true, false) => {
                    let (map, shadow) = std::thread::scope(|s| {
                        let map = s.spawn(sync_map);
                        let shadow = sync_shadow();
                        (map.join(), shadow)
                    });
                    shadow?;
                    map.unwrap_or_else(|_| {
                        Err(Error::new(
                            super::super::error::Kind::Io,
                            "the sync of the bitmap volume's chunk map failed (its thread ended)",
                        ))
                    })?;
                }
                (true, true) => sync_map()?,
                (false, false) => sync_shadow()?,
                (false, true) => {}
            }
            if !work.to_master.is_empty() {
                self.master_commit
                    .commit(|| self.master.vol.sync())
                    .map_err(|e| {
                        Error::io_on(Role::Master, format!("sync of {}", self.paths.master), &e)
                    })?;
            }
        }
        if !work.bits.is_empty() {
            self.tracking
                .persist(&work.bits)
                .map_err(|e| self.bitmap_error("write", &e))?;
            if self.strict() {
                self.bitmap_commit
                    .commit(|| self.tracking.vol.sync())
                    .map_err(|e| self.bitmap_error("sync", &e))?;
            }
            self.tracking.publish(&work.bits);
        }
        Ok(())
    }

    /// Copy the given chunks (ascending) with `copy(offset, length, access)`, each run of
    /// adjacent chunks as one extent.
    pub(super) fn copy_chunks(
        &self,
        chunks: &[u64],
        copy: &CopyFn<'_>,
        (path, role): (&str, Role),
    ) -> Result<()> {
        let mut i = 0;
        while i < chunks.len() {
            let mut j = i + 1;
            while j < chunks.len() && chunks[j] == chunks[j - 1] + 1 {
                j += 1;
            }
            let off = chunks[i] * self.chunk_size;
            let (last_off, last_len) = self.chunk_span(chunks[j - 1]);
            let len = last_off + last_len - off;
            // A large write preserving many chunks at once is a sequential sweep: read ahead.
            let access = if len >= SWEEP_BYTES {
                Access::Sequential
            } else {
                Access::Random
            };
            copy(off, len, access).map_err(|(end, e)| {
                let what = format!("copy of chunks {}..={} to {path}", chunks[i], chunks[j - 1]);
                self.copy_error(end, role, &what, &e)
            })?;
            i = j;
        }
        Ok(())
    }

    /// Copy chunks `first..first+count` (contiguous, in one stripe region) in the current
    /// direction, as one extent (caller holds the stripe lock and the gates).
    pub(in crate::engine) fn copy_run(
        &self,
        sets: &[Arc<dyn Imager>],
        first: u64,
        count: u64,
        dir: Direction,
    ) -> Result<()> {
        // A compact shadow's chunk that lost its point in time (out of space) has no slot to
        // copy from: the master keeps what it holds there (it changed after the point in time).
        if self.compact.is_some() && dir == Direction::Master {
            let mut c = first;
            while c < first + count {
                if self.slotless(c) {
                    c += 1;
                    continue;
                }
                let start = c;
                while c < first + count && !self.slotless(c) {
                    c += 1;
                }
                self.copy_extent(sets, start, c - start, dir)?;
            }
            return Ok(());
        }
        self.copy_extent(sets, first, count, dir)
    }

    /// `copy_run` of chunks that all have their content where the copy reads it.
    fn copy_extent(
        &self,
        sets: &[Arc<dyn Imager>],
        first: u64,
        count: u64,
        dir: Direction,
    ) -> Result<()> {
        let off = first * self.chunk_size;
        let (last_off, last_len) = self.chunk_span(first + count - 1);
        let len = last_off + last_len - off;
        let (copied, path, role) = match dir {
            Direction::Shadow => (
                copy_range_ends(
                    self.master.vol.as_ref(),
                    self.shadow.as_ref(),
                    off,
                    len,
                    Access::Sequential,
                ),
                &self.paths.shadow,
                Role::Shadow,
            ),
            Direction::Master => {
                // The master's bytes change: the other sets preserve what they need first.
                self.master
                    .prepare_change(sets, off, len, Some(self as &dyn Imager));
                (
                    self.master
                        .copy_in(self.shadow.as_ref(), off, len, Access::Sequential),
                    &self.paths.master,
                    Role::Master,
                )
            }
        };
        copied.map_err(|(end, e)| {
            let what = format!("copy of chunks {first}..{} to {path}", first + count);
            self.copy_error(end, role, &what, &e)
        })
    }

    /// The error of a copy between master and shadow towards `to`, charged to the volume that
    /// failed: a source that cannot be read is what goes offline, not the target; that
    /// decides what `reset` rebuilds.
    pub(super) fn copy_error(
        &self,
        end: CopyEnd,
        to: Role,
        what: &str,
        e: &std::io::Error,
    ) -> Error {
        let source = match to {
            Role::Shadow => Role::Master,
            _ => Role::Shadow,
        };
        match end {
            CopyEnd::Target => Error::io_on(to, what, e),
            CopyEnd::Source => {
                let path = match source {
                    Role::Master => &self.paths.master,
                    _ => &self.paths.shadow,
                };
                Error::io_on(source, format!("read of {path} for the {what}"), e)
            }
        }
    }

    /// After a batch of copied chunks is durable: clear their copy bits, unless a writer
    /// already handled the chunk (it clears the bit itself, and may have marked it again).
    pub(in crate::engine) fn finish_chunks(&self, copied: &[u64], dir: Direction) -> Result<()> {
        let (target, role, path): (&dyn Volume, Role, &str) = match dir {
            Direction::Shadow => (self.shadow.as_ref(), Role::Shadow, &self.paths.shadow),
            Direction::Master => (self.master.vol.as_ref(), Role::Master, &self.paths.master),
        };
        if self.strict() {
            target
                .sync()
                .map_err(|e| Error::io_on(role, format!("sync during copy to {path}"), &e))?;
        }
        let mut start = 0;
        while start < copied.len() {
            let region = region_of(copied[start] * self.chunk_size);
            let mut end = start;
            while end < copied.len() && region_of(copied[end] * self.chunk_size) == region {
                end += 1;
            }
            let _stripe = self.master.lock_region(copied[start] * self.chunk_size);
            let mut clear_shd = Vec::new();
            let mut clear_cpy = Vec::new();
            for &c in &copied[start..end] {
                if self.tracking.test(Map::Copy, c) {
                    clear_cpy.push(c);
                    // A dependent shadow now equals the master there: read it from the master
                    // (not a compact chunk that lost its point in time: it stays lost).
                    if dir == Direction::Master && self.is_dependent() && !self.slotless(c) {
                        clear_shd.push(c);
                    }
                }
            }
            self.tracking
                .clear_now(Map::Copy, &clear_cpy)
                .and_then(|_| self.tracking.clear_now(Map::Shadow, &clear_shd))
                .map_err(|e| self.bitmap_error("write", &e))?;
            // A compact shadow's chunk now read from the master gives its slot back, once its
            // bits are durably clear (a power cut must not keep a bit whose entry is gone).
            if let Some(compact) = self.compact.as_ref().filter(|_| !clear_shd.is_empty()) {
                if self.strict() {
                    self.tracking
                        .vol
                        .sync()
                        .map_err(|e| self.bitmap_error("sync", &e))?;
                }
                compact
                    .release(&clear_shd, self.strict())
                    .map_err(|e| self.bitmap_error("write", &e))?;
            }
            start = end;
        }
        Ok(())
    }

    /// The copy ended (finished, aborted or failed): record it and wake waiters.
    pub(in crate::engine) fn copy_ended(&self, finished: bool) {
        let clear = if finished {
            flags::ACTIVE | flags::TO_SHADOW | flags::TO_MASTER | FULL_COPY
        } else {
            flags::ACTIVE
        };
        if let Err(e) = self.tracking.update_header(|h| h.flags &= !clear) {
            self.go_offline(&self.bitmap_error("write", &e));
        }
        self.flags.fetch_and(!clear, Ordering::SeqCst);
        self.copier.changed();
    }
}

/// What the master asks of a set (see `Imager`): the set's own methods.
impl Imager for Set {
    fn name(&self) -> &str {
        &self.name
    }
    fn gate_read(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        Set::gate_read(self)
    }
    fn gate_write(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        Set::gate_write(self)
    }
    fn is_copying_to_master(&self) -> bool {
        Set::is_copying_to_master(self)
    }
    fn is_suspended(&self) -> bool {
        Set::is_suspended(self)
    }
    fn master_offline(&self) -> bool {
        Set::master_offline(self)
    }
    fn last_error(&self) -> Option<String> {
        Set::last_error(self)
    }
    fn go_offline(&self, err: &Error) {
        Set::go_offline(self, err)
    }
    fn needs_nothing_before_change(&self, offset: u64, len: u64) -> bool {
        Set::needs_nothing_before_change(self, offset, len)
    }
    fn flushes_before_change(&self) -> bool {
        self.strict()
    }
    fn sync_ahead_of_master(&self) -> Result<()> {
        // Under strict durability every preserved chunk and its bit were durable before the
        // master write that needed them: the master's fsync waits for nothing of this set.
        if self.strict() || self.is_offline() {
            return Ok(());
        }
        self.sync_shadow_and_bits()
    }
    fn push_span(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        Set::push_span(self, offset, len)
    }
    fn plan_master_change(&self, offset: u64, len: u64) -> (Work, Work) {
        Set::plan_master_change(self, offset, len)
    }
    fn plan_preserve_ahead(&self, offset: u64, len: u64) -> Work {
        Set::plan_preserve_ahead(self, offset, len)
    }
    fn apply(&self, work: Work) -> Result<()> {
        Set::apply(self, work)
    }
    fn read_master_through(
        &self,
        master: &super::super::master::Master,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<()> {
        Set::read_master_through(self, master, buf, offset)
    }
}
