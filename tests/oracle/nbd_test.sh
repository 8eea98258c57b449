#!/usr/bin/env bash
# An image on an NBD server (issue 14; io/nbd_device.h): nbdkit's file plugin serves a sparse
# image file on a unix socket, and everything goes through the URI nbd+unix:///?socket=SOCK.
#
# Round 1: mkfs.ubtrfs on the URI, ubtrfs-inspect dump-super on the URI, the daemon mounts the
#   URI; fsynced files, a short ubtrfs-stress run (verified by its own model), a few POSIX suite
#   cases and fstrim (holes punched in the file behind nbdkit) through the mount; unmount (daemon
#   exit 0), fsck.ubtrfs on the URI; then the file
#   behind nbdkit is check_clean_full (btrfs check x3, the kernel reads every file, fsck.ubtrfs)
#   and the kernel sees exactly the stress manifest and every fsynced file.
# Round 2, write errors (nbdkit's error filter, error-pwrite=EIO while a trigger file exists): an
#   fsync over failing writes returns EIO, the daemon aborts read-only with a message naming the
#   NBD error (NBD_EIO), later writes fail, the mount unmounts.
# Round 3, flush errors (tests/io/nbdkit_flush_error_filter.c, NBD_CMD_FLUSH fails while a trigger
#   exists): fsync returns EIO — never success over a failed flush — and the log names the error.
# Round 4, a killed server: nbdkit is SIGKILLed under a writer that fsyncs file after file; the
#   writer's next operation fails with EIO (or EROFS, when a background commit met the dead server
#   first and aborted to read-only) within a bounded time, the unmount finishes.
# After each fault round the file behind nbdkit is check-clean at its last commit and every file
# an fsync acknowledged, in any round, reads back intact through the kernel.
#
# Rules named here: nbd_fsync_never_succeeds_over_a_failed_flush,
# nbd_acknowledged_fsync_survives_a_killed_server.
# Knobs: UBTRFS_NBD_STRESS_NOPS (default 1500), UBTRFS_NBD_POSIX_FILTER (Catch2 filter, default
# the whole suite, 235 cases in a few seconds; a filter such as "[rename],[link]" runs a part).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
FSCK=$UBTRFS_BIN/fsck/fsck.ubtrfs
INSPECT=$UBTRFS_BIN/inspect/ubtrfs-inspect
STRESS=$UBTRFS_BIN/stress/ubtrfs-stress
UBTRFS_BUILD=$(dirname "$UBTRFS_BIN")
SUITE=$UBTRFS_BUILD/tests/posix/ubtrfs_posix_tests
FILTER=$UBTRFS_BUILD/tests/nbdkit-flusherror-filter.so
NOPS=${UBTRFS_NBD_STRESS_NOPS:-1500}
POSIX_FILTER=${UBTRFS_NBD_POSIX_FILTER-}

require_ubtrfs
fs_is_kernel && skip_or_fail "the kernel has no NBD client here; this test is about ubtrfs's"
require_kernel_btrfs
require_btrfs_check
command -v nbdkit >/dev/null || skip_or_fail "nbdkit not installed"
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
[[ -f $FILTER ]] || skip_or_fail "the flusherror nbdkit filter is not built at $FILTER (needs nbdkit-plugin-dev)"
for b in "$MKFS" "$FSCK" "$INSPECT" "$STRESS"; do [[ -x $b ]] || { echo "FAIL: $b not built" >&2; exit 1; }; done

started=$SECONDS
tmp=$(make_tmpdir)
img=$tmp/nbd.img
sock=$tmp/nbd.sock
uri="nbd+unix:///?socket=$sock"
mnt=$tmp/mnt
truncate -s 1G "$img"

