//! Refused group and suspend/resume commands on a real mount (issue 11). Each refusal is
//! checked three ways: the errno of the write(2), the `error: SENTENCE` reply read back on the
//! same open file (naming what is wrong), and nothing changed: the set and group lists, the
//! status text of every set and of every group, every group's members file and the registry
//! file `iifs.yaml`.
//!
//! A copy that must be running is throttled with `delay=10000 units=1`: the copier moves one
//! chunk, then sleeps 10 s, so while a test looks at it the status holds still.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::refusal::{self, refused_unchanged, Sentence, Snapshot};
use common::{wait_throttled_copy, Mount};

const CHUNK: u64 = 4096;
/// 64 chunks of 4 KiB.
const SIZE: u64 = 64 * CHUNK;

// ------------------------------------------------------------------------------ helpers

fn group_names(m: &Mount) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(m.path("groups"))
        .expect("list groups")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Everything a refused command must leave as it was: the set and group lists, the status
/// text of every set and of every group, every group's members file and the registry file.
fn snapshot(m: &Mount) -> Snapshot {
    let mut snap = Snapshot::new();
    snap.sets(m, "");
    let groups = group_names(m);
    snap.text("the group list", groups.join("\n"));
    for g in groups {
        snap.tree_file(
            m,
            format!("the status of group {g}"),
            &format!("groups/{g}/status"),
        )
        .tree_file(
            m,
            format!("the members of group {g}"),
            &format!("groups/{g}/members"),
        );
    }
    snap.add(
        "the registry file",
        Some(fs::read(m.state.join("iifs.yaml")).expect("registry")),
    );
    snap
}

/// A command on ctl file `rel` that must be refused with `errno` and a reply naming
/// `mentions`, changing nothing.
#[track_caller]
fn refused(m: &Mount, rel: &str, cmd: &str, errno: i32, mentions: &[&str]) {
    let reply = refused_unchanged(m, rel, cmd, errno, || snapshot(m));
    assert_reply(&reply, mentions, &format!("'{cmd}' on {rel}"));
}

/// The reply must be one line `error: SENTENCE\n` (three words at least) naming each of `mentions`.
#[track_caller]
fn assert_reply(reply: &str, mentions: &[&str], what: &str) {
    refusal::assert_reply(reply, mentions, what, Sentence::Words(3))
}

/// Enable set `name` (`kind`: ind|dep) on a new master of SIZE bytes from `seed`, with a new
/// shadow and bitmap file.
fn enable(m: &Mount, kind: &str, name: &str, seed: u64, opts: &str) {
    let master = m.volume(&format!("m-{name}.img"), SIZE, seed);
    let shadow = m.volume(&format!("s-{name}.img"), SIZE, 0);
    let bitmap = m.volume(&format!("b-{name}.img"), 0, 0);
    m.ok(
        "ctl",
        &format!("enable {kind} {master} {shadow} {bitmap} {name} chunk_size={CHUNK} {opts}"),
    );
}

/// The sets and groups every test starts from:
/// - `gd` holds dependent set `d1`; `gd2` holds dependent set `d2`; `d3` is dependent, alone;
/// - `gi` holds independent sets `i1` (its copy done) and `i2` (its first full copy running,
///   one chunk every 10 s); `i3` is independent, alone, its copy done;
/// - `empty` has no member.
fn setup(m: &Mount) {
    enable(m, "dep", "d1", 1, "");
    enable(m, "dep", "d2", 2, "");
    enable(m, "dep", "d3", 3, "");
    enable(m, "ind", "i1", 4, "");
    enable(m, "ind", "i3", 6, "");
    m.set_ok("i1", "wait");
    m.set_ok("i3", "wait");
    for g in ["gd", "gd2", "gi", "empty"] {
        m.ok("ctl", &format!("group create {g}"));
    }
    m.ok("groups/gd/ctl", "add d1");
    m.set_ok("d2", "group gd2");
    m.ok("groups/gi/ctl", "add i1");
    enable(m, "ind", "i2", 5, "delay=10000 units=1");
    wait_throttled_copy(m, "i2", SIZE / CHUNK);
    m.ok("groups/gi/ctl", "add i2");
}

