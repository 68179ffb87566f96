//! Refused commands on a real mount. The rule: a refused command fails its write(2) with an
//! errno that says what kind of refusal it is, leaves the reply `error: SENTENCE` naming what is
//! wrong to be read back on the same file, and changes nothing. Every errno this version can
//! produce is checked for all three: (a) the errno of the write(2), (b) the reply, and (c)
//! nothing changed: the set list, every set's full status, the global `status` and `volumes`
//! files, the registry file, and the raw bytes of every volume file involved (a file that did
//! not exist still does not exist).
//!
//! A copy that must be "in progress" is throttled with `delay=10000 units=1`: the copier moves
//! one chunk, then sleeps 10 s, so while a test looks at it nothing moves and the status and the
//! bytes can be compared whole. Every test finishes well inside that window; shutting the
//! daemon down wakes the copier at once.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::refusal::{self, refused_unchanged, Sentence, Snapshot};
use common::{file_bytes, wait_for, Mount};

const KIB: u64 = 1024;
/// Small volumes: 256 KiB = 64 chunks of 4 KiB (enough for a throttled copy to be slow).
const SIZE: u64 = 256 * KIB;

// ------------------------------------------------------------------------------ helpers

/// Everything a refused command must leave as it was: the set list, every set's status, the
/// global `status` and `volumes` files, the registry file and the bytes of `files` (or that
/// they do not exist).
fn snapshot(m: &Mount, files: &[&str]) -> Snapshot {
    let mut snap = Snapshot::new();
    snap.sets(m, "")
        .tree_file(m, "the global status", "status")
        .tree_file(m, "the volumes file", "volumes")
        .add(
            "the registry file",
            fs::read(m.state.join("iifs.yaml")).ok(),
        )
        .files(files);
    snap
}

/// A command on `rel` that must be refused with `errno`, a reply naming `mentions`, and no
/// change to the sets, the registry or the bytes of `files`.
#[track_caller]
fn refused(m: &Mount, rel: &str, cmd: &str, errno: i32, mentions: &[&str], files: &[&str]) {
    let reply = refused_unchanged(m, rel, cmd, errno, || snapshot(m, files));
    assert_reply(&reply, mentions, &format!("'{cmd}' on {rel}"));
}

/// The reply must be one line `error: SENTENCE\n` (ten characters at least) naming each of `mentions`.
#[track_caller]
fn assert_reply(reply: &str, mentions: &[&str], what: &str) {
    refusal::assert_reply(reply, mentions, what, Sentence::Chars(10))
}

fn refused_global(m: &Mount, cmd: &str, errno: i32, mentions: &[&str], files: &[&str]) {
    refused(m, "ctl", cmd, errno, mentions, files)
}

fn refused_set(m: &Mount, set: &str, cmd: &str, errno: i32, mentions: &[&str], files: &[&str]) {
    refused(m, &format!("sets/{set}/ctl"), cmd, errno, mentions, files)
}

/// Write a command and read the reply back on the same open file.
fn ctl_reply(m: &Mount, rel: &str, cmd: &str) -> (std::io::Result<usize>, String) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path(rel))
        .expect("open ctl");
    let r = f.write(cmd.as_bytes());
    let mut reply = String::new();
    f.read_to_string(&mut reply).expect("read reply");
    (r, reply)
}

/// A master with a pattern, an empty shadow of the same size and an empty bitmap file.
fn trio(m: &Mount, tag: &str, seed: u64) -> (String, String, String) {
    (
        m.volume(&format!("{tag}-master"), SIZE, seed),
        m.volume(&format!("{tag}-shadow"), SIZE, 0),
        m.volume(&format!("{tag}-bitmap"), 0, 0),
    )
}

fn missing(m: &Mount, name: &str) -> String {
    let p = m.dir.path().join(name);
    assert!(!p.exists());
    p.to_string_lossy().into_owned()
}

