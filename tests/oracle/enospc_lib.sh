# shellcheck shell=bash
# Shared by the enospc_*_test.sh fill-to-full tests (issue 7, acceptance 2 and 3); sourced after
# lib.sh. Not a test itself (ctest runs *_test.sh only).
#
# One case = one scenario of enospc/workload.py on one image configuration (size, metadata profile):
#   1. the kernel's reference run, when the criterion compares with the kernel (or always with
#      UBTRFS_ENOSPC_FULL=1, for the side-by-side figures): a fresh image from the same mkfs.ubtrfs
#      command, loop-mounted by the kernel, the same workload; only its figures are used;
#   2. the run under test: a fresh image, mounted by the ubtrfs daemon (the kernel with
#      UBTRFS_FS=kernel), the workload, the unmount (the daemon must exit 0: its final commit);
#   3. check_clean_full on the image (btrfs check original + lowmem + --check-data-csum, a kernel
#      read of every file, fsck.ubtrfs);
#   4. enospc/verify.py on a kernel read-only mount of the image: every acknowledged byte, every
#      file, directory and xattr of the manifest;
#   5. enospc/judge.py: the scenario's criteria, each printed with the figures it measured.
#
# Matrix: UBTRFS_ENOSPC_FULL=1 runs every size (128M 256M 1G) x metadata profile (dup single), and
# 64M with mixed block groups (mixed, mixed-dup);
# otherwise the CI subset the test names. UBTRFS_ENOSPC_CONFIGS="128M:dup 1G:single" picks
# configurations explicitly. UBTRFS_ENOSPC_DEADLINE: seconds a workload may run (default 300 in
# CI, 1800 in the full matrix); a workload that does not finish in time is a failure.
ENOSPC_PY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/enospc
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
# A daemon that cannot finish its final commit is a failure found in minutes, not ten.
UBTRFS_UMOUNT_TIMEOUT=${UBTRFS_UMOUNT_TIMEOUT:-300}

enospc_full() { [[ ${UBTRFS_ENOSPC_FULL:-0} == 1 ]]; }

if enospc_full; then
  ENOSPC_DEADLINE=${UBTRFS_ENOSPC_DEADLINE:-1800}
else
  ENOSPC_DEADLINE=${UBTRFS_ENOSPC_DEADLINE:-300}
fi

# enospc_require: the oracles every case needs.
enospc_require() {
  require_ubtrfs
  require_kernel_btrfs
  require_btrfs_check
  command -v python3 >/dev/null || skip_or_fail "python3 not installed"
  [[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
}

# enospc_configs CI-CONFIG...: the "SIZE:PROFILE" configurations to run, one per line.
enospc_configs() {
  local c
  if [[ -n ${UBTRFS_ENOSPC_CONFIGS:-} ]]; then
    for c in $UBTRFS_ENOSPC_CONFIGS; do echo "$c"; done
  elif enospc_full; then
    printf '%s\n' 128M:dup 128M:single 256M:dup 256M:single 1G:dup 1G:single 64M:mixed 64M:mixed-dup
  else
    printf '%s\n' "$@"
  fi
}

# enospc_mkfs IMG SIZE PROFILE: the one mkfs command both sides use. PROFILE dup or single is the
# metadata profile; mixed and mixed-dup make mixed block groups (--mixed, SINGLE or DUP).
enospc_mkfs() {
  rm -f "$1"
  truncate -s "$2" "$1"
  case $3 in
    mixed) "$MKFS" -q --mixed "$1" ;;
    mixed-dup) "$MKFS" -q --mixed -m dup "$1" ;;
    *) "$MKFS" -q -m "$3" "$1" ;;
  esac
}

# enospc_workload SCENARIO MNT OUT: the workload, bounded by the deadline (and a hard timeout).
enospc_workload() {
  timeout -k 30 $((ENOSPC_DEADLINE + 300)) python3 "$ENOSPC_PY/workload.py" "$1" "$2" "$3" --deadline "$ENOSPC_DEADLINE"
}

# enospc_reference SCENARIO SIZE PROFILE OUT: the kernel's run of SCENARIO on a fresh image.
enospc_reference() {
  local scen=$1 size=$2 profile=$3 out=$4 dir img mnt t=$SECONDS
  dir=$(make_tmpdir)
  img=$dir/ref.img
  mnt=$dir/mnt
  enospc_mkfs "$img" "$size" "$profile" || return 1
  kernel_mount "$img" "$mnt" || return 1
  local rc=0
  enospc_workload "$scen" "$mnt" "$out" || rc=$?
  kernel_umount "$mnt"
  rm -f "$img"
  echo "  kernel reference run of $scen on $size $profile: $((SECONDS - t)) s (workload exit $rc)"
  [[ -s $out ]]
}

# _enospc_daemon_errors LOG: the first error lines of a daemon log (the evidence of a failure).
_enospc_daemon_errors() {
  [[ -n $1 && -s $1 ]] || return 0
  grep -m 6 -E 'error|critical|Sanitizer|runtime error' "$1" | cut -c1-400 | sed 's/^/    daemon: /' >&2 || true
}

