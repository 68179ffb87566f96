//! Shared pieces of the power-loss tests: the fault volumes of one power period (`Disks`),
//! what the disk keeps of the writes not synced at the cut (`Keep`), memory volumes for the
//! state before the power period, and random writes.

#![allow(dead_code)]

use std::sync::Arc;

use iifs::engine::testing::{MapOpener, MemVolume, PowerLossVolume, TripSwitch};
use iifs::engine::volume::Volume;
use iifs::engine::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const C: usize = 4096;

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

pub fn opener(vols: &[(String, Arc<dyn Volume>)]) -> MapOpener {
    let o = MapOpener::new();
    for (p, v) in vols {
        o.insert(p, v.clone());
    }
    o
}

/// Memory volumes by path (the state before a power period), and an engine over them.
pub struct MemDisks {
    pub vols: Vec<(String, Arc<MemVolume>)>,
}

impl MemDisks {
    /// `(path, content)`: a volume holding `content`.
    pub fn new(images: Vec<(String, Vec<u8>)>) -> MemDisks {
        MemDisks {
            vols: images
                .into_iter()
                .map(|(p, bytes)| (p, Arc::new(MemVolume::from_bytes(bytes))))
                .collect(),
        }
    }

    pub fn engine(&self) -> Engine {
        let dyn_vols: Vec<(String, Arc<dyn Volume>)> = self
            .vols
            .iter()
            .map(|(p, v)| (p.clone(), v.clone() as Arc<dyn Volume>))
            .collect();
        Engine::new(Box::new(opener(&dyn_vols)))
    }

    pub fn images(&self) -> Vec<(String, Vec<u8>)> {
        self.vols
            .iter()
            .map(|(p, v)| (p.clone(), v.snapshot()))
            .collect()
    }
}

/// The fault volumes of one power period, by path.
pub struct Disks {
    pub vols: Vec<(String, Arc<PowerLossVolume>)>,
}

impl Disks {
    pub fn new(images: &[(String, Vec<u8>)], switch: &Arc<TripSwitch>) -> Disks {
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

    pub fn engine(&self) -> Engine {
        let dyn_vols: Vec<(String, Arc<dyn Volume>)> = self
            .vols
            .iter()
            .map(|(p, v)| (p.clone(), v.clone() as Arc<dyn Volume>))
            .collect();
        Engine::new(Box::new(opener(&dyn_vols)))
    }

    /// An engine over the volumes at `paths` only (one host of several sharing some).
    pub fn engine_with(&self, paths: &[&str]) -> Engine {
        let dyn_vols: Vec<(String, Arc<dyn Volume>)> = self
            .vols
            .iter()
            .filter(|(p, _)| paths.contains(&p.as_str()))
            .map(|(p, v)| (p.clone(), v.clone() as Arc<dyn Volume>))
            .collect();
        Engine::new(Box::new(opener(&dyn_vols)))
    }

    /// The disks after the power comes back.
    pub fn after_cut(&self, keep: &mut dyn FnMut() -> bool) -> Vec<(String, Vec<u8>)> {
        self.vols
            .iter()
            .map(|(p, v)| (p.clone(), v.power_cut(&mut *keep)))
            .collect()
    }

    /// The disks after the power comes back, keeping what `keep` says of the unsynced writes.
    pub fn after(&self, keep: Keep, seed: u64) -> Vec<(String, Vec<u8>)> {
        let mut f = keep.chooser(seed);
        self.after_cut(&mut *f)
    }
}

/// What survives of the writes not synced at the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Nothing (the power goes, the disk had written nothing of them).
    None,
    /// Everything (a crash of the process rather than of the machine).
    All,
    /// Any subset, each write kept or not at random (the disk wrote some, in any order).
    Random,
}

impl Keep {
    /// By seed: mostly `Random`, the two extremes now and then.
    pub fn of_seed(seed: u64) -> Keep {
        match seed % 6 {
            0 => Keep::None,
            1 => Keep::All,
            _ => Keep::Random,
        }
    }

    pub fn chooser(self, seed: u64) -> Box<dyn FnMut() -> bool> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_c0de);
        match self {
            Keep::None => Box::new(|| false),
            Keep::All => Box::new(|| true),
            Keep::Random => Box::new(move || rng.gen_bool(0.5)),
        }
    }
}

/// A random write within `n` bytes: up to 3 chunks, sometimes chunk aligned.
pub fn random_write(rng: &mut StdRng, n: usize) -> (usize, Vec<u8>) {
    let mut off = rng.gen_range(0..n);
    if rng.gen_bool(0.3) {
        off -= off % C;
    }
    let len = rng.gen_range(1..=(n - off).min(3 * C));
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    (off, data)
}

/// The chunks where `a` and `b` differ.
pub fn chunks_differing(a: &[u8], b: &[u8]) -> Vec<usize> {
    let n = a.len().max(b.len());
    (0..n.div_ceil(C))
        .filter(|&c| {
            let (s, e) = (c * C, ((c + 1) * C).min(n));
            a.get(s..e.min(a.len())) != b.get(s..e.min(b.len()))
        })
        .collect()
}
