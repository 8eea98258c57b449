#!/usr/bin/env bash
# Builds the kernel-populated reference images images/NNN-description/{image.zst,manifest.txt}.
#
# Each image is made from scratch: a sparse file, mkfs.btrfs with a fixed fsid, a loop mount by the
# kernel, contents from seeded generators (no /dev/urandom), every mtime fixed with touch, unmount,
# `btrfs check` in both modes, then a read-only mount to write the manifest (images/manifest.sh)
# and `zstd -19 --long=27` of the raw image. See images/README.md for what each image is for.
#
# usage: images/make-reference-images.sh [NNN ...]     (default: every image)
# needs: root, kernel btrfs + loop devices, btrfs-progs (6.2 was used), zstd, openssl, GNU coreutils,
#        and setfattr or python3 to set xattrs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=manifest.sh disable=SC1091
source "$here/manifest.sh"

die() { echo "make-reference-images: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (loop mounts)"
for c in mkfs.btrfs btrfs zstd openssl losetup mount truncate fallocate mknod mkfifo od; do
  command -v "$c" >/dev/null || die "missing command: $c"
done

# Every mtime (and atime) is set to this instant at the end of population, except where a case
# sets its own. Nanoseconds are non-zero on purpose.
readonly kStamp='2024-01-02 03:04:05.123456789 UTC'

work=$(mktemp -d "${TMPDIR:-/tmp}/ubtrfs-images.XXXXXX")
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  local rc=$?
  if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || umount -l "$mnt" || true; fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# Deterministic content

# gen_random SEED SIZE: SIZE pseudo-random (incompressible) bytes, AES-128-CTR keystream of a key
# derived from SEED. Same SEED, same bytes, on any machine with OpenSSL.
gen_random() {
  local key
  key=$(printf '%s' "$1" | sha256sum | cut -c1-32)
  head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$key" -iv 00000000000000000000000000000000
}

# gen_text SEED SIZE: SIZE bytes of compressible text; every line carries SEED and its own number
# (so a read at a wrong offset changes the hash) and words chosen by a small LCG.
gen_text() {
  awk -v seed="$1" -v size="$2" 'BEGIN {
    split("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu", w, " ")
    x = 0; for (i = 1; i <= length(seed); i++) x = (x * 31 + index("0123456789abcdefghijklmnopqrstuvwxyz-_.", substr(seed, i, 1))) % 2147483648
    n = 0; line = 0
    while (n < size) {
      s = sprintf("%s %07d", seed, line++)
      for (k = 0; k < 6; k++) { x = (x * 1103515245 + 12345) % 2147483648; s = s " " w[1 + int(x / 65536) % 26] }
      s = s "\n"
      if (n + length(s) > size) s = substr(s, 1, size - n)
      printf "%s", s; n += length(s)
    }
  }'
}

# write_at FILE OFFSET: copies stdin into FILE at byte OFFSET (4 KiB multiple), keeping the rest.
write_at() {
  dd of="$1" bs=4096 seek=$(($2 / 4096)) conv=notrunc iflag=fullblock status=none
}

tohex() { od -An -v -tx1 | tr -d ' \n'; }

# set_xattr PATH NAME HEXVALUE (symlinks not followed)
set_xattr() {
  if command -v setfattr >/dev/null 2>&1; then
    if [[ -z $3 ]]; then setfattr -h -n "$2" -v '""' "$1"; else setfattr -h -n "$2" -v "0x$3" "$1"; fi
  else
    python3 -c 'import os, sys; os.setxattr(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), follow_symlinks=False)' "$1" "$2" "$3"
  fi
}

# ---------------------------------------------------------------------------------------------
# Image plumbing

