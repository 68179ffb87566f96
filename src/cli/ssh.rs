//! How iiadm runs a command on another host: `IIADM_SSH` (default `ssh`) with its options,
//! then iiadm's own: one connection per host kept open for a while (ssh's ControlMaster), so
//! that the next command to the same host skips the handshake.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::hosts::Target;

/// The exit status of ssh when it fails itself (cannot connect, authenticate...); iiadm uses
/// it too when ssh cannot be started.
pub const SSH_FAILED: u8 = 255;

/// How long an idle connection to a host stays open for the next command.
const PERSIST_SECS: u32 = 300;

/// The ssh command line builder.
pub struct Ssh {
    words: Vec<String>,
    control_dir: Option<PathBuf>,
}

impl Ssh {
    /// From `IIADM_SSH`.
    pub fn from_env() -> Ssh {
        Ssh {
            words: ssh_words(std::env::var("IIADM_SSH").ok().as_deref()),
            control_dir: control_dir(),
        }
    }

    /// The program, for messages.
    pub fn program(&self) -> &str {
        &self.words[0]
    }

    /// ssh to `t` running the shell command line `remote`. `batch`: never ask for a password
    /// and give up connecting after 10 s (many hosts at once, or a program reading the
    /// output); `tty`: give the remote command a terminal. The user's own options in
    /// `IIADM_SSH` come first, so they win (ssh keeps the first value of an option).
    pub fn command(&self, t: &Target, batch: bool, tty: bool, remote: &str) -> Command {
        let mut c = Command::new(&self.words[0]);
        c.args(&self.words[1..]);
        if let Some(dir) = &self.control_dir {
            c.arg("-o").arg("ControlMaster=auto");
            c.arg("-o").arg(format!("ControlPath={}/%C", dir.display()));
            c.arg("-o").arg(format!("ControlPersist={PERSIST_SECS}"));
            // A kept connection to a host that went off the network would make every later
            // command to it wait on a dead TCP connection: ssh gives it up after 6 s of silence.
            c.args(["-o", "ServerAliveInterval=3", "-o", "ServerAliveCountMax=2"]);
        }
        if batch {
            c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]);
        }
        if tty {
            c.arg("-t");
        }
        if let Some(p) = &t.port {
            c.arg("-p").arg(p);
        }
        c.arg("--").arg(&t.dest).arg(remote);
        // An ssh left behind by an iiadm that was killed (a closed console page) would keep
        // the remote command running: ssh ends with the iiadm that started it.
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        c
    }
}

impl Ssh {
    /// Start `remote` on `t` in batch mode, its output and errors piped to us, its input
    /// `stdin`; Err is why ssh could not be started.
    pub fn spawn(&self, t: &Target, remote: &str, stdin: Stdio) -> Result<Child, String> {
        self.command(t, true, false, remote)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program()))
    }
}

/// The ssh command and its options: `IIADM_SSH` split on whitespace (no shell quoting), or
/// `ssh` when unset or blank.
pub fn ssh_words(setting: Option<&str>) -> Vec<String> {
    let words: Vec<String> = setting
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        vec!["ssh".to_string()]
    } else {
        words
    }
}

/// Where the connections' sockets live: a directory of ours that nobody else can write, or
/// none (then every command makes its own connection).
fn control_dir() -> Option<PathBuf> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    // A runtime directory is used only when it is ours and private: another user's (`sudo
    // -E`) could swap our directory inside it after the check below.
    let private_of_ours = |d: &std::path::Path| {
        std::fs::symlink_metadata(d)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o022 == 0)
    };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if !d.as_os_str().is_empty() && private_of_ours(&d) => d.join("iiadm-ssh"),
        _ if uid == 0 => PathBuf::from("/run/iiadm-ssh"),
        _ => std::env::temp_dir().join(format!("iiadm-ssh-{uid}")),
    };
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // A directory another user made (in /tmp) could hand our connections to them.
    let m = std::fs::symlink_metadata(&dir).ok()?;
    (m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0).then_some(dir)
}

/// A child's exit status as ours: its code, or 128 + the signal that ended it, as shells do.
pub fn exit_code(s: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// A word as the remote shell must see it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `iiadm` with `args`, as one remote shell command line.
pub fn iiadm_line(args: &[String]) -> String {
    std::iter::once("iiadm".to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}
