#!/usr/bin/env bash
# Side-by-side benchmark (issues 10 and 7): the same workloads against ubtrfs builds, the kernel's
# btrfs and fuse2fs, interleaved so that machine noise hits every target alike.
#
# Design. A run is ROUNDS rounds; in each round every workload runs on every target, the targets
# in an order rotated by one each round, and each (round, workload, target) gets a fresh 4 GiB
# sparse image: mkfs.ubtrfs for the ubtrfs targets and the kernel (which mounts it on a loop
# device), mkfs.ext4 for fuse2fs. A target's figure is the median over rounds; its ratio to the
# baseline (kernel btrfs) is the median of the per-round ratios, both targets measured minutes
# apart in the same round. Only the workload is timed: mkfs, mount, cache drops and setup are
# not. File data comes from memory (fio's buffers, ubtrfs-bench's buffer). The script prints
# figures; it asserts nothing about speed. Failures of one workload on one target are recorded,
# the run goes on, and the exit status is 1 at the end.
#
# Workloads (--workloads, default all; sizes in --quick in brackets):
#   seqwrite   fio: 1 GiB [32 MiB] sequential 1 MiB writes + final fsync          MiB/s
#   seqread    fio: that file read back cold (unmount, drop caches, mount)        MiB/s
#   randwrite  fio: 4 jobs of 4 KiB random writes, 128 MiB [8 MiB] per job, at
#              most 20 s [3 s], + final fsync                                     IOPS
#   prealloc   the same into files fio preallocated first (its default,
#              fallocate=native): every write lands in place in a PREALLOC extent IOPS
#   meta       ubtrfs-bench: create 20,000 [1,000] empty files in 20 dirs; unmount, drop
#              caches, mount; stat them; unlink them                             ops/s each
#   fsync      ubtrfs-bench: 5,000 [100] files of 4 KiB, each fsynced             files/s
#   append     ubtrfs-bench: 2,000 [200] appends of 4 KiB, each + fsync           p50, p99 µs
#   dbench     dbench, 4 clients, 20 s [3 s]                                      MB/s
#
# Usage: scripts/bench.sh [options]   (as root; see --help)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)

all_workloads=(seqwrite seqread randwrite prealloc meta fsync append dbench)

