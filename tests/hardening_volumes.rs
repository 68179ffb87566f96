//! Hardening of how volumes are opened and identified (issue 8): one storage under two names,
//! volumes inside an iifs mount, a second daemon, bitmap files made by `enable`, refused
//! enables that must change nothing, sets too large for memory, errno accuracy.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{file_bytes, sh, Mount};

const MIB: u64 = 1 << 20;

/// Loop devices and mounts made by a test, undone even when it fails half-way.
#[derive(Default)]
struct Cleanup {
    loops: Vec<String>,
    mounts: Vec<PathBuf>,
    immutable: Vec<String>,
}

impl Cleanup {
    fn loop_dev(&mut self, file: &str) -> String {
        let dev = sh(&format!("losetup -f --show {file}")).trim().to_string();
        self.loops.push(dev.clone());
        dev
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for l in self.loops.iter().rev() {
            let _ = Command::new("losetup").arg("-d").arg(l).output();
        }
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
        for f in &self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(f).output();
        }
    }
}

/// A refused command: its errno and the sentence of its reply.
#[track_caller]
fn refused(m: &Mount, cmd: &str) -> (i32, String) {
    match m.ctl("ctl", cmd) {
        Ok(()) => panic!("'{cmd}' was accepted\nlog:\n{}", m.log()),
        Err((errno, reply)) => {
            assert!(reply.starts_with("error: "), "reply {reply:?}");
            (errno, reply)
        }
    }
}

/// The whole reply of a command, read back on the same open file after its write.
fn reply_of(m: &Mount, cmd: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("ctl"))?;
    f.write_all(cmd.as_bytes())?;
    let mut reply = String::new();
    f.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Master, shadow and bitmap files of `size` bytes in the test dir.
fn volumes(m: &Mount, prefix: &str, size: u64) -> (String, String, String) {
    (
        m.volume(&format!("{prefix}m"), size, 7),
        m.volume(&format!("{prefix}s"), size, 8),
        m.volume(&format!("{prefix}b"), 0, 0),
    )
}

/// Defect 6: sets on one master must agree on its size; the second enable after the master
/// grew used to be accepted (the master was open at its old size under a set made for the new).
#[test]
fn a_second_set_on_a_master_that_grew_is_refused() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = volumes(&m, "a", MIB);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    fs::OpenOptions::new()
        .write(true)
        .open(&master)
        .unwrap()
        .set_len(2 * MIB)
        .unwrap();
    let s2 = m.volume("s2", 2 * MIB, 0);
    let b2 = m.volume("b2", 0, 0);
    let (errno, reply) = refused(&m, &format!("enable dep {master} {s2} {b2} b"));
    assert_eq!(errno, libc::EINVAL, "{reply}");
    assert!(reply.contains("bytes"), "{reply}");
    assert_eq!(m.set_names(), vec!["a".to_string()]);
    // The first set goes on working, to its end.
    m.write_at("sets/a/master", MIB - 4096, &[5u8; 4096]);
    assert_eq!(
        &m.read("sets/a/master")[(MIB - 4096) as usize..],
        &[5u8; 4096][..]
    );
    assert_eq!(m.status("a")["state"], "idle");
}

