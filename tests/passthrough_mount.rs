//! Reads served by the kernel (FUSE passthrough, the `passthrough` setting) on the real mount:
//! which opens the kernel serves (proved by stopping the daemon: a read the kernel serves still
//! completes, one the daemon serves waits for it), that they give the point in time, and what
//! is refused while they exist (a write open, commands that would change the shadow).

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_same, file_bytes, pattern, Mount};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 4 * MIB;
const EBUSY: i32 = libc::EBUSY;

/// Whether the daemon of `m` has the kernel serve reads (it logs which at init). A kernel
/// without FUSE passthrough skips the test loudly, except in CI.
fn kernel_reads_on(m: &Mount) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = m.log();
        if log.contains("passthrough: the kernel serves") {
            return true;
        }
        if log.contains("passthrough: the kernel does not offer") || Instant::now() > deadline {
            let why = format!("the kernel does not serve reads for iifs (passthrough):\n{log}");
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon of a mount, stopped (SIGSTOP) while this lives; SIGCONT when it is dropped,
/// also when the test fails.
struct Stopped(i32);

impl Stopped {
    fn daemon_of(m: &Mount) -> Stopped {
        let pid = common::daemon_pid(&m.mnt).expect("the daemon's pid");
        // SAFETY: signalling the test's own daemon.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        let stopped = Stopped(pid);
        // Every thread of it stopped, so none is still answering a request.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "the daemon did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // `PID (COMM) STATE ...`: the state follows the last ')'.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        state.starts_with('T') || state.starts_with('t')
    })
}

/// Read `len` bytes at `offset` of `f` on a thread of its own: the bytes come on the channel.
fn read_in_thread(f: &Arc<File>, offset: u64, len: u64) -> Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    let f = Arc::clone(f);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; len as usize];
        let r = f.read_exact_at(&mut buf, offset).map(|()| buf);
        let _ = tx.send(r);
    });
    rx
}

/// Open `rel` read-only, stop the daemon and read 1 MiB at 1 MiB through the open file: the
/// kernel serves it, so it completes while the daemon is stopped, with `expected`'s bytes.
#[track_caller]
fn assert_kernel_served(m: &Mount, rel: &str, expected: &[u8]) {
    let f = Arc::new(File::open(m.path(rel)).expect("open read-only"));
    let stopped = Stopped::daemon_of(m);
    let rx = read_in_thread(&f, MIB, MIB);
    let got = rx.recv_timeout(Duration::from_secs(10));
    drop(stopped);
    let got = match got {
        Ok(r) => r.expect("read"),
        Err(e) => panic!("{rel}: the read did not complete while the daemon was stopped ({e:?})"),
    };
    assert_same(&got, &expected[MIB as usize..2 * MIB as usize], rel);
}

/// Open `rel` read-only, stop the daemon and read 1 MiB at 1 MiB: the daemon serves it, so it
/// is still pending a second later; once the daemon goes on it completes with `expected`'s
/// bytes.
#[track_caller]
fn assert_daemon_served(m: &Mount, rel: &str, expected: &[u8]) {
    let f = Arc::new(File::open(m.path(rel)).expect("open read-only"));
    let stopped = Stopped::daemon_of(m);
    let rx = read_in_thread(&f, MIB, MIB);
    let early = rx.recv_timeout(Duration::from_secs(1));
    drop(stopped);
    assert!(
        matches!(early, Err(RecvTimeoutError::Timeout)),
        "{rel}: the read completed while the daemon was stopped: the kernel served it"
    );
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the read completes once the daemon goes on")
        .expect("read");
    assert_same(&got, &expected[MIB as usize..2 * MIB as usize], rel);
}

/// An independent set `name` whose first copy has finished: its shadow is settled. Returns
/// the master's bytes (the point in time) and the volumes' paths.
fn settled_independent(m: &Mount, name: &str, seed: u64) -> (Vec<u8>, (String, String, String)) {
    let vols = m.volumes(name, SIZE, seed);
    let (master, shadow, bitmap) = &vols;
    let pit = file_bytes(master);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} {name}"),
    );
    m.set_ok(name, "wait");
    assert_eq!(m.status(name)["state"], "idle");
    (pit, vols)
}

