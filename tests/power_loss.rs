//! Power-loss tests of the engine. The rule they check: with `durability=strict`, a set's point
//! in time survives a power loss at any instant.
//!
//! Per seed:
//! 1. Build an enabled state on memory volumes: random master content, one or two sets (dependent
//!    and/or independent, strict) on that master, some master writes, in some seeds a throttled
//!    copy interrupted by a clean shutdown. Their bytes become the durable layers of fault volumes.
//! 2. Restore the sets on a new engine over `PowerLossVolume`s sharing one `TripSwitch` with a
//!    random budget, and run a workload (master writes, shadow writes + fsync, `update shadow` /
//!    `copy shadow` over unsynced master writes, `update master` + wait, wait) until the switch
//!    trips ("the power goes").
//! 3. Build the disks as they are after the power returns (`power_cut`: the durable layer plus
//!    none, all or a random subset of the unsynced writes), restore on a new engine, wait for the
//!    resumed copies, and require every shadow to read exactly its expected point in time (either
//!    the old or the new one for an update or shadow write that was in flight at the cut). Where
//!    no unsynced write was lost (a crash rather than a power loss), the master must also read as
//!    acknowledged.
//!
//! `concurrent_first_writes_share_flushes_and_survive_power_loss` does the same with three
//! threads writing the master at once, so that flushes are shared between writers.
//!
//! Environment: `IIFS_POWERLOSS_SEEDS` (default 2000; a quarter of it for the concurrent test), `IIFS_POWERLOSS_SEED` (run only this
//! seed), `IIFS_POWERLOSS_FSYNC_FIRST=1` (fsync the master before taking a new point in time,
//! which the engine does itself under strict durability: see
//! `dependent_update_shadow_over_unsynced_master_writes`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use iifs::engine::testing::{MemVolume, TripSwitch};
use iifs::engine::volume::Volume;
use iifs::engine::{Direction, Durability, EnableSpec, Engine, Kind, SetKind, SetRecord};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[path = "support/powerloss.rs"]
mod support;
use support::{env_u64, opener, random_write, Disks, Keep, C};

const BITMAP_LEN: usize = 8192 + 2 * 4096;

/// Memory volumes for phase 1: master `/m` holding `master`, and per set an empty shadow `/sI`
/// of the same size and an empty bitmap `/bI`; and an engine over them.
fn memory_engine(master: &[u8], n_sets: usize) -> (Vec<(String, Arc<MemVolume>)>, Engine) {
    let mut mem: Vec<(String, Arc<MemVolume>)> = vec![(
        "/m".into(),
        Arc::new(MemVolume::from_bytes(master.to_vec())),
    )];
    for i in 0..n_sets {
        mem.push((format!("/s{i}"), Arc::new(MemVolume::new(master.len()))));
        mem.push((format!("/b{i}"), Arc::new(MemVolume::new(BITMAP_LEN))));
    }
    let dyn_mem: Vec<(String, Arc<dyn Volume>)> = mem
        .iter()
        .map(|(p, v)| (p.clone(), v.clone() as Arc<dyn Volume>))
        .collect();
    let engine = Engine::new(Box::new(opener(&dyn_mem)));
    (mem, engine)
}

/// Set `setI` on the volumes of `memory_engine`: master `/m`, shadow `/sI`, bitmap `/bI`.
fn set_spec(i: usize, kind: SetKind, durability: Durability) -> EnableSpec {
    EnableSpec {
        kind,
        master: "/m".into(),
        shadow: format!("/s{i}"),
        bitmap: format!("/b{i}"),
        name: format!("set{i}"),
        chunk_size: C as u64,
        durability,
    }
}

struct Outcome {
    tripped: bool,
    in_flight: bool,
}

