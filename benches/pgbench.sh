#!/usr/bin/env bash
# PostgreSQL (pgbench) on ext4 over a loop device, on (a) a raw file and (b) the master of an
# iifs dependent set (durability=strict, 64 KiB chunks: the defaults), in one run on one machine.
#
#   bash benches/pgbench.sh                             # SCALE=20 CLIENTS=4 SECONDS=30 ROUNDS=3
#   SCALE=2 SECONDS=5 ROUNDS=1 bash benches/pgbench.sh  # smoke run, about a minute
#
# Each target gets a SIZE file, a loop device on it (raw: the file itself; iifs: the set's
# MNT/sets/pg/master), ext4 on the loop device, and a PostgreSQL cluster of its own on that
# ext4 (initdb, then pgbench -i -s SCALE once). Then ROUNDS rounds, alternating raw, iifs, raw,
# iifs, ... Each round starts the target's server, runs what pgbench runs before a test
# (VACUUM of the branches and tellers, TRUNCATE of the history), then CHECKPOINT, then (iifs
# only) `update shadow`, then two timed pgbench runs back to back (-n -c CLIENTS -T SECONDS),
# then stops the server:
#   first run:  iifs: "after update": every first write to a chunk since the new point in time
#               preserves the chunk (copy-on-write); raw: the same run with no update
#   second run: right after, no new point in time: iifs: "overwrites" (mostly; the report
#               counts the chunks it still preserved); raw: the same
# Only one server runs at a time. The report gives the TPS medians over the rounds and the
# iifs/raw ratios against the targets (after update >= 0.9x raw, overwrites >= 0.95x raw).
#
# Environment:
#   SCALE=20         pgbench scale factor (scale 1 is about 15 MB of tables and indexes)
#   CLIENTS=4        pgbench clients (-c); threads (-j) = min(CLIENTS, nproc)
#   SECONDS=30       seconds per timed run (-T). SECONDS is bash's clock, so the value is taken
#                    from the environment the script was started with; DURATION=N also works
#   ROUNDS=3         rounds (each: raw first + second run, then iifs first + second run)
#   SIZE=2G          size of each volume (K/M/G binary; a multiple of 1 MiB): the database
#                    (SCALE x ~16 MB) plus WAL up to max_wal_size (1 GB, PostgreSQL's default)
#   LOOP_DIO=auto    loop devices with --direct-io=on: auto (try it on the iifs master, fall
#                    back to buffered if refused, and give the raw file's loop device the same
#                    mode), on (fail if refused), off
#   PORT=55432       the raw server's port (the iifs server uses PORT+1); Unix sockets only, in
#                    a socket directory of the run's own: no TCP, no clash with a system cluster
#   PGBIN=DIR        PostgreSQL's binaries (default: the newest /usr/lib/postgresql/*/bin)
#   WORKDIR=DIR      where the files go (default: a fresh mktemp directory under /var/tmp);
#                    must be absent or empty, on a real disk (not tmpfs); removed at exit
#   KEEP=1           keep WORKDIR (logs, results.tsv, report.md) instead of removing it
#   NO_BUILD=1       do not run `cargo build --release` (use the existing target/release/iifs)
#
# Needs root, /dev/fuse, python3, e2fsprogs, PostgreSQL (server and pgbench: Debian's
# `postgresql` package, installed with apt-get when missing; Debian's own cluster is never
# touched: this script runs initdb and pg_ctl directly, as the postgres user, on its own data
# directories). The report (Markdown, ready to paste into README.md) goes to stdout; progress
# to stderr. Everything is measured in one run on one machine: compare ratios, not absolute
# figures.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
START=$EPOCHREALTIME

# A variable as it was in the environment this script started with (bash keeps SECONDS ticking).
env_at_start() {
    awk -v RS='\0' -v k="$1=" 'index($0, k) == 1 {print substr($0, length(k) + 1); exit}' "/proc/$$/environ"
}
DURATION=${DURATION:-$(env_at_start SECONDS)}
DURATION=${DURATION:-30}
SCALE=${SCALE:-20}
CLIENTS=${CLIENTS:-4}
ROUNDS=${ROUNDS:-3}
SIZE_ARG=${SIZE:-2G}
LOOP_DIO=${LOOP_DIO:-auto}
PORT=${PORT:-55432}
KEEP=${KEEP:-0}
NO_BUILD=${NO_BUILD:-0}

# ---------------------------------------------------------------------------------------------
# helpers

