//! The text of the status files: `key: value` lines for a set, one line per set globally.

use std::fmt::Write;

use crate::engine::{Status, VolumeUse};

pub fn set_status(s: &Status) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "name: {}\ntype: {}\nstate: {}\ndirection: {}\nprogress: {}\nmaster: {}\nshadow: {}\nbitmap: {}\noverflow: -\ngroup: -\nsize: {}\nchunk_size: {}\nchunks: {}\nchunks_differ: {}\nchunks_to_copy: {}\nparams: {} {}\ndurability: {}\npit_time: {}\nlast_error: {}\n",
        s.name,
        s.kind.word(),
        s.state,
        s.direction,
        s.progress,
        s.paths.master,
        s.paths.shadow,
        s.paths.bitmap,
        s.size,
        s.chunk_size,
        s.chunks,
        s.chunks_differ,
        s.chunks_to_copy,
        s.delay_ms,
        s.units,
        s.durability.word(),
        s.pit_time,
        s.last_error.as_deref().unwrap_or("-"),
    );
    out
}

pub fn global_status(sets: &[Status]) -> String {
    let mut out = String::new();
    for s in sets {
        let _ = writeln!(
            out,
            "{} {} {} {}",
            s.name,
            s.kind.word(),
            s.state,
            s.progress
        );
    }
    out
}

pub fn volumes(vols: &[VolumeUse]) -> String {
    let mut out = String::new();
    for v in vols {
        let _ = writeln!(out, "{} {} {} {}", v.path, v.size, v.role, v.set);
    }
    out
}
