# Shared helpers for the oracle tests (sourced, not run; the ctest glob skips it because it has no
# test body: runnable tests are named *_test.sh).
#
# Policy: a test needing an oracle it cannot find (btrfs check, root, loop devices, kernel btrfs,
# /dev/fuse, the daemon binary) exits 77 (skipped) — unless UBTRFS_REQUIRE_ORACLES=1, where it
# fails. Every mount, loop device, ubtrfs daemon and temporary directory a test creates is
# registered and removed on exit, even on failure.
#
# Helpers: kernel_mount/kernel_umount, check_clean (btrfs check x2), check_clean_full (the
# issue-3 "check-clean": btrfs check x3 + kernel read of every file + fsck.ubtrfs), ubtrfs_mount/
# ubtrfs_umount (the FUSE daemon; waits for the final commit), ubtrfs_try_mount (one mount(8)-
# style attempt), sparse_hash/hash_file, pass/failed/finish. UBTRFS_FS=kernel points the ubtrfs_*
# helpers at the kernel's btrfs, to prove a test's logic against the reference implementation.
set -euo pipefail

UBTRFS_BIN=${UBTRFS_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/tools}
UBTRFS_SRC=${UBTRFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

# Everything a test creates lives under one root made here, in the test's own shell (not in a
# $(...) subshell, which could not register anything). Cleanup unmounts whatever is mounted under
# the root (deepest first), detaches loop devices backed by files under it, and removes it — so a
# test that dies halfway leaves nothing behind, however it created its mounts.
UBTRFS_TEST_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ubtrfs-test.XXXXXX")

# python3 behind pyenv's shim costs 0.5 s a call (tests/oracle/python_shim.sh): resolved once
# (a no-op under scripts/test.sh, which already did it).
# shellcheck source=python_shim.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/python_shim.sh"
unshim_python "$UBTRFS_TEST_ROOT/.python" || true

# An awk function that undoes /proc/mounts' octal escapes (a space is "\040", a tab "\011", a
# backslash "\134"), so a mount point is compared by its real name.
_AWK_UNESCAPE='function unesc(s,  o, i, c, d) { o = ""; for (i = 1; i <= length(s); i++) { c = substr(s, i, 1); d = substr(s, i + 1, 3); if (c == "\\" && d ~ /^[0-7][0-7][0-7]$/) { o = o sprintf("%c", substr(d, 1, 1) * 64 + substr(d, 2, 1) * 8 + substr(d, 3, 1)); i += 3 } else o = o c } return o }'

_oracle_cleanup() {
  local rc=$?
  local m l
  if [[ -d "$UBTRFS_TEST_ROOT" ]]; then
    while IFS= read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v r="$UBTRFS_TEST_ROOT" "$_AWK_UNESCAPE"' index(unesc($2), r) == 1 {print unesc($2)}' /proc/mounts | sort -r)
    # ubtrfs daemons this test started exit after their unmount (final commit); one that does not
    # within 20 s is stopped by its pid (never by name: other tests may run daemons of their own).
    declare -F _ubtrfs_reap_daemons >/dev/null && _ubtrfs_reap_daemons 20
    while read -r l; do
      [[ -n "$l" ]] && losetup -d "$l" 2>/dev/null || true
    done < <(losetup -a 2>/dev/null | awk -F: -v r="$UBTRFS_TEST_ROOT" 'index($0, r) {print $1}')
    rm -rf "$UBTRFS_TEST_ROOT"
  fi
  exit $rc
}
trap _oracle_cleanup EXIT
trap 'exit 130' INT TERM

# skip_or_fail REASON: exit 77, or exit 1 when oracles are required.
skip_or_fail() {
  if [[ "${UBTRFS_REQUIRE_ORACLES:-0}" == 1 ]]; then
    echo "FAIL: required oracle missing: $*" >&2
    exit 1
  fi
  echo "SKIP: $*" >&2
  exit 77
}

