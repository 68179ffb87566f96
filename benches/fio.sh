#!/usr/bin/env bash
# End-to-end benchmark of iifs against the raw backing file and qemu-storage-daemon (issue 5),
# and of compact dependent sets (shadow 1/4 of the master + an overflow volume) against
# full-size ones (issue 10), and the figures of issue 15: allocating 1 MiB writes with an
# fdatasync each into a fresh sparse file (the peer of strict sequential first writes), and reads
# of a settled independent shadow served by the kernel (FUSE passthrough) against the same reads
# served by the daemon (`-o passthrough=off`).
#
#   bash benches/fio.sh                      # SIZE=512M RUNTIME=10: about 15 minutes
#   RUNTIME=3 SIZE=256M bash benches/fio.sh  # about 6-7 minutes
#   RUNTIME=2 SIZE=128M bash benches/fio.sh  # smoke run, about 4 minutes
#
# Environment:
#   SIZE=512M        file size of every target (K/M/G suffixes are binary; a multiple of 1 MiB)
#   RUNTIME=10       seconds per fio job (time-based jobs; one-pass jobs stop at the end of the
#                    file or after RUNTIME, whichever comes first)
#   WORKDIR=DIR      where the files go (default: a fresh mktemp directory under /var/tmp);
#                    must be absent or empty, on a real disk (not tmpfs); removed at exit
#   KEEP=1           keep WORKDIR (fio JSON, logs, report.md) instead of removing it
#   NO_BUILD=1       do not run `cargo build --release` (use the existing target/release/iifs)
#   DROP_CACHES=0    0 (default): write jobs, copies and updates start from a cold page cache
#                    (`sync; echo 3 > /proc/sys/vm/drop_caches`), read jobs with the file read
#                    once through the target just before (cached, as fio's layout leaves it);
#                    1: every job starts cold (all sides then wait on the disk for reads, which
#                    hides the daemons' own costs)
#
# Needs root, /dev/fuse, python3, fio and qemu-utils (installed with apt-get when missing).
# The report (Markdown, ready to paste into README.md) goes to stdout; progress to stderr.
# Everything is measured in one run on one machine: compare ratios, not absolute figures.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_ARG=${SIZE:-512M}
RUNTIME=${RUNTIME:-10}
KEEP=${KEEP:-0}
NO_BUILD=${NO_BUILD:-0}
DROP_CACHES=${DROP_CACHES:-0}
START=$EPOCHREALTIME

# ---------------------------------------------------------------------------------------------
# helpers

log() { printf '[%6.1fs] %s\n' "$(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*" >&2; }
die() {
    printf 'fio.sh: error: %s\n' "$*" >&2
    exit 1
}
now() { printf '%s' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }

# CPU seconds (utime + stime, all threads) of a process; 0 without a process.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local pid=$1 stat
    [ -n "$pid" ] || {
        echo 0
        return
    }
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || die "process $pid is gone (did the daemon crash?)"
    # Fields after the command name, which may contain spaces: utime and stime are 14 and 15.
    stat=${stat##*") "}
    awk '{print $12 + $13}' <<<"$stat"
}
cpu_seconds() { awk -v a="$1" -v b="$2" -v t="$CLK_TCK" 'BEGIN{printf "%.3f", (b-a)/t}'; }

# Before a read job with DROP_CACHES=1: a cold cache.
drop_caches() {
    sync
    if [ "$DROP_CACHES" = 1 ]; then
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# Before a copy or an update: always a cold cache (cp and iifs alike read from the disk).
cold_cache() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# ---------------------------------------------------------------------------------------------
# checks and tools

[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts, drop_caches)"
[ -c /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse?)"
command -v python3 >/dev/null || die "python3 is needed to parse fio's JSON"
[[ $RUNTIME =~ ^[0-9]+$ ]] && [ "$RUNTIME" -ge 1 ] || die "RUNTIME must be a whole number of seconds >= 1, not '$RUNTIME'"

need=()
command -v fio >/dev/null || need+=(fio)
command -v qemu-storage-daemon >/dev/null || need+=(qemu-utils)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    log "installing missing packages with apt-get: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
fi
# (ldd's output captured first: with pipefail, grep -q closing the pipe early can fail ldd with SIGPIPE)
QSD_LIBS=$(ldd "$(command -v qemu-storage-daemon)") || die "ldd of qemu-storage-daemon failed"
grep -q libfuse3 <<<"$QSD_LIBS" || die "this qemu-storage-daemon is built without FUSE export support"

SIZE_BYTES=$(numfmt --from=iec "$SIZE_ARG" 2>/dev/null) || die "SIZE='$SIZE_ARG' is not a size (e.g. 512M, 1G)"
[ $((SIZE_BYTES % 1048576)) = 0 ] && [ "$SIZE_BYTES" -ge $((16 << 20)) ] ||
    die "SIZE must be a multiple of 1 MiB and at least 16M, not '$SIZE_ARG'"

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
    WORKDIR=$(mktemp -d /var/tmp/iifs-fio.XXXXXX) || die "mktemp under /var/tmp failed"
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
IIFS_PID=
QSD_PIDFILE=
QSD_EXPORT=

stop_qsd() {
    local pid
    if [ -n "$QSD_PIDFILE" ] && [ -s "$QSD_PIDFILE" ]; then
        pid=$(cat "$QSD_PIDFILE")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
    fi
    if [ -n "$QSD_EXPORT" ] && grep -q " $QSD_EXPORT " /proc/mounts; then
        umount "$QSD_EXPORT" 2>/dev/null || umount -l "$QSD_EXPORT" 2>/dev/null || true
    fi
    QSD_PIDFILE=
    QSD_EXPORT=
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
            echo "fio.sh: iifs ($IIFS_PID) did not exit after umount; killing it" >&2
            kill "$IIFS_PID" 2>/dev/null || true
        fi
    fi
    IIFS_PID=
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ -s "${WORKDIR:-/nonexistent}/state/iifs.log" ]; then
        echo "fio.sh: the last lines of iifs's log ($WORKDIR/state/iifs.log):" >&2
        tail -n 15 "$WORKDIR/state/iifs.log" >&2 || true
    fi
    stop_qsd
    stop_iifs
    if [ "$KEEP" = 1 ]; then
        echo "fio.sh: kept $WORKDIR" >&2
    elif [ -n "${WORKDIR:-}" ] && [ -d "$WORKDIR" ]; then
        if grep -q " $WORKDIR/" /proc/mounts; then
            echo "fio.sh: something is still mounted under $WORKDIR; not removing it" >&2
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
    die "WORKDIR=$WORKDIR is on $FSTYPE; put it on a local disk (e.g. WORKDIR=/var/tmp/iifs-fio)"
    ;;
esac
AVAIL=$(df -B1 --output=avail "$WORKDIR" | tail -1 | tr -d ' ')
NEED=$((SIZE_BYTES * 9 + (64 << 20)))
[ "$AVAIL" -ge "$NEED" ] || die "WORKDIR=$WORKDIR has $((AVAIL >> 20)) MiB free; the run needs about $((NEED >> 20)) MiB (9 x SIZE)"

mkdir -p "$WORKDIR"/{json,log,mnt,state,iolog}
# A private copy of the binary: a rebuild of target/release during the run changes nothing here.
cp "$IIFS" "$WORKDIR/iifs" || die "cannot copy $IIFS to $WORKDIR"
IIFS=$WORKDIR/iifs
RESULTS=$WORKDIR/results.tsv # target workload value bytes cpu_s seconds note
OPS=$WORKDIR/ops.tsv         # name seconds bytes cpu_s note
: >"$RESULTS"
: >"$OPS"

# ---------------------------------------------------------------------------------------------
# workloads

WORKLOADS=(seqwrite seqread randwrite randread randwrite16 randread16 randrw fsyncwrite)
WRITE_WORKLOADS=(seqwrite randwrite randwrite16 randrw fsyncwrite)

wl_args() {
    case $1 in
    seqwrite) echo "--rw=write --bs=1M --ioengine=psync" ;;
    seqread) echo "--rw=read --bs=1M --ioengine=psync" ;;
    randwrite) echo "--rw=randwrite --bs=4k --direct=1 --ioengine=psync" ;;
    randread) echo "--rw=randread --bs=4k --direct=1 --ioengine=psync" ;;
    randwrite16) echo "--rw=randwrite --bs=4k --direct=1 --ioengine=libaio --iodepth=16" ;;
    randread16) echo "--rw=randread --bs=4k --direct=1 --ioengine=libaio --iodepth=16" ;;
    randrw) echo "--rw=randrw --rwmixread=70 --bs=4k --direct=1 --ioengine=psync" ;;
    fsyncwrite) echo "--rw=randwrite --bs=4k --fsync=1 --ioengine=psync" ;;
    *) die "unknown workload $1" ;;
    esac
}

