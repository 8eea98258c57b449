#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: the unit tests and the oracle tests
# (btrfs check, kernel mounts) in a normal build, then the unit tests (and, under ASan, the
# hostile-input oracle tests) again in AddressSanitizer+UBSan and ThreadSanitizer builds.
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
  # Sanitizer builds check memory safety and data races, not the on-disk result (the normal build's
  # oracle tests did that): ASan+UBSan runs every unit test and the oracle tests that feed the tools
  # hostile input (bad images, corrupted trees); TSan builds and runs the unit tests, where the
  # concurrent B-tree and the io layer's threads are exercised.
  scripts/build.sh build-asan -DUBTRFS_SANITIZE=address
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -R '_unit$|oracle_bad_input|oracle_fsck'
  cmake -S "$src" -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUBTRFS_SANITIZE=thread >/dev/null
  # Unit test "<layer>_unit" runs binary ubtrfs_<layer>_tests (tests/CMakeLists.txt).
  mapfile -t unit_targets < <(cd build-tsan && ctest -N -R '_unit$' | sed -n 's/^ *Test *#[0-9]*: \(.*\)_unit$/ubtrfs_\1_tests/p')
  ninja -C build-tsan "${unit_targets[@]}"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_suite build-tsan -R '_unit$'
fi
echo "all suites passed in $((SECONDS - start)) s"
