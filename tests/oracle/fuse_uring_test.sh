#!/usr/bin/env bash
# FUSE over io_uring (tools/daemon/fuse_uring.h, issue 10): the daemon's ring transport beneath
# libfuse 3.14, through real mounts.
#   - option parsing: fuse_uring=auto|on|off, fuse_uring_threads=1..64; bad values exit 1;
#   - with the fuse module parameter enable_uring=Y (set by this test, restored at exit):
#     fuse_uring=on serves from the ring (the daemon says how many requests the ring served at
#     unmount: more than the work below made), the files written read back after a cold cache,
#     a remount and a kernel mount; the unmount by SIGTERM and by umount both exit 0;
#   - the POSIX suite and the stress oracle pass on ring mounts (UBTRFS_EXTRA_MOUNT_OPTS);
#   - with enable_uring=N, fuse_uring=on says the kernel does not offer it and serves through
#     /dev/fuse; the default (auto) says nothing and serves through /dev/fuse.
# Exit: 0 all passed, 1 a failure, 77 skipped (no root, /dev/fuse, or a kernel without the ring
# and UBTRFS_REQUIRE_ORACLES unset).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
PARAM=$FUSE_URING_PARAM
HERE=$(dirname "${BASH_SOURCE[0]}")

require_ubtrfs
fs_is_kernel && skip_or_fail "tests the ubtrfs daemon's FUSE transport"
require_kernel_btrfs
require_btrfs_check
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
use_fuse_uring_param

tmp=$(make_tmpdir)
img=$tmp/ring.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
mkdir -p "$mnt" "$kmnt"
truncate -s 1G "$img"
"$MKFS" -q "$img"

# 1. Option parsing: refused before anything is mounted.
for bad in fuse_uring=maybe fuse_uring_threads=0 fuse_uring_threads=65 fuse_uring_threads=x; do
  rc=0
  out=$("$UBTRFS_DAEMON" "$img" "$mnt" -f -o "$bad" 2>&1) || rc=$?
  if ((rc == 1)) && grep -q "invalid value for mount option '$bad'" <<<"$out"; then
    pass "-o $bad refused (exit 1: $out)"
  else
    failed "-o $bad: exit $rc, output: $out"
  fi
done

# ring_served LOG: the count of the daemon's unmount line, or nothing.
ring_served() { sed -n 's/.*FUSE over io_uring: \([0-9]*\) requests served from the ring.*/\1/p' "$1" | tail -1; }

# 2. The ring on: work, a cold read, an unmount by SIGTERM.
echo Y >"$PARAM"
log=$tmp/daemon1.log
"$UBTRFS_DAEMON" "$img" "$mnt" -f -o "fuse_uring=on,log_file=$log" >/dev/null 2>&1 &
pid=$!
_ubtrfs_all_pids+=("$pid")
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt" || { failed "ring mount did not appear: $(tail -5 "$log")"; finish; exit 1; }
grep -q 'FUSE over io_uring: [0-9]* queue' "$log" && pass "ring set up: $(grep -o 'FUSE over io_uring: [0-9]* queue.*' "$log" | head -1)" ||
  failed "no ring set-up line in the daemon's log: $(tail -5 "$log")"
mkdir "$mnt/d"
for i in $(seq 1 200); do echo "file $i" >"$mnt/d/f$i"; done
for i in $(seq 1 200 | shuf -n 50 --random-source=<(yes)); do mv "$mnt/d/f$i" "$mnt/d/g$i"; done
setfattr -n user.ring -v yes "$mnt/d" 2>/dev/null || python3 -c "import os; os.setxattr('$mnt/d', 'user.ring', b'yes')"
head -c 24M /dev/urandom >"$tmp/big"
cp "$tmp/big" "$mnt/big"
dd if="$tmp/big" of="$mnt/direct" bs=1M oflag=direct status=none
sync "$mnt/big"
echo 3 >/proc/sys/vm/drop_caches
cmp -s "$tmp/big" "$mnt/big" && cmp -s "$tmp/big" "$mnt/direct" && pass "24 MiB written and read back cold (buffered and O_DIRECT)" ||
  failed "data read back differs"
