//! Open file handles: what each kind of node opens as, and the I/O on an open data file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use fuser::{Errno, FileHandle, FopenFlags, ReplyData, ReplyEmpty, ReplyWrite};

use super::ctl::CtlFile;
use super::errno;
use super::inode::Node;
use super::tree::{kind, NodeKind, Tree};
use crate::control::events::EventStream;
use crate::control::{DataFile, Role, Scope};

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What an open file handle refers to, fixed at open.
pub enum Handle {
    /// A set's `master`, `shadow` or `bitmap`.
    Data(DataFile),
    /// A ctl file, with the reply to the last command.
    Ctl(Arc<CtlFile>),
    /// A status-like file: content generated at open.
    Text(Vec<u8>),
    /// The change stream.
    Events(Arc<EventStream>),
}

/// The open handles by number.
#[derive(Default)]
pub struct Handles {
    open: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
}

impl Handles {
    pub fn get(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        self.open.read().ok()?.get(&fh.0).cloned()
    }

    pub fn add(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut hs) = self.open.write() {
            hs.insert(fh, Arc::new(h));
        }
        FileHandle(fh)
    }

    /// Forget an open handle; returns it (the caller drops it, once it has looked at it).
    pub fn remove(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        self.open.write().ok()?.remove(&fh.0)
    }

    /// Whether a ctl file of inode `ino` is open (its set may be gone since).
    pub fn ctl_open(&self, ino: u64) -> bool {
        self.open.read().is_ok_and(|hs| {
            hs.values()
                .any(|h| matches!(h.as_ref(), Handle::Ctl(c) if c.ino == ino))
        })
    }
}

/// Open the node `node` (inode `ino`), for writing or not: the handle and how the kernel is to
/// treat the open file.
pub fn open(
    tree: &Tree,
    ino: u64,
    node: &Node,
    writing: bool,
) -> Result<(Handle, FopenFlags), Errno> {
    let handle = match kind(node) {
        NodeKind::Dir => return Err(Errno::EISDIR),
        NodeKind::Data(name, role) => {
            let file = tree.ctl.open_file(name, role).map_err(|_| Errno::ENOENT)?;
            if writing && role == Role::Bitmap {
                return Err(Errno::EACCES);
            }
            Handle::Data(file)
        }
        NodeKind::Ctl => {
            let scope = match node {
                Node::Set(name, _) => tree.ctl.set_scope(name),
                Node::Overflow(name, _) => Scope::Overflow(name.clone()),
                Node::Group(name, _) => Scope::Group(name.clone()),
                _ => Scope::Global,
            };
            Handle::Ctl(Arc::new(CtlFile::new(ino, scope)))
        }
        NodeKind::Events => {
            if writing {
                return Err(Errno::EACCES);
            }
            Handle::Events(Arc::new(tree.ctl.event_stream()))
        }
        NodeKind::Text(text) => {
            if writing {
                return Err(Errno::EACCES);
            }
            match tree.ctl.text(text) {
                Some(t) => Handle::Text(t.into_bytes()),
                None => return Err(Errno::ENOENT),
            }
        }
    };
    // Data files are opened with FOPEN_DIRECT_IO (no double caching, no stale pages after an
    // update); ctl and status files too, their content made at open. ctl files take parallel
    // writes too: a `wait` pending on an open ctl file must not hold back a command written
    // through the same file (a descriptor shared by several processes); opens by name have an
    // inode each already (`Inodes::ctl_instance`).
    let direct = FopenFlags::FOPEN_DIRECT_IO;
    let fopen = match &handle {
        Handle::Data(f) if f.role() == Role::Bitmap => direct,
        Handle::Data(_) | Handle::Ctl(_) => direct | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
        Handle::Text(_) => direct,
        // A stream: no offsets, no seeking.
        Handle::Events(_) => direct | FopenFlags::FOPEN_NONSEEKABLE,
    };
    Ok((handle, fopen))
}