log() { printf '[%6.1fs] %s\n' "$(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*" >&2; }
die() {
    printf 'pgbench.sh: error: %s\n' "$*" >&2
    exit 1
}
now() { printf '%s' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
load1() { awk '{print $1}' /proc/loadavg; }

# CPU seconds (utime + stime, all threads) of a process.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || die "process $1 is gone (did the daemon crash?)"
    # Fields after the command name, which may contain spaces: utime and stime are 14 and 15.
    stat=${stat##*") "}
    awk '{print $12 + $13}' <<<"$stat"
}
cpu_seconds() { awk -v a="$1" -v b="$2" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}'; }

# Run a command as the postgres user, from / (its tools complain about a cwd they cannot read).
as_pg() { (cd / && exec runuser -u postgres -- "$@"); }

# ---------------------------------------------------------------------------------------------
# checks and tools

[ "$(id -u)" = 0 ] || die "run as root (FUSE mount, loop devices, mkfs, mount)"
[ -c /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse?)"
for v in SCALE CLIENTS DURATION ROUNDS PORT; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
        die "$v must be a whole number >= 1, not '${!v}'"
    fi
done
[ "$PORT" -lt 65535 ] || die "PORT must be below 65535"
case $LOOP_DIO in auto | on | off) ;; *) die "LOOP_DIO must be auto, on or off, not '$LOOP_DIO'" ;; esac

# The newest PostgreSQL whose bin directory has every tool used here.
PG_TOOLS=(initdb pg_ctl postgres pgbench psql createdb)
pg_bin_ok() {
    local t
    for t in "${PG_TOOLS[@]}"; do [ -x "$1/$t" ] || return 1; done
}
find_pgbin() {
    local d
    if [ -n "${PGBIN:-}" ]; then
        pg_bin_ok "$PGBIN" && echo "$PGBIN"
        return
    fi
    while read -r d; do
        pg_bin_ok "$d" && {
            echo "$d"
            return
        }
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
    return 0
}

need=()
command -v python3 >/dev/null || need+=(python3)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
command -v runuser >/dev/null || need+=(util-linux)
command -v fusermount3 >/dev/null || need+=(fuse3)
# Debian: pgbench, initdb, pg_ctl and postgres are in postgresql-NN (pulled by `postgresql`),
# psql in postgresql-client-NN (also pulled by it); postgresql-contrib has no binaries.
PGBIN_FOUND=$(find_pgbin)
if [ -z "$PGBIN_FOUND" ]; then
    [ -z "${PGBIN:-}" ] || die "PGBIN=$PGBIN lacks one of: ${PG_TOOLS[*]}"
    need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    log "installing missing packages with apt-get: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
    [ -n "$PGBIN_FOUND" ] || PGBIN_FOUND=$(find_pgbin)
    [ -n "$PGBIN_FOUND" ] || die "no /usr/lib/postgresql/*/bin with ${PG_TOOLS[*]} after installing postgresql"
fi
PGBIN=$PGBIN_FOUND
id -u postgres >/dev/null 2>&1 || die "there is no postgres user (Debian's postgresql-common makes it)"
PG_VERSION=$("$PGBIN/postgres" --version) || die "$PGBIN/postgres --version failed"

SIZE_BYTES=$(numfmt --from=iec "$SIZE_ARG" 2>/dev/null) || die "SIZE='$SIZE_ARG' is not a size (e.g. 1G, 2G)"
[ $((SIZE_BYTES % 1048576)) = 0 ] || die "SIZE must be a multiple of 1 MiB, not '$SIZE_ARG'"
# The database (about 16 MB per scale unit, with room for the history and dead tuples), WAL up
# to max_wal_size (1 GiB) and ext4's own (journal, inode tables).
NEED_FS=$(((SCALE * 20 + 1024 + 256) << 20))
[ "$SIZE_BYTES" -ge "$NEED_FS" ] ||
    die "SIZE=$SIZE_ARG is too small for SCALE=$SCALE: give at least $((NEED_FS >> 20))M (database ~$((SCALE * 16)) MiB + WAL up to max_wal_size 1 GiB + ext4)"
NPROC=$(nproc)
JOBS=$((CLIENTS < NPROC ? CLIENTS : NPROC))

if [ "$NO_BUILD" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release >&2) || die "cargo build --release failed"
fi
IIFS=$ROOT/target/release/iifs
[ -x "$IIFS" ] || die "$IIFS is missing (run cargo build --release, or unset NO_BUILD)"
IIFS=$(readlink -f "$IIFS")
# The commit of the tree the binary was built from, taken now: others may commit (or rebuild)
# while the run goes on.
GIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
(cd "$ROOT" && git diff --quiet HEAD -- src 2>/dev/null) || GIT="$GIT (src/ modified)"
[ "$NO_BUILD" != 1 ] || GIT="$GIT (NO_BUILD=1: the binary as found, built at $(date -r "$IIFS" '+%F %T'))"

# ---------------------------------------------------------------------------------------------
# work directory and cleanup

WD_CREATED=0
if [ -z "${WORKDIR:-}" ]; then
    WORKDIR=$(mktemp -d /var/tmp/iifs-pgbench.XXXXXX) || die "mktemp under /var/tmp failed"
    WD_CREATED=1
