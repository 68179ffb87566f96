//! One command on many hosts at once, over ssh: every host's lines printed as they come with
//! the host's name (`HOST: line`, or a `host` key with --json), a summary of the hosts that
//! failed, and an exit status of 0 only when every host succeeded. `--watch` follows every
//! host's change stream and reconnects to a host whose stream ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use serde_json::{Map, Value};

use super::hosts::Target;
use super::ssh::{self, Ssh, SSH_FAILED};

/// How long a watch waits before it reconnects to a host whose stream ended.
const RECONNECT: Duration = Duration::from_secs(5);

/// What one host's run came to.
struct HostResult {
    code: u8,
    /// Everything it printed on stdout (kept with --json only).
    stdout: String,
    /// Its last line on stderr: the reason it gives for a failure.
    reason: String,
}

/// Run the iiadm command line `rest` on every target in parallel.
pub fn run(ssh: &Ssh, targets: &[Target], rest: &[String], json: bool, watch: bool) -> ExitCode {
    let line = ssh::iiadm_line(rest);
    if watch {
        super::watch::end_when_output_closes();
        std::thread::scope(|s| {
            for t in targets {
                let line = &line;
                s.spawn(move || follow(ssh, t, line, json));
            }
        });
        return ExitCode::SUCCESS;
    }
    let results: Vec<HostResult> = std::thread::scope(|s| {
        let running: Vec<_> = targets
            .iter()
            .map(|t| {
                let line = &line;
                s.spawn(move || {
                    let r = run_one(ssh, t, line, json);
                    if json {
                        emit(&result_json(t, &r).to_string());
                    }
                    r
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| HostResult {
                    code: 1,
                    stdout: String::new(),
                    reason: "iiadm's thread for this host failed".to_string(),
                })
            })
            .collect()
    });
    let failed: Vec<String> = targets
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.code != 0)
        .map(|(t, r)| format!("{} (exit {}: {})", t.name, r.code, r.reason))
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "iiadm: {} of {} hosts failed: {}",
            failed.len(),
            targets.len(),
            failed.join(", ")
        );
    }
    ExitCode::from(results.iter().map(|r| r.code).max().unwrap_or(0))
}

/// A line to stdout, whole; a reader that went away ends iiadm (and, with it, the ssh
/// sessions it started).
fn emit(line: &str) {
    let out = std::io::stdout();
    let mut o = out.lock();
    if writeln!(o, "{line}").and_then(|()| o.flush()).is_err() {
        std::process::exit(0);
    }
}

/// A host's line on stderr, with its name.
fn emit_err(host: &str, line: &str) {
    let err = std::io::stderr();
    let _ = writeln!(err.lock(), "{host}: {line}");
}

/// The reason a host gives: its last line on stderr, without the `iiadm: ` every iiadm
/// refusal starts with.
fn reason_of(line: &str) -> String {
    line.strip_prefix("iiadm: ").unwrap_or(line).to_string()
}

/// Run `line` on `t`; print its lines with its name as they come, unless `json` (then its
/// stdout is kept for the result object).
fn run_one(ssh: &Ssh, t: &Target, line: &str, json: bool) -> HostResult {
    let mut child = match ssh.spawn(t, line, Stdio::null()) {
        Ok(c) => c,
        Err(reason) => {
            if !json {
                emit_err(&t.name, &reason);
            }
            return HostResult {
                code: SSH_FAILED,
                stdout: String::new(),
                reason,
            };
        }
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (kept, reason) = std::thread::scope(|s| {
        let errors = s.spawn(|| last_line(stderr, Some(&t.name)));
        let mut kept = String::new();
        if let Some(out) = stdout {
            if json {
                let mut bytes = Vec::new();
                let _ = BufReader::new(out).read_to_end(&mut bytes);
                kept = String::from_utf8_lossy(&bytes).into_owned();
            } else {
                for l in lossy_lines(out) {
                    emit(&format!("{}: {l}", t.name));
                }
            }
        }
        (kept, errors.join().unwrap_or_default())
    });
    let code = match child.wait() {
        Ok(s) => ssh::exit_code(s),
        Err(_) => SSH_FAILED,
    };
    HostResult {
        code,
        stdout: kept,
        reason,
    }
}

/// The lines of `r`, a line that is not UTF-8 made readable rather than ending the rest.
pub(super) fn lossy_lines(r: impl Read) -> impl Iterator<Item = String> {
    let mut r = BufReader::new(r);
    std::iter::from_fn(move || {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(String::from_utf8_lossy(&line).into_owned())
            }
        }
    })
}

