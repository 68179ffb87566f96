//! Volume discovery (issue 12, items 6-7) through the real mount: the `volumes` file lists the
//! volumes in use, then the candidates found in the `volume_dirs` directories (by identity: a
//! hard link, a symbolic link or a loop device over a volume in use is not one), with their
//! state (free, mounted, held); `iiadm --volumes [--json]` shows the same; and `enable`
//! refuses other names of volumes in use, files inside the mount and block devices that are
//! mounted or held, each with its errno and a sentence naming the check.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

use common::loops::Cleanup;
use common::refusal::{assert_names, refused_unchanged, Snapshot};
use common::{sh, Mount};

const MIB: u64 = 1 << 20;
const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");

/// A mount whose `volume_dirs` is the directory `vols` (made before the daemon starts).
struct Fx {
    m: Mount,
    vols: tempfile::TempDir,
}

impl Fx {
    fn start() -> Option<Fx> {
        let vols = tempfile::Builder::new()
            .prefix("iifs-vols-")
            .tempdir()
            .expect("volume dir");
        let m = Mount::start(&format!("volume_dirs={}", vols.path().display()))?;
        Some(Fx { m, vols })
    }

    /// The path of `name` in the volume directory, as the daemon names it.
    fn vol(&self, name: &str) -> String {
        self.vols.path().join(name).to_string_lossy().into_owned()
    }

    /// A file `name` of `size` bytes in the volume directory.
    fn file(&self, name: &str, size: u64) -> String {
        let p = self.vol(name);
        File::create(&p)
            .and_then(|f| f.set_len(size))
            .unwrap_or_else(|e| panic!("make {p}: {e}"));
        p
    }
}

macro_rules! fixture_or_skip {
    () => {
        match Fx::start() {
            Some(f) => f,
            None => return,
        }
    };
}

/// The `volumes` file, split at its heading: the lines in use as written, the candidates as
/// [path, size, kind, state] (the path taken as everything before the last three fields).
struct Listing {
    raw: String,
    in_use: Vec<String>,
    candidates: Vec<[String; 4]>,
}

fn listing(m: &Mount) -> Listing {
    let raw = fs::read_to_string(m.path("volumes")).expect("read volumes");
    let Some((in_use, candidates)) = raw
        .strip_prefix("candidates:\n")
        .map(|c| ("", c))
        .or_else(|| raw.split_once("\ncandidates:\n"))
    else {
        panic!("no 'candidates:' heading in volumes: {raw:?}");
    };
    let candidates = candidates
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.rsplitn(4, ' ').collect();
            assert_eq!(f.len(), 4, "candidate line {l:?} in {raw:?}");
            [f[3], f[2], f[1], f[0]].map(str::to_string)
        })
        .collect();
    Listing {
        in_use: in_use.lines().map(str::to_string).collect(),
        candidates,
        raw,
    }
}

impl Listing {
    fn candidate(&self, path: &str) -> Option<&[String; 4]> {
        self.candidates.iter().find(|c| c[0] == path)
    }

    /// The candidate at `path`, which must be listed.
    #[track_caller]
    fn get(&self, path: &str) -> &[String; 4] {
        self.candidate(path)
            .unwrap_or_else(|| panic!("{path} is not a candidate:\n{}", self.raw))
    }

    #[track_caller]
    fn state(&self, path: &str) -> &str {
        &self.get(path)[3]
    }

    #[track_caller]
    fn absent(&self, path: &str, why: &str) {
        assert!(
            self.candidate(path).is_none(),
            "{path} is listed as a candidate ({why}):\n{}",
            self.raw
        );
    }
}

fn row(path: &str, size: u64, kind: &str, state: &str) -> [String; 4] {
    [
        path.to_string(),
        size.to_string(),
        kind.into(),
        state.into(),
    ]
}

/// Open a block device exclusively, as a file system or device mapper would hold it.
fn hold_exclusively(dev: &str) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
        .unwrap_or_else(|e| panic!("open {dev} O_EXCL: {e}"))
}

