//! Engine hot paths, each beside its baseline in the same run:
//! - a 4 KiB master write to a chunk already preserved (one bit test + the write) vs. the same
//!   write to the bare volume;
//! - a first write to a chunk (copy-on-write of the old chunk, bit persisted; relaxed
//!   durability on memory volumes, so this measures the engine, not a disk);
//! - the bitmap scan that an update runs, over 16 Mi chunks (1 TiB at 64 KiB) with 1 % set.
//!
//! Run: `cargo bench --bench engine`.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use iifs::engine::bitmap::Bitmap;
use iifs::engine::testing::{MapOpener, MemVolume};
use iifs::engine::volume::Volume;
use iifs::engine::{Direction, Durability, EnableSpec, Engine, Set, SetKind};

const CHUNK: usize = 65536;
const SIZE: usize = 256 << 20;

fn dependent_set() -> (Engine, Arc<Set>) {
    let opener = MapOpener::new();
    opener.insert("/m", Arc::new(MemVolume::new(SIZE)));
    opener.insert("/s", Arc::new(MemVolume::new(SIZE)));
    opener.insert("/b", Arc::new(MemVolume::new(1 << 20)));
    let engine = Engine::new(Box::new(opener));
    let spec = EnableSpec {
        kind: SetKind::Dependent,
        master: "/m".into(),
        shadow: "/s".into(),
        bitmap: "/b".into(),
        name: "bench".into(),
        chunk_size: CHUNK as u64,
        durability: Durability::Relaxed,
    };
    let set = engine.enable(&spec).expect("enable");
    (engine, set)
}

fn write_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("master_write_4k");
    g.throughput(Throughput::Bytes(4096));
    let data = vec![0x5a; 4096];

    let bare = MemVolume::new(SIZE);
    g.bench_function("bare_volume", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % (SIZE / CHUNK);
            bare.write_at(black_box(&data), (i * CHUNK) as u64).unwrap();
        })
    });

    let (_engine, set) = dependent_set();
    for i in 0..SIZE / CHUNK {
        set.master.write(&data, (i * CHUNK) as u64).unwrap();
    }
    g.bench_function("preserved_chunk", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % (SIZE / CHUNK);
            set.master
                .write(black_box(&data), (i * CHUNK) as u64)
                .unwrap();
        })
    });

    let (_engine2, fresh) = dependent_set();
    // Criterion calls the routine once per sample: the position must outlive each call, or
    // later samples would write chunks already preserved.
    let mut i = 0usize;
    g.bench_function("first_write_copy_on_write", |b| {
        b.iter(|| {
            if i == SIZE / CHUNK {
                // Every chunk preserved: a new point in time re-arms them (instant for dep).
                fresh.start_copy(Direction::Shadow, false).unwrap();
                i = 0;
            }
            fresh
                .master
                .write(black_box(&data), (i * CHUNK) as u64)
                .unwrap();
            i += 1;
        })
    });

    g.finish();
}

fn update_scan(c: &mut Criterion) {
    let chunks = 16u64 << 20;
    let map = Bitmap::new(chunks);
    for i in (0..chunks).step_by(100) {
        map.set(i);
    }
    let mut g = c.benchmark_group("update_scan_16Mi_chunks_1pct");
    g.bench_function("next_set_walk", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let mut at = 0;
            while let Some(i) = map.next_set(at) {
                n += 1;
                at = i + 1;
            }
            black_box(n)
        })
    });
    g.bench_function("count_baseline", |b| b.iter(|| black_box(map.count())));
    g.finish();
}

criterion_group!(benches, write_paths, update_scan);
criterion_main!(benches);
