//! Test hosts on one machine (issue 14): a `Fleet` of n hosts, each a network namespace reached
//! from this one over its own veth pair, with its own mount, uts and pid namespaces, its own sshd
//! (PID 1 of the host) and its own iifs daemon mounted at /mnt/iifs, iifs and iiadm on root's
//! PATH. The console (the test process) reaches the hosts over real ssh with the Fleet's
//! ssh_config, and their files directly through /proc/PID/root.
//!
//! Included with `#[path = "common/hosts.rs"] mod hosts;` (it uses nothing of `common`).
//!
//! A Fleet must be dropped by the thread that started it: its hosts are tied to that thread
//! (PR_SET_PDEATHSIG), so that a test process killed half-way does not leave hosts running.
//! Leftovers of a killed run (namespaces and veths named after a process that is gone) are
//! deleted by the next `Fleet::start`.
#![allow(dead_code)]

#[path = "ctl.rs"]
mod ctl;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const IIFS: &str = env!("CARGO_BIN_EXE_iifs");
pub const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");

/// Hosts get addresses of 10.213.0.0/16, one /30 each (console side .1, host side .2): a range
/// nothing on this machine uses, so traffic to it goes only to the test hosts.
const NET: [u8; 2] = [10, 213];
const BLOCKS: u32 = 1 << 14;
/// Namespace and root-side veth names: `ifl<pid>-<fleet>-<host>` in base 36 (at most 15
/// characters, the kernel's limit for a link name). The pid tells leftovers of a dead process.
const PREFIX: &str = "ifl";
/// Taken while namespaces and addresses are chosen and created, so that Fleets of several test
/// processes (cargo runs test binaries one at a time, but several workers may run at once)
/// never pick the same addresses.
const LOCK: &str = "/tmp/iifs-fleet.lock";
/// root's PATH inside a host for commands the harness runs there (ssh sessions get sshd's).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The host's state dir (its daemon log, iifs.log, is there too) and volume dir, both in the
/// host's own tmpfs /run.
pub const STATE_DIR: &str = "/run/iifs";
pub const VOL_DIR: &str = "/run/vol";

static NEXT_FLEET: AtomicUsize = AtomicUsize::new(0);

/// PID 1 of a host's pid namespace runs this (`sh -c INIT init NAME SSHD_CONFIG IIFS IIADM`).
/// sshd ends it as PID 1: it reaps every orphan, and when it is killed the kernel ends
/// everything else in the host, whatever ssh sessions left behind included.
const INIT: &str = r#"set -e
name=$1 sshd_config=$2 iifs=$3 iiadm=$4
echo "$name" > /proc/sys/kernel/hostname
# A new mount namespace starts with copies of the parent's mounts: iifs mounts there would make
# iiadm see several mounts. (Each umount waits for an RCU grace period under a global lock: the
# namespace files of /run/netns, one per host of every fleet, go in one lazy umount of the
# directory, not one each; they are under /run, which gets a tmpfs of its own anyway.)
umount -l /run/netns 2>/dev/null || true
for round in 1 2 3 4 5; do
    targets=$(awk '{ for (i = 7; i <= NF && $i != "-"; i++);
                     if ($(i + 1) == "fuse.iifs") print $5 }' /proc/self/mountinfo)
    [ -z "$targets" ] && break
    for t in $targets; do umount -l "$(printf '%b' "$t")" 2>/dev/null || true; done
done
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd /run/vol /run/iifs
mount -t tmpfs -o mode=755 tmpfs /mnt
mkdir /mnt/iifs
# root's own home, as on a host of its own: nothing of the console's (its shell start-up files,
# ansible's temp files) is shared or costs time in every ssh session.
mount -t tmpfs -o mode=700 tmpfs /root
# /usr/local/sbin is first on root's PATH and empty on this machine: nothing is hidden.
mount -t tmpfs -o mode=755 tmpfs /usr/local/sbin
ln -s "$iifs" /usr/local/sbin/iifs
ln -s "$iiadm" /usr/local/sbin/iiadm
# Started as a service would be: it detaches and returns once the tree is mounted.
iifs none /mnt/iifs -o state_dir=/run/iifs
exec /usr/sbin/sshd -D -e -f "$sshd_config" 2>>/run/sshd.log
"#;

fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// What the harness needs of this machine, or why it cannot run.
fn prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("test hosts need root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("test hosts need /dev/fuse".into());
    }
    let mut missing = Vec::new();
    for tool in ["ip", "ssh", "ssh-keygen", "unshare", "nsenter", "awk"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .env(
                "PATH",
                format!("{PATH}:{}", std::env::var("PATH").unwrap_or_default()),
            )
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            missing.push(tool);
        }
    }
    // sshd re-executes itself by its absolute path.
    if !Path::new("/usr/sbin/sshd").exists() {
        missing.push("/usr/sbin/sshd");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("test hosts need {}", missing.join(", ")))
    }
}

fn b36(mut v: u64) -> String {
    const D: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(D[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

fn from_b36(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 36).ok()
}

/// Run a command; its output (success or not).
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// Run a command that must succeed.
#[track_caller]
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -batch` of `lines` (each an ip command without the `ip`); with `force`, errors do not
/// stop the batch (teardown) and are not reported.
fn ip_batch(netns: Option<&str>, lines: &str, force: bool) {
    let mut c = Command::new("ip");
    if let Some(ns) = netns {
        c.args(["-n", ns]);
    }
    if force {
        c.arg("-force");
    }
    let mut child = c
        .args(["-batch", "-"])
        .env("PATH", PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ip -batch");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .expect("feed ip -batch");
    let out = child.wait_with_output().expect("wait for ip -batch");
    if !force {
        assert!(
            out.status.success(),
            "ip -batch failed: {}\nbatch:\n{lines}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// The system-wide lock for choosing and creating names and addresses.
struct Lock(File);

impl Lock {
    fn take() -> Lock {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .expect("open the fleet lock");
        // SAFETY: flock on a file we own; it is released when the file is closed.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock {LOCK}");
        Lock(f)
    }
}

/// The pid of the test process that created a namespace or veth named by this harness.
fn owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    from_b36(pid).map(|p| p as i32)
}

/// Delete what killed runs left: namespaces and veths whose test process is gone, and what
/// still runs in those namespaces (a host's PID 1 outlives a test process killed before its
/// PDEATHSIG could act, e.g. with a stopped tracer). Only names of this harness are touched.
fn sweep_stale() {
    let me = std::process::id() as i32;
    let stale = |name: &str| owner(name).is_some_and(|p| p != me && !alive(p));
    let mut lines = String::new();
    let listed = String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).into_owned();
    for ns in listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| stale(n))
    {
        let pids = String::from_utf8_lossy(&run("ip", &["netns", "pids", ns]).stdout).into_owned();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: a plain signal to a process of a dead test run's host, by its id.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        lines.push_str(&format!("link del {ns}\nnetns del {ns}\n"));
    }
    let links = String::from_utf8_lossy(&run("ip", &["-o", "link", "show"]).stdout).into_owned();
    for l in links.lines() {
        // "7: ifl1a2b-0-1@if2: <BROADCAST,...": the name is the second field, before any '@'.
        let Some(name) = l
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        if stale(name) && !lines.contains(&format!("link del {name}\n")) {
            lines.push_str(&format!("link del {name}\n"));
        }
    }
    if !lines.is_empty() {
        eprintln!("fleet: deleting leftovers of a killed run:\n{lines}");
        ip_batch(None, &lines, true);
    }
    // Their temp dirs (keys, configs, logs): iifs-fleet-TAG-XXXXXX.
    if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.strip_prefix("iifs-fleet-").is_some_and(stale) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// `n` free /30 blocks of 10.213.0.0/16 (by the console-side addresses in use), starting at
/// a place that differs from run to run: a new Fleet rarely reuses the addresses of one just
/// gone, whose ssh connections may not all be closed yet.
fn allocate(n: usize) -> Vec<u32> {
    let shown = run_ok("ip", &["-4", "-o", "addr", "show"]);
    let mut used = vec![false; BLOCKS as usize];
    let prefix = format!("inet {}.{}.", NET[0], NET[1]);
    for l in shown.lines() {
        let Some(at) = l.find(&prefix) else { continue };
        let rest = &l[at + prefix.len()..];
        let addr = rest.split('/').next().unwrap_or("");
        let mut parts = addr.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        used[(((a << 8) | b) / 4) as usize] = true;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let start = (std::process::id().wrapping_mul(7919) ^ nanos) % BLOCKS;
    let mut out = Vec::with_capacity(n);
    for k in 0..BLOCKS {
        let b = (start + k) % BLOCKS;
        if !used[b as usize] {
            out.push(b);
            if out.len() == n {
                return out;
            }
        }
    }
    panic!("fewer than {n} free address blocks in 10.213.0.0/16");
}

fn addr(block: u32, host_side: bool) -> String {
    let x = block * 4 + if host_side { 2 } else { 1 };
    format!("{}.{}.{}.{}", NET[0], NET[1], x >> 8, x & 255)
}

fn keygen(path: &Path) {
    run_ok(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "iifs-fleet",
            "-f",
            path.to_str().unwrap(),
        ],
    );
}

pub struct Fleet {
    dir: tempfile::TempDir,
    tag: String,
    hosts: Vec<Host>,
    /// DIR/ssh_config.
    cfg: PathBuf,
    /// How long `start` took to have every host answer over ssh with its mount up.
    pub startup: Duration,
}

pub struct Host {
    /// The ssh name (h1..hn), also its hostname inside.
    pub name: String,
    /// Its address (host side of its veth).
    pub addr: String,
    /// The pid (in this pid namespace) of its PID 1; 0 until started.
    pub pid: i32,
    /// Its network namespace, also the name of its veth's end in this namespace.
    pub netns: String,
    /// Console-side files of this host: its sshd_config and the log of its init.
    dir: PathBuf,
    /// The `unshare` whose child is the host's PID 1.
    child: Mutex<Option<Child>>,
}

impl Fleet {
    /// `n` hosts named h1..hn, each with its own network, mount, uts and pid namespaces, sshd
    /// and iifs daemon (mounted at /mnt/iifs, state dir /run/iifs in its own tmpfs), iifs and
    /// iiadm on root's PATH there; returns once every host answers over ssh. None (with a
    /// message) outside CI when the machine lacks something; panics in CI.
    pub fn start(n: usize) -> Option<Fleet> {
        assert!(n >= 1, "a fleet of no hosts");
        if let Err(why) = prerequisites() {
            if ci() {
                panic!("{why}: CI must run the multi-host tests");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let t0 = Instant::now();
        let k = NEXT_FLEET.fetch_add(1, Ordering::SeqCst) as u64;
        let tag = format!("{PREFIX}{}-{}", b36(std::process::id() as u64), b36(k));
        // Named after the tag, so that the leftovers of a killed run can be told (sweep_stale).
        let dir = tempfile::Builder::new()
            .prefix(&format!("iifs-fleet-{tag}-"))
            .tempdir()
            .expect("fleet temp dir");
        keygen(&dir.path().join("id_ed25519"));
        keygen(&dir.path().join("host_key"));
        fs::create_dir(dir.path().join("run")).expect("fleet runtime dir");
        let mut fleet = Fleet {
            cfg: dir.path().join("ssh_config"),
            dir,
            tag,
            hosts: Vec::with_capacity(n),
            startup: Duration::ZERO,
        };
        let verbose = std::env::var_os("IIFS_FLEET_VERBOSE").is_some();
        fleet.make_network(n);
        if verbose {
            eprintln!("fleet: network of {n} hosts at {:?}", t0.elapsed());
        }
        fleet.write_configs();
        for h in &mut fleet.hosts {
            h.spawn();
        }
        for h in &mut fleet.hosts {
            h.find_pid1();
        }
        if verbose {
            eprintln!("fleet: {n} hosts started at {:?}", t0.elapsed());
        }
        // Waiting is most of the time (sshd starting, ssh handshakes): in parallel.
        let cfg = fleet.ssh_config().to_path_buf();
        std::thread::scope(|s| {
            let waits: Vec<_> = fleet
                .hosts
                .iter()
                .map(|h| {
                    let cfg = &cfg;
                    s.spawn(move || h.wait_ready(cfg))
                })
                .collect();
            let mut errors = Vec::new();
            for w in waits {
                if let Err(e) = w.join().expect("wait thread") {
                    errors.push(e);
                }
            }
            assert!(
                errors.is_empty(),
                "hosts did not come up:\n{}",
                errors.join("\n")
            );
        });
        fleet.startup = t0.elapsed();
        Some(fleet)
    }

    /// Namespaces, veths and addresses of `n` hosts.
    fn make_network(&mut self, n: usize) {
        let lock = Lock::take();
        sweep_stale();
        let blocks = allocate(n);
        let mut lines = String::new();
        for (i, b) in blocks.iter().enumerate() {
            let name = format!("h{}", i + 1);
            let netns = format!("{}-{}", self.tag, b36(i as u64 + 1));
            assert!(netns.len() <= 15, "link name {netns} too long");
            // A leftover of a killed run of a process that had our pid.
            if Path::new("/run/netns").join(&netns).exists() {
                let _ = run("ip", &["netns", "del", &netns]);
            }
            if Path::new("/sys/class/net").join(&netns).exists() {
                let _ = run("ip", &["link", "del", &netns]);
            }
            lines.push_str(&format!(
                "netns add {netns}\n\
                 link add {netns} type veth peer name eth0 netns {netns}\n\
                 addr add {}/30 dev {netns}\n\
                 link set {netns} up\n",
                addr(*b, false)
            ));
            let dir = self.dir.path().join(&name);
            fs::create_dir(&dir).expect("host dir");
            self.hosts.push(Host {
                name,
                addr: addr(*b, true),
                pid: 0,
                netns,
                dir,
                child: Mutex::new(None),
            });
        }
        ip_batch(None, &lines, false);
        drop(lock);
        std::thread::scope(|s| {
            for h in &self.hosts {
                s.spawn(move || {
                    let lines = format!(
                        "addr add {}/30 dev eth0\nlink set eth0 up\nlink set lo up\n",
                        h.addr
                    );
                    ip_batch(Some(&h.netns), &lines, false);
                });
            }
        });
    }

    fn write_configs(&self) {
        let d = self.dir.path();
        let key = d.join("id_ed25519");
        let mut cfg = String::new();
        for h in &self.hosts {
            // The address too: hosts reached through an inventory's ansible_host get the same
            // options (and share the connection to the name).
            cfg.push_str(&format!(
                "Host {} {}\n    HostName {}\n",
                h.name, h.addr, h.addr
            ));
            let sshd = format!(
                "ListenAddress {addr}\n\
                 HostKey {hostkey}\n\
                 PidFile /run/sshd.pid\n\
                 AuthorizedKeysFile {pubkey}\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UseDNS no\n\
                 PrintMotd no\n\
                 MaxSessions 200\n\
                 MaxStartups 200\n\
                 ClientAliveInterval 0\n\
                 Subsystem sftp internal-sftp\n",
                addr = h.addr,
                hostkey = d.join("host_key").display(),
                pubkey = d.join("id_ed25519.pub").display(),
            );
            fs::write(h.dir.join("sshd_config"), sshd).expect("sshd_config");
        }
        cfg.push_str(&format!(
            "Host *\n    User root\n    IdentityFile {}\n    IdentitiesOnly yes\n    \
             StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    \
             GlobalKnownHostsFile /dev/null\n    LogLevel ERROR\n    \
             PasswordAuthentication no\n",
            key.display()
        ));
        fs::write(d.join("ssh_config"), cfg).expect("ssh_config");
    }

    pub fn names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// Host `i` (0-based: host(0) is names()[0], "h1").
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// The Fleet's temp dir (console side).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ssh_config(&self) -> &Path {
        &self.cfg
    }

    /// The private key the hosts accept (for ansible_ssh_private_key_file).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// The value for IIADM_SSH.
    pub fn iiadm_ssh(&self) -> String {
        format!("ssh -F {}", self.ssh_config().display())
    }

    /// The XDG_RUNTIME_DIR `iiadm`/`iiadm_command` give iiadm: its ssh connections (control
    /// sockets) then belong to this Fleet, never shared with another Fleet's host of the same
    /// address, and are closed with it.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The hosts, one name a line.
    pub fn hosts_file(&self) -> PathBuf {
        let p = self.dir.path().join("hosts");
        fs::write(&p, self.names().join("\n") + "\n").expect("hosts file");
        p
    }

    /// An Ansible INI inventory: group [fleet] with every host (ansible_host its address,
    /// ansible_user root, the key, -F ssh_config).
    pub fn inventory(&self) -> PathBuf {
        self.inventory_with(&[("fleet", &(0..self.len()).collect::<Vec<_>>())])
    }

    /// An inventory with the given groups (host indexes, 0-based), written as
    /// inventory-NAMES.ini; every group gets the connection variables.
    pub fn inventory_with(&self, groups: &[(&str, &[usize])]) -> PathBuf {
        let mut text = String::new();
        for (g, members) in groups {
            text.push_str(&format!("[{g}]\n"));
            for &i in *members {
                let h = &self.hosts[i];
                text.push_str(&format!("{} ansible_host={}\n", h.name, h.addr));
            }
            text.push('\n');
        }
        text.push_str(&format!(
            "[all:vars]\nansible_user=root\nansible_ssh_private_key_file={}\n\
             ansible_ssh_common_args=-F {}\nansible_python_interpreter=/usr/bin/python3\n",
            self.key().display(),
            self.ssh_config().display()
        ));
        let names: Vec<&str> = groups.iter().map(|(g, _)| *g).collect();
        let p = self
            .dir
            .path()
            .join(format!("inventory-{}.ini", names.join("-")));
        fs::write(&p, text).expect("inventory");
        p
    }

    /// A console-side iiadm with IIADM_SSH and XDG_RUNTIME_DIR set, stdin from /dev/null.
    pub fn iiadm_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(IIADM);
        c.args(args)
            .env("IIADM_SSH", self.iiadm_ssh())
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env_remove("IIFS_MOUNT")
            .env_remove("ANSIBLE_INVENTORY")
            .stdin(Stdio::null());
        c
    }

    /// Run a console-side iiadm to its end.
    pub fn iiadm(&self, args: &[&str]) -> Output {
        self.iiadm_command(args).output().expect("run iiadm")
    }

    /// `ssh -F ssh_config HOST CMD` (no connection sharing), to its end.
    pub fn ssh(&self, i: usize, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .arg(&self.hosts[i].name)
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Every host's logs (init, sshd, iifs), for a failure's report.
    pub fn logs(&self) -> String {
        self.hosts.iter().map(|h| h.logs()).collect()
    }

    /// ssh processes of this machine whose command line names our ssh_config: connection
    /// masters iiadm left (ControlPersist), or sessions of a command a test did not end.
    fn our_ssh_processes(&self) -> Vec<i32> {
        let needle = self.ssh_config().to_string_lossy().into_owned();
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir("/proc") else {
            return out;
        };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args
                .first()
                .is_some_and(|a| a == "ssh" || a.ends_with("/ssh"))
                && args.iter().any(|a| a == &needle)
            {
                out.push(pid);
            }
        }
        out
    }

    /// Close the ssh connection masters of this Fleet: `ssh -O exit` on the control paths
    /// iiadm uses (ours, and root's default in case a test ran iiadm without our runtime
    /// dir), then end by pid any ssh still running with our config.
    fn close_masters(&self) {
        let cfg = self.ssh_config();
        let paths = [
            format!("{}/iiadm-ssh/%C", self.runtime_dir().display()),
            "/run/iiadm-ssh/%C".to_string(),
        ];
        std::thread::scope(|s| {
            for h in &self.hosts {
                for p in &paths {
                    let cfg = &cfg;
                    s.spawn(move || {
                        let _ = Command::new("ssh")
                            .arg("-F")
                            .arg(cfg)
                            .arg("-o")
                            .arg(format!("ControlPath={p}"))
                            .args(["-O", "exit", &h.name])
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    });
                }
            }
        });
        let pids = self.our_ssh_processes();
        for &pid in &pids {
            // SAFETY: a plain signal, by id, to an ssh started with this Fleet's config.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            // 50 hosts' logs would bury the failure: the end of it is enough.
            let start = logs.len().saturating_sub(40_000);
            let start = (start..logs.len())
                .find(|&i| logs.is_char_boundary(i))
                .unwrap_or(0);
            eprintln!("--- fleet logs ---\n{}", &logs[start..]);
        }
        self.close_masters();
        std::thread::scope(|s| {
            for h in &self.hosts {
                s.spawn(move || h.stop());
            }
        });
        let mut lines = String::new();
        for h in &self.hosts {
            lines.push_str(&format!("link del {0}\nnetns del {0}\n", h.netns));
        }
        if !lines.is_empty() {
            ip_batch(None, &lines, true);
        }
    }
}

impl Host {
    /// Start the host's PID 1 (from the calling thread: see the module's note).
    fn spawn(&mut self) {
        let log = File::create(self.dir.join("init.log")).expect("init log");
        let sshd_config = self.dir.join("sshd_config");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns])
            .args([
                "unshare",
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--mount-proc",
            ])
            .args(["--propagation", "private", "--kill-child=SIGKILL"])
            .args(["sh", "-c", INIT, "init", &self.name])
            .arg(&sshd_config)
            .args([IIFS, IIADM])
            .env("PATH", PATH)
            .env_remove("IIFS_MOUNT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. `ip netns exec` execs unshare, which keeps it:
        // when the test process dies, unshare dies, and its --kill-child ends the host.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c.spawn().expect("start a host");
        *self.child.lock().unwrap() = Some(child);
    }

    /// Learn the pid of the host's PID 1: unshare's one child.
    fn find_pid1(&mut self) {
        let unshare = self.child.lock().unwrap().as_ref().unwrap().id() as i32;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let kids = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
                .unwrap_or_default();
            if let Some(pid) = kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
                self.pid = pid;
                return;
            }
            if let Some(st) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .unwrap()
                .try_wait()
                .ok()
                .flatten()
            {
                panic!(
                    "host {} ended ({st}) before starting:\n{}",
                    self.name,
                    self.logs()
                );
            }
            assert!(Instant::now() < deadline, "host {} has no PID 1", self.name);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until the host's sshd listens, its iifs is mounted and `ssh HOST true` works.
    fn wait_ready(&self, cfg: &Path) -> Result<(), String> {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(90);
        let pidfile = self.path("/run/sshd.pid");
        loop {
            if let Some(st) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("host {} ended ({st}):\n{}", self.name, self.logs()));
            }
            // sshd writes its pid file once it listens; it runs only after iifs mounted.
            if pidfile.exists() {
                if std::env::var_os("IIFS_FLEET_VERBOSE").is_some() {
                    eprintln!(
                        "fleet: {} sshd listening after {:?}",
                        self.name,
                        t0.elapsed()
                    );
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "host {}: sshd did not start:\n{}",
                    self.name,
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = Command::new("ssh")
                .arg("-F")
                .arg(cfg)
                .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
                .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
                .args([&self.name, "true"])
                .stdin(Stdio::null())
                .output()
                .expect("run ssh");
            if out.status.success() {
                if std::env::var_os("IIFS_FLEET_VERBOSE").is_some() {
                    eprintln!("fleet: {} answers after {:?}", self.name, t0.elapsed());
                }
                if !self.mounted() {
                    return Err(format!(
                        "host {}: iifs is not mounted:\n{}",
                        self.name,
                        self.logs()
                    ));
                }
                return Ok(());
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "host {}: ssh does not answer: {last}\n{}",
            self.name,
            self.logs()
        ))
    }

    /// End the host: its iifs unmounted, its PID 1 killed (the kernel ends the rest of its pid
    /// namespace), its unshare reaped.
    fn stop(&self) {
        if self.pid <= 0 {
            return;
        }
        if let Some(d) = self.daemon_pid() {
            // A test may have stopped it; a stopped daemon would not see its unmount.
            // SAFETY: a plain signal, by id, to this host's daemon.
            unsafe { libc::kill(d, libc::SIGCONT) };
        }
        if alive(self.pid) {
            let _ = self.sh("umount -l /mnt/iifs 2>/dev/null");
            // SAFETY: a plain signal, by id, to the PID 1 this Fleet started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        let mut guard = self.child.lock().unwrap();
        if let Some(c) = guard.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("fleet: host {} did not end within 20 s", self.name);
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        *guard = None;
    }

    /// `inside` (an absolute path as the host sees it) seen from here, through its PID 1.
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(inside.trim_start_matches('/'))
    }

    /// A path under the host's iifs mount (/mnt/iifs/REL), seen from here.
    pub fn mnt(&self, rel: &str) -> PathBuf {
        self.path(&format!("/mnt/iifs/{}", rel.trim_start_matches('/')))
    }

    /// A command for `program ARGS` inside the host (all its namespaces).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-u", "-n", "-p", "--"])
            .arg(program)
            .args(args)
            .env("PATH", PATH)
            .env_remove("IIFS_MOUNT")
            .env_remove("IIADM_SSH")
            .stdin(Stdio::null());
        c
    }

    /// Run `sh -c cmd` inside the host, to its end.
    pub fn sh(&self, cmd: &str) -> Output {
        self.command("sh", &["-c", cmd]).output().expect("nsenter")
    }

    /// `sh -c cmd` inside the host that must succeed; its stdout.
    #[track_caller]
    pub fn sh_ok(&self, cmd: &str) -> String {
        let out = self.sh(cmd);
        assert!(
            out.status.success(),
            "{}: `{cmd}` failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// iiadm run inside the host directly (no ssh).
    pub fn iiadm(&self, args: &[&str]) -> Output {
        self.command("iiadm", args).output().expect("nsenter iiadm")
    }

    /// A file volume of `size` bytes (zeros) in the host's /run/vol; its path as seen inside.
    pub fn volume(&self, name: &str, size: u64) -> String {
        let inside = format!("{VOL_DIR}/{name}");
        let f = File::create(self.path(&inside)).expect("create volume");
        f.set_len(size).expect("size volume");
        inside
    }

    /// A volume filled with `data` (its size).
    pub fn volume_with(&self, name: &str, data: &[u8]) -> String {
        let inside = format!("{VOL_DIR}/{name}");
        let f = File::create(self.path(&inside)).expect("create volume");
        f.write_all_at(data, 0).expect("fill volume");
        inside
    }

    /// Whether the host's iifs is mounted at /mnt/iifs.
    pub fn mounted(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.pid))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(" /mnt/iifs ") && l.contains(" - fuse.iifs "))
    }

    /// The pid (here) of the host's iifs daemon: an `iifs` process in the host's pid
    /// namespace.
    pub fn daemon_pid(&self) -> Option<i32> {
        let ns = fs::read_link(format!("/proc/{}/ns/pid", self.pid)).ok()?;
        for e in fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == self.pid {
                continue;
            }
            let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == "iifs"
                && fs::read_link(e.path().join("ns/pid")).ok() == Some(ns.clone())
            {
                return Some(pid);
            }
        }
        None
    }

    /// The pid of the host's sshd listener (its PID 1).
    pub fn sshd_pid(&self) -> i32 {
        self.pid
    }

    /// SIGSTOP the host's iifs daemon: every access to its mount waits.
    pub fn pause_daemon(&self) {
        let pid = self.daemon_pid().expect("the host's iifs daemon");
        // SAFETY: a plain signal, by id, to this host's daemon.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }

    /// SIGCONT the host's iifs daemon.
    pub fn resume_daemon(&self) {
        if let Some(pid) = self.daemon_pid() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }

    /// Stop the host's iifs daemon cleanly (SIGTERM, as a shutdown would) and wait until it is
    /// gone and unmounted.
    pub fn stop_daemon(&self) {
        let pid = self.daemon_pid().expect("the host's iifs daemon");
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "{}: iifs did not stop",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.mounted() {
            let _ = self.sh("umount -l /mnt/iifs");
        }
    }

    /// Send the host's iifs daemon SIGTERM and return at once (a clean stop, not waited for).
    pub fn term_daemon(&self) -> i32 {
        let pid = self.daemon_pid().expect("the host's iifs daemon");
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        pid
    }

    /// SIGKILL the host's iifs daemon, as a crash would, and clear its dead mount.
    pub fn kill_daemon(&self) {
        let pid = self.daemon_pid().expect("the host's iifs daemon");
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(pid) {
            assert!(Instant::now() < deadline, "{}: iifs did not die", self.name);
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.sh("umount -l /mnt/iifs");
    }

    /// Start the host's iifs daemon again (same state dir: its sets come back).
    pub fn start_daemon(&self) {
        self.sh_ok(&format!("iifs none /mnt/iifs -o state_dir={STATE_DIR}"));
        assert!(
            self.mounted(),
            "{}: iifs started but is not mounted",
            self.name
        );
    }

    /// Take the host off the network: its end of the veth goes down, so that what is sent
    /// to it is dropped (connections to it hang, new ones time out) and stays on this
    /// machine: the route to it stays on its veth, whose carrier is gone. (Down on this side,
    /// the route would go, and traffic to the address would follow the default route out.)
    pub fn network_down(&self) {
        run_ok("ip", &["-n", &self.netns, "link", "set", "eth0", "down"]);
    }

    /// Put the host back on the network.
    pub fn network_up(&self) {
        run_ok("ip", &["-n", &self.netns, "link", "set", "eth0", "up"]);
    }

    /// A set's status (key: value lines) read through the host's mount.
    pub fn status(&self, set: &str) -> HashMap<String, String> {
        parse_status(&self.read_mnt(&format!("sets/{set}/status")))
    }

    /// A group's status.
    pub fn group_status(&self, group: &str) -> HashMap<String, String> {
        parse_status(&self.read_mnt(&format!("groups/{group}/status")))
    }

    #[track_caller]
    pub fn read_mnt(&self, rel: &str) -> String {
        fs::read_to_string(self.mnt(rel))
            .unwrap_or_else(|e| panic!("{}: read {rel}: {e}", self.name))
    }

    /// Write one command to a ctl file under the mount with a single write(2); on refusal, the
    /// errno and the reply read back on the same open file.
    pub fn ctl(&self, rel: &str, cmd: &str) -> Result<(), (i32, String)> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.mnt(rel))
            .unwrap_or_else(|e| panic!("{}: open {rel}: {e}", self.name));
        ctl::write_ctl(&mut f, cmd)
    }

    /// A ctl command that must succeed.
    #[track_caller]
    pub fn ctl_ok(&self, rel: &str, cmd: &str) {
        if let Err((errno, reply)) = self.ctl(rel, cmd) {
            panic!(
                "{}: '{cmd}' on {rel} failed: errno {errno}, reply {reply:?}",
                self.name
            );
        }
    }

    /// The host's logs: its init's output, sshd's log and iifs's log.
    pub fn logs(&self) -> String {
        let init = fs::read_to_string(self.dir.join("init.log")).unwrap_or_default();
        let (sshd, iifs) = if self.pid > 0 && alive(self.pid) {
            (
                fs::read_to_string(self.path("/run/sshd.log")).unwrap_or_default(),
                fs::read_to_string(self.path(&format!("{STATE_DIR}/iifs.log"))).unwrap_or_default(),
            )
        } else {
            Default::default()
        };
        format!(
            "=== {} ({}) init:\n{init}=== {} sshd:\n{sshd}=== {} iifs:\n{iifs}",
            self.name, self.addr, self.name, self.name
        )
    }
}

/// A program's output as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A finished command's status, stdout and stderr, for a failure message.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}stderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `out`, which must be a success.
#[track_caller]
pub fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what}: {}", show(&out));
    out
}

/// `key: value` lines as a map.
pub fn parse_status(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