elif [ ! -e "$WORKDIR" ]; then
    mkdir -p "$WORKDIR" || die "cannot create WORKDIR=$WORKDIR"
    WD_CREATED=1
else
    [ -d "$WORKDIR" ] || die "WORKDIR=$WORKDIR is not a directory"
    [ -z "$(ls -A "$WORKDIR")" ] || die "WORKDIR=$WORKDIR is not empty (it is removed at exit: give an absent or empty directory)"
fi
WORKDIR=$(cd "$WORKDIR" && pwd -P)
[[ $WORKDIR =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "WORKDIR=$WORKDIR: use a path without spaces or special characters"
[ "$WORKDIR" != / ] || die "WORKDIR=/ ?"

MNT=$WORKDIR/mnt
SOCK=$WORKDIR/sock
SET=pg
IIFS_PID=
PG_UP=    # the data directory of the server running, if any
LOOPS=()  # loop devices attached
MOUNTS=() # ext4 mounts made

stop_pg() {
    local data=$PG_UP pid
    [ -n "$data" ] || return 0
    PG_UP=
    if as_pg "$PGBIN/pg_ctl" -D "$data" -w -t 120 -m fast stop >/dev/null 2>&1; then
        return 0
    fi
    echo "pgbench.sh: pg_ctl stop -m fast failed on $data; trying -m immediate" >&2
    as_pg "$PGBIN/pg_ctl" -D "$data" -w -t 30 -m immediate stop >/dev/null 2>&1 && return 0
    pid=$(head -1 "$data/postmaster.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ]; then
        echo "pgbench.sh: killing the postmaster $pid" >&2
        kill -9 "$pid" 2>/dev/null || true
        sleep 1
    fi
}

umount_fs() {
    local m
    for m in ${MOUNTS[@]+"${MOUNTS[@]}"}; do
        if grep -q " $m " /proc/mounts; then
            umount "$m" 2>/dev/null || {
                sleep 1
                umount "$m" 2>/dev/null
            } || echo "pgbench.sh: cannot unmount $m" >&2
        fi
    done
    MOUNTS=()
}

detach_loops() {
    local d
    for d in ${LOOPS[@]+"${LOOPS[@]}"}; do
        losetup -d "$d" 2>/dev/null || echo "pgbench.sh: losetup -d $d failed" >&2
    done
    # losetup -d only asks: wait until the devices let go of their files (the iifs mount is
    # busy while one holds the master).
    for d in ${LOOPS[@]+"${LOOPS[@]}"}; do
        for _ in $(seq 100); do
            [ -e "/sys/block/${d#/dev/}/loop/backing_file" ] || break
            sleep 0.1
        done
    done
    LOOPS=()
}

stop_iifs() {
    if grep -q " $MNT fuse.iifs " /proc/mounts; then
        umount "$MNT" 2>/dev/null || {
            sleep 1
            umount "$MNT" 2>/dev/null
        } || umount -l "$MNT" 2>/dev/null || true
    fi
    if [ -n "$IIFS_PID" ]; then
        for _ in $(seq 200); do
            [ -d "/proc/$IIFS_PID" ] || break
            sleep 0.1
        done
        if [ -d "/proc/$IIFS_PID" ]; then
            echo "pgbench.sh: iifs ($IIFS_PID) did not exit after umount; killing it" >&2
            kill "$IIFS_PID" 2>/dev/null || true
        fi
    fi
    IIFS_PID=
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
    if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ -s "${WORKDIR:-/nonexistent}/state/iifs.log" ]; then
        echo "pgbench.sh: the last lines of iifs's log ($WORKDIR/state/iifs.log):" >&2
        tail -n 15 "$WORKDIR/state/iifs.log" >&2 || true
    fi
    stop_pg
    umount_fs
    detach_loops
    stop_iifs
    if [ "$KEEP" = 1 ]; then
        echo "pgbench.sh: kept $WORKDIR" >&2
    elif [ -n "${WORKDIR:-}" ] && [ -d "$WORKDIR" ]; then
        if grep -q " $WORKDIR/" /proc/mounts; then
            echo "pgbench.sh: something is still mounted under $WORKDIR; not removing it" >&2
        elif [ "$WD_CREATED" = 1 ]; then
            rm -rf "$WORKDIR"
        else
            find "$WORKDIR" -mindepth 1 -delete
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The file system type of the directory itself (findmnt lists every mount stacked on a mount point).
FSTYPE=$(stat -f -c %T "$WORKDIR") || die "cannot stat the file system of $WORKDIR"
case $FSTYPE in
tmpfs | ramfs | fuse* | squashfs | overlayfs | 9p | nfs* | cifs | smb*)
    die "WORKDIR=$WORKDIR is on $FSTYPE; put it on a local disk (e.g. WORKDIR=/var/tmp/iifs-pgbench)"
    ;;
esac
AVAIL=$(df -B1 --output=avail "$WORKDIR" | tail -1 | tr -d ' ')
NEED=$((SIZE_BYTES * 3 + (256 << 20)))
[ "$AVAIL" -ge "$NEED" ] || die "WORKDIR=$WORKDIR has $((AVAIL >> 20)) MiB free; the run needs up to $((NEED >> 20)) MiB (3 x SIZE)"

# The postgres user reaches its socket directory, logs and data directories through WORKDIR.
chmod 0755 "$WORKDIR"
as_pg test -x "$WORKDIR" || die "the postgres user cannot reach $WORKDIR (a parent directory is closed to it)"
mkdir -p "$WORKDIR"/{log,mnt,state,pglog,sock,fs-raw,fs-iifs}
chown postgres:postgres "$WORKDIR/pglog" "$WORKDIR/sock"
chmod 0700 "$WORKDIR/sock"
# A private copy of the binary: a rebuild of target/release during the run changes nothing here.
cp "$IIFS" "$WORKDIR/iifs" || die "cannot copy $IIFS to $WORKDIR"
IIFS=$WORKDIR/iifs
RESULTS=$WORKDIR/results.tsv # target run round tps latency_ms daemon_cpu_s chunks_preserved load1
: >"$RESULTS"

# ---------------------------------------------------------------------------------------------
# iifs

# ctl FILE WORDS...: one command; on refusal, print the daemon's reply
ctl() {
    local f=$1 fd reply
    shift
    exec {fd}<>"$f" || die "cannot open $f"
    if ! printf '%s\n' "$*" 1>&"$fd" 2>/dev/null; then
        reply=$(cat <&"$fd" 2>/dev/null || true)
        exec {fd}>&-
        die "iifs refused '$*' on $f: ${reply:-no reply}"
    fi
    exec {fd}>&-
}

status_val() { awk -v k="$2:" '$1 == k {sub(/^[^:]*: /, ""); print; exit}' "$MNT/sets/$1/status"; }

start_iifs() {
    log "iifs: mount $MNT"
    "$IIFS" none "$MNT" -o "state_dir=$WORKDIR/state" >"$WORKDIR/log/iifs.start" 2>&1 || {
        cat "$WORKDIR/log/iifs.start" "$WORKDIR/state/iifs.log" >&2 2>/dev/null || true
        die "iifs failed to mount $MNT"
    }
    grep -q " $MNT fuse.iifs " /proc/mounts || die "iifs returned but $MNT is not mounted"
    local p found=()
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/exe" 2>/dev/null)" = "$IIFS" ] || continue
        tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF "$MNT" && found+=("${p#/proc/}")
    done
    [ ${#found[@]} = 1 ] || die "cannot tell the iifs daemon's pid (found: ${found[*]:-none})"
    IIFS_PID=${found[0]}
    log "iifs: pid $IIFS_PID"
}

# ---------------------------------------------------------------------------------------------
# loop devices, ext4, PostgreSQL

# attach_loop FILE DIO(on|off|try): sets LOOP_DEV and LOOP_DIO_GOT (1 or 0, as the kernel says)
attach_loop() {
    local file=$1 dio=$2 dev=
    if [ "$dio" != off ]; then
        dev=$(losetup --direct-io=on -f --show "$file" 2>"$WORKDIR/log/losetup.err") || dev=
        if [ -z "$dev" ]; then
            [ "$dio" = try ] || die "losetup --direct-io=on $file failed: $(cat "$WORKDIR/log/losetup.err")"
            log "losetup --direct-io=on $file refused ($(tr '\n' ' ' <"$WORKDIR/log/losetup.err")); attaching without"
        fi
    fi
    if [ -z "$dev" ]; then
        dev=$(losetup -f --show "$file" 2>"$WORKDIR/log/losetup.err") ||
            die "losetup $file failed: $(cat "$WORKDIR/log/losetup.err")"
    fi
    LOOPS+=("$dev")
    LOOP_DEV=$dev
    LOOP_DIO_GOT=$(cat "/sys/block/${dev#/dev/}/loop/dio" 2>/dev/null || echo "?")
    [ "$dio" != on ] || [ "$LOOP_DIO_GOT" = 1 ] || die "the loop device $dev on $file has dio=$LOOP_DIO_GOT despite --direct-io=on"
    log "loop device $dev on $file (dio=$LOOP_DIO_GOT)"
}

# make_fs DEVICE DIR: ext4 with every inode table and the journal written now (no lazy init
# running in the background during the runs), mounted on DIR
make_fs() {
    local dev=$1 dir=$2
    log "mkfs.ext4 on $dev, mount on $dir"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$dev" >"$WORKDIR/log/mkfs.log" 2>&1 || {
        cat "$WORKDIR/log/mkfs.log" >&2
        die "mkfs.ext4 on $dev failed"
    }
    mount -t ext4 "$dev" "$dir" || die "mount $dev $dir failed"
    MOUNTS+=("$dir")
}

port_of() { if [ "$1" = raw ]; then echo "$PORT"; else echo $((PORT + 1)); fi; }
data_of() { echo "$WORKDIR/fs-$1/pgdata"; }

pg_start() {
    local name=$1 data
    data=$(data_of "$name")
    as_pg "$PGBIN/pg_ctl" -D "$data" -l "$WORKDIR/pglog/$name.log" -w -t 300 start >"$WORKDIR/log/pg_ctl.out" 2>&1 || {
        cat "$WORKDIR/log/pg_ctl.out" >&2
        tail -n 20 "$WORKDIR/pglog/$name.log" >&2 2>/dev/null || true
        die "the $name server did not start"
    }
    PG_UP=$data
}

pg_stop() {
    local data=$PG_UP
    PG_UP=
    as_pg "$PGBIN/pg_ctl" -D "$data" -w -t 300 -m fast stop >"$WORKDIR/log/pg_ctl.out" 2>&1 || {
        PG_UP=$data
        cat "$WORKDIR/log/pg_ctl.out" >&2
        die "pg_ctl stop of $data failed"
    }
}

# sql NAME STATEMENT...: each statement on its own (VACUUM refuses a transaction block)
sql() {
    local name=$1 s
    local -a args=()
    shift
    for s in "$@"; do args+=(-c "$s"); done
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$(port_of "$name")" -d bench "${args[@]}" \
        >"$WORKDIR/log/psql.out" 2>&1 || {
        cat "$WORKDIR/log/psql.out" >&2
        die "psql on $name failed: $*"
    }
}

# setup_pg NAME: a cluster on the target's ext4, the pgbench tables at SCALE, then stopped
setup_pg() {
    local name=$1 data port t0
    data=$(data_of "$name")
    port=$(port_of "$name")
    mkdir "$data"
    chown postgres:postgres "$data"
    chmod 0700 "$data"
    log "$name: initdb $data"
    as_pg "$PGBIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C >"$WORKDIR/log/initdb-$name.log" 2>&1 || {
        cat "$WORKDIR/log/initdb-$name.log" >&2
        die "initdb of $data failed"
    }
    # initdb's defaults otherwise (shared_buffers 128MB, fsync, synchronous_commit, full_page_writes
    # on, max_wal_size 1GB): a private server listening on its own Unix socket only.
    cat >>"$data/postgresql.conf" <<EOF

# benches/pgbench.sh
port = $port
listen_addresses = ''
unix_socket_directories = '$SOCK'
EOF
    pg_start "$name"
    as_pg "$PGBIN/createdb" -h "$SOCK" -p "$port" bench || die "createdb on $name failed"
    log "$name: pgbench -i -s $SCALE"
    t0=$(now)
    as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$port" -i -q -s "$SCALE" bench >"$WORKDIR/log/init-$name.log" 2>&1 || {
        cat "$WORKDIR/log/init-$name.log" >&2
        die "pgbench -i on $name failed"
    }
    sql "$name" CHECKPOINT
    log "$name: initialised in $(elapsed "$t0" "$(now)")s; database $(du -sm "$data/base" | cut -f1) MiB, pg_wal $(du -sm "$data/pg_wal" | cut -f1) MiB"
    pg_stop
}

