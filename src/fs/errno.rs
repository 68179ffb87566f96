//! What the file system answers a failed request with, in one place: a controller error by its
//! kind (each kind has exactly one errno: `Kind::errno`), a failed system call on a backing
//! file by the errno that call gave.

use fuser::Errno;

use crate::control::Error;

/// The errno of a refusal or failure of the controller.
pub fn of(e: &Error) -> Errno {
    Errno::from_i32(e.kind.errno())
}

/// The errno of a failed system call on a backing file.
pub fn of_io(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}
