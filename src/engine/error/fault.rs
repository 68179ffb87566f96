//! Typed faults carried inside `io::Error`s: the volume layer speaks `io::Result`, and these
//! keep the figures and paths of a fault as fields (`io::Error::get_ref` and a downcast, or
//! `fault_of`, read them back) while the error reads as the same sentence.

use std::io;
use std::path::PathBuf;

/// Faults of a volume's content the engine finds itself, carried inside an `io::Error` (the
/// volume layer speaks `io::Result`) with their figures as fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeFault {
    /// The volume's end of file came before the length it had when it was opened: someone
    /// truncated the backing file behind the daemon's back. Its bytes there are lost, not
    /// zeros.
    #[error(
        "the volume shrank: it ends at byte {eof} or before, but it was {len} bytes when the \
         set opened it (truncated behind the daemon's back?)"
    )]
    Shrank { eof: u64, len: u64 },
    /// A page of a bitmap on the bitmap volume fails its checksum.
    #[error(
        "page {page} of the {map} bitmap (byte {offset} of the bitmap volume) fails its \
         checksum: the bitmap volume was damaged or changed behind iifs, and which chunks of \
         the shadow are valid is not known"
    )]
    BadPage {
        /// Which bitmap: "shadow" or "copy".
        map: &'static str,
        page: u64,
        /// The page's byte offset on the bitmap volume.
        offset: u64,
    },
    /// Neither header slot of the bitmap volume holds a valid header.
    #[error("no valid iifs header on the bitmap volume")]
    NoHeader,
    /// The bitmap volume is `len` bytes, its header needs `need`.
    #[error("bitmap volume is shorter than its header says")]
    BitmapTooShort { len: u64, need: u64 },
    /// A write would end at byte `end` of a volume of `len` bytes, which cannot grow.
    #[error("write past the end of the volume")]
    PastEnd { end: u64, len: u64 },
}

impl VolumeFault {
    /// The fault as the I/O error the volume layer returns.
    pub fn into_io(self, kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, self)
    }
}

/// The fault carried by an I/O error, if it is one.
pub fn fault_of(err: &io::Error) -> Option<&VolumeFault> {
    err.get_ref()?.downcast_ref::<VolumeFault>()
}

/// Why a file or block device cannot be a volume (see `fileopen`), carried inside the
/// `io::Error` of the open with its particulars as fields. `kind()` is the `io::ErrorKind`
/// the open reports (and so the errno at the ctl file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenRefusal {
    /// The file is open already as a volume of another length.
    #[error(
        "it is {now} bytes now, but it is in use as a volume of {in_use} bytes (its size when \
         it was opened); the sets on one volume must agree on its size: disable the sets that \
         use it, then enable them again"
    )]
    SizeDiffers { now: u64, in_use: u64 },
    #[error("it is not a regular file or block device")]
    NotFileOrDevice,
    /// A missing node under /dev: device nodes are not made.
    #[error("there is no such device (device nodes are not created)")]
    NoSuchDevice,
    /// The directory of a missing bitmap file does not exist.
    #[error(
        "directory {} does not exist (a missing bitmap file is created, its directory is not)",
        dir.display()
    )]
    NoDirectory { dir: PathBuf },
    /// The file (or, `backing`, the file behind a loop device) is locked by another user
    /// (`holder`: "process PID (NAME)", when /proc/locks tells).
    #[error(
        "{} is in use by {}: it is locked as a volume (another iifs daemon, or a program such \
         as qemu, uses it); stop that first",
        match backing {
            Some(b) => format!("its backing file {}", b.display()),
            None => "it".to_string(),
        },
        holder.as_deref().unwrap_or("another process")
    )]
    Locked {
        backing: Option<PathBuf>,
        holder: Option<String>,
    },
    /// A block device another program holds open exclusively (`mounted_at`, when mounted).
    #[error(
        "it is in use: {}",
        match mounted_at {
            Some(m) => format!("it is mounted at {}: unmount it first", m.display()),
            None => "another program holds it open exclusively (a file system, device mapper, \
                     md, another iifs daemon); `lsblk` and `fuser -v` show who"
                .to_string(),
        }
    )]
    DeviceBusy { mounted_at: Option<PathBuf> },
    /// The volume (or, `via`, the file behind a loop device) is inside the iifs mount `mount`.
    #[error(
        "{} inside the iifs mount {}: a volume cannot live on an iifs control tree; name the \
         file behind it instead",
        match via {
            Some(b) => format!("it is a loop device over {}, which is", b.display()),
            None => "it is (or leads)".to_string(),
        },
        mount.display()
    )]
    OnIifs {
        mount: PathBuf,
        via: Option<PathBuf>,
    },
    /// An open that failed with `errno`, said so a person can act on it.
    #[error("{why}")]
    Explained {
        why: &'static str,
        errno: i32,
        kind: io::ErrorKind,
    },
}

