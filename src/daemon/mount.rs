//! Mounting: iifs opens /dev/fuse and calls mount(2) itself with type `fuse.iifs`, so the
//! mount shows up as `fuse.iifs` in /proc/mounts (what iiadm and mount(8) look for).

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use fuser::{Config, Session, SessionACL};

use super::error::DaemonError;
use crate::config::Settings;
use crate::fs::IifsFs;

pub fn mount(
    mut fs: IifsFs,
    mountpoint: &Path,
    settings: &Settings,
) -> Result<Session<IifsFs>, DaemonError> {
    fs.set_passthrough(settings.passthrough);
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|source| DaemonError::FuseDevice { source })?;
    let fd: OwnedFd = dev.into();
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid}",
        fd.as_raw_fd()
    );
    // Always: the kernel checks the modes and owners the tree shows (see `crate::fs`).
    // Without it, every user that `allow_other` lets in would act as the daemon's user (root).
    data.push_str(",default_permissions");
    if settings.allow_other {
        data.push_str(",allow_other");
    }
    let c = |s: &[u8]| CString::new(s).map_err(|_| DaemonError::NulInPath);
    let target = c(mountpoint.as_os_str().as_bytes())?;
    let source = c(b"iifs")?;
    let fstype = c(crate::mounts::FSTYPE.as_bytes())?;
    let data = c(data.as_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(DaemonError::Mount {
            mountpoint: mountpoint.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    let mut config = Config::default();
    config.n_threads = Some(settings.threads);
    config.clone_fd = settings.threads > 1;
    let acl = if settings.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    Session::from_fd(fs, fd, acl, config).map_err(|source| {
        unmount(mountpoint);
        DaemonError::Handshake { source }
    })
}

/// Set once the FUSE session loop has returned.
static SESSION_ENDED: AtomicBool = AtomicBool::new(false);

/// Held by the signal thread while it unmounts or aborts: ending the session is what it is
/// after, and the daemon must not exit under it before it has finished (a mount it made for
/// the moment would be left behind).
static STOPPING: Mutex<()> = Mutex::new(());

fn stopping() -> MutexGuard<'static, ()> {
    STOPPING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Record that the FUSE session has ended, and wait for the signal thread's unmount to finish.
pub fn session_ended() {
    SESSION_ENDED.store(true, Ordering::SeqCst);
    drop(stopping());
}

/// Stop serving, on SIGTERM/SIGINT/SIGHUP: unmount, so the FUSE session ends and the daemon
/// shuts its sets down cleanly. Unmounting here does not end the session while another mount
/// of the same file system lives on (a copy in another mount namespace made by `unshare -m`,
/// `ip netns exec` or systemd's `PrivateTmp=`, or a bind mount): the kernel keeps the
/// connection for it and the daemon would wait forever. Then the connection is aborted
/// (`MNT_FORCE`): the session ends, and the other mounts answer ENOTCONN. A holder the search
/// cannot see is dealt with when the session has not ended a while after the unmount.
///
/// A mount kept busy by control files alone (a process holding `events` or a ctl file open
/// without reading, `iiadm --watch | less` left behind) is not worth serving on for: when no
/// data file is open (`data_open`), the connection is aborted after the lazy unmount.
pub fn stop(mountpoint: &Path, data_open: bool) {
    let busy = stopping();
    let Some(device) = device_of(mountpoint) else {
        // Not mounted here any more (`umount -l` by hand): the session ends on its own.
        unmount(mountpoint);
        return;
    };
    let Some(holder) = held_elsewhere(&device, mountpoint) else {
        if unmount(mountpoint) {
            drop(busy);
            abort_if_still_held(&device);
        } else if !data_open {
            drop(busy);
            log::warn!("only control files keep the mount busy: ending the FUSE session");
            abort_connection(&device);
        }
        return;
    };
    log::warn!(
        "{} is also mounted {holder}: ending the FUSE session (the mounts there will answer \
         ENOTCONN; `umount` stops iifs only where no other mount namespace holds its mount)",
        mountpoint.display()
    );
    let Ok(target) = CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: valid NUL-terminated path. MNT_FORCE aborts the FUSE connection first; with
    // MNT_DETACH the mount here goes too, even when it is busy here as well.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_FORCE | libc::MNT_DETACH) } != 0 {
        log::error!(
            "forced unmount of {} failed: {}",
            mountpoint.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// The device number (`MAJOR:MINOR`) of the iifs mount at `mountpoint` in this namespace,
/// from /proc/self/mountinfo (which asks nothing of the file system itself).
fn device_of(mountpoint: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mountpoint.as_os_str().as_bytes();
    // The last one: a mount over an older one at the same place hides it.
    text.lines()
        .rev()
        .filter_map(MountInfo::parse)
        .find(|m| m.fstype == crate::mounts::FSTYPE && m.target == want)
        .map(|m| m.device.to_string())
}

/// Where else the file system with `device` is mounted, as words for the log: another mount
/// of it in this namespace, or one in another mount namespace (found through a process
/// living there; a namespace that no process is in is not seen).
fn held_elsewhere(device: &str, mountpoint: &Path) -> Option<String> {
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    let own = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mountpoint.as_os_str().as_bytes();
    let here = own
        .lines()
        .filter_map(MountInfo::parse)
        .find(|m| m.device == device && m.fstype == crate::mounts::FSTYPE && m.target != want);
    if let Some(m) = here {
        return Some(format!(
            "at {} in this mount namespace",
            String::from_utf8_lossy(&m.target)
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(ns) = std::fs::read_link(entry.path().join("ns/mnt")) else {
            continue;
        };
        if ns == ours || !seen.insert(ns) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path().join("mountinfo")).unwrap_or_default();
        let held = text
            .lines()
            .filter_map(MountInfo::parse)
            .any(|m| m.device == device && m.fstype == crate::mounts::FSTYPE);
        if held {
            return Some(format!(
                "in another mount namespace (that of process {pid})"
            ));
        }
    }
    None
}

/// After a clean unmount the session normally ends at once. If it has not after a while, a
/// mount the search above could not see holds the file system (a mount namespace that no
/// process is in, kept by a bind mount of its /proc/PID/ns/mnt): abort the connection through
/// the fuse control file system, mounting it for the moment when it is not (containers).
fn abort_if_still_held(device: &str) {
    std::thread::sleep(std::time::Duration::from_secs(3));
    if !SESSION_ENDED.load(Ordering::SeqCst) {
        log::warn!("the FUSE session did not end after the unmount (another mount holds it)");
        abort_connection(device);
    }
}

/// Abort the FUSE connection of `device` through the fuse control file system (mounted for
/// the moment when it is not): the session ends, and what still holds the mount gets ENOTCONN.
fn abort_connection(device: &str) {
    let _busy = stopping();
    // Once the session has ended the connection number may already belong to another mount.
    if SESSION_ENDED.load(Ordering::SeqCst) {
        return;
    }
    const CONNECTIONS: &str = "/sys/fs/fuse/connections";
    let minor = device.rsplit(':').next().unwrap_or_default();
    let abort = format!("{CONNECTIONS}/{minor}/abort");
    let mounted_here = !Path::new(&abort).exists() && mount_fusectl(CONNECTIONS);
    // Said first: once the write lands the session ends and the daemon exits at once.
    log::warn!("aborting the connection through {abort}");
    let written = std::fs::write(&abort, "1");
    if mounted_here {
        if let Ok(c) = CString::new(CONNECTIONS) {
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), 0) };
        }
    }
    if let Err(e) = written {
        log::error!(
            "cannot abort the FUSE connection ({e}): unmount the other mount, or run \
             `echo 1 > {abort}` with the fuse control file system mounted"
        );
    }
}

/// Mount the fuse control file system at `dir`; whether it worked.
fn mount_fusectl(dir: &str) -> bool {
    let (Ok(source), Ok(target)) = (CString::new("fusectl"), CString::new(dir)) else {
        return false;
    };
    // SAFETY: valid NUL-terminated strings; no data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    rc == 0
}

/// The fields of a /proc/PID/mountinfo line that tell which file system is mounted where.
struct MountInfo<'a> {
    device: &'a str,
    target: Vec<u8>,
    fstype: &'a str,
}

impl<'a> MountInfo<'a> {
    /// `ID PARENT MAJOR:MINOR ROOT TARGET OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`
    fn parse(line: &'a str) -> Option<MountInfo<'a>> {
        let (left, right) = line.split_once(" - ")?;
        let mut f = left.split(' ');
        let device = f.nth(2)?;
        let target = crate::mounts::unescape(f.nth(1)?);
        let fstype = right.split(' ').next()?;
        Some(MountInfo {
            device,
            target,
            fstype,
        })
    }
}

/// Unmount; if something (a loop device) keeps the mount busy, detach it lazily (the daemon
/// then serves those users until they let go). Returns whether the plain unmount worked.
pub fn unmount(mountpoint: &Path) -> bool {
    let Ok(target) = CString::new(mountpoint.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
        return true;
    }
    let e = std::io::Error::last_os_error();
    log::warn!(
        "unmount of {} failed ({e}); detaching lazily",
        mountpoint.display()
    );
    // SAFETY: as above.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        log::error!(
            "lazy unmount of {} failed: {}",
            mountpoint.display(),
            std::io::Error::last_os_error()
        );
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_target_and_type() {
        let l = "36 25 0:52 / /mnt/with\\040space rw,nosuid,nodev shared:7 - fuse.iifs iifs rw";
        let m = MountInfo::parse(l).expect("parses");
        assert_eq!(
            (m.device, m.target.as_slice(), m.fstype),
            ("0:52", b"/mnt/with space".as_slice(), "fuse.iifs")
        );
        let l = "22 1 8:1 / / rw - ext4 /dev/vda rw";
        assert_eq!(MountInfo::parse(l).map(|m| m.fstype), Some("ext4"));
        assert!(MountInfo::parse("garbage").is_none());
    }
}
