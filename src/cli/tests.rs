//! iiadm's own tests: the words each action writes into the control tree.

use std::path::{Path, PathBuf};

use clap::Parser;

use super::*;
use crate::control::parse::parse_group;
use crate::control::{parse_global, parse_set};

#[test]
fn the_ssh_setting_is_split_on_whitespace() {
    assert_eq!(super::ssh::ssh_words(None), ["ssh"]);
    assert_eq!(super::ssh::ssh_words(Some("  ")), ["ssh"]);
    assert_eq!(
        super::ssh::ssh_words(Some("ssh -p 2222\t-i /root/key")),
        ["ssh", "-p", "2222", "-i", "/root/key"]
    );
}

/// A directory iiadm takes for an iifs mount, with one set `db` and one group `app`. Its ctl
/// files are plain files, so what iiadm writes stays there to be read back.
fn fake_mount() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("version"), "iifs test\n").unwrap();
    std::fs::write(root.join("ctl"), "").unwrap();
    std::fs::create_dir_all(root.join("sets/db")).unwrap();
    std::fs::write(root.join("sets/db/ctl"), "").unwrap();
    // -w draws progress on a terminal while the set copies: an idle set has none to draw.
    std::fs::write(root.join("sets/db/status"), "state: idle\n").unwrap();
    std::fs::create_dir_all(root.join("groups/app")).unwrap();
    std::fs::write(root.join("groups/app/ctl"), "").unwrap();
    std::fs::write(root.join("groups/app/status"), GROUP_STATUS).unwrap();
    dir
}

/// A group's status as the daemon writes it, with a member copying and one out of space.
const GROUP_STATUS: &str = "name: app\nstate: mixed\nstatus: degraded\nprogress: 40\n\
                            chunks_done: 40\nchunks_to_do: 100\nmembers: db logs\n\
                            member: db normal 40 copying\nmember: logs degraded 0 out of space\n";

/// What one iiadm command line wrote: (the global ctl's bytes, set db's ctl's bytes), or the
/// failure's message. Nothing may be written to the group's ctl.
fn written(argv: &[&str]) -> Result<(String, String), String> {
    let (global, set, group) = written_all(argv)?;
    assert_eq!(group, "", "{argv:?}");
    Ok((global, set))
}

