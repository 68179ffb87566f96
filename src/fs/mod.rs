//! Presentation tier: the control tree as a FUSE file system (the only module that uses fuser).
//!
//! ```text
//! MOUNTPOINT/ctl status version volumes sets/NAME/{master,shadow,bitmap,ctl,status}
//! ```
//! Data files are opened with FOPEN_DIRECT_IO (no double caching, no stale pages after an
//! update); ctl and status files too, their content made at open.
//!
//! The mount always has `default_permissions`: the kernel checks the modes and owners shown
//! here, which matters once `allow_other` lets other users in. ctl files are 0200 and status
//! files 0444, owned by the daemon's user; `master` and `shadow` show the mode and owner of
//! their backing files, so no user reads or writes through the mount what they could not
//! read or write directly.

mod inode;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, WriteFlags,
};

use crate::control::status;
use crate::control::Controller;
use crate::engine::error::Role;
use crate::engine::{Error, Set};
use inode::{Inodes, Node, SetFile, CTL, ROOT, SETS, SET_FILES, STATUS, VERSION, VOLUMES};

/// A read of a volume's bytes into a buffer at an offset.
type VolumeRead<'a> = dyn Fn(&mut [u8], u64) -> Result<(), Error> + 'a;

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

const TTL: Duration = Duration::from_secs(1);

/// The size a ctl file shows, and the longest command: a command is one write(2) that lies
/// within it. Writes inside the shown size do not extend the file, which lets the kernel run
/// writes to one open ctl file in parallel (with FOPEN_PARALLEL_DIRECT_WRITES it still takes
/// the inode lock exclusively for a write past the end of the file, as after an O_TRUNC open,
/// hence also one inode per open: `Inodes::ctl_instance`).
const CTL_SIZE: u64 = 64 * 1024;

/// Where writes to a ctl file may start. The kernel splits a write longer than the maximum
/// write size (at least 128 KiB: 1 MiB asked for, 32 pages when the kernel cannot do more)
/// into pieces sent as separate requests, possibly out of order: every piece but the first
/// starts at least that far from the first, and the first is longer than a command, so no
/// piece of a long write is ever taken as a command. An O_APPEND write starts at the end of
/// the file (CTL_SIZE), within this window.
const CTL_WINDOW: u64 = 2 * CTL_SIZE;

/// An open `master` or `shadow` file: counted on its set (per file) while it lives, so the set
/// is not disabled, nor a copy started onto the file, under a loop device or a process using it.
struct DataFile(Arc<Set>, Role);

impl DataFile {
    fn new(set: Arc<Set>, role: Role) -> DataFile {
        set.file_opened(role);
        DataFile(set, role)
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        self.0.file_closed(self.1);
    }
}

impl std::ops::Deref for DataFile {
    type Target = Arc<Set>;
    fn deref(&self) -> &Arc<Set> {
        &self.0
    }
}

/// What an open file handle refers to, fixed at open.
enum Handle {
    Master(DataFile),
    Shadow(DataFile),
    Bitmap(Arc<Set>),
    /// A ctl file (scope `None` for the global one), with the reply to the last command.
    Ctl(CtlFile),
    /// A status-like file: content generated at open.
    Text(Vec<u8>),
}

/// The set a set's ctl file was opened on: its name, and the set itself while it lives (`None`
/// for a set that could not be restored at start, which can only be disabled). A command
/// through a handle whose set was disabled meanwhile must not reach a new set of that name.
#[derive(Clone)]
struct SetScope {
    name: String,
    set: Option<std::sync::Weak<Set>>,
}

/// An open ctl file: its inode (which still answers `fstat` after a `disable` removed its set:
/// `exec 3<>ctl; echo disable >&3; cat <&3`), its set, and the reply to its last command.
struct CtlFile {
    ino: u64,
    scope: Option<SetScope>,
    reply: Mutex<Reply>,
}

