//! What a set does when one of its volumes fails or shrinks under it: only what the failure
//! touches goes offline (a sound independent shadow stays readable when its master fails), a
//! failed master takes no new set until it is reset, a volume that shrank is an I/O error (not
//! zeros), and a copy onto the master that stopped half way never lets the master silently
//! read as something else (reads of the chunks it left fail; `disable` is refused).
//!
//! Engine-level tests use memory volumes whose reads or writes fail on demand; mount-level
//! tests produce the failure from outside (a full tmpfs, a truncated backing file).

mod common;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{file_bytes, pattern, Mount};
use iifs::engine::testing::{FlakyVolume as Flaky, MapOpener};
use iifs::engine::volume::{copy_range, Access, FileVolume, Volume};
use iifs::engine::{Direction, Durability, EnableSpec, Engine, Kind, Set, SetKind};

// ------------------------------------------------------------------------------ engine level

const SIZE: usize = 64 * 4096;
const CHUNK: usize = 4096;
const CHUNKS: u64 = (SIZE / CHUNK) as u64;

/// The content of a memory volume made from `seed`.
fn bytes(seed: u64) -> Vec<u8> {
    pattern(SIZE, seed)
}

struct Rig {
    engine: Engine,
    set: Arc<Set>,
    master: Arc<Flaky>,
    shadow: Arc<Flaky>,
}

fn spec(name: &str, master: &str, shadow: &str, bitmap: &str) -> EnableSpec {
    EnableSpec {
        kind: SetKind::Independent,
        master: master.into(),
        shadow: shadow.into(),
        bitmap: bitmap.into(),
        name: name.into(),
        chunk_size: CHUNK as u64,
        durability: Durability::Strict,
    }
}

/// An independent set whose full copy has finished (master and shadow read `bytes(1)`), and
/// the volumes of a second set on the same master (`/s2`, `/b2`).
fn rig() -> Rig {
    let (r, _bitmap) = rig_of(SetKind::Independent);
    r.set.wait_copy().expect("the first full copy");
    assert_eq!(read_shadow(&r.set), bytes(1));
    r
}

/// A set of `kind` over memory volumes (the master reads `bytes(1)`), and its bitmap volume.
fn rig_of(kind: SetKind) -> (Rig, Arc<Flaky>) {
    let (master, shadow) = (Flaky::new(bytes(1)), Flaky::new(vec![0; SIZE]));
    let bitmap = Flaky::new(vec![0; SIZE]);
    let opener = MapOpener::new();
    let others = ["/s2", "/b2"].map(|p| (p, Flaky::new(vec![0; SIZE])));
    let ours = [("/m", &master), ("/s", &shadow), ("/b", &bitmap)];
    for (path, vol) in ours.map(|(p, v)| (p, v.clone())).into_iter().chain(others) {
        opener.insert(path, vol);
    }
    let engine = Engine::new(Box::new(opener));
    let spec = EnableSpec {
        kind,
        ..spec("r", "/m", "/s", "/b")
    };
    let set = engine.enable(&spec).expect("enable");
    let r = Rig {
        engine,
        set,
        master,
        shadow,
    };
    (r, bitmap)
}

/// The whole shadow, read through the set.
fn read_shadow(set: &Set) -> Vec<u8> {
    read_all(|buf| set.read_shadow(buf, 0)).expect("shadow read")
}

/// The whole master, read through the set's master.
fn read_master(set: &Set) -> iifs::engine::Result<Vec<u8>> {
    read_all(|buf| set.master.read(buf, 0))
}

fn read_all(read: impl Fn(&mut [u8]) -> iifs::engine::Result<()>) -> iifs::engine::Result<Vec<u8>> {
    let mut buf = vec![0; SIZE];
    read(&mut buf).map(|_| buf)
}

fn read_master_chunk(set: &Set, c: u64) -> iifs::engine::Result<Vec<u8>> {
    let mut buf = vec![0; CHUNK];
    set.master.read(&mut buf, c * CHUNK as u64).map(|_| buf)
}

