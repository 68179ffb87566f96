//! Volumes: the byte stores a set is made of (master, shadow, bitmap). The engine sees them only
//! through the small `Volume` trait, so tests can use memory or fault-injecting volumes.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::VolumeFault;

/// Identity of a volume, to refuse using one volume twice (device and inode for files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VolumeId(pub u64, pub u64);

pub trait Volume: Send + Sync {
    /// Size in bytes, fixed while the volume is open.
    fn len(&self) -> u64;
    /// Fill `buf` from `offset`; bytes past the end read as zeros.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make every completed write durable.
    fn sync(&self) -> io::Result<()>;
    /// Discard a range (reads return zeros afterwards).
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        write_zeros(self, offset, len)
    }
    /// The file descriptor, where the volume is a file: lets copies use `copy_file_range`.
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
    /// The descriptor the kernel may serve reads of this volume from directly (FUSE
    /// passthrough): the very open file `read_at` reads, when that is a regular file. None for
    /// anything else (a block device, a wrapper that may change what it reads, a test double).
    fn backing_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// A hint that `[offset, offset+len)` will be read soon: start reading it now.
    fn will_need(&self, _offset: u64, _len: u64) {}
    /// Bytes were written to the volume behind `write_at`'s back (through `raw_fd`).
    fn note_written(&self) {}
    /// Err if the volume is now shorter than `len()` (its backing file was truncated): a
    /// write behind `write_at`'s back must not grow it again (see `FileVolume::write_at`).
    fn check_not_shrunk(&self) -> io::Result<()> {
        Ok(())
    }
    fn id(&self) -> VolumeId;
    /// True for a stand-in of a volume that is not here (see `swappable::Absent`).
    fn is_absent(&self) -> bool {
        false
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Write `len` zero bytes at `offset`, in pieces of at most 1 MiB.
pub fn write_zeros<V: Volume + ?Sized>(vol: &V, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64);
        vol.write_at(&zeros[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

/// How a copy reads its source: one chunk here and there, or a long sequential sweep.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Random,
    Sequential,
}

/// Which end of a copy failed: the volume read or the volume written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CopyEnd {
    Source,
    Target,
}

/// Copy `len` bytes at `offset` from `src` to the same offset of `dst`, in kernel where possible.
pub fn copy_range(
    src: &dyn Volume,
    dst: &dyn Volume,
    offset: u64,
    len: u64,
    access: Access,
) -> io::Result<()> {
    copy_range_ends(src, dst, offset, len, access).map_err(|(_, e)| e)
}

/// `copy_range`, saying on failure which end failed (a kernel copy's own error is counted as
/// the target's: it cannot tell).
pub fn copy_range_ends(
    src: &dyn Volume,
    dst: &dyn Volume,
    offset: u64,
    len: u64,
    access: Access,
) -> Result<(), (CopyEnd, io::Error)> {
    copy_between(src, offset, dst, offset, len, access)
}

/// Copy `len` bytes at `src_off` of `src` to `dst_off` of `dst` (a compact shadow's slot is
/// elsewhere than its chunk), in kernel where possible; on failure, which end failed.
pub fn copy_between(
    src: &dyn Volume,
    src_off: u64,
    dst: &dyn Volume,
    dst_off: u64,
    len: u64,
    access: Access,
) -> Result<(), (CopyEnd, io::Error)> {
    let offset = src_off;
    // A sweep asks for all of its source at once, so the disk reads it in parallel. Not the
    // kernel's readahead: that fills the page cache with large folios, and on this kernel
    // 4 KiB writes into large folios are throttled hard (a master read by a full copy then
    // took 4 KiB writes at a quarter of the speed). Explicitly requested pages stay small.
    if access == Access::Sequential {
        src.will_need(offset, len);
    }
    if let (Some(sfd), Some(dfd)) = (src.raw_fd(), dst.raw_fd()) {
        dst.check_not_shrunk().map_err(|e| (CopyEnd::Target, e))?;
        let copied = copy_file_range_all(sfd, dfd, (src_off, dst_off), len, src.len());
        dst.note_written();
        if copied? {
            return Ok(());
        }
    }
    let mut buf = vec![0u8; len.min(8 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_at(&mut buf[..n], offset + done)
            .map_err(|e| (CopyEnd::Source, e))?;
        dst.write_at(&buf[..n], dst_off + done)
            .map_err(|e| (CopyEnd::Target, e))?;
        done += n as u64;
    }
    Ok(())
}

/// Returns Ok(false) when the kernel cannot do it for these files (the caller falls back).
/// `src_len` is the source's length when it was opened: an end of file before it means the
/// source shrank under the set, an I/O error (copying zeros would be a silently wrong image).
fn copy_file_range_all(
    sfd: RawFd,
    dfd: RawFd,
    (offset, dst_off): (u64, u64),
    len: u64,
    src_len: u64,
) -> Result<bool, (CopyEnd, io::Error)> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = (offset + done) as libc::loff_t;
        let mut off_out = (dst_off + done) as libc::loff_t;
        // SAFETY: both descriptors are open for the lifetime of the volumes that lend them, and
        // the offsets are plain integers the kernel reads and updates.
        let n = unsafe {
            libc::copy_file_range(
                sfd,
                &mut off_in,
                dfd,
                &mut off_out,
                (len - done) as usize,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The kernel cannot copy these files, or one end failed: copy_file_range does
                // not say which. The caller copies the range again with reads and writes, which
                // name the failing end (and fail again while the fault lasts).
                _ => Ok(false),
            };
        }
        if n == 0 {
            if offset + done < src_len {
                return Err((CopyEnd::Source, shrank(offset + done, src_len)));
            }
            // Past the source's recorded end: the rest reads as zeros.
            let zeros = vec![0u8; (len - done).min(1 << 20) as usize];
            while done < len {
                let k = (len - done).min(zeros.len() as u64) as usize;
                write_all_at(dfd, &zeros[..k], dst_off + done).map_err(|e| (CopyEnd::Target, e))?;
                done += k as u64;
            }
            break;
        }
        done += n as u64;
    }
    Ok(true)
}

