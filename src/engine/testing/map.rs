//! A table of volumes by name, for tests.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::super::opener::Opener;
use super::super::volume::{self, Volume};

/// Volumes looked up by name in a fixed table: for tests (memory and fault-injecting volumes).
#[derive(Default)]
pub struct MapOpener {
    volumes: Mutex<HashMap<String, Arc<dyn Volume>>>,
}

impl MapOpener {
    pub fn new() -> MapOpener {
        MapOpener::default()
    }

    pub fn insert(&self, path: &str, vol: Arc<dyn Volume>) {
        if let Ok(mut v) = self.volumes.lock() {
            v.insert(path.to_string(), vol);
        }
    }
}

impl Opener for MapOpener {
    fn open(&self, path: &str) -> io::Result<Arc<dyn Volume>> {
        self.volumes
            .lock()
            .map_err(|_| volume::poisoned())?
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such volume"))
    }
    fn grow(&self, _path: &str, _len: u64) -> io::Result<bool> {
        Ok(false)
    }
}
