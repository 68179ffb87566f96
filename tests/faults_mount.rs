//! Backing-store faults through the real mount (issue 16): the iifs daemon keeps its volumes in
//! a fault-injecting FUSE file system (`common::faultfs`) that fails reads, writes and syncs of
//! one backing file with EIO or ENOSPC on command. For each role (master, shadow, bitmap,
//! overflow) and each fault, a set is driven through the mount (reads, a write, fsync,
//! `update shadow`) and checked against a model:
//! - no read through the mount ever returns wrong bytes (the master is the pattern plus the
//!   writes that succeeded, the shadow its point in time);
//! - the faulted set goes `state: offline` with `last_error` naming the failing volume (or,
//!   for a failed fsync of the master itself, the user's fsync fails), and another set on other
//!   volumes of the same file system stays `idle` and right;
//! - once healed, `reset` brings the set back: a dependent (compact) set takes a fresh point in
//!   time, an independent set whose shadow failed gets a full copy, one whose master or bitmap
//!   failed keeps its point in time; the master reads right, and `update shadow` works again.
//!
//! A bitmap that cannot be read is met at start: the set comes back offline, the reason named,
//! and a restart once healed brings it back (README "Status").

mod common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;

use common::faultfs::{FaultFs, Op};
use common::{assert_same, pattern, wait_for, Mount};

const CHUNK: u64 = 64 << 10;
const CHUNKS: u64 = 16;
const SIZE: u64 = CHUNKS * CHUNK;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    Master,
    Shadow,
    Bitmap,
    Overflow,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Dep,
    Ind,
    Compact,
}

/// The faults every role meets: (op, errno).
const FAULTS: [(Op, i32); 4] = [
    (Op::Read, libc::EIO),
    (Op::Write, libc::EIO),
    (Op::Sync, libc::EIO),
    (Op::Write, libc::ENOSPC),
];

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EIO => "eio",
        libc::ENOSPC => "enospc",
        _ => "errno",
    }
}

// ------------------------------------------------------------------------------ I/O helpers

/// A read through the mount: the bytes, or the errno. Opened read-write, so the daemon serves
/// it (never the kernel's passthrough) and meets the fault itself.
fn try_read(m: &Mount, rel: &str) -> Result<Vec<u8>, i32> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path(rel))
        .map_err(|e| e.raw_os_error().unwrap_or(0))?;
    let mut buf = vec![0u8; SIZE as usize];
    f.read_exact_at(&mut buf, 0)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    Ok(buf)
}

