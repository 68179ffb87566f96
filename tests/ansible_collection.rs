//! The Ansible collection iifs.iifs (contrib/ansible/ansible_collections/iifs/iifs), with real
//! ansible: `ansible-doc` shows every module, `ansible-test sanity` is clean, and the modules and
//! playbooks run over real ssh against real test hosts (tests/common/hosts.rs: network
//! namespaces with their own sshd and iifs daemon each), checked on the hosts themselves.
//!
//! In CI (CI=1) a missing ansible fails these tests; elsewhere they are skipped with a message.

#[path = "common/hosts.rs"]
mod hosts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hosts::{Fleet, Host};
use serde_json::Value;

/// ANSIBLE_COLLECTIONS_PATH: the directory holding ansible_collections/iifs/iifs.
const COLLECTIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/ansible");
const PLAYBOOKS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/ansible/ansible_collections/iifs/iifs/playbooks"
);
const TEST_PLAYBOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ansible");

/// Every module, with options its ansible-doc page must name (its own and the shared ones).
const MODULES: [(&str, &[&str]); 5] = [
    ("iifs_info", &["gather", "mount", "executable"]),
    (
        "iifs_set",
        &[
            "name",
            "state",
            "type",
            "master",
            "shadow",
            "bitmap",
            "chunk_size",
            "durability",
            "group",
            "overflow",
            "mount",
        ],
    ),
    (
        "iifs_group",
        &["name", "state", "members", "append", "mount"],
    ),
    (
        "iifs_overflow",
        &["name", "state", "volume", "chunk_size", "mount"],
    ),
    (
        "iifs_pit",
        &[
            "set",
            "group",
            "action",
            "direction",
            "force",
            "wait",
            "timeout",
            "lease",
            "require_held",
            "mount",
        ],
    ),
];

const MIB: u64 = 1 << 20;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Whether ansible's commands are here. In CI they must be: a missing one fails the test.
fn ansible_available() -> bool {
    let missing: Vec<&str> = ["ansible-playbook", "ansible-doc", "ansible-test"]
        .into_iter()
        .filter(|tool| {
            !Command::new(tool)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "the Ansible collection's tests need {} (apt-get install ansible-core)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}: CI must run them");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// Ansible run with this collection and nothing of the user's: its own home, temp and control
/// socket directories (no ~/.ansible), no ansible.cfg (its cwd is its own temp dir).
struct Ansible {
    dir: tempfile::TempDir,
}

impl Ansible {
    fn new() -> Ansible {
        let dir = tempfile::Builder::new()
            .prefix("iifs-ansible-")
            .tempdir()
            .expect("ansible temp dir");
        Ansible { dir }
    }

    /// `program` with the environment of these tests; `cp` names the ssh control socket dir.
    fn command(&self, program: &str, cp: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(program);
        c.current_dir(d)
            .env("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)
            .env("ANSIBLE_COLLECTIONS_SCAN_SYS_PATH", "False")
            .env("ANSIBLE_CONFIG", d.join("none.cfg"))
            .env("ANSIBLE_HOME", d.join("home"))
            .env("ANSIBLE_LOCAL_TEMP", d.join("tmp"))
            // Inside each host's own tmpfs /run: nothing is left on the console's disk.
            .env("ANSIBLE_REMOTE_TEMP", "/run/ansible-tmp")
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", d.join(cp))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_PIPELINING", "True")
            .env("ANSIBLE_TIMEOUT", "10")
            // No __pycache__ left in tests/ansible/callback_plugins.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("ANSIBLE_INVENTORY")
            .env_remove("IIFS_MOUNT")
            .stdin(Stdio::null());
        c
    }

    /// `ansible-playbook -i INVENTORY... PLAYBOOK ARGS` with the JSON callback; its results.
    fn playbook(&self, inventories: &[&Path], playbook: &str, args: &[&str]) -> Play {
        self.playbook_via("cp", inventories, playbook, args)
    }

    fn playbook_via(&self, cp: &str, inventories: &[&Path], playbook: &str, args: &[&str]) -> Play {
        let mut c = self.command("timeout", cp);
        // A hung connection must end the test, not hang it.
        c.args(["-k", "10", "600", "ansible-playbook"]);
        for inv in inventories {
            c.arg("-i").arg(inv);
        }
        c.arg(playbook)
            .args(args)
            // ansible.posix's json callback is not in ansible-core: tests/ansible has one.
            .env(
                "ANSIBLE_CALLBACK_PLUGINS",
                format!("{TEST_PLAYBOOKS}/callback_plugins"),
            )
            .env("ANSIBLE_STDOUT_CALLBACK", "iifs_json");
        let out = c.output().expect("run ansible-playbook");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ansible-playbook {playbook}: no JSON output ({e}):\n{}",
                show(&out)
            )
        });
        Play {
            name: format!("{playbook} {}", args.join(" ")),
            out,
            json,
        }
    }
}