# An fio v2 iolog: LEN-byte writes at the start of chunks, for replay with --read_iolog.
#   mkiolog OUT CHUNK LEN STRIDE ORDER(seq|random) SYNC(0|1)
mkiolog() {
    python3 - "$@" "$SIZE_BYTES" <<'EOF'
import random, sys
out, chunk, length, stride, order, sync, size = sys.argv[1:8]
chunk, length, stride, size = int(chunk), int(length), int(stride), int(size)
idx = list(range(0, size // chunk, stride))
if order == "random":
    random.Random(5).shuffle(idx)
with open(out, "w") as f:
    f.write("fio version 2 iolog\nfile add\nfile open\n")
    for i in idx:
        f.write(f"file write {i * chunk} {length}\n")
        if sync == "1":
            f.write("file sync 0 0\n")
    f.write("file close\n")
print(len(idx))
EOF
}

# Summarise one fio JSON: value (MB/s for 1 MiB jobs, IOPS otherwise) and bytes moved.
fio_summary() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
path, wl = sys.argv[1:3]
with open(path) as f:
    text = f.read()
# fio may print warnings before the JSON document.
doc = json.loads(text[text.index("{"):])
job = doc["jobs"][0]
if job.get("error", 0):
    sys.exit(f"fio reported error {job['error']}")
r, w = job["read"], job["write"]
if wl.startswith("seq"):
    value = (r["bw_bytes"] + w["bw_bytes"]) / 1e6
else:
    value = r["iops"] + w["iops"]
nbytes = r["io_bytes"] + w["io_bytes"]
print(f"{value:.1f} {nbytes} {job['job_runtime'] / 1000:.2f}")
EOF
}

# run_fio TARGET WORKLOAD FILE PID MODE [NOTE]
#   MODE timed: time-based for RUNTIME over the whole file
#        pass:  one pass over the file, stopped after RUNTIME
#        iolog=FILE: replay FILE (4 KiB first writes), stopped after RUNTIME
#   FIO_EXTRA="ARGS" in the environment: more fio arguments for this job (e.g. --fdatasync=1)
run_fio() {
    local target=$1 wl=$2 file=$3 pid=$4 mode=$5 note=${6:-}
    local json=$WORKDIR/json/$target.$wl.json err=$WORKDIR/log/$target.$wl.fio.err
    local -a args common extra=()
    read -ra args <<<"$(wl_args "$wl")"
    [ -z "${FIO_EXTRA:-}" ] || read -ra extra <<<"$FIO_EXTRA"
    common=(--name="$target-$wl" --filename="$file" --size="$SIZE_BYTES" --runtime="$RUNTIME"
        --fallocate=none --output-format=json --output="$json")
    case $mode in
    timed) common+=(--time_based) ;;
    pass) ;;
    iolog=*)
        common+=(--read_iolog="${mode#iolog=}" --replay_redirect="$file")
        # rw and bs come from the log; keep the engine, depth, O_DIRECT.
        local -a keep=()
        for a in "${args[@]}"; do
            case $a in --rw=* | --bs=* | --fsync=*) ;; *) keep+=("$a") ;; esac
        done
        args=("${keep[@]}")
        ;;
    *) die "run_fio: mode $mode" ;;
    esac
    # Every side starts a job from the same cache state, whatever ran before it: write jobs
    # from a cold cache (on this kernel a 4 KiB buffered write into a cached large folio, made
    # by an earlier large write or by readahead, dirties the whole folio and runs at a third of
    # the speed, so the cache's history would decide the figures), read jobs with the file read
    # once through the target just before (fio's defaults leave a file cached after its layout).
    case $wl in
    seqread | randread | randread16)
        drop_caches
        [ "$DROP_CACHES" = 1 ] || warm_cache "$file"
        ;;
    *) cold_cache ;;
    esac
    log "$target $wl ($mode)"
    local c0 c1 t0 t1 sum
    c0=$(cpu_ticks "$pid")
    t0=$(now)
    if ! fio "${common[@]}" "${args[@]}" "${extra[@]}" >"$err" 2>&1; then
        cat "$err" >&2
        die "fio failed: target $target, workload $wl, file $file (see above)"
    fi
    t1=$(now)
    c1=$(cpu_ticks "$pid")
    sum=$(fio_summary "$json" "$wl") || die "cannot read fio's result $json"
    local value nbytes secs
    read -r value nbytes secs <<<"$sum"
    local cpu=-
    [ -n "$pid" ] && cpu=$(cpu_seconds "$c0" "$c1")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$wl" "$value" "$nbytes" "$cpu" "$secs" "$note" >>"$RESULTS"
    log "  -> $value $([[ $wl == seq* ]] && echo MB/s || echo IOPS), daemon CPU ${cpu}s, wall $(elapsed "$t0" "$t1")s"
}

# Read FILE once, sequentially, through whatever serves it (untimed).
warm_cache() {
    fio --name=warm --filename="$1" --size="$SIZE_BYTES" --rw=read --bs=1M --ioengine=psync \
        --output-format=json --output="$WORKDIR/log/warm.json" >"$WORKDIR/log/warm.err" 2>&1 || {
        cat "$WORKDIR/log/warm.err" >&2
        die "fio failed reading $1 to warm the cache"
    }
}

# Untimed preparation writes (not recorded).
prep_fio() {
    local what=$1 file=$2
    shift 2
    log "prepare: $what"
    fio --name=prep --filename="$file" --size="$SIZE_BYTES" --fallocate=none --ioengine=psync \
        --output-format=json --output="$WORKDIR/log/prep.json" "$@" >"$WORKDIR/log/prep.err" 2>&1 || {
        cat "$WORKDIR/log/prep.err" >&2
        die "fio failed preparing: $what"
    }
}

record_op() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OPS"; }

# ---------------------------------------------------------------------------------------------
# qemu-storage-daemon

# start_qsd NAME EXPORT_NODE BLOCKDEV...: export the node on $WORKDIR/NAME.export (a regular file)
start_qsd() {
    local name=$1 node=$2
    shift 2
    local -a bd=()
    for b in "$@"; do bd+=(--blockdev "$b"); done
    QSD_EXPORT=$WORKDIR/$name.export
    QSD_PIDFILE=$WORKDIR/$name.qsd.pid
    : >"$QSD_EXPORT"
    rm -f "$QSD_PIDFILE"
    log "qemu-storage-daemon: export $node on $QSD_EXPORT"
    qemu-storage-daemon --daemonize --pidfile "$QSD_PIDFILE" "${bd[@]}" \
        --export "type=fuse,id=e0,node-name=$node,mountpoint=$QSD_EXPORT,writable=on" \
        >"$WORKDIR/log/$name.qsd.log" 2>&1 || {
        cat "$WORKDIR/log/$name.qsd.log" >&2
        die "qemu-storage-daemon failed to start (export $name)"
    }
    for _ in $(seq 100); do
        grep -q " $QSD_EXPORT fuse" /proc/mounts && [ -s "$QSD_PIDFILE" ] && break
        sleep 0.1
    done
    grep -q " $QSD_EXPORT fuse" /proc/mounts || die "qemu-storage-daemon's FUSE export $QSD_EXPORT is not mounted after 10 s"
    [ -s "$QSD_PIDFILE" ] || die "qemu-storage-daemon wrote no pid file"
    QSD_PID=$(cat "$QSD_PIDFILE")
    local sz
    sz=$(stat -c %s "$QSD_EXPORT")
    [ "$sz" = "$SIZE_BYTES" ] || die "the export $QSD_EXPORT has size $sz, expected $SIZE_BYTES"
}

