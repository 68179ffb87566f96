//! Groups: named collections of sets of one type that take `update` and `copy` at one point in
//! time. A group operation holds every member's master writes (the members' gates) while the
//! new point in time is fixed in each member, and only that long: the copies run afterwards.
//!
//! Crash safety: before the first member changes, the caller records the operation's intent
//! durably (`GroupIntent`, in the registry); each member records the operation's number in the
//! same header write as its new state. At start, `roll_forward` applies a recorded intent to the
//! members whose number is lower, so every member ends at the old point in time (the intent
//! was never recorded) or at the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLockWriteGuard};

use super::enable::check_set_name;
use super::error::{busy, exists, invalid, not_found, not_permitted, Error, Kind, Result};
use super::set::{Condition, Direction, Set, Status};
use super::Engine;

/// What the registry keeps of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub name: String,
    pub members: Vec<String>,
}

/// A group operation recorded before its members change (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupIntent {
    pub group: String,
    pub dir: Direction,
    pub full: bool,
    pub seq: u64,
    pub members: Vec<String>,
}

/// A snapshot of a group for its status file.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    pub name: String,
    pub members: Vec<Status>,
    pub condition: Condition,
    /// Chunks the members' copies have done, and had to do.
    pub done: u64,
    pub to_do: u64,
}

impl GroupStatus {
    /// The group's progress in percent (100 when nothing is to do).
    pub fn progress(&self) -> u64 {
        (self.done * 100).checked_div(self.to_do).unwrap_or(100)
    }

    /// One word for the members' states: theirs when they agree, `mixed` otherwise.
    pub fn state(&self) -> &'static str {
        match self.members.first() {
            None => "idle",
            Some(first) if self.members.iter().all(|m| m.state == first.state) => first.state,
            Some(_) => "mixed",
        }
    }
}

fn check_group_name(name: &str) -> Result<()> {
    check_set_name(name).map_err(|_| {
        invalid(format!(
            "group name '{name}' is not valid: use 1 to 255 letters, digits or . _ - + @ : (not \
             starting with -, no spaces)"
        ))
    })
}

