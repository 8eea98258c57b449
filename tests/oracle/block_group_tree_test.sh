#!/usr/bin/env bash
# The block group tree (compat_ro BLOCK_GROUP_TREE, Linux 6.1+: block group items in tree 11
# instead of the extent tree, so that a mount reads one small tree), both ways:
#   1. `mkfs.ubtrfs -O block-group-tree` makes one: compat_ro FREE_SPACE_TREE|VALID|BLOCK_GROUP_TREE,
#      every BLOCK_GROUP_ITEM in tree 11 and none in the extent tree; btrfs check accepts it;
#   2. the kernel mounts it read-write and writes 200 MiB (new chunks: their items go to tree 11);
#   3. ubtrfs mounts it read-write (it mounted such images read-only only), reads the kernel's
#      files, writes 300 MiB and small files, deletes some: new chunks' items in tree 11 again,
#      none in the extent tree; check-clean (btrfs check both modes and data csum, fsck.ubtrfs,
#      the kernel reads every file);
#   4. bad options: an unknown -O feature and turning off an always-made one are refused, nothing
#      written.
# Rule named here: block_group_items_live_in_the_block_group_tree_when_it_exists.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_btrfs_check
require_kernel_btrfs
require_ubtrfs
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/bgt.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
MiB=$((1 << 20))

compat_ro() { btrfs inspect-internal dump-super "$1" | awk '$1 == "compat_ro_flags" {print $2}'; }
# items_in IMG TREE: the number of BLOCK_GROUP_ITEMs in TREE (extent, or 11: progs 6.2 has no name for it).
items_in() { btrfs inspect-internal dump-tree -t "$2" "$1" | grep -c 'BLOCK_GROUP_ITEM' || true; }
chunks_of() { btrfs inspect-internal dump-tree -t chunk "$1" | grep -c 'CHUNK_ITEM' || true; }

# ---- 1. mkfs.ubtrfs -O block-group-tree -----------------------------------------------------------
if ! out=$("$MKFS" -O block-group-tree -b 2G "$img" 2>&1); then
  failed "mkfs.ubtrfs -O block-group-tree: $out"
  finish
fi
if grep -q 'block-group-tree' <<<"$out"; then
  pass "mkfs.ubtrfs lists the feature: $(grep 'Runtime features' <<<"$out" | xargs)"
else
  failed "mkfs.ubtrfs's summary does not name block-group-tree"
fi
if [[ $(compat_ro "$img") == 0xb && $(items_in "$img" 11) == "$(chunks_of "$img")" && $(items_in "$img" extent) == 0 ]]; then
  pass "compat_ro 0xb; $(items_in "$img" 11) block group items in tree 11, none in the extent tree"
else
  failed "after mkfs: compat_ro $(compat_ro "$img"), $(items_in "$img" 11) items in tree 11, $(items_in "$img" extent) in the extent tree, $(chunks_of "$img") chunks"
fi
if check_clean "$img"; then pass "btrfs check accepts the new image"; else failed "btrfs check refuses mkfs.ubtrfs's block group tree image"; fi

# ---- 2. the kernel writes --------------------------------------------------------------------------
head -c $((200 * MiB)) /dev/urandom >"$tmp/k.src"
if kernel_mount "$img" "$kmnt"; then
  cp "$tmp/k.src" "$kmnt/k"
  mkdir "$kmnt/kd"
  for i in $(seq 1 100); do echo "kernel $i" >"$kmnt/kd/s$i"; done
  kernel_umount "$kmnt"
  if check_clean "$img"; then pass "the kernel writes 200 MiB into it; check-clean ($(chunks_of "$img") chunks)"; else failed "not check-clean after the kernel wrote"; fi
else
  failed "the kernel refused mkfs.ubtrfs's block group tree image"
fi

# ---- 3. ubtrfs writes ------------------------------------------------------------------------------
head -c $((300 * MiB)) /dev/urandom >"$tmp/u.src"
before_chunks=$(chunks_of "$img")
if ubtrfs_mount "$img" "$mnt"; then
  if cmp -s "$tmp/k.src" "$mnt/k" && [[ $(cat "$mnt/kd/s100") == "kernel 100" ]]; then
    pass "ubtrfs reads the kernel's files read-write"
  else
    failed "ubtrfs read different data"
  fi
  cp "$tmp/u.src" "$mnt/u"
  mkdir "$mnt/ud"
  for i in $(seq 1 300); do echo "ubtrfs $i" >"$mnt/ud/f$i"; done
  rm -f "$mnt"/kd/s*[02468]
  ubtrfs_umount "$mnt" || failed "unmount after writing"
  after_chunks=$(chunks_of "$img")
  if ((after_chunks > before_chunks)) && [[ $(items_in "$img" 11) == "$after_chunks" && $(items_in "$img" extent) == 0 ]]; then
    pass "ubtrfs's new chunks ($before_chunks -> $after_chunks) have their items in tree 11, none in the extent tree"
  else
    failed "after ubtrfs: $after_chunks chunks (were $before_chunks), $(items_in "$img" 11) items in tree 11, $(items_in "$img" extent) in the extent tree"
  fi
  if check_clean_full "$img"; then pass "check-clean after ubtrfs wrote 300 MiB"; else failed "not check-clean after ubtrfs wrote"; fi
  if kernel_mount "$img" "$kmnt" ro; then
    if cmp -s "$tmp/u.src" "$kmnt/u" && cmp -s "$tmp/k.src" "$kmnt/k" && [[ $(cat "$kmnt/ud/f300") == "ubtrfs 300" ]]; then
      pass "the kernel reads what ubtrfs wrote"
    else
      failed "the kernel read different data"
    fi
    kernel_umount "$kmnt"
  else
    failed "the kernel refused the image after ubtrfs wrote"
  fi
else
  failed "ubtrfs refused the block group tree image read-write: $(tail -3 "${UBTRFS_LAST_LOG:-/dev/null}")"
fi

# ---- 4. bad -O values ------------------------------------------------------------------------------
for bad in "raid-stripe-tree" "^no-holes"; do
  rm -f "$tmp/bad.img"
  rc=0
  err=$("$MKFS" -O "$bad" -b 1G "$tmp/bad.img" 2>&1) || rc=$?
  if ((rc == 1)) && [[ ! -s $tmp/bad.img ]] && grep -q "feature '${bad#^}'" <<<"$err"; then
    pass "-O $bad refused (exit 1), nothing written: $err"
  else
    failed "-O $bad: exit $rc, message '$err', image $(stat -c %s "$tmp/bad.img" 2>/dev/null || echo absent) bytes"
  fi
done

finish
