//! Acceptance tests of imaging sets through the real mount: dependent and independent sets,
//! shared masters, updates and copies in both directions, abort and wait.

mod common;

use std::time::{Duration, Instant};

use common::{assert_same, file_bytes, pattern, sh};

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 65536;

#[test]
fn dependent_set_keeps_its_point_in_time_until_updated() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("", 8 * MIB, 1);
    let at_enable = file_bytes(&master);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} db"));

    assert_same(
        &m.read("sets/db/shadow"),
        &at_enable,
        "right after enable the shadow reads as the master",
    );
    assert_same(
        &file_bytes(&shadow),
        &vec![0u8; (8 * MIB) as usize],
        "a dependent enable copies nothing",
    );

    // Writes through the master file, with dd as an administrator would (no conv=notrunc).
    sh(&format!(
        "dd if=/dev/urandom of={} bs=64k count=20 status=none",
        m.path("sets/db/master").display()
    ));
    m.write_at("sets/db/master", 3 * MIB + 100, &pattern(200_000, 7));
    assert_ne!(m.read("sets/db/master"), at_enable);
    assert_same(
        &m.read("sets/db/master"),
        &file_bytes(&master),
        "master file shows the backing file",
    );
    assert_same(
        &m.read("sets/db/shadow"),
        &at_enable,
        "the shadow still reads as at enable time",
    );

    let st = m.status("db");
    assert_eq!(st["type"], "dependent");
    assert_eq!(st["state"], "idle");
    let differ: u64 = st["chunks_differ"].parse().unwrap();
    assert!(differ >= 20 + 3, "chunks_differ = {differ}");

    sh(&format!(
        "echo 'update shadow' > {}",
        m.path("sets/db/ctl").display()
    ));
    sh(&format!("echo wait > {}", m.path("sets/db/ctl").display()));
    assert_same(
        &m.read("sets/db/shadow"),
        &file_bytes(&master),
        "after update + wait shadow == master",
    );
    assert_eq!(m.status("db")["chunks_differ"], "0");
}

#[test]
fn independent_copy_gives_the_point_in_time_although_the_master_changes_meanwhile() {
    let m = mount_or_skip!();
    let size = 4 * MIB;
    let (master, shadow, bitmap) = m.volumes("", size, 2);
    let at_enable = file_bytes(&master);
    // A throttled copy (4 KiB chunks, 2 ms after each) so the writes below land mid-copy.
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} ind1 chunk_size=4096 delay=2 units=1"),
    );
    assert_eq!(m.status("ind1")["state"], "copying");
    for i in 0..64u64 {
        let off = (size / 64) * i + 1000;
        m.write_at("sets/ind1/master", off, &pattern(9000, 100 + i));
    }
    m.write_at("sets/ind1/master", size - 4096, &pattern(4096, 99));
    assert!(
        m.status("ind1")["progress"].parse::<u64>().unwrap() < 100,
        "the copy should still run"
    );
    m.set_ok("ind1", "params 0 100");
    m.set_ok("ind1", "wait");
    let st = m.status("ind1");
    assert_eq!(
        (st["state"].as_str(), st["progress"].as_str()),
        ("idle", "100")
    );
    assert_same(
        &file_bytes(&shadow),
        &at_enable,
        "the shadow's backing file alone is the point in time",
    );
    assert_same(
        &m.read("sets/ind1/master"),
        &file_bytes(&master),
        "m.read('sets/ind1/master') vs file_bytes(&master)",
    );
}

#[test]
fn two_sets_on_one_master_keep_their_own_points_in_time() {
    let m = mount_or_skip!();
    let master = m.volume("m.img", 2 * MIB, 3);
    let s1 = m.volume("s1.img", 2 * MIB, 0);
    let s2 = m.volume("s2.img", 2 * MIB, 0);
    let b1 = m.volume("b1.img", 0, 0);
    let b2 = m.volume("b2.img", 0, 0);
    let t0 = file_bytes(&master);
    m.ok("ctl", &format!("enable dep {master} {s1} {b1} one"));
    m.write_at("sets/one/master", 0, &pattern(100_000, 11));
    let t1 = file_bytes(&master);
    m.ok("ctl", &format!("enable ind {master} {s2} {b2} two"));
    // Written through the other set's master file: both shadows are protected.
    m.write_at("sets/two/master", 50_000, &pattern(300_000, 12));
    m.write_at("sets/one/master", MIB, &pattern(70_000, 13));
    m.set_ok("two", "wait");
    assert_same(
        &m.read("sets/one/shadow"),
        &t0,
        "m.read('sets/one/shadow') vs t0",
    );
    assert_same(
        &m.read("sets/two/shadow"),
        &t1,
        "m.read('sets/two/shadow') vs t1",
    );
    assert_same(&file_bytes(&s2), &t1, "file_bytes(&s2) vs t1");
    assert_same(
        &m.read("sets/one/master"),
        &m.read("sets/two/master"),
        "m.read('sets/one/master') vs m.read('sets/two/master')",
    );
    m.set_ok("one", "update shadow");
    assert_same(
        &m.read("sets/one/shadow"),
        &file_bytes(&master),
        "m.read('sets/one/shadow') vs file_bytes(&master)",
    );
    assert_same(
        &m.read("sets/two/shadow"),
        &t1,
        "updating one set leaves the other alone",
    );
}

