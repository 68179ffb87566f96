//! Permissions as a second, unprivileged user (issue 16 item 7), with and without
//! `allow_other`: what that user may see, read, write and command through the mount, and what
//! the daemon keeps to itself (bitmap file, state directory, registry).
//!
//! tests/hardening_fs.rs (`another_user_gets_no_more_access_through_the_mount_than_directly`)
//! already checks, as user nobody: status files readable, `abort`/`disable` on a set's ctl and
//! `enable` on the global ctl refused, a 0600 master unreadable, a dependent shadow over an
//! unreadable master unreadable (and readable once the master is), a 0644 shadow not writable,
//! a master owned by the user readable, the modes of ctl and status files, and
//! `default_permissions` in /proc/mounts. The tests here do not repeat those; they add the
//! mount without `allow_other`, the listing and the other readable files, the group and
//! overflow ctls and more commands (checked to change no status, registry byte or volume
//! byte), writes where the backing files grant them and where they do not, group bits,
//! owners that differ, independent shadows, `bitmap` and `overflow`, `iiadm` run as the user,
//! and the modes of the state directory and the registry.
//!
//! The user is uid/gid 64123 (no account needed), run with `setpriv --clear-groups`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::refusal::Snapshot;
use common::{file_bytes, Mount};

const IIADM: &str = env!("CARGO_BIN_EXE_iiadm");
const CHUNK: u64 = 64 * 1024;
/// The unprivileged user (and its group).
const UID: u32 = 64123;
/// A volume file the user owns and anyone may read and write.
const MINE: Shown = Shown(0o666, UID, UID);

/// One file-system call as the user, in perl so the errno comes back exactly (as the exit
/// status): `stat`, `ls` (the names of a directory, one a line), `read` (64 KiB of a file
/// from offset DATA, or from 0 when DATA is empty), `open_w` (O_WRONLY), `open_rw` (O_RDWR),
/// `write` (DATA at offset 0 in one write(2), O_WRONLY), `cmd` (DATA as a shell's
/// `echo CMD > FILE` writes it: O_WRONLY|O_CREAT|O_TRUNC, one write), `trunc` (to 0 bytes).
const PERL: &str = r#"
use Fcntl;
my ($op, $p, $d) = @ARGV;
if ($op eq "stat") { my @s = stat($p) or exit($! + 0); exit 0 }
if ($op eq "ls") { opendir(my $h, $p) or exit($! + 0); my @e = readdir($h) or exit($! + 0);
    print join("\n", sort grep { !/^\.\.?$/ } @e); exit 0 }
if ($op eq "read") { sysopen(my $f, $p, O_RDONLY) or exit($! + 0); my $b;
    if ($d ne "") { defined(sysseek($f, $d, 0)) or exit($! + 0) }
    defined(sysread($f, $b, 65536)) or exit($! + 0); print $b; exit 0 }
if ($op eq "open_w") { sysopen(my $f, $p, O_WRONLY) or exit($! + 0); exit 0 }
if ($op eq "open_rw") { sysopen(my $f, $p, O_RDWR) or exit($! + 0); exit 0 }
if ($op eq "write") { sysopen(my $f, $p, O_WRONLY) or exit($! + 0);
    defined(syswrite($f, $d)) or exit($! + 0); exit 0 }
if ($op eq "cmd") { sysopen(my $f, $p, O_WRONLY | O_CREAT | O_TRUNC) or exit($! + 0);
    defined(syswrite($f, "$d\n")) or exit($! + 0); exit 0 }
if ($op eq "trunc") { truncate($p, 0) or exit($! + 0); exit 0 }
exit 250;
"#;

/// `args` run as the user (uid and gid `UID`, no supplementary groups).
fn user_cmd(args: &[&str]) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={UID}"))
        .arg(format!("--regid={UID}"))
        .arg("--clear-groups")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv")
}

/// File-system call `op` on `path` as the user: its output, or the errno.
fn user(op: &str, path: &Path, data: &str) -> Result<Vec<u8>, i32> {
    let p = path.to_string_lossy();
    let out = user_cmd(&["perl", "-e", PERL, op, &p, data]);
    match out.status.code() {
        Some(0) => Ok(out.stdout),
        Some(code) if code < 200 => Err(code),
        _ => panic!("{op} {p} as uid {UID}: perl failed: {out:?}"),
    }
}

