//! A tiny tmpfs for a volume whose storage runs out: unmounted (lazily, the daemon may still
//! hold a file on it) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tiny(pub PathBuf);

impl Tiny {
    pub fn mount(dir: &Path, size: &str) -> Option<Tiny> {
        let p = dir.join("tiny");
        std::fs::create_dir_all(&p).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Tiny(p))
    }
}

impl Drop for Tiny {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
