//! Status output for people (-i blocks, -l lines) and for scripts (--json, with exactly the
//! status file's keys).

use serde_json::{Map, Number, Value};

use super::tree::{get, StatusLines};

/// Whether a status is that of a set which could not be restored at start: the daemon knows
/// only its name, its volumes and why (the type, a word every restored set has, is `-`).
pub fn unrestored(s: &StatusLines) -> bool {
    get(s, "type") == "-"
}

/// The status keys the daemon cannot know for a set that could not be restored: shown as
/// unknown (JSON null) rather than as the zeros and dashes the status file holds.
const UNKNOWN_WHEN_UNRESTORED: [&str; 14] = [
    "type",
    "direction",
    "progress",
    "size",
    "chunk_size",
    "chunks",
    "chunks_differ",
    "params",
    "durability",
    "chunks_to_copy",
    "pit_time",
    "shadow_chunks",
    "shadow_chunks_used",
    "overflow_chunks_used",
];

/// The volume lines of an `-i` block.
fn volume_lines(s: &StatusLines) -> String {
    format!(
        "  master:         {}\n  shadow:         {}\n  bitmap:         {}\n",
        get(s, "master"),
        get(s, "shadow"),
        get(s, "bitmap")
    )
}

/// `-i` of a set that could not be restored: what is known, and the reason.
fn unrestored_block(s: &StatusLines) -> String {
    format!(
        "{}: {}, could not be restored at start\n{}  last error:     {}\n",
        get(s, "name"),
        get(s, "state"),
        volume_lines(s),
        get(s, "last_error"),
    )
}

/// `-i`: a readable block for one set.
pub fn block(s: &StatusLines) -> String {
    if unrestored(s) {
        return unrestored_block(s);
    }
    let chunk: u64 = get(s, "chunk_size").parse().unwrap_or(0);
    let chunks: u64 = get(s, "chunks").parse().unwrap_or(0);
    let size: u64 = get(s, "size").parse().unwrap_or(0);
    let differ: u64 = get(s, "chunks_differ").parse().unwrap_or(0);
    let to_copy: u64 = get(s, "chunks_to_copy").parse().unwrap_or(0);
    let direction = get(s, "direction");
    let state = get(s, "state");
    let copy = match (state, direction) {
        (_, "-") => "none".to_string(),
        ("aborted", d) => {
            format!("to the {d}, aborted with {to_copy} chunks left (update again to finish)")
        }
        (_, d) => format!(
            "to the {d}, {}% done, {to_copy} chunks left",
            get(s, "progress")
        ),
    };
    let (delay, units) = get(s, "params").split_once(' ').unwrap_or(("0", "100"));
    let throttle = if delay == "0" {
        "none".to_string()
    } else {
        format!("{delay} ms after every {units} chunks")
    };
    let pct = |n: u64| (n * 100).checked_div(chunks).unwrap_or(0);
    // 0 is "never recorded" (a bitmap written before the time was kept), not 1970.
    let pit = match get(s, "pit_time").parse() {
        Ok(0) | Err(_) => "unknown".to_string(),
        Ok(t) => utc(t),
    };
    format!(
        "{name}: {kind} set, {state}\n{membership}{volumes}  \
         size:           {size} bytes ({human}), {chunks} chunks of {chunk_h}\n  \
         copy:           {copy}\n  \
         chunks differ:  {differ} ({differ_pct}%)\n{compact}  \
         throttle:       {throttle}\n  \
         durability:     {durability}\n  \
         point in time:  {pit}\n  \
         last error:     {error}\n",
        name = get(s, "name"),
        kind = get(s, "type"),
        membership = membership_lines(s),
        volumes = volume_lines(s),
        human = human(size),
        chunk_h = human(chunk),
        differ_pct = pct(differ),
        compact = compact_lines(s),
        durability = get(s, "durability"),
        error = get(s, "last_error"),
    )
}

