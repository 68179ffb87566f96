//! One point in time across hosts (`--group-pit GROUP` with -H): every host's group is held
//! (new master writes wait), and only when every host holds does every host update its group
//! to the shadow; then all are released. While every host holds, no write can complete
//! anywhere, so no host's image can hold a write that depends on one another host's image
//! lacks. A host that refuses or does not answer the hold in time means nobody updates.
//!
//! Each host runs the other half, `iiadm --hold-session GROUP --lease SECS`, over one ssh
//! session for the whole operation: it holds and prints `held`, reads `update` (prints
//! `updated`) and then `release` or the end of its input (releases, prints `released MS`).
//! A session that is lost releases at once; a host that cannot even see its session end is
//! released by the lease.

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::hosts::Target;
use super::ssh::{self, Ssh};
use super::tree::Tree;
use super::{Args, Error, Failure};
use crate::control::parse::GroupCommand;
use crate::engine::Direction;

/// A host does not take `update` this close to the end of its hold's lease: the update must
/// be cut while the hold is still in force.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// What a host's session said, as the reader thread passes it on.
enum Said {
    Line(String),
    Closed,
}

/// One host's session and what it has said so far.
struct Session {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    held: bool,
    update_sent: bool,
    /// `release` was sent: a session that ends from then on ends as it should.
    release_sent: bool,
    updated: Option<Result<(), String>>,
    released_ms: Option<u64>,
    /// Why the hold failed or the session ended early.
    error: Option<String>,
    closed: bool,
}

impl Session {
    fn failed(why: String) -> Session {
        Session {
            child: None,
            stdin: None,
            held: false,
            update_sent: false,
            release_sent: false,
            updated: None,
            released_ms: None,
            error: Some(why),
            closed: true,
        }
    }

    fn take(&mut self, said: Said, stderr_last: &str) {
        match said {
            Said::Line(l) => {
                let l = l.trim();
                if l == "held" {
                    self.held = true;
                } else if l == "updated" {
                    self.updated = Some(Ok(()));
                } else if let Some(ms) = l.strip_prefix("released ") {
                    self.released_ms = ms.trim().parse().ok();
                } else if let Some(why) = l.strip_prefix("refused ") {
                    if self.update_sent && self.updated.is_none() {
                        self.updated = Some(Err(why.to_string()));
                    } else {
                        self.error.get_or_insert_with(|| why.to_string());
                    }
                }
            }
            Said::Closed => {
                self.closed = true;
                // Before the update or the release was sent, a session that ends is a hold
                // that failed: one that had held released as it ended, so that host's writes
                // went on.
                if !self.update_sent && !self.release_sent && self.error.is_none() {
                    self.error = Some(match (self.held, stderr_last.is_empty()) {
                        (_, false) => stderr_last.to_string(),
                        (false, true) => "its session ended without an answer".to_string(),
                        (true, true) => {
                            "its session ended while it held (its hold ended with it)".to_string()
                        }
                    });
                }
            }
        }
    }

    fn send(&mut self, word: &str) {
        if let Some(input) = self.stdin.as_mut() {
            if writeln!(input, "{word}")
                .and_then(|()| input.flush())
                .is_err()
            {
                self.stdin = None;
            }
        }
    }
}

/// `--group-pit GROUP` on `targets`.
pub fn across(ssh: &Ssh, targets: &[Target], group: &str, args: &Args) -> ExitCode {
    // A session that ended has a closed input: telling it `release` must fail as a write,
    // not end iiadm with SIGPIPE before it has released the others and said so.
    // SAFETY: a signal disposition set from the main thread; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let timeout = Duration::from_secs(args.timeout);
    // The lease outlasts the hold and the update phases (each `timeout` at most) with room to
    // spare, and the host refuses an update too near its end: an update is always cut under
    // its hold.
    let lease = (2 * args.timeout + 5).min(3600);
    let mut remote = Vec::new();
    // A --mount given on the command line is the hosts' mount; IIFS_MOUNT is this host's own
    // setting and stays here (as with every other command sent to other hosts).
    if let Some(m) = args.mount.as_ref().filter(|_| args.mount_given) {
        remote.push("--mount".to_string());
        remote.push(m.to_string_lossy().into_owned());
    }
    remote.extend([
        "--hold-session".to_string(),
        group.to_string(),
        "--lease".to_string(),
        lease.to_string(),
    ]);
    let line = ssh::iiadm_line(&remote);
    let (tx, rx) = mpsc::channel::<(usize, Said)>();
    let stderr_lasts: Vec<std::sync::Arc<std::sync::Mutex<String>>> =
        targets.iter().map(|_| Default::default()).collect();
    let mut sessions: Vec<Session> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| start(ssh, t, &line, i, &tx, &stderr_lasts[i]))
        .collect();
    drop(tx);
    let last_err = |i: usize| -> String {
        stderr_lasts[i]
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    };

    // Phase 1: every host holds, or one does not and nobody updates (no need to wait for
    // the others then).
    let hold_failed = |s: &Session| s.error.is_some() || s.closed;
    let hold_answered = gather(&rx, &mut sessions, timeout, &last_err, |all| {
        all.iter().all(|s| s.held) || all.iter().any(hold_failed)
    });
    let all_held = sessions
        .iter()
        .all(|s| s.held && s.error.is_none() && !s.closed);
    // Phase 2: every host updates.
    if all_held {
        for s in sessions.iter_mut() {
            s.send("update");
            s.update_sent = true;
        }
        gather(&rx, &mut sessions, timeout, &last_err, |all| {
            all.iter().all(|s| s.updated.is_some() || s.closed)
        });
    }
    // Phase 3: every host releases (the end of its input releases too), and the reply waits
    // until each has said so, or its session ended. Not for a host that let the hold phase
    // time out without holding: it had its time; the `release` sent, or the end of its
    // session, ends its hold should it come late (the reply says so).
    for s in sessions.iter_mut() {
        s.send("release");
        s.release_sent = true;
        s.stdin = None;
    }
    gather(&rx, &mut sessions, timeout, &last_err, |all| {
        all.iter()
            .all(|s| s.released_ms.is_some() || s.closed || (!s.held && !hold_answered))
    });
    for s in sessions.iter_mut() {
        if let Some(mut c) = s.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    let phase = Phases {
        all_held,
        hold_answered,
        timeout: args.timeout,
    };
    report(targets, &sessions, &phase, args, lease)
}

