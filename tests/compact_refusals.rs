//! Refused overflow and attach commands (issue 10) through the real mount: each gives its
//! errno on the write(2) to ctl, an `error:` sentence read back on the same open file, and
//! changes nothing (status of every set and overflow, the volumes' bytes).

mod common;

use std::fs;

use common::refusal::{self, assert_says_why, Snapshot};
use common::{file_bytes, Mount};

const MIB: u64 = 1 << 20;
const CH: u64 = 4096;

/// What a mount looks like: the global status, the volume list, every set's and every
/// overflow's status text, and the listing of the tree's directories.
fn snapshot(m: &Mount) -> Snapshot {
    let mut snap = Snapshot::new();
    for f in ["status", "volumes"] {
        snap.tree_file(m, format!("the {f} file"), f);
    }
    for dir in ["sets", "overflow"] {
        let names = listing(m, dir);
        snap.text(format!("the listing of {dir}"), names.join("\n"));
        for n in names {
            let files = listing(m, &format!("{dir}/{n}"));
            snap.text(format!("the listing of {dir}/{n}"), files.join("\n"))
                .tree_file(
                    m,
                    format!("the status of {dir}/{n}"),
                    &format!("{dir}/{n}/status"),
                );
        }
    }
    snap
}

/// What a refused command must leave as it was: what the mount looks like, the bytes of every
/// volume file and what the shadows of `c`, `c2` and `d` read.
fn everything(fx: &Fx) -> Snapshot {
    let m = &fx.m;
    let mut snap = snapshot(m);
    for (role, bytes) in fx.all_bytes() {
        snap.add(format!("the bytes of volume {role}"), Some(bytes));
    }
    for s in ["c", "c2", "d"] {
        snap.add(
            format!("what set {s}'s shadow reads"),
            Some(m.read(&format!("sets/{s}/shadow"))),
        );
    }
    snap
}

