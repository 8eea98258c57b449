#!/usr/bin/env bash
# mkfs.ubtrfs against the oracles, over the whole option matrix:
#   nodesize {4K, 16K, 64K} x csum {crc32c, xxhash} x metadata {single, dup} x size {128M, 1G, 16G}
# plus mixed block groups (--mixed) at 16M single, 40M DUP and 1G single,
# plus two sizes where a superblock mirror lands on the first tree-block slot of the metadata chunk
# (940M: the second DUP copy starts exactly at 64 MiB, so mkfs must move its tree blocks).
#
# For every image: btrfs check (original + lowmem) is clean; the free space tree has exactly one
# FREE_SPACE_INFO per block group and none without one (FORMAT.md §10.1: mkfs.btrfs 6.2 leaves stale
# ones); the kernel mounts it read-write and writes 1,000 files with data, deletes them, writes them
# again (inline and regular extents), after which check and the FST comparison must still pass.
#
# Usage: UBTRFS_BIN=<build>/tools UBTRFS_REQUIRE_ORACLES=1 bash tests/oracle/mkfs_matrix_test.sh
#   MKFS_MATRIX_QUICK=1 runs only 16K nodes (a fast subset for development).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_btrfs_check
require_kernel_btrfs

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
[[ -x $MKFS ]] || { echo "FAIL: $MKFS is not built" >&2; exit 1; }

tmp=$(make_tmpdir)
mnt=$tmp/mnt

# fst_matches_block_groups IMG: compares the FREE_SPACE_INFO keys of the free space tree (tree 10)
# with the BLOCK_GROUP_ITEM keys of the extent tree (tree 2); every info needs its block group (no
# stale entries) and every block group its info. Prints the differences.
fst_matches_block_groups() {
  local img=$1 infos bgs stale missing
  infos=$(btrfs inspect-internal dump-tree -t 10 "$img" |
    sed -n 's/.*item [0-9]* key (\([0-9]*\) FREE_SPACE_INFO \([0-9]*\)).*/\1 \2/p' | sort)
  bgs=$(btrfs inspect-internal dump-tree -t 2 "$img" |
    sed -n 's/.*item [0-9]* key (\([0-9]*\) BLOCK_GROUP_ITEM \([0-9]*\)).*/\1 \2/p' | sort)
  if [[ -z $bgs || -z $infos ]]; then
    echo "no block groups or no free space infos found in $img" >&2
    return 1
  fi
  stale=$(comm -23 <(echo "$infos") <(echo "$bgs"))
  missing=$(comm -13 <(echo "$infos") <(echo "$bgs"))
  if [[ -n $stale || -n $missing ]]; then
    [[ -n $stale ]] && echo "stale FREE_SPACE_INFO without a block group: $stale" >&2
    [[ -n $missing ]] && echo "block group without FREE_SPACE_INFO: $missing" >&2
    return 1
  fi
}

# One round of 1,000 files of 1..9000 bytes (inline below 2049 bytes, regular extents above).
blob=$(head -c 12000 /dev/urandom | base64 -w0)
write_files() {
  local dir=$1 i
  mkdir -p "$dir"
  for ((i = 0; i < 1000; i++)); do
    printf '%s' "${blob:i:(i * 53) % 9000 + 1}" >"$dir/f$i"
  done
}

workload() {
  local m=$1
  write_files "$m/d"
  sync -f "$m"
  rm -rf "$m/d"
  sync -f "$m"
  write_files "$m/d"
  [[ $(find "$m/d" -type f | wc -l) == 1000 ]] || { echo "expected 1000 files" >&2; return 1; }
  [[ $(cat "$m/d/f999") == "${blob:999:(999 * 53) % 9000 + 1}" ]] || { echo "f999 content differs" >&2; return 1; }
}

# run_case NODESIZE CSUM PROFILE SIZE [--mixed]
run_case() {
  local n=$1 c=$2 m=$3 s=$4 mixed=${5:-} img name
  name="n=$n csum=$c m=$m size=$s${mixed:+ mixed}"
  img=$tmp/img
  rm -f "$img"
  if ! "$MKFS" -q -n "$n" --csum "$c" -m "$m" -b "$s" $mixed "$img"; then failed "$name: mkfs"; return; fi
  if ! check_clean "$img"; then failed "$name: btrfs check after mkfs"; return; fi
  if ! fst_matches_block_groups "$img"; then failed "$name: free space tree after mkfs"; return; fi
  if ! kernel_mount "$img" "$mnt"; then failed "$name: kernel mount"; return; fi
  if ! workload "$mnt"; then failed "$name: workload"; umount "$mnt"; return; fi
  if ! kernel_umount "$mnt"; then failed "$name: umount"; return; fi
  if ! check_clean "$img"; then failed "$name: btrfs check after kernel writes"; return; fi
  if ! fst_matches_block_groups "$img"; then
    failed "$name: free space tree after kernel writes"
    [[ -n ${MKFS_KEEP_FAILED:-} ]] && cp --sparse=always "$img" "$MKFS_KEEP_FAILED/${name//[ =]/_}.img"
    return
  fi
  pass "$name"
}

# Self-test of the stale-entry detector: mkfs.btrfs 6.2 leaves FREE_SPACE_INFOs of its deleted
# temporary chunks (FORMAT.md §5.2), which the function must report.
if command -v mkfs.btrfs >/dev/null && mkfs.btrfs --version 2>/dev/null | grep -q 'v6\.2$'; then
  truncate -s 256M "$tmp/ref.img"
  mkfs.btrfs -q "$tmp/ref.img" >/dev/null 2>&1
  if fst_matches_block_groups "$tmp/ref.img" 2>/dev/null; then
    failed "stale FST detector misses mkfs.btrfs 6.2's stale entries"
  else
    pass "stale FST detector flags mkfs.btrfs 6.2's stale entries"
  fi
  rm -f "$tmp/ref.img"
fi

start=$SECONDS
nodesizes=(4096 16384 65536)
[[ ${MKFS_MATRIX_QUICK:-0} == 1 ]] && nodesizes=(16384)
[[ -n ${MKFS_MATRIX_NODESIZES:-} ]] && read -r -a nodesizes <<<"$MKFS_MATRIX_NODESIZES"
for n in "${nodesizes[@]}"; do
  for c in crc32c xxhash; do
    for m in single dup; do
      for s in 128M 1G 16G; do
        run_case "$n" "$c" "$m" "$s"
      done
    done
  done
done
# Mirror on the first metadata slot: second DUP copy of the metadata chunk starts at 64 MiB.
run_case 16384 crc32c dup 940M
run_case 65536 xxhash dup 940M
# Mixed block groups (--mixed: one DATA|METADATA chunk, 4 KiB nodes): the smallest size, a DUP one,
# and one past the 64 MiB superblock mirror.
run_case 4096 crc32c single 16M --mixed
run_case 4096 xxhash dup 40M --mixed
run_case 4096 xxhash single 1G --mixed
echo "matrix time: $((SECONDS - start)) s"
finish