# ---------------------------------------------------------------------------------------------
# iifs

# ctl FILE WORDS...: one command; on refusal, print the daemon's reply
ctl() {
    local f=$1 fd reply
    shift
    exec {fd}<>"$f" || die "cannot open $f"
    if ! printf '%s\n' "$*" >&"$fd" 2>/dev/null; then
        reply=$(cat <&"$fd" 2>/dev/null || true)
        exec {fd}>&-
        die "iifs refused '$*' on $f: ${reply:-no reply}"
    fi
    exec {fd}>&-
}

status_val() { awk -v k="$2:" '$1 == k {print $2}' "$MNT/sets/$1/status"; }

# start_iifs [OPTIONS [try]]: mount with `-o state_dir=...,OPTIONS`; with `try`, a refused start
# returns 1 (the daemon's words in $WORKDIR/log/iifs.start) instead of ending the run
start_iifs() {
    local opts=${1:-} try=${2:-}
    log "iifs: mount $MNT${opts:+ (-o $opts)}"
    if ! "$IIFS" none "$MNT" -o "state_dir=$WORKDIR/state${opts:+,$opts}" >"$WORKDIR/log/iifs.start" 2>&1; then
        [ "$try" != try ] || return 1
        cat "$WORKDIR/log/iifs.start" "$WORKDIR/state/iifs.log" >&2 2>/dev/null || true
        die "iifs failed to mount $MNT"
    fi
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

# new_set KIND MASTER NAME [OPTION=VALUE...]: enable a set on MASTER with a fresh sparse shadow
# and empty bitmap
new_set() {
    local kind=$1 master=$2 name=$3
    shift 3
    truncate -s "$SIZE_BYTES" "$WORKDIR/$name.shadow"
    : >"$WORKDIR/$name.bitmap"
    ctl "$MNT/ctl" enable "$kind" "$master" "$WORKDIR/$name.shadow" "$WORKDIR/$name.bitmap" "$name" "$@"
}

# new_compact_set MASTER NAME [OPTION=VALUE...]: a compact dependent set (issue 10) on MASTER: a
# sparse shadow of a quarter of the master's size, an empty bitmap, and an overflow volume
# NAME.overflow (sparse, the master's size: chunks_total = CHUNKS - 1) known as NAME-ovf and
# attached, so that preserved chunks spill into it once the shadow's slots are taken. Shadow and
# overflow hold CHUNKS/4 + CHUNKS - 1 chunks: every chunk of the master fits, never out of space.
new_compact_set() {
    local master=$1 name=$2
    shift 2
    truncate -s $((SIZE_BYTES / 4)) "$WORKDIR/$name.shadow"
    : >"$WORKDIR/$name.bitmap"
    truncate -s "$SIZE_BYTES" "$WORKDIR/$name.overflow"
    ctl "$MNT/ctl" enable dep "$master" "$WORKDIR/$name.shadow" "$WORKDIR/$name.bitmap" "$name" "$@"
    [ "$(status_val "$name" type)" = compact ] || die "a dependent set with a shadow of SIZE/4 is not compact: $(cat "$MNT/sets/$name/status")"
    ctl "$MNT/ctl" overflow init "$WORKDIR/$name.overflow" "$name-ovf"
    ctl "$MNT/sets/$name/ctl" attach "$name-ovf"
    [ "$(status_val "$name" overflow)" = "$name-ovf" ] || die "the overflow $name-ovf is not attached to $name: $(cat "$MNT/sets/$name/status")"
    [ "$(status_val "$name" shadow_chunks)" = $((CHUNKS / 4)) ] || die "the compact shadow of $name has $(status_val "$name" shadow_chunks) slots, expected $((CHUNKS / 4))"
}

# compact_usage NAME: "shadow=N overflow=N" chunks of a compact set; dies when it ran out of space
compact_usage() {
    local st
    st=$(status_val "$1" state)
    [ "$st" = idle ] || die "compact set $1 is '$st', not idle (out of space?): $(cat "$MNT/sets/$1/status")"
    echo "shadow=$(status_val "$1" shadow_chunks_used) overflow=$(status_val "$1" overflow_chunks_used)"
}

drop_set() {
    ctl "$MNT/sets/$1/ctl" disable
    if [ -e "$WORKDIR/$1.overflow" ]; then
        ctl "$MNT/ctl" overflow delete "$1-ovf"
    fi
    rm -f "$WORKDIR/$1.shadow" "$WORKDIR/$1.bitmap" "$WORKDIR/$1.overflow"
}

# ---------------------------------------------------------------------------------------------
# the run

log "work dir $WORKDIR ($(df --output=fstype "$WORKDIR" | tail -1)), SIZE=$SIZE_BYTES bytes, RUNTIME=${RUNTIME}s"
log "template: $((SIZE_BYTES >> 20)) MiB of random data"
head -c "$SIZE_BYTES" /dev/urandom >"$WORKDIR/template.img" || die "cannot write $WORKDIR/template.img"
copy_template() { cp --reflink=never "$WORKDIR/template.img" "$1" || die "cannot copy the template to $1"; }

# --- raw: the backing file itself
copy_template "$WORKDIR/raw.img"
for wl in "${WORKLOADS[@]}"; do run_fio raw "$wl" "$WORKDIR/raw.img" "" timed; done
rm -f "$WORKDIR/raw.img"

# --- qsd-raw: qemu-storage-daemon's FUSE export of a raw file
copy_template "$WORKDIR/qsdraw.img"
start_qsd qsdraw f0 "driver=file,node-name=f0,filename=$WORKDIR/qsdraw.img"
for wl in "${WORKLOADS[@]}"; do run_fio qsd-raw "$wl" "$QSD_EXPORT" "$QSD_PID" timed; done
stop_qsd
rm -f "$WORKDIR/qsdraw.img"

# Chunk size of iifs sets (the daemon's default); qcow2 clusters are made the same size.
CHUNK=65536
CHUNKS=$((SIZE_BYTES / CHUNK))
FIRST_LOG=$WORKDIR/iolog/first.iolog
FIRST_SYNC_LOG=$WORKDIR/iolog/first-sync.iolog
mkiolog "$FIRST_LOG" "$CHUNK" 4096 1 random 0 >/dev/null
mkiolog "$FIRST_SYNC_LOG" "$CHUNK" 4096 1 random 1 >/dev/null

# first-write variants: 1 MiB sequential one pass; 4 KiB writes, one at the start of every
# chunk in random order (so every write is the first to its chunk), at QD1, QD16, and + fsync
first_write() { # TARGET FILE PID WORKLOAD
    case $4 in
    seqwrite) run_fio "$1" seqwrite "$2" "$3" pass ;;
    randwrite | randwrite16) run_fio "$1" "$4" "$2" "$3" "iolog=$FIRST_LOG" ;;
    fsyncwrite) run_fio "$1" fsyncwrite "$2" "$3" "iolog=$FIRST_SYNC_LOG" ;;
    esac
}
FIRST_WORKLOADS=(seqwrite randwrite randwrite16 fsyncwrite)

# --- qsd-qcow2-first: a fresh qcow2 overlay (cluster = chunk size) per workload
copy_template "$WORKDIR/base.img"
for wl in "${FIRST_WORKLOADS[@]}"; do
    rm -f "$WORKDIR/ovl.qcow2"
    qemu-img create -q -f qcow2 -o "cluster_size=$CHUNK" -b "$WORKDIR/base.img" -F raw "$WORKDIR/ovl.qcow2" ||
        die "qemu-img create of the qcow2 overlay failed"
    start_qsd qcow2 q0 "driver=file,node-name=f0,filename=$WORKDIR/ovl.qcow2" "driver=qcow2,node-name=q0,file=f0"
    first_write qsd-qcow2-first "$QSD_EXPORT" "$QSD_PID" "$wl"
    stop_qsd
