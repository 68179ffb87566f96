//! Helpers for the export/import/join mount tests (issue 12): two daemons (two state dirs, two
//! mount points) sharing one directory of volume files, as two hosts sharing a SAN would.
//! Included with `#[path = "common/export.rs"] mod export;` next to `mod common;`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;

use super::common::{pattern, Mount};

/// The volume files both daemons see. Declare it BEFORE the mounts: locals drop in reverse
/// order, so the daemons are stopped (and unmounted) before the files go.
pub struct Vols {
    pub dir: tempfile::TempDir,
}

impl Vols {
    pub fn new() -> Vols {
        Vols {
            dir: tempfile::Builder::new()
                .prefix("iifs-export-vols-")
                .tempdir()
                .expect("volume dir"),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// A file of `size` bytes (sparse; `seed` != 0: filled with `pattern(size, seed)`).
    pub fn file(&self, name: &str, size: u64, seed: u64) -> String {
        let p = self.path(name);
        let f = File::create(&p).expect("create volume");
        f.set_len(size).expect("size volume");
        if seed != 0 {
            f.write_all_at(&pattern(size as usize, seed), 0)
                .expect("fill volume");
        }
        p
    }
}

/// A set's three volume files.
#[derive(Clone, Debug)]
pub struct SetVols {
    pub master: String,
    pub shadow: String,
    pub bitmap: String,
}

impl SetVols {
    /// The export record written beside the shadow.
    pub fn record(&self) -> String {
        format!("{}.iifs-export", self.shadow)
    }
}

/// Enable independent set `name` on daemon `m` (master of `size` bytes from `seed`, or sparse
/// zeros for seed 0) with `opts`, and wait for its first copy unless `opts` throttles it.
pub fn ind_set(m: &Mount, v: &Vols, name: &str, size: u64, chunk: u64, seed: u64) -> SetVols {
    let sv = new_set(m, v, "ind", name, size, chunk, seed, "");
    m.set_ok(name, "wait");
    assert_eq!(m.status(name)["state"], "idle", "set {name} after its copy");
    sv
}

#[allow(clippy::too_many_arguments)]
pub fn new_set(
    m: &Mount,
    v: &Vols,
    kind: &str,
    name: &str,
    size: u64,
    chunk: u64,
    seed: u64,
    opts: &str,
) -> SetVols {
    let sv = SetVols {
        master: v.file(&format!("m-{name}.img"), size, seed),
        shadow: v.file(&format!("s-{name}.img"), size, 0),
        bitmap: v.path(&format!("b-{name}.img")),
    };
    m.ok(
        "ctl",
        &format!(
            "enable {kind} {} {} {} {name} chunk_size={chunk} {opts}",
            sv.master, sv.shadow, sv.bitmap
        ),
    );
    sv
}

/// The bytes `write_chunk` puts into chunk `idx` for `tag` (distinct per tag and chunk).
pub fn chunk_bytes(chunk: u64, idx: u64, tag: u64) -> Vec<u8> {
    pattern(chunk as usize, tag.wrapping_mul(1_000_003) ^ (idx + 1))
}

/// Write a whole chunk `idx` of file `rel` (relative to mount `m`) with `chunk_bytes(.., tag)`.
pub fn write_chunk(m: &Mount, rel: &str, chunk: u64, idx: u64, tag: u64) {
    m.write_at(rel, idx * chunk, &chunk_bytes(chunk, idx, tag));
}

/// Write one byte-range inside each chunk of `idxs` (a partial chunk write: the rest of the
/// chunk must still move whole).
pub fn write_chunks(m: &Mount, rel: &str, chunk: u64, idxs: &BTreeSet<u64>, tag: u64) {
    for &i in idxs {
        write_chunk(m, rel, chunk, i, tag);
    }
}

/// Read chunk `idx` of a file on disk.
pub fn disk_chunk(path: &str, chunk: u64, idx: u64) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let mut buf = vec![0u8; chunk as usize];
    f.read_exact_at(&mut buf, idx * chunk)
        .unwrap_or_else(|e| panic!("read {path} chunk {idx}: {e}"));
    buf
}

/// Compare two files block by block (they may be large); on a difference, where.
#[track_caller]
pub fn assert_files_equal(a: &str, b: &str, what: &str) {
    let la = fs::metadata(a).unwrap().len();
    let lb = fs::metadata(b).unwrap().len();
    assert_eq!(la, lb, "{what}: sizes of {a} and {b} differ");
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        assert_eq!(n, m, "{what}: short read");
        if n == 0 {
            return;
        }
        if ba[..n] != bb[..n] {
            let first = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y);
            panic!(
                "{what}: {a} and {b} differ at byte {}",
                off + first.unwrap() as u64
            );
        }
        off += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]).expect("read") {
            0 => break,
            n => got += n,
        }
    }
    got
}

/// `update shadow` of `set` on `m`, waited for: then the shadow file equals the master file.
#[track_caller]
pub fn update_shadow_to_master(m: &Mount, set: &str, sv: &SetVols, what: &str) {
    m.set_ok(set, "update shadow");
    m.set_ok(set, "wait");
    assert_files_equal(&sv.shadow, &sv.master, what);
}

/// Write `cmd` to ctl file `ctl` from a thread that opens it, then writes in step with the
/// caller (both pass a barrier before this returns): the write's result, and how long it took.
pub fn write_in_step(ctl: PathBuf, cmd: String) -> JoinHandle<(Result<(), String>, Duration)> {
    let go = Arc::new(Barrier::new(2));
    let go2 = go.clone();
    let writer = std::thread::spawn(move || {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(ctl)
            .expect("open ctl");
        go2.wait();
        let t = Instant::now();
        let r = f
            .write(cmd.as_bytes())
            .map(|_| ())
            .map_err(|e| e.to_string());
        (r, t.elapsed())
    });
    go.wait();
    writer
}

/// When to kill the daemon in crash round `round`: never in round 0 (it measures how long the
/// command takes), then at a random moment in 0..=1.5x `took` (`took` at least `floor_us` µs).
pub fn kill_delay(
    round: u64,
    rng: &mut impl Rng,
    took: Duration,
    floor_us: u64,
) -> Option<Duration> {
    if round == 0 {
        return None;
    }
    let max = took.as_micros().max(u128::from(floor_us)) as u64 * 3 / 2;
    Some(Duration::from_micros(rng.gen_range(0..=max)))
}

pub fn chunks_differ(m: &Mount, set: &str) -> u64 {
    m.status(set)["chunks_differ"]
        .parse()
        .expect("chunks_differ")
}

/// The `key: value` lines of an export record.
pub fn record_fields(path: &str) -> std::collections::HashMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read export record {path}: {e}"))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Whether `rel` in mount `m` is absent (lookup ENOENT).
pub fn absent(m: &Mount, rel: &str) -> bool {
    match fs::metadata(m.path(rel)) {
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
        Ok(_) => false,
    }
}

/// Copy a file (a bitmap brought to another place, then damaged).
pub fn copy_file(from: &str, to: &str) {
    fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from} to {to}: {e}"));
}

pub fn overwrite(path: &str, offset: u64, data: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

/// The registry file of a daemon.
pub fn registry(m: &Mount) -> Vec<u8> {
    fs::read(m.state.join("iifs.yaml")).unwrap_or_default()
}

pub fn mount_path(m: &Mount) -> PathBuf {
    m.mnt.clone()
}

pub fn exists(p: &str) -> bool {
    Path::new(p).exists()
}
