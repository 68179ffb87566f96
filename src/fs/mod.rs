//! Presentation tier: the control tree as a FUSE file system (the only module that uses fuser).
//!
//! ```text
//! MOUNTPOINT/ctl status version volumes sets/NAME/{master,shadow,bitmap,ctl,status}
//! ```
//! It reaches the sets only through the controller (`crate::control`). Each request is
//! dispatched by the kind of its node or handle: `tree` (what each node is: mode, size,
//! children), `handles` (open files, data-file I/O), `ctl` (commands and their replies),
//! `errno` (errors to errnos), `passthrough` (the reads the kernel serves itself); `inode`
//! numbers the nodes.
//!
//! The mount always has `default_permissions`: the kernel checks the modes and owners shown
//! here, which matters once `allow_other` lets other users in. ctl files are 0200 and status
//! files 0444, owned by the daemon's user; `master` and `shadow` show the mode and owner of
//! their backing files, so no user reads or writes through the mount what they could not
//! read or write directly.

mod ctl;
mod errno;
mod handles;
mod inode;
pub mod passthrough;
mod tree;

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, WriteFlags,
};

use crate::control::Controller;
use handles::{Handle, Handles};
use inode::Node;
use passthrough::KernelReads;
use tree::{Tree, TTL};

pub struct IifsFs {
    tree: Arc<Tree>,
    handles: Arc<Handles>,
    /// Reads served by the kernel (see `passthrough`).
    kernel: Arc<KernelReads>,
    /// The kernel passes O_TRUNC to open (FUSE_ATOMIC_O_TRUNC): a size-0 setattr is then a
    /// real truncate, not the side effect of an O_TRUNC open.
    atomic_o_trunc: bool,
}

impl IifsFs {
    pub fn new(ctl: Arc<Controller>) -> IifsFs {
        IifsFs {
            tree: Arc::new(Tree::new(ctl)),
            handles: Arc::default(),
            kernel: Arc::default(),
            atomic_o_trunc: false,
        }
    }

    /// The `passthrough` setting: let the kernel serve the reads it can (see `passthrough`).
    pub fn set_passthrough(&mut self, on: bool) {
        self.kernel.set_wanted(on);
    }

