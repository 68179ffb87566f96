//! A memory volume whose writes and syncs fail while it is switched to failing: for engine
//! tests of what a failing backing volume does to a set.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use iifs::engine::volume::{MemVolume, Volume, VolumeId};

pub struct Flaky {
    pub inner: MemVolume,
    broken: AtomicBool,
}

impl Flaky {
    pub fn new(data: Vec<u8>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: MemVolume::from_bytes(data),
            broken: AtomicBool::new(false),
        })
    }

    pub fn fail(&self, on: bool) {
        self.broken.store(on, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            Err(io::Error::other("injected failure"))
        } else {
            Ok(())
        }
    }

    /// The whole content, as the backing file holds it.
    pub fn bytes(&self) -> Vec<u8> {
        self.inner.snapshot()
    }
}

impl Volume for Flaky {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.check()?;
        self.inner.sync()
    }
    fn id(&self) -> VolumeId {
        self.inner.id()
    }
}