/// The sorted names in directory `rel` of the tree.
fn listing(m: &Mount, rel: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(m.path(rel))
        .unwrap_or_else(|e| panic!("list {rel}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The fixture every refusal test starts from:
/// - `c`: compact (1 MiB master, 32 slots of 4 KiB) with overflow `pool` attached and 8
///   chunks in it;
/// - `c2`: compact without overflow;
/// - `d`: full-size dependent set; `i`: independent set (copied);
/// - `spare`: an initialised overflow no set uses (4 KiB chunks); `big`: one of 64 KiB chunks.
struct Fx {
    m: Mount,
    vols: Vec<(String, String)>, // (role, path)
}

impl Fx {
    fn path(&self, role: &str) -> String {
        self.vols
            .iter()
            .find(|(r, _)| r == role)
            .unwrap_or_else(|| panic!("no volume {role}"))
            .1
            .clone()
    }

    fn all_bytes(&self) -> Vec<(String, Vec<u8>)> {
        self.vols
            .iter()
            .map(|(r, p)| (r.clone(), file_bytes(p)))
            .collect()
    }
}

fn fixture() -> Option<Fx> {
    let m = common::Mount::start("")?;
    let mut vols = Vec::new();
    let mut v = |role: &str, size: u64, seed: u64| {
        let p = m.volume(&format!("{role}.img"), size, seed);
        vols.push((role.to_string(), p.clone()));
        p
    };
    let opts = "chunk_size=4096 durability=relaxed";
    let (cm, cs, cb) = (v("c-m", MIB, 1), v("c-s", MIB / 8, 0), v("c-b", 0, 0));
    let (c2m, c2s, c2b) = (v("c2-m", MIB, 2), v("c2-s", MIB / 8, 0), v("c2-b", 0, 0));
    let (dm, ds, db) = (v("d-m", MIB, 3), v("d-s", MIB, 0), v("d-b", 0, 0));
    let (im, is, ib) = (v("i-m", MIB, 4), v("i-s", MIB, 0), v("i-b", 0, 0));
    let pool = v("pool", MIB, 0);
    let spare = v("spare", MIB, 0);
    let big = v("big", 4 * MIB, 0);
    v("plain-zero", MIB, 0);
    v("plain-data", MIB, 5);
    v("tiny1", CH, 6);
    v("tiny15", CH + CH / 2, 7);
    v("tiny64k", 65536, 8);
    m.ok("ctl", &format!("enable dep {cm} {cs} {cb} c {opts}"));
    m.ok("ctl", &format!("enable dep {c2m} {c2s} {c2b} c2 {opts}"));
    m.ok("ctl", &format!("enable dep {dm} {ds} {db} d {opts}"));
    m.ok("ctl", &format!("enable ind {im} {is} {ib} i {opts}"));
    m.set_ok("i", "wait");
    assert_eq!(m.status("c")["type"], "compact");
    assert_eq!(m.status("c2")["type"], "compact");
    assert_eq!(m.status("d")["type"], "dependent");
    assert_eq!(m.status("i")["type"], "independent");
    m.ok("ctl", &format!("overflow init {pool} pool chunk_size=4096"));
    m.ok(
        "ctl",
        &format!("overflow init {spare} spare chunk_size=4096"),
    );
    m.ok("ctl", &format!("overflow init {big} big chunk_size=65536"));
    m.set_ok("c", "attach pool");
    for k in 0..40u64 {
        m.write_at("sets/c/master", k * 6 * CH, &[k as u8 + 1; 100]);
    }
    let st = m.status("c");
    assert_eq!(
        (
            st["shadow_chunks_used"].as_str(),
            st["overflow_chunks_used"].as_str()
        ),
        ("32", "8"),
        "{st:?}"
    );
    Some(Fx { m, vols })
}

/// `cmd` on `rel` is refused with `errno`, a sentence, and nothing changes.
#[track_caller]
fn refused_unchanged(fx: &Fx, rel: &str, cmd: &str, errno: i32) -> String {
    let reply = refusal::refused_unchanged(&fx.m, rel, cmd, errno, || everything(fx));
    assert_says_why(&reply, 3, &format!("'{cmd}'"));
    reply
}

/// A removed overflow: its status no longer opens, and its directory is gone once the
/// kernel's entry cache (1 s) lets go of it.
#[track_caller]
fn assert_gone(m: &Mount, rel: &str) {
    assert!(
        fs::File::open(m.path(&format!("{rel}/status"))).is_err(),
        "{rel}/status still opens after the overflow was deleted"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while m.path(rel).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{rel} is still listed 3 s after it was deleted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

macro_rules! fixture_or_skip {
    () => {
        match fixture() {
            Some(f) => f,
            None => return,
        }
    };
}

#[test]
fn attach_to_an_independent_set_is_refused() {
    let fx = fixture_or_skip!();
    refused_unchanged(&fx, "sets/i/ctl", "attach spare", libc::EINVAL);
    let p = fx.path("spare");
    refused_unchanged(&fx, "sets/i/ctl", &format!("attach {p}"), libc::EINVAL);
}

#[test]
fn attach_to_a_full_size_dependent_set_is_refused() {
    let fx = fixture_or_skip!();
    refused_unchanged(&fx, "sets/d/ctl", "attach spare", libc::EINVAL);
    let p = fx.path("spare");
    refused_unchanged(&fx, "sets/d/ctl", &format!("attach {p}"), libc::EINVAL);
}

#[test]
fn attach_of_a_file_that_is_not_an_initialised_overflow_is_refused() {
    let fx = fixture_or_skip!();
    for role in ["plain-zero", "plain-data", "d-b", "tiny64k"] {
        let p = fx.path(role);
        refused_unchanged(&fx, "sets/c2/ctl", &format!("attach {p}"), libc::EINVAL);
    }
}

#[test]
fn attach_of_an_unknown_name_is_refused() {
    let fx = fixture_or_skip!();
    refused_unchanged(&fx, "sets/c2/ctl", "attach nosuchpool", libc::ENOENT);
}

#[test]
fn a_second_attach_is_refused() {
    let fx = fixture_or_skip!();
    refused_unchanged(&fx, "sets/c/ctl", "attach spare", libc::EEXIST);
    refused_unchanged(&fx, "sets/c/ctl", "attach pool", libc::EEXIST);
    // Also when the set holds no overflow chunks yet.
    let m = &fx.m;
    m.set_ok("c2", "attach spare");
    refused_unchanged(&fx, "sets/c2/ctl", "attach pool", libc::EEXIST);
}

#[test]
fn overflow_init_of_an_overflow_in_use_is_refused() {
    let fx = fixture_or_skip!();
    let p = fx.path("pool");
    refused_unchanged(&fx, "ctl", &format!("overflow init {p}"), libc::EBUSY);
    refused_unchanged(&fx, "ctl", &format!("overflow init {p} other"), libc::EBUSY);
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {p} other chunk_size=4096"),
        libc::EBUSY,
    );
}

#[test]
fn overflow_init_of_a_volume_used_by_a_set_is_refused() {
    let fx = fixture_or_skip!();
    for role in ["c-m", "c-s", "c-b", "d-m", "d-s", "i-b"] {
        let p = fx.path(role);
        refused_unchanged(
            &fx,
            "ctl",
            &format!("overflow init {p} x{role}"),
            libc::EEXIST,
        );
    }
}

#[test]
fn overflow_init_of_a_known_overflow_or_a_taken_name_is_refused() {
    let fx = fixture_or_skip!();
    let spare = fx.path("spare");
    refused_unchanged(&fx, "ctl", &format!("overflow init {spare}"), libc::EEXIST);
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {spare} other"),
        libc::EEXIST,
    );
    let p = fx.path("plain-zero");
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {p} spare"),
        libc::EEXIST,
    );
    refused_unchanged(&fx, "ctl", &format!("overflow init {p} pool"), libc::EEXIST);
}

#[test]
fn an_overflow_smaller_than_two_chunks_is_refused() {
    let fx = fixture_or_skip!();
    let t1 = fx.path("tiny1");
    let t15 = fx.path("tiny15");
    let t64 = fx.path("tiny64k");
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {t1} t1 chunk_size=4096"),
        libc::EINVAL,
    );
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {t15} t15 chunk_size=4096"),
        libc::EINVAL,
    );
    // 64 KiB with the default chunk size of 64 KiB.
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {t64} t64"),
        libc::EINVAL,
    );
    assert!(!fx.m.path("overflow/t1").exists());
    // Two chunks is enough (one data chunk).
    let two = fx.m.volume("two.img", 2 * CH, 0);
    fx.m.ok("ctl", &format!("overflow init {two} two chunk_size=4096"));
    let st = fs::read_to_string(fx.m.path("overflow/two/status")).unwrap();
    assert!(st.contains("chunks_total: 1\n"), "{st}");
}

