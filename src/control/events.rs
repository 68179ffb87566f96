//! The change stream (`MOUNTPOINT/events`): one JSON line per change of a set, a group or an
//! overflow volume (its state, status word, progress by whole percents, last error, usage),
//! so that no client has to poll.
//!
//! A watcher thread takes a snapshot of every object every `TICK` (and every open of the file
//! takes one too) and compares it with the last one; what differs is appended to a bounded log.
//! A reader starts with one `state` line per object as it is when it opens the file, then gets every change after that, blocking
//! while there is none. A reader that falls more than `KEEP` lines behind gets a `resync` line
//! and the state of every object again (changes in between are summed up, not lost).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{json, Value};

use super::exec::Controller;

/// How often the watcher looks.
const TICK: Duration = Duration::from_millis(100);
/// Lines the log keeps for readers that are behind.
const KEEP: usize = 10_000;

/// What an object looks like, as events report it: its fields, in a stable order.
type Look = BTreeMap<&'static str, Value>;

/// The objects by (kind, name).
type Snapshot = BTreeMap<(&'static str, String), Look>;

#[derive(Default)]
struct Log {
    /// The newest snapshot the watcher took.
    now: Snapshot,
    /// The last `KEEP` change lines, and the sequence number of the first of them.
    lines: VecDeque<String>,
    first: u64,
}

impl Log {
    fn next_seq(&self) -> u64 {
        self.first + self.lines.len() as u64
    }
}

/// The change log and its wake-ups.
#[derive(Default)]
pub struct Events {
    log: Mutex<Log>,
    changed: Condvar,
    /// One look at a time (the watcher's, an open's): a look taken earlier but logged later
    /// would show a state going back.
    looking: Mutex<()>,
    /// The daemon is stopping: every reader gets the end of the file.
    closed: std::sync::atomic::AtomicBool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One line: the event, the object and its fields.
fn line(event: &str, kind: &str, name: &str, look: Option<&Look>) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("event".into(), json!(event));
    obj.insert("time_ms".into(), json!(now_ms()));
    obj.insert("kind".into(), json!(kind));
    obj.insert("name".into(), json!(name));
    if let Some(look) = look {
        for (k, v) in look {
            obj.insert((*k).to_string(), v.clone());
        }
    }
    let mut text = Value::Object(obj).to_string();
    text.push('\n');
    text
}

impl Events {
    fn lock(&self) -> MutexGuard<'_, Log> {
        match self.log.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        }
    }

    /// Take a snapshot with `take`, log what changed since the last, wake the readers.
    fn look(&self, take: impl FnOnce() -> Snapshot) {
        let _one = match self.looking.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.record(take());
    }

    /// Log what changed since the last snapshot, wake the readers.
    fn record(&self, next: Snapshot) {
        let mut log = self.lock();
        let mut added = Vec::new();
        for ((kind, name), look) in &next {
            match log.now.get(&(*kind, name.clone())) {
                None => added.push(line("added", kind, name, Some(look))),
                Some(old) if old != look => added.push(line("changed", kind, name, Some(look))),
                Some(_) => {}
            }
        }
        for (kind, name) in log.now.keys() {
            if !next.contains_key(&(*kind, name.clone())) {
                added.push(line("removed", kind, name, None));
            }
        }
        log.now = next;
        if added.is_empty() {
            return;
        }
        log.lines.extend(added);
        while log.lines.len() > KEEP {
            log.lines.pop_front();
            log.first += 1;
        }
        drop(log);
        self.changed.notify_all();
    }

    /// A reader's start: the state of every object now, and where its changes begin.
    fn start(&self) -> (String, u64) {
        let log = self.lock();
        let text = log
            .now
            .iter()
            .map(|((kind, name), look)| line("state", kind, name, Some(look)))
            .collect();
        (text, log.next_seq())
    }

    /// The lines from `cursor` on (Some), or None when there are none yet; moves `cursor`.
    /// Behind by more than the log keeps: a `resync` line and every object's state again.
    fn take(&self, cursor: &mut u64) -> Option<String> {
        let log = self.lock();
        if *cursor < log.first {
            *cursor = log.next_seq();
            let mut text = line("resync", "-", "-", None);
            for ((kind, name), look) in &log.now {
                text.push_str(&line("state", kind, name, Some(look)));
            }
            return Some(text);
        }
        let from = (*cursor - log.first) as usize;
        if from >= log.lines.len() {
            return None;
        }
        *cursor = log.next_seq();
        Some(log.lines.range(from..).map(String::as_str).collect())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait up to `within` for a change after `cursor`.
    fn wait(&self, cursor: u64, within: Duration) {
        let log = self.lock();
        if log.next_seq() > cursor || cursor < log.first || self.is_closed() {
            return;
        }
        let _ = self.changed.wait_timeout(log, within);
    }
}

