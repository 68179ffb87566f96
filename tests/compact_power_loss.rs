//! Power-loss tests of compact dependent sets (shadows smaller than their master, chunks in
//! slots of the shadow or of a shared overflow volume, as the chunk map in the bitmap volume
//! says). The rule they check: with `durability=strict`, a compact set's point in time
//! survives a power loss at any instant, except the chunks it could not preserve for want of
//! space (those read as errors, or as their point in time), and the slot allocators come back
//! sound: no slot mapped twice, every slot a crash left taken without a chunk in it reclaimed.
//!
//! Per seed (as `tests/power_loss.rs`):
//! 1. In memory: a master (and in some seeds a second one), one or two strict compact sets
//!    (shadows of 1/8 to 1/2 of the master) sharing one overflow volume, some master writes
//!    (which fill slots and spill into the overflow), in some seeds a throttled `update master`
//!    left running at a clean shutdown. Their bytes become the durable layers of
//!    `PowerLossVolume`s sharing one `TripSwitch` with a random budget.
//! 2. Restore (`restore_overflows`, `restore_all`) and run a workload until the switch trips:
//!    master writes that preserve chunks (some into the overflow, some lost when everything is
//!    full), shadow writes + fsync, `update shadow` / `copy shadow`, `update master` + wait.
//! 3. The disks as the power leaves them, restored on a new engine. Before the restore, the
//!    bitmap volumes (read from copies) may hold a chunk marked as the shadow's own with no
//!    slot only where the set lost it to out of space; after it, every shadow reads exactly one
//!    of its expected points in time (the old or the new one for an operation cut short; a
//!    shadow write cut short may be half done, chunk by chunk), chunks read as errors only
//!    where they were lost to out of space (before the cut, or by the update of the master the
//!    restore resumed), `check_slots()` is Ok (no slot mapped twice, every slot a crash left
//!    taken without a chunk in it reclaimed), the space counters agree with the maps, and a
//!    few more master writes (which take slots from the rebuilt allocators) leave every
//!    shadow's point in time intact.
//!
//! Three tests, by what the disk keeps of the writes not synced at the cut:
//! `compact_point_in_time_survives_power_loss_at_any_instant` none of them;
//! `compact_point_in_time_survives_power_loss_with_reordered_writes` a random subset, in any
//! order (ignored: it fails, see its comment); `compact_point_in_time_survives_a_kill` all of
//! them (a SIGKILL of the daemon rather than a power loss, with some relaxed sets; the master
//! must also read as acknowledged).
//!
//! Environment: `IIFS_COMPACT_POWERLOSS_SEEDS` (default 1000 for each power-loss test, 600
//! for the kill test), `IIFS_COMPACT_POWERLOSS_SEED` (run only this seed, with the test's
//! name as the filter), `IIFS_COMPACT_SURVEY=1` (run every seed, then list the failures).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iifs::engine::chunkmap::Slot;
use iifs::engine::header::flags;
use iifs::engine::testing::{MapOpener, MemVolume, PowerLossVolume, TripSwitch};
use iifs::engine::tracking::{Map, Tracking};
use iifs::engine::volume::Volume;
use iifs::engine::{
    Direction, Durability, EnableSpec, Engine, Kind, OverflowRecord, Set, SetKind, SetRecord,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const C: usize = 4096;
const BITMAP_LEN: usize = 8 * 4096;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn opener(vols: &[(String, Arc<dyn Volume>)]) -> MapOpener {
    let o = MapOpener::new();
    for (p, v) in vols {
        o.insert(p, v.clone());
    }
    o
}

/// The fault volumes of one power period, by path.
struct Disks {
    vols: Vec<(String, Arc<PowerLossVolume>)>,
}

impl Disks {
    fn new(images: &[(String, Vec<u8>)], switch: &Arc<TripSwitch>) -> Disks {
        let vols = images
            .iter()
            .enumerate()
            .map(|(i, (p, bytes))| {
                (
                    p.clone(),
                    Arc::new(PowerLossVolume::new(
                        bytes.clone(),
                        switch.clone(),
                        i as u64 + 1,
                    )),
                )
            })
            .collect();
        Disks { vols }
    }

    fn engine(&self) -> Engine {
        let dyn_vols: Vec<(String, Arc<dyn Volume>)> = self
            .vols
            .iter()
            .map(|(p, v)| (p.clone(), v.clone() as Arc<dyn Volume>))
            .collect();
        Engine::new(Box::new(opener(&dyn_vols)))
    }

    fn after_cut(&self, keep: &mut dyn FnMut() -> bool) -> Vec<(String, Vec<u8>)> {
        self.vols
            .iter()
            .map(|(p, v)| (p.clone(), v.power_cut(&mut *keep)))
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    None,
    Random,
    All,
}

/// One point in time a shadow may read after the cut: its bytes, and the chunks that may read
/// as errors (not preserved for want of space).
#[derive(Clone)]
struct Pit {
    image: Vec<u8>,
    /// A shadow write cut short: each chunk may read as here instead (a write spanning chunks
    /// goes to several slots, which the power may leave half done).
    torn: Option<Vec<u8>>,
    lost: BTreeSet<usize>,
}

struct MSet {
    name: String,
    master: usize,
    chunks: usize,
    /// Candidates: one, or two while an operation on the shadow was cut short.
    expected: Vec<Pit>,
}

struct Outcome {
    tripped: bool,
    /// Slots a crash left taken without a chunk in them (reclaimed by the restore).
    leaks: u64,
    lost: bool,
    spilled: bool,
}

fn restore(engine: &Engine, ovfs: &[OverflowRecord], recs: &[SetRecord], what: &str) {
    if let Some((r, e)) = engine.restore_overflows(ovfs).into_iter().next() {
        panic!("{what}: restore of overflow {r:?}: {e}");
    }
    if let Some((r, e)) = engine.restore_all(recs).into_iter().next() {
        panic!("{what}: restore of {r:?}: {e}");
    }
}

/// Chunks of `set` the engine holds as lost now: marked as the shadow's own, with no slot.
fn lost_now(set: &Set) -> Vec<usize> {
    let compact = set.compact.as_ref().expect("compact");
    (0..set.chunks)
        .filter(|&c| set.tracking.test(Map::Shadow, c) && compact.map().get(c).is_none())
        .map(|c| c as usize)
        .collect()
}

fn spilled_now(set: &Set) -> bool {
    let compact = set.compact.as_ref().expect("compact");
    compact
        .map()
        .mapped()
        .iter()
        .any(|(_, s)| matches!(s, Slot::Overflow(_)))
}

fn random_write(rng: &mut StdRng, n: usize) -> (usize, Vec<u8>) {
    let mut off = rng.gen_range(0..n);
    if rng.gen_bool(0.4) {
        off -= off % C;
    }
    let len = rng.gen_range(1..=(n - off).min(3 * C));
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    (off, data)
}

/// Read every chunk of the shadow of `set`: Ok(bytes) or the error's kind.
fn read_chunks(set: &Set, n: usize) -> Vec<Result<Vec<u8>, Kind>> {
    (0..n.div_ceil(C))
        .map(|c| {
            let len = C.min(n - c * C);
            let mut b = vec![0u8; len];
            set.read_shadow(&mut b, (c * C) as u64)
                .map(|_| b)
                .map_err(|e| e.kind)
        })
        .collect()
}

/// Why `got` is not `pit`, or None if it is.
fn mismatch(got: &[Result<Vec<u8>, Kind>], pit: &Pit) -> Option<String> {
    let mut bad = Vec::new();
    for (c, r) in got.iter().enumerate() {
        let want = &pit.image[c * C..(c * C + C).min(pit.image.len())];
        match r {
            Ok(b) if b[..] == *want => {}
            Ok(b)
                if pit
                    .torn
                    .as_ref()
                    .is_some_and(|t| b[..] == t[c * C..(c * C + C).min(t.len())]) => {}
            Ok(_) => bad.push(format!("{c}: other bytes")),
            Err(Kind::Io) if pit.lost.contains(&c) => {}
            Err(k) => bad.push(format!("{c}: {k:?}")),
        }
    }
    (!bad.is_empty()).then(|| format!("chunks [{}] (may be lost: {:?})", bad.join(", "), pit.lost))
}

/// The state of a set's chunks, for a failure message: per chunk S (shadow bit), C (copy
/// bit), and its slot (s3: shadow slot 3, o2: overflow slot 2).
fn describe(set: &Set) -> String {
    let compact = set.compact.as_ref().unwrap();
    let mut out = format!(
        "{}: state {:?}, out of space {}, flags {:#x}, last error {:?}; chunks:",
        set.name,
        set.status().state,
        set.is_out_of_space(),
        set.flags(),
        set.last_error()
    );
    for c in 0..set.chunks {
        let shd = set.tracking.test(Map::Shadow, c);
        let cpy = set.tracking.test(Map::Copy, c);
        let slot = compact.map().get(c);
        if shd || cpy || slot.is_some() {
            out += &format!(
                " {c}:{}{}{}",
                if shd { "S" } else { "" },
                if cpy { "C" } else { "" },
                match slot {
                    Some(Slot::Shadow(n)) => format!("s{n}"),
                    Some(Slot::Overflow(n)) => format!("o{n}"),
                    None => "-".into(),
                }
            );
        }
    }
    out
}

/// Every set's shadow reads one of its candidates; returns the index of the one each matches.
fn check_shadows(
    engine: &Engine,
    sets: &[MSet],
    sizes: &[usize],
    ctx: &dyn Fn() -> String,
) -> Vec<usize> {
    let mut out = Vec::new();
    for s in sets {
        let set = engine.set(&s.name).unwrap();
        let got = read_chunks(&set, sizes[s.master]);
        let whys: Vec<Option<String>> = s.expected.iter().map(|p| mismatch(&got, p)).collect();
        match whys.iter().position(Option::is_none) {
            Some(i) => out.push(i),
            None => panic!(
                "{} shadow after the cut is none of its {} expected point(s) in time: {}\n{}\n{}",
                s.name,
                s.expected.len(),
                whys.into_iter()
                    .map(|w| w.unwrap())
                    .collect::<Vec<_>>()
                    .join("; "),
                describe(&set),
                ctx()
            ),
        }
    }
    out
}

/// The slot accounting agrees with the maps, and every set's counters with its map.
fn check_accounting(engine: &Engine, ctx: &dyn Fn() -> String) {
    if let Err(e) = engine.check_slots() {
        panic!("check_slots: {e}\n{}", ctx());
    }
    let mut by_overflow = 0u64;
    for set in engine.sets() {
        let compact = set.compact.as_ref().unwrap();
        let mapped = compact.map().mapped();
        let spilled = mapped
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Overflow(_)))
            .count() as u64;
        let sp = set.space().unwrap();
        assert_eq!(
            (sp.shadow_used, sp.overflow_used),
            (mapped.len() as u64 - spilled, spilled),
            "{}: space counters against its map\n{}",
            set.name,
            ctx()
        );
        by_overflow += spilled;
    }
    if let Ok(o) = engine.overflow("pool") {
        assert_eq!(o.status().used, by_overflow, "overflow used\n{}", ctx());
    }
}

