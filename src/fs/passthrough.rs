//! Reads served by the kernel (FUSE passthrough, the `passthrough` setting): which opens get
//! them, and the one backing per inode the kernel requires.
//!
//! A read-only open of a file whose reads are nothing but one backing file's bytes at the same
//! offsets, and stay so while it is open, is answered with FOPEN_PASSTHROUGH: the kernel then
//! reads that file itself, and the daemon sees none of those reads. Which files qualify is the
//! controller's to say (`DataFile::serve_by_kernel`: a settled independent set's `shadow`, any
//! set's `bitmap`); the commands that would change such a shadow are refused meanwhile
//! (`Controller::bar_kernel_reads`).
//!
//! The kernel wants every open of an inode that has a passthrough open to be a passthrough open
//! with the same backing (any other open of it fails with EIO), so per inode this keeps the
//! backing registered with the kernel and counts the opens of both kinds:
//! - a read-only open while the daemon serves other opens of the file is served by the daemon
//!   too (a daemon-served file may also be mapped, which the kernel would not mix either);
//! - a read-only open while the kernel serves others is one more on the same backing;
//! - a write open while the kernel serves others is refused with ETXTBSY (after a moment's
//!   wait for the releases of files closed just before, which the kernel sends
//!   asynchronously).
//!
//! The backing is let go at the last release. Should the kernel not grant passthrough at init,
//! or registering a backing fail, the daemon serves the file: passthrough never fails an open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fuser::{BackingId, Errno, FopenFlags, ReplyOpen};

use super::handles::{self, Handle, Handles};
use super::inode::{Node, SetFile};
use super::tree::Tree;
use crate::control::Role;

/// Whether opens of a data file of this role are looked at here (the roles whose reads the
/// kernel may serve).
pub fn tracked(role: Role) -> bool {
    matches!(role, Role::Shadow | Role::Bitmap)
}

/// The opens of one inode.
#[derive(Default)]
struct Opens {
    /// Served by the daemon.
    daemon: usize,
    /// Served by the kernel, all through `backing`.
    kernel: usize,
    /// Registered with the kernel while `kernel` is not 0.
    backing: Option<BackingId>,
}

/// The `passthrough` setting, what the kernel granted, and the opens per inode.
#[derive(Default)]
pub struct KernelReads {
    wanted: AtomicBool,
    granted: AtomicBool,
    /// Given up after a failure that every later open would meet too (no CAP_SYS_ADMIN).
    given_up: AtomicBool,
    /// A failed registration was logged (once).
    failure_logged: AtomicBool,
    inodes: Mutex<HashMap<u64, Opens>>,
}

impl KernelReads {
    /// The `passthrough` setting.
    pub fn set_wanted(&self, on: bool) {
        self.wanted.store(on, Ordering::SeqCst);
    }

    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::SeqCst)
    }

    /// The kernel granted FUSE_PASSTHROUGH at init.
    pub fn set_granted(&self) {
        self.granted.store(true, Ordering::SeqCst);
    }

    fn enabled(&self) -> bool {
        self.wanted()
            && self.granted.load(Ordering::SeqCst)
            && !self.given_up.load(Ordering::SeqCst)
    }

    fn inodes(&self) -> MutexGuard<'_, HashMap<u64, Opens>> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kernel_opens(&self, ino: u64) -> usize {
        self.inodes().get(&ino).map_or(0, |o| o.kernel)
    }

    /// A backing could not be registered (`e`): logged once; given up for good when no later
    /// open could do better.
    fn registration_failed(&self, e: &std::io::Error) {
        let hopeless = matches!(
            e.raw_os_error(),
            Some(libc::EPERM | libc::ENOTTY | libc::EOPNOTSUPP | libc::ENOSYS)
        );
        if hopeless {
            self.given_up.store(true, Ordering::SeqCst);
        }
        if !self.failure_logged.swap(true, Ordering::SeqCst) {
            log::warn!(
                "passthrough: the kernel did not take a backing file ({e}): the daemon serves \
                 those reads{}",
                if hopeless {
                    ", and every read from now on (passthrough needs CAP_SYS_ADMIN)"
                } else {
                    ""
                }
            );
        }
    }

    /// An open data file of inode `ino` was released; `kernel`: the kernel served its reads.
    pub fn released(&self, ino: u64, kernel: bool) {
        let mut inodes = self.inodes();
        let Some(o) = inodes.get_mut(&ino) else {
            return;
        };
        if kernel {
            o.kernel = o.kernel.saturating_sub(1);
            if o.kernel == 0 {
                // Dropping it closes the backing in the kernel (which let go of the inode's
                // use of it when the last such file was closed, before sending its release).
                o.backing = None;
            }
        } else {
            o.daemon = o.daemon.saturating_sub(1);
        }
        if o.daemon == 0 && o.kernel == 0 {
            inodes.remove(&ino);
        }
    }
}

