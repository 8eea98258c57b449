#!/usr/bin/env bash
# ubtrfs-stress through the ubtrfs daemon (issue 3, acceptance 2): the verifying random workload
# (tools/stress: creat/write/truncate/punch/fallocate/rename/link/unlink/mkdir/rmdir/symlink/
# setxattr/fsync, each worker checking file contents against its model) on a fresh mkfs.ubtrfs
# image mounted by ubtrfs, then:
#   - the unmount; the daemon must exit 0 after its final commit;
#   - check_clean_full: btrfs check (original, lowmem, --check-data-csum), a kernel read-only
#     mount reading every file back, fsck.ubtrfs;
#   - the kernel, mounting the same image, sees exactly the tree the workload left (paths, types,
#     modes, sizes, link counts, xattrs, content checksums: `ubtrfs-stress --verify-only` against
#     the manifest written on the ubtrfs mount);
#   - ubtrfs, mounting it again, sees the same tree.
#
# Knobs: UBTRFS_STRESS_NOPS (ops per worker, default 20000; scripts/test.sh lowers it for the
# sanitizer runs), UBTRFS_STRESS_PROCS (default 4), UBTRFS_STRESS_SEED (default 1),
# UBTRFS_STRESS_EXTRA (more ubtrfs-stress options, e.g. --snapshots: stress_snapshots_test.sh),
# UBTRFS_STRESS_MKFS (mkfs.ubtrfs options, e.g. --mixed: stress_mixed_block_groups_test.sh),
# UBTRFS_STRESS_SIZE (the image, default 2G), UBTRFS_STRESS_TIMEOUT (seconds the workload may take
# before the daemon counts as hung: its stacks are printed and the test fails; default 1500).
# UBTRFS_FS=kernel runs the same script with the kernel mounting the mkfs.ubtrfs image.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NOPS=${UBTRFS_STRESS_NOPS:-20000}
PROCS=${UBTRFS_STRESS_PROCS:-4}
SEED=${UBTRFS_STRESS_SEED:-1}
STRESS=$UBTRFS_BIN/stress/ubtrfs-stress
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
IMAGE_SIZE=${UBTRFS_STRESS_SIZE:-2G}
MKFS_OPTS=${UBTRFS_STRESS_MKFS:-}
STRESS_TIMEOUT=${UBTRFS_STRESS_TIMEOUT:-1500}

require_ubtrfs
require_kernel_btrfs
require_btrfs_check
[[ -x $STRESS ]] || { echo "FAIL: ubtrfs-stress not built at $STRESS" >&2; exit 1; }
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
EXTRA=${UBTRFS_STRESS_EXTRA:-}
echo "stress: $PROCS processes x $NOPS operations, seed $SEED, on $UBTRFS_FS${EXTRA:+, $EXTRA}${MKFS_OPTS:+, mkfs $MKFS_OPTS}, $IMAGE_SIZE"

started=$SECONDS
tmp=$(make_tmpdir)
img=$tmp/stress.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
manifest=$tmp/manifest
truncate -s "$IMAGE_SIZE" "$img"
"$MKFS" -q $MKFS_OPTS "$img"

# 1. The workload, verified by the tool's own model; its manifest is what every later view must be.
if ! ubtrfs_mount "$img" "$mnt"; then
  failed "mount of a fresh mkfs.ubtrfs image"
  finish
  exit 1
fi
t=$SECONDS
# shellcheck disable=SC2086 # EXTRA is a list of options
rc=0
run_watched "$STRESS_TIMEOUT" "$mnt" "$STRESS" -d "$mnt" -p "$PROCS" -n "$NOPS" -s "$SEED" $EXTRA --manifest "$manifest" || rc=$?
if ((rc == 0)); then
  pass "ubtrfs-stress -p $PROCS -n $NOPS -s $SEED $EXTRA verified on the mount ($((SECONDS - t)) s)"
elif ((rc == 124)); then
  # A daemon that stopped answering: its stacks are printed above; the rest of the test cannot run.
  failed "ubtrfs-stress -p $PROCS -n $NOPS -s $SEED $EXTRA did not end within ${STRESS_TIMEOUT}s"
  abort_fuse_mount "$mnt" || true
  finish
  exit 1
else
  failed "ubtrfs-stress -p $PROCS -n $NOPS -s $SEED $EXTRA (exit $rc)"
fi
t=$SECONDS
if ubtrfs_umount "$mnt"; then pass "unmount: daemon exit 0 after the final commit ($((SECONDS - t)) s)"; else failed "unmount"; fi

# 2. Check-clean by every oracle.
t=$SECONDS
if check_clean_full "$img"; then
  pass "check-clean after the workload ($((SECONDS - t)) s: btrfs check x3, kernel read, fsck.ubtrfs)"
else
  failed "not check-clean after the workload"
fi

# 3. The kernel sees exactly the tree.
if kernel_mount "$img" "$kmnt" ro; then
  if [[ -s $manifest ]] && "$STRESS" -d "$kmnt" --verify-only --manifest "$manifest"; then
    pass "the kernel sees exactly the tree the workload left ($(wc -l <"$manifest") manifest lines)"
  else
    failed "the kernel's tree differs from the manifest"
  fi
  kernel_umount "$kmnt"
else
  failed "the kernel refused to mount the image"
fi

# 4. So does a second ubtrfs mount.
if ubtrfs_mount "$img" "$mnt" ro; then
  if "$STRESS" -d "$mnt" --verify-only --manifest "$manifest"; then
    pass "a remount sees the same tree"
  else
    failed "the tree after a remount differs from the manifest"
  fi
  ubtrfs_umount "$mnt" || failed "second unmount"
else
  failed "remount refused"
fi

echo "stress_ubtrfs_test: $((SECONDS - started)) s"
finish