/// Read the change stream: what is there now, or else the next change, waited for on a
/// thread of its own (a reader waiting for a change must not hold one of the FUSE threads);
/// EINTR once the reader gets a signal (or dies) while it waits.
pub fn read_events(stream: &Arc<EventStream>, pid: u32, size: u32, reply: ReplyData) {
    if let Some(bytes) = stream.try_read(size as usize) {
        return reply.data(&bytes);
    }
    let stream = Arc::clone(stream);
    let spawned = std::thread::Builder::new()
        .name("iifs-events".into())
        .spawn(move || loop {
            stream.wait(std::time::Duration::from_millis(200));
            if let Some(bytes) = stream.try_read(size as usize) {
                return reply.data(&bytes);
            }
            if super::ctl::caller_interrupted(pid) {
                return reply.error(Errno::EINTR);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start a thread for a reader of events: {e}");
    }
}

/// Read a data file.
pub fn read(file: &DataFile, offset: u64, size: u32, reply: ReplyData) {
    let n = file.len().saturating_sub(offset).min(size as u64) as usize;
    // One buffer per FUSE thread: a fresh 1 MiB allocation per read costs page faults.
    // Volume reads fill every byte they are given (zeros past the end), so nothing stale
    // from an earlier read can leak.
    READ_BUFFER.with_borrow_mut(|buf| {
        if buf.len() < n {
            buf.resize(n, 0);
        }
        match file.read(&mut buf[..n], offset) {
            Ok(()) => reply.data(&buf[..n]),
            Err(e) => {
                log::warn!("read failed: {e}");
                reply.error(errno::of(&e))
            }
        }
    })
}

/// Write a data file (the bitmap file is read-only).
pub fn write(file: &DataFile, offset: u64, data: &[u8], reply: ReplyWrite) {
    if file.role() == Role::Bitmap {
        return reply.error(Errno::EBADF);
    }
    match file.write(data, offset) {
        Ok(()) => reply.written(data.len() as u32),
        Err(e) => reply.error(errno::of(&e)),
    }
}

/// A write on a FUSE thread: here, unless a hold on its master began since the caller looked
/// (then on a thread of its own, as a held write: a FUSE thread must not wait for a release).
pub fn write_unless_held(handle: &Arc<Handle>, offset: u64, data: &[u8], reply: ReplyWrite) {
    let Handle::Data(file) = handle.as_ref() else {
        return reply.error(Errno::EBADF);
    };
    if file.role() == Role::Bitmap {
        return reply.error(Errno::EBADF);
    }
    match file.try_write(data, offset) {
        Some(Ok(())) => reply.written(data.len() as u32),
        Some(Err(e)) => reply.error(errno::of(&e)),
        None => write_on_own_thread(Arc::clone(handle), offset, data.to_vec(), reply),
    }
}

/// Writes waiting for the disk before they write (first writes, whose preservation is made
/// durable first), in flight now.
static WAITING_FOR_DISK: AtomicU64 = AtomicU64::new(0);

/// Counts a write as waiting for the disk while it lives.
struct Waiting;

impl Waiting {
    fn enter() -> Waiting {
        WAITING_FOR_DISK.fetch_add(1, Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING_FOR_DISK.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A write that will wait for the disk before it writes. Alone, it runs here (a thread of its
/// own would only add to its latency); when another already waits, on a thread of its own, so
/// that the FUSE threads go on taking requests and the writes waiting together share their
/// flushes (with two FUSE threads blocked in flushes, a queue of 16 would otherwise get two
/// writes a flush).
pub fn write_waiting_for_disk(handle: Arc<Handle>, offset: u64, data: &[u8], reply: ReplyWrite) {
    let alone = WAITING_FOR_DISK.load(Ordering::SeqCst) == 0;
    let waiting = Waiting::enter();
    if alone {
        write_unless_held(&handle, offset, data, reply);
        drop(waiting);
        return;
    }
    let data = data.to_vec();
    on_own_thread("iifs-write", move || {
        if let Handle::Data(f) = handle.as_ref() {
            write(f, offset, &data, reply);
        }
        drop(waiting);
    });
}

/// A write that waits for a hold's release does so on a thread of its own: every FUSE thread
/// stays free to take the next request (the `release` above all).
pub fn write_on_own_thread(handle: Arc<Handle>, offset: u64, data: Vec<u8>, reply: ReplyWrite) {
    on_own_thread("iifs-held", move || {
        if let Handle::Data(f) = handle.as_ref() {
            write(f, offset, &data, reply);
        }
    });
}

/// Run `job` on a thread of its own named `name`; should no thread start, here (a request
/// must be answered either way).
pub fn on_own_thread<F: FnOnce() + Send + 'static>(name: &str, job: F) {
    // Shared with the thread, so that the job is still here to run should the thread not
    // start.
    let job = Arc::new(Mutex::new(Some(job)));
    let theirs = Arc::clone(&job);
    let run = |job: &Mutex<Option<F>>| {
        let taken = match job.lock() {
            Ok(mut j) => j.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(job) = taken {
            job();
        }
    };
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || run(&theirs));
    if let Err(e) = spawned {
        log::warn!("cannot start a thread for a request ({e}): it runs on a FUSE thread");
        run(&job);
    }
}

/// fallocate on a data file: what a volume supports, as a block device does: plain allocation
/// (the volume is already as large as it will ever be), punching a hole (a discard) and
/// zeroing a range. Any other mode (collapse, insert, unshare, write-zeroes...) is refused
/// rather than answered with a success that did nothing.
pub fn fallocate(file: &DataFile, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
    if file.role() == Role::Bitmap {
        return reply.error(Errno::EOPNOTSUPP);
    }
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
    let size = file.len();
    if !keep_size && offset.saturating_add(length) > size {
        return reply.error(Errno::ENOSPC);
    }
    let end = offset.saturating_add(length).min(size);
    if !discard {
        return match file.allocate(offset, end) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno::of_io(&e)),
        };
    }
    // A discard is a write of zeros as far as the point in time is concerned.
    if end <= offset {
        return reply.ok();
    }
    match file.discard(offset, end - offset) {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno::of(&e)),
    }
}