/// Open a `shadow` or `bitmap` file (inode `ino`, `node`): served by the kernel where it can
/// be, else by the daemon; a write open while the kernel serves reads of the file is refused
/// with ETXTBSY.
pub fn open_data(
    tree: &Arc<Tree>,
    handles: &Arc<Handles>,
    kernel: &Arc<KernelReads>,
    ino: u64,
    node: &Node,
    writing: bool,
    reply: ReplyOpen,
) {
    if writing && is_shadow(node) && kernel.kernel_opens(ino) > 0 {
        // Perhaps only files closed just before, whose releases are on their way: wait for
        // them on a thread of its own (a FUSE thread may be the one to deliver them).
        let (tree, handles, kernel, node) = (
            Arc::clone(tree),
            Arc::clone(handles),
            Arc::clone(kernel),
            node.clone(),
        );
        return handles::on_own_thread("iifs-open", move || {
            let deadline = Instant::now() + crate::engine::RELEASE_GRACE;
            while kernel.kernel_opens(ino) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            open_now(&tree, &handles, &kernel, ino, &node, writing, reply)
        });
    }
    open_now(tree, handles, kernel, ino, node, writing, reply)
}

fn open_now(
    tree: &Tree,
    handles: &Handles,
    kernel: &KernelReads,
    ino: u64,
    node: &Node,
    writing: bool,
    reply: ReplyOpen,
) {
    let mut inodes = kernel.inodes();
    let opens = inodes.entry(ino).or_default();
    if writing && is_shadow(node) && opens.kernel > 0 {
        let n = opens.kernel;
        drop(inodes);
        log::warn!(
            "a write open of {} is refused (ETXTBSY): the file is open for reads served by the \
             kernel ({n} open, passthrough), which must find it unchanged; close those opens \
             first, or mount iifs with -o passthrough=off",
            describe(node)
        );
        return reply.error(Errno::ETXTBSY);
    }
    let (mut handle, fopen) = match handles::open(tree, ino, node, writing) {
        Ok(h) => h,
        Err(e) => {
            if opens.daemon == 0 && opens.kernel == 0 {
                inodes.remove(&ino);
            }
            return reply.error(e);
        }
    };
    let joining = opens.kernel > 0;
    let may = !writing && opens.daemon == 0 && (joining || kernel.enabled());
    if let (true, Handle::Data(file)) = (may, &mut handle) {
        if let Some(vol) = file.serve_by_kernel(joining) {
            if opens.backing.is_none() {
                if let Some(fd) = vol.backing_fd() {
                    match reply.open_backing(fd) {
                        Ok(id) => opens.backing = Some(id),
                        Err(e) => kernel.registration_failed(&e),
                    }
                }
            }
            if opens.backing.is_none() {
                file.not_served_by_kernel();
            }
        }
    }
    let served_by_kernel = matches!(&handle, Handle::Data(f) if f.kernel_served());
    match (&opens.backing, served_by_kernel) {
        (Some(backing), true) => {
            opens.kernel += 1;
            // Without FOPEN_DIRECT_IO, which would override passthrough.
            reply.opened_passthrough(handles.add(handle), FopenFlags::empty(), backing)
        }
        _ => {
            opens.daemon += 1;
            reply.opened(handles.add(handle), fopen)
        }
    }
}

/// Whether `node` is a set's `shadow` (the `bitmap` file refuses every write open anyway).
fn is_shadow(node: &Node) -> bool {
    matches!(node, Node::Set(_, SetFile::Shadow))
}

/// `sets/NAME/FILE`, for the log.
fn describe(node: &Node) -> String {
    match node {
        Node::Set(name, file) => {
            let file = format!("{file:?}").to_lowercase();
            format!("sets/{name}/{file}")
        }
        other => format!("{other:?}"),
    }
}
