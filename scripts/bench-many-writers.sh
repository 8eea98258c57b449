#!/usr/bin/env bash
# Many concurrent writers filling a small filesystem (xfstests generic/224's shape; not part of CI):
# N processes each `truncate -s 10M` a file of their own and `dd if=/dev/zero bs=4k conv=notrunc`
# into it until ENOSPC, on a fresh 1 GiB image — ubtrfs (mkfs.ubtrfs, the daemon) and kernel btrfs
# (mkfs.btrfs, a loop mount), one after the other for each N. Prints the seconds until every writer
# has hit ENOSPC (or "timeout" after LIMIT seconds), the bytes used then, and for ubtrfs the commits
# the reclaim thread made and the metadata tickets queued. Asserts nothing.
#
# Usage: scripts/bench-many-writers.sh [N ...]   (as root; default N: 8 16 32 100; env: LIMIT
# (default 120 s), SIZE (default 1G), BUILD=build dir, TMPDIR)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$src/build}
mkfs=$build/tools/mkfs/mkfs.ubtrfs
daemon=$build/tools/daemon/ubtrfs
inspect=$build/tools/inspect/ubtrfs-inspect
limit=${LIMIT:-120}
size=${SIZE:-1G}
for b in "$mkfs" "$daemon" "$inspect"; do [[ -x $b ]] || { echo "bench-many-writers: $b not built" >&2; exit 1; }; done
for c in mkfs.btrfs python3; do command -v "$c" >/dev/null || { echo "bench-many-writers: $c not installed" >&2; exit 1; }; done
[[ $(id -u) == 0 ]] || { echo "bench-many-writers: needs root (loop mounts)" >&2; exit 1; }
counts=("$@")
((${#counts[@]})) || counts=(8 16 32 100)

dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-many-writers.XXXXXX")
img=$dir/img
mnt=$dir/mnt
mkdir -p "$mnt"
cleanup() {
  pkill -f "of=$mnt/" 2>/dev/null || true
  if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

# fill N: starts the writers, waits up to $limit s; prints "SECONDS" or "timeout".
fill() {
  local n=$1 i t0 pids=()
  t0=$(date +%s.%N)
  for ((i = 1; i <= n; i++)); do
    (truncate -s 10M "$mnt/f$i" && dd if=/dev/zero of="$mnt/f$i" bs=4k conv=notrunc status=none 2>/dev/null) &
    pids+=($!)
  done
  local deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    local alive=0
    for i in "${pids[@]}"; do kill -0 "$i" 2>/dev/null && alive=1 && break; done
    ((alive)) || break
    sleep 0.2
  done
  if pgrep -f "of=$mnt/" >/dev/null; then
    pkill -f "of=$mnt/" || true
    wait 2>/dev/null || true
    echo timeout
  else
    wait 2>/dev/null || true
    python3 -c "import time,sys; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$t0"
  fi
}

printf '%-8s %6s %10s %12s %10s %12s\n' target N seconds used_MiB commits meta_tickets
for n in "${counts[@]}"; do
  rm -f "$img"
  "$mkfs" -q -b "$size" "$img"
  "$daemon" "$img" "$mnt" 2>/dev/null
  secs=$(fill "$n" 2>/dev/null)
  used=$(($(df -k --output=used "$mnt" | tail -1) / 1024))
  read -r commits tickets < <("$inspect" stats --json "$mnt" | python3 -c '
import json, sys
d = json.load(sys.stdin)
meta = [s for s in d["space_info"] if s["type"] == "METADATA"]
print(d["commits_by_cause"]["reclaim"], meta[0]["tickets"]["queued"] if meta else 0)')
  umount "$mnt"
  printf '%-8s %6s %10s %12s %10s %12s\n' ubtrfs "$n" "$secs" "$used" "$commits" "$tickets"

  rm -f "$img"
  truncate -s "$size" "$img"
  mkfs.btrfs -q -f "$img" >/dev/null
  mount -o loop "$img" "$mnt"
  secs=$(fill "$n" 2>/dev/null)
  used=$(($(df -k --output=used "$mnt" | tail -1) / 1024))
  umount "$mnt"
  printf '%-8s %6s %10s %12s %10s %12s\n' kernel "$n" "$secs" "$used" - -
done
