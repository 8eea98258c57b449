#!/usr/bin/env bash
# The writeback-cache matrix (issue 10: "correctness does not move" with -o writeback_cache=on):
# the POSIX suite, ubtrfs-stress (4 processes; the kernel's read of the image and a remount compared
# with the model) and the fill-to-full suite on 1 GiB DUP images (fill, parallel, concurrent,
# files: the smallest size where the daemon keeps the cache on) — with the daemon built normally,
# under ASan+UBSan and under TSan. The sanitizer daemons serve through FUSE over io_uring where the
# kernel has it (enable_uring=Y for their runs, restored at exit), as in scripts/test.sh.
#
#   scripts/test-writeback-cache.sh             everything (about 30 minutes on 2 cores)
#   UBTRFS_WBC_DAEMONS="normal tsan"            only these daemons (normal, asan, tsan)
#   UBTRFS_WBC_TESTS="posix_ubtrfs stress_ubtrfs writeback_cache_enospc enospc_files"
#                                               the oracle tests run on the normal daemon (default)
#   UBTRFS_WBC_SAN_TESTS="posix_ubtrfs stress_ubtrfs writeback_cache_enospc"
#                                               those run on the sanitizer daemons (default: the
#                                               files scenario, 4 KiB files until a 1 GiB device
#                                               is full, takes 7 minutes on the normal daemon)
#   UBTRFS_BIN=DIR                              the normal tree's tools (default build/tools)
#   UBTRFS_ASAN_DIR, UBTRFS_TSAN_DIR            the sanitizer trees (default build-asan,
#                                               build-tsan; built when their daemon is missing)
#   UBTRFS_STRESS_NOPS / UBTRFS_ASAN_STRESS_NOPS / UBTRFS_TSAN_STRESS_NOPS
#                                               ops per stress worker (20000 / 2000 / 1000)
#   UBTRFS_WBC_LOG_DIR=DIR                      where the logs are kept
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
case ${1:-} in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  '') ;;
  *) echo "usage: $0 [--help]" >&2; exit 2 ;;
esac
[[ $(id -u) == 0 ]] || { echo "$0: run as root (loop devices, kernel mounts)" >&2; exit 2; }

if [[ -z ${UBTRFS_BIN:-} ]]; then
  UBTRFS_BIN=$src/build/tools
  [[ -x $UBTRFS_BIN/daemon/ubtrfs && -x $UBTRFS_BIN/inspect/ubtrfs-inspect ]] || scripts/build.sh "$src/build"
fi
export UBTRFS_BIN UBTRFS_SRC=$src
daemons=${UBTRFS_WBC_DAEMONS:-normal asan tsan}
normal_tests=${UBTRFS_WBC_TESTS:-posix_ubtrfs stress_ubtrfs writeback_cache_enospc enospc_files}
san_tests=${UBTRFS_WBC_SAN_TESTS:-posix_ubtrfs stress_ubtrfs writeback_cache_enospc}
logs=${UBTRFS_WBC_LOG_DIR:-$(mktemp -d /tmp/ubtrfs-writeback-cache.XXXXXX)}
mkdir -p "$logs"

uring_param=/sys/module/fuse/parameters/enable_uring
uring_saved=''
[[ -w $uring_param ]] && uring_saved=$(cat "$uring_param")
restore_uring() { [[ -n $uring_saved ]] && echo "$uring_saved" >"$uring_param" 2>/dev/null || true; }
trap restore_uring EXIT

# daemon_of NAME: the daemon binary of that tree (built when missing).
daemon_of() {
  local dir san
  case $1 in
    normal) echo "$UBTRFS_BIN/daemon/ubtrfs"; return ;;
    asan) dir=${UBTRFS_ASAN_DIR:-$src/build-asan} san=address ;;
    tsan) dir=${UBTRFS_TSAN_DIR:-$src/build-tsan} san=thread ;;
    *) echo "unknown daemon $1" >&2; exit 2 ;;
  esac
  [[ -x $dir/tools/daemon/ubtrfs ]] || scripts/build.sh "$dir" -DUBTRFS_SANITIZE="$san" >"$logs/build-$1.log" 2>&1
  echo "$dir/tools/daemon/ubtrfs"
}

failures=()
start=$SECONDS
for d in $daemons; do
  daemon=$(daemon_of "$d")
  nops=${UBTRFS_STRESS_NOPS:-20000}
  env=(UBTRFS_DAEMON="$daemon" UBTRFS_EXTRA_MOUNT_OPTS=writeback_cache=on UBTRFS_ENOSPC_CONFIGS=1G:dup)
  case $d in
    asan)
      nops=${UBTRFS_ASAN_STRESS_NOPS:-2000}
      env+=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
            UBTRFS_UMOUNT_TIMEOUT=900 UBTRFS_ENOSPC_DEADLINE=1800) ;;
    tsan)
      nops=${UBTRFS_TSAN_STRESS_NOPS:-1000}
      env+=(TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 UBTRFS_UMOUNT_TIMEOUT=900 UBTRFS_ENOSPC_DEADLINE=1800) ;;
  esac
  env+=(UBTRFS_STRESS_NOPS="$nops")
  if [[ -n $uring_saved ]]; then
    if [[ $d == normal ]]; then restore_uring; else echo Y >"$uring_param"; fi
  fi
  tests=$san_tests
  [[ $d == normal ]] && tests=$normal_tests
  for t in $tests; do
    log=$logs/$d.$t.log
    t0=$SECONDS
    if env "${env[@]}" bash "tests/oracle/${t}_test.sh" >"$log" 2>&1; then
      echo "ok   $d $t ($((SECONDS - t0)) s; $(grep -cE '^ok' "$log") checks)"
    else
      echo "FAIL $d $t ($((SECONDS - t0)) s): $log"
      grep -E '^FAIL' "$log" | head -5 | sed 's/^/       /'
      failures+=("$d $t")
    fi
  done
done
echo "elapsed: $((SECONDS - start)) s, logs in $logs"
if ((${#failures[@]})); then
  printf 'failed: %s\n' "${failures[@]}" >&2
  exit 1
fi