/// Wait until the throttled copier of `set` has moved its first chunk and sleeps (10 s).
fn wait_copy_parked(m: &Mount, set: &str, state: &str) {
    wait_for(m, set, "the first chunk of the throttled copy", |st| {
        st["state"] == state && st["progress"].parse::<u64>().unwrap_or(0) >= 1
    });
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

// ------------------------------------------------------------------------------ ENOENT

#[test]
fn enoent_enable_with_a_missing_volume() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    let nom = missing(&m, "no-master");
    let nos = missing(&m, "no-shadow");
    // A missing bitmap file is made; one in a missing directory is an error.
    let nob = missing(&m, "no-dir/no-bitmap");
    let files = [&*master, &*shadow, &*bitmap, &*nom, &*nos, &*nob];

    refused_global(
        &m,
        &format!("enable ind {nom} {shadow} {bitmap} a"),
        libc::ENOENT,
        &[&nom, "master"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable dep {master} {nos} {bitmap} a"),
        libc::ENOENT,
        &[&nos, "shadow"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable ind {master} {shadow} {nob} a"),
        libc::ENOENT,
        &[&nob, "bitmap", "directory"],
        &files,
    );
    assert!(m.set_names().is_empty());
    // The same volumes, all present, are fine.
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    assert_eq!(m.set_names(), ["a"]);
}

#[test]
fn enoent_set_ctl_of_a_missing_set() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let before = snapshot(&m, &[&master, &shadow, &bitmap]);
    for rel in ["sets/NOPE/ctl", "sets/NOPE/status", "sets/NOPE/master"] {
        let e = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path(rel))
            .expect_err(rel);
        assert_eq!(e.kind(), ErrorKind::NotFound, "open {rel}: {e}");
        assert_eq!(errno_of(&e), libc::ENOENT, "open {rel}: {e}");
    }
    before.assert_unchanged(&snapshot(&m, &[&master, &shadow, &bitmap]), "sets/NOPE");

    // A ctl file opened while its set existed: the set is gone by the time of the write.
    let (m2, s2, b2) = trio(&m, "b", 2);
    m.ok("ctl", &format!("enable dep {m2} {s2} {b2} b"));
    let mut stale = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("sets/b/ctl"))
        .expect("open ctl of b");
    m.set_ok("b", "disable");
    let files = [&*master, &*shadow, &*bitmap, &*m2, &*s2, &*b2];
    let before = snapshot(&m, &files);
    let e = stale
        .write(b"update shadow")
        .expect_err("command on a disabled set");
    assert_eq!(errno_of(&e), libc::ENOENT, "{e}");
    let mut reply = String::new();
    stale.read_to_string(&mut reply).expect("reply");
    assert_reply(&reply, &["'b'"], "update shadow on a disabled set");
    before.assert_unchanged(&snapshot(&m, &files), "command on a disabled set");

    // A new set of the same name does not take commands written to the old set's ctl file:
    // `update master` there would overwrite a master the writer never meant.
    let (m3, s3, b3) = trio(&m, "c", 3);
    m.ok("ctl", &format!("enable dep {m3} {s3} {b3} b"));
    m.write_at("sets/b/shadow", 0, &common::pattern(4096, 77));
    let files = [
        &*master, &*shadow, &*bitmap, &*m2, &*s2, &*b2, &*m3, &*s3, &*b3,
    ];
    let before = snapshot(&m, &files);
    let e = stale
        .write(b"update master")
        .expect_err("command through the old set's ctl file");
    assert_eq!(errno_of(&e), libc::ENOENT, "{e}");
    let mut reply = String::new();
    stale.read_to_string(&mut reply).expect("reply");
    assert_reply(
        &reply,
        &["b", "open", "again"],
        "ctl of a set disabled and enabled anew",
    );
    before.assert_unchanged(
        &snapshot(&m, &files),
        "command through the old set's ctl file",
    );
    // A fresh open reaches the new set.
    m.set_ok("b", "update master");
}

// ------------------------------------------------------------------------------ EINVAL

#[test]
fn einval_unknown_command_words() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let files = [&*master, &*shadow, &*bitmap];
    refused_global(
        &m,
        "frobnicate",
        libc::EINVAL,
        &["frobnicate", "enable"],
        &files,
    );
    refused_global(
        &m,
        "frobnicate now\n",
        libc::EINVAL,
        &["frobnicate"],
        &files,
    );
    refused_global(&m, "disable", libc::EINVAL, &["'disable'"], &files);
    refused_set(
        &m,
        "a",
        "frobnicate",
        libc::EINVAL,
        &["frobnicate", "update"],
        &files,
    );
    refused_set(&m, "a", "enable", libc::EINVAL, &["'enable'"], &files);
    refused_set(&m, "a", "\n", libc::EINVAL, &["empty"], &files);
    refused_set(
        &m,
        "a",
        "update shadow\nupdate master",
        libc::EINVAL,
        &["one command"],
        &files,
    );
}

