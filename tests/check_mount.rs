//! `iiadm check`, the offline checker of a set's bitmap volume, against sets made on a real
//! mount: clean sets check clean by name and by path; a set the daemon holds cannot be checked
//! (exit 3); a leak is reported (exit 1), `--repair` reclaims it and the set comes back whole; a
//! corruption is reported (exit 2), `--repair` leaves every byte as it was, and the daemon
//! refuses to bring the set back, saying why and how to run the checker.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::*;
use iifs::engine::header::{seal_page, Header, PAGE_SIZE, SLOT_SIZE};

const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");
const CHUNK: u64 = 65536;

/// `iiadm check ARGS --state-dir STATE`: exit status, stdout, stderr.
fn check(m: &Mount, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(IIADM)
        .arg("check")
        .args(args)
        .arg("--state-dir")
        .arg(&m.state)
        .output()
        .expect("run iiadm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The header of the bitmap volume at `path`.
fn header(path: &str) -> Header {
    let f = std::fs::File::open(path).expect("open bitmap");
    let mut slots = vec![0u8; 2 * SLOT_SIZE as usize];
    f.read_exact_at(&mut slots, 0).expect("read header");
    let (a, b) = slots.split_at(SLOT_SIZE as usize);
    Header::pick(a, b).expect("a sound header").0
}

/// Change page 0 of bitmap `map` (0 shadow, 1 copy) of the bitmap volume at `path` with
/// `change`, sealing it again when `seal` (a change iifs could have made) or not (damage).
fn change_page(path: &str, map: u8, seal: bool, change: impl FnOnce(&mut [u8])) {
    let h = header(path);
    let offset = match map {
        0 => h.shadow_bitmap_offset(),
        _ => h.copy_bitmap_offset(),
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open bitmap");
    let mut page = vec![0u8; PAGE_SIZE as usize];
    f.read_exact_at(&mut page, offset).expect("read page");
    change(&mut page);
    if seal {
        seal_page(h.bitmap_id, map, 0, &mut page);
    }
    f.write_all_at(&page, offset).expect("write page");
    f.sync_all().expect("sync");
}

/// A dependent set `d` with chunk 3 preserved, an independent set `i` copied, a compact set
/// `c` spilling into overflow `pool` (shadow of 2 slots, 4 chunks preserved); then the daemon
/// is stopped cleanly. Returns the bitmap paths of d, i and c.
fn three_sets(m: &mut Mount) -> (String, String, String) {
    let (md, sd, bd) = m.volumes("d", 16 * CHUNK, 11);
    m.ok("ctl", &format!("enable dep {md} {sd} {bd} d"));
    m.write_at("sets/d/master", 3 * CHUNK + 100, b"after the point in time");
    let (mi, si, bi) = m.volumes("i", 16 * CHUNK, 12);
    m.ok("ctl", &format!("enable ind {mi} {si} {bi} i"));
    m.set_ok("i", "wait");
    let mc = m.volume("mc.img", 16 * CHUNK, 13);
    let sc = m.volume("sc.img", 2 * CHUNK, 0);
    let bc = m.volume("bc.img", 0, 0);
    let pool = m.volume("pool.img", 16 * CHUNK, 0);
    m.ok(
        "ctl",
        &format!("overflow init {pool} pool chunk_size={CHUNK}"),
    );
    m.ok("ctl", &format!("enable dep {mc} {sc} {bc} c"));
    m.set_ok("c", "attach pool");
    for c in [1u64, 5, 9, 13] {
        m.write_at("sets/c/master", c * CHUNK, b"new");
    }
    m.stop();
    (bd, bi, bc)
}

#[test]
fn clean_sets_check_clean_and_a_set_the_daemon_holds_cannot_be_checked() {
    let Some(mut m) = Mount::start("") else {
        return;
    };
    let (md, sd, bd) = m.volumes("x", 8 * CHUNK, 5);
    m.ok("ctl", &format!("enable dep {md} {sd} {bd} x"));
    let (code, _, err) = check(&m, &["x"]);
    assert_eq!(code, 3, "a set the daemon holds: {err}");
    assert!(err.contains("cannot check"), "{err}");
    m.set_ok("x", "disable");
    m.stop();

    let mut m = Mount::start("").expect("mount");
    let (bd, bi, bc) = three_sets(&mut m);
    for target in ["d", "i", "c", bd.as_str(), bi.as_str(), bc.as_str()] {
        let (code, out, err) = check(&m, &[target]);
        assert_eq!(code, 0, "{target}: {out}{err}");
        assert!(out.lines().last() == Some("clean"), "{target}: {out}");
    }
    let (code, out, _) = check(&m, &["c", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["status"], 0);
    assert_eq!(v["set"], "c");
    let (code, _, err) = check(&m, &["nosuch"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("no set named 'nosuch'") && err.contains("c, d, i"),
        "{err}"
    );
    // `--check` is the same command.
    let out = Command::new(IIADM)
        .args(["--check", "d", "--state-dir"])
        .arg(&m.state)
        .output()
        .expect("run iiadm");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_leak_is_reported_and_repaired_and_the_set_comes_back_whole() {
    let Some(mut m) = Mount::start("") else {
        return;
    };
    let (bd, _, _) = three_sets(&mut m);
    let master = file_bytes(&m.dir.path().join("md.img").to_string_lossy());
    // Chunks 5 and 6 marked to copy while no copy is recorded: harmless, reclaimable.
    change_page(&bd, 1, true, |p| p[0] |= 0b0110_0000);
    let (code, out, _) = check(&m, &["d"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("leak: 2 chunks are marked to copy, but no copy is recorded")
            && out.contains("'iiadm check d --repair' reclaims them"),
        "{out}"
    );
    let (code, out, _) = check(&m, &["d", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("repaired: cleared 2 copy bits"), "{out}");
    assert_eq!(check(&m, &["d"]).0, 0);

    m.start_again();
    let st = m.status("d");
    assert_eq!(st["state"], "idle", "{st:?}");
    assert_eq!(st["chunks_differ"], "1", "{st:?}");
    // The point in time is whole: chunk 3 preserved, the rest read from the master.
    let shadow = m.read("sets/d/shadow");
    let pit = pattern(16 * CHUNK as usize, 11);
    assert_same(&shadow, &pit, "shadow of d after the repair");
    assert_ne!(master, pit, "the master did change after the point in time");
}

#[test]
fn corruption_is_left_alone_and_the_daemon_will_not_bring_the_set_back() {
    let Some(mut m) = Mount::start("") else {
        return;
    };
    let (bd, _, bc) = three_sets(&mut m);
    // A flipped bit in the shadow bitmap of d: its page fails its checksum.
    change_page(&bd, 0, false, |p| p[10] ^= 0x04);
    // Chunk 7 of c marked preserved with no slot, in a sealed page: only the map tells.
    change_page(&bc, 0, true, |p| p[0] |= 1 << 7);
    let before_d = file_bytes(&bd);
    let before_c = file_bytes(&bc);

    let (code, out, _) = check(&m, &["d"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("corrupt: page 0 of the shadow bitmap") && out.contains("fails its checksum"),
        "{out}"
    );
    let (code, out, _) = check(&m, &["c", "--repair"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("chunks 7 of the compact shadow are marked preserved but have no slot")
            && out.contains("not repaired"),
        "{out}"
    );
    assert_eq!(check(&m, &[&bd, "--repair"]).0, 2);
    assert!(
        file_bytes(&bd) == before_d,
        "--repair changed a corrupt volume"
    );
    assert!(
        file_bytes(&bc) == before_c,
        "--repair changed a corrupt volume"
    );

    m.start_again();
    for (set, what) in [("d", "fails its checksum"), ("c", "have no slot")] {
        let st = m.status(set);
        assert_eq!(st["state"], "offline", "{set}: {st:?}");
        let e = &st["last_error"];
        assert!(
            e.contains("could not be restored at start")
                && e.contains(what)
                && e.contains(&format!("'iiadm check {set}' gives the whole report")),
            "{set}: {e}"
        );
    }
    assert_eq!(m.status("i")["state"], "idle", "a sound set comes back");
    assert!(
        file_bytes(&bd) == before_d,
        "the daemon changed a corrupt volume"
    );
    assert!(
        file_bytes(&bc) == before_c,
        "the daemon changed a corrupt volume"
    );
}
