#!/usr/bin/env bash
# Oracle: `ubtrfs-inspect dump-tree` against `btrfs inspect-internal dump-tree` (btrfs-progs).
#
# For images made by mkfs.btrfs and populated through a kernel loop mount (files, dirs, hardlinks,
# symlinks, xattrs, zlib/lzo/zstd compressed files, sparse and preallocated files, a subvolume and a
# snapshot, enough files for multi-level trees; crc32c and xxhash checksums; -m single and dup;
# nodesize 4K and 16K; a legacy feature set), plus the committed reference images (images/*/image.zst)
# and images made by mkfs.ubtrfs when it is built, the sequence of item keys printed by both tools
# must be identical, in the same order: for the whole-filesystem dump (tree headings included) and
# for every tree printed on its own with -t. dump-super must succeed on each image too.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

INSPECT=${UBTRFS_INSPECT:-$UBTRFS_BIN/inspect/ubtrfs-inspect}
MKFS_UBTRFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
[[ -x $INSPECT ]] || { echo "FAIL: $INSPECT not built" >&2; exit 1; }
require_btrfs_check
command -v mkfs.btrfs >/dev/null || skip_or_fail "mkfs.btrfs not installed"

tmp=$(make_tmpdir)
total_keys=0
total_trees=0

# keys FILE: the tree headings and the "key (...)" of every item line, in order.
keys() {
  grep -P '^(root tree|chunk tree|log root tree|\S.* tree key \(.*\) ?)$|^\titem \d+ key \(' "$1" |
    sed -E -e 's/^\titem [0-9]+ (key \([^)]*\)).*/\1/' -e 's/ +$//' || true
}

# compare_dump NAME IMG [ARGS...]: run both tools with the same dump-tree arguments, compare keys.
compare_dump() {
  local name=$1 img=$2
  shift 2
  local a=$tmp/progs.out b=$tmp/ours.out err=$tmp/ours.err
  if ! btrfs inspect-internal dump-tree "$@" "$img" >"$a" 2>/dev/null; then
    failed "$name: btrfs dump-tree $* failed"
    return 1
  fi
  if ! "$INSPECT" dump-tree "$@" "$img" >"$b" 2>"$err"; then
    failed "$name: ubtrfs-inspect dump-tree $* failed: $(head -c 300 "$err")"
    return 1
  fi
  keys "$a" >"$a.keys"
  keys "$b" >"$b.keys"
  local n
  n=$(grep -c '^key (' "$a.keys" || true)
  if [[ $n == 0 && $# == 0 ]]; then
    failed "$name: progs printed no items at all"
    return 1
  fi
  if ! diff -u "$a.keys" "$b.keys" >"$tmp/diff" 2>&1; then
    failed "$name: dump-tree $* key sequences differ ($n keys from progs):"
    head -20 "$tmp/diff" >&2
    return 1
  fi
  total_keys=$((total_keys + n))
  total_trees=$((total_trees + 1))
  return 0
}

# compare_image NAME IMG: whole dump, every tree with -t, and dump-super.
compare_image() {
  local name=$1 img=$2 ok=1 before after id
  before=$(hash_file "$img")
  compare_dump "$name" "$img" || ok=0
  local ids=(1 3)
  if [[ $ok == 1 ]]; then
    # Tree ids from the ROOT_ITEM headings of the whole dump ("fs tree key (FS_TREE ROOT_ITEM 0)").
    while read -r id; do ids+=("$id"); done < <(grep -oP '^\S.* tree key \(\K\S+(?= ROOT_ITEM)' "$tmp/progs.out" | sort -u)
  fi
  for id in "${ids[@]}"; do
    case $id in
      EXTENT_TREE) id=2 ;; DEV_TREE) id=4 ;; FS_TREE) id=5 ;; CSUM_TREE) id=7 ;; QUOTA_TREE) id=8 ;;
      UUID_TREE) id=9 ;; FREE_SPACE_TREE) id=10 ;; BLOCK_GROUP_TREE) id=11 ;; DATA_RELOC_TREE) id=data_reloc ;;
      TREE_RELOC | TREE_LOG | ROOT_TREE_DIR) continue ;;
    esac
    compare_dump "$name (-t $id)" "$img" -t "$id" || ok=0
  done
  if ! "$INSPECT" dump-super "$img" >"$tmp/super.out" 2>"$tmp/super.err"; then
    failed "$name: dump-super failed: $(cat "$tmp/super.err")"
    ok=0
  elif ! grep -q "^fsid" "$tmp/super.out"; then
    failed "$name: dump-super printed no fsid"
    ok=0
  fi
  after=$(hash_file "$img")
  if [[ $before != "$after" ]]; then
    failed "$name: image changed while inspecting"
    ok=0
  fi
  [[ $ok == 1 ]] && pass "$name: keys identical (${#ids[@]} trees with -t, plus the whole dump)"
  return 0
}