fn run_seed(seed: u64, fsync_before_pit: bool) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let chunks = rng.gen_range(16..=48usize);
    let mut n = chunks * C;
    if rng.gen_bool(0.2) {
        n -= rng.gen_range(1..C);
    }
    let mut master = vec![0u8; n];
    rng.fill(&mut master[..]);
    let n_sets = rng.gen_range(1..=2usize);
    let kinds: Vec<SetKind> = (0..n_sets)
        .map(|_| {
            if rng.gen_bool(0.5) {
                SetKind::Independent
            } else {
                SetKind::Dependent
            }
        })
        .collect();
    // What survives of the unsynced writes: nothing, a random subset, or everything (the last
    // is a crash of the process rather than of the machine: relaxed sets must survive it too).
    let keep = match seed % 3 {
        0 => Keep::None,
        1 => Keep::Random,
        _ => Keep::All,
    };
    let durability: Vec<Durability> = (0..n_sets)
        .map(|_| {
            if matches!(keep, Keep::All) && rng.gen_bool(0.5) {
                Durability::Relaxed
            } else {
                Durability::Strict
            }
        })
        .collect();
    let mut log: Vec<String> = vec![format!(
        "master {n} bytes, sets {kinds:?} {durability:?}, unsynced writes kept: {keep:?}"
    )];

    // ------------------------------------------------------------ phase 1: enabled state in memory
    let (mem, engine) = memory_engine(&master, n_sets);
    // Expected shadow content per set: one value, or two while an update is in doubt.
    let mut expected: Vec<Vec<Vec<u8>>> = Vec::new();
    let ctx = |log: &Vec<String>| {
        format!(
            "seed {seed} (rerun with IIFS_POWERLOSS_SEED={seed}):\n  {}",
            log.join("\n  ")
        )
    };
    for (i, kind) in kinds.iter().enumerate() {
        if i > 0 && rng.gen_bool(0.7) {
            let (off, data) = random_write(&mut rng, n);
            engine
                .set("set0")
                .unwrap()
                .master
                .write(&data, off as u64)
                .unwrap();
            master[off..off + data.len()].copy_from_slice(&data);
            log.push(format!("phase 1: master write {off}+{}", data.len()));
        }
        engine
            .enable(&set_spec(i, *kind, durability[i]))
            .unwrap_or_else(|e| panic!("enable: {e}\n{}", ctx(&log)));
        log.push(format!("phase 1: enable {} set{i}", kind.word()));
        expected.push(vec![master.clone()]);
    }
    for _ in 0..rng.gen_range(0..4) {
        let (off, data) = random_write(&mut rng, n);
        engine
            .set("set0")
            .unwrap()
            .master
            .write(&data, off as u64)
            .unwrap();
        master[off..off + data.len()].copy_from_slice(&data);
        log.push(format!("phase 1: master write {off}+{}", data.len()));
    }
    for i in 0..n_sets {
        let set = engine.set(&format!("set{i}")).unwrap();
        if rng.gen_bool(0.6) {
            set.wait_copy().unwrap();
        }
    }
    // Sometimes leave a throttled copy (or update) towards the shadow in progress.
    if rng.gen_bool(0.25) {
        let i = rng.gen_range(0..n_sets);
        let set = engine.set(&format!("set{i}")).unwrap();
        set.wait_copy().unwrap();
        set.set_params(1, 1).unwrap();
        let full = rng.gen_bool(0.5);
        set.start_copy(Direction::Shadow, full).unwrap();
        expected[i] = vec![master.clone()];
        log.push(format!(
            "phase 1: slow {} shadow set{i}, then shutdown",
            if full { "copy" } else { "update" }
        ));
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..4)));
    }
    engine.shutdown();
    let mut records: Vec<SetRecord> = engine.records();
    drop(engine);
    let images: Vec<(String, Vec<u8>)> =
        mem.iter().map(|(p, v)| (p.clone(), v.snapshot())).collect();
    drop(mem);

    // ------------------------------------------------------------ phase 2: workload until the cut
    let budget = rng.gen_range(0..500i64);
    let switch = TripSwitch::new(budget);
    let disks = Disks::new(&images, &switch);
    let engine = disks.engine();
    records.shuffle(&mut rng);
    if let Some((_, e)) = engine.restore_all(&records).into_iter().next() {
        panic!("restore before the cut: {e}\n{}", ctx(&log));
    }
    log.push(format!("phase 2: budget {budget}"));
    if rng.gen_bool(0.7) {
        for r in &records {
            engine.set(&r.name).unwrap().set_params(0, 100).unwrap();
        }
    }
    let mut in_flight = false;
    // The master as the engine showed it before the last operation (for a cut during it).
    let mut master_before = master.clone();
    let ops = rng.gen_range(10..80);
    for _ in 0..ops {
        if switch.tripped() {
            break;
        }
        let i = rng.gen_range(0..n_sets);
        let name = format!("set{i}");
        let set = engine.set(&name).unwrap();
        master_before = master.clone();
        match rng.gen_range(0..100) {
            0..=9 => {
                // A shadow write, then fsync: durable once both return before the cut.
                let (off, data) = random_write(&mut rng, n);
                set.write_shadow(&data, off as u64)
                    .unwrap_or_else(|e| panic!("shadow write: {e}\n{}", ctx(&log)));
                set.sync_all()
                    .unwrap_or_else(|e| panic!("sync: {e}\n{}", ctx(&log)));
                let mut new = expected[i][0].clone();
                new[off..off + data.len()].copy_from_slice(&data);
                if switch.tripped() {
                    expected[i].push(new);
                    in_flight = true;
                    log.push(format!(
                        "shadow write {name} {off}+{} + fsync: power lost during it",
                        data.len()
                    ));
                } else {
                    expected[i] = vec![new];
                    log.push(format!("shadow write {name} {off}+{} + fsync", data.len()));
                }
            }
            10..=59 => {
                let (off, data) = random_write(&mut rng, n);
                set.master
                    .write(&data, off as u64)
                    .unwrap_or_else(|e| panic!("master write: {e}\n{}", ctx(&log)));
                master[off..off + data.len()].copy_from_slice(&data);
                log.push(format!("master write {off}+{}", data.len()));
            }
            60..=79 => {
                let full = rng.gen_bool(0.25);
                if fsync_before_pit {
                    set.sync_all()
                        .unwrap_or_else(|e| panic!("sync: {e}\n{}", ctx(&log)));
                }
                let word = if full { "copy" } else { "update" };
                match set.start_copy(Direction::Shadow, full) {
                    Ok(()) => {
                        if switch.tripped() {
                            expected[i].push(master.clone());
                            in_flight = true;
                            log.push(format!("{word} shadow {name}: ok, power lost during it"));
                        } else {
                            expected[i] = vec![master.clone()];
                            log.push(format!("{word} shadow {name}: ok"));
                        }
                    }
                    Err(e) if e.kind == Kind::Busy => {
                        log.push(format!("{word} shadow {name}: busy"))
                    }
                    Err(e) => panic!("{word} shadow {name}: {e}\n{}", ctx(&log)),
                }
            }
            80..=89 => match set.start_copy(Direction::Master, false) {
                Ok(()) => {
                    assert_eq!(expected[i].len(), 1);
                    master = expected[i][0].clone();
                    log.push(format!("update master {name}: ok"));
                    set.wait_copy()
                        .unwrap_or_else(|e| panic!("wait: {e}\n{}", ctx(&log)));
                    log.push(format!("wait {name}"));
                }
                Err(e) if e.kind == Kind::Busy => log.push(format!("update master {name}: busy")),
                Err(e) => panic!("update master {name}: {e}\n{}", ctx(&log)),
            },
            _ => {
                set.wait_copy()
                    .unwrap_or_else(|e| panic!("wait: {e}\n{}", ctx(&log)));
                log.push(format!("wait {name}"));
            }
        }
    }
    let tripped = switch.tripped();
    log.push(if tripped {
        "power lost".into()
    } else {
        "workload ended, power cut now".into()
    });
    engine.shutdown();
    drop(engine);

    // ------------------------------------------------------------ phase 3: recovery
    let mut keep_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut keep_fn: Box<dyn FnMut() -> bool> = match keep {
        Keep::None => Box::new(|| false),
        Keep::All => Box::new(|| true),
        Keep::Random => Box::new(move || keep_rng.gen_bool(0.5)),
    };
    let after = disks.after_cut(&mut *keep_fn);
    drop(disks);
    let switch = TripSwitch::new(i64::MAX);
    let disks = Disks::new(&after, &switch);
    let engine = disks.engine();
    if let Some((_, e)) = engine.restore_all(&records).into_iter().next() {
        panic!("restore after the cut: {e}\n{}", ctx(&log));
    }
    for r in &records {
        let set = engine.set(&r.name).unwrap();
        set.set_params(0, 100).unwrap();
        set.wait_copy()
            .unwrap_or_else(|e| panic!("wait after the cut: {e}\n{}", ctx(&log)));
    }
    for (i, exp) in expected.iter().enumerate() {
        let set = engine.set(&format!("set{i}")).unwrap();
        let st = set.status();
        assert!(
            st.state == "idle" && st.last_error.is_none(),
            "set{i} after recovery: {st:?}\n{}",
            ctx(&log)
        );
        let mut got = vec![0u8; n];
        set.read_shadow(&mut got, 0)
            .unwrap_or_else(|e| panic!("read: {e}\n{}", ctx(&log)));
        if !exp.contains(&got) {
            let diffs: Vec<String> = exp
                .iter()
                .map(|e| {
                    let bad: Vec<usize> = (0..n.div_ceil(C))
                        .filter(|&c| {
                            e[c * C..((c + 1) * C).min(n)] != got[c * C..((c + 1) * C).min(n)]
                        })
                        .collect();
                    format!("chunks differing from this expected image: {bad:?}")
                })
                .collect();
            panic!(
                "set{i} ({}) shadow after power loss is none of its {} expected point(s) in time: {}\n{}",
                kinds[i].word(),
                exp.len(),
                diffs.join("; "),
                ctx(&log)
            );
        }
        // The raw shadow of an independent set is the image itself once its copy finished.
        if kinds[i] == SetKind::Independent {
            let raw = disks
                .vols
                .iter()
                .find(|(p, _)| *p == format!("/s{i}"))
                .unwrap()
                .1
                .current();
            assert!(
                raw[..n] == got[..],
                "set{i}: raw shadow differs from its reads after recovery\n{}",
                ctx(&log)
            );
        }
    }
    // Nothing lost: the master reads as acknowledged (or as before the operation cut short).
    if matches!(keep, Keep::All) {
        let set = engine.set("set0").unwrap();
        let mut got = vec![0u8; n];
        set.master.read(&mut got, 0).unwrap();
        if got != master && got != master_before {
            let bad: Vec<usize> = (0..n.div_ceil(C))
                .filter(|&c| {
                    master[c * C..((c + 1) * C).min(n)] != got[c * C..((c + 1) * C).min(n)]
                })
                .collect();
            panic!(
                "master after a crash differs from what was acknowledged in chunks {bad:?}\n{}",
                ctx(&log)
            );
        }
    }
    engine.shutdown();
    Outcome { tripped, in_flight }
}

