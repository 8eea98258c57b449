#!/usr/bin/env bash
# Stress + fsck + remount: ubtrfs-stress (tools/stress) runs its verifying random workload on a
# freshly made 2 GiB image, writes a manifest of the tree, and then the image must pass
# `btrfs check` (both modes) and show exactly the same tree after a remount.
#
# Today both the filesystem maker and the mount are the kernel's (mkfs.btrfs, mount -t btrfs), which
# validates the tool itself. To run the same test against ubtrfs, point MKFS / MOUNT_FS / UMOUNT_FS
# at mkfs.ubtrfs and the ubtrfs daemon (or set the UBTRFS_STRESS_* variables below).
#
# Knobs: UBTRFS_STRESS_NOPS (ops per worker, default 20000), UBTRFS_STRESS_PROCS (default 4),
# UBTRFS_STRESS_SEED (default 1).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- what makes and mounts the filesystem ----
MKFS=${UBTRFS_STRESS_MKFS:-"mkfs.btrfs -q -f"}   # later: "$UBTRFS_BIN/mkfs/mkfs.ubtrfs"
MOUNT_FS=${UBTRFS_STRESS_MOUNT:-kernel_mount}    # IMG MNT; later: a function starting the daemon
UMOUNT_FS=${UBTRFS_STRESS_UMOUNT:-kernel_umount} # MNT
IMAGE_SIZE=2G

NOPS=${UBTRFS_STRESS_NOPS:-20000}
PROCS=${UBTRFS_STRESS_PROCS:-4}
SEED=${UBTRFS_STRESS_SEED:-1}
STRESS=$UBTRFS_BIN/stress/ubtrfs-stress

require_kernel_btrfs
require_btrfs_check
[[ -x $STRESS ]] || skip_or_fail "ubtrfs-stress not built at $STRESS"

tmp=$(make_tmpdir)
img=$tmp/stress.img
mnt=$tmp/mnt
manifest=$tmp/manifest-1
truncate -s "$IMAGE_SIZE" "$img"
# shellcheck disable=SC2086  # MKFS is a command line
$MKFS "$img" >/dev/null

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# 1. The workload, verified by the tool's own model, then a manifest of what this mount sees.
"$MOUNT_FS" "$img" "$mnt"
t=$(now)
if "$STRESS" -d "$mnt" -p "$PROCS" -n "$NOPS" -s "$SEED" --manifest "$manifest"; then
  pass "ubtrfs-stress -p $PROCS -n $NOPS -s $SEED verified ($(elapsed "$t")s)"
else
  failed "ubtrfs-stress -p $PROCS -n $NOPS -s $SEED (exit $?)"
fi
"$UMOUNT_FS" "$mnt"

# 2. What was written must be a clean filesystem.
t=$(now)
if check_clean "$img"; then pass "btrfs check clean after the stress run ($(elapsed "$t")s)"; else failed "btrfs check after the stress run"; fi

# 3. After a remount the tree must be exactly the manifest (contents, modes, links, xattrs, times).
"$MOUNT_FS" "$img" "$mnt"
t=$(now)
if [[ -s $manifest ]] && "$STRESS" -d "$mnt" --verify-only --manifest "$manifest"; then
  pass "tree after remount matches the manifest ($(elapsed "$t")s)"
else
  failed "tree after remount differs from the manifest"
fi
"$UMOUNT_FS" "$mnt"

t=$(now)
if check_clean "$img"; then pass "btrfs check clean after the remount ($(elapsed "$t")s)"; else failed "btrfs check after the remount"; fi

finish
