//! Compact dependent shadows and overflow volumes (issue 10) through the real mount: a shadow
//! smaller than its master keeps the point in time in slots allocated on demand and spills
//! into an overflow volume shared by sets; out of space, restart and SIGKILL behaviour.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::loops::Cleanup;
use common::refusal::{assert_says_why, refusal};
use common::{assert_same, file_bytes, num, pattern, sh, Mount};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

// ------------------------------------------------------------------------------ helpers

/// A compact dependent set `name`: a master of `size` bytes filled from `seed`, a shadow of
/// `shadow_size` bytes, an empty bitmap file. Returns (master, shadow, bitmap) paths.
fn compact_set(
    m: &Mount,
    name: &str,
    size: u64,
    shadow_size: u64,
    seed: u64,
    opts: &str,
) -> (String, String, String) {
    let master = m.volume(&format!("m-{name}.img"), size, seed);
    let shadow = m.volume(&format!("s-{name}.img"), shadow_size, 0);
    let bitmap = m.volume(&format!("b-{name}.img"), 0, 0);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} {name} {opts}"),
    );
    let st = m.status(name);
    assert_eq!(
        st["type"], "compact",
        "a smaller shadow makes a compact set: {st:?}"
    );
    (master, shadow, bitmap)
}

/// An overflow volume file of `size` bytes initialised as `name` with `chunk` bytes a chunk.
fn overflow(m: &Mount, name: &str, size: u64, chunk: u64) -> String {
    let vol = m.volume(&format!("o-{name}.img"), size, 0);
    m.ok(
        "ctl",
        &format!("overflow init {vol} {name} chunk_size={chunk}"),
    );
    vol
}

fn ovf_text(m: &Mount, name: &str) -> String {
    fs::read_to_string(m.path(&format!("overflow/{name}/status")))
        .unwrap_or_else(|e| panic!("read overflow/{name}/status: {e}"))
}

fn ovf_status(m: &Mount, name: &str) -> HashMap<String, String> {
    ovf_text(m, name)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set_text(m: &Mount, name: &str) -> String {
    fs::read_to_string(m.path(&format!("sets/{name}/status"))).expect("read set status")
}

/// The `sets:` value of an overflow's status as a map; sets holding 0 chunks are left out
/// (the spec does not say whether an attached set with none is listed).
#[track_caller]
fn ovf_sets(st: &HashMap<String, String>) -> BTreeMap<String, u64> {
    let v = st
        .get("sets")
        .unwrap_or_else(|| panic!("overflow status has no 'sets': {st:?}"));
    if v == "-" {
        return BTreeMap::new();
    }
    v.split_whitespace()
        .map(|p| {
            let (n, c) = p
                .split_once('=')
                .unwrap_or_else(|| panic!("bad sets entry {p:?} in {v:?}"));
            (
                n.to_string(),
                c.parse::<u64>()
                    .unwrap_or_else(|_| panic!("bad count in {v:?}")),
            )
        })
        .filter(|(_, c)| *c > 0)
        .collect()
}

/// The (shadow_chunks_used, overflow_chunks_used) of a compact set.
#[track_caller]
fn used(m: &Mount, set: &str) -> (u64, u64) {
    let st = m.status(set);
    (
        num(&st, "shadow_chunks_used"),
        num(&st, "overflow_chunks_used"),
    )
}

/// Write one command on an open ctl file and read the reply back on the same open file.
fn reply_of(m: &Mount, rel: &str, cmd: &str) -> (Result<(), i32>, String) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path(rel))
        .expect("open ctl");
    let r = match f.write(cmd.as_bytes()) {
        Ok(n) => {
            assert_eq!(n, cmd.len(), "short write of a ctl command");
            Ok(())
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(0)),
    };
    let mut reply = String::new();
    let _ = f.read_to_string(&mut reply);
    (r, reply)
}

/// A command that must be refused with `errno` and a sentence; returns the reply.
#[track_caller]
fn refused(m: &Mount, rel: &str, cmd: &str, errno: i32) -> String {
    let reply = refusal(m, rel, cmd, errno);
    assert_says_why(&reply, 3, &format!("'{cmd}'"));
    reply
}

/// Read `len` bytes of a tree file at `off` with one pread.
fn pread(m: &Mount, rel: &str, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = File::open(m.path(rel))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

fn blocks(path: &str) -> u64 {
    fs::metadata(path).unwrap().blocks()
}

/// Write `data` at `off` of the set's master and record which chunks it touched.
fn write_master(
    m: &Mount,
    set: &str,
    off: u64,
    data: &[u8],
    chunk: u64,
    touched: &mut BTreeSet<u64>,
) {
    m.write_at(&format!("sets/{set}/master"), off, data);
    let last = (off + data.len() as u64 - 1) / chunk;
    touched.extend(off / chunk..=last);
}

/// A tree file that was removed: opening it fails at once, and its name is gone once the
/// kernel's entry cache (1 s, `fs::tree::TTL`) lets go of it.
#[track_caller]
fn assert_gone(m: &Mount, rel: &str) {
    assert!(
        File::open(m.path(rel)).is_err(),
        "{rel} still opens after it was removed"
    );
    assert_name_gone(m, rel);
}

/// The name `rel` is gone from the tree within 3 s (the kernel may cache an entry for 1 s).
#[track_caller]
fn assert_name_gone(m: &Mount, rel: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while m.path(rel).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{rel} is still listed 3 s after it was removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------------------------ tests

/// A shadow of 1/8 of the master keeps the point in time through writes to fewer chunks than
/// it holds, and with an overflow attached through writes to more; the counts agree.
#[test]
fn compact_shadow_keeps_its_point_in_time_within_its_slots_and_with_an_overflow() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = 2 * MIB; // 512 chunks
    let (master, _shadow, _) = compact_set(
        &m,
        "c",
        size,
        size / 8,
        1,
        "chunk_size=4096 durability=relaxed",
    );
    let pit = file_bytes(&master);
    let st = m.status("c");
    assert_eq!(st["state"], "idle", "{st:?}");
    assert_eq!(st["overflow"], "-", "{st:?}");
    assert_eq!(num(&st, "shadow_chunks"), 64, "{st:?}");
    assert_eq!(num(&st, "shadow_chunks_used"), 0, "{st:?}");
    assert_eq!(num(&st, "overflow_chunks_used"), 0, "{st:?}");
    assert!(!st.contains_key("space_warning"), "{st:?}");
    assert_eq!(
        fs::metadata(m.path("sets/c/shadow")).unwrap().len(),
        size,
        "the compact shadow is shown at the master's size"
    );
    assert!(!m.path("sets/c/overflow").exists(), "no overflow attached");
    let global = String::from_utf8(m.read("status")).unwrap();
    assert!(global.contains("c compact idle"), "{global}");

    // 1. Fewer chunks than the shadow holds: small writes, a write across a chunk boundary,
    //    rewrites of chunks already preserved.
    let mut touched = BTreeSet::new();
    for i in 0..30u64 {
        let c = (i * 7) % 512;
        write_master(
            &m,
            "c",
            c * CH + 100,
            &pattern(300, 10 + i),
            CH,
            &mut touched,
        );
    }
    write_master(&m, "c", 300 * CH - 50, &pattern(100, 50), CH, &mut touched);
    for i in 0..10u64 {
        let c = (i * 7) % 512;
        write_master(
            &m,
            "c",
            c * CH,
            &pattern(CH as usize, 60 + i),
            CH,
            &mut touched,
        );
    }
    let n = touched.len() as u64;
    assert_eq!(n, 32);
    assert_same(&m.read("sets/c/shadow"), &pit, "shadow within its slots");
    assert_same(&m.read("sets/c/master"), &file_bytes(&master), "master");
    assert_eq!(used(&m, "c"), (n, 0), "one slot per chunk written");
    assert_eq!(m.status("c")["state"], "idle");

    // 2. With an overflow attached: more chunks than the shadow holds.
    let ovf = overflow(&m, "pool", MIB + CH, CH); // 256 data chunks
    let ost = ovf_status(&m, "pool");
    assert_eq!(ost["name"], "pool");
    assert_eq!(ost["volume"], ovf);
    assert_eq!(num(&ost, "size"), MIB + CH);
    assert_eq!(num(&ost, "chunk_size"), CH);
    assert_eq!(num(&ost, "chunks_total"), 256);
    assert_eq!(num(&ost, "chunks_used"), 0);
    assert_eq!(num(&ost, "chunks_free"), 256);
    assert_eq!(ost["sets"], "-", "no set uses a fresh overflow");
    m.set_ok("c", "attach pool");
    assert_eq!(m.status("c")["overflow"], "pool");
    for i in 0..70u64 {
        let c = 3 + i * 5; // 3, 8, ... 348: some already preserved
        write_master(
            &m,
            "c",
            c * CH + 7,
            &pattern(1000, 200 + i),
            CH,
            &mut touched,
        );
    }
    let n = touched.len() as u64;
    assert!(n > 64 + 20, "{n} chunks written");
    assert_same(&m.read("sets/c/shadow"), &pit, "shadow with an overflow");
    assert_same(&m.read("sets/c/master"), &file_bytes(&master), "master");
    let st = m.status("c");
    assert_eq!(st["state"], "idle", "{st:?}");
    assert_eq!(
        (
            num(&st, "shadow_chunks_used"),
            num(&st, "overflow_chunks_used")
        ),
        (64, n - 64),
        "the shadow fills first, the rest spills: {st:?}"
    );
    assert!(
        !st.contains_key("space_warning"),
        "{n} of 320 slots is below 80%: {st:?}"
    );
    let ost = ovf_status(&m, "pool");
    assert_eq!(num(&ost, "chunks_used"), n - 64, "{ost:?}");
    assert_eq!(num(&ost, "chunks_free"), 256 - (n - 64), "{ost:?}");
    assert_eq!(
        ovf_sets(&ost),
        BTreeMap::from([("c".to_string(), n - 64)]),
        "{ost:?}"
    );
    // The overflow's bytes are shown read-only in the set's directory.
    let shown = m.read("sets/c/overflow");
    assert_same(
        &shown,
        &file_bytes(&ovf),
        "sets/c/overflow shows the volume",
    );
    assert!(
        OpenOptions::new()
            .write(true)
            .open(m.path("sets/c/overflow"))
            .and_then(|f| f.write_all_at(b"x", CH))
            .is_err(),
        "sets/c/overflow is read-only"
    );
    assert_same(
        &file_bytes(&ovf),
        &shown,
        "overflow unchanged by the refused write",
    );

    // 3. update shadow: a fresh point in time, every slot free.
    m.set_ok("c", "update shadow");
    assert_same(
        &m.read("sets/c/shadow"),
        &file_bytes(&master),
        "after update",
    );
    assert_eq!(used(&m, "c"), (0, 0));
    let ost = ovf_status(&m, "pool");
    assert_eq!(num(&ost, "chunks_used"), 0, "{ost:?}");
    assert!(ovf_sets(&ost).is_empty(), "{ost:?}");
    m.set_ok("c", "detach");
    assert_eq!(m.status("c")["overflow"], "-");
    assert_gone(&m, "sets/c/overflow");
    assert_eq!(ovf_status(&m, "pool")["sets"], "-");
}

/// ext4 made on the master before enable; files written through a loop device over the
/// set's master; after the point in time they change; a loop device over the compact shadow
/// mounts read-only the file system as it was.
#[test]
fn ext4_on_a_compact_shadow_mounts_read_only_as_at_the_point_in_time() {
    let m = mount_or_skip!();
    let size = 32 * MIB;
    let master = m.volume("m-fs.img", size, 0);
    sh(&format!(
        "mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard {master}"
    ));
    let shadow = m.volume("s-fs.img", size / 8, 0);
    let bitmap = m.volume("b-fs.img", 0, 0);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} fs durability=relaxed"),
    );
    assert_eq!(m.status("fs")["type"], "compact");
    overflow(&m, "fspool", size, 65536);
    m.set_ok("fs", "attach fspool");

    let mut c = Cleanup::default();
    let dev = c.loop_dev(m.path("sets/fs/master"), false);
    let live = m.dir.path().join("live");
    c.mount(&dev, &live, "");
    sh(&format!(
        "cd {d} && echo 'version one' > kept.txt && echo doomed > gone.txt && \
         dd if=/dev/urandom of=big.bin bs=1M count=3 status=none && sha256sum big.bin > big.sum && sync",
        d = live.display()
    ));
    let big_sum = fs::read_to_string(live.join("big.sum")).unwrap();

    sh(&format!("fsfreeze -f {}", live.display()));
    m.set_ok("fs", "update shadow");
    sh(&format!("fsfreeze -u {}", live.display()));

    sh(&format!(
        "cd {d} && echo 'version two' > kept.txt && rm gone.txt && echo new > added.txt && \
         dd if=/dev/urandom of=big.bin bs=1M count=3 conv=notrunc status=none && sync",
        d = live.display()
    ));
    let st = m.status("fs");
    assert_eq!(st["state"], "idle", "{st:?}");
    let (s_used, o_used) = (
        num(&st, "shadow_chunks_used"),
        num(&st, "overflow_chunks_used"),
    );
    assert!(
        s_used + o_used >= 48,
        "3 MiB rewritten: at least 48 chunks preserved: {st:?}"
    );

    let sdev = c.loop_dev(m.path("sets/fs/shadow"), true);
    let snap = m.dir.path().join("snap");
    c.mount(&sdev, &snap, "-o ro,noload");
    let read = |f: &str| fs::read_to_string(snap.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert_eq!(read("kept.txt"), "version one\n");
    assert_eq!(read("gone.txt"), "doomed\n");
    assert!(
        !snap.join("added.txt").exists(),
        "a file made after the update is not in the shadow"
    );
    let sum = sh(&format!("cd {} && sha256sum big.bin", snap.display()));
    assert_eq!(
        sum, big_sum,
        "big.bin rewritten after the update reads as before"
    );
    assert_eq!(
        fs::read_to_string(live.join("kept.txt")).unwrap(),
        "version two\n"
    );
    drop(c);
    sh(&format!(
        "e2fsck -fn {} >/dev/null",
        m.path("sets/fs/shadow").display()
    ));
}