/// Take the set offline through a failing master write.
fn fail_the_master(r: &Rig) {
    r.master.fail(true);
    r.set
        .master
        .write(&[0xEE; CHUNK], 5 * CHUNK as u64)
        .expect_err("a write to a failing master");
    r.master.fail(false);
    let st = r.set.status();
    assert_eq!(st.state, "offline", "{st:?}");
    assert!(
        st.last_error.as_deref().unwrap_or("").contains("/m"),
        "last_error names the master: {st:?}"
    );
}

/// Defect 2: after its full copy an independent shadow is a complete image of its own; when
/// only the master fails it stays readable (and writable), and `reset` keeps it.
#[test]
fn engine_an_independent_shadow_stays_readable_when_only_its_master_failed() {
    let r = rig();
    fail_the_master(&r);
    assert_eq!(
        read_shadow(&r.set),
        bytes(1),
        "the shadow reads its point in time"
    );
    r.set
        .write_shadow(&[0x5A; CHUNK], 2 * CHUNK as u64)
        .expect("a write to the sound shadow");
    let mut expected = bytes(1);
    expected[2 * CHUNK..3 * CHUNK].fill(0x5A);
    assert_eq!(read_shadow(&r.set), expected);
    // Nothing can be copied while the master is offline.
    let e = r
        .set
        .start_copy(Direction::Shadow, false)
        .expect_err("update of an offline set");
    assert_eq!(e.kind, Kind::NotPermitted, "{e:?}");
    // Reset: nothing copied, the shadow (with its write) kept, every chunk differs.
    r.set.reset().expect("reset");
    let st = r.set.status();
    assert_eq!(st.state, "idle", "{st:?}");
    assert_eq!(st.chunks_differ, CHUNKS);
    assert_eq!(r.shadow.bytes(), expected, "reset keeps the shadow");
    drop(r.engine);
}

/// A dependent shadow needs its master for every chunk not preserved: it does go offline.
#[test]
fn engine_a_dependent_shadow_is_offline_when_its_master_failed() {
    let (r, _bitmap) = rig_of(SetKind::Dependent);
    r.master.fail(true);
    let _ = r.set.master.write(&[1; CHUNK], 0);
    let mut buf = vec![0; CHUNK];
    let e = r
        .set
        .read_shadow(&mut buf, 0)
        .expect_err("dependent shadow read");
    assert_eq!(e.kind, Kind::Io);
    drop(r.engine);
}

/// When only the bitmap failed, a sound independent shadow still reads; its writes, which
/// must record the chunk as differing, are refused.
#[test]
fn engine_an_independent_shadow_stays_readable_when_only_its_bitmap_failed() {
    let (r, bitmap) = rig_of(SetKind::Independent);
    r.set.wait_copy().expect("the first full copy");
    bitmap.fail(true);
    let _ = r.set.master.write(&[7; CHUNK], 0);
    let st = r.set.status();
    assert_eq!(st.state, "offline", "{st:?}");
    assert_eq!(read_shadow(&r.set), bytes(1));
    let e = r
        .set
        .write_shadow(&[1; CHUNK], 0)
        .expect_err("a shadow write needs the bitmap");
    assert_eq!(e.kind, Kind::Io, "{e:?}");
    bitmap.fail(false);
    r.set.reset().expect("reset");
    assert_eq!(r.shadow.bytes(), bytes(1), "reset keeps the shadow");
    drop(r.engine);
}

/// Defect 7: a master that failed takes no new set until the set it took offline is reset.
#[test]
fn engine_enable_on_a_failed_master_is_refused_until_reset() {
    let r = rig();
    fail_the_master(&r);
    let Err(e) = r.engine.enable(&spec("second", "/m", "/s2", "/b2")) else {
        panic!("enable on a failed master was accepted");
    };
    assert_eq!(e.kind, Kind::Io, "{e:?}");
    for word in ["/m", "offline", "set r", "reset"] {
        assert!(e.message.contains(word), "{word:?} missing from {e}");
    }
    assert!(r.engine.set("second").is_err(), "nothing was enabled");
    r.set.reset().expect("reset");
    let second = r
        .engine
        .enable(&spec("second", "/m", "/s2", "/b2"))
        .expect("enable after the reset");
    second.wait_copy().expect("its copy");
    drop(r.engine);
}

