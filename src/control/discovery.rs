//! The `volumes` file: the volumes in use (one line each, as scripts read them), then the
//! candidates: regular files and block devices in the directories of the `volume_dirs`
//! setting that no set or overflow uses, with whether something else holds them.
//!
//! What counts as "the same volume" is what the engine's opener counts: one storage has one
//! identity whatever its name (device and inode of a file; a loop device is the file behind
//! it; another block device is its device number), so a hard link or a symbolic link to a
//! volume in use, or a loop device over it, is not a candidate. Nothing inside an iifs mount is
//! ever looked up: its I/O would be served by an iifs daemon, perhaps this one, from the very
//! thread that is making this listing.

use std::collections::HashSet;
use std::fmt::Write;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::engine::volume::{Volume, VolumeId};
use crate::engine::VolumeUse;
use crate::mounts::{self, MountInfo};

use super::Controller;

/// The `volume_dirs` setting: set once at start by the daemon, read whenever `volumes` is.
static VOLUME_DIRS: RwLock<Vec<PathBuf>> = RwLock::new(Vec::new());

/// Directories already reported as unusable, so that a bad setting is logged once, not on
/// every read (and every `stat`) of `volumes`.
static WARNED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The heading between the lines of the volumes in use and those of the candidates.
pub const CANDIDATES_HEADING: &str = "candidates:";

/// File systems whose "regular files" are not storage (`/dev/core` leads to `/proc/kcore`).
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "debugfs",
    "tracefs",
    "securityfs",
    "cgroup",
    "cgroup2",
    "configfs",
    "pstore",
    "bpf",
    "efivarfs",
    "fusectl",
    "binfmt_misc",
    "mqueue",
];

/// Set the directories searched for candidates (the `volume_dirs` setting).
pub fn set_volume_dirs(dirs: Vec<PathBuf>) {
    match VOLUME_DIRS.write() {
        Ok(mut d) => *d = dirs,
        Err(p) => *p.into_inner() = dirs,
    }
}

/// The directories searched for candidates.
pub fn volume_dirs() -> Vec<PathBuf> {
    match VOLUME_DIRS.read() {
        Ok(d) => d.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// A regular file or a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Block,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Block => "block",
        }
    }
}

/// Whether a candidate could be enabled now as far as other users go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Free,
    /// A block device with a mounted file system (or a mounted partition).
    Mounted,
    /// Held by someone else: a block device open exclusively, a file locked, or a file that
    /// backs a loop device.
    Held,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Mounted => "mounted",
            State::Held => "held",
        }
    }
}

/// One line of the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The name found in the volume directory (a symbolic link stays as it was found: it is
    /// the name the administrator chose for the storage).
    pub path: String,
    pub size: u64,
    pub kind: Kind,
    pub state: State,
}

/// The text of `volumes`: the lines of the volumes in use first (`PATH SIZE ROLE SET`), then
/// the heading, then one `PATH SIZE KIND STATE` line per candidate.
pub fn volumes_text(in_use: &[VolumeUse], candidates: &[Candidate]) -> String {
    let mut out = String::new();
    for v in in_use {
        let _ = writeln!(out, "{} {} {} {}", v.path, v.size, v.role, v.set);
    }
    let _ = writeln!(out, "{CANDIDATES_HEADING}");
    for c in candidates {
        let _ = writeln!(
            out,
            "{} {} {} {}",
            c.path,
            c.size,
            c.kind.word(),
            c.state.word()
        );
    }
    out
}

impl Controller {
    /// The text of the `volumes` file now.
    pub fn volumes_text(&self) -> String {
        volumes_text(&self.engine.volumes(), &self.candidates())
    }

    /// The candidates in the `volume_dirs` directories now.
    pub fn candidates(&self) -> Vec<Candidate> {
        let dirs = volume_dirs();
        if dirs.is_empty() {
            return Vec::new();
        }
        let sys = System::now();
        let mut used = HashSet::new();
        // Called through the trait by name: the engine's volume handles are trait objects or
        // types that implement it, and this reads the same either way.
        for s in self.engine.sets() {
            used.insert(Volume::id(&*s.master.vol));
            used.insert(match &s.compact {
                Some(c) => Volume::id(&*c.file),
                None => Volume::id(&*s.shadow),
            });
            used.insert(Volume::id(&*s.tracking.vol));
        }
        for o in self.engine.overflows() {
            used.insert(Volume::id(&*o.vol));
        }
        // A set that could not be restored still owns its volumes (fixing the volume and
        // restarting brings it back): offering them for another set would invite overwriting
        // it.
        for (rec, _) in self.unrestored() {
            for p in [&rec.master, &rec.shadow, &rec.bitmap] {
                if let Some(id) = sys.identity_of(Path::new(p)) {
                    used.insert(id);
                }
            }
        }
        sys.candidates(&dirs, &used)
    }
}