/// The lines of an `-i` block with the set's status word (normal, degraded, error) and its
/// group. A daemon that writes neither key gets neither line.
fn membership_lines(s: &StatusLines) -> String {
    let mut lines = String::new();
    let status = get(s, "status");
    if !status.is_empty() {
        lines.push_str(&format!("  status:         {status}\n"));
    }
    if s.iter().any(|(k, _)| k == "group") {
        lines.push_str(&format!(
            "  group:          {}\n",
            group_of(s).unwrap_or("none")
        ));
    }
    match get(s, "uuid") {
        "" | "-" => {}
        u => lines.push_str(&format!("  uuid:           {u}\n")),
    }
    match get(s, "origin") {
        "" | "-" => {}
        o => lines.push_str(&format!("  imported from:  the set of uuid {o}\n")),
    }
    lines
}

/// The group a set belongs to, from its status (`group: -` is none).
pub fn group_of(s: &StatusLines) -> Option<&str> {
    match get(s, "group") {
        "" | "-" => None,
        g => Some(g),
    }
}

/// The lines of an `-i` block about a compact set's space: its shadow's slots, its overflow
/// volume, and the daemon's warning once they are nearly full. Empty for other sets.
fn compact_lines(s: &StatusLines) -> String {
    if get(s, "type") != "compact" {
        return String::new();
    }
    let slots: u64 = get(s, "shadow_chunks").parse().unwrap_or(0);
    let used: u64 = get(s, "shadow_chunks_used").parse().unwrap_or(0);
    let spilled = get(s, "overflow_chunks_used");
    let overflow = match get(s, "overflow") {
        "" | "-" => "none attached".to_string(),
        name => format!("{name}, {spilled} chunks of this set"),
    };
    let mut lines = format!(
        "  shadow space:   {used} of {slots} chunks used ({}%)\n  \
         overflow:       {overflow}\n",
        (used * 100).checked_div(slots).unwrap_or(0),
    );
    let warning = get(s, "space_warning");
    if !warning.is_empty() {
        lines.push_str(&format!("  space warning:  {warning}\n"));
    }
    lines
}

/// `-l`: one line per set, in the order `-e` takes the same words (a compact set is enabled
/// as `dep`, with a smaller shadow), then its state, and its group when it is in one.
pub fn line(s: &StatusLines) -> String {
    let kind = match get(s, "type") {
        "independent" => "ind",
        "dependent" | "compact" => "dep",
        _ => "-",
    };
    let group = group_of(s)
        .map(|g| format!(", group {g}"))
        .unwrap_or_default();
    format!(
        "{kind} {} {} {} {} ({}{group})",
        get(s, "master"),
        get(s, "shadow"),
        get(s, "bitmap"),
        get(s, "name"),
        get(s, "state")
    )
}

/// A group's `member:` lines: each member's name, status word, progress and state (the rest
/// of the line, which may be several words).
pub fn group_members(s: &StatusLines) -> Vec<[String; 4]> {
    s.iter()
        .filter(|(k, _)| k == "member")
        .map(|(_, v)| {
            let mut w = v.splitn(4, ' ').map(str::to_string);
            let mut next = || w.next().unwrap_or_default();
            [next(), next(), next(), next()]
        })
        .collect()
}

/// A group's member names, from its `members` value (`-` for none).
fn member_names(s: &StatusLines) -> Vec<&str> {
    get(s, "members")
        .split_whitespace()
        .filter(|w| *w != "-")
        .collect()
}

/// `-G`: one line per group: its name, its status word and its members (`-` for none).
pub fn group_line(s: &StatusLines) -> String {
    let members = match member_names(s).join(" ") {
        m if m.is_empty() => "-".to_string(),
        m => m,
    };
    format!("{} {} {members}", get(s, "name"), get(s, "status"))
}