done

# --- qsd-qcow2: an overlay whose clusters were all allocated by one sequential pass
rm -f "$WORKDIR/ovl.qcow2"
qemu-img create -q -f qcow2 -o "cluster_size=$CHUNK" -b "$WORKDIR/base.img" -F raw "$WORKDIR/ovl.qcow2" ||
    die "qemu-img create of the qcow2 overlay failed"
start_qsd qcow2 q0 "driver=file,node-name=f0,filename=$WORKDIR/ovl.qcow2" "driver=qcow2,node-name=q0,file=f0"
prep_fio "allocate every qcow2 cluster (one 1 MiB sequential pass)" "$QSD_EXPORT" --rw=write --bs=1M
for wl in "${WORKLOADS[@]}"; do run_fio qsd-qcow2 "$wl" "$QSD_EXPORT" "$QSD_PID" timed; done
stop_qsd
rm -f "$WORKDIR/ovl.qcow2" "$WORKDIR/base.img"

# --- iifs
start_iifs
RSS0=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$IIFS_PID/status")

# enable of a 1 TiB sparse dependent set, and the daemon's RSS with it
truncate -s 1T "$WORKDIR/big.master" "$WORKDIR/big.shadow"
: >"$WORKDIR/big.bitmap"
sync
t0=$(now)
ctl "$MNT/ctl" enable dep "$WORKDIR/big.master" "$WORKDIR/big.shadow" "$WORKDIR/big.bitmap" big
t1=$(now)
RSS1=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$IIFS_PID/status")
record_op enable-1T "$(elapsed "$t0" "$t1")" 0 - "rss_before_kib=$RSS0 rss_after_kib=$RSS1"
log "enable of a 1 TiB dependent set: $(elapsed "$t0" "$t1")s, RSS $RSS0 -> $RSS1 KiB"
ctl "$MNT/sets/big/ctl" disable
rm -f "$WORKDIR/big.master" "$WORKDIR/big.shadow" "$WORKDIR/big.bitmap"

# independent full copy vs cp: both from a cold cache, both ending with an fsync of the copy;
# two rounds, alternating, since the disk's speed drifts on a shared machine (the report takes
# the mean). The first round's set stays as "noset" for the jobs below.
copy_template "$WORKDIR/ind.master"
for round in 1 2; do
    cold_cache
    log "cp --reflink=never of $((SIZE_BYTES >> 20)) MiB + sync (round $round)"
    t0=$(now)
    cp --reflink=never "$WORKDIR/ind.master" "$WORKDIR/cp.copy" || die "cp failed"
    sync "$WORKDIR/cp.copy"
    t1=$(now)
    record_op cp "$(elapsed "$t0" "$t1")" "$SIZE_BYTES" - ""
    rm -f "$WORKDIR/cp.copy"
    name=noset
    [ "$round" = 1 ] || name=copy$round
    cold_cache
    log "iifs independent set: enable + wait + sync of the shadow (round $round)"
    c0=$(cpu_ticks "$IIFS_PID")
    t0=$(now)
    new_set ind "$WORKDIR/ind.master" "$name"
    ctl "$MNT/sets/$name/ctl" wait
    sync "$WORKDIR/$name.shadow"
    t1=$(now)
    c1=$(cpu_ticks "$IIFS_PID")
    [ "$(status_val "$name" state)" = idle ] || die "the independent copy did not end idle: $(cat "$MNT/sets/$name/status")"
    [ "$(status_val "$name" chunk_size)" = "$CHUNK" ] || die "iifs's default chunk size is not $CHUNK; adjust CHUNK in $0"
    cmp -s "$WORKDIR/ind.master" "$WORKDIR/$name.shadow" || die "the independent copy differs from its master"
    record_op iifs-ind-copy "$(elapsed "$t0" "$t1")" "$SIZE_BYTES" "$(cpu_seconds "$c0" "$c1")" ""
    log "  -> $(elapsed "$t0" "$t1")s"
    [ "$name" = noset ] || drop_set "$name"
done

# update shadow after 1 %, 10 %, 100 % of the chunks changed (every 100th, every 10th, all)
for pct in 1 10 100; do
    stride=$((100 / pct))
    n=$(mkiolog "$WORKDIR/iolog/upd$pct.iolog" "$CHUNK" "$CHUNK" "$stride" seq 0)
    prep_fio "write $n of $CHUNKS chunks ($pct %) through the master" "$MNT/sets/noset/master" \
        --read_iolog="$WORKDIR/iolog/upd$pct.iolog" --replay_redirect="$MNT/sets/noset/master"
    differ=$(status_val noset chunks_differ)
    [ "$differ" = "$n" ] || die "after writing $n chunks, chunks_differ is $differ"
    cold_cache
    log "iifs update shadow of $n chunks + wait + sync"
    c0=$(cpu_ticks "$IIFS_PID")
    t0=$(now)
    ctl "$MNT/sets/noset/ctl" update shadow
    ctl "$MNT/sets/noset/ctl" wait
    sync "$WORKDIR/noset.shadow"
    t1=$(now)
    c1=$(cpu_ticks "$IIFS_PID")
    [ "$(status_val noset chunks_differ)" = 0 ] || die "update shadow left $(status_val noset chunks_differ) chunks differing"
    record_op "iifs-update-$pct" "$(elapsed "$t0" "$t1")" $((n * CHUNK)) "$(cpu_seconds "$c0" "$c1")" "chunks=$n"
    log "  -> $(elapsed "$t0" "$t1")s"
done

# iifs-noset: the master of the independent set, its copy done and every chunk equal;
# iifs-dep-over: a dependent set after one sequential pass preserved every chunk;
# iifs-compact-over (issue 10, write workloads only): a compact set (shadow SIZE/4 + overflow)
# after the same pass: a quarter of the chunks preserved in its shadow, the rest in its
# overflow. Each workload runs on all of them back to back, so drift over the run does not
# enter their ratios; for the write workloads dep-over and compact-over run twice, in the order
# full, compact, compact, full (the report takes the mean of the two rounds), so that a drift
# within the four jobs weighs the same on both sides.
copy_template "$WORKDIR/dep.master"
new_set dep "$WORKDIR/dep.master" over
prep_fio "preserve every chunk of the dependent set (one 1 MiB sequential pass)" "$MNT/sets/over/master" --rw=write --bs=1M
[ "$(status_val over chunks_differ)" = "$CHUNKS" ] || die "after a full pass, chunks_differ is $(status_val over chunks_differ), not $CHUNKS"
copy_template "$WORKDIR/cmp.master"
new_compact_set "$WORKDIR/cmp.master" cover
prep_fio "preserve every chunk of the compact set (one 1 MiB sequential pass)" "$MNT/sets/cover/master" --rw=write --bs=1M
[ "$(status_val cover chunks_differ)" = "$CHUNKS" ] || die "after a full pass, the compact set's chunks_differ is $(status_val cover chunks_differ), not $CHUNKS"
usage=$(compact_usage cover)
[ "$usage" = "shadow=$((CHUNKS / 4)) overflow=$((CHUNKS - CHUNKS / 4))" ] || die "after a full pass the compact set holds $usage"
for wl in "${WORKLOADS[@]}"; do
    run_fio iifs-noset "$wl" "$MNT/sets/noset/master" "$IIFS_PID" timed
    run_fio iifs-dep-over "$wl" "$MNT/sets/over/master" "$IIFS_PID" timed
    if [[ " ${WRITE_WORKLOADS[*]} " == *" $wl "* ]]; then
        for round in 1 2; do
            run_fio iifs-compact-over "$wl" "$MNT/sets/cover/master" "$IIFS_PID" timed "$usage"
            [ "$(compact_usage cover)" = "$usage" ] || die "overwrites changed the compact set's usage: $(compact_usage cover), was $usage"
        done
        run_fio iifs-dep-over "$wl" "$MNT/sets/over/master" "$IIFS_PID" timed
    fi
