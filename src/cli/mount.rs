//! Which iifs mount to talk to: --mount, IIFS_MOUNT, or the only `fuse.iifs` mount.

use std::path::{Path, PathBuf};

use super::Failure;

/// Resolve the mount: an explicit one must be an iifs control tree.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(dir) = explicit {
        if let Err(e) = std::fs::metadata(dir.join("version")) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(Failure::new(format!(
                    "{}: permission denied: this iifs mount lets in only the user who mounted \
                     it (it was mounted without -o allow_other)",
                    dir.display()
                )));
            }
        }
        return if is_control_tree(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(Failure::new(format!(
                "{} is not an iifs mount (no ctl and version files there); start one with 'iifs none {}'",
                dir.display(),
                dir.display()
            )))
        };
    }
    let found = crate::mounts::current()
        .map_err(|e| Failure::new(format!("cannot read /proc/self/mounts: {e}")))?;
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::new(
            "no iifs mount found: start one with 'iifs none /mnt/ii', or name it with --mount DIR or IIFS_MOUNT",
        )),
        many => Err(Failure::new(format!(
            "several iifs mounts ({}): choose one with --mount DIR or IIFS_MOUNT",
            many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn is_control_tree(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("version")).is_ok_and(|v| v.starts_with("iifs "))
        && dir.join("ctl").exists()
}