/// Defect 9: a missing bitmap file is made (mode 0600) and the reply says so on its second
/// line, `ok` alone on the first; a missing directory or device is an error; a refused enable
/// removes the file it made.
#[test]
fn a_missing_bitmap_file_is_created_and_said_so() {
    let m = mount_or_skip!();
    let (master, shadow, _) = volumes(&m, "a", MIB);
    let bm = m.dir.path().join("new.bm");
    let bms = bm.to_str().unwrap();
    let reply = reply_of(&m, &format!("enable dep {master} {shadow} {bms} a")).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines[0], "ok", "{reply:?}");
    let meta = fs::metadata(&bm).unwrap();
    assert_eq!(
        lines[1],
        format!("created bitmap {bms} ({} bytes, mode 0600)", meta.len())
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(m.status("a")["state"], "idle");

    // iiadm prints the note.
    let (m2, s2, _) = volumes(&m, "c", MIB);
    let bm2 = m.dir.path().join("new2.bm");
    let out = Command::new(env!("CARGO_BIN_EXE_iiadm"))
        .args(["-e", "dep", &m2, &s2, bm2.to_str().unwrap(), "c"])
        .env("IIFS_MOUNT", &m.mnt)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("created bitmap"), "{said}");

    // Only a missing directory or device is an error.
    let (m3, s3, _) = volumes(&m, "d", MIB);
    let nodir = m.dir.path().join("no-such-dir/x.bm");
    let (errno, reply) = refused(&m, &format!("enable dep {m3} {s3} {} d", nodir.display()));
    assert_eq!(errno, libc::ENOENT, "{reply}");
    assert!(reply.contains("directory"), "{reply}");
    let (errno, reply) = refused(&m, &format!("enable dep {m3} {s3} /dev/iifs-no-such-dev d"));
    assert_eq!(errno, libc::ENOENT, "{reply}");
    assert!(!Path::new("/dev/iifs-no-such-dev").exists());

    // Refused after the file was made (the shadow is too small): the file is gone again.
    let small = m.volume("small", 4096, 0);
    let bm3 = m.dir.path().join("new3.bm");
    let (errno, reply) = refused(&m, &format!("enable dep {m3} {small} {} d", bm3.display()));
    assert_eq!(errno, libc::EINVAL, "{reply}");
    assert!(
        !bm3.exists(),
        "a refused enable left {} behind",
        bm3.display()
    );
    // Through a link to a missing file: the file is made where the link leads, and removed
    // again on refusal (the link stays).
    let target = m.dir.path().join("target.bm");
    let link = m.dir.path().join("link.bm");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    refused(&m, &format!("enable dep {m3} {small} {} d", link.display()));
    assert!(!target.exists() && fs::symlink_metadata(&link).is_ok());
    m.ok("ctl", &format!("enable dep {m3} {s3} {} d", link.display()));
    assert!(fs::metadata(&target).unwrap().len() > 0);
}

/// Defect 14: a volume the daemon may not open is EACCES with a sentence, whatever the reason
/// (an immutable file is EPERM from open, a read-only file system EROFS).
#[test]
fn a_volume_the_daemon_may_not_open_is_eacces() {
    let m = mount_or_skip!();
    let mut c = Cleanup::default();
    let (master, shadow, bitmap) = volumes(&m, "a", MIB);
    // The test dir's file system may not take attributes (tmpfs): then a file in /var/tmp.
    let spare = tempfile::tempdir_in("/var/tmp").unwrap();
    let master = match Command::new("chattr").arg("+i").arg(&master).status() {
        Ok(s) if s.success() => master,
        _ => {
            let p = spare.path().join("am").display().to_string();
            fs::write(&p, vec![1u8; MIB as usize]).unwrap();
            sh(&format!("chattr +i {p}"));
            p
        }
    };
    c.immutable.push(master.clone());
    let (errno, reply) = refused(&m, &format!("enable dep {master} {shadow} {bitmap} a"));
    assert_eq!(errno, libc::EACCES, "{reply}");
    assert!(reply.contains("immutable"), "{reply}");
    sh(&format!("chattr -i {master}"));

    let ro = m.dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let src = m.dir.path().display().to_string();
    sh(&format!("mount --bind {src} {}", ro.display()));
    c.mounts.push(ro.clone());
    sh(&format!("mount -o remount,bind,ro {}", ro.display()));
    let ro_master = ro.join("am");
    let (errno, reply) = refused(
        &m,
        &format!("enable dep {} {shadow} {bitmap} a", ro_master.display()),
    );
    assert_eq!(errno, libc::EACCES, "{reply}");
    assert!(reply.contains("read-only"), "{reply}");
    assert!(m.set_names().is_empty());
}

