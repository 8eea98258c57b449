#!/usr/bin/env bash
# fstrim and -o discard through a real mount (issue 13 acceptance 2; fs/discard.h,
# tools/daemon/ioctl.cpp).
#
# On a sparse image: write 64 MiB of files and a keeper, let a commit land, measure the image's
# allocated size (st_blocks), delete the 64 MiB, let the commit that frees them land, `fstrim -v
# MNT`: the image's allocated size drops by at least 90 % of what was deleted, the keeper still
# reads right; then the same with `-o discard` and no fstrim (the background discard after the
# commit), and fstrim once more with the image behind a loop device (BLKDISCARD instead of a punched
# hole; the loop driver punches the hole). After each unmount: check-clean (btrfs check, kernel read of every file, fsck.ubtrfs)
# and the kernel reads the keeper right.
# "sync" here is `sync` plus an fsync of the mount's root directory (a full commit in ubtrfs; sync(2)
# does not reach a FUSE daemon on every kernel). Deleted extents are dropped when the kernel sends
# FORGET, which it may do a little after the rm: sync and trim repeat (bounded) until the drop shows.
#
# FITRIM by a non-root caller is EPERM (CAP_SYS_ADMIN in the kernel), on a read-only mount EROFS.
# Rules named here: fstrim_shrinks_the_image_by_90_percent_of_what_was_deleted,
# discard_mount_option_shrinks_the_image_without_fstrim, fstrim_on_a_block_device_discards_through_blkdiscard.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
INSPECT=$UBTRFS_BIN/inspect/ubtrfs-inspect

require_ubtrfs
fs_is_kernel && skip_or_fail "measures ubtrfs's discards (the kernel's run through a loop device)"
require_kernel_btrfs
require_btrfs_check
command -v fstrim >/dev/null || skip_or_fail "fstrim (util-linux) not installed"
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
for b in "$MKFS" "$INSPECT"; do [[ -x $b ]] || { echo "FAIL: $b not built" >&2; exit 1; }; done

tmp=$(make_tmpdir)
img=$tmp/trim.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
truncate -s 1G "$img"
"$MKFS" -q "$img"
probe=$tmp/probe
truncate -s 1M "$probe"
fallocate -p -o 0 -l 65536 "$probe" 2>/dev/null || skip_or_fail "the test directory's filesystem cannot punch holes"

deleted=$((64 << 20))
allocated() { echo $(($(stat -c %b "$img") * 512)); }
# sync_fs MNT: `sync`, then fsync on the mount's root directory, which ubtrfs serves with a full
# commit (sync(2) does not reach a FUSE daemon on every kernel: no syncfs).
sync_fs() {
  sync
  python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY); os.fsync(fd)' "$1"
}
write_files() {  # write_files MNT PREFIX: 8 x 8 MiB of incompressible data
  local i
  for i in 1 2 3 4 5 6 7 8; do head -c $((8 << 20)) /dev/urandom >"$1/$2$i"; done
}
# shrink_ok BEFORE: passes when the image lost >= 90 % of the deleted bytes since BEFORE.
shrink_ok() { (($1 - $(allocated) >= deleted * 9 / 10)); }
report() {  # report RULE BEFORE
  local now
  now=$(allocated)
  if (($2 - now >= deleted * 9 / 10)); then
    pass "$1: allocated $2 -> $now bytes, $((($2 - now) * 100 / deleted)) % of the $deleted deleted"
  else
    failed "$1: allocated $2 -> $now bytes, only $((($2 - now) * 100 / deleted)) % of the $deleted deleted (need 90 %)"
  fi
}

# ---- fstrim ----
chmod 0755 "$UBTRFS_TEST_ROOT" "$tmp"  # uid 65534 must reach the mount point
ubtrfs_mount "$img" "$mnt" allow_other
if command -v setpriv >/dev/null; then
  out=$(setpriv --reuid 65534 --regid 65534 --clear-groups -- fstrim "$mnt" 2>&1) &&
    failed "fstrim by uid 65534 succeeded" ||
    { grep -q "not permitted" <<<"$out" && pass "fstrim by uid 65534 is EPERM" || failed "fstrim by uid 65534: $out"; }
