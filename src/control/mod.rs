//! Management tier: command words to typed commands and back, their execution against the
//! engine (with the registry kept in step), the text of the status files, and the data files of
//! the sets as the presentation layer opens them. The presentation layer reaches the engine only
//! through this module.

pub mod command;
pub mod discovery;
pub mod events;
pub mod exec;
pub mod files;
mod groups;
pub mod parse;
pub mod status;

pub use command::{Command, Scope};
pub use exec::Controller;
pub use files::{DataFile, FileInfo, Text};
pub use parse::{
    parse_global, parse_group, parse_overflow_ctl, parse_set, GlobalCommand, GroupCommand,
    OverflowCommand, SetCommand,
};

/// The errors the controller answers with, and which volume of a set a file is.
pub use crate::engine::error::{Error, Kind, Role};
