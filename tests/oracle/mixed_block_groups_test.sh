#!/usr/bin/env bash
# Mixed block groups (INCOMPAT_MIXED_GROUPS: data and tree blocks share DATA|METADATA chunks), both
# ways between the kernel's tools and ubtrfs:
#   1. an image from `mkfs.btrfs --mixed` that the kernel wrote files to mounts read-write in
#      ubtrfs, reads back byte for byte, takes more files and a write until ENOSPC (at write(),
#      new chunks DATA|METADATA); every acknowledged byte is there when the kernel reads it, and the
#      image is check-clean (btrfs check original, lowmem, data csum; fsck.ubtrfs);
#   2. `mkfs.ubtrfs -b 25M` (xfstests' small sized-mkfs case, below the 89 MiB that separate groups
#      need) chooses mixed groups and says so; `--mixed -m dup` too; both mount in ubtrfs, fill
#      up the same way, and pass the same oracles;
#   3. refusals: `--mixed -n 16k` (mkfs.btrfs's rule: nodesize must equal sectorsize), and a
#      mixed superblock with nodesize 16384 is refused by the daemon with that reason, the image
#      unchanged.
# Rules named here: mixed_block_groups_serve_data_and_metadata_from_one_space_info,
# a_small_device_gets_mixed_block_groups.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_btrfs_check
require_kernel_btrfs
require_ubtrfs
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
command -v mkfs.btrfs >/dev/null || skip_or_fail "mkfs.btrfs (btrfs-progs) not installed"

tmp=$(make_tmpdir)
mnt=$tmp/mnt
kmnt=$tmp/kernel

# chunk_types IMG: the chunk types of IMG's chunk tree, e.g. "DATA|METADATA|single SYSTEM|single".
chunk_types() {
  btrfs inspect-internal dump-tree -t chunk "$1" | sed -n 's/.* type \([A-Z][A-Za-z0-9|]*\)$/\1/p' | sort -u | tr '\n' ' '
}

# fill_and_verify NAME IMG: through ubtrfs, 200 small files and a 1 MiB-write file until ENOSPC;
# then every byte write() acknowledged must read back through the kernel, the image check-clean and
# its new chunks mixed.
fill_and_verify() {
  local name=$1 img=$2 i acked=0 rc=0 err
  if ! ubtrfs_mount "$img" "$mnt"; then failed "$name: ubtrfs mount"; return; fi
  mkdir -p "$mnt/u"
  for ((i = 0; i < 200; i++)); do echo "small $i" >"$mnt/u/s$i" || { failed "$name: create u/s$i"; break; }; done
  head -c $((64 << 20)) /dev/urandom >"$tmp/big.src"
  # One 1 MiB write() at a time, so that "acknowledged" is exact: dd reports the full blocks written.
  err=$(dd if="$tmp/big.src" of="$mnt/u/big" bs=1M iflag=fullblock conv=notrunc status=none 2>&1) || rc=$?
  acked=$(stat -c %s "$mnt/u/big")
  if ((rc == 0)); then
    failed "$name: a 64 MiB write into a small image did not end with ENOSPC"
  elif ! grep -q 'No space left on device' <<<"$err"; then
    failed "$name: the fill ended with something else than ENOSPC: $err"
  else
    pass "$name: the fill ends with ENOSPC at write() after $((acked >> 10)) KiB ($(df -k --output=avail "$mnt" | tail -1 | tr -d ' ') KiB free by df)"
  fi
  ((acked >= (4 << 20))) || failed "$name: only $acked bytes fit before ENOSPC"
  # Deleting gives the space back to both kinds of use: a new file and a directory fit again.
  rm -f "$mnt/u/big"
  if mkdir "$mnt/u/after" && head -c $((1 << 20)) /dev/urandom >"$mnt/u/after/f"; then
    pass "$name: after a delete, mkdir and a 1 MiB file succeed"
  else
    failed "$name: after a delete, mkdir or a 1 MiB write failed"
  fi
  cp "$mnt/u/after/f" "$tmp/after.src"
  # And the big file once more, to have acknowledged data at the very end of the space.
  rc=0
  dd if="$tmp/big.src" of="$mnt/u/big" bs=1M iflag=fullblock status=none 2>/dev/null || rc=$?
  acked=$(stat -c %s "$mnt/u/big")
  if ! ubtrfs_umount "$mnt"; then failed "$name: unmount (final commit)"; return; fi
  if check_clean_full "$img"; then pass "$name: check-clean after the fill"; else failed "$name: not check-clean after the fill"; fi
  local types t separate=''
  types=$(chunk_types "$img")
  for t in $types; do
    [[ $t == METADATA\|* || ($t == DATA\|* && $t != DATA\|METADATA\|*) ]] && separate+=" $t"
  done
  if [[ $types == *DATA\|METADATA* && -z $separate ]]; then
    pass "$name: every data and metadata chunk is mixed ($types)"
  else
    failed "$name: chunks are not all mixed: $types"
  fi
  if ! kernel_mount "$img" "$kmnt" ro; then failed "$name: the kernel refused the image"; return; fi
  local bad=0
  for ((i = 0; i < 200; i++)); do [[ $(cat "$kmnt/u/s$i") == "small $i" ]] || { bad=1; break; }; done
  cmp -s "$kmnt/u/after/f" "$tmp/after.src" || bad=1
  [[ $(stat -c %s "$kmnt/u/big") == "$acked" ]] || bad=1
  cmp -s -n "$acked" "$kmnt/u/big" "$tmp/big.src" || bad=1
  kernel_umount "$kmnt"
  if ((bad == 0)); then
    pass "$name: the kernel reads every acknowledged byte ($((acked >> 10)) KiB of the last big file, 200 small files)"
  else
    failed "$name: the kernel does not read back what ubtrfs acknowledged"
  fi
}

