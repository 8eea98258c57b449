#!/usr/bin/env bash
# ubtrfs-stress --snapshots through the ubtrfs daemon (issue 16, acceptance 3): every worker's
# directory is a subvolume, snapshotted (read-write or read-only) and deleted again among its
# operations, each snapshot verified in full against the model of the tree it was taken of before
# it is deleted and at the end. Then:
#   - the unmount (the daemon exits 0 after its final commit); check_clean_full (btrfs check both
#     modes and --check-data-csum, a kernel read of every file, fsck.ubtrfs) with the snapshots
#     left and the dead roots of the deleted ones still there;
#   - ubtrfs mounts it again: its cleaner drops every dead root (space comes back) and the image is
#     check-clean again.
#
# Knobs: UBTRFS_STRESS_NOPS (ops per worker; default 600 here, short enough for CI — the issue's
# 4 x 20,000 is UBTRFS_STRESS_NOPS=20000), UBTRFS_STRESS_PROCS (4), UBTRFS_STRESS_SEED (1).
# Rule named here: stress_with_snapshots_is_check_clean_and_its_model_holds.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NOPS=${UBTRFS_STRESS_NOPS:-600}
PROCS=${UBTRFS_STRESS_PROCS:-4}
SEED=${UBTRFS_STRESS_SEED:-1}
STRESS=$UBTRFS_BIN/stress/ubtrfs-stress
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
CTL=$UBTRFS_BIN/ctl/ubtrfs-ctl

require_ubtrfs
fs_is_kernel && skip_or_fail "the kernel's run is the stress tool's own (tools/stress)"
require_kernel_btrfs
require_btrfs_check
[[ -x $STRESS && -x $MKFS && -x $CTL ]] || { echo "FAIL: ubtrfs-stress, mkfs.ubtrfs or ubtrfs-ctl not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/stress.img
mnt=$tmp/mnt
truncate -s 2G "$img"
"$MKFS" -q "$img"
ubtrfs_mount "$img" "$mnt"
if "$STRESS" -d "$mnt" -p "$PROCS" -n "$NOPS" -s "$SEED" --snapshots >"$tmp/stress.out" 2>&1; then
  pass "stress_with_snapshots_is_check_clean_and_its_model_holds: $(grep '^summary' "$tmp/stress.out")"
else
  failed "ubtrfs-stress --snapshots: $(grep -m 20 -E '^error|^summary' "$tmp/stress.out")"
fi
snaps=$(awk '$1 == "snapshot" {print $2}' "$tmp/stress.out")
[[ ${snaps:-0} -gt 0 ]] && pass "$snaps snapshots taken" || failed "no snapshot was taken: $(grep -E '^ *snap' "$tmp/stress.out")"
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$img" && pass "image check-clean with live snapshots and dead roots" || failed "image not check-clean"

ubtrfs_mount "$img" "$mnt"
for _ in $(seq 1 150); do
  [[ -z $("$CTL" subvolume list -d "$mnt") ]] && break
  sleep 0.2
done
left=$("$CTL" subvolume list -d "$mnt" | wc -l)
ubtrfs_umount "$mnt" || failed "unmount"
((left == 0)) && pass "the cleaner dropped every deleted snapshot" || failed "$left dead roots left after the cleaner"
check_clean "$img" && pass "image check-clean after the cleaner" || failed "image not check-clean after the cleaner"

finish
