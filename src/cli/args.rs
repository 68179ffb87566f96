//! iiadm's options: the classic Instant Image letters with long names (clap derive).

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

/// Administer iifs point-in-time copy sets.
///
/// iiadm drives a running iifs through its control tree (MOUNTPOINT/ctl and
/// MOUNTPOINT/sets/SET/ctl), exactly as a script writing words into those files would.
/// The mount is taken from --mount, or IIFS_MOUNT, or the only iifs mount.
/// Exit status: 0 success, 1 the daemon refused or failed, 2 usage error; with -H, the
/// remote iiadm's status, or 255 when ssh itself fails (ssh's status is passed through);
/// with several hosts, the highest status of any host.
#[derive(Parser, Debug, Default)]
#[command(
    name = "iiadm",
    disable_version_flag = true,
    after_help = "Examples:\n  iiadm -e dep /srv/master.img /srv/shadow.img /srv/bitmap.img db\n  iiadm -u s db && iiadm -w db\n  iiadm -i db\n  iiadm -l --json\n  iiadm -O /srv/overflow.img pool && iiadm -A db pool\n  iiadm -L\n  iiadm -C app && iiadm -M db app && iiadm -M logs app\n  iiadm -g app -u s && iiadm -g app -w\n  iiadm -g app -i\n  iiadm -s db && iiadm -r db\n  iiadm -V",
    group(ArgGroup::new("action").multiple(false))
)]
pub struct Args {
    /// Enable a set: type ind or dep, master, shadow and bitmap volumes, optional set name (a
    /// dep shadow smaller than the master makes a compact set)
    #[arg(short = 'e', long = "enable", num_args = 4..=5, group = "action",
          value_names = ["ind|dep", "MASTER", "SHADOW", "BITMAP", "SET"])]
    pub enable: Option<Vec<String>>,
    /// Disable (remove) a set
    #[arg(short = 'd', long = "disable", value_name = "SET", group = "action")]
    pub disable: Option<String>,
    /// Update: copy the chunks that differ to the shadow (s) or the master (m); with -g, of
    /// every set of the group at one point in time (SET is then not given)
    #[arg(short = 'u', long = "update", num_args = 1..=2, value_names = ["s|m", "SET"],
          group = "action")]
    pub update: Option<Vec<String>>,
    /// Copy every chunk to the shadow (s) or the master (m); with -g, of every set of the group
    /// at one point in time (SET is then not given)
    #[arg(short = 'c', long = "copy", num_args = 1..=2, value_names = ["s|m", "SET"],
          group = "action")]
    pub copy: Option<Vec<String>>,
    /// Abort the copy in progress (with -g: of every set of the group)
    #[arg(short = 'a', long = "abort", value_name = "SET", group = "action")]
    pub abort: Option<Option<String>>,
    /// Wait for the copy in progress to end, a progress bar on a terminal (with -g: until
    /// every set of the group has ended its copy)
    #[arg(short = 'w', long = "wait", value_name = "SET", group = "action")]
    pub wait: Option<Option<String>>,
    /// Show the status of a set, or of all sets (with -g: of the group)
    #[arg(short = 'i', long = "status", num_args = 0..=1, default_missing_value = "all",
          value_name = "SET|all", group = "action")]
    pub status: Option<String>,
    /// List the sets, one line each
    #[arg(short = 'l', long = "list", group = "action")]
    pub list: bool,
    /// Reset a set that went offline, once its volume is fixed
    #[arg(short = 'R', long = "reset", value_name = "SET", group = "action")]
    pub reset: Option<String>,
    /// Suspend a set, or all sets: its copy stops (it goes on after -r) and its master and
    /// shadow files are not served until it is resumed
    #[arg(
        short = 's',
        long = "suspend",
        value_name = "SET|all",
        group = "action"
    )]
    pub suspend: Option<String>,
    /// Resume a suspended set, or all suspended sets
    #[arg(short = 'r', long = "resume", value_name = "SET|all", group = "action")]
    pub resume: Option<String>,
    /// Export an independent set's shadow to another host
    #[arg(short = 'E', long = "export", value_name = "SET", group = "action")]
    pub export: Option<String>,
    /// Import a shadow exported by another host
    #[arg(short = 'I', long = "import", num_args = 2..=3, value_names = ["SHADOW", "BITMAP", "SET"],
          group = "action")]
    pub import: Option<Vec<String>>,
    /// Join an exported shadow back, merging the bitmap that tracked it elsewhere
    #[arg(short = 'J', long = "join", num_args = 2, value_names = ["SET", "BITMAP"], group = "action")]
    pub join: Option<Vec<String>>,
    /// Initialise an overflow volume VOL for compact sets, known as NAME (default: VOL's file
    /// name); --chunk-size goes with it (default: the daemon's chunk size)
    #[arg(short = 'O', long = "overflow-init", num_args = 1..=2, value_names = ["VOL", "NAME"],
          group = "action")]
    pub overflow_init: Option<Vec<String>>,
    /// Attach an overflow volume (its name, or the path of its volume) to a compact set
    #[arg(short = 'A', long = "attach", num_args = 2, value_names = ["SET", "OVF"], group = "action")]
    pub attach: Option<Vec<String>>,
    /// Detach a compact set's overflow volume (refused while the set holds chunks in it)
    #[arg(short = 'D', long = "detach", value_name = "SET", group = "action")]
    pub detach: Option<String>,
    /// Show an overflow volume's status
    #[arg(
        short = 'Q',
        long = "overflow-status",
        value_name = "OVF",
        group = "action"
    )]
    pub overflow_status: Option<String>,
    /// List the overflow volumes, one line each: NAME VOLUME USED/TOTAL chunks, the sets using
    /// it
    #[arg(short = 'L', long = "overflow-list", group = "action")]
    pub overflow_list: bool,
    /// Delete an overflow volume that no set uses
    #[arg(
        short = 'Z',
        long = "overflow-delete",
        value_name = "OVF",
        group = "action"
    )]
    pub overflow_delete: Option<String>,
    /// Set the copy throttle (sleep DELAY ms after every UNITS chunks), or show it with SET alone
    #[arg(short = 'P', long = "params", num_args = 1..=3, value_names = ["DELAY", "UNITS", "SET"],
          group = "action")]
    pub params: Option<Vec<String>>,
    /// Create a group: sets that take -u and -c together, at one point in time (-g)
    #[arg(
        short = 'C',
        long = "group-create",
        value_name = "GROUP",
        group = "action"
    )]
    pub group_create: Option<String>,
    /// Put a set into a group (a set is in one group at most; a group holds sets of one type)
    #[arg(short = 'M', long = "group-add", num_args = 2, value_names = ["SET", "GROUP"], group = "action")]
    pub group_add: Option<Vec<String>>,
    /// Take a set out of its group
    #[arg(
        short = 'B',
        long = "group-remove",
        value_name = "SET",
        group = "action"
    )]
    pub group_remove: Option<String>,
    /// Rename a group
    #[arg(short = 'N', long = "group-rename", num_args = 2, value_names = ["GROUP", "NEW"],
          group = "action")]
    pub group_rename: Option<Vec<String>>,
    /// Delete a group (its sets stay, in no group)
    #[arg(
        short = 'X',
        long = "group-delete",
        value_name = "GROUP",
        group = "action"
    )]
    pub group_delete: Option<String>,
    /// List the groups, one line each: NAME STATUS MEMBERS
    #[arg(short = 'G', long = "group-list", group = "action")]
    pub group_list: bool,
    /// With -u, -c, -a, -w or -i: act on the group GROUP instead of one set
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,
    /// List the volumes in use (path, size, role, set), then the candidates: files and block
    /// devices in the daemon's volume_dirs that no set uses (path, size, kind, state)
    #[arg(short = 'V', long = "volumes", group = "action")]
    pub volumes: bool,
    /// Hold new writes to a set's master, or (with -g) to every master of a group, for
    /// SECONDS at most (1..3600): they wait, they do not fail, until --release or the lease
    /// ends; returns once the writes in flight have ended
    #[arg(long = "hold", num_args = 1..=2, value_names = ["SECONDS", "SET"], group = "action")]
    pub hold: Option<Vec<String>>,
    /// End a hold (of SET, or with -g of the group): the held writes go on
    #[arg(long = "release", value_name = "SET", group = "action")]
    pub release: Option<Option<String>>,
    /// One point in time across hosts: with -H or --hosts-file, hold GROUP on every host,
    /// then (only when every host holds) update every host's group to the shadow, then
    /// release all; says which hosts took the new point in time and which kept the old
    #[arg(long = "group-pit", value_name = "GROUP", group = "action")]
    pub group_pit: Option<String>,
    /// With --group-pit: how long each phase (hold, update, release) waits for the hosts
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout: u64,
    /// The host's half of --group-pit, run over ssh: hold GROUP for --lease seconds and print
    /// `held`, then read `update` (update the group to its shadow, print `updated`) and
    /// `release` or the end of input (release, print `released MS`, the time writes were
    /// held); a refusal prints `refused REASON`
    #[arg(long = "hold-session", value_name = "GROUP", group = "action")]
    pub hold_session: Option<String>,
    /// With --hold-session: the hold's lease in seconds, which ends it should this session be
    /// lost
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease: u64,
    /// Check a set's bitmap volume offline (SET, found in the registry of the daemon's state
    /// directory; or BITMAP, a path): its header, bitmaps, chunk map and overflow accounting.
    /// Exit status 0 clean, 1 harmless leaks (--repair reclaims them), 2 corruption (the daemon
    /// will not bring the set back), 3 when it cannot be checked. `iiadm check SET` works too
    #[arg(
        short = 'K',
        long = "check",
        value_name = "SET|BITMAP",
        group = "action"
    )]
    pub check: Option<String>,
    /// With --check: reclaim the leaks found (a volume with corruption is left as it is)
    #[arg(long)]
    pub repair: bool,
    /// With --check SET: the daemon's state directory (default: state_dir of
    /// /etc/iifs/iifs.yaml, else the daemon's built-in default)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the version of iiadm (and of the daemon, when one is mounted)
    #[arg(short = 'v', long = "version", group = "action")]
    pub version: bool,

    /// Do not ask for confirmation before overwriting a master (-u m, -c m)
    #[arg(short = 'n', long = "no-confirm")]
    pub no_confirm: bool,
    /// With -u/-c: copy even while the target file (shadow, or master) is open through the
    /// mount (a mounted file system, a loop device, a process), which the daemon otherwise
    /// refuses
    #[arg(long)]
    pub force: bool,
    /// Print -i, -l, -G, -Q, -L, -V and --watch output as JSON
    #[arg(long)]
    pub json: bool,
    /// Follow the daemon's changes (set, group and overflow states, progress, errors) until
    /// interrupted, one line each (one JSON object a line with --json); with -i SET, only
    /// that set and its group
    #[arg(long)]
    pub watch: bool,
    /// The iifs mount to talk to
    #[arg(long, value_name = "DIR", env = "IIFS_MOUNT")]
    pub mount: Option<PathBuf>,
    /// Whether --mount was on the command line (not from IIFS_MOUNT): only then is it the
    /// other hosts' mount too.
    #[arg(skip)]
    pub mount_given: bool,
    /// Run the same command on HOST over ssh; a comma-separated list (h1,h2,user@h3) or an
    /// Ansible inventory group (@GROUP) runs it on every host in parallel
    ///
    /// With one host the output is passed through as it is, and ssh gets -t when stdin and
    /// stdout are terminals (the remote iiadm can then ask and show progress). With several,
    /// every line is printed as `HOST: line` (with --json a `host` key), and iiadm exits 0
    /// only if every host succeeded. IIADM_SSH sets the ssh command and its options, split on
    /// whitespace (e.g. IIADM_SSH="ssh -p 2222 -i /root/.ssh/iiadm"); iiadm keeps one
    /// connection per host open for 5 minutes (ssh's ControlMaster).
    #[arg(short = 'H', long = "host", value_name = "HOSTS")]
    pub host: Option<String>,
    /// Run the command on every host named in FILE (one a line, as -H takes them; `#` starts a
    /// comment)
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// The Ansible inventory that @GROUP names are looked up in (default: Ansible's own,
    /// ANSIBLE_INVENTORY or ansible.cfg)
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Of the hosts -H or --hosts-file name, only these (comma-separated, as the results name
    /// them): a host of an inventory group is then reached as the group reaches it. One host
    /// left: its output as it is, as with -H HOST
    #[arg(long, value_name = "HOSTS")]
    pub only: Option<String>,
    /// With -e: the set's chunk size; with -O: the overflow's (4K..1M, a power of two)
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<String>,
    /// With -e: strict or relaxed durability
    #[arg(long, value_name = "MODE")]
    pub durability: Option<String>,
}
