# Shared helpers for the oracle tests (sourced, not run; the ctest glob skips it because it has no
# test body: runnable tests are named *_test.sh).
#
# Policy: a test needing an oracle it cannot find (btrfs check, root, loop devices, kernel btrfs)
# exits 77 (skipped) — unless UBTRFS_REQUIRE_ORACLES=1, where it fails. Every mount, loop device
# and temporary directory a test creates is registered and removed on exit, even on failure.
set -euo pipefail

UBTRFS_BIN=${UBTRFS_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/tools}
UBTRFS_SRC=${UBTRFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

# Everything a test creates lives under one root made here, in the test's own shell (not in a
# $(...) subshell, which could not register anything). Cleanup unmounts whatever is mounted under
# the root (deepest first), detaches loop devices backed by files under it, and removes it — so a
# test that dies halfway leaves nothing behind, however it created its mounts.
UBTRFS_TEST_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ubtrfs-test.XXXXXX")

_oracle_cleanup() {
  local rc=$?
  local m l
  if [[ -d "$UBTRFS_TEST_ROOT" ]]; then
    # /proc/mounts escapes spaces as \040; test paths have none.
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v r="$UBTRFS_TEST_ROOT" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r)
    while read -r l; do
      [[ -n "$l" ]] && losetup -d "$l" 2>/dev/null || true
    done < <(losetup -a 2>/dev/null | awk -F: -v r="$UBTRFS_TEST_ROOT" 'index($0, r) {print $1}')
    rm -rf "$UBTRFS_TEST_ROOT"
  fi
  exit $rc
}
trap _oracle_cleanup EXIT
trap 'exit 130' INT TERM

# skip_or_fail REASON: exit 77, or exit 1 when oracles are required.
skip_or_fail() {
  if [[ "${UBTRFS_REQUIRE_ORACLES:-0}" == 1 ]]; then
    echo "FAIL: required oracle missing: $*" >&2
    exit 1
  fi
  echo "SKIP: $*" >&2
  exit 77
}

require_root() { [[ $(id -u) == 0 ]] || skip_or_fail "needs root"; }
# btrfs check 6.2 refuses to run without root ("could not check mount status").
require_btrfs_check() {
  command -v btrfs >/dev/null || skip_or_fail "btrfs-progs not installed"
  require_root
}
require_kernel_btrfs() {
  require_root
  grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true
  grep -qw btrfs /proc/filesystems || skip_or_fail "kernel has no btrfs"
  losetup -f >/dev/null 2>&1 || skip_or_fail "no free loop device"
}

# make_tmpdir: prints a new directory under the test root (removed at exit; safe in $(...)).
make_tmpdir() { mktemp -d "$UBTRFS_TEST_ROOT/tmp.XXXXXX"; }

# kernel_mount IMG MNT [OPTS]: loop-mount with the kernel driver; unmounted at exit.
kernel_mount() {
  local img=$1 mnt=$2 opts=${3:-}
  mkdir -p "$mnt"
  [[ "$(realpath "$mnt")" == "$UBTRFS_TEST_ROOT"/* ]] || { echo "kernel_mount: $mnt is outside the test root" >&2; return 1; }
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