#[test]
fn attach_of_an_overflow_with_another_chunk_size_is_refused() {
    let fx = fixture_or_skip!();
    refused_unchanged(&fx, "sets/c2/ctl", "attach big", libc::EINVAL);
    let p = fx.path("big");
    refused_unchanged(&fx, "sets/c2/ctl", &format!("attach {p}"), libc::EINVAL);
}

#[test]
fn overflow_delete_of_one_in_use_is_refused() {
    let fx = fixture_or_skip!();
    refused_unchanged(&fx, "ctl", "overflow delete pool", libc::EBUSY);
    refused_unchanged(&fx, "overflow/pool/ctl", "delete", libc::EBUSY);
    refused_unchanged(&fx, "ctl", "overflow delete nosuchpool", libc::ENOENT);
    // Attached but holding no chunks: still in use.
    fx.m.set_ok("c2", "attach spare");
    refused_unchanged(&fx, "ctl", "overflow delete spare", libc::EBUSY);
    refused_unchanged(&fx, "overflow/spare/ctl", "delete", libc::EBUSY);
    // Detached, it goes.
    fx.m.set_ok("c2", "detach");
    fx.m.ok("overflow/spare/ctl", "delete");
    assert_gone(&fx.m, "overflow/spare");
    fx.m.ok("ctl", "overflow delete big");
    assert_gone(&fx.m, "overflow/big");
}

