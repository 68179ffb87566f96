//! The control tree: what each kind of node is (file type, mode, how long the kernel may cache
//! it) in one table, its size and owner, and which nodes a directory holds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{FileAttr, FileType, INodeNo};

use super::inode::{
    GroupFile, Inodes, Node, OverflowFile, SetFile, CTL, EVENTS, GROUPS, GROUP_FILES, OVERFLOWS,
    OVERFLOW_FILES, ROOT, SETS, SET_FILES, STATUS, VERSION, VOLUMES,
};
use crate::control::{Controller, Role, Text};

pub const TTL: Duration = Duration::from_secs(1);

/// The size a ctl file shows, and the longest command: a command is one write(2) that lies
/// within it. Writes inside the shown size do not extend the file, which lets the kernel run
/// writes to one open ctl file in parallel (with FOPEN_PARALLEL_DIRECT_WRITES it still takes
/// the inode lock exclusively for a write past the end of the file, as after an O_TRUNC open,
/// hence also one inode per open: `Inodes::ctl_instance`).
pub const CTL_SIZE: u64 = 64 * 1024;

/// The kinds of node: everything else about a node follows from its kind (`NodeKind::shape`).
#[derive(Debug, Clone, Copy)]
pub enum NodeKind<'a> {
    Dir,
    /// The global ctl file or a set's.
    Ctl,
    /// A status-like file, whose content is made at open.
    Text(Text<'a>),
    /// A set's `master`, `shadow` or `bitmap`.
    Data(&'a str, Role),
    /// The change stream: read, it blocks until there is a change.
    Events,
}

/// What a kind of node is, besides its size and owner.
struct Shape {
    file_type: FileType,
    /// The mode; a data file shows its backing file's instead, where it has one.
    perm: u16,
    /// How long the kernel may keep the attributes (getattr).
    attr_ttl: Duration,
    /// How long the kernel may keep the name's entry (lookup).
    entry_ttl: Duration,
}

impl NodeKind<'_> {
    fn shape(&self) -> Shape {
        let (file_type, perm, attr_ttl, entry_ttl) = match self {
            NodeKind::Dir => (FileType::Directory, 0o755, TTL, TTL),
            // Only the daemon's user (root) gives commands; reading the reply needs no more.
            // Every lookup gets an inode of its own (`Inodes::ctl_instance`), not cached, so
            // the next path walk looks it up again.
            NodeKind::Ctl => (FileType::RegularFile, 0o200, TTL, Duration::ZERO),
            // A status file's size follows its content: never cached.
            NodeKind::Text(_) | NodeKind::Events => {
                (FileType::RegularFile, 0o444, Duration::ZERO, Duration::ZERO)
            }
            // The bitmap file (and a file of a set just removed) is the daemon's to read alone.
            NodeKind::Data(..) => (FileType::RegularFile, 0o400, TTL, TTL),
        };
        Shape {
            file_type,
            perm,
            attr_ttl,
            entry_ttl,
        }
    }
}

/// The kind of a node.
pub fn kind(node: &Node) -> NodeKind<'_> {
    match node {
        Node::Root
        | Node::Sets
        | Node::Set(_, SetFile::Dir)
        | Node::Overflows
        | Node::Overflow(_, OverflowFile::Dir)
        | Node::Groups
        | Node::Group(_, GroupFile::Dir) => NodeKind::Dir,
        Node::Ctl
        | Node::Set(_, SetFile::Ctl)
        | Node::Overflow(_, OverflowFile::Ctl)
        | Node::Group(_, GroupFile::Ctl) => NodeKind::Ctl,
        Node::Group(name, GroupFile::Status) => NodeKind::Text(Text::GroupStatus(name)),
        Node::Group(name, GroupFile::Members) => NodeKind::Text(Text::GroupMembers(name)),
        Node::Overflow(name, OverflowFile::Status) => NodeKind::Text(Text::OverflowStatus(name)),
        Node::Set(name, SetFile::Overflow) => NodeKind::Data(name, Role::Overflow),
        Node::Status => NodeKind::Text(Text::Status),
        Node::Version => NodeKind::Text(Text::Version),
        Node::Volumes => NodeKind::Text(Text::Volumes),
        Node::Events => NodeKind::Events,
        Node::Set(name, SetFile::Status) => NodeKind::Text(Text::SetStatus(name)),
        Node::Set(name, SetFile::Master) => NodeKind::Data(name, Role::Master),
        Node::Set(name, SetFile::Shadow) => NodeKind::Data(name, Role::Shadow),
        Node::Set(name, SetFile::Bitmap) => NodeKind::Data(name, Role::Bitmap),
    }
}

