//! The Cockpit page in a real browser: runs the pytest + Selenium suite of `tests/browser`
//! (headless Chromium, a real cockpit-ws, a real iifs mount of the binaries this build made) and
//! passes when it passes, printing pytest's output either way. Outside CI a missing tool skips
//! it loudly; with CI set a missing tool fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PYTHON: &str = "/usr/bin/python3";

/// What the suite needs and this machine lacks, with the Debian package that has it.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    let files = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
        ("/usr/lib/cockpit/cockpit-ws", "cockpit-ws"),
        ("/usr/bin/cockpit-bridge", "cockpit-bridge"),
        ("/usr/share/cockpit/shell", "cockpit-system"),
        ("/usr/bin/setpriv", "util-linux"),
        ("/dev/fuse", "fuse3 (/dev/fuse)"),
    ];
    for (path, package) in files {
        if !Path::new(path).exists() {
            missing.push(format!("{path} ({package})"));
        }
    }
    let modules = Command::new(PYTHON)
        .args(["-c", "import selenium, pytest"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !modules {
        missing.push(format!(
            "{PYTHON} with selenium and pytest (python3-selenium python3-pytest)"
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (the suite mounts iifs)".to_string());
    }
    missing
}

/// The directory of the iifs and iiadm binaries of this build (target/release or target/debug).
fn bin_dir() -> PathBuf {
    let iifs = Path::new(env!("CARGO_BIN_EXE_iifs"));
    let dir = iifs.parent().expect("binary dir").to_path_buf();
    assert!(
        dir.join("iiadm").exists(),
        "iiadm is not beside {}",
        iifs.display()
    );
    dir
}

#[test]
fn cockpit_page_in_a_real_browser() {
    let missing = missing_tools();
    if !missing.is_empty() {
        let why = format!("the browser tests need: {}", missing.join(", "));
        if std::env::var_os("CI").is_some() {
            panic!("{why}: CI must run them");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(PYTHON)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/browser",
        ])
        .current_dir(root)
        .env("IIFS_BIN_DIR", bin_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "the browser tests failed ({}); pytest's output is above",
        out.status
    );
    // A suite that skipped its tests did not test the page.
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        !last.contains("skipped") || std::env::var_os("CI").is_none(),
        "browser tests were skipped in CI: {last}"
    );
}