fn run_seed(seed: u64, keep: Keep) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let kill = keep == Keep::All;
    // Masters: /m0, and /m1 in some seeds (the second set then images it: the overflow is
    // shared across masters).
    let n_masters = if rng.gen_bool(0.3) { 2 } else { 1 };
    let mut masters: Vec<Vec<u8>> = (0..n_masters)
        .map(|_| {
            let mut n = rng.gen_range(16..=48usize) * C;
            if rng.gen_bool(0.2) {
                n -= rng.gen_range(1..C);
            }
            let mut m = vec![0u8; n];
            rng.fill(&mut m[..]);
            m
        })
        .collect();
    let sizes: Vec<usize> = masters.iter().map(Vec::len).collect();
    let n_sets = if n_masters == 2 {
        2
    } else {
        rng.gen_range(1..=2)
    };
    let ovf_slots = rng.gen_range(2..=8usize);
    let mut log: Vec<String> = Vec::new();
    let mut mem: Vec<(String, Arc<MemVolume>)> = Vec::new();
    for (m, bytes) in masters.iter().enumerate() {
        mem.push((
            format!("/m{m}"),
            Arc::new(MemVolume::from_bytes(bytes.clone())),
        ));
    }
    mem.push(("/o".into(), Arc::new(MemVolume::new((ovf_slots + 1) * C))));
    let mut sets = Vec::new();
    let mut specs = Vec::new();
    for i in 0..n_sets {
        let m = i.min(n_masters - 1);
        let slots = (sizes[m] * rng.gen_range(1..=4usize) / 8 / C).max(1);
        mem.push((format!("/s{i}"), Arc::new(MemVolume::new(slots * C))));
        mem.push((format!("/b{i}"), Arc::new(MemVolume::new(BITMAP_LEN))));
        let durability = if kill && rng.gen_bool(0.5) {
            Durability::Relaxed
        } else {
            Durability::Strict
        };
        log.push(format!(
            "set{i} on /m{m} ({} bytes), {slots} slots, {durability:?}",
            sizes[m]
        ));
        specs.push(EnableSpec {
            kind: SetKind::Dependent,
            master: format!("/m{m}"),
            shadow: format!("/s{i}"),
            bitmap: format!("/b{i}"),
            name: format!("set{i}"),
            chunk_size: C as u64,
            durability,
        });
        sets.push(MSet {
            name: format!("set{i}"),
            master: m,
            chunks: sizes[m].div_ceil(C),
            expected: Vec::new(),
        });
    }
    log.insert(
        0,
        format!("overflow of {ovf_slots} slots, unsynced writes kept: {keep:?}"),
    );
    let ctx = |log: &Vec<String>| {
        format!(
            "seed {seed} (rerun with IIFS_COMPACT_POWERLOSS_SEED={seed} and the test's name):\n  {}",
            log.join("\n  ")
        )
    };

    // ------------------------------------------------------------ phase 1: in memory
    let dyn_mem: Vec<(String, Arc<dyn Volume>)> = mem
        .iter()
        .map(|(p, v)| (p.clone(), v.clone() as Arc<dyn Volume>))
        .collect();
    let engine = Engine::new(Box::new(opener(&dyn_mem)));
    engine
        .overflow_init("/o", Some("pool"), C as u64)
        .unwrap_or_else(|e| panic!("overflow init: {e}\n{}", ctx(&log)));
    for (i, spec) in specs.iter().enumerate() {
        engine
            .enable(spec)
            .unwrap_or_else(|e| panic!("enable: {e}\n{}", ctx(&log)));
        engine
            .attach(&spec.name, "pool")
            .unwrap_or_else(|e| panic!("attach: {e}\n{}", ctx(&log)));
        sets[i].expected = vec![Pit {
            image: masters[sets[i].master].clone(),
            torn: None,
            lost: BTreeSet::new(),
        }];
    }
    let mut outcome = Outcome {
        tripped: false,
        leaks: 0,
        lost: false,
        spilled: false,
    };
    for _ in 0..rng.gen_range(0..12) {
        let m = rng.gen_range(0..n_masters);
        let (off, data) = random_write(&mut rng, sizes[m]);
        let via = sets.iter().find(|s| s.master == m).unwrap();
        engine
            .set(&via.name)
            .unwrap()
            .master
            .write(&data, off as u64)
            .unwrap();
        masters[m][off..off + data.len()].copy_from_slice(&data);
        log.push(format!("phase 1: master write m{m} {off}+{}", data.len()));
    }
    for s in sets.iter_mut() {
        let set = engine.set(&s.name).unwrap();
        s.expected[0].lost.extend(lost_now(&set));
    }
    // Sometimes leave a throttled update of the master running at the shutdown.
    if rng.gen_bool(0.2) {
        let i = rng.gen_range(0..n_sets);
        let set = engine.set(&sets[i].name).unwrap();
        if !set.is_out_of_space() && !engine.sets().iter().any(|s| s.is_copying_to_master()) {
            set.set_params(1, 1).unwrap();
            set.start_copy(Direction::Master, false).unwrap();
            masters[sets[i].master] = sets[i].expected[0].image.clone();
            log.push(format!("phase 1: slow update master set{i}, then shutdown"));
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..4)));
        }
    }
    engine.shutdown();
    let mut records = engine.records();
    let ovf_records = engine.overflow_records();
    drop(engine);
    let images: Vec<(String, Vec<u8>)> =
        mem.iter().map(|(p, v)| (p.clone(), v.snapshot())).collect();
    drop(mem);

    // ------------------------------------------------------------ phase 2: workload until the cut
    let budget = rng.gen_range(0..400i64);
    let switch = TripSwitch::new(budget);
    let disks = Disks::new(&images, &switch);
    let engine = disks.engine();
    records.shuffle(&mut rng);
    restore(&engine, &ovf_records, &records, "before the cut");
    log.push(format!("phase 2: budget {budget}"));
    if rng.gen_bool(0.7) {
        for r in &records {
            engine.set(&r.name).unwrap().set_params(0, 100).unwrap();
        }
    }
    let mut masters_before = masters.clone();
    for _ in 0..rng.gen_range(10..80) {
        if switch.tripped() {
            break;
        }
        let i = rng.gen_range(0..n_sets);
        let name = sets[i].name.clone();
        let m = sets[i].master;
        let set = engine.set(&name).unwrap();
        masters_before = masters.clone();
        match rng.gen_range(0..100) {
            0..=11 => {
                let (off, data) = random_write(&mut rng, sizes[m]);
                let r = set.write_shadow(&data, off as u64);
                match r {
                    Ok(()) => {
                        set.sync_all()
                            .unwrap_or_else(|e| panic!("sync: {e}\n{}", ctx(&log)));
                        let mut new = sets[i].expected[0].clone();
                        new.image[off..off + data.len()].copy_from_slice(&data);
                        if switch.tripped() {
                            new.torn = Some(sets[i].expected[0].image.clone());
                            sets[i].expected = vec![new];
                            log.push(format!(
                                "shadow write {name} {off}+{} + fsync: power lost during it",
                                data.len()
                            ));
                        } else {
                            sets[i].expected = vec![new];
                            log.push(format!("shadow write {name} {off}+{} + fsync", data.len()));
                        }
                    }
                    // Refused whole, before anything changed: no slot for a chunk it needs.
                    Err(e) if e.kind == Kind::NoSpace => log.push(format!(
                        "shadow write {name} {off}+{}: no space",
                        data.len()
                    )),
                    Err(e) => panic!("shadow write {name}: {e}\n{}", ctx(&log)),
                }
            }
            12..=29 => {
                // Whole chunks: they fill the slots fast.
                let c = rng.gen_range(0..sets[i].chunks);
                let mut data = vec![0u8; C.min(sizes[m] - c * C)];
                rng.fill(&mut data[..]);
                set.master
                    .write(&data, (c * C) as u64)
                    .unwrap_or_else(|e| panic!("master write: {e}\n{}", ctx(&log)));
                masters[m][c * C..c * C + data.len()].copy_from_slice(&data);
                log.push(format!("master write m{m} chunk {c}"));
            }
            30..=59 => {
                let (off, data) = random_write(&mut rng, sizes[m]);
                set.master
                    .write(&data, off as u64)
                    .unwrap_or_else(|e| panic!("master write: {e}\n{}", ctx(&log)));
                masters[m][off..off + data.len()].copy_from_slice(&data);
                log.push(format!("master write m{m} {off}+{}", data.len()));
            }
            60..=77 => {
                let full = rng.gen_bool(0.25);
                let word = if full { "copy" } else { "update" };
                match set.start_copy(Direction::Shadow, full) {
                    Ok(()) => {
                        let new = Pit {
                            image: masters[m].clone(),
                            torn: None,
                            lost: BTreeSet::new(),
                        };
                        if switch.tripped() {
                            sets[i].expected.push(new);
                            log.push(format!("{word} shadow {name}: ok, power lost during it"));
                        } else {
                            sets[i].expected = vec![new];
                            log.push(format!("{word} shadow {name}: ok"));
                        }
                    }
                    Err(e) if e.kind == Kind::Busy => {
                        log.push(format!("{word} shadow {name}: busy"))
                    }
                    Err(e) => panic!("{word} shadow {name}: {e}\n{}", ctx(&log)),
                }
            }
            78..=89 => match set.start_copy(Direction::Master, false) {
                Ok(()) => {
                    assert_eq!(sets[i].expected.len(), 1, "{}", ctx(&log));
                    masters[m] = sets[i].expected[0].image.clone();
                    log.push(format!("update master {name}: ok"));
                    set.wait_copy()
                        .unwrap_or_else(|e| panic!("wait: {e}\n{}", ctx(&log)));
                    log.push(format!("wait {name}"));
                }
                Err(e) if e.kind == Kind::Busy => log.push(format!("update master {name}: busy")),
                Err(e) if e.kind == Kind::NoSpace && set.is_out_of_space() => {
                    log.push(format!("update master {name}: out of space"))
                }
                Err(e) => panic!("update master {name}: {e}\n{}", ctx(&log)),
            },
            _ => {
                set.wait_copy()
                    .unwrap_or_else(|e| panic!("wait: {e}\n{}", ctx(&log)));
                log.push(format!("wait {name}"));
            }
        }
        // Chunks lost to out of space by this operation (in any set) may read as errors.
        for s in sets.iter_mut() {
            let set = engine.set(&s.name).unwrap();
            let lost = lost_now(&set);
            outcome.lost |= !lost.is_empty();
            outcome.spilled |= spilled_now(&set);
            for p in s.expected.iter_mut() {
                p.lost.extend(lost.iter().copied());
            }
        }
    }
    outcome.tripped = switch.tripped();
    log.push(if outcome.tripped {
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
    // The bitmap volumes as the cut left them, read from copies: slots taken without a chunk
    // in them (a map entry whose chunk has no bit), which the restore must reclaim; chunks
    // marked as the shadow's own with no slot, which only out of space may explain; and which
    // masters have an update from a shadow to resume.
    let mut cut_lost: Vec<BTreeSet<usize>> = Vec::new();
    let mut resumed = vec![false; n_masters];
    for (i, s) in sets.iter().enumerate() {
        let p = format!("/b{i}");
        let bytes = &after.iter().find(|(q, _)| *q == p).unwrap().1;
        let t = Tracking::open(Arc::new(MemVolume::from_bytes(bytes.clone())))
            .unwrap_or_else(|e| panic!("bitmap {p} after the cut: {e}\n{}", ctx(&log)));
        let map = t.chunk_map().expect("compact");
        outcome.leaks += map
            .mapped()
            .iter()
            .filter(|(c, _)| !t.test(Map::Shadow, *c) && !t.test(Map::Copy, *c))
            .count() as u64;
        let lost: BTreeSet<usize> = (0..s.chunks)
            .filter(|&c| t.test(Map::Shadow, c as u64) && map.get(c as u64).is_none())
            .collect();
        let explained: BTreeSet<usize> = s.expected.iter().flat_map(|p| p.lost.clone()).collect();
        if let Some(c) = lost.difference(&explained).next() {
            panic!(
                "{} after the cut: chunk {c} is marked as the shadow's own but has no slot, and \
                 was never lost to out of space (chunks so: {lost:?}; out of space recorded: {})\n{}",
                s.name,
                t.header().flags & flags::OUT_OF_SPACE != 0,
                ctx(&log)
            );
        }
        resumed[s.master] |= t.header().flags & flags::TO_MASTER != 0;
        cut_lost.push(lost);
    }
    let disks = Disks::new(&after, &TripSwitch::new(i64::MAX));
    let engine = disks.engine();
    restore(&engine, &ovf_records, &records, &ctx(&log));
    let c = || ctx(&log);
    // (`check_slots` wants no I/O running: not while a resumed copy runs.)
    if !resumed.contains(&true) {
        check_accounting(&engine, &c);
    }
    let mut sets_lost: Vec<Vec<BTreeSet<usize>>> = sets
        .iter()
        .map(|s| s.expected.iter().map(|p| p.lost.clone()).collect())
        .collect();
    for (i, s) in sets.iter().enumerate() {
        let set = engine.set(&s.name).unwrap();
        set.set_params(0, 100).unwrap();
        set.wait_copy()
            .unwrap_or_else(|e| panic!("wait after the cut: {e}\n{}", c()));
        let st = set.status();
        // A resumed update of the master makes the other sets preserve chunks again (their
        // preservation before the cut may not have been durable): with no room, they lose them.
        let new: Vec<usize> = lost_now(&set)
            .into_iter()
            .filter(|c| !cut_lost[i].contains(c))
            .collect();
        if !new.is_empty() {
            assert!(
                resumed[s.master] && set.is_out_of_space(),
                "{}: chunks {new:?} lost after the restore without an update of the master \
                 resumed and out of space\n{}",
                s.name,
                c()
            );
        }
        for p in sets_lost[i].iter_mut() {
            p.extend(new.iter().copied());
        }
        assert!(
            (st.state == "idle" || st.state == "out of space") && st.last_error.is_none(),
            "{} after recovery: {st:?}\n{}",
            s.name,
            c()
        );
    }
    for (s, lost) in sets.iter_mut().zip(sets_lost) {
        for (p, l) in s.expected.iter_mut().zip(lost) {
            p.lost = l;
        }
    }
    check_accounting(&engine, &c);
    let matched = check_shadows(&engine, &sets, &sizes, &c);
    if keep == Keep::All {
        for m in 0..n_masters {
            let via = sets.iter().find(|s| s.master == m).unwrap();
            let mut got = vec![0u8; sizes[m]];
            engine
                .set(&via.name)
                .unwrap()
                .master
                .read(&mut got, 0)
                .unwrap();
            if got != masters[m] && got != masters_before[m] {
                let bad: Vec<usize> = (0..sizes[m].div_ceil(C))
                    .filter(|&c| {
                        let r = c * C..(c * C + C).min(sizes[m]);
                        got[r.clone()] != masters[m][r]
                    })
                    .collect();
                panic!(
                    "master m{m} after a crash differs from what was acknowledged in chunks {bad:?}\n{}",
                    c()
                );
            }
        }
    }

    // ------------------------------------------------------------ phase 4: the rebuilt allocators
    // More master writes take slots (shadow, then overflow) from the pools rebuilt from the
    // maps: a slot handed out while another chunk still uses it would show in the reads.
    let mut sets: Vec<MSet> = sets
        .into_iter()
        .zip(matched)
        .map(|(mut s, k)| {
            s.expected = vec![s.expected.swap_remove(k)];
            s
        })
        .collect();
    for _ in 0..rng.gen_range(4..16) {
        let m = rng.gen_range(0..n_masters);
        let chunks = sizes[m].div_ceil(C);
        let ch = rng.gen_range(0..chunks);
        let via = sets.iter().find(|s| s.master == m).unwrap();
        let set = engine.set(&via.name).unwrap();
        let data = vec![0x5a; C.min(sizes[m] - ch * C)];
        set.master.write(&data, (ch * C) as u64).unwrap();
        for s in sets.iter_mut() {
            let set = engine.set(&s.name).unwrap();
            s.expected[0].lost.extend(lost_now(&set));
        }
        check_accounting(&engine, &c);
        check_shadows(&engine, &sets, &sizes, &c);
    }
    engine.shutdown();
    outcome
}

fn run_many(keep: Keep, default_seeds: u64) {
    if let Some(seed) = env_u64("IIFS_COMPACT_POWERLOSS_SEED") {
        run_seed(seed, keep);
        return;
    }
    let seeds = env_u64("IIFS_COMPACT_POWERLOSS_SEEDS").unwrap_or(default_seeds);
    let t = Instant::now();
    let (mut tripped, mut lost, mut spilled, mut leaks) = (0, 0, 0, 0);
    // IIFS_COMPACT_SURVEY=1: run every seed, then list the failures (two lines each).
    if std::env::var("IIFS_COMPACT_SURVEY").is_ok_and(|v| v == "1") {
        std::panic::set_hook(Box::new(|_| {}));
        let mut failed = Vec::new();
        for seed in 0..seeds {
            if let Err(e) = std::panic::catch_unwind(|| run_seed(seed, keep)) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let mut lines = msg.lines();
                failed.push(format!(
                    "seed {seed}: {} | {}",
                    lines.next().unwrap_or(""),
                    lines.next().unwrap_or("")
                ));
            }
        }
        let _ = std::panic::take_hook();
        eprintln!(
            "{} of {seeds} seeds failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
        assert!(failed.is_empty());
        return;
    }
    for seed in 0..seeds {
        let o = run_seed(seed, keep);
        tripped += o.tripped as u64;
        lost += o.lost as u64;
        spilled += o.spilled as u64;
        leaks += o.leaks;
    }
    eprintln!(
        "{keep:?}: {seeds} seeds in {:?}: power lost during the workload in {tripped}, chunks \
         lost to out of space in {lost}, chunks spilled into the overflow in {spilled}, {leaks} \
         leaked slot(s) reclaimed",
        t.elapsed()
    );
    assert!(
        tripped * 2 > seeds,
        "the cut should fall inside the workload ({tripped} of {seeds})"
    );
    assert!(lost > 0 && spilled > 0, "lost {lost}, spilled {spilled}");
    if keep == Keep::All {
        assert!(leaks > 0, "no crash left a leaked slot to reclaim");
    }
}

/// The power goes: every write not synced is lost.
#[test]
fn compact_point_in_time_survives_power_loss_at_any_instant() {
    run_many(Keep::None, 1000);
}

/// The power goes and the disk had written a random part of the unsynced writes, in any order.
/// Fails: the chunk map and the bitmaps share the bitmap volume and are written without a
/// sync between them, so a disk that keeps one write and not the other leaves a chunk marked
/// in the shadow bitmap with no slot in the map (reads of it fail: "chunk N of the compact
/// shadow has no slot", and the set goes offline). See the report.
#[test]
fn compact_point_in_time_survives_power_loss_with_reordered_writes() {
    run_many(Keep::Random, 1000);
}

/// The daemon is killed: every write issued before the instant stays (relaxed sets too).
#[test]
fn compact_point_in_time_survives_a_kill() {
    run_many(Keep::All, 600);
}

/// The two write orders behind the failures of the reordered-writes test, deterministic: the
/// power goes while the last writes to the bitmap volume are not synced yet, and the disk
/// kept only the last of them.
/// - a master write preserves a chunk: the chunk's map entry is written, then its bit, then
///   the bitmap volume is synced; a disk that keeps the bit and not the map entry leaves the
///   chunk marked as the shadow's own with no slot;
/// - an update of the master gives the chunks' slots back: their bits are cleared, then their
///   map entries, then the volume is synced; a disk that keeps the cleared entries and not the
///   cleared bits leaves the same.
///
/// Either way the shadow's reads of the chunk fail ("chunk N of the compact shadow has no
/// slot") and the set goes offline. A sync of the bitmap volume between the two writes (map
/// entry durable before the bit is written; bit clear durable before the entry is cleared)
/// would keep the rule the chunk map's own comment states.
#[test]
fn a_bit_never_reaches_the_disk_without_its_map_entry() {
    let n = 16 * C;
    let mut pit = vec![0u8; n];
    StdRng::seed_from_u64(3).fill(&mut pit[..]);
    // An enabled compact set in memory; for the update of the master, chunks 2 and 3 preserved.
    let setup = |preserved: bool| {
        let mem: Vec<(String, Arc<MemVolume>)> = vec![
            ("/m".into(), Arc::new(MemVolume::from_bytes(pit.clone()))),
            ("/s".into(), Arc::new(MemVolume::new(4 * C))),
            ("/b".into(), Arc::new(MemVolume::new(BITMAP_LEN))),
        ];
        let dyn_mem: Vec<(String, Arc<dyn Volume>)> = mem
            .iter()
            .map(|(p, v)| (p.clone(), v.clone() as Arc<dyn Volume>))
            .collect();
        let engine = Engine::new(Box::new(opener(&dyn_mem)));
        let set = engine
            .enable(&EnableSpec {
                kind: SetKind::Dependent,
                master: "/m".into(),
                shadow: "/s".into(),
                bitmap: "/b".into(),
                name: "c".into(),
                chunk_size: C as u64,
                durability: Durability::Strict,
            })
            .unwrap();
        if preserved {
            set.write_shadow(&vec![7u8; 2 * C], 2 * C as u64).unwrap();
        }
        let records = engine.records();
        drop((set, engine));
        let images: Vec<(String, Vec<u8>)> =
            mem.iter().map(|(p, v)| (p.clone(), v.snapshot())).collect();
        (images, records)
    };
    let mut failures = Vec::new();
    for update_master in [false, true] {
        let (images, records) = setup(update_master);
        let mut expected = pit.clone();
        if update_master {
            expected[2 * C..4 * C].fill(7);
        }
        for budget in 0..40 {
            let switch = TripSwitch::new(budget);
            let disks = Disks::new(&images, &switch);
            let engine = disks.engine();
            restore(&engine, &[], &records, "before the cut");
            let set = engine.set("c").unwrap();
            if update_master {
                let _ = set.start_copy(Direction::Master, false);
                let _ = set.wait_copy();
            } else {
                let _ = set.master.write(&[0xee; C], 3 * C as u64);
            }
            drop(set);
            engine.shutdown();
            drop(engine);
            // The disk kept only the last unsynced write to the bitmap volume.
            let after: Vec<(String, Vec<u8>)> = disks
                .vols
                .iter()
                .map(|(p, v)| {
                    if p != "/b" {
                        return (p.clone(), v.power_cut(|| false));
                    }
                    let mut pending = 0;
                    v.power_cut(|| {
                        pending += 1;
                        false
                    });
                    let mut i = 0;
                    let img = v.power_cut(|| {
                        i += 1;
                        i == pending
                    });
                    (p.clone(), img)
                })
                .collect();
            let disks = Disks::new(&after, &TripSwitch::new(i64::MAX));
            let engine = disks.engine();
            restore(&engine, &[], &records, "after the cut");
            let set = engine.set("c").unwrap();
            let _ = set.wait_copy();
            let mut got = vec![0u8; n];
            let what = if update_master {
                "update master"
            } else {
                "master write"
            };
            match set.read_shadow(&mut got, 0) {
                Ok(()) if got == expected => {}
                Ok(()) => failures.push(format!("{what} cut after {budget} writes: other bytes")),
                Err(e) => failures.push(format!("{what} cut after {budget} writes: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