/// One ansible-playbook run, as the json callback tells it.
struct Play {
    name: String,
    out: Output,
    json: Value,
}

impl Play {
    fn context(&self) -> String {
        format!(
            "ansible-playbook {}:\n{}\nstderr:\n{}",
            self.name,
            serde_json::to_string_pretty(&self.json).unwrap_or_default(),
            text(&self.out.stderr)
        )
    }

    /// The play's count of `what` (ok, changed, failures, unreachable, skipped...) for `host`.
    fn stat(&self, host: &str, what: &str) -> u64 {
        self.json["stats"][host][what]
            .as_u64()
            .unwrap_or_else(|| panic!("no stats.{host}.{what}: {}", self.context()))
    }

    #[track_caller]
    fn assert_ok(&self, hosts: &[String]) {
        assert!(self.out.status.success(), "{}", self.context());
        for h in hosts {
            assert_eq!(self.stat(h, "failures"), 0, "{h}: {}", self.context());
            assert_eq!(self.stat(h, "unreachable"), 0, "{h}: {}", self.context());
        }
    }

    /// Each host's result of the task named `task` (the last one of that name).
    fn task(&self, task: &str) -> BTreeMap<String, Value> {
        let mut found = None;
        for play in self.json["plays"].as_array().into_iter().flatten() {
            for t in play["tasks"].as_array().into_iter().flatten() {
                if t["task"]["name"] == task {
                    found = Some(t["hosts"].clone());
                }
            }
        }
        let hosts = found.unwrap_or_else(|| panic!("no task {task:?}: {}", self.context()));
        hosts
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// `iiadm ARGS --json` run inside a host by `sh` (the host's own iiadm and mount).
#[track_caller]
fn host_json(h: &Host, args: &str) -> Value {
    let out = h.sh(&format!("iiadm {args} --json"));
    assert!(
        out.status.success(),
        "{}: iiadm {args}: {}",
        h.name,
        show(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: iiadm {args}: not JSON ({e}): {}", h.name, show(&out)))
}

/// What a host has, read with iiadm inside the host.
struct HostState {
    /// Set name -> its status.
    sets: BTreeMap<String, Value>,
    /// Group name -> its members.
    groups: BTreeMap<String, Vec<String>>,
    /// Overflow name -> its status.
    overflows: BTreeMap<String, Value>,
}

fn host_state(h: &Host) -> HostState {
    let by_name = |v: Value| -> BTreeMap<String, Value> {
        v.as_array()
            .expect("a JSON array")
            .iter()
            .map(|o| (o["name"].as_str().expect("name").to_string(), o.clone()))
            .collect()
    };
    let sets = by_name(host_json(h, "-l"));
    let groups = by_name(host_json(h, "-G"))
        .into_iter()
        .map(|(k, g)| {
            let members = g["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| m.as_str().expect("member").to_string())
                .collect();
            (k, members)
        })
        .collect();
    let overflows = by_name(host_json(h, "-L"));
    HostState {
        sets,
        groups,
        overflows,
    }
}

#[track_caller]
fn assert_empty(h: &Host, why: &str) {
    let HostState {
        sets,
        groups,
        overflows,
    } = host_state(h);
    assert!(
        sets.is_empty() && groups.is_empty() && overflows.is_empty(),
        "{}: {why}: sets {sets:?}, groups {groups:?}, overflows {overflows:?}",
        h.name
    );
    let out = h.sh("iiadm -l");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}: iiadm -l: {}",
        h.name,
        show(&out)
    );
}

/// The state present.yml makes, checked on the host.
#[track_caller]
fn assert_present(h: &Host) {
    let HostState {
        sets,
        groups,
        overflows,
    } = host_state(h);
    assert_eq!(
        sets.keys().collect::<Vec<_>>(),
        ["db", "logs"],
        "{}: {sets:?}",
        h.name
    );
    let db = &sets["db"];
    assert_eq!(db["type"], "dependent", "{}: {db}", h.name);
    assert_eq!(db["master"], "/run/vol/db-master", "{}: {db}", h.name);
    assert_eq!(db["shadow"], "/run/vol/db-shadow", "{}: {db}", h.name);
    assert_eq!(db["bitmap"], "/run/vol/db-bitmap", "{}: {db}", h.name);
    assert_eq!(db["group"], "app", "{}: {db}", h.name);
    let logs = &sets["logs"];
    assert_eq!(logs["type"], "compact", "{}: {logs}", h.name);
    assert_eq!(logs["durability"], "relaxed", "{}: {logs}", h.name);
    assert_eq!(logs["chunk_size"], 65536, "{}: {logs}", h.name);
    assert_eq!(logs["overflow"], "pool", "{}: {logs}", h.name);
    assert_eq!(logs["group"], "app", "{}: {logs}", h.name);
    assert_eq!(
        groups.get("app").map(Vec::as_slice),
        Some(&["db".to_string(), "logs".to_string()][..]),
        "{}",
        h.name
    );
    assert_eq!(
        overflows.keys().collect::<Vec<_>>(),
        ["pool"],
        "{}: {overflows:?}",
        h.name
    );
    assert_eq!(overflows["pool"]["volume"], "/run/vol/pool", "{}", h.name);
    assert_eq!(
        overflows["pool"]["sets"],
        serde_json::json!({"logs": 0}),
        "{}",
        h.name
    );
}

/// Each host's (db, logs) point in time and hold, read through its mount.
fn pits(f: &Fleet) -> Vec<(u64, u64, String, String)> {
    f.hosts()
        .iter()
        .map(|h| {
            let db = h.status("db");
            let logs = h.status("logs");
            (
                db["pit_time"].parse().expect("pit_time"),
                logs["pit_time"].parse().expect("pit_time"),
                db["hold_until"].clone(),
                logs["hold_until"].clone(),
            )
        })
        .collect()
}

/// A write to db's master through the mount ends quickly: no hold is in force.
#[track_caller]
fn assert_writes_flow(f: &Fleet) {
    for h in f.hosts() {
        let out = h.sh("timeout 10 dd if=/dev/urandom of=/mnt/iifs/sets/db/master bs=64k count=4 conv=notrunc,fsync status=none");
        assert!(
            out.status.success(),
            "{}: a write to the master did not go through: {}",
            h.name,
            show(&out)
        );
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
fn ansible_doc_shows_every_module() {
    if !ansible_available() {
        return;
    }
    let a = Ansible::new();
    let out = a
        .command("ansible-doc", "cp")
        .args(["-t", "module", "-l", "iifs.iifs"])
        .output()
        .expect("run ansible-doc -l");
    assert!(out.status.success(), "ansible-doc -l: {}", show(&out));
    let listed = text(&out.stdout);
    for (module, options) in MODULES {
        let name = format!("iifs.iifs.{module}");
        assert!(
            listed.contains(&name),
            "ansible-doc -l does not list {name}: {listed}"
        );
        let out = a
            .command("ansible-doc", "cp")
            .arg(&name)
            .output()
            .expect("run ansible-doc");
        assert!(out.status.success(), "ansible-doc {name}: {}", show(&out));
        let page = text(&out.stdout);
        for section in ["OPTIONS", "EXAMPLES", "RETURN VALUES"] {
            assert!(
                page.contains(section),
                "ansible-doc {name} has no {section}:\n{page}"
            );
        }
        for option in options {
            assert!(
                page.contains(&format!("- {option}\n")) || page.contains(&format!("= {option}\n")),
                "ansible-doc {name} does not document option {option}:\n{page}"
            );
        }
        // ansible-doc warns (on stderr) about documentation it could only partly read.
        assert!(
            !text(&out.stderr).contains("WARNING"),
            "ansible-doc {name}: {}",
            show(&out)
        );
    }
}

#[test]
fn ansible_test_sanity_is_clean() {
    if !ansible_available() {
        return;
    }
    // Kept under target/ between runs: the sanity tests' virtual environments are made (from
    // PyPI) once, not at every run.
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ansible-test-home");
    let out = Command::new(format!("{COLLECTIONS}/sanity.sh"))
        .env("ANSIBLE_TEST_HOME", &home)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("ANSIBLE_COLLECTIONS_PATH")
        .stdin(Stdio::null())
        .output()
        .expect("run contrib/ansible/sanity.sh");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "sanity.sh: {}", show(&out));
    // The tests that matter ran (none skipped for a missing requirement).
    for test in [
        "validate-modules",
        "pep8",
        "pylint",
        "compile",
        "yamllint",
        "import",
        "ansible-doc",
        "action-plugin-docs",
        "shebang",
        "runtime-metadata",
        "future-import-boilerplate",
        "metaclass-boilerplate",
        "no-smart-quotes",
        "use-argspec-type-path",
    ] {
        assert!(
            all.contains(&format!("Running sanity test \"{test}\"")),
            "sanity test {test} did not run:\n{all}"
        );
    }
    assert!(!all.contains("ERROR:"), "sanity.sh reported errors:\n{all}");
    assert!(!all.contains("Skipping"), "sanity.sh skipped tests:\n{all}");
}

#[test]
fn modules_and_playbooks_on_three_hosts() {
    if !ansible_available() {
        return;
    }
    let Some(f) = Fleet::start(3) else { return };
    let names = f.names();
    let a = Ansible::new();
    let inv = f.inventory();
    for h in f.hosts() {
        h.volume("db-master", 16 * MIB);
        h.volume("db-shadow", 16 * MIB);
        h.volume("logs-master", 16 * MIB);
        // Smaller than its master: a compact set, which takes the overflow volume.
        h.volume("logs-shadow", 4 * MIB);
        h.volume("pool", 4 * MIB);
        h.volume("other", 16 * MIB);
    }
    let present = format!("{TEST_PLAYBOOKS}/present.yml");
    let absent = format!("{TEST_PLAYBOOKS}/absent.yml");

    // Check mode on empty hosts: every task would change, nothing changes.
    let p = a.playbook(&[&inv], &present, &["--check", "--diff"]);
    p.assert_ok(&names);
    for h in &names {
        assert_eq!(p.stat(h, "changed"), 4, "{h}: {}", p.context());
    }
    let diff = &p.task("Dependent set db")["h1"]["diff"];
    assert_eq!(
        diff["after"]["master"],
        "/run/vol/db-master",
        "{}",
        p.context()
    );
    assert_eq!(diff["before"], serde_json::json!({}), "{}", p.context());
    for h in f.hosts() {
        assert_empty(h, "check mode changed the host");
    }

    // For real: every task changes, the hosts have what was asked.
    let p = a.playbook(&[&inv], &present, &["--diff"]);
    p.assert_ok(&names);
    for h in &names {
        assert_eq!(p.stat(h, "changed"), 4, "{h}: {}", p.context());
    }
    for h in f.hosts() {
        assert_present(h);
    }
    let uuids: Vec<String> = f
        .hosts()
        .iter()
        .map(|h| h.status("db")["uuid"].clone())
        .collect();

    // Idempotent: the second run, and check mode now, change nothing.
    for args in [&[][..], &["--check", "--diff"][..]] {
        let p = a.playbook(&[&inv], &present, args);
        p.assert_ok(&names);
        for h in &names {
            assert_eq!(p.stat(h, "changed"), 0, "{h}: {}", p.context());
            assert_eq!(p.stat(h, "ok"), 4, "{h}: {}", p.context());
        }
    }

    // The same set with another master is refused, and left as it was (never re-enabled).
    let p = a.playbook(&[&inv], &present, &["-e", "db_master=/run/vol/other"]);
    assert!(!p.out.status.success(), "{}", p.context());
    for (i, h) in names.iter().enumerate() {
        assert_eq!(p.stat(h, "failures"), 1, "{h}: {}", p.context());
        let r = &p.task("Dependent set db")[h];
        let msg = r["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("set db exists with master /run/vol/db-master, not /run/vol/other")
                && msg.contains("state=absent"),
            "{h}: {msg}"
        );
        assert_eq!(
            f.host(i).status("db")["uuid"],
            uuids[i],
            "{h}: set db was enabled again"
        );
    }
    for h in f.hosts() {
        assert_present(h);
    }

    // status.yml shows every host's sets.
    let p = a.playbook(&[&inv], &format!("{PLAYBOOKS}/status.yml"), &[]);
    p.assert_ok(&names);
    for (h, r) in p.task("Show it") {
        let lines = r["msg"].to_string();
        assert!(
            lines.contains("set db: dep") || lines.contains("set db: dependent"),
            "{h}: {lines}"
        );
        assert!(
            lines.contains("group app: normal, members db logs"),
            "{h}: {lines}"
        );
        assert!(
            lines.contains("overflow pool: /run/vol/pool"),
            "{h}: {lines}"
        );
    }

    cross_host_instant(&f, &a, &inv);

    // Absent, in check mode: reported, not done.
    let p = a.playbook(&[&inv], &absent, &["--check", "--diff"]);
    p.assert_ok(&names);
    for h in &names {
        assert_eq!(p.stat(h, "changed"), 4, "{h}: {}", p.context());
    }
    for h in f.hosts() {
        assert_present(h);
    }
    // For real: everything goes; then nothing is left to change.
    let p = a.playbook(&[&inv], &absent, &[]);
    p.assert_ok(&names);
    for h in &names {
        assert_eq!(p.stat(h, "changed"), 4, "{h}: {}", p.context());
    }
    for h in f.hosts() {
        assert_empty(h, "absent.yml left something");
    }
    let p = a.playbook(&[&inv], &absent, &[]);
    p.assert_ok(&names);
    for h in &names {
        assert_eq!(p.stat(h, "changed"), 0, "{h}: {}", p.context());
    }
}

/// cross_host_instant.yml: a new point in time on every host; and when one host cannot hold
/// (its group is missing, or it is off the network), none takes one and all are released.
fn cross_host_instant(f: &Fleet, a: &Ansible, inv: &Path) {
    let names = f.names();
    let playbook = format!("{PLAYBOOKS}/cross_host_instant.yml");

    let before = pits(f);
    // pit_time counts seconds: make sure a new one can be told from the old.
    while now_secs() <= before.iter().map(|p| p.0.max(p.1)).max().unwrap_or(0) {
        std::thread::sleep(Duration::from_millis(100));
    }

    // Check mode: every phase says it would act, no host is held or takes a point in time.
    let p = a.playbook(
        &[inv],
        &playbook,
        &[
            "--check",
            "-e",
            "iifs_group=app",
            "-e",
            "iifs_lease=30",
            "-f",
            "3",
        ],
    );
    p.assert_ok(&names);
    for (h, r) in p.task("Phase 2 - new point in time of the group, only if every host holds") {
        assert_eq!(r["changed"], true, "{h}: {r}");
        assert!(r.get("skipped").is_none(), "{h}: {r}");
    }
    let lines = p.task("Summary").values().next().expect("a summary")["msg"].to_string();
    assert!(
        lines.contains("h3: new point in time (check mode: nothing was done)"),
        "{lines}"
    );
    assert_eq!(
        pits(f),
        before,
        "check mode took a point in time or left a hold"
    );

    let p = a.playbook(
        &[inv],
        &playbook,
        &["-e", "iifs_group=app", "-e", "iifs_lease=30", "-f", "3"],
    );
    p.assert_ok(&names);
    for (h, r) in p.task("Phase 1 - hold the writes of the group (every host at once)") {
        assert_eq!(r["changed"], true, "{h}: {r}");
    }
    for (h, r) in p.task("Phase 2 - new point in time of the group, only if every host holds") {
        assert_eq!(r["changed"], true, "{h}: {r}");
        assert!(r.get("skipped").is_none(), "{h}: {r}");
    }
    for (h, r) in p.task("Phase 3 - release every host (always)") {
        assert_eq!(
            r["changed"], true,
            "{h}: a hold was in force until phase 3: {r}"
        );
    }
    let summary = p.task("Summary");
    let lines = summary.values().next().expect("a summary")["msg"].to_string();
    eprintln!("cross_host_instant.yml: {lines}");
    for h in &names {
        assert!(
            lines.contains(&format!("{h}: new point in time")),
            "{lines}"
        );
    }
    let after = pits(f);
    for (i, h) in names.iter().enumerate() {
        assert!(
            after[i].0 > before[i].0,
            "{h}: db's point in time did not move: {before:?} -> {after:?}"
        );
        assert!(
            after[i].1 > before[i].1,
            "{h}: logs' point in time did not move: {before:?} -> {after:?}"
        );
        assert_eq!(
            (after[i].2.as_str(), after[i].3.as_str()),
            ("-", "-"),
            "{h}: still held"
        );
    }
    assert_writes_flow(f);

    // h3's group has another name, which does not exist there: h3 cannot hold, so nobody
    // updates, and h1 and h2, which held, are released.
    let extra = a.dir.path().join("h3-elsewhere.ini");
    std::fs::write(
        &extra,
        "[fleet]\nh3 iifs_group=nosuch\n\n[fleet:vars]\niifs_group=app\n",
    )
    .expect("inventory");
    let before = pits(f);
    while now_secs() <= before.iter().map(|p| p.0.max(p.1)).max().unwrap_or(0) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = a.playbook(
        &[inv, &extra],
        &playbook,
        &["-e", "iifs_lease=30", "-f", "3"],
    );
    assert!(!p.out.status.success(), "{}", p.context());
    let hold = p.task("Phase 1 - hold the writes of the group (every host at once)");
    assert_eq!(hold["h1"]["changed"], true, "{}", p.context());
    assert_eq!(hold["h2"]["changed"], true, "{}", p.context());
    assert_eq!(hold["h3"]["failed"], true, "{}", p.context());
    assert!(
        hold["h3"]["msg"].to_string().contains("nosuch"),
        "{}",
        p.context()
    );
    for (h, r) in p.task("Phase 2 - new point in time of the group, only if every host holds") {
        assert_eq!(
            r["skipped"], true,
            "{h}: updated although h3 did not hold: {r}"
        );
    }
    let release = p.task("Phase 3 - release every host (always)");
    assert_eq!(release["h1"]["changed"], true, "{}", p.context());
    assert_eq!(release["h2"]["changed"], true, "{}", p.context());
    for h in &names {
        assert_eq!(
            p.stat(h, "failures"),
            1,
            "{h}: the play must end failed: {}",
            p.context()
        );
    }
    let lines = p.task("Summary").values().next().expect("a summary")["msg"].to_string();
    eprintln!("cross_host_instant.yml, h3 without the group: {lines}");
    assert!(
        lines.contains("h1: old point in time: not every host held (h3)"),
        "{lines}"
    );
    assert_eq!(pits(f), before, "a point in time moved, or a hold is left");
    assert_writes_flow(f);

    // h3 off the network: unreachable in phase 1, nobody updates, h1 and h2 are released.
    // A fresh control socket dir: the connection kept from the runs above would hang.
    f.host(2).network_down();
    let p = a.playbook_via(
        "cp-down",
        &[inv],
        &playbook,
        &["-e", "iifs_group=app", "-e", "iifs_lease=60", "-f", "3"],
    );
    f.host(2).network_up();
    assert!(!p.out.status.success(), "{}", p.context());
    let hold = p.task("Phase 1 - hold the writes of the group (every host at once)");
    assert_eq!(hold["h3"]["unreachable"], true, "{}", p.context());
    for (h, r) in p.task("Phase 2 - new point in time of the group, only if every host holds") {
        assert_eq!(
            r["skipped"], true,
            "{h}: updated although h3 did not hold: {r}"
        );
    }
    let release = p.task("Phase 3 - release every host (always)");
    assert_eq!(release["h1"]["changed"], true, "{}", p.context());
    assert_eq!(release["h2"]["changed"], true, "{}", p.context());
    let lines = p.task("Summary").values().next().expect("a summary")["msg"].to_string();
    eprintln!("cross_host_instant.yml, h3 off the network: {lines}");
    assert!(
        lines.contains("h2: old point in time: not every host held (h3)"),
        "{lines}"
    );
    assert_eq!(pits(f), before, "a point in time moved, or a hold is left");
    assert_writes_flow(f);
}