/// Defect 25: a path too long for the system is EINVAL, not EIO.
#[test]
fn a_path_too_long_for_the_system_is_einval() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = volumes(&m, "a", MIB);
    let long_name = format!("{}/{}", m.dir.path().display(), "n".repeat(300));
    let long_path = format!("/{}", "d/".repeat(2100));
    for bad in [long_name, long_path] {
        for cmd in [
            format!("enable dep {bad} {shadow} {bitmap} a"),
            format!("enable dep {master} {bad} {bitmap} a"),
            format!("enable dep {master} {shadow} {bad} a"),
        ] {
            let (errno, reply) = refused(&m, &cmd);
            assert_eq!(errno, libc::EINVAL, "{reply}");
            assert!(reply.contains("too long"), "{reply}");
        }
    }
    assert!(m.set_names().is_empty());
}

/// Defect 15: a loop device is the same volume as the file behind it; two loop devices over
/// one file are one volume. Refused before anything is written.
#[test]
fn a_loop_device_is_the_file_behind_it() {
    let m = mount_or_skip!();
    let mut c = Cleanup::default();
    let (master, shadow, bitmap) = volumes(&m, "a", 4 * MIB);
    let before = file_bytes(&master);
    let loop1 = c.loop_dev(&master);
    let loop2 = c.loop_dev(&master);
    let three = "three different volumes";
    // The master by its loop device, the file behind it as shadow.
    let (errno, reply) = refused(&m, &format!("enable ind {loop1} {master} {bitmap} a"));
    assert_eq!(errno, libc::EINVAL, "{reply}");
    assert!(reply.contains(three), "{reply}");
    // Two loop devices over one file.
    let (errno, reply) = refused(&m, &format!("enable ind {loop1} {loop2} {bitmap} a"));
    assert_eq!(errno, libc::EINVAL, "{reply}");
    assert!(reply.contains(three), "{reply}");
    // The bitmap on a loop device over the master file: nothing is written to the master.
    let (errno, reply) = refused(&m, &format!("enable dep {master} {shadow} {loop1} a"));
    assert_eq!(errno, libc::EINVAL, "{reply}");
    assert!(reply.contains(three), "{reply}");
    assert!(
        file_bytes(&master) == before,
        "the refused enable wrote the master"
    );
    // A loop device over a file that is another set's shadow is that shadow.
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let loop3 = c.loop_dev(&shadow);
    let (m2, _, b2) = volumes(&m, "b", 4 * MIB);
    let (errno, reply) = refused(&m, &format!("enable dep {m2} {loop3} {b2} b"));
    assert_eq!(errno, libc::EEXIST, "{reply}");
    assert!(reply.contains("shadow of set a"), "{reply}");
    // Two sets on one master that is a loop device share it (one exclusive open).
    let other = m.volume("other", 4 * MIB, 3);
    let loop4 = c.loop_dev(&other);
    let (_, s5, b5) = volumes(&m, "e", 4 * MIB);
    let (_, s6, b6) = volumes(&m, "f", 4 * MIB);
    m.ok("ctl", &format!("enable dep {loop4} {s5} {b5} e"));
    m.ok("ctl", &format!("enable ind {loop4} {s6} {b6} f"));
    m.set_ok("f", "wait");
    m.write_at("sets/e/master", 0, &[9u8; 4096]);
    assert_eq!(&m.read("sets/f/master")[..4096], &[9u8; 4096][..]);
    assert_eq!(&m.read("sets/e/shadow")[..4096], &file_bytes(&s6)[..4096]);
    // The file behind it is that master: not a shadow of another set.
    let (mg, _, bg) = volumes(&m, "g", 4 * MIB);
    let (errno, reply) = refused(&m, &format!("enable dep {mg} {other} {bg} g"));
    assert_eq!(errno, libc::EEXIST, "{reply}");
    assert!(reply.contains("already a master"), "{reply}");
    // A loop device is opened exclusively: a mounted one is refused, naming the mount.
    let fsimg = m.volume("fs.img", 16 * MIB, 0);
    sh(&format!("mkfs.ext4 -q -F {fsimg}"));
    let fsdev = c.loop_dev(&fsimg);
    let mp = m.dir.path().join("fsmnt");
    fs::create_dir(&mp).unwrap();
    sh(&format!("mount {fsdev} {}", mp.display()));
    c.mounts.push(mp.clone());
    let (s3, _, b3) = volumes(&m, "c", 16 * MIB);
    let (errno, reply) = refused(&m, &format!("enable dep {fsdev} {s3} {b3} c"));
    assert_eq!(errno, libc::EBUSY, "{reply}");
    assert!(reply.contains("mounted at"), "{reply}");
}

