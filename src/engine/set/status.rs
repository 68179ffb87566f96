//! The state of a set, typed, and the snapshot of it the status files show.

use std::fmt;

use super::super::header::{flags, uuid_text, Durability, SetKind};
use super::super::tracking::Map;
use super::{direction_of, Direction, Paths, Set, FULL_COPY};

/// Which volumes of an offline set failed or can no longer be trusted. All false: a set taken
/// offline by an older iifs, which did not record which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OfflineVolumes {
    pub master: bool,
    pub shadow: bool,
    pub bitmap: bool,
}

/// The state of a set, derived from its header's state flags by `SetState::of` alone. A new
/// state (suspended, exported, imported, a compact shadow out of space...) is a new variant
/// here, a new flag in `header::flags`, and a new arm in `of` and `word`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetState {
    /// No copy recorded.
    Idle,
    /// A full copy runs.
    Copying(Direction),
    /// An update (the differing chunks only) runs.
    Updating(Direction),
    /// A copy or update was stopped before the end; its direction stays recorded.
    Aborted(Direction),
    /// A volume failed: the set serves only what is still sound, until `reset`.
    Offline(OfflineVolumes),
    /// The shadow was handed to another host (`export`); master changes are tracked.
    Exported,
    /// A shadow another host exported, taken in here (`import`).
    Imported,
}

impl SetState {
    /// The state recorded in the header's state flags `f`.
    pub fn of(f: u32) -> SetState {
        if f & flags::OFFLINE != 0 {
            return SetState::Offline(OfflineVolumes {
                master: f & flags::OFFLINE_MASTER != 0,
                shadow: f & flags::OFFLINE_SHADOW != 0,
                bitmap: f & flags::OFFLINE_BITMAP != 0,
            });
        }
        if f & flags::EXPORTED != 0 {
            return SetState::Exported;
        }
        if f & flags::IMPORTED != 0 {
            return SetState::Imported;
        }
        let active = f & flags::ACTIVE != 0;
        match direction_of(f) {
            None if !active => SetState::Idle,
            // Active with no direction recorded (no command writes it): the copier has
            // nothing to copy and ends the copy as soon as it starts.
            None if f & FULL_COPY != 0 => SetState::Copying(Direction::Shadow),
            None => SetState::Updating(Direction::Shadow),
            Some(d) if active && f & FULL_COPY != 0 => SetState::Copying(d),
            Some(d) if active => SetState::Updating(d),
            Some(d) => SetState::Aborted(d),
        }
    }

    /// The direction of the copy recorded, if any.
    pub fn direction(self) -> Option<Direction> {
        match self {
            SetState::Copying(d) | SetState::Updating(d) | SetState::Aborted(d) => Some(d),
            SetState::Idle | SetState::Offline(_) | SetState::Exported | SetState::Imported => None,
        }
    }

    /// The word of the status files' `state` key.
    pub fn word(self) -> &'static str {
        match self {
            SetState::Idle => "idle",
            SetState::Copying(_) => "copying",
            SetState::Updating(_) => "updating",
            SetState::Aborted(_) => "aborted",
            SetState::Offline(_) => "offline",
            SetState::Exported => "exported",
            SetState::Imported => "imported",
        }
    }
}

impl fmt::Display for SetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A snapshot of a set for the status file.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub kind: SetKind,
    pub state: &'static str,
    pub direction: &'static str,
    pub progress: u64,
    pub paths: Paths,
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: u64,
    pub chunks_differ: u64,
    pub chunks_to_copy: u64,
    /// Chunks the current copy had to move when it started.
    pub copy_total: u64,
    pub delay_ms: u32,
    pub units: u32,
    pub durability: Durability,
    pub last_error: Option<String>,
    pub pit_time: u64,
    /// A compact set's space (None for a set whose shadow has the master's size).
    pub space: Option<super::Space>,
    pub condition: Condition,
    /// The set's identity, and an imported set's origin (the exporting set's), as text ("-").
    pub uuid: String,
    pub origin: String,
    /// While a hold on the master's writes is in force: when it ends (ms since the epoch).
    pub hold_until: Option<u64>,
}

/// How a set (or a group) fares, in one word for a console: `error` when a volume failed (the
/// set is offline), `degraded` when it works but its point in time is not whole (out of space)
/// or it is parked (suspended), `normal` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    Normal,
    Degraded,
    Error,
}