usage() {
  cat <<EOF
usage: scripts/bench.sh [options]

Runs the benchmark workloads against several filesystems, interleaved round by round, and prints
the median figure of each target and its median per-round ratio to kernel btrfs.

  --rounds N            rounds (default 3; --quick: 1)
  --workloads LIST      comma list of: ${all_workloads[*]} (default all)
  --targets LIST        comma list of target names (default all: every ubtrfs target, kernel,
                        fuse2fs); kernel = the kernel's btrfs on a loop device, fuse2fs = ext4
                        through fuse2fs
  --ubtrfs NAME=PATH[' -o OPTS']
                        a ubtrfs daemon build as target NAME (repeatable), with mount options of
                        its own after " -o "; without it the one target is
                        ubtrfs=build/tools/daemon/ubtrfs of this tree
  --mount-opts OPTS     -o options for the ubtrfs targets (default none)
  --fuse-uring MODE     on: the fuse module parameter enable_uring=Y for the run (restored at the
                        end), so that ubtrfs (fuse_uring=auto) serves through FUSE over io_uring;
                        off: enable_uring=N; asis: leave it (default on)
  --baseline NAME       the target ratios are taken to (default kernel, when it runs)
  --quick               tiny sizes, 1 round: checks that everything runs
  --json FILE           where to write every raw figure (default build/bench/bench-DATE.json)
  --dir DIR             where the images live (default \$TMPDIR or /tmp; needs 4 GiB sparse
                        room and up to ~1.2 GiB of real space at a time)
  --mkfs PATH           mkfs.ubtrfs for every btrfs image (default build/tools/mkfs/mkfs.ubtrfs)
  --client PATH         ubtrfs-bench (default build/tools/bench/ubtrfs-bench)
  -h, --help            this help

Workloads (full size; --quick is much smaller):
  seqwrite  1 GiB of sequential 1 MiB writes + fsync (fio), MiB/s
  seqread   the same file read cold after unmount + drop_caches + mount (fio), MiB/s
  randwrite 4 KiB random writes, 4 jobs x 128 MiB, at most 20 s, + fsync (fio), IOPS
  prealloc  the same into preallocated files (fio's default fallocate=native), IOPS
  meta      create / stat (cold) / unlink of 20,000 files in 20 directories, ops/s each
  fsync     5,000 files of 4 KiB, each followed by fsync, files/s
  append    2,000 appends of 4 KiB each followed by fsync: median and p99 latency, us
  dbench    dbench, 4 clients, 20 s, MB/s

Example, a change measured before/after in one interleaved run:
  scripts/bench.sh --ubtrfs before=/work/bin-base/daemon/ubtrfs --ubtrfs after=build/tools/daemon/ubtrfs
The writeback cache beside the default:
  scripts/bench.sh --ubtrfs ubtrfs=build/tools/daemon/ubtrfs --ubtrfs 'wbc=build/tools/daemon/ubtrfs -o writeback_cache=on'

Needs root, fio, dbench, fuse2fs (for that target), mkfs.ext4, python3, kernel btrfs and loop
devices (for the kernel target), /dev/fuse. Exit status: 0 every workload ran on every target,
1 some failed (their figures are missing), 2 bad usage or a missing requirement.
EOF
}

die_usage() { echo "bench.sh: $*" >&2; echo "try: scripts/bench.sh --help" >&2; exit 2; }

# ---- options -------------------------------------------------------------------------------------
rounds=
workloads_opt=
targets_opt=
ubtrfs_specs=()
mount_opts=
fuse_uring=on
baseline=
quick=0
json_out=
image_dir=${TMPDIR:-/tmp}
mkfs_ubtrfs=$src/build/tools/mkfs/mkfs.ubtrfs
client=$src/build/tools/bench/ubtrfs-bench
while (($#)); do
  opt=$1
  val=
  case $opt in
    --*=*) val=${opt#*=}; opt=${opt%%=*} ;;
    --rounds | --workloads | --targets | --ubtrfs | --mount-opts | --fuse-uring | --baseline | --json | --dir | --mkfs | \
      --client)
      (($# >= 2)) || die_usage "$opt needs a value"
      val=$2
      shift ;;
  esac
  case $opt in
    --rounds) rounds=$val ;;
    --workloads) workloads_opt=$val ;;
    --targets) targets_opt=$val ;;
    --ubtrfs) ubtrfs_specs+=("$val") ;;
    --mount-opts) mount_opts=$val ;;
    --fuse-uring) fuse_uring=$val ;;
    --baseline) baseline=$val ;;
    --json) json_out=$val ;;
    --dir) image_dir=$val ;;
    --mkfs) mkfs_ubtrfs=$val ;;
    --client) client=$val ;;
    --quick) quick=1 ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown option $opt" ;;
  esac
  shift
done

rounds=${rounds:-$((quick ? 1 : 3))}
[[ $fuse_uring == on || $fuse_uring == off || $fuse_uring == asis ]] ||
  die_usage "--fuse-uring wants on, off or asis, not '$fuse_uring'"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die_usage "--rounds wants a positive integer, not '$rounds'"

# Workloads, in the order of all_workloads whatever the order asked.
declare -A want_workload=()
if [[ -n $workloads_opt ]]; then
  IFS=, read -ra asked <<<"$workloads_opt"
  for w in "${asked[@]}"; do
    [[ " ${all_workloads[*]} " == *" $w "* ]] || die_usage "unknown workload '$w' (known: ${all_workloads[*]})"
    want_workload[$w]=1
  done
else
  for w in "${all_workloads[@]}"; do want_workload[$w]=1; done
fi
workloads=()
for w in "${all_workloads[@]}"; do [[ -n ${want_workload[$w]:-} ]] && workloads+=("$w"); done

