//! Mounting: iifs opens /dev/fuse and calls mount(2) itself with type `fuse.iifs`, so the
//! mount shows up as `fuse.iifs` in /proc/mounts (what iiadm and mount(8) look for).

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fuser::{Config, Session, SessionACL};

use crate::config::Settings;
use crate::fs::IifsFs;

pub fn mount(
    fs: IifsFs,
    mountpoint: &Path,
    settings: &Settings,
) -> Result<Session<IifsFs>, String> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e} (is the fuse module loaded?)"))?;
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
    let c = |s: &[u8]| CString::new(s).map_err(|_| "path contains a NUL byte".to_string());
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
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "cannot mount at {}: {e} (iifs must run as root)",
            mountpoint.display()
        ));
    }
    let mut config = Config::default();
    config.n_threads = Some(settings.threads);
    config.clone_fd = settings.threads > 1;
    let acl = if settings.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    Session::from_fd(fs, fd, acl, config).map_err(|e| {
        unmount(mountpoint);
        format!("FUSE handshake failed: {e}")
    })
}

/// Unmount; if something (a loop device) keeps the mount busy, detach it lazily.
pub fn unmount(mountpoint: &Path) {
    let Ok(target) = CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
        return;
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
}
