#!/usr/bin/env bash
# run_target.sh FUZZER WORK_DIR SEED_DIR [libFuzzer options...]: runs one fuzz target on its corpus
# (WORK_DIR/corpus/NAME, kept between runs, plus SEED_DIR read-only) under ASan+UBSan with leak
# detection, then prints one line:
#   NAME  EXECS execs  RATE exec/s  SECONDS s  ok|crash|leak|timeout|oom  (log, artifacts)
# Exit status: libFuzzer's (0 when nothing was found). Artifacts (the input that failed) are in
# WORK_DIR/artifacts/NAME-*; the full log in WORK_DIR/logs/NAME.log.
set -uo pipefail
bin=$1 work=$2 seeds=$3
shift 3
name=$(basename "$bin")
mkdir -p "$work/corpus/$name" "$work/artifacts" "$work/logs"
log=$work/logs/$name.log
case $name in
  superblock_fuzzer) max_len=4200 ;;
  tree_checker_fuzzer) max_len=65600 ;;
  *) max_len=400000 ;;
esac
start=$SECONDS
symbolizer=$(command -v llvm-symbolizer-19 || ls /usr/lib/llvm-19/bin/llvm-symbolizer 2>/dev/null || true)
ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$symbolizer} ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$bin" -max_len=$max_len -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/artifacts/$name-" \
  "$@" "$work/corpus/$name" "$seeds" >"$log" 2>&1
rc=$?
execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
verdict=ok
if ((rc != 0)); then
  verdict=crash
  grep -q 'ERROR: LeakSanitizer' "$log" && verdict=leak
  grep -q 'ERROR: libFuzzer: timeout' "$log" && verdict=timeout
  grep -q 'ERROR: libFuzzer: out-of-memory' "$log" && verdict=oom
fi
printf '%-20s %10s execs %7s exec/s %6d s  %s  (%s)\n' "$name" "${execs:-?}" "${rate:-?}" $((SECONDS - start)) "$verdict" "$log"
if ((rc != 0)); then
  grep -m1 -E 'ERROR:|runtime error|RULE VIOLATED' "$log" || true
  grep -E 'Test unit written' "$log" || true
fi
exit $rc
