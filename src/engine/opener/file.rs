//! How the daemon opens the files and block devices a set is made of. A volume must be what it
//! seems: one storage has one identity whatever its name (a loop device is the file behind
//! it), nobody else may be writing it (files are locked as qemu locks its images, block
//! devices are opened exclusively), and it must not live on an iifs mount (its I/O would be
//! served by an iifs daemon, perhaps this one, whose threads may all be waiting for it).
//!
//! (Over 500 lines with its unit tests; the checks of one open belong together.)

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::super::error::OpenRefusal;
use super::super::volume::{FileVolume, Volume, VolumeId};
use super::Opener;
use crate::mounts;

/// Opens files and block devices (see the module comment for what it refuses).
pub struct FileOpener;

/// The volumes this process has open: several sets on one master share one descriptor (and
/// so one lock), and a second name for a volume already open finds it.
static OPEN: Mutex<Vec<Weak<FileVolume>>> = Mutex::new(Vec::new());

impl Opener for FileOpener {
    fn open(&self, path: &str) -> io::Result<Arc<dyn Volume>> {
        Ok(open_volume(Path::new(path), false)?.0)
    }

    fn create(&self, path: &str) -> io::Result<(Arc<dyn Volume>, bool)> {
        let (v, made) = open_volume(Path::new(path), true)?;
        Ok((v, made))
    }

    fn grow(&self, path: &str, len: u64) -> io::Result<bool> {
        set_len(path, len, true)
    }

    fn shrink(&self, path: &str, len: u64) -> io::Result<()> {
        set_len(path, len, false).map(|_| ())
    }

    fn identify(&self, path: &str) -> io::Result<VolumeId> {
        let real = resolve(Path::new(path), &mounts::iifs_mountinfo())?;
        let meta = fs::metadata(&real)?;
        if meta.file_type().is_block_device() {
            // A loop device is the file behind it: only an open finds that out. Held by
            // another process, it is known by its device number.
            return match open_volume(&real, false) {
                Ok((v, _)) => Ok(v.id()),
                Err(_) => Ok(VolumeId(u64::MAX, meta.rdev())),
            };
        }
        Ok(VolumeId(meta.dev(), meta.ino()))
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        // The file made, not a link that led to it.
        fs::remove_file(resolve(Path::new(path), &mounts::iifs_mountinfo())?)
    }
}

/// Set the length of a regular file (false for a block device, whose size is fixed). Not
/// through `open_volume`: the file is open and locked by this process already.
fn set_len(path: &str, len: u64, grow_only: bool) -> io::Result<bool> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(resolve(Path::new(path), &mounts::iifs_mountinfo())?)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Ok(false);
    }
    if !grow_only || meta.len() < len {
        file.set_len(len)?;
        file.sync_all()?;
    }
    Ok(true)
}

/// Open (or, with `create`, make with mode 0600 if missing: then true) the volume at `path`.
fn open_volume(path: &Path, create: bool) -> io::Result<(Arc<FileVolume>, bool)> {
    let iifs = mounts::iifs_mountinfo();
    let real = resolve(path, &iifs)?;
    let mut open = match OPEN.lock() {
        Ok(o) => o,
        Err(p) => p.into_inner(),
    };
    open.retain(|w| w.strong_count() > 0);
    let live: Vec<Arc<FileVolume>> = open.iter().filter_map(Weak::upgrade).collect();
    let meta = match fs::symlink_metadata(&real) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => None,
        Err(e) => return Err(explain(e)),
    };
    let vol = match &meta {
        None => create_file(&real)?,
        Some(m) if m.file_type().is_block_device() => {
            if let Some(v) = live.iter().find(|v| v.rdev() == Some(m.rdev())) {
                return Ok((v.clone(), false));
            }
            let (mut v, backing) = open_block_device(&real, m.rdev(), &iifs)?;
            // Another name of a volume open already (the file behind this loop device). A
            // loop device over part of that file (an offset, a size limit, a partition) is
            // not the same volume, and overlaps it: refused.
            if let Some(l) = open_already(&live, &v, v.len())? {
                return Ok((l, false));
            }
            // Lock the backing file too, so another daemon using it by its file name sees it
            // taken.
            if let Some(b) = backing {
                if let Ok(f) = OpenOptions::new().read(true).write(true).open(&b) {
                    let id = v.id();
                    if f.metadata()
                        .is_ok_and(|m| (m.dev(), m.ino()) == (id.0, id.1))
                    {
                        lock_file(&f, Some(&b), id)?;
                        v.hold(f);
                    }
                }
            }
            v
        }
        Some(m) if m.file_type().is_file() => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&real)
                .map_err(explain)?;
            check_not_on_iifs(&file, &iifs)?;
            let v = FileVolume::from_file(file, None)?;
            if let Some(l) = open_already(&live, &v, m.len())? {
                return Ok((l, false));
            }
            lock_file(v.file(), None, v.id())?;
            v
        }
        Some(m) if m.file_type().is_dir() => {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        Some(_) => return Err(OpenRefusal::NotFileOrDevice.into()),
    };
    let vol = Arc::new(vol);
    open.push(Arc::downgrade(&vol));
    Ok((vol, meta.is_none()))
}

