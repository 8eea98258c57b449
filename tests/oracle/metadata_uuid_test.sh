#!/usr/bin/env bash
# INCOMPAT_METADATA_UUID: an image whose fsid was changed with `btrfstune -m` (what cloned VM and
# container images get, so that two copies can be mounted side by side) keeps the old fsid as
# `metadata_uuid` in every tree block header and the superblock's dev_item, and a new fsid in the
# superblock. ubtrfs mounts it read-write (it refused it as an unsupported feature):
#   1. the kernel writes files, `btrfstune -m` changes the fsid;
#   2. ubtrfs reads them back byte for byte, writes 200 MiB more (new chunks), fsyncs a file
#      through the tree log and unmounts; fsid, metadata_uuid and dev_item.fsid are what btrfstune
#      left; the image is check-clean (btrfs check both modes, data csum, kernel read, fsck.ubtrfs);
#   3. a file fsynced just before a power cut (`ubtrfs-inspect shutdown --mode no-flush`) comes
#      back when the kernel replays ubtrfs's log tree (log blocks carry the metadata uuid);
#   4. the kernel mounts the result read-write and reads every file.
# Rule named here: tree_blocks_carry_the_metadata_uuid_not_the_fsid.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_btrfs_check
require_kernel_btrfs
require_ubtrfs
command -v mkfs.btrfs >/dev/null || skip_or_fail "mkfs.btrfs (btrfs-progs) not installed"
command -v btrfstune >/dev/null || skip_or_fail "btrfstune (btrfs-progs) not installed"
INSPECT=$UBTRFS_BIN/inspect/ubtrfs-inspect
[[ -x $INSPECT ]] || { echo "FAIL: $INSPECT not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/m.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
MiB=$((1 << 20))

# super_field IMG NAME: one field of dump-super (fsid, metadata_uuid, dev_item.fsid with its
# [match] note), read to the end (pipefail).
super_field() { btrfs inspect-internal dump-super "$1" | awk -v f="$2" '$1 == f && !n++ { $1 = ""; sub(/^ +/, ""); print }'; }

# ---- 1. the kernel's image, fsid changed ------------------------------------------------------------
truncate -s 1G "$img"
mkfs.btrfs -q -f "$img" >/dev/null
head -c $((5 * MiB)) /dev/urandom >"$tmp/k.src"
kernel_mount "$img" "$kmnt" || { failed "kernel mount of a fresh image"; finish; }
mkdir "$kmnt/d"
cp "$tmp/k.src" "$kmnt/d/k"
for i in $(seq 1 50); do echo "small $i" >"$kmnt/d/s$i"; done
kernel_umount "$kmnt"
old_fsid=$(super_field "$img" fsid)
btrfstune -f -m "$img" >/dev/null 2>&1 || { failed "btrfstune -m"; finish; }
fsid=$(super_field "$img" fsid)
muuid=$(super_field "$img" metadata_uuid)
if [[ $fsid != "$old_fsid" && $muuid == "$old_fsid" ]] &&
  btrfs inspect-internal dump-super "$img" | grep -q 'METADATA_UUID'; then
  pass "btrfstune -m: fsid $fsid, metadata_uuid $muuid (the old fsid), incompat METADATA_UUID"
else
  failed "btrfstune -m did not give the expected superblock: fsid $fsid (was $old_fsid), metadata_uuid $muuid"
  finish
fi

# ---- 2. ubtrfs reads and writes -------------------------------------------------------------------
head -c $((200 * MiB)) /dev/urandom >"$tmp/big.src"
head -c $((3 * MiB)) /dev/urandom >"$tmp/f.src"
if ubtrfs_mount "$img" "$mnt"; then
  if cmp -s "$tmp/k.src" "$mnt/d/k" && [[ $(cat "$mnt/d/s50") == "small 50" ]]; then
    pass "ubtrfs reads the kernel's files of a METADATA_UUID image"
  else
    failed "ubtrfs read different data from the METADATA_UUID image"
  fi
  cp "$tmp/big.src" "$mnt/big"
  mkdir "$mnt/u"
  for i in $(seq 1 200); do echo "ubtrfs $i" >"$mnt/u/f$i"; done
  dd if="$tmp/f.src" of="$mnt/u/synced" bs=1M conv=fsync status=none
  if ubtrfs_umount "$mnt"; then pass "read-write mount and unmount"; else failed "unmount after writing"; fi
  dev=$(super_field "$img" dev_item.fsid)
  if [[ $(super_field "$img" fsid) == "$fsid" && $(super_field "$img" metadata_uuid) == "$muuid" && $dev == "$muuid [match]" ]]; then
    pass "fsid, metadata_uuid and dev_item.fsid are as btrfstune left them"
  else
    failed "superblock changed: fsid $(super_field "$img" fsid), metadata_uuid $(super_field "$img" metadata_uuid), dev_item.fsid $dev"
  fi
  if check_clean_full "$img"; then pass "check-clean after ubtrfs wrote 200 MiB (new chunks) and fsynced"; else failed "not check-clean after ubtrfs wrote"; fi
else
  failed "ubtrfs refused the METADATA_UUID image read-write: $(tail -3 "${UBTRFS_LAST_LOG:-/dev/null}")"
fi

# ---- 3. the log tree across a power cut ---------------------------------------------------------------
if ubtrfs_mount "$img" "$mnt"; then
  head -c $((2 * MiB)) /dev/urandom >"$tmp/cut.src"
  # Committed first, so that only the fsync below can bring the new file back.
  sync -f "$mnt"
  dd if="$tmp/cut.src" of="$mnt/u/after-cut" bs=1M conv=fsync status=none
  if out=$("$INSPECT" shutdown "$mnt" --mode no-flush 2>&1); then
    pass "power cut after an fsync (ubtrfs-inspect shutdown --mode no-flush)"
  else
    failed "ubtrfs-inspect shutdown --mode no-flush: $out"
  fi
  ubtrfs_umount "$mnt" || failed "unmount after the power cut"
  if [[ $(btrfs inspect-internal dump-super "$img" | awk '$1 == "log_root" {print $2}') != 0 ]]; then
    pass "the superblock names ubtrfs's log tree"
  else
    failed "no log tree in the superblock after an fsync and a power cut"
  fi
  if kernel_mount "$img" "$kmnt"; then
    if cmp -s "$tmp/cut.src" "$kmnt/u/after-cut"; then
      pass "the kernel replayed ubtrfs's log tree on the METADATA_UUID image: the fsynced file is back"
    else
      failed "the fsynced file is missing or different after the kernel's log replay"
    fi
    # ---- 4. everything through the kernel ------------------------------------------------------------
    if cmp -s "$tmp/big.src" "$kmnt/big" && cmp -s "$tmp/f.src" "$kmnt/u/synced" && cmp -s "$tmp/k.src" "$kmnt/d/k" &&
      [[ $(cat "$kmnt/u/f200") == "ubtrfs 200" ]]; then
      pass "the kernel reads every file ubtrfs and it wrote"
    else
      failed "the kernel read different data"
    fi
    kernel_umount "$kmnt"
    if check_clean_full "$img"; then pass "check-clean after the kernel's replay"; else failed "not check-clean after the kernel's replay"; fi
  else
    failed "the kernel refused the image after ubtrfs's power cut"
  fi
else
  failed "third ubtrfs mount"
fi

finish