require_root() { [[ $(id -u) == 0 ]] || skip_or_fail "needs root"; }
# btrfs check 6.2 refuses to run without root ("could not check mount status").
require_btrfs_check() {
  command -v btrfs >/dev/null || skip_or_fail "btrfs-progs not installed"
  require_root
}
require_kernel_btrfs() {
  require_root
  grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true
  grep -qw btrfs /proc/filesystems || skip_or_fail "kernel has no btrfs"
  losetup -f >/dev/null 2>&1 || skip_or_fail "no free loop device"
}

# make_tmpdir: prints a new directory under the test root (removed at exit; safe in $(...)).
make_tmpdir() { mktemp -d "$UBTRFS_TEST_ROOT/tmp.XXXXXX"; }

# kernel_mount IMG MNT [OPTS]: loop-mount with the kernel driver; unmounted at exit.
kernel_mount() {
  local img=$1 mnt=$2 opts=${3:-}
  mkdir -p "$mnt"
  [[ "$(realpath "$mnt")" == "$UBTRFS_TEST_ROOT"/* ]] || { echo "kernel_mount: $mnt is outside the test root" >&2; return 1; }
  mount -t btrfs -o "loop${opts:+,$opts}" "$img" "$mnt"
}

kernel_umount() {
  local mnt=$1
  umount "$mnt"
}

# check_clean IMG: btrfs check in original and lowmem mode; output must say no error and exit 0.
check_clean() {
  local img=$1 out mode
  for mode in original lowmem; do
    if ! out=$(btrfs check --mode="$mode" "$img" 2>&1); then
      echo "FAIL: btrfs check --mode=$mode $img:" >&2
      echo "$out" >&2
      return 1
    fi
    if grep -qiE '^ERROR|errors found|checksum verify failed|wanted .* found' <<<"$out"; then
      echo "FAIL: btrfs check --mode=$mode $img reported problems despite exit 0:" >&2
      echo "$out" >&2
      return 1
    fi
  done
}

# hash_file FILE: content hash (BLAKE2b-512, coreutils b2sum) for "image unchanged" and "reads back
# as written" assertions. b2sum rather than sha256sum: 3-6x faster here on the 256 MiB images the
# refusal tests hash before and after every command (a hash computed elsewhere must be b2sum's too).
hash_file() { b2sum "$1" | cut -d' ' -f1; }

# Counters for a closing "N passed, N failed" line.
_passed=0
_failed=0
pass() { _passed=$((_passed + 1)); echo "ok: $*"; }
failed() { _failed=$((_failed + 1)); echo "FAIL: $*" >&2; }
finish() {
  echo "$_passed passed, $_failed failed"
  if [[ $_failed != 0 ]]; then _dump_daemon_logs; fi
  [[ $_failed == 0 ]]
}

# _dump_daemon_logs: after a failure, the problems the ubtrfs daemons of this test logged (their
# logs live under the test root, which is removed at exit).
_dump_daemon_logs() {
  local log
  for log in "$UBTRFS_TEST_ROOT"/daemon.*.log; do
    [[ -s $log ]] || continue
    if grep -qE 'error|critical|warn|Sanitizer|runtime error' "$log"; then
      echo "--- daemon log $(basename "$log"): first problems" >&2
      grep -m 20 -E 'error|critical|warn|Sanitizer|runtime error' "$log" | cut -c1-300 >&2
    fi
  done
}

# ---- the ubtrfs FUSE daemon as the file system under test ----------------------------------------
#
# ubtrfs_mount IMG MNT [OPTS] starts `ubtrfs IMG MNT -o OPTS -f` in the background of the test's own
# shell (so its pid is known exactly, `wait` gives its exit status, and its stderr, sanitizer
# reports included, goes to a log file under the test root) and returns once MNT is a fuse mount
# in /proc/mounts. ubtrfs_umount MNT unmounts and then waits for that daemon to exit: the final
# commit runs on unmount, so the image may be read only after the daemon is gone. A non-zero exit
# status or a sanitizer report in its log is a failure. (The daemonizing path without -f, as
# mount(8) uses it, is exercised by bad_input_mount_test.sh.)
#
# UBTRFS_FS=kernel swaps the daemon for the kernel's btrfs (loop mount, FUSE-only options dropped,
# rescue=nologreplay added for a read-only mount of an image with a log tree): the tests then
# prove their own logic against the reference implementation. UBTRFS_EXTRA_MOUNT_OPTS is appended
# to every ubtrfs mount (e.g. log_level=debug, cache_mb=16).
UBTRFS_DAEMON=${UBTRFS_DAEMON:-$UBTRFS_BIN/daemon/ubtrfs}
UBTRFS_FS=${UBTRFS_FS:-ubtrfs}
UBTRFS_MOUNT_TIMEOUT=${UBTRFS_MOUNT_TIMEOUT:-60}    # seconds until the mount must be visible
UBTRFS_UMOUNT_TIMEOUT=${UBTRFS_UMOUNT_TIMEOUT:-600} # seconds for the final commit after unmount
declare -A _ubtrfs_pid=() _ubtrfs_log=()
_ubtrfs_all_pids=()
# Results for the calling tests: UBTRFS_LAST_LOG (the log of the daemon ubtrfs_umount stopped
# last); TRY_RC and TRY_ERR (of ubtrfs_try_mount).
UBTRFS_LAST_LOG=''
TRY_RC=0
TRY_ERR=

fs_is_kernel() { [[ $UBTRFS_FS == kernel ]]; }

# require_ubtrfs: what ubtrfs_mount needs (the daemon binary, /dev/fuse, fusermount3, root), or
# the kernel's btrfs when UBTRFS_FS=kernel.
require_ubtrfs() {
  require_root
  if fs_is_kernel; then
    require_kernel_btrfs
    echo "note: UBTRFS_FS=kernel: running against the kernel's btrfs instead of the ubtrfs daemon" >&2
    return
  fi
  [[ -x $UBTRFS_DAEMON ]] || skip_or_fail "ubtrfs daemon not built at $UBTRFS_DAEMON"
  [[ -c /dev/fuse ]] || skip_or_fail "no /dev/fuse"
  command -v fusermount3 >/dev/null || skip_or_fail "fusermount3 not installed"
  grep -qw fuse /proc/filesystems || modprobe fuse 2>/dev/null || true
  grep -qw fuse /proc/filesystems || skip_or_fail "kernel has no fuse"
}

# is_mounted MNT: MNT (any path spelling) is a mount point in /proc/mounts.
is_mounted() {
  local real
  real=$(realpath -m "$1")
  awk -v m="$real" "$_AWK_UNESCAPE"' unesc($2) == m { found = 1 } END { exit !found }' /proc/mounts
}

# _pid_running PID: the process exists and is not a zombie.
_pid_running() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# _kernel_opts_for OPTS IMG: the kernel's spelling of a ubtrfs option list.
_kernel_opts_for() {
  local opts=$1 img=$2 o out=() ro=0
  local IFS=,
  for o in $opts; do
    case $o in
      allow_other | default_permissions | cache_mb=* | log_level=* | subvolid=0) ;;
      ro) ro=1; out+=("$o") ;;
      *) out+=("$o") ;;
    esac
  done
  if ((ro)) && [[ $(btrfs inspect-internal dump-super "$img" 2>/dev/null | awk '$1 == "log_root" { print $2 }') != 0 ]]; then
    out+=(rescue=nologreplay)
  fi
  echo "${out[*]}"
}

# sanitizer_report FILE: prints the first sanitizer report line of FILE; true if there is one.
sanitizer_report() {
  grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|runtime error:|ThreadSanitizer: ' "$1" 2>/dev/null
}

# ubtrfs_mount IMG MNT [OPTS]: mount IMG at MNT (created if needed, must be under the test root).
# Fails (daemon log on stderr) if the daemon exits or the mount does not appear in time.
ubtrfs_mount() {
  local img=$1 mnt=$2 opts=${3:-}
  mkdir -p "$mnt"
  local real
  real=$(realpath "$mnt")
  [[ $real == "$UBTRFS_TEST_ROOT"/* ]] || { echo "ubtrfs_mount: $mnt is outside the test root" >&2; return 1; }
  if fs_is_kernel; then
    kernel_mount "$img" "$mnt" "$(_kernel_opts_for "$opts" "$img")"
    return
  fi
  opts=${opts:+$opts${UBTRFS_EXTRA_MOUNT_OPTS:+,}}${UBTRFS_EXTRA_MOUNT_OPTS:-}
  local log pid deadline rc
  log=$(mktemp "$UBTRFS_TEST_ROOT/daemon.XXXXXX.log")
  "$UBTRFS_DAEMON" "$img" "$mnt" ${opts:+-o "$opts"} -f >"$log" 2>&1 &
  pid=$!
  _ubtrfs_all_pids+=("$pid")
  deadline=$((SECONDS + UBTRFS_MOUNT_TIMEOUT))
  until awk -v m="$real" "$_AWK_UNESCAPE"' unesc($2) == m && $3 ~ /^fuse/ { found = 1 } END { exit !found }' /proc/mounts; do
    if ! _pid_running "$pid"; then
      rc=0
      wait "$pid" || rc=$?
      echo "ubtrfs_mount: daemon exited with status $rc before $mnt was mounted (ubtrfs $img $mnt ${opts:+-o $opts}):" >&2
      tail -n 30 "$log" >&2
      UBTRFS_LAST_LOG=$log
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "ubtrfs_mount: $mnt not mounted after ${UBTRFS_MOUNT_TIMEOUT}s (daemon pid $pid):" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    sleep 0.05
  done
  _ubtrfs_pid[$real]=$pid
  _ubtrfs_log[$real]=$log
}

# ubtrfs_log MNT: path of the log of the daemon serving MNT.
# use_fuse_uring_param: for a test that sets the fuse module's enable_uring parameter
# ($FUSE_URING_PARAM, read at each mount): skips (or fails, with oracles required) on a kernel
# without FUSE over io_uring, keeps the value in $FUSE_URING_SAVED and restores it at exit (before
# lib.sh's cleanup, which keeps the test's exit status).
FUSE_URING_PARAM=/sys/module/fuse/parameters/enable_uring
use_fuse_uring_param() {
  [[ -e $FUSE_URING_PARAM ]] || modprobe fuse 2>/dev/null || true
  [[ -w $FUSE_URING_PARAM ]] || skip_or_fail "the kernel has no FUSE over io_uring ($FUSE_URING_PARAM not writable; Linux 6.14+)"
  FUSE_URING_SAVED=$(cat "$FUSE_URING_PARAM")
  trap 'rc=$?; set +e; echo "$FUSE_URING_SAVED" >"$FUSE_URING_PARAM" 2>/dev/null; (exit $rc); _oracle_cleanup' EXIT
}

# abort_fuse_mount MNT: ends the FUSE connection of MNT through fusectl's abort, for a daemon that
# no longer answers (a deadlock under test): its waiting callers get ENOTCONN and the cleanup can
# unmount. The connection is named by the mount's device minor, read from mountinfo (a stat of a
# hung mount would hang too).
abort_fuse_mount() {
  local real minor
  real=$(realpath -s "$1")
  minor=$(awk -v m="$real" '$5 == m { split($3, d, ":"); print d[2] }' /proc/self/mountinfo | tail -1)
  [[ -n $minor ]] || return 1
  mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null || true
  [[ -e /sys/fs/fuse/connections/$minor/abort ]] && echo 1 >"/sys/fs/fuse/connections/$minor/abort"
}

# dump_daemon_stacks PID: every thread's stack of a daemon that stopped answering, on stderr — what
# the kernel shows (each thread's name, wait channel and kernel stack), then gdb's backtraces when
# gdb is installed (scripts/install-deps.sh installs it) and can attach. A hang in CI is then
# diagnosable from the log alone, without reproducing it.
dump_daemon_stacks() {
  local pid=$1 task
  _pid_running "$pid" || { echo "dump_daemon_stacks: daemon $pid is not running" >&2; return 0; }
  # The kernel's view first: it always works, and shows a thread waiting in the kernel (e.g. for
  # an answer from this very mount, where gdb cannot stop it to attach: hence gdb's time limit).
  echo "=== kernel stacks of daemon $pid ===" >&2
  for task in /proc/"$pid"/task/*; do
    echo "thread ${task##*/} $(cat "$task/comm" 2>/dev/null) wchan=$(cat "$task/wchan" 2>/dev/null)" >&2
    sed 's/^/    /' "$task/stack" >&2 2>/dev/null || true
  done
  if grep -qs request_wait_answer /proc/"$pid"/task/*/wchan; then
    echo "=== no gdb backtraces: a thread waits in the kernel for a FUSE answer (gdb cannot stop it) ===" >&2
  elif command -v gdb >/dev/null; then
    echo "=== gdb backtraces of daemon $pid ===" >&2
    timeout -k 5 60 gdb -p "$pid" -batch -nx -ex "set pagination off" -ex "thread apply all bt" 2>&1 |
      grep -vE '^\[New LWP|^warning: ' >&2 || true
  fi
  return 0
}

# run_watched SECONDS MNT CMD...: runs CMD (a workload on the ubtrfs mount MNT); if it has not
# ended within SECONDS, prints the stacks of MNT's daemon, stops CMD and returns 124 (timeout's
# status). A deadlocked daemon then fails its test in minutes with the evidence, instead of at
# ctest's timeout with none.
run_watched() {
  local secs=$1 mnt=$2 rc=0 pid
  shift 2
  timeout -k 10 "$secs" "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    echo "run_watched: '$*' did not end within ${secs}s" >&2
    pid=$(ubtrfs_pid "$mnt")
    [[ -n $pid ]] && dump_daemon_stacks "$pid"
    return 124
  fi
  return "$rc"
}

ubtrfs_log() { echo "${_ubtrfs_log[$(realpath "$1")]:-}"; }

# ubtrfs_pid MNT: pid of the daemon serving MNT.
ubtrfs_pid() { echo "${_ubtrfs_pid[$(realpath "$1")]:-}"; }

# fuse_umount_retrying_busy MNT: `fusermount3 -u` (else umount(8)) of a FUSE mount. A mount point
# still in use ("target is busy": a process of the test not yet gone, a sampler's stat) is the
# kernel's refusal, not the daemon's: retried for up to 10 s, saying once who held it. Seen in the
# full ENOSPC matrix and in daemon_cli_test on a machine under load; the retried unmount still has
# to succeed. Returns non-zero (with the error) if it does not.
fuse_umount_retrying_busy() {
  local mnt=$1 tries=0
  until fusermount3 -u "$mnt" 2>"$UBTRFS_TEST_ROOT/umount.err" || umount "$mnt" 2>>"$UBTRFS_TEST_ROOT/umount.err"; do
    if ! grep -qiE 'busy' "$UBTRFS_TEST_ROOT/umount.err" || ((++tries > 40)); then
      echo "cannot unmount $mnt: $(cat "$UBTRFS_TEST_ROOT/umount.err")" >&2
      return 1
    fi
    if ((tries == 1)); then
      echo "$mnt is busy, retrying for up to 10 s; held by: $(fuser -vm "$mnt" 2>&1 | grep -v "Cannot stat" | tr -s ' \n' ' ')" >&2
    fi
    sleep 0.25
  done
}

# ubtrfs_umount MNT: unmount, then wait for the daemon to finish its final commit and exit.
# Returns non-zero if the unmount fails, the daemon does not exit in time, exits non-zero or
# logged a sanitizer report. The log stays readable as $UBTRFS_LAST_LOG.
ubtrfs_umount() {
  local mnt=$1
  if fs_is_kernel; then
    kernel_umount "$mnt"
    return
  fi
  local real pid log deadline rc=0 report
  real=$(realpath "$mnt")
  pid=${_ubtrfs_pid[$real]:-}
  log=${_ubtrfs_log[$real]:-}
  [[ -n $pid ]] || { echo "ubtrfs_umount: no daemon of this test serves $mnt" >&2; return 1; }
  # UBTRFS_STATS_JSONL=FILE: the live counters of every mount, one JSON line each, taken just
  # before the unmount (scripts/test-writeback.sh sums them to prove writeback ran).
  if [[ -n ${UBTRFS_STATS_JSONL:-} ]]; then
    "$UBTRFS_BIN/inspect/ubtrfs-inspect" stats "$mnt" --json 2>/dev/null | tr -d '\n' >>"$UBTRFS_STATS_JSONL" &&
      echo >>"$UBTRFS_STATS_JSONL" || true
  fi
  fuse_umount_retrying_busy "$mnt" || return 1
  unset "_ubtrfs_pid[$real]" "_ubtrfs_log[$real]"
  # shellcheck disable=SC2034  # a result for the calling test
  UBTRFS_LAST_LOG=$log
  deadline=$((SECONDS + UBTRFS_UMOUNT_TIMEOUT))
  while _pid_running "$pid"; do
    if ((SECONDS >= deadline)); then
      echo "ubtrfs_umount: daemon $pid still running ${UBTRFS_UMOUNT_TIMEOUT}s after unmounting $mnt" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    sleep 0.05
  done
  wait "$pid" || rc=$?
  if ((rc != 0)); then
    echo "ubtrfs_umount: daemon for $mnt exited with status $rc:" >&2
    tail -n 30 "$log" >&2
    return 1
  fi
  if report=$(sanitizer_report "$log"); then
    echo "ubtrfs_umount: sanitizer report in the daemon log ($log): $report" >&2
    grep -m1 -A30 -E 'ERROR: |WARNING: ThreadSanitizer|runtime error:' "$log" >&2
    return 1
  fi
}

# _ubtrfs_reap_daemons SECONDS: at exit, wait for the daemons this test started, then stop the
# ones still running by pid (TERM, then KILL).
_ubtrfs_reap_daemons() {
  local limit=$1 pid deadline
  ((${#_ubtrfs_all_pids[@]})) || return 0
  deadline=$((SECONDS + limit))
  for pid in "${_ubtrfs_all_pids[@]}"; do
    while _pid_running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if _pid_running "$pid"; then
      echo "cleanup: ubtrfs daemon $pid still running: SIGTERM" >&2
      kill -TERM "$pid" 2>/dev/null || true
      sleep 2
      _pid_running "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

# daemon_pids_of IMG: pids of running ubtrfs processes whose command line names IMG (for "no
# daemon left behind" assertions; a lookup only).
daemon_pids_of() {
  local img=$1 p
  for p in /proc/[0-9]*; do
    [[ -r $p/cmdline ]] || continue
    local -a argv=()
    mapfile -d '' -t argv <"$p/cmdline" 2>/dev/null || continue
    ((${#argv[@]} >= 2)) || continue
    [[ $(basename "${argv[0]}") == ubtrfs ]] || continue
    local a
    for a in "${argv[@]:1}"; do
      if [[ $a == "$img" ]]; then echo "${p#/proc/}"; break; fi
    done
  done
}

# sparse_hash FILE: sha256 over the size and every data segment with its offset (SEEK_DATA /
# SEEK_HOLE): a sparse multi-GiB image costs what its data costs, and any write changes it.
sparse_hash() {
  python3 - "$1" <<'PY'
import hashlib, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
h = hashlib.sha256(struct.pack("<Q", size))
pos = 0
while pos < size:
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    h.update(struct.pack("<Q", data))
    off = data
    while off < hole:
        chunk = os.pread(fd, min(1 << 22, hole - off), off)
        if not chunk:
            break
        h.update(chunk)
        off += len(chunk)
    pos = hole
print(h.hexdigest())
PY
}

# check_clean_full IMG [MANIFEST-OUT]: the issue's "check-clean", every oracle in turn (each misses
# things the others catch, FORMAT.md §9.3): btrfs check in original and lowmem mode, btrfs check
# --check-data-csum, a kernel read-only loop mount reading every file (and every symlink and
# directory) back, and fsck.ubtrfs. With MANIFEST-OUT, the kernel mount's manifest_of is written
# there. Runs all oracles, prints what each found, returns non-zero if any complained.
check_clean_full() {
  local img=$1 manifest_out=${2:-} bad=0 out rc mnt fsck=$UBTRFS_BIN/fsck/fsck.ubtrfs
  check_clean "$img" || bad=1
  rc=0
  out=$(btrfs check --check-data-csum "$img" 2>&1) || rc=$?
  if ((rc != 0)) || grep -qiE '^ERROR|errors found|csum failed|mirror [0-9]+ bytenr' <<<"$out"; then
    echo "FAIL: btrfs check --check-data-csum $img (exit $rc):" >&2
    head -n 30 <<<"$out" >&2
    bad=1
  fi
  mnt=$(make_tmpdir)/kernel-ro
  if kernel_mount "$img" "$mnt" ro; then
    # Every file's content, every link target, every directory listing, through the kernel.
    if ! out=$(cd "$mnt" && { find . -type f -exec cat -- {} + >/dev/null && find . -type l -exec readlink -- {} + >/dev/null && find . -type d -exec ls -f -- {} + >/dev/null; } 2>&1); then
      echo "FAIL: kernel read of $img: $(head -c 2000 <<<"$out")" >&2
      bad=1
    fi
    if [[ -n $manifest_out ]]; then
      declare -F manifest_of >/dev/null || source "$UBTRFS_SRC/images/manifest.sh"
      manifest_of "$mnt" >"$manifest_out" || { echo "FAIL: manifest of the kernel mount of $img" >&2; bad=1; }
    fi
    kernel_umount "$mnt" || bad=1
  else
    echo "FAIL: the kernel refused a read-only mount of $img" >&2
    bad=1
  fi
  if [[ -x $fsck ]]; then
    rc=0
    out=$("$fsck" "$img" 2>&1) || rc=$?
    if ((rc != 0)); then
      echo "FAIL: fsck.ubtrfs $img exit $rc:" >&2
      head -n 30 <<<"$out" >&2
      bad=1
    fi
  else
    echo "FAIL: $fsck not built" >&2
    bad=1
  fi
  return $bad
}

# ubtrfs_try_mount IMG MNT [OPTS]: one mount attempt as mount(8) makes it — the daemon without -f,
# which returns once the mount succeeded (after daemonizing) or failed — bounded by a timeout.
# Sets TRY_RC (its exit status; 124 = timed out) and TRY_ERR (a file with its stdout+stderr).
# A daemon left running (the attempt succeeded) is registered for cleanup. UBTRFS_FS=kernel:
# `mount -t btrfs -o loop,...` instead (the kernel's messages go to dmesg, not to TRY_ERR).
ubtrfs_try_mount() {
  local img=$1 mnt=$2 opts=${3:-} pid
  mkdir -p "$mnt"
  [[ $(realpath "$mnt") == "$UBTRFS_TEST_ROOT"/* ]] || { echo "ubtrfs_try_mount: $mnt is outside the test root" >&2; return 1; }
  TRY_ERR=$(mktemp "$UBTRFS_TEST_ROOT/try.XXXXXX.err")
  TRY_RC=0
  if fs_is_kernel; then
    local kopts
    kopts=$(_kernel_opts_for "$opts" "$img")
    # shellcheck disable=SC2034  # TRY_RC is a result for the calling test
    timeout 60 mount -t btrfs -o "loop${kopts:+,$kopts}" "$img" "$mnt" >"$TRY_ERR" 2>&1 || TRY_RC=$?
    return 0
  fi
  # shellcheck disable=SC2034  # TRY_RC is a result for the calling test
  timeout 60 "$UBTRFS_DAEMON" "$img" "$mnt" ${opts:+-o "$opts"} >"$TRY_ERR" 2>&1 || TRY_RC=$?
  for pid in $(daemon_pids_of "$img"); do _ubtrfs_all_pids+=("$pid"); done
}
