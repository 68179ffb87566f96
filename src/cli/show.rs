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
const UNKNOWN_WHEN_UNRESTORED: [&str; 11] = [
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
        "{name}: {kind} set, {state}\n{volumes}  \
         size:           {size} bytes ({human}), {chunks} chunks of {chunk_h}\n  \
         copy:           {copy}\n  \
         chunks differ:  {differ} ({differ_pct}%)\n  \
         throttle:       {throttle}\n  \
         durability:     {durability}\n  \
         point in time:  {pit}\n  \
         last error:     {error}\n",
        name = get(s, "name"),
        kind = get(s, "type"),
        volumes = volume_lines(s),
        human = human(size),
        chunk_h = human(chunk),
        differ_pct = pct(differ),
        durability = get(s, "durability"),
        error = get(s, "last_error"),
    )
}

/// `-l`: one line per set, in the order `-e` takes the same words.
pub fn line(s: &StatusLines) -> String {
    let kind = match get(s, "type") {
        "independent" => "ind",
        "dependent" => "dep",
        _ => "-",
    };
    format!(
        "{kind} {} {} {} {} ({})",
        get(s, "master"),
        get(s, "shadow"),
        get(s, "bitmap"),
        get(s, "name"),
        get(s, "state")
    )
}

/// The status keys whose values are counts: numbers in JSON. Every other key is a string,
/// whatever it looks like (a set named `007` stays `"007"`).
const NUMERIC_KEYS: [&str; 7] = [
    "progress",
    "size",
    "chunk_size",
    "chunks",
    "chunks_differ",
    "chunks_to_copy",
    "pit_time",
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