/// How long the kernel may keep a node's attributes.
pub fn attr_ttl(node: &Node) -> Duration {
    kind(node).shape().attr_ttl
}

/// The tree as the daemon's user sees it, over the controller's sets.
pub struct Tree {
    pub ctl: Arc<Controller>,
    pub inodes: Arc<Inodes>,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

impl Tree {
    pub fn new(ctl: Arc<Controller>) -> Tree {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Tree {
            ctl,
            inodes: Arc::new(Inodes::default()),
            uid,
            gid,
            started: SystemTime::now(),
        }
    }

    /// Whether set `name` has its data file `file` now: `overflow` only while an overflow
    /// volume is attached, `shadow` not while it is exported, `master` not in an imported set.
    fn data_file_here(&self, name: &str, file: SetFile) -> bool {
        let role = match file {
            SetFile::Master => Role::Master,
            SetFile::Shadow => Role::Shadow,
            SetFile::Overflow => Role::Overflow,
            SetFile::Dir | SetFile::Bitmap | SetFile::Ctl | SetFile::Status => return true,
        };
        !self.ctl.has_set(name) || self.ctl.file_info(name, role).is_some()
    }

    /// Resolve an inode, checking that a set's node still belongs to a live set.
    pub fn node(&self, ino: INodeNo) -> Option<Node> {
        let node = self.inodes.node(ino.0)?;
        if let Node::Set(name, file) = &node {
            let unrestored_file = matches!(file, SetFile::Dir | SetFile::Ctl | SetFile::Status)
                && self.ctl.unrestored_set(name).is_some();
            if !self.ctl.has_set(name) && !unrestored_file {
                return None;
            }
            if !self.data_file_here(name, *file) {
                return None;
            }
        }
        if let Node::Overflow(name, _) = &node {
            if !self.ctl.has_overflow(name) {
                return None;
            }
        }
        if let Node::Group(name, _) = &node {
            if !self.ctl.has_group(name) {
                return None;
            }
        }
        Some(node)
    }

