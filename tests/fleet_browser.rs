//! The fleet view of the Cockpit page (issue 14) in a real browser: starts three test hosts
//! (tests/common/hosts.rs: network namespaces with their own sshd and iifs daemon each), gives
//! every host the same sets and group with one fan-out iiadm per step over real ssh, then runs
//! the pytest + Selenium suite tests/browser/test_fleet.py (headless Chromium, a real
//! cockpit-ws whose bridge runs iiadm with IIADM_SSH) and passes when it passes, printing
//! pytest's output either way. Outside CI a missing tool skips it loudly; with CI set a missing
//! tool fails it.

#[path = "common/hosts.rs"]
mod hosts;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hosts::Fleet;
use serde_json::json;

const PYTHON: &str = "/usr/bin/python3";
const MIB: u64 = 1 << 20;
/// Every host gets these dependent sets; a1 and a2 form the group app.
const SETS: [&str; 3] = ["db", "a1", "a2"];

/// What the suite needs and this machine lacks, with the Debian package that has it (the
/// hosts' own needs are checked by Fleet::start).
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    let files = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
        ("/usr/lib/cockpit/cockpit-ws", "cockpit-ws"),
        ("/usr/bin/cockpit-bridge", "cockpit-bridge"),
        ("/usr/share/cockpit/shell", "cockpit-system"),
        ("/usr/bin/setpriv", "util-linux"),
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/bin/ansible-inventory", "ansible-core"),
    ];
    for (path, package) in files {
        if !Path::new(path).exists() {
            missing.push(format!("{path} ({package})"));
        }
    }
    let modules = Command::new(PYTHON)
        .args(["-c", "import selenium, pytest"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !modules {
        missing.push(format!(
            "{PYTHON} with selenium and pytest (python3-selenium python3-pytest)"
        ));
    }
    missing
}

/// The directory of the iifs and iiadm binaries of this build (target/release or target/debug).
fn bin_dir() -> PathBuf {
    let iifs = Path::new(env!("CARGO_BIN_EXE_iifs"));
    let dir = iifs.parent().expect("binary dir").to_path_buf();
    assert!(
        dir.join("iiadm").exists(),
        "iiadm is not beside {}",
        iifs.display()
    );
    dir
}

#[track_caller]
fn ok(what: &str, out: Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fleet_view_in_a_real_browser() {
    let missing = missing_tools();
    if !missing.is_empty() {
        let why = format!("the fleet browser tests need: {}", missing.join(", "));
        if std::env::var_os("CI").is_some() {
            panic!("{why}: CI must run them");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let Some(fleet) = Fleet::start(3) else {
        return;
    };

    // The same volume paths on every host, so that one fan-out command sets up all of them.
    for h in fleet.hosts() {
        for n in SETS {
            h.volume(&format!("{n}-master.img"), 4 * MIB);
            h.volume(&format!("{n}-shadow.img"), 4 * MIB);
        }
    }
    let hosts_file = fleet.hosts_file();
    let hf = hosts_file.to_str().expect("utf-8 path");
    for n in SETS {
        let (m, s, b) = (
            format!("/run/vol/{n}-master.img"),
            format!("/run/vol/{n}-shadow.img"),
            format!("/run/vol/{n}-bitmap.img"),
        );
        ok(
            &format!("enable {n} on every host"),
            fleet.iiadm(&["--hosts-file", hf, "-e", "dep", &m, &s, &b, n]),
        );
    }
    ok(
        "group app on every host",
        fleet.iiadm(&["--hosts-file", hf, "-C", "app"]),
    );
    for n in ["a1", "a2"] {
        ok(
            &format!("{n} into app on every host"),
            fleet.iiadm(&["--hosts-file", hf, "-M", n, "app"]),
        );
    }
    // An Ansible group of the first and the last host, for a hosts file entry `@web`.
    let inventory = fleet.inventory_with(&[("web", &[0, fleet.len() - 1])]);

    let described = json!({
        "hosts_file": hosts_file,
        "iiadm_ssh": fleet.iiadm_ssh(),
        "runtime_dir": fleet.runtime_dir(),
        "inventory": inventory,
        "dir": fleet.dir(),
        "hosts": fleet.hosts().iter().map(|h| json!({
            "name": h.name, "addr": h.addr, "pid": h.pid, "netns": h.netns,
        })).collect::<Vec<_>>(),
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(PYTHON)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/browser/test_fleet.py",
        ])
        // e.g. `-k unreachable -x` while working on one test
        .args(
            std::env::var("IIFS_PYTEST_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .current_dir(root)
        .env("IIFS_BIN_DIR", bin_dir())
        .env("IIFS_FLEET", described.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "the fleet browser tests failed ({}); pytest's output is above",
        out.status
    );
    // A suite that skipped its tests did not test the page.
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        !last.contains("skipped") || std::env::var_os("CI").is_none(),
        "fleet browser tests were skipped in CI: {last}"
    );
}
