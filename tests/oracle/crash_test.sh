#!/usr/bin/env bash
# The crash harness's external oracles (issue 9, acceptance 1; tests/crash): a random-mix and an
# ACE depth-1 run of ubtrfs-crashtest (and one mix recorded through the daemon's FUSE path) whose
# crash images are, besides the in-process judgement
# (ubtrfs mount read-only and read-write, the model, fsck.ubtrfs's passes), sent to `btrfs check`
# (original and lowmem) and to the kernel (loop mount read-only, every file read): every distinct
# image up to a budget (80 for the mix, 40 for ACE). Any rejection fails the test; counts printed.
# Needs root, btrfs-progs, loop devices and kernel btrfs: otherwise skipped (77), or failed under
# UBTRFS_REQUIRE_ORACLES=1. The in-process CI run is ctest crash_unit; the harness self-test is
# crash_selftest.
#
# Usage: UBTRFS_BIN=<build>/tools bash tests/oracle/crash_test.sh
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CRASHTEST=$UBTRFS_BIN/../tests/crash/ubtrfs-crashtest
[[ -x $CRASHTEST ]] || { echo "FAIL: $CRASHTEST not built" >&2; exit 1; }
require_btrfs_check
require_kernel_btrfs

tmp=$(make_tmpdir)
if UBTRFS_REQUIRE_ORACLES=1 "$CRASHTEST" --mix-seeds 2 --mix-ops 40 --ace-depth 1 --fuse-mixes 1 --seed 101 \
     --oracle-budget 80 --scratch-dir "$tmp" | tee "$tmp/out"; then
  pass "crash images judged by btrfs check (x2) and the kernel: $(grep -m1 'external oracle runs' "$tmp/out")"
else
  failed "crash harness with external oracles (see the FAIL lines above)"
fi
grep -q 'external oracle runs: [1-9]' "$tmp/out" || failed "no image reached the external oracles"
grep -q "recorded through the daemon's FUSE path: 1 recordings, [1-9]" "$tmp/out" &&
  pass "a recording through the daemon's FUSE path was judged" || failed "no crash point recorded through FUSE"
finish
