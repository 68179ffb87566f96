//! Model-based tests of the imaging engine: what update, copy, abort, throttle and restart do
//! to the data a set serves.
//!
//! `random_sequences_match_the_model` drives random sequences of master writes, shadow writes,
//! update/copy in both directions (checking the refusals), wait, abort, throttle changes and
//! engine restarts over one or two in-memory masters with one to three sets each (independent
//! and dependent mixed, some sharing a master, chunk sizes mixed), and after every step compares
//! what reads through the engine return with a simple model:
//!
//! * a master write changes the master and no shadow; a shadow write changes only that shadow;
//! * `update/copy shadow` makes the shadow equal the master as it is at that instant;
//! * `update/copy master` makes the master equal the shadow at that instant (immediately);
//! * abort leaves the logical content as it was: the copy flags stay, so copy-on-write and
//!   fill-from-pair keep serving the new point in time, and an update finishes the copy;
//! * a restart (shutdown, new engine, restore) changes nothing and resumes a copy.
//!
//! Where the raw backing bytes are defined (the master with no update of the master pending,
//! a shadow after its copy finished) they are compared as well.
//!
//! Environment: `IIFS_MODEL_SEEDS` (number of seeds, default 60), `IIFS_MODEL_STEPS` (steps
//! per seed, default 60), `IIFS_MODEL_SEED` (run only this seed),
//! Sets on one master may have different chunk sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iifs::engine::testing::{MapOpener, MemVolume};
use iifs::engine::volume::Volume;
use iifs::engine::{Direction, Durability, EnableSpec, Engine, Kind, Set, SetKind};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const BITMAP_LEN: usize = 8192 + 2 * 4096;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ------------------------------------------------------------------------------------ model

/// Expected content of a volume as seen through the engine; bytes not `known` are not checked.
#[derive(Clone)]
struct Content {
    data: Vec<u8>,
    known: Vec<bool>,
}

impl Content {
    fn exact(data: Vec<u8>) -> Content {
        let n = data.len();
        Content {
            data,
            known: vec![true; n],
        }
    }

    fn write(&mut self, off: usize, bytes: &[u8]) {
        self.data[off..off + bytes.len()].copy_from_slice(bytes);
        self.known[off..off + bytes.len()].fill(true);
    }