# enospc_case SCENARIO SIZE PROFILE WANT_REF: one case (see the top of this file); pass/failed
# for every check.
enospc_case() {
  local scen=$1 size=$2 profile=$3 want_ref=$4
  local cfg="$size $profile $scen" dir img mnt kmnt res ver ref='' t0=$SECONDS t line rc
  # Mixed block groups: df's accuracy is judged against the kernel's (judge.py df_accuracy).
  [[ $profile == mixed* ]] && want_ref=1
  echo "=== $cfg (on $UBTRFS_FS)"
  dir=$(make_tmpdir)
  img=$dir/tested.img
  mnt=$dir/mnt
  kmnt=$dir/kernel
  res=$dir/result.json
  ver=$dir/verify.json
  if [[ $want_ref == 1 ]] || enospc_full; then
    ref=$dir/reference.json
    if ! enospc_reference "$scen" "$size" "$profile" "$ref"; then
      failed "$cfg: the kernel's reference run left no record"
      ref=''
      [[ $want_ref == 1 ]] && return
    fi
  fi

  enospc_mkfs "$img" "$size" "$profile" || { failed "$cfg: mkfs.ubtrfs -m $profile on a $size image"; return; }
  if ! ubtrfs_mount "$img" "$mnt"; then
    failed "$cfg: mount of a fresh image"
    return
  fi
  # The writeback cache's held bytes (ubtrfs-inspect stats; 0 without the cache): judge.py allows
  # that much more to be written after a df than its Avail said.
  local held=0
  ENOSPC_LAST_HELD=0
  if ! fs_is_kernel; then
    held=$("$UBTRFS_BIN/inspect/ubtrfs-inspect" stats --json "$mnt" 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("writeback_cache", {}).get("held_bytes", 0))' \
      2>/dev/null) || held=0
    [[ $held =~ ^[0-9]+$ ]] || held=0
    if (( held )); then echo "  the writeback cache holds $((held >> 10)) KiB for dirty pages"; fi
    ENOSPC_LAST_HELD=$held
  fi
  t=$SECONDS
  rc=0
  enospc_workload "$scen" "$mnt" "$res" || rc=$?
  echo "  workload $scen on $UBTRFS_FS: $((SECONDS - t)) s (exit $rc)"
  # The cache's window grows while a cached writer pushes data (tools/daemon/dirty_window.h): df
  # leaves its bound out, so the judge allows the largest bound it had (the pages it may have held
  # unsent at a df) instead of the floor's.
  if (( held )); then
    local max_bound
    max_bound=$("$UBTRFS_BIN/inspect/ubtrfs-inspect" stats --json "$mnt" 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("writeback_cache", {}).get("max_bound_bytes", 0))' \
      2>/dev/null) || max_bound=0
    if [[ $max_bound =~ ^[0-9]+$ ]] && (( max_bound > held )); then
      echo "  the writeback cache's window grew: up to $((max_bound >> 10)) KiB held for dirty pages"
      held=$max_bound
    fi
  fi
  t=$SECONDS
  if ubtrfs_umount "$mnt"; then
    pass "$cfg: (g) unmount after the fill: $(fs_is_kernel && echo kernel || echo 'daemon exit 0 after its final commit') ($((SECONDS - t)) s)"
  else
    failed "$cfg: (g) unmount after the fill (the final commit must succeed)"
  fi
  if ! fs_is_kernel && grep -qE 'error|critical' "$UBTRFS_LAST_LOG" 2>/dev/null; then
    echo "  the daemon logged errors during $cfg:" >&2
    _enospc_daemon_errors "$UBTRFS_LAST_LOG"
  fi

  t=$SECONDS
  if check_clean_full "$img"; then
    pass "$cfg: (g) check-clean: btrfs check original, lowmem, --check-data-csum, kernel read, fsck.ubtrfs ($((SECONDS - t)) s)"
  else
    failed "$cfg: (g) the image is not check-clean"
  fi

  t=$SECONDS
  rm -f "$ver"
  if [[ -s $res ]] && kernel_mount "$img" "$kmnt" ro; then
    python3 "$ENOSPC_PY/verify.py" "$res" "$kmnt" "$ver" || failed "$cfg: verify.py exit $?"
    kernel_umount "$kmnt"
    echo "  verification by a kernel read-only mount: $((SECONDS - t)) s"
  elif [[ -s $res ]]; then
    failed "$cfg: (h) the kernel refused to mount the image read-only"
  fi

  if [[ ! -s $res ]]; then
    failed "$cfg: the workload left no record (exit $rc; killed at its deadline of $ENOSPC_DEADLINE s?)"
  else
    while IFS= read -r line; do
      case $line in
        PASS:\ *) pass "${line#PASS: }" ;;
        FAIL:\ *) failed "${line#FAIL: }" ;;
        *) echo "$line" ;;
      esac
    done < <(python3 "$ENOSPC_PY/judge.py" --result "$res" ${ver:+--verify "$ver"} ${ref:+--ref "$ref"} \
               --config "$cfg" --fs "$UBTRFS_FS" --held "$held" || true)
  fi
  rm -f "$img"
  echo "  $cfg: $((SECONDS - t0)) s in all"
}