/// What one iiadm command line wrote: (the global ctl's, set db's ctl's, group app's ctl's
/// bytes), or the failure's message.
fn written_all(argv: &[&str]) -> Result<(String, String, String), String> {
    let mount = fake_mount();
    let root: PathBuf = mount.path().into();
    let mut full = vec!["iiadm", "--mount", root.to_str().unwrap()];
    full.extend(argv);
    let args = Args::try_parse_from(&full).unwrap();
    let read = |p: &Path| std::fs::read_to_string(root.join(p)).unwrap();
    let tree = Tree::new(args.mount.clone());
    match dispatch(&args, &tree) {
        Ok(()) => Ok((
            read(Path::new("ctl")),
            read(Path::new("sets/db/ctl")),
            read(Path::new("groups/app/ctl")),
        )),
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
        (
            vec!["-O", "/o"],
            GlobalCommand::OverflowInit {
                volume: "/o".into(),
                name: None,
                chunk_size: None,
            },
        ),
        (
            vec!["--overflow-init", "/o", "pool", "--chunk-size", "4K"],
            GlobalCommand::OverflowInit {
                volume: "/o".into(),
                name: Some("pool".into()),
                chunk_size: Some(4096),
            },
        ),
        (
            vec!["-Z", "pool"],
            GlobalCommand::OverflowDelete {
                name: "pool".into(),
            },
        ),
        (
            vec!["-C", "app2"],
            GlobalCommand::GroupCreate {
                name: "app2".into(),
            },
        ),
        (vec!["-s", "all"], GlobalCommand::SuspendAll),
        (vec!["--suspend", "all"], GlobalCommand::SuspendAll),
        (vec!["-r", "all"], GlobalCommand::ResumeAll),
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
        (
            vec!["-A", "db", "pool"],
            SetCommand::Attach {
                overflow: "pool".into(),
            },
        ),
        (
            vec!["--attach", "db", "/srv/o.img"],
            SetCommand::Attach {
                overflow: "/srv/o.img".into(),
            },
        ),
        (vec!["-D", "db"], SetCommand::Detach),
        (vec!["-s", "db"], SetCommand::Suspend),
        (vec!["--resume", "db"], SetCommand::Resume),
        (
            vec!["-M", "db", "app"],
            SetCommand::Group { name: "app".into() },
        ),
        (
            vec!["--group-add", "db", "other"],
            SetCommand::Group {
                name: "other".into(),
            },
        ),
        (vec!["-B", "db"], SetCommand::Ungroup),
    ];
    for (argv, cmd) in sets {
        let (global, set) = written(&argv).unwrap();
        assert_eq!(set, cmd.to_string(), "{argv:?}");
        assert_eq!(parse_set(set.as_bytes()).unwrap(), cmd, "{argv:?}");
        assert_eq!(global, "", "{argv:?}");
    }
    let groups = [
        (
            vec!["-g", "app", "-u", "s"],
            GroupCommand::Update {
                dir: s,
                force: false,
            },
        ),
        (
            vec!["-u", "s", "--group", "app", "--force"],
            GroupCommand::Update {
                dir: s,
                force: true,
            },
        ),
        (
            vec!["-n", "-g", "app", "-u", "m"],
            GroupCommand::Update {
                dir: m,
                force: false,
            },
        ),
        (
            vec!["-g", "app", "-c", "shadow"],
            GroupCommand::Copy {
                dir: s,
                force: false,
            },
        ),
        (
            vec!["-n", "--force", "-g", "app", "-c", "m"],
            GroupCommand::Copy {
                dir: m,
                force: true,
            },
        ),
        (vec!["-g", "app", "-a"], GroupCommand::Abort),
        (vec!["-a", "-g", "app"], GroupCommand::Abort),
        (vec!["-g", "app", "-w"], GroupCommand::Wait),
        (
            vec!["-N", "app", "web"],
            GroupCommand::Rename { name: "web".into() },
        ),
        (vec!["-X", "app"], GroupCommand::Delete),
        (vec!["--group-delete", "app"], GroupCommand::Delete),
    ];
    for (argv, cmd) in groups {
        let (global, set, group) = written_all(&argv).unwrap();
        assert_eq!(group, cmd.to_string(), "{argv:?}");
        assert_eq!(parse_group(group.as_bytes()).unwrap(), cmd, "{argv:?}");
        assert_eq!((global.as_str(), set.as_str()), ("", ""), "{argv:?}");
    }
}

/// `-g` goes with -u, -c, -a, -w and -i, which then take no set; without -g they need one.
#[test]
fn the_group_option_replaces_the_set() {
    for (argv, says) in [
        (
            vec!["-g", "app", "-u", "s", "db"],
            "usage: with -g, -u takes s or m alone",
        ),
        (
            vec!["-g", "app", "-c", "m", "db"],
            "usage: with -g, -c takes s or m alone",
        ),
        (vec!["-g", "app", "-u", "x"], "usage: -u takes s or m"),
        (vec!["-g", "app", "-a", "db"], "usage: -g GROUP goes with"),
        (vec!["-g", "app", "-w", "db"], "usage: -g GROUP goes with"),
        (vec!["-g", "app", "-i", "db"], "usage: -g GROUP goes with"),
        (vec!["-g", "app", "-d", "db"], "usage: -g GROUP goes with"),
        (vec!["-g", "app"], "usage: -g GROUP goes with"),
        (vec!["-g", "app", "-s", "db"], "usage: -g GROUP goes with"),
        (
            vec!["-g", "app", "-a", "--force"],
            "usage: --force goes with -u or -c",
        ),
        (vec!["-g", "my app", "-a"], "usage: the group name 'my app'"),
        (
            vec!["-u", "s"],
            "usage: -u takes s|m and SET, or s|m alone with -g",
        ),
        (
            vec!["-c", "m"],
            "usage: -c takes s|m and SET, or s|m alone with -g",
        ),
        (vec!["-a"], "usage: -a takes SET, or -g GROUP"),
        (vec!["-w"], "usage: -w takes SET, or -g GROUP"),
        (vec!["-C", "a=b"], "usage: the group name 'a=b'"),
        (
            vec!["-M", "db", "two words"],
            "usage: the group name 'two words'",
        ),
        (
            vec!["-g", "nope", "-a"],
            "no group named 'nope' (iiadm -G lists the groups)",
        ),
        (
            vec!["-g", "../sets/db", "-a"],
            "no group named '../sets/db'",
        ),
        (vec!["-X", "nope"], "no group named 'nope'"),
        (vec!["-N", "nope", "x"], "no group named 'nope'"),
    ] {
        let message = written_all(&argv).unwrap_err();
        assert!(message.starts_with(says), "{argv:?}: {message}");
    }
}