    /// Panic with a useful message at the first known byte that differs.
    fn check(&self, actual: &[u8], off: usize, chunk: usize, what: &str, ctx: &dyn Fn() -> String) {
        for (i, &b) in actual.iter().enumerate() {
            let at = off + i;
            if self.known[at] && self.data[at] != b {
                let end = (at..off + actual.len())
                    .find(|&j| !self.known[j] || self.data[j] == actual[j - off])
                    .unwrap_or(off + actual.len());
                panic!(
                    "{what}: byte {at} (chunk {} of {chunk} bytes) differs: expected {:#04x}, read {:#04x}; \
                     {} differing bytes from there\n{}",
                    at / chunk,
                    self.data[at],
                    b,
                    end - at,
                    ctx()
                );
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CopyState {
    /// Started and not yet seen to end (it may have ended already).
    Running { dir: Direction, full: bool },
    /// Aborted; `full` is remembered: a later update in the same direction finishes the
    /// aborted full copy and reports itself as `copying`.
    Aborted { dir: Direction, full: bool },
}

impl CopyState {
    fn dir(self) -> Direction {
        match self {
            CopyState::Running { dir, .. } | CopyState::Aborted { dir, .. } => dir,
        }
    }
}

struct MSet {
    name: String,
    kind: SetKind,
    master: usize,
    shadow_vol: Arc<MemVolume>,
    chunk: usize,
    content: Content,
    copy: Option<CopyState>,
    /// The raw shadow bytes equal the logical content (a shadow-direction copy has completed
    /// and no instant dependent update happened since).
    raw_valid: bool,
}

struct MMaster {
    vol: Arc<MemVolume>,
    content: Content,
}

#[derive(PartialEq, Eq, Debug, Clone, Copy)]
enum Expect {
    Ok,
    Busy,
    Either,
}

struct World {
    seed: u64,
    rng: StdRng,
    engine: Option<Engine>,
    volumes: Vec<(String, Arc<dyn Volume>)>,
    masters: Vec<MMaster>,
    sets: Vec<MSet>,
    log: Vec<String>,
}

fn fresh_opener(volumes: &[(String, Arc<dyn Volume>)]) -> MapOpener {
    let o = MapOpener::new();
    for (p, v) in volumes {
        o.insert(p, v.clone());
    }
    o
}

impl World {
    fn ctx(&self) -> String {
        let tail: Vec<&String> = self
            .log
            .iter()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut s = format!(
            "seed {} (rerun with IIFS_MODEL_SEED={}), step {}; last operations:\n",
            self.seed,
            self.seed,
            self.log.len()
        );
        for m in &self.sets {
            s.push_str(&format!(
                "  [{} {} on m{}, chunk {}, model copy {:?}]\n",
                m.name,
                m.kind.word(),
                m.master,
                m.chunk,
                m.copy
            ));
        }
        for l in tail {
            s.push_str("  ");
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine")
    }

    fn set(&self, si: usize) -> Arc<Set> {
        let name = &self.sets[si].name;
        match self.engine().set(name) {
            Ok(s) => s,
            Err(e) => panic!("set {name} missing: {e}\n{}", self.ctx()),
        }
    }

    fn sets_on(&self, m: usize) -> Vec<usize> {
        (0..self.sets.len())
            .filter(|&i| self.sets[i].master == m)
            .collect()
    }

    fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let n_masters = rng.gen_range(1..=2usize);
        let n_sets = rng.gen_range(n_masters..=3usize);
        // Chunk size per set; a master's size is a multiple of no chunk size in some seeds.
        let mut masters = Vec::new();
        let mut volumes: Vec<(String, Arc<dyn Volume>)> = Vec::new();
        for m in 0..n_masters {
            let chunks = rng.gen_range(16..=64usize);
            let mut len = chunks * 4096;
            if rng.gen_bool(0.3) {
                len -= rng.gen_range(1..4096);
            }
            let mut data = vec![0u8; len];
            rng.fill(&mut data[..]);
            let vol = Arc::new(MemVolume::from_bytes(data.clone()));
            volumes.push((format!("/m{m}"), vol.clone()));
            masters.push(MMaster {
                vol,
                content: Content::exact(data),
            });
        }
        let mut w = World {
            seed,
            rng,
            engine: None,
            volumes,
            masters,
            sets: Vec::new(),
            log: Vec::new(),
        };
        w.engine = Some(Engine::new(Box::new(fresh_opener(&w.volumes))));
        let sizes = [4096usize, 4096, 4096, 8192, 16384];
        for i in 0..n_sets {
            // Every master gets at least one set.
            let m = if i < n_masters {
                i
            } else {
                w.rng.gen_range(0..n_masters)
            };
            let kind = if w.rng.gen_bool(0.5) {
                SetKind::Independent
            } else {
                SetKind::Dependent
            };
            let chunk = *sizes.choose(&mut w.rng).unwrap();
            w.enable(i, m, kind, chunk);
        }
        w
    }

    fn enable(&mut self, i: usize, m: usize, kind: SetKind, chunk: usize) {
        let mlen = self.masters[m].content.data.len();
        let extra = if self.rng.gen_bool(0.2) {
            self.rng.gen_range(1..10000)
        } else {
            0
        };
        // A shadow that held something before: enable must not expose it.
        let mut junk = vec![0u8; mlen + extra];
        if self.rng.gen_bool(0.5) {
            self.rng.fill(&mut junk[..]);
        }
        let shadow = Arc::new(MemVolume::from_bytes(junk));
        let bitmap = Arc::new(MemVolume::new(BITMAP_LEN));
        let (sp, bp) = (format!("/s{i}"), format!("/b{i}"));
        let name = format!("set{i}");
        let opener_vols = [
            (sp.clone(), shadow.clone() as Arc<dyn Volume>),
            (bp.clone(), bitmap.clone() as Arc<dyn Volume>),
        ];
        self.volumes.extend(opener_vols.iter().cloned());
        // The running engine's opener is fixed: restart it over the grown table.
        self.restart_quiet();
        let spec = EnableSpec {
            kind,
            master: format!("/m{m}"),
            shadow: sp,
            bitmap: bp,
            name: name.clone(),
            chunk_size: chunk as u64,
            durability: if self.rng.gen_bool(0.5) {
                Durability::Strict
            } else {
                Durability::Relaxed
            },
        };
        if let Err(e) = self.engine().enable(&spec) {
            panic!("enable {spec:?}: {e}\n{}", self.ctx());
        }
        self.log.push(format!(
            "enable {} {name} on m{m} chunk {chunk}",
            kind.word()
        ));
        let content = self.masters[m].content.clone();
        let ind = kind == SetKind::Independent;
        self.sets.push(MSet {
            name,
            kind,
            master: m,
            shadow_vol: shadow,
            chunk,
            content,
            copy: if ind {
                Some(CopyState::Running {
                    dir: Direction::Shadow,
                    full: true,
                })
            } else {
                None
            },
            raw_valid: false,
        });
    }

    fn restart_quiet(&mut self) {
        if let Some(old) = self.engine.take() {
            old.shutdown();
            let mut recs = old.records();
            drop(old);
            let engine = Engine::new(Box::new(fresh_opener(&self.volumes)));
            recs.shuffle(&mut self.rng);
            if let Some((r, e)) = engine.restore_all(&recs).into_iter().next() {
                panic!("restore {r:?}: {e}\n{}", self.ctx());
            }
            self.engine = Some(engine);
        } else {
            self.engine = Some(Engine::new(Box::new(fresh_opener(&self.volumes))));
        }
    }

    /// A copy in the model has ended: its target's raw bytes are now the logical content.
    fn finished(&mut self, si: usize) {
        if let Some(CopyState::Running { dir, .. }) = self.sets[si].copy {
            if dir == Direction::Shadow {
                self.sets[si].raw_valid = true;
            }
            self.sets[si].copy = None;
        }
    }

    /// Learn which running copies ended meanwhile, and check every set's status against the model.
    fn sync_status(&mut self) {
        for si in 0..self.sets.len() {
            let set = self.set(si);
            let mut st = set.status();
            // Tolerate the torn status snapshot of `status_is_one_consistent_snapshot`.
            for _ in 0..100 {
                let active = st.state == "copying" || st.state == "updating";
                if !(active && st.direction == "-") {
                    break;
                }
                st = set.status();
            }
            let model = self.sets[si].copy;
            let ok = match (model, st.state) {
                (None, "idle") => true,
                (Some(CopyState::Running { .. }), "idle") => {
                    self.finished(si);
                    true
                }
                (Some(CopyState::Running { dir, full }), s) => {
                    let word = if full { "copying" } else { "updating" };
                    s == word && st.direction == dir.word()
                }
                (Some(CopyState::Aborted { dir, .. }), "aborted") => st.direction == dir.word(),
                _ => false,
            };
            if !ok {
                panic!(
                    "set {} status {:?} / direction {} / last_error {:?} but the model says {:?}\n{}",
                    self.sets[si].name,
                    st.state,
                    st.direction,
                    st.last_error,
                    model,
                    self.ctx()
                );
            }
        }
    }

    // -------------------------------------------------------------------------- checks

    fn check_all(&mut self) {
        let ctx = self.ctx();
        let c = || ctx.clone();
        for m in 0..self.masters.len() {
            let sets = self.sets_on(m);
            let via = sets[self.rng.gen_range(0..sets.len())];
            let set = self.set(via);
            let model = &self.masters[m].content;
            let mut buf = vec![0u8; model.data.len()];
            if let Err(e) = set.master.read(&mut buf, 0) {
                panic!("read of master m{m}: {e}\n{ctx}");
            }
            let chunk = self.sets[via].chunk;
            model.check(
                &buf,
                0,
                chunk,
                &format!("master m{m} read through {}", self.sets[via].name),
                &c,
            );
            // Raw master bytes: defined while no set has an update of this master pending.
            let pending = sets.iter().any(|&s| {
                self.sets[s]
                    .copy
                    .is_some_and(|cs| cs.dir() == Direction::Master)
            });
            if !pending {
                let raw = self.masters[m].vol.snapshot();
                model.check(&raw, 0, chunk, &format!("raw bytes of master m{m}"), &c);
            }
        }
        for si in 0..self.sets.len() {
            let set = self.set(si);
            let s = &self.sets[si];
            let mut buf = vec![0u8; s.content.data.len()];
            if let Err(e) = set.read_shadow(&mut buf, 0) {
                panic!("read of shadow of {}: {e}\n{ctx}", s.name);
            }
            s.content.check(
                &buf,
                0,
                s.chunk,
                &format!("shadow of {} ({})", s.name, s.kind.word()),
                &c,
            );
            let raw_defined = s.raw_valid && s.copy.is_none_or(|cs| cs.dir() == Direction::Master);
            if raw_defined {
                let raw = s.shadow_vol.snapshot();
                s.content.check(
                    &raw[..buf.len()],
                    0,
                    s.chunk,
                    &format!("raw bytes of shadow of {}", s.name),
                    &c,
                );
            }
        }
        // One random unaligned range of one random volume, to exercise partial-chunk reads.
        let si = self.rng.gen_range(0..self.sets.len());
        let set = self.set(si);
        let len = self.sets[si].content.data.len();
        let off = self.rng.gen_range(0..len);
        let n = self
            .rng
            .gen_range(1..=(len - off).min(3 * self.sets[si].chunk));
        let mut buf = vec![0u8; n];
        if self.rng.gen_bool(0.5) {
            set.read_shadow(&mut buf, off as u64)
                .unwrap_or_else(|e| panic!("{e}\n{ctx}"));
            let mut whole = self.sets[si].content.clone();
            whole.data = whole.data[off..off + n].to_vec();
            whole.known = whole.known[off..off + n].to_vec();
            whole.check(
                &buf,
                0,
                self.sets[si].chunk,
                &format!("partial read of shadow of set{si} at {off}+{n}"),
                &c,
            );
        } else {
            set.master
                .read(&mut buf, off as u64)
                .unwrap_or_else(|e| panic!("{e}\n{ctx}"));
            let m = self.sets[si].master;
            let mut whole = self.masters[m].content.clone();
            whole.data = whole.data[off..off + n].to_vec();
            whole.known = whole.known[off..off + n].to_vec();
            whole.check(
                &buf,
                0,
                self.sets[si].chunk,
                &format!("partial read of master m{m} at {off}+{n}"),
                &c,
            );
        }
    }

    // -------------------------------------------------------------------------- steps

    fn random_range(&mut self, len: usize, chunk: usize) -> (usize, usize) {
        let aligned = self.rng.gen_bool(0.3);
        let mut off = self.rng.gen_range(0..len);
        if aligned {
            off -= off % chunk;
        }
        let max = (len - off).min(3 * chunk);
        let n = if aligned && self.rng.gen_bool(0.5) {
            chunk.min(len - off)
        } else {
            self.rng.gen_range(1..=max)
        };
        (off, n)
    }

    fn master_write(&mut self, m: usize) {
        let sets = self.sets_on(m);
        let via = sets[self.rng.gen_range(0..sets.len())];
        let len = self.masters[m].content.data.len();
        let (off, n) = self.random_range(len, self.sets[via].chunk);
        let mut data = vec![0u8; n];
        self.rng.fill(&mut data[..]);
        self.log.push(format!(
            "master write m{m} via {} at {off}+{n}",
            self.sets[via].name
        ));
        if let Err(e) = self.set(via).master.write(&data, off as u64) {
            panic!("master write: {e}\n{}", self.ctx());
        }
        self.masters[m].content.write(off, &data);
    }

    fn shadow_write(&mut self, si: usize) {
        let len = self.sets[si].content.data.len();
        let (off, n) = self.random_range(len, self.sets[si].chunk);
        let mut data = vec![0u8; n];
        self.rng.fill(&mut data[..]);
        self.log
            .push(format!("shadow write {} at {off}+{n}", self.sets[si].name));
        if let Err(e) = self.set(si).write_shadow(&data, off as u64) {
            panic!("shadow write: {e}\n{}", self.ctx());
        }
        self.sets[si].content.write(off, &data);
    }

    fn start_copy(&mut self, si: usize, dir: Direction, full: bool) {
        self.sync_status();
        let m = self.sets[si].master;
        let siblings: Vec<usize> = self.sets_on(m).into_iter().filter(|&t| t != si).collect();
        let mut expect = Expect::Ok;
        match self.sets[si].copy {
            Some(CopyState::Running { .. }) => expect = Expect::Either,
            Some(CopyState::Aborted { dir: d, .. }) if d != dir => expect = Expect::Busy,
            _ => {}
        }
        // While a sibling copies its shadow onto the master (running or aborted), the master's
        // bytes are not what it reads as: updates and copies of the other sets are refused.
        if expect != Expect::Busy {
            for &t in &siblings {
                match self.sets[t].copy {
                    Some(CopyState::Running {
                        dir: Direction::Master,
                        ..
                    }) => expect = Expect::Either,
                    Some(CopyState::Aborted {
                        dir: Direction::Master,
                        ..
                    }) => expect = Expect::Busy,
                    _ => {}
                }
            }
        }
        let word = format!("{} {}", if full { "copy" } else { "update" }, dir.word());
        self.log
            .push(format!("{word} {} (expect {expect:?})", self.sets[si].name));
        let r = self.set(si).start_copy(dir, full);
        match (&r, expect) {
            (Ok(()), Expect::Busy) => panic!(
                "{word} on {} was accepted; expected busy\n{}",
                self.sets[si].name,
                self.ctx()
            ),
            (Err(e), Expect::Ok) => panic!(
                "{word} on {} refused: {e}\n{}",
                self.sets[si].name,
                self.ctx()
            ),
            (Err(e), _) if e.kind != Kind::Busy => {
                panic!(
                    "{word} on {} refused with {:?}: {e}; expected Busy\n{}",
                    self.sets[si].name,
                    e.kind,
                    self.ctx()
                )
            }
            _ => {}
        }
        if let Err(e) = &r {
            self.log.push(format!("  -> refused: {}", e.message));
            return;
        }
        // Whatever was running and would have refused has finished.
        self.finished(si);
        for &t in &siblings {
            if matches!(
                self.sets[t].copy,
                Some(CopyState::Running {
                    dir: Direction::Master,
                    ..
                })
            ) {
                self.finished(t);
            }
        }
        let dep = self.sets[si].kind == SetKind::Dependent;
        match dir {
            Direction::Shadow => {
                self.sets[si].content = self.masters[m].content.clone();
                if dep && !full {
                    self.sets[si].copy = None;
                    self.sets[si].raw_valid = false;
                } else {
                    self.sets[si].copy = Some(CopyState::Running { dir, full });
                    self.sets[si].raw_valid = false;
                }
            }
            Direction::Master => {
                self.masters[m].content = self.sets[si].content.clone();
                self.sets[si].copy = Some(CopyState::Running {
                    dir,
                    full: full && !dep,
                });
            }
        }
    }

    fn wait(&mut self, si: usize) {
        self.log.push(format!("wait {}", self.sets[si].name));
        let set = self.set(si);
        let t = Instant::now();
        if let Err(e) = set.wait_copy() {
            panic!("wait: {e}\n{}", self.ctx());
        }
        let took = t.elapsed();
        if took > Duration::from_secs(20) {
            panic!("wait took {took:?}\n{}", self.ctx());
        }
        self.finished(si);
        let st = set.status();
        let expect = match self.sets[si].copy {
            Some(CopyState::Aborted { .. }) => "aborted",
            _ => "idle",
        };
        if st.state != expect {
            panic!(
                "after wait {} is {}; expected {expect}\n{}",
                self.sets[si].name,
                st.state,
                self.ctx()
            );
        }
    }

    fn abort(&mut self, si: usize) {
        self.log.push(format!("abort {}", self.sets[si].name));
        let set = self.set(si);
        set.abort_copy();
        let st = set.status();
        let model = self.sets[si].copy;
        match (model, st.state) {
            (None, "idle") => {}
            (Some(CopyState::Running { .. }), "idle") => self.finished(si),
            (Some(CopyState::Running { dir, full }), "aborted")
            | (Some(CopyState::Aborted { dir, full }), "aborted")
                if st.direction == dir.word() =>
            {
                self.sets[si].copy = Some(CopyState::Aborted { dir, full });
            }
            _ => panic!(
                "after abort {} is {} (direction {}); model {model:?}\n{}",
                self.sets[si].name,
                st.state,
                st.direction,
                self.ctx()
            ),
        }
    }

    fn params(&mut self, si: usize) {
        let slow = self.rng.gen_bool(0.6);
        let (d, u) = if slow { (1, 1) } else { (0, 100) };
        self.log
            .push(format!("params {} {d} {u}", self.sets[si].name));
        if let Err(e) = self.set(si).set_params(d, u) {
            panic!("params: {e}\n{}", self.ctx());
        }
    }

    fn restart(&mut self) {
        self.log.push("restart".into());
        // The same sets come back; their bitmap generations move on at every stop and start.
        let records = |engine: &Engine| {
            let mut r = engine.records();
            r.sort_by(|a, b| a.name.cmp(&b.name));
            r.iter_mut().for_each(|r| r.generation = 0);
            r
        };
        let before = records(self.engine());
        self.restart_quiet();
        assert_eq!(before, records(self.engine()), "{}", self.ctx());
    }

    fn step(&mut self) {
        let si = self.rng.gen_range(0..self.sets.len());
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=29 => {
                let m = self.rng.gen_range(0..self.masters.len());
                self.master_write(m)
            }
            30..=44 => self.shadow_write(si),
            45..=52 => self.start_copy(si, Direction::Shadow, false),
            53..=56 => self.start_copy(si, Direction::Shadow, true),
            57..=63 => self.start_copy(si, Direction::Master, false),
            64..=66 => self.start_copy(si, Direction::Master, true),
            67..=76 => self.wait(si),
            77..=84 => self.abort(si),
            85..=91 => self.params(si),
            _ => self.restart(),
        }
        self.sync_status();
        self.check_all();
    }
}

fn run_seed(seed: u64, steps: usize) {
    let mut w = World::new(seed);
    w.check_all();
    for _ in 0..steps {
        w.step();
    }
    // Finally let everything finish, restart once more, and compare again.
    for si in 0..w.sets.len() {
        if matches!(w.sets[si].copy, Some(CopyState::Aborted { .. })) {
            continue;
        }
        w.set(si).set_params(0, 100).unwrap();
        w.wait(si);
    }
    w.restart();
    w.sync_status();
    w.check_all();
}

#[test]
fn random_sequences_match_the_model() {
    let steps = env_u64("IIFS_MODEL_STEPS").unwrap_or(60) as usize;
    if let Some(seed) = env_u64("IIFS_MODEL_SEED") {
        run_seed(seed, steps);
        return;
    }
    let seeds = env_u64("IIFS_MODEL_SEEDS").unwrap_or(60);
    let t = Instant::now();
    for seed in 0..seeds {
        run_seed(seed, steps);
    }
    eprintln!("{seeds} seeds x {steps} steps in {:?}", t.elapsed());
}

// ------------------------------------------------------------------------------------ unit tests

const C: usize = 4096;

struct Rig {
    engine: Engine,
    vols: Vec<(String, Arc<dyn Volume>)>,
    mem: std::collections::HashMap<String, Arc<MemVolume>>,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            engine: Engine::new(Box::new(MapOpener::new())),
            vols: Vec::new(),
            mem: Default::default(),
        }
    }

    fn add(&mut self, path: &str, data: Vec<u8>) -> Arc<MemVolume> {
        let v = Arc::new(MemVolume::from_bytes(data));
        self.vols.push((path.to_string(), v.clone()));
        self.mem.insert(path.to_string(), v.clone());
        self.restart();
        v
    }

    fn restart(&mut self) {
        self.engine.shutdown();
        let recs = self.engine.records();
        let fresh = Engine::new(Box::new(fresh_opener(&self.vols)));
        let old = std::mem::replace(&mut self.engine, fresh);
        drop(old);
        assert!(self.engine.restore_all(&recs).is_empty());
    }

    fn enable(&self, kind: SetKind, m: &str, s: &str, b: &str, name: &str) -> Arc<Set> {
        self.enable_chunk(kind, m, s, b, name, C)
    }

    fn enable_chunk(
        &self,
        kind: SetKind,
        m: &str,
        s: &str,
        b: &str,
        name: &str,
        chunk: usize,
    ) -> Arc<Set> {
        self.engine
            .enable(&EnableSpec {
                kind,
                master: m.into(),
                shadow: s.into(),
                bitmap: b.into(),
                name: name.into(),
                chunk_size: chunk as u64,
                durability: Durability::Strict,
            })
            .unwrap()
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill(&mut v[..]);
    v
}

fn read_shadow(s: &Set) -> Vec<u8> {
    let mut b = vec![0u8; s.size as usize];
    s.read_shadow(&mut b, 0).unwrap();
    b
}

fn read_master(s: &Set) -> Vec<u8> {
    let mut b = vec![0u8; s.size as usize];
    s.master.read(&mut b, 0).unwrap();
    b
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[track_caller]
fn assert_same(what: &str, actual: &[u8], expected: &[u8]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    if let Some(i) = first_diff(actual, expected) {
        panic!("{what}: differs first at byte {i} (chunk {})", i / C);
    }
}

#[test]
fn dependent_copy_on_write_keeps_the_point_in_time() {
    let mut r = Rig::new();
    let m0 = pattern(32 * C, 1);
    r.add("/m", m0.clone());
    r.add("/s", vec![0xee; 32 * C]);
    r.add("/b", vec![0; BITMAP_LEN]);
    let set = r.enable(SetKind::Dependent, "/m", "/s", "/b", "d");
    assert_same("shadow at enable", &read_shadow(&set), &m0);
    let mut m = m0.clone();
    for (i, (off, len)) in [
        (100usize, 10usize),
        (C - 5, 10),
        (3 * C, C),
        (10 * C + 7, 5 * C),
        (32 * C - 1, 1),
    ]
    .iter()
    .enumerate()
    {
        let d = pattern(*len, 100 + i as u64);
        set.master.write(&d, *off as u64).unwrap();
        m[*off..off + len].copy_from_slice(&d);
        assert_same("shadow after master write", &read_shadow(&set), &m0);
        assert_same("master after master write", &read_master(&set), &m);
    }
    assert_same("raw master", &r.mem["/m"].snapshot(), &m);
    // Untouched chunks are not copied: chunk 20 of the raw shadow still holds the old junk.
    assert!(r.mem["/s"].snapshot()[20 * C..21 * C]
        .iter()
        .all(|&b| b == 0xee));
    drop(set);
    r.restart();
    let set = r.engine.set("d").unwrap();
    assert_same("shadow after restart", &read_shadow(&set), &m0);
    assert_same("master after restart", &read_master(&set), &m);
}

#[test]
fn independent_full_copy_is_the_point_in_time_despite_master_writes() {
    let mut r = Rig::new();
    let n = 64 * C;
    let m0 = pattern(n, 2);
    r.add("/m", m0.clone());
    r.add("/s", vec![0; n]);
    r.add("/b", vec![0; BITMAP_LEN]);
    let set = r.enable(SetKind::Independent, "/m", "/s", "/b", "i");
    // Write the master while the enable copy runs (however far it got).
    let mut m = m0.clone();
    for i in 0..64 {
        let d = pattern(C / 2, 200 + i);
        let off = ((i as usize * 37) % 64) * C + 1000;
        set.master.write(&d, off as u64).unwrap();
        m[off..off + d.len()].copy_from_slice(&d);
    }
    set.wait_copy().unwrap();
    assert_same("raw shadow after enable copy", &r.mem["/s"].snapshot(), &m0);
    assert_same("raw master", &r.mem["/m"].snapshot(), &m);

    // A slow full copy with master writes certainly during it.
    set.set_params(1, 1).unwrap();
    let pit = m.clone();
    set.start_copy(Direction::Shadow, true).unwrap();
    assert_eq!(set.status().state, "copying");
    for i in 0..64u64 {
        let d = pattern(C + 3, 300 + i);
        let off = (((i * 13) % 63) as usize) * C + 5;
        set.master.write(&d, off as u64).unwrap();
        m[off..off + d.len()].copy_from_slice(&d);
        if i % 16 == 0 {
            assert_same("shadow during copy", &read_shadow(&set), &pit);
        }
    }
    set.wait_copy().unwrap();
    assert_eq!(set.status().state, "idle");
    assert_same("raw shadow after copy", &r.mem["/s"].snapshot(), &pit);
    assert_same("master", &read_master(&set), &m);
}

#[test]
fn two_dependent_sets_on_one_master_keep_their_own_points_in_time() {
    let mut r = Rig::new();
    let m0 = pattern(24 * C, 3);
    r.add("/m", m0.clone());
    for p in ["/s1", "/s2", "/s3"] {
        r.add(p, vec![0; 24 * C]);
    }
    for p in ["/b1", "/b2", "/b3"] {
        r.add(p, vec![0; BITMAP_LEN]);
    }
    let a = r.enable(SetKind::Dependent, "/m", "/s1", "/b1", "a");
    let w1 = pattern(5 * C, 31);
    a.master.write(&w1, 2 * C as u64 + 9).unwrap();
    let mut m1 = m0.clone();
    m1[2 * C + 9..7 * C + 9].copy_from_slice(&w1);
    let b = r.enable(SetKind::Dependent, "/m", "/s2", "/b2", "b");
    let c = r.enable(SetKind::Independent, "/m", "/s3", "/b3", "c");
    let w2 = pattern(10 * C, 32);
    b.master.write(&w2, 0).unwrap();
    let mut m2 = m1.clone();
    m2[..10 * C].copy_from_slice(&w2);
    assert_same("a", &read_shadow(&a), &m0);
    assert_same("b", &read_shadow(&b), &m1);
    assert_same("c", &read_shadow(&c), &m1);
    assert_same("master via a", &read_master(&a), &m2);
    assert_same("master via c", &read_master(&c), &m2);
    // A shadow write to one changes only that one.
    a.write_shadow(&[7u8; 100], 3 * C as u64).unwrap();
    let mut a_exp = m0.clone();
    a_exp[3 * C..3 * C + 100].fill(7);
    assert_same("a after its write", &read_shadow(&a), &a_exp);
    assert_same("b after a's write", &read_shadow(&b), &m1);
    assert_same("master after a's write", &read_master(&b), &m2);
    c.wait_copy().unwrap();
    assert_same("raw shadow of c", &r.mem["/s3"].snapshot(), &m1);
    drop((a, b, c));
    r.restart();
    let (a, b) = (r.engine.set("a").unwrap(), r.engine.set("b").unwrap());
    assert_same("a after restart", &read_shadow(&a), &a_exp);
    assert_same("b after restart", &read_shadow(&b), &m1);
}

#[test]
fn update_master_copies_only_differing_chunks_and_copy_master_copies_all() {
    let mut r = Rig::new();
    let m0 = pattern(16 * C, 4);
    let mvol = r.add("/m", m0.clone());
    r.add("/s", vec![0; 16 * C]);
    r.add("/b", vec![0; BITMAP_LEN]);
    let set = r.enable(SetKind::Independent, "/m", "/s", "/b", "i");
    set.wait_copy().unwrap();
    // The shadow changes in chunk 3; the master changes in chunk 5 (through the engine) and
    // chunk 7 behind the engine's back (raw volume).
    set.write_shadow(&[0x33; 10], 3 * C as u64 + 1).unwrap();
    set.master.write(&[0x55; C], 5 * C as u64).unwrap();
    mvol.write_at(&[0x77; 20], 7 * C as u64 + 2).unwrap();
    let mut shadow = m0.clone();
    shadow[3 * C + 1..3 * C + 11].fill(0x33);
    set.start_copy(Direction::Master, false).unwrap();
    set.wait_copy().unwrap();
    let raw = mvol.snapshot();
    assert_same(
        "chunks 0..7 of master after update master",
        &raw[..7 * C],
        &shadow[..7 * C],
    );
    assert!(
        raw[7 * C + 2..7 * C + 22].iter().all(|&b| b == 0x77),
        "update master copied an unchanged chunk"
    );
    assert_same(
        "chunks 8.. of master after update master",
        &raw[8 * C..],
        &shadow[8 * C..],
    );
    assert_same("shadow after update master", &read_shadow(&set), &shadow);
    set.start_copy(Direction::Master, true).unwrap();
    set.wait_copy().unwrap();
    assert_same("master after copy master", &mvol.snapshot(), &shadow);
    assert_same("master read after copy master", &read_master(&set), &shadow);
}

#[test]
fn abort_then_update_completes_the_copy() {
    let mut r = Rig::new();
    let n = 48 * C;
    let m0 = pattern(n, 5);
    let mvol = r.add("/m", m0.clone());
    let svol = r.add("/s", vec![0; n]);
    r.add("/b", vec![0; BITMAP_LEN]);
    let set = r.enable(SetKind::Independent, "/m", "/s", "/b", "i");
    set.wait_copy().unwrap();
    let m1 = pattern(n, 6);
    set.master.write(&m1, 0).unwrap();
    set.set_params(5, 1).unwrap();
    set.start_copy(Direction::Shadow, false).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    set.abort_copy();
    let st = set.status();
    assert_eq!((st.state, st.direction), ("aborted", "shadow"));
    assert!(st.chunks_to_copy > 0, "{st:?}");
    assert_same("shadow after abort", &read_shadow(&set), &m1);
    // Aborted towards the shadow: the master may not be updated from it.
    let e = set.start_copy(Direction::Master, false).unwrap_err();
    assert_eq!(e.kind, Kind::Busy, "{e}");
    // Writes after the abort still protect the (new) point in time.
    set.master.write(&[1u8; 3 * C], 40 * C as u64).unwrap();
    let mut m2 = m1.clone();
    m2[40 * C..43 * C].fill(1);
    assert_same("shadow after abort and write", &read_shadow(&set), &m1);
    // The aborted state survives a restart.
    drop(set);
    r.restart();
    let set = r.engine.set("i").unwrap();
    assert_eq!(set.status().state, "aborted");
    set.set_params(0, 100).unwrap();
    set.start_copy(Direction::Shadow, false).unwrap();
    set.wait_copy().unwrap();
    assert_eq!(set.status().state, "idle");
    assert_same("raw shadow after update", &svol.snapshot(), &m2);
    assert_same("raw master", &mvol.snapshot(), &m2);
}

#[test]
fn wait_with_nothing_running_returns_at_once() {
    let mut r = Rig::new();
    r.add("/m", pattern(16 * C, 7));
    r.add("/s", vec![0; 16 * C]);
    r.add("/b", vec![0; BITMAP_LEN]);
    r.add("/s2", vec![0; 16 * C]);
    r.add("/b2", vec![0; BITMAP_LEN]);
    let d = r.enable(SetKind::Dependent, "/m", "/s", "/b", "d");
    let t = Instant::now();
    d.wait_copy().unwrap();
    d.abort_copy();
    d.wait_copy().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(d.status().state, "idle");
    let i = r.enable(SetKind::Independent, "/m", "/s2", "/b2", "i");
    i.wait_copy().unwrap();
    let t = Instant::now();
    i.wait_copy().unwrap();
    i.abort_copy();
    i.wait_copy().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(i.status().state, "idle");
}

#[test]
fn copy_refusals() {
    let mut r = Rig::new();
    let n = 64 * C;
    r.add("/m", pattern(n, 8));
    for p in ["/s1", "/s2", "/b1", "/b2"] {
        r.add(p, vec![0; if p.starts_with("/s") { n } else { BITMAP_LEN }]);
    }
    let a = r.enable(SetKind::Independent, "/m", "/s1", "/b1", "a");
    let b = r.enable(SetKind::Dependent, "/m", "/s2", "/b2", "b");
    a.wait_copy().unwrap();
    a.write_shadow(&vec![9u8; n], 0).unwrap();
    a.set_params(5, 1).unwrap();
    a.start_copy(Direction::Master, false).unwrap();
    // Busy while running, in either direction, and for the sibling towards the master.
    for (s, dir) in [
        (&a, Direction::Master),
        (&a, Direction::Shadow),
        (&b, Direction::Master),
    ] {
        let e = s.start_copy(dir, false).unwrap_err();
        assert_eq!(e.kind, Kind::Busy, "{} {dir:?}: {e}", s.name);
    }
    a.abort_copy();
    assert_eq!(a.status().state, "aborted");
    // Still refused after the abort: the sibling cannot update the master, a cannot update its shadow.
    assert_eq!(
        b.start_copy(Direction::Master, false).unwrap_err().kind,
        Kind::Busy
    );
    assert_eq!(
        b.start_copy(Direction::Master, true).unwrap_err().kind,
        Kind::Busy
    );
    assert_eq!(
        a.start_copy(Direction::Shadow, false).unwrap_err().kind,
        Kind::Busy
    );
    assert_eq!(
        a.start_copy(Direction::Shadow, true).unwrap_err().kind,
        Kind::Busy
    );
    // Refusals changed nothing; the master already reads as the shadow.
    assert_eq!(a.status().state, "aborted");
    assert_eq!(b.status().state, "idle");
    assert_same(
        "master after aborted update",
        &read_master(&a),
        &vec![9u8; n],
    );
    a.set_params(0, 100).unwrap();
    a.start_copy(Direction::Master, false).unwrap();
    a.wait_copy().unwrap();
    b.start_copy(Direction::Master, false).unwrap();
    b.wait_copy().unwrap();
}

#[test]
fn restart_resumes_an_interrupted_copy() {
    let mut r = Rig::new();
    let n = 64 * C;
    let m0 = pattern(n, 9);
    let mvol = r.add("/m", m0.clone());
    let svol = r.add("/s", vec![0; n]);
    r.add("/b", vec![0; BITMAP_LEN]);
    let set = r.enable(SetKind::Independent, "/m", "/s", "/b", "i");
    set.wait_copy().unwrap();
    let m1 = pattern(n, 10);
    set.master.write(&m1, 0).unwrap();
    set.set_params(5, 1).unwrap();
    set.start_copy(Direction::Shadow, true).unwrap();
    std::thread::sleep(Duration::from_millis(10));
    drop(set);
    r.restart();
    let set = r.engine.set("i").unwrap();
    let st = set.status();
    assert_eq!((st.state, st.direction), ("copying", "shadow"), "{st:?}");
    set.master.write(&m0, 0).unwrap();
    assert_same(
        "shadow after restart and master write",
        &read_shadow(&set),
        &m1,
    );
    set.set_params(0, 100).unwrap();
    set.wait_copy().unwrap();
    assert_same("raw shadow", &svol.snapshot(), &m1);
    assert_same("raw master", &mvol.snapshot(), &m0);
}

/// While a sibling set's update of the master is pending (running or aborted), the master
/// reads as that sibling's shadow for chunks not yet copied, so its bytes are not a point in
/// time: update/copy of another set on that master is refused (Busy) and changes nothing; once
/// the sibling's update has ended, the update works and takes the master as it reads.
fn sibling_update_shadow_while_other_set_updates_master(kind: SetKind, abort: bool) {
    let mut r = Rig::new();
    let n = 16 * C;
    let m0 = pattern(n, 11);
    r.add("/m", m0.clone());
    for p in ["/s1", "/s2", "/b1", "/b2"] {
        r.add(p, vec![0; if p.starts_with("/s") { n } else { BITMAP_LEN }]);
    }
    let a = r.enable(SetKind::Independent, "/m", "/s1", "/b1", "a");
    let b = r.enable(kind, "/m", "/s2", "/b2", "b");
    a.wait_copy().unwrap();
    b.wait_copy().unwrap();
    a.write_shadow(&vec![0xaa; n], 0).unwrap();
    a.set_params(1000, 1).unwrap();
    a.start_copy(Direction::Master, false).unwrap();
    if abort {
        a.abort_copy();
        assert_eq!(a.status().state, "aborted");
    }
    let master_now = read_master(&a);
    assert_same("master reads as a's shadow", &master_now, &vec![0xaa; n]);
    let b_before = read_shadow(&b);
    for (dir, full) in [
        (Direction::Shadow, false),
        (Direction::Shadow, true),
        (Direction::Master, false),
    ] {
        let e = b.start_copy(dir, full).unwrap_err();
        assert_eq!(e.kind, Kind::Busy, "{dir:?} full={full}: {e}");
        assert!(e.message.contains("set a"), "{e}");
    }
    assert_same("b unchanged by the refusals", &read_shadow(&b), &b_before);
    a.abort_copy();
    a.set_params(0, 100).unwrap();
    a.start_copy(Direction::Master, false).unwrap();
    a.wait_copy().unwrap();
    b.start_copy(Direction::Shadow, false).unwrap();
    b.wait_copy().unwrap();
    let what = format!("{} shadow of b after its update", kind.word());
    assert_same(&what, &read_shadow(&b), &master_now);
}

#[test]
fn dependent_update_shadow_while_sibling_update_master_is_aborted() {
    sibling_update_shadow_while_other_set_updates_master(SetKind::Dependent, true);
}

#[test]
fn independent_update_shadow_while_sibling_update_master_is_aborted() {
    sibling_update_shadow_while_other_set_updates_master(SetKind::Independent, true);
}

#[test]
fn dependent_update_shadow_while_sibling_updates_master() {
    sibling_update_shadow_while_other_set_updates_master(SetKind::Dependent, false);
}

#[test]
fn independent_update_shadow_while_sibling_updates_master() {
    sibling_update_shadow_while_other_set_updates_master(SetKind::Independent, false);
}

/// Two sets on one master with different chunk sizes: `a` (8 KiB chunks) has an update of the
/// master pending (aborted) for its chunk 3; `b` (dependent, 4 KiB chunks) has not preserved
/// its chunks 6 and 7 yet. A one-byte master write into b's chunk 7 makes `a` push its whole
/// chunk 3 (b's chunks 6 and 7) onto the master first; b must preserve both, not only chunk 7.
fn larger_sibling_chunk_push(abort: bool) {
    {
        let mut r = Rig::new();
        let n = 8 * C;
        let m0 = pattern(n, 12);
        r.add("/m", m0.clone());
        for p in ["/s1", "/s2", "/b1", "/b2"] {
            r.add(p, vec![0; if p.starts_with("/s") { n } else { BITMAP_LEN }]);
        }
        let a = r.enable_chunk(SetKind::Independent, "/m", "/s1", "/b1", "a", 2 * C);
        a.wait_copy().unwrap();
        let b = r.enable_chunk(SetKind::Dependent, "/m", "/s2", "/b2", "b", C);
        a.write_shadow(&vec![0xaa; n], 0).unwrap();
        a.set_params(1000, 1).unwrap();
        a.start_copy(Direction::Master, false).unwrap();
        if abort {
            a.abort_copy();
            assert_eq!(a.status().state, "aborted");
        }
        // At most one chunk (a's chunk 0) was copied before the pause or the abort.
        assert!(a.status().chunks_to_copy >= 3);
        a.master.write(&[0x01], 7 * C as u64 + 10).unwrap();
        assert_same(
            &format!("b's shadow (a's update of the master aborted: {abort})"),
            &read_shadow(&b),
            &m0,
        );
        drop((a, b));
    }
}

#[test]
fn master_write_that_pushes_a_larger_sibling_chunk_preserves_what_it_overwrites() {
    larger_sibling_chunk_push(true);
}

#[test]
fn master_write_that_pushes_a_larger_sibling_chunk_preserves_what_it_overwrites_while_copying() {
    larger_sibling_chunk_push(false);
}

/// `status()` is one snapshot: a copy that is copying or updating has a direction.
#[test]
fn status_is_one_consistent_snapshot() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut r = Rig::new();
    let n = 16 * C;
    r.add("/m", pattern(n, 13));
    r.add("/s", vec![0; n]);
    r.add("/b", vec![0; BITMAP_LEN]);
    let set = r.enable(SetKind::Independent, "/m", "/s", "/b", "i");
    set.wait_copy().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let set = set.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let st = set.status();
                let active = st.state == "copying" || st.state == "updating";
                if active == (st.direction == "-") {
                    return Some(format!(
                        "state {} with direction {}",
                        st.state, st.direction
                    ));
                }
            }
            None
        })
    };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) && !poller.is_finished() {
        set.master.write(&[1u8; 3 * C], 5 * C as u64).unwrap();
        set.start_copy(Direction::Shadow, false).unwrap();
        set.wait_copy().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(torn) = poller.join().unwrap() {
        panic!("status() returned a torn snapshot: {torn}");
    }
}

