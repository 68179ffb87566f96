//! How the engine finds volumes by path (`Opener`: files and block devices for the daemon,
//! `FileOpener` in `file`; a table of memory volumes for tests), and the engine's checked
//! opening of a set's volumes.

mod file;

pub use file::FileOpener;

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::error::{self, invalid, not_found, Error, Kind, Result};
use super::volume::Volume;
use super::Engine;

/// How the engine finds volumes by path: files for the daemon, memory for tests.
pub trait Opener: Send + Sync {
    fn open(&self, path: &str) -> io::Result<Arc<dyn Volume>>;
    /// Open, or make the volume if it is missing and can be made (a bitmap file); true when
    /// it was made.
    fn create(&self, path: &str) -> io::Result<(Arc<dyn Volume>, bool)> {
        Ok((self.open(path)?, false))
    }
    /// Grow the volume to `len` bytes if it can (regular files); false if it cannot.
    fn grow(&self, path: &str, len: u64) -> io::Result<bool>;
    /// Give a grown volume its old length back (a refused enable changes nothing).
    fn shrink(&self, _path: &str, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// The identity of the volume at `path`, without keeping it open (an exported shadow
    /// another process may hold).
    fn identify(&self, path: &str) -> io::Result<super::volume::VolumeId> {
        self.open(path).map(|v| v.id())
    }
    /// Remove a volume `create` made (a refused enable changes nothing).
    fn remove(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }
}

/// The longest name of one path component Linux file systems take.
const NAME_MAX: usize = 255;

impl Engine {
    pub(super) fn open_volume(&self, role: &str, path: &str) -> Result<Arc<dyn Volume>> {
        Ok(self.open_or_create(role, path, false)?.0)
    }

    /// Open the `role` volume at `path`; with `create`, a missing file is made (mode 0600), and
    /// true says so.
    pub(super) fn open_or_create(
        &self,
        role: &str,
        path: &str,
        create: bool,
    ) -> Result<(Arc<dyn Volume>, bool)> {
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "the {role} volume must be an absolute path: {path}"
            )));
        }
        let longest = Path::new(path)
            .components()
            .map(|c| c.as_os_str().len())
            .max()
            .unwrap_or(0);
        if path.len() >= libc::PATH_MAX as usize || longest > NAME_MAX {
            return Err(invalid(format!(
                "the {role} volume path is too long for the system ({} bytes, a name of \
                 {longest}; at most {} bytes, {NAME_MAX} per name): {}...",
                path.len(),
                libc::PATH_MAX - 1,
                path.chars().take(64).collect::<String>()
            )));
        }
        let opened = if create {
            self.opener.create(path)
        } else {
            self.opener.open(path).map(|v| (v, false))
        };
        opened.map_err(|e| {
            // The opener's own sentence, where it has one, says more than the errno.
            let said = e.get_ref().map(|m| m.to_string());
            let say = |plain: &str| match &said {
                Some(m) => format!("{role} volume {path}: {m}"),
                None => format!("{role} volume {path} {plain}"),
            };
            match e.kind() {
                io::ErrorKind::NotFound => not_found(say("does not exist")),
                io::ErrorKind::PermissionDenied => Error::new(
                    Kind::Access,
                    say("cannot be opened for reading and writing: permission denied"),
                ),
                io::ErrorKind::ResourceBusy => error::busy(say("is in use")),
                _ if e.raw_os_error() == Some(libc::EISDIR) => invalid(format!(
                    "{role} volume {path} is a directory, not a regular file or block device"
                )),
                _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => invalid(format!(
                    "{role} volume {path}: the path is too long for the system"
                )),
                io::ErrorKind::InvalidInput => {
                    invalid(say("is not a regular file or block device"))
                }
                _ => Error::io(format!("open of {role} volume {path}"), &e),
            }
        })
    }
}