#[test]
fn detach_while_holding_overflow_chunks_is_refused_and_detach_of_none_is_ok() {
    let fx = fixture_or_skip!();
    refused_unchanged(&fx, "sets/c/ctl", "detach", libc::EBUSY);
    let before = snapshot(&fx.m);
    fx.m.set_ok("c2", "detach");
    before.assert_unchanged(
        &snapshot(&fx.m),
        "detach with none attached changes nothing",
    );
}

/// Loop devices made by a test, detached even when it fails half-way.
#[derive(Default)]
struct Loops(Vec<String>);

impl Drop for Loops {
    fn drop(&mut self) {
        for l in self.0.iter().rev() {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(l)
                .output();
        }
    }
}

/// A compact enable whose bitmap is a block device too small for the chunk map: EFBIG, the
/// reply says the size it needs, no set is made and the device is not written.
#[test]
fn a_bitmap_device_too_small_for_a_compact_set_is_refused_with_efbig() {
    let fx = fixture_or_skip!();
    let m = &fx.m;
    let mut loops = Loops::default();
    let small = m.volume("small-bm.img", 4096, 9);
    let dev = common::sh(&format!("losetup -f --show {small}"))
        .trim()
        .to_string();
    loops.0.push(dev.clone());
    // 64 MiB in 4 KiB chunks: 16384 chunks to map.
    let master = m.volume("big-m.img", 64 * MIB, 0);
    let shadow = m.volume("big-s.img", 8 * MIB, 0);
    let dev_before = common::file_bytes(&dev);
    let reply = refused_unchanged(
        &fx,
        "ctl",
        &format!("enable dep {master} {shadow} {dev} big chunk_size=4096"),
        libc::EFBIG,
    );
    assert!(
        reply.chars().any(|c| c.is_ascii_digit()),
        "the reply says the size it needs: {reply:?}"
    );
    assert!(
        common::file_bytes(&dev) == dev_before,
        "the bitmap device was written"
    );
    drop(loops);
}

/// An overflow volume cannot be one of a set's volumes, nor an overflow a file in the mount.
#[test]
fn an_overflow_volume_is_not_a_set_volume_and_not_a_file_in_the_mount() {
    let fx = fixture_or_skip!();
    let m = &fx.m;
    let spare = fx.path("spare");
    let (nm, ns, nb) = (
        m.volume("n-m.img", MIB, 11),
        m.volume("n-s.img", MIB / 8, 0),
        m.volume("n-b.img", 0, 0),
    );
    for cmd in [
        format!("enable dep {spare} {ns} {nb} n"),
        format!("enable dep {nm} {spare} {nb} n"),
        format!("enable dep {nm} {ns} {spare} n"),
    ] {
        let before = snapshot(m);
        let bytes = fx.all_bytes();
        let (errno, reply) = m.ctl("ctl", &cmd).expect_err(&cmd);
        assert!(
            errno != 0 && reply.starts_with("error:"),
            "{cmd}: {errno} {reply:?}"
        );
        before.assert_unchanged(&snapshot(m), &format!("'{cmd}' changed the status"));
        assert!(bytes == fx.all_bytes(), "'{cmd}' changed a volume");
    }
    let mnt = m.mnt.display().to_string();
    for v in ["sets/c/master", "sets/d/shadow", "sets/c/bitmap"] {
        refused_unchanged(
            &fx,
            "ctl",
            &format!("overflow init {mnt}/{v} inside chunk_size=4096"),
            libc::EINVAL,
        );
    }
}

