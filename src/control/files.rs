//! What the presentation layer reads and writes: the data files of a set (`master`, `shadow`,
//! `bitmap`), the text of the status files and the names in the tree. The file system reaches
//! the engine's sets only through these.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::error::{busy, invalid, Error, Result, Role};
use crate::engine::header::{flags, SetKind};
use crate::engine::volume::Volume;
use crate::engine::{Direction, Set};

use super::status;
use super::Controller;

/// An open `master`, `shadow` or `bitmap` file of a set. A `master` or `shadow` file is counted
/// on its set (per file) while it lives, so the set is not disabled, nor a copy started onto
/// the file, under a loop device or a process using it; the bitmap file is read-only and never
/// counted.
pub struct DataFile {
    set: Arc<Set>,
    role: Role,
    /// The kernel serves this open's reads itself (FUSE passthrough); a `shadow` so opened is
    /// counted in `KERNEL_READS` while it lives.
    kernel: bool,
}

/// Per set (by the address of its `Arc`, which an entry's opens and bars keep alive): the opens
/// of its `shadow` whose reads the kernel serves, and the commands in progress that bar new
/// ones. Its lock is held across an open's look at the set and its count, and across a
/// command's look at the count and its bar, so neither slips between the other's two steps.
static KERNEL_READS: Mutex<BTreeMap<usize, KernelReads>> = Mutex::new(BTreeMap::new());

#[derive(Default)]
struct KernelReads {
    opens: usize,
    barred: usize,
}

fn kernel_reads() -> MutexGuard<'static, BTreeMap<usize, KernelReads>> {
    KERNEL_READS.lock().unwrap_or_else(|p| p.into_inner())
}

fn kernel_key(set: &Arc<Set>) -> usize {
    Arc::as_ptr(set) as usize
}

/// Change the entry of `set` in the table; an entry left with nothing is removed.
fn with_kernel_reads(
    table: &mut BTreeMap<usize, KernelReads>,
    set: &Arc<Set>,
    change: impl FnOnce(&mut KernelReads),
) {
    let entry = table.entry(kernel_key(set)).or_default();
    change(entry);
    if entry.opens == 0 && entry.barred == 0 {
        table.remove(&kernel_key(set));
    }
}

/// How many opens of the shadow of `set` the kernel serves the reads of.
pub fn kernel_read_opens(set: &Arc<Set>) -> usize {
    kernel_reads().get(&kernel_key(set)).map_or(0, |e| e.opens)
}

/// Whether the shadow of `set` reads as its own file's bytes and will go on doing so while it
/// is open (no command can change that meanwhile, see `Controller::bar_kernel_reads`): an
/// independent set, not compact, whose shadow is here and settled (no copy running, aborted
/// or recorded, nothing pending), not offline, suspended, exported or disabled. An imported
/// set's shadow qualifies: it reads from itself alone.
fn shadow_reads_itself(set: &Set) -> bool {
    let unsettled = flags::ACTIVE
        | flags::TO_SHADOW
        | flags::TO_MASTER
        | flags::PENDING
        | flags::OFFLINE_ALL
        | flags::OUT_OF_SPACE
        | flags::EXPORTED
        | flags::RELEASED;
    set.kind == SetKind::Independent
        && set.compact.is_none()
        && set.flags() & unsettled == 0
        && !set.is_suspended()
        && !set.is_detached()
        && set.check_here(Role::Shadow).is_ok()
}

/// Whether the open file behind `fd` has exactly `len` bytes now (the file shows `len`; the
/// kernel reads the file to its own end).
fn file_len_is(fd: std::os::fd::BorrowedFd<'_>, len: u64) -> bool {
    fd.try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.len() == len)
}

/// New opens of the sets' shadows are not served by the kernel while this lives (see
/// `Controller::bar_kernel_reads`).
pub struct KernelReadsBar {
    sets: Vec<Arc<Set>>,
}

impl Drop for KernelReadsBar {
    fn drop(&mut self) {
        let mut table = kernel_reads();
        for set in &self.sets {
            with_kernel_reads(&mut table, set, |e| e.barred = e.barred.saturating_sub(1));
        }
    }
}

