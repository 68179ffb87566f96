//! iiadm against the real mount and the real binaries: the original design's walk-through,
//! refusals (exit 1, one line), usage errors (exit 2), JSON, waiting, confirmation, -H.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same, file_bytes, pattern, Mount};

const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");

fn iiadm(m: &Mount, args: &[&str]) -> Output {
    Command::new(IIADM)
        .args(args)
        .env("IIFS_MOUNT", &m.mnt)
        .stdin(Stdio::null())
        .output()
        .expect("run iiadm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(m: &Mount, args: &[&str]) -> String {
    let o = iiadm(m, args);
    assert!(
        o.status.success(),
        "iiadm {args:?}: {:?}\n{}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

/// A refusal: exit 1 and exactly one line on stderr that contains `mentions`.
#[track_caller]
fn refused(m: &Mount, args: &[&str], mentions: &str) {
    let o = iiadm(m, args);
    assert_eq!(o.status.code(), Some(1), "iiadm {args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line for {args:?}: {err}");
    assert!(
        err.starts_with("iiadm: ") && err.contains(mentions),
        "{args:?}: {err}"
    );
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"));
}

#[test]
fn the_original_walk_through_with_a_set_name() {
    let m = mount_or_skip!();
    let master = m.volume("master.img", 1 << 20, 1);
    let shadow = m.volume("shadow.img", 1 << 20, 0);
    let bitmap = m.volume("bitmap.img", 0, 0);
    let t0 = file_bytes(&master);
    ok(&m, &["-e", "dep", &master, &shadow, &bitmap, "myset"]);
    m.write_at("sets/myset/master", 4096, &pattern(100_000, 5));
    assert_same(
        &m.read("sets/myset/shadow"),
        &t0,
        "shadow keeps the point in time",
    );
    ok(&m, &["-u", "s", "myset"]);
    ok(&m, &["-w", "myset"]);
    assert_same(
        &m.read("sets/myset/shadow"),
        &file_bytes(&master),
        "after -u s and -w",
    );
    let info = ok(&m, &["-i", "myset"]);
    assert!(info.starts_with("myset: dependent set, idle\n"), "{info}");
    assert!(
        info.contains(&format!("master:         {master}")),
        "{info}"
    );
    assert!(info.contains("chunks differ:  0 (0%)"), "{info}");
    let list = ok(&m, &["-l"]);
    assert_eq!(
        list,
        format!("dep {master} {shadow} {bitmap} myset (idle)\n")
    );
    ok(&m, &["-d", "myset"]);
    assert!(m.set_names().is_empty());
    assert_eq!(ok(&m, &["-l"]), "");
}

#[test]
fn relative_paths_long_names_and_enable_options() {
    let m = mount_or_skip!();
    m.volume("m.img", 1 << 20, 2);
    m.volume("s.img", 1 << 20, 0);
    m.volume("b.img", 0, 0);
    let o = Command::new(IIADM)
        .current_dir(m.dir.path())
        .args([
            "--mount",
            m.mnt.to_str().unwrap(),
            "--enable",
            "ind",
            "m.img",
            "s.img",
            "b.img",
            "rel",
        ])
        .args(["--chunk-size", "4K", "--durability", "relaxed"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let st = m.status("rel");
    assert_eq!(st["master"], m.dir.path().join("m.img").to_string_lossy());
    assert_eq!(
        (st["chunk_size"].as_str(), st["durability"].as_str()),
        ("4096", "relaxed")
    );
    ok(&m, &["--wait", "rel"]);
    ok(&m, &["--params", "5", "200", "rel"]);
    assert_eq!(
        ok(&m, &["-P", "rel"]),
        "rel: copy delay 5 ms, copy unit 200 chunks\n"
    );
    ok(&m, &["--copy", "s", "rel"]);
    ok(&m, &["--abort", "rel"]);
    ok(&m, &["--reset", "rel"]);
    assert_eq!(
        m.status("rel")["state"],
        "aborted",
        "reset of a healthy set changes nothing"
    );
    ok(&m, &["-P", "0", "100", "rel"]);
    ok(&m, &["-u", "s", "rel"]);
    ok(&m, &["-w", "rel"]);
    ok(&m, &["-n", "--update", "m", "rel"]);
    ok(&m, &["-w", "rel"]);
    assert_eq!(m.status("rel")["state"], "idle");
}

#[test]
fn every_refusal_is_one_line_and_exit_1() {
    let m = mount_or_skip!();
    let master = m.volume("m.img", 1 << 20, 3);
    let shadow = m.volume("s.img", 1 << 20, 0);
    let bitmap = m.volume("b.img", 0, 0);
    let missing = m.dir.path().join("nope.img").to_string_lossy().into_owned();
    refused(
        &m,
        &["-e", "dep", &missing, &shadow, &bitmap, "x"],
        "does not exist",
    );
    refused(
        &m,
        &["-e", "dep", &master, &master, &bitmap, "x"],
        "three different volumes",
    );
    refused(&m, &["-u", "s", "ghost"], "no set named 'ghost'");
    refused(&m, &["-i", "ghost"], "no set named 'ghost'");
    ok(
        &m,
        &[
            "-e",
            "ind",
            &master,
            &shadow,
            &bitmap,
            "slow",
            "--chunk-size",
            "4096",
        ],
    );
    ok(&m, &["-P", "10000", "1", "slow"]);
    ok(&m, &["-c", "s", "slow"]);
    refused(&m, &["-u", "s", "slow"], "copy is in progress");
    refused(&m, &["-n", "-c", "m", "slow"], "copy is in progress");
    refused(&m, &["-d", "slow"], "wait for the copy");
    refused(&m, &["-P", "99999", "1", "slow"], "DELAY in milliseconds");
    refused(
        &m,
        &["-e", "dep", &master, &shadow, &bitmap, "slow"],
        "exists already",
    );
    // What later versions offer: the daemon's own answer, still one line and exit 1.
    refused(&m, &["-s", "slow"], "not supported yet");
    refused(&m, &["-E", "slow"], "not supported yet");
    refused(&m, &["-I", &shadow, &bitmap], "not supported yet");
    refused(&m, &["-O", &missing], "not supported yet");
    refused(&m, &["-C", "g1"], "not supported yet");
    refused(&m, &["-G"], "does not offer groups yet");
    refused(&m, &["-L"], "does not offer overflow volumes yet");
    ok(&m, &["-a", "slow"]);
    ok(&m, &["-d", "slow"]);
    refused(&m, &["-d", "slow"], "no set named 'slow'");
}

#[test]
fn bad_options_are_usage_errors_with_exit_2() {
    let m = mount_or_skip!();
    for args in [
        vec!["-u", "x", "db"],
        vec!["-e", "dep", "a"],
        vec!["-e", "both", "/a", "/b", "/c"],
        vec!["-z"],
        vec!["-l", "-i"],
        vec!["-P", "1", "2"],
        vec!["stray"],
        vec!["-l", "--chunk-size", "4K"],
    ] {
        let o = iiadm(&m, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.to_lowercase().contains("usage"), "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
    let help = iiadm(&m, &["-h"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("--enable"));
}

#[test]
fn status_of_all_on_an_empty_mount_and_json_for_scripts() {
    let m = mount_or_skip!();
    assert_eq!(ok(&m, &["-i", "all"]), "no sets are configured\n");
    assert_eq!(ok(&m, &["-i"]), "no sets are configured\n");
    let empty: serde_json::Value = serde_json::from_str(&ok(&m, &["-i", "all", "--json"])).unwrap();
    assert_eq!(empty, serde_json::json!([]));
    for (i, kind) in ["dep", "ind"].iter().enumerate() {
        let master = m.volume(&format!("m{i}.img"), 1 << 20, 4);
        let shadow = m.volume(&format!("s{i}.img"), 1 << 20, 0);
        let bitmap = m.volume(&format!("b{i}.img"), 0, 0);
        ok(
            &m,
            &["-e", kind, &master, &shadow, &bitmap, &format!("j{i}")],
        );
    }
    ok(&m, &["-w", "j1"]);
    let one: serde_json::Value = serde_json::from_str(&ok(&m, &["-i", "j0", "--json"])).unwrap();
    let file = std::fs::read_to_string(m.path("sets/j0/status")).unwrap();
    let keys: Vec<&str> = file
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, _)| k)
        .collect();
    let obj = one.as_object().expect("an object");
    assert_eq!(
        obj.keys().map(String::as_str).collect::<Vec<_>>(),
        keys,
        "same fields, same order"
    );
    for line in file.lines() {
        let (k, v) = line.split_once(": ").unwrap();
        let j = &obj[k];
        let text = j
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| j.to_string());
        assert_eq!(text, v, "field {k}");
    }
    let all: serde_json::Value = serde_json::from_str(&ok(&m, &["-i", "all", "--json"])).unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    assert_eq!(all[1]["type"], "independent");
    let list: serde_json::Value = serde_json::from_str(&ok(&m, &["-l", "--json"])).unwrap();
    assert_eq!(list[0]["name"], "j0");
    assert_eq!(list[1]["state"], "idle");
    let blocks = ok(&m, &["-i", "all"]);
    assert!(
        blocks.contains("j0: dependent set") && blocks.contains("j1: independent set"),
        "{blocks}"
    );
}

#[test]
fn wait_blocks_quietly_for_scripts_and_shows_progress_on_a_terminal() {
    let m = mount_or_skip!();
    let master = m.volume("m.img", 2 << 20, 6);
    let shadow = m.volume("s.img", 2 << 20, 0);
    let bitmap = m.volume("b.img", 0, 0);
    ok(
        &m,
        &[
            "-e",
            "ind",
            &master,
            &shadow,
            &bitmap,
            "w",
            "--chunk-size",
            "4096",
        ],
    );
    ok(&m, &["-w", "w"]);
    ok(&m, &["-P", "5", "4", "w"]);
    ok(&m, &["-c", "s", "w"]);
    let t = Instant::now();
    let quiet = ok(&m, &["-w", "w"]);
    assert!(
        t.elapsed() > Duration::from_millis(300),
        "the copy was throttled to take a while"
    );
    assert_eq!(quiet, "", "no output when not on a terminal");
    assert_eq!(m.status("w")["state"], "idle");
    assert_same(&file_bytes(&shadow), &file_bytes(&master), "copy finished");

    // On a terminal (script(1) gives iiadm a pty): a progress bar, then done.
    ok(&m, &["-c", "s", "w"]);
    let o = Command::new("script")
        .args([
            "-qec",
            &format!("IIFS_MOUNT={} {IIADM} -w w", m.mnt.display()),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let screen = stdout(&o);
    assert!(
        screen.contains("100%") && screen.contains("w: copying"),
        "{screen:?}"
    );
    assert_eq!(m.status("w")["state"], "idle");
}

#[test]
fn overwriting_the_master_asks_on_a_terminal() {
    let m = mount_or_skip!();
    let master = m.volume("m.img", 1 << 20, 7);
    let shadow = m.volume("s.img", 1 << 20, 0);
    let bitmap = m.volume("b.img", 0, 0);
    ok(&m, &["-e", "dep", &master, &shadow, &bitmap, "c"]);
    m.write_at("sets/c/shadow", 0, &pattern(8192, 8));
    let before = file_bytes(&master);
    let on_tty = |answer: &str, extra: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '{answer}\\n' | script -qec 'IIFS_MOUNT={} {IIADM} {extra} -u m c' /dev/null",
                m.mnt.display()
            ))
            .output()
            .unwrap()
    };
    let o = on_tty("n", "");
    let screen = stdout(&o);
    assert!(
        screen.contains("Overwrite master") && screen.contains("not confirmed"),
        "{screen}"
    );
    assert_same(&file_bytes(&master), &before, "declined: master untouched");
    assert_eq!(m.status("c")["state"], "idle");
    let o = on_tty("y", "");
    assert!(o.status.success(), "{}", stdout(&o));
    ok(&m, &["-w", "c"]);
    assert_same(
        &file_bytes(&master)[..8192],
        &pattern(8192, 8),
        "confirmed: master restored",
    );
    // -n: no question even on a terminal.
    let o = on_tty("", "-n");
    assert!(
        o.status.success() && !stdout(&o).contains("Overwrite"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn version_mount_discovery_and_remote_hosts() {
    let m = mount_or_skip!();
    let v = ok(&m, &["-v"]);
    assert!(
        v.starts_with(&format!("iiadm {}\n", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(
        v.contains(&format!("daemon: iifs {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    // A directory that is not an iifs mount: say so and how to fix it.
    let o = Command::new(IIADM)
        .args(["-l"])
        .env("IIFS_MOUNT", m.dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not an iifs mount") && stderr(&o).contains("iifs none"),
        "{}",
        stderr(&o)
    );
    // -H HOST runs the same command there over ssh: a stand-in ssh shows what it is given.
    let bin = m.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("ssh");
    std::fs::write(&fake, "#!/bin/sh\necho \"ssh $*\"\nexit 3\n").unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&fake)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new(IIADM)
        .args(["-H", "db1", "-i", "my set"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "the remote exit status comes back"
    );
    assert_eq!(stdout(&o), "ssh -- db1 iiadm -i 'my set'\n");
}