#[test]
fn einval_malformed_enable() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    let files = [&*master, &*shadow, &*bitmap];
    refused_global(&m, "enable", libc::EINVAL, &["usage: enable"], &files);
    refused_global(
        &m,
        &format!("enable ind {master} {shadow}"),
        libc::EINVAL,
        &["usage: enable"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable ind {master} {shadow} {bitmap} a extra"),
        libc::EINVAL,
        &["usage: enable"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable foo {master} {shadow} {bitmap} a"),
        libc::EINVAL,
        &["'foo'", "ind or dep"],
        &files,
    );
    // Relative paths, each position in turn (the files exist relative to the test dir).
    refused_global(
        &m,
        &format!("enable dep a-master {shadow} {bitmap} a"),
        libc::EINVAL,
        &["a-master", "absolute"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable dep {master} a-shadow {bitmap} a"),
        libc::EINVAL,
        &["a-shadow", "absolute"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable dep {master} {shadow} a-bitmap a"),
        libc::EINVAL,
        &["a-bitmap", "absolute"],
        &files,
    );
    // A set name that cannot be a directory name.
    refused_global(
        &m,
        &format!("enable dep {master} {shadow} {bitmap} -x"),
        libc::EINVAL,
        &["'-x'"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable dep {master} {shadow} {bitmap} a/b"),
        libc::EINVAL,
        &["'a/b'"],
        &files,
    );
    // An unknown option.
    refused_global(
        &m,
        &format!("enable dep {master} {shadow} {bitmap} a colour=red"),
        libc::EINVAL,
        &["'colour'"],
        &files,
    );
    // An empty master.
    let empty = m.volume("empty-master", 0, 0);
    let mut with_empty = files.to_vec();
    with_empty.push(&empty);
    refused_global(
        &m,
        &format!("enable dep {empty} {shadow} {bitmap} a"),
        libc::EINVAL,
        &[&empty, "empty"],
        &with_empty,
    );
    assert!(m.set_names().is_empty());
}

/// A directory is not a volume: a malformed argument (EINVAL), not a storage failure (EIO).
#[test]
fn einval_directory_as_a_volume() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    let dir = m.dir.path().join("adir");
    fs::create_dir(&dir).unwrap();
    let dir = dir.to_string_lossy().into_owned();
    let files = [&*master, &*shadow, &*bitmap];
    refused_global(
        &m,
        &format!("enable dep {dir} {shadow} {bitmap} a"),
        libc::EINVAL,
        &[&dir],
        &files,
    );
    refused_global(
        &m,
        &format!("enable dep {master} {dir} {bitmap} a"),
        libc::EINVAL,
        &[&dir],
        &files,
    );
    refused_global(
        &m,
        &format!("enable dep {master} {shadow} {dir} a"),
        libc::EINVAL,
        &[&dir],
        &files,
    );
    assert!(m.set_names().is_empty());
}

#[test]
fn einval_one_volume_in_two_roles() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    let files = [&*master, &*shadow, &*bitmap];
    for (mm, ss, bb) in [
        (&master, &master, &bitmap),
        (&master, &shadow, &master),
        (&master, &shadow, &shadow),
    ] {
        refused_global(
            &m,
            &format!("enable dep {mm} {ss} {bb} a"),
            libc::EINVAL,
            &["different"],
            &files,
        );
        refused_global(
            &m,
            &format!("enable ind {mm} {ss} {bb} a"),
            libc::EINVAL,
            &["different"],
            &files,
        );
    }
    // The same file under another name (hard link) is the same volume.
    let link = m.dir.path().join("a-master-link");
    fs::hard_link(&master, &link).unwrap();
    let link = link.to_string_lossy().into_owned();
    refused_global(
        &m,
        &format!("enable dep {master} {link} {bitmap} a"),
        libc::EINVAL,
        &["different"],
        &files,
    );
    assert!(m.set_names().is_empty());
}

#[test]
fn einval_shadow_smaller_than_master() {
    let m = mount_or_skip!();
    let master = m.volume("master", SIZE, 1);
    let small = m.volume("small-shadow", SIZE - 4096, 0);
    let bitmap = m.volume("bitmap", 0, 0);
    let files = [&*master, &*small, &*bitmap];
    refused_global(
        &m,
        &format!("enable ind {master} {small} {bitmap} a"),
        libc::EINVAL,
        &[&small, "smaller"],
        &files,
    );
    // A dependent shadow smaller than its master is compact, but it must hold one chunk.
    let tiny = m.volume("tiny-shadow", 4095, 0);
    let files = [&*master, &*tiny, &*bitmap];
    refused_global(
        &m,
        &format!("enable dep {master} {tiny} {bitmap} a"),
        libc::EINVAL,
        &[&tiny, "no whole chunk"],
        &files,
    );
    assert!(m.set_names().is_empty());
}

#[test]
fn einval_bad_enable_options() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    let files = [&*master, &*shadow, &*bitmap];
    let en = format!("enable ind {master} {shadow} {bitmap} a");
    for cs in ["3000", "2M", "2048", "2K", "0", "x"] {
        refused_global(
            &m,
            &format!("{en} chunk_size={cs}"),
            libc::EINVAL,
            &["chunk"],
            &files,
        );
    }
    refused_global(
        &m,
        &format!("{en} durability=sloppy"),
        libc::EINVAL,
        &["durability", "'sloppy'"],
        &files,
    );
    refused_global(
        &m,
        &format!("{en} delay=10001 units=1"),
        libc::EINVAL,
        &["DELAY"],
        &files,
    );
    refused_global(
        &m,
        &format!("{en} delay=1 units=0"),
        libc::EINVAL,
        &["UNITS"],
        &files,
    );
    refused_global(
        &m,
        &format!("{en} delay=soon"),
        libc::EINVAL,
        &["'soon'"],
        &files,
    );
    assert!(m.set_names().is_empty());
    // The limits themselves are accepted.
    m.ok("ctl", &format!("{en} chunk_size=1M durability=relaxed"));
    m.set_ok("a", "wait");
    assert_eq!(m.status("a")["chunk_size"], "1048576");
}

#[test]
fn einval_params_out_of_range() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} a chunk_size=4096"),
    );
    m.set_ok("a", "wait");
    m.set_ok("a", "params 7 9");
    let files = [&*master, &*shadow, &*bitmap];
    for p in [
        "params 10001 1",
        "params 1 0",
        "params 1 60001",
        "params x y",
        "params 1",
        "params -1 5",
        "params 1 2 3",
    ] {
        refused_set(&m, "a", p, libc::EINVAL, &["DELAY", "UNITS"], &files);
    }
    assert_eq!(m.status("a")["params"], "7 9");
    m.set_ok("a", "params 10000 60000");
    assert_eq!(m.status("a")["params"], "10000 60000");
}

