//! ctl files: a command is one write, parsed once; commands that block run on a thread of
//! their own (a `wait` ending with EINTR when its writer gets a signal); the reply is kept for
//! a read on the same open file.

use std::sync::{Arc, Mutex};

use fuser::{Errno, ReplyData, ReplyWrite};

use super::errno;
use super::inode::Inodes;
use super::tree::CTL_SIZE;
use crate::control::{
    Command, Controller, Error, GlobalCommand, GroupCommand, Kind, Scope, SetCommand,
};

/// Where writes to a ctl file may start. The kernel splits a write longer than the maximum
/// write size (at least 128 KiB: 1 MiB asked for, 32 pages when the kernel cannot do more)
/// into pieces sent as separate requests, possibly out of order: every piece but the first
/// starts at least that far from the first, and the first is longer than a command, so no
/// piece of a long write is ever taken as a command. An O_APPEND write starts at the end of
/// the file (CTL_SIZE), within this window.
const CTL_WINDOW: u64 = 2 * CTL_SIZE;

/// An open ctl file: its inode (which still answers `fstat` after a `disable` removed its set:
/// `exec 3<>ctl; echo disable >&3; cat <&3`), its scope, and the reply to its last command.
pub struct CtlFile {
    pub ino: u64,
    scope: Scope,
    reply: Mutex<Reply>,
}

/// The transaction reply of a ctl handle and how much of it was read. Reads ignore the file
/// offset (a write moved it past the command), so `exec 3<>ctl; echo cmd >&3; cat <&3` works.
#[derive(Default)]
struct Reply {
    text: String,
    read: usize,
}

/// What a command's run gives: on success, what the reply says besides `ok`.
type Outcome = Result<Option<String>, Error>;

impl CtlFile {
    pub fn new(ino: u64, scope: Scope) -> CtlFile {
        CtlFile {
            ino,
            scope,
            reply: Mutex::default(),
        }
    }

    /// Keep the reply to a command, for a read on this open file.
    fn record(&self, result: &Outcome) {
        if let Ok(mut r) = self.reply.lock() {
            *r = Reply {
                text: reply_text(result),
                read: 0,
            };
        }
    }

    /// A read gives the rest of the reply, wherever the file offset is.
    pub fn read(&self, size: u32, reply: ReplyData) {
        let Ok(mut r) = self.reply.lock() else {
            return reply.error(Errno::EIO);
        };
        let start = r.read;
        let chunk = super::slice_at(r.text.as_bytes(), start as u64, size).to_vec();
        r.read += chunk.len();
        reply.data(&chunk)
    }
}

/// `ok` alone on its first line, so scripts that read one line and compare it still work;
/// what the command did besides (a bitmap file it made) follows on the next line.
fn reply_text(result: &Outcome) -> String {
    match result {
        Ok(None) => "ok\n".into(),
        Ok(Some(note)) => format!("ok\n{note}\n"),
        Err(e) => format!("error: {e}\n"),
    }
}

/// A write to an open ctl file, by the process `pid`: one command, run and answered.
pub fn write(
    ctl: &Arc<Controller>,
    inodes: &Arc<Inodes>,
    file: &Arc<CtlFile>,
    pid: u32,
    offset: u64,
    data: &[u8],
    reply: ReplyWrite,
) {
    // One command is one write within the file: a longer write, or a piece of one that the
    // kernel split, is refused whole (see CTL_WINDOW).
    if data.len() as u64 > CTL_SIZE || offset >= CTL_WINDOW {
        let e = Error::new(
            Kind::Invalid,
            format!(
                "a command is one write(2) of at most {CTL_SIZE} bytes, at the start of the ctl \
                 file; this write ({} bytes at offset {offset}) is not one: nothing was done \
                 (reopen the file for the next command)",
                data.len()
            ),
        );
        log::warn!("refused: {e}");
        file.record(&Err(e.clone()));
        return reply.error(errno::of(&e));
    }
    let len = data.len() as u32;
    let cmd = match file.scope.parse(data) {
        Ok(cmd) => cmd,
        Err(e) => return finish(inodes, file, None, len, Err(e), reply, false),
    };
    let disabled = cmd.disables().map(str::to_owned);
    if !cmd.blocks() && !waits_for_kernel_reads(&cmd) {
        let result = run(ctl, cmd, &|| false);
        return finish(inodes, file, disabled, len, result, reply, false);
    }
    // Never hold a FUSE thread for these.
    let (ctl, inodes, file) = (Arc::clone(ctl), Arc::clone(inodes), Arc::clone(file));
    let spawned = std::thread::Builder::new()
        .name("iifs-ctl".into())
        .spawn(move || {
            // A `wait` whose writer got a signal (or died) ends with EINTR; the copy goes on.
            let waiting = cmd.is_wait();
            let interrupted = std::cell::Cell::new(false);
            let stop = || {
                let now = waiting && caller_interrupted(pid);
                interrupted.set(now);
                now
            };
            let result = run(&ctl, cmd, &stop);
            finish(
                &inodes,
                &file,
                disabled,
                len,
                result,
                reply,
                interrupted.get(),
            );
        });
    if let Err(e) = spawned {
        log::error!("cannot start a thread for a ctl command: {e}");
    }
}

