//! Process plumbing: detaching with a readiness pipe, logging, signals, PR_SET_IO_FLUSHER.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use crate::config::Settings;

/// Tells whoever waits for us (the parent process, systemd) that the mount is live or failed.
pub struct Readiness {
    pipe: Mutex<Option<File>>,
}

pub enum Detached {
    Parent(ExitCode),
    Child(Readiness),
}

impl Readiness {
    pub fn foreground() -> Readiness {
        Readiness {
            pipe: Mutex::new(None),
        }
    }

    pub fn ready(&self) {
        self.send(b"ok");
        sd_notify("READY=1");
    }

    pub fn failed(&self, message: &str) {
        self.send(message.as_bytes());
    }

    fn send(&self, msg: &[u8]) {
        if let Ok(mut p) = self.pipe.lock() {
            if let Some(mut f) = p.take() {
                let _ = f.write_all(msg);
            }
        }
    }
}

/// Fork; the parent waits for the child's word and exits with it.
pub fn detach() -> std::io::Result<Detached> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: called before any thread is started, so the child is a full copy.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            // SAFETY: fds come from pipe2 above and are owned here.
            unsafe { libc::close(fds[0]) };
            let pipe = unsafe { File::from_raw_fd(fds[1]) };
            // SAFETY: plain system calls on our own process.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                    if null > 2 {
                        libc::close(null);
                    }
                }
            }
            let _ = std::env::set_current_dir("/");
            Ok(Detached::Child(Readiness {
                pipe: Mutex::new(Some(pipe)),
            }))
        }
        _ => {
            // SAFETY: as above.
            unsafe { libc::close(fds[1]) };
            let mut pipe = unsafe { File::from_raw_fd(fds[0]) };
            let mut msg = String::new();
            let _ = pipe.read_to_string(&mut msg);
            if msg == "ok" {
                Ok(Detached::Parent(ExitCode::SUCCESS))
            } else {
                let msg = if msg.is_empty() {
                    "the daemon exited before mounting".into()
                } else {
                    msg
                };
                report_error(&msg);
                Ok(Detached::Parent(ExitCode::from(1)))
            }
        }
    }
}

