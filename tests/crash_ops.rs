//! The crash harness (issue 16): the daemon is SIGKILLed at a random moment during every kind
//! of operation, round after round on one pair of mounts, and every invariant is checked after
//! each kill:
//!
//! - right after the kill, before the restart, `iiadm check` of every set the registry lists
//!   exits 0 or 1 (leaks are allowed after a crash, corruption never);
//! - after the restart every set is back and sound (not offline, not out of space), and every
//!   shadow reads its point in time: through the mount while a resumed copy is still running,
//!   and in its file once it has ended;
//! - an update or copy interrupted after its command was acknowledged finishes with the new
//!   image (shadow == master for one to the shadow, master == shadow for one to the master);
//!   one killed before the acknowledgement gives the old image or the new one, never a mix
//!   (the status afterwards says which, as `power_loss.rs` does with two expected images), and
//!   the two members of a group agree;
//! - every master write acknowledged by a successful `fsync` is in the master file;
//! - nothing the round did not touch moved: every other set's master and shadow;
//! - `enable` and `disable` are atomic: the set is there and sound, or it is absent with its
//!   master (and a finished independent shadow) untouched, and a retry works.
//!
//! Round `i` runs operation `i % 10`: master writes with fsync (a dependent set), `copy
//! shadow`, `update shadow`, `update master`, `copy master` (an independent set, its copy
//! throttled with `params` so the kill lands in it), a group `update shadow` (two independent
//! sets), writes spilling from a compact shadow of 8 slots into its overflow, export + import
//! (a second daemon) + join, `enable`, `disable`.
//!
//! Environment: `IIFS_CRASH_OPS_ROUNDS` (default 150, 15 of each operation: about 45 s here),
//! `IIFS_SEED` (replay a run's choices; each run prints its seed), `IIFS_CRASH_OPS_ONLY`
//! (`Disable,Enable`: only these operations, in turn). `bash tests/crash.sh ROUNDS` runs more.

mod common;
#[path = "common/export.rs"]
mod export;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::{file_bytes, write_ctl, Mount};
use export::{chunk_bytes, Vols};

const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");
const CHUNK: u64 = 4096;
/// The throttle that makes a copy last: DELAY ms after every `units` chunks.
const DELAY_MS: u64 = 4;
/// About how long a throttled copy runs (ms): kills land in 0..1.3x of it.
const COPY_MS: u64 = 300;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ind,
    Dep,
    Compact,
}

/// What a set must look like once its copies have ended.
struct Model {
    kind: Kind,
    master: String,
    shadow: String,
    /// The point in time: what the served shadow reads (for an independent set whose copy
    /// ended, also its file).
    pit: Vec<u8>,
    /// What the master file holds.
    master_img: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Writes,
    CopyShadow,
    UpdateShadow,
    UpdateMaster,
    CopyMaster,
    GroupUpdate,
    Spill,
    ExportImportJoin,
    Enable,
    Disable,
}

const OPS: [Op; 10] = [
    Op::Writes,
    Op::CopyShadow,
    Op::UpdateShadow,
    Op::UpdateMaster,
    Op::CopyMaster,
    Op::GroupUpdate,
    Op::Spill,
    Op::ExportImportJoin,
    Op::Enable,
    Op::Disable,
];

/// What each kind of round saw, for the summary (and the assertion that the kills landed
/// both before and after the acknowledgement over the run).
#[derive(Default, Debug)]
struct Tally {
    rounds: u64,
    acked: u64,
    not_acked: u64,
    new_image: u64,
    old_image: u64,
    resumed: u64,
    fsynced: u64,
    /// Chunks found in the overflow after the kills of the spill rounds.
    spilled: u64,
    /// `iiadm check` runs that found leaks (allowed after a crash).
    leaks: u64,
}

/// Chunk by chunk, where `actual` differs from `expected`.
fn diff_chunks(actual: &[u8], expected: &[u8]) -> Vec<usize> {
    let c = CHUNK as usize;
    (0..expected.len().div_ceil(c))
        .filter(|i| {
            let r = i * c..((i + 1) * c).min(expected.len());
            actual.get(r.clone()) != expected.get(r)
        })
        .collect()
}

#[track_caller]
fn same(actual: &[u8], expected: &[u8], what: &str) {
    let bad = diff_chunks(actual, expected);
    assert!(
        bad.is_empty() && actual.len() == expected.len(),
        "{what}: chunks {:?}{} differ (lengths {} and {})",
        &bad[..bad.len().min(20)],
        if bad.len() > 20 { " ..." } else { "" },
        actual.len(),
        expected.len()
    );
}

/// Which of `old` and `new` the image `actual` is (true: new); panics when neither.
#[track_caller]
fn old_or_new(actual: &[u8], old: &[u8], new: &[u8], what: &str) -> bool {
    if actual == new {
        return true;
    }
    if actual == old {
        return false;
    }
    panic!(
        "{what}: neither the old image (chunks {:?} differ) nor the new one (chunks {:?} differ)",
        diff_chunks(actual, old),
        diff_chunks(actual, new)
    );
}