fi
head -c $((4 << 20)) /dev/urandom >"$tmp/keeper"
cp "$tmp/keeper" "$mnt/keeper"
write_files "$mnt" a
sync_fs "$mnt"
before=$(allocated)
rm "$mnt"/a?
trimmed=0
for attempt in 1 2 3 4 5; do
  sleep 0.3
  sync_fs "$mnt"
  out=$(fstrim -v "$mnt") || failed "fstrim -v $mnt: $out"
  trimmed=$(sed -nE 's/.*\(([0-9]+) bytes\) trimmed.*/\1/p' <<<"$out")
  shrink_ok "$before" && break
done
report fstrim_shrinks_the_image_by_90_percent_of_what_was_deleted "$before"
((trimmed >= deleted)) && pass "fstrim -v reports $trimmed bytes trimmed" || failed "fstrim -v reports $trimmed bytes"
cmp -s "$tmp/keeper" "$mnt/keeper" && pass "the keeper reads right after fstrim" || failed "keeper changed by fstrim"
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$img" && pass "check-clean after fstrim" || failed "not check-clean after fstrim"
kernel_mount "$img" "$kmnt" ro
cmp -s "$tmp/keeper" "$kmnt/keeper" && pass "the kernel reads the keeper right" || failed "kernel: keeper differs"
kernel_umount "$kmnt"
ubtrfs_mount "$img" "$mnt" ro
out=$(fstrim "$mnt" 2>&1) && failed "fstrim on a read-only mount succeeded" ||
  { grep -q "Read-only" <<<"$out" && pass "fstrim on a read-only mount is EROFS" || failed "fstrim on ro: $out"; }
ubtrfs_umount "$mnt" || failed "unmount (ro)"

# ---- -o discard: the same shrink without fstrim ----
ubtrfs_mount "$img" "$mnt" discard
write_files "$mnt" b
sync_fs "$mnt"
before=$(allocated)
rm "$mnt"/b?
for attempt in 1 2 3 4 5; do
  sleep 0.3
  sync_fs "$mnt"
  sleep 1  # the worker's batching delay (fs/discard.h kAsyncDiscardDelay)
  shrink_ok "$before" && break
done
report discard_mount_option_shrinks_the_image_without_fstrim "$before"
discard_bytes=$("$INSPECT" stats "$mnt" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["discard"]["async_bytes"])')
((discard_bytes >= deleted * 9 / 10)) && pass "stats: discard.async_bytes $discard_bytes" ||
  failed "stats: discard.async_bytes $discard_bytes"
cmp -s "$tmp/keeper" "$mnt/keeper" && pass "the keeper reads right with -o discard" || failed "keeper changed by -o discard"
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$img" && pass "check-clean after -o discard" || failed "not check-clean after -o discard"
kernel_mount "$img" "$kmnt" ro
cmp -s "$tmp/keeper" "$kmnt/keeper" && pass "the kernel reads the keeper right after -o discard" ||
  failed "kernel: keeper differs after -o discard"
kernel_umount "$kmnt"

# ---- fstrim on a block device (a loop device over the image: BLKDISCARD) ----
if command -v losetup >/dev/null && loop=$(losetup -f --show "$img" 2>/dev/null); then
  ubtrfs_mount "$loop" "$mnt"
  write_files "$mnt" c
  sync_fs "$mnt"
  before=$(allocated)
  rm "$mnt"/c?
  for attempt in 1 2 3 4 5; do
    sleep 0.3
    sync_fs "$mnt"
    fstrim "$mnt" || failed "fstrim on $loop"
    shrink_ok "$before" && break
  done
  report fstrim_on_a_block_device_discards_through_blkdiscard "$before"
  cmp -s "$tmp/keeper" "$mnt/keeper" && pass "the keeper reads right on the block device" || failed "keeper changed"
  ubtrfs_umount "$mnt" || failed "unmount"
  losetup -d "$loop"
  check_clean "$img" && pass "check-clean after fstrim on the block device" || failed "not check-clean (block device)"
else
  echo "no loop device: the block device part is not run"
fi

finish
