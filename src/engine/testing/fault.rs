//! A memory volume that fails by plan, for engine fault tests: the Nth read, write or sync
//! (counted on this volume from the moment the plan is armed), or every one of that kind from
//! the Nth on, returns EIO or ENOSPC; a write may be torn (only its first K bytes land) and
//! then fail, or "crash": from then on no write or sync of any volume sharing the crash switch
//! reaches its content (silently, as when the power is gone; reads go on), so the test can
//! drop the engine and restore from what the volumes hold. `disarm` makes the fault go away.
//!
//! A plan may count only the operations that touch a byte range (`within`): the header slots
//! of a bitmap volume, say. Syncs touch no range: such a plan never counts them.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::super::volume::{Volume, VolumeId};
use super::MemVolume;

/// The kind of operation a fault counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Sync,
}

/// What fails, when, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub op: Op,
    /// The first operation that fails (1 = the next one of `op`'s kind).
    pub nth: u64,
    /// Every operation of the kind from the `nth` on fails, not the `nth` alone.
    pub sticky: bool,
    /// The errno returned (`libc::EIO`, `libc::ENOSPC`).
    pub errno: i32,
    /// A failing write first writes this many of its bytes (at most all of them).
    pub tear: Option<usize>,
    /// The failing operation is a crash: it "returns" Ok and the crash switch trips.
    pub crash: bool,
    /// Only operations touching these bytes count.
    pub within: Option<Range<u64>>,
}

impl Fault {
    /// The `nth` operation of kind `op` fails with EIO.
    pub fn nth(op: Op, nth: u64) -> Fault {
        Fault {
            op,
            nth: nth.max(1),
            sticky: false,
            errno: libc::EIO,
            tear: None,
            crash: false,
            within: None,
        }
    }

    /// Fail every operation of the kind from the `nth` on.
    pub fn sticky(self) -> Fault {
        Fault {
            sticky: true,
            ..self
        }
    }

    pub fn errno(self, errno: i32) -> Fault {
        Fault { errno, ..self }
    }

    /// Let the first `bytes` of the failing write land.
    pub fn tear(self, bytes: usize) -> Fault {
        Fault {
            tear: Some(bytes),
            ..self
        }
    }

    /// The failing operation crashes instead of failing (see the module).
    pub fn crash(self) -> Fault {
        Fault {
            crash: true,
            ..self
        }
    }

    pub fn within(self, range: Range<u64>) -> Fault {
        Fault {
            within: Some(range),
            ..self
        }
    }
}

/// Shared by the volumes of one "machine": tripped, none of them takes writes or syncs.
#[derive(Default)]
pub struct CrashSwitch(AtomicBool);

impl CrashSwitch {
    pub fn new() -> Arc<CrashSwitch> {
        Arc::default()
    }

    pub fn tripped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub fn trip(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Armed {
    fault: Option<Fault>,
    /// Operations of the fault's kind counted since it was armed.
    seen: u64,
    /// Operations that failed (or crashed) by the plan.
    fired: u64,
}

pub struct FaultVolume {
    inner: MemVolume,
    armed: Mutex<Armed>,
    switch: Arc<CrashSwitch>,
}

/// What the plan makes of one operation.
enum Verdict {
    Pass,
    Fail { errno: i32, tear: Option<usize> },
    Crash { tear: Option<usize> },
}

impl FaultVolume {
    pub fn new(data: Vec<u8>) -> Arc<FaultVolume> {
        FaultVolume::with_switch(data, CrashSwitch::new())
    }

    /// A volume that stops taking writes when `switch` trips.
    pub fn with_switch(data: Vec<u8>, switch: Arc<CrashSwitch>) -> Arc<FaultVolume> {
        Arc::new(FaultVolume {
            inner: MemVolume::from_bytes(data),
            armed: Mutex::new(Armed::default()),
            switch,
        })
    }

    /// Follow `fault` from now on (its count starts at zero), replacing any earlier plan.
    pub fn arm(&self, fault: Fault) {
        let mut a = self.lock();
        *a = Armed {
            fault: Some(fault),
            seen: 0,
            fired: a.fired,
        };
    }

    /// The fault is gone: every operation works again (a tripped crash switch stays tripped).
    pub fn disarm(&self) {
        self.lock().fault = None;
    }

    /// How many operations failed or crashed by plan so far.
    pub fn fired(&self) -> u64 {
        self.lock().fired
    }

    /// The whole content, bypassing any plan (like reading the backing file).
    pub fn bytes(&self) -> Vec<u8> {
        self.inner.snapshot()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Armed> {
        match self.armed.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        }
    }

    /// Count an operation of kind `op` on `range` and say what becomes of it.
    fn judge(&self, op: Op, range: Option<Range<u64>>) -> Verdict {
        let mut a = self.lock();
        let Some(f) = a.fault.clone() else {
            return Verdict::Pass;
        };
        let touches = match (&f.within, range) {
            (None, _) => true,
            (Some(w), Some(r)) => r.start < w.end && w.start < r.end,
            (Some(_), None) => false,
        };
        if f.op != op || !touches {
            return Verdict::Pass;
        }
        a.seen += 1;
        if a.seen < f.nth || (a.seen > f.nth && !f.sticky) {
            return Verdict::Pass;
        }
        a.fired += 1;
        match f.crash {
            true => Verdict::Crash { tear: f.tear },
            false => Verdict::Fail {
                errno: f.errno,
                tear: f.tear,
            },
        }
    }

    fn error(errno: i32) -> io::Error {
        let os = io::Error::from_raw_os_error(errno);
        io::Error::new(os.kind(), format!("injected fault: {os}"))
    }

    /// Write the first `tear` bytes of `buf` (none when None).
    fn torn(&self, buf: &[u8], offset: u64, tear: Option<usize>) -> io::Result<()> {
        match tear {
            Some(n) if n > 0 => self.inner.write_at(&buf[..n.min(buf.len())], offset),
            _ => Ok(()),
        }
    }
}

impl Volume for FaultVolume {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.judge(Op::Read, Some(offset..offset + buf.len() as u64)) {
            Verdict::Fail { errno, .. } => Err(FaultVolume::error(errno)),
            Verdict::Crash { .. } => {
                self.switch.trip();
                self.inner.read_at(buf, offset)
            }
            Verdict::Pass => self.inner.read_at(buf, offset),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.switch.tripped() {
            return Ok(());
        }
        match self.judge(Op::Write, Some(offset..offset + buf.len() as u64)) {
            Verdict::Pass => self.inner.write_at(buf, offset),
            Verdict::Fail { errno, tear } => {
                self.torn(buf, offset, tear)?;
                Err(FaultVolume::error(errno))
            }
            Verdict::Crash { tear } => {
                self.torn(buf, offset, tear)?;
                self.switch.trip();
                Ok(())
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        if self.switch.tripped() {
            return Ok(());
        }
        match self.judge(Op::Sync, None) {
            Verdict::Pass => self.inner.sync(),
            Verdict::Fail { errno, .. } => Err(FaultVolume::error(errno)),
            Verdict::Crash { .. } => {
                self.switch.trip();
                Ok(())
            }
        }
    }

    fn id(&self) -> VolumeId {
        self.inner.id()
    }
}
