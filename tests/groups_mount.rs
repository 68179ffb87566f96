//! Groups and suspend/resume (issue 11) through the real mount: a group update fixes one point
//! in time in every member (also when the daemon is killed in the middle), a group update is
//! refused whole when one member cannot take it, and a suspended set keeps its copy's progress
//! across a daemon restart and goes on after `resume`.
//!
//! The atomicity tests run a writer that writes sequence number i (a u64 in the first 8 bytes
//! of chunk 0) to the first master, then to the second, in a loop: at any one point in time the
//! masters hold (k, k) or (k+1, k), never (k, k+1). The members' shadows, read after each group
//! update, must hold such a pair too.

mod common;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::refusal::{assert_names, refusal};
use common::{assert_same, file_bytes, num, wait_for, write_ctl, Mount};
use iifs::engine::header::BITMAPS_OFFSET;
use rand::Rng;

const CHUNK: u64 = 4096;
/// Dependent sets: 16 chunks (their update is instant).
const DEP_SIZE: u64 = 16 * CHUNK;
/// Independent sets: 64 chunks (enough for a throttled copy to be slow).
const IND_SIZE: u64 = 64 * CHUNK;
/// Group updates checked while the writer runs.
const TRIES: usize = 250;
/// SIGKILL rounds.
const ROUNDS: usize = 24;

// ------------------------------------------------------------------------------ helpers

/// A master volume `name` of `size` bytes: a pattern from `seed`, with its first 8 bytes (the
/// sequence number) 0. Returns its path.
fn master_volume(m: &Mount, name: &str, size: u64, seed: u64) -> String {
    let p = m.volume(name, size, seed);
    OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|f| f.write_all_at(&[0; 8], 0))
        .expect("zero the sequence number");
    p
}

/// Enable set `name` (`kind`: ind|dep) on `master` with a new shadow of its size and a new
/// bitmap file; returns (shadow, bitmap) paths.
fn enable(m: &Mount, kind: &str, name: &str, master: &str, opts: &str) -> (String, String) {
    let size = fs::metadata(master).expect("master").len();
    let shadow = m.volume(&format!("s-{name}.img"), size, 0);
    let bitmap = m.volume(&format!("b-{name}.img"), 0, 0);
    m.ok(
        "ctl",
        &format!("enable {kind} {master} {shadow} {bitmap} {name} chunk_size={CHUNK} {opts}"),
    );
    (shadow, bitmap)
}