/// Start a throttled `copy master` of a master that changed everywhere, and wait until it has
/// restored a few chunks (but far from all).
fn restore_under_way(r: &Rig) {
    r.set.master.write(&bytes(9), 0).expect("master write");
    r.set.set_params(50, 1).expect("throttle");
    r.set
        .start_copy(Direction::Master, true)
        .expect("copy master");
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.set.status().chunks_to_copy > CHUNKS - 3 {
        assert!(Instant::now() < deadline, "the restore does not progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Defect 20: the shadow fails half way through a restore. The chunks the copy had not
/// reached must not switch back to the old master's content: their reads fail until reset.
#[test]
fn engine_a_restore_that_fails_half_way_leaves_unrestored_chunks_unreadable() {
    let r = rig();
    restore_under_way(&r);
    r.shadow.fail_reads(true);
    let e = r.set.wait_copy().expect_err("the restore fails");
    assert_eq!(e.kind, Kind::Io);
    let st = r.set.status();
    assert_eq!(st.state, "offline", "{st:?}");
    let left = st.chunks_to_copy;
    assert!(left > 0 && left < CHUNKS, "{st:?}");
    // Restored chunks read as the shadow's content; the last chunk is not restored.
    assert_eq!(
        read_master_chunk(&r.set, 0).expect("chunk 0"),
        bytes(1)[..CHUNK]
    );
    let e = read_master_chunk(&r.set, CHUNKS - 1).expect_err("an unrestored chunk");
    assert_eq!(e.kind, Kind::Io, "{e:?}");
    for word in ["not yet restored", "set r", "reset"] {
        assert!(e.message.contains(word), "{word:?} missing from {e}");
    }
    // The read error did not replace the reason the set went offline for.
    assert!(r
        .set
        .status()
        .last_error
        .unwrap()
        .contains("injected failure"));
    // Disable would make them read as the old master: refused, nothing changed.
    let e = r.engine.disable("r").expect_err("disable");
    assert_eq!(e.kind, Kind::Busy, "{e:?}");
    assert!(e.message.contains("reset"), "{e}");
    assert!(r.engine.set("r").is_ok());
    // The shadow is back: reset accepts the master as it is (a new point in time from it).
    r.shadow.fail_reads(false);
    // An offline set takes only reset and disable: the throttle comes off after the reset.
    r.set.reset().expect("reset");
    r.set.set_params(0, 100).expect("no throttle");
    r.set.wait_copy().expect("the copy of the reset");
    let all = read_master(&r.set).expect("master reads after the reset");
    assert_eq!(all, r.master.bytes());
    assert_eq!(r.shadow.bytes(), r.master.bytes());
    r.engine.disable("r").expect("disable after the reset");
}

/// Defect 20, the master failing instead: the shadow is sound, so reset keeps it and
/// `copy master` then finishes the restore; until the reset, unrestored chunks fail.
#[test]
fn engine_a_restore_whose_master_failed_is_finished_by_reset_and_copy_master() {
    let r = rig();
    restore_under_way(&r);
    r.master.fail(true);
    r.set.wait_copy().expect_err("the restore fails");
    r.master.fail(false);
    let e = read_master_chunk(&r.set, CHUNKS - 1).expect_err("an unrestored chunk");
    assert_eq!(e.kind, Kind::Io, "{e:?}");
    assert!(e.message.contains("copy master"), "{e}");
    // The shadow (the restore's source) is still readable.
    assert_eq!(read_shadow(&r.set), bytes(1));
    // An offline set takes only reset and disable: the throttle comes off after the reset.
    r.set.reset().expect("reset");
    r.set.set_params(0, 100).expect("no throttle");
    r.set
        .start_copy(Direction::Master, true)
        .expect("copy master");
    r.set.wait_copy().expect("the restore");
    assert_eq!(read_master(&r.set).expect("master read"), bytes(1));
    assert_eq!(r.master.bytes(), bytes(1));
    drop(r.engine);
}

/// Defect 21: an aborted restore is still recorded; `disable` would change what the master
/// reads: EBUSY, naming how to finish it; once finished, disable works.
#[test]
fn engine_disable_is_refused_while_a_restore_is_recorded() {
    let r = rig();
    restore_under_way(&r);
    // Running: wait for it.
    let e = r.engine.disable("r").expect_err("disable during a restore");
    assert_eq!(e.kind, Kind::Busy, "{e:?}");
    assert!(e.message.contains("'wait'"), "{e}");
    r.set.abort_copy();
    assert_eq!(r.set.status().state, "aborted");
    let before = read_master(&r.set).expect("master read");
    assert_eq!(before, bytes(1), "the master reads as restored");
    let e = r
        .engine
        .disable("r")
        .expect_err("disable after an aborted restore");
    assert_eq!(e.kind, Kind::Busy, "{e:?}");
    assert!(e.message.contains("update master"), "{e}");
    assert!(r.engine.set("r").is_ok(), "the set is still there");
    let after = read_master(&r.set).expect("master read");
    assert_eq!(after, before, "the refusal changed nothing");
    r.set.set_params(0, 100).expect("no throttle");
    r.set
        .start_copy(Direction::Master, false)
        .expect("update master");
    r.set.wait_copy().expect("the restore");
    r.engine
        .disable("r")
        .expect("disable once the restore is done");
    assert_eq!(r.master.bytes(), bytes(1));
}

/// Defect 18, at the volume: a file that shrank under an open volume is an error inside the
/// recorded length (reads, kernel copies, writes), zeros only past it.
#[test]
fn a_file_volume_that_shrank_is_an_error_not_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v");
    fs::write(&path, bytes(3)).unwrap();
    let vol = FileVolume::open(&path).unwrap();
    let other = dir.path().join("w");
    fs::write(&other, vec![0u8; SIZE]).unwrap();
    let target = FileVolume::open(&other).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(CHUNK as u64)
        .unwrap();
    let mut buf = vec![0u8; CHUNK];
    vol.read_at(&mut buf, 0).expect("the part still there");
    assert_eq!(buf, bytes(3)[..CHUNK]);
    let e = vol
        .read_at(&mut buf, 4 * CHUNK as u64)
        .expect_err("read past the new end");
    assert!(e.to_string().contains("shrank"), "{e}");
    let e = copy_range(&vol, &target, 0, 8 * CHUNK as u64, Access::Sequential)
        .expect_err("copy of a range that is gone");
    assert!(e.to_string().contains("shrank"), "{e}");
    let e = vol
        .write_at(&[1; CHUNK], 8 * CHUNK as u64)
        .expect_err("write that would grow it back");
    assert!(e.to_string().contains("shrank"), "{e}");
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        CHUNK as u64,
        "not grown back"
    );
    // A kernel copy into it (a copy-on-write into a shadow that shrank) is refused too.
    let e = copy_range(
        &target,
        &vol,
        8 * CHUNK as u64,
        CHUNK as u64,
        Access::Random,
    )
    .expect_err("copy into a volume that shrank");
    assert!(e.to_string().contains("shrank"), "{e}");
    assert_eq!(fs::metadata(&path).unwrap().len(), CHUNK as u64);
}

// ------------------------------------------------------------------------------ mount level

const MSIZE: u64 = 1 << 20;

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn read_file(m: &Mount, rel: &str) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::open(m.path(rel))?.read_to_end(&mut out)?;
    Ok(out)
}

