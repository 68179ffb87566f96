//! Refused export, import and join commands on real mounts (issue 12). Each refusal is checked
//! three ways: the errno of the write(2); the `error: SENTENCE` reply read back on the same open
//! file, naming what is wrong; and nothing changed: on every daemon involved the set list, the
//! status text of every set and the registry file `iifs.yaml`, and the bytes of the volume
//! files concerned (a file that did not exist, such as an import bitmap to be made, still does
//! not; an export record that did not exist still does not).
//!
//! Daemon `a` is the home of the exported sets, `b` (and `c`) import.

mod common;
#[path = "common/export.rs"]
mod export;

use std::fs::{self, OpenOptions};

use common::refusal::{assert_reply, refused_unchanged, Sentence, Snapshot};
use common::{file_bytes, wait_for, wait_throttled_copy, Mount};
use export::*;

const CHUNK: u64 = 4096;
/// 64 chunks of 4 KiB.
const SIZE: u64 = 64 * CHUNK;

// ------------------------------------------------------------------------------ helpers

/// Everything a refused command must leave as it was: on every daemon in `ms` the set list,
/// the status text of every set and the registry file; the bytes of `files` (or that they do
/// not exist).
fn snapshot(ms: &[&Mount], files: &[&str]) -> Snapshot {
    let mut snap = Snapshot::new();
    for (i, m) in ms.iter().enumerate() {
        let of = format!(" (daemon {i})");
        snap.sets(m, &of)
            .add(format!("the registry{of}"), Some(registry(m)));
    }
    snap.files(files);
    snap
}

/// Command `cmd` written to ctl file `rel` of daemon `on` must be refused with `errno`, a reply
/// naming `mentions`, and change nothing on daemons `all` nor in `files`. Returns the reply.
#[track_caller]
fn refused(
    all: &[&Mount],
    on: &Mount,
    rel: &str,
    cmd: &str,
    errno: i32,
    mentions: &[&str],
    files: &[&str],
) -> String {
    let reply = refused_unchanged(on, rel, cmd, errno, || snapshot(all, files));
    assert_reply(
        &reply,
        mentions,
        &format!("'{cmd}' on {rel}"),
        Sentence::Words(4),
    );
    reply
}

/// An independent set whose first copy moved one chunk and then sleeps for 10 s per chunk: it
/// holds still while a test looks at it.
fn throttled_set(m: &Mount, v: &Vols, name: &str, seed: u64) -> SetVols {
    let sv = new_set(m, v, "ind", name, SIZE, CHUNK, seed, "delay=10000 units=1");
    wait_throttled_copy(m, name, SIZE / CHUNK);
    sv
}

