//! Generated documentation: the manual pages iifs(8) and iiadm(8) and the bash, zsh and fish
//! completions of both commands, rendered from their clap definitions.
//!
//! The rendered files are committed (`man/`, `contrib/completions/`); `tests/generated_docs.rs`
//! fails when they differ from what the code renders, and
//! `IIFS_UPDATE_DOCS=1 cargo test --test generated_docs` rewrites them.
//! The output is deterministic: no date, nothing from the environment.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

/// Every generated file as (path relative to the repository root, contents).
pub fn generated_files() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        ("man/iifs.8".to_string(), iifs_man_page()),
        ("man/iiadm.8".to_string(), iiadm_man_page()),
    ];
    files.extend(completions(crate::cli::Args::command(), "iiadm"));
    files.extend(completions(crate::daemon::Args::command(), "iifs"));
    files
}

/// Where the completion for `shell` of command `name` goes, as distributions expect the names:
/// `NAME.bash`, `_NAME` (zsh), `NAME.fish`.
fn completion_path(shell: Shell, name: &str) -> String {
    let file = match shell {
        Shell::Bash => format!("{name}.bash"),
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        other => format!("{name}.{other}"),
    };
    format!("contrib/completions/{file}")
}

/// The bash, zsh and fish completions of one command.
pub fn completions(cmd: clap::Command, name: &str) -> Vec<(String, Vec<u8>)> {
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            let mut cmd = cmd.clone();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut out);
            (completion_path(shell, name), out)
        })
        .collect()
}

