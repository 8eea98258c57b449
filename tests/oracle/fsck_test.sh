#!/usr/bin/env bash
# fsck.ubtrfs against the oracles (FORMAT.md §6.3, §7.5, §9.3).
#
# 1. A base image: mkfs.btrfs, then a kernel mount writing an inline file with an xattr, a 200000-
#    byte file with a hard link in a subdirectory, a symlink, a sparse file, a zstd-compressed
#    file, a fallocated file, a NODATACOW (nodatasum) file and a fifo. It must be check-clean, and
#    fsck.ubtrfs must exit 0 on it and on every committed reference image (images/*/image.zst,
#    including 004-log-tree).
# 2. One test per corruption class: a copy of the base image is damaged with ubtrfs-corrupt; then
#    fsck.ubtrfs must exit 4 and name the problem (its class and where), and `btrfs check` (the
#    mode of FORMAT.md §6.3 that catches it) must also call the image bad.
# 3. A stale DUP copy 2: fsck.ubtrfs reports it, btrfs check passes (§7.5) — both asserted.
# 4. A flipped data byte is found only with --check-data-csum (both tools); random byte flips in
#    metadata never crash fsck.ubtrfs.
# 5. A non-btrfs file exits 8, usage errors exit 16, --json is valid JSON.
# 6. Rule a_snapshots_entry_of_a_deleted_nested_subvolume_is_not_an_error: the kernel snapshots a
#    tree holding a nested subvolume, then deletes that subvolume; the snapshot keeps its entry
#    (shown as an empty directory) with no ROOT_REF. btrfs check passes; fsck.ubtrfs must too.
# Every fsck.ubtrfs run must leave the image byte-identical (hash before and after).
#
# usage: UBTRFS_BIN=<build>/tools bash tests/oracle/fsck_test.sh
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_btrfs_check
require_kernel_btrfs
command -v zstd >/dev/null || skip_or_fail "zstd not installed"
command -v python3 >/dev/null || skip_or_fail "python3 not installed"

FSCK=$UBTRFS_BIN/fsck/fsck.ubtrfs
CORRUPT=$UBTRFS_BIN/corrupt/ubtrfs-corrupt
[[ -x $FSCK && -x $CORRUPT ]] || { echo "FAIL: $FSCK or $CORRUPT not built" >&2; exit 1; }

started=$SECONDS
tmp=$(make_tmpdir)
base=$tmp/base.img
mnt=$tmp/mnt

# ---- helpers -------------------------------------------------------------------------------------

# image_digest IMG: sha256 of the size and of every data segment with its offset (SEEK_DATA /
# SEEK_HOLE), so a sparse 256 MiB image costs what its data costs. A write anywhere, holes
# included, changes it (lib.sh sparse_hash; hash_file reads every byte: too slow for ~60 runs).
image_digest() {
  [[ -e $1 ]] || { echo absent; return; }
  sparse_hash "$1"
}

# run_fsck IMG [ARGS...]: runs fsck.ubtrfs, output in $out, status in $rc; fails the test if the
# image changed.
run_fsck() {
  local img=$1
  shift
  local before after
  before=$(image_digest "$img")
  rc=0
  out=$("$FSCK" "$@" "$img" 2>&1) || rc=$?
  after=$(image_digest "$img")
  if [[ $before != "$after" ]]; then
    failed "fsck.ubtrfs modified $img"
  fi
}

# check_output MODE IMG: runs btrfs check --mode=MODE, output in $cout, status in $crc.
check_output() {
  crc=0
  cout=$(btrfs check --mode="$1" "$2" 2>&1) || crc=$?
}

# expect_detected NAME IMG MODE PATTERN...: fsck.ubtrfs exits 4 with every PATTERN (grep -E) in
# its output, and btrfs check --mode=MODE exits non-zero.
expect_detected() {
  local name=$1 img=$2 mode=$3
  shift 3
  run_fsck "$img"
  if [[ $rc != 4 ]]; then
    failed "$name: fsck.ubtrfs exit $rc, expected 4"
    echo "$out" | head -20 >&2
    return
  fi
  local p
  for p in "$@"; do
    if ! grep -qE -- "$p" <<<"$out"; then
      failed "$name: fsck.ubtrfs output lacks /$p/"
      echo "$out" | head -20 >&2
      return
    fi
  done
  check_output "$mode" "$img"
  if [[ $crc == 0 ]]; then
    failed "$name: btrfs check --mode=$mode passed the damaged image"
    echo "$cout" | head -10 >&2
    return
  fi
  pass "$name: fsck.ubtrfs exit 4 [$(grep -m1 -E -- "$1" <<<"$out" | cut -c1-150)]; btrfs check ($mode) exit $crc"
}