fn try_write(m: &Mount, rel: &str, offset: u64, data: &[u8]) -> Result<(), i32> {
    let f = OpenOptions::new()
        .write(true)
        .open(m.path(rel))
        .map_err(|e| e.raw_os_error().unwrap_or(0))?;
    f.write_all_at(data, offset)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn try_fsync(m: &Mount, rel: &str) -> Result<(), i32> {
    let f = OpenOptions::new()
        .write(true)
        .open(m.path(rel))
        .map_err(|e| e.raw_os_error().unwrap_or(0))?;
    f.sync_all().map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// A set and what its files must read as.
struct Model {
    name: String,
    /// Backing file names in the fault fs: master, shadow, bitmap, overflow.
    files: HashMap<Role, String>,
    master: Vec<u8>,
    pit: Vec<u8>,
}

impl Model {
    fn rel(&self, file: &str) -> String {
        format!("sets/{}/{file}", self.name)
    }

    /// Every read that succeeds returns the model's bytes; returns which reads failed.
    #[track_caller]
    fn check_reads(&self, m: &Mount, when: &str) -> Vec<&'static str> {
        let mut failed = Vec::new();
        for (file, want) in [("master", &self.master), ("shadow", &self.pit)] {
            match try_read(m, &self.rel(file)) {
                Ok(got) => assert_same(&got, want, &format!("{} {file} {when}", self.name)),
                Err(e) => {
                    assert_eq!(
                        e,
                        libc::EIO,
                        "{} {file} {when}: a failed read is EIO",
                        self.name
                    );
                    failed.push(file);
                }
            }
        }
        failed
    }

    /// Write `chunk` of the master with `seed`'s pattern; the model follows what succeeded.
    fn write_chunk(&mut self, m: &Mount, chunk: u64, seed: u64) -> Result<(), i32> {
        let data = pattern(CHUNK as usize, seed);
        try_write(m, &self.rel("master"), chunk * CHUNK, &data)?;
        let at = (chunk * CHUNK) as usize;
        self.master[at..at + CHUNK as usize].copy_from_slice(&data);
        Ok(())
    }

    fn state(&self, m: &Mount) -> HashMap<String, String> {
        m.status(&self.name)
    }
}

/// A fault fs and an iifs mount over it, with a bystander set that must never be touched.
struct Env {
    // Dropped after the iifs mount (declared first, dropped last): the daemon lets go first.
    ffs: FaultFs,
    m: Mount,
    other: Model,
}

fn start(opts: &str) -> Option<Env> {
    if !common::can_mount() {
        return None;
    }
    let ffs = FaultFs::start();
    let m = Mount::start(opts)?;
    let mut env = Env {
        ffs,
        m,
        other: Model {
            name: String::new(),
            files: HashMap::new(),
            master: Vec::new(),
            pit: Vec::new(),
        },
    };
    env.other = env.enable("bystander", Kind::Dep, 99);
    Some(env)
}

impl Env {
    /// A set of `kind` on fresh files of the fault fs, master filled from `seed`, with a few
    /// chunks written since its point in time (preserved in a dependent shadow, and in the
    /// overflow of a compact one).
    fn enable(&self, name: &str, kind: Kind, seed: u64) -> Model {
        let f = |r: &str| format!("{r}-{name}.img");
        let shadow_size = if kind == Kind::Compact {
            2 * CHUNK
        } else {
            SIZE
        };
        let master = self.ffs.create(&f("m"), SIZE, seed);
        let shadow = self.ffs.create(&f("s"), shadow_size, 0);
        let bitmap = self.ffs.create(&f("b"), 0, 0);
        let t = if kind == Kind::Ind { "ind" } else { "dep" };
        self.m.ok(
            "ctl",
            &format!("enable {t} {master} {shadow} {bitmap} {name} chunk_size={CHUNK}"),
        );
        let mut files = HashMap::from([
            (Role::Master, f("m")),
            (Role::Shadow, f("s")),
            (Role::Bitmap, f("b")),
        ]);
        if kind == Kind::Compact {
            let ovf = self.ffs.create(&f("o"), 8 * CHUNK, 0);
            self.m.ok(
                "ctl",
                &format!("overflow init {ovf} o-{name} chunk_size={CHUNK}"),
            );
            self.m.set_ok(name, &format!("attach o-{name}"));
            files.insert(Role::Overflow, f("o"));
            assert_eq!(self.m.status(name)["type"], "compact");
        }
        self.m.set_ok(name, "wait");
        let pit = pattern(SIZE as usize, seed);
        let mut model = Model {
            name: name.to_string(),
            files,
            master: pit.clone(),
            pit,
        };
        // Four chunks differ from the point in time: a compact shadow holds two, its overflow
        // the others. Not one after the other: a sequential writer has the chunks ahead of it
        // preserved too, and chunk 4, written under the fault, must still need its copy.
        for c in [0, 2, 7, 9] {
            model
                .write_chunk(&self.m, c, seed * 100 + c)
                .expect("write before the fault");
        }
        assert!(model.check_reads(&self.m, "before the fault").is_empty());
        assert_eq!(model.state(&self.m)["state"], "idle");
        model
    }

    /// The bystander is idle and reads right, and takes a write.
    #[track_caller]
    fn check_other(&mut self, when: &str) {
        let st = self.other.state(&self.m);
        assert_eq!(st["state"], "idle", "the other set {when}: {st:?}");
        assert_eq!(st["last_error"], "-", "the other set {when}: {st:?}");
        assert!(self.other.check_reads(&self.m, when).is_empty());
        let seed = self.other.master[0] as u64 + 1000;
        self.other
            .write_chunk(&self.m, 5, seed)
            .expect("the other set takes writes");
    }
}

// ------------------------------------------------------------------------------ one case

fn case_name(role: Role, kind: Kind, (op, errno): (Op, i32)) -> String {
    format!("{role:?}-{kind:?}-{op:?}-{}", errno_name(errno)).to_lowercase()
}

/// Inject `(op, errno)` on `role`'s file of a fresh set of `kind`, drive I/O, check the rule,
/// heal, reset, check again.
fn case(env: &mut Env, role: Role, kind: Kind, (op, errno): (Op, i32), seed: u64) {
    let name = case_name(role, kind, (op, errno));
    let mut set = env.enable(&name, kind, seed);
    let m = &env.m;
    let file = set.files[&role].clone();
    let ctl = env.ffs.ctl.clone();
    // An independent shadow fails after the first piece of its update's copy: half copied,
    // it must read as errors, never as a mix of two points in time.
    let after = u64::from((role, kind, op) == (Role::Shadow, Kind::Ind, Op::Write));
    ctl.fail(&file, op, errno, after);

    // What the user saw fail.
    let mut user_failed = Vec::<String>::new();
    // A reason that does not name the volume that failed: reported once the case has checked
    // the data too.
    let mut wrong_name = None;
    if (role, op) == (Role::Bitmap, Op::Read) {
        // The bitmap is read at start: restart with the fault in place.
        env.m.restart();
    } else {
        // Reads of every chunk (preserved ones on the shadow or overflow). Not first for an
        // independent set: its update's copy is the first to read the master then.
        if kind != Kind::Ind {
            user_failed.extend(
                set.check_reads(m, "after the fault")
                    .iter()
                    .map(|f| format!("read {f}")),
            );
        }
        // A write of a chunk not yet preserved: copy-on-write, a bitmap bit, the master.
        if let Err(e) = set.write_chunk(m, 4, seed * 100 + 4) {
            user_failed.push(format!("write errno {e}"));
        }
        if let Err(e) = try_fsync(m, &set.rel("master")) {
            user_failed.push(format!("fsync errno {e}"));
        }
        // A new point in time (an independent set copies the differing chunks).
        match m.ctl(&format!("sets/{name}/ctl"), "update shadow") {
            Ok(()) => {
                set.pit = set.master.clone();
                let _ = m.ctl(&format!("sets/{name}/ctl"), "wait");
            }
            Err((e, reply)) => {
                // EPERM: the set is offline; EIO: the command met the fault itself.
                assert!(
                    e == libc::EPERM || e == libc::EIO,
                    "{name}: update shadow refused with errno {e}: {reply}"
                );
                user_failed.push(format!("update shadow errno {e}"));
            }
        }
        // The first reason recorded names the volume that failed (later I/O of an offline set
        // may record others).
        let st = set.state(m);
        if st["state"] == "offline" && !st["last_error"].contains(&file) {
            wrong_name = Some(st["last_error"].clone());
        }
        user_failed.extend(
            set.check_reads(m, "after the I/O")
                .iter()
                .map(|f| format!("read {f}")),
        );
    }
    let m = &env.m;
    assert!(
        ctl.failures(&file) > 0,
        "{name}: the fault on {file} was never met (reads {}, writes {}, syncs {})",
        ctl.count(&file, Op::Read),
        ctl.count(&file, Op::Write),
        ctl.count(&file, Op::Sync)
    );
    // The rule: the set goes offline naming the failing volume, or the user's call failed.
    // A failed fsync of the master is the user's alone (the point in time is whole).
    let must_go_offline = (role, op) != (Role::Master, Op::Sync);
    if must_go_offline {
        wait_for(m, &name, "state offline", |st| st["state"] == "offline");
    }
    let st = set.state(m);
    if st["state"] == "offline" {
        if !st["last_error"].contains(&file) {
            wrong_name.get_or_insert(st["last_error"].clone());
        }
        assert_eq!(st["status"], "error", "{st:?}");
    } else {
        assert_eq!(st["state"], "idle", "{name}: {st:?}");
        assert!(!user_failed.is_empty(), "{name}: nothing failed: {st:?}");
    }
    let went_offline = set.state(m)["state"] == "offline";
    let offline_error = set.state(m)["last_error"].clone();
    env.check_other("while a set of the same file system is faulted");

    // Heal, reset, and the set is whole again.
    ctl.heal(&file);
    if (role, op) == (Role::Bitmap, Op::Read) {
        env.m.restart();
    } else {
        env.m.set_ok(&name, "reset");
    }
    let m = &env.m;
    m.set_ok(&name, "wait");
    let st = set.state(m);
    assert_eq!(st["state"], "idle", "{name} after reset: {st:?}");
    assert_eq!(st["last_error"], "-", "{name} after reset: {st:?}");
    // What reset documents: a dependent set takes a fresh point in time, an independent one
    // whose shadow failed gets a full copy, one whose master or bitmap failed keeps its own.
    let fresh_pit = went_offline
        && !matches!((role, op), (Role::Bitmap, Op::Read))
        && (kind != Kind::Ind || role == Role::Shadow);
    if fresh_pit {
        set.pit = set.master.clone();
    }
    let failed_after = set.check_reads(m, "after the reset");
    assert!(
        failed_after.is_empty(),
        "{name}: {failed_after:?} fail after the reset (offline error was {offline_error})"
    );
    // And it works: a write and a new point in time.
    set.write_chunk(m, 6, seed * 100 + 6)
        .expect("write after reset");
    m.set_ok(&name, "update shadow");
    m.set_ok(&name, "wait");
    set.pit = set.master.clone();
    assert!(set.check_reads(m, "after a new point in time").is_empty());
    env.check_other("after the reset");
    eprintln!("{name}: offline {went_offline}, user saw {user_failed:?}, error: {offline_error}");
    assert!(
        wrong_name.is_none(),
        "{name}: last_error names the volume that failed ({file}): {wrong_name:?}"
    );
}

/// Every fault on `role` for each kind of set, on one fault fs and one daemon; a case that
/// fails does not hide the others: all failures are listed at the end.
fn run_role(role: Role, kinds: &[Kind]) {
    // The daemon serves every read (no passthrough): the faults of reads reach it.
    let Some(mut env) = start("passthrough=off") else {
        return;
    };
    let mut seed = 1;
    let mut failed = Vec::new();
    for kind in kinds {
        for fault in FAULTS {
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                case(&mut env, role, *kind, fault, seed)
            }));
            if run.is_err() {
                failed.push(format!("{kind:?} {:?} {}", fault.0, errno_name(fault.1)));
                // Whatever the case left injected, the next one starts healed.
                for f in ["m", "s", "b", "o"] {
                    env.ffs
                        .ctl
                        .heal(&format!("{f}-{}.img", case_name(role, *kind, fault)));
                }
            }
            seed += 1;
        }
    }
    assert!(failed.is_empty(), "{role:?}: failed cases: {failed:?}");
}