fn text(m: &Mount, rel: &str) -> String {
    fs::read_to_string(m.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// A group's status: its `key: value` lines, and its `member:` lines apart.
fn group_status(m: &Mount, g: &str) -> (HashMap<String, String>, Vec<String>) {
    let t = text(m, &format!("groups/{g}/status"));
    let mut keys = HashMap::new();
    let mut members = Vec::new();
    for l in t.lines() {
        if let Some(rest) = l.strip_prefix("member: ") {
            members.push(rest.to_string());
        } else if let Some((k, v)) = l.split_once(": ") {
            keys.insert(k.to_string(), v.to_string());
        }
    }
    (keys, members)
}

fn members(m: &Mount, g: &str) -> Vec<String> {
    text(m, &format!("groups/{g}/members"))
        .lines()
        .map(str::to_string)
        .collect()
}

/// The sequence number in the first 8 bytes of a tree file (one pread; data files are direct
/// I/O, so this asks the daemon).
#[track_caller]
fn seq(m: &Mount, rel: &str) -> u64 {
    let f = File::open(m.path(rel)).unwrap_or_else(|e| panic!("open {rel}: {e}"));
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 0)
        .unwrap_or_else(|e| panic!("read {rel}: {e}"));
    u64::from_le_bytes(b)
}

/// The shadows of a group written first-master-then-second hold one point in time.
#[track_caller]
fn assert_one_point(first: u64, second: u64, what: &str) {
    assert!(
        first == second || first == second + 1,
        "{what}: the first member holds {first}, the second {second}: not one point in time \
         (the writer writes the first master before the second)"
    );
}

/// The errno of reading a whole tree file (0: it read).
fn read_errno(m: &Mount, rel: &str) -> i32 {
    match fs::read(m.path(rel)) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// The errno of writing `data` at `off` of a tree file (0: it wrote).
fn write_errno(m: &Mount, rel: &str, off: u64, data: &[u8]) -> i32 {
    match OpenOptions::new()
        .write(true)
        .open(m.path(rel))
        .and_then(|f| f.write_all_at(data, off))
    {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// A command that must be refused with `errno` and a reply naming each of `mentions`.
#[track_caller]
fn refused(m: &Mount, rel: &str, cmd: &str, errno: i32, mentions: &[&str]) -> String {
    let reply = refusal(m, rel, cmd, errno);
    assert_names(&reply, mentions, &format!("'{cmd}' on {rel}"));
    reply
}

/// `update shadow` on ctl file `rel`, which must succeed. The kernel tells the daemon that a
/// file was closed (FUSE_RELEASE) after close(2) returned: a shadow the test has just read may
/// still count as open for a moment, and the update is refused with EBUSY ("is open"). That
/// refusal is retried (for up to 2 s); any other fails the test.
#[track_caller]
fn update_shadow(m: &Mount, rel: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match m.ctl(rel, "update shadow") {
            Ok(()) => return,
            Err((libc::EBUSY, reply))
                if reply.contains(" is open") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((errno, reply)) => panic!(
                "'update shadow' on {rel} failed: errno {errno}, reply {reply:?}\nlog:\n{}",
                m.log()
            ),
        }
    }
}

/// Writes i to the first master, then i to the second, for i = from, from+1, ... until told to
/// stop or a write fails (the daemon was killed).
struct Writer {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicU64>,
    handle: Option<JoinHandle<Option<std::io::Error>>>,
}

impl Writer {
    fn start(m: &Mount, first: &str, second: &str, from: u64) -> Writer {
        let open = |set: &str| {
            OpenOptions::new()
                .write(true)
                .open(m.path(&format!("sets/{set}/master")))
                .unwrap_or_else(|e| panic!("open sets/{set}/master: {e}"))
        };
        let (a, b) = (open(first), open(second));
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU64::new(from.saturating_sub(1)));
        let (s, l) = (stop.clone(), last.clone());
        let handle = std::thread::spawn(move || {
            let mut i = from;
            while !s.load(Ordering::SeqCst) {
                if let Err(e) = a.write_all_at(&i.to_le_bytes(), 0) {
                    return Some(e);
                }
                if let Err(e) = b.write_all_at(&i.to_le_bytes(), 0) {
                    return Some(e);
                }
                l.store(i, Ordering::SeqCst);
                i += 1;
            }
            None
        });
        Writer {
            stop,
            last,
            handle: Some(handle),
        }
    }

    /// Stop the writer: the last number written to both masters, and the write error that
    /// stopped it if one did.
    fn finish(mut self) -> (u64, Option<std::io::Error>) {
        self.stop.store(true, Ordering::SeqCst);
        let err = self
            .handle
            .take()
            .expect("running")
            .join()
            .expect("writer thread");
        (self.last.load(Ordering::SeqCst), err)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Write a command to a ctl file by path (for threads that do not hold the Mount).
fn ctl_at(path: &Path, cmd: &str) -> Result<(), (i32, String)> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| (e.raw_os_error().unwrap_or(-1), String::new()))?;
    write_ctl(&mut f, cmd)
}

/// Group updates under a running writer, `TRIES` of them: after each, the shadows of `first`
/// (written first) and `second` hold one point in time, and every shadow of `same` (sets on
/// the first master) holds what `first`'s does. Returns how many distinct numbers were seen.
fn check_updates(m: &Mount, g: &str, first: &str, second: &str, same: &[&str]) -> usize {
    let mut prev = (0u64, 0u64);
    let mut seen = std::collections::BTreeSet::new();
    let mut skewed = 0;
    for t in 0..TRIES {
        update_shadow(m, &format!("groups/{g}/ctl"));
        let a = seq(m, &format!("sets/{first}/shadow"));
        let b = seq(m, &format!("sets/{second}/shadow"));
        assert_one_point(a, b, &format!("group update {t}"));
        for s in same {
            assert_eq!(
                seq(m, &format!("sets/{s}/shadow")),
                a,
                "group update {t}: sets {first} and {s} share a master, their shadows differ"
            );
        }
        assert!(
            a >= prev.0 && b >= prev.1,
            "group update {t}: the shadows went back from {prev:?} to ({a}, {b})"
        );
        if a != b {
            skewed += 1;
        }
        seen.insert(a);
        prev = (a, b);
    }
    eprintln!(
        "{TRIES} group updates: {} distinct points in time, {skewed} caught between the two masters' writes",
        seen.len()
    );
    seen.len()
}

// ------------------------------------------------------------------------------ atomic update

#[test]
fn mount_group_update_is_one_point_in_time_across_two_masters() {
    let m = mount_or_skip!();
    let ma = master_volume(&m, "m-a.img", DEP_SIZE, 1);
    let mb = master_volume(&m, "m-b.img", DEP_SIZE, 2);
    enable(&m, "dep", "a", &ma, "");
    enable(&m, "dep", "b", &mb, "");
    m.ok("ctl", "group create g");
    m.ok("groups/g/ctl", "add a");
    m.set_ok("b", "group g");
    assert_eq!(members(&m, "g"), ["a", "b"]);
    let (gs, lines) = group_status(&m, "g");
    assert_eq!(gs["members"], "a b", "{gs:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");

    let w = Writer::start(&m, "a", "b", 1);
    let distinct = check_updates(&m, "g", "a", "b", &[]);
    let (last, err) = w.finish();
    assert!(err.is_none(), "the writer failed: {err:?}");
    assert!(
        distinct >= 20,
        "the writer hardly moved between group updates ({distinct} distinct numbers in {TRIES})"
    );
    // Once the writer stopped, an update catches both masters' last number.
    update_shadow(&m, "groups/g/ctl");
    assert_eq!(
        (seq(&m, "sets/a/shadow"), seq(&m, "sets/b/shadow")),
        (last, last)
    );
    assert_same(
        &m.read("sets/a/shadow"),
        &file_bytes(&ma),
        "shadow a after the last update",
    );
    assert_same(
        &m.read("sets/b/shadow"),
        &file_bytes(&mb),
        "shadow b after the last update",
    );
}

#[test]
fn mount_group_update_is_one_point_in_time_for_three_members_on_two_masters() {
    let m = mount_or_skip!();
    let m1 = master_volume(&m, "m-1.img", DEP_SIZE, 1);
    let m2 = master_volume(&m, "m-2.img", DEP_SIZE, 2);
    // Two sets on master 1, one on master 2.
    enable(&m, "dep", "a1", &m1, "");
    enable(&m, "dep", "a2", &m1, "");
    enable(&m, "dep", "b", &m2, "");
    m.ok("ctl", "group create three");
    for s in ["a1", "b", "a2"] {
        m.ok("groups/three/ctl", &format!("add {s}"));
    }
    assert_eq!(members(&m, "three"), ["a1", "a2", "b"]);

    let w = Writer::start(&m, "a1", "b", 1);
    let distinct = check_updates(&m, "three", "a1", "b", &["a2"]);
    let (last, err) = w.finish();
    assert!(err.is_none(), "the writer failed: {err:?}");
    assert!(
        distinct >= 20,
        "the writer hardly moved between group updates ({distinct} distinct numbers in {TRIES})"
    );
    update_shadow(&m, "groups/three/ctl");
    for s in ["a1", "a2", "b"] {
        assert_eq!(seq(&m, &format!("sets/{s}/shadow")), last, "set {s}");
    }
}

// ------------------------------------------------------------------------------ all or nothing

/// What a refused group command must leave as it was: every member's status and shadow (read
/// through the tree, or its errno), the members' shadow and bitmap files, the group's status
/// and the registry.
#[derive(Debug, PartialEq)]
struct Before {
    statuses: Vec<String>,
    tree_shadows: Vec<Result<Vec<u8>, i32>>,
    files: Vec<Vec<u8>>,
    group: String,
    registry: Vec<u8>,
}

fn before(m: &Mount, g: &str, sets: &[&str], files: &[&str]) -> Before {
    Before {
        statuses: sets
            .iter()
            .map(|s| text(m, &format!("sets/{s}/status")))
            .collect(),
        tree_shadows: sets
            .iter()
            .map(|s| {
                fs::read(m.path(&format!("sets/{s}/shadow")))
                    .map_err(|e| e.raw_os_error().unwrap_or(-1))
            })
            .collect(),
        files: files.iter().map(|f| file_bytes(f)).collect(),
        group: text(m, &format!("groups/{g}/status")),
        registry: fs::read(m.state.join("iifs.yaml")).expect("registry"),
    }
}

#[track_caller]
fn assert_unchanged(m: &Mount, b: &Before, a: &Before, what: &str) {
    assert_eq!(b.statuses, a.statuses, "{what}: a member's status changed");
    for (i, (x, y)) in b.tree_shadows.iter().zip(&a.tree_shadows).enumerate() {
        match (x, y) {
            (Ok(x), Ok(y)) => assert_same(y, x, &format!("{what}: member {i}'s shadow")),
            _ => assert_eq!(x, y, "{what}: member {i}'s shadow"),
        }
    }
    for (i, (x, y)) in b.files.iter().zip(&a.files).enumerate() {
        assert_same(y, x, &format!("{what}: volume file {i}"));
    }
    assert_eq!(b.group, a.group, "{what}: the group's status changed");
    assert!(
        b.registry == a.registry,
        "{what}: the registry changed\nlog:\n{}",
        m.log()
    );
}

#[test]
fn mount_a_group_update_is_refused_whole_when_one_member_cannot_take_it() {
    let m = mount_or_skip!();
    let mx = master_volume(&m, "m-x.img", IND_SIZE, 3);
    let my = master_volume(&m, "m-y.img", IND_SIZE, 4);
    let (sx, bx) = enable(&m, "ind", "x", &mx, "");
    let (sy, by) = enable(&m, "ind", "y", &my, "");
    m.set_ok("x", "wait");
    m.set_ok("y", "wait");
    m.ok("ctl", "group create g");
    m.ok("groups/g/ctl", "add x");
    m.ok("groups/g/ctl", "add y");
    // y copies one chunk every 10 s: after a group update with 10 chunks of y differing, its
    // copy runs (and holds still) for a while.
    m.set_ok("y", "params 10000 1");
    for c in 0..10 {
        m.write_at("sets/y/master", c * CHUNK + 100, b"y changed");
    }
    m.write_at("sets/x/master", 5 * CHUNK, b"x changed");
    update_shadow(&m, "groups/g/ctl");
    wait_for(&m, "y", "the first chunk of the throttled copy", |st| {
        st["state"] == "updating" && num(st, "chunks_to_copy") <= 9
    });
    wait_for(&m, "x", "x's copy to end", |st| st["state"] == "idle");
    let (gs, _) = group_status(&m, "g");
    assert_eq!(gs["state"], "mixed", "{gs:?}");
    // New changes on both masters, which an update would carry to the shadows.
    m.write_at("sets/x/master", 7 * CHUNK, b"x again");
    m.write_at("sets/y/master", 20 * CHUNK, b"y again");

    let sets = ["x", "y"];
    let files = [&*sx, &*bx, &*sy, &*by];
    let b = before(&m, "g", &sets, &files);
    for cmd in ["update shadow", "copy shadow", "update master"] {
        refused(&m, "groups/g/ctl", cmd, libc::EBUSY, &["y"]);
        assert_unchanged(&m, &b, &before(&m, "g", &sets, &files), cmd);
    }

    // Stop y's copy; a suspended member is refused with EPERM, nothing changing either.
    m.ok("groups/g/ctl", "abort");
    wait_for(&m, "y", "the abort", |st| st["state"] != "updating");
    m.set_ok("x", "suspend");
    let b = before(&m, "g", &sets, &files);
    assert_eq!(b.tree_shadows[0], Err(libc::EIO), "x's shadow is served");
    for cmd in ["update shadow", "copy shadow"] {
        refused(&m, "groups/g/ctl", cmd, libc::EPERM, &["x"]);
        assert_unchanged(&m, &b, &before(&m, "g", &sets, &files), cmd);
    }
    let (gs, lines) = group_status(&m, "g");
    assert_eq!(gs["status"], "degraded", "{gs:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("x degraded ")),
        "{lines:?}"
    );

    // Both can take it now: one point in time, both shadows follow their masters.
    m.set_ok("x", "resume");
    m.set_ok("y", "params 0 100");
    let pit = (
        num(&m.status("x"), "pit_time"),
        num(&m.status("y"), "pit_time"),
    );
    update_shadow(&m, "groups/g/ctl");
    m.ok("groups/g/ctl", "wait");
    let (gs, _) = group_status(&m, "g");
    assert_eq!(
        (
            gs["state"].as_str(),
            gs["status"].as_str(),
            gs["progress"].as_str()
        ),
        ("idle", "normal", "100"),
        "{gs:?}"
    );
    assert!(num(&m.status("x"), "pit_time") >= pit.0);
    assert!(num(&m.status("y"), "pit_time") >= pit.1);
    assert_same(&m.read("sets/x/shadow"), &file_bytes(&mx), "shadow x");
    assert_same(&m.read("sets/y/shadow"), &file_bytes(&my), "shadow y");
    assert_same(&file_bytes(&sy), &file_bytes(&my), "shadow file y");
}

// ------------------------------------------------------------------------------ SIGKILL

/// What a failed crash round shows: each set's status and bitmap header (its generation and
/// group_seq), the registry and the daemon's log lines about groups.
fn crash_report(m: &Mount, sets: &[&str]) -> String {
    let mut out = String::new();
    for s in sets {
        let st = text(m, &format!("sets/{s}/status"));
        let bitmap = st
            .lines()
            .find_map(|l| l.strip_prefix("bitmap: "))
            .unwrap_or_default()
            .to_string();
        let h = fs::read(&bitmap).unwrap_or_default();
        let word = |slot: usize, at: usize| {
            h.get(slot * 4096 + at..slot * 4096 + at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .unwrap_or(0)
        };
        out += &format!(
            "set {s}: header slots (seq, generation, group_seq, pit_time): ({}, {}, {}, {}) \
             ({}, {}, {}, {})\n{st}\n",
            word(0, 16),
            word(0, 112),
            word(0, 144),
            word(0, 64),
            word(1, 16),
            word(1, 112),
            word(1, 144),
            word(1, 64)
        );
    }
    out += &fs::read_to_string(m.state.join("iifs.yaml")).unwrap_or_default();
    for l in m.log().lines().filter(|l| l.contains("group")) {
        out += l;
        out += "\n";
    }
    out
}

#[test]
fn mount_sigkill_during_group_updates_leaves_every_member_at_one_point_in_time() {
    let mut m = mount_or_skip!();
    let ma = master_volume(&m, "m-a.img", DEP_SIZE, 1);
    let mb = master_volume(&m, "m-b.img", DEP_SIZE, 2);
    enable(&m, "dep", "a", &ma, "");
    enable(&m, "dep", "b", &mb, "");
    m.ok("ctl", "group create g");
    m.ok("groups/g/ctl", "add a");
    m.ok("groups/g/ctl", "add b");
    let mut rng = rand::thread_rng();
    let mut updates = 0u64;
    let mut moved = 0;
    let mut prev_shadow = 0;
    for round in 0..ROUNDS {
        let (ka, kb) = (seq(&m, "sets/a/master"), seq(&m, "sets/b/master"));
        assert_eq!(ka, kb, "round {round}: the masters");
        let w = Writer::start(&m, "a", "b", ka + 1);
        let stop = Arc::new(AtomicBool::new(false));
        let ctl = m.path("groups/g/ctl");
        let s = stop.clone();
        let updater = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                if let Err((errno, reply)) = ctl_at(&ctl, "update shadow") {
                    return (n, Some((Instant::now(), errno, reply)));
                }
                n += 1;
            }
            (n, None)
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..300)));
        let killed_at = Instant::now();
        m.kill9();
        stop.store(true, Ordering::SeqCst);
        let (n, failed) = updater.join().expect("updater");
        let _ = w.finish();
        if let Some((at, errno, reply)) = failed {
            assert!(
                at >= killed_at,
                "round {round}: a group update was refused before the kill: errno {errno}, {reply:?}"
            );
        }
        updates += n;

        m.start_again();
        for s in ["a", "b"] {
            let st = m.status(s);
            assert_eq!(st["state"], "idle", "round {round}: set {s}: {st:?}");
            assert_eq!(st["status"], "normal", "round {round}: set {s}: {st:?}");
        }
        assert_eq!(members(&m, "g"), ["a", "b"], "round {round}");
        let (sa, sb) = (seq(&m, "sets/a/shadow"), seq(&m, "sets/b/shadow"));
        let (ka, kb) = (seq(&m, "sets/a/master"), seq(&m, "sets/b/master"));
        assert_one_point(
            ka,
            kb,
            &format!("round {round}: the masters after the restart"),
        );
        assert_one_point(
            sa,
            sb,
            &format!(
                "round {round}: the shadows after the restart (masters ({ka}, {kb}), {n} group \
                 updates this round)\n{}",
                crash_report(&m, &["a", "b"])
            ),
        );
        assert!(
            sa <= ka && sb <= kb,
            "round {round}: shadows ({sa}, {sb}) ahead of masters ({ka}, {kb})"
        );
        if sa != prev_shadow {
            moved += 1;
        }
        prev_shadow = sa;
        // The writer was killed between its two writes: finish its pair, so that the next
        // round's writer (from ka + 1) never makes the second master skip a number.
        if kb < ka {
            m.write_at("sets/b/master", 0, &ka.to_le_bytes());
        }
        // The group still takes updates.
        update_shadow(&m, "groups/g/ctl");
        assert_eq!(
            (seq(&m, "sets/a/shadow"), seq(&m, "sets/b/shadow")),
            (ka, ka),
            "round {round}: an update after the restart"
        );
    }
    let rolled = m.log().matches("a crash interrupted").count();
    eprintln!(
        "{ROUNDS} rounds, {updates} group updates, shadows moved in {moved} rounds, {rolled} roll-forwards"
    );
    assert!(updates >= ROUNDS as u64, "hardly any group update ran");
}