#[test]
fn einval_bad_direction_and_extra_words() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} a chunk_size=4096"),
    );
    m.write_at("sets/a/master", 0, &[9u8; 4096]);
    let files = [&*master, &*shadow, &*bitmap];
    refused_set(
        &m,
        "a",
        "update sideways",
        libc::EINVAL,
        &["update shadow|master"],
        &files,
    );
    refused_set(
        &m,
        "a",
        "update",
        libc::EINVAL,
        &["update shadow|master"],
        &files,
    );
    refused_set(
        &m,
        "a",
        "copy",
        libc::EINVAL,
        &["copy shadow|master"],
        &files,
    );
    refused_set(
        &m,
        "a",
        "copy up",
        libc::EINVAL,
        &["copy shadow|master"],
        &files,
    );
    refused_set(
        &m,
        "a",
        "update shadow now",
        libc::EINVAL,
        &["'update'"],
        &files,
    );
    refused_set(&m, "a", "wait now", libc::EINVAL, &["'wait'"], &files);
    refused_set(&m, "a", "disable now", libc::EINVAL, &["'disable'"], &files);
}

/// Export of a dependent set, join of a set that is not exported, import of a shadow with no
/// export record: each refused with its errno and a sentence, nothing changed.
#[test]
fn export_join_and_import_refuse_what_they_cannot_take() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let files = [&*master, &*shadow, &*bitmap];
    refused_set(&m, "a", "export", libc::EPERM, &["dependent"], &files);
    refused_set(&m, "a", "join /x", libc::EPERM, &["not exported"], &files);
    refused_global(
        &m,
        &format!("import {shadow} {bitmap}"),
        libc::EINVAL,
        &["not an exported shadow", ".iifs-export"],
        &files,
    );
}

/// `ftruncate` of `sets/NAME/master|shadow` to each of `lens`: EINVAL and nothing changes.
fn truncates_refused(lens: &[u64]) {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} a chunk_size=4096"),
    );
    let files = [&*master, &*shadow, &*bitmap];
    for rel in ["sets/a/master", "sets/a/shadow"] {
        let f = OpenOptions::new().write(true).open(m.path(rel)).unwrap();
        for &len in lens {
            let before = snapshot(&m, &files);
            let e = f
                .set_len(len)
                .expect_err(&format!("truncate {rel} to {len}"));
            assert_eq!(errno_of(&e), libc::EINVAL, "truncate {rel} to {len}: {e}");
            before.assert_unchanged(&snapshot(&m, &files), &format!("truncate {rel} to {len}"));
            assert_eq!(
                fs::metadata(m.path(rel)).unwrap().len(),
                SIZE,
                "{rel} after truncate to {len}"
            );
        }
        // Truncating to its own size is no change at all.
        f.set_len(SIZE).expect("truncate to the same size");
    }
}

#[test]
fn einval_truncate_of_a_volume_file_to_another_size() {
    truncates_refused(&[SIZE - 4096, SIZE + 4096, 1]);
}

/// A block device refuses `ftruncate(fd, 0)` too; only O_TRUNC at open is ignored.
#[test]
fn einval_truncate_of_a_volume_file_to_zero() {
    truncates_refused(&[0]);
}

