//! Hardening of the FUSE layer (issue 8): commands that run beside a pending `wait`, a `wait`
//! that ends when its writer is interrupted, permissions under `allow_other`, status file
//! sizes, fallocate modes, one write per command, copies refused onto an open target, and the
//! reply idiom after `disable`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{sh, Mount};

const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");
const CHUNK: u64 = 64 * 1024;

/// An independent set `s` whose full copy runs slowly (64 chunks, 100 ms each): long enough
/// for a `wait` to be pending while the test acts.
fn slow_copy(m: &Mount) {
    let size = 64 * CHUNK;
    let (master, shadow, bitmap) = m.volumes("", size, 1);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} s delay=100 units=1"),
    );
    assert_eq!(m.status("s")["state"], "copying");
}

/// A dependent set `d` over fresh volumes, with the master's content from seed 3.
fn dependent(m: &Mount) -> (String, String) {
    let size = 16 * CHUNK;
    let (master, shadow, bitmap) = m.volumes("d", size, 3);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} d"));
    (master, shadow)
}

/// `sh -c SCRIPT` started in the background.
fn spawn_sh(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sh")
}

/// Wait up to `within` for a child to end; whether it did.
fn ended_within(c: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A `wait` on the set's ctl, written by a shell in the background, that is still pending.
fn pending_wait(m: &Mount) -> Child {
    let ctl = m.path("sets/s/ctl");
    let mut waiter = spawn_sh(&format!("echo wait > {}", ctl.display()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        waiter.try_wait().expect("poll the waiter").is_none(),
        "the wait ended before the copy did"
    );
    waiter
}

#[test]
fn abort_and_params_run_while_a_wait_is_pending() {
    let m = mount_or_skip!();
    slow_copy(&m);
    let mut waiter = pending_wait(&m);
    let ctl = m.path("sets/s/ctl");
    // From another process, through the shell's O_TRUNC open as a script would.
    let t = Instant::now();
    sh(&format!("echo params 50 2 > {}", ctl.display()));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "params took {:?} beside a pending wait",
        t.elapsed()
    );
    assert_eq!(m.status("s")["params"], "50 2");
    // disable answers at once too (refused: an independent copy runs).
    let t = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("echo disable > {}", ctl.display()))
        .output()
        .expect("run sh");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "disable took {:?} beside a pending wait",
        t.elapsed()
    );
    assert!(!out.status.success(), "disable of a copying set: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("busy"),
        "{out:?}"
    );
    let t = Instant::now();
    m.set_ok("s", "abort");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "abort took {:?} beside a pending wait",
        t.elapsed()
    );
    assert_eq!(m.status("s")["state"], "aborted");
    assert!(
        ended_within(&mut waiter, Duration::from_secs(2)),
        "the wait did not end after the abort"
    );
    let out = waiter.wait_with_output().expect("waiter output");
    assert!(out.status.success(), "wait after abort: {out:?}");
}

#[test]
fn sigint_ends_a_pending_wait_and_the_copy_goes_on() {
    let m = mount_or_skip!();
    slow_copy(&m);
    let ctl = m.path("sets/s/ctl");
    let mnt = m.mnt.display().to_string();
    let echo_wait = format!("echo wait > {}", ctl.display());
    // A shell's wait, and iiadm -w, under `timeout -s INT 1` and `timeout 1` (SIGTERM).
    for (signal, cmd) in [
        ("INT", vec!["sh", "-c", &echo_wait]),
        ("INT", vec![IIADM, "--mount", &mnt, "-w", "s"]),
        ("TERM", vec![IIADM, "--mount", &mnt, "-w", "s"]),
    ] {
        let t = Instant::now();
        let st = Command::new("timeout")
            .args(["-s", signal, "1"])
            .args(&cmd)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run timeout");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "timeout -s {signal} 1 {cmd:?} took {:?}",
            t.elapsed()
        );
        assert_eq!(st.code(), Some(124), "{cmd:?} was not interrupted: {st}");
    }
    // The copy itself was not touched.
    assert_eq!(m.status("s")["state"], "copying");
    // A blocked SIGINT does not end the wait: only a signal that would interrupt the write.
    let mut blocked = Command::new("perl")
        .arg("-e")
        .arg(format!(
            "use POSIX; sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGINT)); \
             open(my $f, '>', '{}') or die; syswrite($f, \"wait\\n\") or die; exit 0",
            ctl.display()
        ))
        .spawn()
        .expect("start perl");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(blocked.id() as i32, libc::SIGINT) };
    assert!(
        !ended_within(&mut blocked, Duration::from_millis(500)),
        "a blocked SIGINT ended the wait"
    );
    m.set_ok("s", "abort");
    assert!(ended_within(&mut blocked, Duration::from_secs(2)));
}