#[test]
fn group_status_and_list() {
    let mount = fake_mount();
    let root = mount.path();
    let t = Tree::new(Some(root.into()));
    let block = group_status(&args(root, &["-g", "app", "-i"]), &t, "app").ok();
    assert_eq!(
        block.as_deref(),
        Some(
            "app: group, mixed\n  status:         degraded\n  members:        db logs\n  \
             copy:           40% done, 40 of 100 chunks\n  \
             db:             normal, copying, 40%\n  \
             logs:           degraded, out of space, 0%\n"
        )
    );
    let json = group_status(&args(root, &["-g", "app", "-i", "--json"]), &t, "app");
    let j: serde_json::Value = serde_json::from_str(&json.unwrap_or_default()).unwrap();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "state",
            "status",
            "progress",
            "chunks_done",
            "chunks_to_do",
            "members",
            "member"
        ],
        "the status file's keys, in its order"
    );
    assert_eq!(
        (j["progress"].as_u64(), j["chunks_to_do"].as_u64()),
        (Some(40), Some(100))
    );
    assert_eq!(j["members"], serde_json::json!(["db", "logs"]));
    assert_eq!(
        j["member"][1],
        serde_json::json!({"name": "logs", "status": "degraded", "progress": 0,
                           "state": "out of space"})
    );
    let m = failure(group_status(&args(root, &["-g", "x", "-i"]), &t, "x"));
    assert!(m.starts_with("no group named 'x'"), "{m}");

    let dir = root.join("groups/empty");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("status"),
        "name: empty\nstate: idle\nstatus: normal\nprogress: 100\nchunks_done: 0\n\
         chunks_to_do: 0\nmembers: -\n",
    )
    .unwrap();
    let list = group_list(&args(root, &["-G"]), &t).ok();
    assert_eq!(
        list.as_deref(),
        Some("app degraded db logs\nempty normal -\n")
    );
    let json = group_list(&args(root, &["-G", "--json"]), &t).unwrap_or_default();
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(j.as_array().map(Vec::len), Some(2));
    assert_eq!(j[1]["members"], serde_json::json!([]));
    assert_eq!(j[1]["member"], serde_json::json!([]));
    let block = group_status(&args(root, &["-g", "empty", "-i"]), &t, "empty").ok();
    assert_eq!(
        block.as_deref(),
        Some(
            "empty: group, idle\n  status:         normal\n  members:        none\n  \
             copy:           none\n"
        )
    );
    // A daemon without groups says so.
    std::fs::remove_dir_all(root.join("groups")).unwrap();
    assert!(failure(group_list(&args(root, &["-G"]), &t)).contains("does not offer groups"));
}

