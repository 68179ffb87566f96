//! A fault-injecting volume for power-loss tests: writes land in a volatile layer until `sync`
//! makes them durable; `power_cut` throws the volatile layer away (all of it, or a random subset,
//! since a disk may persist unsynced writes in any order), and a shared trip switch freezes every
//! volume at a chosen instant (counted in write and sync calls across all volumes).
//!
//! Its `sync` skips a clean volume exactly as `FileVolume`'s does (they share `CleanSkip`): a
//! skipped sync flushes nothing (and, like a real one, reaches no disk: it is not counted by
//! the trip switch), so a skip of a volume with writes pending leaves them volatile and a power
//! cut may lose them.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::super::volume::{poisoned, CleanSkip, Volume, VolumeId};
use super::mem::{copy_in, copy_out};

/// Counts down I/O calls shared by a group of volumes; at zero the "power" is gone and every
/// later write or sync is silently dropped (the process does not know yet).
pub struct TripSwitch {
    remaining: AtomicI64,
}

impl TripSwitch {
    pub fn new(calls_until_cut: i64) -> Arc<TripSwitch> {
        Arc::new(TripSwitch {
            remaining: AtomicI64::new(calls_until_cut),
        })
    }

    /// True while power is on; consumes one call.
    fn tick(&self) -> bool {
        self.remaining.fetch_sub(1, Ordering::SeqCst) > 0
    }

    pub fn tripped(&self) -> bool {
        self.remaining.load(Ordering::SeqCst) <= 0
    }
}

struct Layers {
    durable: Vec<u8>,
    volatile: Vec<(u64, Vec<u8>)>,
}

pub struct PowerLossVolume {
    layers: Mutex<Layers>,
    switch: Arc<TripSwitch>,
    id: VolumeId,
    /// The clean-file skip `FileVolume::sync` runs.
    clean_skip: CleanSkip,
}

impl PowerLossVolume {
    pub fn new(durable: Vec<u8>, switch: Arc<TripSwitch>, id: u64) -> PowerLossVolume {
        PowerLossVolume {
            layers: Mutex::new(Layers {
                durable,
                volatile: Vec::new(),
            }),
            switch,
            id: VolumeId(u64::MAX - 2, id),
            clean_skip: CleanSkip::new(),
        }
    }

    /// What the disk holds after the power comes back: the durable layer plus the volatile
    /// writes for which `keep` says true, in their original order.
    pub fn power_cut(&self, mut keep: impl FnMut() -> bool) -> Vec<u8> {
        let layers = match self.layers.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let mut disk = layers.durable.clone();
        for (off, data) in &layers.volatile {
            if keep() {
                let _ = copy_in(&mut disk, data, *off);
            }
        }
        disk
    }

    /// The content the running process sees (durable plus volatile).
    pub fn current(&self) -> Vec<u8> {
        self.power_cut(|| true)
    }
}

impl Volume for PowerLossVolume {
    fn len(&self) -> u64 {
        match self.layers.lock() {
            Ok(l) => l.durable.len() as u64,
            Err(p) => p.into_inner().durable.len() as u64,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let layers = self.layers.lock().map_err(|_| poisoned())?;
        copy_out(&layers.durable, buf, offset);
        // Later writes win: overlay the volatile writes in order.
        let end = offset + buf.len() as u64;
        for (off, data) in &layers.volatile {
            let wend = off + data.len() as u64;
            if *off < end && wend > offset {
                let from = (*off).max(offset);
                let to = wend.min(end);
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        {
            let mut layers = self.layers.lock().map_err(|_| poisoned())?;
            if offset + buf.len() as u64 > layers.durable.len() as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "write past the end",
                ));
            }
            if self.switch.tick() {
                layers.volatile.push((offset, buf.to_vec()));
            }
        }
        // After the write completed, as `FileVolume::write_at` does.
        self.note_written();
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.clean_skip.sync_with(|| {
            let mut layers = self.layers.lock().map_err(|_| poisoned())?;
            if self.switch.tick() {
                let pending = std::mem::take(&mut layers.volatile);
                for (off, data) in pending {
                    copy_in(&mut layers.durable, &data, off)?;
                }
            }
            Ok(())
        })
    }

    fn note_written(&self) {
        self.clean_skip.note_written();
    }

    fn id(&self) -> VolumeId {
        self.id
    }
}
