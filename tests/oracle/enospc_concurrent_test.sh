#!/usr/bin/env bash
# ENOSPC under concurrency (issue 7, acceptance 2 (c) (f) (g) (h) and 3), through the ubtrfs daemon
# (enospc_lib.sh); each scenario on a fresh image:
#   parallel    (f) 4 threads writing files that total half of df's Avail see no error; then a
#               writer and a fallocate loop (4 MiB calls) at once, 40 % of the new Avail each, see
#               no error;
#   concurrent  (c) 4 writer threads (16 MiB files, 256 KiB writes, then 64 KiB and 4 KiB after an
#               ENOSPC) with mkdir, create and setxattr loops (32 operations per MiB written) until
#               the writers are full: at the first ENOSPC, df (at once, and again with every worker
#               paused after a syncfs) shows under 1 % free (Avail / size);
#               (3) the data written after the last df (taken with every worker paused at 90 % of
#               the start Avail) is within 1 % of that df's Avail;
#   both        (g) every failure was ENOSPC (none at all in (f)); after deleting 1 MiB a create,
#               write, mkdir and setxattr succeed; the daemon's final commit succeeds; the image is
#               check-clean; (h) every acknowledged byte, file, directory and xattr is there when
#               the kernel reads the unmounted image.
# The criteria are absolute; UBTRFS_ENOSPC_FULL=1 also runs the kernel on each configuration for
# the figures side by side. CI: 128M and 256M with DUP metadata; UBTRFS_ENOSPC_FULL=1: 128M, 256M, 1G x
# DUP, SINGLE. UBTRFS_FS=kernel runs the same script on the kernel (proves the test's logic).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=enospc_lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/enospc_lib.sh"

enospc_require
started=$SECONDS
while IFS=: read -r size profile; do
  enospc_case parallel "$size" "$profile" 0
  enospc_case concurrent "$size" "$profile" 0
done < <(enospc_configs 128M:dup 256M:dup)
echo "enospc_concurrent_test: $((SECONDS - started)) s"
finish