# run_pgbench NAME RUN ROUND: one timed run, recorded
run_pgbench() {
    local name=$1 run=$2 round=$3 out c0=0 c1=0 d0=0 d1=0 cpu=- chunks=- ld tps lat
    out=$WORKDIR/log/run-$name-$run-$round.log
    ld=$(load1)
    if [ "$name" = iifs ]; then
        c0=$(cpu_ticks "$IIFS_PID")
        d0=$(status_val "$SET" chunks_differ)
    fi
    log "$name round $round: $run run (pgbench -n -c $CLIENTS -j $JOBS -T $DURATION; load $ld)"
    as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$(port_of "$name")" -n -c "$CLIENTS" -j "$JOBS" -T "$DURATION" bench \
        >"$out" 2>&1 || {
        cat "$out" >&2
        die "pgbench on $name failed"
    }
    if [ "$name" = iifs ]; then
        c1=$(cpu_ticks "$IIFS_PID")
        d1=$(status_val "$SET" chunks_differ)
        cpu=$(cpu_seconds "$c0" "$c1")
        chunks=$((d1 - d0))
        if [ "$(status_val "$SET" state)" != idle ] || [ "$(status_val "$SET" status)" != normal ]; then
            die "the set is not idle and normal after the run: $(cat "$MNT/sets/$SET/status")"
        fi
    fi
    tps=$(awk '$1 == "tps" && $2 == "=" {print $3; exit}' "$out")
    lat=$(awk '$1 == "latency" && $2 == "average" {print $4; exit}' "$out")
    [[ $tps =~ ^[0-9.]+$ ]] || {
        cat "$out" >&2
        die "no tps in pgbench's output ($out)"
    }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$round" "$tps" "${lat:--}" "$cpu" "$chunks" "$ld" >>"$RESULTS"
    log "  -> $tps tps, latency ${lat:-?} ms$([ "$name" = iifs ] && echo ", $chunks chunks preserved, daemon CPU ${cpu}s")"
}