/// iifs(8): the daemon's options from clap, then how to mount, settings, files and so on.
pub fn iifs_man_page() -> Vec<u8> {
    let mut extra = Roff::new();

    section(&mut extra, "SETTINGS");
    text(
        &mut extra,
        "Each setting is taken from the first of these that gives it: a command line flag; \
         an -o option; the file named by --config FILE (or -o config=FILE); \
         /etc/iifs/iifs.yaml, when it exists; the built-in default. \
         iifs runs without any configuration file.",
    );
    extra.control("PP", []);
    text(
        &mut extra,
        "The files are YAML mappings with the keys state_dir, chunk_size, durability, threads, \
         allow_other, space_warning, volume_dirs, passthrough and log_level, the same names as \
         the -o options; the daemon settings are described in iifs(7). space_warning is the \
         percentage of a compact set's shadow and overflow space in use from which its status \
         shows a space_warning line (1 to 100, default 80). volume_dirs names the directories \
         whose files and block devices MOUNTPOINT/volumes lists as candidates when no set uses \
         them: absolute paths, separated by : in -o (-o volume_dirs=/srv/vol:/dev), a list or \
         that string in a file; default none. passthrough (on or off, default on) lets the \
         kernel serve the reads of settled independent shadows and of bitmap files opened \
         read-only itself (FUSE passthrough: Linux 6.9 or later, CAP_SYS_ADMIN), see \
         iifs(7); -o passthrough=off has the daemon serve every read. A key iifs does not \
         know, in a file or in -o, is an error that names it (and the file), and iifs exits \
         with status 2.",
    );
    extra.control("PP", []);
    text(
        &mut extra,
        "Generic mount options that mount(8) and fstab(5) pass along (rw, nosuid, nodev, \
         defaults, noauto, nofail, _netdev, x-*, ...) are accepted and ignored.",
    );

    section(&mut extra, "MOUNTING");
    text(
        &mut extra,
        "Without -f, iifs returns only once the mount is live, so a script can use the tree \
         right after it. The mount shows up as type fuse.iifs, so mount(8) and fstab(5) can \
         start it through mount.fuse3(8), which runs iifs none MOUNTPOINT -o OPTS (iifs must be \
         in the PATH of mount(8), e.g. /usr/local/bin or /usr/bin):",
    );
    example(
        &mut extra,
        &[
            "mount -t fuse.iifs none /mnt/ii -o state_dir=/var/lib/iifs",
            "# /etc/fstab:",
            "none /mnt/ii fuse.iifs defaults 0 0",
        ],
    );
    text(
        &mut extra,
        "Unmount with umount MOUNTPOINT or fusermount3 -u MOUNTPOINT; SIGTERM, SIGINT and \
         SIGHUP also unmount cleanly. The daemon exits once the mount is gone.",
    );
    extra.control("PP", []);
    text(
        &mut extra,
        "umount stops the daemon only where no other mount namespace holds the mount: a copy \
         made by unshare -m, ip netns exec or a systemd unit with PrivateTmp= (made after the \
         mount) keeps it alive after umount here. A signal stops the daemon even then: it ends \
         the FUSE session (the copies then answer ENOTCONN), shuts its sets down cleanly and \
         exits. While the mount is busy here and held nowhere else (a loop device, an open \
         file), a signal detaches it lazily and the daemon serves those users until they let \
         go.",
    );
    extra.control("PP", []);
    text(
        &mut extra,
        "Give iifs CAP_SYS_RESOURCE (root has it outside containers) when a loop device is \
         backed by an iifs file: with it the daemon marks itself an I/O flusher \
         (PR_SET_IO_FLUSHER); without it such a loop device can deadlock under memory \
         pressure, as the daemon's own allocations may wait for writeback that waits for the \
         daemon. iifs starts without it and logs a warning naming the capability.",
    );
    extra.control("PP", []);
    text(
        &mut extra,
        "Under systemd run it in the foreground (-f) as a Type=notify service: it sends \
         READY=1 once the mount is live. An example unit is contrib/iifs.service in the \
         source tree.",
    );

    section(&mut extra, "LOGGING");
    text(
        &mut extra,
        "iifs logs at the level of the log_level setting (RUST_LOG, when set, overrides it). \
         In the foreground it logs to standard error, with a timestamp; when standard error is \
         the journal (systemd sets JOURNAL_STREAM), each line carries its syslog priority \
         instead and the journal adds the time. In the background it logs to iifs.log in the \
         state directory.",
    );

    section(&mut extra, "ENVIRONMENT");
    for (name, what) in [
        (
            "RUST_LOG",
            "Log filter (env_logger syntax), applied over log_level.",
        ),
        (
            "NOTIFY_SOCKET",
            "Set by systemd: where READY=1 is sent once the mount is live.",
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd when standard error is the journal: log lines then carry syslog \
             priority prefixes and no timestamp.",
        ),
    ] {
        extra.control("TP", []);
        extra.text([bold(name)]);
        text(&mut extra, what);
    }

    section(&mut extra, "FILES");
    for (name, what) in [
        (
            "/etc/iifs/iifs.yaml",
            "System settings, read when it exists.",
        ),
        (
            "STATE_DIR/iifs.yaml",
            "The set registry: every set, group and overflow volume, rewritten atomically on \
             every change and read back at start.",
        ),
        (
            "STATE_DIR/iifs.log",
            "The log of a daemon in the background.",
        ),
    ] {
        extra.control("TP", []);
        extra.text([italic(name)]);
        text(&mut extra, what);
    }

    section(&mut extra, "EXIT STATUS");
    for (code, what) in [
        ("0", "The mount was live (in the foreground: it has ended)."),
        (
            "1",
            "The daemon could not start or mount, or its session failed.",
        ),
        (
            "2",
            "A usage error: a bad argument, option, setting or configuration file.",
        ),
    ] {
        extra.control("TP", []);
        extra.text([bold(code)]);
        text(&mut extra, what);
    }

    section(&mut extra, "EXAMPLES");
    example(
        &mut extra,
        &[
            "iifs none /mnt/ii",
            "iifs /mnt/ii -f --state-dir /srv/iifs --log-level debug",
            "iifs none /mnt/ii -o chunk_size=4K,durability=relaxed",
            "umount /mnt/ii",
        ],
    );

    see_also(
        &mut extra,
        &[
            ("iifs", "7"),
            ("iiadm", "8"),
            ("mount.fuse3", "8"),
            ("fstab", "5"),
            ("systemd.service", "5"),
        ],
    );
    man_page(crate::daemon::Args::command(), &extra)
}