#[test]
fn sigkill_ends_a_pending_wait_promptly() {
    let m = mount_or_skip!();
    slow_copy(&m);
    let mut waiter = pending_wait(&m);
    let t = Instant::now();
    waiter.kill().expect("SIGKILL the waiter");
    assert!(
        ended_within(&mut waiter, Duration::from_secs(1)),
        "the waiter outlived SIGKILL by {:?}",
        t.elapsed()
    );
    assert_eq!(m.status("s")["state"], "copying");
    // The set still takes commands.
    m.set_ok("s", "abort");
    assert_eq!(m.status("s")["state"], "aborted");
}

/// The permission bits of a file of the mount.
fn mode_of(m: &Mount, rel: &str) -> u32 {
    fs::metadata(m.path(rel)).expect(rel).permissions().mode() & 0o777
}

/// Run `script` as user nobody; its exit status and stderr.
fn as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn another_user_gets_no_more_access_through_the_mount_than_directly() {
    let m = mount_or_skip!("allow_other");
    // nobody may walk to the mount, and to volumes it may read.
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let (master, shadow) = dependent(&m);
    fs::set_permissions(&master, fs::Permissions::from_mode(0o600)).expect("chmod master");
    fs::set_permissions(&shadow, fs::Permissions::from_mode(0o644)).expect("chmod shadow");
    let mnt = m.mnt.display().to_string();
    let before = m.read("sets/d/status");
    // The control tree is readable...
    let (ok, err) = as_nobody(&format!("cat {mnt}/status {mnt}/sets/d/status >/dev/null"));
    assert!(ok, "nobody cannot read the status files: {err}");
    // ...but takes no command from another user, global or per set.
    for (ctl, cmd) in [
        ("sets/d/ctl", "abort"),
        ("sets/d/ctl", "disable"),
        (
            "ctl",
            "enable dep /etc/shadow /tmp/nobody-s /tmp/nobody-b x",
        ),
    ] {
        let (ok, err) = as_nobody(&format!("echo {cmd} > {mnt}/{ctl}"));
        assert!(!ok, "nobody wrote '{cmd}' to {ctl}");
        assert!(err.contains("Permission denied"), "{cmd} on {ctl}: {err}");
        let (ok, _) = as_nobody(&format!("cat {mnt}/{ctl}"));
        assert!(!ok, "nobody read {ctl}");
    }
    assert_eq!(m.set_names(), ["d"]);
    assert_eq!(m.read("sets/d/status"), before);
    // A volume is as open through the mount as directly: master (0600 root) not at all,
    // shadow (0644 root) for reading only.
    let meta = fs::metadata(m.path("sets/d/master")).expect("stat master");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (ok, err) = as_nobody(&format!("cat {mnt}/sets/d/master > /dev/null"));
    assert!(
        !ok,
        "nobody read a master its backing file does not let it read"
    );
    assert!(err.contains("Permission denied"), "{err}");
    // A dependent shadow serves the master's untouched chunks: readable only where both
    // backing files let a user read (it used to show the shadow file's 0644, and so gave
    // nobody the image of a master it may not read).
    assert_eq!(mode_of(&m, "sets/d/shadow"), 0o600);
    let (ok, _) = as_nobody(&format!("cat {mnt}/sets/d/shadow > /dev/null"));
    assert!(!ok, "nobody read the image of a master it may not read");
    fs::set_permissions(&master, fs::Permissions::from_mode(0o644)).expect("chmod master");
    // Attributes are cached for a second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(mode_of(&m, "sets/d/shadow"), 0o644);
    let (ok, err) = as_nobody(&format!("cat {mnt}/sets/d/shadow > /dev/null"));
    assert!(
        ok,
        "nobody cannot read a shadow both backing files let it read: {err}"
    );
    fs::set_permissions(&master, fs::Permissions::from_mode(0o600)).expect("chmod master");
    let (ok, _) = as_nobody(&format!(
        "printf x | dd of={mnt}/sets/d/shadow conv=notrunc 2>/dev/null"
    ));
    assert!(
        !ok,
        "nobody wrote a shadow its backing file does not let it write"
    );
    // The owner follows the backing file.
    sh(&format!("chown 65534:65534 {master}"));
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, err) = as_nobody(&format!("cat {mnt}/sets/d/master > /dev/null"));
    assert!(ok, "the owner of the backing master cannot read it: {err}");
    // The control files keep their modes.
    let mode = |rel: &str| fs::metadata(m.path(rel)).expect(rel).permissions().mode() & 0o777;
    assert_eq!(mode("ctl"), 0o200);
    assert_eq!(mode("sets/d/ctl"), 0o200);
    assert_eq!(mode("status"), 0o444);
    assert_eq!(mode("sets/d/status"), 0o444);
    assert!(
        fs::read_to_string("/proc/mounts")
            .expect("mounts")
            .lines()
            .any(|l| l.contains(&mnt) && l.contains("default_permissions")),
        "the mount lacks default_permissions"
    );
}