#[test]
fn a_settled_independent_shadow_is_read_by_the_kernel_at_its_point_in_time() {
    let m = mount_or_skip!();
    if !kernel_reads_on(&m) {
        return;
    }
    let (pit, (master, _, _)) = settled_independent(&m, "ind", 1);
    // The master changes after the point in time: the shadow does not.
    m.write_at(
        "sets/ind/master",
        MIB - 4096,
        &pattern((MIB + 8192) as usize, 7),
    );
    assert_ne!(file_bytes(&master), pit);
    assert_kernel_served(&m, "sets/ind/shadow", &pit);

    // Master writes while a kernel-served open exists leave what it reads alone.
    let f = File::open(m.path("sets/ind/shadow")).expect("open read-only");
    m.write_at("sets/ind/master", MIB, &pattern(MIB as usize, 8));
    let mut buf = vec![0u8; (2 * MIB) as usize];
    f.read_exact_at(&mut buf, MIB / 2).expect("read");
    assert_same(
        &buf,
        &pit[(MIB / 2) as usize..(MIB / 2 + 2 * MIB) as usize],
        "kernel-served read after master writes",
    );
    // The whole file, to its end (the size the tree shows).
    drop(f);
    assert_same(&m.read("sets/ind/shadow"), &pit, "the whole shadow");
}

#[test]
fn the_daemon_serves_reads_the_kernel_must_not() {
    // passthrough=off: the daemon serves every read.
    {
        let m = mount_or_skip!("passthrough=off");
        let (pit, _) = settled_independent(&m, "off", 2);
        assert_daemon_served(&m, "sets/off/shadow", &pit);
    }
    let m = mount_or_skip!();
    if !kernel_reads_on(&m) {
        return;
    }

    // A dependent shadow reads its untouched chunks from the master.
    let (master, shadow, bitmap) = m.volumes("dep", SIZE, 3);
    let pit = file_bytes(&master);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} dep"));
    m.write_at("sets/dep/master", 0, &pattern(MIB as usize, 9));
    assert_daemon_served(&m, "sets/dep/shadow", &pit);

    // A shadow open for writing is the daemon's: a read-only open beside it is too.
    let (pit, _) = settled_independent(&m, "rw", 4);
    let writer = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("sets/rw/shadow"))
        .expect("open for writing");
    assert_daemon_served(&m, "sets/rw/shadow", &pit);
    drop(writer);

    // While a copy runs, the shadow's chunks not yet copied read from the master.
    let (master, shadow, bitmap) = m.volumes("copying", SIZE, 5);
    let pit = file_bytes(&master);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} copying delay=10000 units=1"),
    );
    common::wait_throttled_copy(&m, "copying", SIZE / 65536);
    assert_daemon_served(&m, "sets/copying/shadow", &pit);
    assert_eq!(m.status("copying")["state"], "copying");
}

#[test]
fn a_write_open_beside_kernel_served_reads_is_refused_until_they_are_closed() {
    let m = mount_or_skip!();
    if !kernel_reads_on(&m) {
        return;
    }
    let (pit, _) = settled_independent(&m, "w", 6);
    let reader = File::open(m.path("sets/w/shadow")).expect("open read-only");
    let e = OpenOptions::new()
        .write(true)
        .open(m.path("sets/w/shadow"))
        .expect_err("a write open while the kernel serves reads");
    assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{e}");
    assert!(
        m.log().contains("served by the kernel") && m.log().contains("passthrough=off"),
        "the log says why:\n{}",
        m.log()
    );
    // A second reader is served by the kernel too, on the same backing.
    assert_kernel_served(&m, "sets/w/shadow", &pit);
    let mut buf = vec![0u8; 4096];
    reader.read_exact_at(&mut buf, 0).expect("read");
    assert_same(&buf, &pit[..4096], "the first reader still reads");
    drop(reader);

    // Closed: the write open works (also right after the close, whose release the kernel
    // sends asynchronously).
    m.write_at("sets/w/shadow", 8192, &pattern(4096, 10));
    let mut want = pit.clone();
    want[8192..8192 + 4096].copy_from_slice(&pattern(4096, 10));
    assert_same(
        &m.read("sets/w/shadow"),
        &want,
        "the shadow after the write",
    );
}