#[test]
fn o_trunc_on_a_volume_file_is_ignored() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} a chunk_size=4096"),
    );

    // O_TRUNC (as `dd of=master` or `cat > master` open it) is accepted and ignored.
    let old_master = file_bytes(&master);
    let old_shadow_view = m.read("sets/a/shadow");
    {
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.path("sets/a/master"))
            .expect("open master with O_TRUNC");
        f.write_all_at(&[0xabu8; 4096], 8192)
            .expect("write after O_TRUNC");
    }
    assert_eq!(fs::metadata(m.path("sets/a/master")).unwrap().len(), SIZE);
    let now = file_bytes(&master);
    assert_eq!(now.len() as u64, SIZE, "backing master changed size");
    assert_eq!(&now[..8192], &old_master[..8192]);
    assert!(now[8192..12288].iter().all(|&b| b == 0xab));
    assert_eq!(&now[12288..], &old_master[12288..]);
    assert_eq!(m.read("sets/a/master"), now);
    // The point in time is intact: the shadow still reads as the master did.
    assert_eq!(m.read("sets/a/shadow"), old_shadow_view);
    assert_eq!(old_shadow_view, old_master);
    {
        let mut f = File::create(m.path("sets/a/shadow")).expect("open shadow with O_TRUNC");
        f.write_all(&[0xcdu8; 4096]).expect("write after O_TRUNC");
    }
    assert_eq!(fs::metadata(m.path("sets/a/shadow")).unwrap().len(), SIZE);
    assert_eq!(fs::metadata(&shadow).unwrap().len(), SIZE);
    let view = m.read("sets/a/shadow");
    assert!(view[..4096].iter().all(|&b| b == 0xcd));
    assert_eq!(&view[4096..], &old_master[4096..]);
}

// ------------------------------------------------------------------------------ EEXIST

#[test]
fn eexist_name_or_volume_taken() {
    let m = mount_or_skip!();
    let (ma, sa, ba) = trio(&m, "a", 1);
    m.ok(
        "ctl",
        &format!("enable dep {ma} {sa} {ba} a chunk_size=4096"),
    );
    m.write_at("sets/a/master", 4096, &[5u8; 4096]);
    let (mb, sb, bb) = trio(&m, "b", 2);
    let nob = missing(&m, "b-bitmap-new");
    let files = [&*ma, &*sa, &*ba, &*mb, &*sb, &*bb, &*nob];

    // The name is checked before any volume is touched: a missing bitmap stays missing.
    refused_global(
        &m,
        &format!("enable dep {mb} {sb} {nob} a"),
        libc::EEXIST,
        &["'a'"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable ind {mb} {sb} {bb} a"),
        libc::EEXIST,
        &["'a'"],
        &files,
    );
    // A shadow already used by another set.
    refused_global(
        &m,
        &format!("enable ind {mb} {sa} {bb} b"),
        libc::EEXIST,
        &[&sa, "set a"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable dep {mb} {sa} {bb} b"),
        libc::EEXIST,
        &[&sa, "set a"],
        &files,
    );
    // A bitmap already used by another set.
    refused_global(
        &m,
        &format!("enable dep {mb} {sb} {ba} b"),
        libc::EEXIST,
        &[&ba, "set a"],
        &files,
    );
    // Another set's shadow or bitmap as a master.
    refused_global(
        &m,
        &format!("enable dep {sa} {sb} {bb} b"),
        libc::EEXIST,
        &[&sa, "set a"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable ind {ba} {sb} {bb} b"),
        libc::EEXIST,
        &[&ba, "set a"],
        &files,
    );
    // Another set's master as a shadow or bitmap.
    refused_global(
        &m,
        &format!("enable dep {mb} {ma} {bb} b"),
        libc::EEXIST,
        &[&ma, "master"],
        &files,
    );
    refused_global(
        &m,
        &format!("enable dep {mb} {sb} {ma} b"),
        libc::EEXIST,
        &[&ma, "master"],
        &files,
    );
    assert_eq!(m.set_names(), ["a"]);
    // Sharing the master itself is allowed.
    m.ok("ctl", &format!("enable dep {ma} {sb} {bb} b"));
    assert_eq!(m.set_names(), ["a", "b"]);
}

// ------------------------------------------------------------------------------ EBUSY

/// An independent set whose first copy runs throttled (one chunk, then 10 s asleep).
fn slow_copy(m: &Mount, tag: &str) -> (String, String, String) {
    let (master, shadow, bitmap) = trio(m, tag, 3);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} {tag} chunk_size=4096 delay=10000 units=1"),
    );
    wait_copy_parked(m, tag, "copying");
    (master, shadow, bitmap)
}

#[test]
fn ebusy_commands_while_a_copy_runs() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = slow_copy(&m, "a");
    let files = [&*master, &*shadow, &*bitmap];
    for cmd in [
        "update shadow",
        "copy shadow",
        "update master",
        "copy master",
    ] {
        refused_set(&m, "a", cmd, libc::EBUSY, &["in progress", "set a"], &files);
    }
    refused_set(
        &m,
        "a",
        "disable",
        libc::EBUSY,
        &["set a", "copying"],
        &files,
    );
    assert_eq!(m.set_names(), ["a"]);
    assert_eq!(m.status("a")["state"], "copying");
    // Options given at enable are the set's throttle.
    assert_eq!(m.status("a")["params"], "10000 1");
    // Once stopped, it can be disabled.
    m.set_ok("a", "abort");
    m.set_ok("a", "disable");
    assert!(m.set_names().is_empty());
}