    pub fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (mut uid, mut gid) = (self.uid, self.gid);
        let kind = kind(node);
        let shape = kind.shape();
        let mut perm = shape.perm;
        let size = match kind {
            NodeKind::Dir | NodeKind::Events => 0,
            NodeKind::Ctl => CTL_SIZE,
            // The size of the text an open would give now, so `cmp` and tools that trust
            // st_size see the content; it may change by the next open, as the state does.
            NodeKind::Text(text) => self.ctl.text(text).map_or(0, |t| t.len() as u64),
            NodeKind::Data(name, role) => {
                let info = self.ctl.file_info(name, role);
                // A volume is as open to a user through the mount as it is directly: the mode
                // and owner of the backing file (or device node). One that cannot be looked
                // at any more is the daemon's alone.
                match info
                    .as_ref()
                    .and_then(|i| i.backing.as_ref())
                    .map(std::fs::metadata)
                {
                    Some(Ok(meta)) => {
                        use std::os::unix::fs::MetadataExt;
                        (uid, gid) = (meta.uid(), meta.gid());
                        perm = (meta.mode() & 0o777) as u16;
                        // A dependent shadow also serves the master's bytes: the access both
                        // files grant, or, when their owners differ, the daemon's alone.
                        let also = info.as_ref().map_or(&[][..], |i| &i.serves_also[..]);
                        for m in also.iter().map(std::fs::metadata) {
                            match m {
                                Ok(m) if (m.uid(), m.gid()) == (uid, gid) => {
                                    perm &= (m.mode() & 0o777) as u16;
                                }
                                _ => {
                                    (uid, gid) = (self.uid, self.gid);
                                    perm = 0o600;
                                    break;
                                }
                            }
                        }
                    }
                    Some(Err(_)) => perm = 0o600,
                    None => {}
                }
                info.map_or(0, |i| i.len)
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
            kind: shape.file_type,
            perm,
            nlink: if shape.file_type == FileType::Directory {
                2
            } else {
                1
            },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The entries of a directory node (none for a file).
    pub fn children(&self, node: &Node) -> Vec<(u64, FileType, String)> {
        let nodes: Vec<(u64, Node, String)> = match node {
            Node::Root => [
                (CTL, Node::Ctl, "ctl"),
                (STATUS, Node::Status, "status"),
                (VERSION, Node::Version, "version"),
                (VOLUMES, Node::Volumes, "volumes"),
                (EVENTS, Node::Events, "events"),
                (SETS, Node::Sets, "sets"),
                (OVERFLOWS, Node::Overflows, "overflow"),
                (GROUPS, Node::Groups, "groups"),
            ]
            .into_iter()
            .map(|(ino, node, name)| (ino, node, name.to_string()))
            .collect(),
            Node::Sets => self
                .ctl
                .set_names()
                .into_iter()
                .map(|n| {
                    let dir = Node::Set(n.clone(), SetFile::Dir);
                    (self.inodes.ino(&n, SetFile::Dir), dir, n)
                })
                .collect(),
            Node::Overflows => self
                .ctl
                .overflow_names()
                .into_iter()
                .map(|n| {
                    let dir = Node::Overflow(n.clone(), OverflowFile::Dir);
                    (self.inodes.overflow_ino(&n, OverflowFile::Dir), dir, n)
                })
                .collect(),
            Node::Groups => self
                .ctl
                .group_names()
                .into_iter()
                .map(|n| {
                    let dir = Node::Group(n.clone(), GroupFile::Dir);
                    (self.inodes.group_ino(&n, GroupFile::Dir), dir, n)
                })
                .collect(),
            Node::Group(name, GroupFile::Dir) => GROUP_FILES
                .iter()
                .map(|(n, f)| {
                    (
                        self.inodes.group_ino(name, *f),
                        Node::Group(name.clone(), *f),
                        n.to_string(),
                    )
                })
                .collect(),
            Node::Overflow(name, OverflowFile::Dir) => OVERFLOW_FILES
                .iter()
                .map(|(n, f)| {
                    (
                        self.inodes.overflow_ino(name, *f),
                        Node::Overflow(name.clone(), *f),
                        n.to_string(),
                    )
                })
                .collect(),
            // A set that could not be restored has only its status and its ctl (to disable it);
            // `overflow` is there while an overflow volume is attached.
            Node::Set(name, SetFile::Dir) => {
                let live = self.ctl.has_set(name);
                SET_FILES
                    .iter()
                    .filter(|(_, f)| self.data_file_here(name, *f))
                    .filter(|(_, f)| live || matches!(f, SetFile::Ctl | SetFile::Status))
                    .map(|(n, f)| {
                        (
                            self.inodes.ino(name, *f),
                            Node::Set(name.clone(), *f),
                            n.to_string(),
                        )
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        nodes
            .into_iter()
            .map(|(ino, node, name)| (ino, kind(&node).shape().file_type, name))
            .collect()
    }

    /// The directory `..` of a directory node leads to.
    pub fn parent(node: &Node) -> u64 {
        match node {
            Node::Set(..) => SETS,
            Node::Overflow(..) => OVERFLOWS,
            Node::Group(..) => GROUPS,
            _ => ROOT,
        }
    }

    /// Look `name` up in the directory `parent`: the child's inode and node, and how long the
    /// kernel may keep the entry.
    pub fn lookup(&self, parent: &Node, name: &str) -> Option<(u64, Node, Duration)> {
        let (ino, _, _) = self
            .children(parent)
            .into_iter()
            .find(|(_, _, n)| n == name)?;
        let child = self.node(INodeNo(ino))?;
        let ttl = match kind(&child) {
            NodeKind::Ctl => return Some((self.inodes.ctl_instance(ino), child, Duration::ZERO)),
            // A set's name may be disabled and enabled anew at any moment, as another set with
            // new inode numbers: the kernel must not keep the name's old inode, or
            // `sets/NAME/master` right after a re-enable would fail with ENOENT until the entry
            // expires.
            // Groups are renamed and deleted too.
            _ if matches!(parent, Node::Sets | Node::Overflows | Node::Groups) => Duration::ZERO,
            k => k.shape().entry_ttl,
        };
        Some((ino, child, ttl))
    }
}

/// Whether a user (`uid`, `gid`) may access a node as `mask` (rwx bits) asks, by the node's
/// attributes.
pub fn permits(attr: &FileAttr, uid: u32, gid: u32, mask: u32) -> bool {
    let want = mask & 0o7;
    let perm = u32::from(attr.perm);
    let granted = if uid == 0 {
        // root: anything but executing a file no one may execute.
        if attr.kind == FileType::Directory || perm & 0o111 != 0 {
            0o7
        } else {
            0o6
        }
    } else if uid == attr.uid {
        (perm >> 6) & 0o7
    } else if gid == attr.gid {
        (perm >> 3) & 0o7
    } else {
        perm & 0o7
    };
    want & !granted == 0
}
