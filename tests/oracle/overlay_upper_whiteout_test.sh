#!/usr/bin/env bash
# ubtrfs as the upper layer of overlayfs (issue 13, RENAME_WHITEOUT; fs/rename.cpp
# add_whiteout). overlayfs records a lower file's deletion as a whiteout — a character device 0:0 —
# in the upper layer, made by rename(RENAME_WHITEOUT) (a rename of a lower file) or by a whiteout
# it links in place (a deletion). The overlay's view must be right, the upper layer on ubtrfs must
# hold exactly those whiteouts, and after the unmount the image is check-clean and the kernel sees
# the same whiteouts.
#
# Rules named here: rename_whiteout_leaves_a_chardev_0_0_at_the_old_name,
# overlay_upper_layer_on_ubtrfs_round_trips_with_the_kernel.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs

require_root
require_ubtrfs
fs_is_kernel && skip_or_fail "tests ubtrfs under overlayfs"
require_kernel_btrfs
require_btrfs_check
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || skip_or_fail "no overlayfs in this kernel"

tmp=$(make_tmpdir)
img=$tmp/upper.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
ov=$tmp/ov
lower=$tmp/lower
truncate -s 512M "$img"
"$MKFS" -q "$img"
mkdir -p "$lower/dir" "$ov"
echo deleted >"$lower/gone"
echo renamed >"$lower/old"
echo inside >"$lower/dir/f"
echo kept >"$lower/kept"

ubtrfs_mount "$img" "$mnt"
mkdir "$mnt/upper" "$mnt/work"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$mnt/upper,workdir=$mnt/work" "$ov" ||
  { failed "overlayfs refused ubtrfs as upperdir: $(dmesg | tail -3)"; finish; }
rm "$ov/gone"
mv "$ov/old" "$ov/new"
echo added >"$ov/dir/added"
rm "$ov/dir/f"

# whiteout_ok PATH: a character device 0:0 with no permission bits.
whiteout_ok() { [[ $(stat -c '%F %t:%T %a' "$1" 2>/dev/null) == "character special file 0:0 0" ]]; }

[[ $(cd "$ov" && ls | tr '\n' ' ') == "dir kept new " ]] && pass "the overlay lists dir kept new" ||
  failed "overlay listing: $(cd "$ov" && ls | tr '\n' ' ')"
[[ $(cat "$ov/new") == renamed && $(cat "$ov/kept") == kept && $(cd "$ov/dir" && ls) == added ]] &&
  pass "the overlay's files read right" || failed "overlay contents"
for w in gone old dir/f; do
  whiteout_ok "$mnt/upper/$w" && pass "upper/$w on ubtrfs is a whiteout" ||
    failed "upper/$w: $(stat -c '%F %t:%T %a' "$mnt/upper/$w" 2>&1)"
done
umount "$ov" || failed "overlay unmount"
ubtrfs_umount "$mnt" || failed "unmount"

check_clean "$img" && pass "image check-clean" || failed "btrfs check after the overlay"
kernel_mount "$img" "$kmnt"
for w in gone old dir/f; do
  whiteout_ok "$kmnt/upper/$w" && pass "the kernel sees upper/$w as a whiteout" || failed "kernel: upper/$w"
done
[[ $(cat "$kmnt/upper/new") == renamed ]] && pass "the kernel reads the copied-up file" || failed "kernel: upper/new"
kernel_umount "$kmnt"
finish
