//! The Cockpit page in a real browser: runs the pytest + Selenium suite of `tests/browser`
//! (headless Chromium, a real cockpit-ws, a real iifs mount of the binaries this build made) and
//! passes when it passes, printing pytest's output either way. Outside CI a missing tool skips
//! it loudly; with CI set a missing tool fails it.

#[path = "common/browser.rs"]
mod browser;

#[test]
fn cockpit_page_in_a_real_browser() {
    let missing = browser::missing_tools(&[("/dev/fuse", "fuse3 (/dev/fuse)")]);
    if !browser::can_run("the browser tests", &missing) {
        return;
    }
    browser::pytest("the browser tests", "tests/browser", &[]);
}