/// The errno name, for messages.
fn errno_name(e: i32) -> String {
    format!("{e} ({})", std::io::Error::from_raw_os_error(e))
}

/// `op` on `rel` (in the mount) as the user must fail with EACCES or EPERM.
#[track_caller]
fn user_denied(m: &Mount, op: &str, rel: &str, data: &str) {
    match user(op, &m.path(rel), data) {
        Ok(_) => panic!("uid {UID} may {op} {rel} ({data:?})"),
        Err(e) if e == libc::EACCES || e == libc::EPERM => {}
        Err(e) => panic!(
            "{op} {rel} as uid {UID}: errno {}, expected EACCES or EPERM",
            errno_name(e)
        ),
    }
}

/// `op` on `rel` as the user must succeed; its output.
#[track_caller]
fn user_ok(m: &Mount, op: &str, rel: &str, data: &str) -> Vec<u8> {
    user(op, &m.path(rel), data).unwrap_or_else(|e| {
        panic!(
            "{op} {rel} as uid {UID} failed: errno {}\nlog:\n{}",
            errno_name(e),
            m.log()
        )
    })
}

fn chmod(path: &str, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {path}: {e}"));
}

fn chown(path: &str, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {path}: {e}"));
}

/// Mode bits, uid and gid of a file; shown as `0644 0:0`.
#[derive(Clone, Copy, PartialEq)]
struct Shown(u32, u32, u32);

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o} {}:{}", self.0, self.1, self.2)
    }
}

/// The mode bits and owner of a file of the mount, as root sees them.
fn shown(m: &Mount, rel: &str) -> Shown {
    let meta = fs::metadata(m.path(rel)).unwrap_or_else(|e| panic!("stat {rel}: {e}"));
    Shown(meta.mode() & 0o777, meta.uid(), meta.gid())
}

/// Let the user walk to the mount (the test dir is 0700 as made).
fn open_the_way(m: &Mount) {
    chmod(&m.dir.path().to_string_lossy(), 0o755);
}

/// A set `name` (`ind` or `dep`) over fresh volumes `m{name}.img`, `s{name}.img` (whose modes
/// and owners are set first, before the mount has looked at them) and
/// `b{name}.img`; returns the master's and shadow's paths.
fn set_with(m: &Mount, ty: &str, name: &str, master: Shown, shadow: Shown) -> (String, String) {
    let (mp, sp, bp) = m.volumes(name, 16 * CHUNK, 7 + name.len() as u64);
    for (p, Shown(mode, uid, gid)) in [(&mp, master), (&sp, shadow)] {
        chown(p, uid, gid);
        chmod(p, mode);
    }
    m.ok("ctl", &format!("enable {ty} {mp} {sp} {bp} {name}"));
    (mp, sp)
}

/// Everything a refused command could change: every set's status, the groups' and overflows'
/// status, the registry file's bytes and the volume files' bytes.
fn everything(m: &Mount, groups: &[&str], overflows: &[&str], files: &[&str]) -> Snapshot {
    let mut s = Snapshot::new();
    s.sets(m, "");
    for g in groups {
        s.tree_file(m, format!("group {g}"), &format!("groups/{g}/status"));
    }
    for o in overflows {
        s.tree_file(m, format!("overflow {o}"), &format!("overflow/{o}/status"));
    }
    let registry = m.state.join("iifs.yaml");
    s.add("the registry", fs::read(&registry).ok());
    s.files(files);
    s
}