#[test]
fn status_files_have_the_size_of_their_content() {
    let m = mount_or_skip!();
    dependent(&m);
    let copy = m.dir.path().join("saved-status");
    for rel in ["status", "version", "volumes", "sets/d/status"] {
        let path = m.path(rel);
        let size: u64 = sh(&format!("stat -c %s {}", path.display()))
            .trim()
            .parse()
            .expect("a size");
        let content = m.read(rel);
        assert!(!content.is_empty(), "{rel} is empty");
        assert_eq!(size, content.len() as u64, "stat size of {rel}");
        sh(&format!("cp {} {}", path.display(), copy.display()));
        sh(&format!("cmp {} {}", path.display(), copy.display()));
        sh(&format!("cmp -s {} {}", path.display(), copy.display()));
    }
}

/// fallocate(2) on an open volume file; the errno on failure.
fn fallocate(f: &File, mode: i32, offset: u64, len: u64) -> Result<(), i32> {
    // SAFETY: fallocate on an open descriptor with plain integer arguments.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, len as i64) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[test]
fn fallocate_does_what_it_says_or_refuses() {
    let m = mount_or_skip!();
    let (_, shadow) = dependent(&m);
    let size = 16 * CHUNK;
    // A plain allocation reserves the backing file's blocks (the shadow file is sparse).
    let blocks = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p).expect("stat backing").blocks() * 512
    };
    assert!(blocks(&shadow) < size, "the backing shadow is not sparse");
    let f = File::options()
        .write(true)
        .open(m.path("sets/d/shadow"))
        .expect("open shadow");
    fallocate(&f, 0, 0, size).expect("allocation of the whole shadow");
    assert!(blocks(&shadow) >= size, "the allocation reserved nothing");
    drop(f);
    for rel in ["sets/d/master", "sets/d/shadow"] {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path(rel))
            .expect(rel);
        let before = m.read(rel);
        // Modes a volume cannot do are refused, not answered with a success.
        for (what, mode) in [
            ("collapse-range", libc::FALLOC_FL_COLLAPSE_RANGE),
            ("insert-range", libc::FALLOC_FL_INSERT_RANGE),
            ("unshare-range", libc::FALLOC_FL_UNSHARE_RANGE),
        ] {
            assert_eq!(
                fallocate(&f, mode, 0, CHUNK),
                Err(libc::EOPNOTSUPP),
                "{what} on {rel}"
            );
        }
        // Zeroing a range that reaches past the end would grow a file: a volume cannot grow.
        assert_eq!(
            fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, size - 4096, 8192),
            Err(libc::ENOSPC),
            "zero range past the end of {rel}"
        );
        assert_eq!(
            fallocate(&f, 0, size - 4096, 8192),
            Err(libc::ENOSPC),
            "allocation past the end of {rel}"
        );
        assert_eq!(m.read(rel), before, "{rel} changed by refused fallocates");
        // What it does, it does: zero range (with or without KEEP_SIZE) and punch hole.
        fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 0, 4096).expect("zero range");
        fallocate(
            &f,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            size - 4096,
            8192,
        )
        .expect("zero range with keep size, cut at the end");
        fallocate(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            CHUNK,
            4096,
        )
        .expect("punch hole");
        fallocate(&f, 0, 0, size).expect("allocation within the volume");
        let after = m.read(rel);
        assert_eq!(after.len() as u64, size);
        let mut want = before.clone();
        for r in [0..4096, (size - 4096) as usize..size as usize] {
            want[r].fill(0);
        }
        want[CHUNK as usize..CHUNK as usize + 4096].fill(0);
        common::assert_same(&after, &want, rel);
    }
    sh(&format!(
        "! fallocate --collapse-range -o 0 -l 65536 {} 2>/dev/null",
        m.path("sets/d/master").display()
    ));
}

