complete -c iiadm -s e -l enable -d 'Enable a set: type ind or dep, master, shadow and bitmap volumes, optional set name (a dep shadow smaller than the master makes a compact set)' -r
complete -c iiadm -s d -l disable -d 'Disable (remove) a set' -r
complete -c iiadm -s u -l update -d 'Update: copy the chunks that differ to the shadow (s) or the master (m); with -g, of every set of the group at one point in time (SET is then not given)' -r
complete -c iiadm -s c -l copy -d 'Copy every chunk to the shadow (s) or the master (m); with -g, of every set of the group at one point in time (SET is then not given)' -r
complete -c iiadm -s a -l abort -d 'Abort the copy in progress (with -g: of every set of the group)' -r
complete -c iiadm -s w -l wait -d 'Wait for the copy in progress to end, a progress bar on a terminal (with -g: until every set of the group has ended its copy)' -r
complete -c iiadm -s i -l status -d 'Show the status of a set, or of all sets (with -g: of the group)' -r
complete -c iiadm -s R -l reset -d 'Reset a set that went offline, once its volume is fixed' -r
complete -c iiadm -s s -l suspend -d 'Suspend a set, or all sets: its copy stops (it goes on after -r) and its master and shadow files are not served until it is resumed' -r
complete -c iiadm -s r -l resume -d 'Resume a suspended set, or all suspended sets' -r
complete -c iiadm -s E -l export -d 'Export an independent set\'s shadow to another host' -r
complete -c iiadm -s I -l import -d 'Import a shadow exported by another host' -r
complete -c iiadm -s J -l join -d 'Join an exported shadow back, merging the bitmap that tracked it elsewhere' -r
complete -c iiadm -s O -l overflow-init -d 'Initialise an overflow volume VOL for compact sets, known as NAME (default: VOL\'s file name); --chunk-size goes with it (default: the daemon\'s chunk size)' -r
complete -c iiadm -s A -l attach -d 'Attach an overflow volume (its name, or the path of its volume) to a compact set' -r
complete -c iiadm -s D -l detach -d 'Detach a compact set\'s overflow volume (refused while the set holds chunks in it)' -r
complete -c iiadm -s Q -l overflow-status -d 'Show an overflow volume\'s status' -r
complete -c iiadm -s Z -l overflow-delete -d 'Delete an overflow volume that no set uses' -r
complete -c iiadm -s P -l params -d 'Set the copy throttle (sleep DELAY ms after every UNITS chunks), or show it with SET alone' -r
complete -c iiadm -s C -l group-create -d 'Create a group: sets that take -u and -c together, at one point in time (-g)' -r
complete -c iiadm -s M -l group-add -d 'Put a set into a group (a set is in one group at most; a group holds sets of one type)' -r
complete -c iiadm -s B -l group-remove -d 'Take a set out of its group' -r
complete -c iiadm -s N -l group-rename -d 'Rename a group' -r
complete -c iiadm -s X -l group-delete -d 'Delete a group (its sets stay, in no group)' -r
complete -c iiadm -s g -l group -d 'With -u, -c, -a, -w or -i: act on the group GROUP instead of one set' -r
complete -c iiadm -l hold -d 'Hold new writes to a set\'s master, or (with -g) to every master of a group, for SECONDS at most (1..3600): they wait, they do not fail, until --release or the lease ends; returns once the writes in flight have ended' -r
complete -c iiadm -l release -d 'End a hold (of SET, or with -g of the group): the held writes go on' -r
complete -c iiadm -l group-pit -d 'One point in time across hosts: with -H or --hosts-file, hold GROUP on every host, then (only when every host holds) update every host\'s group to the shadow, then release all; says which hosts took the new point in time and which kept the old' -r
complete -c iiadm -l timeout -d 'With --group-pit: how long each phase (hold, update, release) waits for the hosts' -r
complete -c iiadm -l hold-session -d 'The host\'s half of --group-pit, run over ssh: hold GROUP for --lease seconds and print `held`, then read `update` (update the group to its shadow, print `updated`) and `release` or the end of input (release, print `released MS`, the time writes were held); a refusal prints `refused REASON`' -r
complete -c iiadm -l lease -d 'With --hold-session: the hold\'s lease in seconds, which ends it should this session be lost' -r
complete -c iiadm -s K -l check -d 'Check a set\'s bitmap volume offline (SET, found in the registry of the daemon\'s state directory; or BITMAP, a path): its header, bitmaps, chunk map and overflow accounting. Exit status 0 clean, 1 harmless leaks (--repair reclaims them), 2 corruption (the daemon will not bring the set back), 3 when it cannot be checked. `iiadm check SET` works too' -r
complete -c iiadm -l state-dir -d 'With --check SET: the daemon\'s state directory (default: state_dir of /etc/iifs/iifs.yaml, else the daemon\'s built-in default)' -r -F
complete -c iiadm -l mount -d 'The iifs mount to talk to' -r -F
complete -c iiadm -s H -l host -d 'Run the same command on HOST over ssh; a comma-separated list (h1,h2,user@h3) or an Ansible inventory group (@GROUP) runs it on every host in parallel' -r
complete -c iiadm -l hosts-file -d 'Run the command on every host named in FILE (one a line, as -H takes them; `#` starts a comment)' -r -F
complete -c iiadm -l inventory -d 'The Ansible inventory that @GROUP names are looked up in (default: Ansible\'s own, ANSIBLE_INVENTORY or ansible.cfg)' -r -F
complete -c iiadm -l only -d 'Of the hosts -H or --hosts-file name, only these (comma-separated, as the results name them): a host of an inventory group is then reached as the group reaches it. One host left: its output as it is, as with -H HOST' -r
complete -c iiadm -l chunk-size -d 'With -e: the set\'s chunk size; with -O: the overflow\'s (4K..1M, a power of two)' -r
complete -c iiadm -l durability -d 'With -e: strict or relaxed durability' -r
complete -c iiadm -s l -l list -d 'List the sets, one line each'
complete -c iiadm -s L -l overflow-list -d 'List the overflow volumes, one line each: NAME VOLUME USED/TOTAL chunks, the sets using it'
complete -c iiadm -s G -l group-list -d 'List the groups, one line each: NAME STATUS MEMBERS'
complete -c iiadm -s V -l volumes -d 'List the volumes in use (path, size, role, set), then the candidates: files and block devices in the daemon\'s volume_dirs that no set uses (path, size, kind, state)'
complete -c iiadm -l repair -d 'With --check: reclaim the leaks found (a volume with corruption is left as it is)'
complete -c iiadm -s v -l version -d 'Print the version of iiadm (and of the daemon, when one is mounted)'
complete -c iiadm -s n -l no-confirm -d 'Do not ask for confirmation before overwriting a master (-u m, -c m)'
complete -c iiadm -l force -d 'With -u/-c: copy even while the target file (shadow, or master) is open through the mount (a mounted file system, a loop device, a process), which the daemon otherwise refuses'
complete -c iiadm -l json -d 'Print -i, -l, -G, -Q, -L, -V and --watch output as JSON'
complete -c iiadm -l watch -d 'Follow the daemon\'s changes (set, group and overflow states, progress, errors) until interrupted, one line each (one JSON object a line with --json); with -i SET, only that set and its group'
complete -c iiadm -s h -l help -d 'Print help (see more with \'--help\')'
