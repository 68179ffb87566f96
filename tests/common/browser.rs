//! Running the pytest + Selenium suites of `tests/browser` (headless Chromium, a real
//! cockpit-ws) from `cargo test`: what they need, and one run that passes when pytest passes,
//! printing pytest's output either way. Outside CI a missing tool skips a suite loudly; with CI
//! set it fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's python3, which has python3-selenium (a python3 earlier on PATH may not).
const PYTHON: &str = "/usr/bin/python3";

/// What every browser suite needs and this machine lacks (with the Debian package that has
/// it), and the files of `more`.
pub fn missing_tools(more: &[(&str, &str)]) -> Vec<String> {
    let files = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
        ("/usr/lib/cockpit/cockpit-ws", "cockpit-ws"),
        ("/usr/bin/cockpit-bridge", "cockpit-bridge"),
        ("/usr/share/cockpit/shell", "cockpit-system"),
        ("/usr/bin/setpriv", "util-linux"),
    ];
    let mut missing: Vec<String> = files
        .iter()
        .chain(more)
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, package)| format!("{path} ({package})"))
        .collect();
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
        missing.push("root (the suites mount iifs)".to_string());
    }
    missing
}

/// Whether `suite` can run: with tools missing, false outside CI (said loudly), a failure in
/// CI.
pub fn can_run(suite: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let why = format!("{suite} need: {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{why}: CI must run them");
    }
    eprintln!("SKIPPED: {why}");
    false
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

/// Run pytest on `target` (below the source tree) with `env`, and fail unless it passed and,
/// in CI, skipped nothing. `IIFS_PYTEST_ARGS` adds pytest options (`-k unreachable -x` while
/// working on one test).
pub fn pytest(suite: &str, target: &str, env: &[(&str, String)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(PYTHON)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", target])
        .args(
            std::env::var("IIFS_PYTEST_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .current_dir(root)
        .env("IIFS_BIN_DIR", bin_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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
        "{suite} failed ({}); pytest's output is above",
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
        "{suite} were skipped in CI: {last}"
    );
}
