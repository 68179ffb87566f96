//! `iiadm check SET|BITMAP [--repair]`: the offline checker of a set's bitmap volume (the checks
//! are `engine::check`'s; this finds the volumes, prints the report and picks the exit status).
//!
//! Exit status: 0 clean, 1 harmless leaks only (`--repair` reclaims them), 2 corruption, 3 when
//! the volume cannot be checked (not found, in use by a running daemon, unreadable).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::config::{Settings, SYSTEM_CONFIG};
use crate::engine::check::{self, Report, Severity};
use crate::engine::volume::Volume;
use crate::engine::{FileOpener, Opener, SetRecord};
use crate::registry::Registry;

/// The exit status of a check that could not be made.
pub const CANNOT_CHECK: u8 = 3;

/// What is checked: a bitmap volume, and what the registry knows of its set.
struct Target {
    bitmap: String,
    record: Option<SetRecord>,
    /// The overflow volume's path, for a compact set that has one registered.
    overflow: Option<String>,
    /// The other sets' bitmap volumes attached to the same overflow volume.
    siblings: Vec<(String, String)>,
}

/// Run the check; the exit status, or why it could not run.
pub fn run(target: &str, repair: bool, state_dir: Option<&Path>, json: bool) -> Result<u8, String> {
    let opener = FileOpener;
    let target = resolve(target, state_dir, &opener)?;
    let vol = open(&opener, &target.bitmap)?;
    let overflow = match &target.overflow {
        Some(p) => Some(open(&opener, p)?),
        None => None,
    };
    let mut report = inspect(&target, &vol, overflow.as_deref())?;
    for f in sibling_overlaps(&target, &report, &opener) {
        report.findings.push(f);
    }
    if repair && report.status() == 1 {
        report.repaired = check::repair(Arc::clone(&vol), &report)
            .map_err(|e| format!("repairing {}: {e}", target.bitmap))?;
        let repaired = std::mem::take(&mut report.repaired);
        report = inspect(&target, &vol, overflow.as_deref())?;
        report.repaired = repaired;
    }
    print(&target, &report, repair, json);
    Ok(report.status())
}

fn inspect(
    target: &Target,
    vol: &Arc<dyn Volume>,
    overflow: Option<&dyn Volume>,
) -> Result<Report, String> {
    let recorded = target.record.as_ref().map(SetRecord::recorded);
    check::inspect(vol, recorded.as_ref(), overflow)
        .map_err(|e| format!("reading {}: {e}", target.bitmap))
}

fn open(opener: &FileOpener, path: &str) -> Result<Arc<dyn Volume>, String> {
    opener.open(path).map_err(|e| {
        format!(
            "cannot check {path}: {e} (a set the daemon runs is checked by the daemon itself \
             at every start: stop it, or disable the set, to check its volume offline)"
        )
    })
}