/// Two compact sets on different masters share one overflow; detach of an overflow in use is
/// refused and changes nothing; `update shadow` frees the set's chunks and detach succeeds.
#[test]
fn two_compact_sets_share_one_overflow() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = MIB; // 256 chunks, shadow 32 slots
    let opts = "chunk_size=4096 durability=relaxed";
    let (ma, _, _) = compact_set(&m, "A", size, size / 8, 3, opts);
    let (mb, _, _) = compact_set(&m, "B", size, size / 8, 4, opts);
    let pit_a = file_bytes(&ma);
    let mut pit_b = file_bytes(&mb);
    let ovf = overflow(&m, "shared", MIB + CH, CH); // 256 data chunks
    m.set_ok("A", "attach shared");
    // By the path of its volume too.
    m.set_ok("B", &format!("attach {ovf}"));
    assert_eq!(m.status("A")["overflow"], "shared");
    assert_eq!(m.status("B")["overflow"], "shared");

    let (mut ta, mut tb) = (BTreeSet::new(), BTreeSet::new());
    for c in 0..50u64 {
        write_master(&m, "A", c * 5 * CH, &pattern(512, 100 + c), CH, &mut ta);
    }
    for c in 0..40u64 {
        write_master(
            &m,
            "B",
            (c * 3 + 1) * CH + 9,
            &pattern(64, 300 + c),
            CH,
            &mut tb,
        );
    }
    assert_eq!((ta.len(), tb.len()), (50, 40));
    assert_eq!(used(&m, "A"), (32, 18));
    assert_eq!(used(&m, "B"), (32, 8));
    let ost = ovf_status(&m, "shared");
    assert_eq!(num(&ost, "chunks_used"), 26, "{ost:?}");
    assert_eq!(num(&ost, "chunks_free"), 256 - 26, "{ost:?}");
    assert_eq!(
        ovf_sets(&ost),
        BTreeMap::from([("A".to_string(), 18), ("B".to_string(), 8)]),
        "{ost:?}"
    );
    assert_same(&m.read("sets/A/shadow"), &pit_a, "A's shadow");
    assert_same(&m.read("sets/B/shadow"), &pit_b, "B's shadow");

    // Detach while A holds chunks in it: refused, nothing changed.
    let before = (
        set_text(&m, "A"),
        set_text(&m, "B"),
        ovf_text(&m, "shared"),
        file_bytes(&ovf),
    );
    let shadow_a = m.read("sets/A/shadow");
    refused(&m, "sets/A/ctl", "detach", libc::EBUSY);
    let after = (
        set_text(&m, "A"),
        set_text(&m, "B"),
        ovf_text(&m, "shared"),
        file_bytes(&ovf),
    );
    assert_eq!(before.0, after.0, "A's status");
    assert_eq!(before.1, after.1, "B's status");
    assert_eq!(before.2, after.2, "the overflow's status");
    assert_same(&after.3, &before.3, "the overflow volume");
    assert_same(
        &m.read("sets/A/shadow"),
        &shadow_a,
        "A's shadow after refusal",
    );
    assert!(m.path("sets/A/overflow").exists());

    // update shadow on A frees its chunks; B keeps its own.
    m.set_ok("A", "update shadow");
    assert_eq!(used(&m, "A"), (0, 0));
    assert_eq!(used(&m, "B"), (32, 8));
    let ost = ovf_status(&m, "shared");
    assert_eq!(num(&ost, "chunks_used"), 8, "{ost:?}");
    assert_eq!(
        ovf_sets(&ost),
        BTreeMap::from([("B".to_string(), 8)]),
        "{ost:?}"
    );
    assert_same(&m.read("sets/A/shadow"), &file_bytes(&ma), "A updated");
    assert_same(
        &m.read("sets/B/shadow"),
        &pit_b,
        "B untouched by A's update",
    );
    m.set_ok("A", "detach");
    assert_eq!(m.status("A")["overflow"], "-");
    assert_gone(&m, "sets/A/overflow");
    let ost = ovf_status(&m, "shared");
    assert!(
        !ost["sets"].split_whitespace().any(|p| p.starts_with("A=")),
        "{ost:?}"
    );

    // B goes on spilling; then B too is freed and detached, and the overflow deleted.
    for c in 200..230u64 {
        write_master(&m, "B", c * CH, &pattern(CH as usize, 400 + c), CH, &mut tb);
    }
    let n = tb.len() as u64;
    assert_eq!(used(&m, "B"), (32, n - 32));
    assert_eq!(num(&ovf_status(&m, "shared"), "chunks_used"), n - 32);
    assert_same(&m.read("sets/B/shadow"), &pit_b, "B's shadow");
    // A (without overflow) is unaffected by B's spills.
    assert_same(&m.read("sets/A/shadow"), &file_bytes(&ma), "A");
    m.set_ok("B", "update shadow");
    pit_b = file_bytes(&mb);
    assert_same(&m.read("sets/B/shadow"), &pit_b, "B updated");
    m.set_ok("B", "detach");
    assert_eq!(ovf_status(&m, "shared")["sets"], "-");
    m.ok("ctl", "overflow delete shared");
    assert_gone(&m, "overflow/shared/status");
    assert_name_gone(&m, "overflow/shared");
}