/// Take an open file description write lock over the whole file, as qemu locks its images.
fn ofd_lock(path: &str) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut lk: libc::flock = unsafe { std::mem::zeroed() };
    lk.l_type = libc::F_WRLCK as libc::c_short;
    lk.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_SETLK reads one struct flock through the pointer.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &lk) };
    assert_eq!(rc, 0, "lock {path}: {}", std::io::Error::last_os_error());
    f
}

fn symlink(target: &str, link: &str) {
    std::os::unix::fs::symlink(target, link).unwrap_or_else(|e| panic!("{link}: {e}"));
}

// ------------------------------------------------------------------------------ listing

/// Files made in the volume directory are candidates; enabling a set on them moves them to the
/// lines in use, together with every other name they have there (a hard link, a symbolic
/// link), and disabling it makes them candidates again. Directories and what is in them, and
/// dangling links, are not candidates.
#[test]
fn candidates_come_and_go_with_enable_and_disable() {
    let fx = fixture_or_skip!();
    let m = &fx.m;
    let before = listing(m);
    assert!(
        before.in_use.is_empty() && before.candidates.is_empty(),
        "{}",
        before.raw
    );
    assert_eq!(
        before.raw, "candidates:\n",
        "the heading is there with nothing to list"
    );

    let master = fx.file("m.img", MIB);
    let shadow = fx.file("s.img", MIB);
    let bitmap = fx.file("b.img", 0);
    let spare = fx.file("spare.img", 64 * 1024);
    fs::hard_link(&master, fx.vol("m-hard.img")).expect("hard link");
    symlink(&shadow, &fx.vol("s-link.img"));
    symlink("b.img", &fx.vol("b-rel.img"));
    symlink("missing.img", &fx.vol("dangling.img"));
    fs::create_dir(fx.vol("sub")).expect("subdir");
    File::create(fx.vol("sub/deeper.img")).expect("file in subdir");
    symlink(&fx.vol("sub"), &fx.vol("dir-link"));

    let l = listing(m);
    assert_eq!(
        l.candidates,
        vec![
            row(&fx.vol("b-rel.img"), 0, "file", "free"),
            row(&bitmap, 0, "file", "free"),
            row(&fx.vol("m-hard.img"), MIB, "file", "free"),
            row(&master, MIB, "file", "free"),
            row(&fx.vol("s-link.img"), MIB, "file", "free"),
            row(&shadow, MIB, "file", "free"),
            row(&spare, 64 * 1024, "file", "free"),
        ],
        "{}",
        l.raw
    );

    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} d chunk_size=4096"),
    );
    let l = listing(m);
    assert_eq!(
        l.candidates,
        vec![row(&spare, 64 * 1024, "file", "free")],
        "only the spare file is left: the set's volumes and their other names are in use\n{}",
        l.raw
    );
    assert_eq!(l.in_use.len(), 3, "{}", l.raw);
    assert_eq!(l.in_use[0], format!("{master} {MIB} master d"));
    assert_eq!(l.in_use[1], format!("{shadow} {MIB} shadow d"));
    let grown = fs::metadata(&bitmap).expect("bitmap").len();
    assert!(grown > 0, "enable sizes the bitmap file");
    assert_eq!(l.in_use[2], format!("{bitmap} {grown} bitmap d"));

    m.set_ok("d", "disable");
    let l = listing(m);
    assert!(l.in_use.is_empty(), "{}", l.raw);
    for (p, size) in [
        (&master, MIB),
        (&fx.vol("m-hard.img"), MIB),
        (&shadow, MIB),
        (&fx.vol("s-link.img"), MIB),
        (&bitmap, grown),
        (&fx.vol("b-rel.img"), grown),
    ] {
        assert_eq!(l.get(p), &row(p, size, "file", "free"), "{}", l.raw);
    }
    assert_eq!(l.candidates.len(), 7, "{}", l.raw);
}

