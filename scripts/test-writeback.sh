#!/usr/bin/env bash
# The writeback matrix (issue 8, acceptance 3): with the background writeback thread working on a
# small cache (cache_mb=8), a background threshold of 1 % of it (wb_ratio=1: 82 KiB) and a
# one-second periodic pass for blocks dirty for a second (wb_interval=1,wb_expire=1), so that dirty
# tree blocks are written between commits all the time, also on the small images of the fill suite, the
# POSIX suite, ubtrfs-stress 4 x 20,000 and the fill-to-full ENOSPC suite pass in each of the four
# COW configurations of the patch series, and every image they leave is check-clean (the tests'
# own check_clean_full: btrfs check original, lowmem and data checksums, a kernel read of every
# file, fsck.ubtrfs).
#
#   baseline   cow_overwrite=off wb_inhibit=off
#   overwrite  cow_overwrite=on  wb_inhibit=off   (fix 1)
#   inhibit    cow_overwrite=off wb_inhibit=on    (fix 2, the default)
#   combined   cow_overwrite=on  wb_inhibit=on
#
# Each mount's live counters are collected before its unmount (UBTRFS_STATS_JSONL); a test other
# than the (one-second) POSIX suite fails if background writeback wrote no block during it (it
# would then prove nothing about writeback), and the totals per configuration are printed: blocks written in the background, COWs,
# COWs of blocks born in the same transaction, in-place overwrites, the largest number of copies
# of one block in one transaction, reserve overruns.
#
#   scripts/test-writeback.sh                   all four configurations (about 40 minutes)
#   UBTRFS_WB_CONFIGS="baseline combined"       only these
#   UBTRFS_WB_TESTS="posix_ubtrfs stress_ubtrfs enospc_fill enospc_files enospc_concurrent"
#                                               the oracle tests run per configuration (default)
#   UBTRFS_WB_CACHE_MB=8                        the cache budget
#   UBTRFS_STRESS_NOPS=20000                    ops per stress worker (4 workers)
#   UBTRFS_BIN=DIR                              the binaries (default build/tools)
#   UBTRFS_WB_LOG_DIR=DIR                       where logs and counters are kept
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
case ${1:-} in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  '') ;;
  *) echo "usage: $0 [--help]" >&2; exit 2 ;;
esac

if [[ -z ${UBTRFS_BIN:-} ]]; then
  export UBTRFS_BIN=$src/build/tools
  [[ -x $UBTRFS_BIN/daemon/ubtrfs && -x $UBTRFS_BIN/inspect/ubtrfs-inspect ]] || scripts/build.sh "$src/build"
fi
export UBTRFS_BIN UBTRFS_SRC=$src
export UBTRFS_STRESS_NOPS=${UBTRFS_STRESS_NOPS:-20000} UBTRFS_STRESS_PROCS=${UBTRFS_STRESS_PROCS:-4}
configs=${UBTRFS_WB_CONFIGS:-baseline overwrite inhibit combined}
tests=${UBTRFS_WB_TESTS:-posix_ubtrfs stress_ubtrfs enospc_fill enospc_files enospc_concurrent}
cache_mb=${UBTRFS_WB_CACHE_MB:-8}
logs=${UBTRFS_WB_LOG_DIR:-$(mktemp -d /tmp/ubtrfs-writeback.XXXXXX)}
mkdir -p "$logs"

opts_of() {
  case $1 in
    baseline) echo cow_overwrite=off,wb_inhibit=off ;;
    overwrite) echo cow_overwrite=on,wb_inhibit=off ;;
    inhibit) echo cow_overwrite=off,wb_inhibit=on ;;
    combined) echo cow_overwrite=on,wb_inhibit=on ;;
    *) echo "unknown configuration $1" >&2; exit 2 ;;
  esac
}

failures=()
summary=()
start=$SECONDS
for c in $configs; do
  opts="cache_mb=$cache_mb,wb_ratio=1,wb_interval=1,wb_expire=1,$(opts_of "$c")"
  jsonl=$logs/$c.stats.jsonl
  : >"$jsonl"
  for t in $tests; do
    log=$logs/$c.$t.log
    t0=$SECONDS
    : >"$log.stats.jsonl"
    if UBTRFS_EXTRA_MOUNT_OPTS=$opts UBTRFS_STATS_JSONL=$log.stats.jsonl bash "tests/oracle/${t}_test.sh" >"$log" 2>&1; then
      bg=$(python3 -c 'import json,sys; print(sum(json.loads(l)["writeback"]["background_blocks_written"] for l in open(sys.argv[1]) if l.strip()))' "$log.stats.jsonl")
      echo "ok   $c $t ($((SECONDS - t0)) s, $bg blocks written in the background)"
      if [[ $t != posix_ubtrfs ]] && ((bg == 0)); then
        echo "FAIL $c $t: background writeback wrote nothing during the test"
        failures+=("$c $t: no background writeback")
      fi
    else
      echo "FAIL $c $t ($((SECONDS - t0)) s): $log"
      grep -E '^FAIL' "$log" | head -5 | sed 's/^/       /'
      failures+=("$c $t")
    fi
    cat "$log.stats.jsonl" >>"$jsonl"
  done
  # Totals over every mount of this configuration.
  if ! line=$(python3 - "$jsonl" "$c" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
tot = dict(mounts=0, bg=0, cows=0, same=0, over=0, maxblk=0, overruns=0)
for raw in open(path):
    raw = raw.strip()
    if not raw:
        continue
    j = json.loads(raw)
    c, w = j["cow"], j["writeback"]
    tot["mounts"] += 1
    tot["bg"] += w["background_blocks_written"]
    tot["cows"] += c["total"]
    tot["same"] += c["same_transaction"]
    tot["over"] += c["overwrites_in_place"]
    tot["maxblk"] = max(tot["maxblk"], c["max_per_block"])
    tot["overruns"] += j["tree_block_reservations"]["overruns"]
print(f"{name:10s} mounts={tot['mounts']} background_blocks_written={tot['bg']} cows={tot['cows']} "
      f"same_transaction={tot['same']} overwrites_in_place={tot['over']} max_copies_of_one_block={tot['maxblk']} "
      f"reserve_overruns={tot['overruns']}")
sys.exit(0 if tot["mounts"] > 0 and tot["bg"] > 0 else 1)
PY
  ); then
    echo "FAIL $c: background writeback wrote nothing (or no counters were collected): $line"
    failures+=("$c: no background writeback")
  fi
  summary+=("$line")
done
echo
echo "cache_mb=$cache_mb,wb_ratio=1,wb_interval=1,wb_expire=1, tests: $tests"
printf '%s\n' "${summary[@]}"
echo "elapsed: $((SECONDS - start)) s, logs in $logs"
if ((${#failures[@]})); then
  printf 'failed: %s\n' "${failures[@]}" >&2
  exit 1
fi
