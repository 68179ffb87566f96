#!/usr/bin/env bash
# Load with verification (issue 16): fio writes with verify=crc32c while updates and copies run in
# both directions and a group update fires every few seconds; afterwards every byte of every
# volume is checked. Usage (as root, with fio and /dev/fuse):
#
#   DURATION=600 bash tests/load/verify.sh     # long run (seconds of fio); CI: tests/load_verify.rs
#
# Settings (environment): DURATION (fio's run time, s; default 600), SIZE_MB (each volume, default
# 64), INTERVAL (s between rounds of commands, default 3), IIFS_BIN (default target/release/iifs),
# KEEP=1 (keep the work dir also on success).
#
# The sets, on a temp mount:
#   A   dep, master mA: fio writes A's master; every round a point in time: `hold` A, copy the
#       master out, `update shadow`, `release`; one round later (fio has overwritten the master
#       meanwhile) A's shadow must still equal that copy: every chunk fio overwrote after the
#       update must have been preserved first.
#   B   ind, master mB, and B2 (ind, master mB2), both in group G (a member takes update and
#       copy only through its group): fio writes both masters; every round the group's `update
#       shadow` or `copy shadow` (alternately) and `wait`, every other one taken under a `hold`
#       of the group with copies of both masters and checked like A's one round later (the
#       background copies ran while fio wrote the masters).
#   C   ind: fio writes C's SHADOW; every round `update master` then `wait` (nobody writes C's
#       master, the copy's target).
# fio is never the target of a copy (A's and B's shadows, C's master), so its own verification
# stays valid. After fio stops: a last update of every set, then every byte: each master read
# through the mount equals its backing file, A's, B's and B2's shadows equal their masters,
# C's master equals its shadow; B's, B2's and C's backing files equal too (whole images).
# Every command's write(2) must succeed. Exit status 0 and "RESULT: ok" only when all held.
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-600}
SIZE_MB=${SIZE_MB:-64}
INTERVAL=${INTERVAL:-3}
IIFS_BIN=${IIFS_BIN:-$here/target/release/iifs}
size=$((SIZE_MB << 20))

[ "$(id -u)" = 0 ] || { echo "verify.sh: needs root (FUSE mount)" >&2; exit 2; }
[ -e /dev/fuse ] || { echo "verify.sh: needs /dev/fuse" >&2; exit 2; }
command -v fio >/dev/null || { echo "verify.sh: needs fio" >&2; exit 2; }
[ -x "$IIFS_BIN" ] || { echo "verify.sh: no daemon binary $IIFS_BIN (cargo build --release)" >&2; exit 2; }

w=$(mktemp -d "${TMPDIR:-/tmp}/iifs-load-XXXXXX")
mnt=$w/mnt
mkdir -p "$mnt"
daemon=
loop_pid=
fio_pid=

log() { echo "[$(date -u +%T)] $*"; }
fail() {
    echo "FAIL: $*" | tee -a "$w/failures" >&2
}
failed() { [ -s "$w/failures" ]; }

