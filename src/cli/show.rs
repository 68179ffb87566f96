//! Status output for people (-i blocks, -l lines) and for scripts (--json, with exactly the
//! status file's keys).

use serde_json::{Map, Number, Value};

use super::tree::{get, StatusLines};

/// `-i`: a readable block for one set.
pub fn block(s: &StatusLines) -> String {
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
    let pit = get(s, "pit_time")
        .parse()
        .map(utc)
        .unwrap_or_else(|_| "-".into());
    format!(
        "{name}: {kind} set, {state}\n  \
         master:         {master}\n  \
         shadow:         {shadow}\n  \
         bitmap:         {bitmap}\n  \
         size:           {size} bytes ({human}), {chunks} chunks of {chunk_h}\n  \
         copy:           {copy}\n  \
         chunks differ:  {differ} ({differ_pct}%)\n  \
         throttle:       {throttle}\n  \
         durability:     {durability}\n  \
         point in time:  {pit}\n  \
         last error:     {error}\n",
        name = get(s, "name"),
        kind = get(s, "type"),
        master = get(s, "master"),
        shadow = get(s, "shadow"),
        bitmap = get(s, "bitmap"),
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

/// A status as a JSON object with the status file's keys; counts are numbers.
pub fn json(s: &StatusLines) -> Value {
    let mut m = Map::new();
    for (k, v) in s {
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
        assert!(b.contains("point in time:  1970-01-01 00:00:00 UTC"), "{b}");
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
    fn dates_and_sizes() {
        assert_eq!(utc(1_795_625_432), "2026-11-25 16:50:32 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(512), "512 B");
    }
}
