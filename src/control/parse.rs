//! Command words <-> typed commands. `Display` of a command prints exactly the words that
//! `parse_*` reads back.

use std::fmt;

use crate::engine::error::{invalid, Result};
use crate::engine::{Direction, Durability, SetKind};

/// A command written to the global `ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalCommand {
    Enable {
        kind: SetKind,
        master: String,
        shadow: String,
        bitmap: String,
        name: Option<String>,
        chunk_size: Option<u64>,
        durability: Option<Durability>,
        /// Copy throttle from the start (`delay=MS units=N`), as `params` sets it later.
        params: Option<(u32, u32)>,
    },
    /// `overflow init VOLUME [NAME] [chunk_size=BYTES]`: write a fresh overflow header on
    /// VOLUME and make it known as NAME (default: the volume's file name).
    OverflowInit {
        volume: String,
        name: Option<String>,
        chunk_size: Option<u64>,
    },
    /// `overflow delete NAME`: forget an overflow volume no set uses.
    OverflowDelete {
        name: String,
    },
    /// `group create NAME`: an empty group.
    GroupCreate {
        name: String,
    },
    /// `suspend all` / `resume all`.
    SuspendAll,
    ResumeAll,
    /// `import SHADOW BITMAP [NAME]`: take in a shadow another host exported; BITMAP tracks
    /// every write to it here.
    Import {
        shadow: String,
        bitmap: String,
        name: Option<String>,
    },
}

/// A command written to `groups/NAME/ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupCommand {
    /// `update`/`copy` of every member at one point in time.
    Update {
        dir: Direction,
        force: bool,
    },
    Copy {
        dir: Direction,
        force: bool,
    },
    Abort,
    Wait,
    Add {
        set: String,
    },
    Remove {
        set: String,
    },
    Rename {
        name: String,
    },
    Delete,
    /// `hold SECONDS`: every member's master takes no new write until `release` or for
    /// SECONDS at most.
    Hold {
        seconds: u64,
    },
    Release,
}

/// A command written to `overflow/NAME/ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverflowCommand {
    /// Forget this overflow volume (refused while a set uses it).
    Delete,
}

/// A command written to a set's `ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetCommand {
    /// `force`: start even while the target file (`shadow` or `master`) is open.
    Update {
        dir: Direction,
        force: bool,
    },
    Copy {
        dir: Direction,
        force: bool,
    },
    Abort,
    Wait,
    Reset,
    Disable,
    Params {
        delay_ms: u32,
        units: u32,
    },
    /// `attach OVERFLOW`: a compact set spills into this overflow volume (a name or the path
    /// of an initialised overflow).
    Attach {
        overflow: String,
    },
    /// `detach`: the set no longer spills (refused while it holds overflow chunks).
    Detach,
    Suspend,
    Resume,
    /// `group NAME`: move the set into a group.
    Group {
        name: String,
    },
    /// `ungroup`: take the set out of its group.
    Ungroup,
    /// `export`: hand the shadow to another host.
    Export,
    /// `join BITMAP`: take the exported shadow back, merging the importing host's bitmap.
    Join {
        bitmap: String,
    },
    /// `hold SECONDS`: the set's master takes no new write until `release` or for SECONDS at
    /// most.
    Hold {
        seconds: u64,
    },
    Release,
}

