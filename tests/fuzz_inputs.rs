//! Fuzzing every parser of outside input, on stable Rust, with a fixed budget (issue 16): the
//! ctl command words, the bitmap volume header, its bitmaps and chunk map, the registry file,
//! the config file and `-o` lists, the export record. Each property feeds arbitrary bytes and
//! mutations of a valid input (bytes flipped, set, inserted, deleted, truncated, spliced; in
//! YAML files also a key or a value replaced by a tricky one) and checks that the parser does not panic and that every refusal is a clear one-line sentence.
//! A mutated bitmap volume must be refused (its checksums) or read back as it was, never
//! accepted with other content.
//!
//! Budget: `IIFS_FUZZ_CASES` cases per property (default below). Failures are not persisted
//! into the source tree: a case found becomes a named regression test at the end of this file.
//! Long runs: the cargo-fuzz targets in `fuzz/` (see fuzz/README.md).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use iifs::config::{split_mount_options, Settings};
use iifs::control::parse::{parse_global, parse_group, parse_overflow_ctl, parse_set, parse_size};
use iifs::engine::bundle::{self, ExportRecord};
use iifs::engine::chunkmap::{ChunkMap, Slot};
use iifs::engine::header::{
    self, flags, parse_uuid, Durability, Header, Layout, SetKind, SLOT_SIZE,
};
use iifs::engine::testing::MemVolume;
use iifs::engine::tracking::{Map, Tracking};
use iifs::engine::volume::Volume;
use iifs::engine::{Direction, GroupIntent, GroupRecord, OverflowRecord, SetRecord};
use iifs::registry::Registry;

/// Cases per property when `IIFS_FUZZ_CASES` is not set (the slower properties take a share
/// of it, see `budget`): about 55 s of CPU in release, some 30 s on two idle cores.
const DEFAULT_CASES: u32 = 100_000;

/// The debug build (CI runs the suite once more in it, where integer overflow panics) is
/// some twenty times slower: it takes a twentieth of the cases.
const DEBUG_SHARE: u32 = 20;

fn cases() -> u32 {
    std::env::var("IIFS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            DEFAULT_CASES / DEBUG_SHARE
        } else {
            DEFAULT_CASES
        })
}

/// The budget of one property: a `share`-th of the cases (the slower ones take fewer).
fn budget(share: u32) -> ProptestConfig {
    ProptestConfig {
        cases: (cases() / share).max(1),
        // Nothing is written into the source tree: a failing case is printed, and is then
        // kept as a named regression test below.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A refusal a person can act on: a sentence, on one line (it goes into a status file, a log
/// line, a ctl write's reply).
fn clear(msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        msg.trim().len() >= 8 && msg.chars().any(char::is_alphabetic),
        "refusal without a sentence: {msg:?}"
    );
    prop_assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "refusal spans lines: {msg:?}"
    );
    Ok(())
}

/// The same check outside a property, for the regression tests.
fn assert_clear(msg: &str) {
    if let Err(e) = clear(msg) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

#[derive(Debug, Clone)]
enum Op {
    /// XOR one byte with a non-zero mask.
    Flip(usize, u8),
    /// Overwrite one byte.
    Set(usize, u8),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Delete up to n bytes.
    Delete(usize, usize),
    /// Cut the input.
    Truncate(usize),
    /// Copy a piece of the input over another place (a splice of the input with itself).
    Splice { from: usize, to: usize, len: usize },
    /// YAML: the value of the n-th `key: value` line replaced.
    Value(usize, &'static str),
    /// YAML: the key of the n-th `key: value` line replaced.
    Key(usize, &'static str),
}

/// YAML scalars a file may hold where a parser expects a plain word or number: escapes that
/// make line breaks, block scalars, other types, aliases, tags.
const YAML_VALUES: &[&str] = &[
    "\"a\\nb\"",
    "\"\\r\"",
    "\"\\u2028\"",
    "\"\\x1b[31m\"",
    "|\n        a\n        b",
    ">\n        a\n\n        b",
    "''",
    "\"\"",
    "~",
    "[]",
    "[1, 2]",
    "{a: 1}",
    "-1",
    "0",
    "18446744073709551616",
    "1e400",
    ".nan",
    "yes",
    "64K",
    "0x10000",
    "!!binary aGVsbG8=",
    "&x a",
    "*x",
    "\"0123456789abcdef0123456789abcdef\"",
    "00000000-0000-0000-0000-000000000000",
];

/// Keys: unknown ones, with line breaks, of other types.
const YAML_KEYS: &[&str] = &[
    "\"a\\nb\"",
    "bogus",
    "\"\\r\"",
    "? x",
    "1",
    "~",
    "<<",
    "\"name \"",
];

fn text_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => op(),
        2 => (any::<usize>(), proptest::sample::select(YAML_VALUES)).prop_map(|(i, v)| Op::Value(i, v)),
        1 => (any::<usize>(), proptest::sample::select(YAML_KEYS)).prop_map(|(i, k)| Op::Key(i, k)),
    ]
}

fn text_ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(text_op(), 1..6)
}

