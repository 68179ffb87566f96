//! Which iifs mount to talk to: --mount, IIFS_MOUNT, or the only `fuse.iifs` mount.

use std::path::{Path, PathBuf};

use super::Failure;

/// The mountpoints of type `fuse.iifs` in a /proc/self/mounts text.
pub fn iifs_mounts(mounts: &str) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_src, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "fuse.iifs").then(|| PathBuf::from(unescape(target)))
        })
        .collect()
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolve the mount: an explicit one must be an iifs control tree.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(dir) = explicit {
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
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| Failure::new(format!("cannot read /proc/self/mounts: {e}")))?;
    let found = iifs_mounts(&mounts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_iifs_mounts_only_and_unescapes_spaces() {
        let text = "iifs /mnt/ii fuse.iifs rw,nosuid,nodev 0 0\n\
                    proc /proc proc rw 0 0\n\
                    iifs /mnt/with\\040space fuse.iifs rw 0 0\n\
                    other /x fuse.sshfs rw 0 0\n";
        assert_eq!(
            iifs_mounts(text),
            vec![PathBuf::from("/mnt/ii"), PathBuf::from("/mnt/with space")]
        );
        assert!(iifs_mounts("").is_empty());
    }
}