fn words(input: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(input).map_err(|_| invalid("the command is not UTF-8 text"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.contains('\n') {
        return Err(invalid(
            "write one command per write(2), without embedded newlines",
        ));
    }
    let w: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if w.is_empty() {
        return Err(invalid("empty command"));
    }
    Ok(w)
}

pub fn parse_global(input: &[u8]) -> Result<GlobalCommand> {
    let w = words(input)?;
    match w[0].as_str() {
        "enable" => parse_enable(&w[1..]),
        "overflow" => parse_overflow(&w[1..]),
        "group" => match (w.get(1).map(String::as_str), w.len()) {
            (Some("create"), 3) => Ok(GlobalCommand::GroupCreate { name: w[2].clone() }),
            _ => Err(invalid(
                "usage: group create NAME (a name of letters, digits and . _ - + @ :, no spaces)",
            )),
        },
        "suspend" | "resume" => match (w.get(1).map(String::as_str), w.len()) {
            (Some("all"), 2) if w[0] == "suspend" => Ok(GlobalCommand::SuspendAll),
            (Some("all"), 2) => Ok(GlobalCommand::ResumeAll),
            _ => Err(invalid(format!(
                "usage: {} all (one set: write '{}' to its sets/NAME/ctl)",
                w[0], w[0]
            ))),
        },
        "import" => match w.len() {
            3 | 4 => Ok(GlobalCommand::Import {
                shadow: w[1].clone(),
                bitmap: w[2].clone(),
                name: w.get(3).cloned(),
            }),
            _ => Err(invalid(
                "usage: import SHADOW BITMAP [NAME] (the shadow another host exported, a bitmap \
                 volume of this host's own)",
            )),
        },
        x => Err(invalid(format!(
            "unknown command '{x}'; the global ctl takes: enable ind|dep MASTER SHADOW BITMAP [NAME] [chunk_size=BYTES] [durability=strict|relaxed] [delay=MS units=N], import SHADOW BITMAP [NAME], overflow init VOLUME [NAME] [chunk_size=BYTES], overflow delete NAME, group create NAME, suspend all, resume all"
        ))),
    }
}

fn parse_overflow(args: &[String]) -> Result<GlobalCommand> {
    let usage = "usage: overflow init VOLUME [NAME] [chunk_size=BYTES] | overflow delete NAME";
    let (opts, plain): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| a.contains('='));
    match plain.first().map(|s| s.as_str()) {
        Some("init") if (2..=3).contains(&plain.len()) => {
            let mut chunk_size = None;
            for o in opts {
                let (k, v) = o.split_once('=').unwrap_or((o, ""));
                match k {
                    "chunk_size" => chunk_size = Some(chunk_size_value(v)?),
                    _ => return Err(invalid(format!("unknown option '{k}'; {usage}"))),
                }
            }
            Ok(GlobalCommand::OverflowInit {
                volume: plain[1].clone(),
                name: plain.get(2).map(|s| s.to_string()),
                chunk_size,
            })
        }
        Some("delete") if plain.len() == 2 && opts.is_empty() => {
            Ok(GlobalCommand::OverflowDelete {
                name: plain[1].clone(),
            })
        }
        _ => Err(invalid(usage)),
    }
}

/// Parse one command written to `groups/NAME/ctl`.
pub fn parse_group(input: &[u8]) -> Result<GroupCommand> {
    let w = words(input)?;
    let one = |usage: &str| -> Result<String> {
        match w.len() {
            2 => Ok(w[1].clone()),
            _ => Err(invalid(format!("usage: {usage}"))),
        }
    };
    let none = || -> Result<()> {
        match w.len() {
            1 => Ok(()),
            _ => Err(invalid(format!("'{}' takes no argument", w[0]))),
        }
    };
    Ok(match w[0].as_str() {
        "update" => {
            let (dir, force) = copy_args(&w, "update")?;
            GroupCommand::Update { dir, force }
        }
        "copy" => {
            let (dir, force) = copy_args(&w, "copy")?;
            GroupCommand::Copy { dir, force }
        }
        "abort" => none().map(|()| GroupCommand::Abort)?,
        "wait" => none().map(|()| GroupCommand::Wait)?,
        "delete" => none().map(|()| GroupCommand::Delete)?,
        "add" => GroupCommand::Add {
            set: one("add SET")?,
        },
        "remove" => GroupCommand::Remove {
            set: one("remove SET")?,
        },
        "rename" => GroupCommand::Rename {
            name: one("rename NEW")?,
        },
        "hold" => GroupCommand::Hold {
            seconds: hold_seconds(&w)?,
        },
        "release" => none().map(|()| GroupCommand::Release)?,
        x => {
            return Err(invalid(format!(
                "unknown command '{x}'; a group's ctl takes: update shadow|master [force], copy \
                 shadow|master [force], abort, wait, add SET, remove SET, rename NEW, delete, \
                 hold SECONDS, release"
            )))
        }
    })
}

/// Parse one command written to `overflow/NAME/ctl`.
pub fn parse_overflow_ctl(input: &[u8]) -> Result<OverflowCommand> {
    let w = words(input)?;
    match (w[0].as_str(), w.len()) {
        ("delete", 1) => Ok(OverflowCommand::Delete),
        _ => Err(invalid(format!(
            "unknown command '{}'; an overflow's ctl takes: delete",
            w.join(" ")
        ))),
    }
}

fn parse_enable(args: &[String]) -> Result<GlobalCommand> {
    let usage = "usage: enable ind|dep MASTER SHADOW BITMAP [NAME] [chunk_size=BYTES] [durability=strict|relaxed] [delay=MS units=N]";
    let (opts, plain): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| a.contains('='));
    if plain.len() < 4 || plain.len() > 5 {
        return Err(invalid(usage));
    }
    let kind = match plain[0].as_str() {
        "ind" | "independent" => SetKind::Independent,
        "dep" | "dependent" => SetKind::Dependent,
        x => {
            return Err(invalid(format!(
                "set type must be ind or dep, not '{x}'; {usage}"
            )))
        }
    };
    let mut chunk_size = None;
    let mut durability = None;
    let mut delay = None;
    let mut units = None;
    for o in opts {
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        match k {
            "chunk_size" => chunk_size = Some(chunk_size_value(v)?),
            "durability" => durability = Some(durability_value(v)?),
            "delay" => {
                delay =
                    Some(v.parse::<u32>().map_err(|_| {
                        invalid(format!("delay '{v}' is not a number of milliseconds"))
                    })?)
            }
            "units" => {
                units = Some(
                    v.parse::<u32>()
                        .map_err(|_| invalid(format!("units '{v}' is not a number of chunks")))?,
                )
            }
            _ => return Err(invalid(format!("unknown option '{k}'; {usage}"))),
        }
    }
    Ok(GlobalCommand::Enable {
        kind,
        master: plain[1].clone(),
        shadow: plain[2].clone(),
        bitmap: plain[3].clone(),
        name: plain.get(4).map(|s| s.to_string()),
        chunk_size,
        durability,
        params: match (delay, units) {
            (None, None) => None,
            (d, u) => Some((
                d.unwrap_or(0),
                u.unwrap_or(crate::engine::set::DEFAULT_UNITS),
            )),
        },
    })
}