# bench_round NAME ROUND
bench_round() {
    local name=$1 round=$2
    pg_start "$name"
    # What pgbench does before a run without -n, then a checkpoint: every round starts alike.
    sql "$name" "VACUUM pgbench_branches" "VACUUM pgbench_tellers" "TRUNCATE pgbench_history" CHECKPOINT
    if [ "$name" = iifs ]; then
        [ "$(status_val "$SET" state)" = idle ] || die "the set is not idle before the update: $(cat "$MNT/sets/$SET/status")"
        ctl "$MNT/sets/$SET/ctl" update shadow
        [ "$(status_val "$SET" chunks_differ)" = 0 ] ||
            die "chunks_differ is $(status_val "$SET" chunks_differ) right after update shadow"
    fi
    run_pgbench "$name" first "$round"
    run_pgbench "$name" second "$round"
    pg_stop
}

# ---------------------------------------------------------------------------------------------
# the run

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $WORKDIR ($FSTYPE), SIZE=$SIZE_BYTES bytes, SCALE=$SCALE CLIENTS=$CLIENTS SECONDS=$DURATION ROUNDS=$ROUNDS; $PG_VERSION in $PGBIN; load $LOAD_START"

start_iifs
truncate -s "$SIZE_BYTES" "$WORKDIR/iifs.master" "$WORKDIR/iifs.shadow"
: >"$WORKDIR/iifs.bitmap"
ctl "$MNT/ctl" enable dep "$WORKDIR/iifs.master" "$WORKDIR/iifs.shadow" "$WORKDIR/iifs.bitmap" "$SET"
DURABILITY=$(status_val "$SET" durability)
CHUNK=$(status_val "$SET" chunk_size)
[ "$(status_val "$SET" type)" = dependent ] || die "the set is not a dependent one: $(cat "$MNT/sets/$SET/status")"
log "iifs: dependent set $SET, durability=$DURABILITY, chunk_size=$CHUNK"

