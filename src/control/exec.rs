//! Runs parsed commands against the engine and keeps the registry in step with the set list.

use crate::engine::error::{Error, Result};
use std::sync::{Arc, Weak};

use crate::engine::error::Role;
use crate::engine::{Direction, Durability, EnableSpec, Enabled, Engine, Set, SetRecord};
use crate::registry::Registry;

use super::parse::{GlobalCommand, OverflowCommand, SetCommand};

/// Daemon-wide defaults for new sets.
#[derive(Debug, Clone, Copy)]
pub struct SetDefaults {
    pub chunk_size: u64,
    pub durability: Durability,
}

pub struct Controller {
    pub(super) engine: Engine,
    pub(super) registry: Registry,
    defaults: SetDefaults,
    /// The change stream (`events`).
    pub(super) events: Arc<super::events::Events>,
}

impl Controller {
    pub fn new(engine: Engine, registry: Registry, defaults: SetDefaults) -> Controller {
        Controller {
            engine,
            registry,
            defaults,
            events: Arc::default(),
        }
    }

    /// The sets that could not be restored at start, with the reason: shown in the tree
    /// (status and ctl only) until fixed and restarted, or disabled (forgotten).
    pub fn unrestored(&self) -> Vec<(SetRecord, String)> {
        self.registry.stale_sets()
    }

    /// The record and reason of an unrestored set named `name`.
    pub fn unrestored_set(&self, name: &str) -> Option<(SetRecord, String)> {
        self.registry.stale_set(name)
    }

    /// Bring back every set in the registry. Sets that cannot come back are reported and kept
    /// in the registry, so that fixing the volume and restarting brings them back.
    pub fn restore_all(&self) -> Vec<(String, Error)> {
        // Overflow volumes first: the sets attach to them. One that cannot come back stays in
        // the registry (its sets are not restored either, and say why).
        for (rec, e) in self.engine.restore_overflows(&self.registry.overflows()) {
            log::error!("overflow {} ({}) is not available: {e}", rec.name, rec.path);
        }
        let records = self.registry.records();
        let failed = self.engine.restore_all(&records);
        self.engine.restore_groups(&self.registry.groups());
        // A group operation a crash interrupted: every member takes it (see `engine::groups`).
        if let Some(intent) = self.registry.group_op() {
            self.engine.roll_forward(&intent);
            self.registry.set_group_op(None);
        }
        for set in self.engine.sets() {
            log::info!("set {} is back ({})", set.name, set.status().state);
        }
        let failed = failed
            .into_iter()
            .map(|(rec, e)| {
                log::error!("set {} could not be restored: {}", rec.name, e);
                let name = rec.name.clone();
                self.registry.keep_stale(rec, e.message.clone());
                (name, e)
            })
            .collect();
        // The generations the restored sets' bitmap volumes were raised to, and any offline
        // state only the registry held, are written back.
        self.save_state();
        failed
    }

    /// Write the registry with what only it can hold: each bitmap volume's generation (an
    /// older copy of a bitmap volume is then refused at start) and any offline state its bitmap
    /// volume could not record. Failures are logged: the sets are unchanged.
    pub fn save_state(&self) {
        let _lock = self.engine.command_lock();
        if let Err(e) = self.registry.save(&self.engine.records()) {
            log::error!("the registry could not record the sets' state: {e}");
        }
    }

    /// Have the registry record a set's offline state when its bitmap volume could not.
    pub fn watch_offline(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.engine.on_unrecorded_offline(move || {
            if let Some(c) = weak.upgrade() {
                c.save_state();
            }
        });
    }

    /// Stop the engine (copies stay recorded, generations are raised) and record it.
    pub fn shutdown(&self) {
        self.engine.shutdown();
        self.save_state();
    }