/// `iiadm --volumes` prints the in-use lines and the candidates as two tables; `--json` gives
/// `{"in_use": [{path, size, role, set}...], "candidates": [{path, size, kind, state}...]}`
/// with sizes as numbers; `-V` is `--volumes`.
#[test]
fn iiadm_volumes_shows_both_lists_as_a_table_and_as_json() {
    let fx = fixture_or_skip!();
    let m = &fx.m;
    let master = fx.file("m.img", MIB);
    let shadow = fx.file("s.img", MIB);
    let bitmap = fx.file("b.img", 0);
    let spare = fx.file("spare.img", 2 * MIB);
    let _lock = ofd_lock(&spare);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} v chunk_size=4096"),
    );
    let iiadm = |args: &[&str]| {
        let out = Command::new(IIADM)
            .arg("--mount")
            .arg(&m.mnt)
            .args(args)
            .output()
            .expect("run iiadm");
        assert!(
            out.status.success(),
            "iiadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let table = iiadm(&["--volumes"]);
    let (in_use, candidates) = table
        .split_once("Candidates:\n")
        .unwrap_or_else(|| panic!("no candidates table:\n{table}"));
    assert!(in_use.starts_with("In use:\n"), "{table}");
    for (path, role) in [
        (&master, "master"),
        (&shadow, "shadow"),
        (&bitmap, "bitmap"),
    ] {
        let line = in_use
            .lines()
            .find(|l| l.split_whitespace().next() == Some(path.as_str()))
            .unwrap_or_else(|| panic!("{path} not in the in-use table:\n{table}"));
        assert!(line.contains(role) && line.ends_with(" v"), "{line}");
    }
    assert!(in_use.contains("1 MiB"), "sizes are readable: {table}");
    let spare_line = candidates
        .lines()
        .find(|l| l.contains(&spare))
        .unwrap_or_else(|| panic!("{spare} not a candidate:\n{table}"));
    assert!(
        spare_line.contains("2 MiB") && spare_line.contains("file") && spare_line.ends_with("held"),
        "{spare_line}"
    );
    assert_eq!(iiadm(&["-V"]), table, "-V is --volumes");

    let j: serde_json::Value =
        serde_json::from_str(&iiadm(&["--volumes", "--json"])).expect("json");
    let in_use = j["in_use"].as_array().expect("in_use array");
    assert_eq!(in_use.len(), 3, "{j:#}");
    assert_eq!(
        in_use[0],
        serde_json::json!({"path": master, "size": MIB, "role": "master", "set": "v"})
    );
    assert_eq!(in_use[1]["role"], "shadow");
    assert_eq!(in_use[2]["path"], bitmap.as_str());
    assert!(in_use[2]["size"].as_u64().is_some_and(|n| n > 0), "{j:#}");
    assert_eq!(
        j["candidates"],
        serde_json::json!([{"path": spare, "size": 2 * MIB, "kind": "file", "state": "held"}])
    );
}

/// Block devices: a symbolic link in the volume directory to a loop device lists it (kind
/// `block`, its size); it is `mounted` while its file system is mounted and `held` while
/// another process has it open exclusively; a file backing a loop device is `held`, as is a
/// file locked the way qemu locks images (or with flock); a loop device over a set's volume is
/// that volume, and not a candidate once the set is enabled.
#[test]
fn block_devices_and_the_states_of_candidates() {
    let fx = fixture_or_skip!();
    let m = &fx.m;
    let mut c = Cleanup::default();
    let disk_file = m.volume("disk.img", 16 * MIB, 0);
    let disk = c.loop_dev(&disk_file, false);
    let disk_link = fx.vol("disk");
    symlink(&disk, &disk_link);
    let backed = fx.file("backed.img", 4 * MIB);
    let locked = fx.file("locked.img", MIB);

    let l = listing(m);
    assert_eq!(
        l.get(&disk_link),
        &row(&disk_link, 16 * MIB, "block", "free")
    );
    assert_eq!(l.state(&backed), "free");
    assert_eq!(l.state(&locked), "free");
    assert!(
        l.candidate(&disk_file).is_none(),
        "files outside volume_dirs are not listed"
    );

    c.loop_dev(&backed, false);
    assert_eq!(
        listing(m).state(&backed),
        "held",
        "a file backing a loop device"
    );

    {
        let _held = ofd_lock(&locked);
        assert_eq!(listing(m).state(&locked), "held", "an OFD write lock");
    }
    assert_eq!(listing(m).state(&locked), "free", "lock released");
    {
        let f = File::open(&locked).expect("open");
        // SAFETY: flock on an open descriptor.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert_eq!(listing(m).state(&locked), "held", "an exclusive flock");
    }

    sh(&format!("mkfs.ext4 -q -F {disk}"));
    let at = m.dir.path().join("fs");
    c.mount(&disk, &at, "");
    assert_eq!(listing(m).state(&disk_link), "mounted");
    c.umount(&at);
    assert_eq!(listing(m).state(&disk_link), "free");
    {
        let _held = hold_exclusively(&disk);
        assert_eq!(
            listing(m).state(&disk_link),
            "held",
            "open O_EXCL elsewhere"
        );
    }
    assert_eq!(listing(m).state(&disk_link), "free");

    // Other names of a set's master: a loop device over it, a link to it.
    let (master, shadow, bitmap) = m.volumes("x", MIB, 3);
    let master_loop = c.loop_dev(&master, false);
    symlink(&master_loop, &fx.vol("master-loop"));
    symlink(&master, &fx.vol("master-link"));
    let l = listing(m);
    assert_eq!(l.state(&fx.vol("master-loop")), "free");
    assert_eq!(
        l.state(&fx.vol("master-link")),
        "held",
        "the file backs a loop device"
    );
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} x chunk_size=4096"),
    );
    let l = listing(m);
    l.absent(&fx.vol("master-loop"), "a loop device over a master in use");
    l.absent(&fx.vol("master-link"), "a link to a master in use");
    assert_eq!(l.state(&disk_link), "free", "{}", l.raw);
    m.set_ok("x", "disable");
    assert_eq!(listing(m).state(&fx.vol("master-loop")), "free");
}

