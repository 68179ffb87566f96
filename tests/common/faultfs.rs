//! A fault-injecting pass-through FUSE file system for the mount tests: a flat directory of
//! backing files (regular files in a temp dir) served on another temp dir, in this process,
//! whose reads, writes and syncs fail on command with the errno a test chooses. The iifs
//! daemon (a separate process) then keeps its volumes in this mount and meets real EIO and
//! ENOSPC from its backing files.
//!
//! ```text
//! let ffs = FaultFs::start();
//! let master = ffs.create("m.img", size, seed);          // a path inside the mount
//! ffs.ctl.fail("m.img", Op::Write, libc::EIO, 0);        // every later write of it fails
//! ffs.ctl.heal("m.img");
//! ```
//!
//! Every open is direct I/O (no page cache in this mount), so each read, write and fsync of
//! iifs reaches the helper and can fail. Locks (`flock`, OFD locks) are not answered: the
//! kernel keeps them locally, as iifs expects of a file system. `copy_file_range` between two
//! files of the mount is passed through as on ext4 or xfs; it meets the source's read faults
//! and the target's write faults.
//! Drop unmounts (also while a test panics); drop the iifs `Mount` first (declare it after).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};

/// The kind of request a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `read`.
    Read,
    /// `write` and `fallocate`.
    Write,
    /// `fsync` (and `fdatasync`).
    Sync,
}

#[derive(Clone, Copy, Debug)]
struct Fault {
    op: Op,
    errno: i32,
    /// Requests of `op` still let through before the fault strikes.
    after: u64,
}

/// The test's handle on the file system: faults and counters, shared with its threads.
#[derive(Default)]
pub struct Control {
    faults: Mutex<HashMap<String, Vec<Fault>>>,
    /// Requests served, per file and kind (failed ones included).
    ops: Mutex<HashMap<(String, Op), u64>>,
    /// Requests failed on purpose, per file.
    failed: Mutex<HashMap<String, u64>>,
}

impl Control {
    /// From the `after`-th next `op` request of `file` on (0: the next one), every one fails
    /// with `errno` (`libc::EIO`, `libc::ENOSPC`) until `heal`.
    pub fn fail(&self, file: &str, op: Op, errno: i32, after: u64) {
        let mut f = self.faults.lock().unwrap();
        let list = f.entry(file.to_string()).or_default();
        list.retain(|x| x.op != op);
        list.push(Fault { op, errno, after });
    }

    /// Remove every fault of `file`.
    pub fn heal(&self, file: &str) {
        self.faults.lock().unwrap().remove(file);
    }

    /// How many `op` requests of `file` were served (or failed).
    pub fn count(&self, file: &str, op: Op) -> u64 {
        let ops = self.ops.lock().unwrap();
        ops.get(&(file.to_string(), op)).copied().unwrap_or(0)
    }

    /// How many requests of `file` failed on purpose.
    pub fn failures(&self, file: &str) -> u64 {
        self.failed.lock().unwrap().get(file).copied().unwrap_or(0)
    }

    /// Count one `op` request of `file`; the errno it must fail with, if a fault says so.
    fn check(&self, file: &str, op: Op) -> Option<i32> {
        *self
            .ops
            .lock()
            .unwrap()
            .entry((file.to_string(), op))
            .or_default() += 1;
        let mut faults = self.faults.lock().unwrap();
        let fault = faults.get_mut(file)?.iter_mut().find(|f| f.op == op)?;
        if fault.after > 0 {
            fault.after -= 1;
            return None;
        }
        let errno = fault.errno;
        drop(faults);
        *self
            .failed
            .lock()
            .unwrap()
            .entry(file.to_string())
            .or_default() += 1;
        Some(errno)
    }
}

struct Inner {
    backing: PathBuf,
    ctl: Arc<Control>,
    /// Inode numbers of the files looked up (root is 1), both ways.
    inos: Mutex<(HashMap<String, u64>, Vec<String>)>,
    handles: Mutex<HashMap<u64, (String, Arc<File>)>>,
    next_fh: AtomicU64,
}

