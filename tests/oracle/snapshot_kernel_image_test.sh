#!/usr/bin/env bash
# ubtrfs modifies a kernel-made snapshot and its source (issue 16 acceptance 2; alloc/shared_refs.cpp,
# the COW of shared blocks).
#
# The kernel makes an image with 4 KiB nodes (so the trees have level-2 nodes) holding subvolume
# `sv` (2,000 inline files, 120 files of 20 KiB, a 3 MiB file), a read-write snapshot `snap`, a
# read-only snapshot `rosnap` and a snapshot of the snapshot `snap2`. ubtrfs mounts it read-write
# and changes `sv` and `snap` differently (overwrites, deletes, new files, appends). The image must
# then be clean for btrfs check (original, lowmem, data checksums) and fsck.ubtrfs, and the kernel
# must read every tree as ubtrfs left it: `sv` and `snap` as ubtrfs showed them before unmounting,
# `rosnap` and `snap2` exactly as the kernel made them. The kernel then changes both trees and
# deletes `snap2` (its cleaner drops a tree whose blocks ubtrfs re-referenced); check clean again,
# and ubtrfs reads what the kernel left.
#
# Rules named here: first_cow_of_a_shared_block_moves_its_references (update_ref_for_cow: the
# image is check-clean after ubtrfs COWed blocks shared by four trees), snapshots_untouched_by_cow
# (rosnap/snap2 unchanged).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_ubtrfs
fs_is_kernel && skip_or_fail "compares ubtrfs with the kernel"
require_kernel_btrfs
require_btrfs_check
command -v mkfs.btrfs >/dev/null || skip_or_fail "mkfs.btrfs not installed"
source "$UBTRFS_SRC/images/manifest.sh"

tmp=$(make_tmpdir)
img=$tmp/snap.img
kmnt=$tmp/kernel
mnt=$tmp/ubtrfs
truncate -s 512M "$img"
mkfs.btrfs -q -n 4096 "$img" >/dev/null 2>&1

# --- the kernel makes the snapshots ---------------------------------------------------------------
kernel_mount "$img" "$kmnt"
btrfs -q subvolume create "$kmnt/sv" >/dev/null
mkdir "$kmnt/sv/small" "$kmnt/sv/mid"
for i in $(seq 1 2000); do echo "small file $i" >"$kmnt/sv/small/s$i"; done
for i in $(seq 1 120); do head -c 20480 /dev/urandom >"$kmnt/sv/mid/m$i"; done
head -c 3M /dev/urandom >"$kmnt/sv/big"
setfattr -n user.tag -v before "$kmnt/sv/big" 2>/dev/null || true
btrfs -q subvolume snapshot "$kmnt/sv" "$kmnt/snap" >/dev/null
btrfs -q subvolume snapshot -r "$kmnt/sv" "$kmnt/rosnap" >/dev/null
btrfs -q subvolume snapshot "$kmnt/snap" "$kmnt/snap2" >/dev/null
sync
manifest_of "$kmnt/rosnap" >"$tmp/rosnap.kernel"
manifest_of "$kmnt/snap2" >"$tmp/snap2.kernel"
kernel_umount "$kmnt"
check_clean "$img" && pass "the kernel-made image is check-clean" || failed "the kernel-made image is not clean"

# --- ubtrfs changes the source and one snapshot ---------------------------------------------------
ubtrfs_mount "$img" "$mnt"
change() {  # change TREE SEED: overwrites, deletes, new files, an append, a truncate
  local t=$1 seed=$2 i
  for i in $(seq "$seed" 3 120); do head -c 20480 /dev/urandom >"$t/mid/m$i"; done
  for i in $(seq "$seed" 5 2000); do rm "$t/small/s$i"; done
  for i in $(seq 1 300); do echo "new $seed $i" >"$t/small/n$i"; done
  head -c 1M /dev/urandom >>"$t/big"
  truncate -s 100000 "$t/mid/m2"
  mkdir "$t/newdir" && head -c 50000 /dev/urandom >"$t/newdir/f"
}
if change "$mnt/sv" 1 && change "$mnt/snap" 2; then pass "ubtrfs changed sv and snap"; else failed "ubtrfs could not change the trees"; fi
sync
for t in sv snap rosnap snap2; do manifest_of "$mnt/$t" >"$tmp/$t.ubtrfs"; done
ubtrfs_umount "$mnt" || failed "ubtrfs unmount"
cmp -s "$tmp/rosnap.kernel" "$tmp/rosnap.ubtrfs" && cmp -s "$tmp/snap2.kernel" "$tmp/snap2.ubtrfs" &&
  pass "ubtrfs reads rosnap and snap2 as the kernel made them" || failed "ubtrfs reads rosnap or snap2 differently"

if check_clean_full "$img"; then
  pass "first_cow_of_a_shared_block_moves_its_references: check-clean (original, lowmem, data csum, fsck.ubtrfs)"
else
  failed "first_cow_of_a_shared_block_moves_its_references: the image ubtrfs changed is not clean"
fi

# --- the kernel reads what ubtrfs left, then changes both trees and drops snap2 --------------------
kernel_mount "$img" "$kmnt"
for t in sv snap rosnap snap2; do manifest_of "$kmnt/$t" >"$tmp/$t.kernel2"; done
for t in sv snap; do
  if diff -q "$tmp/$t.ubtrfs" "$tmp/$t.kernel2" >/dev/null; then pass "the kernel reads $t as ubtrfs left it"
  else failed "the kernel reads $t differently: $(diff "$tmp/$t.ubtrfs" "$tmp/$t.kernel2" | head -5)"; fi
done
if cmp -s "$tmp/rosnap.kernel" "$tmp/rosnap.kernel2" && cmp -s "$tmp/snap2.kernel" "$tmp/snap2.kernel2"; then
  pass "snapshots_untouched_by_cow: rosnap and snap2 unchanged"
else
  failed "snapshots_untouched_by_cow: rosnap or snap2 changed"
fi
for i in $(seq 1 40); do head -c 8192 /dev/urandom >"$kmnt/sv/mid/m$i"; head -c 8192 /dev/urandom >"$kmnt/snap/mid/m$((i + 40))"; done
rm -f "$kmnt/snap/small/n"*
btrfs -q subvolume delete "$kmnt/snap2" >/dev/null
btrfs subvolume sync "$kmnt" >/dev/null
sync
for t in sv snap rosnap; do manifest_of "$kmnt/$t" >"$tmp/$t.kernel3"; done
kernel_umount "$kmnt"
check_clean "$img" && pass "the kernel changed both trees and dropped snap2: check-clean" ||
  failed "not clean after the kernel changed the trees ubtrfs had changed"

ubtrfs_mount "$img" "$mnt" ro
ok=1
for t in sv snap rosnap; do
  manifest_of "$mnt/$t" >"$tmp/$t.ubtrfs3"
  cmp -s "$tmp/$t.kernel3" "$tmp/$t.ubtrfs3" || { ok=0; echo "$t: $(diff "$tmp/$t.kernel3" "$tmp/$t.ubtrfs3" | head -5)" >&2; }
done
[[ -e $mnt/snap2 ]] && { ok=0; echo "snap2 still listed" >&2; }
ubtrfs_umount "$mnt" || ok=0
((ok)) && pass "ubtrfs reads what the kernel left" || failed "ubtrfs reads the kernel's changes differently"
finish