/// A set whose master or shadow file is open (a loop device, a process) is not disabled under
/// it: EBUSY, nothing changed; once closed, disable works.
#[test]
fn ebusy_disable_while_a_volume_file_is_open() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "open", 8);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} open"),
    );
    let files = [&*master, &*shadow, &*bitmap];
    for file in ["master", "shadow"] {
        let held = File::open(m.path(&format!("sets/open/{file}"))).expect("open a volume file");
        refused_set(
            &m,
            "open",
            "disable",
            libc::EBUSY,
            &["open", "losetup -d"],
            &files,
        );
        drop(held);
    }
    m.set_ok("open", "disable");
    assert!(m.set_names().is_empty());
}

/// What a script does: write the master, then disable at once. The kernel delivers the file's
/// release asynchronously; the disable waits for it, even with a single FUSE thread.
#[test]
fn disable_right_after_closing_a_volume_file_works_with_one_fuse_thread() {
    let m = mount_or_skip!("threads=1");
    for i in 0..5 {
        let (master, shadow, bitmap) = trio(&m, &format!("quick{i}"), 9);
        m.ok(
            "ctl",
            &format!("enable dep {master} {shadow} {bitmap} quick"),
        );
        common::sh(&format!(
            "dd if=/dev/urandom of={mnt}/sets/quick/master bs=64k count=4 status=none && echo disable > {mnt}/sets/quick/ctl",
            mnt = m.mnt.display()
        ));
        assert!(m.set_names().is_empty(), "round {i}");
    }
}

#[test]
fn ebusy_update_master_after_abort_of_the_copy_to_the_shadow() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = slow_copy(&m, "a");
    let t = Instant::now();
    m.set_ok("a", "abort");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "abort waited for the throttle"
    );
    let st = m.status("a");
    assert_eq!(st["state"], "aborted");
    assert_eq!(st["direction"], "shadow");
    let files = [&*master, &*shadow, &*bitmap];
    for cmd in ["update master", "copy master"] {
        refused_set(
            &m,
            "a",
            cmd,
            libc::EBUSY,
            &["set a", "unfinished", "update shadow"],
            &files,
        );
    }
    // Finishing the copy to the shadow is what the reply suggests, and it is allowed.
    m.set_ok("a", "params 0 100");
    m.set_ok("a", "update shadow");
    m.set_ok("a", "wait");
    assert_eq!(m.status("a")["state"], "idle");
    assert_eq!(file_bytes(&shadow), file_bytes(&master));
}

#[test]
fn ebusy_second_set_updates_a_master_being_updated() {
    let m = mount_or_skip!();
    let (master, sa, ba) = trio(&m, "a", 4);
    m.ok(
        "ctl",
        &format!("enable ind {master} {sa} {ba} a chunk_size=4096"),
    );
    m.set_ok("a", "wait");
    let sb = m.volume("b-shadow", SIZE, 0);
    let bb = m.volume("b-bitmap", 0, 0);
    m.ok(
        "ctl",
        &format!("enable dep {master} {sb} {bb} b chunk_size=4096"),
    );
    let sc = m.volume("c-shadow", SIZE, 0);
    let bc = m.volume("c-bitmap", 0, 0);
    m.ok(
        "ctl",
        &format!("enable ind {master} {sc} {bc} c chunk_size=4096"),
    );
    m.set_ok("c", "wait");
    // Give a's shadow other content, then copy it back onto the master, throttled.
    m.write_at("sets/a/shadow", 0, &common::pattern(SIZE as usize, 99));
    m.set_ok("a", "params 10000 1");
    m.set_ok("a", "copy master");
    wait_copy_parked(&m, "a", "copying");
    assert_eq!(m.status("a")["direction"], "master");
    let files = [&*master, &*sa, &*ba, &*sb, &*bb, &*sc, &*bc];
    for set in ["b", "c"] {
        for cmd in ["update master", "copy master", "update shadow"] {
            refused_set(&m, set, cmd, libc::EBUSY, &["set a", &master], &files);
        }
    }
    // Nor may a new set take its point in time from a master that is being rewritten.
    let sd = m.volume("d-shadow", SIZE, 0);
    let bd = m.volume("d-bitmap", 0, 0);
    let mut with_d = files.to_vec();
    with_d.extend([&*sd, &*bd]);
    refused_global(
        &m,
        &format!("enable dep {master} {sd} {bd} d"),
        libc::EBUSY,
        &["set a", &master],
        &with_d,
    );
    m.set_ok("a", "abort");
}

