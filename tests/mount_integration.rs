//! iifs as the system starts it: `mount -t fuse.iifs`, the fstab line in contrib/, the systemd
//! unit in contrib/, settings files, logging to the journal, and a restart after a crash.
//!
//! mount(8) does not pass PATH on to its helpers, so mount.fuse3 finds `iifs` only in the
//! shell's default PATH (/usr/local/sbin first). The mount tests therefore run mount(8) in a
//! private mount namespace (`unshare -m`) where a temp dir holding a link to the built binary
//! is bind-mounted over /usr/local/sbin; the host is left untouched. The daemon lives on in that
//! namespace: the test reaches its tree through /proc/PID/root and unmounts with `nsenter`.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{can_mount, daemon_pid, is_mounted, wait_gone, BIN};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `mounts` (a /proc/PID/mounts text) has a fuse.iifs mount at `mnt`.
fn iifs_mounted_in(mounts: &str, mnt: &Path) -> bool {
    iifs::mounts::iifs_mounts(mounts).iter().any(|p| p == mnt)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn volumes(dir: &Path, tag: &str) -> [PathBuf; 3] {
    ["m", "s", "b"].map(|v| {
        let p = dir.join(format!("{v}-{tag}.img"));
        fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        p
    })
}

/// A mount made by mount(8) in a private mount namespace, with the daemon found by pid.
struct NsMount {
    mnt: PathBuf,
    pid: i32,
}

impl NsMount {
    /// Run `mount_cmd` (a shell command) in a new private mount namespace where `iifs` is the
    /// built binary (through /usr/local/sbin) and `extra_binds` (source, target) are bound.
    fn start(dir: &Path, mnt: &Path, mount_cmd: &str, extra_binds: &[(&Path, &str)]) -> NsMount {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let link = bin.join("iifs");
        if !link.exists() {
            std::os::unix::fs::symlink(BIN, &link).unwrap();
        }
        fs::create_dir_all(mnt).unwrap();
        let mut script = format!("set -e\nmount --bind '{}' /usr/local/sbin\n", bin.display());
        for (src, target) in extra_binds {
            script.push_str(&format!("mount --bind '{}' '{target}'\n", src.display()));
        }
        script.push_str(mount_cmd);
        script.push('\n');
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("run unshare (util-linux)");
        assert!(out.status.success(), "{script}\n{}", text(&out));
        // mount.fuse3 ran `iifs none MNT -o ...`, which returned once the tree was live.
        let pid = daemon_pid(mnt).expect("the daemon started by mount.fuse3 runs");
        let m = NsMount {
            mnt: mnt.to_path_buf(),
            pid,
        };
        assert!(
            m.mounted(),
            "no fuse.iifs mount at {} in its namespace",
            mnt.display()
        );
        assert!(!is_mounted(mnt), "the mount stays in its own namespace");
        m
    }

    /// A path inside the mount, as the daemon's namespace sees it.
    fn path(&self, rel: &str) -> PathBuf {
        let inside = self.mnt.join(rel);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(inside.strip_prefix("/").unwrap())
    }

    fn mounted(&self) -> bool {
        iifs_mounted_in(
            &fs::read_to_string(format!("/proc/{}/mounts", self.pid)).unwrap_or_default(),
            &self.mnt,
        )
    }

    /// Enable a set through ctl, as `echo ... > MNT/ctl` does, and see it in the tree.
    fn enable(&self, vols: &[PathBuf; 3], name: &str) {
        let cmd = format!(
            "enable dep {} {} {} {name}\n",
            vols[0].display(),
            vols[1].display(),
            vols[2].display()
        );
        fs::write(self.path("ctl"), cmd).expect("write the enable command to ctl");
        let sets: Vec<String> = fs::read_dir(self.path("sets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(sets, vec![name.to_string()]);
        let status = fs::read_to_string(self.path(&format!("sets/{name}/status"))).unwrap();
        assert!(!status.is_empty());
    }

    /// `umount MNT` in the daemon's namespace; the daemon then exits.
    fn umount(self) {
        let out = Command::new("nsenter")
            .args(["--target", &self.pid.to_string(), "--mount", "umount"])
            .arg(&self.mnt)
            .output()
            .expect("run nsenter (util-linux)");
        assert!(out.status.success(), "umount: {}", text(&out));
        assert!(wait_gone(self.pid), "the daemon exits once unmounted");
    }
}

impl Drop for NsMount {
    fn drop(&mut self) {
        if Path::new(&format!("/proc/{}", self.pid)).exists() {
            // SAFETY: signalling the daemon this test started; SIGTERM unmounts it cleanly.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            wait_gone(self.pid);
        }
    }
}

#[test]
fn mount_t_fuse_iifs_mounts_the_tree_and_umount_ends_the_daemon() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let state = dir.path().join("state");
    let vols = volumes(dir.path(), "t");
    let m = NsMount::start(
        dir.path(),
        &mnt,
        &format!(
            "mount -t fuse.iifs none '{}' -o 'state_dir={}'",
            mnt.display(),
            state.display()
        ),
        &[],
    );
    m.enable(&vols, "viamount");
    assert!(
        fs::read_to_string(state.join("iifs.yaml"))
            .unwrap()
            .contains("viamount"),
        "the state_dir option reached the daemon"
    );
    m.umount();
    let log = fs::read_to_string(state.join("iifs.log")).unwrap_or_default();
    assert!(log.contains("unmounted"), "{log}");
}

#[test]
fn the_contrib_fstab_line_mounts_with_mount_fstab() {
    if !can_mount() {
        return;
    }
    let line = fs::read_to_string(root().join("contrib/iifs.fstab"))
        .unwrap()
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("contrib/iifs.fstab has an fstab line")
        .to_string();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields,
        ["none", "/mnt/ii", "fuse.iifs", "defaults", "0", "0"]
    );

    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let fstab = dir.path().join("fstab");
    fs::write(
        &fstab,
        format!("{}\n", line.replace("/mnt/ii", mnt.to_str().unwrap())),
    )
    .unwrap();
    // `defaults` means the default state dir, /var/lib/iifs as root: give the namespace its
    // own /var/lib so the host's stays untouched.
    let var_lib = dir.path().join("var-lib");
    fs::create_dir_all(&var_lib).unwrap();
    let vols = volumes(dir.path(), "f");
    let m = NsMount::start(
        dir.path(),
        &mnt,
        &format!("mount --fstab '{}' '{}'", fstab.display(), mnt.display()),
        &[(&var_lib, "/var/lib")],
    );
    m.enable(&vols, "viafstab");
    assert!(
        fs::read_to_string(var_lib.join("iifs/iifs.yaml"))
            .unwrap()
            .contains("viafstab"),
        "the set registry is in the default state dir"
    );
    m.umount();
}

/// Where `systemd-analyze verify` looks for the pages the unit's Documentation= names:
/// man7/ and man8/ linking to the repository's pages, as if installed.
fn man_path(dir: &Path) -> PathBuf {
    let mp = dir.join("man");
    for (sect, page) in [("7", "iifs.7"), ("8", "iifs.8"), ("8", "iiadm.8")] {
        let d = mp.join(format!("man{sect}"));
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(root().join("man").join(page), d.join(page)).unwrap();
    }
    mp
}

/// `systemd-analyze verify` of a unit: its exit status and the stderr lines about that unit
/// (others, about units of this machine, are noise).
fn verify(unit: &Path, man_path: &Path) -> (bool, Vec<String>) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .env("MANPATH", man_path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze (package systemd)");
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let dir = unit.parent().unwrap().to_string_lossy().into_owned();
    let ours = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(&name) || l.contains(&dir))
        .map(str::to_string)
        .collect();
    (out.status.success(), ours)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        let why = "systemd-analyze (package systemd) is not installed";
        if std::env::var_os("CI").is_some() {
            panic!("{why}: CI must run this test");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let unit = fs::read_to_string(root().join("contrib/iifs.service")).unwrap();
    assert!(
        unit.lines().any(|l| l == "Type=notify"),
        "the unit waits for READY=1"
    );
    let exec = "ExecStart=/usr/local/bin/iifs ";
    assert!(unit.lines().any(|l| l.starts_with(exec)), "{unit}");
    let unit = unit.replace(exec, &format!("ExecStart={BIN} "));

    let dir = tempfile::tempdir().unwrap();
    let mp = man_path(dir.path());
    let units = dir.path().join("units");
    fs::create_dir_all(&units).unwrap();
    let path = units.join("iifs.service");
    fs::write(&path, &unit).unwrap();
    let (ok, problems) = verify(&path, &mp);
    assert!(
        ok && problems.is_empty(),
        "systemd-analyze verify {}: {}\n{}",
        path.display(),
        if ok { "succeeded" } else { "failed" },
        problems.join("\n")
    );

    // The check is not blind: a misspelt key in the same unit is caught.
    let typo = units.join("iifs-typo.service");
    fs::write(&typo, unit.replace("KillMode=", "KilMode=")).unwrap();
    let (_, problems) = verify(&typo, &mp);
    assert!(
        problems.iter().any(|l| l.contains("KilMode")),
        "a misspelt key went unnoticed: {problems:?}"
    );
}

#[test]
fn an_unknown_key_in_the_config_file_is_a_usage_error_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("settings.yaml");
    fs::write(&config, "threads: 2\nchunksize: 4096\n").unwrap();
    let mnt = dir.path().join("mnt");
    let out = Command::new(BIN)
        .arg("none")
        .arg(&mnt)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chunksize") && err.contains(config.to_str().unwrap()),
        "{err}"
    );
    assert!(!mnt.exists(), "nothing happens after a usage error");
}