/// What the listing needs to know of the system, read once per listing.
struct System {
    mounts: Vec<MountInfo>,
    /// The identities of the files behind loop devices (not those inside an iifs mount).
    loop_backings: HashSet<VolumeId>,
}

impl System {
    fn now() -> System {
        let mounts = mounts::mountinfo().unwrap_or_default();
        let mut sys = System {
            mounts,
            loop_backings: HashSet::new(),
        };
        sys.loop_backings = sys.read_loop_backings();
        sys
    }

    /// The identities of every loop device's backing file, from sysfs (no loop device is
    /// opened: closing the last opener of an auto-clearing loop device would detach it).
    fn read_loop_backings(&self) -> HashSet<VolumeId> {
        let Ok(entries) = fs::read_dir("/sys/block") else {
            return HashSet::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
            .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok())
            .filter_map(|b| {
                let b = PathBuf::from(b.trim_end_matches('\n'));
                let real = self.resolve(&b).ok()?;
                let m = fs::metadata(real).ok()?;
                Some(VolumeId(m.dev(), m.ino()))
            })
            .collect()
    }

    /// The candidates of `dirs`, sorted by path, without the volumes `used`.
    fn candidates(&self, dirs: &[PathBuf], used: &HashSet<VolumeId>) -> Vec<Candidate> {
        let mut out = Vec::new();
        for dir in dirs {
            let entries = match self.resolve(dir).and_then(fs::read_dir) {
                Ok(e) => e,
                Err(e) => {
                    warn_once(dir, &e);
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = dir.join(entry.file_name());
                match self.candidate(&path, used) {
                    Ok(Some(c)) => out.push(c),
                    Ok(None) => {}
                    Err(e) => log::debug!("volumes: {} is not a candidate: {e}", path.display()),
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        // The same directory named twice lists its entries once.
        out.dedup_by(|a, b| a.path == b.path);
        out
    }

    /// `path` as a candidate; `None` when it is something else (a directory, a character
    /// device, a volume in use, a file inside an iifs mount...).
    fn candidate(&self, path: &Path, used: &HashSet<VolumeId>) -> io::Result<Option<Candidate>> {
        // A name a line of `volumes` cannot carry, or a ctl command cannot name.
        let Some(name) = path.to_str().filter(|p| !p.contains('\n')) else {
            return Ok(None);
        };
        let real = self.resolve(path)?;
        let meta = fs::symlink_metadata(&real)?;
        let ft = meta.file_type();
        let (id, kind, size) = if ft.is_file() {
            if self.on_pseudo_fs(&real) {
                return Ok(None);
            }
            (VolumeId(meta.dev(), meta.ino()), Kind::File, meta.len())
        } else if ft.is_block_device() {
            let dev = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
            let Some(id) = self.device_identity(dev, meta.rdev()) else {
                return Ok(None);
            };
            // A device with no storage behind it (an unattached loop device, a drive with no
            // medium) cannot be a volume.
            let size = device_size(dev, &real)?;
            if size == 0 {
                return Ok(None);
            }
            (id, Kind::Block, size)
        } else {
            return Ok(None);
        };
        if used.contains(&id) {
            return Ok(None);
        }
        let state = match kind {
            Kind::File => self.file_state(&real, id),
            Kind::Block => self.device_state(&real, meta.rdev(), id),
        };
        Ok(Some(Candidate {
            path: name.to_string(),
            size,
            kind,
            state,
        }))
    }

    /// The identity the engine gives a block device: the file behind it for a loop device
    /// (or a partition of one), its device number otherwise. `None` for a loop device over a
    /// file inside an iifs mount (that storage is never a candidate).
    fn device_identity(&self, dev: (u32, u32), rdev: u64) -> Option<VolumeId> {
        match loop_backing_path(dev) {
            Some(b) => {
                let real = self.resolve(&b).ok()?;
                match fs::metadata(real) {
                    Ok(m) => Some(VolumeId(m.dev(), m.ino())),
                    // The backing file was deleted or renamed since: the device stands alone.
                    Err(_) => Some(VolumeId(u64::MAX, rdev)),
                }
            }
            None => Some(VolumeId(u64::MAX, rdev)),
        }
    }

    /// The identity of the volume at `path` as the engine would see it, when it exists.
    fn identity_of(&self, path: &Path) -> Option<VolumeId> {
        let real = self.resolve(path).ok()?;
        let m = fs::symlink_metadata(real).ok()?;
        if m.file_type().is_block_device() {
            let dev = (libc::major(m.rdev()), libc::minor(m.rdev()));
            self.device_identity(dev, m.rdev())
        } else {
            Some(VolumeId(m.dev(), m.ino()))
        }
    }

    fn on_pseudo_fs(&self, real: &Path) -> bool {
        self.mounts
            .iter()
            .filter(|m| real.starts_with(&m.target))
            .max_by_key(|m| m.target.as_os_str().len())
            .is_some_and(|m| PSEUDO_FS.contains(&m.fstype.as_str()))
    }

    /// A regular file: held when it backs a loop device or another process locks it.
    fn file_state(&self, real: &Path, id: VolumeId) -> State {
        if self.loop_backings.contains(&id) || file_locked(real, id) {
            State::Held
        } else {
            State::Free
        }
    }

    /// A block device: mounted (itself or a partition of it), held exclusively by another
    /// program, or free. A loop device is held, too, when its backing file is locked.
    fn device_state(&self, real: &Path, rdev: u64, id: VolumeId) -> State {
        let dev = (libc::major(rdev), libc::minor(rdev));
        let mut devs = vec![dev];
        devs.extend(partitions(dev));
        if self.mounts.iter().any(|m| devs.contains(&m.dev)) {
            return State::Mounted;
        }
        // The engine's own test: an exclusive open fails while another holder has it.
        let excl = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(real);
        if let Err(e) = excl {
            if e.raw_os_error() == Some(libc::EBUSY) {
                return State::Held;
            }
        }
        if id.0 != u64::MAX {
            if let Some(b) = loop_backing_path(dev).and_then(|b| self.resolve(&b).ok()) {
                if file_locked(&b, id) {
                    return State::Held;
                }
            }
        }
        State::Free
    }

    /// `path` with every symbolic link resolved, refused when it leads into an iifs mount
    /// (nothing inside one is looked up: see `mounts::resolve_outside`).
    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        mounts::resolve_outside(path, &self.mounts, |m| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("it is inside the iifs mount {}", m.display()),
            )
        })
    }
}

/// Log once per directory that a volume directory cannot be listed.
fn warn_once(dir: &Path, e: &io::Error) {
    let mut warned = match WARNED.lock() {
        Ok(w) => w,
        Err(p) => p.into_inner(),
    };
    if warned.iter().any(|d| d == dir) {
        return;
    }
    warned.push(dir.to_path_buf());
    log::warn!(
        "volume_dirs: {} cannot be listed ({e}); it gives no candidates (fix the directory or \
         the volume_dirs setting)",
        dir.display()
    );
}

/// The sysfs directory of a block device, that of its disk for a partition.
fn sys_disk(dev: (u32, u32)) -> Option<PathBuf> {
    let s = fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).ok()?;
    Some(match s.join("partition").exists() {
        true => s.parent().map(Path::to_path_buf).unwrap_or(s),
        false => s,
    })
}

