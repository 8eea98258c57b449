#!/usr/bin/env bash
# Images without a free space tree (the v1 space cache: btrfs-progs before 5.15, Debian 11's
# 5.10, kernels mounting with space_cache=v1) mount read-write: the mount builds the free space
# tree from the extent tree in a commit of its own, as the kernel does at a read-write mount since
# Linux 5.15 (fs/free_space_tree_build.h). They were refused ("mount with -o ro").
#   1. the kernel makes a v1 image (mkfs.btrfs -R ^free-space-tree, mount -o space_cache=v1) with
#      files, some deleted (free space with holes);
#   2. a read-only mount leaves the image byte for byte; a read-write mount without a change
#      (noatime) builds the tree at once: the daemon says so, compat_ro is FREE_SPACE_TREE|VALID,
#      check-clean (btrfs check verifies the tree against the extent tree in both modes,
#      fsck.ubtrfs too, the kernel reads);
#   3. ubtrfs reads the files back, writes 200 MiB (new chunks) and small files, deletes some;
#      check-clean;
#   4. the kernel mounts it read-write (default options: it keeps the tree and drops the v1
#      files), reads everything; ubtrfs writes once more; check-clean at each step;
#   5. bad input: a v1 image whose data block group item claims 4 KiB more than its extent items
#      hold is refused read-write with both numbers and the group named, the image unchanged, and
#      still mounts read-only.
# Rule named here: a_filesystem_without_a_free_space_tree_gets_one_in_its_first_commit.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_btrfs_check
require_kernel_btrfs
require_ubtrfs
command -v mkfs.btrfs >/dev/null || skip_or_fail "mkfs.btrfs (btrfs-progs) not installed"

tmp=$(make_tmpdir)
img=$tmp/v1.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
MiB=$((1 << 20))

compat_ro() { btrfs inspect-internal dump-super "$1" | awk '$1 == "compat_ro_flags" {print $2}'; }
CORRUPT=$UBTRFS_BIN/corrupt/ubtrfs-corrupt
[[ -x $CORRUPT ]] || { echo "FAIL: $CORRUPT not built" >&2; exit 1; }
v1_headers() { btrfs inspect-internal dump-tree -t root "$1" | grep -c 'FREE_SPACE UNTYPED' || true; }

# ---- 1. the kernel's v1 image ------------------------------------------------------------------------
truncate -s 1G "$img"
mkfs.btrfs -q -f -R ^free-space-tree "$img" >/dev/null
head -c $((30 * MiB)) /dev/urandom >"$tmp/k1.src"
head -c $((20 * MiB)) /dev/urandom >"$tmp/k2.src"
if ! kernel_mount "$img" "$kmnt" space_cache=v1; then
  failed "the kernel refused -o space_cache=v1"
  finish
fi
mkdir "$kmnt/d"
cp "$tmp/k1.src" "$kmnt/k1"
cp "$tmp/k2.src" "$kmnt/k2"
for i in $(seq 1 300); do echo "kernel $i" >"$kmnt/d/s$i"; head -c 40000 /dev/urandom >"$kmnt/d/m$i"; done
sync
rm -f "$kmnt"/d/m*[02468]
kernel_umount "$kmnt"
if [[ $(compat_ro "$img") == 0x0 ]] && (($(v1_headers "$img") > 0)); then
  pass "the kernel's image has no free space tree and $(v1_headers "$img") v1 cache headers"
else
  failed "not a v1 image: compat_ro $(compat_ro "$img"), $(v1_headers "$img") v1 headers"
  finish
fi

# ---- 2. a read-only mount, then a read-write one that changes nothing --------------------------------
h0=$(hash_file "$img")
if ubtrfs_mount "$img" "$mnt" ro; then
  cmp -s "$tmp/k1.src" "$mnt/k1" || failed "read-only mount: k1 differs"
  ubtrfs_umount "$mnt" || failed "read-only unmount"
fi
if [[ $(hash_file "$img") == "$h0" ]]; then pass "a read-only mount leaves the image byte for byte"; else failed "a read-only mount changed the image"; fi
if ubtrfs_mount "$img" "$mnt" noatime; then
  cat "$mnt/k2" "$mnt/d/s1" >/dev/null
  log=$(ubtrfs_log "$mnt")
  ubtrfs_umount "$mnt" || failed "unmount of an unchanged read-write mount"
  if grep -q 'built the free space tree' "$log"; then
    pass "the read-write mount built the free space tree: $(grep -o 'built the free space tree ([^)]*)' "$log")"
  else
    failed "no 'built the free space tree' in the daemon's log ($log)"
  fi
  if [[ $(compat_ro "$img") == 0x3 ]]; then pass "compat_ro is FREE_SPACE_TREE|FREE_SPACE_TREE_VALID"; else failed "compat_ro is $(compat_ro "$img")"; fi
  if check_clean_full "$img"; then pass "check-clean right after the build"; else failed "not check-clean after the build"; fi
