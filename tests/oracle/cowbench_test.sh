#!/usr/bin/env bash
# ubtrfs-cowbench end to end (issue 8, the seed's COW table): a short in-process run of the
# four configurations on fresh 4 KiB-node images under a 4 MiB cache with
# background writeback, a fixed operation count each, then its --json document must show
#   - every configuration present with every count (max_cow_per_block, max_cow_per_block_per_handle,
#     max_cow_per_search, cows,
#     ops, the four restart sites, reserve_overruns, spurious_enospc, bytes_written), ops > 0;
#   - the fs tree deep enough (root level >= 2) for the restarts the seed describes;
#   - the amplification and its cure: baseline max_cow_per_block > combined's, inhibit's >=
#     combined's, overwrite's and combined's exactly 1 (no block copied twice in one transaction);
#   - what fix 2 guarantees: inhibit copies no block more than twice in one transaction
#     (max_cow_per_block <= 2: the handle's inhibitor keeps background writeback off what a running
#     operation copied, and the transaction scope holds a block's second copy for the commit —
#     tree/tree_root.h wb_hold_recopied), so baseline's max_cow_per_block > inhibit's >= combined's;
#     and no more than twice within one handle (max_cow_per_block_per_handle <= 2);
#   - the seed's ENOSPC consequence absent where the fixes are on: combined takes no tree block
#     outside a reservation (reserve_overruns 0) and no configuration fails an operation with
#     ENOSPC while the device has plenty of unallocated space (spurious_enospc 0);
#   - no unexpected operation error, no aborted transaction, a clean unmount, and `btrfs check`
#     clean on every image.
# Counts only, never times. Needs root and btrfs-progs (btrfs check): otherwise skipped (77), or
# failed under UBTRFS_REQUIRE_ORACLES=1.
#
# Usage: UBTRFS_BIN=<build>/tools bash tests/oracle/cowbench_test.sh
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COWBENCH=$UBTRFS_BIN/cowbench/ubtrfs-cowbench
[[ -x $COWBENCH ]] || { echo "FAIL: $COWBENCH not built" >&2; exit 1; }
require_btrfs_check

tmp=$(make_tmpdir)
json=$tmp/cowbench.json
err=$tmp/cowbench.err
start=$SECONDS
rc=0
# --seconds is only a safety stop: each configuration normally ends at --ops.
"$COWBENCH" --json --workdir "$tmp" --configs baseline,overwrite,inhibit,combined --nodesize 4096 --cache-mb 4 \
  --threads 8 --ops 12000 --seconds 30 --image-size 2G --files 2000 --progress 0 >"$json" 2>"$err" || rc=$?
echo "ubtrfs-cowbench: exit $rc in $((SECONDS - start)) s"
if ((rc == 0)); then pass "ubtrfs-cowbench exits 0"; else failed "ubtrfs-cowbench exit $rc"; tail -n 30 "$err" >&2; fi

if verdict=$(python3 - "$json" <<'PY' 2>&1
import json, os, sys
doc = json.load(open(sys.argv[1]))
assert list(doc) == ["configs"], f"top-level keys {list(doc)}"
rows = {c["name"]: c for c in doc["configs"]}
bad = []
want = ["baseline", "overwrite", "inhibit", "combined"]
if sorted(rows) != sorted(want):
    bad.append(f"configurations {sorted(rows)}, want {want}")
counts = ["max_cow_per_block", "max_cow_per_block_per_handle", "max_cow_per_search", "cows", "ops", "reserve_overruns", "spurious_enospc",
          "bytes_written"]
for name in want:
    c = rows.get(name)
    if c is None:
        continue
    for k in counts:
        if not isinstance(c.get(k), int) or c[k] < 0:
            bad.append(f"{name}: {k} = {c.get(k)!r}")
    for k in ["write_lock", "setup_nodes", "slot_zero", "read_block"]:
        if not isinstance(c.get("restarts", {}).get(k), int):
            bad.append(f"{name}: restarts.{k} = {c.get('restarts', {}).get(k)!r}")
    if not c.get("ops", 0) > 0:
        bad.append(f"{name}: ops = {c.get('ops')}")
    if not c.get("cows", 0) > 0 or not c.get("bytes_written", 0) > 0:
        bad.append(f"{name}: cows {c.get('cows')}, bytes_written {c.get('bytes_written')}: nothing happened")
    if c["fs_tree_level"]["before"] < 2:
        bad.append(f"{name}: fs tree root level {c['fs_tree_level']['before']} < 2")
    if c["check"] != "clean":
        bad.append(f"{name}: btrfs check {c['check']}: {c['check_detail']}")
    if c["other_errors"] or c["aborted"] or c["unmount_error"]:
        bad.append(f"{name}: {c['other_errors']} errors, aborted {c['aborted']}, unmount '{c['unmount_error']}', "
                   f"first error '{c['first_error']}'")
if not bad:
    b, o, i, m = (rows[n]["max_cow_per_block"] for n in want)
    if not (b > m and i >= m):
        bad.append(f"max_cow_per_block baseline {b} > combined {m} and inhibit {i} >= combined {m} does not hold")
    if not b > i:
        bad.append(f"max_cow_per_block baseline {b} > inhibit {i} does not hold")
    if i > 2:
        bad.append(f"inhibit max_cow_per_block = {i}, want <= 2 (fix 2's transaction scope)")
    if m != 1 or o != 1:
        bad.append(f"max_cow_per_block overwrite {o}, combined {m}: want 1")
    ih = rows["inhibit"]["max_cow_per_block_per_handle"]
    if ih > 2:
        bad.append(f"inhibit max_cow_per_block_per_handle = {ih}, want <= 2")
    for n in want:
        if rows[n]["spurious_enospc"] != 0:
            bad.append(f"{n}: spurious_enospc = {rows[n]['spurious_enospc']}, want 0 (plenty of unallocated space)")
    if rows["combined"]["reserve_overruns"] != 0:
        bad.append(f"combined reserve_overruns = {rows['combined']['reserve_overruns']} "
                   f"({rows['combined'].get('reserve_overruns_by_reserve')}), want 0")
    if rows["combined"]["max_cow_per_block_per_handle"] != 1:
        bad.append(f"combined max_cow_per_block_per_handle = {rows['combined']['max_cow_per_block_per_handle']}, want 1")
summary = ", ".join(f"{n}: max/blk {rows[n]['max_cow_per_block']} max/handle {rows[n]['max_cow_per_block_per_handle']} "
                    f"ops {rows[n]['ops']} overruns {rows[n]['reserve_overruns']} "
                    f"unfunded ref runs deferred {rows[n].get('delayed_refs_runs_deferred')}" for n in want if n in rows)
print("\n".join(bad) if bad else summary)
sys.exit(1 if bad else 0)
PY
); then
  pass "amplification in baseline, none with fix 1, fix 2 bounds copies to 2 per transaction, combined within its reservations, every image check-clean: $verdict"
else
  failed "$verdict"
  tail -n 30 "$err" >&2
fi
finish
