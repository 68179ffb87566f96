//! A real iifs mount for integration tests: the daemon binary in the foreground on a temp dir,
//! volumes as files next to it, and helpers that talk to the control tree like a script would.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod ctl;
pub mod faultfs;
pub mod loops;
pub mod refusal;

pub use ctl::write_ctl;

pub const BIN: &str = env!("CARGO_BIN_EXE_iifs");

/// Whether this machine can run mount tests; in CI it must, so a missing piece is a failure.
pub fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let why = format!("mount tests need root and /dev/fuse (root: {root}, /dev/fuse: {fuse})");
    if std::env::var_os("CI").is_some() {
        panic!("{why}: CI must run them");
    }
    eprintln!("SKIPPED: {why}");
    false
}

pub struct Mount {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
    pub state: PathBuf,
    pub opts: String,
    child: Option<Child>,
}

/// Starts a mount or returns from the test (skipped loudly outside CI).
#[macro_export]
macro_rules! mount_or_skip {
    () => {
        mount_or_skip!("")
    };
    ($opts:expr) => {
        match common::Mount::start($opts) {
            Some(m) => m,
            None => return,
        }
    };
}

/// Whether an iifs control tree is mounted at `mnt` (in this mount namespace).
pub fn is_mounted(mnt: &Path) -> bool {
    iifs::mounts::current()
        .unwrap_or_default()
        .iter()
        .any(|p| p == mnt)
}

/// The pid of the daemon serving `mnt`, found by its command line.
pub fn daemon_pid(mnt: &Path) -> Option<i32> {
    let needle = mnt.to_string_lossy().into_owned();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("iifs")) && args.contains(&needle) {
            return Some(pid);
        }
    }
    None
}

/// Wait (up to 20 s) for process `pid` to be gone.
pub fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Wait (up to 20 s) until `cond` holds for the status of `set`.
#[track_caller]
pub fn wait_for(m: &Mount, set: &str, what: &str, cond: impl Fn(&HashMap<String, String>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = m.status(set);
        if cond(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "set {set}: timed out waiting for {what}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until the throttled first copy of `set` (`delay=10000 units=1`: one chunk, then 10 s
/// of sleep) has moved its first chunk of `chunks`: it holds still while a test looks at it.
#[track_caller]
pub fn wait_throttled_copy(m: &Mount, set: &str, chunks: u64) {
    wait_for(m, set, "the first chunk of the throttled copy", |st| {
        st["state"] == "copying" && st["chunks_to_copy"].parse::<u64>().unwrap_or(chunks) < chunks
    });
}

/// A numeric status value.
#[track_caller]
pub fn num(st: &HashMap<String, String>, key: &str) -> u64 {
    let v = st
        .get(key)
        .unwrap_or_else(|| panic!("status has no key '{key}': {st:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("status key '{key}' is not a number: {v:?}"))
}

impl Mount {
    pub fn start(opts: &str) -> Option<Mount> {
        if !can_mount() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("iifs-test-")
            .tempdir()
            .expect("temp dir");
        let mnt = dir.path().join("mnt");
        let state = dir.path().join("state");
        fs::create_dir_all(&mnt).expect("mountpoint");
        let mut m = Mount {
            dir,
            mnt,
            state,
            opts: opts.to_string(),
            child: None,
        };
        m.spawn();
        Some(m)
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("iifs.log"))
            .expect("log file");
        let mut o = format!("state_dir={},log_level=info", self.state.display());
        if !self.opts.is_empty() {
            o = format!("{o},{}", self.opts);
        }
        let child = Command::new(BIN)
            .arg("none")
            .arg(&self.mnt)
            .args(["-f", "-o", &o])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start iifs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&self.mnt) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("iifs exited ({status}) before mounting:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "iifs did not mount in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("iifs.log")).unwrap_or_default()
    }

    /// Clean stop (SIGTERM, as systemd or a shutdown would) and start again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.force_unmount();
    }

    /// SIGKILL the daemon at once, as a crash would, and clear the dead mount.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.force_unmount();
    }

    /// Start again after `kill9`.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    fn force_unmount(&self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The three volumes of a set: `m{tag}.img` of `size` bytes filled from `seed`, an empty
    /// shadow `s{tag}.img` of the same size, and an empty bitmap file `b{tag}.img` (iifs sizes it).
    pub fn volumes(&self, tag: &str, size: u64, seed: u64) -> (String, String, String) {
        (
            self.volume(&format!("m{tag}.img"), size, seed),
            self.volume(&format!("s{tag}.img"), size, 0),
            self.volume(&format!("b{tag}.img"), 0, 0),
        )
    }

    /// A volume file of `size` bytes in the test dir, filled with a pattern made from `seed`
    /// (seed 0: zeros). Returns its absolute path.
    pub fn volume(&self, name: &str, size: u64, seed: u64) -> String {
        let p = self.dir.path().join(name);
        let f = File::create(&p).expect("create volume");
        f.set_len(size).expect("size volume");
        if seed != 0 {
            f.write_all_at(&pattern(size as usize, seed), 0)
                .expect("fill volume");
        }
        p.to_string_lossy().into_owned()
    }

    /// Write one command to a ctl file (a path relative to the mount) with a single write(2);
    /// on refusal, the errno and the transaction reply read back on the same open file.
    pub fn ctl(&self, rel: &str, cmd: &str) -> Result<(), (i32, String)> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(rel))
            .expect("open ctl");
        write_ctl(&mut f, cmd)
    }

    /// A command that must succeed.
    pub fn ok(&self, rel: &str, cmd: &str) {
        if let Err((errno, reply)) = self.ctl(rel, cmd) {
            panic!(
                "'{cmd}' on {rel} failed: errno {errno}, reply {reply:?}\nlog:\n{}",
                self.log()
            );
        }
    }

    /// A set command that must succeed.
    pub fn set_ok(&self, set: &str, cmd: &str) {
        self.ok(&format!("sets/{set}/ctl"), cmd)
    }

    pub fn status(&self, set: &str) -> HashMap<String, String> {
        let text =
            fs::read_to_string(self.path(&format!("sets/{set}/status"))).expect("read status");
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn write_at(&self, rel: &str, offset: u64, data: &[u8]) {
        let f = OpenOptions::new()
            .write(true)
            .open(self.path(rel))
            .expect("open for write");
        f.write_all_at(data, offset)
            .unwrap_or_else(|e| panic!("write {rel} at {offset}: {e}"));
    }

    pub fn set_names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path("sets"))
            .expect("list sets")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- iifs log ---\n{}", self.log());
        }
    }
}

/// Deterministic bytes for a seed: distinct per 8-byte word, so misplaced chunks show.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn file_bytes(path: &str) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Run a shell command line; panics with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compare two byte images; on a difference, report where (not the whole buffers).
#[track_caller]
pub fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual.iter().zip(expected).position(|(a, b)| a != b);
    panic!(
        "{what}: images differ (lengths {} and {}, first difference at byte {:?})",
        actual.len(),
        expected.len(),
        first
    );
}
