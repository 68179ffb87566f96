//! One error type for the engine: a small, stable kind (mapped 1:1 to an errno at the FUSE
//! boundary), a sentence a person can act on, where it happened as fields (set, volume, chunk,
//! offset, operation) and the I/O error behind it. Also the typed faults the volume layer puts
//! inside `io::Error`s (`VolumeFault`).

use std::fmt;
use std::io;
use std::sync::Arc;

mod fault;
pub use fault::{fault_of, OpenRefusal, VolumeFault};

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
    /// A compact set's overflow volume (its `overflow` file; failures of it are the shadow's).
    Overflow,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Shadow => "shadow",
            Role::Bitmap => "bitmap",
            Role::Overflow => "overflow",
        })
    }
}

/// Where an error happened, as fields a caller can read (which set, which file, which chunk,
/// which byte, doing what) instead of parsing the sentence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The set the error concerns.
    pub set: Option<String>,
    /// The path of the volume (or other file) concerned.
    pub path: Option<String>,
    /// The chunk concerned.
    pub chunk: Option<u64>,
    /// The byte offset on the volume concerned.
    pub offset: Option<u64>,
    /// What was being done ("read", "sync"...).
    pub operation: Option<String>,
}

/// An engine error: what kind of refusal it is, the message proper, where it happened
/// (`Context`, `volume`) and the I/O error behind it, if any (`source`).
///
/// The sentence for the ctl reply and the log (`Display`) is composed as:
/// - with a set, the set is the subject: `set NAME` followed by the message as its predicate
///   (`set a needs 5 MiB ...`), or by `: ` and the location when there is one;
/// - the location: `OPERATION of ROLE PATH chunk N at byte O`, each part only when known;
/// - then `: ` and the message (after a location), and `: ` and the source.
///
/// So `Error::io("read of master /m", &e)` reads `read of master /m: ` and then `e`, as does
/// `Error::new(Kind::Io, "").during("read").on_volume(Role::Master, "/m").with_source(e)`.
/// `message` is written by the builders only: setting it by hand would part it from the fields.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Error {
    pub kind: Kind,
    /// The whole sentence, as `Display` writes it (kept up to date by every builder), for code
    /// that reads it as a field. The message proper is `what()`.
    pub message: String,
    /// The volume of the set that failed, for I/O errors where it is known: it decides what
    /// `reset` must rebuild.
    pub volume: Option<Role>,
    what: String,
    /// Boxed: an error is returned through every `Result` of the engine, and most carry none.
    context: Box<Context>,
    /// The I/O error behind this one. Shared, so that an error can be cloned (a set keeps the
    /// reason it went offline and reports it to every later caller).
    #[source]
    source: Option<Arc<io::Error>>,
    /// The message says the source already (in the middle of the sentence): not appended.
    source_said: bool,
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        let source = |e: &Error| {
            e.source
                .as_ref()
                .map(|s| (s.kind(), s.raw_os_error(), s.to_string()))
        };
        (
            self.kind,
            &self.message,
            self.volume,
            &self.what,
            &self.context,
        ) == (
            other.kind,
            &other.message,
            other.volume,
            &other.what,
            &other.context,
        ) && source(self) == source(other)
    }
}

impl Eq for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        let what = message.into();
        Error {
            kind,
            message: what.clone(),
            volume: None,
            what,
            context: Box::default(),
            source: None,
            source_said: false,
        }
    }

    /// An I/O failure of a backing volume, with what was being done. The source is a copy of
    /// `err` (same kind, errno and text); `with_source` keeps the error itself.
    pub fn io(context: impl fmt::Display, err: &io::Error) -> Self {
        Error::new(Kind::Io, context.to_string()).with_source(copy_of(err))
    }

    /// An I/O failure of the set's `role` volume.
    pub fn io_on(role: Role, context: impl fmt::Display, err: &io::Error) -> Self {
        Error {
            volume: Some(role),
            ..Error::io(context, err)
        }
    }

    /// The error concerns set `name` (the subject of the sentence).
    pub fn in_set(mut self, name: impl Into<String>) -> Self {
        self.context.set = Some(name.into());
        self.composed()
    }

    /// The error concerns the set's `role` volume, at `path`.
    pub fn on_volume(mut self, role: Role, path: impl Into<String>) -> Self {
        self.volume = Some(role);
        self.on_path(path)
    }

    /// The error concerns the file at `path` (a volume whose role is not known here).
    pub fn on_path(mut self, path: impl Into<String>) -> Self {
        self.context.path = Some(path.into());
        self.composed()
    }

    /// The error concerns chunk `n`.
    pub fn at_chunk(mut self, n: u64) -> Self {
        self.context.chunk = Some(n);
        self.composed()
    }

    /// The error concerns byte `offset` of the volume.
    pub fn at_offset(mut self, offset: u64) -> Self {
        self.context.offset = Some(offset);
        self.composed()
    }

    /// The error happened during `operation` ("read", "sync"...).
    pub fn during(mut self, operation: impl Into<String>) -> Self {
        self.context.operation = Some(operation.into());
        self.composed()
    }

    /// The I/O error behind this one.
    pub fn with_source(mut self, err: io::Error) -> Self {
        self.source = Some(Arc::new(err));
        self.composed()
    }

    /// The I/O error behind this one, which the message says already (for a sentence that
    /// goes on after it): kept as the source, not appended.
    pub fn with_source_said(mut self, err: io::Error) -> Self {
        self.source_said = true;
        self.with_source(err)
    }

    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// The message proper, without the context and the source.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Where the error happened.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The I/O error behind this one, if any.
    pub fn io_source(&self) -> Option<&io::Error> {
        self.source.as_deref()
    }

    /// The location phrase: `OPERATION of ROLE PATH chunk N at byte O`, parts left out when not
    /// known.
    fn location(&self) -> String {
        let c = &self.context;
        let mut words = Vec::new();
        if let Some(op) = &c.operation {
            words.push(format!("{op} of"));
        }
        if let (Some(role), Some(_)) = (self.volume, &c.path) {
            words.push(role.to_string());
        }
        if let Some(p) = &c.path {
            words.push(p.clone());
        }
        if let Some(n) = c.chunk {
            words.push(format!("chunk {n}"));
        }
        if let Some(o) = c.offset {
            words.push(format!("at byte {o}"));
        }
        words.join(" ")
    }

    /// Compose the sentence (see the type's comment) into `message`.
    fn composed(mut self) -> Self {
        let location = self.location();
        let mut s = match &self.context.set {
            Some(set) if location.is_empty() && self.what.is_empty() => format!("set {set}"),
            Some(set) if location.is_empty() => format!("set {set} {}", self.what),
            Some(set) => format!("set {set}: {location}"),
            None => location.clone(),
        };
        if !location.is_empty() || self.context.set.is_none() {
            join(&mut s, &self.what);
        }
        if let Some(source) = self.source.as_ref().filter(|_| !self.source_said) {
            join(&mut s, &source.to_string());
        }
        self.message = s;
        self
    }
}