[[ $(ls "$mnt/d" | wc -l) == 200 ]] && pass "200 names after 50 renames" || failed "$(ls "$mnt/d" | wc -l) names in d"
# The live counters say which transport serves the mount.
stats=$("$UBTRFS_BIN/inspect/ubtrfs-inspect" stats --json "$mnt" 2>&1) || true
transport=$(python3 -c 'import json,sys; f=json.loads(sys.stdin.read())["fuse"]; print(f["transport"], f["ring_requests"])' <<<"$stats" 2>&1) || true
[[ $transport == "io_uring "* ]] && (( ${transport#io_uring } > 0 )) &&
  pass "ubtrfs-inspect stats: transport io_uring, ${transport#io_uring } ring requests so far" ||
  failed "ubtrfs-inspect stats does not show the ring: $transport"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
((rc == 0)) && pass "SIGTERM: daemon exit 0 after its final commit" || failed "SIGTERM: daemon exit $rc: $(tail -5 "$log")"
served=$(ring_served "$log")
if [[ -n $served ]] && ((served > 400)); then
  pass "the ring served $served requests ($(grep -o '([0-9]* replies from other threads)' "$log" | tail -1))"
else
  failed "the ring served '${served:-no}' requests: $(grep -i 'io_uring' "$log" | tail -3)"
fi

# 3. Remount through the ring, unmount by umount; then the kernel reads the same.
log=$tmp/daemon2.log
ubtrfs_mount "$img" "$mnt" "fuse_uring=on,log_file=$log" || { failed "remount"; finish; exit 1; }
cmp -s "$tmp/big" "$mnt/big" && [[ $(cat "$mnt/d/g$(ls "$mnt/d" | sed -n 's/^g//p' | head -1)") == file* ]] &&
  pass "remounted: the files are intact" || failed "remounted: files differ"
ubtrfs_umount "$mnt" && pass "umount: daemon exit 0" || failed "umount"
served=$(ring_served "$log")
[[ -n $served ]] && ((served > 0)) && pass "the ring served the remount ($served requests)" ||
  failed "remount not served from the ring: $(grep -i 'io_uring' "$log" | tail -3)"
check_clean_full "$img" && pass "check-clean after the ring mounts" || failed "not check-clean"

# 4. The POSIX suite and the stress oracle on ring mounts.
for t in posix_ubtrfs stress_ubtrfs; do
  if UBTRFS_EXTRA_MOUNT_OPTS=fuse_uring=on${UBTRFS_EXTRA_MOUNT_OPTS:+,$UBTRFS_EXTRA_MOUNT_OPTS} \
    bash "$HERE/${t}_test.sh" >"$tmp/$t.log" 2>&1; then
    pass "$t on ring mounts ($(tail -1 "$tmp/$t.log"))"
  else
    failed "$t on ring mounts:"
    tail -30 "$tmp/$t.log" >&2
  fi
done

# 5. The kernel does not offer the ring: on says so, auto (the default) is silent; both serve.
echo N >"$PARAM"
for mode in on auto; do
  log=$tmp/daemon-$mode.log
  opts="log_file=$log,stats_file=$tmp/stats-$mode.json"
  [[ $mode == on ]] && opts+=",fuse_uring=on"
  ubtrfs_mount "$img" "$mnt" "$opts" || { failed "mount with enable_uring=N ($mode)"; continue; }
  echo "$mode" >"$mnt/without-ring-$mode" && cmp -s "$tmp/big" "$mnt/big" || failed "$mode: I/O without the ring"
  ubtrfs_umount "$mnt" || failed "$mode: umount"
  if [[ $mode == on ]]; then
    grep -q 'kernel does not offer FUSE over io_uring' "$log" && pass "fuse_uring=on without the kernel's ring: says so, serves through /dev/fuse" ||
      failed "fuse_uring=on without the ring: no message: $(tail -3 "$log")"
  else
    ! grep -qi 'io_uring' "$log" && pass "default (auto) without the kernel's ring: silent, serves through /dev/fuse" ||
      failed "auto without the ring: $(grep -i io_uring "$log")"
  fi
  [[ -z $(ring_served "$log") ]] || failed "$mode: a ring served requests with enable_uring=N"
  grep -q '"transport":"/dev/fuse"' "$tmp/stats-$mode.json" && pass "$mode: stats_file says transport /dev/fuse" ||
    failed "$mode: stats_file: $(grep -o '"fuse":{[^}]*}' "$tmp/stats-$mode.json")"
done
check_clean_full "$img" && pass "check-clean at the end" || failed "not check-clean at the end"
finish
