//! ext4 on a loop device over a set's master; the shadow, on a second loop device, mounts
//! read-only and shows the file system as it was at the update.

mod common;

use common::loops::Cleanup;
use common::sh;

#[test]
fn ext4_on_the_master_and_its_shadow_mounted_read_only() {
    let m = mount_or_skip!();
    let size = 64 << 20;
    let (master, shadow, bitmap) = m.volumes("", size, 0);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} fs"));
    let mut c = Cleanup::default();
    let dev = c.loop_dev(m.path("sets/fs/master"), false);
    sh(&format!(
        "mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 {dev}"
    ));
    let live = m.dir.path().join("live");
    c.mount(&dev, &live, "");
    sh(&format!(
        "cd {d} && echo 'version one' > kept.txt && echo doomed > gone.txt && \
         dd if=/dev/urandom of=big.bin bs=1M count=8 status=none && sha256sum big.bin > big.sum && sync",
        d = live.display()
    ));
    let big_sum = std::fs::read_to_string(live.join("big.sum")).unwrap();

    // The administrator's consistent point in time: freeze, update, thaw.
    sh(&format!("fsfreeze -f {}", live.display()));
    m.set_ok("fs", "update shadow");
    sh(&format!("fsfreeze -u {}", live.display()));

    sh(&format!(
        "cd {d} && echo 'version two' > kept.txt && rm gone.txt && echo new > added.txt && \
         dd if=/dev/urandom of=big.bin bs=1M count=8 conv=notrunc status=none && sync",
        d = live.display()
    ));
    assert!(m.status("fs")["chunks_differ"].parse::<u64>().unwrap() > 0);

    let sdev = c.loop_dev(m.path("sets/fs/shadow"), true);
    let snap = m.dir.path().join("snap");
    c.mount(&sdev, &snap, "-o ro,noload");
    let read =
        |f: &str| std::fs::read_to_string(snap.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert_eq!(read("kept.txt"), "version one\n");
    assert_eq!(read("gone.txt"), "doomed\n");
    assert!(
        !snap.join("added.txt").exists(),
        "a file made after the update is not in the shadow"
    );
    let sum = sh(&format!("cd {} && sha256sum big.bin", snap.display()));
    assert_eq!(
        sum, big_sum,
        "8 MiB rewritten after the update still read as before in the shadow"
    );
    // The live file system moved on.
    assert_eq!(
        std::fs::read_to_string(live.join("kept.txt")).unwrap(),
        "version two\n"
    );
    drop(c);
    // And the shadow's file system checks clean.
    sh(&format!(
        "e2fsck -fn {} >/dev/null",
        m.path("sets/fs/shadow").display()
    ));
}
