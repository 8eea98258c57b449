#!/usr/bin/env bash
# Every checksum algorithm btrfs has, through ubtrfs (issue 3 "Data": crc32c, xxhash64, sha256 and
# blake2b readable). For each: mkfs.btrfs --csum ALG, the kernel writes files (inline, regular,
# sparse, a directory); ubtrfs mounted read-only reads them identically; ubtrfs mounted read-write
# adds and overwrites files (data checksums computed with ALG); after its final commit the image is
# check-clean (btrfs check original, lowmem, --check-data-csum) and the kernel reads ubtrfs's bytes
# back. (A flipped data bit reading as EIO is bad_input_mount_test.sh's case.)
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_ubtrfs
require_kernel_btrfs
require_btrfs_check

tmp=$(make_tmpdir)
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

for alg in crc32c xxhash sha256 blake2; do
  img=$tmp/$alg.img
  truncate -s 512M "$img"
  mkfs.btrfs -q -f --csum "$alg" "$img" >/dev/null
  kernel_mount "$img" "$tmp/k"
  mkdir -p "$tmp/k/dir"
  echo "small inline file" >"$tmp/k/small"
  head -c 3000000 /dev/urandom >"$tmp/k/dir/big"
  truncate -s 10M "$tmp/k/sparse" && printf 'tail' >>"$tmp/k/sparse"
  kernel_umount "$tmp/k"
  kernel_mount "$img" "$tmp/k" ro
  want=$(sums "$tmp/k")
  kernel_umount "$tmp/k"

  if ubtrfs_mount "$img" "$tmp/u" ro; then
    got=$(sums "$tmp/u")
    [[ $got == "$want" ]] && pass "$alg: ubtrfs reads the kernel's files" || failed "$alg: ubtrfs read differs"
    ubtrfs_umount "$tmp/u"
  else
    failed "$alg: read-only mount"
    continue
  fi
  if ubtrfs_mount "$img" "$tmp/u"; then
    head -c 2000000 /dev/urandom >"$tmp/u/new"
    dd if=/dev/urandom of="$tmp/u/dir/big" bs=4096 seek=100 count=50 conv=notrunc status=none
    want=$(sums "$tmp/u")
    ubtrfs_umount "$tmp/u"
  else
    failed "$alg: read-write mount"
    continue
  fi
  out=$(btrfs check --check-data-csum "$img" 2>&1) && out2=$(btrfs check --mode=lowmem "$img" 2>&1) &&
    pass "$alg: check-clean after ubtrfs wrote (original --check-data-csum, lowmem)" ||
    failed "$alg: btrfs check after ubtrfs wrote: $out $out2"
  kernel_mount "$img" "$tmp/k" ro
  got=$(sums "$tmp/k")
  kernel_umount "$tmp/k"
  [[ $got == "$want" ]] && pass "$alg: the kernel reads ubtrfs's bytes" || failed "$alg: kernel read differs"

done
finish
