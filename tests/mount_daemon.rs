//! The daemon as an administrator starts it: in the background with a readiness handshake,
//! stopped by SIGTERM or SIGINT with a clean unmount, and clear about bad arguments.

mod common;

use std::process::Command;

use common::{can_mount, daemon_pid, is_mounted as mounted, wait_gone, BIN};

#[test]
fn background_start_is_ready_on_return_and_signals_unmount_cleanly() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mnt = dir.path().join(format!("mnt{signal}"));
        let state = dir.path().join("state");
        let master = dir.path().join(format!("m{signal}.img"));
        let shadow = dir.path().join(format!("s{signal}.img"));
        let bitmap = dir.path().join(format!("b{signal}.img"));
        for p in [&master, &shadow, &bitmap] {
            std::fs::File::create(p).unwrap().set_len(1 << 20).unwrap();
        }
        // Exactly what a script does: start, then use the tree at once.
        let script = format!(
            "{BIN} none {mnt} -o state_dir={state} && echo 'enable dep {m} {s} {b} x{signal}' > {mnt}/ctl",
            mnt = mnt.display(),
            state = state.display(),
            m = master.display(),
            s = shadow.display(),
            b = bitmap.display(),
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(mounted(&mnt));
        assert!(mnt.join(format!("sets/x{signal}/master")).exists());
        let pid = daemon_pid(&mnt).expect("daemon running");
        // SAFETY: signalling the daemon we started.
        unsafe { libc::kill(pid, signal) };
        assert!(
            wait_gone(pid),
            "daemon {pid} did not exit on signal {signal}"
        );
        assert!(!mounted(&mnt), "signal {signal} left the mount behind");
        let log = std::fs::read_to_string(state.join("iifs.log")).unwrap_or_default();
        assert!(log.contains("unmounted"), "{log}");
    }
    // Both sets are in the registry and come back at the next start.
    let mnt = dir.path().join("again");
    let st = Command::new(BIN)
        .args(["none", mnt.to_str().unwrap(), "-o"])
        .arg(format!("state_dir={}", dir.path().join("state").display()))
        .status()
        .unwrap();
    assert!(st.success());
    let mut sets: Vec<String> = std::fs::read_dir(mnt.join("sets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    sets.sort();
    let mut expected = vec![format!("x{}", libc::SIGINT), format!("x{}", libc::SIGTERM)];
    expected.sort();
    assert_eq!(sets, expected);
    let pid = daemon_pid(&mnt).expect("daemon running");
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(umount.success());
    assert!(wait_gone(pid), "umount ends the daemon");
}

#[test]
fn bad_arguments_are_usage_errors_that_name_the_problem() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MOUNTPOINT"));
    let out = run(&["none", "/tmp/iifs-never", "-o", "bogus_key=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));
    let out = run(&["none", "/tmp/iifs-never", "-o", "chunk_size=3000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chunk size 3000"));
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("state-dir"));
}

#[test]
fn a_mount_that_cannot_happen_fails_with_a_reason() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(BIN)
        .args(["none", file.to_str().unwrap(), "-o"])
        .arg(format!("state_dir={}", dir.path().join("state").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-a-dir"), "{err}");
}

#[test]
fn relative_mountpoint_and_state_dir_are_taken_from_the_current_directory() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["none", "mnt", "-o", "state_dir=state"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = dir.path().join("mnt");
    assert!(mounted(&mnt), "mounted on {} itself", mnt.display());
    // The daemon's command line holds the relative words it was given.
    let pid = daemon_pid(std::path::Path::new("mnt")).expect("daemon running");
    assert!(
        dir.path().join("state/iifs.yaml").exists() || dir.path().join("state/iifs.log").exists(),
        "the state dir is under the current directory"
    );
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(umount.success());
    assert!(wait_gone(pid));
}
