//! Reading /proc/self/mounts: which mountpoints carry an iifs control tree, and resolving a
//! path without looking inside one.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed in one path before giving up, as the kernel does.
const MAX_LINKS: usize = 40;

/// The iifs mounts of this mount namespace (none when /proc cannot be read).
pub fn iifs_mountinfo() -> Vec<MountInfo> {
    mountinfo()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.fstype == FSTYPE)
        .collect()
}

/// `path` with every symbolic link resolved, never looking inside an iifs mount: each
/// component is checked against the iifs mounts among `mounts` before it is looked up, and one
/// inside is refused with `inside(mountpoint)`. (Its I/O would be served by an iifs daemon,
/// perhaps the caller, whose threads may all be waiting for it.) A missing component ends the
/// walk with the rest appended as it is: what opens the result then says what is missing.
pub fn resolve_outside(
    path: &Path,
    mounts: &[MountInfo],
    inside: impl Fn(&Path) -> io::Error,
) -> io::Result<PathBuf> {
    fn push(todo: &mut Vec<OsString>, p: &Path) {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_os_string()),
                Component::ParentDir => todo.push("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    }
    let mut done = PathBuf::from("/");
    let mut todo = Vec::new();
    push(&mut todo, path);
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&c);
        if let Some(m) = mounts
            .iter()
            .find(|m| m.fstype == FSTYPE && next.starts_with(&m.target))
        {
            return Err(inside(&m.target));
        }
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs::read_link(&next)?;
                if target.is_absolute() {
                    done = PathBuf::from("/");
                }
                push(&mut todo, &target);
            }
            Ok(_) => done = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                done = next;
                for rest in todo.iter().rev() {
                    done.push(rest);
                }
                return Ok(done);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The file system type iifs mounts with (mount(8) and iiadm look for it).
pub const FSTYPE: &str = "fuse.iifs";

/// The mountpoints of type `fuse.iifs` in a /proc/self/mounts text.
pub fn iifs_mounts(mounts: &str) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_src, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == FSTYPE).then(|| PathBuf::from(OsString::from_vec(unescape(target))))
        })
        .collect()
}

/// The iifs mountpoints of this system now (none when /proc cannot be read).
pub fn current() -> std::io::Result<Vec<PathBuf>> {
    Ok(iifs_mounts(&std::fs::read_to_string("/proc/self/mounts")?))
}

/// One line of /proc/self/mountinfo: the device number its files report as `st_dev`, where it
/// is mounted, and its file system type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub dev: (u32, u32),
    pub target: PathBuf,
    pub fstype: String,
}

/// The mounts of a /proc/self/mountinfo text (lines that do not parse are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            let target = PathBuf::from(OsString::from_vec(unescape(f.get(4)?)));
            // Optional fields end with a lone "-"; the file system type follows it.
            let dash = f.iter().skip(6).position(|x| *x == "-")? + 6;
            Some(MountInfo {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                target,
                fstype: f.get(dash + 1)?.to_string(),
            })
        })
        .collect()
}

/// The mounts of this process's mount namespace now.
pub fn mountinfo() -> std::io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// /proc/self/mounts (and mountinfo) escapes space, tab, newline and backslash as \ooo (octal).
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if octal {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
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

    #[test]
    fn mountinfo_gives_device_target_and_type() {
        let text = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                    40 36 0:52 / /mnt/ii rw,nosuid - fuse.iifs iifs rw,user_id=0\n\
                    bad line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, (98, 0));
        assert_eq!(m[0].target, PathBuf::from("/mnt/a b"));
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!((m[1].dev, m[1].fstype.as_str()), ((0, 52), FSTYPE));
    }

    #[test]
    fn fields_are_unescaped() {
        assert_eq!(unescape("/mnt/ii"), b"/mnt/ii");
        assert_eq!(unescape("/mnt/a\\040b\\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape("/x\\04"), b"/x\\04");
    }
}
