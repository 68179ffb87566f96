//! Inode numbers of the control tree. Fixed numbers for the top level; each set gets a slot of
//! numbers when it first appears, never reused while the daemon runs, so a stale inode of a
//! disabled set can never reach another set.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

pub const ROOT: u64 = 1;
pub const CTL: u64 = 2;
pub const STATUS: u64 = 3;
pub const VERSION: u64 = 4;
pub const VOLUMES: u64 = 5;
pub const SETS: u64 = 6;
pub const OVERFLOWS: u64 = 7;
pub const GROUPS: u64 = 8;
pub const EVENTS: u64 = 9;

const SET_BASE: u64 = 1000;
const SLOT: u64 = 8;

/// Inode numbers handed out to ctl files, one per lookup (see `Inodes::ctl_instance`).
const CTL_INSTANCE_BASE: u64 = 1 << 48;

/// The files of a set's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetFile {
    Dir,
    Master,
    Shadow,
    Bitmap,
    Ctl,
    Status,
    /// Present while an overflow volume is attached.
    Overflow,
}

pub const SET_FILES: &[(&str, SetFile)] = &[
    ("master", SetFile::Master),
    ("shadow", SetFile::Shadow),
    ("bitmap", SetFile::Bitmap),
    ("ctl", SetFile::Ctl),
    ("status", SetFile::Status),
    ("overflow", SetFile::Overflow),
];

/// The files of an overflow volume's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowFile {
    Dir,
    Ctl,
    Status,
}

pub const OVERFLOW_FILES: &[(&str, OverflowFile)] =
    &[("ctl", OverflowFile::Ctl), ("status", OverflowFile::Status)];

impl OverflowFile {
    fn index(self) -> u64 {
        match self {
            OverflowFile::Dir => 0,
            OverflowFile::Ctl => 1,
            OverflowFile::Status => 2,
        }
    }
    fn from_index(i: u64) -> Option<OverflowFile> {
        Some(match i {
            0 => OverflowFile::Dir,
            1 => OverflowFile::Ctl,
            2 => OverflowFile::Status,
            _ => return None,
        })
    }
}

/// The files of a group's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFile {
    Dir,
    Ctl,
    Status,
    Members,
}

pub const GROUP_FILES: &[(&str, GroupFile)] = &[
    ("ctl", GroupFile::Ctl),
    ("status", GroupFile::Status),
    ("members", GroupFile::Members),
];

impl GroupFile {
    fn index(self) -> u64 {
        match self {
            GroupFile::Dir => 0,
            GroupFile::Ctl => 1,
            GroupFile::Status => 2,
            GroupFile::Members => 3,
        }
    }
    fn from_index(i: u64) -> Option<GroupFile> {
        Some(match i {
            0 => GroupFile::Dir,
            1 => GroupFile::Ctl,
            2 => GroupFile::Status,
            3 => GroupFile::Members,
            _ => return None,
        })
    }
}

/// Whose slot of inode numbers: a set's or an overflow volume's (their names may be equal).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Owner {
    Set(String),
    Overflow(String),
    Group(String),
}

impl SetFile {
    fn index(self) -> u64 {
        match self {
            SetFile::Dir => 0,
            SetFile::Master => 1,
            SetFile::Shadow => 2,
            SetFile::Bitmap => 3,
            SetFile::Ctl => 4,
            SetFile::Status => 5,
            SetFile::Overflow => 6,
        }
    }
    fn from_index(i: u64) -> Option<SetFile> {
        Some(match i {
            0 => SetFile::Dir,
            1 => SetFile::Master,
            2 => SetFile::Shadow,
            3 => SetFile::Bitmap,
            4 => SetFile::Ctl,
            5 => SetFile::Status,
            6 => SetFile::Overflow,
            _ => return None,
        })
    }
}

/// What an inode number stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Root,
    Ctl,
    Status,
    Version,
    Volumes,
    /// The change stream.
    Events,
    Sets,
    Set(String, SetFile),
    /// The `overflow` directory.
    Overflows,
    Overflow(String, OverflowFile),
    /// The `groups` directory.
    Groups,
    Group(String, GroupFile),
}

#[derive(Default)]
struct Slots {
    by_name: BTreeMap<Owner, u64>,
    by_slot: HashMap<u64, Owner>,
    next: u64,
}

