//! The committed man pages and shell completions are what the clap definitions render
//! (`IIFS_UPDATE_DOCS=1 cargo test --test generated_docs` rewrites them), and every man page
//! renders without a warning.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

const UPDATE: &str = "IIFS_UPDATE_DOCS=1 cargo test --test generated_docs";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The generated files that differ from the committed ones. With IIFS_UPDATE_DOCS set they are
/// rewritten instead (and none is reported). Done once, before any test reads the files.
fn stale_files() -> &'static [String] {
    static STALE: OnceLock<Vec<String>> = OnceLock::new();
    STALE.get_or_init(|| {
        let update =
            std::env::var_os("IIFS_UPDATE_DOCS").is_some_and(|v| !v.is_empty() && v != "0");
        let mut stale = Vec::new();
        for (rel, bytes) in iifs::docs::generated_files() {
            let path = root().join(&rel);
            if std::fs::read(&path).ok().as_deref() == Some(&bytes[..]) {
                continue;
            }
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write {rel}: {e}"));
                eprintln!("updated {rel}");
            } else {
                stale.push(rel);
            }
        }
        stale
    })
}

#[test]
fn generated_files_match_the_code() {
    let stale = stale_files();
    assert!(
        stale.is_empty(),
        "generated files are stale or missing: {}\nrun `{UPDATE}` to regenerate them and commit the result",
        stale.join(", ")
    );
}

#[test]
fn generation_is_deterministic() {
    assert_eq!(iifs::docs::generated_files(), iifs::docs::generated_files());
}

#[test]
fn man_pages_render_without_warnings() {
    stale_files();
    if Command::new("man").arg("--version").output().is_err() {
        let why = "man (package man-db) is not installed";
        if std::env::var_os("CI").is_some() {
            panic!("{why}: CI must run this test");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let pages = ["man/iifs.8", "man/iiadm.8", "man/iifs.7"];
    for page in pages {
        let path = root().join(page);
        assert!(path.exists(), "{page} is missing (run `{UPDATE}`)");
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .env_remove("MANPAGER")
            .env_remove("PAGER")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run man: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "man --warnings -l {page}: {}\n{stderr}",
            out.status
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("SEE ALSO"),
            "{page} rendered without a SEE ALSO section:\n{text}"
        );
    }
}