done
drop_set noset
drop_set over
drop_set cover
rm -f "$WORKDIR/ind.master" "$WORKDIR/cmp.master"

# first_write_set TARGET WORKLOAD dep|compact [OPTION=VALUE...]: a fresh dependent set (full-size
# or compact) enabled with the options, so that every write is the first to its chunk; records
# how many chunks the job preserved (and, compact, where they went)
first_write_set() {
    local target=$1 wl=$2 kind=$3 set=first-$1-$2 copied
    shift 3
    if [ "$kind" = compact ]; then
        new_compact_set "$WORKDIR/dep.master" "$set" "$@"
    else
        new_set dep "$WORKDIR/dep.master" "$set" "$@"
    fi
    first_write "$target" "$MNT/sets/$set/master" "$IIFS_PID" "$wl"
    copied="chunks_copied=$(status_val "$set" chunks_differ)"
    [ "$kind" = dep ] || copied="$copied $(compact_usage "$set")"
    sed -i "\$s/\t\$/\t$copied/" "$RESULTS"
    drop_set "$set"
}

# raw-alloc-sync (issue 15): one pass of 1 MiB writes, each followed by an fdatasync, into a file
# just made sparse (truncate) on the same file system, from a cold cache: every write allocates
# its blocks and its fdatasync makes data and allocation durable, the raw file's counterpart of
# a strict sequential first write
raw_alloc_sync() {
    local f=$WORKDIR/alloc.img
    rm -f "$f"
    truncate -s "$SIZE_BYTES" "$f" || die "cannot create the sparse file $f"
    [ "$(stat -c %b "$f")" = 0 ] || die "$f is not sparse ($(stat -c %b "$f") blocks)"
    FIO_EXTRA=--fdatasync=1 run_fio raw-alloc-sync seqwrite "$f" "" pass
    rm -f "$f"
}

# iifs-dep-first: strict durability; iifs-compact-first (issue 10): the same on a compact set
# (shadow SIZE/4 + an attached overflow), back to back with it for each workload, twice, in the
# order full, compact, compact, full (the report takes the mean of the rounds); for the 1 MiB
# sequential write, raw-alloc-sync runs before the first and after the last of them (the mean of
# the two);
# iifs-dep-first-relaxed: no flushes before the write (the point in time survives a daemon crash
# but not a power loss), as qcow2 acknowledges writes
for wl in "${FIRST_WORKLOADS[@]}"; do
    [ "$wl" != seqwrite ] || raw_alloc_sync
    first_write_set iifs-dep-first "$wl" dep
    first_write_set iifs-compact-first "$wl" compact
    first_write_set iifs-compact-first "$wl" compact
    first_write_set iifs-dep-first "$wl" dep
    [ "$wl" != seqwrite ] || raw_alloc_sync
done
for wl in "${FIRST_WORKLOADS[@]}"; do
    first_write_set iifs-dep-first-relaxed "$wl" dep durability=relaxed
done

# iifs-shadow: reads of a dependent shadow, every other chunk preserved in the shadow file
# and the rest served from the master
new_set dep "$WORKDIR/dep.master" mix
n=$(mkiolog "$WORKDIR/iolog/half.iolog" "$CHUNK" "$CHUNK" 2 seq 0)
prep_fio "preserve every other chunk ($n of $CHUNKS) of a dependent set" "$MNT/sets/mix/master" \
    --read_iolog="$WORKDIR/iolog/half.iolog" --replay_redirect="$MNT/sets/mix/master"
[ "$(status_val mix chunks_differ)" = "$n" ] || die "chunks_differ is $(status_val mix chunks_differ), not $n"
for wl in seqread randread randread16; do
    run_fio iifs-shadow "$wl" "$MNT/sets/mix/shadow" "$IIFS_PID" timed "50% preserved"
done
drop_set mix
rm -f "$WORKDIR/dep.master"

# iifs-ind-shadow (issue 15): reads of the shadow of an independent set whose full copy finished
# (settled; its master is not written afterwards), opened read-only: with the daemon's default
# `passthrough=on` the kernel serves them from the shadow file itself. iifs-ind-shadow-daemon:
# the same jobs on the same file after the daemon was stopped and started again with
# `-o passthrough=off` (the set comes back from the registry): every read goes through the daemon.
# A daemon that refuses the option leaves that row empty (the report says so).
IND_READS=(seqread randread randread16)
copy_template "$WORKDIR/ishadow.master"
new_set ind "$WORKDIR/ishadow.master" ishadow
ctl "$MNT/sets/ishadow/ctl" wait
[ "$(status_val ishadow state)" = idle ] || die "the independent copy did not end idle: $(cat "$MNT/sets/ishadow/status")"
cmp -s "$WORKDIR/ishadow.master" "$WORKDIR/ishadow.shadow" || die "the independent copy differs from its master"
for wl in "${IND_READS[@]}"; do
    FIO_EXTRA=--readonly run_fio iifs-ind-shadow "$wl" "$MNT/sets/ishadow/shadow" "$IIFS_PID" timed
done
stop_iifs
if start_iifs passthrough=off try; then
    for _ in $(seq 100); do
        [ "$(status_val ishadow state 2>/dev/null)" = idle ] && break
        sleep 0.1
    done
    [ "$(status_val ishadow state 2>/dev/null)" = idle ] ||
        die "the set ishadow did not come back idle after the restart: $(cat "$MNT/sets/ishadow/status" 2>&1)"
    for wl in "${IND_READS[@]}"; do
        FIO_EXTRA=--readonly run_fio iifs-ind-shadow-daemon "$wl" "$MNT/sets/ishadow/shadow" "$IIFS_PID" timed
    done
    drop_set ishadow
    stop_iifs
else
    why=$(grep -v '^[[:space:]]*$' "$WORKDIR/log/iifs.start" | tail -n 1 | sed "s| in -o .*||" | tr "\t|" "  " | cut -c 1-200 || true)
    log "iifs refused -o passthrough=off (${why:-no message}): no iifs-ind-shadow-daemon row"
    record_op passthrough-off-refused 0 0 - "${why:-no message}"
fi
rm -f "$WORKDIR/ishadow.master" "$WORKDIR/ishadow.shadow" "$WORKDIR/ishadow.bitmap"

# --- raw-end: write+fsync on the raw file again: the disk's flush latency drifts over a run, and
# the fsync targets compare with the mean of the start and the end
copy_template "$WORKDIR/raw.img"
run_fio raw-end fsyncwrite "$WORKDIR/raw.img" "" timed
rm -f "$WORKDIR/raw.img"

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

export RESULTS OPS SIZE_BYTES RUNTIME CHUNK CHUNKS DROP_CACHES TOTAL GIT CPU_MODEL MEM DISK_DF DISK_INFO
export FIO_V=$(fio --version) QSD_V=$(qemu-storage-daemon --version | head -1) IIFS_V=$("$IIFS" --version)
export KERNEL=$(uname -r) NPROC=$(nproc)
python3 - <<'EOF' | tee "$WORKDIR/report.md"
import os

E = os.environ
size = int(E["SIZE_BYTES"])
GiB = 1 << 30

cols = [
    ("seqwrite", "1M seq write MB/s"),
    ("seqread", "1M seq read MB/s"),
    ("randwrite", "4K rand write QD1 IOPS"),
    ("randread", "4K rand read QD1 IOPS"),
    ("randwrite16", "4K rand write QD16 IOPS"),
    ("randread16", "4K rand read QD16 IOPS"),
    ("randrw", "4K 70/30 rw QD1 IOPS"),
    ("fsyncwrite", "4K write+fsync IOPS"),
]
rows = ["raw", "raw-alloc-sync", "qsd-raw", "qsd-qcow2-first", "qsd-qcow2", "iifs-noset", "iifs-dep-first",
        "iifs-compact-first", "iifs-dep-first-relaxed", "iifs-dep-over", "iifs-compact-over",
        "iifs-shadow", "iifs-ind-shadow", "iifs-ind-shadow-daemon", "raw-end"]
