//! iiadm's own tests: the words each action writes into the control tree.

use std::path::{Path, PathBuf};

use super::*;
use crate::control::{parse_global, parse_set};

#[test]
fn the_ssh_setting_is_split_on_whitespace() {
    assert_eq!(ssh_words(None), ["ssh"]);
    assert_eq!(ssh_words(Some("  ")), ["ssh"]);
    assert_eq!(
        ssh_words(Some("ssh -p 2222\t-i /root/key")),
        ["ssh", "-p", "2222", "-i", "/root/key"]
    );
}

/// A directory iiadm takes for an iifs mount, with one set `db`. Its ctl files are plain
/// files, so what iiadm writes stays there to be read back.
fn fake_mount() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("version"), "iifs test\n").unwrap();
    std::fs::write(root.join("ctl"), "").unwrap();
    std::fs::create_dir_all(root.join("sets/db")).unwrap();
    std::fs::write(root.join("sets/db/ctl"), "").unwrap();
    // -w draws progress on a terminal while the set copies: an idle set has none to draw.
    std::fs::write(root.join("sets/db/status"), "state: idle\n").unwrap();
    dir
}

/// What one iiadm command line wrote: (the global ctl's bytes, set db's ctl's bytes), or the
/// failure's message.
fn written(argv: &[&str]) -> Result<(String, String), String> {
    let mount = fake_mount();
    let root: PathBuf = mount.path().into();
    let mut full = vec!["iiadm", "--mount", root.to_str().unwrap()];
    full.extend(argv);
    let args = Args::try_parse_from(&full).unwrap();
    let read = |p: &Path| std::fs::read_to_string(root.join(p)).unwrap();
    let tree = Tree::new(args.mount.clone());
    match dispatch(&args, &tree) {
        Ok(()) => Ok((read(Path::new("ctl")), read(Path::new("sets/db/ctl")))),
        Err(Error::Failed(f)) => Err(f.message),
        Err(Error::Usage(m)) => Err(format!("usage: {m}")),
    }
}

#[test]
fn each_action_writes_its_typed_command() {
    use crate::engine::Durability;
    let enable = |kind, name: Option<&str>, chunk_size, durability| GlobalCommand::Enable {
        kind,
        master: "/m".into(),
        shadow: "/s".into(),
        bitmap: "/b".into(),
        name: name.map(str::to_string),
        chunk_size,
        durability,
        params: None,
    };
    let (ind, dep) = (SetKind::Independent, SetKind::Dependent);
    let globals = [
        (
            vec!["-e", "dep", "/m", "/s", "/b"],
            enable(dep, None, None, None),
        ),
        (
            vec!["-e", "ind", "/m", "/s", "/b", "db"],
            enable(ind, Some("db"), None, None),
        ),
        (
            vec!["-e", "ind", "/m", "/s", "/b", "db", "--chunk-size", "64K"],
            enable(ind, Some("db"), Some(65536), None),
        ),
        (
            vec![
                "-e",
                "dep",
                "/m",
                "/s",
                "/b",
                "--durability",
                "relaxed",
                "--chunk-size",
                "4096",
            ],
            enable(dep, None, Some(4096), Some(Durability::Relaxed)),
        ),
    ];
    for (argv, cmd) in globals {
        let (global, set) = written(&argv).unwrap();
        assert_eq!(global, cmd.to_string(), "{argv:?}");
        assert_eq!(parse_global(global.as_bytes()).unwrap(), cmd, "{argv:?}");
        assert_eq!(set, "", "{argv:?}");
    }
    let (s, m) = (Direction::Shadow, Direction::Master);
    let sets = [
        (vec!["-d", "db"], SetCommand::Disable),
        (
            vec!["-u", "s", "db"],
            SetCommand::Update {
                dir: s,
                force: false,
            },
        ),
        (
            vec!["-u", "shadow", "db", "--force"],
            SetCommand::Update {
                dir: s,
                force: true,
            },
        ),
        (
            vec!["-n", "-u", "m", "db"],
            SetCommand::Update {
                dir: m,
                force: false,
            },
        ),
        (
            vec!["-c", "s", "db"],
            SetCommand::Copy {
                dir: s,
                force: false,
            },
        ),
        (
            vec!["-n", "--force", "-c", "m", "db"],
            SetCommand::Copy {
                dir: m,
                force: true,
            },
        ),
        (vec!["-a", "db"], SetCommand::Abort),
        (vec!["-w", "db"], SetCommand::Wait),
        (vec!["-R", "db"], SetCommand::Reset),
        (
            vec!["-P", "5", "200", "db"],
            SetCommand::Params {
                delay_ms: 5,
                units: 200,
            },
        ),
    ];
    for (argv, cmd) in sets {
        let (global, set) = written(&argv).unwrap();
        assert_eq!(set, cmd.to_string(), "{argv:?}");
        assert_eq!(parse_set(set.as_bytes()).unwrap(), cmd, "{argv:?}");
        assert_eq!(global, "", "{argv:?}");
    }
}