/// Start one host's session; its stdout lines go to `tx`, its last stderr line to `last`.
fn start(
    ssh: &Ssh,
    t: &Target,
    line: &str,
    i: usize,
    tx: &mpsc::Sender<(usize, Said)>,
    last: &std::sync::Arc<std::sync::Mutex<String>>,
) -> Session {
    let mut child = match ssh.spawn(t, line, Stdio::piped()) {
        Ok(c) => c,
        Err(reason) => return Session::failed(reason),
    };
    if let Some(err) = child.stderr.take() {
        let last = last.clone();
        std::thread::spawn(move || {
            let why = super::fanout::last_line(Some(err), None);
            if let Ok(mut g) = last.lock() {
                *g = why;
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in super::fanout::lossy_lines(out) {
                if tx.send((i, Said::Line(l))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, Said::Closed));
        });
    }
    Session {
        stdin: child.stdin.take(),
        child: Some(child),
        held: false,
        update_sent: false,
        release_sent: false,
        updated: None,
        released_ms: None,
        error: None,
        closed: false,
    }
}

/// Take what the hosts say until `done` holds (true), or `timeout` passed (false).
fn gather(
    rx: &mpsc::Receiver<(usize, Said)>,
    sessions: &mut [Session],
    timeout: Duration,
    last_err: &dyn Fn(usize) -> String,
    done: impl Fn(&[Session]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !done(sessions) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match rx.recv_timeout(left) {
            Ok((i, said)) => {
                // A session's stderr is read on its own thread: give it a moment to catch
                // up with the end of the session, so the reason is its last word.
                if matches!(said, Said::Closed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let why = last_err(i);
                sessions[i].take(said, &why);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => return false,
            Err(mpsc::RecvTimeoutError::Disconnected) => return done(sessions),
        }
    }
    true
}

/// Which point in time each host holds now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PointInTime {
    New,
    Old,
    Unknown,
}

impl PointInTime {
    fn word(self) -> &'static str {
        match self {
            PointInTime::New => "new",
            PointInTime::Old => "old",
            PointInTime::Unknown => "unknown",
        }
    }
}

/// How the hold phase went.
struct Phases {
    all_held: bool,
    /// Every host answered the hold (or one refused) before the timeout.
    hold_answered: bool,
    timeout: u64,
}

/// Each host's outcome and why, from its session.
fn outcome(
    s: &Session,
    phase: &Phases,
    first_failed: Option<&str>,
) -> (PointInTime, Option<String>) {
    let timeout = phase.timeout;
    if !phase.all_held {
        let failed_on = first_failed.unwrap_or("another host");
        let why = match (&s.error, s.held) {
            (Some(e), _) => e.clone(),
            (None, false) if !phase.hold_answered => {
                format!("it did not answer the hold within {timeout} s")
            }
            (None, false) => format!(
                "the hold failed on {failed_on} before this host answered, so no host updated"
            ),
            (None, true) => format!("the hold failed on {failed_on}, so no host updated"),
        };
        return (PointInTime::Old, Some(why));
    }
    match &s.updated {
        Some(Ok(())) => (PointInTime::New, None),
        Some(Err(e)) => (PointInTime::Old, Some(e.clone())),
        None if s.closed => (
            PointInTime::Unknown,
            Some("its session ended before it answered the update".to_string()),
        ),
        None => (
            PointInTime::Unknown,
            Some(format!("it did not answer the update within {timeout} s")),
        ),
    }
}

/// The reply: one line (or one JSON object) per host; exit 0 only if every host is new.
fn report(
    targets: &[Target],
    sessions: &[Session],
    phase: &Phases,
    args: &Args,
    lease: u64,
) -> ExitCode {
    let first_failed = targets
        .iter()
        .zip(sessions)
        .find(|(_, s)| s.error.is_some() || (s.closed && !s.held))
        .or_else(|| {
            targets
                .iter()
                .zip(sessions)
                .find(|(_, s)| !(s.held && s.error.is_none()))
        })
        .map(|(t, _)| t.name.as_str());
    let rows: Vec<(PointInTime, Option<String>, Option<u64>)> = sessions
        .iter()
        .map(|s| {
            let (point, mut why) = outcome(s, phase, first_failed);
            if s.held && s.released_ms.is_none() {
                let note = format!(
                    "its release was not confirmed: the hold ends with its session or its \
                     {lease} s lease"
                );
                why = Some(match why {
                    Some(w) => format!("{w}; {note}"),
                    None => note,
                });
            }
            (point, why, s.released_ms)
        })
        .collect();
    let all_new = rows.iter().all(|(p, ..)| *p == PointInTime::New);
    let all_old = rows.iter().all(|(p, ..)| *p == PointInTime::Old);
    let group = args.group_pit.as_deref().unwrap_or_default();
    if args.json {
        let hosts: Vec<Value> = targets
            .iter()
            .zip(&rows)
            .map(|(t, (p, why, ms))| {
                json!({"host": t.name, "point_in_time": p.word(), "held_ms": ms, "error": why})
            })
            .collect();
        let result = match (all_new, all_old) {
            (true, _) => "new",
            (_, true) => "old",
            _ => "mixed",
        };
        say(&json!({"group": group, "result": result, "hosts": hosts}).to_string());
    } else {
        for (t, (p, why, ms)) in targets.iter().zip(&rows) {
            let held = ms
                .map(|ms| format!(" (writes held {ms} ms)"))
                .unwrap_or_default();
            match (p, why) {
                (p, Some(w)) => say(&format!(
                    "{}: {} point in time: {w}{held}",
                    t.name,
                    p.word()
                )),
                (p, None) => say(&format!("{}: {} point in time{held}", t.name, p.word())),
            }
        }
    }
    ExitCode::from(if all_new { 0 } else { 1 })
}

/// A line to stdout, flushed at once (the other end waits for it); a reader that went away
/// is not an error here: what happens next does not depend on it.
fn say(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}").and_then(|()| o.flush());
}