/// Whether a set command would change the bytes of the set's shadow, or take its reads back
/// from whoever serves them: refused while the kernel serves reads of it.
pub fn changes_kernel_read_shadow(cmd: &super::SetCommand) -> bool {
    use super::SetCommand as C;
    matches!(
        cmd,
        C::Update {
            dir: Direction::Shadow,
            ..
        } | C::Copy {
            dir: Direction::Shadow,
            ..
        } | C::Reset
            | C::Suspend
    )
}

impl Controller {
    /// Wait up to `RELEASE_GRACE` for the kernel-served opens of the shadows of `sets` to be
    /// released: the kernel sends the release of a file closed just before asynchronously.
    pub(super) fn wait_kernel_reads_released(&self, sets: &[Arc<Set>]) {
        let deadline = std::time::Instant::now() + crate::engine::RELEASE_GRACE;
        while sets.iter().any(|s| kernel_read_opens(s) > 0) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// For a command `cmd` that would change the bytes of the shadows of `sets` or take their
    /// reads back (`update`/`copy shadow`, also with `force`, `reset`, `suspend`): refused
    /// (EBUSY) while the kernel serves reads of one of them, which the daemon neither sees
    /// nor can stop; otherwise new opens of them are served by the daemon until the returned
    /// bar is dropped (at the command's end).
    pub(super) fn bar_kernel_reads(
        &self,
        sets: &[Arc<Set>],
        cmd: &dyn std::fmt::Display,
    ) -> Result<KernelReadsBar> {
        let mut table = kernel_reads();
        for set in sets {
            let n = table.get(&kernel_key(set)).map_or(0, |e| e.opens);
            if n > 0 {
                let cmd = cmd.to_string();
                let why = if cmd.starts_with("suspend") {
                    format!("which the daemon cannot stop: '{cmd}' is refused")
                } else {
                    format!(
                        "so its bytes cannot change under it: '{cmd}' is refused, with or \
                         without force"
                    )
                };
                return Err(busy(format!(
                    "the shadow file of set {} is open with its reads served by the kernel ({n} \
                     open, passthrough), {why}; close it first (umount, losetup -d, or end the \
                     process), or mount iifs with -o passthrough=off",
                    set.name
                )));
            }
        }
        for set in sets {
            with_kernel_reads(&mut table, set, |e| e.barred += 1);
        }
        Ok(KernelReadsBar {
            sets: sets.to_vec(),
        })
    }

    /// `bar_kernel_reads` for a group's `update shadow` or `copy shadow` (with `force` or not)
    /// on every member, once the releases of files just closed have arrived; None for any
    /// other group command.
    pub fn bar_group_kernel_reads(
        &self,
        group: &str,
        cmd: &super::GroupCommand,
    ) -> Result<Option<KernelReadsBar>> {
        use super::GroupCommand as G;
        if !matches!(
            cmd,
            G::Update {
                dir: Direction::Shadow,
                ..
            } | G::Copy {
                dir: Direction::Shadow,
                ..
            }
        ) {
            return Ok(None);
        }
        let Ok(members) = self.engine.group_members(group) else {
            // No such group: the command itself says so.
            return Ok(None);
        };
        let sets: Vec<Arc<Set>> = members
            .iter()
            .filter_map(|m| self.engine.set(m).ok())
            .collect();
        self.wait_kernel_reads_released(&sets);
        self.bar_kernel_reads(&sets, cmd).map(Some)
    }

    /// `bar_kernel_reads` for every set, for `suspend all`.
    pub(super) fn bar_all_kernel_reads(
        &self,
        cmd: &dyn std::fmt::Display,
    ) -> Result<KernelReadsBar> {
        self.bar_kernel_reads(&self.engine.sets(), cmd)
    }

    /// `wait_kernel_reads_released` for every set.
    pub(super) fn wait_all_kernel_reads_released(&self) {
        self.wait_kernel_reads_released(&self.engine.sets());
    }
}

/// What the tree shows of a data file without opening it.
pub struct FileInfo {
    pub len: u64,
    /// The file backing the volume (`master` and `shadow`): its mode and owner are the file's.
    pub backing: Option<String>,
    /// Another file whose bytes this one serves (the master, for a dependent shadow, whose
    /// untouched chunks read from it): nobody may read through the mount what they could not
    /// read from either file directly.
    pub serves_also: Vec<String>,
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
        Ok(DataFile {
            set,
            role,
            kernel: false,
        })
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
                serves_also: Vec::new(),
            },
            Role::Overflow => FileInfo {
                len: set.compact.as_ref()?.overflow()?.vol.len(),
                backing: None,
                serves_also: Vec::new(),
            },
            Role::Master => FileInfo {
                len: set.size,
                backing: Some(set.paths.master.clone()),
                serves_also: Vec::new(),
            },
            Role::Shadow => FileInfo {
                len: set.size,
                backing: Some(set.paths.shadow.clone()),
                serves_also: {
                    let mut also = Vec::new();
                    // Untouched chunks of a dependent shadow, and the chunks a copy onto the
                    // shadow has not reached yet, read from the master.
                    let to_shadow = set.flags() & crate::engine::header::flags::TO_SHADOW != 0;
                    if set.is_dependent() || to_shadow {
                        also.push(set.paths.master.clone());
                    }
                    // A compact shadow's chunks that did not fit live in its overflow volume.
                    if let Some(o) = set.compact.as_ref().and_then(|c| c.overflow()) {
                        also.push(o.path.clone());
                    }
                    also
                },
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

    /// Whether the kernel serves this open's reads (see `serve_by_kernel`).
    pub fn kernel_served(&self) -> bool {
        self.kernel
    }

    /// For a read-only open: have the kernel serve its reads itself (FUSE passthrough), from
    /// the volume returned, whose descriptor (`Volume::backing_fd`) is the very file the
    /// daemon reads for this file. Only where the file's reads are nothing but that file's
    /// bytes at the same offsets, and stay so while it is open:
    ///
    /// - `shadow`, while `shadow_reads_itself` and no command bars it (one that is changing
    ///   its bytes or its state); counted until this file is dropped, so that such commands
    ///   are refused meanwhile;
    /// - `bitmap`, always: its reads are the bitmap volume's bytes.
    ///
    /// The file must have the size the tree shows. `joining`: other opens of this file are
    /// served by the kernel already, which wants every open of it to be (the caller reuses
    /// their backing): the shadow is then only counted, as nothing could have changed it.
    /// None: the daemon serves it.
    pub fn serve_by_kernel(&mut self, joining: bool) -> Option<Arc<dyn Volume>> {
        let vol: Arc<dyn Volume> = match self.role {
            Role::Bitmap => self.set.tracking.vol.clone(),
            Role::Shadow => self.set.shadow.current(),
            Role::Master | Role::Overflow => return None,
        };
        if self.role == Role::Shadow {
            let mut table = kernel_reads();
            if !joining {
                let barred = table
                    .get(&kernel_key(&self.set))
                    .is_some_and(|e| e.barred > 0);
                if barred || !shadow_reads_itself(&self.set) {
                    return None;
                }
                if !vol
                    .backing_fd()
                    .is_some_and(|fd| file_len_is(fd, self.set.size))
                {
                    return None;
                }
            }
            with_kernel_reads(&mut table, &self.set, |e| e.opens += 1);
        } else if !joining
            && !vol
                .backing_fd()
                .is_some_and(|fd| file_len_is(fd, vol.len()))
        {
            return None;
        }
        self.kernel = true;
        Some(vol)
    }

    /// The kernel could not take this open after all (`serve_by_kernel` undone): the daemon
    /// serves it.
    pub fn not_served_by_kernel(&mut self) {
        if std::mem::take(&mut self.kernel) && self.role == Role::Shadow {
            with_kernel_reads(&mut kernel_reads(), &self.set, |e| {
                e.opens = e.opens.saturating_sub(1)
            });
        }
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
            Role::Master => self.set.master.sync(),
            Role::Shadow => self.set.sync_all(),
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
        self.not_served_by_kernel();
        if counted(self.role) {
            self.set.file_closed(self.role);
        }
    }
}