/// The path of the file behind a loop device (or a partition of one), as sysfs names it.
fn loop_backing_path(dev: (u32, u32)) -> Option<PathBuf> {
    let b = fs::read_to_string(sys_disk(dev)?.join("loop/backing_file")).ok()?;
    let b = b.trim_end_matches('\n');
    // A deleted backing file has no name left to find it by.
    (!b.ends_with(" (deleted)")).then(|| PathBuf::from(b))
}

/// The device numbers of a disk's partitions.
fn partitions(dev: (u32, u32)) -> Vec<(u32, u32)> {
    let Ok(s) = fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(&s) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().join("partition").exists())
        .filter_map(|e| fs::read_to_string(e.path().join("dev")).ok())
        .filter_map(|d| {
            let (maj, min) = d.trim().split_once(':')?;
            Some((maj.parse().ok()?, min.parse().ok()?))
        })
        .collect()
}

/// A block device's size: from sysfs (512-byte sectors), else by seeking to its end.
fn device_size(dev: (u32, u32), real: &Path) -> io::Result<u64> {
    let sectors = fs::read_to_string(format!("/sys/dev/block/{}:{}/size", dev.0, dev.1))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(n) = sectors {
        return Ok(n.saturating_mul(512));
    }
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(real)?;
    f.seek(SeekFrom::End(0))
}

/// Whether another process locks the file: a byte-range lock (F_OFD_GETLK finds any lock that
/// a whole-file write lock would conflict with: qemu's and iifs's own) or an exclusive flock
/// (which byte-range tests do not see; /proc/locks does). A file the daemon cannot open is
/// taken as not locked: its `enable` will say why it cannot be used.
fn file_locked(real: &Path, id: VolumeId) -> bool {
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(real)
    else {
        return false;
    };
    // The name may have been replaced between the look-up and the open.
    if f.metadata().is_ok_and(|m| VolumeId(m.dev(), m.ino()) != id) {
        return false;
    }
    range_locked(&f) || flocked(id)
}