/// Shadow (and overflow) full: master writes still succeed, the set is `out of space`, lost
/// chunks read EIO (never new data) and refuse writes with ENOSPC, `update master` is refused
/// with ENOSPC; `update shadow` makes the set whole again and gives the space back.
#[test]
fn out_of_space_keeps_what_it_could_and_update_shadow_recovers() {
    let mut m = mount_or_skip!();
    const CH: u64 = 65536;
    let size = MIB; // 16 chunks; shadow 2 slots

    // (a) no overflow: 3 chunks written, 2 slots.
    let (master, shadow, _) = compact_set(
        &m,
        "full",
        size,
        2 * CH,
        5,
        "chunk_size=65536 durability=relaxed",
    );
    let pit = file_bytes(&master);
    assert_eq!(num(&m.status("full"), "shadow_chunks"), 2);
    for (i, c) in [0u64, 5, 9].iter().enumerate() {
        m.write_at(
            "sets/full/master",
            c * CH,
            &pattern(CH as usize, 500 + i as u64),
        );
    }
    assert_same(&m.read("sets/full/master"), &file_bytes(&master), "master");
    let st = m.status("full");
    assert_eq!(st["state"], "out of space", "{st:?}");
    assert_eq!(num(&st, "shadow_chunks_used"), 2, "{st:?}");
    assert_eq!(num(&st, "overflow_chunks_used"), 0, "{st:?}");
    let warn = st.get("space_warning").expect("a space warning at 100%");
    assert!(
        warn.starts_with("100%") && warn.contains("80%"),
        "space_warning: {warn}"
    );
    let global = String::from_utf8(m.read("status")).unwrap();
    assert!(global.contains("full compact out of space"), "{global}");
    assert!(m.log().contains("out of space"), "a log line says so");
    for c in [0u64, 5] {
        let got = pread(&m, "sets/full/shadow", c * CH, CH as usize)
            .unwrap_or_else(|e| panic!("shadow chunk {c}: {e}"));
        assert_same(
            &got,
            &pit[(c * CH) as usize..((c + 1) * CH) as usize],
            "kept",
        );
    }
    for c in [1u64, 4, 15] {
        let got = pread(&m, "sets/full/shadow", c * CH, CH as usize).unwrap();
        assert_same(
            &got,
            &pit[(c * CH) as usize..((c + 1) * CH) as usize],
            "unwritten",
        );
    }
    match pread(&m, "sets/full/shadow", 9 * CH, CH as usize) {
        Ok(b) => panic!(
            "the lost chunk 9 read {} (new data: {})",
            b.len(),
            b == file_bytes(&master)[(9 * CH) as usize..(10 * CH) as usize]
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    match pread(&m, "sets/full/shadow", 9 * CH + 100, 10) {
        Ok(_) => panic!("a part of the lost chunk read"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("sets/full/shadow"))
        .unwrap();
    let err = f.write_all_at(&[1u8; 512], 9 * CH).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    // A restart (clean, then SIGKILL) remembers what was lost: still out of space, the lost
    // chunk still fails (it must not read the master's new data), the kept ones still kept.
    for how in ["SIGTERM", "SIGKILL"] {
        if how == "SIGTERM" {
            m.restart();
        } else {
            m.kill9();
            m.start_again();
        }
        let st = m.status("full");
        assert_eq!(st["state"], "out of space", "after {how}: {st:?}");
        assert_eq!(num(&st, "shadow_chunks_used"), 2, "after {how}: {st:?}");
        for c in [0u64, 5, 1] {
            let got = pread(&m, "sets/full/shadow", c * CH, CH as usize)
                .unwrap_or_else(|e| panic!("after {how}: shadow chunk {c}: {e}"));
            assert_same(
                &got,
                &pit[(c * CH) as usize..((c + 1) * CH) as usize],
                &format!("after {how}: chunk {c}"),
            );
        }
        match pread(&m, "sets/full/shadow", 9 * CH, CH as usize) {
            Ok(b) => panic!(
                "after {how}: the lost chunk 9 reads (new data: {})",
                b == file_bytes(&master)[(9 * CH) as usize..(10 * CH) as usize]
            ),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "after {how}: {e}"),
        }
    }
    let reply = refused(&m, "sets/full/ctl", "update master", libc::ENOSPC);
    assert!(!reply.is_empty());
    assert_same(
        &file_bytes(&master),
        &m.read("sets/full/master"),
        "master kept",
    );
    assert_eq!(m.status("full")["state"], "out of space");

    let shadow_blocks = blocks(&shadow);
    assert!(
        shadow_blocks >= 2 * CH / 512,
        "2 slots written: {shadow_blocks}"
    );
    m.set_ok("full", "update shadow");
    let st = m.status("full");
    assert_eq!(st["state"], "idle", "{st:?}");
    assert_eq!(num(&st, "shadow_chunks_used"), 0, "{st:?}");
    assert!(!st.contains_key("space_warning"), "{st:?}");
    assert_same(&m.read("sets/full/shadow"), &file_bytes(&master), "updated");
    let now = blocks(&shadow);
    assert!(
        now + 2 * CH / 512 <= shadow_blocks,
        "du of the shadow shrinks: {shadow_blocks} -> {now} blocks"
    );

    // (b) shadow and overflow full.
    let (master, shadow, _) = compact_set(
        &m,
        "both",
        size,
        2 * CH,
        6,
        "chunk_size=65536 durability=relaxed",
    );
    let pit = file_bytes(&master);
    let ovf = overflow(&m, "small", 3 * CH, CH); // 2 data chunks
    assert_eq!(num(&ovf_status(&m, "small"), "chunks_total"), 2);
    m.set_ok("both", "attach small");
    let ovf_blocks_empty = blocks(&ovf);
    for (i, c) in [1u64, 3, 5, 7, 9].iter().enumerate() {
        m.write_at(
            "sets/both/master",
            c * CH,
            &pattern(CH as usize, 600 + i as u64),
        );
    }
    let st = m.status("both");
    assert_eq!(st["state"], "out of space", "{st:?}");
    assert_eq!(
        (
            num(&st, "shadow_chunks_used"),
            num(&st, "overflow_chunks_used")
        ),
        (2, 2),
        "{st:?}"
    );
    let ost = ovf_status(&m, "small");
    assert_eq!(
        (num(&ost, "chunks_used"), num(&ost, "chunks_free")),
        (2, 0),
        "{ost:?}"
    );
    for c in [0u64, 1, 3, 5, 7, 8, 10] {
        let got = pread(&m, "sets/both/shadow", c * CH, CH as usize)
            .unwrap_or_else(|e| panic!("shadow chunk {c}: {e}"));
        assert_same(
            &got,
            &pit[(c * CH) as usize..((c + 1) * CH) as usize],
            "kept",
        );
    }
    let err = pread(&m, "sets/both/shadow", 9 * CH, CH as usize).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    refused(&m, "sets/both/ctl", "update master", libc::ENOSPC);
    // copy master is update master on a dependent set: the lost chunk cannot be restored.
    let master_now = file_bytes(&master);
    refused(&m, "sets/both/ctl", "copy master", libc::ENOSPC);
    assert_same(&file_bytes(&master), &master_now, "the master is untouched");

    let (sb, ob) = (blocks(&shadow), blocks(&ovf));
    assert!(
        ob >= ovf_blocks_empty + 2 * CH / 512,
        "2 chunks spilled: {ovf_blocks_empty} -> {ob}"
    );
    m.set_ok("both", "update shadow");
    let st = m.status("both");
    assert_eq!(st["state"], "idle", "{st:?}");
    assert_eq!(used(&m, "both"), (0, 0));
    assert_eq!(num(&ovf_status(&m, "small"), "chunks_used"), 0);
    assert_same(&m.read("sets/both/shadow"), &file_bytes(&master), "updated");
    let (sa, oa) = (blocks(&shadow), blocks(&ovf));
    assert!(
        sa + 2 * CH / 512 <= sb,
        "du of the shadow shrinks: {sb} -> {sa}"
    );
    assert!(
        oa + 2 * CH / 512 <= ob,
        "du of the overflow shrinks: {ob} -> {oa}"
    );
    // And it works again: a write is preserved, no longer lost.
    let pit = file_bytes(&master);
    m.write_at("sets/both/master", 9 * CH, &pattern(100, 700));
    assert_same(&m.read("sets/both/shadow"), &pit, "after recovery");
    assert_eq!(m.status("both")["state"], "idle");
}

/// `copy shadow` on a compact set is an instant `update shadow`; the reply says so.
#[test]
fn copy_shadow_on_a_compact_set_is_an_update() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(
        &m,
        "cp",
        MIB,
        MIB / 8,
        7,
        "chunk_size=4096 durability=relaxed",
    );
    for c in 0..20u64 {
        m.write_at("sets/cp/master", c * 9 * CH, &pattern(200, 800 + c));
    }
    assert_eq!(used(&m, "cp"), (20, 0));
    let (r, reply) = reply_of(&m, "sets/cp/ctl", "copy shadow");
    assert_eq!(r, Ok(()), "copy shadow refused: {reply:?}");
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines.first(), Some(&"ok"), "{reply:?}");
    assert!(
        lines.len() >= 2 && lines[1].to_lowercase().contains("update"),
        "a second line says it was an update: {reply:?}"
    );
    let st = m.status("cp");
    assert_eq!(st["state"], "idle", "no copy runs: {st:?}");
    assert_eq!(used(&m, "cp"), (0, 0));
    m.set_ok("cp", "wait");
    assert_same(&m.read("sets/cp/shadow"), &file_bytes(&master), "updated");
}

/// A clean restart, then a SIGKILL, keep a compact set with an overflow as it was.
#[test]
fn restart_keeps_a_compact_set_with_its_overflow() {
    let mut m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(&m, "r", MIB, MIB / 8, 8, "chunk_size=4096");
    overflow(&m, "rpool", MIB, CH);
    m.set_ok("r", "attach rpool");
    let pit = file_bytes(&master);
    let mut t = BTreeSet::new();
    for c in 0..60u64 {
        write_master(
            &m,
            "r",
            c * 4 * CH + 11,
            &pattern(3000, 900 + c),
            CH,
            &mut t,
        );
    }
    let n = t.len() as u64;
    assert_eq!(used(&m, "r"), (32, n - 32));
    let set_before = set_text(&m, "r");
    let ovf_before = ovf_text(&m, "rpool");
    assert_same(&m.read("sets/r/shadow"), &pit, "before restart");

    for how in ["SIGTERM", "SIGKILL"] {
        if how == "SIGTERM" {
            m.restart();
        } else {
            m.kill9();
            m.start_again();
        }
        assert_same(&m.read("sets/r/shadow"), &pit, &format!("after {how}"));
        assert_same(&m.read("sets/r/master"), &file_bytes(&master), "master");
        assert_eq!(set_text(&m, "r"), set_before, "set status after {how}");
        assert_eq!(
            ovf_text(&m, "rpool"),
            ovf_before,
            "overflow status after {how}"
        );
        assert!(m.path("sets/r/overflow").exists(), "after {how}");
    }

    // It goes on working: more spills, then an update frees everything.
    for c in 0..20u64 {
        write_master(
            &m,
            "r",
            (c * 4 + 2) * CH,
            &pattern(100, 990 + c),
            CH,
            &mut t,
        );
    }
    let n = t.len() as u64;
    assert_eq!(used(&m, "r"), (32, n - 32));
    assert_eq!(num(&ovf_status(&m, "rpool"), "chunks_used"), n - 32);
    assert_same(&m.read("sets/r/shadow"), &pit, "after more writes");
    m.set_ok("r", "update shadow");
    assert_eq!(num(&ovf_status(&m, "rpool"), "chunks_used"), 0);
    m.restart();
    assert_eq!(used(&m, "r"), (0, 0));
    assert_eq!(num(&ovf_status(&m, "rpool"), "chunks_used"), 0);
    assert_same(&m.read("sets/r/shadow"), &file_bytes(&master), "updated");
}

const KSIZE: u64 = 16 * MIB;
const KCH: u64 = 4 * KIB; // 4096 chunks; shadows of 64 slots (1/64): most writes spill