/// A missing bitmap file is made, mode 0600, if its directory exists; a missing device node
/// is not made (that is a typo, or a device that is not there).
fn create_file(real: &Path) -> io::Result<FileVolume> {
    let parent = real.parent().unwrap_or(Path::new("/"));
    let on_devtmpfs = mounts::mountinfo()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| parent.starts_with(&m.target))
        .max_by_key(|m| m.target.as_os_str().len())
        .is_some_and(|m| m.fstype == "devtmpfs");
    if on_devtmpfs {
        return Err(OpenRefusal::NoSuchDevice.into());
    }
    if !fs::symlink_metadata(parent).is_ok_and(|m| m.is_dir()) {
        return Err(OpenRefusal::NoDirectory {
            dir: parent.to_path_buf(),
        }
        .into());
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(real)
        .map_err(explain)?;
    let v = FileVolume::from_file(file, None)?;
    lock_file(v.file(), None, v.id())?;
    Ok(v)
}

/// Open a block device exclusively (refused while it is mounted or held by another program),
/// as the storage behind it when it is a loop device (or a partition of one): then the path of
/// its backing file comes along.
fn open_block_device(
    real: &Path,
    rdev: u64,
    iifs: &[mounts::MountInfo],
) -> io::Result<(FileVolume, Option<PathBuf>)> {
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    // The backing file of a loop device, by name: found without touching the file, which
    // may be on an iifs mount.
    let sys = fs::canonicalize(format!("/sys/dev/block/{maj}:{min}")).ok();
    let disk = sys.map(|s| match s.join("partition").exists() {
        true => s.parent().map(Path::to_path_buf).unwrap_or(s),
        false => s,
    });
    let backing = disk
        .and_then(|d| fs::read_to_string(d.join("loop/backing_file")).ok())
        .map(|b| PathBuf::from(b.trim_end_matches('\n')));
    if let Some(b) = &backing {
        if let Some(m) = iifs.iter().find(|m| b.starts_with(&m.target)) {
            return Err(on_iifs(&m.target, Some(b)));
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_NOFOLLOW)
        .open(real)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => device_busy((maj, min)),
            _ => explain(e),
        })?;
    let Some(backing) = backing else {
        return Ok((FileVolume::from_file(file, None)?, None));
    };
    let (dev, ino) = loop_backing_id(&file)?;
    let backing_dev = (libc::major(dev), libc::minor(dev));
    if let Some(m) = iifs.iter().find(|m| m.dev == backing_dev) {
        return Err(on_iifs(&m.target, Some(&backing)));
    }
    let v = FileVolume::from_file(file, Some(VolumeId(dev, ino)))?;
    Ok((v, Some(backing)))
}

/// `struct loop_info64` of <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// The device and inode of the file behind a loop device (the kernel encodes the device
/// number as `st_dev` does).
fn loop_backing_id(file: &File) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero loop_info64 is a valid value of this plain C struct.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 fills exactly one loop_info64 through the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_GET_STATUS64, &mut info) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((info.lo_device, info.lo_inode))
}

/// Take the advisory locks that mark a file as a volume in use: an exclusive flock (another
/// iifs daemon is refused, and /proc/locks names the holder) and a write lock over the whole
/// file as an open file description lock, the kind qemu takes on its images (so qemu and
/// iifs refuse each other's volumes).
fn lock_file(file: &File, backing: Option<&Path>, id: VolumeId) -> io::Result<()> {
    let busy = |holder: Option<String>| -> io::Error {
        OpenRefusal::Locked {
            backing: backing.map(Path::to_path_buf),
            holder,
        }
        .into()
    };
    if !super::super::volume::try_lock_exclusive(file)? {
        return Err(busy(lock_holder(id)));
    }
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = libc::F_WRLCK as libc::c_short;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    // l_start 0, l_len 0: the whole file, however long it grows.
    // SAFETY: F_OFD_SETLK reads one struct flock through the pointer.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &range) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Err(busy(None)),
        // A file system without byte-range locks: the flock above is what there is.
        Some(libc::EINVAL | libc::ENOLCK | libc::EOPNOTSUPP) => Ok(()),
        _ => Err(e),
    }
}

