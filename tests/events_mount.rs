//! The change stream on the real mount: `MOUNTPOINT/events` starts with the state of every
//! object, then gives each change (state, progress by whole percents, removal) within a
//! fraction of a second, blocking between them without holding the file system: many blocked
//! readers leave every other file served; a reader killed while it waits goes away; and
//! `iiadm --watch --json` prints the stream, one JSON object a line, for one set or all.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");

/// The lines of `events` read on a thread, as they come.
fn follow(m: &common::Mount) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    let file = std::fs::File::open(m.path("events")).expect("open events");
    std::thread::spawn(move || {
        for l in BufReader::new(file).lines() {
            let Ok(l) = l else { return };
            let v: Value = serde_json::from_str(&l).expect("each line is a JSON object");
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next event satisfying `want`, within `within`.
fn next_where(
    rx: &mpsc::Receiver<Value>,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if want(&v) => return v,
            Ok(_) => {}
            Err(e) => panic!("no such event within {within:?}: {e}"),
        }
    }
}

#[test]
fn events_give_the_state_then_each_change() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("a", 16 << 20, 1);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let rx = follow(&m);
    let first = next_where(&rx, Duration::from_secs(2), |_| true);
    assert_eq!(
        (
            &first["event"],
            &first["kind"],
            &first["name"],
            &first["state"]
        ),
        (
            &Value::from("state"),
            &Value::from("set"),
            &Value::from("a"),
            &Value::from("idle")
        )
    );
    // A new set, its copy's progress by whole percents, its end, a group, a removal.
    let (m2, s2, b2) = m.volumes("b", 16 << 20, 2);
    let started = Instant::now();
    m.ok(
        "ctl",
        &format!("enable ind {m2} {s2} {b2} b delay=20 units=4"),
    );
    let added = next_where(&rx, Duration::from_secs(2), |v| v["name"] == "b");
    assert_eq!(added["event"], "added");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "seen after {:?}",
        started.elapsed()
    );
    let mut last = -1i64;
    let mut steps = 0;
    loop {
        let v = next_where(&rx, Duration::from_secs(30), |v| v["name"] == "b");
        if v["state"] == "idle" {
            assert_eq!(v["progress"], 100);
            break;
        }
        assert_eq!(v["state"], "copying", "{v}");
        let p = v["progress"].as_i64().expect("progress");
        assert!(p > last, "progress goes up: {last} then {p}");
        last = p;
        steps += 1;
    }
    assert!(
        steps >= 3,
        "a 16 MiB throttled copy shows several steps, saw {steps}"
    );
    m.ok("ctl", "group create g");
    let g = next_where(&rx, Duration::from_secs(2), |v| v["kind"] == "group");
    assert_eq!(
        (&g["event"], &g["name"]),
        (&Value::from("added"), &Value::from("g"))
    );
    m.set_ok("a", "disable");
    let gone = next_where(&rx, Duration::from_secs(2), |v| v["name"] == "a");
    assert_eq!(gone["event"], "removed");
}

#[test]
fn blocked_readers_hold_nothing_and_a_killed_one_goes_away() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("a", 1 << 20, 1);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    // More blocked readers than the daemon has FUSE threads.
    let mut readers: Vec<_> = (0..24)
        .map(|_| {
            Command::new("cat")
                .arg(m.path("events"))
                .stdout(Stdio::null())
                .spawn()
                .expect("cat")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(m.status("a")["state"], "idle");
        m.set_ok("a", "update shadow");
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the tree stayed served"
    );
    for r in &mut readers {
        assert!(
            r.try_wait().expect("try_wait").is_none(),
            "a reader of events blocks"
        );
        r.kill().expect("kill");
    }
    let t = Instant::now();
    for r in &mut readers {
        r.wait().expect("wait");
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "killed readers went away in {:?}",
        t.elapsed()
    );
    // Writing to the stream is refused.
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("events"))
        .expect_err("events is read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
}

#[test]
fn iiadm_watch_prints_json_lines_for_one_set_or_all() {
    let m = mount_or_skip!();
    for (tag, seed) in [("a", 1), ("b", 2)] {
        let (master, shadow, bitmap) = m.volumes(tag, 1 << 20, seed);
        m.ok(
            "ctl",
            &format!("enable dep {master} {shadow} {bitmap} {tag}"),
        );
    }
    let watch = |args: &[&str]| {
        Command::new(IIADM)
            .args(args)
            .env("IIFS_MOUNT", &m.mnt)
            .stdout(Stdio::piped())
            .spawn()
            .expect("iiadm --watch")
    };
    let mut one = watch(&["--watch", "-i", "a", "--json"]);
    let mut all = watch(&["--watch", "--json"]);
    let mut human = watch(&["--watch"]);
    std::thread::sleep(Duration::from_millis(500));
    m.set_ok("b", "suspend");
    m.set_ok("a", "suspend");
    std::thread::sleep(Duration::from_millis(800));
    let mut outputs = Vec::new();
    for c in [&mut one, &mut all, &mut human] {
        c.kill().expect("kill");
        outputs.push(output_of(c));
    }
    // The first line says the watch is on; the events follow.
    let parse = |text: &str| -> Vec<Value> {
        let mut lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert!(
            !lines.is_empty() && lines[0]["event"] == "watching",
            "the first line: {lines:?}"
        );
        assert_eq!(lines[0]["mount"], m.mnt.to_string_lossy().as_ref());
        lines.remove(0);
        lines
    };
    let one = parse(&outputs[0]);
    assert!(one.iter().all(|v| v["name"] == "a"), "only set a: {one:?}");
    assert!(one.iter().any(|v| v["state"] == "suspended"), "{one:?}");
    let all = parse(&outputs[1]);
    for name in ["a", "b"] {
        assert!(
            all.iter()
                .any(|v| v["name"] == name && v["state"] == "suspended"),
            "{name} suspended in {all:?}"
        );
    }
    assert!(
        outputs[2]
            .lines()
            .any(|l| l.contains("set b: suspended degraded")),
        "{}",
        outputs[2]
    );
}

/// What a killed child wrote.
fn output_of(c: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut out) = c.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    let _ = c.wait();
    text
}