/// Nothing inside the iifs mount is a candidate, even named through a link, and a volume
/// directory inside it lists nothing (and the daemon, which would serve that lookup itself,
/// keeps answering).
#[test]
fn nothing_inside_the_mount_is_a_candidate() {
    let vols = tempfile::Builder::new()
        .prefix("iifs-vols-")
        .tempdir()
        .expect("volume dir");
    // The mountpoint is made by Mount::start; its path is known only then, so the second
    // volume directory is the mount's own `sets/x` named through a link made afterwards.
    let into = vols.path().join("into-mount");
    let Some(m) = Mount::start(&format!(
        "volume_dirs={}:{}",
        vols.path().display(),
        into.display()
    )) else {
        return;
    };
    let (master, shadow, bitmap) = m.volumes("x", MIB, 5);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} x chunk_size=4096"),
    );
    std::os::unix::fs::symlink(m.path("sets/x"), &into).expect("link into the mount");
    std::os::unix::fs::symlink(m.path("sets/x/shadow"), vols.path().join("shadow-in-mount"))
        .expect("link");
    let l = listing(&m);
    assert!(l.candidates.is_empty(), "{}", l.raw);
    assert_eq!(l.in_use.len(), 3, "{}", l.raw);
    assert!(
        m.log().contains("cannot be listed"),
        "the bad directory is logged"
    );
}

// ------------------------------------------------------------------------------ refusals

/// What must not change when an enable is refused: the sets, the global status and the lines
/// of the volumes in use.
fn snapshot(m: &Mount) -> Snapshot {
    let mut snap = Snapshot::new();
    snap.text("the set list", m.set_names().join("\n"))
        .tree_file(m, "the global status", "status")
        .text("the volumes in use", listing(m).in_use.join("\n"));
    snap
}

