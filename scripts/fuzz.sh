#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan+UBSan, -O1 -g1) and runs them.
#
#   scripts/fuzz.sh                 short run (CI): the seed corpora, then each target for
#                                   UBTRFS_FUZZ_SECONDS (default 10) through ctest
#   scripts/fuzz.sh --long          every target for UBTRFS_FUZZ_RUNS executions (default 1,000,000),
#                                   UBTRFS_FUZZ_JOBS targets at a time (default 2), each line giving
#                                   its executions, exec/s and verdict (ok, crash, leak, timeout, oom)
#   scripts/fuzz.sh --build-only
#
#   UBTRFS_FUZZ_DIR      the build tree (default build-fuzz under the source tree); the corpora grow in
#                        its fuzz-work/corpus/ from run to run, failing inputs go to fuzz-work/artifacts/
#   UBTRFS_FUZZ_CXX      the compiler (default clang++-19: clang 14, Debian 12's default, lacks
#                        the C++20 concepts level libstdc++'s std::expected needs)
#   UBTRFS_FUZZ_MAX_TIME with --long: also stop each target after this many seconds
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
mode=short
case ${1:-} in
  --long) mode=long ;;
  --build-only) mode=build ;;
  "") ;;
  *) echo "usage: $0 [--long|--build-only]" >&2; exit 2 ;;
esac
cxx=${UBTRFS_FUZZ_CXX:-clang++-19}
cc=${cxx/clang++/clang}
B=$(realpath -m "${UBTRFS_FUZZ_DIR:-$src/build-fuzz}")
if ! command -v "$cxx" >/dev/null; then
  [[ $(id -u) == 0 ]] && "$src/scripts/install-deps.sh" --fuzz
  command -v "$cxx" >/dev/null || { echo "$cxx not found (scripts/install-deps.sh --fuzz installs clang-19)" >&2; exit 1; }
fi

t0=$SECONDS
cmake -S "$src" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  -DUBTRFS_BUILD_TESTS=OFF -DUBTRFS_FUZZ=ON -DUBTRFS_FUZZ_SECONDS="${UBTRFS_FUZZ_SECONDS:-10}" >/dev/null
targets=(superblock_fuzzer tree_checker_fuzzer reader_fuzzer mount_rw_fuzzer ubtrfs-fuzz-seeds)
nice ninja -C "$B" ${NINJA_JOBS:+-j$NINJA_JOBS} "${targets[@]}" >"$B/fuzz-build.log" 2>&1 ||
  { tail -40 "$B/fuzz-build.log" >&2; exit 1; }
echo "fuzz build: $((SECONDS - t0)) s"
[[ $mode == build ]] && exit 0

if [[ $mode == short ]]; then
  cd "$B" && exec ctest --output-on-failure --no-tests=error -R '^fuzz_'
fi

work=$B/fuzz-work
bash "$src/fuzz/make_corpora.sh" "$B/fuzz/ubtrfs-fuzz-seeds" "$src" "$work"
runs=${UBTRFS_FUZZ_RUNS:-1000000}
opts=(-runs="$runs")
[[ -n ${UBTRFS_FUZZ_MAX_TIME:-} ]] && opts+=(-max_total_time="$UBTRFS_FUZZ_MAX_TIME")
jobs=${UBTRFS_FUZZ_JOBS:-2}
declare -A seeds=([superblock_fuzzer]=superblock [tree_checker_fuzzer]=tree [reader_fuzzer]=image [mount_rw_fuzzer]=image)
mkdir -p "$work/logs"
pids=()
for t in superblock_fuzzer tree_checker_fuzzer reader_fuzzer mount_rw_fuzzer; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  bash "$src/fuzz/run_target.sh" "$B/fuzz/$t" "$work" "$work/seeds/${seeds[$t]}" "${opts[@]}" >"$work/logs/$t.summary" &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
echo "long run ($runs executions per target, $jobs at a time):"
cat "$work"/logs/{superblock,tree_checker,reader,mount_rw}_fuzzer.summary
((failed == 0)) && echo "no crash, leak, timeout or out-of-memory" || { echo "FAILED: see the artifacts" >&2; exit 1; }