# ---- nbdkit, stopped by its pid at exit (before lib.sh's cleanup, which keeps the exit status) ----
NBDKIT_PID=
start_nbdkit() {
  rm -f "$sock" "$tmp/nbdkit.pid"
  # Ready is the pidfile (-P), written once nbdkit listens: the socket file appears at bind(),
  # before listen(), and a connect in between is refused.
  nbdkit -f --exit-with-parent -U "$sock" -P "$tmp/nbdkit.pid" --filter=error --filter="$FILTER" file "$img" \
    error-pwrite=EIO error-pwrite-rate=100% error-file="$tmp/pwrite.fail" flush-error-file="$tmp/flush.fail" \
    >>"$tmp/nbdkit.log" 2>&1 &
  NBDKIT_PID=$!
  local deadline=$((SECONDS + 10))
  until [[ -s $tmp/nbdkit.pid ]]; do
    if ! _pid_running "$NBDKIT_PID" || ((SECONDS >= deadline)); then
      echo "FAIL: nbdkit did not start:" >&2
      cat "$tmp/nbdkit.log" >&2
      exit 1
    fi
    sleep 0.02
  done
}
kill_nbdkit() {
  [[ -n $NBDKIT_PID ]] || return 0
  kill -KILL "$NBDKIT_PID" 2>/dev/null || true
  wait "$NBDKIT_PID" 2>/dev/null || true
  NBDKIT_PID=
}
trap '_nbd_rc=$?; set +e; kill_nbdkit; (exit $_nbd_rc); _oracle_cleanup' EXIT

cat >"$tmp/tool.py" <<'PY'
# tool.py CMD ARGS: the workloads and probes of this test. Manifests map a path to its sha256.
import errno, hashlib, json, os, random, sys, time

cmd, args = sys.argv[1], sys.argv[2:]

def data(seed, n):
    return random.Random(seed).randbytes(n)

def write_synced(path, buf):
    with open(path, "wb") as f:
        f.write(buf)
        f.flush()
        os.fsync(f.fileno())

if cmd == "write":  # write MNT MANIFEST TAG: fsynced files of several sizes, appended to MANIFEST
    mnt, manifest, tag = args
    m = json.load(open(manifest)) if os.path.exists(manifest) else {}
    os.makedirs(os.path.join(mnt, tag), exist_ok=True)
    for i in range(12):
        name = f"{tag}/f{i}"
        buf = data(hash((tag, i)) & 0xFFFFFFFF, [10, 3000, 70000, 1 << 20][i % 4] + i)
        write_synced(os.path.join(mnt, name), buf)
        m[name] = hashlib.sha256(buf).hexdigest()
    json.dump(m, open(manifest, "w"))

elif cmd == "fsync-errno":  # fsync-errno PATH: 4 MiB written and fsynced; prints the errno (0: success)
    try:
        write_synced(args[0], data(7, 4 << 20))
        print(0)
    except OSError as e:
        print(e.errno)

