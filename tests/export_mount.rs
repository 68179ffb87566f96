//! Export, import and join through real mounts (issue 12). Two daemons stand for two hosts:
//! two state dirs and two mount points over one directory of volume files. Daemon `a` is the
//! home of set `db`; daemon `b` imports the shadow `db` exported.
//!
//! - the round trip, with the bytes of every chunk and the chunk counts checked, joined and
//!   then updated in each direction (`update shadow`, `update master`);
//! - restarts (SIGKILL and clean) of either daemon keep an exported set exported (its shadow
//!   not taken) and an imported set imported, its writes tracked;
//! - SIGKILL of the home daemon during `join` never gives a wrong image: after the restart the
//!   set is exported (a second join works) or joined, and `update shadow` makes shadow ==
//!   master;
//! - SIGKILL of the importing daemon during `import` leaves the import whole or absent (then the
//!   same bitmap imports again) and the exported shadow untouched.

mod common;
#[path = "common/export.rs"]
mod export;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use common::{assert_same, file_bytes, Mount};
use export::*;

const CHUNK: u64 = 4096;
/// 256 chunks of 4 KiB.
const SIZE: u64 = 256 * CHUNK;

/// The crash tests move a lot of bytes; on a 2-core machine they run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A seed for the crash tests' choices, printed so a failure can be replayed (IIFS_SEED).
fn seed(test: &str) -> u64 {
    let s = env_u64(
        "IIFS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!("{test}: IIFS_SEED={s}");
    s
}

fn set(idxs: &[u64]) -> BTreeSet<u64> {
    idxs.iter().copied().collect()
}

/// The image `base` with chunk `i` replaced by `chunk_bytes(CHUNK, i, tag)` for each `i`.
fn with_chunks(base: &[u8], idxs: &BTreeSet<u64>, tag: u64) -> Vec<u8> {
    let mut out = base.to_vec();
    for &i in idxs {
        let at = (i * CHUNK) as usize;
        out[at..at + CHUNK as usize].copy_from_slice(&chunk_bytes(CHUNK, i, tag));
    }
    out
}

/// Chunk by chunk, where `actual` differs from `expected` (for a readable failure).
#[track_caller]
fn assert_image(actual: &[u8], expected: &[u8], what: &str) {
    let bad: Vec<usize> = (0..expected.len() / CHUNK as usize)
        .filter(|i| {
            let r = i * CHUNK as usize..(i + 1) * CHUNK as usize;
            actual.get(r.clone()) != expected.get(r)
        })
        .collect();
    assert!(
        bad.is_empty() && actual.len() == expected.len(),
        "{what}: chunks {bad:?} differ (lengths {} and {})",
        actual.len(),
        expected.len()
    );
}

/// Chunks written on the home master (MA) and on the imported shadow (SB; 10 is in both).
const TAG_A: u64 = 100;
const TAG_B: u64 = 200;

/// Both round trips up to the join: export on `a`, master writes on `a`, import on `b`,
/// writes there, `b` restarted (SIGKILL when `kill`, else cleanly) in between, then the
/// import disabled and joined on `a`. Returns (the point in time, MA, SB, set volumes).
fn round_trip_to_join(
    v: &Vols,
    a: &mut Mount,
    b: &mut Mount,
    kill: bool,
) -> (Vec<u8>, BTreeSet<u64>, BTreeSet<u64>, SetVols) {
    let sv = ind_set(a, v, "db", SIZE, CHUNK, 1);
    let pit = file_bytes(&sv.master);
    assert_same(&file_bytes(&sv.shadow), &pit, "the first copy");
    let st = a.status("db");
    let uuid = st["uuid"].clone();
    assert_eq!(uuid.len(), 36, "a set has a uuid: {st:?}");
    assert_eq!(st["origin"], "-", "a set of this host has no origin");

    a.set_ok("db", "export");
    let st = a.status("db");
    assert_eq!(st["state"], "exported", "{st:?}");
    assert_eq!(st["uuid"], uuid, "export keeps the uuid");
    assert_eq!(st["origin"], "-");
    assert!(
        absent(a, "sets/db/shadow"),
        "an exported shadow is not served"
    );
    assert!(
        a.path("sets/db/master").exists(),
        "the master is still served"
    );
    let rec = record_fields(&sv.record());
    assert_eq!(rec["format"], "1");
    assert_eq!(rec["uuid"], uuid);
    assert_eq!(rec["set"], "db");
    assert_eq!(rec["size"], SIZE.to_string());
    assert_eq!(rec["chunk_size"], CHUNK.to_string());
    assert_eq!(rec["chunks"], (SIZE / CHUNK).to_string());
    assert_eq!(rec["pit_time"], st["pit_time"]);
    assert_eq!(rec["shadow"], sv.shadow);
    assert_eq!(rec["chunk_list_crc32"].len(), 8, "{rec:?}");
    assert_same(
        &file_bytes(&sv.shadow),
        &pit,
        "export does not touch the shadow",
    );

    // Master writes go on and are tracked (partial-chunk writes too: one byte of chunk 50).
    let ma = set(&[3, 10, 11, 50, 255]);
    write_chunks(a, "sets/db/master", CHUNK, &ma, TAG_A);
    assert_eq!(
        chunks_differ(a, "db"),
        ma.len() as u64,
        "master writes tracked"
    );

    // The home daemon dies; it comes back with the set exported, the shadow not taken (the
    // import below runs while it is down, and is still fine once it is up).
    if kill {
        a.kill9();
    } else {
        a.stop();
    }
    let bimp = v.path("b-imp.img");
    assert!(!exists(&bimp));
    b.ok("ctl", &format!("import {} {bimp} imp", sv.shadow));
    a.start_again();
    let st = a.status("db");
    assert_eq!(st["state"], "exported", "after a restart: {st:?}");
    assert_eq!(st["chunks_differ"], ma.len().to_string(), "{st:?}");
    assert!(absent(a, "sets/db/shadow"));

    let st = b.status("imp");
    assert_eq!(st["state"], "imported", "{st:?}");
    assert_eq!(st["master"], "-");
    assert_eq!(
        st["origin"], uuid,
        "an imported set names the exporting set"
    );
    assert_ne!(st["uuid"], uuid, "an imported set has a uuid of its own");
    assert_eq!(st["shadow"], sv.shadow);
    assert_eq!(st["chunks_differ"], "0", "{st:?}");
    assert!(
        absent(b, "sets/imp/master"),
        "an imported set has no master here"
    );
    assert!(exists(&bimp), "the import bitmap is made when missing");
    assert_image(
        &b.read("sets/imp/shadow"),
        &pit,
        "the imported shadow reads the PIT",
    );

    let sb1 = set(&[10, 20, 21]);
    write_chunks(b, "sets/imp/shadow", CHUNK, &sb1, TAG_B);
    assert_eq!(
        chunks_differ(b, "imp"),
        3,
        "writes to the import are tracked"
    );
    if kill {
        b.kill9();
        b.start_again();
    } else {
        b.restart();
    }
    let st = b.status("imp");
    assert_eq!(st["state"], "imported", "after a restart: {st:?}");
    assert_eq!(st["origin"], uuid);
    assert_eq!(st["chunks_differ"], "3", "tracked writes survive a restart");
    let sb2 = set(&[100, 200]);
    write_chunks(b, "sets/imp/shadow", CHUNK, &sb2, TAG_B);
    let sb: BTreeSet<u64> = sb1.union(&sb2).copied().collect();
    assert_eq!(chunks_differ(b, "imp"), sb.len() as u64);
    assert_image(
        &b.read("sets/imp/shadow"),
        &with_chunks(&pit, &sb, TAG_B),
        "the import's writes",
    );

    // While the import lives, its bitmap cannot be joined.
    let (errno, reply) = a
        .ctl("sets/db/ctl", &format!("join {bimp}"))
        .expect_err("join of a live import's bitmap");
    assert_eq!(errno, libc::EBUSY, "{reply}");
    assert_eq!(a.status("db")["state"], "exported");

    b.set_ok("imp", "disable");
    assert!(b.set_names().is_empty());
    assert_same(
        &file_bytes(&sv.shadow),
        &with_chunks(&pit, &sb, TAG_B),
        "the exported shadow holds the import's writes",
    );

    a.set_ok("db", &format!("join {bimp}"));
    let st = a.status("db");
    assert_eq!(st["state"], "idle", "{st:?}");
    assert_eq!(st["uuid"], uuid);
    let union: BTreeSet<u64> = ma.union(&sb).copied().collect();
    assert_eq!(
        st["chunks_differ"],
        union.len().to_string(),
        "after join the chunks that differ are those changed on either side ({union:?}): {st:?}"
    );
    assert!(!exists(&sv.record()), "join removes the export record");
    assert_image(
        &a.read("sets/db/shadow"),
        &with_chunks(&pit, &sb, TAG_B),
        "the joined shadow is served again, with the import's writes",
    );
    assert_image(
        &a.read("sets/db/master"),
        &with_chunks(&pit, &ma, TAG_A),
        "the master after join",
    );
    (pit, ma, sb, sv)
}

#[test]
fn round_trip_then_update_shadow_moves_the_chunks_changed_on_either_side() {
    let v = Vols::new();
    let Some(mut a) = Mount::start("") else {
        return;
    };
    let Some(mut b) = Mount::start("") else {
        return;
    };
    let (pit, ma, _sb, sv) = round_trip_to_join(&v, &mut a, &mut b, true);
    let master = with_chunks(&pit, &ma, TAG_A);
    a.set_ok("db", "update shadow");
    a.set_ok("db", "wait");
    let st = a.status("db");
    assert_eq!(st["state"], "idle", "{st:?}");
    assert_eq!(st["chunks_differ"], "0", "{st:?}");
    assert_image(
        &file_bytes(&sv.master),
        &master,
        "update shadow leaves the master",
    );
    assert_image(
        &file_bytes(&sv.shadow),
        &master,
        "shadow == master after update shadow",
    );
    assert_image(&a.read("sets/db/shadow"), &master, "the served shadow");
}

#[test]
fn round_trip_then_update_master_brings_the_imported_writes_home() {
    let v = Vols::new();
    let Some(mut a) = Mount::start("") else {
        return;
    };
    let Some(mut b) = Mount::start("") else {
        return;
    };
    let (pit, _ma, sb, sv) = round_trip_to_join(&v, &mut a, &mut b, false);
    // The shadow wins every chunk that differs: the import's writes come to the master, and
    // the master's own writes of chunks the import did not write go back to the PIT.
    let image = with_chunks(&pit, &sb, TAG_B);
    a.set_ok("db", "update master");
    a.set_ok("db", "wait");
    let st = a.status("db");
    assert_eq!(st["state"], "idle", "{st:?}");
    assert_eq!(st["chunks_differ"], "0", "{st:?}");
    assert_image(
        &file_bytes(&sv.master),
        &image,
        "master after update master",
    );
    assert_image(&file_bytes(&sv.shadow), &image, "the shadow is unchanged");
    assert_image(&a.read("sets/db/master"), &image, "the served master");
}

/// The home daemon SIGKILLed a random moment into `join`, many rounds: never a wrong image.
/// A large set (1 GiB sparse, 4 KiB chunks: 262144 chunks, 32 KiB bitmap regions) with
/// changed chunks all over both bitmaps, so the merge writes many pages. The first round is
/// not killed: it measures how long a join takes here, and later rounds kill at 0..1.5x the
/// shortest join seen.
#[test]
fn sigkill_during_join_never_gives_a_wrong_image() {
    let _serial = heavy();
    let size = env_u64("IIFS_JOIN_SIZE_MB", 1024) << 20;
    let rounds = env_u64("IIFS_JOIN_ROUNDS", 12).max(2);
    let chunks = size / CHUNK;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("sigkill_during_join"));
    let v = Vols::new();
    let Some(mut a) = Mount::start("") else {
        return;
    };
    let Some(b) = Mount::start("") else {
        return;
    };
    let sv = ind_set(&a, &v, "db", size, CHUNK, 0);
    let mut join_time = Duration::ZERO;
    let (mut joined_first, mut exported_after) = (0, 0);
    for round in 0..rounds {
        a.set_ok("db", "export");
        let bm = v.path(&format!("bi-{round}.img"));
        b.ok("ctl", &format!("import {} {bm} imp", sv.shadow));
        let sb: BTreeSet<u64> = (0..300).map(|_| rng.gen_range(0..chunks)).collect();
        let ma: BTreeSet<u64> = (0..60).map(|_| rng.gen_range(0..chunks)).collect();
        write_chunks(&b, "sets/imp/shadow", CHUNK, &sb, 2 * round + 1);
        write_chunks(&a, "sets/db/master", CHUNK, &ma, 2 * round + 2);
        b.set_ok("imp", "disable");
        assert_eq!(chunks_differ(&a, "db"), ma.len() as u64, "round {round}");
        let union = ma.union(&sb).count() as u64;

        let joiner = write_in_step(a.path("sets/db/ctl"), format!("join {bm}"));
        let delay = kill_delay(round, &mut rng, join_time, 300);
        if let Some(d) = delay {
            std::thread::sleep(d);
            a.kill9();
        }
        let (result, took) = joiner.join().expect("joiner thread");
        if round == 0 {
            result
                .clone()
                .unwrap_or_else(|e| panic!("the first join failed: {e}\n{}", a.log()));
            join_time = took;
            eprintln!("a join of {chunks} chunks took {took:?}");
        } else {
            if result.is_ok() {
                joined_first += 1;
                // Aim at the shortest join seen: most kills should land during one.
                join_time = join_time.min(took);
            }
            a.start_again();
        }
        let st = a.status("db");
        match st["state"].as_str() {
            "idle" => {}
            "exported" => {
                exported_after += 1;
                assert!(
                    absent(&a, "sets/db/shadow"),
                    "round {round} ({delay:?}): still exported, the shadow is not served"
                );
                a.set_ok("db", &format!("join {bm}"));
            }
            s => panic!("round {round} ({delay:?}): state {s} after a kill during join: {st:?}"),
        }
        let st = a.status("db");
        assert_eq!(st["state"], "idle", "round {round}: {st:?}");
        assert_eq!(
            st["chunks_differ"],
            union.to_string(),
            "round {round} (kill after {delay:?}): the chunks changed on either side differ"
        );
        update_shadow_to_master(
            &a,
            "db",
            &sv,
            &format!("round {round} (kill after {delay:?}): shadow == master"),
        );
        assert_eq!(chunks_differ(&a, "db"), 0, "round {round}");
        for &i in &ma {
            assert_eq!(
                disk_chunk(&sv.master, CHUNK, i),
                chunk_bytes(CHUNK, i, 2 * round + 2),
                "round {round}: master chunk {i} keeps its write"
            );
        }
    }
    eprintln!(
        "{} killed joins: {joined_first} had replied before the kill, {exported_after} left \
         the set exported",
        rounds - 1
    );
}

