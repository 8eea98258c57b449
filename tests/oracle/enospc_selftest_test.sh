#!/usr/bin/env bash
# The ENOSPC suite's own checks can fail (enospc/selftest.py): on a 48 MiB tmpfs (fills in a
# second, exact df, 20000 inodes so the empty files end too) every scenario of enospc/workload.py
# runs and must pass verify.py and judge.py; then known damage to the files (a flipped byte, a
# shortened file, a removed file and directory, a deleted path recreated, a missing xattr) must be
# reported by verify.py with the exact bytes lost, and known alterations of the records (a non-ENOSPC
# errno, fewer bytes or files than the kernel, a short write into preallocated space, a failing rm,
# an inaccurate df, an early ENOSPC, an ENOSPC where everything fits) must fail exactly the
# criterion concerned in judge.py. Needs no btrfs: it proves the instruments, not a file system.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
started=$SECONDS
mnt=$(make_tmpdir)/tmpfs
mkdir -p "$mnt"
mount -t tmpfs -o size=48m,nr_inodes=20000 enospc-selftest "$mnt" || skip_or_fail "cannot mount a tmpfs"
while IFS= read -r line; do
  case $line in
    PASS:\ *) pass "${line#PASS: }" ;;
    FAIL:\ *) failed "${line#FAIL: }" ;;
    *) echo "$line" ;;
  esac
done < <(python3 "$(dirname "${BASH_SOURCE[0]}")/enospc/selftest.py" "$mnt" 2>&1 || echo "FAIL: selftest.py exit $?")
umount "$mnt"
echo "enospc_selftest_test: $((SECONDS - started)) s"
finish