/// A session ended by a signal (its ssh went away and sshd sent SIGHUP, an administrator's
/// SIGTERM) releases at once rather than leave the hold to its lease: the stop signals are
/// taken by a thread of their own, which releases and ends the process.
fn release_on_signal(mount: std::path::PathBuf, group: &str, started: Instant) {
    // SAFETY: sigset manipulation on a local, zero-initialised set, from the main thread
    // before any other thread of this process exists; the mask is inherited by the thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let group = group.to_string();
    let _ = std::thread::Builder::new()
        .name("iiadm-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set, `sig` a valid out pointer.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            let _ = Tree::new(Some(mount)).group(&group, &GroupCommand::Release);
            say(&format!("released {}", started.elapsed().as_millis()));
            std::process::exit(128 + sig);
        });
}

/// `--hold-session GROUP --lease SECS`: the host's half (see the module's comment).
pub fn hold_session(t: &Tree, group: &str, lease: u64) -> Result<(), Error> {
    // A lost session must not end this process before it has released (see `say`).
    // SAFETY: a signal disposition set from the main thread; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let started = Instant::now();
    release_on_signal(t.root()?.to_path_buf(), group, started);
    if let Err(f) = t.group(group, &GroupCommand::Hold { seconds: lease }) {
        say(&format!("refused {}", f.message));
        return Err(f.into());
    }
    say("held");
    let lease = Duration::from_secs(lease);
    let mut failure = None;
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        match line.trim() {
            "update" if started.elapsed() + LEASE_MARGIN >= lease => {
                let why = format!(
                    "the hold of group {group} was about to run out (lease {} s): no update",
                    lease.as_secs()
                );
                say(&format!("refused {why}"));
                failure = Some(Failure::new(why));
            }
            "update" => {
                let cmd = GroupCommand::Update {
                    dir: Direction::Shadow,
                    force: false,
                };
                match t.group(group, &cmd) {
                    Ok(()) => say("updated"),
                    Err(f) => {
                        say(&format!("refused {}", f.message));
                        failure = Some(f);
                    }
                }
            }
            "release" => break,
            other => say(&format!(
                "refused '{other}' is not a word of a hold session"
            )),
        }
    }
    let released = t.group(group, &GroupCommand::Release);
    say(&format!("released {}", started.elapsed().as_millis()));
    released?;
    match failure {
        Some(f) => Err(f.into()),
        None => Ok(()),
    }
}
