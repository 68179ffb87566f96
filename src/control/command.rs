//! The entry for ctl files: a command is parsed once, in the scope of the ctl file it was
//! written to, and the typed command is what the file system looks at (whether it blocks) and
//! what the controller runs.

use std::sync::Weak;

use crate::engine::error::Result;
use crate::engine::Set;

use super::parse::{
    parse_global, parse_group, parse_overflow_ctl, parse_set, GlobalCommand, GroupCommand,
    OverflowCommand, SetCommand,
};
use super::Controller;

/// What a ctl file was opened on: the global ctl, or a set's.
#[derive(Clone)]
pub enum Scope {
    Global,
    Set(SetScope),
    /// `overflow/NAME/ctl`.
    Overflow(String),
    /// `groups/NAME/ctl`.
    Group(String),
}

/// The set a set's ctl file was opened on: its name, and the set itself while it lives (`None`
/// for a set that could not be restored at start, which can only be disabled). A command
/// through a handle whose set was disabled meanwhile must not reach a new set of that name.
#[derive(Clone)]
pub struct SetScope {
    name: String,
    set: Option<Weak<Set>>,
}

/// A parsed ctl command with the scope it was written in.
pub enum Command {
    Global(GlobalCommand),
    Set(SetScope, SetCommand),
    Overflow(String, OverflowCommand),
    Group(String, GroupCommand),
}

impl Controller {
    /// The scope of `sets/NAME/ctl` opened now.
    pub fn set_scope(&self, name: &str) -> Scope {
        Scope::Set(SetScope {
            name: name.to_string(),
            set: self
                .engine
                .set(name)
                .ok()
                .map(|s| std::sync::Arc::downgrade(&s)),
        })
    }

    /// Run a ctl command; on success, what the reply says besides `ok` (a bitmap file the
    /// enable made). A `wait` gives up (Ok, the copy going on) as soon as `stop` says so.
    pub fn run(&self, cmd: Command, stop: &dyn Fn() -> bool) -> Result<Option<String>> {
        match cmd {
            Command::Global(cmd) => self.global(cmd),
            Command::Set(scope, cmd) => {
                self.run_set_command(&scope.name, &cmd, scope.set.as_ref(), stop)
            }
            Command::Overflow(name, cmd) => self.run_overflow_command(&name, &cmd).map(|()| None),
            Command::Group(name, cmd) => self.run_group_command(&name, &cmd, stop).map(|()| None),
        }
    }
}

impl Scope {
    /// Parse one command written to a ctl file of this scope.
    pub fn parse(&self, input: &[u8]) -> Result<Command> {
        Ok(match self {
            Scope::Global => Command::Global(parse_global(input)?),
            Scope::Set(scope) => Command::Set(scope.clone(), parse_set(input)?),
            Scope::Overflow(name) => Command::Overflow(name.clone(), parse_overflow_ctl(input)?),
            Scope::Group(name) => Command::Group(name.clone(), parse_group(input)?),
        })
    }
}

impl Command {
    /// `wait` may take long, and `disable`, `update` and `copy` wait for the releases of files
    /// closed just before, which a FUSE thread must be free to deliver.
    pub fn blocks(&self) -> bool {
        matches!(
            self,
            Command::Set(
                _,
                SetCommand::Wait
                    | SetCommand::Disable
                    | SetCommand::Update { .. }
                    | SetCommand::Copy { .. }
            ) | Command::Group(
                _,
                GroupCommand::Wait | GroupCommand::Update { .. } | GroupCommand::Copy { .. }
            )
        )
    }

    pub fn is_wait(&self) -> bool {
        matches!(
            self,
            Command::Set(_, SetCommand::Wait) | Command::Group(_, GroupCommand::Wait)
        )
    }

    /// The set this command removes when it succeeds.
    pub fn disables(&self) -> Option<&str> {
        match self {
            Command::Set(scope, SetCommand::Disable) => Some(&scope.name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_scope() -> Scope {
        Scope::Set(SetScope {
            name: "s1".into(),
            set: None,
        })
    }

    #[test]
    fn a_command_is_parsed_in_the_scope_of_its_ctl_file() {
        assert!(matches!(
            Scope::Global.parse(b"enable dep /a /b /c"),
            Ok(Command::Global(GlobalCommand::Enable { .. }))
        ));
        assert!(Scope::Global.parse(b"wait").is_err());
        assert!(set_scope().parse(b"enable dep /a /b /c").is_err());
        assert!(set_scope().parse(b"frobnicate").is_err());
    }

    #[test]
    fn the_commands_that_block_are_known_from_the_typed_command() {
        let parse = |s: &str| set_scope().parse(s.as_bytes()).unwrap();
        for word in ["wait", "disable", "update shadow", "copy master force"] {
            assert!(parse(word).blocks(), "{word}");
        }
        for word in ["abort", "reset", "params 10 4"] {
            assert!(!parse(word).blocks(), "{word}");
        }
        assert!(!Scope::Global
            .parse(b"enable dep /a /b /c")
            .unwrap()
            .blocks());
        assert!(parse("wait").is_wait() && !parse("abort").is_wait());
        assert_eq!(parse("disable").disables(), Some("s1"));
        assert_eq!(parse("wait").disables(), None);
    }
}