/// The transaction reply of a ctl handle and how much of it was read. Reads ignore the file
/// offset (a write moved it past the command), so `exec 3<>ctl; echo cmd >&3; cat <&3` works.
#[derive(Default)]
struct Reply {
    text: String,
    read: usize,
}

pub struct IifsFs {
    ctl: Arc<Controller>,
    inodes: Arc<Inodes>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
    started: SystemTime,
    /// The kernel passes O_TRUNC to open (FUSE_ATOMIC_O_TRUNC): a size-0 setattr is then a
    /// real truncate, not the side effect of an O_TRUNC open.
    atomic_o_trunc: bool,
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

impl IifsFs {
    pub fn new(ctl: Arc<Controller>) -> IifsFs {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        IifsFs {
            ctl,
            inodes: Arc::new(Inodes::default()),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid,
            gid,
            started: SystemTime::now(),
            atomic_o_trunc: false,
        }
    }

    fn set(&self, name: &str) -> Option<Arc<Set>> {
        self.ctl.engine.set(name).ok()
    }

    /// Resolve an inode, checking that a set's node still belongs to a live set.
    fn node(&self, ino: INodeNo) -> Option<Node> {
        let node = self.inodes.node(ino.0)?;
        if let Node::Set(name, file) = &node {
            let unrestored_file = matches!(file, SetFile::Dir | SetFile::Ctl | SetFile::Status)
                && self.ctl.unrestored_set(name).is_some();
            if self.set(name).is_none() && !unrestored_file {
                return None;
            }
        }
        Some(node)
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (mut uid, mut gid) = (self.uid, self.gid);
        let (kind, perm, size) = match node {
            Node::Root | Node::Sets | Node::Set(_, SetFile::Dir) => (FileType::Directory, 0o755, 0),
            // Only the daemon's user (root) gives commands; reading the reply needs no more.
            Node::Ctl | Node::Set(_, SetFile::Ctl) => (FileType::RegularFile, 0o200, CTL_SIZE),
            // The size of the text an open would give now, so `cmp` and tools that trust
            // st_size see the content; it may change by the next open, as the state does.
            Node::Status | Node::Version | Node::Volumes | Node::Set(_, SetFile::Status) => {
                let size = self.text_for(node).map_or(0, |t| t.len() as u64);
                (FileType::RegularFile, 0o444, size)
            }
            Node::Set(name, file) => {
                let set = self.set(name);
                let size = match (file, &set) {
                    (SetFile::Bitmap, Some(s)) => s.tracking.vol.len(),
                    (_, Some(s)) => s.size,
                    _ => 0,
                };
                let backing = match (file, &set) {
                    (SetFile::Master, Some(s)) => Some(&s.paths.master),
                    (SetFile::Shadow, Some(s)) => Some(&s.paths.shadow),
                    _ => None,
                };
                // A volume is as open to a user through the mount as it is directly: the mode
                // and owner of the backing file (or device node). One that cannot be looked
                // at any more is the daemon's alone.
                let perm = match backing.map(std::fs::metadata) {
                    Some(Ok(meta)) => {
                        use std::os::unix::fs::MetadataExt;
                        (uid, gid) = (meta.uid(), meta.gid());
                        (meta.mode() & 0o777) as u16
                    }
                    Some(Err(_)) => 0o600,
                    None => 0o400,
                };
                (FileType::RegularFile, perm, size)
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        self.handles.read().ok()?.get(&fh.0).cloned()
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut hs) = self.handles.write() {
            hs.insert(fh, Arc::new(h));
        }
        FileHandle(fh)
    }

    fn text_for(&self, node: &Node) -> Option<String> {
        Some(match node {
            Node::Status => {
                let live: Vec<_> = self.ctl.engine.sets().iter().map(|s| s.status()).collect();
                let mut text = status::global_status(&live);
                for (rec, _) in self.ctl.unrestored() {
                    text.push_str(&status::unrestored_line(&rec));
                }
                text
            }
            Node::Version => format!("iifs {}\n", env!("CARGO_PKG_VERSION")),
            Node::Volumes => status::volumes(&self.ctl.engine.volumes()),
            Node::Set(name, SetFile::Status) => match self.set(name) {
                Some(set) => status::set_status(&set.status()),
                None => {
                    let (rec, reason) = self.ctl.unrestored_set(name)?;
                    status::unrestored_status(&rec, &reason)
                }
            },
            _ => return None,
        })
    }

    fn children(&self, node: &Node) -> Vec<(u64, FileType, String)> {
        let file = FileType::RegularFile;
        let dir = FileType::Directory;
        match node {
            Node::Root => vec![
                (CTL, file, "ctl".into()),
                (STATUS, file, "status".into()),
                (VERSION, file, "version".into()),
                (VOLUMES, file, "volumes".into()),
                (SETS, dir, "sets".into()),
            ],
            Node::Sets => {
                let mut names: Vec<String> = self
                    .ctl
                    .engine
                    .sets()
                    .iter()
                    .map(|s| s.name.clone())
                    .collect();
                names.extend(self.ctl.unrestored().into_iter().map(|(r, _)| r.name));
                names
                    .into_iter()
                    .map(|n| (self.inodes.ino(&n, SetFile::Dir), dir, n))
                    .collect()
            }
            // A set that could not be restored has only its status and its ctl (to disable it).
            Node::Set(name, SetFile::Dir) => {
                let live = self.set(name).is_some();
                SET_FILES
                    .iter()
                    .filter(|(_, f)| live || matches!(f, SetFile::Ctl | SetFile::Status))
                    .map(|(n, f)| (self.inodes.ino(name, *f), file, n.to_string()))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// Run a ctl command; on success, what the reply says besides `ok`. A `wait` gives up
    /// when `stop` says so.
    fn run_ctl(
        ctl: &Controller,
        scope: &Option<SetScope>,
        data: &[u8],
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<String>, Error> {
        let Some(scope) = scope else {
            return ctl.global(data);
        };
        ctl.set_command(&scope.name, data, scope.set.as_ref(), stop)
            .map(|()| None)
    }

    /// The attributes of an open ctl file whose set was removed since (its inode no longer
    /// resolves): the process that disabled the set through it still reads the reply.
    fn orphan_ctl_attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let hs = self.handles.read().ok()?;
        let open = hs
            .values()
            .any(|h| matches!(h.as_ref(), Handle::Ctl(c) if c.ino == ino.0));
        open.then(|| self.attr(ino.0, &Node::Ctl))
    }
}

/// Whether the process `pid` (the thread that made a FUSE request) was interrupted: it has a
/// signal pending that it does not block (SIGKILL cannot be blocked), or it is gone.
///
/// Why not FUSE_INTERRUPT: fuser answers the kernel's INTERRUPT requests itself with ENOSYS
/// (it does not hand them to the file system), after which the kernel sends no more of them;
/// a request then waits for its reply whatever the signal. So a long request (`wait`) looks
/// at its caller itself: a signal that would interrupt the syscall stays pending while the
/// caller waits for the reply, and shows in /proc/PID/status.
///
/// "Pending and not blocked" is the kernel's own rule for interrupting a request (what it would
/// send FUSE_INTERRUPT for); signals a process ignores are never pending. A caller the daemon
/// cannot see (pid 0: another pid namespace) is never taken as interrupted.
fn caller_interrupted(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let mask = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let zombie = text
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|st| matches!(st.trim_start().chars().next(), Some('Z' | 'X')));
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    let kill = 1u64 << (libc::SIGKILL - 1);
    zombie || pending & kill != 0 || pending & !mask("SigBlk:") != 0
}

/// A `master` or `shadow` file whose set was disabled after it was opened (the open raced the
/// disable): its I/O fails rather than reach a volume that no set protects any more.
fn served_no_more(h: &Handle) -> bool {
    match h {
        Handle::Master(d) | Handle::Shadow(d) if d.is_detached() => {
            log::warn!("I/O on a file of set {}, which was disabled", d.name);
            true
        }
        _ => false,
    }
}

impl CtlFile {
    /// Keep the reply to a command, for a read on this open file.
    fn record(&self, result: &Result<Option<String>, Error>) {
        if let Ok(mut r) = self.reply.lock() {
            *r = Reply {
                text: reply_text(result),
                read: 0,
            };
        }
    }
}

/// A status-like file, whose content is made at open.
fn text_node(node: &Node) -> bool {
    matches!(
        node,
        Node::Status | Node::Version | Node::Volumes | Node::Set(_, SetFile::Status)
    )
}

/// `ok` alone on its first line, so scripts that read one line and compare it still work;
/// what the command did besides (a bitmap file it made) follows on the next line.
fn reply_text(result: &Result<Option<String>, Error>) -> String {
    match result {
        Ok(None) => "ok\n".into(),
        Ok(Some(note)) => format!("ok\n{note}\n"),
        Err(e) => format!("error: {}\n", e.message),
    }
}

fn slice_at(data: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(size as usize).min(data.len());
    &data[start..end]
}

impl Filesystem for IifsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // fuser asks for few capabilities: request what the data path needs, one at a time so
        // a kernel lacking one still mounts.
        for cap in [
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ] {
            match config.add_capabilities(cap) {
                Ok(()) if cap == InitFlags::FUSE_ATOMIC_O_TRUNC => self.atomic_o_trunc = true,
                Ok(()) => {}
                Err(_) => log::debug!("kernel lacks FUSE capability {cap:?}"),
            }
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(node) = self.node(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let name = name.to_string_lossy();
        let found = self
            .children(&node)
            .into_iter()
            .find(|(_, _, n)| *n == name);
        // A set's name may be disabled and enabled anew at any moment, as another set with new
        // inode numbers: the kernel must not keep the name's old inode, or `sets/NAME/master`
        // right after a re-enable would fail with ENOENT until the entry expires.
        let ttl = if matches!(node, Node::Sets) {
            Duration::ZERO
        } else {
            TTL
        };
        match found {
            Some((ino, _, _)) => match self.node(INodeNo(ino)) {
                // Every lookup of a ctl file gets an inode of its own (`Inodes::ctl_instance`),
                // not cached, so the next path walk looks it up again.
                Some(child @ (Node::Ctl | Node::Set(_, SetFile::Ctl))) => {
                    let ino = self.inodes.ctl_instance(ino);
                    reply.entry(&Duration::ZERO, &self.attr(ino, &child), Generation(0))
                }
                Some(child) => {
                    let ttl = if text_node(&child) {
                        Duration::ZERO
                    } else {
                        ttl
                    };
                    reply.entry(&ttl, &self.attr(ino, &child), Generation(0))
                }
                None => reply.error(Errno::ENOENT),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            // A status file's size follows its content: never cached.
            Some(node) if text_node(&node) => reply.attr(&Duration::ZERO, &self.attr(ino.0, &node)),
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, &node)),
            // fstat of an open file comes without its handle: look for one among the open ctls.
            None => match self.orphan_ctl_attr(ino) {
                Some(attr) => reply.attr(&Duration::ZERO, &attr),
                None => reply.error(Errno::ENOENT),
            },
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
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(node) = self.node(ino) else {
            // `echo disable > ctl` again on a file whose set is gone: nothing to change.
            return match self.orphan_ctl_attr(ino) {
                Some(attr) => reply.attr(&Duration::ZERO, &attr),
                None => reply.error(Errno::ENOENT),
            };
        };
        let attr = self.attr(ino.0, &node);
        // Volumes behave like block devices: O_TRUNC is ignored, a real resize refused.
        if let (Some(size), Node::Set(_, SetFile::Master | SetFile::Shadow | SetFile::Bitmap)) =
            (size, &node)
        {
            let o_trunc_side_effect = size == 0 && !self.atomic_o_trunc;
            if size != attr.size && !o_trunc_side_effect {
                return reply.error(Errno::EINVAL);
            }
        }
        reply.attr(&TTL, &attr)
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let writing = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let direct = FopenFlags::FOPEN_DIRECT_IO;
        let handle = match &node {
            Node::Set(name, file @ (SetFile::Master | SetFile::Shadow | SetFile::Bitmap)) => {
                let Some(set) = self.set(name) else {
                    return reply.error(Errno::ENOENT);
                };
                match file {
                    SetFile::Master => Handle::Master(DataFile::new(set, Role::Master)),
                    SetFile::Shadow => Handle::Shadow(DataFile::new(set, Role::Shadow)),
                    _ if writing => return reply.error(Errno::EACCES),
                    _ => Handle::Bitmap(set),
                }
            }
            Node::Ctl => Handle::Ctl(CtlFile {
                ino: ino.0,
                scope: None,
                reply: Mutex::default(),
            }),
            Node::Set(name, SetFile::Ctl) => Handle::Ctl(CtlFile {
                ino: ino.0,
                scope: Some(SetScope {
                    name: name.clone(),
                    set: self.set(name).map(|s| Arc::downgrade(&s)),
                }),
                reply: Mutex::default(),
            }),
            Node::Root | Node::Sets | Node::Set(_, SetFile::Dir) => {
                return reply.error(Errno::EISDIR)
            }
            other => {
                if writing {
                    return reply.error(Errno::EACCES);
                }
                match self.text_for(other) {
                    Some(t) => Handle::Text(t.into_bytes()),
                    None => return reply.error(Errno::ENOENT),
                }
            }
        };
        // ctl files take parallel writes too: a `wait` pending on an open ctl file must not
        // hold back a command written through the same file (a descriptor shared by several
        // processes); opens by name have an inode each already (`Inodes::ctl_instance`).
        let fopen = match handle {
            Handle::Master(_) | Handle::Shadow(_) | Handle::Ctl(_) => {
                direct | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
            }
            _ => direct,
        };
        reply.opened(self.add_handle(handle), fopen);
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
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        if served_no_more(&h) {
            return reply.error(Errno::EIO);
        }
        let bitmap_read = |s: &Set, b: &mut [u8], o: u64| {
            s.tracking
                .vol
                .read_at(b, o)
                .map_err(|e| Error::io(format!("read of bitmap {}", s.paths.bitmap), &e))
        };
        let (len, read): (u64, &VolumeRead<'_>) = match h.as_ref() {
            Handle::Master(s) => (s.size, &|b, o| s.master.read(b, o)),
            Handle::Shadow(s) => (s.size, &|b, o| s.read_shadow(b, o)),
            Handle::Bitmap(s) => (s.tracking.vol.len(), &|b, o| bitmap_read(s, b, o)),
            Handle::Ctl(c) => {
                let Ok(mut r) = c.reply.lock() else {
                    return reply.error(Errno::EIO);
                };
                let start = r.read;
                let chunk = slice_at(r.text.as_bytes(), start as u64, size).to_vec();
                r.read += chunk.len();
                return reply.data(&chunk);
            }
            Handle::Text(t) => return reply.data(slice_at(t, offset, size)),
        };
        let n = len.saturating_sub(offset).min(size as u64) as usize;
        // One buffer per FUSE thread: a fresh 1 MiB allocation per read costs page faults.
        // Volume reads fill every byte they are given (zeros past the end), so nothing stale
        // from an earlier read can leak.
        READ_BUFFER.with_borrow_mut(|buf| {
            if buf.len() < n {
                buf.resize(n, 0);
            }
            match read(&mut buf[..n], offset) {
                Ok(()) => reply.data(&buf[..n]),
                Err(e) => {
                    log::warn!("read failed: {}", e.message);
                    reply.error(errno(&e))
                }
            }
        })
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        if served_no_more(&h) {
            return reply.error(Errno::EIO);
        }
        let result = match h.as_ref() {
            Handle::Master(s) => s.master.write(data, offset),
            Handle::Shadow(s) => s.write_shadow(data, offset),
            Handle::Bitmap(_) | Handle::Text(_) => return reply.error(Errno::EBADF),
            Handle::Ctl(c) => {
                use crate::control::SetCommand;
                // One command is one write within the file: a longer write, or a piece of
                // one that the kernel split, is refused whole (see CTL_WINDOW).
                if data.len() as u64 > CTL_SIZE || offset >= CTL_WINDOW {
                    let e = crate::engine::error::invalid(format!(
                        "a command is one write(2) of at most {CTL_SIZE} bytes, at the start of \
                         the ctl file; this write ({} bytes at offset {offset}) is not one: \
                         nothing was done (reopen the file for the next command)",
                        data.len()
                    ));
                    log::warn!("refused: {}", e.message);
                    c.record(&Err(e.clone()));
                    return reply.error(errno(&e));
                }
                let scope = &c.scope;
                let set_cmd = scope
                    .as_ref()
                    .and_then(|_| crate::control::parse_set(data).ok());
                // `wait` may take long, and `disable`, `update` and `copy` wait for the
                // releases of files closed just before, which a FUSE thread must be free to
                // deliver.
                let blocking = matches!(
                    set_cmd,
                    Some(
                        SetCommand::Wait
                            | SetCommand::Disable
                            | SetCommand::Update { .. }
                            | SetCommand::Copy { .. }
                    )
                );
                let waiting = matches!(set_cmd, Some(SetCommand::Wait));
                let disabling = matches!(set_cmd, Some(SetCommand::Disable));
                let ctl = Arc::clone(&self.ctl);
                let inodes = Arc::clone(&self.inodes);
                let scope = scope.clone();
                let len = data.len() as u32;
                let data = data.to_vec();
                let handle = Arc::clone(&h);
                let disabled_name = scope.as_ref().map(|s| s.name.clone());
                // `interrupted`: a `wait` gave up because its writer got a signal.
                let finish =
                    move |result: Result<Option<String>, Error>, reply: ReplyWrite, interrupted| {
                        let result = match result {
                            Ok(_) if interrupted => {
                                log::info!("wait: the writer was interrupted; the copy goes on");
                                Err(crate::engine::Error::new(
                                    crate::engine::Kind::Invalid,
                                    "the wait was interrupted by a signal; the copy goes on",
                                ))
                            }
                            r => r,
                        };
                        if let (true, Ok(_), Some(name)) = (disabling, &result, &disabled_name) {
                            inodes.forget_set(name);
                        }
                        if let Handle::Ctl(c) = handle.as_ref() {
                            c.record(&result);
                        }
                        match result {
                            Ok(_) => reply.written(len),
                            Err(_) if interrupted => reply.error(Errno::EINTR),
                            Err(e) => {
                                log::warn!("refused: {}", e.message);
                                reply.error(errno(&e))
                            }
                        }
                    };
                let pid = req.pid();
                if blocking {
                    // Never hold a FUSE thread for these.
                    let spawned =
                        std::thread::Builder::new()
                            .name("iifs-ctl".into())
                            .spawn(move || {
                                // A `wait` whose writer got a signal (or died) ends with EINTR;
                                // the copy goes on.
                                let interrupted = std::cell::Cell::new(false);
                                let stop = || {
                                    let now = waiting && caller_interrupted(pid);
                                    interrupted.set(now);
                                    now
                                };
                                let result = IifsFs::run_ctl(&ctl, &scope, &data, &stop);
                                finish(result, reply, interrupted.get());
                            });
                    if let Err(e) = spawned {
                        log::error!("cannot start a thread for a ctl command: {e}");
                    }
                    return;
                }
                let result = IifsFs::run_ctl(&ctl, &scope, &data, &|| false);
                return finish(result, reply, false);
            }
        };
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
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
        if let Ok(mut hs) = self.handles.write() {
            hs.remove(&fh.0);
        }
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.handle(fh).as_deref() {
            Some(h) if served_no_more(h) => reply.error(Errno::EIO),
            Some(Handle::Master(s) | Handle::Shadow(s)) => match s.sync_all() {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            },
            Some(_) => reply.ok(),
            None => reply.error(Errno::EBADF),
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
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let parent = match &node {
            Node::Set(..) => SETS,
            _ => ROOT,
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (parent, FileType::Directory, "..".to_string()),
        ];
        entries.extend(self.children(&node));
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok()
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
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        if served_no_more(&h) {
            return reply.error(Errno::EIO);
        }
        let set = match h.as_ref() {
            Handle::Master(s) | Handle::Shadow(s) => Arc::clone(&s.0),
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        // What a volume supports, as a block device does: plain allocation (the volume is
        // already as large as it will ever be), punching a hole (a discard) and zeroing a
        // range. Any other mode (collapse, insert, unshare, write-zeroes...) is refused rather
        // than answered with a success that did nothing.
        const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let keep_size = mode & KEEP_SIZE != 0;
        let discard = match mode {
            0 | KEEP_SIZE => false,
            PUNCH => true,
            m if m & !KEEP_SIZE == ZERO => true,
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        // A range past the end would grow an ordinary file: a volume cannot grow (KEEP_SIZE
        // asks for no growth, so the range is cut at the end).
        if !keep_size && offset.saturating_add(length) > set.size {
            return reply.error(Errno::ENOSPC);
        }
        if !discard {
            // Reserve the backing file's blocks, so that the writes the caller then counts on
            // do not fail for lack of space. A block device has all of its blocks already; a
            // backing file system without fallocate cannot reserve them either way.
            let end = offset.saturating_add(length).min(set.size);
            let fd = match h.as_ref() {
                Handle::Master(s) => s.master.vol.raw_fd(),
                _ => set.shadow.raw_fd(),
            };
            let (Some(fd), true) = (fd, end > offset) else {
                return reply.ok();
            };
            // SAFETY: fallocate on an open descriptor with plain integer arguments.
            let rc = unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    (end - offset) as libc::off_t,
                )
            };
            let err = std::io::Error::last_os_error().raw_os_error();
            return match (rc, err) {
                (0, _) | (_, Some(libc::EOPNOTSUPP | libc::ENODEV)) => reply.ok(),
                (_, e) => reply.error(Errno::from_i32(e.unwrap_or(libc::EIO))),
            };
        }
        // A discard is a write of zeros as far as the point in time is concerned; the backing
        // file punches the hole (or writes zeros where it cannot).
        let end = offset.saturating_add(length).min(set.size);
        if end <= offset {
            return reply.ok();
        }
        let r = match h.as_ref() {
            Handle::Master(s) => s.master.discard(offset, end - offset),
            _ => set.discard_shadow(offset, end - offset),
        };
        if let Err(e) = r {
            return reply.error(errno(&e));
        }
        reply.ok()
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Not a terminal, not a block device: tools probing with ioctls get the usual answer.
        reply.error(Errno::from_i32(libc::ENOTTY))
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::from_i32(libc::ENODATA))
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    /// The mount has `default_permissions`, so the kernel checks access itself and does not
    /// ask; this answers the same way should it ask anyway.
    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let attr = self.attr(ino.0, &node);
        let want = mask.bits() as u32 & 0o7;
        let perm = u32::from(attr.perm);
        let granted = if req.uid() == 0 {
            // root: anything but executing a file no one may execute.
            if attr.kind == FileType::Directory || perm & 0o111 != 0 {
                0o7
            } else {
                0o6
            }
        } else if req.uid() == attr.uid {
            (perm >> 6) & 0o7
        } else if req.gid() == attr.gid {
            (perm >> 3) & 0o7
        } else {
            perm & 0o7
        };
        if want & !granted == 0 {
            reply.ok()
        } else {
            reply.error(Errno::EACCES)
        }
    }
}