/// `image` with chunk `i` replaced by `chunk_bytes(CHUNK, i, tag)` for each `i`.
fn with_chunks(image: &[u8], idxs: &BTreeSet<u64>, tag: u64) -> Vec<u8> {
    let mut out = image.to_vec();
    for &i in idxs {
        let at = (i * CHUNK) as usize;
        out[at..at + CHUNK as usize].copy_from_slice(&chunk_bytes(CHUNK, i, tag));
    }
    out
}

/// A command on a ctl file that must succeed; an EBUSY "is open" (the kernel sends a file's
/// release after close(2) returned) is tried again for up to 5 s.
#[track_caller]
fn must(m: &Mount, rel: &str, cmd: &str) {
    if let Err((errno, reply)) = retrying(&m.path(rel), cmd) {
        panic!(
            "'{cmd}' on {rel} failed: errno {errno}, reply {reply:?}\nlog:\n{}",
            m.log()
        );
    }
}

fn retrying(ctl: &std::path::Path, cmd: &str) -> Result<(), (i32, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut f = match OpenOptions::new().read(true).write(true).open(ctl) {
            Ok(f) => f,
            Err(e) => return Err((e.raw_os_error().unwrap_or(0), e.to_string())),
        };
        match write_ctl(&mut f, cmd) {
            Err((libc::EBUSY, reply))
                if reply.contains(" is open") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            r => return r,
        }
    }
}

/// Write `cmd` to `ctl` from a thread (EBUSY "is open" tried again) while this thread sleeps
/// `delay`, then SIGKILL the daemon of `m`: whether the command was acknowledged before.
fn kill_during(m: &mut Mount, rel: &str, cmd: &str, delay: Duration) -> bool {
    let ctl = m.path(rel);
    let cmd2 = cmd.to_string();
    let go = Arc::new(Barrier::new(2));
    let go2 = go.clone();
    let t = std::thread::spawn(move || {
        go2.wait();
        retrying(&ctl, &cmd2)
    });
    go.wait();
    std::thread::sleep(delay);
    m.kill9();
    let r = t.join().expect("command thread");
    if let Err((errno, reply)) = &r {
        // Refused for a reason of its own (not the kill): the round would test nothing.
        assert!(
            [
                libc::ENOTCONN,
                libc::ECONNABORTED,
                libc::EIO,
                libc::EINTR,
                libc::ENOENT
            ]
            .contains(errno),
            "'{cmd}' on {rel} was refused before the kill: errno {errno}, {reply:?}"
        );
    }
    r.is_ok()
}

