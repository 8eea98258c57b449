#!/usr/bin/env bash
# scripts/bench.sh --quick runs end to end: every workload produces a positive figure on the
# ubtrfs daemon of this build (and on the kernel's btrfs when it is there; required under
# UBTRFS_REQUIRE_ORACLES=1), and the JSON file of raw figures parses. It asserts nothing about
# speed. Skipped (77) without root, FUSE, fio or dbench.
source "$(dirname "$0")/lib.sh"

require_ubtrfs
command -v fio >/dev/null || skip_or_fail "fio not installed (scripts/install-deps.sh)"
command -v dbench >/dev/null || skip_or_fail "dbench not installed (scripts/install-deps.sh)"
[[ -r /usr/share/dbench/client.txt ]] || skip_or_fail "dbench's client.txt not installed"
client=$UBTRFS_BIN/bench/ubtrfs-bench
mkfs=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
[[ -x $client ]] || skip_or_fail "ubtrfs-bench not built at $client"
[[ -x $mkfs ]] || skip_or_fail "mkfs.ubtrfs not built at $mkfs"

targets=ubtrfs
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true
if grep -qw btrfs /proc/filesystems && losetup -f >/dev/null 2>&1; then
  targets+=,kernel
elif [[ ${UBTRFS_REQUIRE_ORACLES:-0} == 1 ]]; then
  require_kernel_btrfs
fi

json=$(make_tmpdir)/bench.json
out=$(make_tmpdir)/bench.out
start=$SECONDS
rc=0
# --fuse-uring asis: the module parameter is not this test's to change (fuse_uring_test.sh may run beside it).
TMPDIR=$UBTRFS_TEST_ROOT "$UBTRFS_SRC/scripts/bench.sh" --quick --fuse-uring asis --targets "$targets" \
  --ubtrfs "ubtrfs=$UBTRFS_DAEMON" --mkfs "$mkfs" --client "$client" --json "$json" >"$out" 2>&1 || rc=$?
echo "bench.sh --quick --targets $targets: exit $rc in $((SECONDS - start)) s"
if ((rc == 0)); then pass "bench.sh --quick exits 0"; else failed "bench.sh --quick exit $rc"; tail -n 40 "$out" >&2; fi

# Every figure of every workload, positive, on every target; the JSON parses.
if verdict=$(python3 - "$json" "$targets" <<'PY' 2>&1
import json, sys
doc = json.load(open(sys.argv[1]))
targets = sys.argv[2].split(",")
want = ["seqwrite.throughput", "seqread.throughput", "randwrite.iops", "prealloc.iops", "meta.create", "meta.stat",
        "meta.unlink", "fsync.files", "append.p50", "append.p99", "dbench.throughput"]
bad = []
for t in targets:
    got = {f'{r["workload"]}.{r["metric"]}': r["value"] for r in doc["results"] if r["target"] == t}
    for f in want:
        if not got.get(f, 0) > 0:
            bad.append(f"{t}: {f} = {got.get(f)}")
if doc["failures"]:
    bad.append(f"failures recorded: {doc['failures']}")
if len(doc["load_average"]["start"]) != 3 or len(doc["load_average"]["end"]) != 3:
    bad.append("load averages missing")
print("\n".join(bad) if bad else f"{len(want)} figures on {len(targets)} target(s)")
sys.exit(1 if bad else 0)
PY
); then
  pass "every workload produced a positive figure on every target: $verdict"
else
  failed "figures missing or not positive: $verdict"
  tail -n 40 "$out" >&2
fi
finish
