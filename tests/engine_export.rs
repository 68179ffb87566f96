//! Export, import and join on in-memory volumes, two engines standing for two hosts that share
//! the shadow: random writes on the master while the shadow is away and on the imported
//! shadow, then a join and an update either way. The chunks that differ after the join are
//! exactly the union of the two sides' chunks, and the update makes the two volumes equal
//! (which is what the point in time promises: no chunk is forgotten, none is invented).

use std::sync::Arc;

use iifs::engine::testing::{MapOpener, MemVolume};
use iifs::engine::volume::Volume;
use iifs::engine::{
    Direction, Durability, EnableSpec, Enabled, Engine, Error, Kind, Result, SetKind,
};
use proptest::prelude::*;

const CHUNK: usize = 4096;
const CHUNKS: usize = 32;
const SIZE: usize = CHUNK * CHUNKS;

struct Hosts {
    home: Engine,
    away: Engine,
    master: Arc<MemVolume>,
    shadow: Arc<MemVolume>,
    shadow_path: String,
    b2_path: String,
    _dir: tempfile::TempDir,
}

/// Home has an independent set `db` whose first copy is done; `away` can see the shadow and
/// a bitmap volume of its own, which home can read too (shared storage).
fn hosts() -> Hosts {
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |n: &str| format!("{}/{n}", dir.path().display());
    let master = Arc::new(MemVolume::from_bytes(
        (0..SIZE).map(|i| (i * 7 % 251) as u8).collect(),
    ));
    let shadow = Arc::new(MemVolume::new(SIZE));
    let b1: Arc<dyn Volume> = Arc::new(MemVolume::new(1 << 16));
    let b2: Arc<dyn Volume> = Arc::new(MemVolume::new(1 << 16));
    let home_vols = MapOpener::new();
    home_vols.insert(&at("m"), master.clone());
    home_vols.insert(&at("s"), shadow.clone());
    home_vols.insert(&at("b1"), b1);
    home_vols.insert(&at("b2"), b2.clone());
    let away_vols = MapOpener::new();
    away_vols.insert(&at("s"), shadow.clone());
    away_vols.insert(&at("b2"), b2);
    let home = Engine::new(Box::new(home_vols));
    let set = home
        .enable(&EnableSpec {
            kind: SetKind::Independent,
            master: at("m"),
            shadow: at("s"),
            bitmap: at("b1"),
            name: "db".into(),
            chunk_size: CHUNK as u64,
            durability: Durability::Strict,
        })
        .expect("enable");
    set.wait_copy().expect("first copy");
    assert_eq!(shadow.snapshot(), master.snapshot());
    Hosts {
        home,
        away: Engine::new(Box::new(away_vols)),
        master,
        shadow,
        shadow_path: at("s"),
        b2_path: at("b2"),
        _dir: dir,
    }
}

impl Hosts {
    /// `import` on host `on` of the shared shadow as set `imp`, with the bitmap volume `b2`.
    fn import<'a>(&self, on: &'a Engine) -> Result<Enabled<'a>> {
        on.import_prepared(&self.shadow_path, &self.b2_path, "imp", Durability::Strict)
    }

    /// An `import` on host `on` that must be refused: the error.
    fn import_refused(&self, on: &Engine) -> Error {
        self.import(on).err().expect("refused")
    }

    /// An update of set `db` on the home host toward `dir`, waited for.
    fn update(&self, dir: Direction) {
        let db = self.home.set("db").expect("db");
        db.start_copy(dir, false).expect("update");
        db.wait_copy().expect("wait");
    }
}

fn fill(seed: u8) -> Vec<u8> {
    vec![seed; CHUNK]
}