/// Foreground: stderr. Background: `iifs.log` in the state dir (stderr is /dev/null there).
/// When stderr is the journal (run by systemd), every line carries its syslog priority
/// (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and trace) and no timestamp: journald
/// takes the priority from the prefix and adds its own time.
pub fn init_logging(settings: &Settings, foreground: bool) {
    let mut b = env_logger::Builder::new();
    b.parse_filters(&settings.log_level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    if !foreground {
        let _ = std::fs::create_dir_all(&settings.state_dir);
        if let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(settings.state_dir.join("iifs.log"))
        {
            b.target(env_logger::Target::Pipe(Box::new(f)));
        }
    } else if stderr_is_journal() {
        b.write_style(env_logger::WriteStyle::Never);
        b.format(|buf, record| {
            let line = journal_line(record.level(), &record.args().to_string());
            buf.write_all(line.as_bytes())
        });
    }
    let _ = b.try_init();
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM=DEV:INODE` of the stream it
/// connects to stdout/stderr; it must be stderr itself (not a stream inherited by a child whose
/// stderr has since been redirected).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.trim().parse::<u64>(), ino.trim().parse::<u64>()) else {
        return false;
    };
    // SAFETY: libc::stat is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of fd 2 into a properly sized stat buffer.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// syslog priority of a log level, as sd-daemon(3) prefixes expect it.
fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One message as journal stream lines: every line gets the prefix (the journal makes an
/// entry of each line).
fn journal_line(level: log::Level, message: &str) -> String {
    let prio = syslog_priority(level);
    let mut out = String::new();
    let mut lines = message.lines().peekable();
    if lines.peek().is_none() {
        out.push_str(&format!("<{prio}>\n"));
    }
    for l in lines {
        out.push_str(&format!("<{prio}>{l}\n"));
    }
    out
}

/// A warning said before logging is set up: like `report_error`, at warning priority.
pub fn report_warning(message: &str) {
    report(log::Level::Warn, message);
}

/// An error said before logging is set up (or by the waiting parent): `iifs: MESSAGE` on
/// stderr, as an error-priority line when stderr is the journal.
pub fn report_error(message: &str) {
    report(log::Level::Error, message);
}

fn report(level: log::Level, message: &str) {
    let message = format!("iifs: {message}");
    if stderr_is_journal() {
        eprint!("{}", journal_line(level, &message));
    } else {
        eprintln!("{message}");
    }
}

/// The daemon may serve a loop device: let the kernel treat it as an I/O flusher so memory
/// reclaim does not wait on itself.
pub fn become_io_flusher() {
    const PR_SET_IO_FLUSHER: libc::c_int = 57;
    // SAFETY: prctl with plain integer arguments.
    if unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) } != 0 {
        // Containers often lack the capability; iifs works without it, but an administrator
        // putting a loop device on iifs must know what it costs and how to get it.
        log::warn!("{}", io_flusher_refused(&std::io::Error::last_os_error()));
    }
}

/// The warning for a refused PR_SET_IO_FLUSHER: the capability it needs and the risk without it.
fn io_flusher_refused(e: &std::io::Error) -> String {
    format!(
        "PR_SET_IO_FLUSHER refused ({e}): it needs CAP_SYS_RESOURCE. Without it, a loop device \
         backed by an iifs file can deadlock under memory pressure (the daemon's own allocations \
         may wait for writeback that waits for the daemon); give iifs CAP_SYS_RESOURCE before \
         putting a loop device on it"
    )
}

/// Block SIGINT/SIGTERM/SIGHUP in every thread (call before starting any), so one thread can
/// wait for them and unmount cleanly.
pub fn block_signals() -> Result<libc::sigset_t, super::error::DaemonError> {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(super::error::DaemonError::Signals);
        }
        Ok(set)
    }
}

/// Wait for a stop signal on a thread of its own; then `before_unmount` (which ends what
/// would keep the mount busy, and says whether a data file still does), then unmount.
pub fn watch_signals(
    set: libc::sigset_t,
    mountpoint: PathBuf,
    before_unmount: impl FnOnce() -> bool + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("iifs-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set, `sig` a valid out pointer.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            log::info!("signal {sig}: unmounting {}", mountpoint.display());
            notify_stopping();
            let data_open = before_unmount();
            super::mount::stop(&mountpoint, data_open);
        });
    if let Err(e) = spawned {
        log::error!("cannot start the signal thread: {e}");
    }
}

/// Tell systemd the daemon is stopping (after a signal, or once the mount is gone).
pub fn notify_stopping() {
    sd_notify("STOPPING=1");
}

/// systemd's readiness protocol: one datagram to $NOTIFY_SOCKET (a path, or `@name` for an
/// abstract socket).
fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| sock.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        log::warn!("sd_notify to {} failed: {e}", path.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_syslog_priorities() {
        assert_eq!(journal_line(log::Level::Error, "boom"), "<3>boom\n");
        assert_eq!(journal_line(log::Level::Warn, "w"), "<4>w\n");
        assert_eq!(journal_line(log::Level::Info, "a\nb"), "<6>a\n<6>b\n");
        assert_eq!(journal_line(log::Level::Debug, "d"), "<7>d\n");
        assert_eq!(journal_line(log::Level::Trace, ""), "<7>\n");
    }

    #[test]
    fn the_io_flusher_warning_names_the_capability_and_the_risk() {
        let m = io_flusher_refused(&std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(
            m.contains("CAP_SYS_RESOURCE") && m.contains("deadlock"),
            "{m}"
        );
        assert!(!m.contains('\n'), "one log line: {m}");
    }
}
