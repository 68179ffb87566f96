//! What the presentation layer reads and writes: the data files of a set (`master`, `shadow`,
//! `bitmap`), the text of the status files and the names in the tree. The file system reaches
//! the engine's sets only through these.

use std::sync::Arc;

use crate::engine::error::{invalid, Error, Result, Role};
use crate::engine::Set;

use super::status;
use super::Controller;

/// An open `master`, `shadow` or `bitmap` file of a set. A `master` or `shadow` file is counted
/// on its set (per file) while it lives, so the set is not disabled, nor a copy started onto
/// the file, under a loop device or a process using it; the bitmap file is read-only and never
/// counted.
pub struct DataFile {
    set: Arc<Set>,
    role: Role,
}

/// What the tree shows of a data file without opening it.
pub struct FileInfo {
    pub len: u64,
    /// The file backing the volume (`master` and `shadow`): its mode and owner are the file's.
    pub backing: Option<String>,
    /// Another file whose bytes this one serves (the master, for a dependent shadow, whose
    /// untouched chunks read from it): nobody may read through the mount what they could not
    /// read from either file directly.
    pub serves_also: Option<String>,
}

/// The status-like files, whose content is made when they are opened.
#[derive(Debug, Clone, Copy)]
pub enum Text<'a> {
    /// The global `status`.
    Status,
    Version,
    Volumes,
    /// `sets/NAME/status`.
    SetStatus(&'a str),
    /// `overflow/NAME/status`.
    OverflowStatus(&'a str),
    /// `groups/NAME/status`.
    GroupStatus(&'a str),
    /// `groups/NAME/members`: one set name a line.
    GroupMembers(&'a str),
}

impl Controller {
    /// Open a data file of the set `name`.
    pub fn open_file(&self, name: &str, role: Role) -> Result<DataFile> {
        let set = self.engine.set(name)?;
        set.check_here(role)?;
        if role == Role::Overflow && set.compact.as_ref().and_then(|c| c.overflow()).is_none() {
            return Err(crate::engine::error::not_found(format!(
                "set {name} has no overflow volume attached"
            )));
        }
        if counted(role) {
            set.file_opened(role);
        }
        Ok(DataFile { set, role })
    }

    /// The size and backing file of a data file of the set `name`, while the set lives.
    /// None for a file the set does not have now (see `Set::check_served`).
    pub fn file_info(&self, name: &str, role: Role) -> Option<FileInfo> {
        let set = self.engine.set(name).ok()?;
        if set.is_exported() && role == Role::Shadow || set.is_imported() && role == Role::Master {
            return None;
        }
        Some(match role {
            Role::Bitmap => FileInfo {
                len: set.tracking.vol.len(),
                backing: None,
                serves_also: None,
            },
            Role::Overflow => FileInfo {
                len: set.compact.as_ref()?.overflow()?.vol.len(),
                backing: None,
                serves_also: None,
            },
            Role::Master => FileInfo {
                len: set.size,
                backing: Some(set.paths.master.clone()),
                serves_also: None,
            },
            Role::Shadow => FileInfo {
                len: set.size,
                backing: Some(set.paths.shadow.clone()),
                serves_also: set.is_dependent().then(|| set.paths.master.clone()),
            },
        })
    }

    /// Whether a set named `name` is enabled (not one that could not be restored).
    pub fn has_set(&self, name: &str) -> bool {
        self.engine.set(name).is_ok()
    }

    /// Whether a group named `name` exists.
    pub fn has_group(&self, name: &str) -> bool {
        self.engine.group_members(name).is_ok()
    }

    pub fn group_names(&self) -> Vec<String> {
        self.engine.group_names()
    }

    /// Whether an overflow volume named `name` is known.
    pub fn has_overflow(&self, name: &str) -> bool {
        self.engine.overflow(name).is_ok()
    }

    /// The names of the overflow volumes.
    pub fn overflow_names(&self) -> Vec<String> {
        self.engine
            .overflows()
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }

    /// How many sets are enabled.
    pub fn set_count(&self) -> usize {
        self.engine.sets().len()
    }

    /// The names of the enabled sets, then of those that could not be restored at start.
    pub fn set_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.engine.sets().iter().map(|s| s.name.clone()).collect();
        names.extend(self.unrestored().into_iter().map(|(r, _)| r.name));
        names
    }

    /// The content of a status-like file now (`None`: no such set).
    pub fn text(&self, text: Text<'_>) -> Option<String> {
        Some(match text {
            Text::Status => {
                let live: Vec<_> = self.engine.sets().iter().map(|s| s.status()).collect();
                let mut text = status::global_status(&live);
                for (rec, _) in self.unrestored() {
                    text.push_str(&status::unrestored_line(&rec));
                }
                text
            }
            Text::Version => format!("iifs {}\n", env!("CARGO_PKG_VERSION")),
            Text::Volumes => self.volumes_text(),
            Text::GroupStatus(name) => {
                let members = self.engine.group_members(name).ok()?;
                status::group_status(&self.engine.group_status(name).ok()?, &members)
            }
            Text::GroupMembers(name) => self
                .engine
                .group_members(name)
                .ok()?
                .iter()
                .map(|m| format!("{m}\n"))
                .collect(),
            Text::OverflowStatus(name) => {
                status::overflow_status(&self.engine.overflow(name).ok()?.status())
            }
            Text::SetStatus(name) => match self.engine.set(name) {
                Ok(set) => status::set_status(&set.status(), self.engine.group_of(name).as_deref()),
                Err(_) => {
                    let (rec, reason) = self.unrestored_set(name)?;
                    status::unrestored_status(&rec, &reason, self.engine.group_of(name).as_deref())
                }
            },
        })
    }
}

impl DataFile {
    pub fn role(&self) -> Role {
        self.role
    }

    /// The volume's size.
    pub fn len(&self) -> u64 {
        match self.role {
            Role::Bitmap => self.set.tracking.vol.len(),
            Role::Overflow => self.overflow().map_or(0, |o| o.vol.len()),
            Role::Master | Role::Shadow => self.set.size,
        }
    }

    fn overflow(&self) -> Option<Arc<crate::engine::overflow::Overflow>> {
        self.set.compact.as_ref().and_then(|c| c.overflow())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A `master` or `shadow` file whose set was disabled after it was opened (the open raced
    /// the disable): its I/O fails rather than reach a volume that no set protects any more.
    pub fn served_no_more(&self) -> bool {
        if counted(self.role) && self.set.is_detached() {
            log::warn!("I/O on a file of set {}, which was disabled", self.set.name);
            return true;
        }
        false
    }

    /// Whether a write to this file would wait for a hold on its master to end.
    pub fn held(&self) -> bool {
        self.role == Role::Master && self.set.master.hold.is_held()
    }

    /// Whether a write here would wait for the disk before it writes (a first write to a chunk
    /// of the master since the point in time preserves the old chunk, made durable first).
    pub fn write_waits_for_disk(&self, offset: u64, len: u64) -> bool {
        self.role == Role::Master && self.set.master.change_waits_for_disk(offset, len)
    }

    /// Read `buf.len()` bytes at `offset` (zeros past the end).
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let s = &self.set;
        if counted(self.role) {
            s.check_served(self.role)?;
        }
        match self.role {
            Role::Master => s.master.read(buf, offset),
            Role::Shadow => s.read_shadow(buf, offset),
            Role::Bitmap => s
                .tracking
                .vol
                .read_at(buf, offset)
                .map_err(|e| Error::io(format!("read of bitmap {}", s.paths.bitmap), &e)),
            Role::Overflow => match self.overflow() {
                Some(o) => o
                    .vol
                    .read_at(buf, offset)
                    .map_err(|e| Error::io(format!("read of overflow {}", o.path), &e)),
                None => Err(Error::new(
                    crate::engine::error::Kind::Io,
                    format!("set {} has no overflow volume attached any more", s.name),
                )),
            },
        }
    }

    pub fn write(&self, data: &[u8], offset: u64) -> Result<()> {
        if counted(self.role) {
            self.set.check_served(self.role)?;
        }
        match self.role {
            Role::Master => self.set.master.write(data, offset),
            Role::Shadow => self.set.write_shadow(data, offset),
            Role::Bitmap | Role::Overflow => {
                Err(invalid(format!("the {} file is read-only", self.role)))
            }
        }
    }

    /// `write`, unless it would wait for a hold on the master (None: write it elsewhere, with
    /// `write`).
    pub fn try_write(&self, data: &[u8], offset: u64) -> Option<Result<()>> {
        if self.role != Role::Master {
            return Some(self.write(data, offset));
        }
        if let Err(e) = self.set.check_served(self.role) {
            return Some(Err(e));
        }
        self.set.master.try_write(data, offset)
    }

    /// Discard (or zero) `len` bytes at `offset`: a write of zeros as far as the point in time
    /// is concerned; the backing file punches the hole (or writes zeros where it cannot).
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        if counted(self.role) {
            self.set.check_served(self.role)?;
        }
        match self.role {
            Role::Master => self.set.master.discard(offset, len),
            Role::Shadow => self.set.discard_shadow(offset, len),
            Role::Bitmap | Role::Overflow => {
                Err(invalid(format!("the {} file is read-only", self.role)))
            }
        }
    }

    /// Reserve the backing file's blocks for `offset..end`, so that the writes the caller then
    /// counts on do not fail for lack of space. A block device has all of its blocks already; a
    /// backing file system without fallocate cannot reserve them either way (both succeed).
    pub fn allocate(&self, offset: u64, end: u64) -> std::io::Result<()> {
        let fd = match self.role {
            Role::Master => self.set.master.vol.raw_fd(),
            Role::Shadow => crate::engine::volume::Volume::raw_fd(self.set.shadow.as_ref()),
            Role::Bitmap | Role::Overflow => None,
        };
        let (Some(fd), true) = (fd, end > offset) else {
            return Ok(());
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
        let err = std::io::Error::last_os_error();
        match (rc, err.raw_os_error()) {
            (0, _) | (_, Some(libc::EOPNOTSUPP | libc::ENODEV)) => Ok(()),
            _ => Err(err),
        }
    }

    /// Make what was written durable (`fsync`); the bitmap file has nothing to sync.
    pub fn sync(&self) -> Result<()> {
        match self.role {
            Role::Bitmap | Role::Overflow => Ok(()),
            Role::Master | Role::Shadow => self.set.sync_all(),
        }
    }
}

/// Whether open files of this role are counted on the set (the writable `master` and `shadow`;
/// the read-only `bitmap` and `overflow` are not).
fn counted(role: Role) -> bool {
    matches!(role, Role::Master | Role::Shadow)
}

impl Drop for DataFile {
    fn drop(&mut self) {
        if counted(self.role) {
            self.set.file_closed(self.role);
        }
    }
}