/// Export, writes on both sides, import disabled, join: the chunks that differ.
fn round(h: &Hosts, home_writes: &[usize], away_writes: &[usize]) -> u64 {
    let rec = h.home.export("db").expect("export");
    assert_eq!(rec.size as usize, SIZE);
    let db = h.home.set("db").expect("db");
    for (i, &c) in home_writes.iter().enumerate() {
        db.master
            .write(&fill(100 + i as u8), (c * CHUNK) as u64)
            .expect("master write while exported");
    }
    let imported = h.import(&h.away).expect("import");
    let imp = h.away.start(imported);
    assert_eq!(imp.status().state, "imported");
    for (i, &c) in away_writes.iter().enumerate() {
        imp.write_shadow(&fill(200 + i as u8), (c * CHUNK) as u64)
            .expect("write to the imported shadow");
    }
    // Still in use by the import: refused, nothing merged.
    let e = h.home.join("db", &h.b2_path).unwrap_err();
    assert_eq!(e.kind, Kind::Busy, "{e}");
    assert_eq!(db.status().state, "exported");
    h.away.disable("imp").expect("disable the import");
    h.home.join("db", &h.b2_path).expect("join");
    assert_eq!(db.status().state, "idle");
    db.status().chunks_differ
}

fn distinct(a: &[usize], b: &[usize]) -> u64 {
    let mut all: Vec<usize> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    all.dedup();
    all.len() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_join_then_an_update_shadow_makes_the_shadow_the_master(
        home in proptest::collection::vec(0..CHUNKS, 0..8),
        away in proptest::collection::vec(0..CHUNKS, 0..8),
    ) {
        let h = hosts();
        let differ = round(&h, &home, &away);
        prop_assert_eq!(differ, distinct(&home, &away));
        let before = h.shadow.snapshot();
        h.update(Direction::Shadow);
        prop_assert_eq!(h.shadow.snapshot(), h.master.snapshot());
        // Chunks written on neither side were not touched.
        let after = h.shadow.snapshot();
        for c in (0..CHUNKS).filter(|c| !home.contains(c) && !away.contains(c)) {
            prop_assert_eq!(&before[c * CHUNK..(c + 1) * CHUNK], &after[c * CHUNK..(c + 1) * CHUNK]);
        }
    }

    #[test]
    fn a_join_then_an_update_master_makes_the_master_the_shadow(
        home in proptest::collection::vec(0..CHUNKS, 0..8),
        away in proptest::collection::vec(0..CHUNKS, 0..8),
    ) {
        let h = hosts();
        round(&h, &home, &away);
        let shadow = h.shadow.snapshot();
        h.update(Direction::Master);
        prop_assert_eq!(h.master.snapshot(), shadow);
    }
}

/// While exported, the shadow is let go and nothing of the set may move data; the import
/// refuses what it cannot be; join refuses a set that is not exported.
#[test]
fn the_states_refuse_what_they_cannot_do() {
    let h = hosts();
    let e = h.home.join("db", &h.b2_path).unwrap_err();
    assert_eq!(e.kind, Kind::NotPermitted, "{e}");
    // No record yet: not an exported shadow.
    let e = h.import_refused(&h.away);
    assert_eq!(e.kind, Kind::Invalid, "{e}");
    assert!(e.message.contains("not an exported shadow"), "{e}");
    h.home.export("db").expect("export");
    let db = h.home.set("db").expect("db");
    for dir in [Direction::Shadow, Direction::Master] {
        let e = db.start_copy(dir, false).unwrap_err();
        assert_eq!(e.kind, Kind::NotPermitted, "{e}");
    }
    let e = h.home.export("db").unwrap_err();
    assert_eq!(e.kind, Kind::NotPermitted, "{e}");
    // The home host cannot import its own exported shadow.
    let e = h.import_refused(&h.home);
    assert_eq!(e.kind, Kind::Exists, "{e}");
    // A shadow changed after the export no longer matches its record.
    h.shadow.write_at(b"changed", 0).expect("write");
    let e = h.import_refused(&h.away);
    assert_eq!(e.kind, Kind::Invalid, "{e}");
    assert!(e.message.contains("does not hold the image"), "{e}");
}
