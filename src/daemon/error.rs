//! Why the daemon cannot start or serve: one type for start-up and the session, with the I/O
//! error (or the settings or registry error) behind each kept as its source.

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot block signals")]
    Signals,
    #[error("cannot create state dir {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the lock file {}: {source}", path.display())]
    LockFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another daemon (`holder`: "pid N mounted at M", as it wrote it) holds the state dir.
    #[error(
        "state dir {} is in use by {} ({}): one daemon per state dir; stop it, or give this one \
         another state_dir=",
        dir.display(),
        match holder {
            Some(h) => format!("the iifs daemon {h}"),
            None => "another iifs daemon".to_string(),
        },
        io::Error::from_raw_os_error(libc::EBUSY)
    )]
    StateDirBusy {
        dir: PathBuf,
        holder: Option<String>,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open /dev/fuse: {source} (is the fuse module loaded?)")]
    FuseDevice {
        #[source]
        source: io::Error,
    },
    #[error("path contains a NUL byte")]
    NulInPath,
    #[error("cannot mount at {}: {source} (iifs must run as root)", mountpoint.display())]
    Mount {
        mountpoint: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("FUSE handshake failed: {source}")]
    Handshake {
        #[source]
        source: io::Error,
    },
    #[error("FUSE session ended: {source}")]
    SessionEnded {
        #[source]
        source: io::Error,
    },
}