/// Restoring the master from an independent shadow: `update master` copies only the chunks the
/// bitmap marks as differing (a chunk changed behind iifs's back stays as it is), `copy master`
/// copies every chunk.
#[test]
fn update_and_copy_master_restore_the_master_from_an_independent_shadow() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("", MIB, 4);
    m.ok("ctl", &format!("enable ind {master} {shadow} {bitmap} r"));
    m.set_ok("r", "wait");
    let pit = file_bytes(&master);
    m.write_at("sets/r/master", 7 * CHUNK + 10, &pattern(500, 21));
    m.write_at("sets/r/shadow", 6 * CHUNK, &pattern(CHUNK as usize, 22));
    let shadow_now = m.read("sets/r/shadow");
    // Corrupt chunk 8 of the master behind iifs's back: no bit records it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&master)
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, b"CORRUPT", 8 * CHUNK))
        .unwrap();
    m.set_ok("r", "update master");
    m.set_ok("r", "wait");
    let after = file_bytes(&master);
    assert_eq!(
        after[7 * CHUNK as usize..8 * CHUNK as usize],
        pit[7 * CHUNK as usize..8 * CHUNK as usize]
    );
    assert_eq!(
        after[6 * CHUNK as usize..7 * CHUNK as usize],
        shadow_now[6 * CHUNK as usize..7 * CHUNK as usize]
    );
    assert_eq!(
        &after[8 * CHUNK as usize..8 * CHUNK as usize + 7],
        b"CORRUPT",
        "update copies only differing chunks"
    );
    m.set_ok("r", "copy master");
    m.set_ok("r", "wait");
    assert_same(
        &file_bytes(&master),
        &shadow_now,
        "copy master copies every chunk",
    );
    assert_eq!(m.status("r")["chunks_differ"], "0");
}

/// On a dependent set, `copy master` does what `update master` does.
#[test]
fn update_master_on_a_dependent_set_reverts_to_the_shadow() {
    let m = mount_or_skip!();
    // A dependent shadow holds only the chunks that differ (it reads the others from the
    // master), so update and copy of the master both move just those chunks.
    for (i, cmd) in ["update master", "copy master"].iter().enumerate() {
        let (master, shadow, bitmap) = m.volumes(&i.to_string(), MIB, 5);
        let set = format!("d{i}");
        m.ok(
            "ctl",
            &format!("enable dep {master} {shadow} {bitmap} {set}"),
        );
        let pit = file_bytes(&master);
        m.write_at(&format!("sets/{set}/master"), CHUNK + 5, &pattern(100, 31));
        m.write_at(
            &format!("sets/{set}/shadow"),
            2 * CHUNK,
            &pattern(CHUNK as usize, 32),
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&master)
            .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, b"CORRUPT", 9 * CHUNK))
            .unwrap();
        // Untouched chunks of a dependent shadow are the master's, corruption included.
        let shadow_now = m.read(&format!("sets/{set}/shadow"));
        m.set_ok(&set, cmd);
        m.set_ok(&set, "wait");
        let after = file_bytes(&master);
        assert_eq!(
            after[CHUNK as usize..2 * CHUNK as usize],
            pit[CHUNK as usize..2 * CHUNK as usize],
            "{cmd}"
        );
        assert_eq!(
            after[2 * CHUNK as usize..3 * CHUNK as usize],
            shadow_now[2 * CHUNK as usize..3 * CHUNK as usize],
            "{cmd}"
        );
        assert_eq!(
            &after[9 * CHUNK as usize..9 * CHUNK as usize + 7],
            b"CORRUPT",
            "{cmd}: only changed chunks move"
        );
        assert_same(
            &m.read(&format!("sets/{set}/shadow")),
            &shadow_now,
            "the shadow is unchanged by updating the master",
        );
        assert_eq!(m.status(&set)["chunks_differ"], "0", "{cmd}");
    }
}

#[test]
fn abort_mid_copy_then_update_completes_and_idle_wait_returns_at_once() {
    let m = mount_or_skip!();
    let size = 2 * MIB;
    let (master, shadow, bitmap) = m.volumes("", size, 6);
    let pit = file_bytes(&master);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} a chunk_size=4096 delay=20 units=4"),
    );
    std::thread::sleep(Duration::from_millis(100));
    m.set_ok("a", "abort");
    let st = m.status("a");
    assert_eq!(
        (st["state"].as_str(), st["direction"].as_str()),
        ("aborted", "shadow")
    );
    let progress: u64 = st["progress"].parse().unwrap();
    assert!(progress < 100, "aborted mid-way, progress {progress}");
    assert_same(
        &m.read("sets/a/shadow"),
        &pit,
        "uncopied chunks still read from the master",
    );
    assert_eq!(
        m.ctl("sets/a/ctl", "update master").unwrap_err().0,
        libc::EBUSY
    );
    m.set_ok("a", "params 0 100");
    m.set_ok("a", "update shadow");
    m.set_ok("a", "wait");
    assert_same(&file_bytes(&shadow), &pit, "file_bytes(&shadow) vs pit");
    assert_eq!(m.status("a")["state"], "idle");
    let t = Instant::now();
    m.set_ok("a", "wait");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "wait with nothing running returns at once"
    );
}

