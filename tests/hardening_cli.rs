//! Hardening of iiadm and of the daemon's process plumbing: the status of a set that could not
//! be restored, SIGTERM with the mount copied into another mount namespace, `-H` over ssh (a
//! stand-in ssh: a real sshd between network namespaces is not set up here), and the
//! PR_SET_IO_FLUSHER warning.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same, daemon_pid, file_bytes, is_mounted, pattern, sh, Mount, BIN};

const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");

fn iiadm(m: &Mount, args: &[&str]) -> Output {
    Command::new(IIADM)
        .args(args)
        .env("IIFS_MOUNT", &m.mnt)
        .env_remove("IIADM_SSH")
        .stdin(Stdio::null())
        .output()
        .expect("run iiadm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Whether process `pid` has ended (gone, or a zombie its parent has not reaped yet).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses: `PID (COMM) S ...`.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn wait_ended(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !ended(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A dependent set `name` of a 1 MiB master with a pattern; returns (master, shadow) paths.
fn dep_set(m: &Mount, name: &str) -> (String, String) {
    let master = m.volume(&format!("{name}-m.img"), 1 << 20, 3);
    let shadow = m.volume(&format!("{name}-s.img"), 1 << 20, 0);
    let bitmap = m.volume(&format!("{name}-b.img"), 0, 0);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} {name}"),
    );
    (master, shadow)
}

// ---- defect 10: iiadm -i of a set that could not be restored ----