/// `-g GROUP -i`: a readable block for one group, a line per member.
pub fn group_block(s: &StatusLines) -> String {
    let done: u64 = get(s, "chunks_done").parse().unwrap_or(0);
    let to_do: u64 = get(s, "chunks_to_do").parse().unwrap_or(0);
    let copy = if to_do == 0 {
        "none".to_string()
    } else {
        format!("{}% done, {done} of {to_do} chunks", get(s, "progress"))
    };
    let names = member_names(s);
    let mut out = format!(
        "{}: group, {}\n  status:         {}\n  members:        {}\n  copy:           {copy}\n",
        get(s, "name"),
        get(s, "state"),
        get(s, "status"),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(" ")
        },
    );
    for [name, status, progress, state] in group_members(s) {
        out.push_str(&format!(
            "  {:<16}{status}, {state}, {progress}%\n",
            format!("{name}:")
        ));
    }
    out
}

/// `-g GROUP -i --json`, `-G --json`: a group's status with the status file's keys (counts
/// are numbers); `members` is an array of the member names and `member` an array of objects
/// (name, status, progress, state), one per `member:` line.
pub fn group_json(s: &StatusLines) -> Value {
    let mut value = json(s);
    if let Value::Object(m) = &mut value {
        let names = member_names(s)
            .into_iter()
            .map(|n| Value::String(n.to_string()))
            .collect();
        m.insert("members".to_string(), Value::Array(names));
        let rows = group_members(s)
            .into_iter()
            .map(|[name, status, progress, state]| {
                let progress = match progress.parse::<u64>() {
                    Ok(n) => Value::Number(Number::from(n)),
                    Err(_) => Value::String(progress),
                };
                let mut row = Map::new();
                row.insert("name".to_string(), Value::String(name));
                row.insert("status".to_string(), Value::String(status));
                row.insert("progress".to_string(), progress);
                row.insert("state".to_string(), Value::String(state));
                Value::Object(row)
            })
            .collect();
        m.insert("member".to_string(), Value::Array(rows));
    }
    value
}

/// The status keys whose values are counts: numbers in JSON. Every other key is a string,
/// whatever it looks like (a set named `007` stays `"007"`).
const NUMERIC_KEYS: [&str; 15] = [
    "progress",
    "size",
    "chunk_size",
    "chunks",
    "chunks_differ",
    "chunks_to_copy",
    "pit_time",
    // A compact set's space.
    "shadow_chunks",
    "shadow_chunks_used",
    "overflow_chunks_used",
    // An overflow volume's status.
    "chunks_total",
    "chunks_used",
    "chunks_free",
    // A group's status.
    "chunks_done",
    "chunks_to_do",
];

/// A status as a JSON object with the status file's keys; counts are numbers, and what the
/// daemon does not know (a set that could not be restored) is null.
pub fn json(s: &StatusLines) -> Value {
    let mut m = Map::new();
    let unknown = |k: &str| unrestored(s) && UNKNOWN_WHEN_UNRESTORED.contains(&k);
    for (k, v) in s {
        if unknown(k) {
            m.insert(k.clone(), Value::Null);
            continue;
        }
        let number = NUMERIC_KEYS
            .contains(&k.as_str())
            .then(|| v.parse::<u64>().ok())
            .flatten();
        let value = match number {
            Some(n) => Value::Number(Number::from(n)),
            None => Value::String(v.clone()),
        };
        m.insert(k.clone(), value);
    }
    Value::Object(m)
}

/// The sets using an overflow volume, from its `sets` value (`A=3 B=2`, or `-` for none): each
/// set's name and its chunks in the overflow.
pub fn overflow_sets(s: &StatusLines) -> Vec<(String, String)> {
    get(s, "sets")
        .split_whitespace()
        .filter(|w| *w != "-")
        .map(|w| match w.rsplit_once('=') {
            Some((set, n)) => (set.to_string(), n.to_string()),
            None => (w.to_string(), String::new()),
        })
        .collect()
}