impl OpenRefusal {
    /// The kind of I/O error the open reports.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            OpenRefusal::SizeDiffers { .. }
            | OpenRefusal::NotFileOrDevice
            | OpenRefusal::OnIifs { .. } => io::ErrorKind::InvalidInput,
            OpenRefusal::NoSuchDevice | OpenRefusal::NoDirectory { .. } => io::ErrorKind::NotFound,
            OpenRefusal::Locked { .. } | OpenRefusal::DeviceBusy { .. } => {
                io::ErrorKind::ResourceBusy
            }
            OpenRefusal::Explained { kind, .. } => *kind,
        }
    }
}

impl From<OpenRefusal> for io::Error {
    fn from(r: OpenRefusal) -> io::Error {
        io::Error::new(r.kind(), r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sentences are the ones the messages had when they were written out in place (tests
    /// and administrators' scripts match them).
    #[test]
    fn faults_read_as_the_sentences_they_replace() {
        let cases: Vec<(io::Error, String)> = vec![
            (
                VolumeFault::Shrank { eof: 10, len: 20 }.into_io(io::ErrorKind::UnexpectedEof),
                "the volume shrank: it ends at byte 10 or before, but it was 20 bytes when the \
                 set opened it (truncated behind the daemon's back?)"
                    .into(),
            ),
            (
                VolumeFault::BadPage {
                    map: "copy",
                    page: 3,
                    offset: 20480,
                }
                .into_io(io::ErrorKind::InvalidData),
                "page 3 of the copy bitmap (byte 20480 of the bitmap volume) fails its \
                 checksum: the bitmap volume was damaged or changed behind iifs, and which \
                 chunks of the shadow are valid is not known"
                    .into(),
            ),
            (
                OpenRefusal::Locked {
                    backing: Some("/b.img".into()),
                    holder: None,
                }
                .into(),
                "its backing file /b.img is in use by another process: it is locked as a \
                 volume (another iifs daemon, or a program such as qemu, uses it); stop that \
                 first"
                    .into(),
            ),
            (
                OpenRefusal::Locked {
                    backing: None,
                    holder: Some("process 7 (qemu)".into()),
                }
                .into(),
                "it is in use by process 7 (qemu): it is locked as a volume (another iifs \
                 daemon, or a program such as qemu, uses it); stop that first"
                    .into(),
            ),
            (
                OpenRefusal::DeviceBusy { mounted_at: None }.into(),
                "it is in use: another program holds it open exclusively (a file system, \
                 device mapper, md, another iifs daemon); `lsblk` and `fuser -v` show who"
                    .into(),
            ),
            (
                OpenRefusal::DeviceBusy {
                    mounted_at: Some("/mnt/x".into()),
                }
                .into(),
                "it is in use: it is mounted at /mnt/x: unmount it first".into(),
            ),
            (
                OpenRefusal::OnIifs {
                    mount: "/mnt/ii".into(),
                    via: Some("/mnt/ii/f".into()),
                }
                .into(),
                "it is a loop device over /mnt/ii/f, which is inside the iifs mount /mnt/ii: a \
                 volume cannot live on an iifs control tree; name the file behind it instead"
                    .into(),
            ),
            (
                OpenRefusal::NoDirectory { dir: "/d".into() }.into(),
                "directory /d does not exist (a missing bitmap file is created, its directory \
                 is not)"
                    .into(),
            ),
            (
                OpenRefusal::SizeDiffers { now: 1, in_use: 2 }.into(),
                "it is 1 bytes now, but it is in use as a volume of 2 bytes (its size when it \
                 was opened); the sets on one volume must agree on its size: disable the sets \
                 that use it, then enable them again"
                    .into(),
            ),
        ];
        for (e, sentence) in cases {
            assert_eq!(e.to_string(), sentence);
        }
        let e: io::Error = OpenRefusal::Explained {
            why: "it is a running program",
            errno: libc::ETXTBSY,
            kind: io::ErrorKind::PermissionDenied,
        }
        .into();
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            (io::ErrorKind::PermissionDenied, "it is a running program")
        );
    }
}