# corrupt NAME ARGS...: copies the base image to $tmp/NAME.img (in $img) and damages it.
corrupt() {
  local name=$1
  shift
  img=$tmp/$name.img
  cp --sparse=always "$base" "$img"
  if ! "$CORRUPT" "$img" "$@" >"$tmp/corrupt.log" 2>&1; then
    failed "$name: ubtrfs-corrupt $* failed: $(cat "$tmp/corrupt.log")"
    return 1
  fi
}

# dump TREE-ID: dump-tree output of the base image (cached in a file: an awk that exits early
# must not turn into a SIGPIPE failure under pipefail).
dump() {
  [[ -f $tmp/dump.$1 ]] || btrfs inspect-internal dump-tree -t "$1" "$base" >"$tmp/dump.$1" 2>/dev/null
  cat "$tmp/dump.$1"
}

# ---- the base image ------------------------------------------------------------------------------

truncate -s 256M "$base"
mkfs.btrfs -q "$base"
kernel_mount "$base" "$mnt"
printf 'hello world' >"$mnt/small.txt"                      # index 2 in the root dir: inline extent
python3 -c "import os,sys; os.setxattr(sys.argv[1], 'user.test', b'value')" "$mnt/small.txt"
head -c 200000 /dev/urandom >"$mnt/data.bin"
mkdir "$mnt/sub"
ln "$mnt/data.bin" "$mnt/sub/hardlink.bin"
ln -s small.txt "$mnt/link"
truncate -s 1M "$mnt/sparse"
dd if=/dev/urandom of="$mnt/sparse" bs=4096 seek=100 count=2 conv=notrunc status=none
touch "$mnt/comp.txt"
btrfs property set "$mnt/comp.txt" compression zstd
for i in $(seq 1 3000); do echo "line $i of a compressible file"; done >"$mnt/comp.txt"
fallocate -l 64K "$mnt/falloc"
touch "$mnt/nocow"
chattr +C "$mnt/nocow"
head -c 16384 /dev/urandom >"$mnt/nocow"
mkfifo "$mnt/fifo"
ino_small=$(stat -c %i "$mnt/small.txt")
ino_data=$(stat -c %i "$mnt/data.bin")
ino_sparse=$(stat -c %i "$mnt/sparse")
sync
kernel_umount "$mnt"
if check_clean "$base"; then pass "base image is btrfs check clean (both modes)"; else failed "base image not clean"; fi

run_fsck "$base"
if [[ $rc == 0 ]]; then pass "fsck.ubtrfs exit 0 on the base image"; else failed "fsck.ubtrfs exit $rc on the base image:"; echo "$out" >&2; fi
run_fsck "$base" --check-data-csum
if [[ $rc == 0 ]]; then pass "fsck.ubtrfs --check-data-csum exit 0 on the base image"; else failed "--check-data-csum exit $rc:"; echo "$out" | head >&2; fi
run_fsck "$base" --json
if [[ $rc == 0 ]] && python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["exit_code"]==0 and len(d["passes"])==9' <<<"$out"; then
  pass "--json prints a valid report with 9 passes"
else
  failed "--json output invalid (exit $rc)"
fi

for dir in "$UBTRFS_SRC"/images/[0-9][0-9][0-9]-*/; do
  name=$(basename "$dir")
  zstd -q -d --long=27 "$dir/image.zst" -o "$tmp/$name.ref.img"
  run_fsck "$tmp/$name.ref.img"
  if [[ $rc == 0 ]]; then pass "fsck.ubtrfs exit 0 on reference image $name"; else failed "fsck.ubtrfs exit $rc on $name:"; echo "$out" | head -20 >&2; fi
  rm -f "$tmp/$name.ref.img"
done

# ---- what the corruptions need to know about the base image ------------------------------------

