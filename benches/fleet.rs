//! Many hosts (issue 14): how fast a change on one host reaches the console's fleet view, and
//! what the cross-host point in time costs, over 10, 20 and 50 test hosts (tests/common/hosts.rs:
//! network namespaces with their own sshd and iifs daemon each, reached over real ssh).
//!
//! (a) change to page: a set of one host is suspended (or resumed) through its ctl file; the
//!     time until the fleet view in headless Chromium (benches/fleet_page.py, the page of
//!     contrib/cockpit/iifs behind a real cockpit-ws) has drawn it (the row's data-updated),
//!     and, beside it, until the line is on a console-side `iiadm --hosts-file F --watch
//!     --json` (the fan-out stream the page reads); 10 changes, median and max.
//! (b) `iiadm --hosts-file F --group-pit app --json` over all hosts: wall time, and the longest
//!     time any host held its writes (held_ms, measured on the host); one round to warm the
//!     ssh connections, then ROUNDS rounds.
//!
//! Run: `cargo bench --bench fleet` (root, Chromium, chromedriver, cockpit-ws, python3-selenium);
//! `cargo bench --bench fleet -- 10` for one size; `-- --no-page` for (b) and the stream alone.

#[path = "../tests/common/hosts.rs"]
mod hosts;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hosts::Fleet;
use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";
const MIB: u64 = 1 << 20;
const CHANGES: usize = 10;
const ROUNDS: usize = 3;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[track_caller]
fn ok(what: &str, out: std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Median and max of some milliseconds.
fn stats(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let mid = s.len() / 2;
    let median = if s.len() % 2 == 0 {
        (s[mid - 1] + s[mid]) / 2.0
    } else {
        s[mid]
    };
    (median, s[s.len() - 1])
}

/// Every host gets the dependent sets db and a1, a1 in the group app.
fn set_up(fleet: &Fleet) {
    for h in fleet.hosts() {
        for n in ["db", "a1"] {
            h.volume(&format!("{n}-master.img"), 4 * MIB);
            h.volume(&format!("{n}-shadow.img"), 4 * MIB);
        }
    }
    let hf = fleet.hosts_file();
    let hf = hf.to_str().expect("utf-8 path");
    for n in ["db", "a1"] {
        let vol = |r: &str| format!("/run/vol/{n}-{r}.img");
        ok(
            &format!("enable {n}"),
            fleet.iiadm(&[
                "--hosts-file",
                hf,
                "-e",
                "dep",
                &vol("master"),
                &vol("shadow"),
                &vol("bitmap"),
                n,
            ]),
        );
    }
    ok("group app", fleet.iiadm(&["--hosts-file", hf, "-C", "app"]));
    ok(
        "a1 into app",
        fleet.iiadm(&["--hosts-file", hf, "-M", "a1", "app"]),
    );
}

/// A console-side `iiadm --watch --json` of every host, its lines (with their arrival time) on
/// a channel.
struct Stream {
    child: Child,
    lines: Receiver<(f64, Value)>,
}

impl Stream {
    fn start(fleet: &Fleet) -> Stream {
        let hf = fleet.hosts_file();
        let mut child = fleet
            .iiadm_command(&["--hosts-file", hf.to_str().unwrap(), "--watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("iiadm --watch");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let t = now_ms();
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    if tx.send((t, v)).is_err() {
                        return;
                    }
                }
            }
        });
        Stream { child, lines }
    }

    /// Wait until every host has given its first lines (its `db` state).
    fn wait_ready(&self, fleet: &Fleet) {
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < fleet.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, v) = self
                .lines
                .recv_timeout(left)
                .expect("every host on the watch stream");
            if v["name"] == "db" {
                let h = v["host"].as_str().unwrap_or("").to_string();
                if !seen.contains(&h) {
                    seen.push(h);
                }
            }
        }
    }

    /// The arrival time of host's `db` line with state `word`.
    fn wait_for(&self, host: &str, word: &str) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (t, v) = self.lines.recv_timeout(left).ok()?;
            if v["host"] == host && v["name"] == "db" && v["state"] == word {
                return Some(t);
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// benches/fleet_page.py: the fleet view in headless Chromium.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    out: Receiver<String>,
    /// Rows shown and ms to show them after the page was asked for.
    ready: (usize, f64),
}

