#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: the unit tests and the oracle tests
# (btrfs check, kernel mounts) in a normal build, then the unit tests and the fast oracle tests
# again in AddressSanitizer+UBSan and ThreadSanitizer builds.
#
#   scripts/test.sh              everything (what CI runs, with UBTRFS_REQUIRE_ORACLES=1)
#   UBTRFS_SANITIZERS=0 scripts/test.sh   skip the sanitizer builds
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"

[[ $(id -u) == 0 ]] && scripts/install-deps.sh

start=$SECONDS
run_suite() {  # run_suite BUILD_DIR [ctest args...]
  local dir=$1
  shift
  echo "=== ctest in $dir $*"
  (cd "$dir" && ctest --output-on-failure --no-tests=error "$@")
}

scripts/build.sh build
run_suite build

if [[ ${UBTRFS_SANITIZERS:-1} == 1 ]]; then
  # The matrix of kernel mounts is about the on-disk result, not memory safety; the sanitizer
  # builds run every unit test and the oracle tests that exercise the tools on bad input.
  scripts/build.sh build-asan -DUBTRFS_SANITIZE=address
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -E 'oracle_mkfs_matrix'
  scripts/build.sh build-tsan -DUBTRFS_SANITIZE=thread
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_suite build-tsan -R '_unit$'
fi
echo "all suites passed in $((SECONDS - start)) s"
