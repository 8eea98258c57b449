#!/usr/bin/env bash
# The ENOSPC fill-to-full suite (issue 7, acceptance 2 and 3): tests/oracle/enospc_*_test.sh, each
# scenario through the ubtrfs daemon on a fresh mkfs.ubtrfs image, compared with the kernel's btrfs
# on an image from the same command, then check-clean and a kernel read of every acknowledged byte.
#
#   scripts/test-enospc.sh           the full matrix: 128M, 256M, 1G x metadata DUP, SINGLE, and 64M
#                                    with mixed block groups (SINGLE, DUP), every scenario, the
#                                    kernel's figures beside each (UBTRFS_ENOSPC_FULL=1)
#   scripts/test-enospc.sh --ci      the subset ctest runs in CI (enospc_fill: 128M, 256M DUP, 64M
#                                    mixed; enospc_files: 128M DUP, 64M mixed-dup; enospc_concurrent:
#                                    128M, 256M DUP)
#   UBTRFS_FS=kernel scripts/test-enospc.sh     the same with the kernel as the tested file system
#                                    (proves the tests' logic; every check must pass)
#   UBTRFS_ENOSPC_CONFIGS="1G:single 128M:dup 64M:mixed"  only these configurations (PROFILE: dup,
#                                    single, mixed, mixed-dup)
#   UBTRFS_ENOSPC_TESTS="fill files"            only these tests (selftest fill files concurrent)
#   UBTRFS_BIN=DIR                   the binaries (default build/tools, built by scripts/build.sh
#                                    when the daemon is missing there)
#   UBTRFS_ENOSPC_LOG_DIR=DIR        where each test's log is kept (default: a new directory in /tmp)
# Prints each test's time, and at the end every failed check. Exit 1 if any test failed.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"

full=1
for a in "$@"; do
  case $a in
    --ci) full=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--ci]" >&2; exit 2 ;;
  esac
done
if [[ -z ${UBTRFS_BIN:-} ]]; then
  export UBTRFS_BIN=$src/build/tools
  [[ -x $UBTRFS_BIN/daemon/ubtrfs && -x $UBTRFS_BIN/mkfs/mkfs.ubtrfs && -x $UBTRFS_BIN/fsck/fsck.ubtrfs ]] ||
    scripts/build.sh "$src/build"
fi
export UBTRFS_BIN UBTRFS_SRC=$src
if ((full)); then export UBTRFS_ENOSPC_FULL=1; else unset UBTRFS_ENOSPC_FULL; fi
logs=${UBTRFS_ENOSPC_LOG_DIR:-$(mktemp -d /tmp/ubtrfs-enospc.XXXXXX)}
mkdir -p "$logs"

start=$SECONDS
timings=()
bad=()
for t in ${UBTRFS_ENOSPC_TESTS:-selftest fill files concurrent}; do
  echo "=== enospc_${t}_test ($([[ $full == 1 ]] && echo full matrix || echo CI subset), on ${UBTRFS_FS:-ubtrfs})"
  t0=$SECONDS
  rc=0
  bash "tests/oracle/enospc_${t}_test.sh" 2>&1 | tee "$logs/$t.log" || rc=$?
  timings+=("$(printf '%-28s %6d s  exit %d' "enospc_${t}_test" $((SECONDS - t0)) "$rc")")
  ((rc == 0)) || bad+=("$t")
done
echo
echo "=== timings"
printf '%s\n' "${timings[@]}"
echo "elapsed: $((SECONDS - start)) s; logs in $logs"
if ((${#bad[@]})); then
  echo "=== failed checks"
  for t in "${bad[@]}"; do grep -h '^FAIL' "$logs/$t.log" | cut -c1-300 || true; done
  exit 1
fi
echo "all enospc tests passed"