/// Writers on several threads (master and a shadow, interleaved 512-byte blocks so they share
/// chunks) race the copiers, while the main thread pauses them now and then to take a new point
/// in time (or update the master) and to compare everything with the model.
#[test]
fn concurrent_writers_race_copies() {
    use std::sync::{Mutex, RwLock};
    const BLOCK: usize = 512;
    let mut r = Rig::new();
    let n = 48 * C;
    let m0 = pattern(n, 14);
    r.add("/m", m0.clone());
    for p in ["/s1", "/s2", "/b1", "/b2"] {
        r.add(p, vec![0; if p.starts_with("/s") { n } else { BITMAP_LEN }]);
    }
    let a = r.enable(SetKind::Independent, "/m", "/s1", "/b1", "a");
    let b = r.enable(SetKind::Dependent, "/m", "/s2", "/b2", "b");
    // Models: master, a's shadow, b's shadow.
    let model = Arc::new(Mutex::new([m0.clone(), m0.clone(), m0.clone()]));
    let pause = Arc::new(RwLock::new(()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    // Threads 0..3 write the master, thread 3 a's shadow, thread 4 b's shadow; each owns the
    // blocks with index % 5 == its number.
    for t in 0..5usize {
        let (a, b) = (a.clone(), b.clone());
        let (model, pause, stop) = (model.clone(), pause.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(1000 + t as u64);
            let mut writes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let blk = rng.gen_range(0..n / BLOCK / 5) * 5 + t;
                let off = blk * BLOCK;
                let mut data = vec![0u8; BLOCK];
                rng.fill(&mut data[..]);
                let _g = pause.read().unwrap();
                let (res, which) = match t {
                    0..=2 => (a.master.write(&data, off as u64), 0),
                    3 => (a.write_shadow(&data, off as u64), 1),
                    _ => (b.write_shadow(&data, off as u64), 2),
                };
                res.unwrap();
                model.lock().unwrap()[which][off..off + BLOCK].copy_from_slice(&data);
                writes += 1;
            }
            writes
        }));
    }
    let mut rng = StdRng::seed_from_u64(15);
    let t0 = Instant::now();
    let mut rounds = 0;
    // 1.5 s, and at least 51 rounds however slow the build (a debug build, a loaded machine).
    let enough = |rounds| t0.elapsed() >= Duration::from_millis(1500) && rounds > 50;
    while !enough(rounds) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
        let _g = pause.write().unwrap();
        let mut m = model.lock().unwrap();
        // Compare while the copiers may still run.
        let what = ["master", "shadow of a", "shadow of b"];
        let got = [read_master(&a), read_shadow(&a), read_shadow(&b)];
        for i in 0..3 {
            assert_same(
                &format!("{} after {rounds} rounds", what[i]),
                &got[i],
                &m[i],
            );
        }
        let (set, si) = if rng.gen_bool(0.5) { (&a, 1) } else { (&b, 2) };
        let other = if si == 1 { &b } else { &a };
        match rng.gen_range(0..10) {
            0..=5 => {
                // Not while the other set updates the master (see the sibling tests above).
                other.wait_copy().unwrap();
                set.set_params(rng.gen_range(0..2), 1).unwrap();
                if set.start_copy(Direction::Shadow, rng.gen_bool(0.3)).is_ok() {
                    m[si] = m[0].clone();
                }
            }
            6..=7 => {
                set.set_params(rng.gen_range(0..2), 1).unwrap();
                if set.start_copy(Direction::Master, false).is_ok() {
                    m[0] = m[si].clone();
                }
            }
            _ => set.wait_copy().unwrap(),
        }
        rounds += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    for s in [&a, &b] {
        s.set_params(0, 100).unwrap();
        s.wait_copy().unwrap();
    }
    let m = model.lock().unwrap();
    assert_same("master at the end", &read_master(&a), &m[0]);
    assert_same("shadow of a at the end", &read_shadow(&a), &m[1]);
    assert_same("shadow of b at the end", &read_shadow(&b), &m[2]);
    assert_same(
        "raw shadow of a at the end",
        &r.mem["/s1"].snapshot(),
        &m[1],
    );
    assert_same("raw master at the end", &r.mem["/m"].snapshot(), &m[0]);
    eprintln!("{rounds} rounds, {writes} concurrent writes");
    assert!(
        rounds > 50 && writes > 1000,
        "rounds {rounds}, writes {writes}"
    );
}