// ------------------------------------------------------------------------------ ENOSPC

#[test]
fn enospc_write_past_the_end_of_a_volume_file() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} a chunk_size=4096"),
    );
    let files = [&*master, &*shadow, &*bitmap];
    for rel in ["sets/a/master", "sets/a/shadow"] {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path(rel))
            .unwrap();
        let view = m.read(rel);
        for (off, len) in [
            (SIZE, 4096usize),
            (SIZE, 1),
            (SIZE - 1, 2),
            (SIZE + 65536, 512),
        ] {
            let what = format!("pwrite of {len} bytes at {off} on {rel}");
            let before = snapshot(&m, &files);
            let e = f.write_at(&vec![0x77u8; len], off).expect_err(&what);
            assert_eq!(errno_of(&e), libc::ENOSPC, "{what}: {e}");
            before.assert_unchanged(&snapshot(&m, &files), &what);
        }
        // Allocation past the end is refused the same way; within the volume it is a no-op.
        let before = snapshot(&m, &files);
        // SAFETY: fallocate on an open descriptor with plain integer arguments.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, (SIZE - 4096) as i64, 8192) };
        let e = std::io::Error::last_os_error();
        assert_eq!(rc, -1, "fallocate past the end of {rel} succeeded");
        assert_eq!(
            errno_of(&e),
            libc::ENOSPC,
            "fallocate past the end of {rel}: {e}"
        );
        // SAFETY: as above.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, SIZE as i64) };
        assert_eq!(
            rc,
            0,
            "fallocate within {rel}: {}",
            std::io::Error::last_os_error()
        );
        before.assert_unchanged(&snapshot(&m, &files), &format!("fallocate on {rel}"));
        assert_eq!(m.read(rel), view);
        // The last byte itself is writable.
        f.write_at(&[1u8], SIZE - 1)
            .expect("write of the last byte");
        assert_eq!(fs::metadata(m.path(rel)).unwrap().len(), SIZE);
    }
}

// ------------------------------------------------------------------------------ EACCES / EBADF

#[test]
fn bitmap_file_is_read_only() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} a chunk_size=4096"),
    );
    let files = [&*master, &*shadow, &*bitmap];
    let before = snapshot(&m, &files);
    for opts in [
        OpenOptions::new().write(true).clone(),
        OpenOptions::new().read(true).write(true).clone(),
        OpenOptions::new().append(true).clone(),
    ] {
        match opts.open(m.path("sets/a/bitmap")) {
            Err(e) => assert!(
                [libc::EACCES, libc::EBADF, libc::EPERM].contains(&errno_of(&e)),
                "open of the bitmap for writing: {e}"
            ),
            Ok(f) => {
                let e = f.write_at(b"x", 0).expect_err("write to the bitmap");
                assert!(
                    [libc::EACCES, libc::EBADF].contains(&errno_of(&e)),
                    "write to the bitmap: {e}"
                );
            }
        }
    }
    let e = fs::write(m.path("sets/a/bitmap"), b"x").expect_err("fs::write of the bitmap");
    assert!(
        [libc::EACCES, libc::EBADF, libc::EPERM].contains(&errno_of(&e)),
        "{e}"
    );
    before.assert_unchanged(&snapshot(&m, &files), "writing the bitmap file");
    // Reading it gives the bitmap volume's bytes.
    assert_eq!(m.read("sets/a/bitmap"), file_bytes(&bitmap));
}

// ------------------------------------------------------------------------------ EIO and EPERM

#[path = "support/tiny.rs"]
mod tiny;
use tiny::Tiny;

