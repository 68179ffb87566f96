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

/// The keys of a status file, in its order.
fn status_keys(file: &str) -> Vec<&str> {
    file.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, _)| k)
        .collect()
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
    // Slow enough that the abort, a second process, always finds the copy running.
    ok(&m, &["--params", "100", "1", "rel"]);
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
    let (master, shadow, bitmap) = m.volumes("", 1 << 20, 3);
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
    refused(&m, &["-r", "slow"], "is not suspended");
    refused(&m, &["-s", "ghost"], "no set named 'ghost'");
    // Export, import and join: the daemon's own answer, still one line and exit 1.
    refused(&m, &["-E", "slow"], "is copying");
    refused(&m, &["-I", &shadow, &bitmap], "not an exported shadow");
    refused(&m, &["-J", "slow", &bitmap], "not exported");
    refused(&m, &["-O", &missing], "does not exist");
    ok(&m, &["-C", "g1"]);
    refused(&m, &["-C", "g1"], "exists already");
    refused(&m, &["-g", "ghost", "-u", "s"], "no group named 'ghost'");
    refused(&m, &["-X", "ghost"], "no group named 'ghost'");
    refused(&m, &["-M", "slow", "ghost"], "ghost");
    ok(&m, &["-M", "slow", "g1"]);
    refused(&m, &["-X", "g1"], "copy");
    refused(&m, &["-u", "s", "slow"], "iiadm -g g1");
    assert_eq!(ok(&m, &["-G"]), "g1 normal slow\n");
    ok(&m, &["-B", "slow"]);
    ok(&m, &["-X", "g1"]);
    ok(&m, &["-L"]);
    ok(&m, &["-a", "slow"]);
    ok(&m, &["-d", "slow"]);
    refused(&m, &["-d", "slow"], "no set named 'slow'");
}

/// Groups and suspend/resume through iiadm: -C -M -G -g (update, wait, status), -s -r, -N
/// -B -X, and what -l and -i show of them.
#[test]
fn groups_suspend_and_resume() {
    let m = mount_or_skip!();
    let mut vols = Vec::new();
    for (i, set) in ["a", "b"].iter().enumerate() {
        let (master, shadow, bitmap) = m.volumes(set, 1 << 20, 11 + i as u64);
        ok(
            &m,
            &[
                "-e",
                "ind",
                &master,
                &shadow,
                &bitmap,
                set,
                "--chunk-size",
                "4096",
            ],
        );
        ok(&m, &["-w", set]);
        vols.push((master, shadow));
    }
    ok(&m, &["-C", "app"]);
    ok(&m, &["-M", "a", "app"]);
    ok(&m, &["--group-add", "b", "app"]);
    assert_eq!(ok(&m, &["-G"]), "app normal a b\n");
    let info = ok(&m, &["-i", "a"]);
    assert!(
        info.contains("  status:         normal\n") && info.contains("  group:          app\n"),
        "{info}"
    );
    assert_eq!(
        ok(&m, &["-l"]),
        format!(
            "ind {} {} {} a (idle, group app)\nind {} {} {} b (idle, group app)\n",
            vols[0].0,
            vols[0].1,
            m.dir.path().join("ba.img").display(),
            vols[1].0,
            vols[1].1,
            m.dir.path().join("bb.img").display()
        )
    );

    // One update of both, at one point in time, then one wait.
    m.write_at("sets/a/master", 0, &pattern(8192, 21));
    m.write_at("sets/b/master", 4096, &pattern(8192, 22));
    refused(&m, &["-u", "s", "a"], "iiadm -g app");
    ok(&m, &["-g", "app", "-u", "s"]);
    ok(&m, &["-g", "app", "-w"]);
    for (master, shadow) in &vols {
        assert_same(
            &file_bytes(shadow),
            &file_bytes(master),
            "after -g app -u s",
        );
    }
    let info = ok(&m, &["-g", "app", "-i"]);
    assert!(
        info.starts_with("app: group, idle\n  status:         normal\n  members:        a b\n"),
        "{info}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&m, &["-g", "app", "-i", "--json"])).unwrap();
    assert_eq!(j["members"], serde_json::json!(["a", "b"]));
    assert_eq!(j["member"][0]["state"], "idle");
    let all: serde_json::Value = serde_json::from_str(&ok(&m, &["-G", "--json"])).unwrap();
    assert_eq!(all[0]["name"], "app");

    // Suspend stops a's copy and its files; resume goes on with it.
    ok(&m, &["-P", "20", "1", "a"]);
    ok(&m, &["-g", "app", "-c", "s"]);
    ok(&m, &["-s", "a"]);
    let st = m.status("a");
    assert_eq!(
        (st["state"].as_str(), st["status"].as_str()),
        ("suspended", "degraded")
    );
    assert!(
        std::fs::read(m.path("sets/a/master")).is_err(),
        "a suspended set's master is not served"
    );
    assert_eq!(ok(&m, &["-G"]), "app degraded a b\n");
    ok(&m, &["-w", "b"]);
    refused(&m, &["-g", "app", "-u", "s"], "suspended");
    ok(&m, &["-P", "0", "100", "a"]);
    ok(&m, &["-r", "a"]);
    refused(&m, &["-r", "a"], "not suspended");
    ok(&m, &["-g", "app", "-w"]);
    assert_same(
        &file_bytes(&vols[0].1),
        &file_bytes(&vols[0].0),
        "the copy went on after -r",
    );

    ok(&m, &["-s", "all"]);
    assert_eq!(m.status("b")["state"], "suspended");
    ok(&m, &["-r", "all"]);
    assert_eq!(
        (
            m.status("a")["state"].as_str(),
            m.status("b")["state"].as_str()
        ),
        ("idle", "idle")
    );

    ok(&m, &["-N", "app", "web"]);
    ok(&m, &["-B", "a"]);
    assert_eq!(ok(&m, &["-G"]), "web normal b\n");
    ok(&m, &["-X", "web"]);
    assert_eq!(ok(&m, &["-G"]), "");
    assert!(ok(&m, &["-i", "b"]).contains("  group:          none\n"));
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
        vec!["-g", "g", "-u", "s", "db"],
        vec!["-g", "g", "-d", "db"],
        vec!["-u", "s"],
        vec!["-a"],
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
        let (master, shadow, bitmap) = m.volumes(&i.to_string(), 1 << 20, 4);
        ok(
            &m,
            &["-e", kind, &master, &shadow, &bitmap, &format!("j{i}")],
        );
    }
    ok(&m, &["-w", "j1"]);
    let one: serde_json::Value = serde_json::from_str(&ok(&m, &["-i", "j0", "--json"])).unwrap();
    let file = std::fs::read_to_string(m.path("sets/j0/status")).unwrap();
    let keys = status_keys(&file);
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
    let (master, shadow, bitmap) = m.volumes("", 2 << 20, 6);
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
    let (master, shadow, bitmap) = m.volumes("", 1 << 20, 7);
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
    // iiadm's own options (one kept connection per host, keepalives) come before the host.
    let line = stdout(&o);
    assert!(
        line.starts_with("ssh -o ControlMaster=auto -o ControlPath=")
            && line.contains(" -o ServerAliveInterval=3 ")
            && line.ends_with(" -- db1 iiadm -i 'my set'\n"),
        "{line}"
    );
}