fn read_range(m: &Mount, rel: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    File::open(m.path(rel))?.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Poll `set`'s status until `cond` holds (at most 30 s).
fn wait_for(m: &Mount, set: &str, what: &str, cond: impl Fn(&HashMap<String, String>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond(&m.status(set)) {
        assert!(
            Instant::now() < deadline,
            "set {set}: no {what}: {:?}",
            m.status(set)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A refused command: its errno, and a reply that mentions every one of `words`.
#[track_caller]
fn refused(m: &Mount, rel: &str, cmd: &str, errno: i32, words: &[&str]) -> String {
    match m.ctl(rel, cmd) {
        Ok(()) => panic!("'{cmd}' on {rel} was accepted"),
        Err((e, reply)) => {
            assert_eq!(e, errno, "'{cmd}': reply {reply:?}");
            for w in words {
                assert!(reply.contains(w), "'{cmd}': {w:?} missing from {reply:?}");
            }
            reply
        }
    }
}

fn snapshot(files: &[&str]) -> Vec<Vec<u8>> {
    files.iter().map(|f| file_bytes(f)).collect()
}

/// Defects 2 and 7 on the mount: a master on a file system that fills up fails a write; the
/// independent set goes offline naming the master, its shadow still reads its point in time,
/// and no second set may be enabled on that master until the first is reset.
#[test]
fn mount_a_failed_master_leaves_the_independent_shadow_readable_and_refuses_new_sets() {
    let m = mount_or_skip!();
    /// Unmounts the tmpfs (lazily: the daemon may still hold a file there) when dropped.
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            common::sh(&format!("umount -l {} || true", self.0.display()));
        }
    }
    // A sparse 1 MiB master with 128 KiB of data on a tmpfs with room for 128 KiB more.
    let tiny = Unmount(m.dir.path().join("tiny"));
    fs::create_dir_all(&tiny.0).unwrap();
    common::sh(&format!(
        "mount -t tmpfs -o size=256k tmpfs {}",
        tiny.0.display()
    ));
    let master = tiny.0.join("master");
    let f = File::create(&master).unwrap();
    f.set_len(MSIZE).unwrap();
    f.write_all_at(&pattern(128 << 10, 5), 0).unwrap();
    drop(f);
    let master = master.to_string_lossy().into_owned();
    let shadow = m.volume("shadow", MSIZE, 0);
    let bitmap = m.volume("bitmap", 0, 0);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} ind chunk_size=4096"),
    );
    m.set_ok("ind", "wait");
    let image = file_bytes(&master);
    assert_eq!(m.read("sets/ind/shadow"), image);

    // Fill the tmpfs through the master file: a write fails, the set goes offline.
    let e = OpenOptions::new()
        .write(true)
        .open(m.path("sets/ind/master"))
        .unwrap()
        .write_all_at(&pattern(512 << 10, 6), 512 << 10)
        .expect_err("a write to a full master");
    assert!(errno_of(&e) != 0, "{e}");
    let st = m.status("ind");
    assert_eq!(st["state"], "offline", "{st:?}");
    assert!(st["last_error"].contains(&master), "{st:?}");

    // The shadow is a complete image of its own: it still reads, unchanged.
    let got = read_file(&m, "sets/ind/shadow").expect("shadow read of an offline independent set");
    common::assert_same(&got, &image, "shadow after the master failed");

    // Defect 7: a new set on the failed master is refused, and changes nothing.
    let shadow2 = m.volume("shadow2", MSIZE, 0);
    let bitmap2 = m.volume("bitmap2", 0, 0);
    let files = [&*master, &*shadow2, &*bitmap2];
    let before = snapshot(&files);
    refused(
        &m,
        "ctl",
        &format!("enable dep {master} {shadow2} {bitmap2} second"),
        libc::EIO,
        &[&master, "offline", "set ind", "reset"],
    );
    assert_eq!(
        snapshot(&files),
        before,
        "the refused enable changed a volume"
    );
    assert_eq!(m.set_names(), ["ind"]);

    // Reset: the shadow keeps its point in time, and the master takes new sets again.
    m.set_ok("ind", "reset");
    let st = m.status("ind");
    assert_eq!(st["state"], "idle", "{st:?}");
    common::assert_same(&file_bytes(&shadow), &image, "shadow after the reset");
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow2} {bitmap2} second"),
    );
    assert_eq!(m.set_names(), ["ind", "second"]);
    m.set_ok("second", "disable");
    m.set_ok("ind", "disable");
    drop(tiny);
}

