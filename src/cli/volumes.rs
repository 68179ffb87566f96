//! `iiadm -V`: the daemon's `volumes` file as a table for people, or as JSON for scripts.

use serde_json::{json, Value};

use super::show::human;
use super::tree::Tree;
use super::Failure;
use crate::control::discovery::CANDIDATES_HEADING;

/// The `volumes` file, parsed: the volumes in use as [path, size, role, set], the candidates
/// as [path, size, kind, state]. `candidates` is `None` when the daemon predates them (no
/// heading), so that iiadm does not claim there are none.
#[derive(Debug, Default, PartialEq)]
pub struct Volumes {
    pub in_use: Vec<[String; 4]>,
    pub candidates: Option<Vec<[String; 4]>>,
}

/// A line of four fields, the first of which (a path) may hold spaces: the other three are
/// taken from the right.
fn fields(line: &str) -> Option<[String; 4]> {
    let mut f = line.rsplitn(4, ' ');
    let (d, c, b, a) = (f.next()?, f.next()?, f.next()?, f.next()?);
    Some([a, b, c, d].map(str::to_string))
}

pub fn parse(text: &str) -> Volumes {
    let mut v = Volumes::default();
    for line in text.lines() {
        if line == CANDIDATES_HEADING {
            v.candidates = Some(Vec::new());
            continue;
        }
        let Some(f) = fields(line) else { continue };
        match &mut v.candidates {
            Some(c) => c.push(f),
            None => v.in_use.push(f),
        }
    }
    v
}

/// A size field as a JSON number (it always is one; kept as text if a daemon ever says
/// otherwise, rather than lose it).
fn size(s: &str) -> Value {
    s.parse::<u64>().map_or_else(|_| json!(s), |n| json!(n))
}

pub fn to_json(v: &Volumes) -> Value {
    let in_use: Vec<Value> = v
        .in_use
        .iter()
        .map(|[p, s, r, set]| json!({"path": p, "size": size(s), "role": r, "set": set}))
        .collect();
    let candidates: Vec<Value> = v
        .candidates
        .iter()
        .flatten()
        .map(|[p, s, k, st]| json!({"path": p, "size": size(s), "kind": k, "state": st}))
        .collect();
    json!({"in_use": in_use, "candidates": candidates})
}

/// Rows under a header, each column as wide as its widest cell (the last one unpadded).
fn table(header: [&str; 4], rows: &[[String; 4]]) -> String {
    let mut width = header.map(str::len);
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut out = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for r in rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
    }
    out
}

/// Sizes for people: binary units.
fn readable(rows: &[[String; 4]]) -> Vec<[String; 4]> {
    rows.iter()
        .map(|[p, s, a, b]| {
            let s = s.parse().map_or_else(|_| s.clone(), human);
            [p.clone(), s, a.clone(), b.clone()]
        })
        .collect()
}

pub fn text(v: &Volumes) -> String {
    let mut out = String::from("In use:\n");
    if v.in_use.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&table(
            ["PATH", "SIZE", "ROLE", "SET"],
            &readable(&v.in_use),
        ));
    }
    out.push_str("Candidates:\n");
    match &v.candidates {
        None => out.push_str("  not listed by this daemon (an older iifs)\n"),
        Some(c) if c.is_empty() => out
            .push_str("  none (the daemon's volume_dirs setting names the directories searched)\n"),
        Some(c) => out.push_str(&table(["PATH", "SIZE", "KIND", "STATE"], &readable(c))),
    }
    out
}

/// `-V [--json]`: read MOUNTPOINT/volumes and show it.
pub fn show(t: &Tree, as_json: bool) -> Result<String, Failure> {
    let p = t.path("volumes")?;
    let raw = std::fs::read_to_string(&p)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", p.display())))?;
    let v = parse(&raw);
    if as_json {
        return Ok(format!("{:#}\n", to_json(&v)));
    }
    Ok(text(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_use_then_candidates_with_spaces_in_paths() {
        let v = parse(
            "/m.img 1048576 master db\n/ovf 4096 overflow a,b\ncandidates:\n/d/a b 512 file held\n",
        );
        assert_eq!(v.in_use.len(), 2);
        assert_eq!(
            v.in_use[1],
            ["/ovf", "4096", "overflow", "a,b"].map(String::from)
        );
        assert_eq!(
            v.candidates,
            Some(vec![["/d/a b", "512", "file", "held"].map(String::from)])
        );
        let j = to_json(&v);
        assert_eq!(j["in_use"][0]["size"], 1048576);
        assert_eq!(j["in_use"][0]["set"], "db");
        assert_eq!(j["candidates"][0]["path"], "/d/a b");
        assert_eq!(j["candidates"][0]["state"], "held");
        let t = text(&v);
        assert!(t.contains("  /m.img  1 MiB  master    db\n"), "{t}");
        assert!(t.contains("  /d/a b  512 B  file  held\n"), "{t}");
    }

    #[test]
    fn an_older_daemon_or_no_candidates_is_said_so() {
        let old = parse("/m 1 master db\n");
        assert_eq!(old.candidates, None);
        assert!(text(&old).contains("older iifs"));
        assert_eq!(to_json(&old)["candidates"], json!([]));
        let none = parse("candidates:\n");
        assert!(text(&none).contains("In use:\n  none\n"));
        assert!(text(&none).contains("volume_dirs"));
    }
}