/// The n-th line (cyclically) holding `key:`: where its key starts, its colon, its end.
fn yaml_line(b: &[u8], n: usize) -> Option<(usize, usize, usize)> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &c) in b
        .iter()
        .enumerate()
        .chain(std::iter::once((b.len(), &b'\n')))
    {
        if c == b'\n' {
            let line = &b[start..i];
            if let Some(colon) = line.iter().position(|&c| c == b':') {
                let key = line
                    .iter()
                    .position(|&c| c != b' ' && c != b'-')
                    .unwrap_or(0)
                    .min(colon);
                lines.push((start + key, start + colon, i));
            }
            start = i + 1;
        }
    }
    (!lines.is_empty()).then(|| lines[n % lines.len()])
}

/// Bytes that mean something to one of the parsers (YAML, command words, numbers, UTF-8).
const DICT: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b": ",
    b"- ",
    b"---\n",
    b"...\n",
    b"\"",
    b"'",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"=",
    b"#",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"!tag ",
    b"~",
    b"null",
    b"true",
    b"0x10",
    b"-1",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"4294967296",
    b"1e400",
    b".nan",
    b"K",
    b"M",
    b"\xff",
    b"\xc3\xa9",
    b"\xe2\x80\xa8",
    b"\0",
];

fn insertion() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..8),
        proptest::sample::select(DICT).prop_map(|d| d.to_vec()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(i, m)| Op::Flip(i, m)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Op::Set(i, b)),
        3 => (any::<usize>(), insertion()).prop_map(|(i, b)| Op::Insert(i, b)),
        2 => (any::<usize>(), 1..16usize).prop_map(|(i, n)| Op::Delete(i, n)),
        1 => any::<usize>().prop_map(Op::Truncate),
        1 => (any::<usize>(), any::<usize>(), 1..64usize)
            .prop_map(|(from, to, len)| Op::Splice { from, to, len }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..6)
}

/// `base` with `ops` applied (indices taken modulo the current length).
fn mutate(base: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut b = base.to_vec();
    for op in ops {
        let at = |i: usize, b: &Vec<u8>| i % (b.len() + 1);
        match op {
            Op::Flip(i, m) if !b.is_empty() => {
                let i = i % b.len();
                b[i] ^= m;
            }
            Op::Set(i, v) if !b.is_empty() => {
                let i = i % b.len();
                b[i] = *v;
            }
            Op::Insert(i, bytes) => {
                let i = at(*i, &b);
                b.splice(i..i, bytes.iter().copied());
            }
            Op::Delete(i, n) => {
                let i = at(*i, &b);
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Op::Truncate(i) => {
                let i = at(*i, &b);
                b.truncate(i);
            }
            Op::Splice { from, to, len } if !b.is_empty() => {
                let from = from % b.len();
                let piece: Vec<u8> = b[from..(from + len).min(b.len())].to_vec();
                let to = to % b.len();
                let end = (to + piece.len()).min(b.len());
                b.splice(to..end, piece);
            }
            Op::Value(n, v) => {
                if let Some((_, colon, end)) = yaml_line(&b, *n) {
                    b.splice(colon + 1..end, format!(" {v}").into_bytes());
                }
            }
            Op::Key(n, k) => {
                if let Some((key, colon, _)) = yaml_line(&b, *n) {
                    b.splice(key..colon, k.bytes());
                }
            }
            _ => {}
        }
    }
    b
}

/// In-place mutations only (no change of length), within `range` of the bytes.
fn mutate_in_place(b: &mut [u8], range: std::ops::Range<usize>, ops: &[(usize, u8)]) {
    let len = range.end - range.start;
    for &(i, m) in ops {
        b[range.start + i % len] ^= m;
    }
}

fn flips(n: usize) -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), 1..=255u8), 1..n)
}

/// A scratch directory in memory where there is one (the registry fsyncs every save).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("iifs-fuzz").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------------
// ctl command words