/// The value of `enable`'s `chunk_size=` option (iiadm's `--chunk-size`).
pub fn chunk_size_value(v: &str) -> Result<u64> {
    parse_size(v).ok_or_else(|| {
        invalid(format!(
            "chunk_size '{v}' is not a size in bytes (65536 or 64K)"
        ))
    })
}

/// The value of `enable`'s `durability=` option (iiadm's `--durability`).
pub fn durability_value(v: &str) -> Result<Durability> {
    Durability::parse(v)
        .ok_or_else(|| invalid(format!("durability must be strict or relaxed, not '{v}'")))
}

/// `params DELAY UNITS` from its two words (iiadm's `-P DELAY UNITS SET`).
pub fn params_values(delay: &str, units: &str) -> Result<SetCommand> {
    let usage = "usage: params DELAY UNITS (DELAY in milliseconds, UNITS in chunks)";
    let delay_ms = delay.parse().map_err(|_| invalid(usage))?;
    let units = units.parse().map_err(|_| invalid(usage))?;
    Ok(SetCommand::Params { delay_ms, units })
}

/// A size in bytes, with an optional K/M suffix (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1024),
        'm' | 'M' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

fn direction(w: Option<&String>, verb: &str) -> Result<Direction> {
    match w.map(String::as_str) {
        Some("shadow") | Some("s") => Ok(Direction::Shadow),
        Some("master") | Some("m") => Ok(Direction::Master),
        _ => Err(invalid(format!("usage: {verb} shadow|master"))),
    }
}

/// The lease of `hold SECONDS`.
fn hold_seconds(w: &[String]) -> Result<u64> {
    match w {
        [_, seconds] => hold_value(seconds),
        _ => hold_value(""),
    }
}

/// The SECONDS of `hold SECONDS`.
pub fn hold_value(v: &str) -> Result<u64> {
    match v.parse::<u64>() {
        Ok(s) if s > 0 => Ok(s),
        _ => Err(invalid(
            "usage: hold SECONDS (how long at most the master takes no new write: 1 to 3600)",
        )),
    }
}

/// `shadow|master [force]` after `update` or `copy`.
fn copy_args(w: &[String], verb: &str) -> Result<(Direction, bool)> {
    let usage = format!("usage: {verb} shadow|master [force]");
    let force = match w.get(2).map(String::as_str) {
        None => false,
        Some("force") if w.len() == 3 => true,
        Some(_) => {
            return Err(invalid(format!(
                "'{verb}' takes shadow|master and optionally 'force', not '{}'; {usage}",
                w[2..].join(" ")
            )))
        }
    };
    let dir = direction(w.get(1), verb).map_err(|_| invalid(usage))?;
    Ok((dir, force))
}

