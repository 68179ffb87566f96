//! The space of a compact set: out of space (a chunk that could not be preserved), the space
//! warning, the chunks whose point-in-time content is lost, and the slots freed by a new point
//! in time.

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::error::{Error, Kind, Result};
use super::super::header::flags;
use super::super::tracking::Map;
use super::Set;

/// The usage (percent of shadow and overflow space) from which a compact set warns.
static SPACE_WARNING: AtomicU64 = AtomicU64::new(DEFAULT_SPACE_WARNING);
pub const DEFAULT_SPACE_WARNING: u64 = 80;

/// Set the usage (percent) from which compact sets warn (the `space_warning` setting).
pub fn set_space_warning(percent: u64) {
    SPACE_WARNING.store(percent.min(100), Ordering::Relaxed);
}

pub fn space_warning() -> u64 {
    SPACE_WARNING.load(Ordering::Relaxed)
}

/// What a compact set's status shows of its space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub shadow_chunks: u64,
    pub shadow_used: u64,
    pub overflow_used: u64,
    /// The attached overflow volume's name.
    pub overflow: Option<String>,
    /// Percent of the shadow and overflow space used, when at or over the warning level.
    pub warning: Option<(u64, u64)>,
}

impl Set {
    pub fn is_out_of_space(&self) -> bool {
        self.flags() & flags::OUT_OF_SPACE != 0
    }

    /// Chunks `lost` could not be preserved (shadow and overflow full): record it in the header
    /// before the master changes (the point in time of those chunks is gone; reads of them
    /// fail from now on). The master's writes go on: the application is never stopped by its
    /// snapshot.
    pub(super) fn record_out_of_space(&self, lost: &[u64]) -> Result<()> {
        if !self.is_out_of_space() {
            self.tracking
                .update_header(|h| h.flags |= flags::OUT_OF_SPACE)
                .map_err(|e| self.bitmap_error("write", &e))?;
            self.flags.fetch_or(flags::OUT_OF_SPACE, Ordering::SeqCst);
        }
        log::warn!(
            "set {} is out of space: shadow {}{} full; chunk(s) {:?} could not be preserved and \
             read as errors on the shadow until 'update shadow' takes a new point in time",
            self.name,
            self.paths.shadow,
            match self.compact.as_ref().and_then(|c| c.overflow()) {
                Some(o) => format!(" and overflow {} are", o.name),
                None => " is".to_string(),
            },
            lost
        );
        Ok(())
    }

    /// The usage percent of a compact set: chunks used over chunks it could use (its shadow's
    /// slots, and the slots of its overflow not taken by other sets).
    fn usage_percent(&self) -> Option<u64> {
        let compact = self.compact.as_ref()?;
        let (shadow_used, overflow_used) = compact.usage();
        let (overflow_total, overflow_others) = match compact.overflow() {
            Some(o) => {
                let (total, used) = o.counts();
                (total, used.saturating_sub(overflow_used))
            }
            None => (0, 0),
        };
        let room = (compact.slots + overflow_total).saturating_sub(overflow_others);
        Some(
            ((shadow_used + overflow_used) * 100)
                .checked_div(room)
                .unwrap_or(100),
        )
    }

    /// Log once per crossing of the space warning level.
    pub(super) fn check_space(&self) {
        let Some(pct) = self.usage_percent() else {
            return;
        };
        let level = space_warning();
        let over = pct >= level;
        if over != self.space_warned.swap(over, Ordering::SeqCst) && over {
            log::warn!(
                "set {}: {pct}% of its shadow and overflow space is used (warning at {level}%); \
                 attach an overflow volume or take a new point in time ('update shadow')",
                self.name
            );
        }
    }

    pub fn space(&self) -> Option<Space> {
        let compact = self.compact.as_ref()?;
        let (shadow_used, overflow_used) = compact.usage();
        let pct = self.usage_percent().unwrap_or(0);
        let level = space_warning();
        Some(Space {
            shadow_chunks: compact.slots,
            shadow_used,
            overflow_used,
            overflow: compact.overflow().map(|o| o.name.clone()),
            warning: (pct >= level).then_some((pct, level)),
        })
    }

    /// Whether chunk `c` of a compact set has no slot (its content is on the master, or lost).
    pub(in crate::engine) fn slotless(&self, c: u64) -> bool {
        self.compact
            .as_ref()
            .is_some_and(|k| k.map().get(c).is_none())
    }

    /// Err for a chunk in `[offset, offset+len)` whose point-in-time content could not be
    /// preserved: it is marked as the shadow's own but has no slot (out of space).
    pub(super) fn check_preserved(&self, offset: u64, len: u64, kind: Kind) -> Result<()> {
        let Some(compact) = &self.compact else {
            return Ok(());
        };
        if !self.is_out_of_space() {
            return Ok(());
        }
        for c in self.chunks_of(offset, len) {
            if !self.shadow_reads_master(c)
                && compact.map().get(c).is_none()
                && self.tracking.test(Map::Shadow, c)
            {
                return Err(Error::new(
                    kind,
                    format!(
                        "chunk {c} of the shadow of set {} was not preserved: its shadow and \
                         overflow were full when the master changed (out of space), so its \
                         point-in-time content is lost; 'update shadow' takes a new point in \
                         time, and an overflow volume ('attach') gives the set more room",
                        self.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After a new point in time (no chunk is preserved any more): every slot goes back.
    pub(super) fn release_all_slots(&self) -> Result<()> {
        let Some(compact) = &self.compact else {
            return Ok(());
        };
        compact
            .release_all(self.strict())
            .map_err(|e| self.bitmap_error("write", &e))?;
        self.space_warned.store(false, Ordering::SeqCst);
        Ok(())
    }
}
