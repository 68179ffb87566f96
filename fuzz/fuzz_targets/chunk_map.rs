//! `ChunkMap::load` on any bytes (the first two give the number of chunks): no panic, a
//! refusal on one line.
#![no_main]

use std::sync::Arc;

use iifs::engine::chunkmap::ChunkMap;
use iifs::engine::testing::MemVolume;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chunks = u16::from_le_bytes([data[0], data[1]]) as u64;
    let vol = Arc::new(MemVolume::from_bytes(data[2..].to_vec()));
    match ChunkMap::load(vol, 0, chunks, 7) {
        Ok(m) => assert_eq!(m.chunks(), chunks),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.is_empty() && !msg.contains('\n') && !msg.contains('\r'),
                "{msg:?}"
            );
        }
    }
});