#[test]
fn without_allow_other_another_user_cannot_even_stat_the_mount() {
    let m = mount_or_skip!();
    open_the_way(&m);
    // Modes that would let anyone do anything: volumes the user owns, world-writable.
    let (master, shadow) = set_with(&m, "dep", "d", MINE, MINE);
    let files = [master.as_str(), shadow.as_str()];
    let before = everything(&m, &[], &[], &files);
    // The user may reach the mount point (its parent is 0755)...
    user("stat", m.dir.path(), "").expect("the user cannot reach the test dir");
    // ...but nothing in or of the mount: not even the root's attributes.
    for (op, rel, data) in [
        ("stat", "", ""),
        ("ls", "", ""),
        ("stat", "status", ""),
        ("read", "status", ""),
        ("read", "version", ""),
        ("read", "volumes", ""),
        ("read", "events", ""),
        ("read", "sets/d/status", ""),
        ("read", "sets/d/master", ""),
        ("read", "sets/d/shadow", ""),
        ("write", "sets/d/master", "x"),
        ("write", "sets/d/shadow", "x"),
        ("cmd", "sets/d/ctl", "abort"),
        ("cmd", "ctl", "group create g"),
    ] {
        match user(op, &m.path(rel), data) {
            Err(e) if e == libc::EACCES => {}
            other => panic!(
                "{op} '{rel}' as uid {UID} without allow_other: {:?}, expected EACCES",
                other.map_err(errno_name)
            ),
        }
    }
    // iiadm as that user says so, and exits 1 (not a panic's 101).
    let mnt = m.mnt.to_string_lossy().into_owned();
    let unclear: Vec<String> = [
        vec!["-l"],
        vec!["-i", "d"],
        vec!["-u", "s", "d"],
        vec!["-C", "g"],
    ]
    .into_iter()
    .filter_map(|args| {
        let mut argv = vec![IIADM, "--mount", &mnt];
        argv.extend(&args);
        let out = user_cmd(&argv);
        let what = format!("iiadm {}", args.join(" "));
        clear_refusal(&out, &what).err()
    })
    .collect();
    // Root still sees and does everything, and nothing changed.
    before.assert_unchanged(
        &everything(&m, &[], &[], &files),
        "the other user's attempts",
    );
    m.set_ok("d", "params 5 5");
    assert_eq!(m.status("d")["params"], "5 5");
    assert!(
        unclear.is_empty(),
        "iiadm as uid {UID} on a mount without allow_other:\n{}",
        unclear.join("\n")
    );
}

/// iiadm refused clearly: exit status 1 (not a panic's 101), one line that says permission
/// was denied; else what it did instead.
fn clear_refusal(out: &Output, what: &str) -> Result<(), String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let clear = out.status.code() == Some(1)
        && !err.contains("panicked")
        && err.to_lowercase().contains("permission denied")
        && err.trim().lines().count() == 1;
    if clear {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} with {:?}, not a clear refusal (exit 1, one line saying permission \
             was denied)",
            out.status,
            err.trim()
        ))
    }
}

#[track_caller]
fn assert_clear_refusal(out: &Output, what: &str) {
    if let Err(e) = clear_refusal(out, what) {
        panic!("{e}");
    }
}

