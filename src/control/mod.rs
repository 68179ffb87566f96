//! Management tier: command words to typed commands and back, their execution against the
//! engine (with the registry kept in step), and the text of the status files.

pub mod exec;
pub mod parse;
pub mod status;

pub use exec::Controller;
pub use parse::{parse_global, parse_set, GlobalCommand, SetCommand};
