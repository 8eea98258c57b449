#!/usr/bin/env bash
# Rule: a name changed by ioctl is invalidated without blocking a FUSE-over-io_uring worker
# (tools/daemon/name_invalidation.h). Subvolume and snapshot create/delete ioctls make names the
# kernel has no dentry for; the kernel's FUSE_NOTIFY_INVAL_ENTRY takes the directory's lock, which
# a lookup in that directory holds while its LOOKUP waits for a ring entry — sent from the ring
# worker serving the ioctl it deadlocked the mount (before the fix this test hung within seconds,
# three ring workers asleep in fuse_reverse_inval_entry).
#   - four workers create a subvolume, create a snapshot of the top level, and delete both, in one
#     directory, checking after each ioctl that the name is there (or gone) at once, while four
#     others stat names in that directory (negative lookups) without pause; on the ring
#     (enable_uring=Y, fuse_uring=on) and through /dev/fuse (fuse_uring=off);
#   - every worker finishes (a watchdog aborts the connection of a hung mount and fails);
#   - no name was missing after its create or present after its delete (on the ring before Linux
#     6.16, which has no FUSE_NOTIFY_INC_EPOCH, a stale name is reported, not failed);
#   - the image is check-clean afterwards.
# Exit: 0 all passed, 1 a failure, 77 skipped (no root, /dev/fuse, or a kernel without the ring
# and UBTRFS_REQUIRE_ORACLES unset).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
PARAM=$FUSE_URING_PARAM
DUR=${UBTRFS_NAME_INVAL_SECONDS:-12}

require_ubtrfs
fs_is_kernel && skip_or_fail "tests the ubtrfs daemon's FUSE transport"
require_btrfs_check
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
use_fuse_uring_param

tmp=$(make_tmpdir)
cat >"$tmp/names.py" <<'PY'
import fcntl, os, struct, sys, time
# BTRFS_IOC_SUBVOL_CREATE, SNAP_CREATE, SNAP_DESTROY: struct btrfs_ioctl_vol_args {s64 fd; char name[4088]}
SUBVOL_CREATE, SNAP_CREATE, SNAP_DESTROY = 0x5000940E, 0x50009401, 0x5000940F
d, tag, seconds, top = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
topfd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
def vol_args(fd, name): return bytearray(struct.pack("q4088s", fd, name.encode()))
rounds = wrong = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for name, cmd, src in ((f"sv-{tag}", SUBVOL_CREATE, 0), (f"snap-{tag}", SNAP_CREATE, topfd)):
        fcntl.ioctl(dfd, cmd, vol_args(src, name))
        if not os.path.isdir(os.path.join(d, name)):
            wrong += 1; print(f"{name} missing right after its create", flush=True)
    for name in (f"sv-{tag}", f"snap-{tag}"):
        fcntl.ioctl(dfd, SNAP_DESTROY, vol_args(0, name))
        if os.path.lexists(os.path.join(d, name)):
            wrong += 1; print(f"{name} still there right after its delete", flush=True)
    rounds += 1
print(f"worker {tag}: {rounds} rounds, {wrong} wrong", flush=True)
sys.exit(1 if wrong or rounds == 0 else 0)
PY

# epoch_kernel: Linux 6.16 or later (FUSE protocol 7.44: FUSE_NOTIFY_INC_EPOCH).
epoch_kernel() {
  local v major minor
  v=$(uname -r)
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%[!0-9]*}
  ((major > 6 || (major == 6 && minor >= 16)))
}

# run_case OPTS LABEL: the workload on a fresh image mounted with OPTS.
run_case() {
  local opts=$1 label=$2 img=$tmp/$2.img mnt=$tmp/$2.mnt
  truncate -s 1G "$img"
  "$MKFS" -q "$img"
  ubtrfs_mount "$img" "$mnt" "$opts" || { failed "$label: mount"; return; }
  mkdir "$mnt/d"
  local pids=() statters=() w end=$((SECONDS + DUR))
  for w in 1 2 3 4; do
    python3 "$tmp/names.py" "$mnt/d" "$w" "$DUR" "$mnt" >"$tmp/$label.w$w" 2>&1 &
    pids+=($!)
  done
  for w in 1 2 3 4; do
    (while ((SECONDS < end)); do stat "$mnt/d/absent-$RANDOM" "$mnt/d/sv-$w" "$mnt/d/snap-$w" >/dev/null 2>&1 || :; done) &
    statters+=($!)
  done
  local deadline=$((SECONDS + DUR + 60)) alive
  while :; do
    alive=0
    for w in "${pids[@]}" "${statters[@]}"; do kill -0 "$w" 2>/dev/null && alive=$((alive + 1)); done
    ((alive == 0 || SECONDS >= deadline)) && break
    sleep 1
  done
  if ((alive > 0)); then
    failed "$label: $alive of 8 workers still blocked $((DUR + 60)) s after the start: the mount is deadlocked; daemon threads:"
    dump_daemon_stacks "$(ubtrfs_pid "$mnt")"
    abort_fuse_mount "$mnt"
    kill -9 "${pids[@]}" "${statters[@]}" 2>/dev/null
    wait "${pids[@]}" "${statters[@]}" 2>/dev/null
    return
  fi
  local ok=1
  for w in 1 2 3 4; do
    if ! wait "${pids[$((w - 1))]}"; then
      # Before Linux 6.16 (no FUSE_NOTIFY_INC_EPOCH) a ring worker whose invalidation is late
      # replies first: a name may be stale for a moment (name_invalidation.h). Only a hang fails.
      if [[ $label == ring ]] && ! epoch_kernel && grep -q 'rounds, [1-9][0-9]* wrong' "$tmp/$label.w$w"; then
        echo "  $label: worker $w saw stale names on a kernel without FUSE_NOTIFY_INC_EPOCH: $(tail -1 "$tmp/$label.w$w")"
        continue
      fi
      ok=0
      failed "$label: worker $w: $(tail -3 "$tmp/$label.w$w")"
    fi
  done
  wait "${statters[@]}"
  ((ok)) && pass "$label: 4 workers, each name there right after its create and gone right after its delete ($(cat "$tmp"/$label.w? | sed -n 's/worker \([0-9]\): \([0-9]*\) rounds.*/\2/p' | paste -sd/) rounds in ${DUR} s) beside 4 stat loops"
  local log
  log=$(ubtrfs_log "$mnt")
  ubtrfs_umount "$mnt" || failed "$label: unmount"
  grep -o 'names changed by ioctl: .*' "$log" | sed "s/^/  $label: /" || :
  check_clean_full "$img" && pass "$label: check-clean" || failed "$label: not check-clean"
}

echo Y >"$PARAM"
run_case "fuse_uring=on" ring
echo "$FUSE_URING_SAVED" >"$PARAM"
run_case "fuse_uring=off" devfuse
finish