#[test]
fn with_allow_other_the_tree_lists_and_reads_as_its_modes_say() {
    let m = mount_or_skip!("allow_other");
    open_the_way(&m);
    set_with(&m, "dep", "d", Shown(0o644, 0, 0), Shown(0o644, 0, 0));
    let big = m.volume("mc.img", 16 * CHUNK, 5);
    let small = m.volume("sc.img", 4 * CHUNK, 0);
    let bitmap = m.volume("bc.img", 0, 0);
    let ovf = m.volume("ovf.img", 8 * CHUNK, 0);
    for p in [&big, &small, &ovf] {
        chmod(p, 0o644);
    }
    m.ok("ctl", &format!("enable dep {big} {small} {bitmap} c"));
    m.ok("ctl", &format!("overflow init {ovf} pool"));
    m.set_ok("c", "attach pool");
    m.ok("ctl", "group create g");
    m.set_ok("d", "group g");
    // Listing: every directory lists as it does for root.
    for rel in [
        "",
        "sets",
        "sets/d",
        "sets/c",
        "groups",
        "groups/g",
        "overflow",
        "overflow/pool",
    ] {
        let mut names: Vec<String> = fs::read_dir(m.path(rel))
            .expect("list as root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let as_user = String::from_utf8(user_ok(&m, "ls", rel, "")).expect("names");
        assert_eq!(as_user, names.join("\n"), "'{rel}' listed as uid {UID}");
    }
    assert_eq!(
        String::from_utf8(user_ok(&m, "ls", "sets/c", "")).unwrap(),
        "bitmap\nctl\nmaster\noverflow\nshadow\nstatus"
    );
    // The files for reading read as root reads them.
    for rel in [
        "status",
        "version",
        "volumes",
        "sets/d/status",
        "groups/g/status",
        "groups/g/members",
        "overflow/pool/status",
    ] {
        let text = user_ok(&m, "read", rel, "");
        assert!(!text.is_empty(), "{rel} read empty as uid {UID}");
        assert_eq!(text, m.read(rel), "{rel} reads otherwise as uid {UID}");
        assert_eq!(
            shown(&m, rel),
            Shown(0o444, 0, 0),
            "mode and owner of {rel}"
        );
        user_denied(&m, "open_w", rel, "");
    }
    // The change stream: the state of every object at once (no change needed to read it).
    let events = String::from_utf8(user_ok(&m, "read", "events", "")).expect("events");
    for name in ["\"name\":\"d\"", "\"name\":\"g\"", "\"name\":\"pool\""] {
        assert!(events.contains(name), "events as uid {UID}: {events}");
    }
    assert_eq!(shown(&m, "events"), Shown(0o444, 0, 0));
    user_denied(&m, "open_w", "events", "");
    // Directories: readable and searchable, not writable.
    for rel in ["", "sets", "sets/d", "groups/g", "overflow/pool"] {
        assert_eq!(
            shown(&m, rel),
            Shown(0o755, 0, 0),
            "mode and owner of '{rel}'"
        );
    }
    // The daemon's own files: `bitmap` and `overflow` are 0400 root, whatever their backing
    // files' modes (the overflow's here 0644): the user neither reads nor writes them.
    for rel in ["sets/d/bitmap", "sets/c/bitmap", "sets/c/overflow"] {
        assert_eq!(
            shown(&m, rel),
            Shown(0o400, 0, 0),
            "mode and owner of {rel}"
        );
        user_denied(&m, "read", rel, "");
        user_denied(&m, "open_w", rel, "");
    }
    // Every ctl (global, set, group, overflow) is 0200 root: the user cannot open it at all,
    // not even to read a reply.
    for rel in ["ctl", "sets/d/ctl", "groups/g/ctl", "overflow/pool/ctl"] {
        assert_eq!(
            shown(&m, rel),
            Shown(0o200, 0, 0),
            "mode and owner of {rel}"
        );
        user_denied(&m, "read", rel, "");
        user_denied(&m, "open_rw", rel, "");
        user_denied(&m, "open_w", rel, "");
    }
    // Nothing can be made in the tree.
    user_denied(&m, "cmd", "sets/new", "x");
    user_denied(&m, "cmd", "newfile", "x");
}

/// The master and shadow of a set as the user may use them: (read master, write master, read
/// shadow, write shadow).
type Access = (bool, bool, bool, bool);

/// Check every access to set `name` as the user: each read as `want` says (a granted read
/// returns the bytes root reads), each write granted or refused with EACCES, a refused write
/// and a refused truncate changing no byte of the backing files.
#[track_caller]
fn check_access(m: &Mount, name: &str, files: (&str, &str), want: Access) {
    let (rm, wm, rs, ws) = want;
    for (file, may_read, may_write) in [("master", rm, wm), ("shadow", rs, ws)] {
        let rel = format!("sets/{name}/{file}");
        if may_read {
            let got = user_ok(m, "read", &rel, "");
            assert_eq!(got, m.read(&rel)[..got.len()], "{rel} as uid {UID}");
            assert_eq!(got.len(), 65536, "{rel} as uid {UID}: a short read");
        } else {
            user_denied(m, "read", &rel, "");
        }
        if !may_write {
            let before = (file_bytes(files.0), file_bytes(files.1));
            user_denied(m, "open_w", &rel, "");
            user_denied(m, "write", &rel, "refused");
            user_denied(m, "trunc", &rel, "");
            assert!(
                before == (file_bytes(files.0), file_bytes(files.1)),
                "a refused write to {rel} changed a backing file"
            );
        }
    }
    if wm {
        // A write of the master as the user: it lands, and the shadow keeps its point in time.
        let image = m.read(&format!("sets/{name}/shadow"));
        user_ok(m, "write", &format!("sets/{name}/master"), "by the user");
        assert_eq!(&file_bytes(files.0)[..11], b"by the user");
        assert_eq!(
            m.read(&format!("sets/{name}/shadow")),
            image,
            "set {name}: the user's master write changed the point-in-time image"
        );
    }
    if ws {
        user_ok(m, "write", &format!("sets/{name}/shadow"), "shadow user");
        assert_eq!(
            &m.read(&format!("sets/{name}/shadow"))[..11],
            b"shadow user"
        );
    }
}

#[test]
fn with_allow_other_a_volume_is_as_open_as_its_backing_files() {
    let m = mount_or_skip!("allow_other");
    open_the_way(&m);
    let root = |mode| Shown(mode, 0, 0);
    let me = |mode| Shown(mode, UID, UID);
    let grp = |mode| Shown(mode, 0, UID);
    // (name, type, master, shadow, what the tree shows for the shadow, the access: read and
    // write of the master, read and write of the shadow, `-` where refused).
    let cases: [(&str, &str, Shown, Shown, Shown, &str); 9] = [
        // World-readable, root's: read, no write.
        ("pub", "dep", root(0o644), root(0o644), root(0o644), "r-r-"),
        // The user's own: read and write both.
        ("own", "dep", me(0o600), me(0o600), me(0o600), "rwrw"),
        // Readable by group bits (the user's gid is the files' group).
        ("grp", "dep", grp(0o640), grp(0o640), grp(0o640), "r-r-"),
        // Writable by group bits.
        ("grw", "dep", grp(0o660), grp(0o660), grp(0o660), "rwrw"),
        // A world-writable master beside a root-only-writable shadow: the dependent shadow
        // shows the bits both grant.
        ("ww", "dep", root(0o666), root(0o644), root(0o644), "rwr-"),
        // The user owns the master, root the shadow: owners differ, so the shadow is root's
        // alone (0600), though its own file is 0644.
        ("mix", "dep", me(0o600), root(0o644), root(0o600), "rw--"),
        // The user owns the shadow, root the master (0600): the shadow would show the master.
        ("mix2", "dep", root(0o600), me(0o666), root(0o600), "----"),
        // An independent shadow whose copy has finished is its own file alone: readable though
        // the master is not.
        ("ind", "ind", root(0o600), root(0o644), root(0o644), "--r-"),
        // An independent set the user owns: read and write both, and the master's writes do
        // not reach the finished shadow.
        ("indo", "ind", me(0o600), me(0o600), me(0o600), "rwrw"),
    ];
    let mut paths = Vec::new();
    for (name, ty, master, shadow, _, _) in &cases {
        paths.push(set_with(&m, ty, name, *master, *shadow));
        if *ty == "ind" {
            m.set_ok(name, "wait");
        }
    }
    for ((name, _, master, _, shows, access), (mp, sp)) in cases.iter().zip(&paths) {
        assert_eq!(
            shown(&m, &format!("sets/{name}/master")),
            *master,
            "set {name}: the master shows its backing file's mode and owner"
        );
        assert_eq!(
            shown(&m, &format!("sets/{name}/shadow")),
            *shows,
            "set {name}: mode and owner of the shadow"
        );
        let before = m.status(name);
        let may: Vec<bool> = access.chars().map(|c| c != '-').collect();
        check_access(&m, name, (mp, sp), (may[0], may[1], may[2], may[3]));
        let after = m.status(name);
        for key in ["state", "params", "type", "last_error"] {
            assert_eq!(before[key], after[key], "set {name}: {key}");
        }
    }
}

#[test]
fn with_allow_other_an_independent_shadow_being_copied_shows_no_more_than_the_master() {
    let m = mount_or_skip!("allow_other");
    open_the_way(&m);
    // The first copy of an independent set is throttled to one chunk per 10 s: while it runs,
    // the shadow's uncopied chunks are read from the master.
    let (mp, sp, bp) = m.volumes("", 16 * CHUNK, 9);
    chmod(&mp, 0o600);
    chmod(&sp, 0o644);
    m.ok(
        "ctl",
        &format!("enable ind {mp} {sp} {bp} s delay=10000 units=1"),
    );
    common::wait_throttled_copy(&m, "s", 16);
    // The last chunk is not copied yet: its bytes through the shadow are the master's.
    let last = (15 * CHUNK) as usize..(16 * CHUNK) as usize;
    assert_eq!(
        m.read("sets/s/shadow")[last.clone()],
        file_bytes(&mp)[last.clone()]
    );
    assert_ne!(file_bytes(&sp)[last.clone()], file_bytes(&mp)[last]);
    // The user may not read the master file, so it may not read its chunks through the shadow.
    user_denied(&m, "read", "sets/s/master", "");
    let shows = shown(&m, "sets/s/shadow");
    match user("read", &m.path("sets/s/shadow"), "") {
        Err(e) if e == libc::EACCES => {}
        other => panic!(
            "uid {UID} reads the shadow of an independent set while its copy runs (shown as \
             {shows:?}), and so chunks of a master (0600 root) it may not read: {:?}",
            other.map(|b| b.len()).map_err(errno_name)
        ),
    }
    m.set_ok("s", "abort");
}

#[test]
fn with_allow_other_a_compact_shadow_shows_no_more_than_its_overflow() {
    let m = mount_or_skip!("allow_other");
    open_the_way(&m);
    // A compact set (a shadow of 2 chunks for a master of 16) whose overflow (8 data chunks)
    // is root's alone, while master and shadow are world-readable.
    let master = m.volume("mc.img", 16 * CHUNK, 6);
    let shadow = m.volume("sc.img", 2 * CHUNK, 0);
    let bitmap = m.volume("bc.img", 0, 0);
    let ovf = m.volume("oc.img", 9 * CHUNK, 0);
    chmod(&master, 0o644);
    chmod(&shadow, 0o644);
    chmod(&ovf, 0o600);
    m.ok("ctl", &format!("enable dep {master} {shadow} {bitmap} c"));
    assert_eq!(m.status("c")["type"], "compact");
    m.ok("ctl", &format!("overflow init {ovf} pool"));
    m.set_ok("c", "attach pool");
    // Six first writes: two chunks preserved in the shadow's slots, four in the overflow.
    let pit = file_bytes(&master);
    for c in 0..6 {
        m.write_at("sets/c/master", c * CHUNK, &[0xEE; 512]);
    }
    let st = m.status("c");
    assert_eq!(common::num(&st, "overflow_chunks_used"), 4, "{st:?}");
    common::assert_same(&m.read("sets/c/shadow"), &pit, "the compact shadow");
    // Chunk 5's point in time is in the overflow file alone, which the user may not read.
    let at = 5 * CHUNK;
    user_denied(&m, "read", "sets/c/overflow", "");
    assert_eq!(
        user("read", Path::new(&ovf), ""),
        Err(libc::EACCES),
        "the user reads the overflow file directly"
    );
    let shows = shown(&m, "sets/c/shadow");
    if let Ok(got) = user("read", &m.path("sets/c/shadow"), &at.to_string()) {
        assert_eq!(got[..], pit[at as usize..(at + CHUNK) as usize]);
        panic!(
            "uid {UID} reads the shadow of a compact set (shown as {shows:?}), and so the \
             chunks kept in its overflow volume (0600 root), which it may not read"
        );
    }
}

#[test]
fn with_allow_other_no_ctl_takes_a_command_from_another_user() {
    let m = mount_or_skip!("allow_other");
    open_the_way(&m);
    // The user owns the volumes, and may read and write them: commands are still root's.
    let (mp, sp) = set_with(&m, "dep", "d", MINE, MINE);
    let (mi, si) = set_with(&m, "ind", "i", MINE, MINE);
    m.set_ok("i", "wait");
    let ovf = m.volume("ovf.img", 8 * CHUNK, 0);
    let spare = m.volume("spare.img", 8 * CHUNK, 0);
    let (m2, s2, b2) = m.volumes("x", 16 * CHUNK, 2);
    for p in [&ovf, &spare, &m2, &s2, &b2] {
        chown(p, UID, UID);
        chmod(p, 0o666);
    }
    m.ok("ctl", &format!("overflow init {ovf} pool"));
    m.ok("ctl", "group create g");
    m.set_ok("i", "group g");
    m.set_ok("d", "params 3 3");
    let files = [
        mp.as_str(),
        sp.as_str(),
        mi.as_str(),
        si.as_str(),
        ovf.as_str(),
        spare.as_str(),
        b2.as_str(),
    ];
    let snap = || everything(&m, &["g"], &["pool"], &files);
    let before = snap();
    let enable = format!("enable dep {m2} {s2} {b2} x");
    let overflow = format!("overflow init {spare} p2");
    for (rel, cmd) in [
        ("ctl", enable.as_str()),
        ("ctl", overflow.as_str()),
        ("ctl", "overflow delete pool"),
        ("ctl", "group create h"),
        ("ctl", "suspend all"),
        ("sets/d/ctl", "update shadow"),
        ("sets/d/ctl", "copy master"),
        ("sets/d/ctl", "params 9 9"),
        ("sets/d/ctl", "suspend"),
        ("sets/d/ctl", "attach pool"),
        ("sets/d/ctl", "group g"),
        ("sets/d/ctl", "reset"),
        ("sets/i/ctl", "export"),
        ("sets/i/ctl", "ungroup"),
        ("sets/i/ctl", "wait"),
        ("groups/g/ctl", "update shadow"),
        ("groups/g/ctl", "rename h"),
        ("groups/g/ctl", "remove i"),
        ("groups/g/ctl", "delete"),
        ("overflow/pool/ctl", "delete"),
    ] {
        user_denied(&m, "cmd", rel, cmd);
        before.assert_unchanged(&snap(), &format!("'{cmd}' on {rel} as uid {UID}"));
    }
    // iiadm as the user: reading works, every command is refused clearly.
    let mnt = m.mnt.to_string_lossy().into_owned();
    let iiadm = |args: &[&str]| {
        let mut argv = vec![IIADM, "--mount", &mnt];
        argv.extend(args);
        user_cmd(&argv)
    };
    let out = iiadm(&["-l"]);
    assert!(out.status.success(), "iiadm -l as uid {UID}: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&mp));
    let out = iiadm(&["-i", "d"]);
    assert!(out.status.success(), "iiadm -i d as uid {UID}: {out:?}");
    for args in [
        vec!["-u", "s", "d"],
        vec!["-n", "-c", "m", "d"],
        vec!["-d", "d"],
        vec!["-P", "1", "1", "d"],
        vec!["-s", "all"],
        vec!["-e", "dep", &m2, &s2, &b2, "x"],
        vec!["-C", "h"],
        vec!["-X", "g"],
        vec!["-Z", "pool"],
        vec!["-g", "g", "-u", "s"],
    ] {
        let out = iiadm(&args);
        assert_clear_refusal(&out, &format!("iiadm {args:?} as uid {UID}"));
        before.assert_unchanged(&snap(), &format!("iiadm {args:?} as uid {UID}"));
    }
    // Root's commands still work.
    m.set_ok("d", "params 4 4");
    assert_eq!(m.status("d")["params"], "4 4");
}

#[test]
fn the_bitmap_file_is_never_writable_even_by_root() {
    let m = mount_or_skip!("allow_other");
    open_the_way(&m);
    let (mp, sp, bp) = m.volumes("", 16 * CHUNK, 4);
    // A bitmap file anyone could write directly, owned by the user.
    chown(&bp, UID, UID);
    chmod(&bp, 0o666);
    m.ok("ctl", &format!("enable dep {mp} {sp} {bp} d"));
    assert_eq!(shown(&m, "sets/d/bitmap"), Shown(0o400, 0, 0));
    let before = file_bytes(&bp);
    for write in [true, false] {
        let e = fs::OpenOptions::new()
            .read(!write)
            .write(true)
            .open(m.path("sets/d/bitmap"))
            .expect_err("root opened the bitmap for writing");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    }
    // Also beside a read-only open (the kernel may serve those reads).
    let reader = fs::File::open(m.path("sets/d/bitmap")).expect("root reads the bitmap");
    let e = fs::OpenOptions::new()
        .write(true)
        .open(m.path("sets/d/bitmap"))
        .expect_err("root opened the bitmap for writing beside a reader");
    assert!(
        [libc::EACCES, libc::ETXTBSY].contains(&e.raw_os_error().unwrap_or(0)),
        "{e}"
    );
    drop(reader);
    user_denied(&m, "open_w", "sets/d/bitmap", "");
    user_denied(&m, "read", "sets/d/bitmap", "");
    assert_eq!(file_bytes(&bp), before, "the bitmap file changed");
}

#[test]
fn the_state_directory_and_registry_are_not_readable_by_others() {
    let m = mount_or_skip!("allow_other");
    open_the_way(&m);
    let (mp, sp, bp) = m.volumes("", 16 * CHUNK, 4);
    m.ok("ctl", &format!("enable dep {mp} {sp} {bp} d"));
    let registry = m.state.join("iifs.yaml");
    assert!(
        fs::read_to_string(&registry)
            .expect("registry")
            .contains(&mp),
        "the registry does not record the set"
    );
    let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o777;
    let (dir_mode, file_mode) = (mode(&m.state), mode(&registry));
    let read = user("read", &registry, "");
    let list = user("ls", &m.state, "");
    assert!(
        dir_mode & 0o007 == 0 && file_mode & 0o007 == 0 && read.is_err() && list.is_err(),
        "others may look into the state directory: it is {dir_mode:o}, iifs.yaml {file_mode:o}; \
         uid {UID} lists it: {}, reads the registry: {}",
        list.is_ok(),
        read.is_ok()
    );
}