/// Append `part` to the sentence `s`, after `: ` unless one of them is empty.
fn join(s: &mut String, part: &str) {
    if !s.is_empty() && !part.is_empty() {
        s.push_str(": ");
    }
    s.push_str(part);
}

/// An owned copy of an I/O error seen by reference: the same kind, errno and text. Typed
/// details this crate puts in I/O errors (`VolumeFault`, `OpenRefusal`) are kept as they are.
pub fn copy_of(err: &io::Error) -> io::Error {
    if let Some(code) = err.raw_os_error() {
        return io::Error::from_raw_os_error(code);
    }
    match err.get_ref() {
        Some(inner) => {
            if let Some(fault) = inner.downcast_ref::<VolumeFault>() {
                io::Error::new(err.kind(), fault.clone())
            } else if let Some(refusal) = inner.downcast_ref::<OpenRefusal>() {
                io::Error::new(err.kind(), refusal.clone())
            } else {
                io::Error::new(err.kind(), inner.to_string())
            }
        }
        None => io::Error::from(err.kind()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn eio() -> io::Error {
        io::Error::from_raw_os_error(libc::EIO)
    }

    #[test]
    fn the_old_helpers_read_as_before_and_keep_the_source() {
        let e = Error::io_on(Role::Master, "read of master /m", &eio());
        assert_eq!(e.to_string(), format!("read of master /m: {}", eio()));
        assert_eq!(e.message, e.to_string());
        assert_eq!(
            (e.kind, e.volume, e.errno()),
            (Kind::Io, Some(Role::Master), libc::EIO)
        );
        let source = std::error::Error::source(&e).expect("source");
        assert_eq!(source.to_string(), eio().to_string());
        assert_eq!(
            e.io_source().and_then(io::Error::raw_os_error),
            Some(libc::EIO)
        );
        let e = busy("a copy is in progress");
        assert_eq!(
            (e.to_string().as_str(), e.what()),
            ("a copy is in progress", "a copy is in progress")
        );
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn the_sentence_is_composed_from_the_context() {
        let e = Error::new(Kind::Io, "")
            .during("read")
            .on_volume(Role::Shadow, "/s")
            .at_offset(4096)
            .with_source(eio());
        assert_eq!(
            e.to_string(),
            format!("read of shadow /s at byte 4096: {}", eio())
        );
        assert_eq!(e.context().offset, Some(4096));
        assert_eq!(e.volume, Some(Role::Shadow));
        let e = not_permitted("is offline").in_set("a");
        assert_eq!(e.to_string(), "set a is offline");
        assert_eq!(e.context().set.as_deref(), Some("a"));
        let e = Error::new(Kind::Io, "not yet restored")
            .in_set("a")
            .on_path("/m")
            .at_chunk(7);
        assert_eq!(e.to_string(), "set a: /m chunk 7: not yet restored");
        assert_eq!(e.clone(), e);
    }

    #[test]
    fn a_copied_source_keeps_typed_faults() {
        let e = VolumeFault::Shrank { eof: 1, len: 2 }.into_io(io::ErrorKind::UnexpectedEof);
        let copy = copy_of(&e);
        assert_eq!(copy.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            fault_of(&copy),
            Some(&VolumeFault::Shrank { eof: 1, len: 2 })
        );
        assert_eq!(copy.to_string(), e.to_string());
        let r: io::Error = OpenRefusal::NoSuchDevice.into();
        assert_eq!(r.kind(), io::ErrorKind::NotFound);
        let copy = copy_of(&r);
        assert_eq!(copy.to_string(), r.to_string());
        assert!(copy.get_ref().is_some_and(|i| i.is::<OpenRefusal>()));
        let plain = io::Error::other("plain");
        assert_eq!(copy_of(&plain).to_string(), "plain");
        let kind_only = io::Error::from(io::ErrorKind::WriteZero);
        assert_eq!(copy_of(&kind_only).to_string(), kind_only.to_string());
    }
}