fn crash_rounds() -> u64 {
    std::env::var("IIFS_COMPACT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
        .max(10)
}

/// Hammer a master with writes until stopped or the mount dies.
fn hammer(path: PathBuf, seed: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let Ok(f) = OpenOptions::new().write(true).open(&path) else {
        return;
    };
    let mut x = seed | 1;
    while !stop.load(Ordering::SeqCst) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 512 + (x % 8192) as usize;
        let off = (x >> 20) % (KSIZE - len as u64);
        match f.write_all_at(&pattern(len, x), off) {
            Ok(()) => {
                done.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// SIGKILL while writes spill into a shared overflow: after each restart every shadow reads
/// its point in time and the overflow's count is the sum of the sets' counts.
#[test]
fn sigkill_while_spilling_keeps_points_in_time_and_overflow_counts() {
    let mut m = mount_or_skip!();
    let names = ["k1", "k2"];
    let mut masters = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let (master, _, _) =
            compact_set(&m, n, KSIZE, KSIZE / 64, 20 + i as u64, "chunk_size=4096");
        masters.push(master);
    }
    // Room for both sets' every chunk: never out of space.
    overflow(&m, "kpool", 2 * KSIZE, KCH);
    for n in names {
        m.set_ok(n, "attach kpool");
    }
    let mut pits: Vec<Vec<u8>> = masters.iter().map(|p| file_bytes(p)).collect();
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("sigkill test seed {rng}");
    let mut max_spilled = 0;
    let mut total = 0;
    for round in 0..crash_rounds() {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (p, s, d) = (
                    m.path(&format!("sets/{n}/master")),
                    stop.clone(),
                    done.clone(),
                );
                let seed = rng ^ (round * 131 + i as u64 + 1);
                std::thread::spawn(move || hammer(p, seed, s, d))
            })
            .collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(20 + rng % 300));
        m.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            let _ = w.join();
        }
        let n_writes = done.load(Ordering::SeqCst);
        total += n_writes;
        m.start_again();
        assert_eq!(m.set_names(), vec!["k1".to_string(), "k2".to_string()]);
        let mut sum = 0;
        for (i, n) in names.iter().enumerate() {
            let st = m.status(n);
            assert_eq!(st["state"], "idle", "round {round}: {st:?}");
            assert_eq!(st["overflow"], "kpool", "round {round}: {st:?}");
            let shadow = m.read(&format!("sets/{n}/shadow"));
            for c in 0..KSIZE / KCH {
                let r = (c * KCH) as usize..((c + 1) * KCH) as usize;
                assert!(
                    shadow[r.clone()] == pits[i][r.clone()],
                    "round {round} ({n_writes} writes): set {n} chunk {c} is not its point in time"
                );
            }
            let master_now = file_bytes(&masters[i]);
            assert_same(
                &m.read(&format!("sets/{n}/master")),
                &master_now,
                "master file shows the backing file",
            );
            let differ = (0..KSIZE / KCH)
                .filter(|c| {
                    let r = (c * KCH) as usize..((c + 1) * KCH) as usize;
                    master_now[r.clone()] != pits[i][r]
                })
                .count() as u64;
            let (s, o) = (
                num(&st, "shadow_chunks_used"),
                num(&st, "overflow_chunks_used"),
            );
            assert!(
                s + o >= differ,
                "round {round}: set {n} holds {s}+{o} chunks but {differ} differ from the point in time"
            );
            assert!(s <= KSIZE / 64 / KCH, "round {round}: {st:?}");
            sum += o;
        }
        let ost = ovf_status(&m, "kpool");
        let used_now = num(&ost, "chunks_used");
        assert_eq!(
            used_now, sum,
            "round {round}: overflow chunks_used is the sum of the sets' overflow_chunks_used: {ost:?}"
        );
        assert_eq!(
            used_now + num(&ost, "chunks_free"),
            num(&ost, "chunks_total"),
            "round {round}: {ost:?}"
        );
        let per_set = ovf_sets(&ost);
        for n in names {
            let o = num(&m.status(n), "overflow_chunks_used");
            assert_eq!(
                per_set.get(n).copied().unwrap_or(0),
                o,
                "round {round}: {ost:?}"
            );
        }
        eprintln!(
            "round {round}: {n_writes} writes before the kill; overflow chunks_used {used_now}"
        );
        max_spilled = max_spilled.max(used_now);
        // New points in time so that the next round spills again: k1 every round, k2 every
        // third round (its point in time lives through several kills).
        m.set_ok("k1", "update shadow");
        pits[0] = file_bytes(&masters[0]);
        if round % 3 == 2 {
            m.set_ok("k2", "update shadow");
            pits[1] = file_bytes(&masters[1]);
        }
    }
    assert!(total > 50, "the writers did work ({total} writes)");
    assert!(max_spilled > 0, "writes spilled into the overflow");
    for n in names {
        m.set_ok(n, "update shadow");
    }
    let ost = ovf_status(&m, "kpool");
    assert_eq!(num(&ost, "chunks_used"), 0, "{ost:?}");
    assert!(ovf_sets(&ost).is_empty(), "{ost:?}");
}

/// Writes to a compact shadow take slots too (in the overflow once the shadow is full); a
/// later master write to a chunk the shadow wrote does not touch the shadow's data.
#[test]
fn writes_to_a_compact_shadow_are_kept_in_slots() {
    let mut m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(&m, "w", MIB, MIB / 8, 30, "chunk_size=4096");
    overflow(&m, "wpool", MIB, CH);
    m.set_ok("w", "attach wpool");
    let pit = file_bytes(&master);
    let mut shadow = pit.clone();
    let mut touched = BTreeSet::new();
    let shadow_write = |m: &Mount, off: u64, data: &[u8], shadow: &mut Vec<u8>| {
        m.write_at("sets/w/shadow", off, data);
        shadow[off as usize..off as usize + data.len()].copy_from_slice(data);
    };
    // A shadow write to an untouched chunk: the master is not changed.
    shadow_write(&m, 10 * CH + 50, &pattern(100, 1), &mut shadow);
    touched.insert(10);
    assert_same(&m.read("sets/w/shadow"), &shadow, "shadow write");
    assert_same(&file_bytes(&master), &pit, "the master is untouched");
    assert_eq!(used(&m, "w"), (1, 0));
    // The master written there afterwards: the shadow keeps its own data.
    write_master(&m, "w", 10 * CH, &pattern(CH as usize, 2), CH, &mut touched);
    assert_same(&m.read("sets/w/shadow"), &shadow, "after the master write");
    assert_eq!(used(&m, "w"), (1, 0));
    // The other order: master first, then the shadow patches the preserved chunk.
    write_master(&m, "w", 11 * CH, &pattern(CH as usize, 3), CH, &mut touched);
    shadow_write(&m, 11 * CH + 4000, &pattern(200, 4), &mut shadow); // across into 12
    touched.insert(12);
    assert_same(&m.read("sets/w/shadow"), &shadow, "patched preserved chunk");
    assert_eq!(used(&m, "w"), (3, 0));
    // Fill the shadow's slots from the master, then shadow writes spill into the overflow.
    for c in 20..60u64 {
        write_master(&m, "w", c * CH + 9, &pattern(10, 100 + c), CH, &mut touched);
    }
    for c in [25u64, 55, 70, 71, 200] {
        shadow_write(&m, c * CH + 1, &pattern(4000, 200 + c), &mut shadow);
        touched.insert(c);
    }
    let n = touched.len() as u64;
    assert_eq!(used(&m, "w"), (32, n - 32));
    assert_same(&m.read("sets/w/shadow"), &shadow, "with spills");
    for c in [70u64, 71, 200] {
        write_master(
            &m,
            "w",
            c * CH,
            &pattern(CH as usize, 300 + c),
            CH,
            &mut touched,
        );
    }
    assert_same(
        &m.read("sets/w/shadow"),
        &shadow,
        "master writes after shadow writes",
    );
    assert_same(&m.read("sets/w/master"), &file_bytes(&master), "master");
    m.kill9();
    m.start_again();
    assert_same(&m.read("sets/w/shadow"), &shadow, "after SIGKILL");
    assert_eq!(used(&m, "w"), (32, n - 32));
    // update master makes the master the shadow's image.
    m.set_ok("w", "update master");
    m.set_ok("w", "wait");
    assert_same(&file_bytes(&master), &shadow, "update master");
    assert_same(
        &m.read("sets/w/shadow"),
        &shadow,
        "the shadow after update master",
    );
    assert_eq!(m.status("w")["state"], "idle");
}

/// A punched hole on a compact master (mkfs and fstrim send them) is a write of zeros: the old
/// chunks are preserved first.
#[test]
fn a_hole_punched_in_a_compact_master_is_preserved_first() {
    use std::os::unix::io::AsRawFd;
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(
        &m,
        "h",
        MIB,
        MIB / 8,
        31,
        "chunk_size=4096 durability=relaxed",
    );
    overflow(&m, "hpool", MIB, CH);
    m.set_ok("h", "attach hpool");
    let pit = file_bytes(&master);
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("sets/h/master"))
        .unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // 100 chunks and a ragged tail: more than the shadow's 32 slots.
    // SAFETY: fallocate on an open descriptor with plain integer arguments.
    let rc =
        unsafe { libc::fallocate(f.as_raw_fd(), mode, (CH * 3) as i64, (CH * 100 + 10) as i64) };
    assert_eq!(rc, 0, "punch: {}", std::io::Error::last_os_error());
    drop(f);
    let mut expected = pit.clone();
    expected[(3 * CH) as usize..(103 * CH + 10) as usize].fill(0);
    assert_same(
        &file_bytes(&master),
        &expected,
        "the master reads zeros in the hole",
    );
    assert_same(
        &m.read("sets/h/shadow"),
        &pit,
        "the shadow keeps the point in time",
    );
    let (s, o) = used(&m, "h");
    assert_eq!((s, o), (32, 101 - 32), "101 chunks preserved");
    assert_eq!(m.status("h")["state"], "idle");
}

/// The `space_warning` setting (`-o space_warning=N`): the status line appears once usage
/// reaches N percent of the shadow's slots.
#[test]
fn space_warning_follows_the_setting() {
    let m = mount_or_skip!("space_warning=50");
    const CH: u64 = 4096;
    compact_set(
        &m,
        "sw",
        MIB,
        MIB / 8,
        32,
        "chunk_size=4096 durability=relaxed",
    );
    for c in 0..15u64 {
        m.write_at("sets/sw/master", c * 2 * CH, &[1u8; 10]);
    }
    let st = m.status("sw");
    assert_eq!(num(&st, "shadow_chunks_used"), 15);
    assert!(
        !st.contains_key("space_warning"),
        "15 of 32 is below 50%: {st:?}"
    );
    m.write_at("sets/sw/master", 100 * CH, &[1u8; 10]);
    let st = m.status("sw");
    let w = st
        .get("space_warning")
        .unwrap_or_else(|| panic!("16 of 32 is 50%: {st:?}"));
    assert!(
        w.starts_with("50%") && w.contains("warning at 50%"),
        "space_warning: {w}"
    );
}

