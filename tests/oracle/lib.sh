# Shared helpers for the oracle tests (sourced, not run; the ctest glob skips it because it has no
# test body: runnable tests are named *_test.sh).
#
# Policy: a test needing an oracle it cannot find (btrfs check, root, loop devices, kernel btrfs)
# exits 77 (skipped) — unless UBTRFS_REQUIRE_ORACLES=1, where it fails. Every mount, loop device
# and temporary directory a test creates is registered and removed on exit, even on failure.
set -euo pipefail

UBTRFS_BIN=${UBTRFS_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/tools}
UBTRFS_SRC=${UBTRFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

_cleanup_mounts=()
_cleanup_loops=()
_cleanup_dirs=()

_oracle_cleanup() {
  local rc=$?
  local m l d
  for m in "${_cleanup_mounts[@]}"; do
    if mountpoint -q "$m" 2>/dev/null; then umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
  done
  for l in "${_cleanup_loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  for d in "${_cleanup_dirs[@]}"; do rm -rf "$d"; done
  exit $rc
}
trap _oracle_cleanup EXIT

# skip_or_fail REASON: exit 77, or exit 1 when oracles are required.
skip_or_fail() {
  if [[ "${UBTRFS_REQUIRE_ORACLES:-0}" == 1 ]]; then
    echo "FAIL: required oracle missing: $*" >&2
    exit 1
  fi
  echo "SKIP: $*" >&2
  exit 77
}

require_btrfs_check() { command -v btrfs >/dev/null || skip_or_fail "btrfs-progs not installed"; }
require_root() { [[ $(id -u) == 0 ]] || skip_or_fail "needs root"; }
require_kernel_btrfs() {
  require_root
  grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true
  grep -qw btrfs /proc/filesystems || skip_or_fail "kernel has no btrfs"
  losetup -f >/dev/null 2>&1 || skip_or_fail "no free loop device"
}

# make_tmpdir: prints a new directory removed at exit.
make_tmpdir() {
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/ubtrfs-test.XXXXXX")
  _cleanup_dirs+=("$d")
  echo "$d"
}

# kernel_mount IMG MNT [OPTS]: loop-mount with the kernel driver; unmounted at exit.
kernel_mount() {
  local img=$1 mnt=$2 opts=${3:-}
  mkdir -p "$mnt"
  _cleanup_mounts+=("$mnt")
  mount -t btrfs -o "loop${opts:+,$opts}" "$img" "$mnt"
}

kernel_umount() {
  local mnt=$1
  umount "$mnt"
}

# check_clean IMG: btrfs check in original and lowmem mode; output must say no error and exit 0.
check_clean() {
  local img=$1 out mode
  for mode in original lowmem; do
    if ! out=$(btrfs check --mode="$mode" "$img" 2>&1); then
      echo "FAIL: btrfs check --mode=$mode $img:" >&2
      echo "$out" >&2
      return 1
    fi
    if grep -qiE '^ERROR|errors found|checksum verify failed|wanted .* found' <<<"$out"; then
      echo "FAIL: btrfs check --mode=$mode $img reported problems despite exit 0:" >&2
      echo "$out" >&2
      return 1
    fi
  done
}

# hash_file FILE: content hash for "image unchanged" assertions.
hash_file() { sha256sum "$1" | cut -d' ' -f1; }

# Counters for a closing "N passed, N failed" line.
_passed=0
_failed=0
pass() { _passed=$((_passed + 1)); echo "ok: $*"; }
failed() { _failed=$((_failed + 1)); echo "FAIL: $*" >&2; }
finish() {
  echo "$_passed passed, $_failed failed"
  [[ $_failed == 0 ]]
}
