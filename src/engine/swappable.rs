//! A volume a set can let go of and take again while it lives: an exported shadow is closed on
//! this host (its lock released, so another host or daemon can take it) and opened again at
//! `join`; an imported set's master does not exist here at all. `Absent` stands in for such a
//! volume: it has the size and identity of what it stands for, and refuses every read and write.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, RwLock};

use super::volume::{Volume, VolumeId};

/// A volume whose backing can be swapped (see the module comment). The set's gate is held
/// exclusively around a swap, so no I/O of the set is in flight across it.
pub struct Swappable {
    inner: RwLock<Arc<dyn Volume>>,
}

impl Swappable {
    pub fn new(vol: Arc<dyn Volume>) -> Swappable {
        Swappable {
            inner: RwLock::new(vol),
        }
    }

    /// The volume behind it now.
    pub fn current(&self) -> Arc<dyn Volume> {
        match self.inner.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Put `vol` behind it; the volume it replaces is closed when its last user drops it.
    pub fn swap(&self, vol: Arc<dyn Volume>) {
        match self.inner.write() {
            Ok(mut v) => *v = vol,
            Err(p) => *p.into_inner() = vol,
        }
    }

    /// Let the volume go, keeping its size and identity (see `Absent`).
    pub fn release(&self, why: &'static str) {
        let cur = self.current();
        self.swap(Arc::new(Absent::new(cur.len(), cur.id(), why)));
    }

    /// The identity of the volume behind it (kept when it is let go).
    pub fn id(&self) -> VolumeId {
        self.current().id()
    }
}

impl Volume for Swappable {
    fn len(&self) -> u64 {
        self.current().len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.current().read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.current().write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.current().sync()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.current().punch_hole(offset, len)
    }
    fn raw_fd(&self) -> Option<RawFd> {
        self.current().raw_fd()
    }
    fn will_need(&self, offset: u64, len: u64) {
        self.current().will_need(offset, len)
    }
    fn note_written(&self) {
        self.current().note_written()
    }
    fn check_not_shrunk(&self) -> io::Result<()> {
        self.current().check_not_shrunk()
    }
    fn id(&self) -> VolumeId {
        self.current().id()
    }
    fn is_absent(&self) -> bool {
        self.current().is_absent()
    }
}

/// A volume that is not here (an exported shadow, an imported set's master): its size and
/// identity, no data. Reads and writes fail (the control tree does not serve it, so none
/// should come); a sync succeeds, there being nothing written to make durable.
pub struct Absent {
    len: u64,
    id: VolumeId,
    why: &'static str,
}

impl Absent {
    pub fn new(len: u64, id: VolumeId, why: &'static str) -> Absent {
        Absent { len, id, why }
    }

    fn refuse(&self) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, self.why)
    }
}

impl Volume for Absent {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
        Err(self.refuse())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(self.refuse())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn punch_hole(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(self.refuse())
    }
    fn id(&self) -> VolumeId {
        self.id
    }
    fn is_absent(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::MemVolume;

    #[test]
    fn a_released_volume_keeps_its_size_and_identity_and_refuses_io() {
        let mem: Arc<dyn Volume> = Arc::new(MemVolume::new(8192));
        let s = Swappable::new(mem.clone());
        s.write_at(b"abc", 0).unwrap();
        let (len, id) = (s.len(), s.id());
        s.release("exported");
        assert!(s.is_absent());
        assert_eq!((s.len(), s.id()), (len, id));
        assert!(s.read_at(&mut [0u8; 3], 0).is_err());
        assert!(s.write_at(b"x", 0).is_err());
        assert!(s.sync().is_ok());
        s.swap(mem);
        assert!(!s.is_absent());
        let mut b = [0u8; 3];
        s.read_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"abc");
    }
}