/// The error of a volume whose end of file came before the length it had when it was opened.
fn shrank(eof: u64, len: u64) -> io::Error {
    VolumeFault::Shrank { eof, len }.into_io(io::ErrorKind::UnexpectedEof)
}

fn write_all_at(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<()> {
    // SAFETY: borrowing an open descriptor for one call; ManuallyDrop keeps it open.
    let file =
        std::mem::ManuallyDrop::new(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    file.write_all_at(buf, offset)
}

/// The clean-file skip of a volume's sync: a sync with nothing written since the last one
/// returns without flushing (fsync of a master then costs one flush, not one per volume of the
/// set). `FileVolume` uses it, and so does the power-loss test volume
/// (`testing::PowerLossVolume`), so that power-loss tests run this very logic: a sync skipped
/// wrongly leaves writes volatile there, and the power cut loses them.
pub struct CleanSkip {
    /// Written since the last flush began. Starts set: whatever was written before the volume
    /// was opened may not be durable yet.
    dirty: AtomicBool,
    /// Held across the dirty check and the flush: a second caller waits for a flush in
    /// progress instead of returning early because the first one already cleared `dirty`.
    lock: std::sync::Mutex<()>,
}

impl Default for CleanSkip {
    fn default() -> CleanSkip {
        CleanSkip::new()
    }
}

impl CleanSkip {
    pub fn new() -> CleanSkip {
        CleanSkip {
            dirty: AtomicBool::new(true),
            lock: std::sync::Mutex::new(()),
        }
    }

    /// A write completed (call it after the write, never before: see `sync_with`).
    pub fn note_written(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// Whether a write completed since the last flush began.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// Run `flush` unless nothing was written since the last flush began; a failed flush
    /// leaves the volume dirty (the next sync tries again).
    pub fn sync_with(&self, flush: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let _one_at_a_time = self.lock.lock().map_err(|_| poisoned())?;
        // A write marks the volume dirty after it completes, so a write finished before this
        // swap is covered by the flush below; one that marks it later is left for the next.
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        flush().inspect_err(|_| self.note_written())
    }
}

/// A volume backed by a regular file or a block device.
pub struct FileVolume {
    file: File,
    /// Written since the last sync: a sync of a clean file is skipped (see `CleanSkip`).
    clean_skip: CleanSkip,
    len: u64,
    id: VolumeId,
    /// The device number, for a block device.
    rdev: Option<u64>,
    /// Files kept open for the locks they hold.
    held: Vec<File>,
}

impl FileVolume {
    /// Open read-write. The client's O_DIRECT is never passed on: backing I/O uses the page cache.
    pub fn open(path: &Path) -> io::Result<FileVolume> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        FileVolume::from_file(file, None)
    }

    /// A volume over an open file or block device; `id` overrides the identity of a block
    /// device (a loop device is its backing file).
    pub fn from_file(mut file: File, id: Option<VolumeId>) -> io::Result<FileVolume> {
        let meta = file.metadata()?;
        let block = std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type());
        if !(meta.file_type().is_file() || block) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        }
        let len = file.seek(SeekFrom::End(0))?;
        let id = if block {
            id.unwrap_or(VolumeId(u64::MAX, meta.rdev()))
        } else {
            VolumeId(meta.dev(), meta.ino())
        };
        // Random access advice, so no readahead: on this kernel 4 KiB writes into large
        // page-cache folios (which readahead creates) are throttled hard. Long reads ask for
        // their pages explicitly instead (`will_need`).
        // SAFETY: plain advisory call on an open descriptor.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
        }
        Ok(FileVolume {
            file,
            clean_skip: CleanSkip::new(),
            len,
            id,
            rdev: block.then(|| meta.rdev()),
            held: Vec::new(),
        })
    }

    /// Keep `file` open as long as the volume: it holds a lock on storage behind the volume
    /// (the backing file of a loop device).
    pub fn hold(&mut self, file: File) {
        self.held.push(file);
    }

    /// The open file, to lock it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The device number of a block device volume.
    pub fn rdev(&self) -> Option<u64> {
        self.rdev
    }

    /// Grow a regular file to at least `len` bytes (used for bitmap volumes).
    pub fn grow_to(&mut self, len: u64) -> io::Result<()> {
        if len > self.len {
            self.file.set_len(len)?;
            self.len = len;
        }
        Ok(())
    }

    pub fn is_regular_file(&self) -> bool {
        self.rdev.is_none()
    }
}

