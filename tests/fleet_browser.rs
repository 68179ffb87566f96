//! The fleet view of the Cockpit page (issue 14) in a real browser: starts three test hosts
//! (tests/common/hosts.rs: network namespaces with their own sshd and iifs daemon each), gives
//! every host the same sets and group with one fan-out iiadm per step over real ssh, then runs
//! the pytest + Selenium suite tests/browser/test_fleet.py (headless Chromium, a real
//! cockpit-ws whose bridge runs iiadm with IIADM_SSH) and passes when it passes, printing
//! pytest's output either way. Outside CI a missing tool skips it loudly; with CI set a missing
//! tool fails it.

#[path = "common/browser.rs"]
mod browser;
#[path = "common/hosts.rs"]
mod hosts;

use std::process::Output;

use hosts::Fleet;
use serde_json::json;

const MIB: u64 = 1 << 20;
/// Every host gets these dependent sets; a1 and a2 form the group app.
const SETS: [&str; 3] = ["db", "a1", "a2"];

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
    let suite = "the fleet browser tests";
    let missing = browser::missing_tools(&[
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/bin/ansible-inventory", "ansible-core"),
    ]);
    if !browser::can_run(suite, &missing) {
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
    browser::pytest(
        suite,
        "tests/browser/test_fleet.py",
        &[("IIFS_FLEET", described.to_string())],
    );
}
