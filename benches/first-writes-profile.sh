#!/usr/bin/env bash
# Where a strict first write's time goes: strace -c -f -w on the daemon during 3 s of 4 KiB random
# first writes (QD1, then QD16) to a fresh dependent set on a 256 MiB master. As root:
#   bash benches/first-writes-profile.sh        (uses target/release/iifs, or IIFS_BIN)
set -euo pipefail
BIN=${IIFS_BIN:-$(dirname "$0")/../target/release/iifs}
W=$(mktemp -d /var/tmp/iifs-prof.XXXXXX)
mkdir -p $W/mnt
head -c 268435456 /dev/urandom > $W/m.img
truncate -s 256M $W/s.img
$BIN none $W/mnt -o state_dir=$W/state >/dev/null 2>&1
sleep 1
PID=$(pgrep -f "iifs none $W/mnt" | head -1)
for qd in 1 16; do
  name=p$qd
  rm -f $W/s$qd.img $W/b$qd.img; truncate -s 256M $W/s$qd.img
  echo "enable dep $W/m.img $W/s$qd.img $W/b$qd.img $name" > $W/mnt/ctl
  sync; echo 3 > /proc/sys/vm/drop_caches
  if [ $qd = 1 ]; then eng="--ioengine=psync"; else eng="--ioengine=libaio --iodepth=16"; fi
  strace -c -f -w -o $W/strace$qd.txt -p $PID &
  SP=$!
  sleep 0.5
  fio --name=fw --filename=$W/mnt/sets/$name/master --rw=randwrite --bs=4k --direct=1 $eng \
      --time_based --runtime=3 --randrepeat=0 --norandommap > $W/fio$qd.txt
  kill -INT $SP; wait $SP 2>/dev/null || true
  echo "== QD$qd: $(grep -o 'IOPS=[^,]*' $W/fio$qd.txt | head -1); $(grep -o 'issued rwts: total=[^ ]*' $W/fio$qd.txt); daemon syscalls during the job (strace -c -f -w):"
  head -14 $W/strace$qd.txt
  echo "differing chunks after: $(awk '$1=="chunks_differ:"{print $2}' $W/mnt/sets/$name/status)"
  echo disable > $W/mnt/sets/$name/ctl
done
fusermount3 -u $W/mnt
rm -rf $W