/// Run `iifs -f` with stderr to a file, `journal` deciding JOURNAL_STREAM: None unset,
/// Some(true) the file's own dev:ino (as systemd sets it), Some(false) another stream's.
/// The daemon mounts, is stopped by SIGTERM, and its stderr is returned.
fn foreground_log(journal: Option<bool>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let err_path = dir.path().join("stderr");
    let err = fs::File::create(&err_path).unwrap();
    let meta = err.metadata().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("none")
        .arg(&mnt)
        .arg("-f")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    match journal {
        None => cmd.env_remove("JOURNAL_STREAM"),
        Some(true) => cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())),
        Some(false) => cmd.env(
            "JOURNAL_STREAM",
            format!("{}:{}", meta.dev(), meta.ino() + 1),
        ),
    };
    let mut child = cmd.spawn().unwrap();
    wait_until("the foreground mount", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "iifs exited ({st}): {}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        is_mounted(&mnt)
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mnt));
    fs::read_to_string(&err_path).unwrap()
}

#[test]
fn under_systemd_log_lines_carry_syslog_priorities_and_no_timestamp() {
    if !can_mount() {
        return;
    }
    let log = foreground_log(Some(true));
    for l in log.lines() {
        let prio = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(prio, Some("3" | "4" | "6" | "7")),
            "a journal line without a priority: {l:?} in\n{log}"
        );
    }
    assert!(
        log.lines().any(|l| l.starts_with("<6>iifs mounted at ")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>iifs unmounted from ")),
        "{log}"
    );
    assert!(!log.contains(" INFO "), "{log}");
}