#[test]
fn usage_errors_are_exit_2_even_without_a_mount() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no-mount");
    for args in [
        vec!["-u", "x", "db"],
        vec!["-e", "both", "/a", "/b", "/c"],
        vec!["-P", "1", "2"],
        vec!["-l", "--chunk-size", "4K"],
        vec!["-e", "dep", "/srv/my vol.img", "/s", "/b"],
        vec!["-e", "dep", "/srv/a=b.img", "/s", "/b"],
        vec!["-e", "dep", "/m", "/s", "/b", "two words"],
    ] {
        let o = Command::new(IIADM)
            .args(&args)
            .env("IIFS_MOUNT", &nowhere)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("not an iifs mount"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = Command::new(IIADM)
        .args(["-e", "dep", "/srv/my vol.img", "/s", "/b"])
        .env("IIFS_MOUNT", &nowhere)
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("'/srv/my vol.img' cannot be passed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn list_json_has_the_status_fields_and_a_closed_pipe_is_no_panic() {
    let m = mount_or_skip!();
    for i in 0..3 {
        let (master, shadow, bitmap) = m.volumes(&i.to_string(), 1 << 20, 4);
        // A set whose name looks like a number stays a string in JSON.
        ok(
            &m,
            &["-e", "dep", &master, &shadow, &bitmap, &format!("00{i}")],
        );
    }
    let list: serde_json::Value = serde_json::from_str(&ok(&m, &["-l", "--json"])).unwrap();
    let file = std::fs::read_to_string(m.path("sets/001/status")).unwrap();
    let keys = status_keys(&file);
    let row = list[1].as_object().expect("an object per set");
    assert_eq!(row.keys().map(String::as_str).collect::<Vec<_>>(), keys);
    assert_eq!(row["name"], "001");
    assert!(row["size"].is_u64() && row["chunks_differ"].is_u64());
    // `iiadm -l | head -1`: the reader goes away; iiadm ends quietly.
    let script = format!("'{IIADM}' -l | head -c 1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"");
    let o = Command::new("bash")
        .args(["-c", &script])
        .env("IIFS_MOUNT", &m.mnt)
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("Broken pipe"), "{}", stderr(&o));
    let code: i32 = stdout(&o).trim().parse().unwrap();
    assert!(code == 0 || code == 128 + libc::SIGPIPE, "exit {code}");
}

/// Discovery from /proc/self/mounts, in a private mount namespace where only the mounts this
/// test makes exist: none, exactly one, several.
#[test]
fn the_only_iifs_mount_is_found_and_none_or_several_say_what_to_do() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let bin = common::BIN;
    let script = format!(
        r#"
for m in $(awk '$3 == "fuse.iifs" {{print $2}}' /proc/self/mounts); do umount -l "$m"; done
trap 'umount {d}/a {d}/b 2>/dev/null' EXIT
echo "== none"; '{IIADM}' -l 2>&1; echo "rc=$?"
'{bin}' none {d}/a -o state_dir={d}/sa || exit 9
echo "== one"; '{IIADM}' -i all 2>&1; echo "rc=$?"
'{bin}' none {d}/b -o state_dir={d}/sb || exit 9
echo "== several"; '{IIADM}' -l 2>&1; echo "rc=$?"
"#
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &script])
        .env_remove("IIFS_MOUNT")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare (util-linux)");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let part = |name: &str| {
        out.split(&format!("== {name}\n"))
            .nth(1)
            .and_then(|r| r.split("== ").next())
            .unwrap_or_default()
            .to_string()
    };
    let none = part("none");
    assert!(
        none.contains("no iifs mount found") && none.contains("--mount") && none.contains("rc=1"),
        "{none}"
    );
    let one = part("one");
    assert!(
        one.contains("no sets are configured") && one.contains("rc=0"),
        "{one}"
    );
    let several = part("several");
    assert!(
        several.contains("several iifs mounts")
            && several.contains(&format!("{d}/a"))
            && several.contains(&format!("{d}/b"))
            && several.contains("rc=1"),
        "{several}"
    );
}