/// A host's reason on stderr: its last `iiadm: ` line (a refusal, not the usage hint clap
/// prints after one), else its last non-empty line; each line is passed on with the host's
/// name when `pass_on` names it.
pub(super) fn last_line(stderr: Option<impl Read>, pass_on: Option<&str>) -> String {
    let (mut last, mut refusal) = (String::new(), None);
    if let Some(err) = stderr {
        for l in lossy_lines(err) {
            if let Some(host) = pass_on {
                emit_err(host, &l);
            }
            let l = l.trim();
            if l.starts_with("iiadm: ") {
                refusal = Some(reason_of(l));
            }
            if !l.is_empty() {
                last = reason_of(l);
            }
        }
    }
    refusal.unwrap_or(last)
}

/// The --json line of a host that ended: its output as JSON (or as a string when it is not
/// JSON, null when empty), whether it succeeded, and why not.
fn result_json(t: &Target, r: &HostResult) -> Value {
    let text = r.stdout.trim();
    let result = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    };
    let error = if r.code == 0 {
        Value::Null
    } else if r.reason.is_empty() {
        Value::String(format!("exit status {}", r.code))
    } else {
        Value::String(r.reason.clone())
    };
    serde_json::json!({
        "host": t.name,
        "ok": r.code == 0,
        "exit": r.code,
        "result": result,
        "error": error,
    })
}

/// An event object with the host's name as its first key.
fn tagged(host: &str, event: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("host".to_string(), Value::String(host.to_string()));
    m.extend(event);
    Value::Object(m)
}

/// `--watch` on one host, for as long as iiadm runs: its stream's lines with its name, and
/// when the stream cannot start or ends, a `lost` line, then a new try every `RECONNECT`.
fn follow(ssh: &Ssh, t: &Target, line: &str, json: bool) {
    loop {
        let why = follow_once(ssh, t, line, json);
        if json {
            let mut lost = Map::new();
            lost.insert("event".to_string(), Value::String("lost".to_string()));
            lost.insert("error".to_string(), Value::String(why));
            emit(&tagged(&t.name, lost).to_string());
        } else {
            emit(&format!("{}: lost: {why}", t.name));
        }
        std::thread::sleep(RECONNECT);
    }
}

/// One connection's worth of a host's stream; returns why it ended.
fn follow_once(ssh: &Ssh, t: &Target, line: &str, json: bool) -> String {
    let mut child = match ssh.spawn(t, line, Stdio::null()) {
        Ok(c) => c,
        Err(reason) => return reason,
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let reason = std::thread::scope(|s| {
        // Kept quiet: the reason goes into the `lost` line.
        let errors = s.spawn(|| last_line(stderr, None));
        if let Some(out) = stdout {
            for l in lossy_lines(out) {
                if !json {
                    emit(&format!("{}: {l}", t.name));
                    continue;
                }
                if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(&l) {
                    emit(&tagged(&t.name, event).to_string());
                }
            }
        }
        errors.join().unwrap_or_default()
    });
    let status = child.wait().map(ssh::exit_code).unwrap_or(SSH_FAILED);
    match (reason.is_empty(), status) {
        (false, _) => reason,
        // ssh's own words went to the kept connection's stderr, not this session's.
        (true, SSH_FAILED) => "ssh lost the connection (exit status 255)".to_string(),
        (true, _) => format!("the change stream ended (exit status {status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        Target {
            name: name.into(),
            dest: name.into(),
            port: None,
        }
    }

    #[test]
    fn a_hosts_result_is_one_json_object_with_its_name() {
        let ok = HostResult {
            code: 0,
            stdout: "[\n  {\"name\": \"db\"}\n]\n".into(),
            reason: String::new(),
        };
        assert_eq!(
            result_json(&target("h1"), &ok).to_string(),
            r#"{"host":"h1","ok":true,"exit":0,"result":[{"name":"db"}],"error":null}"#
        );
        let refused = HostResult {
            code: 1,
            stdout: String::new(),
            reason: reason_of("iiadm: set db does not exist"),
        };
        assert_eq!(
            result_json(&target("h2"), &refused).to_string(),
            r#"{"host":"h2","ok":false,"exit":1,"result":null,"error":"set db does not exist"}"#
        );
    }

    #[test]
    fn an_event_gets_the_host_first() {
        let Value::Object(e) = serde_json::json!({"event": "changed", "name": "db"}) else {
            unreachable!()
        };
        assert_eq!(
            tagged("h1", e).to_string(),
            r#"{"host":"h1","event":"changed","name":"db"}"#
        );
    }
}