/// A shadow on a file system too small for it: the first copy fails with a backing I/O error,
/// the set goes offline (EIO, reason in last_error), and copies are then refused (EPERM).
#[test]
fn eio_and_eperm_when_the_shadow_storage_fails() {
    let m = mount_or_skip!();
    let Some(tiny) = Tiny::mount(m.dir.path(), "64k") else {
        if std::env::var_os("CI").is_some() {
            panic!("cannot mount a tmpfs for the failing shadow");
        }
        eprintln!("SKIPPED: cannot mount a tmpfs for the failing shadow");
        return;
    };
    let master = m.volume("master", SIZE, 6);
    let shadow = tiny.0.join("shadow");
    File::create(&shadow).unwrap().set_len(SIZE).unwrap(); // sparse: room for 64 KiB only
    let shadow = shadow.to_string_lossy().into_owned();
    let bitmap = m.volume("bitmap", 0, 0);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} off chunk_size=4096"),
    );

    // `wait` reports the failure.
    let (r, reply) = ctl_reply(&m, "sets/off/ctl", "wait");
    let e = r.expect_err("wait on a failing copy");
    assert_eq!(errno_of(&e), libc::EIO, "{e}; reply {reply:?}");
    assert_reply(
        &reply,
        &["off", "offline", "reset"],
        "wait on a set gone offline",
    );
    let st = m.status("off");
    assert_eq!(st["state"], "offline", "{st:?}");
    assert!(
        st["last_error"].contains(&shadow),
        "last_error does not name the shadow: {st:?}"
    );

    // Reads of the untrustworthy shadow fail; nothing silently returns wrong data.
    let mut buf = vec![0u8; 4096];
    let e = File::open(m.path("sets/off/shadow"))
        .unwrap()
        .read_exact(&mut buf)
        .expect_err("read of an offline shadow");
    assert_eq!(errno_of(&e), libc::EIO, "{e}");

    // The state forbids copies: EPERM, nothing changed.
    let files = [&*master, &*shadow, &*bitmap];
    for cmd in [
        "update shadow",
        "copy shadow",
        "update master",
        "copy master",
    ] {
        refused_set(
            &m,
            "off",
            cmd,
            libc::EPERM,
            &["off", "offline", "reset"],
            &files,
        );
    }
    // The master stays usable.
    assert_eq!(m.read("sets/off/master"), file_bytes(&master));
    drop(tiny);
}

// ------------------------------------------------------------------------------ harmless commands

#[test]
fn wait_abort_and_reset_with_nothing_to_do() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} a chunk_size=4096"),
    );
    m.write_at("sets/a/master", 4096, &[3u8; 8192]);
    let (mi, si, bi) = trio(&m, "i", 2);
    m.ok(
        "ctl",
        &format!("enable ind {mi} {si} {bi} i chunk_size=4096"),
    );
    m.set_ok("i", "wait");
    let files = [&*master, &*shadow, &*bitmap, &*mi, &*si, &*bi];
    for set in ["a", "i"] {
        for cmd in ["wait", "abort", "reset", "wait\n", "abort\n", "reset\n"] {
            let before = snapshot(&m, &files);
            let t = Instant::now();
            let (r, reply) = ctl_reply(&m, &format!("sets/{set}/ctl"), cmd);
            let took = t.elapsed();
            assert_eq!(
                r.expect(cmd),
                cmd.len(),
                "{cmd:?} on {set}: reply {reply:?}"
            );
            assert_eq!(reply, "ok\n", "{cmd:?} on {set}");
            assert!(
                took < Duration::from_secs(1),
                "{cmd:?} on {set} took {took:?}"
            );
            before.assert_unchanged(&snapshot(&m, &files), &format!("{cmd:?} on {set}"));
        }
        assert_eq!(m.status(set)["state"], "idle");
    }
}

#[test]
fn reply_of_a_successful_command_is_ok() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = trio(&m, "a", 1);
    let cmd = format!("enable dep {master} {shadow} {bitmap} a chunk_size=4096\n");
    let (r, reply) = ctl_reply(&m, "ctl", &cmd);
    assert_eq!(r.expect("enable"), cmd.len());
    assert_eq!(reply, "ok\n");
    let (r, reply) = ctl_reply(&m, "sets/a/ctl", "params 5 6");
    assert_eq!(r.expect("params"), 10);
    assert_eq!(reply, "ok\n");
    assert_eq!(m.status("a")["params"], "5 6");

    // One open file, several commands: each reply replaces the last one.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("sets/a/ctl"))
        .unwrap();
    f.write_all(b"update shadow").unwrap();
    let mut reply = String::new();
    f.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ok\n");
    let e = f.write(b"update sideways").expect_err("bad direction");
    assert_eq!(errno_of(&e), libc::EINVAL);
    let mut reply = String::new();
    f.read_to_string(&mut reply).unwrap();
    assert_reply(
        &reply,
        &["update shadow|master"],
        "second command on one open file",
    );
    f.write_all(b"wait").unwrap();
    let mut reply = String::new();
    f.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ok\n");
}
