//! One error type for the engine: a small, stable kind (mapped 1:1 to an errno at the FUSE
//! boundary) plus a sentence a person can act on.

use std::fmt;
use std::io;

/// The kind of a refusal or failure. Each maps to exactly one errno (see `Kind::errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Malformed command or argument, or sizes that do not fit (EINVAL).
    Invalid,
    /// A named volume or set is missing (ENOENT).
    NotFound,
    /// The name or volume is already taken (EEXIST).
    Exists,
    /// A copy is in progress or the volume is in use (EBUSY).
    Busy,
    /// The set's state forbids the operation (EPERM).
    NotPermitted,
    /// No space left (ENOSPC), for example a write past the end of a volume.
    NoSpace,
    /// The backing storage failed (EIO).
    Io,
    /// The daemon may not open or write a volume (EACCES).
    Access,
    /// A set would need more memory than the daemon can have (ENOMEM).
    NoMemory,
    /// A size the file system or the format cannot hold (EFBIG).
    TooBig,
}

impl Kind {
    /// The errno that reports this kind of error.
    pub fn errno(self) -> i32 {
        match self {
            Kind::Invalid => libc::EINVAL,
            Kind::NotFound => libc::ENOENT,
            Kind::Exists => libc::EEXIST,
            Kind::Busy => libc::EBUSY,
            Kind::NotPermitted => libc::EPERM,
            Kind::NoSpace => libc::ENOSPC,
            Kind::Io => libc::EIO,
            Kind::Access => libc::EACCES,
            Kind::NoMemory => libc::ENOMEM,
            Kind::TooBig => libc::EFBIG,
        }
    }
}

/// Which volume of a set an I/O failure concerns: it decides what `reset` must rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Shadow,
    Bitmap,
}

/// An engine error: what kind of refusal it is and a message for the ctl reply and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    /// The volume that failed, for I/O errors where it is known.
    pub volume: Option<Role>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            volume: None,
        }
    }

    /// An I/O failure of a backing volume, with what was being done.
    pub fn io(context: impl fmt::Display, err: &io::Error) -> Self {
        Error::new(Kind::Io, format!("{context}: {err}"))
    }

    /// An I/O failure of the set's `role` volume.
    pub fn io_on(role: Role, context: impl fmt::Display, err: &io::Error) -> Self {
        Error {
            volume: Some(role),
            ..Error::io(context, err)
        }
    }

    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand constructors, so call sites read as the refusal they make.
pub fn invalid(message: impl Into<String>) -> Error {
    Error::new(Kind::Invalid, message)
}
pub fn not_found(message: impl Into<String>) -> Error {
    Error::new(Kind::NotFound, message)
}
pub fn exists(message: impl Into<String>) -> Error {
    Error::new(Kind::Exists, message)
}
pub fn busy(message: impl Into<String>) -> Error {
    Error::new(Kind::Busy, message)
}
pub fn not_permitted(message: impl Into<String>) -> Error {
    Error::new(Kind::NotPermitted, message)
}
