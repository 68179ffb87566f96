//! Load with verification (issue 16), CI-sized: tests/load/verify.sh for about a minute on the
//! daemon this build made. fio writes with `verify=crc32c` to two sets' masters and to a shadow
//! while `update shadow`, `copy shadow`, group updates and `update master` fire; points in time
//! are checked during the run and every byte of every volume afterwards. The test fails on a fio
//! verify error, a refused command or a byte that differs, and prints the script's summary.
//! `IIFS_LOAD_SECONDS` sets fio's run time (default 50); longer runs: `DURATION=600 bash
//! tests/load/verify.sh`.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn fio_with_verification_while_updates_copies_and_group_updates_run() {
    if !common::can_mount() {
        return;
    }
    let fio = Command::new("fio").arg("--version").output();
    if !fio.as_ref().is_ok_and(|o| o.status.success()) {
        let why = "the load test needs fio";
        if std::env::var_os("CI").is_some() {
            panic!("{why}: CI must run it");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let seconds = std::env::var("IIFS_LOAD_SECONDS").unwrap_or_else(|_| "50".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/load/verify.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("DURATION", &seconds)
        .env("IIFS_BIN", common::BIN)
        .output()
        .expect("run tests/load/verify.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("RESULT: ok"),
        "tests/load/verify.sh failed ({}):\n{stdout}",
        out.status
    );
    println!("{stdout}");
}