/// `-i` and `-l` show a set's status word and its group.
#[test]
fn a_set_in_a_group_shows_it() {
    let mount = fake_mount();
    let root = mount.path();
    std::fs::write(
        root.join("sets/db/status"),
        "name: db\ntype: independent\nstate: suspended\ndirection: shadow\nprogress: 40\n\
         master: /m\nshadow: /s\nbitmap: /b\noverflow: -\ngroup: app\nsize: 1048576\n\
         chunk_size: 65536\nchunks: 16\nchunks_differ: 16\nparams: 0 100\nlast_error: -\n\
         durability: strict\nchunks_to_copy: 10\npit_time: 0\nstatus: degraded\n",
    )
    .unwrap();
    let t = Tree::new(Some(root.into()));
    let s = t.status("db").unwrap();
    assert_eq!(show::line(&s), "ind /m /s /b db (suspended, group app)");
    let b = show::block(&s);
    assert!(
        b.starts_with(
            "db: independent set, suspended\n  status:         degraded\n  \
             group:          app\n  master:         /m\n"
        ),
        "{b}"
    );
    let j = show::json(&s);
    assert_eq!(
        (j["group"].as_str(), j["status"].as_str()),
        (Some("app"), Some("degraded"))
    );
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

/// -E, -I and -J write the typed export, import and join commands.
#[test]
fn export_import_join_write_their_typed_commands() {
    let (global, set) = written(&["-E", "db"]).unwrap();
    assert_eq!(
        (global.as_str(), parse_set(set.as_bytes()).unwrap()),
        ("", SetCommand::Export)
    );
    let (global, set) = written(&["-I", "/s", "/b", "db"]).unwrap();
    assert_eq!(set, "");
    assert_eq!(
        parse_global(global.as_bytes()).unwrap(),
        GlobalCommand::Import {
            shadow: "/s".into(),
            bitmap: "/b".into(),
            name: Some("db".into())
        }
    );
    let (global, set) = written(&["-J", "db", "/b"]).unwrap();
    assert_eq!(global, "");
    assert_eq!(
        parse_set(set.as_bytes()).unwrap(),
        SetCommand::Join {
            bitmap: "/b".into()
        }
    );
}

/// Relative paths are taken from the current directory, for `-O` as for `-e`; `-A` takes a
/// word with a `/` for a path and anything else for an overflow's name.
#[test]
fn overflow_paths_are_made_absolute() {
    let here = std::env::current_dir().unwrap();
    let at = |p: &str| here.join(p).to_string_lossy().into_owned();
    let (global, _) = written(&["-O", "o.img"]).unwrap();
    let init = GlobalCommand::OverflowInit {
        volume: at("o.img"),
        name: None,
        chunk_size: None,
    };
    assert_eq!(global, init.to_string());
    let (_, set) = written(&["-A", "db", "./o.img"]).unwrap();
    let attach = SetCommand::Attach {
        overflow: at("o.img"),
    };
    assert_eq!(set, attach.to_string());
    let (_, set) = written(&["-A", "db", "o.img"]).unwrap();
    let by_name = SetCommand::Attach {
        overflow: "o.img".into(),
    };
    assert_eq!(set, by_name.to_string());
}

#[test]
fn options_that_go_with_another_are_refused_alone() {
    for (argv, says) in [
        (
            vec!["-O", "/o", "--durability", "strict"],
            "usage: --durability goes with -e",
        ),
        (
            vec!["-D", "db", "--chunk-size", "4K"],
            "usage: --chunk-size goes with -e or -O",
        ),
        (
            vec!["-Z", "pool", "--force"],
            "usage: --force goes with -u or -c",
        ),
        (
            vec!["-O", "/o", "my pool"],
            "usage: the overflow name 'my pool'",
        ),
        (vec!["-A", "db", "a=b"], "usage: the overflow name 'a=b'"),
        (
            vec!["-O", "/o", "--chunk-size", "lots"],
            "chunk_size 'lots'",
        ),
    ] {
        let message = written(&argv).unwrap_err();
        assert!(message.starts_with(says), "{argv:?}: {message}");
    }
}

/// A fake mount with two overflow volumes, as the daemon shows them.
fn with_overflows(root: &Path) {
    for (name, status) in [
        (
            "pool",
            "name: pool\nvolume: /srv/pool.img\nsize: 67108864\nchunk_size: 65536\n\
             chunks_total: 1023\nchunks_used: 5\nchunks_free: 1018\nsets: db=3 web=2\n",
        ),
        (
            "spare",
            "name: spare\nvolume: /srv/spare.img\nsize: 1048576\nchunk_size: 65536\n\
             chunks_total: 15\nchunks_used: 0\nchunks_free: 15\nsets: -\n",
        ),
    ] {
        let dir = root.join("overflow").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ctl"), "").unwrap();
        std::fs::write(dir.join("status"), status).unwrap();
    }
}

fn args(root: &Path, argv: &[&str]) -> Args {
    let mut full = vec!["iiadm", "--mount", root.to_str().unwrap()];
    full.extend(argv);
    Args::try_parse_from(&full).unwrap()
}

fn failure(r: Result<String, Error>) -> String {
    match r {
        Ok(out) => panic!("succeeded with {out:?}"),
        Err(Error::Failed(f)) => f.message,
        Err(Error::Usage(m)) => format!("usage: {m}"),
    }
}

#[test]
fn overflow_status_and_list() {
    let mount = fake_mount();
    let root = mount.path();
    let t = Tree::new(Some(root.into()));
    // A daemon without overflow volumes says so.
    let a = args(root, &["-L"]);
    assert!(failure(overflow_list(&a, &t)).contains("does not offer overflow volumes"));
    with_overflows(root);

    let text = overflow_status(&args(root, &["-Q", "pool"]), &t, "pool").ok();
    let file = std::fs::read_to_string(root.join("overflow/pool/status")).unwrap();
    assert_eq!(text, Some(file), "-Q prints the status file");
    let json = overflow_status(&args(root, &["-Q", "pool", "--json"]), &t, "pool").ok();
    let j: serde_json::Value = serde_json::from_str(&json.unwrap()).unwrap();
    assert_eq!(j["name"], "pool");
    assert_eq!(j["volume"], "/srv/pool.img");
    assert_eq!(
        (j["chunks_total"].as_u64(), j["chunks_used"].as_u64()),
        (Some(1023), Some(5))
    );
    assert_eq!(j["sets"], serde_json::json!({"db": 3, "web": 2}));
    for missing in ["nope", "../sets/db", ""] {
        let m = failure(overflow_status(&args(root, &["-Q", missing]), &t, missing));
        assert!(
            m.starts_with(&format!("no overflow volume named '{missing}'")),
            "{m}"
        );
    }

    let list = overflow_list(&args(root, &["-L"]), &t).ok();
    assert_eq!(
        list.as_deref(),
        Some("pool /srv/pool.img 5/1023 db=3 web=2\nspare /srv/spare.img 0/15 -\n")
    );
    let json = overflow_list(&args(root, &["-L", "--json"]), &t).unwrap_or_default();
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(j.as_array().map(Vec::len), Some(2));
    assert_eq!(j[1]["sets"], serde_json::json!({}));
    assert_eq!(j[1]["chunks_free"], 15);
}

/// `-l` and `-i` take a status value whole: a state of several words stays one state.
#[test]
fn a_compact_set_out_of_space_lists_and_shows() {
    let mount = fake_mount();
    let root = mount.path();
    std::fs::write(
        root.join("sets/db/status"),
        "name: db\ntype: compact\nstate: out of space\ndirection: -\nprogress: 100\n\
         master: /m\nshadow: /s\nbitmap: /b\noverflow: pool\ngroup: -\nsize: 1048576\n\
         chunk_size: 65536\nchunks: 16\nchunks_differ: 16\nparams: 0 100\nlast_error: -\n\
         durability: strict\nchunks_to_copy: 0\npit_time: 0\nshadow_chunks: 4\n\
         shadow_chunks_used: 4\noverflow_chunks_used: 3\n\
         space_warning: 100% of the shadow and overflow space is used (warning at 80%)\n",
    )
    .unwrap();
    let t = Tree::new(Some(root.into()));
    let s = t.status("db").unwrap();
    assert_eq!(tree::get(&s, "state"), "out of space");
    assert_eq!(show::line(&s), "dep /m /s /b db (out of space)");
    let b = show::block(&s);
    assert!(b.starts_with("db: compact set, out of space\n"), "{b}");
    assert!(
        b.contains("shadow space:   4 of 4 chunks used (100%)\n"),
        "{b}"
    );
    assert!(
        b.contains("overflow:       pool, 3 chunks of this set\n"),
        "{b}"
    );
    assert!(b.contains("space warning:  100% of the shadow"), "{b}");
    let j = show::json(&s);
    assert_eq!(j["state"], "out of space");
    assert_eq!(
        (
            j["shadow_chunks"].as_u64(),
            j["overflow_chunks_used"].as_u64()
        ),
        (Some(4), Some(3))
    );
}

#[test]
fn the_host_option_is_taken_out_in_every_spelling() {
    let strip = |args: &[&str]| {
        let argv: Vec<String> = std::iter::once("iiadm")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        super::remote::without_host(&argv)
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