/// Read every chunk of a shadow with its own pread: Ok(bytes) or the errno.
fn shadow_chunks(m: &Mount, set: &str, size: u64, ch: u64) -> Vec<Result<Vec<u8>, i32>> {
    (0..size / ch)
        .map(|c| {
            pread(m, &format!("sets/{set}/shadow"), c * ch, ch as usize)
                .map_err(|e| e.raw_os_error().unwrap_or(0))
        })
        .collect()
}

/// Random writes, many across chunk boundaries, far past the space of a small shadow and
/// overflow: every shadow chunk reads its point in time or fails with EIO, never new data;
/// exactly the chunks beyond the space are lost; the same after a SIGKILL and restart.
#[test]
fn past_the_space_every_chunk_is_its_point_in_time_or_eio() {
    let mut m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = MIB; // 256 chunks, 32 slots
    let (master, _, _) = compact_set(&m, "p", size, size / 8, 40, "chunk_size=4096");
    overflow(&m, "ppool", 17 * CH, CH); // 16 data chunks
    m.set_ok("p", "attach ppool");
    let pit = file_bytes(&master);
    let mut touched = BTreeSet::new();
    let mut x = 0x1234_5678_9abc_def1u64;
    for i in 0..120u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % (3 * CH)) as usize;
        let off = (x >> 24) % (size - len as u64);
        write_master(&m, "p", off, &pattern(len, 1000 + i), CH, &mut touched);
    }
    let n = touched.len() as u64;
    assert!(n > 48, "{n} chunks touched");
    let check = |m: &Mount, when: &str| {
        let st = m.status("p");
        assert_eq!(st["state"], "out of space", "{when}: {st:?}");
        assert_eq!(
            (
                num(&st, "shadow_chunks_used"),
                num(&st, "overflow_chunks_used")
            ),
            (32, 16),
            "{when}: {st:?}"
        );
        let now = file_bytes(&master);
        let mut lost = 0;
        for (c, r) in shadow_chunks(m, "p", size, CH).into_iter().enumerate() {
            let range = c * CH as usize..(c + 1) * CH as usize;
            match r {
                Ok(b) => assert!(
                    b == pit[range.clone()],
                    "{when}: chunk {c} reads neither its point in time nor EIO (new data: {})",
                    b == now[range]
                ),
                Err(e) => {
                    assert_eq!(e, libc::EIO, "{when}: chunk {c}");
                    assert!(
                        touched.contains(&(c as u64)),
                        "{when}: untouched chunk {c} fails"
                    );
                    lost += 1;
                }
            }
        }
        assert_eq!(
            lost,
            n - 48,
            "{when}: the chunks beyond the 48 slots are lost"
        );
    };
    check(&m, "after the writes");
    m.kill9();
    m.start_again();
    check(&m, "after SIGKILL");
    m.set_ok("p", "update shadow");
    assert_same(&m.read("sets/p/shadow"), &file_bytes(&master), "updated");
    assert_eq!(used(&m, "p"), (0, 0));
    assert_eq!(num(&ovf_status(&m, "ppool"), "chunks_used"), 0);
}

/// Many threads writing the same few chunks of a compact master at once: each chunk takes
/// one slot and keeps its point in time (not another thread's data).
#[test]
fn concurrent_writers_to_the_same_chunks_take_one_slot_each() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(&m, "cc", MIB, MIB / 8, 41, "chunk_size=4096");
    overflow(&m, "ccpool", MIB, CH);
    m.set_ok("cc", "attach ccpool");
    for round in 0..3u64 {
        let pit = file_bytes(&master);
        let base = round * 80;
        let path = m.path("sets/cc/master");
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let f = OpenOptions::new().write(true).open(&path).unwrap();
                    for k in 0..60u64 {
                        // Every thread walks the same 60 chunks, from a different start,
                        // with writes of 1..3 chunks.
                        let c = base + (k + t * 7) % 60;
                        let len = CH as usize * (1 + (k % 3) as usize) - 17;
                        f.write_all_at(&pattern(len, t * 1000 + k + 1), c * CH + 17)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let touched = (base..base + 62).count() as u64;
        assert_same(&m.read("sets/cc/shadow"), &pit, &format!("round {round}"));
        let (s, o) = used(&m, "cc");
        assert_eq!(s + o, touched, "round {round}: one slot per chunk");
        assert_eq!(num(&ovf_status(&m, "ccpool"), "chunks_used"), o);
        m.set_ok("cc", "update shadow");
    }
}

/// Two compact sets on one master share an overflow: a master write is preserved for both.
#[test]
fn two_compact_sets_on_one_master_each_keep_their_point_in_time() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let master = m.volume("m.img", MIB, 42);
    let mut paths = Vec::new();
    for n in ["x", "y"] {
        let s = m.volume(&format!("s-{n}.img"), MIB / 8, 0);
        let b = m.volume(&format!("b-{n}.img"), 0, 0);
        paths.push((s, b));
    }
    m.ok(
        "ctl",
        &format!(
            "enable dep {master} {} {} x chunk_size=4096",
            paths[0].0, paths[0].1
        ),
    );
    let pit_x = file_bytes(&master);
    let mut tx = BTreeSet::new();
    for c in 0..20u64 {
        write_master(&m, "x", c * 3 * CH, &pattern(500, 50 + c), CH, &mut tx);
    }
    m.ok(
        "ctl",
        &format!(
            "enable dep {master} {} {} y chunk_size=4096",
            paths[1].0, paths[1].1
        ),
    );
    assert_eq!(m.status("y")["type"], "compact");
    let pit_y = file_bytes(&master);
    overflow(&m, "xy", MIB, CH);
    m.set_ok("x", "attach xy");
    m.set_ok("y", "attach xy");
    let mut ty = BTreeSet::new();
    for c in 0..40u64 {
        // Through y's master file: both sets are protected.
        m.write_at("sets/y/master", c * 2 * CH + 5, &pattern(700, 80 + c));
        tx.insert(c * 2);
        ty.insert(c * 2);
    }
    let (nx, ny) = (tx.len() as u64, ty.len() as u64);
    assert_eq!(used(&m, "x"), (32, nx - 32));
    assert_eq!(used(&m, "y"), (32, ny - 32));
    let ost = ovf_status(&m, "xy");
    assert_eq!(num(&ost, "chunks_used"), nx + ny - 64, "{ost:?}");
    assert_eq!(
        ovf_sets(&ost),
        BTreeMap::from([("x".to_string(), nx - 32), ("y".to_string(), ny - 32)]),
        "{ost:?}"
    );
    assert_same(&m.read("sets/x/shadow"), &pit_x, "x");
    assert_same(&m.read("sets/y/shadow"), &pit_y, "y");
    m.set_ok("y", "update shadow");
    assert_same(&m.read("sets/x/shadow"), &pit_x, "x after y's update");
    assert_eq!(num(&ovf_status(&m, "xy"), "chunks_used"), nx - 32);
}

/// Disabling a compact set gives its overflow chunks back.
#[test]
fn disable_of_a_compact_set_frees_its_overflow_chunks() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let opts = "chunk_size=4096 durability=relaxed";
    compact_set(&m, "da", MIB, MIB / 8, 43, opts);
    let (mb, _, _) = compact_set(&m, "db", MIB, MIB / 8, 44, opts);
    overflow(&m, "dpool", MIB, CH);
    m.set_ok("da", "attach dpool");
    m.set_ok("db", "attach dpool");
    let pit_b = file_bytes(&mb);
    for c in 0..50u64 {
        m.write_at("sets/da/master", c * 4 * CH, &[7u8; 64]);
    }
    for c in 0..40u64 {
        m.write_at("sets/db/master", c * 4 * CH, &[8u8; 64]);
    }
    assert_eq!(num(&ovf_status(&m, "dpool"), "chunks_used"), 18 + 8);
    m.set_ok("da", "disable");
    let ost = ovf_status(&m, "dpool");
    assert_eq!(
        num(&ost, "chunks_used"),
        8,
        "da's 18 chunks are free again: {ost:?}"
    );
    assert_eq!(
        ovf_sets(&ost),
        BTreeMap::from([("db".to_string(), 8)]),
        "{ost:?}"
    );
    assert_same(&m.read("sets/db/shadow"), &pit_b, "db untouched");
    // The space is usable again: db spills into it.
    for c in 100..150u64 {
        m.write_at("sets/db/master", c * CH + 1, &[9u8; 64]);
    }
    let ost = ovf_status(&m, "dpool");
    assert_eq!(
        num(&ost, "chunks_used"),
        num(&m.status("db"), "overflow_chunks_used")
    );
    assert_same(&m.read("sets/db/shadow"), &pit_b, "db");
}

/// One set filling a shared overflow puts another that needs it out of space; the first
/// one's update frees room, but what the second lost stays lost until its own update.
#[test]
fn a_full_shared_overflow_puts_the_other_set_out_of_space() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let opts = "chunk_size=4096 durability=relaxed";
    let (ma, _, _) = compact_set(&m, "fa", MIB, 4 * CH, 45, opts);
    let (mb, _, _) = compact_set(&m, "fb", MIB, 4 * CH, 46, opts);
    overflow(&m, "fpool", 11 * CH, CH); // 10 data chunks
    m.set_ok("fa", "attach fpool");
    m.set_ok("fb", "attach fpool");
    let (pit_a, pit_b) = (file_bytes(&ma), file_bytes(&mb));
    for c in 0..14u64 {
        m.write_at("sets/fa/master", c * CH, &[1u8; 10]);
    }
    assert_eq!(used(&m, "fa"), (4, 10));
    assert_eq!(
        m.status("fa")["state"],
        "idle",
        "exactly full is not out of space"
    );
    for c in 0..5u64 {
        m.write_at("sets/fb/master", c * CH, &[2u8; 10]);
    }
    let st = m.status("fb");
    assert_eq!(st["state"], "out of space", "{st:?}");
    assert_eq!(used(&m, "fb"), (4, 0));
    assert_eq!(m.status("fa")["state"], "idle");
    assert_same(&m.read("sets/fa/shadow"), &pit_a, "fa is whole");
    assert_eq!(
        pread(&m, "sets/fb/shadow", 4 * CH, CH as usize)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    m.set_ok("fa", "update shadow");
    assert_eq!(num(&ovf_status(&m, "fpool"), "chunks_used"), 0);
    // fb's lost chunk stays lost (no new data), its new writes spill again.
    let err = pread(&m, "sets/fb/shadow", 4 * CH, CH as usize).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    m.write_at("sets/fb/master", 9 * CH, &[3u8; 10]);
    let got = pread(&m, "sets/fb/shadow", 9 * CH, CH as usize).unwrap();
    assert_same(
        &got,
        &pit_b[(9 * CH) as usize..(10 * CH) as usize],
        "spilled",
    );
    assert_eq!(m.status("fb")["state"], "out of space");
    m.set_ok("fb", "update shadow");
    assert_eq!(m.status("fb")["state"], "idle");
    assert_same(&m.read("sets/fb/shadow"), &file_bytes(&mb), "fb updated");
}

