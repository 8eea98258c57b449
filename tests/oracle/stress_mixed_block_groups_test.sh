#!/usr/bin/env bash
# ubtrfs-stress on mixed block groups (mkfs.ubtrfs --mixed: tree blocks and data extents in the
# same DATA|METADATA chunks, one space_info): stress_ubtrfs_test.sh on a 1 GiB mixed image, with
# the same oracles (the tool's model on the mount, check-clean by every checker, the kernel sees
# the manifest, a remount sees it). Rule named here:
# a_data_extent_may_take_the_bytes_of_a_cancelled_tree_block_head — on mixed groups the bytes of a
# tree block born and freed unwritten in a transaction go back to the free space at once, and data
# allocated there in the same transaction aborted it ("delayed ref for extent ... disagrees with
# its head"), after which the kernel could not mount the image: 4 x 5000 operations hit it within
# 2 to 3 seconds on every seed tried.
#
# Knobs: UBTRFS_STRESS_MIXED_NOPS (ops per worker, default 5000), UBTRFS_STRESS_PROCS,
# UBTRFS_STRESS_SEED as in stress_ubtrfs_test.sh.
export UBTRFS_STRESS_MKFS="--mixed"
export UBTRFS_STRESS_SIZE=1G
export UBTRFS_STRESS_NOPS=${UBTRFS_STRESS_MIXED_NOPS:-5000}
exec bash "$(dirname "${BASH_SOURCE[0]}")/stress_ubtrfs_test.sh"