iifs_rows = [r for r in rows if r.startswith("iifs")]
not_daemons = ("raw", "raw-alloc-sync", "raw-end")
peer = {"iifs-dep-first": "qsd-qcow2-first", "iifs-compact-first": "qsd-qcow2-first",
        "iifs-dep-first-relaxed": "qsd-qcow2-first"}

res = {}   # (target, wl) -> dict; a job run several times: the mean value, CPU and bytes summed
for line in open(E["RESULTS"]):
    t, wl, value, nbytes, cpu, secs, note = line.rstrip("\n").split("\t")
    r = dict(value=float(value), bytes=int(nbytes), cpu=None if cpu == "-" else float(cpu),
             secs=float(secs), note=note, each=[float(value)], notes=[note])
    o = res.get((t, wl))
    if o is not None:
        o["each"].append(r["value"])
        o["notes"].append(note)
        o["value"] = sum(o["each"]) / len(o["each"])
        o["bytes"] += r["bytes"]
        o["secs"] += r["secs"]
        o["cpu"] = None if o["cpu"] is None or r["cpu"] is None else o["cpu"] + r["cpu"]
        r = o
    res[(t, wl)] = r
ops = {}    # name -> dict; an operation run several times gets the mean of its rounds
rounds = {}
for line in open(E["OPS"]):
    name, secs, nbytes, cpu, note = line.rstrip("\n").split("\t")
    rounds.setdefault(name, []).append(dict(secs=float(secs), bytes=int(nbytes),
                                            cpu=None if cpu == "-" else float(cpu), note=note))
for name, rs in rounds.items():
    cpus = [r["cpu"] for r in rs if r["cpu"] is not None]
    ops[name] = dict(secs=sum(r["secs"] for r in rs) / len(rs), bytes=rs[0]["bytes"],
                     cpu=sum(cpus) / len(cpus) if cpus else None, note=rs[0]["note"], n=len(rs),
                     each=[r["secs"] for r in rs])

def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b

def fr(x):
    return "-" if x is None else f"{x:.2f}x"

def val(t, wl):
    r = res.get((t, wl))
    return None if r is None else r["value"]

def table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(l) + " |" for l in lines]
    print("\n".join(out))
    print()

print(f"## iifs end-to-end benchmark (benches/fio.sh)\n")
print(f"`SIZE={size >> 20}M RUNTIME={E['RUNTIME']} bash benches/fio.sh` — iifs {E['GIT']}, "
      f"chunk {int(E['CHUNK']) >> 10} KiB, durability=strict, total run {float(E['TOTAL']):.0f} s\n")
print("Machine:\n")
print(f"- {E['NPROC']} CPUs ({E['CPU_MODEL']}), {E['MEM']} memory, kernel {E['KERNEL']}")
print(f"- work dir on `{E['DISK_DF']}` (df: source, type, size, free, mount)" + (f"; disk {E['DISK_INFO']}" if E['DISK_INFO'] else ""))
print(f"- {E['FIO_V']}, {E['QSD_V']}, {E['IIFS_V']}\n")

print("### Throughput (MB/s = 10^6 bytes/s for 1 MiB jobs, IOPS for 4 KiB jobs)\n")
# A row the daemon could not measure (iifs-ind-shadow-daemon when `-o passthrough=off` was refused)
# is shown, empty, with the reason.
refused = ops.get("passthrough-off-refused")
shown = {"iifs-ind-shadow-daemon": " (not measured: `-o passthrough=off` refused)"} if refused else {}
table(["target"] + [c[1] for c in cols],
      [[f"`{t}`" + shown.get(t, "")] + [fmt(val(t, wl)) for wl, _ in cols] for t in rows
       if any((t, wl) in res for wl, _ in cols) or t in shown])
if refused:
    print(f"This iifs refused `-o passthrough=off` (\"{refused['note']}\"): the daemon-served row of the "
          "independent shadow is empty.\n")

print("### Daemon CPU seconds per GiB moved (utime+stime of the daemon over the job / GiB fio moved)\n")
lines = []
for t in rows:
    if t in not_daemons:
        continue
    cells, tot_cpu, tot_b = [], 0.0, 0
    for wl, _ in cols:
        r = res.get((t, wl))
        if r is None or r["cpu"] is None or r["bytes"] == 0:
            cells.append("-")
            continue
        cells.append(f"{r['cpu'] / (r['bytes'] / GiB):.2f}")
        tot_cpu += r["cpu"]
        tot_b += r["bytes"]
    if tot_b:
        lines.append([f"`{t}`"] + cells + [f"{tot_cpu / (tot_b / GiB):.2f}"])
for name in ("iifs-ind-copy", "iifs-update-10", "iifs-update-100"):
    o = ops.get(name)
    if o and o["cpu"] is not None and o["bytes"]:
        lines.append([f"`{name}`"] + ["-"] * len(cols) + [f"{o['cpu'] / (o['bytes'] / GiB):.2f}"])
table(["target"] + [c[0] for c in cols] + ["all jobs"], lines)

for base, title in (("raw", "raw file"), ("qsd-raw", "qemu-storage-daemon raw export"),
                    ("peer", "qemu-storage-daemon qcow2 overlay (dep-first: fresh overlays; others: allocated overlay)")):
    print(f"### Ratio to the {title} (higher is better)\n")
    lines = []
    for t in iifs_rows:
        b = peer.get(t, "qsd-qcow2") if base == "peer" else base
        cells = [fr(ratio(val(t, wl), val(b, wl))) for wl, _ in cols]
        if any(c != "-" for c in cells):
            lines.append([f"`{t}`"] + cells)
    table(["target"] + [c[0] for c in cols], lines)

print("### Copies and updates (cold cache, each ending with an fsync of the copy)\n")
lines = []
full = ops.get("iifs-ind-copy")
cp = ops.get("cp")
def each(o):
    return "" if o.get("n", 1) < 2 else " (rounds: " + ", ".join(f"{x:.2f}" for x in o["each"]) + ")"
if cp:
    lines.append([f"`cp --reflink=never` of the raw file{each(cp)}", f"{cp['secs']:.2f}", f"{cp['bytes'] / cp['secs'] / 1e6:.0f}", "-", "-"])
if full:
    lines.append([f"`iifs-ind-copy`: enable ind + wait{each(full)}", f"{full['secs']:.2f}", f"{full['bytes'] / full['secs'] / 1e6:.0f}",
                  fmt(full["cpu"]), "1.00x" if full else "-"])
for pct in (1, 10, 100):
    o = ops.get(f"iifs-update-{pct}")
    if o:
        lines.append([f"`iifs-update-{pct}`: {o['note'].replace('chunks=', '')} chunks changed, update shadow + wait",
                      f"{o['secs']:.2f}", f"{o['bytes'] / o['secs'] / 1e6:.0f}", fmt(o["cpu"]),
                      fr(ratio(o["secs"], full["secs"] if full else None))])
table(["operation", "seconds", "MB/s", "daemon CPU s", "time / full copy"], lines)
en = ops.get("enable-1T")
if en:
    kv = dict(x.split("=") for x in en["note"].split())
    print(f"Enable of a 1 TiB sparse dependent set: {en['secs'] * 1000:.1f} ms; daemon RSS "
          f"{int(kv['rss_before_kib']) / 1024:.1f} MiB before, {int(kv['rss_after_kib']) / 1024:.1f} MiB with the set.\n")

# ---- issue 5 targets
print("### Issue 5 targets, as measured in this run\n")
lines = []
def target(what, measured, goal, ok):
    lines.append([what, measured, goal, "-" if ok is None else ("yes" if ok else "**no**")])
def check(what, a, b, goal, op=">="):
    r = ratio(a, b)
    ok = None if r is None else (r >= goal if op == ">=" else r <= goal)
    target(what, fr(r), f"{op} {goal}x", ok)