fn range_locked(f: &File) -> bool {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut probe: libc::flock = unsafe { std::mem::zeroed() };
    probe.l_type = libc::F_WRLCK as libc::c_short;
    probe.l_whence = libc::SEEK_SET as libc::c_short;
    // l_start 0, l_len 0: the whole file.
    // SAFETY: F_OFD_GETLK reads and fills one struct flock through the pointer.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) };
    rc == 0 && probe.l_type != libc::F_UNLCK as libc::c_short
}

/// Whether /proc/locks shows a granted flock on the file `id`.
fn flocked(id: VolumeId) -> bool {
    let key = format!(
        "{:02x}:{:02x}:{}",
        libc::major(id.0),
        libc::minor(id.0),
        id.1
    );
    let Ok(locks) = fs::read_to_string("/proc/locks") else {
        return false;
    };
    locks
        .lines()
        // Waiters are shown with "->" and hold nothing yet.
        .filter(|l| !l.contains("->"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&key.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(iifs_at: Option<&Path>) -> System {
        System {
            mounts: iifs_at
                .map(|t| MountInfo {
                    dev: (0, 999_999),
                    target: t.to_path_buf(),
                    fstype: mounts::FSTYPE.into(),
                })
                .into_iter()
                .collect(),
            loop_backings: HashSet::new(),
        }
    }

    #[test]
    fn the_text_keeps_the_lines_in_use_first_and_always_has_the_heading() {
        let used = [VolumeUse {
            path: "/m".into(),
            size: 4096,
            role: "master",
            set: "db".into(),
        }];
        assert_eq!(volumes_text(&used, &[]), "/m 4096 master db\ncandidates:\n");
        let c = Candidate {
            path: "/d/a b".into(),
            size: 1,
            kind: Kind::Block,
            state: State::Mounted,
        };
        assert_eq!(
            volumes_text(&[], &[c]),
            "candidates:\n/d/a b 1 block mounted\n"
        );
    }

    #[test]
    fn files_links_and_hard_links_by_identity() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        fs::write(d.join("used"), b"x").unwrap();
        fs::write(d.join("free"), b"xy").unwrap();
        fs::hard_link(d.join("used"), d.join("hard")).unwrap();
        std::os::unix::fs::symlink(d.join("used"), d.join("soft")).unwrap();
        std::os::unix::fs::symlink("free", d.join("rel")).unwrap();
        std::os::unix::fs::symlink("nowhere", d.join("dangling")).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/deeper"), b"x").unwrap();
        let s = sys(None);
        let m = fs::metadata(d.join("used")).unwrap();
        let used = HashSet::from([VolumeId(m.dev(), m.ino())]);
        let got: Vec<(String, u64)> = s
            .candidates(&[d.clone(), d.clone()], &used)
            .into_iter()
            .map(|c| (c.path, c.size))
            .collect();
        let name = |n: &str| d.join(n).to_string_lossy().into_owned();
        assert_eq!(got, vec![(name("free"), 2), (name("rel"), 2)]);
    }

    #[test]
    fn nothing_inside_an_iifs_mount_is_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        fs::create_dir(d.join("mnt")).unwrap();
        fs::write(d.join("mnt/f"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("mnt/f"), d.join("into")).unwrap();
        let s = sys(Some(&d.join("mnt")));
        assert!(s
            .candidates(std::slice::from_ref(&d), &HashSet::new())
            .is_empty());
        assert!(s.candidates(&[d.join("mnt")], &HashSet::new()).is_empty());
        let e = s.resolve(&d.join("into")).unwrap_err();
        assert!(e.to_string().contains("inside the iifs mount"), "{e}");
    }

    #[test]
    fn a_locked_file_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"x").unwrap();
        let m = fs::metadata(&p).unwrap();
        let id = VolumeId(m.dev(), m.ino());
        let s = sys(None);
        assert_eq!(s.file_state(&p, id), State::Free);
        let holder = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        // SAFETY: an all-zero flock is a valid value of this plain C struct.
        let mut lk: libc::flock = unsafe { std::mem::zeroed() };
        lk.l_type = libc::F_RDLCK as libc::c_short;
        // SAFETY: F_OFD_SETLK reads one struct flock through the pointer.
        assert_eq!(
            unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_OFD_SETLK, &lk) },
            0
        );
        assert_eq!(s.file_state(&p, id), State::Held);
        drop(holder);
        assert_eq!(s.file_state(&p, id), State::Free);
        let holder = File::open(&p).unwrap();
        // SAFETY: flock on an open descriptor.
        assert_eq!(
            unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        assert_eq!(s.file_state(&p, id), State::Held);
    }
}
