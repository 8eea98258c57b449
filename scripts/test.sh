#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test, scheduled for CI (2 cores, 30 minutes):
#
#   1. normal build (RelWithDebInfo, every target), then its unit tests on a quiet machine (the
#      concurrent B-tree tests are timing-sensitive);
#   2. the normal build's oracle tests — btrfs check / kernel oracles and the FUSE integration
#      tests (posix_ubtrfs, stress_ubtrfs, kernel_to_ubtrfs, unmount_durability,
#      bad_input_mount), each through a real mount of the ubtrfs daemon — while the ASan+UBSan
#      tree builds in the background at low priority (those tests wait on FUSE, the kernel and
#      the disk much of the time, so the build takes CPU they leave idle);
#   3. with the *daemon* under ASan+UBSan: the POSIX suite, a short stress run, the bad-input
#      mounts and the kernel images with compressed extents (the decoders); the tools under ASan
#      on hostile input (bad_input: ubtrfs-inspect, fsck: fsck.ubtrfs) — while the TSan tree
#      builds in the background;
#   4. on a quiet machine again: every unit test under ASan+UBSan, the concurrent layers' unit
#      tests under TSan, and the daemon's multi-threaded loop under TSan with the POSIX suite and
#      a short stress run.
#
# Sanitizer trees are built at -O1 -g1 (measured on this code with g++ 12: an ASan object costs
# 2.1-3x the CPU of a normal -O2 -g one at -O2 -g, 1.2-1.8x at -O1 -g1; TSan at -O1 -g1 0.65x) and
# only with the targets they test: the unit test binaries, the daemon, and (ASan) the tools fed
# hostile input. Clients and oracles of the integration tests (the POSIX suite binary,
# ubtrfs-stress, mkfs.ubtrfs, fsck.ubtrfs in check_clean_full) come from the normal build: they
# are not what is checked there. Stage times are printed at the end, also when a stage fails.
#
#   scripts/test.sh                            what CI runs (.ci/run adds UBTRFS_REQUIRE_ORACLES=1)
#   UBTRFS_SANITIZERS=0 scripts/test.sh        stages 1-2 only
#   UBTRFS_TEST_PROFILE=full scripts/test.sh   also the full mkfs matrix (all node sizes)
#   UBTRFS_ASAN_STRESS_NOPS=N, UBTRFS_TSAN_STRESS_NOPS=N   ops per worker of the stress runs
#                                              under the sanitized daemon (2000 and 1000: the TSan
#                                              daemon is about 5x slower than the ASan one)
#   UBTRFS_OVERLAP_BUILDS=0                    build the sanitizer trees in the foreground instead
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"

[[ $(id -u) == 0 ]] && scripts/install-deps.sh

start=$SECONDS
timings=()
stage_start=$SECONDS
stage_done() {  # stage_done NAME: record the time since the previous stage ended
  timings+=("$(printf '%-52s %5d s' "$1" $((SECONDS - stage_start)))")
  stage_start=$SECONDS
}
on_exit() {
  # A failed stage must not leave a background sanitizer build running (its own process group).
  if [[ -n ${bg_pid:-} ]] && kill -0 "$bg_pid" 2>/dev/null; then kill -TERM -- "-$bg_pid" 2>/dev/null || true; fi
  printf "%s\n" "${timings[@]}"
  echo "elapsed: $((SECONDS - start)) s"
}
trap on_exit EXIT

run_suite() {  # run_suite BUILD_DIR [ctest args...]
  local dir=$1
  shift
  echo "=== ctest in $dir $*"
  (cd "$dir" && ctest --output-on-failure --no-tests=error "$@")
}

# existing_targets BUILD_DIR NAME...: the NAMEs BUILD_DIR can build (a target that does not exist
# yet in this tree is skipped rather than breaking the run).
existing_targets() {
  local dir=$1 all t
  shift
  all=$(ninja -C "$dir" -t targets all 2>/dev/null | sed 's/:.*//')
  for t in "$@"; do grep -qx -- "$t" <<<"$all" && echo "$t"; done
  return 0
}

san_flags=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
           "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG")
unit_targets=(ubtrfs_io_tests ubtrfs_tree_tests ubtrfs_alloc_tests ubtrfs_fs_tests)
asan_targets=("${unit_targets[@]}" ubtrfs_tools_tests ubtrfs ubtrfs-inspect fsck.ubtrfs ubtrfs-corrupt mkfs.ubtrfs)
tsan_targets=("${unit_targets[@]}" ubtrfs)

