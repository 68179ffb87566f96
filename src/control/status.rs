//! The text of the status files: `key: value` lines for a set, one line per set globally.

use std::fmt::Write;

use crate::engine::overflow::OverflowStatus;
use crate::engine::{GroupStatus, SetRecord, Status};

/// `sets/NAME/status` of a set in group `group` (if any).
pub fn set_status(s: &Status, group: Option<&str>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "name: {}\ntype: {}\nstate: {}\ndirection: {}\nprogress: {}\nmaster: {}\nshadow: {}\nbitmap: {}\noverflow: {}\ngroup: {}\nsize: {}\nchunk_size: {}\nchunks: {}\nchunks_differ: {}\nparams: {} {}\nlast_error: {}\ndurability: {}\nchunks_to_copy: {}\npit_time: {}\n",
        s.name,
        s.type_word(),
        s.state,
        s.direction,
        s.progress,
        // An imported set has no master here.
        if s.paths.master.is_empty() {
            "-"
        } else {
            &s.paths.master
        },
        s.paths.shadow,
        s.paths.bitmap,
        s.space
            .as_ref()
            .and_then(|sp| sp.overflow.as_deref())
            .unwrap_or("-"),
        group.unwrap_or("-"),
        s.size,
        s.chunk_size,
        s.chunks,
        s.chunks_differ,
        s.delay_ms,
        s.units,
        s.last_error.as_deref().unwrap_or("-"),
        s.durability.word(),
        s.chunks_to_copy,
        s.pit_time,
    );
    let _ = writeln!(out, "status: {}", s.condition.word());
    let _ = write!(out, "uuid: {}\norigin: {}\n", s.uuid, s.origin);
    let _ = writeln!(
        out,
        "hold_until: {}",
        s.hold_until.map_or("-".to_string(), |t| t.to_string())
    );
    if let Some(sp) = &s.space {
        let _ = write!(
            out,
            "shadow_chunks: {}\nshadow_chunks_used: {}\noverflow_chunks_used: {}\n",
            sp.shadow_chunks, sp.shadow_used, sp.overflow_used
        );
        if let Some((pct, level)) = sp.warning {
            let _ = writeln!(
                out,
                "space_warning: {pct}% of the shadow and overflow space is used (warning at {level}%)"
            );
        }
    }
    out
}

/// `groups/NAME/status`: the group's own lines, then one `member:` line per member (name,
/// status word, progress, then its state, which may be several words).
pub fn group_status(g: &GroupStatus, members: &[String]) -> String {
    let mut out = format!(
        "name: {}\nstate: {}\nstatus: {}\nprogress: {}\nchunks_done: {}\nchunks_to_do: {}\nmembers: {}\n",
        g.name,
        g.state(),
        g.condition.word(),
        g.progress(),
        g.done,
        g.to_do,
        if members.is_empty() {
            "-".to_string()
        } else {
            members.join(" ")
        }
    );
    for m in members {
        match g.members.iter().find(|s| &s.name == m) {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "member: {} {} {} {}",
                    s.name,
                    s.condition.word(),
                    s.progress,
                    s.state
                );
            }
            None => {
                let _ = writeln!(out, "member: {m} error 0 offline");
            }
        }
    }
    out
}

/// `overflow/NAME/status`.
pub fn overflow_status(o: &OverflowStatus) -> String {
    let sets = if o.sets.is_empty() {
        "-".to_string()
    } else {
        o.sets
            .iter()
            .map(|(n, c)| format!("{n}={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "name: {}\nvolume: {}\nsize: {}\nchunk_size: {}\nchunks_total: {}\nchunks_used: {}\nchunks_free: {}\nsets: {sets}\n",
        o.name,
        o.path,
        o.size,
        o.chunk_size,
        o.total,
        o.used,
        o.total.saturating_sub(o.used)
    )
}

pub fn global_status(sets: &[Status]) -> String {
    let mut out = String::new();
    for s in sets {
        let _ = writeln!(
            out,
            "{} {} {} {}",
            s.name,
            s.type_word(),
            s.state,
            s.progress
        );
    }
    out
}

/// The status of a set in the registry that could not be restored at start: what is known of
/// it (its volumes), `state: offline` and why. Counts are 0, words unknown are `-`.
pub fn unrestored_status(rec: &SetRecord, reason: &str, group: Option<&str>) -> String {
    format!(
        "name: {}\ntype: -\nstate: offline\ndirection: -\nprogress: 0\nmaster: {}\nshadow: {}\nbitmap: {}\noverflow: -\ngroup: {}\nsize: 0\nchunk_size: 0\nchunks: 0\nchunks_differ: 0\nparams: - -\nlast_error: could not be restored at start: {reason}; fix the volume and restart iifs, or disable the set to forget it\ndurability: -\nchunks_to_copy: 0\npit_time: 0\nstatus: error\nuuid: -\norigin: -\nhold_until: -\n",
        rec.name,
        rec.master,
        rec.shadow,
        rec.bitmap,
        group.unwrap_or("-")
    )
}

/// The global status line of a set that could not be restored.
pub fn unrestored_line(rec: &SetRecord) -> String {
    format!("{} - offline 0\n", rec.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::set::Paths;
    use crate::engine::{Durability, SetKind};

    #[test]
    fn set_status_has_the_interface_keys_in_order() {
        let s = Status {
            name: "db".into(),
            kind: SetKind::Dependent,
            state: "idle",
            direction: "-",
            progress: 100,
            paths: Paths {
                master: "/m".into(),
                shadow: "/s".into(),
                bitmap: "/b".into(),
            },
            size: 1 << 20,
            chunk_size: 65536,
            chunks: 16,
            chunks_differ: 3,
            chunks_to_copy: 0,
            delay_ms: 0,
            units: 100,
            durability: Durability::Strict,
            last_error: None,
            pit_time: 7,
            space: None,
            copy_total: 0,
            condition: crate::engine::Condition::Normal,
            uuid: "0f0e0d0c-0b0a-4908-8706-050403020100".into(),
            origin: "-".into(),
            hold_until: None,
        };
        let text = set_status(&s, Some("g1"));
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "name",
                "type",
                "state",
                "direction",
                "progress",
                "master",
                "shadow",
                "bitmap",
                "overflow",
                "group",
                "size",
                "chunk_size",
                "chunks",
                "chunks_differ",
                "params",
                "last_error",
                "durability",
                "chunks_to_copy",
                "pit_time",
                "status",
                "uuid",
                "origin",
                "hold_until"
            ]
        );
        assert!(text.contains("chunks_differ: 3\n") && text.contains("params: 0 100\n"));
        assert!(text.contains("group: g1\n"));
        assert_eq!(global_status(&[s]), "db dependent idle 100\n");
    }
}