impl Engine {
    fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.tables().groups.clone()
    }

    pub fn group_names(&self) -> Vec<String> {
        self.tables().groups.keys().cloned().collect()
    }

    pub fn group_records(&self) -> Vec<GroupRecord> {
        self.groups()
            .into_iter()
            .map(|(name, members)| GroupRecord {
                name,
                members: members.into_iter().collect(),
            })
            .collect()
    }

    /// The group set `name` belongs to.
    pub fn group_of(&self, set: &str) -> Option<String> {
        self.tables()
            .groups
            .iter()
            .find(|(_, m)| m.contains(set))
            .map(|(g, _)| g.clone())
    }

    /// The members of group `name`, in name order.
    pub fn group_members(&self, name: &str) -> Result<Vec<String>> {
        self.tables()
            .groups
            .get(name)
            .map(|m| m.iter().cloned().collect())
            .ok_or_else(|| not_found(format!("no group named '{name}'")))
    }

    /// Bring back the groups the registry recorded (after the sets). A member that did not
    /// come back is kept in its group (it may come back at the next start).
    pub fn restore_groups(&self, records: &[GroupRecord]) {
        let mut t = self.tables();
        for r in records {
            t.groups
                .insert(r.name.clone(), r.members.iter().cloned().collect());
        }
    }

    pub fn group_create(&self, name: &str) -> Result<()> {
        check_group_name(name)?;
        let mut t = self.tables();
        if t.groups.contains_key(name) {
            return Err(exists(format!("a group named '{name}' exists already")));
        }
        t.groups.insert(name.to_string(), BTreeSet::new());
        log::info!("created group {name}");
        Ok(())
    }

    /// Whether `group_delete` would be refused: while a member's copy runs.
    pub fn check_group_delete(&self, name: &str) -> Result<()> {
        for m in self.group_members(name)? {
            if self.set(&m).is_ok_and(|s| s.copy_active()) {
                return Err(busy(format!(
                    "a copy runs on set {m} of group {name}; wait for it (or abort it) before \
                     deleting the group"
                )));
            }
        }
        Ok(())
    }

    /// Delete a group; its members stay, on their own.
    pub fn group_delete(&self, name: &str) -> Result<()> {
        self.check_group_delete(name)?;
        self.tables().groups.remove(name);
        log::info!("deleted group {name}");
        Ok(())
    }

    pub fn group_rename(&self, name: &str, new: &str) -> Result<()> {
        check_group_name(new)?;
        let mut t = self.tables();
        if t.groups.contains_key(new) {
            return Err(exists(format!("a group named '{new}' exists already")));
        }
        let members = t
            .groups
            .remove(name)
            .ok_or_else(|| not_found(format!("no group named '{name}'")))?;
        t.groups.insert(new.to_string(), members);
        if let Some(total) = t.group_totals.remove(name) {
            t.group_totals.insert(new.to_string(), total);
        }
        log::info!("renamed group {name} to {new}");
        Ok(())
    }

    /// Put set `set` in group `name`: a set belongs to one group at most, and a group holds
    /// sets of one type.
    pub fn group_add(&self, name: &str, set: &str) -> Result<()> {
        let s = self.set(set)?;
        let members = self.group_members(name)?;
        if let Some(g) = self.group_of(set) {
            return Err(exists(format!(
                "set {set} is in group {g} already; a set belongs to one group at most \
                 (remove it from {g} first)"
            )));
        }
        if let Some(other) = members.iter().find_map(|m| self.set(m).ok()) {
            if other.kind != s.kind {
                return Err(invalid(format!(
                    "set {set} is {}, the sets of group {name} are {}: a group holds sets of \
                     one type",
                    s.kind.word(),
                    other.kind.word()
                )));
            }
        }
        match self.tables().groups.get_mut(name) {
            Some(m) => {
                m.insert(set.to_string());
            }
            None => return Err(not_found(format!("no group named '{name}'"))),
        }
        log::info!("set {set} joined group {name}");
        Ok(())
    }

    /// Take set `set` out of group `name` (of its group, with `None`; none: nothing to do).
    pub fn group_remove(&self, name: Option<&str>, set: &str) -> Result<()> {
        let mut t = self.tables();
        let group = match name {
            Some(g) => {
                let m = t
                    .groups
                    .get(g)
                    .ok_or_else(|| not_found(format!("no group named '{g}'")))?;
                if !m.contains(set) {
                    return Err(not_found(format!("set {set} is not in group {g}")));
                }
                g.to_string()
            }
            None => match t.groups.iter().find(|(_, m)| m.contains(set)) {
                Some((g, _)) => g.clone(),
                None => return Ok(()),
            },
        };
        if let Some(m) = t.groups.get_mut(&group) {
            m.remove(set);
        }
        log::info!("set {set} left group {group}");
        Ok(())
    }

    /// A disabled set leaves its group.
    pub(super) fn leave_group(&self, set: &str) {
        for m in self.tables().groups.values_mut() {
            m.remove(set);
        }
    }

    /// The members of group `name` as live sets; Err names one that is not.
    fn live_members(&self, name: &str) -> Result<Vec<Arc<Set>>> {
        let members = self.group_members(name)?;
        if members.is_empty() {
            return Err(invalid(format!("group {name} has no members")));
        }
        members
            .iter()
            .map(|m| {
                self.set(m).map_err(|_| {
                    Error::new(
                        Kind::Io,
                        format!("member {m} of group {name} is not available (see its status)"),
                    )
                })
            })
            .collect()
    }

    /// Check that every member of group `name` can take `update`/`copy` in direction `dir`;
    /// the first that cannot is named with its reason. Changes nothing.
    pub fn check_group_copy(&self, name: &str, dir: Direction, full: bool) -> Result<GroupIntent> {
        let sets = self.live_members(name)?;
        for s in &sets {
            // A member whose volume failed: the group's point in time cannot be taken (EIO).
            if s.is_offline() {
                return Err(Error::new(
                    Kind::Io,
                    format!(
                        "group {name}: member {} is offline ({}); fix its volume and reset it \
                         first",
                        s.name,
                        s.last_error().unwrap_or_else(|| "a volume failed".into())
                    ),
                ));
            }
            s.check_can_copy(dir)
                .map_err(|e| Error::new(e.kind, format!("group {name}: member {}: {e}", s.name)))?;
        }
        // Two members on one master cannot both copy onto it.
        if dir == Direction::Master {
            for (i, a) in sets.iter().enumerate() {
                if let Some(b) = sets[i + 1..]
                    .iter()
                    .find(|b| Arc::ptr_eq(&a.master, &b.master))
                {
                    return Err(invalid(format!(
                        "group {name}: members {} and {} share master {}; both cannot copy onto it",
                        a.name, b.name, a.paths.master
                    )));
                }
            }
        }
        let seq = sets.iter().map(|s| s.header().group_seq).max().unwrap_or(0) + 1;
        Ok(GroupIntent {
            group: name.to_string(),
            dir,
            full,
            seq,
            members: sets.iter().map(|s| s.name.clone()).collect(),
        })
    }

    /// Update or copy every member of a group at one point in time. `record` makes the intent
    /// durable (the registry) before any member changes; it runs while the members' master
    /// writes are held, as does the change of each member's state; the copies start after.
    pub fn group_copy(
        &self,
        name: &str,
        dir: Direction,
        full: bool,
        record: impl FnOnce(&GroupIntent) -> Result<()>,
    ) -> Result<GroupIntent> {
        self.check_group_copy(name, dir, full)?;
        let sets = self.live_members(name)?;
        let gates = hold_gates(&sets);
        // Re-checked under the gates: nothing can change a member's state meanwhile.
        let intent = self.check_group_copy(name, dir, full)?;
        for s in &sets {
            s.sync_source(dir)?;
        }
        record(&intent)?;
        let mut failed = None;
        for s in &sets {
            if let Err(e) = s.start_copy_held(dir, full, Some(intent.seq)) {
                // A member whose bitmap failed is offline (it says why); the others have the new
                // point in time. `reset` of that member brings it back.
                log::error!(
                    "group {name}: member {} could not take {}: {e}",
                    s.name,
                    dir.word()
                );
                failed.get_or_insert(e);
            }
        }
        drop(gates);
        let total = sets
            .iter()
            .map(|s| s.tracking.count(super::tracking::Map::Copy))
            .sum();
        self.tables().group_totals.insert(name.to_string(), total);
        match failed {
            Some(e) => Err(Error::new(e.kind, format!("group {name}: {e}"))),
            None => Ok(intent),
        }
    }

    /// Finish a group operation a crash interrupted (see the module doc): members that had not
    /// taken it yet take it now. Called at start, before any I/O.
    pub fn roll_forward(&self, intent: &GroupIntent) {
        for m in &intent.members {
            let Ok(s) = self.set(m) else {
                log::error!(
                    "group {}: member {m} is not back; it could not take the interrupted {}",
                    intent.group,
                    intent.dir.word()
                );
                continue;
            };
            if s.header().group_seq >= intent.seq {
                continue;
            }
            let _gate = s.gate_write();
            let result = s
                .check_can_copy(intent.dir)
                .and_then(|()| s.start_copy_held(intent.dir, intent.full, Some(intent.seq)));
            match result {
                Ok(()) => log::warn!(
                    "group {}: member {m} took the {} {} a crash interrupted",
                    intent.group,
                    if intent.full { "copy" } else { "update" },
                    intent.dir.word()
                ),
                Err(e) => log::error!(
                    "group {}: member {m} could not take the interrupted {}: {e}",
                    intent.group,
                    intent.dir.word()
                ),
            }
        }
    }

    /// Abort every member's copy; refused whole while a member's copy is parked (suspended).
    pub fn group_abort(&self, name: &str) -> Result<()> {
        let sets = self.live_members(name)?;
        for s in &sets {
            s.check_copy_not_parked("abort")?;
        }
        for s in sets {
            if !s.is_offline() {
                s.abort_copy();
            }
        }
        Ok(())
    }

    /// Wait for every member's copy; Err with the first member that went offline.
    pub fn group_wait(&self, name: &str, stop: &dyn Fn() -> bool) -> Result<()> {
        for s in self.live_members(name)? {
            s.check_copy_not_parked("wait")?;
        }
        let mut first_err = None;
        for s in self.live_members(name)? {
            if stop() {
                return Ok(());
            }
            if let Err(e) = s.wait_copy_or(stop) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn group_status(&self, name: &str) -> Result<GroupStatus> {
        let names = self.group_members(name)?;
        let members: Vec<Status> = names
            .iter()
            .filter_map(|m| self.set(m).ok())
            .map(|s| s.status())
            .collect();
        let mut conditions: Vec<Condition> = members.iter().map(|m| m.condition).collect();
        // A member that is not back counts as failed.
        conditions.extend((members.len()..names.len()).map(|_| Condition::Error));
        // Over the copies the group's last operation started: a member whose copy ended
        // counts as done, so the progress never goes back.
        let left: u64 = members.iter().map(|m| m.chunks_to_copy).sum();
        let started = self.tables().group_totals.get(name).copied().unwrap_or(0);
        let to_do = started.max(left);
        let done = to_do - left;
        Ok(GroupStatus {
            name: name.to_string(),
            members,
            condition: Condition::of_group(&conditions),
            done,
            to_do,
        })
    }

    /// Refuse a set command that only the set's group may give.
    pub fn check_not_grouped(&self, set: &str, what: &str) -> Result<()> {
        match self.group_of(set) {
            Some(g) => Err(not_permitted(format!(
                "set {set} belongs to group {g}: '{what}' acts on all its members at once; write \
                 it to groups/{g}/ctl (iiadm -g {g}), or take the set out of the group first"
            ))),
            None => Ok(()),
        }
    }

    /// Suspend or resume every set; Err with the first refusal (the others are done).
    pub fn suspend_all(&self, suspend: bool) -> Result<()> {
        let mut first = None;
        for s in self.sets() {
            let r = if suspend {
                s.suspend()
            } else if s.is_suspended() {
                s.resume()
            } else {
                Ok(())
            };
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Hold the gates of `sets` for writing: per master, in the order its sets are listed (the
/// order every I/O takes them for reading), so no I/O can hold one while waiting for another.
fn hold_gates(sets: &[Arc<Set>]) -> Vec<RwLockWriteGuard<'_, ()>> {
    let mut guards = Vec::new();
    let mut done: Vec<&Arc<Set>> = Vec::new();
    for s in sets {
        if done.iter().any(|d| Arc::ptr_eq(&d.master, &s.master)) {
            continue;
        }
        for listed in s.master.sets().iter() {
            if let Some(member) = sets
                .iter()
                .find(|m| Arc::ptr_eq(&m.master, &s.master) && m.name == listed.name())
            {
                guards.push(member.gate_write());
            }
        }
        done.push(s);
    }
    guards
}