/// The ctl inodes handed out by lookups: their ctl file's fixed number and the kernel's
/// lookup count, until the kernel forgets them.
#[derive(Default)]
struct Instances {
    of: HashMap<u64, (u64, u64)>,
    next: u64,
}

#[derive(Default)]
pub struct Inodes {
    slots: RwLock<Slots>,
    ctl_instances: RwLock<Instances>,
}

impl Inodes {
    /// The slot of a set's name, allocating one the first time.
    pub fn ino(&self, set: &str, file: SetFile) -> u64 {
        self.slot(Owner::Set(set.to_string())) + file.index()
    }

    /// The inode of a file of overflow volume `name`.
    pub fn overflow_ino(&self, name: &str, file: OverflowFile) -> u64 {
        self.slot(Owner::Overflow(name.to_string())) + file.index()
    }

    /// The first inode number of `owner`'s slot, allocating one the first time.
    fn slot(&self, owner: Owner) -> u64 {
        if let Ok(s) = self.slots.read() {
            if let Some(slot) = s.by_name.get(&owner) {
                return SET_BASE + slot * SLOT;
            }
        }
        let mut s = match self.slots.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let slot = match s.by_name.get(&owner) {
            Some(slot) => *slot,
            None => {
                let slot = s.next;
                s.next += 1;
                s.by_name.insert(owner.clone(), slot);
                s.by_slot.insert(slot, owner);
                slot
            }
        };
        SET_BASE + slot * SLOT
    }

    /// The inode of a file of group `name`.
    pub fn group_ino(&self, name: &str, file: GroupFile) -> u64 {
        self.slot(Owner::Group(name.to_string())) + file.index()
    }

    /// Forget a removed set: its inode numbers stop resolving.
    pub fn forget_set(&self, set: &str) {
        self.forget_owner(Owner::Set(set.to_string()));
    }

    fn forget_owner(&self, owner: Owner) {
        if let Ok(mut s) = self.slots.write() {
            if let Some(slot) = s.by_name.remove(&owner) {
                s.by_slot.remove(&slot);
            }
        }
    }

    /// A new inode number for a lookup of the ctl file whose fixed number is `fixed`.
    ///
    /// Each lookup (each path walk, the entry not being cached) gets its own inode, so every
    /// open of a ctl file by name has its own inode in the kernel. The kernel locks an inode
    /// for a write, and for the truncate of an O_TRUNC open (`echo abort > ctl`) exclusively:
    /// with one inode per ctl file, a `wait` pending in one process's write would hold back
    /// every command another process writes to that file.
    pub fn ctl_instance(&self, fixed: u64) -> u64 {
        let mut i = match self.ctl_instances.write() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        let ino = CTL_INSTANCE_BASE + i.next;
        i.next += 1;
        i.of.insert(ino, (fixed, 1));
        ino
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino < CTL_INSTANCE_BASE {
            return;
        }
        let mut i = match self.ctl_instances.write() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        if let Some((_, count)) = i.of.get_mut(&ino) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                i.of.remove(&ino);
            }
        }
    }

    pub fn node(&self, ino: u64) -> Option<Node> {
        if ino >= CTL_INSTANCE_BASE {
            let fixed = self.ctl_instances.read().ok()?.of.get(&ino)?.0;
            return self.node(fixed);
        }
        Some(match ino {
            ROOT => Node::Root,
            CTL => Node::Ctl,
            STATUS => Node::Status,
            VERSION => Node::Version,
            VOLUMES => Node::Volumes,
            EVENTS => Node::Events,
            SETS => Node::Sets,
            OVERFLOWS => Node::Overflows,
            GROUPS => Node::Groups,
            n if n >= SET_BASE => {
                let slot = (n - SET_BASE) / SLOT;
                let index = (n - SET_BASE) % SLOT;
                let s = self.slots.read().ok()?;
                match s.by_slot.get(&slot)? {
                    Owner::Set(name) => Node::Set(name.clone(), SetFile::from_index(index)?),
                    Owner::Overflow(name) => {
                        Node::Overflow(name.clone(), OverflowFile::from_index(index)?)
                    }
                    Owner::Group(name) => Node::Group(name.clone(), GroupFile::from_index(index)?),
                }
            }
            _ => return None,
        })
    }
}