elif cmd == "fsync-dir-errno":  # fsync-dir-errno PATH: mkdir (unless it exists) and fsync the directory; prints the errno
    try:
        if not os.path.isdir(args[0]):
            os.mkdir(args[0])
        fd = os.open(args[0], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        print(0)
    except OSError as e:
        print(e.errno)

elif cmd == "write-errno":  # write-errno PATH: a small create+write; prints the errno (0: success)
    try:
        with open(args[0], "wb") as f:
            f.write(b"x" * 100)
        print(0)
    except OSError as e:
        print(e.errno)

elif cmd == "writer":  # writer MNT MANIFEST: fsynced files until an error; each one in MANIFEST after its fsync
    mnt, manifest = args
    m = {}
    os.makedirs(os.path.join(mnt, "w"), exist_ok=True)
    i = 0
    while True:
        name = f"w/f{i}"
        buf = data(10000 + i, 20000 + 997 * i)
        try:
            write_synced(os.path.join(mnt, name), buf)
        except OSError as e:
            print(f"writer: {name}: errno {e.errno} ({os.strerror(e.errno)}) after {i} fsynced files", flush=True)
            # EIO from the writer's own fsync, or EROFS when a background commit met the dead
            # server first and its abort made the filesystem read-only (seen under TSan, 1 run in 8).
            sys.exit(0 if e.errno in (errno.EIO, errno.EROFS) else 3)
        m[name] = hashlib.sha256(buf).hexdigest()
        json.dump(m, open(manifest + ".tmp", "w"))
        os.rename(manifest + ".tmp", manifest)
        i += 1

elif cmd == "verify":  # verify MNT MANIFEST...: every file reads back with its hash
    mnt, bad, n = args[0], 0, 0
    for manifest in args[1:]:
        if not os.path.exists(manifest):
            continue
        for name, want in json.load(open(manifest)).items():
            n += 1
            try:
                got = hashlib.sha256(open(os.path.join(mnt, name), "rb").read()).hexdigest()
            except OSError as e:
                got = f"errno {e.errno}"
            if got != want:
                print(f"{name}: {got}, want {want}")
                bad += 1
    print(f"{n} files checked, {bad} bad")
    sys.exit(1 if bad else 0)
PY
tool() { python3 "$tmp/tool.py" "$@"; }

# kernel_verify WHAT MANIFEST...: the kernel mounts a copy of the image read-write — replaying the
# tree log an aborted mount leaves behind, as a reboot would (a read-only loop device cannot) — and
# reads every file an fsync acknowledged back.
kernel_verify() {
  local what=$1 kmnt=$tmp/kernel copy=$tmp/kernel-copy.img out log_root
  shift
  cp --sparse=always "$img" "$copy"
  log_root=$(btrfs inspect-internal dump-super "$copy" | awk '$1 == "log_root" { print $2 }')
  if ! kernel_mount "$copy" "$kmnt"; then
    failed "$what: the kernel refused to mount the image (log_root $log_root)"
    rm -f "$copy"
    return
  fi
  if out=$(tool verify "$kmnt" "$@"); then
    pass "$what: every fsynced file intact through the kernel (log_root $log_root: $out)"
  else
    failed "$what: fsynced files differ through the kernel (log_root $log_root): $out"
  fi
  kernel_umount "$kmnt"
  rm -f "$copy"
}

# check_after_fault WHAT: btrfs check x2 and fsck.ubtrfs on the file behind nbdkit.
check_after_fault() {
  local what=$1 out
  if check_clean "$img"; then pass "$what: btrfs check clean (original, lowmem)"; else failed "$what: btrfs check"; fi
  if out=$("$FSCK" "$img" 2>&1); then pass "$what: fsck.ubtrfs clean"; else failed "$what: fsck.ubtrfs: $(tail -n 5 <<<"$out")"; fi
}

# umount_after_fault: the daemon of an aborted mount still unmounts and exits (its final commit
# may fail: exit 2 is allowed, a hang is not).
umount_after_fault() {
  local what=$1 pid rc=0
  pid=$(ubtrfs_pid "$mnt")
  UBTRFS_UMOUNT_TIMEOUT=30 ubtrfs_umount "$mnt" >/dev/null 2>&1 || rc=$?
  if ! _pid_running "$pid" && ! is_mounted "$mnt"; then pass "$what: unmounted, daemon gone"; else failed "$what: unmount"; fi
}

manifests=("$tmp/m1.json")

# ---- round 1: the happy path ---------------------------------------------------------------------
start_nbdkit
if "$MKFS" -q "$uri"; then pass "mkfs.ubtrfs on $uri"; else failed "mkfs.ubtrfs on the URI"; finish; exit 1; fi
if out=$("$MKFS" -q "$uri" 2>&1); then
  failed "mkfs.ubtrfs overwrote an existing filesystem on the export without -f"
else
  grep -q "existing filesystem" <<<"$out" && pass "mkfs.ubtrfs refuses an export holding btrfs without -f" ||
    failed "mkfs.ubtrfs refusal message: $out"
fi
if "$INSPECT" dump-super "$uri" | grep -q "_BHRfS_M"; then pass "ubtrfs-inspect dump-super on the URI"; else failed "ubtrfs-inspect dump-super on the URI"; fi

# allow_other and open directories: the POSIX suite drops to uid 65534 for its EACCES/EPERM cases.
if ! ubtrfs_mount "$uri" "$mnt" allow_other; then failed "mount of $uri"; finish; exit 1; fi
chmod 0755 "$UBTRFS_TEST_ROOT" "$tmp" "$mnt"
if awk -v m="$(realpath "$mnt")" -v u="$uri" '$2 == m && $1 == u { f = 1 } END { exit !f }' /proc/mounts; then
  pass "/proc/mounts names the URI as the source"
else
  failed "/proc/mounts source: $(grep "$mnt" /proc/mounts)"
fi
t=$SECONDS
tool write "$mnt" "$tmp/m1.json" r1 && pass "fsynced files written ($((SECONDS - t)) s)" || failed "fsynced files"
t=$SECONDS
if "$STRESS" -d "$mnt/stress" -p 2 -n "$NOPS" -s 14 --manifest "$tmp/stress.manifest" >"$tmp/stress.log" 2>&1; then
  pass "ubtrfs-stress -p 2 -n $NOPS verified on the NBD mount ($((SECONDS - t)) s)"
else
  failed "ubtrfs-stress on the NBD mount: $(tail -n 5 "$tmp/stress.log")"
fi
if [[ -x $SUITE ]]; then
  t=$SECONDS
  mkdir -m 0755 -p "$mnt/posix"
  # shellcheck disable=SC2086  # the filter is one Catch2 argument, or none
  if UBTRFS_POSIX_DIR=$mnt/posix "$SUITE" --warn NoAssertions ${POSIX_FILTER:+"$POSIX_FILTER"} "~[libfuse-3.14-gap]" \
    >"$tmp/posix.log" 2>&1; then
    pass "POSIX suite cases ${POSIX_FILTER:-(all)} on the NBD mount ($(grep -Eo 'All tests passed.*' "$tmp/posix.log"); $((SECONDS - t)) s)"
  else
    failed "POSIX suite on the NBD mount: $(tail -n 20 "$tmp/posix.log")"
  fi
fi
# fstrim: NBD_CMD_TRIM reaches nbdkit's file plugin, which punches holes in the image file.
if command -v fstrim >/dev/null; then
  allocated() { echo $(($(stat -c %b "$img") * 512)); }
  for i in 1 2 3 4; do head -c $((8 << 20)) /dev/urandom >"$mnt/trim$i"; done
  tool fsync-dir-errno "$mnt/trimdir" >/dev/null
  before=$(allocated)
  rm "$mnt"/trim?
  shrunk=0
  for attempt in 1 2 3 4 5; do
    sleep 0.3
    tool fsync-dir-errno "$mnt/trimdir$attempt" >/dev/null  # a commit, so the deletes are free space
    fstrim "$mnt" || true
    shrunk=$((before - $(allocated)))
    ((shrunk >= (32 << 20) * 9 / 10)) && break
  done
  ((shrunk >= (32 << 20) * 9 / 10)) && pass "fstrim through NBD_CMD_TRIM: the file behind nbdkit lost $shrunk bytes of 32 MiB deleted" ||
    failed "fstrim: the file behind nbdkit lost only $shrunk bytes of 32 MiB deleted"
fi
if ubtrfs_umount "$mnt"; then pass "unmount: daemon exit 0 after the final commit"; else failed "unmount"; fi
if out=$("$FSCK" "$uri" 2>&1); then pass "fsck.ubtrfs on the URI"; else failed "fsck.ubtrfs on the URI: $(tail -n 5 <<<"$out")"; fi
t=$SECONDS
if check_clean_full "$img"; then pass "the file behind nbdkit is check-clean ($((SECONDS - t)) s)"; else failed "check-clean"; fi
kmnt=$tmp/kernel
if kernel_mount "$img" "$kmnt" ro; then
  if "$STRESS" -d "$kmnt/stress" --verify-only --manifest "$tmp/stress.manifest" >/dev/null 2>&1; then
    pass "the kernel sees exactly the stress tree ($(wc -l <"$tmp/stress.manifest") manifest lines)"
  else
    failed "the kernel's stress tree differs from the manifest"
  fi
  kernel_umount "$kmnt"
else
  failed "the kernel refused the image"
fi
kernel_verify "round 1" "${manifests[@]}"

# ---- round 2: writes fail ------------------------------------------------------------------------
manifests+=("$tmp/m2.json")
ubtrfs_mount "$uri" "$mnt" || { failed "round 2 mount"; finish; exit 1; }
log=$(ubtrfs_log "$mnt")
tool write "$mnt" "$tmp/m2.json" r2 || failed "round 2: fsynced files before the fault"
touch "$tmp/pwrite.fail"
# A data write fails: fsync reports it (the kernel's rule too: a data I/O error is the file's, it
# does not abort the transaction).
e=$(timeout 60 python3 "$tmp/tool.py" fsync-errno "$mnt/r2/failing") || e="timeout"
[[ $e == 5 ]] && pass "write errors: fsync returns EIO" || failed "write errors: fsync gave '$e', want EIO (5)"
if grep -q "NBD_EIO" "$log"; then pass "write errors: the daemon log names NBD_EIO"; else failed "write errors: no NBD_EIO in the log"; fi
# Tree blocks fail to write: the commit aborts, the filesystem turns read-only. (FUSE passes no
# syncfs to the daemon; an fsync of the mount's root directory commits.) A background commit or
# flush may meet the failing writes first and abort on its own (seen once in a CI-like run): the
# mkdir is then refused with EROFS, and so is the root's fsync.
mkdir "$mnt/r2/newdir" 2>/dev/null || echo "  write errors: mkdir refused (the filesystem had already aborted)"
e=$(timeout 60 python3 "$tmp/tool.py" fsync-dir-errno "$mnt" 2>&1) || e="timeout"
[[ $e == 5 || $e == 30 ]] && pass "write errors: a commit (fsync of the root) returns EIO (EROFS when already aborted): $e" ||
  failed "write errors: fsync of the root gave '$e', want EIO (5) or EROFS (30)"
abort_re='(commit failed, filesystem is now read-only|flushing data before commit failed).*NBD_EIO'
for _ in $(seq 100); do grep -qE "$abort_re" "$log" && break; sleep 0.1; done
rm -f "$tmp/pwrite.fail"
if grep -qE "$abort_re" "$log"; then
  pass "write errors: the commit aborted with a message naming NBD_EIO"
else
  failed "write errors: no commit abort naming NBD_EIO in the log"
fi
e=$(timeout 30 python3 "$tmp/tool.py" write-errno "$mnt/r2/after") || e="timeout"
[[ $e == 30 ]] && pass "write errors: later writes refused with EROFS" || failed "write errors: a later write gave '$e', want EROFS (30)"
umount_after_fault "write errors"
check_after_fault "write errors"
kernel_verify "write errors" "${manifests[@]}"

# ---- round 3: flushes fail (nbd_fsync_never_succeeds_over_a_failed_flush) ------------------------
manifests+=("$tmp/m3.json")
ubtrfs_mount "$uri" "$mnt" || { failed "round 3 mount"; finish; exit 1; }
log=$(ubtrfs_log "$mnt")
tool write "$mnt" "$tmp/m3.json" r3 || failed "round 3: fsynced files before the fault"
touch "$tmp/flush.fail"
e=$(timeout 60 python3 "$tmp/tool.py" fsync-errno "$mnt/r3/failing") || e="timeout"
[[ $e == 5 ]] && pass "flush errors: fsync returns EIO" || failed "flush errors: fsync gave '$e', want EIO (5)"
rm -f "$tmp/flush.fail"
if grep -q "flush.*NBD_EIO" "$log"; then pass "flush errors: the daemon log names the failed flush and NBD_EIO"; else failed "flush errors: no 'flush ... NBD_EIO' in the log"; fi
umount_after_fault "flush errors"
check_after_fault "flush errors"
kernel_verify "flush errors" "${manifests[@]}"

# ---- round 4: the server is killed (nbd_acknowledged_fsync_survives_a_killed_server) -------------
manifests+=("$tmp/m4.json")
ubtrfs_mount "$uri" "$mnt" || { failed "round 4 mount"; finish; exit 1; }
timeout 60 python3 "$tmp/tool.py" writer "$mnt" "$tmp/m4.json" >"$tmp/writer.log" 2>&1 &
writer=$!
sleep 1.5
kill_nbdkit
t=$SECONDS
rc=0
wait "$writer" || rc=$?
if ((rc == 0)); then
  pass "killed server: the writer's next operation failed with EIO or EROFS within $((SECONDS - t)) s ($(cat "$tmp/writer.log"))"
else
  failed "killed server: writer exit $rc: $(cat "$tmp/writer.log")"
fi
[[ -s $tmp/m4.json ]] || failed "killed server: the writer fsynced nothing before the kill"
t=$SECONDS
umount_after_fault "killed server"
echo "unmount after the kill took $((SECONDS - t)) s"
check_after_fault "killed server"
kernel_verify "killed server" "${manifests[@]}"

echo "nbd_test: $((SECONDS - started)) s"
finish