cleanup() {
    local rc=$?
    [ -n "$loop_pid" ] && kill "$loop_pid" 2>/dev/null && wait "$loop_pid" 2>/dev/null
    [ -n "$fio_pid" ] && kill "$fio_pid" 2>/dev/null && wait "$fio_pid" 2>/dev/null
    if [ -n "$daemon" ]; then
        kill -TERM "$daemon" 2>/dev/null
        for _ in $(seq 200); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$daemon" 2>/dev/null
    fi
    grep -qs " $mnt " /proc/self/mounts && umount -l "$mnt"
    if [ "${KEEP:-0}" = 1 ]; then
        echo "work dir kept: $w" >&2
    elif [ "$rc" != 0 ] || failed; then
        rm -f "$w"/*.img
        echo "work dir kept without its volumes (KEEP=1 keeps them): $w (iifs.log, fio.out, fio.err)" >&2
    else
        rm -rf "$w"
    fi
    if [ "$rc" != 0 ] || failed; then
        echo "--- last lines of iifs.log ---" >&2
        tail -n 40 "$w/iifs.log" >&2 2>/dev/null
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One command with one write(2) on the ctl file REL (relative to the mount); on refusal, the
# errno message and the transaction reply read back on the same open file are reported.
ctl() {
    local rel=$1 cmd=$2 reply err
    if ! exec 3<>"$mnt/$rel"; then
        fail "open $rel for '$cmd'"
        return 1
    fi
    if err=$( { printf '%s\n' "$cmd" >&3; } 2>&1 ); then
        exec 3>&-
        return 0
    fi
    reply=$(cat <&3 2>/dev/null)
    exec 3>&-
    fail "'$cmd' on $rel refused: ${err##*: } reply: ${reply:-<none>}"
    return 1
}

# The bytes of a file: through the mount with O_DIRECT (no page cache in between), a backing
# file plainly.
rd() {
    case $1 in
        "$mnt"/*) dd if="$1" bs=1M iflag=direct status=none ;;
        *) dd if="$1" bs=1M status=none ;;
    esac
}

compared=0
# same WHAT A B: every byte of A equals B.
same() {
    local what=$1 out
    if out=$(cmp <(rd "$2") <(rd "$3") 2>&1); then
        compared=$((compared + size))
        return 0
    fi
    local at=${out##* byte }
    at=${at%%,*}
    if [[ $at =~ ^[0-9]+$ ]]; then
        out="first difference at offset $((at - 1)) (64 KiB unit $(((at - 1) >> 16)))"
    fi
    fail "$what: ${out:-differs} ($2 vs $3)"
    return 1
}

# ---------------------------------------------------------------------------- mount and sets
log "work dir $w, daemon $IIFS_BIN, volumes ${SIZE_MB} MiB, fio ${DURATION} s"
"$IIFS_BIN" none "$mnt" -f -o "state_dir=$w/state,log_level=info" \
    </dev/null >/dev/null 2>"$w/iifs.log" &
daemon=$!
for _ in $(seq 200); do
    grep -qs " $mnt " /proc/self/mounts && break
    kill -0 "$daemon" 2>/dev/null || { cat "$w/iifs.log" >&2; fail "iifs exited before mounting"; exit 1; }
    sleep 0.1
done
grep -qs " $mnt " /proc/self/mounts || { fail "iifs did not mount"; exit 1; }

for v in A B B2 C; do
    head -c "$size" /dev/urandom >"$w/m$v.img"
    truncate -s "$size" "$w/s$v.img"
done
ctl ctl "enable dep $w/mA.img $w/sA.img $w/bA.img A" || exit 1
ctl ctl "enable ind $w/mB.img $w/sB.img $w/bB.img B chunk_size=16384" || exit 1
ctl ctl "enable ind $w/mB2.img $w/sB2.img $w/bB2.img B2" || exit 1
ctl ctl "enable ind $w/mC.img $w/sC.img $w/bC.img C chunk_size=32768" || exit 1
for s in B B2 C; do ctl "sets/$s/ctl" wait || exit 1; done
ctl ctl "group create G" || exit 1
ctl groups/G/ctl "add B" || exit 1
ctl groups/G/ctl "add B2" || exit 1
same "B's first copy" "$w/sB.img" "$w/mB.img" || exit 1
same "C's first copy" "$w/sC.img" "$w/mC.img" || exit 1

# ---------------------------------------------------------------------------- fio
half=$((size / 2))
cat >"$w/load.fio" <<EOF
[global]
ioengine=psync
direct=1
rw=randwrite
bssplit=4k/40:16k/25:64k/20:256k/15
verify=crc32c
verify_backlog=16
verify_fatal=1
verify_dump=0
verify_state_save=0
time_based=1
runtime=$DURATION
size=$half
offset_increment=$half
numjobs=2
randrepeat=0

[A-master]
filename=$mnt/sets/A/master

[B-master]
filename=$mnt/sets/B/master

[B2-master]
filename=$mnt/sets/B2/master
numjobs=1
size=$size
offset_increment=0

[C-shadow]
filename=$mnt/sets/C/shadow
EOF

started=$(date +%s)
(cd "$w" && exec fio --output-format=normal,terse --terse-version=3 --output="$w/fio.out" "$w/load.fio" \
    2>"$w/fio.err") &
fio_pid=$!

# ---------------------------------------------------------------------------- the commands
# Runs until fio has stopped (the file "stop"); its counts go to "counts". A point in time is
# taken under a hold (the master copied out, the update, the release) and checked one round
# later, after a round of fio's writes to the master: each chunk fio overwrote since must have
# been preserved (A) or copied from the point in time (B, B2) first.
commands() {
    local r=0 n_a=0 n_g=0 n_c=0 pit=0 cmd a_at= g_at= g_cmd= stop
    compared=0
    sleep 1
    while :; do
        local t0=$SECONDS
        stop=0
        [ -e "$w/stop" ] && stop=1
        if [ -n "$a_at" ]; then
            same "A's shadow, $((SECONDS - a_at)) s after update shadow $n_a (point in time)" \
                "$mnt/sets/A/shadow" "$w/pitA.img" && pit=$((pit + 1))
            a_at=
        fi
        if [ -n "$g_at" ]; then
            for s in B B2; do
                same "$s's shadow, $((SECONDS - g_at)) s after group $g_cmd $n_g (point in time)" \
                    "$mnt/sets/$s/shadow" "$w/pit$s.img" && pit=$((pit + 1))
            done
            g_at=
        fi
        [ "$stop" = 1 ] && break
        # A: a point in time, checked next round.
        if ctl sets/A/ctl "hold 600"; then
            rd "$mnt/sets/A/master" >"$w/pitA.img"
            ctl sets/A/ctl "update shadow" && n_a=$((n_a + 1)) && a_at=$SECONDS
            ctl sets/A/ctl release
        fi
        # G (B and B2): update shadow / copy shadow alternately; every other one checked next
        # round (its copy runs while fio writes the masters).
        if [ $((r % 4)) -lt 2 ]; then cmd="update shadow"; else cmd="copy shadow"; fi
        if [ $((r % 2)) = 0 ]; then
            if ctl groups/G/ctl "hold 600"; then
                rd "$mnt/sets/B/master" >"$w/pitB.img"
                rd "$mnt/sets/B2/master" >"$w/pitB2.img"
                ctl groups/G/ctl "$cmd" && n_g=$((n_g + 1)) && g_at=$SECONDS && g_cmd=$cmd
                ctl groups/G/ctl release
            fi
        else
            ctl groups/G/ctl "$cmd" && n_g=$((n_g + 1))
        fi
        ctl groups/G/ctl wait
        # C: the master from the shadow fio writes.
        ctl sets/C/ctl "update master" && n_c=$((n_c + 1))
        ctl sets/C/ctl wait
        r=$((r + 1))
        local left=$((INTERVAL - (SECONDS - t0)))
        [ "$left" -gt 0 ] && [ ! -e "$w/stop" ] && sleep "$left"
    done
    echo "$n_a $n_g $n_c $pit $compared $r" >"$w/counts"
}
commands &
loop_pid=$!

wait "$fio_pid"
fio_rc=$?
fio_pid=
touch "$w/stop"
wait "$loop_pid"
loop_pid=
ran=$(($(date +%s) - started))
log "fio ended (status $fio_rc) after ${ran} s"

# ---------------------------------------------------------------------------- fio's verdict
written=0
verified=0
if [ "$fio_rc" != 0 ]; then
    fail "fio exited with status $fio_rc: $(grep -i -m5 -e verify -e error "$w/fio.err" | tr '\n' ' ')"
fi
# One terse (v3) line per job: 3 name, 5 error, 6 KiB read (verify reads), 47 KiB written. (fio
# warns that several jobs write one file: they write disjoint ranges, offset_increment=size.)
terse=$(grep '^3;' "$w/fio.out" 2>/dev/null)
if [ "$(grep -c . <<<"$terse")" = 7 ]; then
    written=$(awk -F';' '{ s += $47 } END { printf "%d", s * 1024 }' <<<"$terse")
    verified=$(awk -F';' '{ s += $6 } END { printf "%d", s * 1024 }' <<<"$terse")
    bad=$(awk -F';' '$5 != 0 { printf "%s: error %s; ", $3, $5 }' <<<"$terse")
    [ -n "$bad" ] && fail "fio job errors: $bad"
    [ "$verified" -gt 0 ] || fail "fio verified nothing"
else
    fail "no fio report for its 7 jobs: $(head -c 2000 "$w/fio.err")"
fi
pat='verify failed|bad magic|verify type mismatch|verify: bad|bad header'
if grep -qiE "$pat" "$w/fio.err" "$w/fio.out"; then
    fail "fio: $(grep -hiE -m5 "$pat" "$w/fio.err" "$w/fio.out" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------- every byte
read -r n_a n_g n_c pit loop_compared rounds <"$w/counts" ||
    { fail "the command loop left no counts"; n_a=0 n_g=0 n_c=0 pit=0 loop_compared=0 rounds=0; }
compared=$((compared + loop_compared))
[ "$n_a" -gt 0 ] && [ "$n_g" -gt 0 ] && [ "$n_c" -gt 0 ] ||
    fail "too few commands during the run (A $n_a, G $n_g, C $n_c)"
ctl sets/A/ctl "update shadow" && n_a=$((n_a + 1))
ctl groups/G/ctl "update shadow" && n_g=$((n_g + 1))
ctl groups/G/ctl wait
ctl sets/C/ctl "update master" && n_c=$((n_c + 1))
ctl sets/C/ctl wait
for s in A B B2 C; do
    same "$s's master through the mount vs its volume" "$mnt/sets/$s/master" "$w/m$s.img"
done
same "A's shadow vs its master after the last update" "$mnt/sets/A/shadow" "$mnt/sets/A/master"
for s in B B2; do
    same "$s's shadow vs its master after the last group update" "$mnt/sets/$s/shadow" "$mnt/sets/$s/master"
    same "$s's shadow volume vs its master volume" "$w/s$s.img" "$w/m$s.img"
done
same "C's master vs its shadow after the last update master" "$mnt/sets/C/master" "$mnt/sets/C/shadow"
same "C's master volume vs its shadow volume" "$w/mC.img" "$w/sC.img"
grep -q ' ERROR \| panicked' "$w/iifs.log" && fail "the daemon logged errors: $(grep -m3 ' ERROR \| panicked' "$w/iifs.log" | tr '\n' ' ')"

# ---------------------------------------------------------------------------- summary
mib() { echo "$(($1 >> 20)) MiB"; }
echo "---- summary ----"
printf 'run:        %d.%02d min of fio (%d rounds of commands)\n' $((ran / 60)) $((ran % 60 * 100 / 60)) "$rounds"
echo "fio:        $(mib "$written") written, $(mib "$verified") read back and verified (crc32c), status $fio_rc"
echo "updates:    A update shadow $n_a, G update/copy shadow $n_g, C update master $n_c"
echo "compared:   $(mib "$compared") byte for byte, $pit point-in-time checks passed"
if failed; then
    echo "failures:   $(wc -l <"$w/failures")"
    sed 's/^/  /' "$w/failures"
    echo "RESULT: FAILED"
    exit 1
fi
echo "RESULT: ok"
