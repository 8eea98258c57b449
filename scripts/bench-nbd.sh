#!/usr/bin/env bash
# NBD benchmark (issue 14, acceptance 3; not part of CI): the ubtrfs daemon on an image behind
# nbdkit (file plugin, unix socket) with the delay filter at 0 ms and at 1 ms per read and write
# request, beside the same daemon on a local image file. Prints one table; asserts nothing.
#
# Workloads, each on a fresh 4 GiB sparse image (mkfs.ubtrfs through the URI or on the file):
#   seqwrite  fio: SEQ_MIB (default 1024) MiB of sequential 1 MiB writes + final fsync   MiB/s
#   seqread   that file read back cold (unmount, drop caches, mount) with fio           MiB/s
#   fsync     ubtrfs-bench fsync-files: FILES (default 5000) files of 4 KiB, each fsynced  files/s
# The last columns give each NBD figure as a percentage of the 0 ms one (the issue's goal: at
# 1 ms, sequential throughput at least 50 % of 0 ms — which takes requests in flight).
#
# Usage: scripts/bench-nbd.sh   (as root; env: SEQ_MIB, FILES, BUILD=build dir, TMPDIR)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$src/build}
mkfs=$build/tools/mkfs/mkfs.ubtrfs
daemon=$build/tools/daemon/ubtrfs
client=$build/tools/bench/ubtrfs-bench
seq_mib=${SEQ_MIB:-1024}
files=${FILES:-5000}
for b in "$mkfs" "$daemon" "$client"; do [[ -x $b ]] || { echo "bench-nbd: $b not built" >&2; exit 1; }; done
for c in nbdkit fio fusermount3; do command -v "$c" >/dev/null || { echo "bench-nbd: $c not installed" >&2; exit 1; }; done
[[ $(id -u) == 0 ]] || { echo "bench-nbd: needs root (mounts, drop_caches)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-nbd.XXXXXX")
img=$dir/img
sock=$dir/nbd.sock
mnt=$dir/mnt
mkdir -p "$mnt"
nbdkit_pid=
daemon_pid=

stop_nbdkit() {
  [[ -n $nbdkit_pid ]] || return 0
  kill "$nbdkit_pid" 2>/dev/null || true
  wait "$nbdkit_pid" 2>/dev/null || true
  nbdkit_pid=
}
fs_umount() {
  [[ -n $daemon_pid ]] || return 0
  fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
}
cleanup() {
  fs_umount
  stop_nbdkit
  rm -rf "$dir"
}
trap cleanup EXIT

# start_nbdkit DELAY_MS
start_nbdkit() {
  local delay=$1
  rm -f "$sock"
  local filter=()
  ((delay > 0)) && filter=(--filter=delay)
  nbdkit -f --exit-with-parent -U "$sock" "${filter[@]}" file "$img" \
    ${filter:+delay-read=${delay}ms delay-write=${delay}ms} >"$dir/nbdkit.log" 2>&1 &
  nbdkit_pid=$!
  until [[ -S $sock ]]; do sleep 0.02; done
}

# fs_mount SOURCE
fs_mount() {
  "$daemon" "$1" "$mnt" -f >>"$dir/daemon.log" 2>&1 &
  daemon_pid=$!
  until awk -v m="$mnt" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; do
    kill -0 "$daemon_pid" 2>/dev/null || { echo "bench-nbd: mount of $1 failed:" >&2; tail -n 5 "$dir/daemon.log" >&2; exit 1; }
    sleep 0.05
  done
}

fio_mibs() {  # fio_mibs RW: MiB/s of one fio run on $mnt/seq
  local rw=$1 json
  json=$(fio --name="$rw" --filename="$mnt/seq" --rw="$rw" --bs=1M --size="${seq_mib}M" --ioengine=psync \
    --fallocate=none --output-format=json ${2:+--end_fsync=1})
  python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("%.0f" % (j[sys.argv[1]]["bw_bytes"] / 2**20))' \
    "$([[ $rw == write ]] && echo write || echo read)" <<<"$json"
}

declare -A fig
for target in local nbd-0ms nbd-1ms; do
  rm -f "$img"
  truncate -s 4G "$img"
  source_path=$img
  case $target in
    nbd-0ms) start_nbdkit 0; source_path="nbd+unix:///?socket=$sock" ;;
    nbd-1ms) start_nbdkit 1; source_path="nbd+unix:///?socket=$sock" ;;
  esac
  "$mkfs" -q "$source_path"
  fs_mount "$source_path"
  fig[$target,seqwrite]=$(fio_mibs write fsync)
  fs_umount
  sync
  echo 3 >/proc/sys/vm/drop_caches
  fs_mount "$source_path"
  fig[$target,seqread]=$(fio_mibs read)
  mkdir -p "$mnt/fsync"
  out=$("$client" fsync-files "$mnt/fsync" --files "$files" --size 4096)
  fig[$target,fsync]=$(awk '$1 == "files_per_s" { printf "%.0f", $2 }' <<<"$out")
  fs_umount
  stop_nbdkit
  echo "  $target: seqwrite ${fig[$target,seqwrite]} MiB/s, seqread ${fig[$target,seqread]} MiB/s, fsync ${fig[$target,fsync]} files/s" >&2
done

pct() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{100 * a / b:.0f} %' if b else '-')" "$1" "$2"; }
printf '\n%-36s %10s %10s %10s %12s\n' "workload ($seq_mib MiB, $files files)" local nbd-0ms nbd-1ms "1ms vs 0ms"
for w in seqwrite seqread fsync; do
  unit=MiB/s
  [[ $w == fsync ]] && unit=files/s
  printf '%-36s %10s %10s %10s %12s\n' "$w ($unit)" "${fig[local,$w]}" "${fig[nbd-0ms,$w]}" "${fig[nbd-1ms,$w]}" \
    "$(pct "${fig[nbd-1ms,$w]}" "${fig[nbd-0ms,$w]}")"
done