for t in ("iifs-noset", "iifs-dep-over"):
    check(f"1M seq write `{t}` / raw", val(t, "seqwrite"), val("raw", "seqwrite"), 1.1)
    check(f"1M seq write `{t}` / qsd-raw", val(t, "seqwrite"), val("qsd-raw", "seqwrite"), 2)
for t in ("iifs-noset", "iifs-shadow"):
    check(f"1M seq read `{t}` / raw", val(t, "seqread"), val("raw", "seqread"), 1.5)
    check(f"1M seq read `{t}` / qsd-raw", val(t, "seqread"), val("qsd-raw", "seqread"), 3)
check("4K direct rand write QD1 `iifs-noset` / raw", val("iifs-noset", "randwrite"), val("raw", "randwrite"), 0.9)
check("4K direct rand write QD1 `iifs-noset` / qsd-raw", val("iifs-noset", "randwrite"), val("qsd-raw", "randwrite"), 2)
check("4K direct rand read QD1 `iifs-noset` / qsd-raw", val("iifs-noset", "randread"), val("qsd-raw", "randread"), 3)
check("4K direct rand read QD16 `iifs-noset` / qsd-raw", val("iifs-noset", "randread16"), val("qsd-raw", "randread16"), 4)
fs_raw = [v for v in (val("raw", "fsyncwrite"), val("raw-end", "fsyncwrite")) if v is not None]
fs_raw = sum(fs_raw) / len(fs_raw) if fs_raw else None
for t in ("iifs-noset", "iifs-dep-over"):
    check(f"4K write+fsync `{t}` / raw (mean of `raw` and `raw-end`)", val(t, "fsyncwrite"), fs_raw, 0.8)
check("1M seq first writes `iifs-dep-first` / `iifs-dep-over`", val("iifs-dep-first", "seqwrite"), val("iifs-dep-over", "seqwrite"), 0.5)
check("1M seq first writes `iifs-dep-first-relaxed` / `iifs-dep-over`", val("iifs-dep-first-relaxed", "seqwrite"), val("iifs-dep-over", "seqwrite"), 0.5)
for wl in ("seqwrite", "randwrite", "randwrite16", "fsyncwrite"):
    check(f"overwrite `iifs-dep-over` / `iifs-noset`, {wl}", val("iifs-dep-over", wl), val("iifs-noset", wl), 0.95)
if full and cp:
    check("independent full copy speed / `cp`", cp["secs"], full["secs"], 0.8)
u10 = ops.get("iifs-update-10")
if u10 and full:
    check("update shadow at 10 % / full copy, time", u10["secs"], full["secs"], 0.15, "<=")
if en:
    target("enable of a 1 TiB sparse dependent set", f"{en['secs'] * 1000:.1f} ms", "< 50 ms", en["secs"] < 0.05)
    target("daemon RSS with it", f"{int(kv['rss_after_kib']) / 1024:.1f} MiB", "< 64 MiB", int(kv["rss_after_kib"]) < 64 * 1024)
def cpu_per_gib(t):
    c = sum(r["cpu"] for (tt, _), r in res.items() if tt == t and r["cpu"] is not None)
    b = sum(r["bytes"] for (tt, _), r in res.items() if tt == t and r["cpu"] is not None)
    return c / (b / GiB) if b else None
for t, p in (("iifs-noset", "qsd-raw"), ("iifs-dep-over", "qsd-qcow2"), ("iifs-dep-first", "qsd-qcow2-first"),
             ("iifs-dep-first-relaxed", "qsd-qcow2-first")):
    check(f"daemon CPU s/GiB `{t}` / `{p}`", cpu_per_gib(t), cpu_per_gib(p), 1.0, "<=")
table(["what", "measured", "goal", "met"], lines)

# ---- issue 10: compact dependent set (shadow 1/4 of the master + overflow) against full-size
def notes(t, wl):
    r = res.get((t, wl))
    return {} if r is None else dict(x.split("=") for x in r["note"].split() if "=" in x)
def cpu_gib(t, wl):
    r = res.get((t, wl))
    return None if r is None or r["cpu"] is None or not r["bytes"] else r["cpu"] / (r["bytes"] / GiB)
cmp_rows = [("first writes", "iifs-dep-first", "iifs-compact-first", ("seqwrite", "randwrite", "randwrite16", "fsyncwrite"), 0.8),
            ("overwrites", "iifs-dep-over", "iifs-compact-over", ("seqwrite", "randwrite", "randwrite16", "randrw", "fsyncwrite"), 0.9)]
if any(t == "iifs-compact-first" or t == "iifs-compact-over" for t, _ in res):
    print("### Compact vs full-size dependent set (issue 10)\n")
    print(f"Compact: shadow of {size >> 22} MiB ({size // int(E['CHUNK']) // 4} slots, a quarter of the master) and an attached "
          f"overflow volume of {size >> 20} MiB; full-size: the usual dependent set (shadow = master). Both `durability=strict`, "
          "64 KiB chunks, the same jobs back to back in the order full, compact, compact, full (first writes, "
          "`iifs-dep-first` / `iifs-compact-first`: a fresh set each; overwrites, `iifs-dep-over` / `iifs-compact-over`: "
          "after one 1 MiB pass preserved every chunk); the mean of the two rounds. Chunks: how many chunks each "
          "round preserved (first writes stop after RUNTIME), and for compact where they are (shadow+overflow).\n")
    lines, tlines = [], []
    for what, full_t, cmp_t, wls, goal in cmp_rows:
        for wl in wls:
            a, b = val(cmp_t, wl), val(full_t, wl)
            if a is None and b is None:
                continue
            r = ratio(a, b)
            def kv(note):
                return dict(x.split("=") for x in note.split() if "=" in x)
            def rounds(t):
                x = res.get((t, wl))
                if x is None:
                    return "-"
                s = fmt(x["value"])
                return s if len(x["each"]) < 2 else s + " (" + ", ".join(fmt(v) for v in x["each"]) + ")"
            def where(t):
                x = res.get((t, wl))
                if x is None:
                    return "-"
                if t == "iifs-dep-over":
                    return E["CHUNKS"]
                out = []
                for note in x["notes"]:
                    n = kv(note)
                    out.append(f"{n['shadow']}+{n['overflow']}" if "shadow" in n else n.get("chunks_copied", "-"))
                return ", ".join(out)
            unit = "MB/s" if wl.startswith("seq") else "IOPS"
            lines.append([what, f"{wl} ({unit})", rounds(full_t), rounds(cmp_t), fr(r),
                          f"{fmt(cpu_gib(full_t, wl))} / {fmt(cpu_gib(cmp_t, wl))}", f"{where(full_t)} / {where(cmp_t)}"])
            tlines.append([f"{what} compact / full-size, {wl}", fr(r), f">= {goal}x", "-" if r is None else ("yes" if r >= goal else "**no**")])
    table(["", "workload", "full-size: mean (rounds)", "compact: mean (rounds)", "compact / full",
           "daemon CPU s/GiB full / compact", "chunks preserved by each round: full / compact shadow+overflow"], lines)
    print("#### Issue 10 targets, as measured in this run\n")
    table(["what", "measured", "goal", "met"], tlines)

# ---- issue 15
print("### Issue 15 targets, as measured in this run\n")
lines = []
BASELINE_QD16 = 1766  # 4 KiB random first writes at QD16 measured before the issue's work
check("4K rand first writes QD16 `iifs-dep-first` / `qsd-qcow2-first`", val("iifs-dep-first", "randwrite16"),
      val("qsd-qcow2-first", "randwrite16"), 1.0)
r = ratio(val("iifs-dep-first", "randwrite16"), BASELINE_QD16)
target(f"4K rand first writes QD16 `iifs-dep-first` / the issue's baseline ({BASELINE_QD16:,} IOPS)",
       "-" if r is None else f"{r:.2f}x ({fmt(val('iifs-dep-first', 'randwrite16'))} IOPS)", ">= 4x",
       None if r is None else r >= 4)