# check_both IMG: btrfs check (original with --check-data-csum, and lowmem) must be clean.
check_both() {
  local img=$1 out mode
  for mode in original lowmem; do
    local extra=()
    [[ $mode == original ]] && extra=(--check-data-csum)
    out=$(btrfs check --mode="$mode" "${extra[@]}" "$img" 2>&1) || { echo "$out" >&2; die "btrfs check --mode=$mode failed on $img"; }
    if grep -qiE '^ERROR|errors found|checksum verify failed|wanted .* found' <<<"$out"; then
      echo "$out" >&2
      die "btrfs check --mode=$mode reported problems on $img"
    fi
  done
}

# fix_times DIR: every inode under DIR (DIR included) gets kStamp as atime and mtime.
fix_times() { find "$1" -exec touch -h -d "$kStamp" {} +; }

# new_image IMG SIZE UUID MKFS-OPTS...: a fresh sparse image formatted by mkfs.btrfs.
new_image() {
  local img=$1 size=$2 uuid=$3
  shift 3
  rm -f "$img"
  truncate -s "$size" "$img"
  mkfs.btrfs -q -f -U "$uuid" "$@" "$img" >/dev/null
}

# finish_image IMG DIR [MANIFEST-MOUNT-OPTS]: check, manifest from a read-only mount, compress.
finish_image() {
  local img=$1 dir=$2 opts=${3:-ro}
  check_both "$img"
  mount -t btrfs -o "loop,$opts" "$img" "$mnt"
  manifest_of "$mnt" >"$dir/manifest.txt"
  umount "$mnt"
  zstd -q -f -19 --long=27 -T1 "$img" -o "$dir/image.zst"
  echo "$(basename "$dir"): $(du -k --apparent-size "$img" | cut -f1) KiB raw, $(du -k "$img" | cut -f1) KiB allocated, $(du -k "$dir/image.zst" | cut -f1) KiB image.zst, $(wc -l <"$dir/manifest.txt") manifest lines"
  # Manifests over 1 MiB are committed compressed (the test decompresses manifest.txt.zst).
  if (($(stat -c %s "$dir/manifest.txt") > 1048576)); then zstd -q -19 -f --rm "$dir/manifest.txt"; fi
}

# build NAME SIZE UUID "MKFS-OPTS" "MOUNT-OPTS" POPULATE-FUNCTION: the common recipe.
build() {
  local name=$1 size=$2 uuid=$3 mkfs_opts=$4 mount_opts=$5 populate=$6
  local dir=$here/$name img=$work/$name.img
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  new_image "$img" "$size" "$uuid" $mkfs_opts
  mount -t btrfs -o "loop${mount_opts:+,$mount_opts}" "$img" "$mnt"
  (cd "$mnt"; "$populate")
  fix_times "$mnt"
  [[ $(type -t "${populate}_after_times") == function ]] && (cd "$mnt"; "${populate}_after_times")
  sync -f "$mnt"
  umount "$mnt"
  finish_image "$img" "$dir"
  rm -f "$img"
}