const ROOT: u64 = 1;

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Inner {
    fn ino_of(&self, name: &str) -> u64 {
        let mut g = self.inos.lock().unwrap();
        if let Some(i) = g.0.get(name) {
            return *i;
        }
        g.1.push(name.to_string());
        let ino = g.1.len() as u64 + ROOT;
        g.0.insert(name.to_string(), ino);
        ino
    }

    fn name_of(&self, ino: INodeNo) -> Option<String> {
        let g = self.inos.lock().unwrap();
        let i = ino.0.checked_sub(ROOT + 1)? as usize;
        g.1.get(i).cloned()
    }

    fn attr(&self, ino: u64, meta: &std::fs::Metadata) -> FileAttr {
        let t =
            |s: i64, ns: i64| SystemTime::UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
        FileAttr {
            ino: INodeNo(ino),
            size: meta.len(),
            blocks: meta.blocks(),
            atime: t(meta.atime(), meta.atime_nsec()),
            mtime: t(meta.mtime(), meta.mtime_nsec()),
            ctime: t(meta.ctime(), meta.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind: if meta.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (meta.mode() & 0o7777) as u16,
            nlink: 1,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn file_attr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        if ino.0 == ROOT {
            let meta = std::fs::metadata(&self.backing).map_err(|e| errno(&e))?;
            return Ok(self.attr(ROOT, &meta));
        }
        let name = self.name_of(ino).ok_or(Errno::ENOENT)?;
        let meta = std::fs::metadata(self.backing.join(&name)).map_err(|e| errno(&e))?;
        Ok(self.attr(ino.0, &meta))
    }

    fn handle(&self, fh: FileHandle) -> Option<(String, Arc<File>)> {
        self.handles.lock().unwrap().get(&fh.0).cloned()
    }
}

struct Fs(Arc<Inner>);

/// Attributes are not cached: sizes change behind the kernel's back (`create`, truncates).
const TTL: Duration = Duration::ZERO;

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_string_lossy().into_owned();
        if parent.0 != ROOT {
            return reply.error(Errno::ENOENT);
        }
        match std::fs::metadata(self.0.backing.join(&name)) {
            Ok(meta) if meta.is_file() => {
                let ino = self.0.ino_of(&name);
                reply.entry(&TTL, &self.0.attr(ino, &meta), Generation(0))
            }
            Ok(_) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.file_attr(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Some(size) = size {
            let Some(name) = self.0.name_of(ino) else {
                return reply.error(Errno::ENOENT);
            };
            if let Some(e) = self.0.ctl.check(&name, Op::Write) {
                return reply.error(Errno::from_i32(e));
            }
            let done = match fh.and_then(|fh| self.0.handle(fh)) {
                Some((_, f)) => f.set_len(size),
                None => OpenOptions::new()
                    .write(true)
                    .open(self.0.backing.join(&name))
                    .and_then(|f| f.set_len(size)),
            };
            if let Err(e) = done {
                return reply.error(errno(&e));
            }
        }
        match self.0.file_attr(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(name) = self.0.name_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut o = OpenOptions::new();
        match flags.acc_mode() {
            OpenAccMode::O_RDONLY => o.read(true),
            OpenAccMode::O_WRONLY => o.write(true),
            _ => o.read(true).write(true),
        };
        match o.open(self.0.backing.join(&name)) {
            Ok(f) => {
                let fh = self.0.next_fh.fetch_add(1, Ordering::SeqCst);
                self.0
                    .handles
                    .lock()
                    .unwrap()
                    .insert(fh, (name, Arc::new(f)));
                // Direct I/O: no page cache here, every request reaches the helper.
                let fl = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
                reply.opened(FileHandle(fh), fl)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some((name, f)) = self.0.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        if let Some(e) = self.0.ctl.check(&name, Op::Read) {
            return reply.error(Errno::from_i32(e));
        }
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..done])
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some((name, f)) = self.0.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        if let Some(e) = self.0.ctl.check(&name, Op::Write) {
            return reply.error(Errno::from_i32(e));
        }
        match f.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0.handles.lock().unwrap().remove(&fh.0);
        reply.ok()
    }

    fn fsync(&self, _: &Request, _: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let Some((name, f)) = self.0.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        if let Some(e) = self.0.ctl.check(&name, Op::Sync) {
            return reply.error(Errno::from_i32(e));
        }
        let r = if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some((name, f)) = self.0.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        if let Some(e) = self.0.ctl.check(&name, Op::Write) {
            return reply.error(Errno::from_i32(e));
        }
        // SAFETY: plain call on an open descriptor with integer arguments.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, length as i64) };
        if rc == 0 {
            reply.ok()
        } else {
            reply.error(errno(&std::io::Error::last_os_error()))
        }
    }

    /// Copies between two files of this mount (iifs copies chunks so): a read of the source
    /// and a write of the target, each of which can fail as its own request would.
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let (Some((src, fin)), Some((dst, fout))) = (self.0.handle(fh_in), self.0.handle(fh_out))
        else {
            return reply.error(Errno::EBADF);
        };
        for (name, op) in [(&src, Op::Read), (&dst, Op::Write)] {
            if let Some(e) = self.0.ctl.check(name, op) {
                return reply.error(Errno::from_i32(e));
            }
        }
        let (mut off_in, mut off_out) = (offset_in as i64, offset_out as i64);
        let len = len.min(1 << 30) as usize;
        // SAFETY: both descriptors are open; the offsets are plain integers the kernel updates.
        let n = unsafe {
            libc::copy_file_range(
                fin.as_raw_fd(),
                &mut off_in,
                fout.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        if n < 0 {
            reply.error(errno(&std::io::Error::last_os_error()))
        } else {
            reply.written(n as u32)
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut names: Vec<String> = std::fs::read_dir(&self.0.backing)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let mut entries = vec![
            (ROOT, FileType::Directory, ".".to_string()),
            (ROOT, FileType::Directory, "..".to_string()),
        ];
        for n in names {
            entries.push((self.0.ino_of(&n), FileType::RegularFile, n));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok()
    }
}

/// The mounted helper: `mnt` serves the files of `backing`; `ctl` injects faults.
pub struct FaultFs {
    pub ctl: Arc<Control>,
    pub mnt: PathBuf,
    pub backing: PathBuf,
    session: Option<BackgroundSession>,
    _dir: tempfile::TempDir,
}

impl FaultFs {
    /// Mount a fresh, empty one on a temp dir (needs root and /dev/fuse, as the mount tests).
    pub fn start() -> FaultFs {
        let dir = tempfile::Builder::new()
            .prefix("iifs-faultfs-")
            .tempdir()
            .expect("temp dir");
        let mnt = dir.path().join("mnt");
        let backing = dir.path().join("backing");
        std::fs::create_dir_all(&mnt).expect("mountpoint");
        std::fs::create_dir_all(&backing).expect("backing dir");
        let ctl = Arc::new(Control::default());
        let inner = Arc::new(Inner {
            backing: backing.clone(),
            ctl: ctl.clone(),
            inos: Mutex::default(),
            handles: Mutex::default(),
            next_fh: AtomicU64::new(1),
        });
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("faultfs".into()),
            MountOption::Subtype("faultfs".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        config.n_threads = Some(4);
        let session =
            fuser::spawn_mount(Fs(inner), &mnt, &config).expect("mount the fault-injecting fs");
        let ffs = FaultFs {
            ctl,
            mnt,
            backing,
            session: Some(session),
            _dir: dir,
        };
        // The mount answers once the kernel's INIT is through.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&ffs.mnt).map(|m| m.ino()).ok() != Some(ROOT) {
            assert!(Instant::now() < deadline, "faultfs did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        ffs
    }

    /// Make backing file `name` of `size` bytes filled from `seed` (0: zeros, as
    /// `super::pattern`); returns its path inside the mount.
    pub fn create(&self, name: &str, size: u64, seed: u64) -> String {
        let f = File::create(self.backing.join(name)).expect("create backing file");
        f.set_len(size).expect("size backing file");
        if seed != 0 {
            f.write_all_at(&super::pattern(size as usize, seed), 0)
                .expect("fill backing file");
        }
        self.path(name)
    }

    /// The path of `name` inside the mount.
    pub fn path(&self, name: &str) -> String {
        self.mnt.join(name).to_string_lossy().into_owned()
    }

    /// The backing file's bytes, read beside the mount (no fault applies).
    pub fn backing_bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.backing.join(name)).expect("read backing file")
    }

    /// The backing file itself (beside the mount).
    pub fn backing_path(&self, name: &str) -> PathBuf {
        self.backing.join(name)
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        // Whatever was injected, the unmount must not wait on a failing file.
        self.ctl
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                // Still busy (a daemon that outlived its test): detach it lazily, as `umount
                // -l`; the session thread ends when its last user lets go.
                let c = std::ffi::CString::new(self.mnt.as_os_str().as_encoded_bytes())
                    .unwrap_or_default();
                // SAFETY: a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}