# san_build DIR SANITIZER TARGET...: configure and build a sanitizer tree (output to DIR.log).
san_build() {
  local dir=$1 san=$2
  shift 2
  local t0=$SECONDS targets=()
  # Explicit && chains: errexit does not apply inside a function called from an || list.
  {
    cmake -S "$src" -B "$dir" "${san_flags[@]}" -DUBTRFS_SANITIZE="$san" >/dev/null &&
      mapfile -t targets < <(existing_targets "$dir" "$@") &&
      echo "building in $dir: ${targets[*]}" &&
      ninja -C "$dir" ${NINJA_JOBS:+-j$NINJA_JOBS} "${targets[@]}" &&
      echo "$dir built in $((SECONDS - t0)) s"
  } >"$dir.log" 2>&1
}
# bg_start DIR SANITIZER TARGET...: san_build in the background at low priority (pid in bg_pid).
bg_pid=
bg_start() {
  if [[ ${UBTRFS_OVERLAP_BUILDS:-1} == 1 ]]; then
    set -m  # job control: the build gets its own process group, which on_exit can stop whole
    (renice -n 15 -p $BASHPID >/dev/null 2>&1 || true; san_build "$@") &
    bg_pid=$!
    set +m
  else
    san_build "$@" || { tail -40 "$1.log"; return 1; }
    bg_pid=
  fi
}
# bg_wait DIR: wait for the background build of DIR; its log tail if it failed.
bg_wait() {
  local dir=$1
  if [[ -n $bg_pid ]] && ! wait "$bg_pid"; then
    echo "FAIL: building $dir failed:" >&2
    tail -40 "$dir.log" >&2
    return 1
  fi
  tail -1 "$dir.log"
}

if [[ ${UBTRFS_TEST_PROFILE:-ci} != full ]]; then
  export MKFS_MATRIX_QUICK=1  # 16K nodes only: 15 of the 39 cases
fi
sanitizers=${UBTRFS_SANITIZERS:-1}
asan_nops=${UBTRFS_ASAN_STRESS_NOPS:-2000}
tsan_nops=${UBTRFS_TSAN_STRESS_NOPS:-1000}

# ---- 1. normal build, unit tests ----------------------------------------------------------------
scripts/build.sh build
stage_done "1 build (normal)"
run_suite build -R '_unit$'
stage_done "1 unit tests (normal)"

# ---- 2. oracle and FUSE integration tests (ASan tree building behind) -------------------------
((sanitizers)) && bg_start build-asan address "${asan_targets[@]}"
run_suite build -E '_unit$'
stage_done "2 oracle + integration tests (normal)"

if ((sanitizers)); then
  # ---- 3. the daemon and the tools under ASan+UBSan (TSan tree building behind) ----------------
  bg_wait build-asan
  stage_done "3 wait for the ASan build"
  bg_start build-tsan thread "${tsan_targets[@]}"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  run_suite build-asan -R '^oracle_bad_input_test$|^oracle_fsck_test$'
  if [[ -x build-asan/tools/daemon/ubtrfs ]]; then
    # From the normal tree (its clients and oracles), the daemon from the ASan tree; the kernel
    # images 001 (every inode kind) and 002 (zlib/lzo/zstd extents) only.
    echo "=== the integration tests again, with the daemon under ASan+UBSan"
    UBTRFS_DAEMON=$src/build-asan/tools/daemon/ubtrfs UBTRFS_STRESS_NOPS=$asan_nops UBTRFS_IMAGES="001 002" \
      UBTRFS_UMOUNT_TIMEOUT=900 \
      run_suite build -R '^oracle_(posix_ubtrfs|stress_ubtrfs|bad_input_mount|kernel_to_ubtrfs)_test$'
  fi
  stage_done "3 ASan: daemon integration + hostile input"

  # ---- 4. unit tests under both sanitizers, the daemon under TSan (quiet machine) --------------
  bg_wait build-tsan
  stage_done "4 wait for the TSan build"
  run_suite build-asan -R '_unit$'
  unset ASAN_OPTIONS UBSAN_OPTIONS
  stage_done "4 ASan: unit tests"
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  run_suite build-tsan -R '^(io|tree|alloc|fs)_unit$'
  if [[ -x build-tsan/tools/daemon/ubtrfs ]]; then
    echo "=== the integration tests again, with the daemon under TSan"
    UBTRFS_DAEMON=$src/build-tsan/tools/daemon/ubtrfs UBTRFS_STRESS_NOPS=$tsan_nops UBTRFS_UMOUNT_TIMEOUT=900 \
      run_suite build -R '^oracle_(posix_ubtrfs|stress_ubtrfs)_test$'
  fi
  unset TSAN_OPTIONS
  stage_done "4 TSan: unit tests + daemon integration"
fi
echo "all suites passed in $((SECONDS - start)) s"
