//! The control tree as iiadm sees it: write a command word to a ctl file, read status files.
//! Nothing else: scripts that echo into ctl files and iiadm behave alike.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::Failure;

pub struct Tree {
    pub root: PathBuf,
}

/// One set's status: `key: value` pairs in the file's order.
pub type StatusLines = Vec<(String, String)>;

impl Tree {
    pub fn new(root: PathBuf) -> Tree {
        Tree { root }
    }

    fn set_file(&self, set: &str, file: &str) -> PathBuf {
        self.root.join("sets").join(set).join(file)
    }

    /// The global ctl.
    pub fn global(&self, cmd: &str) -> Result<(), Failure> {
        self.send(&self.root.join("ctl"), cmd, None)
    }

    /// A set's ctl.
    pub fn set(&self, set: &str, cmd: &str) -> Result<(), Failure> {
        self.send(&self.set_file(set, "ctl"), cmd, Some(set))
    }

    /// The ctl of another object directory (groups/NAME, overflow/NAME).
    pub fn other(&self, dir: &str, what: &str, name: &str, cmd: &str) -> Result<(), Failure> {
        let top = self.root.join(dir);
        if !top.is_dir() {
            return Err(self.not_offered(what));
        }
        let ctl = top.join(name).join("ctl");
        if !ctl.exists() {
            return Err(Failure::new(format!("no {what} named '{name}'")));
        }
        self.send(&ctl, cmd, None)
    }

    pub fn not_offered(&self, what: &str) -> Failure {
        Failure::new(format!(
            "the daemon at {} does not offer {what}s yet (this iifs version has no {what} support)",
            self.root.display()
        ))
    }

    /// One write(2) of the command; on refusal, the daemon's reply read back on the same file.
    fn send(&self, ctl: &Path, cmd: &str, set: Option<&str>) -> Result<(), Failure> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(ctl)
            .map_err(|e| match (e.kind(), set) {
                (ErrorKind::NotFound, Some(s)) => no_set(s),
                _ => Failure::new(format!("cannot open {}: {e}", ctl.display())),
            })?;
        // A command is exactly one write(2); the daemon takes all of it or refuses it.
        match f.write(cmd.as_bytes()) {
            Ok(n) if n == cmd.len() => Ok(()),
            Ok(n) => Err(Failure::new(format!("'{cmd}': only {n} bytes were taken"))),
            Err(e) => {
                let mut reply = String::new();
                let _ = f.read_to_string(&mut reply);
                let reply = reply.trim_end();
                let message = reply.strip_prefix("error: ").unwrap_or(reply);
                if e.kind() == ErrorKind::NotFound && set.is_some() && message.is_empty() {
                    return Err(no_set(set.unwrap_or_default()));
                }
                Err(Failure::new(if message.is_empty() {
                    format!("'{cmd}' failed: {e}")
                } else {
                    message.to_string()
                }))
            }
        }
    }

    pub fn read(&self, rel: &str) -> Result<String, Failure> {
        let p = self.root.join(rel);
        std::fs::read_to_string(&p)
            .map_err(|e| Failure::new(format!("cannot read {}: {e}", p.display())))
    }

    pub fn status(&self, set: &str) -> Result<StatusLines, Failure> {
        let text =
            std::fs::read_to_string(self.set_file(set, "status")).map_err(|e| match e.kind() {
                ErrorKind::NotFound => no_set(set),
                _ => Failure::new(format!("cannot read the status of set {set}: {e}")),
            })?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// The names of the sets, sorted.
    pub fn sets(&self) -> Result<Vec<String>, Failure> {
        self.names("sets")
    }

    /// Entries of a top-level directory, or `None` when the daemon has no such directory.
    pub fn names(&self, dir: &str) -> Result<Vec<String>, Failure> {
        let p = self.root.join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&p)
            .map_err(|e| Failure::new(format!("cannot list {}: {e}", p.display())))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

fn no_set(set: &str) -> Failure {
    Failure::new(format!("no set named '{set}' (iiadm -l lists the sets)"))
}

/// The value of `key` in a status.
pub fn get<'a>(status: &'a StatusLines, key: &str) -> &'a str {
    status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}