/// One write(2) of `data` to a ctl file; its errno on refusal.
fn one_write(m: &Mount, rel: &str, data: &[u8]) -> Result<usize, i32> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path(rel))
        .expect("open ctl");
    f.write(data).map_err(|e| e.raw_os_error().unwrap_or(0))
}

#[test]
fn a_ctl_write_longer_than_a_command_is_refused_whole() {
    let m = mount_or_skip!();
    dependent(&m);
    let before = m.read("sets/d/status");
    for len in [2 << 20, (2 << 20) + 7, 100 << 10] {
        // A valid command, padded: the kernel splits the write, the first piece would parse.
        let mut data = b"params 5 5".to_vec();
        data.resize(len, b' ');
        data.push(b'\n');
        assert_eq!(
            one_write(&m, "sets/d/ctl", &data),
            Err(libc::EINVAL),
            "a {len}-byte write"
        );
        // The last piece alone would be a valid command too.
        let mut data = vec![b' '; len];
        data.extend_from_slice(b"\nabort\n");
        assert_eq!(one_write(&m, "sets/d/ctl", &data), Err(libc::EINVAL));
        assert_eq!(
            m.read("sets/d/status"),
            before,
            "a {len}-byte write changed the set"
        );
        let mut data = b"enable dep /a /b /c x".to_vec();
        data.resize(len, b' ');
        assert_eq!(one_write(&m, "ctl", &data), Err(libc::EINVAL));
        assert_eq!(m.set_names(), ["d"]);
    }
    // The reply says why.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("sets/d/ctl"))
        .expect("open ctl");
    assert!(f.write(&vec![b' '; 2 << 20]).is_err());
    let mut reply = String::new();
    f.read_to_string(&mut reply).expect("reply");
    assert!(reply.contains("at most 65536 bytes"), "{reply}");
    // A command of ordinary length still works, also appended (`>>`).
    sh(&format!(
        "echo params 7 7 >> {}",
        m.path("sets/d/ctl").display()
    ));
    assert_eq!(m.status("d")["params"], "7 7");
    m.set_ok("d", "params 6 6");
    assert_eq!(m.status("d")["params"], "6 6");
}