/// Defect 18 on the mount: truncating a dependent set's shadow file (with preserved chunks)
/// or another dependent set's master file behind the daemon's back makes reads fail (EIO),
/// takes the set offline and says which volume shrank; nothing reads as zeros.
#[test]
fn mount_a_backing_file_that_shrank_is_an_io_error() {
    let m = mount_or_skip!();
    let (ma, sa, ba) = m.volumes("a", MSIZE, 1);
    let (mb, sb, bb) = m.volumes("b", MSIZE, 2);
    m.ok(
        "ctl",
        &format!("enable dep {ma} {sa} {ba} a chunk_size=4096"),
    );
    m.ok(
        "ctl",
        &format!("enable dep {mb} {sb} {bb} b chunk_size=4096"),
    );
    // Preserve every chunk of a's point in time in its shadow.
    let old_a = file_bytes(&ma);
    m.write_at("sets/a/master", 0, &pattern(MSIZE as usize, 3));
    assert_eq!(m.read("sets/a/shadow"), old_a);

    OpenOptions::new()
        .write(true)
        .open(&sa)
        .unwrap()
        .set_len(64 << 10)
        .unwrap();
    OpenOptions::new()
        .write(true)
        .open(&mb)
        .unwrap()
        .set_len(64 << 10)
        .unwrap();

    for (set, vol) in [("a", &sa), ("b", &mb)] {
        let e = read_range(&m, &format!("sets/{set}/shadow"), 512 << 10, 4096)
            .expect_err("read of a range that is gone");
        assert_eq!(errno_of(&e), libc::EIO, "set {set}: {e}");
        let st = m.status(set);
        assert_eq!(st["state"], "offline", "set {set}: {st:?}");
        assert!(
            st["last_error"].contains(vol.as_str()) && st["last_error"].contains("shrank"),
            "set {set}: last_error does not name the volume that shrank: {st:?}"
        );
        let e = read_file(&m, &format!("sets/{set}/shadow")).expect_err("shadow read");
        assert_eq!(errno_of(&e), libc::EIO, "set {set}: {e}");
    }
    // The master of b shrank too: its own reads fail instead of returning zeros.
    let e = read_range(&m, "sets/b/master", 512 << 10, 4096).expect_err("master read");
    assert_eq!(errno_of(&e), libc::EIO, "{e}");
}