# Loop devices: the iifs master first; in auto mode the raw file's device gets the mode the
# iifs master got, so both sides differ only by iifs.
case $LOOP_DIO in
auto) attach_loop "$MNT/sets/$SET/master" try ;;
*) attach_loop "$MNT/sets/$SET/master" "$LOOP_DIO" ;;
esac
LOOP_IIFS=$LOOP_DEV
DIO_IIFS=$LOOP_DIO_GOT
truncate -s "$SIZE_BYTES" "$WORKDIR/raw.img"
if [ "$LOOP_DIO" = auto ]; then
    if [ "$DIO_IIFS" = 1 ]; then attach_loop "$WORKDIR/raw.img" on; else attach_loop "$WORKDIR/raw.img" off; fi
else
    attach_loop "$WORKDIR/raw.img" "$LOOP_DIO"
fi
LOOP_RAW=$LOOP_DEV
DIO_RAW=$LOOP_DIO_GOT

make_fs "$LOOP_RAW" "$WORKDIR/fs-raw"
make_fs "$LOOP_IIFS" "$WORKDIR/fs-iifs"
setup_pg raw
setup_pg iifs

T_ROUNDS=$(now)
for round in $(seq "$ROUNDS"); do
    bench_round raw "$round"
    bench_round iifs "$round"
done
T_ROUNDS=$(elapsed "$T_ROUNDS" "$(now)")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
SHADOW_MB=$(($(stat -c %b "$WORKDIR/iifs.shadow") * 512 >> 20))

stop_pg
umount_fs
detach_loops
stop_iifs

# ---------------------------------------------------------------------------------------------
# the report

log "done; the report follows on stdout"
DISK_DF=$(df -h --output=source,fstype,size,avail,target "$WORKDIR" | tail -1 | tr -s ' ')
DISK_SRC=$(findmnt -no SOURCE -T "$WORKDIR")
DISK_INFO=
if read -r d_name d_size d_rota < <(lsblk -dno NAME,SIZE,ROTA "$DISK_SRC" 2>/dev/null); then
    DISK_INFO="$d_name, $d_size, rotational=$d_rota as the kernel reports it"
