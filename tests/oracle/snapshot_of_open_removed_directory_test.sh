#!/usr/bin/env bash
# A snapshot taken while a removed directory is still open holds that directory with nlink 0 and
# its orphan item (the source evicts it later; the snapshot keeps it, as the kernel's does). btrfs
# check accepts such an image; fsck.ubtrfs must too (tools/fsck/pass_inodes.cpp) — it reported
# "directory with nlink 0" after a 4 x 20,000 stress run with snapshots.
#
# Rule named here: a_snapshot_of_a_removed_open_directory_is_fsck_clean.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
CTL=$UBTRFS_BIN/ctl/ubtrfs-ctl
FSCK=$UBTRFS_BIN/fsck/fsck.ubtrfs
require_ubtrfs
fs_is_kernel && skip_or_fail "checks fsck.ubtrfs on an image ubtrfs wrote"
require_btrfs_check
[[ -x $CTL && -x $FSCK ]] || { echo "FAIL: ubtrfs-ctl or fsck.ubtrfs not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/o.img
mnt=$tmp/mnt
truncate -s 512M "$img"
"$MKFS" -q "$img"
ubtrfs_mount "$img" "$mnt" || { failed "mount"; finish; exit 1; }
"$CTL" subvolume create "$mnt/sv" >/dev/null || failed "subvolume create"
mkdir "$mnt/sv/d" "$mnt/sv/keep"
exec 3<"$mnt/sv/d"
rmdir "$mnt/sv/d"
"$CTL" subvolume snapshot "$mnt/sv" "$mnt/snap" >/dev/null || failed "snapshot"
exec 3<&-
ubtrfs_umount "$mnt" || failed "unmount"
orphans=$(btrfs inspect-internal dump-tree "$img" 2>/dev/null | grep -c 'ORPHAN ORPHAN_ITEM' || true)
echo "orphan items in the image: $orphans"
if out=$("$FSCK" "$img" 2>&1); then
  pass "a_snapshot_of_a_removed_open_directory_is_fsck_clean"
else
  failed "a_snapshot_of_a_removed_open_directory_is_fsck_clean: $out"
fi
check_clean "$img" && pass "btrfs check clean" || failed "btrfs check"
finish