/// Set `name`: an independent set whose full copy is done, then a master changed everywhere
/// and a throttled `copy master` (one chunk every 20 ms) that has restored a few chunks.
fn mount_restore_under_way(m: &Mount, name: &str) -> (String, String, String) {
    let (master, shadow, bitmap) = (
        m.volume(&format!("{name}-master"), MSIZE, 1),
        m.volume(&format!("{name}-shadow"), MSIZE, 0),
        m.volume(&format!("{name}-bitmap"), 0, 0),
    );
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} {name} chunk_size=4096"),
    );
    m.set_ok(name, "wait");
    m.write_at(
        &format!("sets/{name}/master"),
        0,
        &pattern(MSIZE as usize, 2),
    );
    m.set_ok(name, "params 20 1");
    m.set_ok(name, "copy master");
    let total = MSIZE / 4096;
    wait_for(m, name, "a few restored chunks", |st| {
        st["chunks_to_copy"].parse::<u64>().unwrap_or(total) < total - 3
    });
    (master, shadow, bitmap)
}

/// Defects 20 and 21 on the mount: the shadow file shrinks during `copy master`; the set goes
/// offline, and the master chunks not yet restored fail their reads instead of switching back
/// to the old master's bytes. `disable` is refused (it would let them); once the shadow file
/// is whole again, `reset` settles the master as it is.
#[test]
fn mount_a_restore_that_fails_half_way_does_not_tear_the_master() {
    let mut m = mount_or_skip!();
    let (master, shadow, _bitmap) = mount_restore_under_way(&m, "r");
    let image = pattern(MSIZE as usize, 1);
    OpenOptions::new()
        .write(true)
        .open(&shadow)
        .unwrap()
        .set_len(0)
        .unwrap();
    wait_for(&m, "r", "the failed restore", |st| st["state"] == "offline");
    let st = m.status("r");
    assert!(
        st["last_error"].contains(&shadow) && st["last_error"].contains("shrank"),
        "{st:?}"
    );
    // Restored chunks read as the shadow's image; the last chunk was not restored.
    assert_eq!(
        read_range(&m, "sets/r/master", 0, 4096).expect("a restored chunk"),
        image[..4096]
    );
    let e = read_range(&m, "sets/r/master", MSIZE - 4096, 4096).expect_err("unrestored chunk");
    assert_eq!(errno_of(&e), libc::EIO, "{e}");
    let e = read_file(&m, "sets/r/master").expect_err("whole master");
    assert_eq!(errno_of(&e), libc::EIO, "{e}");

    // Disable would hand the old master's bytes out again: refused, nothing changed.
    let files = [&*master, &*shadow];
    let before = snapshot(&files);
    refused(
        &m,
        "sets/r/ctl",
        "disable",
        libc::EBUSY,
        &["set r", "reset"],
    );
    assert_eq!(snapshot(&files), before);
    assert_eq!(m.set_names(), ["r"]);

    // The shadow file is whole again. After a restart the set is still offline and the
    // unrestored chunks still fail: the record is in the bitmap volume.
    OpenOptions::new()
        .write(true)
        .open(&shadow)
        .unwrap()
        .set_len(MSIZE)
        .unwrap();
    m.restart();
    assert_eq!(m.status("r")["state"], "offline");
    let e = read_range(&m, "sets/r/master", MSIZE - 4096, 4096).expect_err("after a restart");
    assert_eq!(errno_of(&e), libc::EIO, "{e}");
    // Reset takes the master as it is.
    m.set_ok("r", "reset");
    m.set_ok("r", "params 0 100");
    m.set_ok("r", "wait");
    assert_eq!(m.status("r")["state"], "idle");
    assert_eq!(m.read("sets/r/master"), file_bytes(&master));
    assert_eq!(file_bytes(&shadow), file_bytes(&master));
    m.set_ok("r", "disable");
}