/// `-L`: one line per overflow volume: its name, its volume, chunks used of the total, and
/// the sets using it with their chunks in it (`-` for none).
pub fn overflow_line(s: &StatusLines) -> String {
    let sets = match get(s, "sets") {
        "" => "-",
        v => v,
    };
    format!(
        "{} {} {}/{} {sets}",
        get(s, "name"),
        get(s, "volume"),
        get(s, "chunks_used"),
        get(s, "chunks_total")
    )
}

/// `-Q --json`, `-L --json`: an overflow volume's status with the status file's keys (counts
/// are numbers); `sets` is an object of set name to its chunks in the overflow (`{}` for none).
pub fn overflow_json(s: &StatusLines) -> Value {
    let mut value = json(s);
    if let Value::Object(m) = &mut value {
        if m.contains_key("sets") {
            let sets: Map<String, Value> = overflow_sets(s)
                .into_iter()
                .map(|(set, n)| {
                    let n = match n.parse::<u64>() {
                        Ok(n) => Value::Number(Number::from(n)),
                        Err(_) => Value::String(n),
                    };
                    (set, n)
                })
                .collect();
            m.insert("sets".to_string(), Value::Object(sets));
        }
    }
    value
}

/// Bytes in binary units, one decimal.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds since the epoch as a UTC date and time (civil-from-days, no time zone database).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusLines {
        [
            ("name", "db"),
            ("type", "dependent"),
            ("state", "idle"),
            ("direction", "-"),
            ("progress", "100"),
            ("master", "/m"),
            ("shadow", "/s"),
            ("bitmap", "/b"),
            ("overflow", "-"),
            ("group", "-"),
            ("size", "1073741824"),
            ("chunk_size", "65536"),
            ("chunks", "16384"),
            ("chunks_differ", "164"),
            ("params", "0 100"),
            ("last_error", "-"),
            ("durability", "strict"),
            ("chunks_to_copy", "0"),
            ("pit_time", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn block_line_and_json() {
        let s = sample();
        let b = block(&s);
        assert!(b.starts_with("db: dependent set, idle\n"), "{b}");
        assert!(
            b.contains("1073741824 bytes (1 GiB), 16384 chunks of 64 KiB"),
            "{b}"
        );
        assert!(b.contains("chunks differ:  164 (1%)"), "{b}");
        assert!(b.contains("point in time:  unknown"), "{b}");
        assert_eq!(line(&s), "dep /m /s /b db (idle)");
        let j = json(&s);
        assert_eq!(j["chunks_differ"], 164);
        assert_eq!(j["state"], "idle");
        let mut named = s.clone();
        named[0].1 = "007".into();
        assert_eq!(json(&named)["name"], "007", "names stay strings");
        assert_eq!(j.as_object().map(|o| o.len()), Some(s.len()));
    }

    #[test]
    fn a_set_that_could_not_be_restored_shows_what_is_known() {
        let mut s = sample();
        for (k, v) in s.iter_mut() {
            match k.as_str() {
                "type" | "durability" | "direction" => *v = "-".into(),
                "state" => *v = "offline".into(),
                "params" => *v = "- -".into(),
                "last_error" => *v = "could not be restored at start: gone".into(),
                "size" | "chunk_size" | "chunks" | "chunks_differ" | "pit_time" => *v = "0".into(),
                _ => {}
            }
        }
        let b = block(&s);
        assert_eq!(
            b,
            "db: offline, could not be restored at start\n  master:         /m\n  \
             shadow:         /s\n  bitmap:         /b\n  \
             last error:     could not be restored at start: gone\n"
        );
        let j = json(&s);
        assert!(j["size"].is_null() && j["type"].is_null() && j["params"].is_null());
        assert_eq!(
            (j["state"].as_str(), j["master"].as_str()),
            (Some("offline"), Some("/m"))
        );
        assert_eq!(
            j.as_object().map(|o| o.len()),
            Some(s.len()),
            "every key kept"
        );
    }

    #[test]
    fn dates_and_sizes() {
        assert_eq!(utc(1_795_625_432), "2026-11-25 16:50:32 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(512), "512 B");
    }
}