// ------------------------------------------------------------------------------ ENOENT

#[test]
fn enoent_unknown_group() {
    let m = mount_or_skip!();
    setup(&m);
    refused(&m, "sets/d3/ctl", "group nope", libc::ENOENT, &["nope"]);
    refused(
        &m,
        "groups/gd/ctl",
        "remove d3",
        libc::ENOENT,
        &["d3", "gd"],
    );
    refused(
        &m,
        "groups/gd/ctl",
        "remove d2",
        libc::ENOENT,
        &["d2", "gd"],
    );
    // No such group directory.
    let e = OpenOptions::new()
        .write(true)
        .open(m.path("groups/nope/ctl"))
        .expect_err("groups/nope/ctl opened");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    // A ctl file opened before its group was renamed away.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("groups/empty/ctl"))
        .expect("open ctl");
    m.ok("groups/empty/ctl", "rename other");
    let before = snapshot(&m);
    let e = f
        .write(b"add d3")
        .expect_err("a command on the ctl file of a renamed group was taken");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    let mut reply = String::new();
    let _ = f.read_to_string(&mut reply);
    assert_reply(
        &reply,
        &["empty"],
        "'add d3' on the old ctl of a renamed group",
    );
    before.assert_unchanged(&snapshot(&m), "'add d3' on the old ctl of a renamed group");
}

// ------------------------------------------------------------------------------ EEXIST

#[test]
fn eexist_a_set_in_another_group_and_a_taken_group_name() {
    let m = mount_or_skip!();
    setup(&m);
    refused(&m, "groups/gd2/ctl", "add d1", libc::EEXIST, &["d1", "gd"]);
    refused(&m, "sets/d1/ctl", "group gd2", libc::EEXIST, &["d1", "gd"]);
    // Already in this very group: a set belongs to one group at most, and it does.
    refused(&m, "groups/gd/ctl", "add d1", libc::EEXIST, &["d1", "gd"]);
    refused(&m, "ctl", "group create gd", libc::EEXIST, &["gd"]);
    refused(&m, "groups/gd/ctl", "rename gd2", libc::EEXIST, &["gd2"]);
}

// ------------------------------------------------------------------------------ EINVAL

#[test]
fn einval_a_set_of_the_other_type() {
    let m = mount_or_skip!();
    setup(&m);
    refused(&m, "groups/gd/ctl", "add i3", libc::EINVAL, &["i3", "gd"]);
    refused(&m, "sets/i3/ctl", "group gd", libc::EINVAL, &["i3", "gd"]);
    refused(&m, "groups/gi/ctl", "add d3", libc::EINVAL, &["d3", "gi"]);
    refused(&m, "sets/d3/ctl", "group gi", libc::EINVAL, &["d3", "gi"]);
}

#[test]
fn einval_bad_group_names() {
    let m = mount_or_skip!();
    setup(&m);
    refused(&m, "ctl", "group create a b", libc::EINVAL, &[]);
    refused(&m, "ctl", "group create -a", libc::EINVAL, &["-a"]);
    refused(&m, "ctl", "group create a/b", libc::EINVAL, &["a/b"]);
    refused(&m, "ctl", "group create", libc::EINVAL, &[]);
    refused(&m, "groups/gd/ctl", "rename -x", libc::EINVAL, &["-x"]);
    refused(&m, "groups/gd/ctl", "rename x y", libc::EINVAL, &[]);
    // The names that are fine.
    m.ok("ctl", "group create a.b_c-d+e@f:g");
    m.ok("ctl", "group create 9");
}