#[test]
fn faults_of_the_master() {
    run_role(Role::Master, &[Kind::Dep, Kind::Ind]);
}

#[test]
fn faults_of_the_shadow() {
    run_role(Role::Shadow, &[Kind::Dep, Kind::Ind]);
}

#[test]
fn faults_of_the_bitmap() {
    run_role(Role::Bitmap, &[Kind::Dep, Kind::Ind]);
}

#[test]
fn faults_of_the_overflow() {
    run_role(Role::Overflow, &[Kind::Compact]);
}

/// With `passthrough` (the default) the kernel serves a read-only open of a settled
/// independent shadow from its backing file, and the daemon never sees those reads: a failing
/// backing file then fails the user's read with EIO, and never reads as other bytes.
#[test]
fn kernel_served_shadow_reads_fail_not_lie() {
    let Some(env) = start("") else { return };
    let set = env.enable("ind-kernel", Kind::Ind, 7);
    let file = set.files[&Role::Shadow].clone();
    env.m.set_ok(&set.name, "update shadow");
    env.m.set_ok(&set.name, "wait");
    let shadow = env.m.path(&set.rel("shadow"));
    let read_only = || std::fs::read(&shadow).map_err(|e| e.raw_os_error());
    assert_same(
        &read_only().expect("read before the fault"),
        &set.master,
        "shadow",
    );
    env.ffs.ctl.fail(&file, Op::Read, libc::EIO, 0);
    // Whoever serves the open (the kernel or the daemon) meets the fault.
    let before = env.ffs.ctl.failures(&file);
    match read_only() {
        Ok(got) => panic!(
            "a shadow whose backing file fails every read read {} bytes{}",
            got.len(),
            if got == set.master {
                " (right ones, from a cache?)"
            } else {
                " (wrong ones)"
            }
        ),
        Err(e) => assert_eq!(e, Some(libc::EIO), "the read fails with EIO"),
    }
    assert!(
        env.ffs.ctl.failures(&file) > before,
        "the read reached the backing file"
    );
    // Served by the kernel, the read is not the daemon's to see: the set stays idle. A kernel
    // without passthrough leaves the read to the daemon, which takes the set offline.
    let kernel = env.m.log().contains("passthrough: the kernel serves");
    let st = env.m.status(&set.name);
    let want = if kernel { "idle" } else { "offline" };
    assert_eq!(st["state"], want, "kernel passthrough {kernel}: {st:?}");
    env.ffs.ctl.heal(&file);
    if !kernel {
        env.m.set_ok(&set.name, "reset");
        env.m.set_ok(&set.name, "wait");
    }
    assert_same(
        &read_only().expect("read once healed"),
        &set.master,
        "shadow healed",
    );
}
