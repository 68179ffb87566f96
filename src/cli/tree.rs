//! The control tree as iiadm sees it: write a command word to a ctl file, read status files.
//! Nothing else: scripts that echo into ctl files and iiadm behave alike.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::Failure;
use crate::control::parse::{GlobalCommand, GroupCommand, SetCommand};

/// The mount is found on first use, so usage errors are reported (exit 2) whether or not a
/// mount exists.
pub struct Tree {
    explicit: Option<PathBuf>,
    root: std::sync::OnceLock<PathBuf>,
}

/// One set's status: `key: value` pairs in the file's order.
pub type StatusLines = Vec<(String, String)>;

impl Tree {
    /// A tree at `--mount DIR` (or `IIFS_MOUNT`), or at the only iifs mount when `None`.
    pub fn new(explicit: Option<PathBuf>) -> Tree {
        Tree {
            explicit,
            root: std::sync::OnceLock::new(),
        }
    }

    /// The mount's root directory, found on the first call.
    pub fn root(&self) -> Result<&Path, Failure> {
        if let Some(r) = self.root.get() {
            return Ok(r);
        }
        let found = super::mount::find(self.explicit.as_deref())?;
        Ok(self.root.get_or_init(|| found))
    }

    /// A path inside the tree.
    pub fn path(&self, rel: &str) -> Result<PathBuf, Failure> {
        Ok(self.root()?.join(rel))
    }

    fn set_file(&self, set: &str, file: &str) -> Result<PathBuf, Failure> {
        Ok(self.root()?.join("sets").join(set).join(file))
    }

    /// The global ctl. The bytes written are the command's `Display`, which the daemon's
    /// parser reads back as the same command.
    pub fn global(&self, cmd: &GlobalCommand) -> Result<(), Failure> {
        self.send(&self.path("ctl")?, &cmd.to_string(), None)
    }

    /// A set's ctl, written as the command's `Display`.
    pub fn set(&self, set: &str, cmd: &SetCommand) -> Result<(), Failure> {
        self.send(
            &self.set_file(set, "ctl")?,
            &cmd.to_string(),
            Some((set, no_set)),
        )
    }

    /// A group's ctl (`groups/NAME/ctl`), written as the command's `Display`.
    pub fn group(&self, name: &str, cmd: &GroupCommand) -> Result<(), Failure> {
        if !valid_name(name) {
            return Err(no_group(name));
        }
        self.offered(GROUPS, "group")?;
        let ctl = self.path(GROUPS)?.join(name).join("ctl");
        if !ctl.exists() {
            return Err(no_group(name));
        }
        self.send(&ctl, &cmd.to_string(), Some((name, no_group)))
    }

    /// The top-level directory `dir` of a feature, or a refusal when the daemon has none.
    pub fn offered(&self, dir: &str, what: &str) -> Result<PathBuf, Failure> {
        let top = self.path(dir)?;
        if top.is_dir() {
            return Ok(top);
        }
        Err(Failure::new(format!(
            "the daemon at {} does not offer {what}s yet (this iifs version has no {what} support)",
            self.root()?.display()
        )))
    }