# ---------------------------------------------------------------------------------------------
# 001-basic-crc32c-dup: default mkfs (crc32c, metadata DUP, 16 KiB nodes), no compression; every
# kind of inode and the extent shapes a reader meets first.
populate_001() {
  : >empty
  printf x >one-byte
  gen_text 001-inline 2048 >inline-2048
  gen_text 001-2049 2049 >size-2049
  gen_random 001-4096 4096 >size-4096
  gen_text 001-1m 1048577 >size-1MiB-plus-1

  mkdir -p dir/a/b/c/d/e dir/empty-dir
  gen_text 001-deep 3000 >dir/a/b/c/d/e/deep-file
  gen_text 001-mid 10000 >dir/a/b/mid-file
  printf 'name of 255 bytes\n' >"dir/$(printf 'n%.0s' {1..255})"
  gen_text 001-utf8 100 >"dir/ünïcödé-名前-файл"

  # Hard links: several names in one directory and names in other directories (nlink 5).
  gen_text 001-hardlink 5000 >hardlink-target
  mkdir links-1 links-2
  ln hardlink-target links-1/link-a
  ln hardlink-target links-1/link-b
  ln hardlink-target links-1/link-c
  ln hardlink-target links-2/link-across
  # Two inodes that are both linked twice inside the same directory.
  printf 'pair\n' >links-2/pair-1
  ln links-2/pair-1 links-2/pair-2

  # Symlinks: short, to a directory, dangling with a 3000-byte target (inline in the FS tree).
  ln -s inline-2048 symlink-short
  ln -s dir/a/b/c symlink-to-dir
  local long="" i
  for i in $(seq 1 30); do long+="$(printf 'segment-%02d-' "$i")$(printf 'L%.0s' {1..88})/"; done
  long=${long:0:3000}
  ln -s "$long" symlink-3000

  # Xattrs (user.*): small, empty, binary, near the 16 KiB-leaf limit, many on one inode, on a dir.
  gen_text 001-xattr 100 >xattr-file
  set_xattr xattr-file user.small "$(printf hello | tohex)"
  set_xattr xattr-file user.empty ""
  set_xattr xattr-file user.binary "$(gen_random 001-xattr-bin 64 | tohex)"
  set_xattr xattr-file user.big "$(gen_text 001-xattr-big 15000 | tohex)"
  : >many-xattrs
  for i in $(seq -w 1 40); do set_xattr many-xattrs "user.attr-$i" "$(printf 'value %s' "$i" | tohex)"; done
  set_xattr dir user.on-a-dir "$(printf 'directory xattr' | tohex)"

  # Special inodes; rdev is stored as (major << 20) | minor, so use the largest major and minor.
  mkfifo fifo
  mknod char-dev c 1 3
  mknod block-dev b 7 200
  mknod char-dev-max c 4095 1048575

  # Owners and modes.
  printf 'setuid\n' >mode-4755 && chmod 4755 mode-4755
  printf 'setgid\n' >mode-2711 && chmod 2711 mode-2711
  printf 'none\n' >mode-000 && chmod 000 mode-000
  mkdir sticky-dir && chmod 1777 sticky-dir
  printf 'owned\n' >owned-1000 && chown 1000:1000 owned-1000
  printf 'nobody\n' >owned-65534 && chown 65534:65533 owned-65534
  ln -s owned-1000 symlink-owned && chown -h 123:456 symlink-owned

  # Sparse files (NO_HOLES: no hole extents are written): data at 0 and at 1 MiB, size 3 MiB;
  # and a file whose first MiB is a hole.
  gen_random 001-sparse-0 4096 >sparse
  gen_random 001-sparse-1m 8192 | write_at sparse $((1 << 20))
  truncate -s 3M sparse
  truncate -s 1M hole-first
  gen_text 001-hole-first 4096 | write_at hole-first $(((1 << 20) - 4096))

  # Preallocated extents: whole file, beyond EOF (keep size), and partly written.
  fallocate -l 1M prealloc-full
  gen_text 001-prealloc-eof 4096 >prealloc-beyond-eof
  fallocate -n -o 4096 -l 61440 prealloc-beyond-eof
  fallocate -l 256K prealloc-partial
  sync -f .
  gen_text 001-prealloc-partial 8192 | write_at prealloc-partial 65536

  # Bookend extents: a 256 KiB extent committed, then its middle overwritten.
  gen_text 001-bookend 262144 >bookend
  sync -f .
  gen_text 001-bookend-middle 8192 | write_at bookend 98304
}
# Times that differ from kStamp: before the epoch and far in the future.
populate_001_after_times() {
  touch -d '1969-12-31 23:59:58.5 UTC' one-byte
  touch -d '2100-06-07 08:09:10.000000001 UTC' size-2049
}