fi
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(free -h | awk '/^Mem:/ {print $2}')
TOTAL=$(elapsed "$START" "$(now)")
# The command that reproduces this run (the variables that differ from the defaults... all of
# the workload's, for clarity).
CMD="SCALE=$SCALE CLIENTS=$CLIENTS SECONDS=$DURATION ROUNDS=$ROUNDS SIZE=$SIZE_ARG"
[ "$LOOP_DIO" = auto ] || CMD="$CMD LOOP_DIO=$LOOP_DIO"
CMD="$CMD bash benches/pgbench.sh"

IIFS_V=$("$IIFS" --version)
KERNEL=$(uname -r)
export RESULTS SCALE CLIENTS JOBS DURATION ROUNDS SIZE_BYTES CHUNK DURABILITY DIO_RAW DIO_IIFS LOAD_START LOAD_END
export TOTAL T_ROUNDS GIT CPU_MODEL MEM DISK_DF DISK_INFO CMD PG_VERSION IIFS_V KERNEL NPROC SHADOW_MB
python3 - <<'EOF' | tee "$WORKDIR/report.md"
import os
import statistics

E = os.environ
rows = []
with open(E["RESULTS"]) as f:
    for line in f:
        t, run, rnd, tps, lat, cpu, chunks, ld = line.rstrip("\n").split("\t")
        rows.append(dict(t=t, run=run, round=int(rnd), tps=float(tps),
                         lat=None if lat == "-" else float(lat),
                         cpu=None if cpu == "-" else float(cpu),
                         chunks=None if chunks == "-" else int(chunks), load=float(ld)))

def pick(t, run, key="tps"):
    return [r[key] for r in sorted(rows, key=lambda r: r["round"]) if r["t"] == t and r["run"] == run and r[key] is not None]

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x, nd=0):
    if x is None:
        return "-"
    return f"{x:,.{nd}f}"

def with_rounds(xs, nd=0):
    if not xs:
        return "-"
    s = fmt(med(xs), nd)
    return s if len(xs) < 2 else s + " (" + ", ".join(fmt(x, nd) for x in xs) + ")"

def table(head, lines):
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for l in lines:
        print("| " + " | ".join(l) + " |")
    print()

chunk = int(E["CHUNK"])
size = int(E["SIZE_BYTES"])
rounds = int(E["ROUNDS"])
dio = {"1": "on", "0": "off"}
dio_raw, dio_iifs = dio.get(E["DIO_RAW"], E["DIO_RAW"]), dio.get(E["DIO_IIFS"], E["DIO_IIFS"])

print("### PostgreSQL under pgbench: raw file against an iifs dependent set\n")
print(f"`benches/pgbench.sh`: pgbench (TPC-B-like, {E['CLIENTS']} clients, {E['JOBS']} threads, "
      f"{E['DURATION']} s runs, scale {E['SCALE']}) against a PostgreSQL server whose data directory, WAL "
      f"included, is on ext4 on a loop device over (a) a raw {size >> 20} MiB file (`raw`) and (b) the master "
      f"of an iifs dependent set (`iifs`, `durability={E['DURABILITY']}`, {chunk >> 10} KiB chunks), in one run. "
      f"{rounds} round{'s' if rounds != 1 else ''}, alternating raw, iifs; each round: VACUUM of the small tables "
      "and TRUNCATE of the history (what pgbench does before a run), CHECKPOINT, for iifs `update shadow` "
      "(a new point in time), then two runs back to back, the *first* (for iifs: after update, every "
      "first write to a chunk preserves it) and the *second* (no new point in time: for iifs mostly "
      "overwrites). Made, as root, with:\n")
print("```")
print(f"{E['CMD']}   # the run below: {float(E['TOTAL']):.0f} s")
print("```\n")
print(f"This run: iifs at commit {E['GIT']}, {E['TOTAL']} s in all ({E['T_ROUNDS']} s of rounds); load average "
      f"{E['LOAD_START']} at the start, {E['LOAD_END']} at the end (1, 5, 15 min).\n")
print(f"- {E['NPROC']} CPUs ({E['CPU_MODEL']}), {E['MEM']} memory, kernel {E['KERNEL']}")
print(f"- work dir on `{E['DISK_DF']}` (df: source, type, size, free, mount)"
      + (f"; disk {E['DISK_INFO']}" if E["DISK_INFO"] else ""))
print(f"- {E['PG_VERSION']}, initdb's settings (shared_buffers 128MB, fsync, synchronous_commit, "
      "full_page_writes on, max_wal_size 1GB) but for a Unix socket of its own; "
      f"{E['IIFS_V']}; loop devices with direct I/O {dio_raw} (raw) / {dio_iifs} (iifs master)\n")

