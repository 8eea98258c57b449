#!/usr/bin/env bash
# The committed reference images (images/NNN-*/) against the oracles: each image.zst must be
# `btrfs check`-clean in both modes, and what the kernel reads from a read-only mount must equal
# manifest.txt (as written by images/manifest.sh). An image with a log tree (super log_root != 0)
# is mounted with rescue=nologreplay for manifest.txt; its manifest-replayed.txt is compared with a
# rw mount of a copy (the kernel replays the log), which must then be check-clean with log_root 0.
# A read-only mount must leave the image file byte-identical.
#
# usage: bash tests/oracle/reference_images_test.sh [IMAGE-DIR ...]   (default: images/[0-9]*-*/)
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../images/manifest.sh disable=SC1091
source "$UBTRFS_SRC/images/manifest.sh"

require_btrfs_check
require_root  # btrfs check 6.2 fails as non-root ("could not check mount status: Permission denied")
command -v zstd >/dev/null || skip_or_fail "zstd not installed"

# The kernel part is optional unless oracles are required: without it only btrfs check runs.
kernel=1
if ! { grep -qw btrfs /proc/filesystems || { modprobe btrfs 2>/dev/null && grep -qw btrfs /proc/filesystems; }; } ||
  ! losetup -f >/dev/null 2>&1; then
  if [[ "${UBTRFS_REQUIRE_ORACLES:-0}" == 1 ]]; then require_kernel_btrfs; fi
  echo "note: no kernel btrfs or loop device: kernel comparisons skipped" >&2
  kernel=0
fi

tmp=$(make_tmpdir)
mnt=$tmp/mnt

dirs=("$@")
if [[ ${#dirs[@]} == 0 ]]; then
  for d in "$UBTRFS_SRC"/images/[0-9][0-9][0-9]-*/; do dirs+=("${d%/}"); done
fi
[[ ${#dirs[@]} -gt 0 && -f ${dirs[0]}/image.zst ]] || { echo "FAIL: no reference images found" >&2; exit 1; }

super_field() { btrfs inspect-internal dump-super "$1" | awk -v f="$2" '$1 == f { print $2 }'; }

# expected_manifest DIR NAME: path of DIR/NAME, decompressing DIR/NAME.zst if that is what is
# committed (large manifests are stored compressed to keep tracked files small).
expected_manifest() {
  local dir=$1 name=$2
  if [[ -f $dir/$name ]]; then echo "$dir/$name"; return; fi
  zstd -q -d -f "$dir/$name.zst" -o "$tmp/$(basename "$dir")-$name" && echo "$tmp/$(basename "$dir")-$name"
}

# compare_manifest NAME EXPECTED-FILE: manifest of $mnt against EXPECTED-FILE.
compare_manifest() {
  local name=$1 expected=$2 got=$tmp/got.txt
  if ! manifest_of "$mnt" >"$got"; then failed "$name: could not read the mounted tree"; return; fi
  if diff -u "$expected" "$got" >"$tmp/diff.txt"; then
    pass "$name: kernel view matches $(basename "$expected") ($(wc -l <"$got") paths)"
  else
    failed "$name: kernel view differs from $(basename "$expected"):"
    cut -c1-300 "$tmp/diff.txt" | head -40 >&2
  fi
}

for dir in "${dirs[@]}"; do
  name=$(basename "$dir")
  img=$tmp/$name.img
  if ! zstd -q -d -f --long=27 "$dir/image.zst" -o "$img"; then failed "$name: cannot decompress image.zst"; continue; fi

  if check_clean "$img"; then pass "$name: btrfs check clean (original and lowmem)"; else failed "$name: btrfs check"; fi

  log_root=$(super_field "$img" log_root)
  if [[ -f $dir/manifest-replayed.txt ]]; then
    # An image meant to carry a log tree must still carry one.
    if [[ -n $log_root && $log_root != 0 ]]; then pass "$name: log_root $log_root present"; else failed "$name: expected log_root != 0, got '$log_root'"; fi
  fi
  ((kernel)) || { rm -f "$img"; continue; }

  opts=ro
  [[ $log_root != 0 ]] && opts=ro,rescue=nologreplay
  before=$(hash_file "$img")
  if kernel_mount "$img" "$mnt" "$opts"; then
    compare_manifest "$name ($opts)" "$(expected_manifest "$dir" manifest.txt)"
    kernel_umount "$mnt"
    if [[ $(hash_file "$img") == "$before" ]]; then pass "$name: $opts mount left the image unchanged"; else failed "$name: $opts mount changed the image"; fi
  else
    failed "$name: kernel refused mount -o $opts"
  fi

  if [[ -f $dir/manifest-replayed.txt ]]; then
    # Log replay writes: a rw mount of the (already decompressed, otherwise untouched) image.
    if kernel_mount "$img" "$mnt"; then
      compare_manifest "$name (log replayed)" "$dir/manifest-replayed.txt"
      kernel_umount "$mnt"
      replayed_root=$(super_field "$img" log_root)
      if [[ $replayed_root == 0 ]]; then pass "$name: log_root 0 after replay"; else failed "$name: log_root $replayed_root after replay"; fi
      if check_clean "$img"; then pass "$name: btrfs check clean after replay"; else failed "$name: btrfs check after replay"; fi
    else
      failed "$name: kernel refused the rw mount that replays the log"
    fi
  fi
  rm -f "$img"
done

finish