# Targets: name -> kind (ubtrfs, kernel, fuse2fs) and, for ubtrfs, the daemon.
declare -A target_kind=() target_daemon=() target_opts=()
known_targets=()
((${#ubtrfs_specs[@]})) || ubtrfs_specs=("ubtrfs=$src/build/tools/daemon/ubtrfs")
for spec in "${ubtrfs_specs[@]}"; do
  [[ $spec == *=* ]] || die_usage "--ubtrfs wants NAME=PATH, not '$spec'"
  name=${spec%%=*}
  path=${spec#*=}
  opts=
  if [[ $path == *" -o "* ]]; then
    opts=${path#* -o }
    path=${path%% -o *}
  fi
  [[ $name =~ ^[A-Za-z0-9_.+-]+$ ]] || die_usage "target name '$name': letters, digits, _ . + - only"
  [[ $name != kernel && $name != fuse2fs ]] || die_usage "'$name' is a reserved target name"
  [[ -z ${target_kind[$name]:-} ]] || die_usage "target '$name' given twice"
  [[ -x $path ]] || die_usage "ubtrfs daemon '$path' (target $name) is not an executable; build it: scripts/build.sh"
  target_kind[$name]=ubtrfs
  target_daemon[$name]=$(realpath "$path")
  target_opts[$name]=$mount_opts${mount_opts:+${opts:+,}}$opts
  known_targets+=("$name")
done
target_kind[kernel]=kernel
target_kind[fuse2fs]=fuse2fs
known_targets+=(kernel fuse2fs)
targets=()
if [[ -n $targets_opt ]]; then
  IFS=, read -ra asked <<<"$targets_opt"
  for t in "${asked[@]}"; do
    [[ -n ${target_kind[$t]:-} ]] || die_usage "unknown target '$t' (known: ${known_targets[*]})"
    [[ " ${targets[*]} " == *" $t "* ]] || targets+=("$t")
  done
else
  targets=("${known_targets[@]}")
fi

# ---- requirements --------------------------------------------------------------------------------
missing() { echo "bench.sh: missing requirement: $*" >&2; exit 2; }
[[ $(id -u) == 0 ]] || missing "root (mounts, loop devices, drop_caches)"
command -v python3 >/dev/null || missing "python3"
needs_fio=0
for w in seqwrite seqread randwrite prealloc; do [[ -n ${want_workload[$w]:-} ]] && needs_fio=1; done
((needs_fio)) && { command -v fio >/dev/null || missing "fio (apt-get install fio, or scripts/install-deps.sh)"; }
dbench_loadfile=/usr/share/dbench/client.txt
if [[ -n ${want_workload[dbench]:-} ]]; then
  command -v dbench >/dev/null || missing "dbench (apt-get install dbench, or scripts/install-deps.sh)"
  [[ -r $dbench_loadfile ]] || missing "$dbench_loadfile (the dbench package)"
fi
if [[ -n ${want_workload[meta]:-}${want_workload[fsync]:-}${want_workload[append]:-} ]]; then
  [[ -x $client ]] || missing "$client (build it: ninja -C build ubtrfs-bench)"
  client=$(realpath "$client")
fi
uses_btrfs_image=0
for t in "${targets[@]}"; do
  case ${target_kind[$t]} in
    ubtrfs)
      uses_btrfs_image=1
      [[ -c /dev/fuse ]] || missing "/dev/fuse"
      command -v fusermount3 >/dev/null || missing "fusermount3 (the fuse3 package)" ;;
    kernel)
      uses_btrfs_image=1
      grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true
      grep -qw btrfs /proc/filesystems || missing "the kernel's btrfs (target kernel)"
      losetup -f >/dev/null 2>&1 || missing "a free loop device (target kernel)" ;;
    fuse2fs)
      command -v fuse2fs >/dev/null || missing "fuse2fs (apt-get install fuse2fs, or scripts/install-deps.sh)"
      command -v mkfs.ext4 >/dev/null || missing "mkfs.ext4 (e2fsprogs)"
      [[ -c /dev/fuse ]] || missing "/dev/fuse" ;;
  esac
done
if ((uses_btrfs_image)); then
  [[ -x $mkfs_ubtrfs ]] || missing "$mkfs_ubtrfs (build it: scripts/build.sh, or give --mkfs)"
  mkfs_ubtrfs=$(realpath "$mkfs_ubtrfs")
fi
# The ratios are to kernel btrfs when it runs; a --baseline must be one of the targets.
if [[ -n $baseline ]]; then
  [[ " ${targets[*]} " == *" $baseline "* ]] || die_usage "--baseline $baseline is not one of the targets (${targets[*]})"
elif [[ " ${targets[*]} " == *" kernel "* ]]; then
  baseline=kernel
fi
[[ -d $image_dir ]] || die_usage "--dir $image_dir is not a directory"
if [[ -z $json_out ]]; then
  mkdir -p "$src/build/bench"
  json_out=$src/build/bench/bench-$(date +%Y%m%d-%H%M%S).json
fi
json_out=$(realpath -m "$json_out")
mkdir -p "$(dirname "$json_out")"

# ---- sizes ---------------------------------------------------------------------------------------
if ((quick)); then
  seq_mib=32 rand_mib_per_job=8 rand_seconds=3 meta_files=1000 fsync_files=100 append_count=200 dbench_seconds=3
else
  seq_mib=1024 rand_mib_per_job=128 rand_seconds=20 meta_files=20000 fsync_files=5000 append_count=2000 dbench_seconds=20
fi
meta_dirs=20
image_size=4G

# Mounts, loop devices, daemons and images live under one root made by lib.sh (in --dir), all
# removed at exit, on failure and on Ctrl-C too (lib.sh's EXIT trap).
export TMPDIR=$image_dir
# shellcheck source=../tests/oracle/lib.sh
source "$src/tests/oracle/lib.sh"
root=$UBTRFS_TEST_ROOT
logs=$root/logs
mkdir -p "$logs"
# The raw figures go next to the JSON file as they come (a run cut short keeps what it measured);
# they move into the JSON file at the end.
records=${json_out%.json}.records.tsv  # round target workload metric unit better value seconds
failures=${json_out%.json}.failures.tsv
: >"$records"
: >"$failures"
# Then lib.sh's cleanup, which takes the exit status from $? (set by a subshell: errexit off, or
# that would end the trap there). A second Ctrl-C (or the signal a whole process group gets) must
# not cut the cleanup short.
trap 'rc=$?; trap "" INT TERM; set +e
      ((rc == 0)) || [[ ! -s $records ]] || echo "bench: stopped (exit $rc); the figures measured so far: $records" >&2
      [[ -z $uring_saved ]] || echo "$uring_saved" >"$uring_param" 2>/dev/null
      (exit $rc); _oracle_cleanup' EXIT

# FUSE over io_uring is the kernel's (fuse module parameter enable_uring, read at each mount's
# INIT); the daemon uses it when offered (fuse_uring=auto, tools/daemon/fuse_uring.h).
uring_param=/sys/module/fuse/parameters/enable_uring
uring_saved=
if [[ $fuse_uring != asis && -w $uring_param ]]; then
  uring_saved=$(cat "$uring_param")
  if [[ $fuse_uring == on ]]; then echo Y >"$uring_param"; else echo N >"$uring_param"; fi
fi
uring_state=$(cat "$uring_param" 2>/dev/null || echo absent)

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- targets: make, mount, unmount ---------------------------------------------------------------

# fs_make TARGET IMG: a fresh sparse image with the target's filesystem.
fs_make() {
  local target=$1 img=$2
  rm -f "$img"
  truncate -s "$image_size" "$img" || return 1
  case ${target_kind[$target]} in
    fuse2fs) mkfs.ext4 -F -q "$img" >"$logs/mkfs.log" 2>&1 ;;
    *) "$mkfs_ubtrfs" -f -q "$img" >"$logs/mkfs.log" 2>&1 ;;
  esac || { echo "mkfs for $target failed:" >&2; cat "$logs/mkfs.log" >&2; return 1; }
}