fs_leaf=$("$CORRUPT" "$base" --tree fs --key "256 INODE_ITEM 0" --locate | awk '{print $2}')
# keys KEYTYPE: "objectid offset" of every item of that type in the dump on stdin.
keys() { awk -v t="$1" '$1 == "item" && $5 == t { split($0, a, /[()]/); split(a[2], k, " "); print k[1], k[3] }'; }
# data.bin's extent: "extent data disk byte X nr Y" of its first EXTENT_DATA.
dump 2 >/dev/null; dump 4 >/dev/null; dump 5 >/dev/null; dump 7 >/dev/null; dump 10 >/dev/null
data_extent=$(dump 5 | awk -v key="($ino_data EXTENT_DATA 0)" 'index($0, key) { want = 1 } want && !done && /disk byte/ { print $5, $7; done = 1 }')
data_bytenr=${data_extent% *}
data_len=${data_extent#* }
# The data block group holding it, the last FST extent inside it, the csum item covering it, the
# dev extent of its chunk.
bg=$(dump 2 | keys BLOCK_GROUP_ITEM | awk -v b="$data_bytenr" '$1 <= b && b < $1 + $2 { print; exit }')
bg_start=${bg% *}
bg_len=${bg#* }
fse=$(dump 10 | keys FREE_SPACE_EXTENT | awk -v s="$bg_start" -v l="$bg_len" '$1 >= s && $1 < s + l { last = $0 } END { print last }')
fse_start=${fse% *}
fse_len=${fse#* }
csum_key=$(dump 7 | awk -v b="$data_bytenr" '$1 == "item" && $5 == "EXTENT_CSUM" { v = $6; sub(/\)/, "", v); if (v + 0 <= b + 0) last = v } END { print last }')
dev_ext=$(dump 4 | awk -v s="$bg_start" '$1 == "item" && $5 == "DEV_EXTENT" { split($0, a, /[()]/); split(a[2], k, " "); key = k[3] }
  !done && $3 == "chunk_offset" && $4 == s { print key; done = 1 }')
echo "base: fs leaf $fs_leaf, data.bin ino $ino_data extent [$data_bytenr $data_len], data bg [$bg_start $bg_len]," \
  "fst extent [$fse_start $fse_len], csum item $csum_key, dev extent $dev_ext"
for v in fs_leaf data_bytenr data_len bg_start bg_len fse_start fse_len csum_key dev_ext; do
  [[ -n ${!v} ]] || { failed "could not find $v in the base image"; finish; exit 1; }
done

# ---- one test per corruption class -------------------------------------------------------------

corrupt nlink --tree fs --key "$ino_data INODE_ITEM 0" --field nlink --value 3 &&
  expect_detected "wrong nlink" "$img" original "\[inode-nlink\].*inode $ino_data nlink 3"

corrupt noinode --tree fs --key "$ino_small INODE_ITEM 0" --delete-item &&
  expect_detected "missing INODE_ITEM" "$img" original "\[inode-missing\].*inode $ino_small"

corrupt isize --tree fs --key "256 INODE_ITEM 0" --field size --value +2 &&
  expect_detected "dir isize wrong" "$img" original "\[dir-isize\].*dir inode 256 size"

corrupt noindex --tree fs --key "256 DIR_INDEX 2" --delete-item &&
  expect_detected "DIR_INDEX missing" "$img" original "\[dir-entry\].*name 'small.txt'.*no (matching )?DIR_INDEX"

corrupt hash --tree fs --key "256 DIR_ITEM 474883676" --set-key "256 DIR_ITEM 474883677" &&
  expect_detected "DIR_ITEM name hash wrong" "$img" original "\[tree-checker\].*block=$fs_leaf.*name hash mismatch"

corrupt nbytes --tree fs --key "$ino_data INODE_ITEM 0" --field nbytes --value 4096 &&
  expect_detected "inode nbytes wrong" "$img" original "\[inode-nbytes\].*inode $ino_data nbytes 4096"

corrupt bgused --tree extent --key "$bg_start BLOCK_GROUP_ITEM $bg_len" --field used --value 0 &&
  expect_detected "BG used wrong" "$img" original "\[block-group\].*block group \[$bg_start $bg_len\] used 0"

corrupt superused --super bytes_used --value +4096 &&
  expect_detected "super bytes_used wrong" "$img" original "\[super-bytes-used\] super bytes used"

corrupt fstshort --tree free-space --key "$fse_start FREE_SPACE_EXTENT $fse_len" \
  --set-key "$fse_start FREE_SPACE_EXTENT $((fse_len - 4096))" &&
  expect_detected "FST extent short" "$img" original "\[free-space\].*block group $bg_start .*lacks free ranges"

corrupt fstcount --tree free-space --key "$bg_start FREE_SPACE_INFO $bg_len" --field extent_count --value +1 &&
  expect_detected "FST extent_count wrong" "$img" original "\[free-space\].*\($bg_start FREE_SPACE_INFO $bg_len\) recorded"

corrupt backref --tree extent --key "$fs_leaf METADATA_ITEM 0" --delete-item &&
  expect_detected "METADATA_ITEM missing" "$img" lowmem "\[extent-backref\].*tree block $fs_leaf .*backref lost"

corrupt datarefs --tree extent --key "$data_bytenr EXTENT_ITEM $data_len" --field refs --value 2 &&
  expect_detected "data EXTENT_ITEM refs wrong" "$img" original "\[extent-refs\].*ref mismatch on \[$data_bytenr $data_len\].*refs 2, found 1"

corrupt nocsum --tree csum --key "EXTENT_CSUM EXTENT_CSUM $csum_key" --delete-item &&
  expect_detected "csum item missing" "$img" original "\[csum-missing\].*inode $ino_data .*csum missing"

corrupt csum --block "$fs_leaf" --flip-byte 2000 --no-recsum &&
  expect_detected "tree block checksum stale" "$img" original "\[tree-block-csum\].*tree block $fs_leaf .*checksum verify failed"

corrupt keyorder --tree fs --key "256 DIR_INDEX 2" --swap-next &&
  expect_detected "keys out of order" "$img" original "\[tree-checker\].*block=$fs_leaf .*bad key order"

corrupt bytenr --block "$fs_leaf" --header-field bytenr --value +16384 &&
  expect_detected "header bytenr wrong" "$img" original "\[tree-block-header\].*tree block $fs_leaf .*bytenr mismatch"

corrupt transid --block "$fs_leaf" --header-field generation --value -1 &&
  expect_detected "header generation != parent pointer (transid)" "$img" original "\[transid\].*parent transid verify failed on $fs_leaf"

corrupt devused --tree chunk --key "1 DEV_ITEM 1" --field bytes_used --value +1048576 &&
  expect_detected "DEV_ITEM bytes_used wrong" "$img" original "\[dev-item\].*\(DEV_ITEMS DEV_ITEM 1\) bytes_used"

corrupt devext --tree dev --key "1 DEV_EXTENT $dev_ext" --delete-item &&
  expect_detected "missing DEV_EXTENT" "$img" original "\[dev-extent\].*has no dev extent \(1 DEV_EXTENT $dev_ext\)"

corrupt noholes --super incompat_flags --value=-512 &&
  expect_detected "file extent gap without NO_HOLES" "$img" original "\[file-extent\].*inode $ino_sparse .*file extent discount"

# super_mirror_one_generation_off_is_a_warning: a power cut between the superblock copies' writes
# leaves copy 2 a generation behind; the trees of both are intact and the next commit rewrites it:
# fsck.ubtrfs warns and exits 0. A copy further off is damage (exit 4).
if corrupt supergen1 --super generation --value=-1 --mirror 2; then
  run_fsck "$img"
  if [[ $rc == 0 ]] && grep -qE "\[super-mirror\].*differs from copy 0 .*interrupted commit" <<<"$out"; then
    pass "superblock copy 2 one generation behind: a warning, exit 0"
  else
    failed "superblock copy 2 one generation behind: fsck.ubtrfs exit $rc"
    echo "$out" | head >&2
  fi
fi
if corrupt supergen3 --super generation --value=-3 --mirror 2; then
  run_fsck "$img"
  if [[ $rc == 4 ]] && grep -qE "\[super-mirror\].*differs from copy 0" <<<"$out"; then
    pass "superblock copy 2 three generations behind: exit 4 (super-mirror)"
  else
    failed "superblock copy 2 three generations behind: fsck.ubtrfs exit $rc"
    echo "$out" | head >&2
  fi
fi

# A stale second DUP copy: btrfs check never reads copy 2 (FORMAT.md §7.5), fsck.ubtrfs must.
if corrupt dup2 --tree fs --key "256 INODE_ITEM 0" --field uid --value 1234 --mirror 2; then
  run_fsck "$img"
  check_output original "$img"
  if [[ $rc == 4 ]] && grep -qE "\[dup-mirror\].*tree block $fs_leaf .*copy 2 differs" <<<"$out" && [[ $crc == 0 ]]; then
    pass "stale DUP copy 2: fsck.ubtrfs exit 4 (dup-mirror), btrfs check exit 0 as documented"
  else
    failed "stale DUP copy 2: fsck.ubtrfs exit $rc, btrfs check exit $crc"
    echo "$out" | head >&2
  fi
fi

# A flipped data byte: only visible to --check-data-csum, in both tools.
if corrupt datacsum --data "$data_bytenr" --flip-byte 5000; then
  run_fsck "$img"
  rc_plain=$rc
  run_fsck "$img" --check-data-csum
  check_output original "$img"
  crc_plain=$crc
  crc=0
  cout=$(btrfs check --check-data-csum "$img" 2>&1) || crc=$?
  if [[ $rc_plain == 0 && $rc == 4 && $crc_plain == 0 && $crc != 0 ]] &&
    grep -qE "\[data-csum\].*data csum mismatch at logical $((data_bytenr + 4096)) mirror 1" <<<"$out"; then
    pass "data byte flipped: found only with --check-data-csum (fsck.ubtrfs exit 0 then 4; btrfs check 0 then $crc)"
  else
    failed "data byte flipped: fsck.ubtrfs exit $rc_plain/$rc, btrfs check exit $crc_plain/$crc"
    echo "$out" | head >&2
  fi
fi

# Robustness: random bytes of the FS-tree leaf and of the extent-tree leaf rewritten with a valid
# checksum (so the tree checker and every pass see them). fsck.ubtrfs must answer 0 or 4, never crash.
extent_leaf=$("$CORRUPT" "$base" --tree extent --key "$data_bytenr EXTENT_ITEM $data_len" --locate | awk '{print $2}')
crashes=0
for i in $(seq 1 12); do
  if (( i % 2 )); then blk=$fs_leaf; else blk=$extent_leaf; fi
  off=$(( (RANDOM * 32768 + RANDOM) % 16352 + 32 ))
  corrupt fuzz --block "$blk" --flip-byte "$off" || continue
  run_fsck "$img"
  if [[ $rc != 0 && $rc != 4 ]]; then
    crashes=$((crashes + 1))
    echo "fuzz: flipping byte $off of block $blk gave exit $rc" >&2
    echo "$out" | tail -5 >&2
  fi
done
if [[ $crashes == 0 ]]; then pass "12 random single-byte corruptions: exit 0 or 4 every time"; else failed "$crashes fuzz runs crashed"; fi

# ---- operational and usage errors ----------------------------------------------------------------

head -c 16M /dev/zero >"$tmp/zero.img"
run_fsck "$tmp/zero.img"
if [[ $rc == 8 ]]; then pass "non-btrfs file: exit 8"; else failed "non-btrfs file: exit $rc"; fi
run_fsck "$tmp/does-not-exist.img"
if [[ $rc == 8 ]]; then pass "missing file: exit 8"; else failed "missing file: exit $rc"; fi
rc=0; "$FSCK" >/dev/null 2>&1 || rc=$?
if [[ $rc == 16 ]]; then pass "no device: exit 16"; else failed "no device: exit $rc"; fi
rc=0; "$FSCK" --no-such-option "$base" >/dev/null 2>&1 || rc=$?
if [[ $rc == 16 ]]; then pass "unknown option: exit 16"; else failed "unknown option: exit $rc"; fi
run_fsck "$base" -y
if [[ $rc == 16 ]]; then pass "-y (repair): refused with exit 16"; else failed "-y: exit $rc"; fi
run_fsck "$base" -n
if [[ $rc == 0 ]]; then pass "-n: exit 0"; else failed "-n: exit $rc"; fi

# ---- a snapshot's entry of a deleted nested subvolume ------------------------------------------

nest=$tmp/nest.img
truncate -s 256M "$nest"
mkfs.btrfs -q "$nest"
kernel_mount "$nest" "$mnt"
mkdir "$mnt/d"
btrfs -q subvolume create "$mnt/d/sv"
btrfs -q subvolume snapshot "$mnt" "$mnt/snap"
btrfs -q subvolume delete "$mnt/d/sv"
btrfs -q subvolume sync "$mnt"
kernel_umount "$mnt"
rc=0; btrfs check "$nest" >"$tmp/nest.check" 2>&1 || rc=$?
if [[ $rc == 0 ]]; then pass "kernel image, snapshot keeping the entry of a deleted nested subvolume: btrfs check clean"
else failed "btrfs check on the nested-subvolume image: exit $rc: $(tail -3 "$tmp/nest.check")"; fi
run_fsck "$nest"
if [[ $rc == 0 ]]; then pass "the same image: fsck.ubtrfs exit 0 (the entry is not a root-ref error)"
else failed "the same image: fsck.ubtrfs exit $rc: $(echo "$out" | grep -m3 ERROR)"; fi

echo "fsck_test: $((SECONDS - started)) s"
finish