// ------------------------------------------------------------------------------ suspend

#[test]
fn mount_a_suspended_set_keeps_its_copy_across_a_restart_and_resumes_it() {
    let mut m = mount_or_skip!();
    let master = m.volume("m.img", IND_SIZE, 7);
    let image = file_bytes(&master);
    // A dependent set on the same master, to write to it another way.
    enable(&m, "dep", "d", &master, "");
    let (shadow, bitmap) = enable(&m, "ind", "s", &master, "delay=100 units=1");
    wait_for(&m, "s", "some progress", |st| {
        st["state"] == "copying" && num(st, "chunks_to_copy") <= 60
    });
    // Chunk 62 is not copied yet: its point-in-time data goes to the shadow first.
    m.write_at("sets/s/master", 62 * CHUNK, b"written during the copy");

    m.set_ok("s", "suspend");
    let st = m.status("s");
    assert_eq!(st["state"], "suspended", "{st:?}");
    assert_eq!(st["status"], "degraded", "{st:?}");
    let to_copy = num(&st, "chunks_to_copy");
    let progress = st["progress"].clone();
    assert!(to_copy > 0 && to_copy < 64, "{st:?}");
    std::thread::sleep(Duration::from_millis(500));
    let st = m.status("s");
    assert_eq!(
        (num(&st, "chunks_to_copy"), &st["progress"]),
        (to_copy, &progress),
        "the copy of a suspended set went on: {st:?}"
    );
    let check_not_served = |m: &Mount, when: &str| {
        assert_eq!(
            read_errno(m, "sets/s/master"),
            libc::EIO,
            "{when}: read master"
        );
        assert_eq!(
            read_errno(m, "sets/s/shadow"),
            libc::EIO,
            "{when}: read shadow"
        );
        assert_eq!(
            write_errno(m, "sets/s/master", 0, b"no"),
            libc::EIO,
            "{when}: write master"
        );
        assert_eq!(
            write_errno(m, "sets/s/shadow", 0, b"no"),
            libc::EIO,
            "{when}: write shadow"
        );
        assert_eq!(
            write_errno(m, "sets/d/master", 3 * CHUNK, b"no"),
            libc::EIO,
            "{when}: a write to the same master through set d"
        );
        refused(m, "sets/d/ctl", "update master", libc::EPERM, &[]);
    };
    check_not_served(&m, "suspended");
    let bits = file_bytes(&bitmap);
    let shadow_bytes = file_bytes(&shadow);

    m.restart();
    let st = m.status("s");
    assert_eq!(st["state"], "suspended", "after a restart: {st:?}");
    assert_eq!(
        num(&st, "chunks_to_copy"),
        to_copy,
        "after a restart: {st:?}"
    );
    assert_eq!(st["progress"], progress, "after a restart: {st:?}");
    // The header slots take a new generation at every start and stop (issue 8): the bitmap
    // pages after them hold the copy's progress and must not change.
    let pages = BITMAPS_OFFSET as usize;
    assert_same(
        &file_bytes(&bitmap)[pages..],
        &bits[pages..],
        "the bitmap pages across the restart",
    );
    assert_same(
        &file_bytes(&shadow),
        &shadow_bytes,
        "the shadow file across the restart",
    );
    check_not_served(&m, "suspended, after a restart");

    m.set_ok("s", "resume");
    let st = m.status("s");
    assert_eq!(st["state"], "copying", "resumed: {st:?}");
    assert_eq!(st["status"], "normal", "resumed: {st:?}");
    assert!(num(&st, "chunks_to_copy") <= to_copy, "{st:?}");
    // Writes are served again, and the copy goes on where it was.
    m.write_at("sets/d/master", 63 * CHUNK, b"after the resume");
    wait_for(&m, "s", "the copy going on", |st| {
        num(st, "chunks_to_copy") < to_copy
    });
    m.set_ok("s", "params 0 100");
    m.set_ok("s", "wait");
    let st = m.status("s");
    assert_eq!(
        (st["state"].as_str(), num(&st, "chunks_to_copy")),
        ("idle", 0),
        "{st:?}"
    );
    // The shadow holds the master as it was at the point in time (the enable).
    assert_same(&file_bytes(&shadow), &image, "the shadow file");
    assert_same(&m.read("sets/s/shadow"), &image, "the shadow");
    let mut now = image.clone();
    now[62 * CHUNK as usize..][..23].copy_from_slice(b"written during the copy");
    now[63 * CHUNK as usize..][..16].copy_from_slice(b"after the resume");
    assert_same(&file_bytes(&master), &now, "the master");
}