/// Commands refused while the kernel serves reads of a shadow they would change: they first
/// wait a moment for the releases of files closed just before, which a FUSE thread must be free
/// to deliver (`update` and `copy` block anyway).
fn waits_for_kernel_reads(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Set(_, SetCommand::Reset | SetCommand::Suspend)
            | Command::Global(GlobalCommand::SuspendAll)
    )
}

/// Run a command. A group's `update shadow` or `copy shadow` is refused while the kernel serves
/// reads of a member's shadow, and bars new such opens until it is done (a set's own commands
/// do so in the controller, under its command lock).
fn run(ctl: &Controller, cmd: Command, stop: &dyn Fn() -> bool) -> Outcome {
    let _bar = match &cmd {
        Command::Group(name, g @ (GroupCommand::Update { .. } | GroupCommand::Copy { .. })) => {
            ctl.bar_group_kernel_reads(name, g)?
        }
        _ => None,
    };
    ctl.run(cmd, stop)
}

/// Record and answer a command's outcome. `disabled`: the set a `disable` removes (its inode
/// numbers stop resolving once it is gone); `interrupted`: a `wait` gave up because its writer
/// got a signal.
fn finish(
    inodes: &Inodes,
    file: &CtlFile,
    disabled: Option<String>,
    len: u32,
    result: Outcome,
    reply: ReplyWrite,
    interrupted: bool,
) {
    let result = match result {
        Ok(_) if interrupted => {
            log::info!("wait: the writer was interrupted; the copy goes on");
            Err(Error::new(
                Kind::Invalid,
                "the wait was interrupted by a signal; the copy goes on",
            ))
        }
        r => r,
    };
    if let (Ok(_), Some(name)) = (&result, &disabled) {
        inodes.forget_set(name);
    }
    file.record(&result);
    match result {
        Ok(_) => reply.written(len),
        Err(_) if interrupted => reply.error(Errno::EINTR),
        Err(e) => {
            log::warn!("refused: {e}");
            reply.error(errno::of(&e))
        }
    }
}

/// Whether the process `pid` (the thread that made a FUSE request) was interrupted: it has a
/// signal pending that it does not block (SIGKILL cannot be blocked), or it is gone.
///
/// Why not FUSE_INTERRUPT: fuser answers the kernel's INTERRUPT requests itself with ENOSYS
/// (it does not hand them to the file system), after which the kernel sends no more of them;
/// a request then waits for its reply whatever the signal. So a long request (`wait`) looks
/// at its caller itself: a signal that would interrupt the syscall stays pending while the
/// caller waits for the reply, and shows in /proc/PID/status.
///
/// "Pending and not blocked" is the kernel's own rule for interrupting a request (what it would
/// send FUSE_INTERRUPT for); signals a process ignores are never pending. A caller the daemon
/// cannot see (pid 0: another pid namespace) is never taken as interrupted.
pub(super) fn caller_interrupted(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let mask = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let zombie = text
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|st| matches!(st.trim_start().chars().next(), Some('Z' | 'X')));
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    let kill = 1u64 << (libc::SIGKILL - 1);
    zombie || pending & kill != 0 || pending & !mask("SigBlk:") != 0
}
