//! Crash safety through the real mount: the daemon is SIGKILLed while a writer hammers a
//! dependent master (and an independent copy of the same master runs); after each restart
//! every shadow reads exactly its point in time and every set is listed again.

mod common;

use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_same, file_bytes, pattern};

const SIZE: u64 = 8 << 20;

fn rounds() -> u64 {
    std::env::var("IIFS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Hammer the master with writes until the mount dies; returns how many landed.
fn hammer(path: std::path::PathBuf, seed: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) else {
        return;
    };
    let mut x = seed | 1;
    while !stop.load(Ordering::SeqCst) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 512 + (x % 200_000) as usize;
        let off = (x >> 20) % (SIZE - len as u64);
        match f.write_all_at(&pattern(len, x), off) {
            Ok(()) => {
                done.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[test]
fn sigkill_under_load_never_moves_the_point_in_time() {
    let mut m = mount_or_skip!();
    let master = m.volume("m.img", SIZE, 1);
    let s_dep = m.volume("dep.img", SIZE, 0);
    let s_ind = m.volume("ind.img", SIZE, 0);
    let b_dep = m.volume("dep.bmp", 0, 0);
    let b_ind = m.volume("ind.bmp", 0, 0);
    m.ok(
        "ctl",
        &format!("enable dep {master} {s_dep} {b_dep} dep chunk_size=16384"),
    );
    let mut dep_pit = file_bytes(&master);
    // A slow independent copy, so kills land in the middle of it and it must resume.
    m.ok(
        "ctl",
        &format!("enable ind {master} {s_ind} {b_ind} ind chunk_size=4096 delay=5 units=8"),
    );
    let ind_pit = dep_pit.clone();
    let mut total_writes = 0;
    for round in 0..rounds() {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        // Eight writers: first writes that meet others waiting for their flush run on
        // threads of their own, and the kill must find that path as safe as the other.
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (p, s, d) = (m.path("sets/dep/master"), stop.clone(), done.clone());
                std::thread::spawn(move || hammer(p, round * 31 + w + 1, s, d))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + (round * 37) % 150));
        m.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            let _ = w.join();
        }
        let n = done.load(Ordering::SeqCst);
        total_writes += n;
        m.start_again();
        assert_eq!(
            m.set_names(),
            vec!["dep".to_string(), "ind".to_string()],
            "round {round}: sets listed again"
        );
        assert_same(
            &m.read("sets/dep/shadow"),
            &dep_pit,
            &format!("round {round}: dependent shadow after {n} writes"),
        );
        assert_same(
            &m.read("sets/ind/shadow"),
            &ind_pit,
            &format!("round {round}: independent shadow"),
        );
        assert_same(
            &m.read("sets/dep/master"),
            &file_bytes(&master),
            "master file shows the backing file",
        );
        // Every few rounds take a new point in time on the dependent set.
        if round % 4 == 3 {
            m.set_ok("dep", "update shadow");
            dep_pit = file_bytes(&master);
        }
    }
    assert!(
        total_writes > 50,
        "the writers did work ({total_writes} writes)"
    );
    let st = m.status("ind");
    assert!(st["state"] == "copying" || st["state"] == "idle", "{st:?}");
    m.set_ok("ind", "params 0 100");
    m.set_ok("ind", "wait");
    assert_same(
        &file_bytes(&s_ind),
        &ind_pit,
        "the resumed copy finished with the point in time",
    );
}

#[test]
fn a_clean_restart_resumes_an_interrupted_copy() {
    let mut m = mount_or_skip!();
    let (master, shadow, bitmap) = m.volumes("", 4 << 20, 2);
    let pit = file_bytes(&master);
    m.ok(
        "ctl",
        &format!("enable ind {master} {shadow} {bitmap} r chunk_size=4096 delay=20 units=16"),
    );
    std::thread::sleep(Duration::from_millis(100));
    m.restart();
    let st = m.status("r");
    assert_eq!(
        st["state"], "copying",
        "the copy is remembered across a restart: {st:?}"
    );
    assert!(
        st["chunks_to_copy"].parse::<u64>().unwrap() < 1024,
        "copied chunks are not copied again"
    );
    m.write_at("sets/r/master", 4096 * 1000, &pattern(8192, 3));
    m.set_ok("r", "params 0 100");
    m.set_ok("r", "wait");
    assert_same(
        &file_bytes(&shadow),
        &pit,
        "resumed copy gives the point in time",
    );
}

/// A set whose volume is gone at start stays visible (status and ctl only), says why, refuses
/// everything but `disable`, which forgets it; a fixed volume and a restart bring it back.
#[test]
fn a_set_that_cannot_come_back_is_shown_offline_and_can_be_forgotten() {
    let Some(mut m) = common::Mount::start("") else {
        return;
    };
    let (master, shadow, bitmap) = m.volumes("", 1 << 20, 3);
    m.ok(
        "ctl",
        &format!("enable dep {master} {shadow} {bitmap} gone"),
    );
    m.stop();
    let aside = format!("{shadow}.aside");
    std::fs::rename(&shadow, &aside).unwrap();
    m.start_again();

    assert_eq!(m.set_names(), vec!["gone".to_string()]);
    let mut files: Vec<String> = std::fs::read_dir(m.path("sets/gone"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["ctl", "status"]);
    let st = m.status("gone");
    assert_eq!(st["state"], "offline");
    assert_eq!(st["shadow"], shadow);
    assert!(
        st["last_error"].contains("could not be restored") && st["last_error"].contains(&shadow),
        "{st:?}"
    );
    let global = String::from_utf8(m.read("status")).unwrap();
    assert!(global.contains("gone - offline 0"), "{global}");
    let (errno, reply) = m.ctl("sets/gone/ctl", "update shadow").unwrap_err();
    assert_eq!(errno, libc::EPERM, "{reply}");
    assert!(reply.contains("could not be restored"), "{reply}");

    // Fixed and restarted: the set is back, whole.
    std::fs::rename(&aside, &shadow).unwrap();
    m.restart();
    assert_eq!(m.status("gone")["state"], "idle");
    assert!(m.path("sets/gone/master").exists());

    // Gone again, then forgotten with disable: not listed, not in the registry, not back.
    m.stop();
    std::fs::rename(&shadow, &aside).unwrap();
    m.start_again();
    m.set_ok("gone", "disable");
    assert!(m.set_names().is_empty());
    let registry = std::fs::read_to_string(m.state.join("iifs.yaml")).unwrap_or_default();
    assert!(!registry.contains("gone"), "{registry}");
    m.restart();
    assert!(m.set_names().is_empty());
}
