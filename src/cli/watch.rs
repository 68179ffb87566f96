//! `iiadm --watch [-i SET|all] [--json]`: follow the daemon's change stream (MOUNTPOINT/events)
//! until interrupted: one JSON object a line with --json (as the daemon writes them), a
//! readable line otherwise. The first lines give every object's state as it is.

use std::io::{BufRead, BufReader, Write};

use serde_json::Value;

use super::tree::Tree;
use super::{Error, Failure};

/// Whether an event line is about `only` (a set's name; None or "all": every object).
fn wanted(event: &Value, only: Option<&str>) -> bool {
    match only {
        None | Some("all") => true,
        Some(name) => {
            event["kind"] == "set" && event["name"] == name
                || event["event"] == "resync"
                || event["kind"] == "group"
                    && event["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|n| n == name))
        }
    }
}

/// A readable line for an event.
fn readable(e: &Value) -> String {
    let word = |k: &str| match &e[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    let secs = e["time_ms"].as_u64().unwrap_or(0) / 1000;
    let when = format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    match word("event").as_str() {
        "resync" => format!("{when} (the stream was behind: the state of every object again)"),
        "removed" => format!("{when} {} {} removed", word("kind"), word("name")),
        _ if e["kind"] == "overflow" => format!(
            "{when} overflow {}: {}/{} chunks used, sets {}",
            word("name"),
            word("chunks_used"),
            word("chunks_total"),
            word("sets")
        ),
        _ => {
            let mut s = format!(
                "{when} {} {}: {} {} {}%",
                word("kind"),
                word("name"),
                word("state"),
                word("status"),
                word("progress")
            );
            let err = word("last_error");
            if err != "-" {
                s.push_str(&format!(" ({err})"));
            }
            s
        }
    }
}

/// End iiadm as soon as whoever reads its output goes away, even while no event comes: a
/// watch run over ssh for a console would otherwise wait for the next change to find out
/// that nobody listens any more.
pub(super) fn end_when_output_closes() {
    std::thread::spawn(|| {
        let mut fd = libc::pollfd {
            fd: 1,
            events: 0,
            revents: 0,
        };
        loop {
            // SAFETY: one pollfd of ours, for the duration of the call.
            let n = unsafe { libc::poll(&mut fd, 1, -1) };
            if n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                std::process::exit(0);
            }
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return;
            }
        }
    });
}

/// Follow the stream until it ends (the daemon went away) or the output is closed.
pub fn watch(t: &Tree, only: Option<&str>, json: bool) -> Result<(), Error> {
    end_when_output_closes();
    let path = t.path("events")?;
    let file = std::fs::File::open(&path).map_err(|e| {
        Failure::new(format!(
            "cannot open {}: {e} (a daemon older than the change stream has none)",
            path.display()
        ))
    })?;
    let out = std::io::stdout();
    // A first line that says the watch is on, so that a reader (a console following many
    // hosts) knows the stream is live even where there is nothing to report yet.
    if json {
        let start = serde_json::json!({
            "event": "watching",
            "mount": t.root()?.to_string_lossy(),
        });
        let mut o = out.lock();
        if writeln!(o, "{start}").and_then(|()| o.flush()).is_err() {
            return Ok(());
        }
    }
    for l in BufReader::new(file).lines() {
        let l = l.map_err(|e| Failure::new(format!("reading {}: {e}", path.display())))?;
        let Ok(event) = serde_json::from_str::<Value>(&l) else {
            continue;
        };
        if !wanted(&event, only) {
            continue;
        }
        let text = if json { l } else { readable(&event) };
        let mut o = out.lock();
        // A closed output (`| head`) ends the watch quietly.
        if writeln!(o, "{text}").and_then(|()| o.flush()).is_err() {
            return Ok(());
        }
    }
    Err(Failure::new(format!(
        "the change stream {} ended: the daemon stopped",
        path.display()
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_followed_with_its_groups_and_read_as_one_line() {
        let e: Value = serde_json::from_str(
            r#"{"event":"changed","time_ms":3723000,"kind":"set","name":"db","state":"copying","status":"normal","progress":37,"last_error":"-"}"#,
        )
        .unwrap();
        assert!(wanted(&e, Some("db")) && wanted(&e, None) && !wanted(&e, Some("logs")));
        assert_eq!(readable(&e), "01:02:03 set db: copying normal 37%");
        let g: Value = serde_json::from_str(
            r#"{"event":"changed","time_ms":0,"kind":"group","name":"app","members":["db","logs"],"state":"idle","status":"normal","progress":100}"#,
        )
        .unwrap();
        assert!(wanted(&g, Some("logs")) && !wanted(&g, Some("other")));
    }
}