const VALID_GLOBAL: &[&str] = &[
    "enable dep /a /b /c",
    "enable ind /srv/m /srv/s /srv/b db chunk_size=64K durability=relaxed delay=10 units=4",
    "overflow init /o pool chunk_size=1M",
    "overflow delete pool",
    "group create g1",
    "suspend all",
    "resume all",
    "import /s /b db2",
];
const VALID_SET: &[&str] = &[
    "update shadow",
    "copy master force",
    "abort",
    "params 10 100",
    "attach ovf",
    "group g1",
    "join /b2",
    "hold 5",
    "release\n",
];
const VALID_GROUP: &[&str] = &[
    "update shadow force",
    "copy master",
    "add s1",
    "remove s1",
    "rename g2",
    "hold 3600",
    "delete",
];

/// Words the command parsers know, and some they must refuse.
const WORDS: &[&str] = &[
    "enable",
    "ind",
    "dep",
    "independent",
    "dependent",
    "overflow",
    "init",
    "delete",
    "group",
    "create",
    "suspend",
    "resume",
    "all",
    "import",
    "update",
    "copy",
    "shadow",
    "master",
    "s",
    "m",
    "force",
    "abort",
    "wait",
    "reset",
    "disable",
    "params",
    "attach",
    "detach",
    "ungroup",
    "export",
    "join",
    "hold",
    "release",
    "add",
    "remove",
    "rename",
    "chunk_size=",
    "chunk_size=64K",
    "chunk_size=K",
    "chunk_size=18446744073709551615K",
    "durability=",
    "durability=strict",
    "delay=",
    "delay=4294967296",
    "units=-1",
    "=",
    "==",
    "0",
    "1",
    "3601",
    "18446744073709551615",
    "18446744073709551616",
    "-5",
    "/a",
    "é",
    "K",
    "m",
];

/// Command lines of known and unknown words, with odd whitespace.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        4 => proptest::sample::select(WORDS).prop_map(str::to_string),
        1 => "[^\\s]{0,6}",
    ];
    let sep = prop_oneof![
        Just(" "),
        Just("  "),
        Just("\t"),
        Just("\u{a0}"),
        Just("\x0b")
    ];
    (
        proptest::collection::vec((word, sep), 0..7),
        prop_oneof![Just(""), Just("\n"), Just("\n\n"), Just(" \n")],
    )
        .prop_map(|(words, end)| {
            let mut s = String::new();
            for (w, sep) in words {
                s.push_str(&w);
                s.push_str(sep);
            }
            s.push_str(end);
            s.into_bytes()
        })
}

/// Any input a writer of a ctl file can send.
fn ctl_input() -> impl Strategy<Value = Vec<u8>> {
    let all: Vec<&'static str> = VALID_GLOBAL
        .iter()
        .chain(VALID_SET)
        .chain(VALID_GROUP)
        .copied()
        .collect();
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..96),
        3 => command_line(),
        3 => (proptest::sample::select(all), ops())
            .prop_map(|(base, ops)| mutate(base.as_bytes(), &ops)),
    ]
}

