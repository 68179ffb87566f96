//! The export record: a small YAML file written next to an exported shadow
//! (`SHADOW.iifs-export`) that says what the shadow is (the exporting set's uuid, the image's
//! size and chunk size, where and when it was exported) and holds a checksum of the shadow's
//! chunks, so that `import` on another host can check what it is given and a person can see
//! what a file is.
//!
//! It is written beside the shadow as `SHADOW.iifs-export.new` before the export is recorded,
//! and renamed into place after: a crash in between leaves the `.new` file, which the start of
//! a set recorded as exported renames (`commit`), and which is ignored otherwise.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::header::{one_line, parse_uuid};
use super::volume::Volume;

/// The record's format; a reader refuses another.
pub const FORMAT: u32 = 1;
/// What the record's file name adds to the shadow's.
pub const SUFFIX: &str = ".iifs-export";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub format: u32,
    /// The exporting set's uuid.
    pub uuid: String,
    /// The exporting set's name.
    pub set: String,
    /// Bytes of the image (the master's size; the shadow volume may be larger).
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: u64,
    /// The point in time the shadow holds (seconds since the epoch).
    pub pit_time: u64,
    /// The host that exported it, and when (seconds since the epoch).
    pub exported_from: String,
    pub exported_at: u64,
    /// The shadow's path on the exporting host.
    pub shadow: String,
    /// CRC-32 of the list of every chunk's CRC-32 (little-endian), as 8 hex digits.
    pub chunk_list_crc32: String,
}

impl ExportRecord {
    /// The exporting set's uuid, if the record's is well formed.
    pub fn origin(&self) -> Option<u128> {
        parse_uuid(&self.uuid).filter(|&u| u != 0)
    }
}

/// Where the record of the shadow at `shadow` lives.
pub fn path_of(shadow: &str) -> PathBuf {
    PathBuf::from(format!("{shadow}{SUFFIX}"))
}

fn pending_path(shadow: &str) -> PathBuf {
    PathBuf::from(format!("{shadow}{SUFFIX}.new"))
}

/// `path` resolved, refused when it leads into an iifs mount: the daemon must never wait on a
/// file system it may be serving itself.
fn outside(path: &Path) -> io::Result<PathBuf> {
    crate::mounts::resolve_outside(path, &crate::mounts::iifs_mountinfo(), |m| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it leads into the iifs mount {}", m.display()),
        )
    })
}

/// The checksum of the first `size` bytes of `vol` in chunks of `chunk_size`: a CRC-32 of
/// each chunk, and a CRC-32 of that list.
pub fn chunk_list_crc(vol: &dyn Volume, size: u64, chunk_size: u64) -> io::Result<String> {
    let mut list = crc32fast::Hasher::new();
    let mut buf = vec![0u8; chunk_size as usize];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(chunk_size) as usize;
        vol.read_at(&mut buf[..n], at)?;
        list.update(&crc32fast::hash(&buf[..n]).to_le_bytes());
        at += n as u64;
    }
    Ok(format!("{:08x}", list.finalize()))
}

/// Write the record where `commit` will find it, durably.
pub fn write_pending(rec: &ExportRecord) -> io::Result<()> {
    let text = format!(
        "# iifs export record: the file {} beside it is a point-in-time image set {} exported.\n\
         # Import it on another host with: echo \"import SHADOW BITMAP [NAME]\" > MOUNT/ctl\n{}",
        rec.shadow,
        rec.set,
        serde_norway::to_string(rec).map_err(io::Error::other)?
    );
    let path = outside(&pending_path(&rec.shadow))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Put a record `write_pending` wrote in place (no-op when there is none).
pub fn commit(shadow: &str) -> io::Result<()> {
    let pending = outside(&pending_path(shadow))?;
    match fs::rename(&pending, outside(&path_of(shadow))?) {
        Ok(()) => sync_dir(&pending),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove a record `write_pending` wrote, for an export that was refused.
pub fn discard_pending(shadow: &str) {
    if let Ok(p) = outside(&pending_path(shadow)) {
        let _ = fs::remove_file(p);
    }
}

/// Remove the record of a shadow taken back by `join`: it no longer describes a shadow that
/// may be imported.
pub fn remove(shadow: &str) -> io::Result<()> {
    let path = outside(&path_of(shadow))?;
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(&path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Read the record of the shadow at `shadow`. Err(sentence) when there is none or it is not
/// one.
pub fn read(shadow: &str) -> Result<ExportRecord, String> {
    let path = path_of(shadow);
    let text = outside(&path)
        .and_then(fs::read_to_string)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!(
                "{shadow} is not an exported shadow: there is no export record {} beside it (the \
             host that owns it writes one with 'export')",
                path.display()
            ),
            _ => format!("cannot read the export record {}: {e}", path.display()),
        })?;
    let rec: ExportRecord = serde_norway::from_str(&text).map_err(|e| {
        format!(
            "{} is not an iifs export record ({}); export the shadow again on its host",
            path.display(),
            one_line(&e.to_string())
        )
    })?;
    if rec.format != FORMAT {
        return Err(format!(
            "export record {} has format {}, this iifs reads format {FORMAT}",
            path.display(),
            rec.format
        ));
    }
    if rec.origin().is_none() || rec.chunk_size == 0 || rec.size == 0 {
        return Err(format!(
            "export record {} is damaged (uuid '{}', size {}, chunk size {}); export the \
             shadow again on its host",
            path.display(),
            one_line(&rec.uuid),
            rec.size,
            rec.chunk_size
        ));
    }
    Ok(rec)
}

fn sync_dir(file: &Path) -> io::Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// This host's name, for the record.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "-".to_string())
}
