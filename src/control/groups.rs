//! Runs the commands of a group's ctl file, keeping the registry in step with the groups (and
//! recording a group operation's intent before its members change).

use std::sync::Arc;

use crate::engine::error::Result;
use crate::engine::{Direction, Set};

use super::parse::{GroupCommand, SetCommand};
use super::Controller;

impl Controller {
    /// Write the registry with the groups (and the sets, suspended or not) as they are now.
    pub(super) fn save_groups(&self) -> Result<()> {
        self.registry.set_groups(self.engine.group_records());
        self.registry.save(&self.engine.records())
    }

    /// A command written to `groups/NAME/ctl`. A `wait` gives up (Ok, the copies going on) as
    /// soon as `stop` says so.
    pub fn run_group_command(
        &self,
        name: &str,
        cmd: &GroupCommand,
        stop: &dyn Fn() -> bool,
    ) -> Result<()> {
        log::info!("group {name}/ctl: {cmd}");
        if *cmd == GroupCommand::Wait {
            return self.engine.group_wait(name, stop);
        }
        // Outside the command lock: the kernel sends the release of a file closed just
        // before asynchronously (as for a set's own update).
        if let GroupCommand::Update { dir, force: false }
        | GroupCommand::Copy { dir, force: false } = cmd
        {
            let deadline = std::time::Instant::now() + crate::engine::RELEASE_GRACE;
            while std::time::Instant::now() < deadline
                && self
                    .engine
                    .group_members(name)
                    .unwrap_or_default()
                    .iter()
                    .any(|m| {
                        self.engine
                            .set(m)
                            .is_ok_and(|s| self.target_open(&s, *dir).is_some())
                    })
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _lock = self.engine.command_lock();
        match cmd {
            GroupCommand::Update { dir, force } => self.group_copy(name, *dir, false, *force),
            GroupCommand::Copy { dir, force } => self.group_copy(name, *dir, true, *force),
            GroupCommand::Abort => self.engine.group_abort(name),
            GroupCommand::Wait => Ok(()),
            GroupCommand::Add { set } => {
                self.registry.check_writable()?;
                self.engine.group_add(name, set)?;
                self.save_groups().inspect_err(|_| {
                    let _ = self.engine.group_remove(Some(name), set);
                })
            }
            GroupCommand::Remove { set } => {
                self.registry.check_writable()?;
                self.engine.group_remove(Some(name), set)?;
                self.save_groups().inspect_err(|_| {
                    let _ = self.engine.group_add(name, set);
                })
            }
            GroupCommand::Hold { seconds } => {
                let members = self.engine.group_members(name)?;
                let sets = members
                    .iter()
                    .map(|m| self.engine.set(m))
                    .collect::<Result<Vec<_>>>()?;
                hold_masters(&sets, *seconds).map(|_| ())
            }
            GroupCommand::Release => {
                for m in self.engine.group_members(name)? {
                    if let Ok(s) = self.engine.set(&m) {
                        s.master.hold.release();
                    }
                }
                Ok(())
            }
            GroupCommand::Rename { name: new } => {
                self.registry.check_writable()?;
                self.engine.group_rename(name, new)?;
                self.save_groups().inspect_err(|_| {
                    let _ = self.engine.group_rename(new, name);
                })
            }
            GroupCommand::Delete => {
                self.engine.check_group_delete(name)?;
                let members = self.engine.group_members(name)?;
                self.registry.check_writable()?;
                self.engine.group_delete(name)?;
                self.save_groups().inspect_err(|_| {
                    let _ = self.engine.group_create(name);
                    for m in &members {
                        let _ = self.engine.group_add(name, m);
                    }
                })
            }
        }
    }

    /// `update`/`copy` of every member at one point in time: refused whole when one member
    /// cannot take it (or, without `force`, has its target file open).
    fn group_copy(&self, name: &str, dir: Direction, full: bool, force: bool) -> Result<()> {
        self.engine.check_group_copy(name, dir, full)?;
        if !force {
            let cmd = if full {
                SetCommand::Copy { dir, force }
            } else {
                SetCommand::Update { dir, force }
            };
            for m in self.engine.group_members(name)? {
                let set = self.engine.set(&m)?;
                self.check_target_closed(&set, &cmd, dir)?;
            }
        }
        self.registry.check_writable()?;
        self.engine.group_copy(name, dir, full, |intent| {
            self.registry.set_group_op(Some(intent.clone()));
            self.registry
                .save(&self.engine.records())
                .inspect_err(|_| self.registry.set_group_op(None))
        })?;
        self.registry.set_group_op(None);
        if let Err(e) = self.registry.save(&self.engine.records()) {
            // Every member took it: rolling it forward at the next start changes nothing.
            log::warn!(
                "group {name}: the registry still records the finished {cmd_word} ({e})",
                cmd_word = if full { "copy" } else { "update" }
            );
        }
        Ok(())
    }
}

/// Hold the writes to the masters of `sets` for at most `seconds` (see `engine::hold`), all or
/// none: when one master's writes in flight do not end within the lease, every hold taken is
/// released. Returns the reply's note: until when the hold is in force.
pub(super) fn hold_masters(sets: &[Arc<Set>], seconds: u64) -> Result<String> {
    let lease = std::time::Duration::from_secs(seconds);
    if let Some(s) = sets.iter().find(|s| s.is_imported()) {
        return Err(crate::engine::error::not_permitted(format!(
            "set {} is an imported shadow: it has no master here to hold",
            s.name
        )));
    }
    let mut held: Vec<&Arc<Set>> = Vec::new();
    for s in sets {
        if held.iter().any(|h| Arc::ptr_eq(&h.master, &s.master)) {
            continue;
        }
        if let Err(e) = s
            .master
            .hold
            .hold(lease, &format!("master {}", s.paths.master))
        {
            for h in &held {
                h.master.hold.release();
            }
            return Err(e);
        }
        held.push(s);
    }
    let until = std::time::SystemTime::now() + lease;
    let ms = until
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Ok(format!(
        "hold in force: writes to {} master(s) wait until 'release' or for {seconds} s at most \
         (until {ms} ms since the epoch)",
        held.len()
    ))
}