    /// The attributes of an open ctl file whose set was removed since (its inode no longer
    /// resolves): the process that disabled the set through it still reads the reply.
    fn orphan_ctl_attr(&self, ino: INodeNo) -> Option<FileAttr> {
        self.handles
            .ctl_open(ino.0)
            .then(|| self.tree.attr(ino.0, &Node::Ctl))
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
        if self.kernel.wanted() {
            // Backing files one level down: the volumes are on ordinary file systems (never
            // on an iifs mount), and this mount may itself be under an overlay.
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if granted {
                self.kernel.set_granted();
                log::info!(
                    "passthrough: the kernel serves the reads of settled independent shadows and \
                     of bitmap files opened read-only"
                );
            } else {
                log::warn!(
                    "passthrough: the kernel does not offer FUSE passthrough (Linux 6.9 or later, \
                     CONFIG_FUSE_PASSTHROUGH): the daemon serves every read"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(node) = self.tree.node(parent) else {
            return reply.error(Errno::ENOENT);
        };
        match self.tree.lookup(&node, &name.to_string_lossy()) {
            Some((ino, child, ttl)) => {
                reply.entry(&ttl, &self.tree.attr(ino, &child), Generation(0))
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.tree.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.node(ino) {
            Some(node) => reply.attr(&tree::attr_ttl(&node), &self.tree.attr(ino.0, &node)),
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
        let Some(node) = self.tree.node(ino) else {
            // `echo disable > ctl` again on a file whose set is gone: nothing to change.
            return match self.orphan_ctl_attr(ino) {
                Some(attr) => reply.attr(&Duration::ZERO, &attr),
                None => reply.error(Errno::ENOENT),
            };
        };
        let attr = self.tree.attr(ino.0, &node);
        // Volumes behave like block devices: O_TRUNC is ignored, a real resize refused.
        if let (Some(size), tree::NodeKind::Data(..)) = (size, tree::kind(&node)) {
            let o_trunc_side_effect = size == 0 && !self.atomic_o_trunc;
            if size != attr.size && !o_trunc_side_effect {
                return reply.error(Errno::EINVAL);
            }
        }
        reply.attr(&TTL, &attr)
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(node) = self.tree.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let writing = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if let tree::NodeKind::Data(_, role) = tree::kind(&node) {
            if passthrough::tracked(role) {
                let (tree, handles, kernel) = (&self.tree, &self.handles, &self.kernel);
                return passthrough::open_data(tree, handles, kernel, ino.0, &node, writing, reply);
            }
        }
        match handles::open(&self.tree, ino.0, &node, writing) {
            Ok((handle, fopen)) => reply.opened(self.handles.add(handle), fopen),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.handles.get(fh).as_deref() {
            None => reply.error(Errno::EBADF),
            Some(Handle::Data(f)) if f.served_no_more() => reply.error(Errno::EIO),
            Some(Handle::Data(f)) => handles::read(f, offset, size, reply),
            Some(Handle::Ctl(c)) => c.read(size, reply),
            Some(Handle::Text(t)) => reply.data(slice_at(t, offset, size)),
            Some(Handle::Events(e)) => handles::read_events(e, req.pid(), size, reply),
        }
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
        let handle = self.handles.get(fh);
        match handle.as_deref() {
            None => reply.error(Errno::EBADF),
            Some(Handle::Data(f)) if f.served_no_more() => reply.error(Errno::EIO),
            // A held write is handed to a thread of its own by `write_unless_held` (the one
            // place that looks at the hold, as the write enters it), so that the FUSE threads
            // go on taking requests (the `release` above all).
            Some(Handle::Data(f)) if f.write_waits_for_disk(offset, data.len() as u64) => {
                if let Some(h) = handle.clone() {
                    handles::write_waiting_for_disk(h, offset, data, reply)
                }
            }
            Some(Handle::Data(_)) => {
                if let Some(h) = handle.as_ref() {
                    handles::write_unless_held(h, offset, data, reply)
                }
            }
            Some(Handle::Ctl(c)) => {
                let (ctl, inodes) = (&self.tree.ctl, &self.tree.inodes);
                ctl::write(ctl, inodes, c, req.pid(), offset, data, reply)
            }
            Some(Handle::Text(_) | Handle::Events(_)) => reply.error(Errno::EBADF),
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
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(h) = self.handles.remove(fh) {
            if let Handle::Data(f) = h.as_ref() {
                if passthrough::tracked(f.role()) {
                    self.kernel.released(ino.0, f.kernel_served());
                }
            }
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
        match self.handles.get(fh).as_deref() {
            None => reply.error(Errno::EBADF),
            Some(Handle::Data(f)) if f.served_no_more() => reply.error(Errno::EIO),
            Some(Handle::Data(f)) => match f.sync() {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno::of(&e)),
            },
            Some(_) => reply.ok(),
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
        let Some(node) = self.tree.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (Tree::parent(&node), FileType::Directory, "..".to_string()),
        ];
        entries.extend(self.tree.children(&node));
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
        let handle = self.handles.get(fh);
        match handle.as_deref() {
            None => reply.error(Errno::EBADF),
            Some(Handle::Data(f)) if f.served_no_more() => reply.error(Errno::EIO),
            // A discard of a held master waits for the release as a held write does: on a
            // thread of its own, not on a FUSE thread the `release` needs.
            Some(Handle::Data(f)) if f.held() => {
                if let Some(h) = handle.clone() {
                    handles::on_own_thread("iifs-held", move || {
                        if let Handle::Data(f) = h.as_ref() {
                            handles::fallocate(f, offset, length, mode, reply)
                        }
                    })
                }
            }
            Some(Handle::Data(f)) => handles::fallocate(f, offset, length, mode, reply),
            Some(_) => reply.error(Errno::EOPNOTSUPP),
        }
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
        let Some(node) = self.tree.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let attr = self.tree.attr(ino.0, &node);
        if tree::permits(&attr, req.uid(), req.gid(), mask.bits() as u32) {
            reply.ok()
        } else {
            reply.error(Errno::EACCES)
        }
    }
}
