//! `reset` of an offline independent set: a failed shadow gets
//! a full copy from the master; when the shadow is sound (the master or the bitmap failed, an
//! interrupted `update master` among them) nothing is copied, the shadow keeps its point in
//! time and every chunk counts as differing. A reset never copies onto the master: it keeps
//! taking writes while the set is offline. Volumes are in memory, with a switch that makes one
//! of them fail its writes and syncs.

use std::sync::Arc;

use iifs::engine::testing::{FlakyVolume as Flaky, MapOpener};
use iifs::engine::{Direction, Durability, EnableSpec, Engine, Kind, Set, SetKind};

const SIZE: usize = 64 * 4096;
const CHUNK: usize = 4096;

fn pattern(seed: u8) -> Vec<u8> {
    (0..SIZE)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

struct Rig {
    engine: Engine,
    set: Arc<Set>,
    master: Arc<Flaky>,
    shadow: Arc<Flaky>,
    bitmap: Arc<Flaky>,
}

/// An independent set whose full copy has finished: master and shadow both read `pattern(1)`.
fn rig() -> Rig {
    let master = Flaky::new(pattern(1));
    let shadow = Flaky::new(vec![0; SIZE]);
    let bitmap = Flaky::new(vec![0; 16384]);
    let opener = MapOpener::new();
    opener.insert("/m", master.clone());
    opener.insert("/s", shadow.clone());
    opener.insert("/b", bitmap.clone());
    let engine = Engine::new(Box::new(opener));
    let set = engine
        .enable(&EnableSpec {
            kind: SetKind::Independent,
            master: "/m".into(),
            shadow: "/s".into(),
            bitmap: "/b".into(),
            name: "r".into(),
            chunk_size: CHUNK as u64,
            durability: Durability::Strict,
        })
        .expect("enable");
    set.wait_copy().expect("the first full copy");
    assert_eq!(shadow.bytes(), pattern(1));
    Rig {
        engine,
        set,
        master,
        shadow,
        bitmap,
    }
}

fn read_shadow(set: &Set) -> Vec<u8> {
    let mut buf = vec![0; SIZE];
    set.read_shadow(&mut buf, 0).expect("read of the shadow");
    buf
}

fn read_master(set: &Set) -> Vec<u8> {
    let mut buf = vec![0; SIZE];
    set.master.read(&mut buf, 0).expect("read of the master");
    buf
}

/// Reset with a sound shadow: no copy runs, every chunk counts as differing, the shadow keeps
/// its point in time (`pattern(1)`) and nothing written to the master is lost.
#[track_caller]
fn reset_keeps_both_volumes(r: &Rig) {
    let master_before = r.master.bytes();
    r.set.reset().expect("reset");
    let st = r.set.status();
    assert_eq!(st.state, "idle", "no copy runs: {st:?}");
    assert_eq!(
        st.chunks_differ,
        (SIZE / CHUNK) as u64,
        "every chunk differs"
    );
    assert_eq!(
        r.shadow.bytes(),
        pattern(1),
        "the shadow keeps its point in time"
    );
    assert_eq!(r.master.bytes(), master_before, "the master is untouched");
}

#[test]
fn a_failed_shadow_is_rebuilt_from_the_master() {
    let r = rig();
    r.shadow.fail(true);
    r.set
        .start_copy(Direction::Shadow, true)
        .expect("copy starts");
    let e = r.set.wait_copy().expect_err("the copy fails");
    assert_eq!(e.kind, Kind::Io);
    assert_eq!(r.set.status().state, "offline");
    r.shadow.fail(false);
    r.set.reset().expect("reset");
    r.set.wait_copy().expect("the rebuilding copy");
    assert_eq!(r.set.status().state, "idle");
    assert_eq!(r.shadow.bytes(), r.master.bytes());
    assert_eq!(read_shadow(&r.set), pattern(1));
    drop(r.engine);
}

#[test]
fn a_failed_master_during_update_master_keeps_the_shadow_and_the_later_writes() {
    let r = rig();
    // The master changes; the shadow keeps the point in time. Restoring the master begins,
    // throttled so that it is still running when the master fails.
    let changed = pattern(9);
    r.set.master.write(&changed, 0).expect("master write");
    r.set.set_params(50, 1).expect("throttle");
    r.set
        .start_copy(Direction::Master, true)
        .expect("copy master");
    r.master.fail(true);
    let e = r.set.wait_copy().expect_err("the restore fails");
    assert_eq!(e.kind, Kind::Io);
    assert_eq!(r.set.status().state, "offline");
    // The fault is cleared; the master, in production, takes a write meanwhile.
    r.master.fail(false);
    r.set
        .master
        .write(&[0xAB; CHUNK], 3 * CHUNK as u64)
        .expect("write after the fault");
    // An offline set takes no command but reset and disable.
    assert_eq!(
        r.set.set_params(0, 100).unwrap_err().kind,
        Kind::NotPermitted
    );
    reset_keeps_both_volumes(&r);
    r.set.set_params(0, 100).expect("no throttle");
    // The administrator finishes the restore explicitly.
    r.set
        .start_copy(Direction::Master, true)
        .expect("copy master");
    r.set.wait_copy().expect("the restore");
    assert_eq!(r.master.bytes(), pattern(1));
    assert_eq!(read_master(&r.set), pattern(1));
    drop(r.engine);
}

#[test]
fn a_failed_bitmap_copies_nothing_but_marks_every_chunk() {
    let r = rig();
    r.bitmap.fail(true);
    // The first write to a chunk since the copy must record its bit: the bitmap fails.
    let _ = r.set.master.write(&[7u8; CHUNK], 0);
    assert_eq!(r.set.status().state, "offline");
    r.bitmap.fail(false);
    reset_keeps_both_volumes(&r);
    // An update then brings the shadow to the master again.
    r.set.start_copy(Direction::Shadow, false).expect("update");
    r.set.wait_copy().expect("update");
    assert_eq!(r.shadow.bytes(), r.master.bytes());
    drop(r.engine);
}

/// A group whose member is offline takes no update: EIO naming the member, and no member's point
/// in time moves; once the member is reset, the group update takes every member.
#[test]
fn a_group_with_an_offline_member_is_refused_whole() {
    let r = rig();
    let master2 = Flaky::new(pattern(2));
    let shadow2 = Flaky::new(vec![0; SIZE]);
    let bitmap2 = Flaky::new(vec![0; 16384]);
    let opener = MapOpener::new();
    opener.insert("/m", r.master.clone());
    opener.insert("/s", r.shadow.clone());
    opener.insert("/b", r.bitmap.clone());
    opener.insert("/m2", master2.clone());
    opener.insert("/s2", shadow2.clone());
    opener.insert("/b2", bitmap2.clone());
    let engine = Engine::new(Box::new(opener));
    let spec = |n: &str, m: &str, s: &str, b: &str| EnableSpec {
        kind: SetKind::Dependent,
        master: m.into(),
        shadow: s.into(),
        bitmap: b.into(),
        name: n.into(),
        chunk_size: CHUNK as u64,
        durability: Durability::Strict,
    };
    drop(r.engine);
    let a = engine
        .enable(&spec("a", "/m", "/s", "/b"))
        .expect("enable a");
    let b = engine
        .enable(&spec("b", "/m2", "/s2", "/b2"))
        .expect("enable b");
    engine.group_create("g").unwrap();
    engine.group_add("g", "a").unwrap();
    engine.group_add("g", "b").unwrap();
    // b's shadow fails a copy-on-write: b goes offline.
    shadow2.fail(true);
    b.master.write(&[9; CHUNK], 0).unwrap();
    assert!(b.is_offline());
    let before = (
        a.header().pit_time,
        a.header().group_seq,
        b.header().group_seq,
    );
    let e = engine
        .group_copy("g", Direction::Shadow, false, |_| Ok(()))
        .unwrap_err();
    assert_eq!(e.kind, Kind::Io, "{e}");
    assert!(e.message.contains("member b"), "{e}");
    assert_eq!(
        (
            a.header().pit_time,
            a.header().group_seq,
            b.header().group_seq
        ),
        before
    );
    shadow2.fail(false);
    b.reset().unwrap();
    let intent = engine
        .group_copy("g", Direction::Shadow, false, |_| Ok(()))
        .expect("the group update once b is back");
    assert_eq!(a.header().group_seq, intent.seq);
    assert_eq!(b.header().group_seq, intent.seq);
}
