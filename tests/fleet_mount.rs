//! iiadm across hosts (issue 14) against real test hosts: network namespaces with their own
//! sshd and iifs daemon each (tests/common/hosts.rs), reached over real ssh from this process,
//! the console. Fan-out (-H lists, --hosts-file, @GROUP of an Ansible inventory), its output,
//! summary and exit status; --watch across hosts; and the cross-host instant (--group-pit),
//! whose acceptance test checks that the images of all hosts form one consistent cut of a
//! stream of writes that goes from host to host.

#[path = "common/hosts.rs"]
mod hosts;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;

use hosts::{ok, show, text, Fleet, Host};

/// Starts a fleet or returns from the test (skipped loudly outside CI).
macro_rules! fleet_or_skip {
    ($n:expr) => {
        match Fleet::start($n) {
            Some(f) => f,
            None => return,
        }
    };
}

/// Every stdout line of `out` as a JSON object.
#[track_caller]
fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{}", show(out)))
        })
        .collect()
}

/// Run `c` (its output captured), killing it should it not end within `limit`: a hang is a
/// failure with what it printed so far, not a test that never ends.
#[track_caller]
fn run_within(mut c: Command, limit: Duration, what: &str) -> (Output, Duration) {
    let t0 = Instant::now();
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let st = child.wait().expect("wait");
            let output = Output {
                status: st,
                stdout: o.join().unwrap(),
                stderr: e.join().unwrap(),
            };
            panic!("{what} did not end within {limit:?}:\n{}", show(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = t0.elapsed();
    (
        Output {
            status,
            stdout: o.join().unwrap(),
            stderr: e.join().unwrap(),
        },
        elapsed,
    )
}

/// The same three volumes at the same paths (inside) on each of `hosts`: m-SET, s-SET, b-SET.
fn volumes(f: &Fleet, hosts: &[usize], set: &str, size: u64) -> [String; 3] {
    let mut paths = None;
    for &i in hosts {
        let h = f.host(i);
        paths = Some([
            h.volume(&format!("m-{set}.img"), size),
            h.volume(&format!("s-{set}.img"), size),
            h.volume(&format!("b-{set}.img"), 0),
        ]);
    }
    paths.expect("some host")
}

/// An independent set SET enabled on `hosts` with one fan-out command, its first copy ended.
fn enable_ind(f: &Fleet, hosts: &[usize], set: &str, size: u64) {
    let [m, s, b] = volumes(f, hosts, set, size);
    let list = host_list(f, hosts);
    ok(
        f.iiadm(&["-H", &list, "-e", "ind", &m, &s, &b, set]),
        "enable",
    );
    ok(
        f.iiadm(&["-H", &list, "-w", set]),
        "wait for the first copy",
    );
}

fn host_list(f: &Fleet, hosts: &[usize]) -> String {
    hosts
        .iter()
        .map(|&i| f.host(i).name.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// The iiadm summary line on stderr (`iiadm: N of M hosts failed: ...`).
#[track_caller]
fn summary(out: &Output) -> String {
    text(&out.stderr)
        .lines()
        .find(|l| l.starts_with("iiadm: ") && l.contains(" hosts failed: "))
        .unwrap_or_else(|| panic!("no summary line:\n{}", show(out)))
        .to_string()
}

/// A write of 4 KiB to `host`'s master of `set` in a thread of its own; whether it ended
/// within `within`.
fn write_ends_within(h: &Host, set: &str, byte: u8, within: Duration) -> bool {
    let path = h.mnt(&format!("sets/{set}/master"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open master");
        f.write_all_at(&[byte; 4096], 0).expect("write master");
        let _ = tx.send(());
    });
    rx.recv_timeout(within).is_ok()
}

// ---------------------------------------------------------------------------------------
// The harness itself.

#[test]
fn harness_three_hosts_answer_and_leave_nothing_behind() {
    let f = fleet_or_skip!(3);
    eprintln!("3 hosts up in {:?}", f.startup);
    assert_eq!(f.names(), ["h1", "h2", "h3"]);
    let mut daemons = Vec::new();
    let mut pid1s = Vec::new();
    let mut netns = Vec::new();
    for (i, h) in f.hosts().iter().enumerate() {
        // Over ssh: the host's own hostname, iiadm on root's PATH, one iifs mount (its own).
        let out = ok(
            f.ssh(
                i,
                "hostname; command -v iiadm; iiadm -l; echo rc=$?; \
                 grep -c ' - fuse.iifs ' /proc/self/mountinfo",
            ),
            &h.name,
        );
        let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        assert_eq!(lines[0], h.name, "{}", show(&out));
        assert_eq!(lines[1], "/usr/local/sbin/iiadm", "{}", show(&out));
        assert!(lines.contains(&"rc=0".to_string()), "{}", show(&out));
        assert_eq!(lines.last().unwrap(), "1", "one iifs mount on {}", h.name);
        // The single-host -H (output passed through) through the fleet's ssh_config.
        ok(f.iiadm(&["-H", &h.name, "-l"]), "iiadm -H HOST -l");
        // The host's files from here, and commands inside it.
        assert!(
            h.mnt("ctl").exists(),
            "{}: ctl not seen through /proc/PID/root",
            h.name
        );
        assert_eq!(h.sh_ok("hostname").trim(), h.name);
        let vol = h.volume("probe.img", 1 << 20);
        assert_eq!(h.sh_ok(&format!("stat -c %s {vol}")).trim(), "1048576");
        daemons.push(h.daemon_pid().expect("daemon pid"));
        pid1s.push(h.pid);
        netns.push(h.netns.clone());
    }
    // Hosts are apart: a set enabled on h1 is not on h2.
    enable_ind(&f, &[0], "apart", 1 << 20);
    assert!(text(&ok(f.iiadm(&["-H", "h1", "-l"]), "-l").stdout).contains("apart"));
    assert!(!text(&ok(f.iiadm(&["-H", "h2", "-l"]), "-l").stdout).contains("apart"));
    // A host off the network fails over ssh; back on, it answers.
    f.host(2).network_down();
    let t0 = Instant::now();
    let probe = Command::new("ssh")
        .arg("-F")
        .arg(f.ssh_config())
        .args([
            "-o",
            "ConnectTimeout=2",
            "-o",
            "BatchMode=yes",
            "h3",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        probe.status.code(),
        Some(255),
        "h3 answered while off the network"
    );
    eprintln!("ssh to a host off the network failed in {:?}", t0.elapsed());
    f.host(2).network_up();
    ok(f.ssh(2, "true"), "h3 back on the network");
    // Its daemon stopped and started again: the state comes back.
    f.host(0).stop_daemon();
    assert!(!f.host(0).mounted());
    f.host(0).start_daemon();
    assert!(text(&ok(f.iiadm(&["-H", "h1", "-l"]), "-l").stdout).contains("apart"));

    let cfg = f.ssh_config().to_path_buf();
    drop(f);
    let listed = text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    );
    let links = text(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    );
    for ns in &netns {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left behind"
        );
        assert!(
            !listed.contains(ns.as_str()),
            "ip netns list still shows {ns}: {listed}"
        );
        assert!(
            !links.contains(&format!(": {ns}@")),
            "ip link still shows {ns}: {links}"
        );
    }
    for pid in daemons.iter().chain(&pid1s) {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} of a host is still running"
        );
    }
    // No ssh of ours is left (iiadm's connection masters included).
    let ps = text(
        &Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        !ps.contains(cfg.to_str().unwrap()),
        "an ssh with the fleet's config is still running:\n{ps}"
    );
    assert!(!cfg.exists(), "the fleet's temp dir is left behind");
}

// ---------------------------------------------------------------------------------------
// a. Fan-out.

#[test]
fn fan_out_runs_everywhere_names_each_host_and_sums_up_failures() {
    let f = fleet_or_skip!(3);
    let all = [0, 1, 2];
    // Enabled on every host by one command, at the same inside paths.
    enable_ind(&f, &all, "db", 1 << 20);

    // -l: every line a host prints, as `HOST: line`.
    let out = ok(f.iiadm(&["-H", "h1,h2,h3", "-l"]), "-l");
    let stdout = text(&out.stdout);
    for h in f.names() {
        let mine: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{h}: ")))
            .collect();
        assert_eq!(mine.len(), 1, "one line of {h}:\n{stdout}");
        assert!(mine[0].contains("db"), "{h}'s line names the set: {stdout}");
    }
    assert_eq!(
        stdout.lines().count(),
        3,
        "nothing but the hosts' lines:\n{stdout}"
    );
    assert!(text(&out.stderr).trim().is_empty(), "{}", show(&out));

    // -i all --json: one object per host, with the host and its own JSON output.
    let out = ok(
        f.iiadm(&["-H", "h1,h2,h3", "-i", "all", "--json"]),
        "-i all --json",
    );
    let objs = json_lines(&out);
    assert_eq!(objs.len(), 3, "{}", show(&out));
    let mut seen = BTreeSet::new();
    for o in &objs {
        let host = o["host"].as_str().expect("host key").to_string();
        assert_eq!(o["ok"], true, "{o}");
        assert_eq!(o["exit"], 0, "{o}");
        assert!(o["error"].is_null(), "{o}");
        assert!(
            o["result"].to_string().contains("\"db\""),
            "{host}'s result is its status of db: {o}"
        );
        assert!(
            !o["result"].is_string(),
            "the result is JSON, not text: {o}"
        );
        seen.insert(host);
    }
    assert_eq!(seen, f.names().into_iter().collect::<BTreeSet<_>>());
    // The result is what the host alone prints with --json.
    let alone: Value =
        serde_json::from_slice(&ok(f.host(1).iiadm(&["-i", "all", "--json"]), "-i").stdout)
            .expect("iiadm -i all --json on h2");
    let h2 = objs.iter().find(|o| o["host"] == "h2").unwrap();
    assert_eq!(
        strip_volatile(h2["result"].clone()),
        strip_volatile(alone),
        "h2's result is h2's own output"
    );

    // --hosts-file: comments, blank lines and USER@HOST entries.
    let file = f.dir().join("some-hosts");
    std::fs::write(
        &file,
        "# the database hosts\nh1\n\n  root@h2  \n# h4 is gone\nh3\n",
    )
    .unwrap();
    let out = ok(
        f.iiadm(&["--hosts-file", file.to_str().unwrap(), "-l"]),
        "--hosts-file -l",
    );
    let stdout = text(&out.stdout);
    for h in ["h1", "root@h2", "h3"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{h}: ")) && l.contains("db")),
            "{h} in the output of --hosts-file:\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    // The harness's own hosts file too.
    let out = ok(
        f.iiadm(&[
            "--hosts-file",
            f.hosts_file().to_str().unwrap(),
            "-i",
            "db",
            "--json",
        ]),
        "--hosts-file",
    );
    assert_eq!(json_lines(&out).len(), 3);

    // @GROUP of an Ansible inventory: the inventory names are shown, ansible_host reached.
    let inv = f.inventory();
    let out = ok(
        f.iiadm(&[
            "-H",
            "@fleet",
            "--inventory",
            inv.to_str().unwrap(),
            "-i",
            "db",
            "--json",
        ]),
        "@fleet",
    );
    let hosts: BTreeSet<String> = json_lines(&out)
        .iter()
        .map(|o| o["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        hosts,
        f.names().into_iter().collect::<BTreeSet<_>>(),
        "{}",
        show(&out)
    );
    // A group of two, mixed with a plain entry: every host once.
    let inv2 = f.inventory_with(&[("front", &[0, 1])]);
    let out = ok(
        f.iiadm(&[
            "-H",
            "@front,h3",
            "--inventory",
            inv2.to_str().unwrap(),
            "-l",
        ]),
        "@front,h3",
    );
    let stdout = text(&out.stdout);
    for h in f.names() {
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.starts_with(&format!("{h}: ")))
                .count(),
            1,
            "{h} once:\n{stdout}"
        );
    }
    // An unknown group is a usage error naming it, nothing run.
    let out = f.iiadm(&["-H", "@nosuch", "--inventory", inv.to_str().unwrap(), "-l"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(text(&out.stderr).contains("nosuch"), "{}", show(&out));
    assert!(text(&out.stdout).is_empty(), "{}", show(&out));

    // A command that fails on one host only: set `solo` exists on h1 and h3, not on h2.
    enable_ind(&f, &[0, 2], "solo", 1 << 20);
    let out = f.iiadm(&["-H", "h1,h2,h3", "-i", "solo"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("h1: ")),
        "h1's result printed: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("h3: ")),
        "h3's result printed: {stdout}"
    );
    assert!(!stdout.lines().any(|l| l.starts_with("h2: ")), "{stdout}");
    let h2_err: Vec<String> = text(&f.host(1).iiadm(&["-i", "solo"]).stderr)
        .lines()
        .map(str::to_string)
        .collect();
    let reason = h2_err.last().expect("h2's own error").clone();
    let reason = reason.strip_prefix("iiadm: ").unwrap_or(&reason);
    let sum = summary(&out);
    assert!(
        sum.starts_with("iiadm: 1 of 3 hosts failed: h2 (exit 1: "),
        "{sum}"
    );
    assert!(
        sum.contains(reason),
        "the summary gives h2's reason ({reason}): {sum}"
    );
    assert!(!sum.contains("h1") && !sum.contains("h3"), "{sum}");
    // Its stderr lines came through tagged.
    assert!(
        text(&out.stderr).lines().any(|l| l.starts_with("h2: ")),
        "{}",
        show(&out)
    );
    // The same with --json: h2's line says why; the others' results are there.
    let out = f.iiadm(&["-H", "h1,h2,h3", "-i", "solo", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let objs = json_lines(&out);
    assert_eq!(objs.len(), 3, "{}", show(&out));
    for o in &objs {
        if o["host"] == "h2" {
            assert_eq!(o["ok"], false, "{o}");
            assert_eq!(o["exit"], 1, "{o}");
            assert!(o["result"].is_null(), "{o}");
            assert!(o["error"].as_str().unwrap_or("").contains(reason), "{o}");
        } else {
            assert_eq!(o["ok"], true, "{o}");
            assert!(o["result"].to_string().contains("solo"), "{o}");
        }
    }
    summary(&out);
}

/// A host known only to the Ansible inventory (its name is no ssh host, its ansible_host is)
/// is reached as the inventory says, also alone with --only; one host left by --only answers
/// as -H HOST does (its output as it is).
#[test]
fn only_reaches_one_inventory_host_as_its_group_does() {
    let f = fleet_or_skip!(2);
    enable_ind(&f, &[1], "solo", 1 << 20);
    let dir = f.dir();
    let inventory = dir.join("alias.ini");
    std::fs::write(
        &inventory,
        format!("[web]\nweb-b ansible_host={}\n", f.host(1).addr),
    )
    .unwrap();
    let hosts_file = dir.join("alias-hosts");
    std::fs::write(&hosts_file, "@web\nh1\n").unwrap();
    let (inv, hf) = (inventory.to_str().unwrap(), hosts_file.to_str().unwrap());

    let out = ok(
        f.iiadm(&[
            "--hosts-file",
            hf,
            "--inventory",
            inv,
            "--only",
            "web-b",
            "-l",
        ]),
        "--only web-b",
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("ind ") && stdout.contains(" solo (idle)"),
        "web-b's own list, unprefixed: {stdout}"
    );
    // The same name without the inventory is no host ssh knows.
    let out = f.iiadm(&["-H", "web-b", "-l"]);
    assert_eq!(out.status.code(), Some(255), "{}", show(&out));
    // Several left: the usual per-host lines.
    let out = ok(
        f.iiadm(&[
            "--hosts-file",
            hf,
            "--inventory",
            inv,
            "--only",
            "h1,web-b",
            "-l",
        ]),
        "--only h1,web-b",
    );
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("web-b: ind ") && l.contains(" solo ")),
        "{}",
        show(&out)
    );
    // A name that is not one of the hosts: a usage error, nothing run.
    let out = f.iiadm(&["--hosts-file", hf, "--inventory", inv, "--only", "h9", "-l"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("--only names h9, which is not one of the hosts (web-b, h1)"),
        "{}",
        show(&out)
    );
}

#[test]
fn fan_out_names_an_unreachable_host_in_the_summary() {
    let f = fleet_or_skip!(3);
    // h1 and h2 reached by iiadm (their connections kept); h3 not yet.
    enable_ind(&f, &[0, 1], "db", 1 << 20);
    // A host off the network, never reached before: ssh's 255 for it, named in the summary;
    // the others' results printed.
    f.host(2).network_down();
    let (out, took) = run_within(
        f.iiadm_command(&["-H", "h1,h2,h3", "-l"]),
        Duration::from_secs(45),
        "-l with h3 off the network",
    );
    eprintln!("-l with h3 (not reached before) off the network took {took:?}");
    assert_eq!(out.status.code(), Some(255), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("h1: ") && l.contains("db")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("h2: ") && l.contains("db")),
        "{stdout}"
    );
    let sum = summary(&out);
    assert!(
        sum.starts_with("iiadm: 1 of 3 hosts failed: h3 (exit 255: "),
        "{sum}"
    );
    f.host(2).network_up();
    // A host that goes off the network after iiadm reached it (its connection kept open by
    // ControlPersist) must not make iiadm wait for it for long either. Two failures: the
    // highest status (h2's 255 over h3's 1: no set db there).
    f.host(1).network_down();
    let (out, took) = run_within(
        f.iiadm_command(&["-H", "h1,h2,h3", "-i", "db"]),
        Duration::from_secs(45),
        "-i db with h2 (reached before) off the network",
    );
    eprintln!("-i db with h2 (reached before) off the network took {took:?}");
    assert_eq!(out.status.code(), Some(255), "{}", show(&out));
    let sum = summary(&out);
    assert!(sum.starts_with("iiadm: 2 of 3 hosts failed: "), "{sum}");
    assert!(
        sum.contains("h2 (exit 255: ") && sum.contains("h3 (exit 1: "),
        "{sum}"
    );
    assert!(
        text(&out.stdout).lines().any(|l| l.starts_with("h1: ")),
        "{}",
        show(&out)
    );
    // Back on the network: everything answers again.
    f.host(1).network_up();
    let (out, _) = run_within(
        f.iiadm_command(&["-H", "h1,h2,h3", "-l"]),
        Duration::from_secs(45),
        "-l with h2 back",
    );
    assert!(out.status.success(), "{}", show(&out));
}

/// A status object without what changes by itself between two reads.
fn strip_volatile(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in ["time_ms", "hold_until", "uptime"] {
                    m.remove(k);
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

// ---------------------------------------------------------------------------------------
// b. --watch across hosts.

/// The lines of a running `--watch --json`, as they come.
struct Watch {
    child: std::process::Child,
    rx: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Watch {
    fn start(f: &Fleet, hosts: &str) -> Watch {
        let mut child = f
            .iiadm_command(&["-H", hosts, "--watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("iiadm --watch");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Watch {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Read lines until one satisfies `cond` (returned); fails after `within`.
    #[track_caller]
    fn until(&mut self, within: Duration, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let v: Value = serde_json::from_str(&l)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
                    assert!(v["host"].is_string(), "a line without its host: {l}");
                    self.seen.push(v.clone());
                    if cond(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {within:?}; lines so far:\n{}",
                    self.seen
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(v: &Value, host: &str, event: &str, name: &str) -> bool {
    v["host"] == host && v["event"] == event && v["name"] == name
}

#[test]
fn watch_follows_every_host_and_reconnects_to_a_lost_one() {
    let f = fleet_or_skip!(3);
    enable_ind(&f, &[0, 1, 2], "w", 1 << 20);
    let mut w = Watch::start(&f, "h1,h2,h3");
    // First, every host's state, tagged with the host.
    let mut first = BTreeSet::new();
    while first.len() < 3 {
        let v = w.until(Duration::from_secs(20), "first state lines", |v| {
            v["event"] == "state" && v["kind"] == "set" && v["name"] == "w"
        });
        assert_eq!(v["state"], "idle", "{v}");
        first.insert(v["host"].as_str().unwrap().to_string());
    }
    // A change on h2 arrives tagged h2.
    let before = w.seen.len();
    ok(f.iiadm(&["-H", "h2", "-s", "w"]), "suspend w on h2");
    let v = w.until(Duration::from_secs(10), "h2's change", |v| {
        v["host"] == "h2"
            && v["name"] == "w"
            && v["event"] == "changed"
            && v["state"] == "suspended"
    });
    eprintln!("h2's change: {v}");
    assert!(
        !w.seen[before..]
            .iter()
            .any(|v| v["host"] != "h2" && v["event"] == "changed"),
        "only h2 changed: {:?}",
        &w.seen[before..]
    );
    ok(f.iiadm(&["-H", "h2", "-r", "w"]), "resume w on h2");
    w.until(Duration::from_secs(10), "h2's resume", |v| {
        v["host"] == "h2" && v["name"] == "w" && v["state"] == "idle"
    });
    // h3's daemon goes away (a crash): a `lost` line for h3, and the others go on.
    f.host(2).kill_daemon();
    let lost = w.until(Duration::from_secs(15), "h3 lost", |v| {
        v["host"] == "h3" && v["event"] == "lost"
    });
    assert!(
        lost["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{lost}"
    );
    ok(f.iiadm(&["-H", "h1", "-s", "w"]), "suspend w on h1");
    w.until(
        Duration::from_secs(10),
        "h1's change while h3 is lost",
        |v| is(v, "h1", "changed", "w") && v["state"] == "suspended",
    );
    // h3 back: its state lines come again (after the reconnect every 5 s).
    let back = Instant::now();
    f.host(2).start_daemon();
    w.until(Duration::from_secs(20), "h3's state again", |v| {
        is(v, "h3", "state", "w")
    });
    eprintln!(
        "h3 followed again {:?} after its daemon came back",
        back.elapsed()
    );
    // And its changes with it.
    ok(f.iiadm(&["-H", "h3", "-s", "w"]), "suspend w on h3");
    w.until(
        Duration::from_secs(10),
        "h3's change after the reconnect",
        |v| is(v, "h3", "changed", "w") && v["state"] == "suspended",
    );
}

/// A daemon stopped cleanly (SIGTERM, as `systemctl stop` would) while a watch follows it:
/// its stream must end (a `lost` line), and the daemon must not stay up for the watcher.
#[test]
fn watch_reports_a_host_whose_daemon_is_stopped_cleanly() {
    let f = fleet_or_skip!(2);
    enable_ind(&f, &[0, 1], "w", 1 << 20);
    let mut w = Watch::start(&f, "h1,h2");
    // The hosts' first lines come in any order.
    let mut first = BTreeSet::new();
    while first.len() < 2 {
        let v = w.until(Duration::from_secs(20), "first state lines", |v| {
            v["event"] == "state" && v["name"] == "w"
        });
        first.insert(v["host"].as_str().unwrap().to_string());
    }
    let pid = f.host(1).term_daemon();
    w.until(
        Duration::from_secs(15),
        "h2 lost after its daemon was stopped",
        |v| v["host"] == "h2" && v["event"] == "lost",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "h2's daemon still runs 15 s after SIGTERM:\n{}",
            f.host(1).logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    f.host(1).start_daemon();
    w.until(Duration::from_secs(20), "h2's state again", |v| {
        is(v, "h2", "state", "w")
    });
}

// ---------------------------------------------------------------------------------------
// c. The cross-host instant.

/// Where the writer puts its sequence numbers: the i-th write to a master goes to slot
/// i % SLOTS, slots STRIDE bytes apart (four to a 64 KiB chunk).
const SLOTS: u64 = 64;
const STRIDE: u64 = 16 << 10;
const VOL: u64 = SLOTS * STRIDE;

/// The writer of `writer` on the masters of `masters` (host, set), on a thread of its own:
/// the flag that stops it, the last seq it wrote, and the thread.
fn start_writer(
    f: &Fleet,
    masters: &[(usize, String)],
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    std::thread::JoinHandle<u64>,
) {
    let files: Vec<File> = masters
        .iter()
        .map(|(i, s)| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(f.host(*i).mnt(&format!("sets/{s}/master")))
                .expect("open master")
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let w = {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || writer(files, stop, done))
    };
    (stop, done, w)
}

/// Write `seq` (1, 2, 3...) round-robin to the masters `targets`, each write issued only after
/// the one before returned; returns how many it wrote.
fn writer(targets: Vec<File>, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> u64 {
    let k = targets.len() as u64;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let m = ((seq - 1) % k) as usize;
        let slot = ((seq - 1) / k) % SLOTS;
        targets[m]
            .write_all_at(&seq.to_le_bytes(), slot * STRIDE)
            .unwrap_or_else(|e| panic!("write {seq}: {e}"));
        done.store(seq, Ordering::Release);
    }
    seq
}

/// The cut that the images (one per master, in the writer's order) form: the range of N such
/// that every image holds exactly the writes with seq < N to its master. Err says why there
/// is none.
fn cut(images: &[Vec<u8>]) -> Result<(u64, u64), String> {
    let k = images.len() as u64;
    let mut low = 1u64; // N > every image's newest write
    let mut high = u64::MAX; // N <= every master's next write after its newest
    for (m, img) in images.iter().enumerate() {
        let m = m as u64;
        let slots: Vec<u64> = (0..SLOTS)
            .map(|j| {
                let at = (j * STRIDE) as usize;
                u64::from_le_bytes(img[at..at + 8].try_into().unwrap())
            })
            .collect();
        let newest = *slots.iter().max().unwrap();
        let next = if newest == 0 {
            m + 1
        } else {
            if (newest - 1) % k != m {
                return Err(format!(
                    "master {m} holds {newest}, a write to another master"
                ));
            }
            newest + k
        };
        // Every slot holds the latest write to it up to `newest` (so no older write is
        // missing, and none newer is there).
        if newest > 0 {
            let i_max = (newest - 1) / k;
            for (j, &v) in slots.iter().enumerate() {
                let j = j as u64;
                let back = (i_max + SLOTS - j % SLOTS) % SLOTS;
                let want = if back > i_max {
                    0
                } else {
                    m + 1 + k * (i_max - back)
                };
                if v != want {
                    return Err(format!(
                        "master {m}: slot {j} holds {v}, but with {newest} the newest write \
                         it must hold {want}"
                    ));
                }
            }
        }
        low = low.max(newest + 1);
        high = high.min(next);
    }
    if low <= high {
        Ok((low, high))
    } else {
        Err(format!(
            "no consistent cut: some image holds write {} while another lacks write {}",
            low - 1,
            high
        ))
    }
}

/// An image with the given writes (seq numbers) to master `m` of `k`, as `cut` reads them.
fn image_of(m: u64, k: u64, below: u64) -> Vec<u8> {
    let mut img = vec![0u8; VOL as usize];
    let mut seq = m + 1;
    while seq < below {
        let slot = ((seq - 1) / k) % SLOTS;
        img[(slot * STRIDE) as usize..][..8].copy_from_slice(&seq.to_le_bytes());
        seq += k;
    }
    img
}

#[test]
fn the_cut_checker_tells_consistent_images_from_torn_ones() {
    // Consistent cuts, before any write, within the first round of slots and after wrapping.
    for n in [1, 2, 4, 5, 100, 1000, 1001] {
        let imgs: Vec<Vec<u8>> = (0..4).map(|m| image_of(m, 4, n)).collect();
        let (lo, hi) = cut(&imgs).unwrap_or_else(|e| panic!("cut at {n}: {e}"));
        assert!(lo <= n && n <= hi, "{n} in {lo}..={hi}");
    }
    // One image a write ahead of another's missing one: torn.
    let mut imgs: Vec<Vec<u8>> = (0..4).map(|m| image_of(m, 4, 500)).collect();
    imgs[2] = image_of(2, 4, 520);
    assert!(cut(&imgs).is_err());
    // One image behind.
    let mut imgs: Vec<Vec<u8>> = (0..4).map(|m| image_of(m, 4, 500)).collect();
    imgs[0] = image_of(0, 4, 480);
    assert!(cut(&imgs).is_err());
    // A lost older write in an image (a slot not updated).
    let mut imgs: Vec<Vec<u8>> = (0..4).map(|m| image_of(m, 4, 900)).collect();
    imgs[1] = image_of(1, 4, 900);
    imgs[1][(5 * STRIDE) as usize..][..8].copy_from_slice(&0u64.to_le_bytes());
    assert!(cut(&imgs).is_err());
}

/// Three hosts: h1 with group g of one set, h2 with g of two, h3 with g of one.
fn three_groups(f: &Fleet) -> Vec<(usize, String)> {
    let layout: [(usize, &[&str]); 3] = [(0, &["a1"]), (1, &["b1", "b2"]), (2, &["c1"])];
    let mut masters = Vec::new();
    for (i, sets) in layout {
        for s in sets {
            enable_ind(f, &[i], s, VOL);
            masters.push((i, s.to_string()));
        }
    }
    ok(
        f.iiadm(&["-H", "h1,h2,h3", "-C", "g"]),
        "create g everywhere",
    );
    for (i, s) in &masters {
        ok(f.host(*i).iiadm(&["-M", s, "g"]), "add to g");
    }
    masters
}

#[test]
fn group_pit_gives_every_host_one_consistent_cut_of_a_cross_host_write_stream() {
    let f = fleet_or_skip!(3);
    let masters = three_groups(&f);
    let (stop, done, w) = start_writer(&f, &masters);
    let t0 = Instant::now();
    let mut prev_low = 1;
    let mut moved = 0;
    let mut held = Vec::new();
    let mut took = Vec::new();
    const ROUNDS: usize = 50;
    for round in 0..ROUNDS {
        let before = done.load(Ordering::Acquire);
        let r0 = Instant::now();
        let (out, _) = run_within(
            f.iiadm_command(&["-H", "h1,h2,h3", "--group-pit", "g", "--json"]),
            Duration::from_secs(60),
            "--group-pit",
        );
        took.push(r0.elapsed());
        let after = done.load(Ordering::Acquire);
        assert!(out.status.success(), "round {round}: {}", show(&out));
        let reply = json_lines(&out);
        assert_eq!(reply.len(), 1, "one JSON object: {}", show(&out));
        let reply = &reply[0];
        assert_eq!(reply["group"], "g", "{reply}");
        assert_eq!(reply["result"], "new", "{reply}");
        let hs = reply["hosts"].as_array().expect("hosts");
        assert_eq!(hs.len(), 3, "{reply}");
        for (h, name) in hs.iter().zip(["h1", "h2", "h3"]) {
            assert_eq!(h["host"], name, "{reply}");
            assert_eq!(h["point_in_time"], "new", "{reply}");
            assert!(h["error"].is_null(), "{reply}");
            let ms = h["held_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("held_ms: {reply}"));
            assert!(
                ms < 1000,
                "round {round}: {name} held writes {ms} ms: {reply}"
            );
            held.push(ms);
        }
        // Every host's image: one cut of the write stream.
        let images: Vec<Vec<u8>> = masters
            .iter()
            .map(|(i, s)| {
                std::fs::read(f.host(*i).mnt(&format!("sets/{s}/shadow"))).expect("read shadow")
            })
            .collect();
        let (low, high) = cut(&images).unwrap_or_else(|e| {
            panic!("round {round}: the images are not one point in time: {e}\n{reply}")
        });
        // Taken while this command ran: after the writes before it, before the ones after it.
        assert!(
            low <= after + 1 && high > before,
            "round {round}: cut {low}..={high} is not within the command's writes {before}..{after}"
        );
        assert!(high >= prev_low, "round {round}: the cut went back");
        if low > prev_low {
            moved += 1;
        }
        prev_low = low;
    }
    stop.store(true, Ordering::Relaxed);
    let written = w.join().expect("writer");
    let total = t0.elapsed();
    held.sort_unstable();
    took.sort_unstable();
    eprintln!(
        "{ROUNDS} rounds in {total:?}; {written} writes; the cut moved in {moved} rounds; \
         held_ms median {} max {}; a round took median {:?} max {:?}",
        held[held.len() / 2],
        held[held.len() - 1],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    // The writes went on through the rounds, so the cuts were taken under load.
    assert!(
        moved >= ROUNDS * 4 / 5,
        "the cut moved in only {moved} of {ROUNDS} rounds"
    );
    assert!(
        total < Duration::from_secs(120),
        "{ROUNDS} rounds took {total:?}"
    );
}

/// Without the hold (each host's group updated by a plain fan-out, one after another as ssh
/// gets there) the same checker finds torn cuts: the acceptance test above can fail.
#[test]
fn a_plain_fan_out_update_is_not_one_cut_across_hosts() {
    let f = fleet_or_skip!(3);
    let masters = three_groups(&f);
    let (stop, _done, w) = start_writer(&f, &masters);
    let mut torn = 0;
    const ROUNDS: usize = 10;
    for _ in 0..ROUNDS {
        ok(
            f.iiadm(&["-H", "h1,h2,h3", "-g", "g", "-u", "s"]),
            "-g g -u s",
        );
        let images: Vec<Vec<u8>> = masters
            .iter()
            .map(|(i, s)| {
                std::fs::read(f.host(*i).mnt(&format!("sets/{s}/shadow"))).expect("read shadow")
            })
            .collect();
        if cut(&images).is_err() {
            torn += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written = w.join().expect("writer");
    eprintln!("plain fan-out updates: {torn} of {ROUNDS} cuts torn ({written} writes)");
    assert!(torn > 0, "no torn cut in {ROUNDS} rounds without the hold");
}

// ---------------------------------------------------------------------------------------
// d. A host that does not answer the hold.

/// Every host of `f` with group g of one set `s` (VOL bytes), a first cross-host instant
/// taken; then new data in every master (that a later update would bring to the shadow) and a
/// second passed (so that a later update would change pit_time).
fn pit_ready(f: &Fleet) -> Vec<(String, Vec<u8>)> {
    enable_ind(f, &[0, 1, 2], "s", VOL);
    ok(f.iiadm(&["-H", "h1,h2,h3", "-C", "g"]), "create g");
    ok(f.iiadm(&["-H", "h1,h2,h3", "-M", "s", "g"]), "add s to g");
    ok(
        f.iiadm(&["-H", "h1,h2,h3", "--group-pit", "g"]),
        "a first instant",
    );
    let before: Vec<(String, Vec<u8>)> = f
        .hosts()
        .iter()
        .map(|h| {
            let pit = h.status("s")["pit_time"].clone();
            let shadow = std::fs::read(h.mnt("sets/s/shadow")).expect("read shadow");
            (pit, shadow)
        })
        .collect();
    for h in f.hosts() {
        let m = OpenOptions::new()
            .write(true)
            .open(h.mnt("sets/s/master"))
            .unwrap();
        m.write_all_at(&[0xA5; 8192], 4096)
            .expect("new master data");
    }
    std::thread::sleep(Duration::from_millis(1100));
    before
}

/// Host `i` kept its point in time: pit_time, shadow, no hold left.
#[track_caller]
fn unchanged(f: &Fleet, i: usize, before: &(String, Vec<u8>)) {
    let h = f.host(i);
    let st = h.status("s");
    assert_eq!(
        st["pit_time"], before.0,
        "{}: pit_time changed: {st:?}",
        h.name
    );
    assert_eq!(st["hold_until"], "-", "{}: still held: {st:?}", h.name);
    let shadow = std::fs::read(h.mnt("sets/s/shadow")).expect("read shadow");
    assert!(shadow == before.1, "{}: the shadow changed", h.name);
}

/// The reply of a --group-pit that must fail: every host old (the one that did not answer
/// included), each with a reason, exit 1.
#[track_caller]
fn all_old(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    let reply = json_lines(out);
    assert_eq!(reply.len(), 1, "{}", show(out));
    let reply = reply[0].clone();
    assert_eq!(reply["result"], "old", "{reply}");
    for h in reply["hosts"].as_array().expect("hosts") {
        assert_eq!(h["point_in_time"], "old", "{reply}");
        assert!(h["error"].is_string(), "a reason: {reply}");
    }
    reply
}

/// Every other host's reason names the host that failed the hold (it is why they are old).
#[track_caller]
fn reasons_name(reply: &Value, silent: &str) {
    for h in reply["hosts"].as_array().expect("hosts") {
        let err = h["error"].as_str().unwrap_or_default();
        if h["host"] != silent {
            assert!(
                err.contains(silent),
                "{}'s reason names {silent}, whose hold failed: {reply}",
                h["host"]
            );
        }
    }
}

#[test]
fn a_host_whose_daemon_does_not_answer_the_hold_leaves_every_host_old_and_released() {
    let f = fleet_or_skip!(3);
    let before = pit_ready(&f);
    f.host(2).pause_daemon();
    let (out, took) = run_within(
        f.iiadm_command(&[
            "-H",
            "h1,h2,h3",
            "--group-pit",
            "g",
            "--timeout",
            "2",
            "--json",
        ]),
        Duration::from_secs(30),
        "--group-pit with h3's daemon stopped",
    );
    let returned = Instant::now();
    eprintln!(
        "--group-pit with h3 stopped took {took:?}: {}",
        text(&out.stdout)
    );
    // h1 and h2 released: a write to their masters ends at once.
    for i in [0, 1] {
        assert!(
            write_ends_within(f.host(i), "s", 0x5A, Duration::from_secs(1)),
            "{}: a write did not end promptly after --group-pit returned",
            f.host(i).name
        );
    }
    assert!(returned.elapsed() < Duration::from_secs(2));
    let reply = all_old(&out);
    reasons_name(&reply, "h3");
    let h3 = &reply["hosts"][2];
    assert!(h3["error"].as_str().unwrap().contains("2 s"), "{reply}");
    assert!(
        took < Duration::from_secs(12),
        "timeout 2 s per phase, took {took:?}"
    );
    for i in [0, 1] {
        unchanged(&f, i, &before[i]);
    }
    // h3 back: its late hold ends (with its session, or its lease) and it kept its image.
    let back = Instant::now();
    f.host(2).resume_daemon();
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.host(2).status("s")["hold_until"] != "-" {
        assert!(
            Instant::now() < deadline,
            "h3 is still held: {:?}",
            f.host(2).status("s")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("h3 released {:?} after its daemon went on", back.elapsed());
    assert!(write_ends_within(
        f.host(2),
        "s",
        0x5A,
        Duration::from_secs(1)
    ));
    unchanged(&f, 2, &before[2]);
    // And the next instant works on all three.
    let out = ok(
        f.iiadm(&["-H", "h1,h2,h3", "--group-pit", "g", "--json"]),
        "--group-pit after h3 came back",
    );
    assert_eq!(json_lines(&out)[0]["result"], "new");
}

#[test]
fn a_host_off_the_network_leaves_every_host_old_and_released() {
    let f = fleet_or_skip!(3);
    let before = pit_ready(&f);
    // h2 was used for the first instant: its connection is kept open, and now hangs.
    f.host(1).network_down();
    let (out, took) = run_within(
        f.iiadm_command(&[
            "-H",
            "h1,h2,h3",
            "--group-pit",
            "g",
            "--timeout",
            "2",
            "--json",
        ]),
        Duration::from_secs(30),
        "--group-pit with h2 off the network",
    );
    eprintln!(
        "--group-pit with h2 off took {took:?}: {}",
        text(&out.stdout)
    );
    for i in [0, 2] {
        assert!(
            write_ends_within(f.host(i), "s", 0x5A, Duration::from_secs(1)),
            "{}: a write did not end promptly after --group-pit returned",
            f.host(i).name
        );
    }
    let reply = all_old(&out);
    reasons_name(&reply, "h2");
    assert!(
        took < Duration::from_secs(12),
        "timeout 2 s per phase, took {took:?}"
    );
    for i in [0, 2] {
        unchanged(&f, i, &before[i]);
    }
    // Back on the network: whatever of the session got there late ends released.
    f.host(1).network_up();
    std::thread::sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.host(1).status("s")["hold_until"] != "-" {
        assert!(
            Instant::now() < deadline,
            "h2 is still held: {:?}",
            f.host(1).status("s")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unchanged(&f, 1, &before[1]);
}

// ---------------------------------------------------------------------------------------
// e. Refusals.

#[test]
fn group_pit_of_a_group_missing_on_one_host_updates_nobody() {
    let f = fleet_or_skip!(3);
    let before = pit_ready(&f);
    // h3's group goes (its set stays): g is now missing there.
    ok(f.host(2).iiadm(&["-X", "g"]), "delete g on h3");
    let own = text(&f.host(2).iiadm(&["-g", "g", "--hold", "5"]).stderr);
    let own = own.lines().last().expect("h3's own refusal").to_string();
    let own = own.strip_prefix("iiadm: ").unwrap_or(&own).to_string();
    // Several times: whether h1 and h2 said `held` before h3's refusal came is a race.
    for _ in 0..5 {
        let out = f.iiadm(&["-H", "h1,h2,h3", "--group-pit", "g", "--json"]);
        let reply = all_old(&out);
        for (i, b) in before.iter().enumerate() {
            unchanged(&f, i, b);
        }
        assert!(
            reply["hosts"][2]["error"].as_str().unwrap().contains(&own),
            "h3's reason is its own refusal ({own}): {reply}"
        );
        reasons_name(&reply, "h3");
    }
    // Text mode says the same, one line per host.
    let out = f.iiadm(&["-H", "h1,h2,h3", "--group-pit", "g"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    for h in ["h1", "h2", "h3"] {
        // FLEET.md: `h2: old point in time: <why>`.
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{h}: old point in time: "))),
            "{h}'s line as FLEET.md gives it:\n{stdout}"
        );
    }
    for (i, b) in before.iter().enumerate() {
        unchanged(&f, i, b);
    }
}
