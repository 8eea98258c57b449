#!/usr/bin/env bash
# ubtrfs-stress with snapshots mixed in (issue 16 acceptance 3): stress_ubtrfs_test.sh with
# `--snapshots` — each worker's directory is a subvolume that is snapshotted (read-only or not) and
# whose snapshots are deleted as operations; every snapshot is verified in full against a frozen
# copy of the model before its delete and at the end (COW of shared blocks must never show a later
# change in a snapshot, nor lose anything from it), then the same oracles: check-clean by every
# checker, the kernel sees the manifest, a remount sees it. The deleted snapshots are dropped by
# the cleaner while the workload runs.
#
# Knobs: UBTRFS_STRESS_SNAP_NOPS (ops per worker, default 1000 for CI; the acceptance run: 20000),
# UBTRFS_STRESS_PROCS, UBTRFS_STRESS_SEED as in stress_ubtrfs_test.sh.
export UBTRFS_STRESS_EXTRA="--snapshots"
export UBTRFS_STRESS_NOPS=${UBTRFS_STRESS_SNAP_NOPS:-1000}
exec bash "$(dirname "${BASH_SOURCE[0]}")/stress_ubtrfs_test.sh"