impl Condition {
    pub fn word(self) -> &'static str {
        match self {
            Condition::Normal => "normal",
            Condition::Degraded => "degraded",
            Condition::Error => "error",
        }
    }

    /// A group's: normal when every member is, error when every member is in error (and there
    /// is one), degraded otherwise.
    pub fn of_group(members: &[Condition]) -> Condition {
        if members.iter().all(|c| *c == Condition::Normal) {
            Condition::Normal
        } else if members.iter().all(|c| *c == Condition::Error) {
            Condition::Error
        } else {
            Condition::Degraded
        }
    }
}

impl Status {
    /// The set's type as the status file says it: a compact set is a dependent one whose
    /// shadow is smaller than the master.
    pub fn type_word(&self) -> &'static str {
        if self.space.is_some() {
            "compact"
        } else {
            self.kind.word()
        }
    }
}

impl Set {
    /// The set's state, from its state flags.
    pub fn state(&self) -> SetState {
        SetState::of(self.flags())
    }

    pub fn condition(&self) -> Condition {
        if self.is_offline() {
            Condition::Error
        } else if self.is_out_of_space() || self.is_suspended() {
            Condition::Degraded
        } else {
            Condition::Normal
        }
    }

    pub fn status(&self) -> Status {
        let f = self.flags();
        let total = self.copier.total();
        let to_copy = self.tracking.count(Map::Copy);
        let state = SetState::of(f);
        // An offline set still shows the copy it had recorded (reset decides what becomes of it).
        let direction = match state {
            SetState::Offline(_) => direction_of(f),
            s => s.direction(),
        };
        let progress = if f & (flags::TO_SHADOW | flags::TO_MASTER) == 0 || total == 0 {
            100
        } else {
            (total.saturating_sub(to_copy) * 100 / total).min(100)
        };
        let (delay_ms, units) = self.throttle();
        let h = self.tracking.header();
        Status {
            name: self.name.clone(),
            kind: self.kind,
            // An idle compact set that could not preserve a chunk says so.
            state: match state {
                SetState::Offline(_) => state.word(),
                _ if self.is_suspended() => "suspended",
                SetState::Idle if self.is_out_of_space() => "out of space",
                s => s.word(),
            },
            condition: self.condition(),
            direction: direction.map(|d| d.word()).unwrap_or("-"),
            progress,
            paths: self.paths.clone(),
            size: self.size,
            chunk_size: self.chunk_size,
            chunks: self.chunks,
            chunks_differ: self.tracking.count_either(),
            chunks_to_copy: to_copy,
            copy_total: total,
            delay_ms,
            units,
            durability: self.durability,
            last_error: self.last_error(),
            pit_time: h.pit_time,
            space: self.space(),
            uuid: uuid_text(h.uuid),
            origin: uuid_text(h.origin),
            hold_until: self.master.hold.held_until().map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state words as the status file showed them before the state was typed.
    fn old_word(f: u32) -> &'static str {
        if f & flags::OFFLINE != 0 {
            "offline"
        } else if f & flags::ACTIVE != 0 {
            if f & FULL_COPY != 0 {
                "copying"
            } else {
                "updating"
            }
        } else if f & (flags::TO_SHADOW | flags::TO_MASTER) != 0 {
            "aborted"
        } else {
            "idle"
        }
    }

    #[test]
    fn the_typed_state_says_what_the_state_flags_said() {
        let bits = [
            flags::TO_SHADOW,
            flags::TO_MASTER,
            flags::ACTIVE,
            FULL_COPY,
            flags::OFFLINE,
            flags::OFFLINE_MASTER,
            flags::OFFLINE_SHADOW,
            flags::OFFLINE_BITMAP,
        ];
        for combo in 0u32..1 << bits.len() {
            let f = (0..bits.len())
                .filter(|i| combo & (1 << i) != 0)
                .fold(0, |f, i| f | bits[i]);
            let state = SetState::of(f);
            assert_eq!(state.word(), old_word(f), "flags {f:#x}");
            assert_eq!(state.to_string(), state.word());
            if f & flags::OFFLINE == 0 && f & (flags::TO_SHADOW | flags::TO_MASTER) != 0 {
                assert_eq!(state.direction(), direction_of(f), "flags {f:#x}");
            }
        }
        assert_eq!(
            SetState::of(flags::OFFLINE | flags::OFFLINE_SHADOW),
            SetState::Offline(OfflineVolumes {
                shadow: true,
                ..OfflineVolumes::default()
            })
        );
    }
}
