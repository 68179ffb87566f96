//! Hostile tests of iiadm across hosts (a review of "many hosts"): hostile host lists and
//! inventories, arguments that must survive the remote shell, the cross-host instant when
//! sessions die or overlap, holds against discards, odd remote output, watches whose reader
//! goes away, and the daemon's stop with readers of its change stream.
//!
//! Each test asserts the correct behaviour: a failing test is a finding.

#[path = "common/hosts.rs"]
mod hosts;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use hosts::{ok, show, text, Fleet, Host, IIADM};

macro_rules! fleet_or_skip {
    ($n:expr) => {
        match Fleet::start($n) {
            Some(f) => f,
            None => return,
        }
    };
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run `c` to its end, killed after `limit`; None when it had to be killed.
fn run_limited(mut c: Command, limit: Duration) -> (Option<Output>, Duration) {
    let t0 = Instant::now();
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (mut o, mut e) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let ot = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = o.read_to_end(&mut v);
        v
    });
    let et = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = e.read_to_end(&mut v);
        v
    });
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let took = t0.elapsed();
            return (
                Some(Output {
                    status,
                    stdout: ot.join().unwrap(),
                    stderr: et.join().unwrap(),
                }),
                took,
            );
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (None, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An independent set SET (1 MiB) on every host of `hosts`, its first copy done.
fn enable_ind(f: &Fleet, hosts: &[usize], set: &str) -> [String; 3] {
    let mut paths = None;
    for &i in hosts {
        let h = f.host(i);
        paths = Some([
            h.volume(&format!("m-{set}.img"), 1 << 20),
            h.volume(&format!("s-{set}.img"), 1 << 20),
            h.volume(&format!("b-{set}.img"), 0),
        ]);
    }
    let [m, s, b] = paths.unwrap();
    let list = list(f, hosts);
    ok(
        f.iiadm(&["-H", &list, "-e", "ind", &m, &s, &b, set]),
        "enable",
    );
    ok(f.iiadm(&["-H", &list, "-w", set]), "first copy");
    [m, s, b]
}

fn list(f: &Fleet, hosts: &[usize]) -> String {
    hosts
        .iter()
        .map(|&i| f.host(i).name.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// Set s in group g on every host.
fn group_ready(f: &Fleet) {
    let all: Vec<usize> = (0..f.len()).collect();
    enable_ind(f, &all, "s");
    let l = list(f, &all);
    ok(f.iiadm(&["-H", &l, "-C", "g"]), "create g");
    ok(f.iiadm(&["-H", &l, "-M", "s", "g"]), "add s to g");
}

fn held(h: &Host) -> bool {
    h.status("s")
        .get("hold_until")
        .is_some_and(|v| v.as_str() != "-")
}

/// Wait until `cond` holds, up to `within`; whether it did.
fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids (in the host's pid namespace) of processes whose command line contains `needle`.
/// (`needle` starts with a letter: written `[x]rest` so that the shell running pgrep, whose
/// command line holds the pattern, does not match.)
fn pids_in(h: &Host, needle: &str) -> Vec<String> {
    let pattern = format!("[{}]{}", &needle[..1], &needle[1..]);
    let out = h.sh(&format!("pgrep -f -- '{pattern}' || true"));
    text(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A write to host h's master of set s ends within `within`.
fn write_ends_within(h: &Host, within: Duration) -> bool {
    let path = h.mnt("sets/s/master");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open master");
        f.write_all_at(&[0x77; 4096], 8192).expect("write master");
        let _ = tx.send(());
    });
    rx.recv_timeout(within).is_ok()
}

// ---------------------------------------------------------------------------------------
// Host lists, inventories, control sockets: with a fake ssh that records what it is given.

/// A fake ssh: logs its arguments (one a line, then a `--end--` line) to LOG and prints
/// nothing; exit 0.
fn fake_ssh(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("ssh.log");
    let prog = dir.join("fake-ssh");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> {log}\n\
             echo --end-- >> {log}\nexit 0\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    (prog, log)
}

fn fake_iiadm(dir: &Path, args: &[&str], prog: &Path) -> Output {
    Command::new(IIADM)
        .args(args)
        .env("IIADM_SSH", prog)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env_remove("IIFS_MOUNT")
        .env_remove("ANSIBLE_INVENTORY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn have_ansible_inventory() -> bool {
    Command::new("sh")
        .args(["-c", "command -v ansible-inventory"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An inventory host's ansible_host / ansible_user / ansible_port become ssh's destination
/// and -p: they must pass the same check as a -H entry (an option, a shell metacharacter,
/// a space, a newline: refused), or a ProxyCommand with %h/%r in the user's ssh_config (ssh
/// before 9.6 does not check them) runs them in a shell on the console, as root.
#[test]
fn inventory_connection_variables_are_checked_like_host_entries() {
    if !have_ansible_inventory() {
        eprintln!("SKIPPED: no ansible-inventory");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let (prog, log) = fake_ssh(dir.path());
    let cases = [
        ("ansible_host", "$(touch /tmp/iifs-pwned)"),
        ("ansible_host", "-oProxyCommand=touch /tmp/iifs-pwned"),
        ("ansible_user", "x`id`"),
        ("ansible_user", "root -oProxyCommand=x"),
        ("ansible_port", "22 -oProxyCommand=x"),
        ("ansible_host", "h1\nh2"),
    ];
    let mut failures = Vec::new();
    for (k, v) in cases {
        let _ = std::fs::remove_file(&log);
        let inv = dir.path().join("inv.json");
        let doc = serde_json::json!({
            "evil": {"hosts": {"e1": {k: v}, "ok1": {}}}
        });
        // YAML is a superset of JSON: ansible reads it with its yaml plugin.
        std::fs::write(dir.path().join("inv.yml"), doc.to_string()).unwrap();
        let _ = inv;
        let out = fake_iiadm(
            dir.path(),
            &[
                "-H",
                "@evil",
                "--inventory",
                dir.path().join("inv.yml").to_str().unwrap(),
                "-l",
            ],
            &prog,
        );
        let sent = std::fs::read_to_string(&log).unwrap_or_default();
        if out.status.code() != Some(2) || sent.contains(v) {
            failures.push(format!(
                "{k}={v:?}: exit {:?}, ssh was given:\n{sent}\nstderr: {}",
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "hostile inventory values reached ssh:\n{}",
        failures.join("\n---\n")
    );
}

/// -H entries that are options or hold shell or ssh syntax never reach ssh.
#[test]
fn hostile_host_entries_are_refused_before_ssh() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let (prog, log) = fake_ssh(dir.path());
    for bad in [
        "-oProxyCommand=touch /tmp/x",
        "h1;reboot",
        "h1 h2",
        "h1\nh2",
        "$(id)",
        "h1'",
        "h1,-p1",
    ] {
        let out = fake_iiadm(dir.path(), &["-H", bad, "-l"], &prog);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", show(&out));
        assert!(!log.exists(), "{bad:?} reached ssh");
    }
    // In a hosts file too.
    let file = dir.path().join("hosts");
    std::fs::write(&file, "ok1\n-oProxyCommand=x\n").unwrap();
    let out = fake_iiadm(
        dir.path(),
        &["--hosts-file", file.to_str().unwrap(), "-l"],
        &prog,
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(!log.exists(), "a hosts file's option reached ssh");
    // A very long name is only a long name: no crash.
    let long = "a".repeat(100_000);
    let out = fake_iiadm(dir.path(), &["-H", &long, "-l"], &prog);
    assert!(out.status.code().is_some(), "{}", show(&out));
}

/// `-nH h1,h2 -u m s` (the natural way to write "no confirmation, on these hosts"): -n takes
/// no value, so -H must still be taken out of the remote command line; left in, every host's
/// iiadm would ssh on to h1 and h2 itself.
#[test]
fn host_option_after_no_confirm_in_one_cluster_is_not_sent_to_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let (prog, log) = fake_ssh(dir.path());
    let out = fake_iiadm(dir.path(), &["-nH", "h1,h2", "-l"], &prog);
    assert!(out.status.success(), "{}", show(&out));
    let sent = std::fs::read_to_string(&log).unwrap_or_default();
    let remote: Vec<&str> = sent.lines().filter(|l| l.starts_with("iiadm")).collect();
    assert_eq!(remote.len(), 2, "{sent}");
    for r in remote {
        assert!(
            !r.contains("h1,h2") && !r.contains("-nH") && !r.contains("H"),
            "the remote command line still names the hosts: {r:?}"
        );
    }
}

/// The console's own IIFS_MOUNT (its local mount) is not the hosts' mount: the fan-out does
/// not pass it on, and neither may --group-pit (an explicit --mount is passed on).
#[test]
fn group_pit_does_not_send_the_consoles_iifs_mount_to_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let (prog, log) = fake_ssh(dir.path());
    let out = Command::new(IIADM)
        .args(["-H", "h1,h2", "--group-pit", "g", "--timeout", "1"])
        .env("IIADM_SSH", &prog)
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .env("IIFS_MOUNT", "/console/only/mount")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let sent = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !sent.contains("/console/only/mount"),
        "the console's IIFS_MOUNT went to the hosts:\n{sent}\n{}",
        show(&out)
    );
    // Whereas the fan-out does not pass it on.
    let _ = std::fs::remove_file(&log);
    let _ = Command::new(IIADM)
        .args(["-H", "h1,h2", "-l"])
        .env("IIADM_SSH", &prog)
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .env("IIFS_MOUNT", "/console/only/mount")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let sent = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!sent.contains("/console/only/mount"), "{sent}");
}

/// The ControlPath ssh is given, from the fake ssh's log.
fn control_path(log: &Path) -> Option<String> {
    let sent = std::fs::read_to_string(log).unwrap_or_default();
    sent.lines()
        .find_map(|l| l.strip_prefix("ControlPath="))
        .map(str::to_string)
}

/// Root with an XDG_RUNTIME_DIR that belongs to another user (`sudo -E`, `su` without `-`):
/// that user can swap iiadm-ssh under root's feet and hand root's sessions (and their
/// stdio) to a control socket of theirs. The sockets must not go under a directory another
/// user can write.
#[test]
fn control_sockets_never_go_under_a_directory_another_user_owns() {
    if !root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (prog, log) = fake_ssh(dir.path());
    let theirs = dir.path().join("user-runtime");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: chown of a path we made.
    let c = std::ffi::CString::new(theirs.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    let out = Command::new(IIADM)
        .args(["-H", "h1,h2", "-l"])
        .env("IIADM_SSH", &prog)
        .env("XDG_RUNTIME_DIR", &theirs)
        .env_remove("IIFS_MOUNT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    if let Some(p) = control_path(&log) {
        assert!(
            !p.starts_with(theirs.to_str().unwrap()),
            "root's control sockets go under a directory owned by uid 65534: {p}"
        );
    }
}

/// An unprivileged user without XDG_RUNTIME_DIR: /tmp/iiadm-ssh-UID made beforehand by
/// someone else, or a symlink, is not used.
#[test]
fn a_hostile_tmp_control_dir_is_not_used() {
    if !root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (prog, log) = fake_ssh(dir.path());
    // The fake ssh's log must be writable by the user.
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let uid = 65534;
    let target = tmp.join(format!("iiadm-ssh-{uid}"));
    let run_as_user = || {
        std::fs::write(&log, "").unwrap();
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                IIADM,
                "-H",
                "h1,h2",
                "-l",
            ])
            .env("IIADM_SSH", &prog)
            .env("TMPDIR", &tmp)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("IIFS_MOUNT")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out, control_path(&log))
    };
    // Made by root (another user), mode 0777.
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (out, cp) = run_as_user();
    if out.status.code() == Some(126) || out.status.code() == Some(127) {
        eprintln!("SKIPPED: cannot run iiadm as uid 65534: {}", show(&out));
        return;
    }
    assert!(out.status.success(), "{}", show(&out));
    assert!(cp.is_none(), "a directory of root's used: {cp:?}");
    // A symlink to a directory of the user's own elsewhere.
    std::fs::remove_dir(&target).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    let c = std::ffi::CString::new(elsewhere.to_str().unwrap()).unwrap();
    // SAFETY: chown of a path we made.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, uid) }, 0);
    std::os::unix::fs::symlink(&elsewhere, &target).unwrap();
    let (out, cp) = run_as_user();
    assert!(out.status.success(), "{}", show(&out));
    assert!(cp.is_none(), "a symlinked control dir used: {cp:?}");
    // Nothing there: made 0700 and used.
    std::fs::remove_file(&target).unwrap();
    let (out, cp) = run_as_user();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        cp.as_deref(),
        Some(format!("{}/%C", target.display()).as_str()),
        "its own directory is used"
    );
}

/// A host's usage error (exit 2) ends with clap's "For more information, try 'iiadm
/// --help'." after the real reason: the summary must give the reason (the `iiadm: ` line),
/// not that trailer.
#[test]
fn the_summary_gives_a_hosts_reason_not_its_usage_trailer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let prog = dir.path().join("refusing-ssh");
    std::fs::write(
        &prog,
        "#!/bin/sh\necho \"iiadm: the path 'x y' cannot be passed to iifs\" >&2\n\
         echo >&2\necho 'Usage: iiadm [OPTIONS]' >&2\n\
         echo \"For more information, try 'iiadm --help'.\" >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = fake_iiadm(dir.path(), &["-H", "h1,h2", "-l"], &prog);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let summary = text(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.contains("cannot be passed to iifs") && !summary.contains("For more information"),
        "the summary's reason is clap's trailer: {summary}"
    );
}

// ---------------------------------------------------------------------------------------
// Arguments through the remote shell.

/// A volume path with a space, a single quote, a double quote, `$(...)` and a backslash: the
/// hosts' iiadm gets it verbatim (the set is enabled on those exact files), and nothing of it
/// runs in the remote shell.
#[test]
fn remote_arguments_survive_the_remote_shell_verbatim() {
    let f = fleet_or_skip!(2);
    let name = "m-it's-\"odd\"-$(touch${IFS}pwned)-`id`-\\.img";
    for i in 0..2 {
        let h = f.host(i);
        std::fs::File::create(h.path(&format!("/run/vol/{name}")))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        h.volume("s-q.img", 1 << 20);
        h.volume("b-q.img", 0);
    }
    let m = format!("/run/vol/{name}");
    let out = f.iiadm(&[
        "-H",
        "h1,h2",
        "-e",
        "ind",
        &m,
        "/run/vol/s-q.img",
        "/run/vol/b-q.img",
        "q",
    ]);
    ok(out, "enable with an odd master path");
    let out = ok(f.iiadm(&["-H", "h1,h2", "-l", "--json"]), "list");
    let s = text(&out.stdout);
    for l in s.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(
            v["result"]
                .to_string()
                .contains(&serde_json::to_string(&m).unwrap()),
            "the master path came back changed: {l}"
        );
    }
    for i in 0..2 {
        assert!(
            !f.host(i).path("/root/pwned").exists() && !f.host(i).path("/pwned").exists(),
            "the remote shell ran part of an argument"
        );
    }
    // A newline in an argument arrives as one (refused by the host as a bad name, not split).
    let out = f.iiadm(&["-H", "h1,h2", "-i", "q\n-l"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        !text(&out.stdout).contains("/run/vol/s-q.img"),
        "the newline split the remote command: {}",
        show(&out)
    );
}

/// A host whose iiadm prints a line that is not UTF-8 (a path in another encoding): the
/// fan-out passes it on (lossily) and every line after it, and --json still gives the
/// host's output.
#[test]
fn fan_out_passes_on_output_that_is_not_utf8() {
    let f = fleet_or_skip!(2);
    // h1's iiadm prints a Latin-1 line before and a marker line after its own output.
    f.host(0).sh_ok("rm /usr/local/sbin/iiadm");
    let real = hosts::IIADM;
    std::fs::write(
        f.host(0).path("/usr/local/sbin/iiadm"),
        format!("#!/bin/sh\nprintf 'caf\\351\\n'\n{real} \"$@\"\necho after-the-odd-line\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        f.host(0).path("/usr/local/sbin/iiadm"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = ok(f.iiadm(&["-H", "h1,h2", "-l"]), "-l");
    let s = text(&out.stdout);
    assert!(
        s.lines().any(|l| l == "h1: after-the-odd-line"),
        "lines after a non-UTF-8 line are lost:\n{}",
        show(&out)
    );
    let out = ok(f.iiadm(&["-H", "h1,h2", "-l", "--json"]), "-l --json");
    let h1 = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["host"] == "h1")
        .unwrap();
    assert!(
        h1["result"]
            .as_str()
            .is_some_and(|r| r.contains("after-the-odd-line")),
        "h1's output is gone from --json: {h1}"
    );
}

// ---------------------------------------------------------------------------------------
// The cross-host instant.

/// A hold session of our own on host h (as the console would run it), after its `held`.
struct OwnSession {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl OwnSession {
    fn start(h: &Host, lease: &str) -> OwnSession {
        let mut child = h
            .command("iiadm", &["--hold-session", "g", "--lease", lease])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let s = OwnSession { child, lines: rx };
        assert_eq!(s.next(), "held");
        s
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| "(nothing)".into())
    }

    fn say(&mut self, w: &str) {
        let i = self.child.stdin.as_mut().unwrap();
        let _ = writeln!(i, "{w}").and_then(|()| i.flush());
    }

    fn end(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Two cross-host instants on the same group at once (two consoles, or a console and a
/// playbook): one's `release` must not end the other's hold while that one still counts on
/// it (it would `update` outside any hold, and its hosts' images would not be one cut).
/// Either the second hold is refused, or the first session's hold outlives the other's
/// release.
#[test]
fn one_hold_sessions_release_does_not_end_anothers_hold() {
    let f = fleet_or_skip!(2);
    group_ready(&f);
    // Another instant's session on h1, which has said `held` and is about to update.
    let mut other = OwnSession::start(f.host(0), "30");
    let out = f.iiadm(&["-H", "h1,h2", "--group-pit", "g", "--json"]);
    let reply: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap_or(Value::Null);
    let h1_refused = reply["hosts"][0]["point_in_time"] == "old";
    let still_held = held(f.host(0));
    // What the other session does next: update, believing the writes are held.
    other.say("update");
    let said = other.next();
    other.say("release");
    other.end();
    assert!(
        h1_refused || still_held,
        "the group-pit released h1's hold under another session, which then said {said:?} \
         to an update made with writes flowing: {}",
        show(&out)
    );
}

/// A host whose hold is lost (its session ends) before every other host holds: the hold
/// phase failed, so nobody may update (the README: a host that does not hold means no host
/// updates); and that host is known to be old, not "unknown".
#[test]
fn a_hold_lost_before_every_host_held_means_nobody_updates() {
    let f = fleet_or_skip!(2);
    group_ready(&f);
    ok(
        f.iiadm(&["-H", "h1,h2", "--group-pit", "g"]),
        "a first instant",
    );
    let pit: Vec<String> = (0..2)
        .map(|i| f.host(i).status("s")["pit_time"].clone())
        .collect();
    std::thread::sleep(Duration::from_millis(1100));
    f.host(1).pause_daemon();
    let mut console = f
        .iiadm_command(&[
            "-H",
            "h1,h2",
            "--group-pit",
            "g",
            "--timeout",
            "8",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let h1_held = until(Duration::from_secs(6), || held(f.host(0)));
    // h1's session ends: its remote iiadm is killed.
    let pids = pids_in(f.host(0), "hold-session");
    for p in &pids {
        f.host(0).sh(&format!("kill -TERM {p}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    f.host(1).resume_daemon();
    let mut out = String::new();
    console
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = console.wait();
    assert!(h1_held && !pids.is_empty(), "h1 never held: {out}");
    let h2_pit = f.host(1).status("s")["pit_time"].clone();
    // Let the held h1 go before asserting (its lease), not to leave writes waiting.
    f.host(0).iiadm(&["-g", "g", "--release"]);
    assert_eq!(
        h2_pit, pit[1],
        "h2 updated although h1's hold was lost before h2 held: {out}"
    );
    let reply: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    assert_eq!(reply["hosts"][0]["point_in_time"], "old", "{out}");
}

/// `iiadm --hold-session` whose process is ended by a signal (sshd's SIGHUP, an admin's
/// SIGTERM) releases at once, as a lost session does, rather than leaving the host's writes
/// waiting for the whole lease.
#[test]
fn a_hold_session_ended_by_a_signal_releases_at_once() {
    let f = fleet_or_skip!(1);
    group_ready(&f);
    for sig in ["TERM", "HUP", "INT"] {
        let s = OwnSession::start(f.host(0), "30");
        assert!(held(f.host(0)));
        let pids = pids_in(f.host(0), "hold-session");
        for p in &pids {
            f.host(0).sh(&format!("kill -{sig} {p}"));
        }
        let released = until(Duration::from_secs(2), || !held(f.host(0)));
        f.host(0).iiadm(&["-g", "g", "--release"]);
        s.end();
        assert!(
            released,
            "a hold session ended by SIG{sig} left its hold for the lease (30 s)"
        );
    }
}

/// A hold session fed nothing: its lease ends the hold; fed garbage: each line refused, the
/// end of input releases; an update too near the lease's end refused.
#[test]
fn a_hold_session_fed_nothing_or_garbage_ends_its_hold() {
    let f = fleet_or_skip!(1);
    group_ready(&f);
    let h = f.host(0);
    // Nothing, for longer than the lease.
    let mut quiet = h
        .command(
            "sh",
            &[
                "-c",
                "sleep 6 | iiadm --hold-session g --lease 2; echo rc=$?",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(until(Duration::from_secs(2), || held(h)), "never held");
    assert!(
        until(Duration::from_secs(3), || !held(h)),
        "held past its 2 s lease"
    );
    assert!(write_ends_within(h, Duration::from_secs(1)));
    let _ = quiet.wait();
    // Garbage, then an update 1 s before the end of a 2 s lease: refused, nothing updated.
    let pit = h.status("s")["pit_time"].clone();
    std::thread::sleep(Duration::from_millis(1100));
    let out = h.sh(
        "(printf 'garbage\\n\\001\\377\\n%s\\n' \"$(head -c 100000 /dev/zero | tr '\\0' x)\"; \
         sleep 1; echo update) | iiadm --hold-session g --lease 2",
    );
    let s = text(&out.stdout);
    assert!(s.starts_with("held\n"), "{}", show(&out));
    assert!(s.contains("refused 'garbage'"), "{}", show(&out));
    assert!(
        s.lines().any(|l| l.starts_with("released ")),
        "{}",
        show(&out)
    );
    assert!(
        !s.lines().any(|l| l == "updated"),
        "an update under a lease about to end: {}",
        show(&out)
    );
    assert_eq!(h.status("s")["pit_time"], pit);
    assert!(!held(h));
}

/// The console iiadm killed (SIGKILL, a closed console page) in the middle of a
/// --group-pit: every host's hold goes at once with its session, and a host that holds only
/// later (its daemon was slow) lets go at once too: no host stays held for its lease.
#[test]
fn killing_the_console_mid_group_pit_releases_every_host_promptly() {
    let f = fleet_or_skip!(2);
    group_ready(&f);
    f.host(1).pause_daemon();
    let mut console = f
        .iiadm_command(&["-H", "h1,h2", "--group-pit", "g", "--timeout", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let h1_held = until(Duration::from_secs(8), || held(f.host(0)));
    console.kill().unwrap();
    let _ = console.wait();
    let killed = Instant::now();
    let h1_released = until(Duration::from_secs(3), || !held(f.host(0)));
    let h1_took = killed.elapsed();
    f.host(1).resume_daemon();
    let resumed = Instant::now();
    // h2's late hold: its session is gone, so it releases as soon as it has held.
    std::thread::sleep(Duration::from_millis(300));
    let h2_released = until(Duration::from_secs(3), || !held(f.host(1)));
    let h2_took = resumed.elapsed();
    for i in 0..2 {
        f.host(i).iiadm(&["-g", "g", "--release"]);
    }
    assert!(h1_held, "h1 never held");
    assert!(
        h1_released,
        "h1 still held {h1_took:?} after the console died"
    );
    assert!(
        h2_released,
        "h2 still held {h2_took:?} after its daemon went on"
    );
}

/// A held master takes discards (fallocate PUNCH_HOLE) as writes: they wait. They must wait
/// without taking the daemon's FUSE threads (as held writes do), or a couple of them leave
/// no thread to take the `release` (or the cross-host `update`), and every write of the host
/// waits for the whole lease.
#[test]
fn held_discards_do_not_keep_the_release_out() {
    let f = fleet_or_skip!(1);
    enable_ind(&f, &[0], "s");
    enable_ind(&f, &[0], "t");
    let h = f.host(0);
    ok(h.iiadm(&["--hold", "8", "s"]), "hold s");
    ok(h.iiadm(&["--hold", "8", "t"]), "hold t");
    // Discards on both masters (the daemon has 2 FUSE threads by default; the kernel sends
    // one fallocate of a file at a time), each from its own process.
    let mut punches = Vec::new();
    for set in ["s", "t", "s", "t"] {
        punches.push(
            h.command(
                "fallocate",
                &[
                    "-p",
                    "-o",
                    "0",
                    "-l",
                    "4096",
                    &format!("/mnt/iifs/sets/{set}/master"),
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let (out, took) = run_limited(
        h.command("iiadm", &["--release", "s"]),
        Duration::from_secs(12),
    );
    h.iiadm(&["--release", "t"]);
    for mut p in punches {
        let _ = p.wait();
    }
    let out = out.expect("iiadm --release ran");
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        took < Duration::from_secs(3),
        "--release took {took:?} with discards waiting on the hold (lease 8 s)"
    );
}

// ---------------------------------------------------------------------------------------
// Watching.

/// `iiadm -H ... --watch` whose reader goes away (`| head -1`): it ends promptly, even while
/// no event comes, and so do the hosts' own `iiadm --watch`.
#[test]
fn a_fan_out_watch_ends_with_its_reader_and_so_do_the_remote_watchers() {
    let f = fleet_or_skip!(2);
    let mut w = f
        .iiadm_command(&["-H", "h1,h2", "--watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(w.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    let remote = until(Duration::from_secs(5), || {
        (0..2).all(|i| !pids_in(f.host(i), "iiadm --watch").is_empty())
    });
    drop(out);
    let closed = Instant::now();
    let ended = until(Duration::from_secs(3), || w.try_wait().unwrap().is_some());
    let took = closed.elapsed();
    if !ended {
        let _ = w.kill();
    }
    let _ = w.wait();
    assert!(remote, "the hosts' watchers never started");
    assert!(
        ended,
        "the console watch still ran {took:?} after its reader left"
    );
    let gone = until(Duration::from_secs(3), || {
        (0..2).all(|i| pids_in(f.host(i), "iiadm --watch").is_empty())
    });
    assert!(gone, "a host's iiadm --watch outlived the console's");
}

// ---------------------------------------------------------------------------------------
// The daemon's stop.

/// A clean stop (SIGTERM) with readers of the change stream: a reader blocked in read gets
/// the end of the stream, and the daemon is gone within about a second.
#[test]
fn the_daemon_stops_promptly_with_readers_of_events() {
    let f = fleet_or_skip!(1);
    let h = f.host(0);
    let pid = text(
        &h.sh("cat /mnt/iifs/events > /dev/null 2>&1 & cat /mnt/iifs/events >/dev/null 2>&1 & echo $!")
            .stdout,
    );
    assert!(!pid.trim().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let daemon = h.term_daemon();
    let t0 = Instant::now();
    let gone = until(Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{daemon}")).exists()
    });
    let took = t0.elapsed();
    assert!(
        gone,
        "iifs still runs {took:?} after SIGTERM with two readers of events"
    );
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
}

/// A reader that opened the change stream and does not read (a watch whose own output is
/// blocked: `iiadm --watch | less`, paged away): a clean stop must still end the daemon,
/// not leave it serving a lazily detached mount for as long as the reader lives.
#[test]
fn the_daemon_stops_with_an_idle_holder_of_events() {
    let f = fleet_or_skip!(1);
    let h = f.host(0);
    let holder = text(
        &h.sh("sleep 60 < /mnt/iifs/events > /dev/null 2>&1 & echo $!")
            .stdout,
    )
    .trim()
    .to_string();
    std::thread::sleep(Duration::from_millis(300));
    let daemon = h.term_daemon();
    let t0 = Instant::now();
    let gone = until(Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{daemon}")).exists()
    });
    let took = t0.elapsed();
    // Our holder goes, and the daemon with it, whatever the outcome.
    h.sh(&format!("kill {holder}"));
    assert!(
        gone,
        "iifs still runs {took:?} after SIGTERM while a process holds events open"
    );
}