#[test]
fn einval_resume_of_a_set_that_is_not_suspended() {
    let m = mount_or_skip!();
    setup(&m);
    refused(&m, "sets/d3/ctl", "resume", libc::EINVAL, &["d3"]);
    refused(&m, "sets/d1/ctl", "resume", libc::EINVAL, &["d1"]);
    refused(&m, "sets/i2/ctl", "resume", libc::EINVAL, &["i2"]);
    // Suspended, then resumed: not suspended any more.
    m.set_ok("d3", "suspend");
    m.set_ok("d3", "resume");
    refused(&m, "sets/d3/ctl", "resume", libc::EINVAL, &["d3"]);
}

// ------------------------------------------------------------------------------ EPERM

#[test]
fn eperm_update_or_copy_of_a_member_on_its_own_ctl() {
    let m = mount_or_skip!();
    setup(&m);
    for cmd in [
        "update shadow",
        "update master",
        "copy shadow",
        "update shadow force",
    ] {
        refused(&m, "sets/d1/ctl", cmd, libc::EPERM, &["d1", "gd"]);
        refused(&m, "sets/i1/ctl", cmd, libc::EPERM, &["i1", "gi"]);
    }
    // Out of the group, it takes them again.
    m.set_ok("d1", "ungroup");
    m.set_ok("d1", "update shadow");
}

#[test]
fn eperm_a_group_update_with_a_suspended_member() {
    let m = mount_or_skip!();
    setup(&m);
    m.ok("groups/gd/ctl", "add d3");
    m.set_ok("d3", "suspend");
    refused(&m, "groups/gd/ctl", "update shadow", libc::EPERM, &["d3"]);
    refused(
        &m,
        "groups/gd/ctl",
        "copy shadow force",
        libc::EPERM,
        &["d3"],
    );
}

#[test]
fn eperm_abort_or_wait_of_a_parked_copy() {
    let m = mount_or_skip!();
    setup(&m);
    // i2's throttled first copy runs; suspended, it is parked until resume.
    m.set_ok("i2", "suspend");
    refused(&m, "sets/i2/ctl", "abort", libc::EPERM, &["i2", "resume"]);
    refused(&m, "sets/i2/ctl", "wait", libc::EPERM, &["i2", "resume"]);
    refused(&m, "groups/gi/ctl", "abort", libc::EPERM, &["i2"]);
    refused(&m, "groups/gi/ctl", "wait", libc::EPERM, &["i2"]);
    // Resumed, the copy goes on, and an abort takes.
    m.set_ok("i2", "resume");
    assert_eq!(m.status("i2")["state"], "copying");
    m.set_ok("i2", "abort");
    assert_eq!(m.status("i2")["state"], "aborted");
}

// ------------------------------------------------------------------------------ EBUSY

#[test]
fn ebusy_delete_of_a_group_with_a_copy_running() {
    let m = mount_or_skip!();
    setup(&m);
    refused(&m, "groups/gi/ctl", "delete", libc::EBUSY, &["i2"]);
    refused(&m, "groups/gi/ctl", "update shadow", libc::EBUSY, &["i2"]);
    // The other groups go.
    m.ok("groups/gd/ctl", "delete");
    m.ok("groups/empty/ctl", "delete");
    assert_eq!(group_names(&m), ["gd2", "gi"]);
    assert_eq!(m.status("d1")["state"], "idle");
}

#[test]
fn ebusy_a_group_update_with_a_members_shadow_open() {
    let m = mount_or_skip!();
    setup(&m);
    m.ok("groups/gd/ctl", "add d3");
    let open = File::open(m.path("sets/d3/shadow")).expect("open shadow");
    refused(&m, "groups/gd/ctl", "update shadow", libc::EBUSY, &["d3"]);
    // `force` takes it.
    m.ok("groups/gd/ctl", "update shadow force");
    drop(open);
    // Closed: taken again (the kernel tells the daemon of the close just after close(2)
    // returns, so it may take a moment).
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Err((errno, reply)) = m.ctl("groups/gd/ctl", "update shadow") {
        assert!(
            errno == libc::EBUSY && Instant::now() < deadline,
            "'update shadow' after the shadow was closed: errno {errno}, {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