# ---------------------------------------------------------------------------------------------
# 002-compressed-xxhash: --csum xxhash; files written under compress=zlib, lzo, zstd (remounting
# between algorithms), compress-force with incompressible chunks, and the btrfs.compression property.
populate_002_one() {
  local algo=$1
  mkdir "$algo"
  gen_text "002-$algo-inline" 3000 >"$algo/inline-3000"     # compressed inline extent
  gen_text "002-$algo-big" 307200 >"$algo/big-300k"         # several 128 KiB compressed extents
  gen_random "002-$algo-random" 65536 >"$algo/random-64k"   # incompressible: stored plain
  gen_text "002-$algo-small" 6000 >"$algo/small-6000"       # one compressed extent, 2 sectors
  gen_text "002-$algo-overwrite" 262144 >"$algo/overwritten"
  sync -f .
  # Middle of a compressed extent replaced: the rest is read through offsets into it.
  gen_text "002-$algo-overwrite-mid" 4096 | write_at "$algo/overwritten" 102400
  sync -f .
}
populate_002() {
  populate_002_one zlib
  mount -o remount,compress=lzo "$mnt"
  populate_002_one lzo
  mount -o remount,compress=zstd "$mnt"
  populate_002_one zstd
  # compress-force: alternating compressible and random 128 KiB chunks.
  mount -o remount,compress-force=zstd "$mnt"
  mkdir forced
  local i
  for i in 0 1 2 3; do
    if ((i % 2 == 0)); then gen_text "002-mixed-$i" 131072; else gen_random "002-mixed-$i" 131072; fi
  done >forced/mixed-512k
  sync -f .
  # Property on a directory, inherited by a new file, on a mount without compress=.
  mount -o remount,compress=no "$mnt"
  mkdir prop-zstd
  btrfs property set prop-zstd compression zstd
  gen_text 002-prop 200000 >prop-zstd/inherited
  printf 'plain\n' >uncompressed
  sync -f .
}