impl Volume for FileVolume {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    let at = offset + done as u64;
                    if at < self.len {
                        return Err(shrank(at, self.len));
                    }
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_not_shrunk()?;
        let result = self.file.write_all_at(buf, offset);
        self.note_written();
        result
    }

    fn sync(&self) -> io::Result<()> {
        self.clean_skip.sync_with(|| self.file.sync_data())
    }

    fn note_written(&self) {
        self.clean_skip.note_written();
    }

    fn check_not_shrunk(&self) -> io::Result<()> {
        // A write into a file that shrank would grow it again, and the bytes lost in between
        // would then read as zeros without an error: refuse it while the file is short. (A
        // block device cannot be truncated; its reads past a shrunk end fail in `read_at`.)
        if self.is_regular_file() {
            let now = self.file.metadata()?.len();
            if now < self.len {
                return Err(shrank(now, self.len));
            }
        }
        Ok(())
    }

    fn will_need(&self, offset: u64, len: u64) {
        // SAFETY: advisory call on an open descriptor.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate on an open descriptor with plain integer arguments.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        self.note_written();
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Block devices and file systems without holes (EINVAL: a block device's range
            // that is not aligned to its block size): write zeros instead.
            Some(libc::EOPNOTSUPP | libc::ENODEV | libc::EINVAL) => write_zeros(self, offset, len),
            _ => Err(err),
        }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn backing_fd(&self) -> Option<BorrowedFd<'_>> {
        self.is_regular_file().then(|| self.file.as_fd())
    }

    fn id(&self) -> VolumeId {
        self.id
    }
}

/// Take an exclusive advisory lock (flock) on `file` without waiting: false when another open
/// file holds one.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => {}
            _ => return Err(e),
        }
    }
}

pub(crate) fn poisoned() -> io::Error {
    io::Error::other("volume lock poisoned")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_waits_for_the_flush_in_progress_and_skips_clean_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let v = std::sync::Arc::new(FileVolume::open(&path).unwrap());
        v.write_at(&[1; 4096], 0).unwrap();
        assert!(v.clean_skip.is_dirty());
        // Two syncers at once: each returns only when a flush that began after the write
        // has completed (the second waits on the lock instead of returning early).
        let (a, b) = (v.clone(), v.clone());
        let t1 = std::thread::spawn(move || a.sync());
        let t2 = std::thread::spawn(move || b.sync());
        t1.join().unwrap().unwrap();
        t2.join().unwrap().unwrap();
        assert!(!v.clean_skip.is_dirty());
        // A copy through the raw descriptor marks the target dirty too.
        let other = dir.path().join("w");
        std::fs::write(&other, vec![7u8; 8192]).unwrap();
        let w = FileVolume::open(&other).unwrap();
        copy_range(&w, v.as_ref(), 0, 4096, Access::Random).unwrap();
        assert!(v.clean_skip.is_dirty());
        let mut buf = [0u8; 4096];
        v.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [7u8; 4096]);
    }
}
