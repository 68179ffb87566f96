//! Test doubles, built only for the crate's tests and with the `test-util` feature (which the
//! integration tests and benches turn on): volumes in memory, volumes that fail on demand or
//! lose power, and an opener over a table of them. None of them ships in the library.

mod fault;
mod faulty;
mod map;
mod mem;
mod powerloss;

pub use fault::{CrashSwitch, Fault, FaultVolume, Op};
pub use faulty::FlakyVolume;
pub use map::MapOpener;
pub use mem::MemVolume;
pub use powerloss::{PowerLossVolume, TripSwitch};