fn iiadm(m: &Mount, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iiadm"))
        .args(args)
        .env("IIFS_MOUNT", &m.mnt)
        .env_remove("IIADM_SSH")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run iiadm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// iiadm's overflow words: -O, -A, -Q, -L, -D, -Z write the commands and show the status.
#[test]
fn iiadm_initialises_attaches_shows_and_deletes_overflows() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    compact_set(
        &m,
        "ia",
        MIB,
        MIB / 8,
        50,
        "chunk_size=4096 durability=relaxed",
    );
    let vol = m.volume("pool.img", MIB + CH, 0);
    let (ok, out, err) = iiadm(&m, &["-O", &vol, "ipool", "--chunk-size", "4096"]);
    assert!(ok, "-O: {out} {err}");
    assert_eq!(num(&ovf_status(&m, "ipool"), "chunk_size"), CH);
    let (ok, out, err) = iiadm(&m, &["-A", "ia", "ipool"]);
    assert!(ok, "-A: {out} {err}");
    assert_eq!(m.status("ia")["overflow"], "ipool");
    for c in 0..40u64 {
        m.write_at("sets/ia/master", c * 2 * CH, &[4u8; 8]);
    }
    let (ok, out, err) = iiadm(&m, &["-Q", "ipool"]);
    assert!(ok, "-Q: {out} {err}");
    assert!(
        out.contains("chunks_used") && out.contains('8') && out.contains("ia"),
        "-Q: {out}"
    );
    let (ok, out, err) = iiadm(&m, &["-L"]);
    assert!(ok, "-L: {out} {err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("ipool "))
        .unwrap_or_else(|| panic!("-L lists ipool: {out}"));
    assert!(
        line.contains(&vol) && line.contains("8/256") && line.contains("ia"),
        "-L: {line}"
    );
    let (ok, out, err) = iiadm(&m, &["-D", "ia"]);
    assert!(!ok, "-D of an overflow in use succeeded: {out}");
    assert!(!err.trim().is_empty(), "-D says why");
    assert_eq!(m.status("ia")["overflow"], "ipool");
    let (ok, _, err) = iiadm(&m, &["-Z", "ipool"]);
    assert!(!ok, "-Z of an overflow in use succeeded: {err}");
    m.set_ok("ia", "update shadow");
    let (ok, out, err) = iiadm(&m, &["-D", "ia"]);
    assert!(ok, "-D: {out} {err}");
    assert_eq!(m.status("ia")["overflow"], "-");
    let (ok, out, err) = iiadm(&m, &["-Z", "ipool"]);
    assert!(ok, "-Z: {out} {err}");
    assert_gone(&m, "overflow/ipool/status");
}

/// Readers of a compact shadow while writers spill into the overflow: every read, at any
/// moment, gives the point in time (a chunk is never read from the master mid-preserve).
#[test]
fn shadow_reads_during_spills_always_give_the_point_in_time() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = 4 * MIB;
    let (master, _, _) = compact_set(&m, "rd", size, size / 16, 60, "chunk_size=4096");
    overflow(&m, "rdpool", size, CH);
    m.set_ok("rd", "attach rdpool");
    for round in 0..3u64 {
        let pit = Arc::new(file_bytes(&master));
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicU64::new(u64::MAX));
        let reads = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..3u64)
            .map(|r| {
                let (p, pit, stop, bad, reads) = (
                    m.path("sets/rd/shadow"),
                    pit.clone(),
                    stop.clone(),
                    bad.clone(),
                    reads.clone(),
                );
                std::thread::spawn(move || {
                    let f = File::open(&p).unwrap();
                    let mut x = (r + 1) * 0x9E37_79B9 + round;
                    let mut buf = vec![0u8; 3 * CH as usize];
                    while !stop.load(Ordering::SeqCst) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let off = (x % (size / CH - 3)) * CH;
                        f.read_exact_at(&mut buf, off).unwrap();
                        if buf[..] != pit[off as usize..off as usize + buf.len()] {
                            bad.store(off, Ordering::SeqCst);
                        }
                        reads.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let p = m.path("sets/rd/master");
                std::thread::spawn(move || {
                    let f = OpenOptions::new().write(true).open(&p).unwrap();
                    for k in 0..300u64 {
                        let c = (k * 13 + w * 500 + round * 7) % (size / CH);
                        f.write_all_at(&pattern(2000, k + w * 1000 + 1), c * CH + 1000)
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            r.join().unwrap();
        }
        let b = bad.load(Ordering::SeqCst);
        assert!(
            b == u64::MAX,
            "round {round}: a shadow read at {b} did not give the point in time ({} reads)",
            reads.load(Ordering::SeqCst)
        );
        assert_same(&m.read("sets/rd/shadow"), &pit, "after the writes");
        m.set_ok("rd", "update shadow");
    }
}

/// SIGKILL while writes run a compact set out of space: after each restart every shadow
/// chunk reads its point in time or EIO (a lost chunk never shows the master's new data).
#[test]
fn sigkill_while_running_out_of_space_never_shows_new_data() {
    let mut m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = 4 * MIB; // 1024 chunks; 16 slots in the shadow, 16 in the overflow
    let (master, _, _) = compact_set(&m, "os", size, 16 * CH, 61, "chunk_size=4096");
    overflow(&m, "ospool", 17 * CH, CH);
    m.set_ok("os", "attach ospool");
    let mut pit = file_bytes(&master);
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("out-of-space sigkill seed {rng}");
    let mut saw_lost = false;
    for round in 0..16u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let p = m.path("sets/os/master");
        let s = stop.clone();
        let seed = rng;
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        let writer = std::thread::spawn(move || {
            let Ok(f) = OpenOptions::new().write(true).open(&p) else {
                return;
            };
            let mut x = seed;
            while !s.load(Ordering::SeqCst) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x >> 12) % (size - 6000);
                if f.write_all_at(&pattern(5000, x), off).is_err() {
                    return;
                }
                d.fetch_add(1, Ordering::SeqCst);
            }
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kill after a random number of writes (about 15 fill the 32 slots), however fast
        // the machine, then a random moment more.
        let target = rng % 30;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < target && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros((rng >> 8) % 3000));
        m.kill9();
        stop.store(true, Ordering::SeqCst);
        let _ = writer.join();
        m.start_again();
        let now = file_bytes(&master);
        let mut lost = 0u64;
        for (c, r) in shadow_chunks(&m, "os", size, CH).into_iter().enumerate() {
            let range = c * CH as usize..(c + 1) * CH as usize;
            match r {
                Ok(b) => assert!(
                    b == pit[range.clone()],
                    "round {round}: chunk {c} reads neither its point in time nor EIO (new data: {})",
                    b == now[range]
                ),
                Err(e) => {
                    assert_eq!(e, libc::EIO, "round {round}: chunk {c}");
                    lost += 1;
                }
            }
        }
        let st = m.status("os");
        let (s_used, o_used) = (
            num(&st, "shadow_chunks_used"),
            num(&st, "overflow_chunks_used"),
        );
        if lost > 0 {
            saw_lost = true;
            assert_eq!(st["state"], "out of space", "round {round}: {st:?}");
            assert_eq!((s_used, o_used), (16, 16), "round {round}: {st:?}");
        }
        assert_eq!(
            num(&ovf_status(&m, "ospool"), "chunks_used"),
            o_used,
            "round {round}"
        );
        if round % 2 == 1 {
            m.set_ok("os", "update shadow");
            assert_eq!(m.status("os")["state"], "idle");
            pit = file_bytes(&master);
        }
    }
    assert!(saw_lost, "some round ran out of space");
}

/// The overflow volume gone at a restart: the set's shadow never reads wrong data for the
/// chunks it held there (it is offline or those reads fail); with the volume back and another
/// restart the set is whole again.
#[test]
fn an_overflow_volume_missing_at_start_never_gives_wrong_shadow_data() {
    let mut m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(&m, "mo", MIB, MIB / 8, 70, "chunk_size=4096");
    let ovf = overflow(&m, "mopool", MIB, CH);
    m.set_ok("mo", "attach mopool");
    let pit = file_bytes(&master);
    for c in 0..60u64 {
        m.write_at("sets/mo/master", c * 4 * CH, &pattern(CH as usize, 700 + c));
    }
    assert_eq!(used(&m, "mo"), (32, 28));
    let set_before = set_text(&m, "mo");
    let ovf_before = ovf_text(&m, "mopool");
    m.stop();
    let aside = format!("{ovf}.aside");
    fs::rename(&ovf, &aside).unwrap();
    m.start_again();
    let names = m.set_names();
    assert_eq!(names, vec!["mo".to_string()], "the set is still listed");
    let st = m.status("mo");
    assert_eq!(st["state"], "offline", "{st:?}");
    if m.path("sets/mo/shadow").exists() {
        let now = file_bytes(&master);
        for (c, r) in shadow_chunks(&m, "mo", MIB, CH).into_iter().enumerate() {
            let range = c * CH as usize..(c + 1) * CH as usize;
            if let Ok(b) = r {
                assert!(
                    b == pit[range.clone()],
                    "chunk {c} reads wrong data without its overflow (new data: {})",
                    b == now[range]
                );
            }
        }
    }
    // Master writes go on or are refused, but never lose the point in time for good.
    let _ = OpenOptions::new()
        .write(true)
        .open(m.path("sets/mo/master"))
        .and_then(|f| f.write_all_at(&[9u8; 100], 250 * CH));
    m.stop();
    fs::rename(&aside, &ovf).unwrap();
    m.start_again();
    assert_same(&m.read("sets/mo/shadow"), &pit, "whole again");
    let st = set_text(&m, "mo");
    if file_bytes(&master)[(250 * CH) as usize] != 9 {
        assert_eq!(st, set_before, "nothing written: the status is as before");
        assert_eq!(ovf_text(&m, "mopool"), ovf_before);
    }
}

/// `update shadow` again and again while writers spill into a shared overflow: the counts
/// stay consistent, and once all is quiet an update frees every overflow chunk (none leak)
/// and gives the space back.
#[test]
fn updates_racing_with_spills_leak_no_overflow_chunks() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = 2 * MIB;
    let opts = "chunk_size=4096 durability=relaxed";
    let (ma, _, _) = compact_set(&m, "ua", size, size / 32, 80, opts);
    let (mb, _, _) = compact_set(&m, "ub", size, size / 32, 81, opts);
    let ovf = overflow(&m, "upool", 2 * size + CH, CH);
    m.set_ok("ua", "attach upool");
    m.set_ok("ub", "attach upool");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = ["ua", "ub"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (p, s) = (m.path(&format!("sets/{n}/master")), stop.clone());
            std::thread::spawn(move || {
                let f = OpenOptions::new().write(true).open(&p).unwrap();
                let mut x = 77 + i as u64;
                while !s.load(Ordering::SeqCst) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let len = 100 + (x % 10_000) as usize;
                    let off = (x >> 16) % (size - len as u64);
                    f.write_all_at(&pattern(len, x), off).unwrap();
                }
            })
        })
        .collect();
    for k in 0..40 {
        std::thread::sleep(Duration::from_millis(5));
        m.set_ok(if k % 2 == 0 { "ua" } else { "ub" }, "update shadow");
        if k % 5 == 0 {
            let ost = ovf_status(&m, "upool");
            assert_eq!(
                num(&ost, "chunks_used") + num(&ost, "chunks_free"),
                num(&ost, "chunks_total"),
                "{ost:?}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let ost = ovf_status(&m, "upool");
    let (oa, ob) = (used(&m, "ua").1, used(&m, "ub").1);
    assert_eq!(num(&ost, "chunks_used"), oa + ob, "{ost:?}");
    assert_eq!(
        ovf_sets(&ost),
        [("ua", oa), ("ub", ob)]
            .into_iter()
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| (n.to_string(), c))
            .collect::<BTreeMap<_, _>>(),
        "{ost:?}"
    );
    m.set_ok("ua", "update shadow");
    m.set_ok("ub", "update shadow");
    assert_eq!(used(&m, "ua"), (0, 0));
    assert_eq!(used(&m, "ub"), (0, 0));
    let ost = ovf_status(&m, "upool");
    assert_eq!(
        num(&ost, "chunks_used"),
        0,
        "no overflow chunk leaked: {ost:?}"
    );
    assert_eq!(
        num(&ost, "chunks_free"),
        num(&ost, "chunks_total"),
        "{ost:?}"
    );
    assert_same(&m.read("sets/ua/shadow"), &file_bytes(&ma), "ua");
    assert_same(&m.read("sets/ub/shadow"), &file_bytes(&mb), "ub");
    let b = blocks(&ovf);
    assert!(
        b <= 4 * CH / 512,
        "the overflow file gave its data chunks back: {b} blocks"
    );
}

/// A compact, a full-size dependent and an independent set on one master: each keeps its
/// own point in time through the same writes.
#[test]
fn a_compact_set_next_to_full_size_sets_on_one_master() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let master = m.volume("m.img", MIB, 90);
    let pit0 = file_bytes(&master);
    let sc = m.volume("s-c.img", MIB / 8, 0);
    let sd = m.volume("s-d.img", MIB, 0);
    let si = m.volume("s-i.img", MIB, 0);
    let (bc, bd, bi) = (
        m.volume("b-c.img", 0, 0),
        m.volume("b-d.img", 0, 0),
        m.volume("b-i.img", 0, 0),
    );
    m.ok(
        "ctl",
        &format!("enable dep {master} {sc} {bc} cc chunk_size=4096"),
    );
    m.ok(
        "ctl",
        &format!("enable dep {master} {sd} {bd} dd chunk_size=4096"),
    );
    m.ok(
        "ctl",
        &format!("enable ind {master} {si} {bi} ii chunk_size=4096 delay=2 units=4"),
    );
    overflow(&m, "mix", MIB, CH);
    m.set_ok("cc", "attach mix");
    for c in 0..100u64 {
        m.write_at("sets/dd/master", c * 2 * CH + 3, &pattern(5000, 900 + c));
    }
    m.set_ok("ii", "params 0 100");
    m.set_ok("ii", "wait");
    for s in ["cc", "dd", "ii"] {
        assert_same(&m.read(&format!("sets/{s}/shadow")), &pit0, s);
    }
    assert_same(&file_bytes(&si), &pit0, "the independent copy");
    let (s, o) = used(&m, "cc");
    assert_eq!(s + o, 200, "100 writes over 2 chunks each");
}

