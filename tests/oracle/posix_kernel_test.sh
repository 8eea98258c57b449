#!/usr/bin/env bash
# Oracle: the POSIX conformance suite (tests/posix/, binary ubtrfs_posix_tests) run against the Linux
# kernel's btrfs on a loop-mounted 1 GiB sparse image, then `btrfs check` (original and lowmem) on
# what it wrote. Passing here is what makes the suite's expectations trustworthy; the same suite then
# judges the ubtrfs FUSE daemon by swapping MKFS_CMD/MOUNT_CMD below.
#
# Usage: UBTRFS_BIN=<build>/tools bash tests/oracle/posix_kernel_test.sh [catch2 test filters...]
# Exit: 0 all passed, 1 a failure, 77 skipped (an oracle missing and UBTRFS_REQUIRE_ORACLES unset).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The file system under test: how to make the image and how to mount it (IMG MNT). For ubtrfs this
# becomes mkfs.ubtrfs and the daemon, mounted with default_permissions,allow_other (the suite drops
# to uid 65534 for its permission tests).
MKFS_CMD=(mkfs.btrfs -q)
MOUNT_CMD=(kernel_mount)
IMAGE_SIZE=1G

UBTRFS_BUILD=$(dirname "$UBTRFS_BIN")
SUITE=$UBTRFS_BUILD/tests/posix/ubtrfs_posix_tests

require_kernel_btrfs
require_btrfs_check
command -v "${MKFS_CMD[0]}" >/dev/null || skip_or_fail "${MKFS_CMD[0]} not installed"
[[ -x $SUITE ]] || skip_or_fail "$SUITE not built (ninja ubtrfs_posix_tests)"

tmp=$(make_tmpdir)
# The non-root tests (uid 65534) must be able to reach the mount point.
chmod 0755 "$UBTRFS_TEST_ROOT" "$tmp"
img=$tmp/posix.img
mnt=$tmp/mnt
truncate -s "$IMAGE_SIZE" "$img"
"${MKFS_CMD[@]}" "$img"
"${MOUNT_CMD[@]}" "$img" "$mnt"
chmod 0755 "$mnt"
work=$mnt/posix
mkdir -m 0755 "$work"

if UBTRFS_POSIX_DIR=$work "$SUITE" --warn NoAssertions "$@"; then
  pass "posix suite on kernel btrfs"
else
  failed "posix suite on kernel btrfs"
fi

# Every test case removes its own directory; anything left is a cleanup bug in the suite.
if [[ -z $(ls -A "$work") ]]; then
  pass "no test directories left behind"
else
  failed "test directories left behind: $(ls -A "$work" | head -5 | tr '\n' ' ')"
fi
rmdir "$work" 2>/dev/null || true

kernel_umount "$mnt"
if check_clean "$img"; then
  pass "btrfs check clean after the suite"
else
  failed "btrfs check after the suite"
fi
finish
