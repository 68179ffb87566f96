//! iifs: instant point-in-time images of volumes, served through a FUSE control tree.
//!
//! ```text
//!  presentation   fs/ (FUSE, the only user of fuser; engine only through control/)
//!                 daemon/ + bin/iifs.rs (the daemon)   cli/ + bin/iiadm.rs (iiadm, through the tree)
//!        |
//!  management     control/ (command words <-> commands, ctl entry, data files, status text)
//!                 registry.rs   config.rs
//!        |
//!  engine         engine/ (volumes, bitmap volume, sets, copy-on-write, copier, group commit)
//! ```
//! (The engine's own layers and lock order are drawn in the `engine` module's documentation.)
//! Each tier depends only on the tiers below it.
//!
//! Commands are words; their `Display` is exactly what the parser reads back:
//! ```
//! use iifs::control::{parse_set, SetCommand};
//! use iifs::engine::Direction;
//!
//! let cmd = parse_set(b"update shadow\n").unwrap();
//! assert_eq!(cmd, SetCommand::Update { dir: Direction::Shadow, force: false });
//! assert_eq!(cmd.to_string(), "update shadow");
//! ```

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod docs;
pub mod engine;
pub mod fs;
pub mod mounts;
pub mod registry;
