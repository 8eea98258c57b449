#!/usr/bin/env bash
# mkfs.ubtrfs refuses what mkfs.btrfs refuses, and a refusal never touches the target:
#   - an image holding a filesystem (ours, mkfs.btrfs's, ext4's) without -f: exit 1, image unchanged
#     (sha256 before/after); with -f it is overwritten and blkid then sees the new btrfs;
#   - a filesystem below the layout minimum: exit 1, the message names the minimum, nothing created;
#   - bad option values: exit 1 with exactly one "mkfs.ubtrfs: error: ..." line, image unchanged;
#   - a mounted block device, even with -f;
#   --help and --version work (exit 0), -q prints nothing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_btrfs_check
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
[[ -x $MKFS ]] || { echo "FAIL: $MKFS is not built" >&2; exit 1; }
tmp=$(make_tmpdir)

# expect_refusal NAME IMG ARGS...: exit 1, one error line on stderr, nothing on stdout, IMG unchanged
# (or still absent).
expect_refusal() {
  local name=$1 img=$2 before after rc=0 out err
  shift 2
  before=absent
  [[ -e $img ]] && before=$(hash_file "$img")
  out=$("$MKFS" "$@" 2>"$tmp/err") || rc=$?
  err=$(cat "$tmp/err")
  after=absent
  [[ -e $img ]] && after=$(hash_file "$img")
  if [[ $rc != 1 ]]; then failed "$name: exit $rc, expected 1 (stderr: $err)"; return; fi
  if [[ $(wc -l <"$tmp/err") != 1 || $err != "mkfs.ubtrfs: error: "* ]]; then
    failed "$name: expected one 'mkfs.ubtrfs: error:' line, got: $err"
    return
  fi
  if [[ -n $out ]]; then failed "$name: unexpected stdout: $out"; return; fi
  if [[ $before != "$after" ]]; then failed "$name: $img changed"; return; fi
  pass "$name ($err)"
  LAST_ERR=$err
}

# --help / --version / -q
if out=$("$MKFS" --help) && grep -q -- '--nodesize' <<<"$out" && grep -q -- '--byte-count' <<<"$out"; then
  pass "--help"
else
  failed "--help"
fi
if out=$("$MKFS" --version) && grep -q 'mkfs.ubtrfs' <<<"$out"; then pass "--version"; else failed "--version"; fi

img=$tmp/fs.img
if out=$("$MKFS" -q -b 256M "$img") && [[ -z $out ]] && btrfs check "$img" >/dev/null 2>&1; then
  pass "-q creates a checkable image silently"
else
  failed "-q creates a checkable image silently"
fi

# Existing filesystems.
expect_refusal "existing ubtrfs filesystem without -f" "$img" -b 256M "$img"
[[ ${LAST_ERR:-} == *"existing filesystem (btrfs)"* ]] || failed "message should name btrfs: ${LAST_ERR:-}"
expect_refusal "existing filesystem, other options, without -f" "$img" -n 4096 -m single "$img"
if command -v mkfs.btrfs >/dev/null; then
  ref=$tmp/ref.img
  truncate -s 256M "$ref"
  mkfs.btrfs -q "$ref" >/dev/null 2>&1
  expect_refusal "existing mkfs.btrfs filesystem without -f" "$ref" "$ref"
fi
if command -v mkfs.ext4 >/dev/null; then
  ext=$tmp/ext.img
  truncate -s 256M "$ext"
  mkfs.ext4 -q -F "$ext" >/dev/null 2>&1
  expect_refusal "existing ext4 filesystem without -f" "$ext" "$ext"
  [[ ${LAST_ERR:-} == *"(ext4)"* ]] || failed "message should name ext4: ${LAST_ERR:-}"
  # -f: ext4 magic wiped, btrfs written, no other signature left.
  if "$MKFS" -q -f "$ext" && [[ $(blkid -p -o value -s TYPE "$ext") == btrfs ]] &&
    [[ $(wipefs -n "$ext" 2>/dev/null | grep -vc -e '^DEVICE' -e btrfs) == 0 ]] && check_clean "$ext"; then
    pass "-f replaces ext4 and leaves no foreign signature"
  else
    failed "-f replaces ext4 and leaves no foreign signature"
  fi
fi
old_uuid=$(blkid -p -o value -s UUID "$img")
if "$MKFS" -q -f "$img" && new_uuid=$(blkid -p -o value -s UUID "$img") && [[ $new_uuid != "$old_uuid" ]] &&
  check_clean "$img"; then
  pass "-f overwrites an existing btrfs"