#[test]
fn point_in_time_survives_power_loss_at_any_instant() {
    let fsync = std::env::var("IIFS_POWERLOSS_FSYNC_FIRST").is_ok_and(|v| v == "1");
    if let Some(seed) = env_u64("IIFS_POWERLOSS_SEED") {
        run_seed(seed, fsync);
        return;
    }
    let seeds = env_u64("IIFS_POWERLOSS_SEEDS").unwrap_or(2000);
    let t = Instant::now();
    let (mut tripped, mut in_flight) = (0, 0);
    for seed in 0..seeds {
        let o = run_seed(seed, fsync);
        tripped += o.tripped as u64;
        in_flight += o.in_flight as u64;
    }
    eprintln!(
        "{seeds} seeds in {:?}: the power went during the workload in {tripped}, during an update or write of a shadow in {in_flight}",
        t.elapsed()
    );
    assert!(
        tripped * 2 > seeds,
        "the cut should fall inside the workload in most seeds ({tripped} of {seeds})"
    );
}

/// `update shadow` makes the master as it reads now the new point in time, including writes
/// acknowledged but not yet fsynced. With `durability=strict` that point in time should survive
/// a power loss (the strict durability rule above). If the update does not make the master durable first,
/// a dependent shadow (which reads unchanged chunks from the master) or an independent shadow
/// whose copy is resumed after the cut gets the master's older durable bytes instead.
fn update_shadow_over_unsynced_master_writes(kind: SetKind) {
    let n = 8 * C;
    let images = vec![
        ("/m".to_string(), vec![0x11u8; n]),
        ("/s".to_string(), vec![0u8; n]),
        ("/b".to_string(), vec![0u8; BITMAP_LEN]),
    ];
    let disks = Disks::new(&images, &TripSwitch::new(i64::MAX));
    let engine = disks.engine();
    let set = engine
        .enable(&EnableSpec {
            kind,
            master: "/m".into(),
            shadow: "/s".into(),
            bitmap: "/b".into(),
            name: "x".into(),
            chunk_size: C as u64,
            durability: Durability::Strict,
        })
        .unwrap();
    set.wait_copy().unwrap();
    // Acknowledged, not fsynced.
    set.master.write(&vec![0x22u8; n], 0).unwrap();
    // A slow copy (independent): the power goes before it ends.
    set.set_params(1000, 1).unwrap();
    set.start_copy(Direction::Shadow, false).unwrap();
    let mut pit = vec![0u8; n];
    set.read_shadow(&mut pit, 0).unwrap();
    assert_eq!(pit, vec![0x22u8; n]);
    let records = engine.records();
    engine.shutdown();
    drop((set, engine));
    let after = disks.after_cut(&mut || false);
    let disks = Disks::new(&after, &TripSwitch::new(i64::MAX));
    let engine = disks.engine();
    assert!(engine.restore_all(&records[..1]).is_empty());
    let set = engine.set(&records[0].name).unwrap();
    set.set_params(0, 100).unwrap();
    set.wait_copy().unwrap();
    let mut got = vec![0u8; n];
    set.read_shadow(&mut got, 0).unwrap();
    let bad = (0..8)
        .filter(|&c| got[c * C..(c + 1) * C] != pit[c * C..(c + 1) * C])
        .count();
    assert_eq!(
        bad,
        0,
        "{} shadow lost its point in time in {bad} of 8 chunks after a power loss",
        kind.word()
    );
}

