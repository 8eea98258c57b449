#!/usr/bin/env bash
# copy_file_range shares extents (issue 13, reflink; fs/file_clone.cpp) through a real mount.
#
# On a ubtrfs mount: a file of random data (256 MiB; UBTRFS_REFLINK_MB=1024 for the issue's 1 GiB
# figure, too slow for CI here) is copied with `cp --reflink=auto` (coreutils tries FICLONE, which
# FUSE refuses, then copy_file_range, which the daemon serves by sharing extents). The copy's time
# is printed (no timed assertion: the machine is shared); df's used space must move by less than
# 1 MiB. Half of the copy is then overwritten: both files read right through ubtrfs (sha256
# against the expected content), the image is clean for btrfs check (original, lowmem,
# --check-data-csum) and fsck.ubtrfs, and the kernel reads both files right. Deleting both gives
# all the space back (df used at a remount within 1 MiB of the empty filesystem's).
#
# Then the other direction: a kernel-made reflinked image (`cp --reflink=always` on a loop mount)
# is mounted in ubtrfs, one copy partly overwritten and the other deleted; the image is
# check-clean and the kernel reads the survivor right.
#
# Rules named here: reflink_copy_costs_no_data_space, reflinked_copies_cow_independently,
# deleting_every_reflinked_copy_returns_the_space, ubtrfs_modifies_kernel_reflinked_files.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
MB=${UBTRFS_REFLINK_MB:-256}

require_ubtrfs
fs_is_kernel && skip_or_fail "compares ubtrfs with the kernel"
require_kernel_btrfs
require_btrfs_check
command -v mkfs.btrfs >/dev/null || skip_or_fail "mkfs.btrfs not installed"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/reflink.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
truncate -s $((MB * 3 + 1024))M "$img"
"$MKFS" -q "$img"

# used_bytes DIR: df's used space (statfs f_blocks - f_bfree), in bytes.
used_bytes() { stat -f -c '%b %f %S' "$1" | awk '{print ($1 - $2) * $3}'; }
# within_mib A B: |A - B| < 1 MiB.
within_mib() { local d=$(($1 - $2)); ((d < 0)) && d=$((-d)); ((d < 1048576)); }

ubtrfs_mount "$img" "$mnt"
used_empty=$(used_bytes "$mnt")
dd if=/dev/urandom of="$mnt/a" bs=1M count="$MB" conv=fsync status=none
sum_a=$(sha256sum <"$mnt/a" | cut -d' ' -f1)
used_before=$(used_bytes "$mnt")
t0=$(date +%s%N)
cp --reflink=auto "$mnt/a" "$mnt/b"
t1=$(date +%s%N)
sync -d "$mnt/b"
used_after=$(used_bytes "$mnt")
echo "copy of $MB MiB: $(((t1 - t0) / 1000000)) ms; df used moved $((used_after - used_before)) bytes"
within_mib "$used_after" "$used_before" && pass "reflink_copy_costs_no_data_space (df used moved < 1 MiB)" ||
  failed "the copy moved df used by $((used_after - used_before)) bytes"
cmp -s "$mnt/a" "$mnt/b" && pass "the copy reads equal through ubtrfs" || failed "a and b differ after the copy"

# Overwrite the middle half of the copy.
quarter=$((MB / 4)) half=$((MB / 2))
dd if=/dev/urandom of="$tmp/new" bs=1M count="$half" status=none
dd if="$tmp/new" of="$mnt/b" bs=1M seek="$quarter" conv=notrunc,fsync status=none
sum_b=$({ head -c $((quarter << 20)) "$mnt/a"; cat "$tmp/new"; tail -c +$(((quarter + half) * 1048576 + 1)) "$mnt/a"; } |
  sha256sum | cut -d' ' -f1)
rm -f "$tmp/new"
used_cow=$(used_bytes "$mnt")
echo "overwrite of $half MiB of the copy: df used moved $((used_cow - used_after)) bytes"
[[ $(sha256sum <"$mnt/a" | cut -d' ' -f1) == "$sum_a" ]] && pass "the source is unchanged by the copy's overwrite" ||
  failed "the source changed when the copy was overwritten"
[[ $(sha256sum <"$mnt/b" | cut -d' ' -f1) == "$sum_b" ]] && pass "reflinked_copies_cow_independently (the copy reads right)" ||
  failed "the overwritten copy reads wrong through ubtrfs"
# What it wrote, plus metadata: its checksums (4 bytes a sector, DUP) and tree blocks — 1 MiB and
# 8 KiB per MiB written allow for those; a COW of whole shared extents would move far more.
d=$((used_cow - used_after - (half << 20)))
((d > -1048576 && d < 1048576 + (half << 13))) && pass "the overwrite allocated only what it wrote" ||
  failed "the overwrite of $half MiB moved df used by $((used_cow - used_after))"
