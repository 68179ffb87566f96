//! `Tracking::open` on a compact set's valid bitmap volume changed by the input: the input's
//! first byte chooses whether the header slot is resealed (its fields then reach the code
//! behind the CRC), the rest is XORed over the volume from the start. No panic; a refusal on
//! one line; a volume opened unresealed reads back exactly what it held.
#![no_main]

use std::sync::{Arc, OnceLock};

use iifs::engine::chunkmap::Slot;
use iifs::engine::header::{flags, Durability, Header, Layout, SetKind, SLOT_SIZE};
use iifs::engine::testing::MemVolume;
use iifs::engine::tracking::{Map, Tracking};
use iifs::engine::volume::Volume;
use libfuzzer_sys::fuzz_target;

type Content = (Header, Vec<u64>, Vec<u64>, Vec<(u64, Slot)>);

fn header() -> Header {
    Header {
        seq: 1,
        kind: SetKind::Dependent,
        chunk_size: 4096,
        master_size: 33_000 * 4096,
        shadow_size: 1000 * 4096,
        flags: flags::FULL_COPY,
        throttle_delay_ms: 5,
        throttle_units: 100,
        pit_time: 1_700_000_000,
        durability: Durability::Relaxed,
        name: "db".into(),
        master: "/srv/master".into(),
        shadow: "/srv/shadow".into(),
        bitmap: "/srv/bitmap".into(),
        layout: Layout::Checked,
        copy_total: 12,
        generation: 3,
        bitmap_id: 0x1234_5678_9abc,
        last_error: String::new(),
        shadow_slots: 1000,
        overflow: "pool".into(),
        overflow_id: 77,
        group_seq: 4,
        uuid: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        origin: 0,
    }
}

fn content(t: &Tracking) -> Content {
    let bits = |m: Map| {
        let (mut v, mut at) = (Vec::new(), 0);
        while let Some(c) = t.next_set(m, at) {
            v.push(c);
            at = c + 1;
        }
        v
    };
    let map = t.chunk_map().map(|m| m.mapped()).unwrap_or_default();
    (t.header(), bits(Map::Shadow), bits(Map::Copy), map)
}

fn valid() -> &'static (Vec<u8>, Content) {
    static V: OnceLock<(Vec<u8>, Content)> = OnceLock::new();
    V.get_or_init(|| {
        let h = header();
        let vol = Arc::new(MemVolume::new(h.volume_len() as usize + 3000));
        let t = Tracking::create(vol.clone(), h).unwrap();
        let changes: Vec<_> = (0..33_000u64)
            .filter(|c| c % 7 == 0)
            .map(|c| (Map::Shadow, c, true))
            .chain(
                (0..33_000u64)
                    .filter(|c| c % 11 == 3)
                    .map(|c| (Map::Copy, c, true)),
            )
            .collect();
        t.persist(&changes).unwrap();
        t.chunk_map()
            .unwrap()
            .set(&[
                (0, Some(Slot::Shadow(0))),
                (32_999, Some(Slot::Overflow(9))),
            ])
            .unwrap();
        let bytes = vol.snapshot();
        let c = content(&Tracking::open(Arc::new(MemVolume::from_bytes(bytes.clone()))).unwrap());
        (bytes, c)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (base, want) = valid();
    let mut bytes = base.clone();
    for (b, d) in bytes.iter_mut().zip(data) {
        *b ^= d;
    }
    let reseal = mode & 1 == 1;
    if reseal {
        let at = SLOT_SIZE as usize - 4;
        let crc = crc32fast::hash(&bytes[..at]);
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let vol: Arc<dyn Volume> = Arc::new(MemVolume::from_bytes(bytes));
    match Tracking::open(vol) {
        Ok(t) => {
            let got = content(&t);
            if !reseal {
                assert_eq!(
                    &got, want,
                    "a changed volume was accepted with other content"
                );
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.is_empty() && !msg.contains('\n') && !msg.contains('\r'),
                "{msg:?}"
            );
        }
    }
});