# fs_mount TARGET IMG MNT: returns once MNT is mounted.
fs_mount() {
  local target=$1 img=$2 mnt=$3
  case ${target_kind[$target]} in
    ubtrfs) UBTRFS_DAEMON=${target_daemon[$target]} ubtrfs_mount "$img" "$mnt" "${target_opts[$target]}" ;;
    kernel) kernel_mount "$img" "$mnt" ;;
    # fuse2fs takes the same "IMAGE MNT -f" command line: lib.sh's daemon helpers serve it.
    fuse2fs) UBTRFS_DAEMON=$(command -v fuse2fs) UBTRFS_EXTRA_MOUNT_OPTS='' ubtrfs_mount "$img" "$mnt" ;;
  esac
}

# fs_umount TARGET MNT: unmount; for a FUSE target, also wait until its daemon has exited.
fs_umount() {
  local target=$1 mnt=$2
  case ${target_kind[$target]} in
    kernel) kernel_umount "$mnt" ;;
    *) ubtrfs_umount "$mnt" ;;
  esac
}

# remount_cold TARGET IMG MNT: unmount, write back and drop every cache (the kernel's page and
# inode caches, the host's cache of the image file, the daemon's own caches), mount again.
remount_cold() {
  local target=$1 img=$2 mnt=$3
  fs_umount "$target" "$mnt" || return 1
  sync
  echo 3 >/proc/sys/vm/drop_caches
  fs_mount "$target" "$img" "$mnt"
}

