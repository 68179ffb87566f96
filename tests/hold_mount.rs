//! `hold SECONDS` / `release` on the real mount: while a hold is in force, writes to the
//! master wait (they do not fail) and the rest of the tree stays served; `release`, or the end
//! of the lease, lets them through. A group's hold covers every member's master, and a group
//! `update shadow` taken under it gives every member the same cut: none of the held writes.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Mount;

/// A `dd` writing one 4 KiB block of `byte` at block `at` of `file`, through the mount.
fn writer(m: &Mount, file: &str, at: u64, byte: u8) -> Child {
    // Written once: rewriting it under a running dd would give that dd an empty input.
    let data = m.dir.path().join(format!("block-{byte}"));
    if !data.exists() {
        std::fs::write(&data, vec![byte; 4096]).expect("block");
    }
    Command::new("dd")
        .arg(format!("if={}", data.display()))
        .arg(format!("of={}", m.path(file).display()))
        .args(["bs=4096", "count=1", "conv=notrunc", "status=none"])
        .arg(format!("seek={at}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("dd")
}

/// Whether `c` ends within `within`.
fn ends_within(c: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = c.try_wait().expect("try_wait") {
            assert!(st.success(), "the held write succeeded in the end");
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_held_write_waits_for_release_and_the_tree_stays_served() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("a", 1 << 20, 1);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    assert_eq!(m.status("a")["hold_until"], "-");
    m.set_ok("a", "hold 30");
    let until: u64 = m.status("a")["hold_until"]
        .parse()
        .expect("hold_until in ms");
    assert!(until > 0);
    // More held writers than the daemon has FUSE threads.
    let mut writers: Vec<Child> = (0..12).map(|i| writer(&m, "sets/a/master", i, 7)).collect();
    std::thread::sleep(Duration::from_millis(400));
    for w in &mut writers {
        let st = w.try_wait().expect("try_wait");
        assert!(
            st.is_none(),
            "a write waits while held, but it ended: {st:?}"
        );
    }
    // The rest of the tree is served meanwhile: status, reads, the shadow, other commands.
    let _ = m.read("sets/a/master");
    let _ = m.read("sets/a/shadow");
    m.set_ok("a", "params 0 100");
    let released = Instant::now();
    m.set_ok("a", "release");
    for w in &mut writers {
        assert!(
            ends_within(w, Duration::from_secs(2)),
            "released writes end"
        );
    }
    assert!(released.elapsed() < Duration::from_secs(2));
    assert_eq!(m.status("a")["hold_until"], "-");
    assert_eq!(&m.read("sets/a/master")[..4096], &[7u8; 4096][..]);
    // A release with no hold is no error; a lease of 0 or too long, or no number, is.
    m.set_ok("a", "release");
    for bad in ["hold 0", "hold", "hold soon", "hold 3601"] {
        let (errno, reply) = m.ctl("sets/a/ctl", bad).expect_err(bad);
        assert_eq!(errno, libc::EINVAL, "{bad}: {reply}");
        assert!(reply.contains("hold"), "{bad}: {reply}");
        assert_eq!(m.status("a")["hold_until"], "-", "{bad} held nothing");
    }
}

#[test]
fn the_lease_ends_a_forgotten_hold() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("a", 1 << 20, 1);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let t = Instant::now();
    m.set_ok("a", "hold 1");
    let mut w = writer(&m, "sets/a/master", 3, 9);
    assert!(!ends_within(&mut w, Duration::from_millis(500)), "held");
    assert!(
        ends_within(&mut w, Duration::from_secs(3)),
        "the lease ran out"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(m.status("a")["hold_until"], "-");
}

#[test]
fn a_group_update_under_a_hold_cuts_every_member_before_the_held_writes() {
    let m = mount_or_skip!();
    for (tag, seed) in [("a", 1), ("b", 2)] {
        let (master, shadow, bitmap) = m.volumes(tag, 1 << 20, seed);
        m.ok(
            "ctl",
            &format!("enable dep {master} {shadow} {bitmap} {tag}"),
        );
    }
    m.ok("ctl", "group create g");
    m.ok("groups/g/ctl", "add a");
    m.ok("groups/g/ctl", "add b");
    m.ok("groups/g/ctl", "hold 30");
    for s in ["a", "b"] {
        assert_ne!(m.status(s)["hold_until"], "-", "{s} is held");
    }
    let mut wa = writer(&m, "sets/a/master", 0, 1);
    let mut wb = writer(&m, "sets/b/master", 0, 2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(wa.try_wait().unwrap().is_none() && wb.try_wait().unwrap().is_none());
    let before_a = m.read("sets/a/master")[..4096].to_vec();
    let before_b = m.read("sets/b/master")[..4096].to_vec();
    m.ok("groups/g/ctl", "update shadow");
    m.ok("groups/g/ctl", "release");
    assert!(ends_within(&mut wa, Duration::from_secs(2)));
    assert!(ends_within(&mut wb, Duration::from_secs(2)));
    // The new point in time has neither held write; the masters have both.
    assert_eq!(&m.read("sets/a/shadow")[..4096], &before_a[..]);
    assert_eq!(&m.read("sets/b/shadow")[..4096], &before_b[..]);
    assert_eq!(&m.read("sets/a/master")[..4096], &[1u8; 4096][..]);
    assert_eq!(&m.read("sets/b/master")[..4096], &[2u8; 4096][..]);
    for s in ["a", "b"] {
        assert_eq!(m.status(s)["hold_until"], "-", "{s} is released");
    }
}