# populate MNT: a bit of everything the kernel writes.
populate() {
  local m=$1 i
  echo "hello world" >"$m/small.txt"
  head -c 300000 /dev/urandom >"$m/random.bin"
  mkdir -p "$m/dir/sub"
  ln "$m/random.bin" "$m/dir/hardlink.bin"
  for i in 1 2 3 4 5; do ln "$m/small.txt" "$m/dir/link$i"; done
  ln -s small.txt "$m/symlink"
  ln -s "$(printf 'x%.0s' {1..1500})" "$m/longsymlink"
  python3 -c "import os,sys; os.setxattr(sys.argv[1],'user.test',b'value'); os.setxattr(sys.argv[2],'user.big',b'v'*2000)" \
    "$m/small.txt" "$m/dir"
  local alg
  for alg in zlib lzo zstd; do
    touch "$m/comp-$alg"
    btrfs property set "$m/comp-$alg" compression "$alg" >/dev/null
    python3 -c "import sys; sys.stdout.write(('compressible line for %s\n' % sys.argv[1]) * 16000)" "$alg" >"$m/comp-$alg"
  done
  truncate -s 4M "$m/sparse"
  dd if=/dev/urandom of="$m/sparse" bs=4k seek=100 count=2 conv=notrunc status=none
  fallocate -l 128k "$m/prealloc"
  mkfifo "$m/fifo"
  btrfs subvolume create "$m/subvol" >/dev/null
  echo inside >"$m/subvol/file"
  btrfs subvolume snapshot -r "$m" "$m/snap" >/dev/null
  # Enough names for node levels > 0 in the fs, extent and csum trees (4K nodes especially).
  mkdir "$m/many"
  for i in $(seq 1 1500); do echo "$i" >"$m/many/file-with-a-longish-name-$i"; done
  head -c 2000000 /dev/urandom >"$m/many/big.bin"
  rm -f "$m/many/file-with-a-longish-name-1"{0..9}*  # unlinks leave index gaps
  sync
}

# kernel_image NAME SIZE MKFS_OPTS...: mkfs.btrfs, populate through a kernel mount, unmount; sets IMG.
kernel_image() {
  local name=$1 size=$2
  shift 2
  local img=$tmp/$name.img mnt=$tmp/mnt-$name
  truncate -s "$size" "$img"
  mkfs.btrfs -q -f "$@" "$img" >/dev/null
  kernel_mount "$img" "$mnt"
  populate "$mnt"
  kernel_umount "$mnt"
  IMG=$img
}

have_kernel=1
(require_kernel_btrfs) >/dev/null 2>&1 || have_kernel=0
if [[ $have_kernel == 1 ]]; then
  kernel_image default 512M
  compare_image "default (16K, dup, crc32c)" "$IMG"
  kernel_image xxhash 512M --csum xxhash
  compare_image "csum xxhash" "$IMG"
  kernel_image msingle 512M -m single
  compare_image "metadata single" "$IMG"
  kernel_image n4k 512M -n 4096
  compare_image "nodesize 4K" "$IMG"
  kernel_image n4kxx 512M -n 4096 -m single --csum xxhash
  compare_image "4K single xxhash" "$IMG"
  kernel_image legacy 512M -O ^extref,^skinny-metadata,^no-holes -R ^free-space-tree
  compare_image "legacy features (no skinny/extref/no-holes, v1 cache)" "$IMG"
  # A log tree: fsync under a long commit interval, copy the image while mounted.
  img=$tmp/log.img
  truncate -s 512M "$img"
  mkfs.btrfs -q -f "$img" >/dev/null
  kernel_mount "$img" "$tmp/mnt-log" commit=300
  sync
  head -c 100000 /dev/urandom >"$tmp/mnt-log/fsynced"
  python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)" "$tmp/mnt-log/fsynced"
  cp --sparse=always "$img" "$tmp/log-crash.img"
  kernel_umount "$tmp/mnt-log"
  if "$INSPECT" dump-super "$tmp/log-crash.img" | grep -qP '^log_root\t+[1-9]'; then
    compare_image "log tree (fsync, not replayed)" "$tmp/log-crash.img"
  else
    echo "note: the fsync image has no log root; log tree case not exercised"
  fi
else
  echo "note: no kernel btrfs / loop devices here; only unmounted mkfs.btrfs images are compared"
fi

# Fresh mkfs.btrfs images (no kernel needed).
for opts in "" "-m single" "-n 4096 --csum xxhash" "-M"; do
  img=$tmp/mkfs.img
  rm -f "$img"
  truncate -s 256M "$img"
  # shellcheck disable=SC2086
  mkfs.btrfs -q -f $opts "$img" >/dev/null
  compare_image "fresh mkfs.btrfs ${opts:-(defaults)}" "$img"
done

# Committed reference images.
shopt -s nullglob
refs=("$UBTRFS_SRC"/images/*/image.zst)
if ((${#refs[@]} == 0)); then
  echo "note: no reference images under $UBTRFS_SRC/images yet"
fi
for z in "${refs[@]}"; do
  command -v zstd >/dev/null || { echo "note: zstd missing, reference images skipped"; break; }
  name=$(basename "$(dirname "$z")")
  zstd -q -d -f "$z" -o "$tmp/ref.img"
  compare_image "reference image $name" "$tmp/ref.img"
done

# Images written by our own mkfs.
if [[ -x $MKFS_UBTRFS ]]; then
  for opts in "" "-m single" "-n 4096" "--csum crc32c"; do
    img=$tmp/ours.img
    rm -f "$img"
    truncate -s 256M "$img"
    # shellcheck disable=SC2086
    if "$MKFS_UBTRFS" -f -q $opts "$img" >/dev/null 2>"$tmp/mkfs.err"; then
      compare_image "mkfs.ubtrfs ${opts:-(defaults)}" "$img"
    else
      failed "mkfs.ubtrfs $opts failed: $(head -c 300 "$tmp/mkfs.err")"
    fi
  done
else
  echo "note: $MKFS_UBTRFS not built; images of our mkfs not compared"
fi

echo "compared $total_keys keys in $total_trees dumps"
finish