#[test]
fn transaction_reply_reads_back_on_the_same_open_file() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("", MIB, 8);
    let ctl = m.path("ctl");
    let out = sh(&format!(
        "exec 3<>{c}; echo 'enable dep {master} {shadow} {bitmap} t' >&3; cat <&3; \
         exec 4<>{c}; echo 'enable dep {master} {shadow} {bitmap} t' >&4 2>/dev/null; cat <&4",
        c = ctl.display()
    ));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ok"));
    let refusal = lines.next().unwrap_or_default();
    assert!(
        refusal.starts_with("error: ") && refusal.contains("'t'"),
        "{refusal}"
    );
}

#[test]
fn volumes_behave_like_block_devices() {
    let m = mount_or_skip!();
    let master = m.volume("m.img", MIB, 9);
    let shadow = m.volume("s.img", 2 * MIB, 0);
    let bitmap = m.volume("b.img", 0, 0);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} v"));
    let len = |p: &str| std::fs::metadata(m.path(p)).unwrap().len();
    assert_eq!(len("sets/v/master"), MIB);
    assert_eq!(
        len("sets/v/shadow"),
        MIB,
        "a larger shadow is shown at the master's size"
    );
    // O_TRUNC is ignored.
    std::fs::write(m.path("sets/v/master"), b"hello").unwrap();
    assert_eq!(len("sets/v/master"), MIB);
    assert_eq!(&file_bytes(&master)[..5], b"hello");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("sets/v/master"))
        .unwrap();
    assert_eq!(
        f.set_len(MIB / 2).unwrap_err().raw_os_error(),
        Some(libc::EINVAL)
    );
    let err = std::os::unix::fs::FileExt::write_at(&f, b"x", MIB).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    f.sync_all().unwrap();
    let listing = std::fs::read_to_string(m.path("volumes")).unwrap();
    assert!(
        listing.contains(&format!("{master} {MIB} master v")),
        "{listing}"
    );
    let global = std::fs::read_to_string(m.path("status")).unwrap();
    assert_eq!(global, "v dependent idle 100\n");
    assert!(std::fs::read_to_string(m.path("version"))
        .unwrap()
        .starts_with("iifs "));
}

/// `fallocate(PUNCH_HOLE)` on `master` (what mkfs.ext4 and fstrim send through a loop device)
/// is a write of zeros to the point in time: the old chunks are preserved first, the master
/// then reads zeros there and its backing file gives the space back. On `shadow` it is a
/// write of zeros to the image.
#[test]
fn a_punched_hole_is_preserved_first_and_gives_the_space_back() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("", 4 * MIB, 3);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} holes"),
    );
    let pit = file_bytes(&master);
    let blocks_before = std::fs::metadata(&master).unwrap().blocks();
    let punch = |rel: &str, off: u64, len: u64| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(m.path(rel))
            .unwrap();
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on an open descriptor with plain integer arguments.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
        assert_eq!(
            rc,
            0,
            "punch hole on {rel}: {}",
            std::io::Error::last_os_error()
        );
    };
    // Two whole MiB and a ragged tail that ends inside a chunk.
    punch("sets/holes/master", MIB, 2 * MIB + 100);
    let now = m.read("sets/holes/master");
    let mut expected = pit.clone();
    expected[MIB as usize..(3 * MIB + 100) as usize].fill(0);
    assert_same(&now, &expected, "the master reads zeros in the hole");
    assert_same(&file_bytes(&master), &expected, "the backing file too");
    assert_same(
        &m.read("sets/holes/shadow"),
        &pit,
        "the shadow keeps the point in time",
    );
    let blocks_after = std::fs::metadata(&master).unwrap().blocks();
    assert!(
        blocks_after + 2 * MIB / 512 <= blocks_before,
        "the master's file gave at least 2 MiB back: {blocks_before} -> {blocks_after} blocks"
    );
    // On the shadow: the image reads zeros there, the master is untouched.
    punch("sets/holes/shadow", 0, CHUNK);
    let img = m.read("sets/holes/shadow");
    assert!(img[..CHUNK as usize].iter().all(|&b| b == 0));
    assert_same(
        &img[CHUNK as usize..],
        &pit[CHUNK as usize..],
        "the rest of the image",
    );
    assert_same(
        &m.read("sets/holes/master"),
        &expected,
        "the master is untouched",
    );
}