/// Every parser of ctl words on one input: no panic, a clear refusal, and what is accepted
/// prints back as words that parse to the same command.
fn check_commands(input: &[u8]) -> Result<(), TestCaseError> {
    match parse_global(input) {
        Ok(c) => prop_assert_eq!(parse_global(c.to_string().as_bytes()).ok(), Some(c)),
        Err(e) => clear(&e.to_string())?,
    }
    match parse_set(input) {
        Ok(c) => prop_assert_eq!(parse_set(c.to_string().as_bytes()).ok(), Some(c)),
        Err(e) => clear(&e.to_string())?,
    }
    match parse_group(input) {
        Ok(c) => prop_assert_eq!(parse_group(c.to_string().as_bytes()).ok(), Some(c)),
        Err(e) => clear(&e.to_string())?,
    }
    match parse_overflow_ctl(input) {
        Ok(c) => prop_assert_eq!(parse_overflow_ctl(c.to_string().as_bytes()).ok(), Some(c)),
        Err(e) => clear(&e.to_string())?,
    }
    if let Ok(text) = std::str::from_utf8(input) {
        if let Some(n) = parse_size(text) {
            // A size is digits with at most a K or M: it prints back to itself in bytes.
            prop_assert_eq!(parse_size(&n.to_string()), Some(n));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(budget(1))]

    #[test]
    fn ctl_words_never_panic_and_refuse_clearly(input in ctl_input()) {
        check_commands(&input)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The bitmap volume header

fn sample_header() -> Header {
    Header {
        seq: 1,
        kind: SetKind::Dependent,
        chunk_size: 4096,
        // 33000 chunks: two pages per bitmap, 65 pages of chunk map.
        master_size: 33_000 * 4096,
        shadow_size: 1000 * 4096,
        flags: flags::FULL_COPY,
        throttle_delay_ms: 5,
        throttle_units: 100,
        pit_time: 1_700_000_000,
        durability: Durability::Relaxed,
        name: "db".into(),
        master: "/srv/master".into(),
        shadow: "/srv/shadow".into(),
        bitmap: "/srv/bitmap".into(),
        layout: Layout::Checked,
        copy_total: 12,
        generation: 3,
        bitmap_id: 0x1234_5678_9abc,
        last_error: String::new(),
        shadow_slots: 1000,
        overflow: "pool".into(),
        overflow_id: 77,
        group_seq: 4,
        uuid: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        origin: 0,
    }
}

/// Headers with any field, strings included (of any length and character).
fn any_header() -> impl Strategy<Value = Header> {
    // Long strings are a short piece repeated (a regex of 1000 arbitrary characters is slow).
    let long = (".{1,8}", 1000..1100usize).prop_map(|(s, n)| s.repeat(n / s.len().max(1) + 1));
    let text = move || prop_oneof![3 => "[a-z/._-]{0,24}".boxed(), 1 => ".{0,64}".boxed(), 1 => long.clone().boxed()];
    let numbers = (
        any::<u64>(),
        prop_oneof![(9..=20u32).prop_map(|s| 1u32 << s), any::<u32>()],
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    );
    let strings = (text(), text(), text(), text(), text(), text());
    let ids = (
        any::<u128>(),
        any::<u128>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    (numbers, strings, ids).prop_map(|(n, s, i)| Header {
        seq: n.0,
        kind: if i.2 {
            SetKind::Dependent
        } else {
            SetKind::Independent
        },
        chunk_size: n.1,
        master_size: n.2,
        shadow_size: n.3,
        flags: n.4,
        throttle_delay_ms: n.4 >> 3,
        throttle_units: n.4 >> 7,
        pit_time: n.5,
        durability: if i.3 {
            Durability::Relaxed
        } else {
            Durability::Strict
        },
        name: s.0,
        master: s.1,
        shadow: s.2,
        bitmap: s.3,
        layout: if i.4 { Layout::Checked } else { Layout::Plain },
        copy_total: n.6,
        generation: n.7,
        bitmap_id: n.5 ^ n.6,
        last_error: s.4,
        shadow_slots: n.6 >> (n.7 % 64),
        overflow: s.5,
        overflow_id: n.7,
        group_seq: n.0 ^ n.7,
        uuid: i.0,
        origin: i.1,
    })
}

/// Reseal a slot's CRC after a change (what a careless or hostile writer could do).
fn reseal(slot: &mut [u8]) {
    let at = SLOT_SIZE as usize - 4;
    let crc = crc32fast::hash(&slot[..at]);
    slot[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

proptest! {
    #![proptest_config(budget(1))]

    /// Arbitrary slots: no panic; a slot that decodes re-encodes (or says why not).
    #[test]
    fn header_slots_of_any_bytes(
        a in proptest::collection::vec(any::<u8>(), 0..5000),
        b in proptest::collection::vec(any::<u8>(), 0..5000),
    ) {
        let _ = Header::decode(&a);
        if let Some((h, _)) = Header::pick(&a, &b) {
            if let Err(e) = h.encode() {
                clear(&e.to_string())?;
            }
        }
    }

    /// Any header either encodes and decodes back equal (its last error cut to the room left),
    /// or is refused with a clear sentence.
    #[test]
    fn headers_encode_and_decode_back(h in any_header()) {
        match h.encode() {
            Err(e) => clear(&e.to_string())?,
            Ok(slot) => {
                prop_assert_eq!(slot.len(), SLOT_SIZE as usize);
                match Header::decode(&slot) {
                    // Refused on reading: only a chunk size the engine never writes.
                    None => prop_assert!(
                        !h.chunk_size.is_power_of_two()
                            || !(512..=1 << 20).contains(&h.chunk_size)
                    ),
                    Some(back) => {
                        prop_assert!(h.last_error.starts_with(&back.last_error));
                        let mut h = h.clone();
                        h.last_error = back.last_error.clone();
                        prop_assert_eq!(back, h);
                    }
                }
            }
        }
    }

    /// A valid slot with bytes changed is refused (CRC) or decodes to the same header.
    #[test]
    fn mutated_header_slots_are_refused_or_equal(ops in ops(), seq_b in any::<u64>()) {
        let h = sample_header();
        let slot = h.encode().unwrap();
        let bad = mutate(&slot, &ops);
        if let Some(back) = Header::decode(&bad) {
            prop_assert_eq!(&back, &h);
        }
        // The other slot, older or newer, decides nothing when this one is damaged.
        let mut other = h.clone();
        other.seq = seq_b;
        let other_slot = other.encode().unwrap();
        if let Some((picked, which)) = Header::pick(&bad, &other_slot) {
            prop_assert!(picked == h || (picked == other && which == 1));
        }
    }

    /// A slot changed and resealed (a CRC that matches): decoding takes it or refuses it, and
    /// parse_uuid reads any text without panic.
    #[test]
    fn resealed_header_slots(flips in flips(8), near in any::<bool>(), text in ".{0,40}") {
        let mut slot = sample_header().encode().unwrap();
        let end = if near { 256 } else { SLOT_SIZE as usize - 4 };
        mutate_in_place(&mut slot, 0..end, &flips);
        reseal(&mut slot);
        if let Some(h) = Header::decode(&slot) {
            if let Err(e) = h.encode() {
                clear(&e.to_string())?;
            }
        }
        if let Some(u) = parse_uuid(&text) {
            prop_assert_eq!(parse_uuid(&header::uuid_text(u)).unwrap_or(0), u);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The bitmap volume: header, bitmaps and chunk map through `Tracking::open`

/// A compact set's bitmap volume with bits and chunk map entries set; only slot A holds a
/// header (slot B zeros), so a damaged header cannot fall back on an older sound one.
fn valid_volume() -> &'static Vec<u8> {
    static VOL: OnceLock<Vec<u8>> = OnceLock::new();
    VOL.get_or_init(|| {
        let h = sample_header();
        let vol = Arc::new(MemVolume::new(h.volume_len() as usize + 3000));
        let t = Tracking::create(vol.clone(), h).unwrap();
        let mut changes = Vec::new();
        for c in (0..33_000u64).filter(|c| c % 7 == 0 || (32_700..32_720).contains(c)) {
            changes.push((Map::Shadow, c, true));
        }
        for c in (0..33_000u64).filter(|c| c % 11 == 3) {
            changes.push((Map::Copy, c, true));
        }
        t.persist(&changes).unwrap();
        let map = t.chunk_map().unwrap();
        map.set(&[
            (0, Some(Slot::Shadow(0))),
            (510, Some(Slot::Shadow(1))),
            (511, Some(Slot::Overflow(1))),
            (32_999, Some(Slot::Overflow(99))),
        ])
        .unwrap();
        vol.snapshot()
    })
}

/// What an opened volume holds: header, both bitmaps, the chunk map.
type Content = (Header, Vec<u64>, Vec<u64>, Vec<(u64, Slot)>);

fn content(t: &Tracking) -> Content {
    let h = t.header();
    let bits = |m: Map| {
        let mut v = Vec::new();
        let mut at = 0;
        while let Some(c) = t.next_set(m, at) {
            v.push(c);
            at = c + 1;
        }
        v
    };
    let map = t.chunk_map().map(|m| m.mapped()).unwrap_or_default();
    (h, bits(Map::Shadow), bits(Map::Copy), map)
}

fn valid_content() -> &'static Content {
    static C: OnceLock<Content> = OnceLock::new();
    C.get_or_init(|| {
        let vol = Arc::new(MemVolume::from_bytes(valid_volume().clone()));
        content(&Tracking::open(vol).unwrap())
    })
}

fn open_bytes(bytes: Vec<u8>) -> std::io::Result<Tracking> {
    let vol: Arc<dyn Volume> = Arc::new(MemVolume::from_bytes(bytes));
    Tracking::open(vol)
}

proptest! {
    #![proptest_config(budget(4))]

    /// A volume of any bytes: refused clearly, or opened (it then writes its own header back).
    #[test]
    fn bitmap_volumes_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        match open_bytes(bytes) {
            Ok(t) => { let _ = content(&t); }
            Err(e) => clear(&e.to_string())?,
        }
    }

    /// The valid volume with bytes flipped anywhere in what the set uses (often in the header):
    /// refused, or read back with exactly the content it had.
    #[test]
    fn mutated_bitmap_volumes_are_refused_or_equal(
        flips in flips(6),
        in_header in any::<bool>(),
    ) {
        let mut bytes = valid_volume().clone();
        let end = if in_header { 2 * SLOT_SIZE as usize } else { bytes.len() };
        mutate_in_place(&mut bytes, 0..end, &flips);
        match open_bytes(bytes) {
            Ok(t) => prop_assert_eq!(&content(&t), valid_content()),
            Err(e) => clear(&e.to_string())?,
        }
    }

    /// The valid volume with its length changed, or with bytes inserted and deleted.
    #[test]
    fn reshaped_bitmap_volumes(ops in ops()) {
        let bytes = mutate(valid_volume(), &ops);
        match open_bytes(bytes) {
            Ok(t) => prop_assert_eq!(&content(&t), valid_content()),
            Err(e) => clear(&e.to_string())?,
        }
    }

    /// A header whose fields were changed and resealed (sizes, flags, layout, slots): open
    /// takes it or refuses it clearly, never panics.
    #[test]
    fn resealed_headers_open_or_refuse(
        fields in proptest::collection::vec((0usize..24, any::<u64>()), 1..4),
        slack in 0usize..40_000,
    ) {
        let mut bytes = valid_volume().clone();
        bytes.resize(bytes.len() + slack, 0);
        for (field, v) in fields {
            // The fixed fields are 8-byte aligned from byte 16 to 192.
            let at = 16 + field * 8 - if field % 3 == 0 { 4 } else { 0 };
            let v = match field % 4 {
                0 => v % 64,
                1 => v >> (v % 64),
                _ => v,
            };
            bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        reseal(&mut bytes[..SLOT_SIZE as usize]);
        match open_bytes(bytes) {
            Ok(t) => { let _ = content(&t); }
            Err(e) => clear(&e.to_string())?,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The chunk map on its own

const MAP_OFFSET: u64 = 4096;

fn valid_map() -> &'static Vec<u8> {
    static MAP: OnceLock<Vec<u8>> = OnceLock::new();
    MAP.get_or_init(|| {
        let vol = Arc::new(MemVolume::new(64 << 10));
        let map = ChunkMap::new(vol.clone(), MAP_OFFSET, 1500, 7);
        map.clear_all().unwrap();
        map.set(&[
            (0, Some(Slot::Shadow(0))),
            (700, Some(Slot::Shadow(3))),
            (1499, Some(Slot::Overflow(3))),
        ])
        .unwrap();
        vol.snapshot()
    })
}

fn load_map(bytes: Vec<u8>, chunks: u64, id: u64) -> std::io::Result<ChunkMap> {
    ChunkMap::load(
        Arc::new(MemVolume::from_bytes(bytes)),
        MAP_OFFSET,
        chunks,
        id,
    )
}

proptest! {
    #![proptest_config(budget(4))]

    #[test]
    fn chunk_maps_of_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..16_000),
        chunks in 0u64..3000,
        id in any::<u64>(),
    ) {
        match load_map(bytes, chunks, id) {
            Ok(m) => { let _ = m.mapped(); }
            Err(e) => clear(&e.to_string())?,
        }
    }

    #[test]
    fn mutated_chunk_maps_are_refused_or_equal(flips in flips(6)) {
        let mut bytes = valid_map().clone();
        mutate_in_place(&mut bytes, MAP_OFFSET as usize..MAP_OFFSET as usize + 3 * 4096, &flips);
        let want = load_map(valid_map().clone(), 1500, 7).unwrap().mapped();
        match load_map(bytes, 1500, 7) {
            Ok(m) => prop_assert_eq!(m.mapped(), want),
            Err(e) => clear(&e.to_string())?,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The registry file

fn valid_registry() -> &'static Vec<u8> {
    static REG: OnceLock<Vec<u8>> = OnceLock::new();
    REG.get_or_init(|| {
        let dir = scratch();
        let r = Registry::open(dir.path()).unwrap();
        r.set_overflows(vec![OverflowRecord {
            name: "pool".into(),
            path: "/srv/pool".into(),
        }]);
        r.set_groups(vec![GroupRecord {
            name: "g1".into(),
            members: vec!["db".into(), "web".into()],
        }]);
        r.set_group_op(Some(GroupIntent {
            group: "g1".into(),
            dir: Direction::Shadow,
            full: false,
            seq: 9,
            members: vec!["db".into()],
        }));
        let db = SetRecord {
            name: "db".into(),
            master: "/srv/m".into(),
            shadow: "/srv/s".into(),
            bitmap: "/srv/b".into(),
            generation: 5,
            offline: Some(iifs::engine::UnrecordedOffline {
                flags: 0x41,
                reason: "write of /srv/b: EIO".into(),
                seq: 3,
            }),
            suspended: true,
        };
        let web = SetRecord {
            name: "web".into(),
            master: "/srv/wm".into(),
            shadow: "/srv/ws".into(),
            bitmap: "/srv/wb".into(),
            ..SetRecord::default()
        };
        r.save(&[db, web]).unwrap();
        std::fs::read(dir.path().join(Registry::FILE)).unwrap()
    })
}

type RegistryContent = (
    Vec<SetRecord>,
    Vec<OverflowRecord>,
    Vec<GroupRecord>,
    Option<GroupIntent>,
);

fn registry_content(r: &Registry) -> RegistryContent {
    (r.records(), r.overflows(), r.groups(), r.group_op())
}

/// Open a registry file of these bytes; what opens saves and reads back the same.
fn check_registry(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = scratch();
    std::fs::write(dir.path().join(Registry::FILE), bytes).unwrap();
    match Registry::open(dir.path()) {
        Ok(r) => {
            let first = registry_content(&r);
            r.save(&first.0)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let again = Registry::open(dir.path())
                .map_err(|e| TestCaseError::fail(format!("saved registry unreadable: {e}")))?;
            prop_assert_eq!(registry_content(&again), first);
        }
        Err(e) => clear(&e.to_string())?,
    }
    Ok(())
}

/// Text inputs: arbitrary bytes, or mutations of `base`.
fn text_input(base: fn() -> &'static Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        4 => text_ops().prop_map(move |ops| mutate(base(), &ops)),
    ]
}

proptest! {
    #![proptest_config(budget(8))]

    #[test]
    fn registry_files(bytes in text_input(valid_registry)) {
        check_registry(&bytes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The config file and `-o` lists

fn valid_config() -> &'static Vec<u8> {
    static CFG: OnceLock<Vec<u8>> = OnceLock::new();
    CFG.get_or_init(|| {
        b"# iifs settings\nstate_dir: /var/lib/iifs\nchunk_size: 64K\ndurability: relaxed\n\
          threads: 4\nallow_other: true\nlog_level: debug\nspace_warning: 80\n\
          volume_dirs: [/srv/images, /dev]\npassthrough: off\n"
            .to_vec()
    })
}

fn check_config(dir: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let path: PathBuf = dir.join("iifs.yaml");
    std::fs::write(&path, bytes).unwrap();
    let mut s = Settings::default();
    match s.apply_file(&path) {
        Ok(()) => {
            prop_assert!(iifs::engine::check_chunk_size(s.chunk_size).is_ok());
            prop_assert!((1..=64).contains(&s.threads));
            prop_assert!((1..=100).contains(&s.space_warning));
            prop_assert!(s.volume_dirs.iter().all(|d| d.is_absolute()));
        }
        Err(e) => clear(&e.to_string())?,
    }
    Ok(())
}

const OPTION_WORDS: &[&str] = &[
    "rw",
    "ro",
    "nosuid",
    "x-systemd.automount",
    "fsname=iifs",
    "config=/etc/iifs/x.yaml",
    "state_dir=/x",
    "chunk_size=64K",
    "chunk_size=3000",
    "durability=strict",
    "threads=0",
    "threads=65",
    "allow_other",
    "log_level=loud",
    "space_warning=101%",
    "volume_dirs=/a::b",
    "passthrough=maybe",
    "=",
    "",
];

fn option_lists() -> impl Strategy<Value = Vec<String>> {
    let item = prop_oneof![
        3 => proptest::sample::select(OPTION_WORDS).prop_map(str::to_string),
        1 => ".{0,12}",
    ];
    let list = proptest::collection::vec(item, 0..5).prop_map(|items| items.join(","));
    proptest::collection::vec(list, 0..3)
}

proptest! {
    #![proptest_config(budget(4))]

    #[test]
    fn config_files(bytes in text_input(valid_config)) {
        let dir = scratch();
        check_config(dir.path(), &bytes)?;
    }

    /// `-o` lists and each setting they carry, as the daemon applies them.
    #[test]
    fn mount_option_lists(lists in option_lists()) {
        match split_mount_options(&lists) {
            Ok(o) => {
                let mut s = Settings::default();
                for (k, v) in &o.settings {
                    if let Err(e) = s.set(k, v) {
                        clear(&e.to_string())?;
                    }
                }
            }
            Err(e) => clear(&e.to_string())?,
        }
    }

    /// One setting with any value.
    #[test]
    fn settings_of_any_value(key in proptest::sample::select(&[
        "state_dir", "chunk_size", "durability", "threads", "allow_other", "log_level",
        "space_warning", "volume_dirs", "passthrough", "bogus", "",
    ][..]), value in ".{0,24}") {
        if let Err(e) = Settings::default().set(key, &value) {
            clear(&e.to_string())?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The export record

fn valid_record() -> ExportRecord {
    ExportRecord {
        format: bundle::FORMAT,
        uuid: header::uuid_text(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        set: "db".into(),
        size: 1 << 30,
        chunk_size: 65536,
        chunks: 16384,
        pit_time: 1_700_000_000,
        exported_from: "host-a".into(),
        exported_at: 1_700_000_100,
        shadow: "/srv/shadow".into(),
        chunk_list_crc32: "0badf00d".into(),
    }
}

fn valid_bundle() -> &'static Vec<u8> {
    static REC: OnceLock<Vec<u8>> = OnceLock::new();
    REC.get_or_init(|| {
        let dir = scratch();
        let shadow = dir.path().join("shadow");
        let shadow = shadow.to_str().unwrap();
        let rec = ExportRecord {
            shadow: shadow.to_string(),
            ..valid_record()
        };
        bundle::write_pending(&rec).unwrap();
        bundle::commit(shadow).unwrap();
        assert_eq!(bundle::read(shadow).unwrap(), rec);
        std::fs::read(bundle::path_of(shadow)).unwrap()
    })
}

fn check_bundle(dir: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let shadow = dir.join("shadow");
    let shadow = shadow.to_str().unwrap();
    std::fs::write(bundle::path_of(shadow), bytes).unwrap();
    match bundle::read(shadow) {
        Ok(rec) => {
            prop_assert_eq!(rec.format, bundle::FORMAT);
            prop_assert!(rec.origin().is_some() && rec.chunk_size > 0 && rec.size > 0);
        }
        Err(e) => clear(&e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(budget(4))]

    #[test]
    fn export_records(bytes in text_input(valid_bundle)) {
        let dir = scratch();
        check_bundle(dir.path(), &bytes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests: every case the properties found, with its exact input.

/// `ctl`-style `-o chunk_size=` with a carriage return (found by `settings_of_any_value`): the
/// refusal echoed the value raw, breaking its line.
#[test]
fn regression_setting_value_with_a_carriage_return() {
    let err = Settings::default().set("chunk_size", "\r").unwrap_err();
    assert_clear(&err.to_string());
    assert!(err.to_string().contains("'\\r'"), "{err}");
    let err = split_mount_options(&["bogus\n=1".into()]).unwrap_err();
    assert_clear(&err.to_string());
}

/// A set name over the header's room with control characters in it (found by
/// `headers_encode_and_decode_back`): the refusal quoted the whole name raw.
#[test]
fn regression_header_string_too_long_with_line_breaks() {
    let h = Header {
        name: format!("\r\n{}\u{2028}", "a".repeat(1100)),
        ..sample_header()
    };
    let err = h.encode().unwrap_err().to_string();
    assert_clear(&err);
    assert!(
        err.contains("too long") && err.contains("1105 bytes"),
        "{err}"
    );
}

/// A config file whose key is a carriage return (found by `config_files`): the YAML error
/// named the key raw.
#[test]
fn regression_config_key_with_a_carriage_return() {
    let dir = scratch();
    let bytes = mutate(valid_config(), &[Op::Key(0, "\"\\r\"")]);
    assert!(bytes.starts_with(b"# iifs settings\n\"\\r\": /var/lib/iifs\n"));
    check_config(dir.path(), &bytes).unwrap();
    std::fs::write(dir.path().join("c.yaml"), "\"\\r\": /var/lib/iifs\n").unwrap();
    let err = Settings::default()
        .apply_file(&dir.path().join("c.yaml"))
        .unwrap_err();
    assert_clear(&err.to_string());
}

/// An export record whose uuid is a block scalar of two lines (found by `export_records`):
/// "damaged (uuid 'a\nb\n' ...)" was printed over three lines.
#[test]
fn regression_export_record_uuid_over_lines() {
    let dir = scratch();
    let bytes = mutate(valid_bundle(), &[Op::Value(3, "|\n        a\n        b")]);
    assert!(String::from_utf8_lossy(&bytes).contains("uuid: |\n        a\n        b\nset: db\n"));
    check_bundle(dir.path(), &bytes).unwrap();
    let shadow = dir.path().join("shadow");
    let err = bundle::read(shadow.to_str().unwrap()).unwrap_err();
    assert!(err.contains("damaged (uuid 'a\\nb\\n'"), "{err}");
}

/// A registry whose first line became a key `"\r"` and one whose unknown key holds a line
/// break (found by `registry_files`): the YAML error named the key raw.
#[test]
fn regression_registry_key_with_line_breaks() {
    let found = mutate(valid_registry(), &[Op::Key(0, "\"\\r\"")]);
    assert!(found.starts_with(b"\"\\r\": rewritten by the daemon on every change\nsets:\n"));
    check_registry(&found).unwrap();
    check_registry(b"sets: []\n\"a\\nb\": 1\n").unwrap();
}