else
  failed "ubtrfs refused the v1 image read-write: $(tail -3 "${UBTRFS_LAST_LOG:-/dev/null}")"
fi

# ---- 3. ubtrfs writes ------------------------------------------------------------------------------------
head -c $((200 * MiB)) /dev/urandom >"$tmp/big.src"
if ubtrfs_mount "$img" "$mnt"; then
  if cmp -s "$tmp/k1.src" "$mnt/k1" && cmp -s "$tmp/k2.src" "$mnt/k2" && [[ $(cat "$mnt/d/s300") == "kernel 300" ]]; then
    pass "ubtrfs reads the kernel's files read-write"
  else
    failed "ubtrfs read different data"
  fi
  cp "$tmp/big.src" "$mnt/big"
  mkdir "$mnt/u"
  for i in $(seq 1 300); do echo "ubtrfs $i" >"$mnt/u/f$i"; done
  rm -f "$mnt/k2" "$mnt"/d/m*[13579]
  ubtrfs_umount "$mnt" || failed "unmount after writing"
  if check_clean_full "$img"; then pass "check-clean after ubtrfs wrote 200 MiB into the converted image"; else failed "not check-clean after ubtrfs wrote"; fi
else
  failed "third ubtrfs mount"
fi

# ---- 4. the kernel and ubtrfs once more ---------------------------------------------------------------
if kernel_mount "$img" "$kmnt"; then
  if cmp -s "$tmp/big.src" "$kmnt/big" && cmp -s "$tmp/k1.src" "$kmnt/k1" && [[ $(cat "$kmnt/u/f300") == "ubtrfs 300" ]] &&
    [[ ! -e $kmnt/k2 ]]; then
    pass "the kernel mounts it read-write and reads what ubtrfs left"
  else
    failed "the kernel read different data"
  fi
  echo "kernel again" >"$kmnt/again"
  kernel_umount "$kmnt"
  if check_clean_full "$img"; then pass "check-clean after the kernel's read-write mount ($(v1_headers "$img") v1 headers left)"; else failed "not check-clean after the kernel's mount"; fi
else
  failed "the kernel refused the image read-write"
fi
if ubtrfs_mount "$img" "$mnt"; then
  head -c $((5 * MiB)) /dev/urandom >"$mnt/last"
  rm -f "$mnt/big"
  ubtrfs_umount "$mnt" || failed "last unmount"
  if check_clean_full "$img"; then pass "check-clean after one more ubtrfs mount"; else failed "not check-clean after one more ubtrfs mount"; fi
else
  failed "last ubtrfs mount"
fi

# ---- 5. a block group item that disagrees with the extent tree --------------------------------------
bad=$tmp/bad.img
truncate -s 1G "$bad"
mkfs.btrfs -q -f -R ^free-space-tree "$bad" >/dev/null
if kernel_mount "$bad" "$kmnt" space_cache=v1; then
  head -c $((3 * MiB)) /dev/urandom >"$kmnt/f"
  kernel_umount "$kmnt"
fi
data_bg=$(btrfs inspect-internal dump-tree -t extent "$bad" | awk '
  /BLOCK_GROUP_ITEM/ { gsub(/[()]/, ""); key = $4 " 192 " $6 }
  /flags DATA/ && key != "" && !n++ { print key }')
"$CORRUPT" "$bad" --tree extent --key "$data_bg" --field used --value +4096 >/dev/null
before=$(hash_file "$bad")
ubtrfs_try_mount "$bad" "$mnt"
msg=$(grep -m1 'error' "$TRY_ERR" | cut -c1-300)
if ((TRY_RC != 0)) && ! is_mounted "$mnt" && grep -q "block group ${data_bg%% *}: its extent items leave" "$TRY_ERR" &&
  [[ $(hash_file "$bad") == "$before" ]]; then
  pass "a data block group item 4 KiB off its extent items: refused read-write (exit $TRY_RC), image unchanged: $msg"
else
  failed "bad block group item: exit $TRY_RC, mounted $(is_mounted "$mnt" && echo yes || echo no), message: $msg"
  if is_mounted "$mnt"; then umount "$mnt"; fi
fi
if ubtrfs_mount "$bad" "$mnt" ro; then
  if [[ $(stat -c %s "$mnt/f") == $((3 * MiB)) ]]; then pass "the same image mounts read-only"; else failed "read-only mount of the bad image: f is wrong"; fi
  ubtrfs_umount "$mnt" || failed "read-only unmount of the bad image"
else
  failed "the bad image does not even mount read-only"
fi

finish
