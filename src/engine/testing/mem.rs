//! A volume in memory, for engine tests and the model test.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use super::super::error::VolumeFault;
use super::super::volume::{poisoned, Volume, VolumeId};

static NEXT_MEM_ID: AtomicU64 = AtomicU64::new(1);

/// A volume in memory, for engine tests and the model test.
pub struct MemVolume {
    data: RwLock<Vec<u8>>,
    id: VolumeId,
}

impl MemVolume {
    pub fn new(len: usize) -> MemVolume {
        MemVolume::from_bytes(vec![0; len])
    }

    pub fn from_bytes(data: Vec<u8>) -> MemVolume {
        MemVolume {
            data: RwLock::new(data),
            id: VolumeId(u64::MAX - 1, NEXT_MEM_ID.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// A copy of the whole content, bypassing any set (like reading the backing file).
    pub fn snapshot(&self) -> Vec<u8> {
        match self.data.read() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl Volume for MemVolume {
    fn len(&self) -> u64 {
        self.snapshot_len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().map_err(|_| poisoned())?;
        copy_out(&data, buf, offset);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().map_err(|_| poisoned())?;
        copy_in(&mut data, buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn id(&self) -> VolumeId {
        self.id
    }
}

impl MemVolume {
    fn snapshot_len(&self) -> u64 {
        match self.data.read() {
            Ok(d) => d.len() as u64,
            Err(p) => p.into_inner().len() as u64,
        }
    }
}

/// Copy bytes of `data` at `offset` into `buf`, zero past the end.
pub(super) fn copy_out(data: &[u8], buf: &mut [u8], offset: u64) {
    let start = (offset as usize).min(data.len());
    let n = buf.len().min(data.len() - start);
    buf[..n].copy_from_slice(&data[start..start + n]);
    buf[n..].fill(0);
}

/// Copy `buf` into `data` at `offset`; a fixed-size volume refuses to grow.
pub(super) fn copy_in(data: &mut [u8], buf: &[u8], offset: u64) -> io::Result<()> {
    let end = offset as usize + buf.len();
    if end > data.len() {
        return Err(VolumeFault::PastEnd {
            end: end as u64,
            len: data.len() as u64,
        }
        .into_io(io::ErrorKind::InvalidInput));
    }
    data[offset as usize..end].copy_from_slice(buf);
    Ok(())
}