impl Browser {
    fn start(fleet: &Fleet) -> Browser {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_iifs")).parent().unwrap();
        let described = json!({
            "hosts_file": fleet.hosts_file(),
            "iiadm_ssh": fleet.iiadm_ssh(),
            "runtime_dir": fleet.runtime_dir(),
            "dir": fleet.dir(),
            "hosts": fleet.hosts().iter().map(|h| json!({
                "name": h.name, "addr": h.addr, "pid": h.pid, "netns": h.netns,
            })).collect::<Vec<_>>(),
        });
        let mut child = Command::new(PYTHON)
            .arg(root.join("benches/fleet_page.py"))
            .current_dir(root)
            .env("IIFS_FLEET", described.to_string())
            .env("IIFS_FLEET_ROWS", (fleet.len() * 3).to_string())
            .env("IIFS_BIN_DIR", bin_dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run benches/fleet_page.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let first = out
            .recv_timeout(Duration::from_secs(180))
            .expect("the fleet view ready (benches/fleet_page.py)");
        let w: Vec<&str> = first.split_whitespace().collect();
        assert_eq!(w.first(), Some(&"ready"), "fleet_page.py said {first:?}");
        let ready = (w[1].parse().unwrap_or(0), w[2].parse().unwrap_or(f64::NAN));
        Browser {
            child,
            stdin,
            out,
            ready,
        }
    }

    /// The page's time of drawing host's db in state `word`.
    fn wait_for(&mut self, host: &str, word: &str) -> Option<f64> {
        writeln!(self.stdin, "wait {host} db {word}").ok()?;
        self.stdin.flush().ok()?;
        let l = self.out.recv_timeout(Duration::from_secs(60)).ok()?;
        l.strip_prefix("seen ")?.trim().parse().ok()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Figures {
    hosts: usize,
    startup_s: f64,
    page_ready_ms: Option<f64>,
    stream: Vec<f64>,
    page: Vec<f64>,
    pit_wall: Vec<f64>,
    pit_held: Vec<f64>,
    pit_results: Vec<String>,
}

fn measure(n: usize, with_page: bool) -> Option<Figures> {
    let fleet = Fleet::start(n)?;
    set_up(&fleet);
    let mut f = Figures {
        hosts: n,
        startup_s: fleet.startup.as_secs_f64(),
        page_ready_ms: None,
        stream: Vec::new(),
        page: Vec::new(),
        pit_wall: Vec::new(),
        pit_held: Vec::new(),
        pit_results: Vec::new(),
    };

    // (a) change -> stream, change -> page
    {
        let stream = Stream::start(&fleet);
        stream.wait_ready(&fleet);
        let mut browser = with_page.then(|| Browser::start(&fleet));
        if let Some(b) = &browser {
            f.page_ready_ms = Some(b.ready.1);
        }
        let mut suspended: HashMap<usize, bool> = HashMap::new();
        for k in 0..CHANGES {
            // hosts spread over the fleet, the last one included
            let i = (k * 7 + n - 1) % n;
            let h = fleet.host(i);
            let s = suspended.entry(i).or_insert(false);
            let (cmd, word) = if *s {
                ("resume", "idle")
            } else {
                ("suspend", "suspended")
            };
            *s = !*s;
            std::thread::sleep(Duration::from_millis(300));
            let t0 = now_ms();
            h.ctl_ok("sets/db/ctl", cmd);
            match stream.wait_for(&h.name, word) {
                Some(t) => f.stream.push(t - t0),
                None => eprintln!("{n} hosts: {} {cmd} never on the stream", h.name),
            }
            if let Some(b) = browser.as_mut() {
                match b.wait_for(&h.name, word) {
                    Some(t) => f.page.push(t - t0),
                    None => eprintln!("{n} hosts: {} {cmd} never on the page", h.name),
                }
            }
        }
        drop(browser);
    }

    // (b) the cross-host point in time
    let hf = fleet.hosts_file();
    let hf = hf.to_str().unwrap();
    for round in 0..=ROUNDS {
        let t0 = Instant::now();
        let out = fleet.iiadm(&["--hosts-file", hf, "--group-pit", "app", "--json"]);
        let wall = t0.elapsed().as_secs_f64() * 1000.0;
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "--group-pit over {n} hosts: no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        if round == 0 {
            continue; // warms the ssh connections
        }
        let held = reply["hosts"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter_map(|h| h["held_ms"].as_f64())
                    .fold(f64::NAN, f64::max)
            })
            .unwrap_or(f64::NAN);
        f.pit_wall.push(wall);
        f.pit_held.push(held);
        f.pit_results
            .push(reply["result"].as_str().unwrap_or("?").to_string());
    }
    Some(f)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let with_page = !args.iter().any(|a| a == "--no-page");
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![10, 20, 50];
    }
    let mut all = Vec::new();
    for n in sizes {
        eprintln!("fleet bench: {n} hosts…");
        match measure(n, with_page) {
            Some(f) => all.push(f),
            None => {
                eprintln!("fleet bench: SKIPPED (no test hosts on this machine)");
                return;
            }
        }
    }
    println!();
    println!("(a) change on one host -> console, {CHANGES} changes (ms; median / max)");
    println!(
        "{:>6} {:>10} {:>12} {:>20} {:>20}",
        "hosts", "start (s)", "page up (ms)", "watch stream", "fleet page"
    );
    for f in &all {
        let (sm, sx) = stats(&f.stream);
        let (pm, px) = stats(&f.page);
        let page = if f.page.is_empty() {
            "-".to_string()
        } else {
            format!("{pm:.0} / {px:.0}")
        };
        println!(
            "{:>6} {:>10.1} {:>12} {:>20} {:>20}",
            f.hosts,
            f.startup_s,
            f.page_ready_ms.map_or("-".into(), |v| format!("{v:.0}")),
            format!("{sm:.0} / {sx:.0}"),
            page
        );
    }
    println!();
    println!("(b) iiadm --hosts-file F --group-pit app --json, {ROUNDS} rounds after one warm-up");
    println!(
        "{:>6} {:>22} {:>26} {:>14}",
        "hosts", "wall ms (median/max)", "max held_ms (median/max)", "results"
    );
    for f in &all {
        let (wm, wx) = stats(&f.pit_wall);
        let (hm, hx) = stats(&f.pit_held);
        println!(
            "{:>6} {:>22} {:>26} {:>14}",
            f.hosts,
            format!("{wm:.0} / {wx:.0}"),
            format!("{hm:.0} / {hx:.0}"),
            f.pit_results.join(",")
        );
    }
}