/// Overflows without sets are remembered across a restart, deleted ones are not; `overflow
/// init` without a name takes the volume's file name and the default chunk size (64 KiB).
#[test]
fn overflows_are_remembered_and_named_after_their_file_by_default() {
    let Some(mut fx) = fixture() else {
        return;
    };
    let v = fx.m.volume("plainname.ovf", MIB, 0);
    fx.m.ok("ctl", &format!("overflow init {v}"));
    let st = fs::read_to_string(fx.m.path("overflow/plainname.ovf/status")).unwrap();
    assert!(st.contains("name: plainname.ovf\n"), "{st}");
    assert!(st.contains(&format!("volume: {v}\n")), "{st}");
    assert!(st.contains("chunk_size: 65536\n"), "{st}");
    assert!(st.contains("chunks_total: 15\n"), "{st}");
    assert!(st.contains("sets: -\n"), "{st}");
    fx.m.ok("ctl", "overflow delete big");
    let before = snapshot(&fx.m);
    fx.m.restart();
    before.assert_unchanged(&snapshot(&fx.m), "a restart changes nothing");
    assert!(!fx.m.path("overflow/big").exists());
    // A deleted overflow's volume can be initialised again.
    let big = fx.path("big");
    fx.m.ok("ctl", &format!("overflow init {big} big2 chunk_size=4096"));
    let st = fs::read_to_string(fx.m.path("overflow/big2/status")).unwrap();
    assert!(st.contains("chunk_size: 4096\n"), "{st}");
}

/// Malformed `overflow init` commands: a chunk size that is not a power of two, a name with
/// a slash, a volume that does not exist (which is not made).
#[test]
fn malformed_overflow_init_is_refused() {
    let fx = fixture_or_skip!();
    let p = fx.path("plain-zero");
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {p} odd chunk_size=5000"),
        libc::EINVAL,
    );
    refused_unchanged(&fx, "ctl", &format!("overflow init {p} a/b"), libc::EINVAL);
    let missing = fx.m.dir.path().join("no-such.ovf");
    let m = &fx.m;
    let before = snapshot(m);
    let (errno, reply) = m
        .ctl(
            "ctl",
            &format!("overflow init {} nosuch", missing.display()),
        )
        .expect_err("overflow init of a missing volume");
    assert_eq!(errno, libc::ENOENT, "{reply}");
    assert!(reply.starts_with("error:"), "{reply:?}");
    assert!(!missing.exists(), "overflow init made the missing volume");
    before.assert_unchanged(&snapshot(m), "overflow init of a missing volume");
}

/// The same volumes under other names (a symbolic link, a path with `..` or `//`): overflow
/// init of an overflow in use, or of a set's volume, is refused as under its own name.
#[test]
fn overflow_init_through_another_name_of_a_volume_in_use_is_refused() {
    let fx = fixture_or_skip!();
    let m = &fx.m;
    let dir = m.dir.path();
    let link_pool = dir.join("link-pool");
    std::os::unix::fs::symlink(fx.path("pool"), &link_pool).unwrap();
    let link_master = dir.join("link-c-master");
    std::os::unix::fs::symlink(fx.path("c-m"), &link_master).unwrap();
    let dotted = format!(
        "{}/../{}/pool.img",
        dir.display(),
        dir.file_name().unwrap().to_string_lossy()
    );
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {} lp chunk_size=4096", link_pool.display()),
        libc::EBUSY,
    );
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {dotted} dp chunk_size=4096"),
        libc::EBUSY,
    );
    refused_unchanged(
        &fx,
        "ctl",
        &format!("overflow init {} lm chunk_size=4096", link_master.display()),
        libc::EEXIST,
    );
}