fr = lambda a, b: None if a is None or b is None or b == 0 else a / b
lines, tlines = [], []
for run, what, goal in (("first", "first run after CHECKPOINT (iifs: right after `update shadow`)", 0.9),
                        ("second", "second run, right after (iifs: overwrites, no new point in time)", 0.95)):
    raw, ii = pick("raw", run), pick("iifs", run)
    r = fr(med(ii), med(raw))
    per = [fr(b, a) for a, b in zip(raw, ii)]
    rs = "-" if r is None else f"{r:.2f}x"
    if len(per) > 1:
        rs += " (" + ", ".join(f"{x:.2f}" for x in per) + ")"
    lines.append([what, with_rounds(raw), with_rounds(ii), rs])
    label = "after update" if run == "first" else "overwrites"
    tlines.append([f"`iifs` {label} / `raw` {run} run, TPS", "-" if r is None else f"{r:.2f}x", f">= {goal}x",
                   "-" if r is None else ("yes" if r >= goal else "**no**")])

print("#### TPS (transactions per second; median of the rounds, each round in parentheses)\n")
table(["run", "`raw` TPS", "`iifs` TPS", "iifs / raw (of the medians; each round)"], lines)

print("#### Targets, as measured in this run\n")
table(["what", "measured", "goal", "met"], tlines)

print("#### Latency, copy-on-write and daemon CPU (medians of the rounds)\n")
lines = []
for run in ("first", "second"):
    ch = pick("iifs", run, "chunks")
    mc = med(ch)
    lines.append([run,
                  fmt(med(pick("raw", run, "lat")), 2), fmt(med(pick("iifs", run, "lat")), 2),
                  "-" if mc is None else f"{mc:,.0f} ({mc * chunk / 2**20:,.0f} MiB)",
                  fmt(med(pick("iifs", run, "cpu")), 1),
                  f"{med(pick('raw', run, 'load')):.2f} / {med(pick('iifs', run, 'load')):.2f}"])
table(["run", "`raw` latency ms", "`iifs` latency ms", "`iifs` chunks preserved by the run",
       "`iifs` daemon CPU s", "load average (1 min) at start, raw / iifs"], lines)

print("#### Each run (the rounds in the order they ran)\n")
lines = []
for rnd in sorted({r["round"] for r in rows}):
    for t in ("raw", "iifs"):
        f = [r for r in rows if r["t"] == t and r["round"] == rnd]
        by = {r["run"]: r for r in f}
        if not by:
            continue
        def both(key, nd=0):
            return " / ".join(fmt(by[x][key], nd) if x in by else "-" for x in ("first", "second"))
        lines.append([str(rnd), f"`{t}`", both("tps"), both("lat", 2), both("chunks"), both("cpu", 1), both("load", 2)])
table(["round", "target", "TPS first / second", "latency ms", "chunks preserved", "daemon CPU s",
       "load average (1 min) at the start"], lines)

if dio_raw == "on" and dio_iifs == "on":
    dio_note = """Loop devices with direct I/O (`losetup --direct-io=on`, which the FUSE master accepts): the
  raw file's device writes to the disk with O_DIRECT, the iifs master's device writes O_DIRECT to
  the FUSE file, but iifs does buffered I/O on its backing files, so there a write that is not
  followed by a flush lands in the page cache (a data page written back by PostgreSQL, say). Only
  what is flushed (the WAL at every commit, checkpoints) reaches the disk on both sides."""
else:
    dio_note = f"""Loop devices with direct I/O {dio_raw} (raw) / {dio_iifs} (iifs master): a device without it
  writes through the page cache of its backing file (for iifs: of the FUSE file, then iifs's
  buffered writes to its own backing files); only what is flushed (the WAL at every commit,
  checkpoints) reaches the disk on both sides."""

print(f"""#### Caveats

- Only one server runs at a time; each round starts it (shared_buffers cold, the file systems'
  page cache as the previous round left it; caches are not dropped) and stops it after the two
  runs (its shutdown checkpoint is not timed). The first run after a CHECKPOINT writes a full-page
  image of each page it first touches into the WAL and the second does not: compare first with
  first, second with second.
- `iifs` after update: every chunk of the volume the run writes for the first time since
  `update shadow` is copy-on-write: the old chunk is read, written to the shadow and, under
  `durability=strict`, flushed with its bitmap bit before the write goes on. PostgreSQL writes
  WAL segments, data pages evicted from its 128 MB shared_buffers (the database is about
  {int(E['SCALE']) * 15} MB), and ext4 its journal. The second run still preserves the chunks the
  first one did not touch (counted above); the shadow file held {E['SHADOW_MB']} MiB at the end.
- Every commit waits for a WAL flush: fdatasync on ext4, a flush of the loop device, on `iifs` an
  fsync through FUSE and the daemon's fdatasync of the backing file, then the disk's flush.
- {dio_note}
- One run on a shared machine (the load average is shown): the rounds alternate raw and iifs so
  that drift weighs on both sides alike; compare ratios within the run.
""")
EOF