/// A shadow write that needs a slot when shadow and overflow are full is refused with
/// ENOSPC; it changes neither the shadow's point in time nor the master.
#[test]
fn a_shadow_write_without_a_free_slot_is_refused() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(
        &m,
        "sf",
        MIB,
        2 * CH,
        91,
        "chunk_size=4096 durability=relaxed",
    );
    let pit = file_bytes(&master);
    m.write_at("sets/sf/master", 0, &[1u8; 10]);
    m.write_at("sets/sf/master", CH, &[1u8; 10]);
    assert_eq!(used(&m, "sf"), (2, 0));
    let master_now = file_bytes(&master);
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("sets/sf/shadow"))
        .unwrap();
    let err = f.write_all_at(&[2u8; 100], 10 * CH).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    let st = m.status("sf");
    let lost: Vec<usize> = shadow_chunks(&m, "sf", MIB, CH)
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(c, _)| c)
        .collect();
    assert!(
        lost.is_empty(),
        "a refused shadow write made chunks {lost:?} unreadable (state {:?}); the master \
         still holds their point in time",
        st["state"]
    );
    assert_same(&m.read("sets/sf/shadow"), &pit, "the shadow is unchanged");
    assert_same(&file_bytes(&master), &master_now, "the master is unchanged");
    // A write to a chunk the shadow holds still works.
    m.write_at("sets/sf/shadow", CH + 5, &[3u8; 10]);
    let mut expected = pit.clone();
    expected[(CH + 5) as usize..(CH + 15) as usize].fill(3);
    assert_same(
        &m.read("sets/sf/shadow"),
        &expected,
        "a held chunk is writable",
    );
}

/// An overflow attached to a set already out of space gives room to later writes; what was
/// lost stays lost (EIO) until `copy shadow` (an update) takes a new point in time.
#[test]
fn attach_after_out_of_space_keeps_lost_chunks_lost_until_an_update() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(
        &m,
        "la",
        MIB,
        2 * CH,
        92,
        "chunk_size=4096 durability=relaxed",
    );
    let pit = file_bytes(&master);
    for c in [1u64, 2, 3] {
        m.write_at("sets/la/master", c * CH, &[c as u8; 100]);
    }
    assert_eq!(m.status("la")["state"], "out of space");
    overflow(&m, "lapool", 9 * CH, CH);
    m.set_ok("la", "attach lapool");
    let err = pread(&m, "sets/la/shadow", 3 * CH, CH as usize).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "still lost: {err}");
    for c in [5u64, 6] {
        m.write_at("sets/la/master", c * CH, &[c as u8; 100]);
    }
    assert_eq!(used(&m, "la"), (2, 2));
    for c in [0u64, 1, 2, 4, 5, 6, 7] {
        let got = pread(&m, "sets/la/shadow", c * CH, CH as usize)
            .unwrap_or_else(|e| panic!("chunk {c}: {e}"));
        assert_same(
            &got,
            &pit[(c * CH) as usize..((c + 1) * CH) as usize],
            "kept",
        );
    }
    assert_eq!(m.status("la")["state"], "out of space");
    refused(&m, "sets/la/ctl", "update master", libc::ENOSPC);
    let (r, reply) = reply_of(&m, "sets/la/ctl", "copy shadow");
    assert_eq!(r, Ok(()), "{reply:?}");
    assert_eq!(m.status("la")["state"], "idle");
    assert_eq!(used(&m, "la"), (0, 0));
    assert_same(&m.read("sets/la/shadow"), &file_bytes(&master), "updated");
}

/// SIGKILL while `update shadow` frees thousands of slots: after the restart the shadow is
/// wholly the old point in time or wholly the new one, the counts agree, and a further
/// update frees everything (no slot leaks).
#[test]
fn sigkill_during_update_shadow_is_all_or_nothing() {
    let mut m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = 8 * MIB; // 2048 chunks, 256 slots
    let (master, _, _) = compact_set(&m, "uk", size, size / 8, 93, "chunk_size=4096");
    let ovf = overflow(&m, "ukpool", size, CH);
    m.set_ok("uk", "attach ukpool");
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("update-kill seed {rng}");
    let (mut saw_old, mut saw_new) = (0, 0);
    for round in 0..8u64 {
        let old = m.read("sets/uk/shadow");
        m.write_at("sets/uk/master", 0, &pattern(size as usize, 2000 + round));
        let now = file_bytes(&master);
        assert_same(&m.read("sets/uk/shadow"), &old, "before the update");
        let (s, o) = used(&m, "uk");
        assert_eq!((s, o), (256, 2048 - 256), "round {round}");
        let ctl = m.path("sets/uk/ctl");
        let t = std::thread::spawn(move || {
            if let Ok(mut f) = OpenOptions::new().write(true).open(&ctl) {
                let _ = f.write(b"update shadow");
            }
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 20_000));
        m.kill9();
        let _ = t.join();
        m.start_again();
        let shadow = m.read("sets/uk/shadow");
        let st = m.status("uk");
        if shadow == old {
            saw_old += 1;
            assert_eq!(used(&m, "uk"), (256, 2048 - 256), "round {round}: {st:?}");
        } else {
            assert_same(
                &shadow,
                &now,
                &format!("round {round}: neither old nor new"),
            );
            saw_new += 1;
            assert_eq!(used(&m, "uk"), (0, 0), "round {round}: {st:?}");
        }
        assert_eq!(st["state"], "idle", "round {round}: {st:?}");
        let ost = ovf_status(&m, "ukpool");
        assert_eq!(
            num(&ost, "chunks_used"),
            used(&m, "uk").1,
            "round {round}: {ost:?}"
        );
        m.set_ok("uk", "update shadow");
        assert_eq!(num(&ovf_status(&m, "ukpool"), "chunks_used"), 0);
        assert_same(&m.read("sets/uk/shadow"), &now, "updated");
        eprintln!(
            "round {round}: {} after the kill; overflow file {} blocks after the next update",
            if shadow == old { "old" } else { "new" },
            blocks(&ovf)
        );
    }
    eprintln!("old {saw_old} new {saw_new}");
}

