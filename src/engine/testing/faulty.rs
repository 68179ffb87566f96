//! A memory volume that fails on demand, for engine tests of what a set does when a volume
//! fails: its writes and syncs, or its reads, return an I/O error while switched on.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::super::volume::{Volume, VolumeId};
use super::MemVolume;

pub struct FlakyVolume {
    inner: MemVolume,
    writes_fail: AtomicBool,
    reads_fail: AtomicBool,
}

impl FlakyVolume {
    pub fn new(data: Vec<u8>) -> Arc<FlakyVolume> {
        Arc::new(FlakyVolume {
            inner: MemVolume::from_bytes(data),
            writes_fail: AtomicBool::new(false),
            reads_fail: AtomicBool::new(false),
        })
    }

    /// Make writes and syncs fail (true) or work again (false).
    pub fn fail(&self, on: bool) {
        self.writes_fail.store(on, Ordering::SeqCst);
    }

    /// Make reads fail (true) or work again (false).
    pub fn fail_reads(&self, on: bool) {
        self.reads_fail.store(on, Ordering::SeqCst);
    }

    /// The whole content, bypassing any set (like reading the backing file).
    pub fn bytes(&self) -> Vec<u8> {
        self.inner.snapshot()
    }
}

fn check(failing: &AtomicBool) -> io::Result<()> {
    if failing.load(Ordering::SeqCst) {
        Err(io::Error::other("injected failure"))
    } else {
        Ok(())
    }
}

impl Volume for FlakyVolume {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check(&self.reads_fail)?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check(&self.writes_fail)?;
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        check(&self.writes_fail)?;
        self.inner.sync()
    }
    fn id(&self) -> VolumeId {
        self.inner.id()
    }
}