#[test]
fn mount_suspend_all_and_resume_all() {
    let mut m = mount_or_skip!();
    let m1 = m.volume("m1.img", IND_SIZE, 5);
    let m2 = m.volume("m2.img", DEP_SIZE, 6);
    let (si, _) = enable(&m, "ind", "i", &m1, "delay=100 units=1");
    enable(&m, "dep", "d", &m2, "");
    enable(&m, "dep", "e", &m2, "");
    m.ok("ctl", "group create deps");
    m.ok("groups/deps/ctl", "add d");
    m.ok("groups/deps/ctl", "add e");
    m.write_at("sets/d/master", 2 * CHUNK, b"before");
    // One is suspended already: `suspend all` takes it as it is.
    m.set_ok("e", "suspend");
    let (gs, _) = group_status(&m, "deps");
    assert_eq!(gs["status"], "degraded", "{gs:?}");
    m.ok("ctl", "suspend all");
    for s in ["i", "d", "e"] {
        let st = m.status(s);
        assert_eq!(st["state"], "suspended", "{s}: {st:?}");
        assert_eq!(
            read_errno(&m, &format!("sets/{s}/shadow")),
            libc::EIO,
            "{s}"
        );
    }
    let (gs, _) = group_status(&m, "deps");
    assert_eq!(gs["state"], "suspended", "{gs:?}");
    let to_copy = num(&m.status("i"), "chunks_to_copy");
    assert!(to_copy > 0, "{:?}", m.status("i"));
    let global = text(&m, "status");
    assert!(
        global.lines().filter(|l| l.contains(" suspended ")).count() == 3,
        "{global}"
    );

    m.restart();
    for s in ["i", "d", "e"] {
        assert_eq!(m.status(s)["state"], "suspended", "{s} after a restart");
    }
    assert_eq!(num(&m.status("i"), "chunks_to_copy"), to_copy);

    m.ok("ctl", "resume all");
    assert_eq!(m.status("i")["state"], "copying");
    for s in ["d", "e"] {
        let st = m.status(s);
        assert_eq!(
            (st["state"].as_str(), st["status"].as_str()),
            ("idle", "normal"),
            "{s}: {st:?}"
        );
    }
    // Nothing is suspended: `resume all` is still fine.
    m.ok("ctl", "resume all");
    m.set_ok("i", "params 0 100");
    m.set_ok("i", "wait");
    assert_same(&file_bytes(&si), &file_bytes(&m1), "shadow i");
    m.write_at("sets/d/master", 3 * CHUNK, b"after");
    update_shadow(&m, "groups/deps/ctl");
    assert_same(&m.read("sets/d/shadow"), &file_bytes(&m2), "shadow d");
    assert_same(&m.read("sets/e/shadow"), &file_bytes(&m2), "shadow e");
}