pub fn parse_set(input: &[u8]) -> Result<SetCommand> {
    let w = words(input)?;
    let extra = |n: usize| -> Result<()> {
        if w.len() > n {
            Err(invalid(format!("'{}' takes {} argument(s)", w[0], n - 1)))
        } else {
            Ok(())
        }
    };
    let cmd = match w[0].as_str() {
        "update" => {
            let (dir, force) = copy_args(&w, "update")?;
            SetCommand::Update { dir, force }
        }
        "copy" => {
            let (dir, force) = copy_args(&w, "copy")?;
            SetCommand::Copy { dir, force }
        }
        "abort" => {
            extra(1)?;
            SetCommand::Abort
        }
        "wait" => {
            extra(1)?;
            SetCommand::Wait
        }
        "reset" => {
            extra(1)?;
            SetCommand::Reset
        }
        "disable" => {
            extra(1)?;
            SetCommand::Disable
        }
        "params" => {
            if w.len() != 3 {
                return Err(invalid(
                    "usage: params DELAY UNITS (DELAY in milliseconds, UNITS in chunks)",
                ));
            }
            params_values(&w[1], &w[2])?
        }
        "attach" => {
            if w.len() != 2 {
                return Err(invalid("usage: attach OVERFLOW (an overflow's name or volume)"));
            }
            SetCommand::Attach {
                overflow: w[1].clone(),
            }
        }
        "detach" => {
            extra(1)?;
            SetCommand::Detach
        }
        "suspend" => {
            extra(1)?;
            SetCommand::Suspend
        }
        "resume" => {
            extra(1)?;
            SetCommand::Resume
        }
        "group" => {
            if w.len() != 2 {
                return Err(invalid("usage: group NAME"));
            }
            SetCommand::Group { name: w[1].clone() }
        }
        "ungroup" => {
            extra(1)?;
            SetCommand::Ungroup
        }
        "export" => {
            extra(1)?;
            SetCommand::Export
        }
        "hold" => SetCommand::Hold {
            seconds: hold_seconds(&w)?,
        },
        "release" => {
            extra(1)?;
            SetCommand::Release
        }
        "join" => {
            if w.len() != 2 {
                return Err(invalid(
                    "usage: join BITMAP (the bitmap volume the importing host's set tracked the \
                     shadow with)",
                ));
            }
            SetCommand::Join {
                bitmap: w[1].clone(),
            }
        }
        x => {
            return Err(invalid(format!(
                "unknown command '{x}'; a set's ctl takes: update shadow|master [force], copy shadow|master [force], abort, wait, reset, disable, params DELAY UNITS, attach OVERFLOW, detach, suspend, resume, group NAME, ungroup, export, join BITMAP, hold SECONDS, release"
            )))
        }
    };
    Ok(cmd)
}

impl fmt::Display for GlobalCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobalCommand::Enable {
                kind,
                master,
                shadow,
                bitmap,
                name,
                chunk_size,
                durability,
                params,
            } => {
                let k = match kind {
                    SetKind::Independent => "ind",
                    SetKind::Dependent => "dep",
                };
                write!(f, "enable {k} {master} {shadow} {bitmap}")?;
                if let Some(n) = name {
                    write!(f, " {n}")?;
                }
                if let Some(c) = chunk_size {
                    write!(f, " chunk_size={c}")?;
                }
                if let Some(d) = durability {
                    write!(f, " durability={}", d.word())?;
                }
                if let Some((d, u)) = params {
                    write!(f, " delay={d} units={u}")?;
                }
                Ok(())
            }
            GlobalCommand::OverflowInit {
                volume,
                name,
                chunk_size,
            } => {
                write!(f, "overflow init {volume}")?;
                if let Some(n) = name {
                    write!(f, " {n}")?;
                }
                if let Some(c) = chunk_size {
                    write!(f, " chunk_size={c}")?;
                }
                Ok(())
            }
            GlobalCommand::OverflowDelete { name } => write!(f, "overflow delete {name}"),
            GlobalCommand::GroupCreate { name } => write!(f, "group create {name}"),
            GlobalCommand::SuspendAll => f.write_str("suspend all"),
            GlobalCommand::ResumeAll => f.write_str("resume all"),
            GlobalCommand::Import {
                shadow,
                bitmap,
                name,
            } => {
                write!(f, "import {shadow} {bitmap}")?;
                if let Some(n) = name {
                    write!(f, " {n}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for GroupCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupCommand::Update { dir, force } => copy_words(f, "update", *dir, *force),
            GroupCommand::Copy { dir, force } => copy_words(f, "copy", *dir, *force),
            GroupCommand::Abort => f.write_str("abort"),
            GroupCommand::Wait => f.write_str("wait"),
            GroupCommand::Add { set } => write!(f, "add {set}"),
            GroupCommand::Remove { set } => write!(f, "remove {set}"),
            GroupCommand::Rename { name } => write!(f, "rename {name}"),
            GroupCommand::Hold { seconds } => write!(f, "hold {seconds}"),
            GroupCommand::Release => f.write_str("release"),
            GroupCommand::Delete => f.write_str("delete"),
        }
    }
}