/// One open `events` file: what it has not read yet.
pub struct EventStream {
    events: Arc<Events>,
    /// Lines taken but not yet read (a read smaller than a line), then the log position.
    pending: Mutex<(Vec<u8>, u64)>,
}

impl EventStream {
    /// Up to `size` bytes, if any are there now.
    pub fn try_read(&self, size: usize) -> Option<Vec<u8>> {
        let mut p = match self.pending.lock() {
            Ok(p) => p,
            Err(e) => e.into_inner(),
        };
        if p.0.is_empty() {
            if self.events.is_closed() {
                return Some(Vec::new());
            }
            let mut cursor = p.1;
            let text = self.events.take(&mut cursor)?;
            p.1 = cursor;
            p.0 = text.into_bytes();
        }
        let n = size.min(p.0.len());
        Some(p.0.drain(..n).collect())
    }

    /// Wait up to `within` for something to read.
    pub fn wait(&self, within: Duration) {
        let cursor = match self.pending.lock() {
            Ok(p) if !p.0.is_empty() => return,
            Ok(p) => p.1,
            Err(e) => e.into_inner().1,
        };
        self.events.wait(cursor, within);
    }
}

impl Controller {
    /// A new reader of the change stream: every object's state first, then the changes.
    pub fn event_stream(&self) -> EventStream {
        // A look now, not at the watcher's next tick: the reader's first lines are the state
        // as it is when it opens (a change just made included).
        self.events.look(|| self.snapshot());
        let (text, cursor) = self.events.start();
        EventStream {
            events: self.events.clone(),
            pending: Mutex::new((text.into_bytes(), cursor)),
        }
    }