ino_b=$(stat -c %i "$mnt/b")
ubtrfs_umount "$mnt" || failed "unmount"

check_clean_full "$img" && pass "btrfs check, fsck.ubtrfs and the kernel find the reflinked image clean" ||
  failed "reflinked image not check-clean"

# fsck.ubtrfs counts the references of shared extents, in total and per (root, inode, offset):
# damaged copies of the image must be caught (and btrfs check agrees).
FSCK=$UBTRFS_BIN/fsck/fsck.ubtrfs
CORRUPT=$UBTRFS_BIN/corrupt/ubtrfs-corrupt
if [[ -x $CORRUPT ]]; then
  btrfs inspect-internal dump-tree -t 5 "$img" >"$tmp/fs.dump"
  read -r bytenr len < <(awk -v k="($ino_b EXTENT_DATA 0)" 'index($0, k) {f = 1} f && /disk byte/ {print $5, $7; exit}' "$tmp/fs.dump")
  # expect_caught NAME IMG PATTERN: fsck.ubtrfs exits 4 naming it, btrfs check fails too.
  expect_caught() {
    local out rc=0
    out=$("$FSCK" "$2" 2>&1) || rc=$?
    if [[ $rc == 4 ]] && grep -qE -- "$3" <<<"$out" && ! btrfs check --readonly "$2" >/dev/null 2>&1; then
      pass "$1"
    else
      failed "$1: fsck.ubtrfs exit $rc, output lacks /$3/ or btrfs check passed: $(head -c 1500 <<<"$out")"
    fi
    rm -f "$2"
  }
  bad=$tmp/bad.img
  cp --sparse=always "$img" "$bad"
  "$CORRUPT" "$bad" --tree extent --key "$bytenr EXTENT_ITEM $len" --field refs --value +1 >/dev/null
  expect_caught "fsck.ubtrfs: a shared extent's refs one too many" "$bad" "ref mismatch on \\[$bytenr $len\\]"
  cp --sparse=always "$img" "$bad"
  # The copy's item moved one sector into the extent: same total, another (root, inode, offset).
  "$CORRUPT" "$bad" --tree fs --key "$ino_b EXTENT_DATA 0" --field offset --value 4096 >/dev/null
  "$CORRUPT" "$bad" --tree fs --key "$ino_b EXTENT_DATA 0" --field num_bytes --value -4096 >/dev/null
  expect_caught "fsck.ubtrfs: a shared extent's reference under the wrong (root, inode, offset)" "$bad" \
    "backref \\(root 5 inode $ino_b offset 0\\) count 1, found 0"
else
  failed "$CORRUPT not built"
fi
kernel_mount "$img" "$kmnt" ro
[[ $(sha256sum <"$kmnt/a" | cut -d' ' -f1) == "$sum_a" && $(sha256sum <"$kmnt/b" | cut -d' ' -f1) == "$sum_b" ]] &&
  pass "the kernel reads both files right" || failed "the kernel reads a or b wrong"
kernel_umount "$kmnt"

ubtrfs_mount "$img" "$mnt"
rm "$mnt/a" "$mnt/b"
ubtrfs_umount "$mnt" || failed "unmount"
ubtrfs_mount "$img" "$mnt"
used_end=$(used_bytes "$mnt")
echo "df used: empty $used_empty, after deleting both $used_end"
within_mib "$used_end" "$used_empty" && pass "deleting_every_reflinked_copy_returns_the_space" ||
  failed "after deleting both copies df used is $used_end, empty was $used_empty"
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$img" && pass "image check-clean after the deletes" || failed "image not check-clean after the deletes"