/// After a SIGKILL in the middle of an `update shadow` that took the new point in time, the
/// next `update shadow` (which frees every slot) gives the shadow's and the overflow's space
/// back: du shrinks as the spec says, whatever the daemon's crash left undone.
#[test]
fn space_is_given_back_after_an_update_shadow_cut_by_sigkill() {
    let mut m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = 8 * MIB; // 2048 chunks, 256 slots
    let (master, shadow, _) = compact_set(&m, "gb", size, size / 8, 94, "chunk_size=4096");
    let ovf = overflow(&m, "gbpool", size, CH);
    m.set_ok("gb", "attach gbpool");
    let mut cut = false;
    for round in 0..40u64 {
        m.write_at("sets/gb/master", 0, &pattern(size as usize, 3000 + round));
        assert_eq!(used(&m, "gb"), (256, 2048 - 256));
        let ctl = m.path("sets/gb/ctl");
        let t = std::thread::spawn(move || {
            if let Ok(mut f) = OpenOptions::new().write(true).open(&ctl) {
                let _ = f.write(b"update shadow");
            }
        });
        std::thread::sleep(Duration::from_micros(300 + round * 1000));
        m.kill9();
        let _ = t.join();
        m.start_again();
        let held = blocks(&ovf);
        let now_used = used(&m, "gb");
        eprintln!("round {round}: used {now_used:?}, overflow file {held} blocks");
        if now_used == (0, 0) {
            // Cut inside the update: the new point in time is taken (no slot used) but the
            // overflow file still holds the old chunks' space. Otherwise the update ended
            // before the kill: try again.
            if held > 64 * CH / 512 {
                cut = true;
                break;
            }
        } else {
            m.set_ok("gb", "update shadow");
        }
    }
    if !cut {
        eprintln!("no kill landed inside an update shadow: nothing to check");
        return;
    }
    m.set_ok("gb", "update shadow");
    assert_same(&m.read("sets/gb/shadow"), &file_bytes(&master), "updated");
    assert_eq!(num(&ovf_status(&m, "gbpool"), "chunks_used"), 0);
    let (sb, ob) = (blocks(&shadow), blocks(&ovf));
    assert!(
        ob <= 4 * CH / 512 && sb <= 4 * CH / 512,
        "every slot is free, yet the files keep their space: overflow {ob} blocks \
         ({} KiB), shadow {sb} blocks ({} KiB)",
        ob / 2,
        sb / 2
    );
}

/// `shadow_chunks` is floor(shadow size / chunk size), also for a shadow that is not a whole
/// number of chunks or just one chunk short of the master.
#[test]
fn shadow_chunks_is_the_shadow_size_in_whole_chunks() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let opts = "chunk_size=4096 durability=relaxed";
    for (name, shadow_size, slots) in [
        ("ragged", 5 * CH + CH / 2, 5),
        ("short", MIB - CH, 255),
        ("odd", 3 * CH + 1, 3),
    ] {
        compact_set(&m, name, MIB, shadow_size, 95, opts);
        let st = m.status(name);
        assert_eq!(num(&st, "shadow_chunks"), slots, "{name}: {st:?}");
    }
    // All of the ragged shadow's 5 slots are usable, and no more.
    let pit = file_bytes(&m.dir.path().join("m-ragged.img").to_string_lossy());
    for c in 0..6u64 {
        m.write_at("sets/ragged/master", c * CH, &[1u8; 10]);
    }
    assert_eq!(m.status("ragged")["state"], "out of space");
    assert_eq!(used(&m, "ragged"), (5, 0));
    for c in 0..5u64 {
        let got = pread(&m, "sets/ragged/shadow", c * CH, CH as usize).unwrap();
        assert_same(
            &got,
            &pit[(c * CH) as usize..((c + 1) * CH) as usize],
            "kept",
        );
    }
}

/// A hole punched in a compact shadow is a write of zeros to the image: the shadow reads
/// zeros there, the master is untouched, and a later master write does not bring it back.
#[test]
fn a_hole_punched_in_a_compact_shadow_reads_zeros() {
    use std::os::unix::io::AsRawFd;
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let (master, _, _) = compact_set(
        &m,
        "hs",
        MIB,
        MIB / 8,
        96,
        "chunk_size=4096 durability=relaxed",
    );
    let pit = file_bytes(&master);
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("sets/hs/shadow"))
        .unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on an open descriptor with plain integer arguments.
    let rc =
        unsafe { libc::fallocate(f.as_raw_fd(), mode, (4 * CH + 100) as i64, (3 * CH) as i64) };
    assert_eq!(rc, 0, "punch: {}", std::io::Error::last_os_error());
    drop(f);
    let mut expected = pit.clone();
    expected[(4 * CH + 100) as usize..(7 * CH + 100) as usize].fill(0);
    assert_same(&m.read("sets/hs/shadow"), &expected, "zeros in the shadow");
    assert_same(&file_bytes(&master), &pit, "the master is untouched");
    for c in 3..9u64 {
        m.write_at("sets/hs/master", c * CH, &pattern(CH as usize, 40 + c));
    }
    assert_same(&m.read("sets/hs/shadow"), &expected, "after master writes");
    assert_eq!(m.status("hs")["state"], "idle");
}

/// `attach` by the path of the overflow's volume, also through a symbolic link to it: the
/// set uses the known overflow (one volume, one set of counts).
#[test]
fn attach_by_a_link_to_the_volume_uses_the_known_overflow() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let opts = "chunk_size=4096 durability=relaxed";
    compact_set(&m, "la1", MIB, MIB / 8, 97, opts);
    compact_set(&m, "la2", MIB, MIB / 8, 98, opts);
    let vol = overflow(&m, "lnpool", MIB, CH);
    let link = m.dir.path().join("link-to-pool");
    std::os::unix::fs::symlink(&vol, &link).unwrap();
    m.set_ok("la1", "attach lnpool");
    m.set_ok("la2", &format!("attach {}", link.display()));
    assert_eq!(m.status("la2")["overflow"], "lnpool");
    for (s, n) in [("la1", 40u64), ("la2", 36)] {
        for c in 0..n {
            m.write_at(&format!("sets/{s}/master"), c * CH, &[5u8; 10]);
        }
    }
    let ost = ovf_status(&m, "lnpool");
    assert_eq!(num(&ost, "chunks_used"), 12, "{ost:?}");
    assert_eq!(
        ovf_sets(&ost),
        BTreeMap::from([("la1".to_string(), 8), ("la2".to_string(), 4)]),
        "{ost:?}"
    );
}

/// `detach` racing with writes that are about to spill: either the detach is refused (a
/// chunk got into the overflow first) or it succeeds and nothing of the set is left in the
/// overflow; every shadow chunk reads its point in time or EIO.
#[test]
fn detach_racing_with_spills_leaves_no_orphan_chunks() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    let size = MIB;
    let opts = "chunk_size=4096 durability=relaxed";
    let (mut detached, mut refused_n) = (0, 0);
    for round in 0..10u64 {
        let name = format!("dr{round}");
        let (master, _, _) = compact_set(&m, &name, size, 8 * CH, 100 + round, opts);
        let pool = format!("drpool{round}");
        overflow(&m, &pool, MIB, CH);
        m.set_ok(&name, &format!("attach {pool}"));
        let pit = file_bytes(&master);
        for c in 0..8u64 {
            m.write_at(&format!("sets/{name}/master"), c * CH, &[1u8; 10]);
        }
        assert_eq!(used(&m, &name), (8, 0));
        let p = m.path(&format!("sets/{name}/master"));
        let writer = std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&p).unwrap();
            std::thread::sleep(Duration::from_micros(round * 200));
            for c in 8..200u64 {
                f.write_all_at(&[2u8; 10], c * CH).unwrap();
            }
        });
        std::thread::sleep(Duration::from_micros(800));
        match m.ctl(&format!("sets/{name}/ctl"), "detach") {
            Ok(()) => detached += 1,
            Err((e, reply)) => {
                assert_eq!(e, libc::EBUSY, "{reply}");
                refused_n += 1;
            }
        }
        writer.join().unwrap();
        let st = m.status(&name);
        let ost = ovf_status(&m, &pool);
        let held = num(&st, "overflow_chunks_used");
        assert_eq!(
            num(&ost, "chunks_used"),
            held,
            "round {round}: {st:?} {ost:?}"
        );
        if st["overflow"] == "-" {
            assert_eq!(held, 0, "round {round}: detached but holds chunks: {st:?}");
            assert_eq!(ost["sets"], "-", "round {round}: {ost:?}");
        } else {
            assert!(
                held > 0,
                "round {round}: detach refused with nothing held: {st:?}"
            );
        }
        let now = file_bytes(&master);
        for (c, r) in shadow_chunks(&m, &name, size, CH).into_iter().enumerate() {
            let range = c * CH as usize..(c + 1) * CH as usize;
            match r {
                Ok(b) => assert!(
                    b == pit[range.clone()],
                    "round {round}: chunk {c} is not its point in time (new data: {})",
                    b == now[range]
                ),
                Err(e) => assert_eq!(e, libc::EIO, "round {round}: chunk {c}"),
            }
        }
        m.set_ok(&name, "update shadow");
        assert_eq!(num(&ovf_status(&m, &pool), "chunks_used"), 0);
    }
    eprintln!("detached {detached} refused {refused_n}");
}

/// The status files' keys, in the order the interface gives them.
#[test]
fn status_keys_of_compact_sets_and_overflows_are_in_interface_order() {
    let m = mount_or_skip!();
    const CH: u64 = 4096;
    compact_set(&m, "ko", MIB, 2 * CH, 110, "chunk_size=4096");
    overflow(&m, "kopool", 3 * CH, CH);
    m.set_ok("ko", "attach kopool");
    let keys = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_once(": ").map_or(l, |(k, _)| k).to_string())
            .collect()
    };
    let text = set_text(&m, "ko");
    let k = keys(&text);
    assert_eq!(&k[..3], ["name", "type", "state"], "{text}");
    assert_eq!(
        &k[k.len() - 3..],
        [
            "shadow_chunks",
            "shadow_chunks_used",
            "overflow_chunks_used"
        ],
        "{text}"
    );
    assert!(text.contains("\noverflow: kopool\n"), "{text}");
    for c in 0..4u64 {
        m.write_at("sets/ko/master", c * CH, &[1u8; 10]);
    }
    let text = set_text(&m, "ko");
    let k = keys(&text);
    assert_eq!(
        &k[k.len() - 4..],
        [
            "shadow_chunks",
            "shadow_chunks_used",
            "overflow_chunks_used",
            "space_warning"
        ],
        "{text}"
    );
    assert_eq!(
        keys(&ovf_text(&m, "kopool")),
        [
            "name",
            "volume",
            "size",
            "chunk_size",
            "chunks_total",
            "chunks_used",
            "chunks_free",
            "sets"
        ]
    );
    assert!(ovf_text(&m, "kopool").ends_with("sets: ko=2\n"));
}