    /// A command written to the global ctl file; on success, what the reply should say
    /// besides `ok` (a bitmap file the enable made).
    pub fn global(&self, cmd: GlobalCommand) -> Result<Option<String>> {
        log::info!("ctl: {cmd}");
        match cmd {
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
                let name = name.unwrap_or_else(|| shadow_file_name(&shadow));
                let spec = EnableSpec {
                    kind,
                    master,
                    shadow,
                    bitmap,
                    name,
                    chunk_size: chunk_size.unwrap_or(self.defaults.chunk_size),
                    durability: durability.unwrap_or(self.defaults.durability),
                };
                let _lock = self.engine.command_lock();
                let (delay_ms, units) = params.unwrap_or((0, crate::engine::set::DEFAULT_UNITS));
                // A state dir that cannot be written refuses the enable before anything changes.
                self.registry.check_writable()?;
                let enabled = self.engine.enable_prepared(&spec, delay_ms, units)?;
                self.record_new_set(&spec.name, enabled)
            }
            GlobalCommand::OverflowInit {
                volume,
                name,
                chunk_size,
            } => {
                let _lock = self.engine.command_lock();
                self.registry.check_writable()?;
                let before = self.registry.overflows();
                let (o, undo) = self.engine.overflow_init(
                    &volume,
                    name.as_deref(),
                    chunk_size.unwrap_or(self.defaults.chunk_size),
                )?;
                if before.iter().any(|r| r.name == o.name) {
                    self.engine.overflow_withdraw(undo);
                    return Err(crate::engine::error::exists(format!(
                        "an overflow volume named '{}' is recorded already (it could not be \
                         restored at start: see the log); delete it first",
                        o.name
                    )));
                }
                let mut all = before.clone();
                all.extend(
                    self.engine
                        .overflow_records()
                        .into_iter()
                        .filter(|r| r.name == o.name),
                );
                self.registry.set_overflows(all);
                if let Err(e) = self.registry.save(&self.engine.records()) {
                    self.registry.set_overflows(before);
                    self.engine.overflow_withdraw(undo);
                    return Err(e);
                }
                let st = o.status();
                Ok(Some(format!(
                    "overflow {} on {}: {} chunks of {} bytes",
                    o.name, o.path, st.total, st.chunk_size
                )))
            }
            GlobalCommand::OverflowDelete { name } => {
                let _lock = self.engine.command_lock();
                self.delete_overflow(&name)?;
                Ok(None)
            }
            GlobalCommand::GroupCreate { name } => {
                let _lock = self.engine.command_lock();
                self.registry.check_writable()?;
                self.engine.group_create(&name)?;
                self.save_groups().inspect_err(|_| {
                    let _ = self.engine.group_delete(&name);
                })?;
                Ok(None)
            }
            GlobalCommand::Import {
                shadow,
                bitmap,
                name,
            } => {
                let name = name.clone().unwrap_or_else(|| shadow_file_name(&shadow));
                let _lock = self.engine.command_lock();
                self.registry.check_writable()?;
                let imported = self.engine.import_prepared(
                    &shadow,
                    &bitmap,
                    &name,
                    self.defaults.durability,
                )?;
                self.record_new_set(&name, imported)
            }
            GlobalCommand::SuspendAll | GlobalCommand::ResumeAll => {
                let suspend = matches!(cmd, GlobalCommand::SuspendAll);
                if suspend {
                    self.wait_all_kernel_reads_released();
                }
                let _lock = self.engine.command_lock();
                // Refused whole while the kernel serves reads of a shadow (see
                // `bar_kernel_reads`).
                let _bar = suspend
                    .then(|| self.bar_all_kernel_reads(&cmd))
                    .transpose()?;
                let result = self
                    .engine
                    .suspend_all(matches!(cmd, GlobalCommand::SuspendAll));
                // What was done is recorded, also when one set refused.
                self.save_groups()?;
                result.map(|()| None)
            }
        }
    }

    /// Record a set `enable` or `import` made in the registry, then start it. The set is
    /// recorded durably before its first copy starts: a registry that cannot be written takes
    /// it back and leaves every volume as it was.
    fn record_new_set(&self, name: &str, made: Enabled<'_>) -> Result<Option<String>> {
        // A set of that name that could not be restored is replaced by the new one.
        let stale = self.registry.stale_set(name);
        self.registry.forget(name);
        if let Err(e) = self.registry.save(&self.engine.records()) {
            if let Some((rec, reason)) = stale {
                self.registry.keep_stale(rec, reason);
            }
            if let Err(w) = self.engine.withdraw(made) {
                log::error!("set {name}: could not take it back: {w}");
            }
            return Err(e);
        }
        let note = made.note.clone();
        self.engine.start(made);
        Ok(note)
    }

    /// Forget an overflow volume no set uses: the registry first, so that a registry that
    /// cannot be written leaves it as it was.
    /// One that could not be restored at start is only forgotten.
    fn delete_overflow(&self, name: &str) -> Result<()> {
        let before = self.registry.overflows();
        let recorded_only =
            self.engine.overflow(name).is_err() && before.iter().any(|o| o.name == name);
        if !recorded_only {
            self.engine.check_overflow_delete(name)?;
        }
        let rest: Vec<_> = before.iter().filter(|o| o.name != name).cloned().collect();
        self.registry.set_overflows(rest);
        if let Err(e) = self.registry.save(&self.engine.records()) {
            self.registry.set_overflows(before);
            return Err(e);
        }
        if recorded_only {
            log::info!("forgot overflow {name}, which could not be restored");
            return Ok(());
        }
        self.engine.overflow_delete(name)
    }

    /// A command written to `overflow/NAME/ctl`.
    pub fn run_overflow_command(&self, name: &str, cmd: &OverflowCommand) -> Result<()> {
        log::info!("overflow {name}/ctl: {cmd}");
        let _lock = self.engine.command_lock();
        match cmd {
            OverflowCommand::Delete => self.delete_overflow(name),
        }
    }

    /// A command written to `sets/NAME/ctl`. `opened` is the set that file was opened on
    /// (`None` when there was none: a set that could not be restored): a command through a file
    /// whose set was disabled meanwhile must not reach a new set of the same name. A `wait`
    /// gives up (Ok, the copy going on) as soon as `stop` says so.
    pub fn run_set_command(
        &self,
        name: &str,
        cmd: &SetCommand,
        opened: Option<&Weak<Set>>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<String>> {
        log::info!("{name}/ctl: {cmd}");
        // Outside the command lock, so other commands go on meanwhile: the kernel sends the
        // release of a file closed just before asynchronously.
        if let Ok(set) = self.engine.set(name) {
            match cmd {
                SetCommand::Disable => set.wait_files_closed(crate::engine::RELEASE_GRACE),
                SetCommand::Export => {
                    set.wait_role_closed(Role::Shadow, crate::engine::RELEASE_GRACE)
                }
                SetCommand::Update { dir, force: false }
                | SetCommand::Copy { dir, force: false } => {
                    let deadline = std::time::Instant::now() + crate::engine::RELEASE_GRACE;
                    while self.target_open(&set, *dir).is_some()
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
                _ => {}
            }
            // (An update or copy without `force` waited above for every open of its target.)
            let waited = matches!(
                cmd,
                SetCommand::Update { force: false, .. } | SetCommand::Copy { force: false, .. }
            );
            if super::files::changes_kernel_read_shadow(cmd) && !waited {
                self.wait_kernel_reads_released(std::slice::from_ref(&set));
            }
        }
        // `wait` must not hold the command lock: other commands go on meanwhile. Every other
        // command looks the set up under the lock, so a `disable` cannot slip in between.
        let _lock = (*cmd != SetCommand::Wait).then(|| self.engine.command_lock());
        let set = match self.engine.set(name) {
            Ok(set) => set,
            // A set that could not be restored at start can still be disabled (forgotten).
            Err(e) if *cmd == SetCommand::Disable && self.registry.forget(name) => {
                log::info!("forgot set {name}, which could not be restored ({e})");
                return self.registry.save(&self.engine.records()).map(|()| None);
            }
            Err(e) => {
                return Err(match self.unrestored_set(name) {
                    Some((_, reason)) => crate::engine::error::not_permitted(format!(
                        "set {name} could not be restored at start ({reason}); fix the volume and \
                         restart iifs, or disable the set to forget it"
                    )),
                    None => e,
                })
            }
        };
        if opened.is_some_and(|o| !o.upgrade().is_some_and(|o| Arc::ptr_eq(&o, &set))) {
            return Err(crate::engine::error::not_found(format!(
                "set '{name}' was disabled after this ctl file was opened; open sets/{name}/ctl again"
            )));
        }
        if let SetCommand::Update { .. } | SetCommand::Copy { .. } = cmd {
            let word = if matches!(cmd, SetCommand::Copy { .. }) {
                "copy"
            } else {
                "update"
            };
            self.engine.check_not_grouped(name, word)?;
        }
        // Refused while the kernel serves reads of the shadow, even with `force`; from here to
        // the command's end no new open of it is served by the kernel.
        let _kernel_reads = super::files::changes_kernel_read_shadow(cmd)
            .then(|| self.bar_kernel_reads(std::slice::from_ref(&set), cmd))
            .transpose()?;
        if let SetCommand::Update { dir, force: false } | SetCommand::Copy { dir, force: false } =
            cmd
        {
            self.check_target_closed(&set, cmd, *dir)?;
        }
        let note = match cmd {
            SetCommand::Copy {
                dir: Direction::Shadow,
                ..
            } if set.compact.is_some() => Some(format!(
                "set {name} is compact: 'copy shadow' is an 'update shadow' (a new point in time; \
                 a compact shadow holds only the chunks that change)"
            )),
            _ => None,
        };
        let note = match cmd {
            SetCommand::Export => {
                let rec = self.engine.export(name)?;
                Some(format!(
                    "set {name} exported (uuid {}): its shadow {} is let go; the export record is \
                     {}",
                    rec.uuid,
                    rec.shadow,
                    crate::engine::bundle::path_of(&rec.shadow).display()
                ))
            }
            SetCommand::Join { bitmap } => {
                let differ = self.engine.join(name, bitmap)?;
                Some(format!(
                    "set {name} joined: its shadow is served again; {differ} chunks differ \
                     ('update shadow' or 'update master' moves them)"
                ))
            }
            SetCommand::Hold { seconds } => Some(super::groups::hold_masters(
                std::slice::from_ref(&set),
                *seconds,
            )?),
            _ => note,
        };
        let done = match cmd {
            // Done above.
            SetCommand::Export | SetCommand::Join { .. } | SetCommand::Hold { .. } => Ok(()),
            SetCommand::Release => {
                set.master.hold.release();
                Ok(())
            }
            SetCommand::Update { dir, .. } => set.start_copy(*dir, false),
            SetCommand::Copy { dir, .. } => set.start_copy(*dir, true),
            SetCommand::Attach { overflow } => self.engine.attach(name, overflow),
            SetCommand::Detach => self.engine.detach(name),
            SetCommand::Suspend => {
                self.registry.check_writable()?;
                set.suspend()?;
                self.save_groups().inspect_err(|_| {
                    let _ = set.resume();
                })
            }
            SetCommand::Resume => {
                set.resume()?;
                // The set runs again; a registry that cannot say so brings it back suspended
                // at the next start (logged).
                if let Err(e) = self.save_groups() {
                    log::error!(
                        "set {name} was resumed, but the registry could not record it: {e}"
                    );
                }
                Ok(())
            }
            SetCommand::Group { name: group } => {
                self.registry.check_writable()?;
                self.engine.group_add(group, name)?;
                self.save_groups().inspect_err(|_| {
                    let _ = self.engine.group_remove(Some(group), name);
                })
            }
            SetCommand::Ungroup => {
                let group = self.engine.group_of(name);
                self.engine.group_remove(None, name)?;
                self.save_groups().inspect_err(|_| {
                    if let Some(g) = &group {
                        let _ = self.engine.group_add(g, name);
                    }
                })
            }
            // An offline set takes only `reset` and `disable`.
            SetCommand::Abort if set.is_offline() => {
                Err(crate::engine::error::not_permitted(format!(
                    "set {name} is offline ({}); reset it first",
                    set.last_error().unwrap_or_default()
                )))
            }
            SetCommand::Abort => set
                .check_copy_not_parked("abort")
                .map(|()| set.abort_copy()),
            SetCommand::Wait => set
                .check_copy_not_parked("wait")
                .and_then(|()| set.wait_copy_or(stop)),
            SetCommand::Reset if set.is_suspended() => Err(crate::engine::error::not_permitted(
                format!("set {name} is suspended; resume it first, then reset it"),
            )),
            SetCommand::Reset if set.is_exported() => {
                Err(crate::engine::error::not_permitted(format!(
                    "set {name} is exported: its shadow is on another host; join it back \
                     ('join BITMAP') before a reset"
                )))
            }
            SetCommand::Reset if set.is_imported() => {
                Err(crate::engine::error::not_permitted(format!(
                    "set {name} is an imported shadow: it has no master here to rebuild from; \
                     disable it, and export the set again on the host that owns it"
                )))
            }
            SetCommand::Reset => set.reset(),
            SetCommand::Params { delay_ms, units } => set.set_params(*delay_ms, *units),
            SetCommand::Disable => {
                // The registry forgets the set first: if that cannot be written, nothing changed.
                self.engine.check_disable(name)?;
                let rest: Vec<_> = self
                    .engine
                    .records()
                    .into_iter()
                    .filter(|r| r.name != name)
                    .collect();
                self.registry.save(&rest)?;
                if let Err(e) = self.engine.disable(name) {
                    // Refused after all (nothing was removed): record the set again.
                    if let Err(s) = self.registry.save(&self.engine.records()) {
                        log::error!(
                            "set {name} stays enabled but could not be recorded again in the registry: {s}"
                        );
                    }
                    return Err(e);
                }
                // The set left its group: the registry's groups say so too.
                if let Err(e) = self.save_groups() {
                    log::error!(
                        "set {name} left its group, but the registry could not record it: {e}"
                    );
                }
                Ok(())
            }
        };
        done.map(|()| note)
    }
}

impl Controller {
    /// How many files of the target of a copy in direction `dir` are open through the mount,
    /// and which file that is: the set's `shadow`, or for a copy to the master the `master`
    /// file of any set on that master (they are one volume).
    pub(super) fn target_open(
        &self,
        set: &Arc<Set>,
        dir: Direction,
    ) -> Option<(usize, &'static str)> {
        let n = match dir {
            Direction::Shadow => set.open_files_of(Role::Shadow),
            Direction::Master => self
                .engine
                .sets()
                .iter()
                .filter(|s| Arc::ptr_eq(&s.master, &set.master))
                .map(|s| s.open_files_of(Role::Master))
                .sum(),
        };
        let file = match dir {
            Direction::Shadow => "shadow",
            Direction::Master => "master",
        };
        (n > 0).then_some((n, file))
    }

    /// Refuse a copy onto a file that is open: a mounted file system, a loop device or a
    /// process would see its bytes change under it. `force` (checked by the caller) skips this.
    pub(super) fn check_target_closed(
        &self,
        set: &Arc<Set>,
        cmd: &dyn std::fmt::Display,
        dir: Direction,
    ) -> Result<()> {
        let Some((n, file)) = self.target_open(set, dir) else {
            return Ok(());
        };
        Err(crate::engine::error::busy(format!(
            "the {file} file of set {} is open ({n} open): a mounted file system, a loop device \
             or a process uses it, and '{cmd}' would change its bytes under it; unmount it or \
             detach it (umount, losetup -d) or close it first, or write '{cmd} force' if its \
             users expect the change",
            set.name
        )))
    }
}

/// The name a set gets when its command names none (`enable`, `import`): its shadow's file name.
fn shadow_file_name(shadow: &str) -> String {
    std::path::Path::new(shadow)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