fn fr(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn two() -> Option<(Mount, Mount)> {
    let a = Mount::start("")?;
    let b = Mount::start("")?;
    Some((a, b))
}

// ------------------------------------------------------------------------------ tests

/// `export` of a set whose state forbids it, and what an exported set refuses.
#[test]
fn export_refusals_change_nothing() {
    let v = Vols::new();
    let Some(a) = Mount::start("") else {
        return;
    };
    let ctl = |s: &str| format!("sets/{s}/ctl");

    let d = new_set(&a, &v, "dep", "d", SIZE, CHUNK, 1, "");
    refused(
        &[&a],
        &a,
        &ctl("d"),
        "export",
        libc::EPERM,
        &["d", "dependent"],
        &[&d.shadow, &d.record()],
    );

    let cp = throttled_set(&a, &v, "cp", 2);
    refused(
        &[&a],
        &a,
        &ctl("cp"),
        "export",
        libc::EBUSY,
        &["cp", "copying"],
        &[&cp.shadow, &cp.record()],
    );
    assert_eq!(a.status("cp")["state"], "copying");
    assert!(a.path("sets/cp/shadow").exists());

    let ab = throttled_set(&a, &v, "ab", 3);
    a.set_ok("ab", "abort");
    wait_for(&a, "ab", "the copy to stop", |st| st["state"] != "copying");
    refused(
        &[&a],
        &a,
        &ctl("ab"),
        "export",
        libc::EPERM,
        &["ab", "aborted", "update shadow"],
        &[&ab.shadow, &ab.record()],
    );

    let su = ind_set(&a, &v, "su", SIZE, CHUNK, 4);
    a.set_ok("su", "suspend");
    refused(
        &[&a],
        &a,
        &ctl("su"),
        "export",
        libc::EPERM,
        &["su", "suspended"],
        &[&su.shadow, &su.record()],
    );
    a.set_ok("su", "resume");

    let op = ind_set(&a, &v, "op", SIZE, CHUNK, 5);
    {
        let _held = OpenOptions::new()
            .read(true)
            .open(a.path("sets/op/shadow"))
            .unwrap();
        refused(
            &[&a],
            &a,
            &ctl("op"),
            "export",
            libc::EBUSY,
            &["op", "open"],
            &[&op.shadow, &op.record()],
        );
    }

    // Exported: what it refuses.
    let ex = ind_set(&a, &v, "ex", SIZE, CHUNK, 6);
    let idle = ind_set(&a, &v, "idle", SIZE, CHUNK, 7);
    a.set_ok("ex", "export");
    a.write_at("sets/ex/master", 0, b"master writes go on");
    assert_eq!(chunks_differ(&a, "ex"), 1);
    let files = [&ex.shadow[..], &ex.record(), &ex.bitmap, &ex.master];
    refused(
        &[&a],
        &a,
        &ctl("ex"),
        "export",
        libc::EPERM,
        &["ex", "exported"],
        &files,
    );
    for cmd in [
        "update shadow",
        "copy shadow",
        "update master",
        "copy master",
    ] {
        refused(
            &[&a],
            &a,
            &ctl("ex"),
            cmd,
            libc::EPERM,
            &["ex", "exported", "join"],
            &files,
        );
    }
    refused(
        &[&a],
        &a,
        &ctl("ex"),
        "reset",
        libc::EPERM,
        &["ex", "exported"],
        &files,
    );
    assert!(absent(&a, "sets/ex/shadow"));
    // join of a set that is not exported (with a bitmap that would do: an exported set's).
    refused(
        &[&a],
        &a,
        &ctl("idle"),
        &format!("join {}", ex.bitmap),
        libc::EPERM,
        &["idle", "not exported"],
        &[&idle.shadow, &idle.bitmap, &ex.bitmap],
    );

    // Offline (its master file shrank behind iifs's back; the set failed on a read): EIO.
    let off = ind_set(&a, &v, "off", SIZE, CHUNK, 8);
    OpenOptions::new()
        .write(true)
        .open(&off.master)
        .unwrap()
        .set_len(SIZE / 2)
        .unwrap();
    let _ = fs::read(a.path("sets/off/master"));
    wait_for(&a, "off", "the set to go offline", |st| {
        st["state"] == "offline"
    });
    refused(
        &[&a],
        &a,
        &ctl("off"),
        "export",
        libc::EIO,
        &["off", "offline"],
        &[&off.shadow, &off.record(), &off.bitmap],
    );
    // What was refused is still exportable once the reason is gone.
    a.set_ok("ab", "params 0 100");
    a.set_ok("ab", "update shadow");
    a.set_ok("ab", "wait");
    a.set_ok("ab", "export");
    a.set_ok("op", "export");
    a.set_ok("su", "export");
    assert!(exists(&op.record()));
    assert_eq!(a.status("ex")["state"], "exported");
}

/// `import` refused: no record, a shadow changed or cut since its export, imported twice (same
/// daemon, other daemon, same name), on the exporting daemon, with the exporting set's bitmap;
/// and what an imported set refuses.
#[test]
fn import_refusals_change_nothing() {
    let v = Vols::new();
    let Some((mut a, b)) = two() else {
        return;
    };
    let Some(c) = Mount::start("") else {
        return;
    };
    let db = ind_set(&a, &v, "db", SIZE, CHUNK, 1);
    let db2 = ind_set(&a, &v, "db2", SIZE, CHUNK, 2);
    a.set_ok("db", "export");
    a.set_ok("db2", "export");
    let bm = v.path("bi.img");

    let plain = v.file("plain.img", SIZE, 3);
    refused(
        &[&a, &b, &c],
        &b,
        "ctl",
        &format!("import {plain} {bm} imp"),
        libc::EINVAL,
        &[&plain, "not an exported shadow"],
        &[&plain, &bm],
    );

    // A shadow changed (one byte) since the export, then one cut short: EINVAL; put back as it
    // was exported, it imports.
    let orig = file_bytes(&db2.shadow);
    overwrite(
        &db2.shadow,
        5 * CHUNK + 7,
        &[orig[(5 * CHUNK + 7) as usize] ^ 0x40],
    );
    refused(
        &[&a, &b, &c],
        &b,
        "ctl",
        &format!("import {} {bm} imp", db2.shadow),
        libc::EINVAL,
        &[&db2.shadow, "changed"],
        &[&db2.shadow, &bm, &db2.record()],
    );
    fs::write(&db2.shadow, &orig[..orig.len() - CHUNK as usize]).unwrap();
    refused(
        &[&a, &b, &c],
        &b,
        "ctl",
        &format!("import {} {bm} imp", db2.shadow),
        libc::EINVAL,
        &[&db2.shadow, "smaller"],
        &[&db2.shadow, &bm, &db2.record()],
    );
    fs::write(&db2.shadow, &orig).unwrap();

    // The exporting set's own bitmap: while its daemon runs the volume is locked (EBUSY);
    // with that daemon down (shared storage seen from another host) it is recognised (EEXIST).
    refused(
        &[&a, &b, &c],
        &b,
        "ctl",
        &format!("import {} {} imp", db.shadow, db.bitmap),
        libc::EBUSY,
        &[&db.bitmap],
        &[&db.shadow, &db.bitmap],
    );
    a.stop();
    refused(
        &[&b, &c],
        &b,
        "ctl",
        &format!("import {} {} imp", db.shadow, db.bitmap),
        libc::EEXIST,
        &[&db.bitmap, "db"],
        &[&db.shadow, &db.bitmap],
    );
    a.start_again();

    // On the exporting daemon itself.
    refused(
        &[&a, &b, &c],
        &a,
        "ctl",
        &format!("import {} {bm} imp", db.shadow),
        libc::EEXIST,
        &[&db.shadow, "db"],
        &[&db.shadow, &bm],
    );

    // Imported once; twice is refused here (EEXIST) and on another daemon (EBUSY: locked).
    b.ok("ctl", &format!("import {} {bm} imp", db.shadow));
    let bm2 = v.path("bi2.img");
    let files = [&db.shadow[..], &bm, &bm2];
    refused(
        &[&a, &b, &c],
        &b,
        "ctl",
        &format!("import {} {bm2} imp2", db.shadow),
        libc::EEXIST,
        &[&db.shadow, "imp"],
        &files,
    );
    refused(
        &[&a, &b, &c],
        &c,
        "ctl",
        &format!("import {} {bm2} imp2", db.shadow),
        libc::EBUSY,
        &[&db.shadow],
        &files,
    );
    refused(
        &[&a, &b, &c],
        &b,
        "ctl",
        &format!("import {} {bm2} imp", db2.shadow),
        libc::EEXIST,
        &["imp", "exists"],
        &[&db2.shadow, &bm2],
    );
    // The import of the shadow put back works.
    b.ok("ctl", &format!("import {} {bm2} imp2", db2.shadow));

    // What an imported set refuses.
    b.write_at("sets/imp/shadow", 3 * CHUNK, b"written on b");
    let files = [&db.shadow[..], &bm, &db.master];
    for cmd in [
        "update shadow",
        "copy shadow",
        "update master",
        "copy master",
    ] {
        refused(
            &[&a, &b, &c],
            &b,
            "sets/imp/ctl",
            cmd,
            libc::EPERM,
            &["imp", "imported"],
            &files,
        );
    }
    refused(
        &[&a, &b, &c],
        &b,
        "sets/imp/ctl",
        "export",
        libc::EPERM,
        &["imp", "imported"],
        &files,
    );
    refused(
        &[&a, &b, &c],
        &b,
        "sets/imp/ctl",
        &format!("join {bm2}"),
        libc::EPERM,
        &["imp", "not exported"],
        &files,
    );
    assert_eq!(b.status("imp")["chunks_differ"], "1");
}

/// README: `reset` of an imported set is refused (EPERM), as for an exported one.
#[test]
fn reset_of_an_imported_set_is_refused() {
    let v = Vols::new();
    let Some((a, b)) = two() else {
        return;
    };
    let db = ind_set(&a, &v, "db", SIZE, CHUNK, 1);
    a.set_ok("db", "export");
    let bm = v.path("bi.img");
    b.ok("ctl", &format!("import {} {bm} imp", db.shadow));
    b.write_at("sets/imp/shadow", 0, b"written on b");
    refused(
        &[&a, &b],
        &b,
        "sets/imp/ctl",
        "reset",
        libc::EPERM,
        &["imp", "imported"],
        &[&db.shadow, &bm],
    );
}

/// `join` refused: the bitmap of a live import (locked, or a copy whose header is not
/// released), of an import of another set, one with a damaged header, one with a damaged
/// page, the set's own bitmap. Then the right bitmap joins, and the update makes shadow ==
/// master.
#[test]
fn join_refusals_change_nothing() {
    let v = Vols::new();
    let Some((a, b)) = two() else {
        return;
    };
    let all = [&a, &b];
    let db = ind_set(&a, &v, "db", SIZE, CHUNK, 1);
    let db2 = ind_set(&a, &v, "db2", SIZE, CHUNK, 2);
    a.set_ok("db", "export");
    a.set_ok("db2", "export");
    let bi = v.path("bi.img");
    let bi2 = v.path("bi2.img");
    b.ok("ctl", &format!("import {} {bi} imp", db.shadow));
    b.ok("ctl", &format!("import {} {bi2} imp2", db2.shadow));
    write_chunk(&b, "sets/imp/shadow", CHUNK, 9, 1);
    write_chunk(&b, "sets/imp2/shadow", CHUNK, 9, 2);
    write_chunk(&a, "sets/db/master", CHUNK, 4, 3);
    let join = |bm: &str| format!("join {bm}");
    // Every join refusal leaves these as they were: the set's own volumes and the given one.
    let files = |bm: &str| -> Vec<String> {
        vec![
            db.bitmap.clone(),
            db.shadow.clone(),
            db.master.clone(),
            db.record(),
            bm.to_string(),
        ]
    };

    // Live import: its daemon holds the bitmap (EBUSY); a copy of it is not released (EBUSY).
    refused(
        &all,
        &a,
        "sets/db/ctl",
        &join(&bi),
        libc::EBUSY,
        &[&bi],
        &fr(&files(&bi)),
    );
    let live_copy = v.path("bi-live-copy.img");
    copy_file(&bi, &live_copy);
    refused(
        &all,
        &a,
        "sets/db/ctl",
        &join(&live_copy),
        libc::EBUSY,
        &[&live_copy, "imp", "disable"],
        &fr(&files(&live_copy)),
    );

    // Released imports from here on.
    b.set_ok("imp", "disable");
    b.set_ok("imp2", "disable");

    // The bitmap of an import of another set (db2's shadow), joined into db: EINVAL.
    refused(
        &all,
        &a,
        "sets/db/ctl",
        &join(&bi2),
        libc::EINVAL,
        &[&bi2, "another set"],
        &fr(&files(&bi2)),
    );

    // A copy of the right bitmap with its header overwritten by garbage: EINVAL.
    let bad_header = v.path("bi-bad-header.img");
    copy_file(&bi, &bad_header);
    overwrite(&bad_header, 0, &common::pattern(8192, 77));
    refused(
        &all,
        &a,
        "sets/db/ctl",
        &join(&bad_header),
        libc::EINVAL,
        &[&bad_header],
        &fr(&files(&bad_header)),
    );

    // A copy with one byte of a bitmap page flipped: EINVAL.
    let bad_page = v.path("bi-bad-page.img");
    copy_file(&bi, &bad_page);
    let byte = fs::read(&bad_page).unwrap()[8192 + 10];
    overwrite(&bad_page, 8192 + 10, &[byte ^ 0x01]);
    refused(
        &all,
        &a,
        "sets/db/ctl",
        &join(&bad_page),
        libc::EINVAL,
        &[&bad_page],
        &fr(&files(&bad_page)),
    );

    // The set's own bitmap: EINVAL.
    refused(
        &all,
        &a,
        "sets/db/ctl",
        &join(&db.bitmap),
        libc::EINVAL,
        &[&db.bitmap, "own"],
        &fr(&files(&db.bitmap)),
    );

    // A file that is no bitmap at all: EINVAL.
    let junk = v.file("junk.img", 64 << 10, 5);
    refused(
        &all,
        &a,
        "sets/db/ctl",
        &join(&junk),
        libc::EINVAL,
        &[&junk],
        &fr(&files(&junk)),
    );

    // Not exported (db2 joined first): EPERM.
    a.set_ok("db2", &join(&bi2));
    refused(
        &all,
        &a,
        "sets/db2/ctl",
        &join(&bi2),
        libc::EPERM,
        &["db2", "not exported"],
        &[&db2.bitmap, &db2.shadow, &bi2],
    );

    // After all that, the right bitmap joins: chunk 4 (master) and 9 (import) differ.
    a.set_ok("db", &join(&bi));
    assert_eq!(a.status("db")["state"], "idle");
    assert_eq!(chunks_differ(&a, "db"), 2);
    update_shadow_to_master(&a, "db", &db, "shadow == master after join and update");
}