/// Defect 21 on the mount: after `abort` of a restore, `disable` is refused with EBUSY (the
/// master reads as restored only while the set exists) and says how to finish; the refusal
/// changes nothing; once `update master` finished, disable works and the master is restored.
#[test]
fn mount_disable_after_an_aborted_restore_is_refused() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = mount_restore_under_way(&m, "a");
    m.set_ok("a", "abort");
    assert_eq!(m.status("a")["state"], "aborted");
    let image = pattern(MSIZE as usize, 1);
    assert_eq!(
        m.read("sets/a/master"),
        image,
        "the master reads as restored"
    );
    let files = [&*master, &*shadow, &*bitmap];
    let before = snapshot(&files);
    refused(
        &m,
        "sets/a/ctl",
        "disable",
        libc::EBUSY,
        &["set a", "update master"],
    );
    assert_eq!(
        snapshot(&files),
        before,
        "the refused disable changed a volume"
    );
    assert_eq!(m.set_names(), ["a"]);
    assert_eq!(m.read("sets/a/master"), image);
    m.set_ok("a", "params 0 100");
    m.set_ok("a", "update master");
    m.set_ok("a", "wait");
    m.set_ok("a", "disable");
    assert_eq!(file_bytes(&master), image);
}

/// A restore whose bitmap volume fails: `disable` is then the only way out (a dead bitmap
/// cannot record a reset), and it must not wipe the shadow, which is the restore's whole
/// source (only a dependent shadow, or one half copied from the master, is wiped).
#[test]
fn engine_disable_after_a_restore_lost_its_bitmap_keeps_the_shadow_whole() {
    let (r, bitmap) = rig_of(SetKind::Independent);
    r.set.wait_copy().expect("the first full copy");
    restore_under_way(&r);
    bitmap.fail(true);
    r.set
        .wait_copy()
        .expect_err("the restore fails on the bitmap");
    assert!(r.set.is_offline());
    r.engine
        .disable("r")
        .expect("disable of a set whose bitmap failed");
    assert!(r.shadow.bytes() == bytes(1), "the shadow was wiped");
}