    /// End every reader's stream (the daemon is stopping), and give them up to `within` to
    /// close the file, so that the unmount that follows does not find the mount busy.
    pub fn end_event_streams(&self, within: Duration) {
        {
            let _log = self.events.lock();
            self.events
                .closed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.events.changed.notify_all();
        let until = std::time::Instant::now() + within;
        // Every open stream holds the log; the controller holds the last reference.
        while Arc::strong_count(&self.events) > 1 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a set's `master` or `shadow` file is open (a loop device, a mount, a process):
    /// what the daemon must go on serving after a lazy unmount.
    pub fn data_files_open(&self) -> bool {
        self.engine.sets().iter().any(|s| s.open_files() > 0)
    }

    /// Start the watcher thread: it ends with the controller.
    pub fn watch_changes(self: &Arc<Self>) {
        let weak: Weak<Controller> = Arc::downgrade(self);
        // The first snapshot is taken now, so a reader that opens at once sees every object.
        self.events.look(|| self.snapshot());
        let spawned = std::thread::Builder::new()
            .name("iifs-events".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                let Some(c) = weak.upgrade() else { return };
                c.events.look(|| c.snapshot());
            });
        if let Err(e) = spawned {
            log::error!("cannot start the events watcher: {e}; MOUNTPOINT/events stays still");
        }
    }

    /// Every object as events report it.
    fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        for set in self.engine.sets() {
            let s = set.status();
            let mut look = Look::new();
            look.insert("type", json!(s.type_word()));
            look.insert("state", json!(s.state));
            look.insert("status", json!(s.condition.word()));
            look.insert("direction", json!(s.direction));
            look.insert("progress", json!(s.progress));
            look.insert("held", json!(s.hold_until.is_some()));
            look.insert("last_error", json!(s.last_error.as_deref().unwrap_or("-")));
            look.insert(
                "group",
                json!(self.engine.group_of(&s.name).unwrap_or_else(|| "-".into())),
            );
            out.insert(("set", s.name.clone()), look);
        }
        for (rec, reason) in self.unrestored() {
            let mut look = Look::new();
            look.insert("state", json!("offline"));
            look.insert("status", json!("error"));
            look.insert("last_error", json!(reason));
            out.insert(("set", rec.name.clone()), look);
        }
        for name in self.engine.group_names() {
            let Ok(g) = self.engine.group_status(&name) else {
                continue;
            };
            let mut look = Look::new();
            look.insert("state", json!(g.state()));
            look.insert("status", json!(g.condition.word()));
            look.insert("progress", json!(g.progress()));
            let members: Vec<&str> = g.members.iter().map(|m| m.name.as_str()).collect();
            look.insert("members", json!(members));
            out.insert(("group", name), look);
        }
        for o in self.engine.overflows() {
            let st = o.status();
            let mut look = Look::new();
            look.insert("chunks_total", json!(st.total));
            look.insert("chunks_used", json!(st.used));
            let sets: Vec<&str> = st.sets.iter().map(|(n, _)| n.as_str()).collect();
            look.insert("sets", json!(sets));
            out.insert(("overflow", st.name.clone()), look);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(state: &str, progress: u64) -> Look {
        let mut l = Look::new();
        l.insert("state", json!(state));
        l.insert("progress", json!(progress));
        l
    }

    fn snap(items: &[(&str, &str, u64)]) -> Snapshot {
        items
            .iter()
            .map(|(n, st, p)| (("set", n.to_string()), look(st, *p)))
            .collect()
    }

    fn events_of(text: &str) -> Vec<(String, String)> {
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("a JSON line");
                (
                    v["event"].as_str().unwrap_or("").to_string(),
                    v["name"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_reader_gets_the_state_then_each_change_once() {
        let ev = Arc::new(Events::default());
        ev.record(snap(&[("a", "idle", 100)]));
        let (start, mut cursor) = ev.start();
        assert_eq!(events_of(&start), [("state".into(), "a".into())]);
        assert_eq!(ev.take(&mut cursor), None);
        ev.record(snap(&[("a", "idle", 100)]));
        assert_eq!(ev.take(&mut cursor), None, "nothing changed");
        ev.record(snap(&[("a", "copying", 3), ("b", "idle", 100)]));
        let got = ev.take(&mut cursor).expect("changes");
        assert_eq!(
            events_of(&got),
            [("changed".into(), "a".into()), ("added".into(), "b".into())]
        );
        ev.record(snap(&[("b", "idle", 100)]));
        let got = ev.take(&mut cursor).expect("a removal");
        assert_eq!(events_of(&got), [("removed".into(), "a".into())]);
        assert_eq!(ev.take(&mut cursor), None);
    }

    #[test]
    fn a_reader_left_behind_resyncs() {
        let ev = Arc::new(Events::default());
        let (_, mut cursor) = ev.start();
        for p in 0..(KEEP as u64 + 5) {
            ev.record(snap(&[("a", "copying", p)]));
        }
        let got = ev.take(&mut cursor).expect("a resync");
        assert_eq!(
            events_of(&got),
            [("resync".into(), "-".into()), ("state".into(), "a".into())]
        );
        assert_eq!(ev.take(&mut cursor), None);
    }

    #[test]
    fn a_small_read_takes_a_line_in_pieces() {
        let ev = Arc::new(Events::default());
        ev.record(snap(&[("a", "idle", 100)]));
        let (text, cursor) = ev.start();
        let stream = EventStream {
            events: ev.clone(),
            pending: Mutex::new((text.clone().into_bytes(), cursor)),
        };
        let mut got = Vec::new();
        while let Some(piece) = stream.try_read(7) {
            if piece.is_empty() {
                break;
            }
            got.extend(piece);
        }
        assert_eq!(String::from_utf8(got).unwrap(), text);
    }
}