# settle: write back whatever the setup left dirty, so that it is not timed with the workload.
settle() { sync; }

# ---- results -------------------------------------------------------------------------------------
cur_round=0
cur_target=
cur_workload=

# record METRIC UNIT BETTER VALUE [SECONDS]: one raw figure of the current round/target/workload.
record() {
  local metric=$1 unit=$2 better=$3 value=$4 secs=${5:-}
  if ! [[ $value =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    echo "$cur_workload on $cur_target: $metric is '$value', not a number" >&2
    return 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cur_round" "$cur_target" "$cur_workload" "$metric" \
    "$unit" "$better" "$value" "$secs" >>"$records"
  printf '  %-10s %-9s %-12s %12s %s\n' "$cur_target" "$cur_workload" "$metric" "$value" "$unit" >&2
}

# json_get FILE EXPR: a field of a JSON file (EXPR is python over d), printed.
json_get() {
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# client_get OUTPUT NAME: the figure NAME from ubtrfs-bench's "NAME VALUE" output.
client_get() { awk -v n="$2" '$1 == n { print $2; found = 1 } END { exit !found }' <<<"$1"; }

# ---- workloads -----------------------------------------------------------------------------------
# Each runs on a fresh, mounted, settled image; takes TARGET IMG MNT; records its figures; returns
# non-zero on failure (with what it saw on stderr). Explicit "|| return 1": errexit does not
# apply inside a function called from a condition.

fio_common=(--ioengine=psync --fallocate=none --output-format=json)

# run_fio LOG ARGS...: fio writing its JSON report to LOG.json, its messages to LOG.err.
run_fio() {
  local log=$1
  shift
  # The common options first: a job's own options (after its --name) override them.
  if ! fio "${fio_common[@]}" "$@" --output="$log.json" >"$log.err" 2>&1; then
    echo "fio failed:" >&2
    tail -n 20 "$log.err" >&2
    return 1
  fi
}

wl_seqwrite() {
  local mnt=$3 log=$logs/seqwrite-$cur_round-$cur_target mibs
  run_fio "$log" --name=seqwrite --filename="$mnt/seq" --rw=write --bs=1M --size="${seq_mib}M" --end_fsync=1 || return 1
  mibs=$(json_get "$log.json" 'round(d["jobs"][0]["write"]["bw"] / 1024, 1)') || return 1
  record throughput MiB/s higher "$mibs" "$(json_get "$log.json" 'd["jobs"][0]["job_runtime"] / 1000')" || return 1
}

wl_seqread() {
  local target=$1 img=$2 mnt=$3 log=$logs/seqread-$cur_round-$cur_target mibs
  if [[ ! -f $mnt/seq ]]; then  # seqwrite did not run before on this image: write the file, untimed
    run_fio "$log.prep" --name=prep --filename="$mnt/seq" --rw=write --bs=1M --size="${seq_mib}M" --end_fsync=1 || return 1
  fi
  remount_cold "$target" "$img" "$mnt" || return 1
  run_fio "$log" --name=seqread --filename="$mnt/seq" --rw=read --bs=1M --size="${seq_mib}M" || return 1
  mibs=$(json_get "$log.json" 'round(d["jobs"][0]["read"]["bw"] / 1024, 1)') || return 1
  record throughput MiB/s higher "$mibs" "$(json_get "$log.json" 'd["jobs"][0]["job_runtime"] / 1000')" || return 1
}

wl_randwrite() {
  local mnt=$3 log=$logs/randwrite-$cur_round-$cur_target iops
  run_fio "$log" --name=randwrite --directory="$mnt" --rw=randwrite --bs=4k --numjobs=4 \
    --size="${rand_mib_per_job}M" --runtime="$rand_seconds" --end_fsync=1 --group_reporting || return 1
  iops=$(json_get "$log.json" 'round(d["jobs"][0]["write"]["iops"], 1)') || return 1
  record iops IOPS higher "$iops" "$(json_get "$log.json" 'd["jobs"][0]["job_runtime"] / 1000')" || return 1
}

# prealloc: randwrite into files fio preallocates (fallocate=native, what fio does by default and
# what databases and VM images do), so every write goes in place into a PREALLOC extent.
wl_prealloc() {
  local mnt=$3 log=$logs/prealloc-$cur_round-$cur_target iops
  run_fio "$log" --name=prealloc --directory="$mnt" --rw=randwrite --bs=4k --numjobs=4 \
    --size="${rand_mib_per_job}M" --runtime="$rand_seconds" --end_fsync=1 --group_reporting \
    --fallocate=native || return 1
  iops=$(json_get "$log.json" 'round(d["jobs"][0]["write"]["iops"], 1)') || return 1
  record iops IOPS higher "$iops" "$(json_get "$log.json" 'd["jobs"][0]["job_runtime"] / 1000')" || return 1
}

# run_client WHAT ARGS...: ubtrfs-bench, its output printed (its errors on stderr).
run_client() {
  local out
  if ! out=$("$client" "$@" 2>"$logs/client.err"); then
    echo "ubtrfs-bench $1 failed: $(cat "$logs/client.err")" >&2
    return 1
  fi
  echo "$out"
}

wl_meta() {
  local target=$1 img=$2 mnt=$3 out phase
  local args=(--files "$meta_files" --dirs "$meta_dirs")
  mkdir -p "$mnt/meta" || return 1
  for phase in create stat unlink; do
    # stat is cold: a warm kernel would answer it from its own caches, not the filesystem's.
    if [[ $phase == stat ]]; then remount_cold "$target" "$img" "$mnt" || return 1; fi
    out=$(run_client "$phase" "$mnt/meta" "${args[@]}") || return 1
    record "$phase" ops/s higher "$(client_get "$out" ops_per_s)" "$(client_get "$out" seconds)" || return 1
  done
}

wl_fsync() {
  local mnt=$3 out
  mkdir -p "$mnt/fsync" || return 1
  out=$(run_client fsync-files "$mnt/fsync" --files "$fsync_files" --size 4096) || return 1
  record files files/s higher "$(client_get "$out" files_per_s)" "$(client_get "$out" seconds)" || return 1
}

wl_append() {
  local mnt=$3 out
  out=$(run_client append "$mnt" --count "$append_count" --size 4096) || return 1
  record p50 us lower "$(client_get "$out" p50_us)" || return 1
  record p99 us lower "$(client_get "$out" p99_us)" || return 1
}

wl_dbench() {
  local mnt=$3 log=$logs/dbench-$cur_round-$cur_target mbs
  mkdir -p "$mnt/dbench" || return 1
  if ! dbench -D "$mnt/dbench" -c "$dbench_loadfile" -t "$dbench_seconds" 4 >"$log" 2>&1; then
    echo "dbench failed:" >&2
    tail -n 20 "$log" >&2
    return 1
  fi
  # "Throughput 123.45 MB/sec  4 clients  4 procs  max_latency=12.345 ms"
  mbs=$(awk '$1 == "Throughput" && $3 == "MB/sec" { print $2 }' "$log")
  [[ -n $mbs ]] || { echo "no throughput in the dbench output:" >&2; tail -n 5 "$log" >&2; return 1; }
  record throughput MB/s higher "$mbs" "$dbench_seconds" || return 1
}

# Groups of workloads that share one image: seqread reads the file seqwrite wrote.
groups=()
seq_group=
for w in "${workloads[@]}"; do
  case $w in
    seqwrite | seqread) seq_group+=${seq_group:+,}$w ;;
    *) groups+=("$w") ;;
  esac
done
[[ -n $seq_group ]] && groups=("$seq_group" "${groups[@]}")

# run_group TARGET GROUP: fresh image, mount, each workload of GROUP, unmount, image removed. A
# workload that fails is recorded with those of the group it left unrun.
run_group() {
  local target=$1 group=$2 img dir mnt w log i rc=0
  local -a ws
  IFS=, read -ra ws <<<"$group"
  dir=$root/r$cur_round-$target
  img=$dir/image
  mnt=$dir/mnt
  mkdir -p "$mnt"
  for ((i = 0; i < ${#ws[@]}; i++)); do
    w=${ws[$i]}
    cur_workload=$w
    if ((i == 0)); then
      if ! fs_make "$target" "$img" || ! fs_mount "$target" "$img" "$mnt"; then
        rc=1
        break
      fi
    fi
    settle
    if ! "wl_$w" "$target" "$img" "$mnt"; then
      rc=1
      if [[ ${target_kind[$target]} != kernel ]] && log=$(ubtrfs_log "$mnt") && [[ -s $log ]]; then
        echo "--- last lines of the $target daemon log:" >&2
        tail -n 15 "$log" >&2
      fi
      break
    fi
  done
  if is_mounted "$mnt" && ! fs_umount "$target" "$mnt"; then
    echo "bench: unmount of $target failed (round $cur_round, $group)" >&2
    ((rc)) || i=$((${#ws[@]} - 1))  # every workload ran: the last one is charged with it
    rc=1
  fi
  rm -f "$img"
  if ((rc)); then
    for ((; i < ${#ws[@]}; i++)); do
      printf '%s\t%s\t%s\n' "$cur_round" "$target" "${ws[$i]}" >>"$failures"
      echo "FAILED: ${ws[$i]} on $target (round $cur_round)" >&2
    done
  fi
  return $rc
}

# ---- the run -------------------------------------------------------------------------------------
load_start=$(loadavg)
started=$(date -Iseconds)
t0=$SECONDS
echo "bench: ${#targets[@]} targets (${targets[*]}), workloads ${workloads[*]}, $rounds round(s)$( ((quick)) && echo ', quick sizes')" >&2
echo "bench: images in $root; load average at start: $load_start" >&2
round_loads=()
for ((r = 1; r <= rounds; r++)); do
  cur_round=$r
  n=${#targets[@]}
  order=()
  for ((i = 0; i < n; i++)); do order+=("${targets[$(((i + r - 1) % n))]}"); done
  round_loads+=("$(loadavg)")
  echo "=== round $r/$rounds: target order ${order[*]}; load average ${round_loads[-1]}" >&2
  for group in "${groups[@]}"; do
    for target in "${order[@]}"; do
      cur_target=$target
      run_group "$target" "$group" || true
    done
  done
done
load_end=$(loadavg)
elapsed=$((SECONDS - t0))

# Metadata of the run for the report, then the tables and the JSON file.
targets_tsv=$root/targets.tsv
: >"$targets_tsv"
for t in "${targets[@]}"; do
  case ${target_kind[$t]} in
    ubtrfs) desc="${target_daemon[$t]}${target_opts[$t]:+ -o ${target_opts[$t]}} (fuse enable_uring=$uring_state)" ;;
    kernel) desc="kernel btrfs $(uname -r), loop device" ;;
    fuse2fs) desc="$(fuse2fs -V 2>&1 | awk 'NR == 1' | tr -d '\t'), ext4" ;;
  esac
  printf '%s\t%s\t%s\n' "$t" "${target_kind[$t]}" "$desc" >>"$targets_tsv"
done
python3 "$src/scripts/bench/report.py" --records "$records" --failures "$failures" --targets "$targets_tsv" \
  --json "$json_out" --baseline "$baseline" --rounds "$rounds" --quick "$quick" \
  --started "$started" --elapsed "$elapsed" --load-start "$load_start" --load-end "$load_end" \
  --round-loads "$(IFS=';'; echo "${round_loads[*]}")" \
  --sizes "seq_mib=$seq_mib rand_mib_per_job=$rand_mib_per_job rand_seconds=$rand_seconds meta_files=$meta_files meta_dirs=$meta_dirs fsync_files=$fsync_files append_count=$append_count dbench_seconds=$dbench_seconds image=$image_size" \
  --commit "$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
rm -f "$records"
if [[ -s $failures ]]; then
  # The run's logs (fio, dbench, ubtrfs-bench, the daemons') outlive the image root for a look.
  kept=${json_out%.json}-logs
  mkdir -p "$kept"
  cp -r "$logs"/. "$kept"/ 2>/dev/null || true
  cp "$root"/daemon.*.log "$kept"/ 2>/dev/null || true
  echo "logs of the failed run: $kept" >&2
  rm -f "$failures"
  exit 1
fi
rm -f "$failures"