#[test]
fn dependent_update_shadow_over_unsynced_master_writes() {
    update_shadow_over_unsynced_master_writes(SetKind::Dependent);
}

#[test]
fn independent_update_shadow_over_unsynced_master_writes() {
    update_shadow_over_unsynced_master_writes(SetKind::Independent);
}

/// Several threads write the master at once, so their copy-on-write flushes are shared (group
/// commit), while the power goes at a random instant. After recovery every strict shadow must
/// read exactly its point in time: no thread's master write may have reached the disk before
/// the old chunk it replaced and that chunk's bit were durable, whoever ran the shared flush.
fn concurrent_writers_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let chunks = rng.gen_range(24..=64usize);
    let n = chunks * C;
    let mut pit = vec![0u8; n];
    rng.fill(&mut pit[..]);
    let kinds = [SetKind::Dependent, SetKind::Independent];
    let n_sets = rng.gen_range(1..=2usize);

    // An enabled state in memory: sets on the master, independent copies finished.
    let (mem, engine) = memory_engine(&pit, n_sets);
    for (i, kind) in kinds.iter().take(n_sets).enumerate() {
        engine
            .enable(&set_spec(i, *kind, Durability::Strict))
            .unwrap()
            .wait_copy()
            .unwrap();
    }
    engine.shutdown();
    let records = engine.records();
    drop(engine);
    let images: Vec<(String, Vec<u8>)> =
        mem.iter().map(|(p, v)| (p.clone(), v.snapshot())).collect();

    // Three writers of first writes (random chunks, random lengths) until the power goes.
    let switch = TripSwitch::new(rng.gen_range(0..400i64));
    let disks = Disks::new(&images, &switch);
    let engine = Arc::new(disks.engine());
    assert!(
        engine.restore_all(&records).is_empty(),
        "seed {seed}: restore"
    );
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let mut wrng = StdRng::seed_from_u64(seed * 7 + t);
            std::thread::spawn(move || {
                let set = engine.set("set0").unwrap();
                for _ in 0..40 {
                    let (off, data) = random_write(&mut wrng, n);
                    let _ = set.master.write(&data, off as u64);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    engine.shutdown();
    drop(engine);

    // The power comes back with a random part of the unsynced writes.
    let mut keep_rng = StdRng::seed_from_u64(seed ^ 0xc0c0);
    let after = disks.after_cut(&mut || keep_rng.gen_bool(0.5));
    let disks = Disks::new(&after, &TripSwitch::new(i64::MAX));
    let engine = disks.engine();
    assert!(
        engine.restore_all(&records).is_empty(),
        "seed {seed}: restore after the cut"
    );
    for (i, kind) in kinds.iter().take(n_sets).enumerate() {
        let set = engine.set(&format!("set{i}")).unwrap();
        set.wait_copy().unwrap();
        let mut got = vec![0u8; n];
        set.read_shadow(&mut got, 0).unwrap();
        let bad: Vec<usize> = (0..chunks)
            .filter(|&c| got[c * C..(c + 1) * C] != pit[c * C..(c + 1) * C])
            .collect();
        assert!(
            bad.is_empty(),
            "seed {seed} (rerun with IIFS_POWERLOSS_SEED={seed}): set{i} ({}) lost its point in time in chunks {bad:?}",
            kind.word()
        );
    }
    engine.shutdown();
}

#[test]
fn concurrent_first_writes_share_flushes_and_survive_power_loss() {
    if let Some(seed) = env_u64("IIFS_POWERLOSS_SEED") {
        concurrent_writers_seed(seed);
        return;
    }
    let seeds = env_u64("IIFS_POWERLOSS_SEEDS").map_or(300, |s| s / 4);
    for seed in 0..seeds {
        concurrent_writers_seed(seed);
    }
}

/// fsync of the master under mixed durability: set0 strict, set1 (and sometimes set2) relaxed,
/// all on one master; every master write goes through set0's `master` and is followed by an
/// fsync of it, until the power goes, and nothing unsynced survives the cut. The rule checked:
/// the master's fsync first makes durable what every set on the master preserved and had not
/// made durable yet (the relaxed sets' chunks and bits), whichever set's file it came through;
/// so after the cut every shadow still reads its point in time, and the master reads as its
/// last acknowledged fsync left it (or with the write in flight, whose fsync may have finished).
fn master_fsync_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let chunks = rng.gen_range(16..=40usize);
    let n = chunks * C;
    let mut pit = vec![0u8; n];
    rng.fill(&mut pit[..]);
    let n_sets = rng.gen_range(2..=3usize);
    let strict_kind = if rng.gen_bool(0.5) {
        SetKind::Dependent
    } else {
        SetKind::Independent
    };
    let sets: Vec<(SetKind, Durability)> = (0..n_sets)
        .map(|i| match i {
            0 => (strict_kind, Durability::Strict),
            1 => (SetKind::Dependent, Durability::Relaxed),
            _ => (SetKind::Independent, Durability::Relaxed),
        })
        .collect();
    let (mem, engine) = memory_engine(&pit, n_sets);
    for (i, (kind, durability)) in sets.iter().enumerate() {
        engine
            .enable(&set_spec(i, *kind, *durability))
            .unwrap()
            .wait_copy()
            .unwrap();
    }
    engine.shutdown();
    let records = engine.records();
    drop(engine);
    let images: Vec<(String, Vec<u8>)> =
        mem.iter().map(|(p, v)| (p.clone(), v.snapshot())).collect();

    let switch = TripSwitch::new(rng.gen_range(0..300i64));
    let disks = Disks::new(&images, &switch);
    let engine = disks.engine();
    assert!(engine.restore_all(&records).is_empty(), "seed {seed}");
    let set0 = engine.set("set0").unwrap();
    let mut master = pit.clone();
    let mut acked = pit.clone();
    let mut log = vec![format!("sets {sets:?}")];
    while !switch.tripped() && log.len() < 60 {
        let (off, data) = random_write(&mut rng, n);
        set0.master.write(&data, off as u64).unwrap();
        master[off..off + data.len()].copy_from_slice(&data);
        set0.master.sync().unwrap();
        if !switch.tripped() {
            acked = master.clone();
        }
        log.push(format!("master write {off}+{} + fsync", data.len()));
    }
    drop(set0);
    engine.shutdown();
    drop(engine);

    let after = disks.after_cut(&mut || false);
    let disks = Disks::new(&after, &TripSwitch::new(i64::MAX));
    let engine = disks.engine();
    assert!(engine.restore_all(&records).is_empty(), "seed {seed}");
    let ctx = format!(
        "seed {seed} (rerun with IIFS_POWERLOSS_SEED={seed}):\n  {}",
        log.join("\n  ")
    );
    for (i, set_kind) in sets.iter().enumerate() {
        let set = engine.set(&format!("set{i}")).unwrap();
        set.wait_copy().unwrap();
        let mut got = vec![0u8; n];
        set.read_shadow(&mut got, 0).unwrap();
        let bad: Vec<usize> = (0..chunks)
            .filter(|&c| got[c * C..(c + 1) * C] != pit[c * C..(c + 1) * C])
            .collect();
        assert!(
            bad.is_empty(),
            "set{i} {set_kind:?} lost its point in time in chunks {bad:?}\n{ctx}"
        );
    }
    let mut got = vec![0u8; n];
    engine
        .set("set0")
        .unwrap()
        .master
        .read(&mut got, 0)
        .unwrap();
    assert!(
        got == acked || got == master,
        "the master is not as its last acknowledged fsync left it\n{ctx}"
    );
    engine.shutdown();
}

#[test]
fn master_fsync_makes_every_sets_preserved_chunks_durable_first() {
    if let Some(seed) = env_u64("IIFS_POWERLOSS_SEED") {
        master_fsync_seed(seed);
        return;
    }
    let seeds = env_u64("IIFS_POWERLOSS_SEEDS").map_or(500, |s| s / 4);
    for seed in 0..seeds {
        master_fsync_seed(seed);
    }
}

/// A sequential writer over a master of several 1 MiB regions (first writes all, so chunks ahead
/// of it are preserved with its writes: see `engine::ahead`), with one or two strict sets, while
/// the power goes at a random instant and a random part of the unsynced writes survives. Every
/// shadow must read its point in time: a chunk preserved ahead is copied, made durable, and only
/// then marked, as any first write's.
fn sequential_writer_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.gen_range(3..=6usize) * (1 << 20) - rng.gen_range(0..2usize) * C;
    let mut pit = vec![0u8; n];
    rng.fill(&mut pit[..]);
    let n_sets = rng.gen_range(1..=2usize);
    let kinds = [
        SetKind::Dependent,
        if rng.gen_bool(0.5) {
            SetKind::Dependent
        } else {
            SetKind::Independent
        },
    ];
    let (mem, engine) = memory_engine(&pit, n_sets);
    for (i, kind) in kinds.iter().take(n_sets).enumerate() {
        engine
            .enable(&set_spec(i, *kind, Durability::Strict))
            .unwrap()
            .wait_copy()
            .unwrap();
    }
    engine.shutdown();
    let records = engine.records();
    drop(engine);
    let images: Vec<(String, Vec<u8>)> =
        mem.iter().map(|(p, v)| (p.clone(), v.snapshot())).collect();

    let switch = TripSwitch::new(rng.gen_range(0..2000i64));
    let disks = Disks::new(&images, &switch);
    let engine = disks.engine();
    assert!(engine.restore_all(&records).is_empty(), "seed {seed}");
    let set0 = engine.set("set0").unwrap();
    let mut at = rng.gen_range(0..n / 2);
    let mut log = Vec::new();
    while !switch.tripped() && at < n && log.len() < 200 {
        let len = rng.gen_range(1..=(n - at).min(256 << 10));
        let mut data = vec![0u8; len];
        rng.fill(&mut data[..]);
        set0.master.write(&data, at as u64).unwrap();
        log.push(format!("master write {at}+{len}"));
        at += len;
        if rng.gen_bool(0.05) {
            at = rng.gen_range(0..n);
        }
    }
    drop(set0);
    engine.shutdown();
    drop(engine);

    let mut keep_rng = StdRng::seed_from_u64(seed ^ 0xa4ead);
    let after = disks.after_cut(&mut || keep_rng.gen_bool(0.5));
    let disks = Disks::new(&after, &TripSwitch::new(i64::MAX));
    let engine = disks.engine();
    assert!(engine.restore_all(&records).is_empty(), "seed {seed}");
    for (i, kind) in kinds.iter().take(n_sets).enumerate() {
        let set = engine.set(&format!("set{i}")).unwrap();
        set.wait_copy().unwrap();
        let mut got = vec![0u8; n];
        set.read_shadow(&mut got, 0).unwrap();
        let bad: Vec<usize> = (0..n.div_ceil(C))
            .filter(|&c| got[c * C..((c + 1) * C).min(n)] != pit[c * C..((c + 1) * C).min(n)])
            .collect();
        assert!(
            bad.is_empty(),
            "seed {seed} (rerun with IIFS_POWERLOSS_SEED={seed}): set{i} ({}) lost its point \
             in time in chunks {bad:?}\n  {}",
            kind.word(),
            log.join("\n  ")
        );
    }
    engine.shutdown();
}

