//! iifs: instant point-in-time images of volumes, served through a FUSE control tree.
//!
//! ```text
//!  presentation   fs/ (FUSE, the only user of fuser)   bin/iifs.rs (daemon)
//!        |
//!  management     control/ (command words <-> commands, status text)   registry.rs   config.rs
//!        |
//!  engine         engine/ (volumes, bitmap volume, sets, copy-on-write, copier, group commit)
//! ```
//! Each tier depends only on the tiers below it.

pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod fs;
pub mod registry;
