#!/usr/bin/env bash
# ENOSPC, one writer (issue 7, acceptance 2 (a) (d) (e) (g) (h) and 3), through the ubtrfs daemon and
# compared with the kernel on an image from the same mkfs.ubtrfs command (enospc_lib.sh):
#   before the fill: an 8 MiB file preallocated with fallocate mode 0 and a 2 MiB KEEP_SIZE one; a
#     directory and files that the full file system will remove, truncate and rename over;
#   (a) one writer, 64 MiB files in 1 MiB writes (then 64 KiB, then 4 KiB ones after an ENOSPC)
#       until ENOSPC: at least 98 % of the bytes the kernel fits;
#   (e) on the 100 % full file system, writing the whole preallocated ranges succeeds;
#   (d) then rm, rmdir, truncate to 0, rename over an existing file succeed, and a new 2 MiB file
#       can be written (no remount, no sync);
#   (g) every failure was ENOSPC; after deleting 1 MiB a create, write, mkdir and setxattr succeed;
#       the daemon's final commit succeeds; the image is check-clean;
#   (h) every byte write() acknowledged is there when the kernel reads the unmounted image;
#   (3) the bytes written after each df taken during the fill (syncfs + statvfs at the start, at 50 %
#       and at 90 % of the start's Avail; the last is "the last df") are within 1 % of its Avail.
# CI: 128M and 256M with DUP metadata, 64M with mixed block groups; UBTRFS_ENOSPC_FULL=1: 128M, 256M,
# 1G x DUP, SINGLE, and 64M mixed (SINGLE, DUP).
# UBTRFS_FS=kernel runs the same script on the kernel (proves the test's logic).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=enospc_lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/enospc_lib.sh"

enospc_require
started=$SECONDS
while IFS=: read -r size profile; do
  enospc_case fill "$size" "$profile" 1
done < <(enospc_configs 128M:dup 256M:dup 64M:mixed)
echo "enospc_fill_test: $((SECONDS - started)) s"
finish