#[test]
fn status_of_a_set_that_could_not_be_restored_says_what_is_known_and_why() {
    let mut m = mount_or_skip!();
    let (master, _) = dep_set(&m, "lost");
    m.stop();
    std::fs::remove_file(&master).unwrap();
    m.start_again();
    assert_eq!(m.status("lost")["state"], "offline");

    let o = iiadm(&m, &["-i", "lost"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let block = text(&o.stdout);
    for wrong in ["- set", "- ms", "- chunks", "1970-01-01", "0 bytes"] {
        assert!(!block.contains(wrong), "'{wrong}' in:\n{block}");
    }
    assert!(
        block.starts_with("lost: offline, could not be restored at start\n"),
        "{block}"
    );
    assert!(
        block.contains(&format!("master:         {master}")),
        "{block}"
    );
    assert!(
        block.contains("last error:") && block.contains(&master),
        "the reason names the missing volume:\n{block}"
    );
    assert!(block.contains("disable"), "says what to do:\n{block}");

    // -P of it: no throttle made up.
    let o = iiadm(&m, &["-P", "lost"]);
    let shown = text(&o.stdout);
    assert!(
        o.status.success() && !shown.contains("- ms") && shown.contains("unknown"),
        "{shown}"
    );

    // JSON: the status file's keys; what is not known is null, not a made-up 0.
    let o = iiadm(&m, &["-i", "lost", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(j["state"], "offline");
    assert_eq!(j["master"], master.as_str());
    for unknown in ["type", "size", "chunk_size", "chunks", "pit_time", "params"] {
        assert!(j[unknown].is_null(), "{unknown} in {j:#}");
    }
    assert!(j["last_error"]
        .as_str()
        .is_some_and(|e| e.contains(&master)));
    // A restored set keeps its numbers.
    dep_set(&m, "fine");
    let o = iiadm(&m, &["-i", "fine", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(
        (j["size"].as_u64(), j["type"].as_str()),
        (Some(1 << 20), Some("dependent"))
    );
}

// ---- defect 12: SIGTERM with the mount held by another mount namespace ----

/// Kills and reaps a helper process when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The namespace tests one at a time: a mount namespace made by one holds a copy of the
/// other's mount.
static NAMESPACES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn mount_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

#[test]
fn sigterm_stops_the_daemon_when_another_mount_namespace_holds_a_copy() {
    let _one_at_a_time = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
    let mut m = mount_or_skip!();
    let (_, shadow) = dep_set(&m, "ns");
    let t0 = m.read("sets/ns/master");
    m.write_at("sets/ns/master", 0, &pattern(70_000, 9));
    let differ = m.status("ns")["chunks_differ"].clone();
    let pid = daemon_pid(&m.mnt).expect("daemon running");

    // A process in a mount namespace made after the mount: it holds a copy of it.
    let holder = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "60"])
        .spawn()
        .expect("run unshare (util-linux)");
    let holder = Reaped(holder);
    let hpid = holder.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mount_ns(hpid) == mount_ns(std::process::id())
        || std::fs::read_to_string(format!("/proc/{hpid}/comm")).unwrap_or_default() != "sleep\n"
    {
        assert!(Instant::now() < deadline, "unshare did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let inside = |cmd: &str| {
        Command::new("nsenter")
            .args(["-t", &hpid.to_string(), "-m", "sh", "-c", cmd])
            .output()
            .expect("run nsenter")
    };
    let version = format!("cat {}/version", m.mnt.display());
    assert!(
        inside(&version).status.success(),
        "the copy serves the tree"
    );

    // Busy here too (an open file): the mount here must still go.
    let busy = File::open(m.path("sets/ns/status")).expect("open a status file");
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        wait_ended(pid, Duration::from_secs(5)),
        "SIGTERM did not stop the daemon within 5 s:\n{}",
        m.log()
    );
    assert!(!is_mounted(&m.mnt), "the mount is gone here");
    let log = m.log();
    assert!(log.contains("another mount namespace"), "{log}");
    assert!(log.contains("iifs unmounted"), "a clean shutdown:\n{log}");
    let o = inside(&version);
    assert!(
        !o.status.success() && text(&o.stderr).contains("not connected"),
        "the copy answers ENOTCONN: {}",
        text(&o.stderr)
    );
    drop((holder, busy));

    // The set comes back as it was: idle, the same chunks differ, the point in time kept.
    m.stop();
    m.start_again();
    let s = m.status("ns");
    assert_eq!(
        (s["state"].as_str(), &s["chunks_differ"]),
        ("idle", &differ)
    );
    assert_same(&m.read("sets/ns/shadow"), &t0, "shadow after the stop");
    assert_same(
        &file_bytes(&shadow)[..65536],
        &t0[..65536],
        "preserved chunk",
    );
}

/// A mount namespace that no process is in, kept only by a bind mount of its nsfs file, is
/// not found by looking at processes: the daemon notices that the session did not end after
/// the unmount and aborts the connection through the fuse control file system.
#[test]
fn sigterm_stops_the_daemon_when_a_namespace_without_processes_holds_a_copy() {
    let _one_at_a_time = NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
    let mut m = mount_or_skip!();
    dep_set(&m, "pinned");
    let pid = daemon_pid(&m.mnt).expect("daemon running");
    let pin = m.dir.path().join("pin");
    std::fs::create_dir_all(&pin).unwrap();
    let p = pin.display();
    // unshare --mount=FILE needs FILE on a mount with private propagation.
    sh(&format!(
        "mount --bind {p} {p} && mount --make-private {p} && touch {p}/ns && \
         unshare --mount={p}/ns --propagation private true"
    ));
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let stopped = wait_ended(pid, Duration::from_secs(10));
    let o = Command::new("nsenter")
        .arg(format!("--mount={p}/ns"))
        .args(["cat", &format!("{}/version", m.mnt.display())])
        .output()
        .expect("run nsenter");
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("umount {p}/ns; umount {p}"))
        .status();
    assert!(stopped, "SIGTERM did not stop the daemon:\n{}", m.log());
    // A process elsewhere on the machine that made a mount namespace while this mount
    // existed (another test's unshare) also holds it, and is found first: either way the
    // session must end.
    let log = m.log();
    assert!(
        log.contains("aborting the connection") || log.contains("another mount namespace"),
        "{log}"
    );
    assert!(log.contains("iifs unmounted"), "a clean shutdown:\n{log}");
    assert!(
        !o.status.success() && text(&o.stderr).contains("not connected"),
        "the copy answers ENOTCONN: {}",
        text(&o.stderr)
    );
    m.stop();
    m.start_again();
    assert_eq!(m.status("pinned")["state"], "idle");
}

// ---- defect 13: -H HOST over ssh ----

/// A stand-in for ssh: records its arguments (one per line) and runs the command locally. Like
/// ssh, it gives the command a terminal only when asked with -t: otherwise the command's
/// stdin and stdout are pipes. A host named `down` fails as ssh does, with 255.
fn fake_ssh(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let argv = dir.join("ssh-argv");
    let script = bin.join("fake-ssh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
: > '{argv}'
for a in "$@"; do printf '%s\n' "$a" >> '{argv}'; done
tty=no
while [ "$1" != "--" ]; do [ "$1" = "-t" ] && tty=yes; shift; done
shift; host=$1; shift
[ "$host" = down ] && {{ echo "ssh: connect to host down port 22: Connection refused" >&2; exit 255; }}
if [ $tty = yes ]; then exec sh -c "$1"; fi
{{ cat | sh -c "$1"; echo $? > '{argv}.rc'; }} | cat
exit "$(cat '{argv}.rc')"
"#,
            argv = argv.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod 755 {}", script.display()));
    // The remote side runs `iiadm`: this build's.
    std::os::unix::fs::symlink(IIADM, bin.join("iiadm")).unwrap();
    (script, argv)
}

fn recorded(argv: &Path) -> Vec<String> {
    std::fs::read_to_string(argv)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn remote_commands_get_a_terminal_when_iiadm_has_one_and_pass_ssh_failures_through() {
    let m = mount_or_skip!();
    let (master, _) = dep_set(&m, "r");
    m.write_at("sets/r/shadow", 0, &pattern(8192, 4));
    let before = file_bytes(&master);
    let (ssh, argv) = fake_ssh(m.dir.path());
    let ssh_setting = format!("{} -p 2222  -o BatchMode=yes", ssh.display());
    let path = format!(
        "{}:{}",
        ssh.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let remote = |args: &[&str]| {
        Command::new(IIADM)
            .args(args)
            .env("IIADM_SSH", &ssh_setting)
            .env("IIFS_MOUNT", &m.mnt)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // Not on a terminal: no -t, the setting's words first (ssh keeps the first value of an
    // option, so the user's win), then iiadm's persistent connection, then the command.
    let o = remote(&["-H", "db1", "-i", "r"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("r: dependent set, idle"),
        "{}",
        text(&o.stdout)
    );
    let args = recorded(&argv);
    assert_eq!(&args[..4], ["-p", "2222", "-o", "BatchMode=yes"]);
    assert_eq!(&args[4..6], ["-o", "ControlMaster=auto"]);
    assert!(
        args[7].starts_with("ControlPath=") && args[9].starts_with("ControlPersist="),
        "{args:?}"
    );
    assert_eq!(&args[14..], ["--", "db1", "iiadm -i r"]);
    // The remote iiadm's refusal (1) and ssh's own failure (255) come back as they are.
    assert_eq!(
        remote(&["-H", "db1", "-d", "nosuch"]).status.code(),
        Some(1)
    );
    let o = remote(&["-H", "down", "-l"]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));

    // On a terminal (script(1) gives iiadm one): ssh -t, so the remote iiadm asks before
    // overwriting the master; "n" leaves it untouched.
    let on_tty = |answer: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '{answer}\\n' | script -qec \"{IIADM} -H db1 -u m r\" /dev/null"
            ))
            .env("IIADM_SSH", &ssh_setting)
            .env("IIFS_MOUNT", &m.mnt)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let o = on_tty("n");
    let screen = text(&o.stdout);
    assert!(
        screen.contains("Overwrite master") && screen.contains("not confirmed"),
        "{screen}"
    );
    let args = recorded(&argv);
    assert_eq!(&args[..4], ["-p", "2222", "-o", "BatchMode=yes"]);
    assert_eq!(&args[14..16], ["-t", "--"]);
    assert_same(&file_bytes(&master), &before, "declined: master untouched");
    let o = on_tty("y");
    assert!(o.status.success(), "{}", text(&o.stdout));
    m.set_ok("r", "wait");
    assert_same(&file_bytes(&master)[..8192], &pattern(8192, 4), "confirmed");

    // On several hosts each remote iiadm runs without a terminal and would not ask: iiadm
    // asks once, naming the hosts, and "n" sends nothing anywhere.
    m.write_at("sets/r/shadow", 0, &pattern(8192, 5));
    let before = file_bytes(&master);
    let _ = std::fs::remove_file(&argv);
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'n\\n' | script -qec \"{IIADM} -H db1,db2 -u m r\" /dev/null"
        ))
        .env("IIADM_SSH", &ssh_setting)
        .env("IIFS_MOUNT", &m.mnt)
        .env("PATH", &path)
        .output()
        .unwrap();
    let screen = text(&o.stdout);
    assert!(
        screen.contains("Overwrite the master of set r with its shadow on 2 host(s): db1, db2?")
            && screen.contains("not confirmed"),
        "{screen}"
    );
    assert!(
        !argv.exists(),
        "nothing may reach a host when not confirmed"
    );
    assert_same(&file_bytes(&master), &before, "declined on several hosts");
}

// ---- defect 29: the PR_SET_IO_FLUSHER warning ----

#[test]
fn the_io_flusher_warning_names_the_capability_and_the_risk() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let log_path = dir.path().join("log");
    let mut child = Command::new("setpriv")
        .args([
            "--inh-caps=-sys_resource",
            "--bounding-set=-sys_resource",
            BIN,
        ])
        .arg("none")
        .arg(&mnt)
        .arg("-f")
        .arg("-o")
        .arg(format!("state_dir={}", dir.path().join("state").display()))
        .stdin(Stdio::null())
        .stderr(File::create(&log_path).unwrap())
        .spawn()
        .expect("run setpriv (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(&mnt) {
        assert!(Instant::now() < deadline, "iifs did not mount");
        assert!(child.try_wait().unwrap().is_none(), "iifs exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("PR_SET_IO_FLUSHER"))
        .unwrap_or_else(|| panic!("no PR_SET_IO_FLUSHER line:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("CAP_SYS_RESOURCE") && line.contains("deadlock"),
        "{line}"
    );
}