#[test]
fn in_a_terminal_or_a_file_log_lines_are_env_logger_lines() {
    if !can_mount() {
        return;
    }
    // Not under systemd, or JOURNAL_STREAM inherited but stderr redirected elsewhere.
    for journal in [None, Some(false)] {
        let log = foreground_log(journal);
        let line = log
            .lines()
            .find(|l| l.contains("iifs mounted at "))
            .unwrap_or_else(|| panic!("no mount line in\n{log}"));
        assert!(
            line.starts_with('[') && line.contains(" INFO "),
            "JOURNAL_STREAM {journal:?}: {line:?}"
        );
        assert!(!log.contains("<6>"), "{log}");
    }
}

#[test]
fn an_error_before_mounting_is_an_error_priority_line_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("state");
    fs::write(&not_a_dir, b"x").unwrap();
    let err_path = dir.path().join("stderr");
    let err = fs::File::create(&err_path).unwrap();
    let meta = err.metadata().unwrap();
    let st = Command::new(BIN)
        .arg("none")
        .arg(dir.path().join("mnt"))
        .arg("-f")
        .arg("--state-dir")
        .arg(&not_a_dir)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("RUST_LOG")
        .stderr(err)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    let log = fs::read_to_string(&err_path).unwrap();
    assert!(log.lines().any(|l| l.starts_with("<3>")), "{log}");
    assert!(
        log.lines().all(|l| l.starts_with('<')),
        "every line has a priority: {log}"
    );
}

#[test]
fn a_restart_after_a_crash_detaches_the_dead_mount() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let state = dir.path().join("state");
    let start = || {
        Command::new(BIN)
            .arg("none")
            .arg(&mnt)
            .arg("-o")
            .arg(format!("state_dir={}", state.display()))
            .output()
            .unwrap()
    };
    let out = start();
    assert!(out.status.success(), "{}", text(&out));
    let pid = daemon_pid(&mnt).expect("daemon running");
    // SAFETY: killing the daemon this test started, as a crash would.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_gone(pid));
    assert!(is_mounted(&mnt), "a killed daemon leaves its mount");
    let e = fs::metadata(&mnt).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");

    let out = start();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dead iifs mount"),
        "{}",
        text(&out)
    );
    assert!(mnt.join("ctl").exists(), "the new mount serves the tree");
    let pid = daemon_pid(&mnt).expect("daemon running again");
    let st = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(st.success());
    assert!(wait_gone(pid));
    assert!(!is_mounted(&mnt));
}

#[test]
fn under_systemd_readiness_and_stopping_are_notified() {
    if !can_mount() {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let dir = tempfile::tempdir().unwrap();
    let path_socket = dir.path().join("notify");
    let abstract_name = format!("iifs-test-notify-{}", std::process::id());
    for (socket, notify_socket) in [
        (
            UnixDatagram::bind(&path_socket).unwrap(),
            path_socket.to_string_lossy().into_owned(),
        ),
        (
            UnixDatagram::bind_addr(
                &SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
            )
            .unwrap(),
            format!("@{abstract_name}"),
        ),
    ] {
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mnt = dir.path().join("mnt");
        let mut child = Command::new(BIN)
            .arg("none")
            .arg(&mnt)
            .arg("-f")
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("NOTIFY_SOCKET", &notify_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no READY=1 on {notify_socket}: {e}"));
        assert_eq!(&buf[..n], b"READY=1");
        // Ready means the tree is live.
        assert!(is_mounted(&mnt));
        assert!(mnt.join("ctl").exists());
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let n = socket.recv(&mut buf).expect("STOPPING=1");
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(child.wait().unwrap().success());
        assert!(!is_mounted(&mnt));
    }
}