# 1. A kernel-made mixed image, written by the kernel first.
img=$tmp/kernel-mixed.img
truncate -s 64M "$img"
mkfs.btrfs -q --mixed "$img" >/dev/null
kernel_mount "$img" "$kmnt"
mkdir "$kmnt/k"
for ((i = 0; i < 100; i++)); do head -c $((i * 97 + 1)) /dev/urandom >"$kmnt/k/f$i"; done
head -c $((3 << 20)) /dev/urandom >"$kmnt/k/three"
(cd "$kmnt/k" && b2sum -- *) >"$tmp/kernel.sums"
kernel_umount "$kmnt"
if ubtrfs_mount "$img" "$mnt"; then
  if (cd "$mnt/k" && b2sum --quiet -c "$tmp/kernel.sums"); then
    pass "kernel mkfs.btrfs --mixed image: ubtrfs reads the kernel's 101 files back"
  else
    failed "kernel mkfs.btrfs --mixed image: ubtrfs reads different content"
  fi
  ubtrfs_umount "$mnt" || failed "kernel mixed image: unmount"
else
  failed "kernel mkfs.btrfs --mixed image: ubtrfs refused to mount it"
fi
fill_and_verify "kernel mkfs.btrfs --mixed 64M" "$img"
if kernel_mount "$img" "$kmnt" ro; then
  (cd "$kmnt/k" && b2sum --quiet -c "$tmp/kernel.sums") && pass "kernel mixed image: the kernel's own files survive ubtrfs's fill" ||
    failed "kernel mixed image: the kernel's files changed"
  kernel_umount "$kmnt"
fi

# 2. mkfs.ubtrfs on a small device: mixed groups on its own, and --mixed -m dup.
img=$tmp/small.img
out=$("$MKFS" -b 25M "$img" 2>&1) || failed "mkfs.ubtrfs -b 25M: $out"
if grep -q 'using mixed block groups' <<<"$out" && grep -q 'Data+Metadata: *single' <<<"$out" &&
  grep -q 'mixed-bg' <<<"$out" && grep -q 'Node size: *4096' <<<"$out"; then
  pass "mkfs.ubtrfs -b 25M chooses mixed block groups (single, nodesize 4096) and says so"
else
  failed "mkfs.ubtrfs -b 25M did not announce mixed block groups: $out"
fi
[[ $(chunk_types "$img") == "DATA|METADATA|single SYSTEM|single " ]] || failed "25M image chunks: $(chunk_types "$img")"
check_clean "$img" && pass "mkfs.ubtrfs -b 25M: check-clean" || failed "mkfs.ubtrfs -b 25M: not check-clean"
fill_and_verify "mkfs.ubtrfs 25M (mixed on its own)" "$img"

img=$tmp/dup.img
"$MKFS" -q --mixed -m dup -b 48M "$img" || failed "mkfs.ubtrfs --mixed -m dup -b 48M"
[[ $(chunk_types "$img") == "DATA|METADATA|DUP SYSTEM|DUP " ]] || failed "48M DUP image chunks: $(chunk_types "$img")"
fill_and_verify "mkfs.ubtrfs --mixed -m dup 48M" "$img"

# 3. Refusals.
out=$("$MKFS" --mixed -n 16k -b 64M "$tmp/refused.img" 2>&1) && failed "mkfs.ubtrfs --mixed -n 16k succeeded" ||
  { grep -q 'nodesize must equal the sectorsize' <<<"$out" && pass "mkfs.ubtrfs --mixed -n 16k is refused: $out" ||
    failed "mkfs.ubtrfs --mixed -n 16k: unexpected message: $out"; }
[[ -e $tmp/refused.img ]] && failed "a refused mkfs left $tmp/refused.img behind"
# A mixed superblock with 16 KiB nodes (no real tool makes one): the daemon names the rule.
img=$tmp/bad-mixed.img
"$MKFS" -q -b 128M "$img"
incompat=$(python3 -c "import sys;f=open(sys.argv[1],'rb');f.seek(65536+0xBC);print(int.from_bytes(f.read(8),'little'))" "$img")
"$UBTRFS_BIN/corrupt/ubtrfs-corrupt" --super incompat_flags --value $((incompat | 0x4)) "$img" >/dev/null ||
  failed "ubtrfs-corrupt could not set MIXED_GROUPS"
before=$(hash_file "$img")
ubtrfs_try_mount "$img" "$mnt"
if ((TRY_RC == 0)); then
  failed "a mixed superblock with 16 KiB nodes mounted"
  ubtrfs_umount "$mnt"
elif grep -q 'mixed block groups with nodesize 16384 != sectorsize 4096' "$TRY_ERR"; then
  pass "a mixed superblock with 16 KiB nodes is refused (exit $TRY_RC): $(tail -1 "$TRY_ERR")"
else
  failed "a mixed superblock with 16 KiB nodes: exit $TRY_RC, unexpected message: $(cat "$TRY_ERR")"
fi
[[ $(hash_file "$img") == "$before" ]] && pass "the refused image is unchanged" || failed "the refused image changed"
finish
