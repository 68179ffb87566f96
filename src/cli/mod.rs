//! iiadm: the administrator's command. It talks to a running iifs only through the control
//! tree, so it behaves exactly like a script writing the same words into the ctl files.

pub mod args;
mod check;
mod fanout;
mod hosts;
pub mod mount;
mod pit;
mod remote;
pub mod show;
mod ssh;
pub mod tree;
pub mod volumes;
pub mod wait;
mod watch;

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::control::parse::{self, GlobalCommand, GroupCommand, SetCommand};
use crate::engine::{Direction, SetKind};
pub use args::Args;
use tree::Tree;

/// Why a command failed, as one line for the user (exit status 1).
#[derive(Debug)]
pub struct Failure {
    pub message: String,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
        }
    }
}

/// A usage error (exit status 2), printed with a pointer to --help.
struct Usage(String);

enum Outcome {
    Done,
    Failed(Failure),
    Usage(Usage),
}

pub fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`iiadm -l | head -1`) instead of failing on the write.
    // SAFETY: setting a signal's disposition to the default at start, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut argv: Vec<String> = std::env::args().collect();
    // `iiadm check SET` as the word reads, for `iiadm --check SET`.
    if argv.get(1).map(String::as_str) == Some("check") {
        argv[1] = "--check".into();
    }
    let parsed = Args::command()
        .try_get_matches_from(&argv)
        .and_then(|m| Args::from_arg_matches(&m).map(|a| (a, m)));
    let args = match parsed {
        Ok((mut a, m)) => {
            a.mount_given = m.value_source("mount") == Some(clap::parser::ValueSource::CommandLine);
            a
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if args.host.is_some() || args.hosts_file.is_some() {
        return remote::main(&args, &argv);
    }
    if let Some(target) = &args.check {
        return match check::run(target, args.repair, args.state_dir.as_deref(), args.json) {
            Ok(status) => ExitCode::from(status),
            Err(why) => {
                eprintln!("iiadm: {why}");
                ExitCode::from(check::CANNOT_CHECK)
            }
        };
    }
    if args.repair || args.state_dir.is_some() {
        eprintln!("iiadm: --repair and --state-dir go with --check\n\nUsage: iiadm [OPTIONS]\nFor more information, try 'iiadm --help'.");
        return ExitCode::from(2);
    }
    match run(&args) {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Failed(f) => {
            eprintln!("iiadm: {}", f.message);
            ExitCode::from(1)
        }
        Outcome::Usage(Usage(m)) => {
            eprintln!(
                "iiadm: {m}\n\nUsage: iiadm [OPTIONS]\nFor more information, try 'iiadm --help'."
            );
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Outcome {
    if args.version {
        println!("iiadm {}", env!("CARGO_PKG_VERSION"));
        if let Ok(root) = mount::find(args.mount.as_deref()) {
            if let Ok(v) = std::fs::read_to_string(root.join("version")) {
                println!("daemon: {} at {}", v.trim_end(), root.display());
            }
        }
        return Outcome::Done;
    }
    let tree = Tree::new(args.mount.clone());
    match dispatch(args, &tree) {
        Ok(()) => Outcome::Done,
        Err(Error::Failed(f)) => Outcome::Failed(f),
        Err(Error::Usage(m)) => Outcome::Usage(Usage(m)),
    }
}

enum Error {
    Failed(Failure),
    Usage(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error::Failed(f)
    }
}

fn usage<T>(m: impl Into<String>) -> Result<T, Error> {
    Err(Error::Usage(m.into()))
}

/// `s`/`m` as iiadm spells directions.
fn direction(word: &str, option: &str) -> Result<Direction, Error> {
    match word {
        "s" | "shadow" => Ok(Direction::Shadow),
        "m" | "master" => Ok(Direction::Master),
        _ => usage(format!(
            "{option} takes s or m (shadow or master), not '{word}'"
        )),
    }
}

/// Relative volume paths are taken from the current directory, as a shell user means them.
fn absolute(path: &str) -> Result<String, Error> {
    let p = std::path::absolute(Path::new(path))
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| Error::Failed(Failure::new(format!("cannot resolve {path}: {e}"))))?;
    word(&p, "path")
}

/// A command is words separated by spaces, and a word with `=` is an option: a path or name
/// holding either cannot be sent. Say so here rather than let the daemon misread it.
fn word(w: &str, what: &str) -> Result<String, Error> {
    if w.is_empty() || w.chars().any(|c| c.is_whitespace() || c == '=') {
        return usage(format!(
            "the {what} '{w}' cannot be passed to iifs: control words may not be empty or hold \
             spaces or '=' (rename it, or use a symbolic link without them)"
        ));
    }
    Ok(w.to_string())
}

/// A value the daemon's parser refuses, refused here with its words (exit 1, as when the
/// daemon refused it).
fn refused(e: crate::engine::Error) -> Error {
    Error::Failed(Failure::new(e.to_string()))
}

/// `-e ind|dep MASTER SHADOW BITMAP [SET]` with its options, as the global ctl's command.
fn enable(a: &Args, v: &[String]) -> Result<GlobalCommand, Error> {
    let kind = match v[0].as_str() {
        "ind" => SetKind::Independent,
        "dep" => SetKind::Dependent,
        other => return usage(format!("-e takes ind or dep first, not '{other}'")),
    };
    Ok(GlobalCommand::Enable {
        kind,
        master: absolute(&v[1])?,
        shadow: absolute(&v[2])?,
        bitmap: absolute(&v[3])?,
        name: v.get(4).map(|n| word(n, "set name")).transpose()?,
        chunk_size: chunk_size_option(a)?,
        durability: a
            .durability
            .as_deref()
            .map(parse::durability_value)
            .transpose()
            .map_err(refused)?,
        params: None,
    })
}

/// `-O VOL [NAME]` with `--chunk-size`, as the global ctl's `overflow init`.
fn overflow_init(a: &Args, v: &[String]) -> Result<GlobalCommand, Error> {
    Ok(GlobalCommand::OverflowInit {
        volume: absolute(&v[0])?,
        name: v.get(1).map(|n| word(n, "overflow name")).transpose()?,
        chunk_size: chunk_size_option(a)?,
    })
}

/// `--chunk-size` (with `-e` or `-O`), checked as the daemon will.
fn chunk_size_option(a: &Args) -> Result<Option<u64>, Error> {
    a.chunk_size
        .as_deref()
        .map(parse::chunk_size_value)
        .transpose()
        .map_err(refused)
}

/// The overflow `-A` names: a path (it holds a `/`) is taken from the current directory like
/// every volume path; anything else is an overflow's name (by default the file name of its
/// volume, so `-A db pool.img` run next to it names the same overflow).
fn overflow_ref(ovf: &str) -> Result<String, Error> {
    if ovf.contains('/') {
        absolute(ovf)
    } else {
        word(ovf, "overflow name")
    }
}

/// `-Q OVF`: the overflow's status file as the daemon writes it, or as JSON.
fn overflow_status(a: &Args, t: &Tree, name: &str) -> Result<String, Error> {
    let text = t
        .overflow_text(name)?
        .ok_or_else(|| tree::no_overflow(name))?;
    if a.json {
        let s = tree::status_lines(&text);
        return Ok(format!("{:#}\n", show::overflow_json(&s)));
    }
    Ok(text)
}

/// `-L`: one line per overflow volume, or a JSON array of their statuses.
fn overflow_list(a: &Args, t: &Tree) -> Result<String, Error> {
    let all = t.overflows()?;
    if a.json {
        let rows = all.iter().map(show::overflow_json).collect();
        return Ok(format!("{:#}\n", serde_json::Value::Array(rows)));
    }
    Ok(all.iter().map(|s| show::overflow_line(s) + "\n").collect())
}

/// `-g GROUP` with -u, -c, -a, -w or -i: the same action on the group's ctl or status.
fn group_action(a: &Args, t: &Tree, group: &str) -> Result<(), Error> {
    let group = word(group, "group name")?;
    let goes_with =
        "-g GROUP goes with -u s|m, -c s|m, -a, -w, -i, --hold SECONDS or --release, without a set";
    for (opt, v, copy) in [("-u", &a.update, false), ("-c", &a.copy, true)] {
        if let Some(v) = v {
            let [dir] = v.as_slice() else {
                return usage(format!(
                    "with -g, {opt} takes s or m alone: it acts on every set of the group"
                ));
            };
            let (dir, force) = (direction(dir, opt)?, a.force);
            if dir == Direction::Master {
                confirm_group(a, t, &group)?;
            }
            let cmd = if copy {
                GroupCommand::Copy { dir, force }
            } else {
                GroupCommand::Update { dir, force }
            };
            return Ok(t.group(&group, &cmd)?);
        }
    }
    if let Some(v) = &a.hold {
        let [seconds] = v.as_slice() else {
            return usage(
                "with -g, --hold takes SECONDS alone: it holds every master of the group",
            );
        };
        let seconds = parse::hold_value(seconds).map_err(refused)?;
        return Ok(t.group(&group, &GroupCommand::Hold { seconds })?);
    }
    if let Some(None) = &a.release {
        return Ok(t.group(&group, &GroupCommand::Release)?);
    }
    match (&a.abort, &a.wait, a.status.as_deref()) {
        (Some(None), _, _) => Ok(t.group(&group, &GroupCommand::Abort)?),
        (_, Some(None), _) => Ok(wait::wait_group(t, &group)?),
        // `-i` alone reads `all`: the group's status.
        (_, _, Some("all")) => {
            print!("{}", group_status(a, t, &group)?);
            Ok(())
        }
        _ => usage(goes_with),
    }
}

/// The SET of `-a SET` or `-w SET`, which may be left out only with -g.
fn one_set<'a>(option: &str, set: &'a Option<String>) -> Result<&'a str, Error> {
    match set {
        Some(set) => Ok(set),
        None => usage(format!(
            "{option} takes SET, or -g GROUP for every set of a group"
        )),
    }
}

/// `-g GROUP -i`: the group's status block, or its JSON.
fn group_status(a: &Args, t: &Tree, group: &str) -> Result<String, Error> {
    let text = t.group_text(group)?.ok_or_else(|| tree::no_group(group))?;
    let s = tree::status_lines(&text);
    if a.json {
        return Ok(format!("{:#}\n", show::group_json(&s)));
    }
    Ok(show::group_block(&s))
}

/// `-G`: one line per group, or a JSON array of their statuses.
fn group_list(a: &Args, t: &Tree) -> Result<String, Error> {
    let all = t.groups()?;
    if a.json {
        let rows = all.iter().map(show::group_json).collect();
        return Ok(format!("{:#}\n", serde_json::Value::Array(rows)));
    }
    Ok(all.iter().map(|s| show::group_line(s) + "\n").collect())
}

/// `-s`/`-r`: one set, or `all` through the global ctl.
fn suspend_resume(t: &Tree, which: &str, suspend: bool) -> Result<(), Error> {
    let done = match (which, suspend) {
        ("all", true) => t.global(&GlobalCommand::SuspendAll),
        ("all", false) => t.global(&GlobalCommand::ResumeAll),
        (set, true) => t.set(set, &SetCommand::Suspend),
        (set, false) => t.set(set, &SetCommand::Resume),
    };
    Ok(done?)
}

/// -C, -M, -B, -N, -X and -G: returns false when none was given.
fn group_admin(a: &Args, t: &Tree) -> Result<bool, Error> {
    if let Some(g) = &a.group_create {
        let cmd = GlobalCommand::GroupCreate {
            name: word(g, "group name")?,
        };
        t.global(&cmd)?
    } else if let Some(v) = &a.group_add {
        let cmd = SetCommand::Group {
            name: word(&v[1], "group name")?,
        };
        t.set(&v[0], &cmd)?
    } else if let Some(set) = &a.group_remove {
        t.set(set, &SetCommand::Ungroup)?
    } else if let Some(v) = &a.group_rename {
        let cmd = GroupCommand::Rename {
            name: word(&v[1], "group name")?,
        };
        t.group(&word(&v[0], "group name")?, &cmd)?
    } else if let Some(g) = &a.group_delete {
        t.group(&word(g, "group name")?, &GroupCommand::Delete)?
    } else if a.group_list {
        print!("{}", group_list(a, t)?);
    } else {
        return Ok(false);
    }
    Ok(true)
}

fn dispatch(a: &Args, t: &Tree) -> Result<(), Error> {
    if a.durability.is_some() && a.enable.is_none() {
        return usage("--durability goes with -e");
    }
    if a.chunk_size.is_some() && a.enable.is_none() && a.overflow_init.is_none() {
        return usage("--chunk-size goes with -e or -O");
    }
    if a.force && a.update.is_none() && a.copy.is_none() {
        return usage("--force goes with -u or -c");
    }
    if a.watch {
        return watch::watch(t, a.status.as_deref(), a.json);
    }
    if a.group_pit.is_some() {
        return usage(
            "--group-pit takes its hosts from -H or --hosts-file (on this host alone, \
             iiadm -g GROUP -u s is one point in time already)",
        );
    }
    if let Some(g) = &a.hold_session {
        return pit::hold_session(t, &word(g, "group name")?, a.lease);
    }
    if let Some(g) = &a.group {
        return group_action(a, t, g);
    }
    if let Some(v) = &a.enable {
        return Ok(t.global(&enable(a, v)?)?);
    }
    if let Some(v) = &a.overflow_init {
        return Ok(t.global(&overflow_init(a, v)?)?);
    }
    if let Some(set) = &a.disable {
        return Ok(t.set(set, &SetCommand::Disable)?);
    }
    for (opt, v, copy) in [("-u", &a.update, false), ("-c", &a.copy, true)] {
        if let Some(v) = v {
            let [dir, set] = v.as_slice() else {
                return usage(format!(
                    "{opt} takes s|m and SET, or s|m alone with -g GROUP"
                ));
            };
            let (dir, force) = (direction(dir, opt)?, a.force);
            if dir == Direction::Master {
                confirm(a, t, set)?;
            }
            let cmd = if copy {
                SetCommand::Copy { dir, force }
            } else {
                SetCommand::Update { dir, force }
            };
            return Ok(t.set(set, &cmd)?);
        }
    }
    if let Some(set) = &a.abort {
        return Ok(t.set(one_set("-a", set)?, &SetCommand::Abort)?);
    }
    if let Some(v) = &a.hold {
        let [seconds, set] = v.as_slice() else {
            return usage("--hold takes SECONDS and SET, or SECONDS alone with -g GROUP");
        };
        let seconds = parse::hold_value(seconds).map_err(refused)?;
        return Ok(t.set(set, &SetCommand::Hold { seconds })?);
    }
    if let Some(set) = &a.release {
        return Ok(t.set(one_set("--release", set)?, &SetCommand::Release)?);
    }
    if let Some(set) = &a.wait {
        return Ok(wait::wait(t, one_set("-w", set)?)?);
    }
    if let Some(which) = &a.suspend {
        return suspend_resume(t, which, true);
    }
    if let Some(which) = &a.resume {
        return suspend_resume(t, which, false);
    }
    if group_admin(a, t)? {
        return Ok(());
    }
    if let Some(which) = &a.status {
        return status(a, t, which);
    }
    if let Some(set) = &a.reset {
        return Ok(t.set(set, &SetCommand::Reset)?);
    }
    if let Some(v) = &a.params {
        return params(t, v);
    }
    if let Some(v) = &a.attach {
        let cmd = SetCommand::Attach {
            overflow: overflow_ref(&v[1])?,
        };
        return Ok(t.set(&v[0], &cmd)?);
    }
    if let Some(set) = &a.detach {
        return Ok(t.set(set, &SetCommand::Detach)?);
    }
    if let Some(name) = &a.overflow_delete {
        let cmd = GlobalCommand::OverflowDelete {
            name: word(name, "overflow name")?,
        };
        return Ok(t.global(&cmd)?);
    }
    if let Some(name) = &a.overflow_status {
        print!("{}", overflow_status(a, t, name)?);
        return Ok(());
    }
    if a.overflow_list {
        print!("{}", overflow_list(a, t)?);
        return Ok(());
    }
    if a.volumes {
        print!("{}", volumes::show(t, a.json)?);
        return Ok(());
    }
    if export_import_join(a, t)? {
        return Ok(());
    }
    // No action: list, as the original did.
    list(a, t)
}

/// `-u m` / `-c m` overwrite the master: ask on a terminal unless -n.
fn confirm(a: &Args, t: &Tree, set: &str) -> Result<(), Error> {
    if a.no_confirm || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    let s = t.status(set)?;
    ask(&format!(
        "Overwrite master {} of set {set} with its shadow {}?",
        tree::get(&s, "master"),
        tree::get(&s, "shadow")
    ))
}

/// `-g GROUP -u m` / `-c m` overwrite every member's master: ask on a terminal unless -n.
fn confirm_group(a: &Args, t: &Tree, group: &str) -> Result<(), Error> {
    if a.no_confirm || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    let text = t.group_text(group)?.ok_or_else(|| tree::no_group(group))?;
    let s = tree::status_lines(&text);
    let masters: Vec<String> = show::group_members(&s)
        .into_iter()
        .map(|[name, ..]| {
            let master = t
                .status(&name)
                .map(|st| tree::get(&st, "master").to_string())
                .unwrap_or_default();
            format!("  {name}: {master}")
        })
        .collect();
    ask(&format!(
        "Overwrite the master of every set of group {group} with its shadow:\n{}\nGo on?",
        masters.join("\n")
    ))
}

/// A question on stderr; anything but yes refuses.
fn ask(question: &str) -> Result<(), Error> {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::Failed(Failure::new(
            "not confirmed; nothing was done",
        )))
    }
}