#[test]
fn values_the_daemon_would_refuse_are_refused_with_its_words() {
    for (argv, says) in [
        (
            vec!["-e", "dep", "/m", "/s", "/b", "--chunk-size", "lots"],
            "chunk_size 'lots' is not a size in bytes",
        ),
        (
            vec!["-e", "dep", "/m", "/s", "/b", "--durability", "maybe"],
            "durability must be strict or relaxed, not 'maybe'",
        ),
        (vec!["-P", "soon", "1", "db"], "usage: params DELAY UNITS"),
        (
            vec!["-P", "1", "9999999999", "db"],
            "usage: params DELAY UNITS",
        ),
    ] {
        let message = written(&argv).unwrap_err();
        assert!(message.starts_with(says), "{argv:?}: {message}");
    }
}

/// The options for features of later versions write words with no typed command: each is
/// one the parser knows as reserved, so the daemon answers "not supported yet".
#[test]
fn later_features_write_the_reserved_words() {
    for (argv, global_ctl) in [
        (vec!["-s", "db"], false),
        (vec!["-s", "all"], true),
        (vec!["-r", "db"], false),
        (vec!["-r", "all"], true),
        (vec!["-E", "db"], false),
        (vec!["-I", "/s", "/b", "db"], true),
        (vec!["-J", "db", "/b"], false),
        (vec!["-O", "/v"], true),
        (vec!["-A", "db", "ovf"], false),
        (vec!["-D", "db"], false),
        (vec!["-Z", "ovf"], true),
        (vec!["-C", "g"], true),
        (vec!["-M", "db", "g"], false),
        (vec!["-B", "db"], false),
    ] {
        let (global, set) = written(&argv).unwrap();
        let refusal = if global_ctl {
            assert_eq!(set, "", "{argv:?}");
            parse_global(global.as_bytes()).unwrap_err()
        } else {
            assert_eq!(global, "", "{argv:?}");
            parse_set(set.as_bytes()).unwrap_err()
        };
        assert!(
            refusal.to_string().contains("not supported yet"),
            "{argv:?}: {refusal}"
        );
    }
}

#[test]
fn the_host_option_is_taken_out_in_every_spelling() {
    let strip = |args: &[&str]| {
        let argv: Vec<String> = std::iter::once("iiadm")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        super::without_host(&argv)
    };
    assert_eq!(strip(&["-H", "h", "-i", "s"]), ["-i", "s"]);
    assert_eq!(strip(&["-Hh", "-l"]), ["-l"]);
    assert_eq!(strip(&["--host", "h", "-l"]), ["-l"]);
    assert_eq!(strip(&["--host=h", "-l"]), ["-l"]);
    assert_eq!(strip(&["-lH", "h"]), ["-l"]);
    assert_eq!(strip(&["-lHh"]), ["-l"]);
    // A value that holds an H is not a host option.
    assert_eq!(strip(&["-H", "h", "-i", "HOME"]), ["-i", "HOME"]);
    assert_eq!(
        strip(&["-H", "h", "-e", "ind", "/a/H", "/b", "/c"]),
        ["-e", "ind", "/a/H", "/b", "/c"]
    );
}
