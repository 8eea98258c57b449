#!/usr/bin/env bash
# Access times of files read through the kernel's page cache. FUSE inodes are S_NOATIME in the
# kernel, so the daemon keeps atime by the mount's rules (Filesystem::touch_atime) — but a read the
# kernel serves from its page cache never reaches the daemon, and opens keep that cache
# (keep_cache). xfstests generic/003 found strictatime's reads after the first not updating atime.
#
# Rule named here: an_open_whose_read_updates_atime_does_not_keep_the_page_cache. With it:
#   - strictatime: every open + read, a second apart, moves atime forward;
#   - relatime (the default): a read moves atime when atime is not newer than mtime or ctime, then
#     not again until the file changes;
#   - noatime: a read never moves it;
# and the image stays check-clean.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
require_ubtrfs
require_btrfs_check
fs_is_kernel && skip_or_fail "the page-cache rule belongs to the ubtrfs daemon (UBTRFS_FS=kernel)"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/atime.img
mnt=$tmp/mnt
truncate -s 256M "$img"
"$MKFS" -q "$img"

atime() { stat -c %.9X "$1"; }
read_file() { cat "$1" >/dev/null; }
later() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$1" "$2"; }

# strictatime
ubtrfs_mount "$img" "$mnt" strictatime || { failed "mount strictatime"; finish; exit 1; }
head -c 65536 /dev/urandom >"$mnt/s"  # the write leaves the file's pages in the kernel's cache
a0=$(atime "$mnt/s")
sleep 1.1
read_file "$mnt/s"; a1=$(atime "$mnt/s")
sleep 1.1
read_file "$mnt/s"; a2=$(atime "$mnt/s")
sleep 1.1
read_file "$mnt/s"; a3=$(atime "$mnt/s")
if later "$a1" "$a0" && later "$a2" "$a1" && later "$a3" "$a2"; then
  pass "strictatime: each read a second apart moves atime ($a0 $a1 $a2 $a3)"
else
  failed "strictatime: atime after the reads: $a0 $a1 $a2 $a3"
fi
ubtrfs_umount "$mnt" || failed "unmount strictatime"

# relatime (default)
ubtrfs_mount "$img" "$mnt" || { failed "mount relatime"; finish; exit 1; }
head -c 65536 /dev/urandom >"$mnt/r"
read_file "$mnt/r"  # pages cached, and atime brought past mtime
a0=$(atime "$mnt/r")
sleep 1.1
read_file "$mnt/r"; a1=$(atime "$mnt/r")
[[ $a1 == "$a0" ]] && pass "relatime: a read after atime passed mtime leaves it" || failed "relatime: $a0 -> $a1"
sleep 1.1
echo more >>"$mnt/r"
sleep 1.1
read_file "$mnt/r"; a2=$(atime "$mnt/r")
later "$a2" "$a1" && pass "relatime: the first read after a change moves atime ($a1 -> $a2)" \
  || failed "relatime: read after a change: $a1 -> $a2"
ubtrfs_umount "$mnt" || failed "unmount relatime"

# noatime
ubtrfs_mount "$img" "$mnt" noatime || { failed "mount noatime"; finish; exit 1; }
head -c 65536 /dev/urandom >"$mnt/n"
a0=$(atime "$mnt/n")
sleep 1.1
read_file "$mnt/n"; read_file "$mnt/n"; a1=$(atime "$mnt/n")
[[ $a1 == "$a0" ]] && pass "noatime: reads leave atime" || failed "noatime: $a0 -> $a1"
ubtrfs_umount "$mnt" || failed "unmount noatime"

if check_clean_full "$img"; then pass "check-clean"; else failed "check-clean"; fi
finish