/// A path names a bitmap volume; a name, a set of the registry in the state directory.
fn resolve(target: &str, state_dir: Option<&Path>, opener: &FileOpener) -> Result<Target, String> {
    if target.contains('/') {
        let path =
            std::path::absolute(target).map_err(|e| format!("cannot resolve {target}: {e}"))?;
        return Ok(Target {
            bitmap: path.to_string_lossy().into_owned(),
            record: None,
            overflow: None,
            siblings: Vec::new(),
        });
    }
    let dir = match state_dir {
        Some(d) => d.to_path_buf(),
        None => default_state_dir()?,
    };
    let file = dir.join(Registry::FILE);
    if !file.exists() {
        return Err(format!(
            "no registry at {} (name the daemon's state directory with --state-dir, or the \
             bitmap volume by its path)",
            file.display()
        ));
    }
    let registry = Registry::open(&dir).map_err(|e| e.to_string())?;
    let records = registry.records();
    let Some(rec) = records.iter().find(|r| r.name == target).cloned() else {
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        return Err(format!(
            "no set named '{target}' in {} (its sets: {})",
            file.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    // The overflow volume, and the other sets spilling into it, by the name in the headers.
    let overflow_name = |bitmap: &str| -> Option<String> {
        let vol = opener.open(bitmap).ok()?;
        let (h, _) = crate::engine::tracking::peek_header(vol.as_ref()).ok()??;
        (!h.overflow.is_empty()).then_some(h.overflow)
    };
    let mine = overflow_name(&rec.bitmap);
    let overflow = mine.as_ref().and_then(|name| {
        registry
            .overflows()
            .into_iter()
            .find(|o| &o.name == name)
            .map(|o| o.path)
    });
    let siblings = match &mine {
        None => Vec::new(),
        Some(name) => records
            .iter()
            .filter(|r| r.name != rec.name && overflow_name(&r.bitmap).as_ref() == Some(name))
            .map(|r| (r.name.clone(), r.bitmap.clone()))
            .collect(),
    };
    Ok(Target {
        bitmap: rec.bitmap.clone(),
        record: Some(rec),
        overflow,
        siblings,
    })
}

/// The state directory the daemon uses by default: the system config's, else the built-in.
fn default_state_dir() -> Result<PathBuf, String> {
    let mut settings = Settings::default();
    if Path::new(SYSTEM_CONFIG).exists() {
        settings
            .apply_file(Path::new(SYSTEM_CONFIG))
            .map_err(|e| e.to_string())?;
    }
    Ok(settings.state_dir)
}

/// Overflow slots this set shares with another set attached to the same overflow volume.
fn sibling_overlaps(target: &Target, report: &Report, opener: &FileOpener) -> Vec<check::Finding> {
    let Some(rec) = &target.record else {
        return Vec::new();
    };
    let mut used = vec![(rec.name.clone(), report.overflow_slots.clone())];
    for (name, bitmap) in &target.siblings {
        let Ok(vol) = opener.open(bitmap) else {
            continue;
        };
        if let Ok(r) = check::inspect(&vol, None, None) {
            used.push((name.clone(), r.overflow_slots));
        }
    }
    check::shared_overflow_slots(&used)
}

fn print(target: &Target, report: &Report, repair: bool, json: bool) {
    let set = target
        .record
        .as_ref()
        .map(|r| r.name.clone())
        .or_else(|| report.header.as_ref().map(|h| h.name.clone()));
    let status = report.status();
    let verdict = match status {
        0 => "clean".to_string(),
        1 => format!(
            "{} harmless leak(s): 'iiadm check {} --repair' reclaims them",
            report.findings.len(),
            set.as_deref().unwrap_or(&target.bitmap)
        ),
        _ => "corrupt: which chunks of the shadow hold the point in time is not known; the \
              daemon will not bring this set back. Save what you need from the shadow, then \
              disable the set and enable it again (a new point in time)"
            .to_string(),
    };
    if json {
        let findings: Vec<_> = report
            .findings
            .iter()
            .map(|f| json!({"severity": word(f.severity), "text": f.text}))
            .collect();
        let out = json!({
            "bitmap": target.bitmap,
            "set": set,
            "status": status,
            "verdict": verdict,
            "findings": findings,
            "repaired": report.repaired,
        });
        println!("{out}");
        return;
    }
    match &report.header {
        Some(h) => println!(
            "bitmap volume {} of set {} ({}, {} chunks of {} bytes{})",
            target.bitmap,
            h.name,
            h.kind.word(),
            h.chunks(),
            h.chunk_size,
            if h.is_compact() { ", compact" } else { "" }
        ),
        None => println!("bitmap volume {}", target.bitmap),
    }
    for line in &report.repaired {
        println!("repaired: {line}");
    }
    for f in &report.findings {
        println!("{}: {}", word(f.severity), f.text);
    }
    if repair && status == 2 {
        println!("not repaired: the volume holds corruption, which --repair does not touch");
    }
    println!("{verdict}");
}

fn word(s: Severity) -> &'static str {
    match s {
        Severity::Leak => "leak",
        Severity::Corrupt => "corrupt",
    }
}