# ---- random copy_file_range among writes, truncates, punches, fallocates (ubtrfs-stress) ----
# Its model verifies every read; the image must then be check-clean (shared extents' counts
# included) and the kernel and a second ubtrfs mount must see exactly the manifest.
STRESS=$UBTRFS_BIN/stress/ubtrfs-stress
if [[ -x $STRESS ]]; then
  simg=$tmp/stress.img
  manifest=$tmp/stress.manifest
  truncate -s 2G "$simg"
  "$MKFS" -q "$simg"
  ubtrfs_mount "$simg" "$mnt"
  ops="creat,write,read,truncate,punch,fallocate,unlink,link,fsync,copy_range=25"
  nops=${UBTRFS_REFLINK_STRESS_NOPS:-600}
  if "$STRESS" -d "$mnt" -p 2 -n "$nops" -s 7 --ops "$ops" --manifest "$manifest" >"$tmp/stress.log" 2>&1; then
    pass "ubtrfs-stress with copy_range verified on the mount ($(grep -o 'copy_range[^,]*' "$tmp/stress.log" | head -1))"
  else
    failed "ubtrfs-stress with copy_range: $(tail -5 "$tmp/stress.log")"
  fi
  ubtrfs_umount "$mnt" || failed "unmount"
  check_clean_full "$simg" && pass "check-clean after the copy_range workload" || failed "not check-clean after the copy_range workload"
  kernel_mount "$simg" "$kmnt" ro
  "$STRESS" -d "$kmnt" --verify-only --manifest "$manifest" >/dev/null 2>&1 &&
    pass "the kernel sees exactly the tree the copy_range workload left" || failed "the kernel's tree differs from the manifest"
  kernel_umount "$kmnt"
  rm -f "$simg"
else
  failed "$STRESS not built"
fi

# ---- a kernel-made reflinked image, modified by ubtrfs ----
kimg=$tmp/kernel.img
truncate -s 1G "$kimg"
mkfs.btrfs -q -f "$kimg"
kernel_mount "$kimg" "$kmnt" compress=zstd
dd if=/dev/urandom of="$kmnt/k1" bs=1M count=64 status=none
cp --reflink=always "$kmnt/k1" "$kmnt/k2"
cp --reflink=always "$kmnt/k1" "$kmnt/k3"
# Compressible: zstd extents, which ubtrfs shares whole (offset/num_bytes pick the piece).
python3 -c 'import sys; sys.stdout.buffer.write(b"".join(b"line %08d of a compressible file\n" % i for i in range(400000)))' >"$kmnt/z1"
kernel_umount "$kmnt"
ubtrfs_mount "$kimg" "$mnt"
sum_z=$(sha256sum <"$mnt/z1" | cut -d' ' -f1)
# From offset 5000 to 9096 (the same place in a sector): head and tail copied, the middle shared.
python3 -c 'import os, sys
i = os.open(sys.argv[1], os.O_RDONLY); o = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o644)
size = os.fstat(i).st_size; off = 5000; done = 0
while off + done < size:
    n = os.copy_file_range(i, o, size - off - done, off + done, 4096 + off + done)
    if n <= 0: sys.exit("copy_file_range returned %d" % n)
    done += n' "$mnt/z1" "$mnt/z2"
sum_z2=$({ head -c 9096 /dev/zero; tail -c +5001 "$mnt/z1"; } | sha256sum | cut -d' ' -f1)
[[ $(sha256sum <"$mnt/z2" | cut -d' ' -f1) == "$sum_z2" ]] && pass "copy_file_range of kernel-compressed extents reads right" ||
  failed "copy of the compressed file reads wrong through ubtrfs"
dd if=/dev/urandom of="$tmp/new" bs=1M count=8 status=none
dd if="$tmp/new" of="$mnt/k2" bs=1M seek=16 conv=notrunc status=none
sum_k2=$({ head -c $((16 << 20)) "$mnt/k1"; cat "$tmp/new"; tail -c +$((24 * 1048576 + 1)) "$mnt/k1"; } |
  sha256sum | cut -d' ' -f1)
sum_k3=$(sha256sum <"$mnt/k1" | cut -d' ' -f1)
rm "$mnt/k1"
[[ $(sha256sum <"$mnt/k2" | cut -d' ' -f1) == "$sum_k2" ]] && pass "ubtrfs_modifies_kernel_reflinked_files (reads right)" ||
  failed "the overwritten kernel clone reads wrong through ubtrfs"
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$kimg" && pass "the modified kernel-made reflinked image is check-clean" ||
  failed "the modified kernel-made reflinked image is not check-clean"
kernel_mount "$kimg" "$kmnt" ro
[[ $(sha256sum <"$kmnt/k2" | cut -d' ' -f1) == "$sum_k2" && $(sha256sum <"$kmnt/k3" | cut -d' ' -f1) == "$sum_k3" &&
   ! -e $kmnt/k1 ]] && pass "the kernel reads the files ubtrfs modified right" || failed "the kernel reads k2 or k3 wrong"
[[ $(sha256sum <"$kmnt/z1" | cut -d' ' -f1) == "$sum_z" && $(sha256sum <"$kmnt/z2" | cut -d' ' -f1) == "$sum_z2" ]] &&
  pass "the kernel reads the compressed file and ubtrfs's shared copy right" || failed "the kernel reads z1 or z2 wrong"
kernel_umount "$kmnt"

finish