/// Runs `cmd` on the global ctl in a shell under `timeout`: returns the shell's exit code
/// (124 if it hung) and what it printed (the error, then the reply).
fn ctl_with_timeout(m: &Mount, cmd: &str, secs: u32) -> (i32, String) {
    let script = format!(
        "exec 3<>{ctl}; echo '{cmd}' >&3; rc=$?; cat <&3; exit $rc",
        ctl = m.path("ctl").display()
    );
    let out = Command::new("timeout")
        .args([&secs.to_string(), "bash", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Defect 16: volumes inside an iifs mount (its ctl file, another set's master or shadow, a
/// link to one, a loop device over one) are refused at once, and the daemon goes on.
#[test]
fn volumes_inside_an_iifs_mount_are_refused_at_once() {
    let mut m = mount_or_skip!();
    let mut c = Cleanup::default();
    let (master, shadow, bitmap) = volumes(&m, "a", 4 * MIB);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let (m2, s2, b2) = volumes(&m, "b", 4 * MIB);
    let mnt = m.mnt.display().to_string();
    let link = m.dir.path().join("link-to-master");
    std::os::unix::fs::symlink(format!("{mnt}/sets/a/master"), &link).unwrap();
    let inside = [
        format!("{mnt}/ctl"),
        format!("{mnt}/sets/a/master"),
        format!("{mnt}/sets/a/shadow"),
        format!("{mnt}/sets/a/bitmap"),
        format!("{mnt}/new.bm"),
        link.display().to_string(),
    ];
    for v in &inside {
        for cmd in [
            format!("enable dep {v} {s2} {b2} b"),
            format!("enable dep {m2} {v} {b2} b"),
            format!("enable dep {m2} {s2} {v} b"),
        ] {
            let t = Instant::now();
            let (rc, text) = ctl_with_timeout(&m, &cmd, 10);
            assert_ne!(rc, 124, "'{cmd}' hung");
            assert_ne!(rc, 0, "'{cmd}' was accepted: {text}");
            assert!(
                text.contains("Invalid argument") && text.contains("inside the iifs mount"),
                "'{cmd}': {text}"
            );
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "'{cmd}' took {:?}",
                t.elapsed()
            );
        }
    }
    // A loop device over a file in the mount.
    let lo = c.loop_dev(&format!("{mnt}/sets/a/shadow"));
    let (rc, text) = ctl_with_timeout(&m, &format!("enable dep {lo} {s2} {b2} b"), 10);
    assert!(rc != 0 && rc != 124, "{text}");
    assert!(text.contains("inside the iifs mount"), "{text}");
    c.loops.clear();
    sh(&format!("losetup -d {lo}"));
    // The daemon goes on, and stops cleanly.
    m.ok("ctl", &format!("enable dep {m2} {s2} {b2} b"));
    assert_eq!(m.set_names(), vec!["a".to_string(), "b".to_string()]);
    assert_eq!(m.status("a")["state"], "idle");
    m.stop();
    assert!(!common::is_mounted(&m.mnt));
}

/// Defect 17: one daemon per state dir, and a volume in use by one daemon is refused to
/// another, naming who holds it.
#[test]
fn a_second_daemon_is_refused() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = volumes(&m, "a", MIB);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let pid = common::daemon_pid(&m.mnt).expect("daemon pid");

    // The same state dir: the second daemon does not start.
    let mnt2 = m.dir.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let opts = format!("state_dir={}", m.state.display());
    let out = Command::new("timeout")
        .args([
            "10",
            common::BIN,
            "none",
            mnt2.to_str().unwrap(),
            "-f",
            "-o",
            &opts,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if common::is_mounted(&mnt2) {
        let _ = Command::new("umount").arg("-l").arg(&mnt2).status();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("busy"),
        "{err}"
    );

    // Another daemon, its own state dir: the first one's volumes are taken.
    let other = mount_or_skip!();
    let (s2, b2) = (other.volume("s2", MIB, 0), other.volume("b2", 0, 0));
    let (m3, s3, b3) = volumes(&other, "x", MIB);
    for cmd in [
        format!("enable dep {master} {s2} {b2} x"),
        format!("enable dep {m3} {shadow} {b3} x"),
        format!("enable dep {m3} {s3} {bitmap} x"),
    ] {
        let (errno, reply) = refused(&other, &cmd);
        assert_eq!(errno, libc::EBUSY, "{reply}");
        assert!(reply.contains(&format!("process {pid}")), "{reply}");
    }
    assert!(other.set_names().is_empty());
    // A file a program such as qemu holds (a read lock on one byte of an open file
    // description, as qemu takes on its images) is refused too.
    let held = fs::File::open(&m3).unwrap();
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut lk: libc::flock = unsafe { std::mem::zeroed() };
    lk.l_type = libc::F_RDLCK as libc::c_short;
    lk.l_start = 100;
    lk.l_len = 1;
    // SAFETY: F_OFD_SETLK reads one struct flock through the pointer.
    let rc = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&held),
            libc::F_OFD_SETLK,
            &lk,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let (errno, reply) = refused(&other, &format!("enable dep {m3} {s3} {b3} x"));
    assert_eq!(errno, libc::EBUSY, "{reply}");
    drop(held);
    other.ok("ctl", &format!("enable dep {m3} {s3} {b3} x"));
    // Several sets on one master in one daemon still share it.
    let (s4, b4) = (m.volume("s4", MIB, 0), m.volume("b4", 0, 0));
    m.ok("ctl", &format!("enable dep {master} {s4} {b4} a2"));
}

/// Defect 23: an enable refused late (the registry cannot be saved) leaves every byte as it
/// was: the shadow (no copy started), the bitmap file (its bytes and length), or no bitmap
/// file at all when the enable made it; an enable refused for lack of space does not leave the
/// bitmap file grown.
#[test]
fn a_refused_enable_changes_no_byte() {
    let m = mount_or_skip!();
    let (master, shadow, _) = volumes(&m, "a", 32 * MIB);
    let bitmap = m.volume("ab", 64 * 1024, 9);
    let (shadow_before, bitmap_before) = (file_bytes(&shadow), file_bytes(&bitmap));
    // The registry's rename fails (a directory is in its place); its write check passes.
    let reg = m.state.join("iifs.yaml");
    let _ = fs::remove_file(&reg);
    fs::create_dir_all(reg.join("in-the-way")).unwrap();
    let (errno, reply) = refused(
        &m,
        &format!("enable ind {master} {shadow} {bitmap} a chunk_size=4K"),
    );
    assert_eq!(errno, libc::EIO, "{reply}");
    assert!(reply.contains("registry"), "{reply}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(file_bytes(&shadow) == shadow_before, "the shadow changed");
    assert!(file_bytes(&bitmap) == bitmap_before, "the bitmap changed");
    let made = m.dir.path().join("made.bm");
    refused(
        &m,
        &format!("enable ind {master} {shadow} {} a", made.display()),
    );
    assert!(
        !made.exists(),
        "the bitmap the refused enable made is still there"
    );
    assert!(file_bytes(&shadow) == shadow_before, "the shadow changed");
    assert!(m.set_names().is_empty());
    fs::remove_dir_all(&reg).unwrap();

    // No space for the bitmap: refused with ENOSPC, the file keeps its length.
    let small = m.dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let mut c = Cleanup::default();
    sh(&format!(
        "mount -t tmpfs -o size=256k tmpfs {}",
        small.display()
    ));
    c.mounts.push(small.clone());
    let bm = small.join("b");
    fs::write(&bm, b"").unwrap();
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}/fill", small.display()),
            "bs=4k",
        ])
        .stderr(Stdio::null())
        .status();
    let (errno, reply) = refused(
        &m,
        &format!(
            "enable ind {master} {shadow} {} a chunk_size=4K",
            bm.display()
        ),
    );
    assert_eq!(errno, libc::ENOSPC, "{reply}");
    assert_eq!(
        fs::metadata(&bm).unwrap().len(),
        0,
        "the bitmap file was grown"
    );
    assert!(file_bytes(&shadow) == shadow_before, "the shadow changed");
    // With room, the same enable works and its copy runs.
    m.ok("ctl", &format!("enable ind {master} {shadow} {bitmap} a"));
    m.set_ok("a", "wait");
    assert!(file_bytes(&shadow) == file_bytes(&master));
}

/// Defect 24: a set too large for the daemon's memory is refused with ENOMEM and the figure
/// before anything is allocated or written; the daemon and its other sets go on.
#[test]
fn a_set_too_large_for_memory_is_refused_with_the_figure() {
    let m = mount_or_skip!();
    let (master, shadow, bitmap) = volumes(&m, "a", MIB);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let pid = common::daemon_pid(&m.mnt).expect("daemon pid");
    // A memory limit on the running daemon: what it has now and 512 MiB more.
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let limit = vm_kib * 1024 + 512 * MIB;
    sh(&format!("prlimit --pid {pid} --as={limit}"));
    // Huge sparse volumes: as large as the file system takes (tmpfs takes 1 PiB).
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cleanup::default();
    sh(&format!(
        "mount -t tmpfs -o size=16m tmpfs {}",
        dir.path().display()
    ));
    c.mounts.push(dir.path().to_path_buf());
    let mut size = 1u64 << 50;
    let (hm, hs) = (dir.path().join("hm"), dir.path().join("hs"));
    loop {
        let ok = [&hm, &hs]
            .iter()
            .all(|p| fs::File::create(p).and_then(|f| f.set_len(size)).is_ok());
        if ok {
            break;
        }
        size /= 2;
        assert!(
            size >= 1 << 40,
            "no file system here takes a sparse 1 TiB file"
        );
    }
    // The bitmap file exists (empty): it must not be grown for a set that is refused.
    let hb = dir.path().join("hb");
    fs::write(&hb, b"").unwrap();
    let (errno, reply) = refused(
        &m,
        &format!(
            "enable ind {} {} {} huge chunk_size=4K",
            hm.display(),
            hs.display(),
            hb.display()
        ),
    );
    assert_eq!(errno, libc::ENOMEM, "{reply}");
    assert!(reply.contains("MiB of memory"), "{reply}");
    assert_eq!(
        fs::metadata(&hb).unwrap().len(),
        0,
        "the bitmap file was grown"
    );
    // The daemon survives: the other set works, and a small set can still be made.
    assert_eq!(common::daemon_pid(&m.mnt), Some(pid));
    assert_eq!(m.status("a")["state"], "idle");
    let (m2, s2, b2) = volumes(&m, "b", MIB);
    m.ok("ctl", &format!("enable ind {m2} {s2} {b2} b"));
    m.set_ok("b", "wait");
}

/// Defect 6, engine side: no offset indexes past a bitmap (a bit past the end reads clear and
/// is never set), whatever size reaches it.
#[test]
fn a_bit_past_the_end_of_a_bitmap_is_clear_and_never_set() {
    let b = iifs::engine::bitmap::Bitmap::new(100);
    for bit in [100, 127, 128, 1 << 40, u64::MAX] {
        b.set(bit);
        assert!(!b.get(bit));
        b.clear(bit);
    }
    assert_eq!(b.count(), 0);
}

/// Defect 24 at start: a recorded set whose bitmaps need more memory than the daemon can have
/// stays unrestored with ENOMEM and the figure; the allocation used to abort the daemon.
#[test]
fn a_recorded_set_too_large_for_memory_is_not_restored() {
    use iifs::engine::header::{Header, SLOT_SIZE};
    use iifs::engine::{Durability, Engine, FileOpener, SetKind, SetRecord};
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).display().to_string();
    let header = Header {
        seq: 1,
        kind: SetKind::Dependent,
        chunk_size: 4096,
        // 1 PiB in 4 KiB chunks: 32 GiB per bitmap, more memory than this machine has.
        master_size: 1 << 50,
        shadow_size: 1 << 50,
        flags: 0,
        throttle_delay_ms: 0,
        throttle_units: 100,
        pit_time: 0,
        durability: Durability::Strict,
        name: "huge".into(),
        master: path("m"),
        shadow: path("s"),
        bitmap: path("b"),
        layout: iifs::engine::header::Layout::Checked,
        copy_total: 0,
        generation: 1,
        bitmap_id: 1,
        last_error: String::new(),
        shadow_slots: 0,
        overflow: String::new(),
        overflow_id: 0,
        group_seq: 0,
        uuid: 1,
        origin: 0,
    };
    let f = fs::File::create(path("b")).unwrap();
    // Sparse: as long as the header says, so only the memory can refuse it.
    f.set_len(header.volume_len()).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&header.encode().unwrap(), 0).unwrap();
    f.write_all_at(&vec![0u8; SLOT_SIZE as usize], SLOT_SIZE)
        .unwrap();
    drop(f);
    let engine = Engine::new(Box::new(FileOpener));
    let failed = engine.restore_all(&[SetRecord {
        name: "huge".into(),
        master: path("m"),
        shadow: path("s"),
        bitmap: path("b"),
        ..Default::default()
    }]);
    assert_eq!(failed.len(), 1);
    let e = &failed[0].1;
    assert_eq!(e.errno(), libc::ENOMEM, "{e}");
    assert!(e.message.contains("MiB of memory"), "{e}");
    assert!(engine.sets().is_empty());
}

/// A loop device over part of a volume in use (an offset into it) is not that volume: it used
/// to be taken for the whole file, so the new set's master would have been the other set's
/// whole master from byte 0.
#[test]
fn a_loop_device_over_part_of_a_volume_in_use_is_refused() {
    let m = mount_or_skip!();
    let mut c = Cleanup::default();
    let (master, shadow, bitmap) = volumes(&m, "a", 4 * MIB);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} a"));
    let part = sh(&format!("losetup -f --show --offset {MIB} {master}"))
        .trim()
        .to_string();
    c.loops.push(part.clone());
    let before = file_bytes(&master);
    let (_, s2, b2) = volumes(&m, "b", 3 * MIB);
    let (errno, reply) = refused(&m, &format!("enable dep {part} {s2} {b2} b"));
    assert_ne!(errno, 0, "{reply}");
    assert!(reply.contains("in use as a volume of"), "{reply}");
    assert_eq!(m.set_names(), vec!["a".to_string()]);
    assert!(
        file_bytes(&master) == before,
        "the refused enable wrote the master"
    );
}