/// Who holds the lock on a file, from /proc/locks: "process PID (NAME)".
fn lock_holder(id: VolumeId) -> Option<String> {
    let key = format!(
        "{:02x}:{:02x}:{}",
        libc::major(id.0),
        libc::minor(id.0),
        id.1
    );
    let locks = fs::read_to_string("/proc/locks").ok()?;
    let pid = locks
        .lines()
        .filter(|l| !l.contains("->"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        // Open file description locks show no pid (-1); a flock shows its holder's.
        .find(|f| f.get(5) == Some(&key.as_str()) && f.get(4).is_some_and(|p| *p != "-1"))
        .and_then(|f| f.get(4).map(|p| p.to_string()))?;
    let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Some(format!("process {pid} ({})", name.trim()))
}

fn device_busy(dev: (u32, u32)) -> io::Error {
    let mounted_at = mounts::mountinfo()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.dev == dev)
        .map(|m| m.target);
    OpenRefusal::DeviceBusy { mounted_at }.into()
}

fn on_iifs(mount: &Path, via: Option<&Path>) -> io::Error {
    OpenRefusal::OnIifs {
        mount: mount.to_path_buf(),
        via: via.map(Path::to_path_buf),
    }
    .into()
}

/// The volume in use that `v` (now `len` bytes) is another name of, if any. One that differs
/// in size is not the same volume: a file that changed size, or a loop device over part of
/// the file (an offset, a size limit, a partition), which overlaps it: refused.
fn open_already(
    live: &[Arc<FileVolume>],
    v: &FileVolume,
    len: u64,
) -> io::Result<Option<Arc<FileVolume>>> {
    let Some(l) = live.iter().find(|l| l.id() == v.id()) else {
        return Ok(None);
    };
    if l.len() != len {
        return Err(OpenRefusal::SizeDiffers {
            now: len,
            in_use: l.len(),
        }
        .into());
    }
    Ok(Some(l.clone()))
}

/// Refuse a file whose file system is an iifs mount, read from the open descriptor without
/// asking the file system (a stat that reached an iifs daemon could wait for it).
fn check_not_on_iifs(file: &File, iifs: &[mounts::MountInfo]) -> io::Result<()> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx on an open descriptor with an empty path fills `stx`.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let dev = (stx.stx_dev_major, stx.stx_dev_minor);
    match iifs.iter().find(|m| m.dev == dev) {
        Some(m) => Err(on_iifs(&m.target, None)),
        None => Ok(()),
    }
}

/// An open error, said so a person can act on it; permission problems of every flavour are
/// PermissionDenied (EACCES at the ctl file).
fn explain(e: io::Error) -> io::Error {
    let errno = e.raw_os_error();
    let (kind, why) = match errno {
        Some(libc::EACCES) => (io::ErrorKind::PermissionDenied, "permission denied"),
        Some(libc::EPERM) => (
            io::ErrorKind::PermissionDenied,
            "the daemon may not write it (an immutable or append-only file: see lsattr)",
        ),
        Some(libc::EROFS) => (
            io::ErrorKind::PermissionDenied,
            "it is on a read-only file system",
        ),
        Some(libc::ETXTBSY) => (io::ErrorKind::PermissionDenied, "it is a running program"),
        Some(libc::ENAMETOOLONG) => (
            io::ErrorKind::InvalidInput,
            "the path is too long for the system",
        ),
        Some(libc::ELOOP) => (io::ErrorKind::InvalidInput, "too many symbolic links"),
        Some(libc::ENOTDIR) => (
            io::ErrorKind::NotFound,
            "a component of the path is not a directory",
        ),
        _ => return e,
    };
    OpenRefusal::Explained {
        why,
        errno: errno.unwrap_or_default(),
        kind,
    }
    .into()
}

/// `path` with every symbolic link resolved, refused when it leads into an iifs mount (see
/// `mounts::resolve_outside`).
fn resolve(path: &Path, iifs: &[mounts::MountInfo]) -> io::Result<PathBuf> {
    mounts::resolve_outside(path, iifs, |m| on_iifs(m, None)).map_err(explain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(target: &str) -> mounts::MountInfo {
        mounts::MountInfo {
            dev: (0, 999_999),
            target: PathBuf::from(target),
            fstype: mounts::FSTYPE.into(),
        }
    }

    #[test]
    fn links_are_resolved_and_paths_into_an_iifs_mount_refused_without_a_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        fs::create_dir(d.join("real")).unwrap();
        fs::write(d.join("real/f"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        std::os::unix::fs::symlink("../real/f", d.join("real/rel")).unwrap();
        assert_eq!(resolve(&d.join("link/f"), &[]).unwrap(), d.join("real/f"));
        assert_eq!(resolve(&d.join("link/rel"), &[]).unwrap(), d.join("real/f"));
        assert_eq!(
            resolve(&d.join("link/missing/x"), &[]).unwrap(),
            d.join("real/missing/x")
        );
        // The "mount" is a plain directory here: refused by name, before any lookup in it.
        let m = [mount(d.join("real").to_str().unwrap())];
        let e = resolve(&d.join("link/f"), &m).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("inside the iifs mount"), "{e}");
        std::os::unix::fs::symlink("loop2", d.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", d.join("loop2")).unwrap();
        assert!(resolve(&d.join("loop1"), &[]).is_err());
    }
}