/// The importing daemon SIGKILLed a random moment into `import`, many rounds: the import is
/// there after the restart and works, or it is not and the same bitmap imports again; the
/// exported shadow is never changed. The first round measures an import; later rounds kill
/// at 0..1.5x that. At the end a full round trip still gives shadow == master.
#[test]
fn sigkill_during_import_leaves_it_whole_or_absent() {
    let _serial = heavy();
    let size: u64 = 4 << 20;
    let rounds = env_u64("IIFS_IMPORT_ROUNDS", 16).max(2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("sigkill_during_import"));
    let v = Vols::new();
    let Some(a) = Mount::start("") else {
        return;
    };
    let Some(mut b) = Mount::start("") else {
        return;
    };
    let sv = ind_set(&a, &v, "db", size, CHUNK, 7);
    let pit = file_bytes(&sv.master);
    a.set_ok("db", "export");
    let uuid = a.status("db")["uuid"].clone();
    let mut import_time = Duration::ZERO;
    let (mut whole, mut lost) = (0, 0);
    for round in 0..rounds {
        let bm = v.path(&format!("bk-{round}.img"));
        let importer = write_in_step(b.path("ctl"), format!("import {} {bm} imp", sv.shadow));
        let delay = kill_delay(round, &mut rng, import_time, 500);
        if let Some(d) = delay {
            std::thread::sleep(d);
            b.kill9();
        }
        let (result, took) = importer.join().expect("importer thread");
        if round == 0 {
            result
                .clone()
                .unwrap_or_else(|e| panic!("the first import failed: {e}\n{}", b.log()));
            import_time = took;
            eprintln!("an import of {} chunks took {took:?}", size / CHUNK);
        } else {
            b.start_again();
        }
        assert_same(
            &file_bytes(&sv.shadow),
            &pit,
            &format!("round {round} ({delay:?}): the exported shadow is unchanged"),
        );
        let names = b.set_names();
        if names.is_empty() {
            // Gone: the same bitmap (it tracked nothing) takes the import again.
            lost += 1;
            assert!(
                result.is_err(),
                "round {round}: an import that replied ok must be kept"
            );
            b.ok("ctl", &format!("import {} {bm} imp", sv.shadow));
        } else {
            assert_eq!(names, ["imp"], "round {round}");
            whole += u64::from(round > 0);
        }
        let st = b.status("imp");
        assert_eq!(st["state"], "imported", "round {round} ({delay:?}): {st:?}");
        assert_eq!(st["origin"], uuid, "round {round}");
        assert_eq!(st["chunks_differ"], "0", "round {round}: {st:?}");
        assert_image(
            &b.read("sets/imp/shadow"),
            &pit,
            &format!("round {round}: the import reads the exported image"),
        );
        b.set_ok("imp", "disable");
        assert_eq!(a.status("db")["state"], "exported");
    }
    eprintln!(
        "{} killed imports: {whole} were there after the restart, {lost} were not",
        rounds - 1
    );

    // After all that, a real round trip: writes on the import come home.
    let bm = v.path("bk-final.img");
    b.ok("ctl", &format!("import {} {bm} imp", sv.shadow));
    let sb = set(&[0, 7, 500, 1023]);
    write_chunks(&b, "sets/imp/shadow", CHUNK, &sb, TAG_B);
    b.set_ok("imp", "disable");
    a.set_ok("db", &format!("join {bm}"));
    assert_eq!(chunks_differ(&a, "db"), sb.len() as u64);
    update_shadow_to_master(&a, "db", &sv, "shadow == master after the last round");
    assert_image(
        &file_bytes(&sv.master),
        &pit,
        "update shadow leaves the master",
    );
}

/// What a script does: read (or check) the shadow, then export at once. The kernel sends the
/// file's release after close(2) returned; like `update`, `copy` and `disable`, `export` must
/// not be refused as "open" for a file already closed.
#[test]
fn export_right_after_reading_the_shadow_is_taken() {
    let v = Vols::new();
    let Some(a) = Mount::start("") else {
        return;
    };
    for i in 0..20 {
        let name = format!("q{i}");
        let sv = ind_set(&a, &v, &name, SIZE, CHUNK, 20 + i);
        assert_image(
            &a.read(&format!("sets/{name}/shadow")),
            &file_bytes(&sv.master),
            "the copy",
        );
        if let Err((errno, reply)) = a.ctl(&format!("sets/{name}/ctl"), "export") {
            panic!("export of {name} right after reading its shadow: errno {errno}, {reply:?}");
        }
        assert_eq!(a.status(&name)["state"], "exported");
    }
}