/// `cmd` on the global ctl is refused with `errno`, a reply that says `error: ` and contains
/// every one of `words`, and nothing changes. Returns the reply.
#[track_caller]
fn refused(m: &Mount, cmd: &str, errno: i32, words: &[&str]) -> String {
    let reply = refused_unchanged(m, "ctl", cmd, errno, || snapshot(m));
    assert_names(&reply, words, &format!("'{cmd}'"));
    reply
}

/// `enable` refuses, with errno and a sentence naming the check: (a) a hard link to a volume in
/// use, (b) a symbolic link to one (EEXIST: the volume is taken, as iifs(7) says), (c) a file inside the iifs mount, (d) a block device that
/// is mounted, (e) one another process holds exclusively.
#[test]
fn enable_refuses_other_names_of_volumes_in_use_and_busy_devices() {
    let fx = fixture_or_skip!();
    let m = &fx.m;
    let mut c = Cleanup::default();
    let size = 16 * MIB;
    let (master, shadow, bitmap) = m.volumes("a", size, 7);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} a chunk_size=4096"),
    );
    let new_master = m.volume("new-m.img", size, 8);
    let new_shadow = m.volume("new-s.img", size, 0);
    let new_bitmap = m.volume("new-b.img", 0, 0);
    let enable = |m: &str, s: &str, b: &str| format!("enable dep {m} {s} {b} x chunk_size=4096");

    // (a) A hard link to set a's shadow, as the new set's shadow.
    let hard = m.dir.path().join("hard-s.img");
    fs::hard_link(&shadow, &hard).expect("hard link");
    let hard = hard.to_string_lossy().into_owned();
    let reply = refused(
        m,
        &enable(&new_master, &hard, &new_bitmap),
        libc::EEXIST,
        &[&format!("{hard} is already the shadow of set a")],
    );
    eprintln!("(a) {reply}");

    // (b) A symbolic link to set a's bitmap, as the new set's bitmap.
    let link = m.dir.path().join("link-b.img");
    symlink(&bitmap, &link.to_string_lossy());
    let reply = refused(
        m,
        &enable(&new_master, &new_shadow, &link.to_string_lossy()),
        libc::EEXIST,
        &["is already the bitmap of set a"],
    );
    eprintln!("(b) {reply}");

    // (c) A file inside the iifs mount: set a's master file, as the new set's shadow.
    let inside = m.path("sets/a/master").to_string_lossy().into_owned();
    let reply = refused(
        m,
        &enable(&new_master, &inside, &new_bitmap),
        libc::EINVAL,
        &["inside the iifs mount", &m.mnt.to_string_lossy()],
    );
    eprintln!("(c) {reply}");

    // (d) A block device with a mounted file system, as the new set's shadow.
    let dev_file = m.volume("dev.img", size, 0);
    let dev = c.loop_dev(&dev_file, false);
    sh(&format!("mkfs.ext4 -q -F {dev}"));
    let at = m.dir.path().join("fs");
    c.mount(&dev, &at, "");
    let reply = refused(
        m,
        &enable(&new_master, &dev, &new_bitmap),
        libc::EBUSY,
        &["mounted at", &at.to_string_lossy(), "unmount"],
    );
    eprintln!("(d) {reply}");
    c.umount(&at);

    // (e) The same device, now held open exclusively by another process (this one). The
    // bytes are compared from here: the mounted file system of (d) wrote its own.
    let dev_before = common::file_bytes(&dev_file);
    let held = hold_exclusively(&dev);
    let reply = refused(
        m,
        &enable(&new_master, &dev, &new_bitmap),
        libc::EBUSY,
        &["exclusively"],
    );
    eprintln!("(e) {reply}");
    drop(held);
    assert!(
        common::file_bytes(&dev_file) == dev_before,
        "a refused enable wrote the device"
    );

    // The same volumes are taken once nothing holds them: the refusals were about the holds.
    m.ok("ctl", &enable(&new_master, &dev, &new_bitmap));
    assert_eq!(m.set_names(), ["a", "x"]);
}