fn status(a: &Args, t: &Tree, which: &str) -> Result<(), Error> {
    let names = if which == "all" {
        t.sets()?
    } else {
        vec![which.to_string()]
    };
    let all: Vec<tree::StatusLines> = names
        .iter()
        .map(|n| t.status(n))
        .collect::<Result<_, _>>()?;
    if a.json {
        let value = if which == "all" {
            serde_json::Value::Array(all.iter().map(show::json).collect())
        } else {
            all.first().map(show::json).unwrap_or_default()
        };
        println!("{value:#}");
    } else if all.is_empty() {
        println!("no sets are configured");
    } else {
        let blocks: Vec<String> = all.iter().map(show::block).collect();
        print!("{}", blocks.join("\n"));
    }
    Ok(())
}

fn list(a: &Args, t: &Tree) -> Result<(), Error> {
    let all: Vec<tree::StatusLines> = t
        .sets()?
        .iter()
        .map(|n| t.status(n))
        .collect::<Result<_, _>>()?;
    if a.json {
        let rows = all.iter().map(show::json).collect();
        println!("{:#}", serde_json::Value::Array(rows));
    } else {
        for s in &all {
            println!("{}", show::line(s));
        }
    }
    Ok(())
}

/// `-P DELAY UNITS SET` sets the throttle; `-P SET` shows it.
fn params(t: &Tree, v: &[String]) -> Result<(), Error> {
    match v {
        [set] => {
            let s = t.status(set)?;
            if show::unrestored(&s) {
                println!("{set}: copy throttle unknown (the set could not be restored at start)");
                return Ok(());
            }
            let (delay, units) = tree::get(&s, "params")
                .split_once(' ')
                .unwrap_or(("0", "100"));
            println!("{set}: copy delay {delay} ms, copy unit {units} chunks");
            Ok(())
        }
        [delay, units, set] => {
            Ok(t.set(set, &parse::params_values(delay, units).map_err(refused)?)?)
        }
        _ => usage("-P takes DELAY UNITS SET to set the throttle, or SET to show it"),
    }
}

/// -E, -I and -J: export, import and join. Returns false when none was given.
fn export_import_join(a: &Args, t: &Tree) -> Result<bool, Error> {
    if let Some(set) = &a.export {
        t.set(set, &SetCommand::Export)?
    } else if let Some(v) = &a.import {
        t.global(&GlobalCommand::Import {
            shadow: absolute(&v[0])?,
            bitmap: absolute(&v[1])?,
            name: v.get(2).map(|n| word(n, "set name")).transpose()?,
        })?
    } else if let Some(v) = &a.join {
        t.set(
            &v[0],
            &SetCommand::Join {
                bitmap: absolute(&v[1])?,
            },
        )?
    } else {
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