/// iiadm(8): the options from clap, its examples, and where to read on.
pub fn iiadm_man_page() -> Vec<u8> {
    let cmd = crate::cli::Args::command();
    let mut extra = Roff::new();
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        let after = after.to_string();
        let (heading, body) = match after.strip_prefix("Examples:\n") {
            Some(rest) => ("EXAMPLES", rest.to_string()),
            None => ("NOTES", after.clone()),
        };
        section(&mut extra, heading);
        let lines: Vec<&str> = body.lines().map(str::trim).collect();
        example(&mut extra, &lines);
    }
    section(&mut extra, "OUTPUT");
    for (option, what) in [
        (
            "-l",
            "One line per set, in the order -e takes the same words: ind|dep MASTER SHADOW \
             BITMAP SET (STATE), or (STATE, group GROUP) for a set in a group. A compact set (a \
             dependent set whose shadow is smaller than the master) is listed as dep; its state \
             may be out of space. A suspended set's state is suspended.",
        ),
        (
            "-i",
            "A block per set: its type and state, its status word (normal, degraded: out of \
             space or suspended, error: offline), its group (or none), volumes, size, copy, \
             chunks that differ, throttle, durability and point in time. With -g GROUP: the \
             group's state, status word, members and the progress of their copies, then a line \
             per member with its status word, state and progress.",
        ),
        (
            "-G",
            "One line per group: NAME STATUS MEMBERS..., where STATUS is normal (every member \
             is), error (every member is offline) or degraded, and MEMBERS are the names of \
             its sets, or - for none.",
        ),
        (
            "-L",
            "One line per overflow volume: NAME VOLUME USED/TOTAL SETS, where USED and TOTAL \
             count its data chunks and SETS is each set attached with its chunks in it \
             (A=3 B=2), or - for none.",
        ),
        (
            "-Q",
            "The overflow volume's status file, MOUNTPOINT/overflow/OVF/status, as the daemon \
             writes it.",
        ),
        (
            "-V",
            "Two tables from MOUNTPOINT/volumes: the volumes in use (PATH SIZE ROLE SET), then \
             the candidates, the files and block devices in the daemon's volume_dirs directories \
             that no set uses (PATH SIZE KIND STATE; KIND is file or block, STATE free, mounted \
             or held; see iifs(7)).",
        ),
        (
            "--json",
            "With -i, -l, -G, -Q and -L: the status files' keys and values, counts as numbers; \
             -i SET, -g GROUP -i and -Q give one object, the others an array. In -Q and -L, sets \
             is an object of set name to its chunks in the overflow. For a group (-g GROUP -i, \
             -G), members is an array of the set names and member an array of objects with \
             name, status, progress and state, one per set. With -V: an object with in_use, an \
             array of objects with path, size, role and set, and candidates, an array of \
             objects with path, size, kind and state; sizes in bytes as numbers.",
        ),
    ] {
        extra.control("TP", []);
        extra.text([bold(option)]);
        text(&mut extra, what);
    }
    extra.control("PP", []);
    text(
        &mut extra,
        "With -g GROUP, -u, -c, -a and -w act on every set of the group at once, writing the \
         command to MOUNTPOINT/groups/GROUP/ctl: -u and -c take the direction alone (-g db -u \
         s), -a and -w no set. A set in a group takes -u and -c only through its group. -g \
         GROUP -w draws its progress bar over the chunks of the group's copies.",
    );
    extra.control("PP", []);
    text(
        &mut extra,
        "On success iiadm prints what the daemon's reply says besides ok: -e that it made the \
         bitmap file, -O the overflow's name, volume and data chunks, -c s of a compact set that \
         it was taken as an update.",
    );

    section(&mut extra, "CHECKING A BITMAP VOLUME");
    text(
        &mut extra,
        "iiadm check SET (or --check SET; SET from the registry in the daemon's state \
         directory, --state-dir DIR, else the state_dir of /etc/iifs/iifs.yaml) or iiadm check \
         BITMAP (a path) reads a bitmap volume the daemon does not hold: both header copies, \
         both bitmaps page by page, a compact set's chunk map and its overflow slots, against \
         the registry and the other sets on the same overflow volume. It exits 0 when the \
         volume is clean; 1 when it holds only harmless leaks (chunks marked to copy with no \
         copy recorded, bits past the last chunk, map slots of chunks that hold nothing, a \
         damaged spare header copy), which --repair reclaims; 2 on corruption (a page that \
         fails its checksum, no sound header, a slot outside its volume or used twice, a chunk \
         marked preserved with no slot, the wrong overflow volume, an older copy of the \
         volume), which --repair leaves as it is and for which the daemon does not bring the \
         set back (its status says why); 3 when it cannot check (the running daemon holds the \
         volume: it checks it itself at every start). --json prints one object.",
    );

    section(&mut extra, "SEVERAL HOSTS");
    text(
        &mut extra,
        "-H h1,h2,... (or --hosts-file FILE, or an Ansible inventory group @GROUP, looked up \
         with ansible-inventory in --inventory FILE or Ansible's own inventory) runs the same \
         command on every host at once over ssh. Every line a host prints comes back as \
         HOST: line; with --json, one object per host when it ends ({\"host\", \"ok\", \
         \"exit\", \"result\": the host's JSON, \"error\"}), and --watch --json adds a \
         \"host\" key to every event (a host whose stream ends gives {\"host\", \
         \"event\": \"lost\", \"error\"} and is tried again every 5 s). When some hosts \
         fail, a last line on stderr names each with its exit status and reason; iiadm exits \
         with the highest status of any host, 0 only if every host succeeded. -u m and -c m on \
         several hosts ask once, on a terminal and unless -n, naming the hosts (each host's \
         iiadm runs without a terminal and does not ask).",
    );
    extra.control("PP", []);
    text(
        &mut extra,
        "--group-pit GROUP takes one point in time across hosts: every host holds the \
         group's masters (iiadm --hold-session GROUP, over one ssh session per host); only \
         when every host holds does every host update the group to its shadows; then all \
         release. A host that refuses or does not answer within --timeout means no host \
         updates. The reply gives each host's point in time: new, old, or unknown (the \
         update was sent and not answered in time), and how long its writes were held. A \
         lost session releases at once; its lease (twice the timeout and 5 s) ends a hold \
         whose host cannot see that.",
    );

    section(&mut extra, "ENVIRONMENT");
    for (name, what) in [
        (
            "IIFS_MOUNT",
            "The iifs mount to talk to, when --mount is not given.",
        ),
        (
            "IIADM_SSH",
            "The ssh command -H runs, with its options, split on whitespace (no shell quoting), \
             e.g. IIADM_SSH=\"ssh -p 2222 -i /root/.ssh/iiadm\". Default: ssh. iiadm adds \
             ControlMaster=auto, a ControlPath under $XDG_RUNTIME_DIR/iiadm-ssh (root: \
             /run/iiadm-ssh) and ControlPersist=300, so one connection per host serves the next \
             commands, and ServerAliveInterval=3 with ServerAliveCountMax=2, so a host that \
             went away is given up after 6 s; with several hosts also BatchMode=yes and \
             ConnectTimeout=10. Options \
             given here come first and win. With one host iiadm adds -t when its stdin and \
             stdout are terminals, so the remote iiadm can ask before overwriting a master and \
             show -w's progress. When ssh itself fails (cannot connect, authenticate) the \
             host's status is ssh's, 255.",
        ),
    ] {
        extra.control("TP", []);
        extra.text([bold(name)]);
        text(&mut extra, what);
    }
    see_also(&mut extra, &[("iifs", "7"), ("iifs", "8"), ("ssh", "1")]);
    man_page(cmd, &extra)
}

