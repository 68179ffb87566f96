//! One daemon per state dir: the daemon holds an exclusive lock on `iifs.lock` in its state
//! dir for its whole life. A second daemon on the same state dir would bring back the same
//! sets and write their volumes around the first one's copy-on-write.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::DaemonError;

/// The lock file's name in the state dir; it holds the pid and mountpoint of its holder.
pub const LOCK_FILE: &str = "iifs.lock";

/// Lock the state dir `dir` (creating it if needed) for this process, or say who holds it
/// (EBUSY). Keep the returned file open as long as the daemon runs.
pub fn lock_state_dir(dir: &Path, mountpoint: &Path) -> Result<File, DaemonError> {
    crate::registry::private_dir(dir).map_err(|source| DaemonError::StateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(|source| DaemonError::LockFile {
            path: path.clone(),
            source,
        })?;
    match crate::engine::volume::try_lock_exclusive(&file) {
        Ok(true) => {}
        Ok(false) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(DaemonError::StateDirBusy {
                dir: dir.to_path_buf(),
                holder: (!holder.is_empty()).then(|| holder.to_string()),
            });
        }
        Err(source) => return Err(DaemonError::Lock { path, source }),
    }
    let me = format!(
        "pid {} mounted at {}\n",
        std::process::id(),
        mountpoint.display()
    );
    let written = file
        .set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(me.as_bytes()));
    if let Err(e) = written {
        log::warn!("cannot write the holder into {}: {e}", path.display());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_state_dir(dir.path(), Path::new("/mnt/a")).unwrap();
        let err = lock_state_dir(dir.path(), Path::new("/mnt/b"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("/mnt/a") && err.contains("busy"), "{err}");
        drop(first);
        lock_state_dir(dir.path(), Path::new("/mnt/b")).unwrap();
    }
}