// ------------------------------------------------------------------------------ the group files

#[test]
fn mount_groups_survive_a_restart_and_delete_keeps_the_sets() {
    let mut m = mount_or_skip!();
    let m1 = master_volume(&m, "m1.img", DEP_SIZE, 1);
    let m2 = master_volume(&m, "m2.img", DEP_SIZE, 2);
    enable(&m, "dep", "a", &m1, "");
    enable(&m, "dep", "b", &m2, "");
    m.ok("ctl", "group create g");
    let (gs, lines) = group_status(&m, "g");
    assert_eq!(
        (gs["name"].as_str(), gs["members"].as_str()),
        ("g", "-"),
        "{gs:?}"
    );
    assert!(lines.is_empty(), "{lines:?}");
    m.ok("groups/g/ctl", "add a");
    m.set_ok("b", "group g");
    let (gs, lines) = group_status(&m, "g");
    assert_eq!(gs["state"], "idle", "{gs:?}");
    assert_eq!(gs["status"], "normal", "{gs:?}");
    assert_eq!(gs["progress"], "100", "{gs:?}");
    assert_eq!(lines, ["a normal 100 idle", "b normal 100 idle"]);

    m.restart();
    assert_eq!(members(&m, "g"), ["a", "b"]);
    m.ok("groups/g/ctl", "rename g2");
    assert_eq!(members(&m, "g2"), ["a", "b"]);
    m.kill9();
    m.start_again();
    assert_eq!(members(&m, "g2"), ["a", "b"]);
    m.ok("groups/g2/ctl", "remove a");
    m.set_ok("b", "ungroup");
    m.set_ok("b", "ungroup");
    assert!(members(&m, "g2").is_empty());
    m.ok("groups/g2/ctl", "add a");
    m.ok("groups/g2/ctl", "delete");
    assert!(fs::read_dir(m.path("groups"))
        .expect("groups dir")
        .next()
        .is_none());
    assert_eq!(m.set_names(), ["a", "b"]);
    // On its own again, a takes `update` on its own ctl.
    update_shadow(&m, "sets/a/ctl");
    m.restart();
    assert!(fs::read_dir(m.path("groups"))
        .expect("groups dir")
        .next()
        .is_none());
}

#[test]
fn mount_a_members_status_names_its_group() {
    let m = mount_or_skip!();
    let m1 = master_volume(&m, "m1.img", DEP_SIZE, 1);
    enable(&m, "dep", "a", &m1, "");
    assert_eq!(m.status("a")["group"], "-");
    m.ok("ctl", "group create g");
    m.ok("groups/g/ctl", "add a");
    assert_eq!(m.status("a")["group"], "g", "spec: `group: NAME|-`");
}