#[test]
fn sequential_writers_preserved_ahead_survive_power_loss() {
    if let Some(seed) = env_u64("IIFS_POWERLOSS_SEED") {
        sequential_writer_seed(seed);
        return;
    }
    let seeds = env_u64("IIFS_POWERLOSS_SEEDS").map_or(200, |s| s / 10);
    for seed in 0..seeds {
        sequential_writer_seed(seed);
    }
}

/// Preserving ahead happens, and only for a sequential writer of a dependent set: the second of
/// two adjacent first writes preserves the rest of its region and the next three with it, in
/// the same round; a write elsewhere does not.
#[test]
fn a_sequential_writer_has_the_regions_ahead_preserved_with_its_write() {
    const MIB: usize = 1 << 20;
    let master = vec![7u8; 8 * MIB];
    for kind in [SetKind::Dependent, SetKind::Independent] {
        let (_mem, engine) = memory_engine(&master, 1);
        let set = engine
            .enable(&set_spec(0, kind, Durability::Strict))
            .unwrap();
        set.wait_copy().unwrap();
        let differ = || engine.set("set0").unwrap().status().chunks_differ;
        set.master.write(&[1u8; 8192], 0).unwrap();
        assert_eq!(
            differ(),
            2,
            "{kind:?}: the first write preserves its own chunks"
        );
        set.master.write(&[2u8; 8192], 8192).unwrap();
        let expected = match kind {
            // Region 0 and regions 1..=3: 4 MiB of 4 KiB chunks.
            SetKind::Dependent => (4 * MIB / C) as u64,
            _ => 4,
        };
        assert_eq!(differ(), expected, "{kind:?}: after the sequential write");
        set.master
            .write(&[3u8; 100], (6 * MIB + 5000) as u64)
            .unwrap();
        assert_eq!(differ(), expected + 1, "{kind:?}: a write elsewhere");
        let mut got = vec![0u8; 8 * MIB];
        set.read_shadow(&mut got, 0).unwrap();
        assert!(
            got == master,
            "{kind:?}: the shadow reads its point in time"
        );
        engine.shutdown();
    }
}