impl fmt::Display for OverflowCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverflowCommand::Delete => f.write_str("delete"),
        }
    }
}

/// `update|copy shadow|master [force]`, for a set's and a group's ctl alike.
fn copy_words(f: &mut fmt::Formatter<'_>, verb: &str, dir: Direction, force: bool) -> fmt::Result {
    write!(f, "{verb} {}", dir.word())?;
    if force {
        f.write_str(" force")?;
    }
    Ok(())
}

impl fmt::Display for SetCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetCommand::Update { dir, force } => copy_words(f, "update", *dir, *force),
            SetCommand::Copy { dir, force } => copy_words(f, "copy", *dir, *force),
            SetCommand::Abort => f.write_str("abort"),
            SetCommand::Wait => f.write_str("wait"),
            SetCommand::Reset => f.write_str("reset"),
            SetCommand::Disable => f.write_str("disable"),
            SetCommand::Params { delay_ms, units } => write!(f, "params {delay_ms} {units}"),
            SetCommand::Attach { overflow } => write!(f, "attach {overflow}"),
            SetCommand::Detach => f.write_str("detach"),
            SetCommand::Suspend => f.write_str("suspend"),
            SetCommand::Resume => f.write_str("resume"),
            SetCommand::Group { name } => write!(f, "group {name}"),
            SetCommand::Ungroup => f.write_str("ungroup"),
            SetCommand::Export => f.write_str("export"),
            SetCommand::Join { bitmap } => write!(f, "join {bitmap}"),
            SetCommand::Hold { seconds } => write!(f, "hold {seconds}"),
            SetCommand::Release => f.write_str("release"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_commands_round_trip() {
        for text in [
            "update shadow",
            "update master",
            "update shadow force",
            "copy shadow",
            "copy master",
            "copy master force",
            "abort",
            "wait",
            "reset",
            "disable",
            "params 10 100",
            "attach ovf",
            "detach",
            "suspend",
            "resume",
            "group g1",
            "ungroup",
            "export",
            "join /b2",
            "hold 5",
            "release",
        ] {
            let c = parse_set(text.as_bytes()).unwrap();
            assert_eq!(c.to_string(), text);
            assert_eq!(parse_set(format!("{c}\n").as_bytes()).unwrap(), c);
        }
    }

    #[test]
    fn enable_round_trips_with_options() {
        for text in [
            "enable dep /a /b /c",
            "enable ind /a /b /c db",
            "enable dep /a /b /c db chunk_size=4096 durability=relaxed",
            "enable ind /a /b /c db delay=10 units=1",
            "overflow init /o",
            "overflow init /o pool chunk_size=4096",
            "overflow delete pool",
            "group create g1",
            "suspend all",
            "resume all",
            "import /s /b",
            "import /s /b db2",
        ] {
            let c = parse_global(text.as_bytes()).unwrap();
            assert_eq!(c.to_string(), text);
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(parse_set(b"update sideways")
            .unwrap_err()
            .message
            .contains("update shadow|master"));
        assert!(parse_set(b"frobnicate")
            .unwrap_err()
            .message
            .contains("unknown command"));
        assert!(parse_global(b"overflow init").is_err());
        assert!(parse_global(b"overflow delete a b").is_err());
        assert!(parse_set(b"attach").is_err());
        assert!(parse_set(b"detach now").is_err());
        assert_eq!(
            parse_overflow_ctl(b"delete\n").unwrap(),
            OverflowCommand::Delete
        );
        assert!(parse_overflow_ctl(b"delete now").is_err());
        assert!(parse_global(b"group create a b").is_err());
        assert!(parse_global(b"suspend db").is_err());
        assert!(parse_set(b"group").is_err());
        for text in [
            "update shadow",
            "copy master force",
            "abort",
            "wait",
            "add s1",
            "remove s1",
            "rename g2",
            "delete",
            "hold 2",
            "release",
        ] {
            assert_eq!(parse_group(text.as_bytes()).unwrap().to_string(), text);
        }
        assert!(parse_group(b"add").is_err());
        assert!(parse_group(b"delete now").is_err());
        assert!(parse_group(b"reset").is_err());
        assert!(parse_set(b"export now").is_err());
        assert!(parse_set(b"join").is_err());
        assert!(parse_set(b"hold").is_err() && parse_set(b"hold 0").is_err());
        assert!(parse_set(b"hold x").is_err() && parse_group(b"release now").is_err());
        assert!(parse_set(b"join /a /b").is_err());
        assert!(parse_global(b"import /s")
            .unwrap_err()
            .message
            .contains("usage: import SHADOW BITMAP"));
        assert!(parse_global(b"import /s /b n extra").is_err());
        assert!(parse_global(b"enable dep /a /b").is_err());
        assert!(parse_global(b"enable xyz /a /b /c").is_err());
        assert!(parse_global(b"").is_err());
        assert!(parse_set(b"params x 1").is_err());
        assert!(parse_set(b"wait now").is_err());
        assert!(parse_set(b"update shadow now").is_err());
        assert!(parse_set(b"update shadow force force").is_err());
        assert!(parse_set(b"copy force").is_err());
    }

    /// Every command, not only the examples above: what `Display` prints (and so what iiadm
    /// writes) parses back to the same command.
    mod every_command {
        use super::super::*;
        use proptest::prelude::*;

        fn dir() -> impl Strategy<Value = Direction> {
            prop_oneof![Just(Direction::Shadow), Just(Direction::Master)]
        }

        fn set_command() -> impl Strategy<Value = SetCommand> {
            prop_oneof![
                (dir(), any::<bool>()).prop_map(|(dir, force)| SetCommand::Update { dir, force }),
                (dir(), any::<bool>()).prop_map(|(dir, force)| SetCommand::Copy { dir, force }),
                Just(SetCommand::Abort),
                Just(SetCommand::Wait),
                Just(SetCommand::Reset),
                Just(SetCommand::Disable),
                (any::<u32>(), any::<u32>())
                    .prop_map(|(delay_ms, units)| SetCommand::Params { delay_ms, units }),
                WORD.prop_map(|overflow| SetCommand::Attach { overflow }),
                Just(SetCommand::Detach),
                Just(SetCommand::Suspend),
                Just(SetCommand::Resume),
                WORD.prop_map(|name| SetCommand::Group { name }),
                Just(SetCommand::Ungroup),
                Just(SetCommand::Export),
                WORD.prop_map(|bitmap| SetCommand::Join { bitmap }),
                (1..u64::MAX).prop_map(|seconds| SetCommand::Hold { seconds }),
                Just(SetCommand::Release),
            ]
        }

        /// A path or name as a command word: no spaces, no `=`.
        const WORD: &str = "[A-Za-z0-9/._-]{1,24}";

        fn enable() -> impl Strategy<Value = GlobalCommand> {
            let kind = prop_oneof![Just(SetKind::Independent), Just(SetKind::Dependent)];
            let volumes = (WORD, WORD, WORD, proptest::option::of(WORD));
            let durability = prop_oneof![Just(Durability::Strict), Just(Durability::Relaxed)];
            let options = (
                proptest::option::of(any::<u64>()),
                proptest::option::of(durability),
                proptest::option::of((any::<u32>(), any::<u32>())),
            );
            (kind, volumes, options).prop_map(|(kind, volumes, options)| GlobalCommand::Enable {
                kind,
                master: volumes.0,
                shadow: volumes.1,
                bitmap: volumes.2,
                name: volumes.3,
                chunk_size: options.0,
                durability: options.1,
                params: options.2,
            })
        }

        proptest! {
            #[test]
            fn set_commands(c in set_command()) {
                prop_assert_eq!(parse_set(c.to_string().as_bytes()).unwrap(), c);
            }

            #[test]
            fn global_commands(c in enable()) {
                prop_assert_eq!(parse_global(c.to_string().as_bytes()).unwrap(), c);
            }
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
    }
}