/// clap_mangen's title, name, synopsis, description and options sections, then `extra`.
/// (Not its VERSION section: the version is in the title line already.)
fn man_page(cmd: clap::Command, extra: &Roff) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let version = cmd
        .get_version()
        .unwrap_or(env!("CARGO_PKG_VERSION"))
        .to_string();
    let man = Man::new(cmd).section("8");
    // Every rendered piece starts with the same roff preamble; keep it once.
    let preamble = Roff::new().render();
    let mut out = format!(
        ".\\\" {name}(8). Generated from the clap definitions by src/docs.rs: do not edit;\n\
         .\\\" run IIFS_UPDATE_DOCS=1 cargo test --test generated_docs\n\
         {preamble}\
         .TH {title} 8 \"\" \"{name} {version}\" \"{name} manual\"\n",
        title = name.to_uppercase(),
    );
    // The title line is written above: clap_mangen drops the quotes of an empty date, which
    // shifts the other fields, and a date would change on every run.
    type Part = fn(&Man, &mut dyn std::io::Write) -> std::io::Result<()>;
    let parts: [Part; 4] = [
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ];
    for part in parts {
        let mut buf = Vec::new();
        part(&man, &mut buf).expect("render to memory");
        let s = String::from_utf8(buf).expect("roff is UTF-8");
        out.push_str(s.strip_prefix(&preamble).unwrap_or(&s));
    }
    let e = extra.render();
    out.push_str(e.strip_prefix(&preamble).unwrap_or(&e));
    out.into_bytes()
}

fn section(r: &mut Roff, heading: &str) {
    r.control("SH", [heading]);
}

fn text(r: &mut Roff, s: &str) {
    r.text([roman(s)]);
}

/// Literal lines, indented and not filled.
fn example(r: &mut Roff, lines: &[&str]) {
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.control("nf", []);
    for l in lines {
        r.text([roman(*l)]);
    }
    r.control("fi", []);
    r.control("RE", []);
    r.control("PP", []);
}

fn see_also(r: &mut Roff, pages: &[(&str, &str)]) {
    section(r, "SEE ALSO");
    let mut inlines: Vec<Inline> = Vec::new();
    for (i, (page, sect)) in pages.iter().enumerate() {
        if i > 0 {
            inlines.push(roman(", "));
        }
        inlines.push(bold(*page));
        inlines.push(roman(format!("({sect})")));
    }
    r.text(inlines);
}