#[test]
fn commands_that_would_change_a_kernel_read_shadow_are_refused_even_with_force() {
    let m = mount_or_skip!();
    if !kernel_reads_on(&m) {
        return;
    }
    let (pit, (master, shadow, bitmap)) = settled_independent(&m, "db", 11);
    m.write_at("sets/db/master", 0, &pattern((2 * MIB) as usize, 12));
    let before = (m.status("db"), file_bytes(&bitmap));
    assert_ne!(before.0["chunks_differ"], "0");

    let refused = |ctl: &str, cmd: &str| {
        let reader = File::open(m.path("sets/db/shadow")).expect("open read-only");
        let (errno, reply) = m.ctl(ctl, cmd).expect_err(cmd);
        assert_eq!(errno, EBUSY, "{cmd}: {reply}");
        assert!(
            reply.contains("served by the kernel")
                && reply.contains("cannot")
                && reply.contains("passthrough=off"),
            "{cmd}: {reply}"
        );
        assert_eq!(
            (m.status("db"), file_bytes(&bitmap)),
            before,
            "{cmd}: a refused command changes nothing"
        );
        let mut buf = vec![0u8; MIB as usize];
        reader.read_exact_at(&mut buf, 0).expect("read");
        assert_same(&buf, &pit[..MIB as usize], "the reader's point in time");
    };
    for cmd in [
        "update shadow force",
        "copy shadow force",
        "update shadow",
        "reset",
        "suspend",
    ] {
        refused("sets/db/ctl", cmd);
    }
    refused("ctl", "suspend all");

    // Without kernel-served opens the same command works (right after the close).
    m.set_ok("db", "update shadow force");
    m.set_ok("db", "wait");
    assert_same(
        &m.read("sets/db/shadow"),
        &file_bytes(&master),
        "after the update",
    );

    // The group forms.
    m.ok("ctl", "group create g");
    m.set_ok("db", "group g");
    let pit = file_bytes(&master);
    m.write_at("sets/db/master", MIB, &pattern(MIB as usize, 13));
    let before = (m.status("db"), file_bytes(&bitmap));
    let refused_group = |cmd: &str| {
        let _reader = File::open(m.path("sets/db/shadow")).expect("open read-only");
        let (errno, reply) = m.ctl("groups/g/ctl", cmd).expect_err(cmd);
        assert_eq!(errno, EBUSY, "{cmd}: {reply}");
        assert!(reply.contains("served by the kernel"), "{cmd}: {reply}");
        assert_eq!(
            (m.status("db"), file_bytes(&bitmap)),
            before,
            "{cmd}: a refused command changes nothing"
        );
    };
    refused_group("update shadow force");
    refused_group("copy shadow force");
    assert_same(&m.read("sets/db/shadow"), &pit, "still the point in time");
    m.ok("groups/g/ctl", "copy shadow force");
    m.ok("groups/g/ctl", "wait");
    assert_same(
        &m.read("sets/db/shadow"),
        &file_bytes(&master),
        "after the group copy",
    );
    // Other commands are taken while the kernel reads the shadow, a copy onto the master
    // too (it leaves the shadow as it is).
    let reader = File::open(m.path("sets/db/shadow")).expect("open read-only");
    m.set_ok("db", "ungroup");
    m.set_ok("db", "params 0 100");
    let shadow_now = file_bytes(&shadow);
    m.write_at("sets/db/master", 0, &pattern(MIB as usize, 18));
    m.set_ok("db", "update master");
    m.set_ok("db", "wait");
    assert_same(
        &file_bytes(&master),
        &shadow_now,
        "the master after update master",
    );
    let mut buf = vec![0u8; MIB as usize];
    reader.read_exact_at(&mut buf, 0).expect("read");
    assert_same(
        &buf,
        &shadow_now[..MIB as usize],
        "the reader after update master",
    );
    drop(reader);
}

#[test]
fn the_bitmap_file_is_read_by_the_kernel_as_the_bitmap_volume() {
    let m = mount_or_skip!();
    if !kernel_reads_on(&m) {
        return;
    }
    let (_, (_, _, bitmap)) = settled_independent(&m, "bm", 14);
    m.write_at("sets/bm/master", 0, &pattern((3 * MIB) as usize, 15));
    let f = Arc::new(File::open(m.path("sets/bm/bitmap")).expect("open the bitmap file"));
    let len = f.metadata().expect("stat").len();
    assert_eq!(len, file_bytes(&bitmap).len() as u64);
    let stopped = Stopped::daemon_of(&m);
    let rx = read_in_thread(&f, 0, len);
    let got = rx.recv_timeout(Duration::from_secs(10));
    // Read while the daemon is stopped: nothing changes the volume meanwhile.
    let direct = file_bytes(&bitmap);
    drop(stopped);
    let got = got
        .expect("the read completes while the daemon is stopped")
        .expect("read");
    assert_same(&got, &direct, "the bitmap file against its volume");
    // A dependent set's bitmap file too.
    let (master, shadow, bitmap) = m.volumes("dbm", SIZE, 16);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} dbm"));
    m.write_at("sets/dbm/master", 0, &pattern(MIB as usize, 17));
    let f = Arc::new(File::open(m.path("sets/dbm/bitmap")).expect("open the bitmap file"));
    let len = f.metadata().expect("stat").len();
    let stopped = Stopped::daemon_of(&m);
    let rx = read_in_thread(&f, 0, len);
    let got = rx.recv_timeout(Duration::from_secs(10));
    let direct = file_bytes(&bitmap);
    drop(stopped);
    assert_same(
        &got.expect("completes while stopped").expect("read"),
        &direct,
        "the dependent set's bitmap file",
    );
}
