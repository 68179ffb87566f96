//! The header decoder on any slot, as it is and with its CRC resealed (so that the fields
//! themselves are reached): no panic; a slot that decodes re-encodes, or says why not on one
//! line, and what it encodes decodes back equal.
#![no_main]

use iifs::engine::header::{Header, SLOT_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let slot = SLOT_SIZE as usize;
    let _ = Header::decode(data);
    if data.len() >= 2 * slot {
        let _ = Header::pick(&data[..slot], &data[slot..2 * slot]);
    }
    // The input as the start of a slot with a valid magic and CRC.
    let mut b = vec![0u8; slot];
    b[..8].copy_from_slice(iifs::engine::header::MAGIC);
    let n = data.len().min(slot - 4 - 8);
    b[8..8 + n].copy_from_slice(&data[..n]);
    let crc = crc32fast::hash(&b[..slot - 4]);
    b[slot - 4..].copy_from_slice(&crc.to_le_bytes());
    if let Some(h) = Header::decode(&b) {
        match h.encode() {
            Ok(again) => {
                let back = Header::decode(&again).expect("an encoded header decodes");
                assert!(h.last_error.starts_with(&back.last_error));
                assert_eq!(
                    Header {
                        last_error: back.last_error.clone(),
                        ..h
                    },
                    back
                );
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
            }
        }
    }
});