    /// One write(2) of the command; on refusal, the daemon's reply read back on the same file.
    /// `object` is the set or group whose ctl this is, and what to say when it is gone.
    fn send(&self, ctl: &Path, cmd: &str, object: Option<(&str, Gone)>) -> Result<(), Failure> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(ctl)
            .map_err(|e| match (e.kind(), object) {
                (ErrorKind::NotFound, Some((name, gone))) => gone(name),
                _ => Failure::new(format!("cannot open {}: {e}", ctl.display())),
            })?;
        // A command is exactly one write(2); the daemon takes all of it or refuses it.
        match f.write(cmd.as_bytes()) {
            Ok(n) if n == cmd.len() => {
                // The reply is `ok`, then what the command did besides (a bitmap file that
                // `enable` made, a `copy shadow` of a compact set taken as an update): say that.
                let mut reply = String::new();
                if f.read_to_string(&mut reply).is_ok() {
                    for note in reply.lines().skip(1) {
                        println!("{note}");
                    }
                }
                Ok(())
            }
            Ok(n) => Err(Failure::new(format!("'{cmd}': only {n} bytes were taken"))),
            Err(e) => {
                let mut reply = String::new();
                let _ = f.read_to_string(&mut reply);
                let reply = reply.trim_end();
                let message = reply.strip_prefix("error: ").unwrap_or(reply);
                if let (ErrorKind::NotFound, Some((name, gone)), "") = (e.kind(), object, message) {
                    return Err(gone(name));
                }
                Err(Failure::new(if message.is_empty() {
                    format!("'{cmd}' failed: {e}")
                } else {
                    message.to_string()
                }))
            }
        }
    }

    pub fn status(&self, set: &str) -> Result<StatusLines, Failure> {
        let text =
            std::fs::read_to_string(self.set_file(set, "status")?).map_err(|e| match e.kind() {
                ErrorKind::NotFound => no_set(set),
                _ => Failure::new(format!("cannot read the status of set {set}: {e}")),
            })?;
        Ok(status_lines(&text))
    }

    /// The text of `overflow/NAME/status`: `None` when there is no overflow volume of that
    /// name, a refusal when the daemon has no overflow volumes at all.
    pub fn overflow_text(&self, name: &str) -> Result<Option<String>, Failure> {
        self.object_text(OVERFLOW, "overflow volume", name)
    }

    /// The text of `groups/NAME/status`: `None` when there is no group of that name, a
    /// refusal when the daemon has no groups at all.
    pub fn group_text(&self, name: &str) -> Result<Option<String>, Failure> {
        self.object_text(GROUPS, "group", name)
    }

    /// The status of the object `name` in the top-level directory `dir`.
    fn object_text(&self, dir: &str, what: &str, name: &str) -> Result<Option<String>, Failure> {
        let p = self.offered(dir, what)?;
        if !valid_name(name) {
            return Ok(None);
        }
        match std::fs::read_to_string(p.join(name).join("status")) {
            Ok(text) => Ok(Some(text)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(Failure::new(format!(
                "cannot read the status of {what} {name}: {e}"
            ))),
        }
    }

    /// The statuses of every group, by name; one deleted while they are read is left out.
    pub fn groups(&self) -> Result<Vec<StatusLines>, Failure> {
        self.offered(GROUPS, "group")?;
        let mut all = Vec::new();
        for name in self.names(GROUPS)? {
            if let Some(text) = self.group_text(&name)? {
                all.push(status_lines(&text));
            }
        }
        Ok(all)
    }

    /// The statuses of every overflow volume, by name; one deleted while they are read is
    /// left out.
    pub fn overflows(&self) -> Result<Vec<StatusLines>, Failure> {
        self.offered(OVERFLOW, "overflow volume")?;
        let mut all = Vec::new();
        for name in self.names(OVERFLOW)? {
            if let Some(text) = self.overflow_text(&name)? {
                all.push(status_lines(&text));
            }
        }
        Ok(all)
    }

    /// The names of the sets, sorted.
    pub fn sets(&self) -> Result<Vec<String>, Failure> {
        self.names("sets")
    }

    /// Entries of a top-level directory, or `None` when the daemon has no such directory.
    pub fn names(&self, dir: &str) -> Result<Vec<String>, Failure> {
        let p = self.path(dir)?;
        let mut names: Vec<String> = std::fs::read_dir(&p)
            .map_err(|e| Failure::new(format!("cannot list {}: {e}", p.display())))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

/// The directory of the overflow volumes in the tree.
pub const OVERFLOW: &str = "overflow";

/// What to say when the set or group a ctl file belongs to is gone (by its name).
type Gone = fn(&str) -> Failure;

/// The directory of the groups in the tree.
pub const GROUPS: &str = "groups";

/// Whether `name` can name an entry of a directory: a name holding `/` or `..` would reach
/// some other file of the tree.
fn valid_name(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name == "." || name == "..")
}

fn no_set(set: &str) -> Failure {
    Failure::new(format!("no set named '{set}' (iiadm -l lists the sets)"))
}

pub fn no_group(name: &str) -> Failure {
    Failure::new(format!(
        "no group named '{name}' (iiadm -G lists the groups)"
    ))
}

pub fn no_overflow(name: &str) -> Failure {
    Failure::new(format!(
        "no overflow volume named '{name}' (iiadm -L lists the overflow volumes)"
    ))
}

/// A status file's `key: value` lines, in order. A value is everything after the first `: `,
/// so a value of several words (`state: out of space`) stays whole.
pub fn status_lines(text: &str) -> StatusLines {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of `key` in a status.
pub fn get<'a>(status: &'a StatusLines, key: &str) -> &'a str {
    status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}