#[test]
fn update_onto_an_open_target_is_refused_unless_forced() {
    let m = mount_or_skip!();
    let (_, _) = dependent(&m);
    let shadow_before = m.read("sets/d/shadow");
    // A write to the master makes the next update change the shadow.
    m.write_at("sets/d/master", 0, &[0xAB; 4096]);
    let pit = m.status("d")["pit_time"].clone();
    // The master being open does not matter for an update of the shadow...
    let master = File::open(m.path("sets/d/master")).expect("open master");
    // ...but the shadow being open does.
    let held = File::open(m.path("sets/d/shadow")).expect("open shadow");
    let (errno, reply) = m
        .ctl("sets/d/ctl", "update shadow")
        .expect_err("update shadow under an open shadow");
    assert_eq!(errno, libc::EBUSY, "{reply}");
    assert!(
        reply.contains("umount") && reply.contains("losetup -d") && reply.contains("force"),
        "{reply}"
    );
    assert_eq!(
        m.read("sets/d/shadow"),
        shadow_before,
        "the refused update changed the shadow"
    );
    assert_eq!(m.status("d")["pit_time"], pit);
    drop(held);
    // A loop device over the shadow, the case of a mounted image.
    let dev = sh(&format!(
        "losetup -f --show {}",
        m.path("sets/d/shadow").display()
    ));
    let dev = dev.trim().to_string();
    let refused = m.ctl("sets/d/ctl", "update shadow");
    let iiadm = Command::new(IIADM)
        .arg("--mount")
        .arg(&m.mnt)
        .args(["-u", "s", "d"])
        .stdin(Stdio::null())
        .output()
        .expect("iiadm");
    sh(&format!("losetup -d {dev}"));
    let (errno, reply) = refused.expect_err("update shadow under a loop device");
    assert_eq!(errno, libc::EBUSY, "{reply}");
    assert!(!iiadm.status.success(), "iiadm -u s under a loop device");
    assert!(
        String::from_utf8_lossy(&iiadm.stderr).contains("losetup -d"),
        "{iiadm:?}"
    );
    assert_eq!(m.read("sets/d/shadow"), shadow_before);
    // `force` runs it even so; iiadm --force the same.
    let held = File::open(m.path("sets/d/shadow")).expect("open shadow");
    m.set_ok("d", "update shadow force");
    let mut now = [0u8; 4];
    held.read_exact_at(&mut now, 0).expect("read the shadow");
    assert_eq!(
        now, [0xAB; 4],
        "the forced update did not take the new point in time"
    );
    m.write_at("sets/d/master", 0, &[0xCD; 4096]);
    let st = Command::new(IIADM)
        .arg("--mount")
        .arg(&m.mnt)
        .args(["-u", "s", "d", "--force"])
        .stdin(Stdio::null())
        .status()
        .expect("iiadm --force");
    assert!(st.success(), "iiadm -u s --force: {st}");
    drop(held);
    // A copy onto the master is refused while the master is open, through any set on it.
    let (errno, reply) = m
        .ctl("sets/d/ctl", "update master")
        .expect_err("update master under an open master");
    assert_eq!(errno, libc::EBUSY, "{reply}");
    assert!(reply.contains("master file"), "{reply}");
    let (errno, _) = m.ctl("sets/d/ctl", "copy master").expect_err("copy master");
    assert_eq!(errno, libc::EBUSY);
    drop(master);
    m.set_ok("d", "update master");
    m.set_ok("d", "wait");
}

#[test]
fn the_reply_idiom_works_after_disable() {
    let m = mount_or_skip!();
    dependent(&m);
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>{}; echo disable >&3; cat <&3",
            m.path("sets/d/ctl").display()
        ))
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "an error after disable"
    );
    assert!(m.set_names().is_empty());
}