# ---------------------------------------------------------------------------------------------
# 003-single-metadata-4k-nodes: -m single -n 4096 so every tree has several levels: 3000 files,
# 1000 of them in ten small directories and 2000 in one directory; sizes 0..4095 (inline and not).
populate_003() {
  local base i d len off
  base=$(gen_text 003-base 65536)
  for d in $(seq -w 0 9); do
    mkdir "small-$d"
    for i in $(seq -w 0 99); do
      len=$(((10#$d * 100 + 10#$i) * 37 % 4096))
      off=$(((10#$d * 100 + 10#$i) * 13 % 60000))
      printf '%s' "${base:off:len}" >"small-$d/file-$i"
    done
  done
  mkdir big-2000
  for i in $(seq -w 0 1999); do
    len=$((10#$i * 53 % 3000))
    off=$((10#$i * 7 % 60000))
    printf '%s' "${base:off:len}" >"big-2000/entry-$i-$(printf '%*s' $((10#$i % 40)) '' | tr ' ' x)"
  done
  set_xattr big-2000 user.dir "$(printf 'two thousand' | tohex)"
}

# ---------------------------------------------------------------------------------------------
# 005-big-directory: one directory of 20,000 entries with names of 1..255 bytes (empty files,
# some subdirectories and symlinks), for the daemon's readdir/lookup at scale.
populate_005() {
  local chars=0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
  local filler i n name len a b
  filler=$(printf '%s' {a..z} {a..z} {a..z} {a..z} {a..z} {a..z} {a..z} {a..z} {a..z} {a..z})
  mkdir big
  cd big
  n=0
  for ((i = 0; i < 62; i++)); do : >"${chars:i:1}"; n=$((n + 1)); done           # 1-byte names
  for ((a = 0; a < 62; a += 3)); do
    for ((b = 0; b < 62; b += 4)); do : >"${chars:a:1}${chars:b:1}"; n=$((n + 1)); done  # 2-byte names
  done
  for ((i = n; i < 20000; i++)); do
    name="e$i-"
    # Mostly short names, every 25th long, every 100th of exactly 255 bytes.
    if ((i % 100 == 0)); then len=255; elif ((i % 25 == 0)); then len=$((100 + i % 156)); else len=$((${#name} + i % 24)); fi
    name+=${filler:i % 26:len - ${#name}}
    if ((i % 500 == 0)); then mkdir "$name"; elif ((i % 333 == 0)); then ln -s "target-$i" "$name"; else : >"$name"; fi
  done
  cd ..
  printf 'beside the big directory\n' >small-file
}

# ---------------------------------------------------------------------------------------------
# 004-log-tree: FORMAT.md 7.6. A committed state, then fsyncs under commit=300 and a copy of the
# image taken while mounted: super log_root != 0. The raw image is the copy (a "crash" image).
build_004() {
  local name=004-log-tree dir=$here/004-log-tree img=$work/004.img crash=$work/004-crash.img
  mkdir -p "$dir"
  new_image "$img" 256M c0ffee00-0b7f-4000-8000-000000000004
  mount -t btrfs -o loop,commit=300 "$img" "$mnt"
  (
    cd "$mnt"
    gen_text 004-committed 20000 >committed
    gen_text 004-appended 5000 >appended
    mkdir subdir
    gen_text 004-sub 1000 >subdir/committed-in-subdir
    printf 'to be renamed\n' >rename-me
  )
  fix_times "$mnt"
  sync -f "$mnt"   # transaction commit: everything above is in the committed trees
  (
    cd "$mnt"
    gen_text 004-new 70000 >fsynced-new
    gen_text 004-new-inline 500 >subdir/fsynced-new-inline
    gen_text 004-appended-more 3000 >>appended
    mv rename-me renamed
    touch -d "$kStamp" fsynced-new subdir/fsynced-new-inline appended renamed . subdir
    # sync(1) with file operands fsyncs each file (no transaction commit, unlike sync -f).
    sync fsynced-new subdir/fsynced-new-inline appended renamed
  )
  cp --sparse=always "$img" "$crash"
  umount "$mnt"
  rm -f "$img"
  local log_root
  log_root=$(btrfs inspect-internal dump-super "$crash" | awk '$1 == "log_root" { print $2 }')
  [[ -n $log_root && $log_root != 0 ]] || die "004: the copy has log_root '$log_root', expected a log tree"
  check_both "$crash"
  # manifest-replayed.txt: what the kernel shows after replaying the log. Replay writes to the
  # image (even on a ro mount, which then also needs a writable loop device): use a copy, mounted
  # rw; after replay log_root is 0 and the copy must be check-clean.
  cp --sparse=always "$crash" "$work/004-replay.img"
  mount -t btrfs -o loop "$work/004-replay.img" "$mnt"
  manifest_of "$mnt" >"$dir/manifest-replayed.txt"
  umount "$mnt"
  check_both "$work/004-replay.img"
  rm -f "$work/004-replay.img"
  # manifest.txt: the committed state, as read ignoring the log (rescue=nologreplay).
  finish_image "$crash" "$dir" ro,rescue=nologreplay
  echo "$name: log_root $log_root"
  rm -f "$crash"
}

build_001() { build 001-basic-crc32c-dup 128M c0ffee00-0b7f-4000-8000-000000000001 "" "" populate_001; }
build_002() { build 002-compressed-xxhash 128M c0ffee00-0b7f-4000-8000-000000000002 "--csum xxhash" compress=zlib populate_002; }
build_003() { build 003-single-metadata-4k-nodes 128M c0ffee00-0b7f-4000-8000-000000000003 "-m single -n 4096" "" populate_003; }
build_005() { build 005-big-directory 256M c0ffee00-0b7f-4000-8000-000000000005 "" "" populate_005; }

cases=("$@")
[[ ${#cases[@]} -gt 0 ]] || cases=(001 002 003 004 005)
for c in "${cases[@]}"; do
  type -t "build_$c" >/dev/null || die "unknown image case: $c"
  "build_$c"
done