else
  failed "-f overwrites an existing btrfs"
fi

# Too small: the message names the minimum (89 MiB for dup, 49 MiB for single, with 16 KiB nodes;
# 16 MiB with mixed block groups, which a smaller device gets when the nodesize allows), nothing is
# created.
expect_refusal "too small (dup, 16 KiB nodes) is refused and not created" "$tmp/small.img" -n 16k -b 64M "$tmp/small.img"
[[ ${LAST_ERR:-} == *"too small"*"93323264"*"--mixed"* ]] || failed "dup minimum or the mixed hint not in message: ${LAST_ERR:-}"
truncate -s 40M "$tmp/small2.img"
expect_refusal "too small (single, 16 KiB nodes) existing image unchanged" "$tmp/small2.img" -m single -n 16k "$tmp/small2.img"
[[ ${LAST_ERR:-} == *"51380224"* ]] || failed "single minimum not in message: ${LAST_ERR:-}"
expect_refusal "too small even for mixed block groups" "$tmp/tiny.img" -b 12M "$tmp/tiny.img"
[[ ${LAST_ERR:-} == *"too small"*"16777216"* ]] || failed "the mixed minimum not in message: ${LAST_ERR:-}"
if out=$("$MKFS" -b 64M "$tmp/small.img" 2>&1) && grep -q 'using mixed block groups' <<<"$out" && check_clean "$tmp/small.img"; then
  pass "64 MiB without a nodesize gets mixed block groups, with a note"
else
  failed "64 MiB without a nodesize: $out"
fi
truncate -s 89M "$tmp/exact.img"
if "$MKFS" -q "$tmp/exact.img" && check_clean "$tmp/exact.img"; then pass "exact minimum (89 MiB dup) works"; else failed "exact minimum works"; fi

# Bad option values, on an image that holds a filesystem (so also -f must not let them through).
expect_refusal "nodesize not a power of two" "$img" -f -n 12288 "$img"
expect_refusal "nodesize too large" "$img" -f -n 128K "$img"
expect_refusal "nodesize below sectorsize" "$img" -f -n 2048 "$img"
expect_refusal "sectorsize 8192" "$img" -f -s 8192 "$img"
[[ ${LAST_ERR:-} == *"only 4096"* ]] || failed "sectorsize message: ${LAST_ERR:-}"
expect_refusal "unknown checksum" "$img" -f --csum md5 "$img"
expect_refusal "unsupported checksum sha256" "$img" -f --checksum sha256 "$img"
expect_refusal "metadata profile raid1" "$img" -f -m raid1 "$img"
expect_refusal "bad byte count" "$img" -f -b 12Q "$img"
expect_refusal "bad uuid" "$img" -f -U not-a-uuid "$img"
expect_refusal "label too long" "$img" -f -L "$(printf 'x%.0s' {1..300})" "$img"
expect_refusal "unknown option" "$img" --bogus "$img"
expect_refusal "missing device" "$img"
expect_refusal "nonexistent image without -b" "$tmp/none.img" "$tmp/none.img"
expect_refusal "character device" "$img" -f /dev/null

# A mounted block device is refused even with -f.
if [[ $(id -u) == 0 ]] && grep -qw btrfs /proc/filesystems && losetup -f >/dev/null 2>&1; then
  "$MKFS" -q -f "$img"
  kernel_mount "$img" "$tmp/mnt"
  loopdev=$(findmnt -n -o SOURCE "$tmp/mnt")
  expect_refusal "mounted block device with -f" "$img" -f "$loopdev"
  expect_refusal "image file mounted through a loop device, with -f" "$img" -f "$img"
  kernel_umount "$tmp/mnt"
  truncate -s 128M "$tmp/loop.img"
  loopdev=$(losetup -f --show "$tmp/loop.img")
  expect_refusal "byte count larger than a block device" "$tmp/loop.img" -f -b 1G "$loopdev"
  [[ ${LAST_ERR:-} == *"larger than the device"* ]] || failed "block device size message: ${LAST_ERR:-}"
  if "$MKFS" -q "$loopdev" && check_clean "$loopdev"; then pass "mkfs on a loop block device"; else failed "mkfs on a loop block device"; fi
else
  echo "SKIP: mounted-device refusal needs root, kernel btrfs and a loop device" >&2
fi

finish