check("4K rand first writes QD1 `iifs-dep-first` / `raw` 4K write+fsync", val("iifs-dep-first", "randwrite"),
      val("raw", "fsyncwrite"), 0.5)
check("1M seq first writes `iifs-dep-first` / `raw-alloc-sync`", val("iifs-dep-first", "seqwrite"),
      val("raw-alloc-sync", "seqwrite"), 0.5)
check("1M seq first writes `iifs-dep-first-relaxed` / `qsd-qcow2-first`", val("iifs-dep-first-relaxed", "seqwrite"),
      val("qsd-qcow2-first", "seqwrite"), 1.5)
check("4K write+fsync `iifs-dep-over` / raw (mean of `raw` and `raw-end`)", val("iifs-dep-over", "fsyncwrite"), fs_raw, 0.9)
check("1M seq read `iifs-ind-shadow` (passthrough) / `iifs-ind-shadow-daemon`" +
      (" (not measured: `-o passthrough=off` refused)" if refused else ""),
      val("iifs-ind-shadow", "seqread"), val("iifs-ind-shadow-daemon", "seqread"), 2)
table(["what", "measured", "goal", "met"], lines)
cp_ = [cpu_gib(t, "seqread") for t in ("iifs-ind-shadow", "iifs-ind-shadow-daemon")]
if any(c is not None for c in cp_):
    print(f"Daemon CPU during the 1 MiB reads of the independent shadow: {fmt(cp_[0])} s/GiB for "
          f"`iifs-ind-shadow`, {fmt(cp_[1])} s/GiB for `iifs-ind-shadow-daemon`. Reads passed through to the "
          "kernel cost the daemon nothing (it sees only the open and the release): a figure near the "
          "daemon-served one means the reads were not passed through. The QD1 target compares a first write "
          "with the raw file's `raw` write+fsync row; the pgbench targets are in `benches/pgbench.sh`'s "
          "report.\n")

dc = ("after `sync; echo 3 > /proc/sys/vm/drop_caches` (DROP_CACHES=1)" if E["DROP_CACHES"] == "1" else
      "from the same cache state on every side (DROP_CACHES=0): write jobs, copies and updates from a cold cache "
      "(`sync; echo 3 > /proc/sys/vm/drop_caches`), read jobs right after one untimed sequential read of the file "
      "through the target, so the file is cached as fio's layout leaves it. (On this kernel 4 KiB buffered writes "
      "into cached large folios, made by large writes or readahead, run at a third of the speed: the cache's "
      "history would otherwise decide the write figures)")
print(f"""### Caveats

- Every job starts {dc}; jobs are time-based ({E['RUNTIME']} s over a {size >> 20} MiB file) unless said otherwise, so
  a sequential job loops over the file. One run on a shared machine: compare ratios within the run.
- Page cache: `raw`'s 1 MiB jobs and its write+fsync job are buffered, so they are served by the page
  cache (a 1 MiB read pass after the first comes from memory; writes are not flushed before the job ends
  — fio's defaults, no `end_fsync`). O_DIRECT on the FUSE files bypasses the kernel's cache for the FUSE
  file, but both daemons do buffered I/O on their backing files (iifs always; qemu-storage-daemon with
  its default `cache.direct=off`), so their "direct" 4 KiB jobs can be served from the page cache of the
  backing file while `raw`'s direct jobs go to the disk. Only the write+fsync column reaches the disk on
  every side.
- `iifs-noset`: iifs only serves masters of sets, so "a master with no set" is approximated by the master
  of an independent set whose full copy has finished: a write needs no copy-on-write, only the bit test
  and, on the first write to a chunk since the copy, a bit update (the 1 MiB sequential write, the first
  job, sets every bit; later jobs find them set). Before these jobs the same set ran the update tests.
- `iifs-dep-first` and `qsd-qcow2-first`: a fresh set / fresh overlay for each workload. The 1 MiB
  sequential write is one pass over the file (every chunk copied, stopped after {E['RUNTIME']} s); the 4 KiB
  jobs replay one write at the start of every chunk ({E['CHUNKS']} chunks) in random order, so every write is
  the first to its chunk (iifs copies the 64 KiB chunk, qcow2 allocates a 64 KiB cluster and copies the
  rest of it from the backing file), also stopped after {E['RUNTIME']} s. qcow2 under qemu-storage-daemon
  acknowledges a write before its metadata is durable (it flushes only on fsync); iifs with
  `durability=strict` makes the preserved chunk and its bit durable before the write: only the
  write+fsync column compares like with like.
- `iifs-dep-first-relaxed`: the same jobs on sets enabled with `durability=relaxed`: the old chunk
  and its bit are written but not flushed before the write (the point in time survives a daemon
  crash, not a power loss), which is how qcow2 behaves; `iifs-dep-first` under `strict` is bound by
  the disk's flush bandwidth instead.
- `raw-end`: the write+fsync job on the raw file once more at the end of the run, since the disk's
  flush latency drifts on a shared machine; the fsync targets use the mean of `raw` and `raw-end`.
  `iifs-noset` and `iifs-dep-over` run each workload back to back, and copies run twice, alternating
  with `cp` (the mean is shown, and each round), for the same reason.
- `iifs-dep-over` and `qsd-qcow2`: after one untimed 1 MiB sequential pass, every chunk is preserved /
  every cluster allocated: overwrites only.
- `iifs-compact-first` / `iifs-compact-over` (issue 10): the jobs of `iifs-dep-first` / `iifs-dep-over`
  on a compact dependent set: a shadow a quarter of the master's size plus an overflow volume of the
  master's size (`overflow init`, then `attach`), so every chunk fits (the script checks the set never
  runs out of space). Slots are taken on demand, first in the shadow, then in the overflow, and each
  new slot is recorded in the chunk map in the bitmap volume. Each compact job runs right after the
  same job on the full-size set, in the order full, compact, compact, full: their figures (and
  `iifs-dep-over`'s write columns) are the mean of two rounds. `iifs-compact-over` runs the write
  jobs only: after the untimed pass a quarter of the chunks are in its shadow and three quarters
  in its overflow.
- `iifs-shadow`: reads of a dependent shadow after every other chunk of the master was written once:
  half the chunks are read from the shadow file (preserved), half from the master (untouched).
- `raw-alloc-sync` (issue 15): one pass of 1 MiB writes, each followed by an `fdatasync`, into a file
  just created sparse (`truncate`) on the same file system, from a cold cache, stopped after
  {E['RUNTIME']} s: every write allocates its blocks and its `fdatasync` makes them durable, the
  raw file's counterpart of a strict sequential first write. Run right before the first and after
  the last `iifs-dep-first` 1 MiB round: the mean of the two.
- `iifs-ind-shadow` (issue 15): reads of the shadow of an independent set whose full copy finished
  (settled, its master not written since), opened read-only (`fio --readonly`): with the default
  `passthrough=on` the kernel serves them from the shadow file itself (FUSE passthrough; the daemon
  sees the open and the release). An O_DIRECT open then reads the shadow file with O_DIRECT: its
  4 KiB direct reads go to the disk, as `raw`'s do, while daemon-served direct reads may be served
  from the page cache of the backing file.
- `iifs-ind-shadow-daemon` (issue 15): the same jobs on the same file, right after, with the daemon
  stopped and started again with `-o passthrough=off` (the set comes back from the registry): every
  read is a FUSE request the daemon serves, as before passthrough. Empty (`-`) when this iifs
  refuses the option.
- Copies: `cp` and the independent copy both start from a cold cache and end with an fsync of the
  copy. Updates write 1 %, 10 %, 100 % of the chunks (every 100th, every 10th, every chunk; whole
  chunks) through the master, then drop caches and time `update shadow` + `wait` + an fsync of the shadow.
- Daemon CPU is utime+stime of the whole daemon process (all threads, the background copier included)
  from /proc/PID/stat before and after each job; per GiB of data fio moved (the copy-on-write traffic
  inside the daemon is not counted as moved).
""")
EOF
