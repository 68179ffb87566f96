//! Loop devices and mounts made by a test over volume files, undone even when it fails
//! half-way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::sh;

/// Undoes loop devices and mounts (thawing a frozen file system first) when dropped.
#[derive(Default)]
pub struct Cleanup {
    pub mounts: Vec<PathBuf>,
    pub loops: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("fsfreeze").arg("-u").arg(m).output();
            let _ = Command::new("umount").arg(m).output();
        }
        for l in self.loops.iter().rev() {
            let _ = Command::new("losetup").arg("-d").arg(l).output();
        }
    }
}

impl Cleanup {
    /// A loop device over `file` (read-only if asked).
    pub fn loop_dev(&mut self, file: impl AsRef<Path>, read_only: bool) -> String {
        let ro = if read_only { "-r " } else { "" };
        let dev = sh(&format!(
            "losetup -f --show {ro}{}",
            file.as_ref().display()
        ))
        .trim()
        .to_string();
        self.loops.push(dev.clone());
        dev
    }

    /// Mount `dev` at `at` (made if missing) with `opts` (such as `-o ro`; "" for none).
    pub fn mount(&mut self, dev: &str, at: &Path, opts: &str) {
        fs::create_dir_all(at).unwrap_or_else(|e| panic!("mount dir {}: {e}", at.display()));
        sh(&format!("mount {opts} {dev} {}", at.display()));
        self.mounts.push(at.to_path_buf());
    }

    pub fn umount(&mut self, at: &Path) {
        sh(&format!("umount {}", at.display()));
        self.mounts.retain(|m| m != at);
    }
}