/// Writes with fsync into slots of `slot` bytes from `start` (a fresh slot per write, so a
/// later write never covers an earlier one), until a write fails (the kill) or `stop`: the
/// writes a successful fsync covered, as (offset, bytes).
fn fsync_writer(
    path: PathBuf,
    start: u64,
    slot: u64,
    slots: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Vec<(u64, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut durable = Vec::new();
    let mut pending = Vec::new();
    let Ok(f) = OpenOptions::new().write(true).open(&path) else {
        return durable;
    };
    for s in 0..slots {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let o = rng.gen_range(0..slot / 2);
        let len = rng.gen_range(1..=slot - o) as usize;
        let off = start + s * slot + o;
        let data = common::pattern(len, rng.gen());
        if f.write_all_at(&data, off).is_err() {
            break;
        }
        pending.push((off, data));
        if rng.gen_bool(0.6) {
            if f.sync_data().is_err() {
                break;
            }
            durable.append(&mut pending);
        }
    }
    durable
}

/// Every fsync'd write is in the file at `path`.
#[track_caller]
fn assert_durable(path: &str, writes: &[(u64, Vec<u8>)], what: &str) {
    let f = File::open(path).expect("open master");
    for (off, data) in writes {
        let mut buf = vec![0u8; data.len()];
        f.read_exact_at(&mut buf, *off).expect("read master");
        assert!(
            &buf == data,
            "{what}: a write of {} bytes at {off}, acknowledged by fsync, is lost",
            data.len()
        );
    }
}

struct Harness {
    // The mounts drop before the volume files.
    a: Mount,
    b: Mount,
    v: Vols,
    rng: StdRng,
    sets: BTreeMap<String, Model>,
    tally: BTreeMap<Op, Tally>,
    /// How long the unkilled export, import and join took (the kills aim at those).
    took: [Duration; 3],
    enable_took: Duration,
    disable_took: Duration,
}

impl Harness {
    fn new(a: Mount, b: Mount, seed: u64) -> Harness {
        Harness {
            a,
            b,
            v: Vols::new(),
            rng: StdRng::seed_from_u64(seed),
            sets: BTreeMap::new(),
            tally: BTreeMap::new(),
            took: [Duration::from_millis(10); 3],
            enable_took: Duration::from_millis(20),
            disable_took: Duration::from_millis(20),
        }
    }

    fn tally(&mut self, op: Op) -> &mut Tally {
        self.tally.entry(op).or_default()
    }

    /// A set on daemon `a` (kind ind, dep or compact with `shadow_size`), its model; an
    /// independent set's first copy is waited for.
    fn add_set(&mut self, name: &str, kind: Kind, size: u64, shadow_size: u64, seed: u64) {
        let master = self.v.file(&format!("m-{name}.img"), size, seed);
        let shadow = self.v.file(&format!("s-{name}.img"), shadow_size, 0);
        let bitmap = self.v.path(&format!("b-{name}.img"));
        let word = if kind == Kind::Ind { "ind" } else { "dep" };
        must(
            &self.a,
            "ctl",
            &format!("enable {word} {master} {shadow} {bitmap} {name} chunk_size={CHUNK}"),
        );
        if kind == Kind::Ind {
            must(&self.a, &format!("sets/{name}/ctl"), "wait");
        }
        let img = file_bytes(&master);
        self.sets.insert(
            name.to_string(),
            Model {
                kind,
                master,
                shadow,
                pit: img.clone(),
                master_img: img,
            },
        );
    }

    fn setup(&mut self) {
        self.add_set("dep", Kind::Dep, 2 << 20, 2 << 20, 1);
        self.add_set("ind", Kind::Ind, 2 << 20, 2 << 20, 2);
        self.add_set("g1", Kind::Ind, 1 << 20, 1 << 20, 3);
        self.add_set("g2", Kind::Ind, 1 << 20, 1 << 20, 4);
        must(&self.a, "ctl", "group create g");
        must(&self.a, "sets/g1/ctl", "group g");
        must(&self.a, "sets/g2/ctl", "group g");
        // A compact set of 256 chunks with 8 slots; its overflow takes every other chunk
        // twice over (leaks after a crash must not run it out of space).
        self.add_set("cmp", Kind::Compact, 1 << 20, 8 * CHUNK, 5);
        let pool = self.v.file("pool.img", 513 * CHUNK, 0);
        must(
            &self.a,
            "ctl",
            &format!("overflow init {pool} pool chunk_size={CHUNK}"),
        );
        must(&self.a, "sets/cmp/ctl", "attach pool");
        self.add_set("ex", Kind::Ind, 1 << 20, 1 << 20, 6);
    }

    /// Right after a kill: `iiadm check` of every set in the registry of `m` exits 0 or 1.
    fn check_bitmaps(m: &Mount, what: &str) -> u64 {
        let reg = iifs::registry::Registry::open(&m.state).expect("registry");
        let mut leaks = 0;
        for rec in reg.records() {
            let out = Command::new(IIADM)
                .arg("check")
                .arg(&rec.name)
                .arg("--state-dir")
                .arg(&m.state)
                .output()
                .expect("run iiadm check");
            let code = out.status.code().unwrap_or(-1);
            assert!(
                code == 0 || code == 1,
                "{what}: 'iiadm check {}' after the kill exits {code}:\n{}{}\nlog:\n{}",
                rec.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                m.log()
            );
            if code == 1 {
                leaks += 1;
                eprintln!(
                    "{what}: leaks in set {}: {}",
                    rec.name,
                    String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .replace('\n', " | ")
                );
            }
        }
        leaks
    }

    /// After a kill of `a`: the checker, then the restart, and every set of the model listed.
    fn restart_a(&mut self, op: Op, what: &str) {
        let leaks = Self::check_bitmaps(&self.a, what);
        self.tally(op).leaks += leaks;
        self.a.start_again();
        let names = self.a.set_names();
        for name in self.sets.keys() {
            assert!(
                names.contains(name),
                "{what}: set {name} is not back after the restart: {names:?}"
            );
        }
    }

    fn restart_b(&mut self, op: Op, what: &str) {
        let leaks = Self::check_bitmaps(&self.b, what);
        self.tally(op).leaks += leaks;
        self.b.start_again();
    }

    /// A kill delay for a throttled copy: mostly during the copy, one round in four around
    /// the command's acknowledgement.
    fn copy_delay(&mut self) -> Duration {
        if self.rng.gen_bool(0.25) {
            Duration::from_micros(self.rng.gen_range(0..3000))
        } else {
            Duration::from_millis(self.rng.gen_range(0..=COPY_MS * 13 / 10))
        }
    }

    fn delay_around(&mut self, took: Duration) -> Duration {
        let max = took.as_micros().max(2000) as u64 * 3 / 2;
        Duration::from_micros(self.rng.gen_range(0..=max))
    }

    /// `n` distinct random chunks of `chunks`.
    fn some_chunks(&mut self, chunks: u64, n: usize) -> BTreeSet<u64> {
        let mut s = BTreeSet::new();
        while s.len() < n {
            s.insert(self.rng.gen_range(0..chunks));
        }
        s
    }

    /// Write whole chunks `idxs` of set `name`'s master (or shadow) through the mount, with
    /// tag `tag`; the model follows.
    fn write_chunks(&mut self, name: &str, shadow: bool, idxs: &BTreeSet<u64>, tag: u64) {
        let file = if shadow { "shadow" } else { "master" };
        export::write_chunks(&self.a, &format!("sets/{name}/{file}"), CHUNK, idxs, tag);
        let s = self.sets.get_mut(name).expect("set");
        if shadow {
            s.pit = with_chunks(&s.pit, idxs, tag);
        } else {
            s.master_img = with_chunks(&s.master_img, idxs, tag);
        }
    }

    /// Throttle set `name`'s copies so that one of `chunks` chunks lasts about COPY_MS.
    fn throttle(&self, name: &str, chunks: u64) {
        let units = (chunks * DELAY_MS / COPY_MS).max(1);
        must(
            &self.a,
            &format!("sets/{name}/ctl"),
            &format!("params {DELAY_MS} {units}"),
        );
    }

    /// Unthrottle set `name` and wait for its copy, if one runs; true when one did.
    fn finish_copy(&self, name: &str, what: &str) -> bool {
        let st = self.a.status(name);
        let running = st["state"] == "copying" || st["state"] == "updating";
        must(&self.a, &format!("sets/{name}/ctl"), "params 0 100");
        // Polled rather than `wait`ed for: a copy that does not resume fails the test, it
        // does not hang it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self.a.status(name);
            if st["state"] != "copying" && st["state"] != "updating" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: set {name}: the copy did not finish in 30 s: {st:?}\nlog:\n{}",
                self.a.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        running
    }

    /// Every set of the model: sound, its copies ended, its shadow reading its point in time,
    /// its master holding what the model says.
    fn verify_all(&mut self, what: &str) {
        let names: Vec<String> = self.sets.keys().cloned().collect();
        for name in names {
            self.finish_copy(&name, what);
            let st = self.a.status(&name);
            assert_eq!(st["state"], "idle", "{what}: set {name}: {st:?}");
            assert_eq!(st["status"], "normal", "{what}: set {name}: {st:?}");
            let s = &self.sets[&name];
            same(
                &self.a.read(&format!("sets/{name}/shadow")),
                &s.pit,
                &format!("{what}: set {name}: the shadow reads its point in time"),
            );
            same(
                &file_bytes(&s.master),
                &s.master_img,
                &format!("{what}: set {name}: the master file"),
            );
            same(
                &self.a.read(&format!("sets/{name}/master")),
                &s.master_img,
                &format!("{what}: set {name}: the served master"),
            );
            if s.kind == Kind::Ind {
                same(
                    &file_bytes(&s.shadow),
                    &s.pit,
                    &format!("{what}: set {name}: the shadow file once the copy ended"),
                );
            }
        }
    }

    fn round(&mut self, round: u64, ops: &[Op]) {
        let op = ops[(round % ops.len() as u64) as usize];
        let what = format!("round {round} ({op:?})");
        self.tally(op).rounds += 1;
        match op {
            Op::Writes => self.writes(&what),
            Op::CopyShadow | Op::UpdateShadow => self.copy_to_shadow(op, &what),
            Op::UpdateMaster | Op::CopyMaster => self.copy_to_master(op, &what),
            Op::GroupUpdate => self.group_update(&what),
            Op::Spill => self.spill(&what),
            Op::ExportImportJoin => self.export_import_join(round, &what),
            Op::Enable => self.enable(round, &what),
            Op::Disable => self.disable(round, &what),
        }
        self.verify_all(&what);
    }

    /// Writers with fsync on `sets/{name}/master`, each in its own region of `slot`-byte
    /// slots, killed after `delay`: the fsync'd writes must all be in the master file.
    fn kill_writers(
        &mut self,
        op: Op,
        name: &str,
        writers: u64,
        slot: u64,
        delay: Duration,
        what: &str,
    ) {
        let size = self.sets[name].master_img.len() as u64;
        let region = size / writers;
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (p, s, seed) = (
                    self.a.path(&format!("sets/{name}/master")),
                    stop.clone(),
                    self.rng.gen(),
                );
                std::thread::spawn(move || {
                    fsync_writer(p, w * region, slot, region / slot, seed, s)
                })
            })
            .collect();
        std::thread::sleep(delay);
        self.a.kill9();
        stop.store(true, Ordering::SeqCst);
        let durable: Vec<(u64, Vec<u8>)> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect();
        self.tally(op).fsynced += durable.len() as u64;
        self.restart_a(op, what);
        let s = self.sets.get_mut(name).expect("set");
        assert_durable(&s.master, &durable, what);
        s.master_img = file_bytes(&s.master);
    }

    /// Master writes with fsync on the dependent set, then a new point in time.
    fn writes(&mut self, what: &str) {
        let delay = Duration::from_millis(self.rng.gen_range(20..=300));
        self.kill_writers(Op::Writes, "dep", 4, 8192, delay, what);
        same(
            &self.a.read("sets/dep/shadow"),
            &self.sets["dep"].pit,
            &format!("{what}: the dependent shadow after the kill"),
        );
        must(&self.a, "sets/dep/ctl", "update shadow");
        let s = self.sets.get_mut("dep").expect("dep");
        s.pit = s.master_img.clone();
    }

    /// `copy shadow` or `update shadow` of the independent set, killed during its copy.
    fn copy_to_shadow(&mut self, op: Op, what: &str) {
        let chunks = (2 << 20) / CHUNK;
        let n = if op == Op::CopyShadow { 8 } else { 96 };
        let idxs = self.some_chunks(chunks, n);
        {
            let tag = self.rng.gen();
            self.write_chunks("ind", false, &idxs, tag);
        }
        self.throttle(
            "ind",
            if op == Op::CopyShadow {
                chunks
            } else {
                n as u64
            },
        );
        let cmd = if op == Op::CopyShadow {
            "copy shadow"
        } else {
            "update shadow"
        };
        let delay = self.copy_delay();
        let acked = kill_during(&mut self.a, "sets/ind/ctl", cmd, delay);
        self.restart_a(op, what);
        let (old, new) = (
            self.sets["ind"].pit.clone(),
            self.sets["ind"].master_img.clone(),
        );
        let st = self.a.status("ind");
        // While the resumed copy runs (still throttled), the served shadow reads one image.
        let served = self.a.read("sets/ind/shadow");
        let is_new = old_or_new(
            &served,
            &old,
            &new,
            &format!("{what}: the served shadow ({st:?})"),
        );
        assert!(
            is_new || !acked,
            "{what}: '{cmd}' was acknowledged, the shadow is at the old point in time"
        );
        let resumed = self.finish_copy("ind", what);
        let t = self.tally(op);
        t.resumed += u64::from(resumed);
        if acked {
            t.acked += 1;
        } else {
            t.not_acked += 1;
        }
        if is_new {
            t.new_image += 1;
        } else {
            t.old_image += 1;
        }
        self.sets.get_mut("ind").expect("ind").pit = if is_new { new } else { old };
    }

    /// `update master` or `copy master` of the independent set (the shadow written first, so
    /// the restore moves chunks), killed during its copy: the master reads as restored as soon
    /// as the restore is recorded, and is the shadow once it ended.
    fn copy_to_master(&mut self, op: Op, what: &str) {
        let chunks = (2 << 20) / CHUNK;
        let on_shadow = self.some_chunks(chunks, 48);
        let on_master = self.some_chunks(chunks, 48);
        {
            let tag = self.rng.gen();
            self.write_chunks("ind", true, &on_shadow, tag);
        }
        {
            let tag = self.rng.gen();
            self.write_chunks("ind", false, &on_master, tag);
        }
        self.throttle("ind", if op == Op::CopyMaster { chunks } else { 96 });
        let cmd = if op == Op::CopyMaster {
            "copy master"
        } else {
            "update master"
        };
        let delay = self.copy_delay();
        let acked = kill_during(&mut self.a, "sets/ind/ctl", cmd, delay);
        self.restart_a(op, what);
        let (old, new) = (
            self.sets["ind"].master_img.clone(),
            self.sets["ind"].pit.clone(),
        );
        let st = self.a.status("ind");
        let served = self.a.read("sets/ind/master");
        let is_new = old_or_new(
            &served,
            &old,
            &new,
            &format!("{what}: the served master ({st:?})"),
        );
        assert!(
            is_new || !acked,
            "{what}: '{cmd}' was acknowledged, the master does not read as restored"
        );
        same(
            &self.a.read("sets/ind/shadow"),
            &new,
            &format!("{what}: the shadow, source of the restore"),
        );
        let resumed = self.finish_copy("ind", what);
        let t = self.tally(op);
        t.resumed += u64::from(resumed);
        if acked {
            t.acked += 1;
        } else {
            t.not_acked += 1;
        }
        if is_new {
            t.new_image += 1;
        } else {
            t.old_image += 1;
        }
        self.sets.get_mut("ind").expect("ind").master_img = if is_new { new } else { old };
    }

    /// A group `update shadow` of g1 and g2, killed during the members' copies: both members
    /// at the new point in time, or (killed before the acknowledgement) both at the old one.
    fn group_update(&mut self, what: &str) {
        let chunks = (1 << 20) / CHUNK;
        for g in ["g1", "g2"] {
            let idxs = self.some_chunks(chunks, 64);
            {
                let tag = self.rng.gen();
                self.write_chunks(g, false, &idxs, tag);
            }
            self.throttle(g, 64);
        }
        let delay = self.copy_delay();
        let acked = kill_during(&mut self.a, "groups/g/ctl", "update shadow", delay);
        self.restart_a(Op::GroupUpdate, what);
        let mut choice = Vec::new();
        for g in ["g1", "g2"] {
            let s = &self.sets[g];
            let served = self.a.read(&format!("sets/{g}/shadow"));
            choice.push(old_or_new(
                &served,
                &s.pit,
                &s.master_img,
                &format!("{what}: {g}"),
            ));
        }
        assert_eq!(
            choice[0], choice[1],
            "{what}: the members are at different points in time (g1 new: {}, g2 new: {})",
            choice[0], choice[1]
        );
        assert!(
            choice[0] || !acked,
            "{what}: the group update was acknowledged, the shadows are at the old point in time"
        );
        let mut resumed = false;
        for g in ["g1", "g2"] {
            resumed |= self.finish_copy(g, what);
            let s = self.sets.get_mut(g).expect("member");
            if choice[0] {
                s.pit = s.master_img.clone();
            }
        }
        let t = self.tally(Op::GroupUpdate);
        t.resumed += u64::from(resumed);
        if acked {
            t.acked += 1;
        } else {
            t.not_acked += 1;
        }
        if choice[0] {
            t.new_image += 1;
        } else {
            t.old_image += 1;
        }
    }

    /// The compact set: a new point in time (sometimes killed in it: it frees every slot),
    /// then writers with fsync whose first writes spill from the 8 slots into the overflow.
    fn spill(&mut self, what: &str) {
        if self.rng.gen_bool(0.3) {
            let delay = Duration::from_micros(self.rng.gen_range(0..3000));
            let acked = kill_during(&mut self.a, "sets/cmp/ctl", "update shadow", delay);
            self.restart_a(Op::Spill, what);
            let s = &self.sets["cmp"];
            let served = self.a.read("sets/cmp/shadow");
            let is_new = old_or_new(
                &served,
                &s.pit,
                &s.master_img,
                &format!("{what}: the compact shadow"),
            );
            assert!(
                is_new || !acked,
                "{what}: an acknowledged update shadow was lost"
            );
            let t = self.tally(Op::Spill);
            t.acked += u64::from(acked);
            t.not_acked += u64::from(!acked);
            t.new_image += u64::from(is_new);
            t.old_image += u64::from(!is_new);
            if !is_new {
                must(&self.a, "sets/cmp/ctl", "update shadow");
            }
        } else {
            must(&self.a, "sets/cmp/ctl", "update shadow");
        }
        {
            let s = self.sets.get_mut("cmp").expect("cmp");
            s.pit = s.master_img.clone();
        }
        let delay = Duration::from_millis(self.rng.gen_range(20..=300));
        self.kill_writers(Op::Spill, "cmp", 2, CHUNK, delay, what);
        let st = self.a.status("cmp");
        let spilled = common::num(&st, "overflow_chunks_used");
        self.tally(Op::Spill).spilled += spilled;
        same(
            &self.a.read("sets/cmp/shadow"),
            &self.sets["cmp"].pit,
            &format!("{what}: the compact shadow after the kill ({st:?})"),
        );
    }

    /// Export on `a`, import on `b`, writes there, disable there, join on `a`: one of the
    /// three commands killed (its daemon), the rest done after the restart; then the chunks
    /// changed on either side differ and `update shadow` makes shadow == master.
    fn export_import_join(&mut self, round: u64, what: &str) {
        let op = Op::ExportImportJoin;
        let phase = self.rng.gen_range(0..3usize);
        let chunks = (1 << 20) / CHUNK;
        let ma = self.some_chunks(chunks, 10);
        let tag_a = self.rng.gen_range(1..1 << 40);
        self.write_chunks("ex", false, &ma, tag_a);
        let shadow = self.sets["ex"].shadow.clone();
        let pit = self.sets["ex"].pit.clone();

        // Export.
        let t = Instant::now();
        if phase == 0 {
            let delay = self.delay_around(self.took[0]);
            let acked = kill_during(&mut self.a, "sets/ex/ctl", "export", delay);
            self.restart_a(op, what);
            let st = self.a.status("ex");
            match st["state"].as_str() {
                "exported" => {}
                "idle" => {
                    assert!(!acked, "{what}: an acknowledged export was lost: {st:?}");
                    must(&self.a, "sets/ex/ctl", "export");
                }
                s => panic!("{what}: state {s} after a kill during export: {st:?}"),
            }
            self.count(op, acked);
        } else {
            must(&self.a, "sets/ex/ctl", "export");
            self.took[0] = t.elapsed();
        }
        assert_eq!(self.a.status("ex")["state"], "exported", "{what}");
        same(
            &file_bytes(&shadow),
            &pit,
            &format!("{what}: the exported shadow"),
        );

        // Import on b.
        let bm = self.v.path(&format!("bi-{round}.img"));
        let cmd = format!("import {shadow} {bm} imp");
        let t = Instant::now();
        if phase == 1 {
            let delay = self.delay_around(self.took[1]);
            let acked = kill_during(&mut self.b, "ctl", &cmd, delay);
            self.restart_b(op, what);
            if self.b.set_names().is_empty() {
                assert!(!acked, "{what}: an acknowledged import was lost");
                must(&self.b, "ctl", &cmd);
            }
            self.count(op, acked);
        } else {
            must(&self.b, "ctl", &cmd);
            self.took[1] = t.elapsed();
        }
        let st = self.b.status("imp");
        assert_eq!(st["state"], "imported", "{what}: {st:?}");
        assert_eq!(st["chunks_differ"], "0", "{what}: {st:?}");
        same(
            &self.b.read("sets/imp/shadow"),
            &pit,
            &format!("{what}: the import"),
        );
        let sb = self.some_chunks(chunks, 10);
        let tag_b = self.rng.gen_range(1 << 40..1 << 41);
        export::write_chunks(&self.b, "sets/imp/shadow", CHUNK, &sb, tag_b);
        must(&self.b, "sets/imp/ctl", "disable");

        // Join on a.
        let cmd = format!("join {bm}");
        let t = Instant::now();
        if phase == 2 {
            let delay = self.delay_around(self.took[2]);
            let acked = kill_during(&mut self.a, "sets/ex/ctl", &cmd, delay);
            self.restart_a(op, what);
            let st = self.a.status("ex");
            match st["state"].as_str() {
                "idle" => {}
                "exported" => {
                    assert!(!acked, "{what}: an acknowledged join was lost: {st:?}");
                    must(&self.a, "sets/ex/ctl", &cmd);
                }
                s => panic!("{what}: state {s} after a kill during join: {st:?}"),
            }
            self.count(op, acked);
        } else {
            must(&self.a, "sets/ex/ctl", &cmd);
            self.took[2] = t.elapsed();
        }
        let st = self.a.status("ex");
        let union = ma.union(&sb).count();
        assert_eq!(st["state"], "idle", "{what}: {st:?}");
        assert_eq!(
            st["chunks_differ"],
            union.to_string(),
            "{what}: after join, the chunks changed on either side differ: {st:?}"
        );
        let joined = with_chunks(&pit, &sb, tag_b);
        same(
            &file_bytes(&shadow),
            &joined,
            &format!("{what}: the joined shadow"),
        );
        must(&self.a, "sets/ex/ctl", "update shadow");
        must(&self.a, "sets/ex/ctl", "wait");
        let s = self.sets.get_mut("ex").expect("ex");
        s.pit = s.master_img.clone();
        let _ = std::fs::remove_file(&bm);
    }

    fn count(&mut self, op: Op, acked: bool) {
        let t = self.tally(op);
        t.acked += u64::from(acked);
        t.not_acked += u64::from(!acked);
    }

    /// `enable` killed: the set is there (sound, its shadow the master's image) or absent with
    /// its volumes untouched, and then enabling it again works. Independent and dependent
    /// sets in turn; the set is disabled at the end of the round.
    fn enable(&mut self, round: u64, what: &str) {
        let op = Op::Enable;
        let ind = self.tally(op).rounds % 2 == 1;
        let size = 256 * CHUNK;
        let master = self.v.file(&format!("m-en-{round}.img"), size, round + 100);
        let shadow = self.v.file(&format!("s-en-{round}.img"), size, 0);
        let bitmap = self.v.path(&format!("b-en-{round}.img"));
        let img = file_bytes(&master);
        let zeros = vec![0u8; size as usize];
        let cmd = format!(
            "enable {} {master} {shadow} {bitmap} en chunk_size={CHUNK}{}",
            if ind { "ind" } else { "dep" },
            if ind { " delay=2 units=4" } else { "" }
        );
        let delay = self.delay_around(self.enable_took);
        let acked = kill_during(&mut self.a, "ctl", &cmd, delay);
        self.restart_a(op, what);
        self.count(op, acked);
        if !self.a.set_names().contains(&"en".to_string()) {
            assert!(!acked, "{what}: an acknowledged enable was lost");
            same(
                &file_bytes(&master),
                &img,
                &format!("{what}: the master of an absent set"),
            );
            same(
                &file_bytes(&shadow),
                &zeros,
                &format!("{what}: the shadow of an absent set"),
            );
            self.tally(op).old_image += 1;
            let t = Instant::now();
            must(&self.a, "ctl", &cmd);
            self.enable_took = t.elapsed();
        } else {
            self.tally(op).new_image += 1;
        }
        let st = self.a.status("en");
        assert!(
            ["idle", "copying"].contains(&st["state"].as_str()),
            "{what}: the enabled set: {st:?}"
        );
        same(
            &self.a.read("sets/en/shadow"),
            &img,
            &format!("{what}: the new set's shadow"),
        );
        if ind {
            self.tally(op).resumed += u64::from(self.finish_copy("en", what));
            same(
                &file_bytes(&shadow),
                &img,
                &format!("{what}: the first copy"),
            );
        }
        same(&file_bytes(&master), &img, &format!("{what}: the master"));
        let t = Instant::now();
        must(&self.a, "sets/en/ctl", "disable");
        self.disable_took = t.elapsed();
        for p in [&master, &shadow, &bitmap] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// `disable` killed: the set is there and sound (shadow at its point in time, master as
    /// written), or absent with its master (and a finished independent shadow) untouched.
    fn disable(&mut self, round: u64, what: &str) {
        let op = Op::Disable;
        let ind = self.tally(op).rounds % 2 == 0;
        let size = 128 * CHUNK;
        let master = self
            .v
            .file(&format!("m-dis-{round}.img"), size, round + 200);
        let shadow = self.v.file(&format!("s-dis-{round}.img"), size, 0);
        let bitmap = self.v.path(&format!("b-dis-{round}.img"));
        let pit = file_bytes(&master);
        must(
            &self.a,
            "ctl",
            &format!(
                "enable {} {master} {shadow} {bitmap} dis chunk_size={CHUNK}",
                if ind { "ind" } else { "dep" }
            ),
        );
        if ind {
            must(&self.a, "sets/dis/ctl", "wait");
        }
        // Chunks 2..15 hold bytes 8192-65535, which a disable zeroes in a dependent shadow.
        let mut idxs = self.some_chunks(size / CHUNK, 6);
        idxs.extend([2, 5, 15]);
        export::write_chunks(&self.a, "sets/dis/master", CHUNK, &idxs, round + 1);
        let master_img = with_chunks(&pit, &idxs, round + 1);
        let delay = self.delay_around(self.disable_took);
        let acked = kill_during(&mut self.a, "sets/dis/ctl", "disable", delay);
        self.restart_a(op, what);
        self.count(op, acked);
        if self.a.set_names().contains(&"dis".to_string()) {
            assert!(!acked, "{what}: an acknowledged disable came back");
            self.tally(op).old_image += 1;
            let st = self.a.status("dis");
            assert_eq!(st["state"], "idle", "{what}: the set still there: {st:?}");
            same(
                &self.a.read("sets/dis/shadow"),
                &pit,
                &format!("{what}: the shadow of the set still there"),
            );
            same(
                &self.a.read("sets/dis/master"),
                &master_img,
                &format!("{what}: the master of the set still there"),
            );
            must(&self.a, "sets/dis/ctl", "disable");
        } else {
            self.tally(op).new_image += 1;
        }
        same(
            &file_bytes(&master),
            &master_img,
            &format!("{what}: the master after disable"),
        );
        if ind {
            same(
                &file_bytes(&shadow),
                &pit,
                &format!("{what}: a finished independent shadow after disable"),
            );
        }
        for p in [&master, &shadow, &bitmap] {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn sigkill_during_every_operation_keeps_every_invariant() {
    let rounds = env_u64("IIFS_CRASH_OPS_ROUNDS", 150);
    let seed = env_u64(
        "IIFS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64,
    );
    eprintln!("crash_ops: IIFS_SEED={seed} IIFS_CRASH_OPS_ROUNDS={rounds}");
    let Some(a) = Mount::start("") else {
        return;
    };
    let Some(b) = Mount::start("") else {
        return;
    };
    // IIFS_CRASH_OPS_ONLY=Disable,Enable: only these operations (to replay or soak one).
    let only = std::env::var("IIFS_CRASH_OPS_ONLY").unwrap_or_default();
    let ops: Vec<Op> = OPS
        .iter()
        .copied()
        .filter(|op| {
            only.is_empty()
                || only
                    .split(',')
                    .any(|w| w.trim().eq_ignore_ascii_case(&format!("{op:?}")))
        })
        .collect();
    assert!(
        !ops.is_empty(),
        "IIFS_CRASH_OPS_ONLY={only} names no operation of {OPS:?}"
    );
    let mut h = Harness::new(a, b, seed);
    h.setup();
    h.verify_all("setup");
    let started = Instant::now();
    for round in 0..rounds {
        h.round(round, &ops);
    }
    eprintln!("{rounds} rounds in {:?}", started.elapsed());
    for (op, t) in &h.tally {
        eprintln!("  {op:?}: {t:?}");
    }
    // The harness did what it claims: fsync'd writes were checked, and over a CI-sized run
    // the kills landed both before and after the copy commands' acknowledgement.
    let get = |op| h.tally.get(&op).map_or(0, |t: &Tally| t.fsynced);
    if rounds >= OPS.len() as u64 && ops.len() == OPS.len() {
        assert!(get(Op::Writes) > 0, "no fsync'd write was checked");
        assert!(get(Op::Spill) > 0, "no fsync'd spilling write was checked");
        let spilled = h.tally.get(&Op::Spill).map_or(0, |t| t.spilled);
        assert!(spilled > 0, "no kill found chunks in the overflow volume");
    }
    if rounds >= 50 && ops.len() == OPS.len() {
        let copies = [
            Op::CopyShadow,
            Op::UpdateShadow,
            Op::UpdateMaster,
            Op::CopyMaster,
            Op::GroupUpdate,
        ];
        let resumed: u64 = copies
            .iter()
            .filter_map(|o| h.tally.get(o))
            .map(|t| t.resumed)
            .sum();
        assert!(resumed > 0, "no kill landed during a copy: {:?}", h.tally);
    }
}
