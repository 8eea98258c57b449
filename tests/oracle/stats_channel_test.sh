#!/usr/bin/env bash
# The control channel and the daemon's log destinations (issue 7, "Live counters"), through real
# mounts of a fresh mkfs.ubtrfs image:
#   - `ubtrfs-inspect stats MNT --json` is JSON holding today's counters, and they move after a
#     workload with fsync; the text form names them; the same as uid 65534 on an allow_other
#     mount, and a one-line "permission denied ... allow_other" on a mount without it;
#   - `ubtrfs-inspect log MNT` shows the checksum errors provoked by a flipped data byte, filtered
#     by --level, in text and JSON; enough of them to need several chunks and to overflow the
#     512-record ring;
#   - paths that are not ubtrfs mounts: exit 1, one line "not a ubtrfs mount (...)";
#   - any other ioctl, on a file or a directory of the mount, is ENOTTY; a malformed control
#     request is EPROTO;
#   - the background daemon logs to a syslog socket when one accepts a connection, else to a
#     journal socket, else to a file under UBTRFS_LOG_DIR (0755 directory, 0640 file) that it
#     names on stderr before detaching, else (no directory either) only the in-memory ring, with
#     a warning; -o log_file= wins in the background and the foreground; a log file that cannot
#     be opened fails the mount (exit 32).
# The syslog and journal listeners are python sockets of this test (UBTRFS_SYSLOG_SOCKET,
# UBTRFS_JOURNAL_SOCKET); nothing of the machine's own logging is touched.
#
# Usage: UBTRFS_BIN=<build>/tools bash tests/oracle/stats_channel_test.sh
# Exit: 0 all passed, 1 a failure, 77 skipped (an oracle missing and UBTRFS_REQUIRE_ORACLES unset).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
INSPECT=$UBTRFS_BIN/inspect/ubtrfs-inspect
CORRUPT=$UBTRFS_BIN/corrupt/ubtrfs-corrupt

require_ubtrfs
fs_is_kernel && skip_or_fail "the control channel belongs to the ubtrfs daemon (UBTRFS_FS=kernel)"
for b in "$MKFS" "$INSPECT" "$CORRUPT"; do [[ -x $b ]] || { echo "FAIL: $b not built" >&2; exit 1; }; done
command -v setpriv >/dev/null || skip_or_fail "setpriv (util-linux) not installed"

tmp=$(make_tmpdir)
# uid 65534 must be able to reach the mount points.
chmod 0755 "$UBTRFS_TEST_ROOT" "$tmp"
img=$tmp/a.img
mnt=$tmp/mnt
truncate -s 1G "$img"
"$MKFS" -q "$img"

as_nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups -- "$@"; }

# json_has_keys JSON KEY...: JSON is an object holding every KEY at the top level.
json_has_keys() {
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
missing = [k for k in sys.argv[2:] if k not in d]
if missing:
    sys.exit("missing keys: " + " ".join(missing))' "$@"
}
# json_get JSON KEY: the top-level number KEY, or -1 when there is none.
json_get() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2" 2>/dev/null || echo -1; }
# text_names_stats TEXT: the text form has today's counters as lines and sections.
text_names_stats() {
  grep -qE '^generation +[0-9]+$' <<<"$1" && grep -qE '^commits +[0-9]+$' <<<"$1" &&
    grep -qE '^cows +[0-9]+$' <<<"$1" && grep -qx 'restarts:' <<<"$1" && grep -qx 'cache:' <<<"$1" &&
    grep -qE '^  [a-z_]+ +[0-9]+$' <<<"$1"
}
# one_line_error FILE PATTERN: FILE is exactly one line, "ubtrfs-inspect: error: " + PATTERN.
one_line_error() {
  [[ $(wc -l <"$1") == 1 ]] && grep -qE "^ubtrfs-inspect: error: $2" "$1"
}

keys=(generation commits cows restarts cache)

# ---- stats as root and as uid 65534 on an allow_other mount ----------------------------------
if ! ubtrfs_mount "$img" "$mnt" allow_other; then
  failed "ubtrfs refused to mount a fresh mkfs.ubtrfs image"
  finish
fi
rc=0
before=$("$INSPECT" stats "$mnt" --json 2>"$tmp/err") || rc=$?
if ((rc == 0)) && json_has_keys "$before" "${keys[@]}"; then
  pass "stats --json: JSON with ${keys[*]}"
else
  failed "stats --json: exit $rc, output '$(head -c 300 <<<"$before")' $(head -c 300 "$tmp/err")"
fi

# A workload: files written and fsynced (each fsync commits), a directory tree.
python3 - "$mnt" <<'PY' || failed "the workload"
import os, sys
root = sys.argv[1]
os.mkdir(os.path.join(root, "d"))
for i in range(12):
    path = os.path.join(root, "d" if i % 2 else "", f"f{i}")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, os.urandom(40000 + 1000 * i))
    os.fsync(fd)
    os.close(fd)
fd = os.open(os.path.join(root, "data.bin"), os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, os.urandom(256 * 1024))
os.fsync(fd)
os.close(fd)
PY
after=$("$INSPECT" stats "$mnt" --json) || true
c0=$(json_get "$before" commits); c1=$(json_get "$after" commits)
g0=$(json_get "$before" generation); g1=$(json_get "$after" generation)
w0=$(json_get "$before" tree_blocks_written); w1=$(json_get "$after" tree_blocks_written)
# Each fsync is served by the tree log or by a commit (fs/tree_log.h): together they count 13.
l1=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["tree_log"]["fsyncs_logged"])' "$after" 2>/dev/null || echo 0)
if ((c0 >= 0 && c1 + l1 >= c0 + 13 && (g1 > g0 || l1 > 0))); then
  pass "stats move with the workload: commits $c0 -> $c1, fsyncs through the log $l1, generation $g0 -> $g1, tree blocks written $w0 -> $w1"
else
  failed "stats after 13 fsyncs: commits $c0 -> $c1, fsyncs through the log $l1, generation $g0 -> $g1"
fi

ino=$(stat -c %i "$mnt/data.bin") || ino=
text=$("$INSPECT" stats "$mnt") || true
if text_names_stats "$text"; then pass "stats text form: aligned counters and indented sections"; else failed "stats text form: $(head -c 600 <<<"$text")"; fi

rc=0
nb_json=$(as_nobody "$INSPECT" stats "$mnt" --json 2>"$tmp/err") || rc=$?
if ((rc == 0)) && json_has_keys "$nb_json" "${keys[@]}"; then pass "uid 65534, allow_other mount: stats --json"; else failed "uid 65534 stats --json: exit $rc $(head -c 300 "$tmp/err")"; fi
rc=0
nb_text=$(as_nobody "$INSPECT" stats "$mnt/d" 2>"$tmp/err") || rc=$?
if ((rc == 0)) && text_names_stats "$nb_text"; then pass "uid 65534: stats text form, asked on a subdirectory"; else failed "uid 65534 stats text: exit $rc $(head -c 300 "$tmp/err")"; fi
rc=0
nb_log=$(as_nobody "$INSPECT" log "$mnt" 2>"$tmp/err") || rc=$?
if ((rc == 0)) && grep -qE "  info +mounted $img on $mnt " <<<"$nb_log"; then pass "uid 65534: log shows the mount line"; else failed "uid 65534 log: exit $rc '$nb_log' $(head -c 300 "$tmp/err")"; fi

# ---- ioctls that are not the control channel --------------------------------------------------
rc=0
python3 - "$mnt" <<'PY' || rc=$?
import errno, fcntl, os, struct, sys
root = sys.argv[1]
def ioc(d, t, nr, size): return (d << 30) | (size << 16) | (t << 8) | nr
checks = []
def expect(path, cmd, size, want, what):
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, cmd, bytearray(size))
        got = 0
    except OSError as e:
        got = e.errno
    finally:
        os.close(fd)
    ok = got == want
    print(("ok" if ok else "bad") + f": {what} on {os.path.basename(path) or path}: {errno.errorcode.get(got, got)}")
    checks.append(ok)
f = os.path.join(root, "d", "f1")
balance_progress = ioc(2, 0x94, 34, 1024)  # BTRFS_IOC_BALANCE_PROGRESS: not served
for p in (root, f):
    expect(p, balance_progress, 1024, errno.ENOTTY, "BTRFS_IOC_BALANCE_PROGRESS")
    expect(p, ioc(3, 0xD7, 2, 16320), 16320, errno.ENOTTY, "control magic, unknown number")
    expect(p, ioc(3, 0xD7, 1, 64), 64, errno.ENOTTY, "control number with another size")
expect(f, ioc(1, 0x42, 7, 8), 8, errno.ENOTTY, "an arbitrary _IOW")
# The control command itself with a zeroed message: wrong magic.
expect(root, ioc(3, 0xD7, 1, 16320), 16320, errno.EPROTO, "control read with a zero message")
sys.exit(0 if all(checks) else 1)
PY
if ((rc == 0)); then pass "unknown ioctls on a file and a directory: ENOTTY; malformed control request: EPROTO"; else failed "ioctl replies (above)"; fi

# ---- paths that are not ubtrfs mounts ---------------------------------------------------------
rc=0
out=$("$INSPECT" stats /tmp 2>"$tmp/err") || rc=$?
if ((rc == 1)) && [[ -z $out ]] && one_line_error "$tmp/err" '/tmp: not a ubtrfs mount \(.+ on /.*\)$'; then
  pass "stats /tmp: exit 1, one line: $(cat "$tmp/err")"
else
  failed "stats /tmp: exit $rc, stdout '$out', stderr '$(cat "$tmp/err")'"
fi
rc=0
"$INSPECT" log "$tmp" >/dev/null 2>"$tmp/err" || rc=$?
if ((rc == 1)) && one_line_error "$tmp/err" "$tmp: not a ubtrfs mount"; then pass "log on the directory holding the mount point: not a ubtrfs mount"; else failed "log $tmp: exit $rc, $(cat "$tmp/err")"; fi
rc=0
"$INSPECT" stats "$mnt/d/f1" >/dev/null 2>"$tmp/err" || rc=$?
if ((rc == 0)); then pass "stats asked on a regular file of the mount"; else failed "stats on a file: exit $rc $(cat "$tmp/err")"; fi
rc=0
"$INSPECT" stats "$tmp/absent" >/dev/null 2>"$tmp/err" || rc=$?
if ((rc == 1)) && one_line_error "$tmp/err" "$tmp/absent: No such file or directory$"; then pass "stats on a missing path: one line"; else failed "stats missing path: exit $rc $(cat "$tmp/err")"; fi
if grep -qw btrfs /proc/filesystems 2>/dev/null && losetup -f >/dev/null 2>&1; then
  kimg=$tmp/kernel.img
  truncate -s 256M "$kimg"
  "$MKFS" -q "$kimg"
  if kernel_mount "$kimg" "$tmp/kmnt"; then
    rc=0
    "$INSPECT" stats "$tmp/kmnt" >/dev/null 2>"$tmp/err" || rc=$?
    if ((rc == 1)) && one_line_error "$tmp/err" "$tmp/kmnt: not a ubtrfs mount \\(btrfs on $tmp/kmnt\\)$"; then
      pass "stats on a kernel btrfs mount: $(cat "$tmp/err")"
    else
      failed "stats on kernel btrfs: exit $rc $(cat "$tmp/err")"
    fi
    kernel_umount "$tmp/kmnt"
  else
    failed "kernel mount of a mkfs.ubtrfs image"
  fi
else
  echo "note: no kernel btrfs or loop device: the kernel-btrfs case is not run" >&2
fi

if ubtrfs_umount "$mnt"; then pass "unmount, daemon exit 0"; else failed "unmount"; fi

# ---- a mount without allow_other: other users are told why ------------------------------------
ubtrfs_mount "$img" "$mnt" || { failed "remount without allow_other"; finish; }
rc=0
as_nobody "$INSPECT" stats "$mnt" >/dev/null 2>"$tmp/err" || rc=$?
if ((rc == 1)) && one_line_error "$tmp/err" "$mnt: permission denied: the ubtrfs mount on $mnt was made without allow_other, only uid 0 may use it$"; then
  pass "uid 65534 without allow_other: $(cat "$tmp/err")"
else
  failed "uid 65534 without allow_other: exit $rc, $(cat "$tmp/err")"
fi
"$INSPECT" stats "$mnt" --json >/dev/null 2>&1 && pass "root still reads that mount" || failed "root stats without allow_other"
ubtrfs_umount "$mnt" || failed "unmount (no allow_other)"

# ---- log: checksum errors of a flipped data byte ------------------------------------------------
"$INSPECT" dump-tree -t fs "$img" >"$tmp/fs-tree.txt"
data_bytenr=$(awk -v key="($ino EXTENT_DATA 0)" 'index($0, key) { want = 1 } want && /disk byte/ { print $5; exit }' "$tmp/fs-tree.txt")
if [[ -z $ino || -z $data_bytenr || $data_bytenr == 0 ]]; then
  failed "test setup: no data extent found for data.bin (inode '$ino')"
else
  "$CORRUPT" "$img" --data "$data_bytenr" --flip-byte 5000 >/dev/null || failed "ubtrfs-corrupt --data $data_bytenr"
  ubtrfs_mount "$img" "$mnt" allow_other || { failed "mount of the corrupted image"; finish; }
  # 300 reads: each fails with EIO and logs errors, so the ring (512) overflows.
  eio=$(python3 - "$mnt/data.bin" <<'PY'
import errno, os, sys
n = 0
for _ in range(300):
    fd = os.open(sys.argv[1], os.O_RDONLY)
    try:
        os.pread(fd, 4096, 4096)  # the damaged block (byte 5000 of the extent)
    except OSError as e:
        n += e.errno == errno.EIO
    os.close(fd)
print(n)
PY
)
  [[ $eio == 300 ]] && pass "300 reads of the damaged file: EIO" || failed "reads of the damaged file: $eio of 300 EIO"
  log_text=$("$INSPECT" log "$mnt") || true
  if grep -qE "  error +.*csum failed .*ino $ino " <<<"$log_text"; then
    pass "log shows the checksum error: $(grep -m1 -E 'csum failed' <<<"$log_text" | cut -c1-160)"
  else
    failed "log lacks a csum error for inode $ino: $(tail -3 <<<"$log_text")"
  fi
  if grep -qE '^\([0-9]+ older records were dropped: the daemon keeps the last 512\)$' <<<"$log_text"; then
    pass "log text notes the records pushed out of the ring"
  else
    failed "log text: no dropped-records note: $(head -2 <<<"$log_text")"
  fi
  log_json=$(as_nobody "$INSPECT" log "$mnt" --json) || true
  if python3 -c '
import json, sys
raw = sys.argv[1]
d = json.loads(raw)
recs = d["records"]
assert d["capacity"] == 512 and len(recs) == 512 and d["dropped"] > 0, (d["capacity"], len(recs), d["dropped"])
assert len(raw) > 3 * 16256, len(raw)     # several chunks of the control protocol
assert all(set(r) == {"time", "level", "message"} for r in recs)
assert any(r["level"] == "error" and "csum failed" in r["message"] for r in recs)
' "$log_json"; then
    pass "log --json as uid 65534: 512 records, dropped > 0, $(wc -c <<<"$log_json") bytes (several chunks)"
  else
    failed "log --json: $(head -c 300 <<<"$log_json")"
  fi
  errors_only=$("$INSPECT" log "$mnt" --level error) || true
  if grep -qE '  error +' <<<"$errors_only" && ! grep -qE '  (info|warning) +' <<<"$errors_only"; then
    pass "log --level error: errors only"
  else
    failed "log --level error: $(grep -m2 -vE '  error ' <<<"$errors_only")"
  fi
  # The mount line was pushed out of the ring by the errors; a fresh info line is not shown at warn.
  warn_json=$("$INSPECT" log "$mnt" --json --level warn) || true
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["records"] and all(r["level"] in ("warning", "error", "critical") for r in d["records"])' "$warn_json" &&
    pass "log --json --level warn: only warnings and worse" || failed "log --json --level warn"
  ubtrfs_umount "$mnt" || failed "unmount (corrupted image)"
fi

# ---- where the background daemon logs ---------------------------------------------------------
# listen SOCKET OUT: a python datagram listener writing what it receives to OUT, one record per
# line with newlines shown as '|', until the daemon's last line ("unmounted IMG from") or 120 s.
# Sets LISTENER to its pid.
listen() {
  python3 - "$1" "$2" "$img" <<'PY' &
import os, socket, sys, time
path, out, img = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(1)
deadline = time.time() + 120
with open(out, "w") as f:
    f.write("ready\n")
    f.flush()
    while time.time() < deadline:
        try:
            rec = s.recv(65536).decode(errors="replace")
        except socket.timeout:
            continue
        f.write(rec.replace("\n", "|").replace("\0", "<NUL>") + "\n")
        f.flush()
        if f"unmounted {img} from" in rec:
            break
PY
  LISTENER=$!
  local i
  for i in $(seq 100); do [[ -s $2 ]] && return 0; sleep 0.05; done
  return 1
}
# background_mount OPTS: the daemon without -f, with the test's socket and directory overrides.
background_mount() {
  UBTRFS_SYSLOG_SOCKET=$syslog_sock UBTRFS_JOURNAL_SOCKET=$journal_sock UBTRFS_LOG_DIR=$logdir \
    ubtrfs_try_mount "$img" "$mnt" "$1"
}
# background_umount: unmount, then wait for the daemon's final commit (it holds the image lock).
background_umount() {
  fusermount3 -u "$mnt" && timeout 60 flock "$img" true
}

# 1. A syslog socket accepts the connection: records arrive there, nothing in the log directory.
syslog_sock=$tmp/syslog.sock journal_sock=$tmp/journal.sock logdir=$tmp/logdir
if listen "$syslog_sock" "$tmp/syslog.out"; then
  background_mount ""
  if ((TRY_RC == 0)); then
    background_umount || failed "background unmount (syslog)"
    wait "$LISTENER" || true
    if grep -qE "^<30>[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} ubtrfs\[[0-9]+\]: mounted $img on $mnt " "$tmp/syslog.out" &&
      grep -qE "^<30>.*ubtrfs\[[0-9]+\]: unmounted $img from $mnt " "$tmp/syslog.out" && [[ ! -e $logdir ]] &&
      ! grep -q 'logging to' "$TRY_ERR"; then
      pass "background, syslog socket present: RFC 3164 records there ($(sed -n 2p "$tmp/syslog.out" | cut -c1-80)...)"
    else
      failed "background with syslog: $(head -c 400 "$tmp/syslog.out"); stderr: $(cat "$TRY_ERR")"
    fi
  else
    failed "background mount with a syslog socket: exit $TRY_RC: $(cat "$TRY_ERR")"
  fi
  kill "$LISTENER" 2>/dev/null || true
else
  failed "test setup: syslog listener"
fi

# 2. No syslog, a journal socket: native-protocol records there.
syslog_sock=$tmp/no-syslog.sock journal_sock=$tmp/journal.sock
if listen "$journal_sock" "$tmp/journal.out"; then
  background_mount ""
  if ((TRY_RC == 0)); then
    background_umount || failed "background unmount (journal)"
    wait "$LISTENER" || true
    if grep -qE "^MESSAGE=mounted $img on $mnt .*\|PRIORITY=6\|SYSLOG_IDENTIFIER=ubtrfs\|SYSLOG_FACILITY=3\|SYSLOG_PID=[0-9]+\|UBTRFS_IMAGE=$img\|$" "$tmp/journal.out" &&
      [[ ! -e $logdir ]]; then
      pass "background, no syslog, journal socket present: native records there"
    else
      failed "background with journal: $(head -c 400 "$tmp/journal.out"); stderr: $(cat "$TRY_ERR")"
    fi
  else
    failed "background mount with a journal socket: exit $TRY_RC: $(cat "$TRY_ERR")"
  fi
  kill "$LISTENER" 2>/dev/null || true
else
  failed "test setup: journal listener"
fi

# 3. Neither: a file under the log directory, named on stderr before detaching.
syslog_sock=$tmp/no-syslog.sock journal_sock=$tmp/no-journal.sock
logfile=$logdir/$(sed 's|^/||; s|/|-|g' <<<"$img").log
background_mount ""
if ((TRY_RC == 0)); then
  if grep -qF "logging to $logfile" "$TRY_ERR" && [[ $(wc -l <"$TRY_ERR") == 1 ]]; then
    pass "background, no syslog nor journal: stderr names the file: $(cat "$TRY_ERR")"
  else
    failed "background without syslog: stderr '$(cat "$TRY_ERR")', want 'logging to $logfile'"
  fi
  "$INSPECT" stats "$mnt" >/dev/null || failed "stats on the background mount"
  background_umount || failed "background unmount (file)"
  if [[ $(stat -c %a "$logdir") == 755 && $(stat -c %a "$logfile" 2>/dev/null) == 640 ]] &&
    grep -qE "^[0-9-]{10} [0-9:.]{12} ubtrfs\[[0-9]+\]: info: mounted $img on $mnt " "$logfile" &&
    grep -qE "ubtrfs\[[0-9]+\]: info: unmounted $img from $mnt " "$logfile"; then
    pass "the log file (0640 in a 0755 directory) has the mount and unmount lines"
  else
    failed "log file $logfile: $(stat -c '%a %n' "$logdir" "$logfile" 2>&1) $(head -c 400 "$logfile" 2>/dev/null)"
  fi
  # The file exists now: a second mount of the image is silent (a mount that works says nothing;
  # xfstests compares mount's output), and appends to the same file.
  background_mount ""
  if ((TRY_RC == 0)); then
    [[ ! -s $TRY_ERR ]] && pass "second background mount without syslog: nothing on stderr" ||
      failed "second background mount without syslog: stderr '$(cat "$TRY_ERR")', want nothing"
    background_umount || failed "background unmount (file, second mount)"
    [[ $(grep -c "info: mounted $img on $mnt " "$logfile") == 2 ]] && pass "the second mount appended to the same log file" ||
      failed "log file after two mounts: $(grep -c 'info: mounted' "$logfile") mount lines"
  else
    failed "second background mount without syslog: exit $TRY_RC: $(cat "$TRY_ERR")"
  fi
else
  failed "background mount without syslog: exit $TRY_RC: $(cat "$TRY_ERR")"
fi

# 3b. Not even the log directory can be made: the mount still works, stderr says the messages
#     stay in memory, and `ubtrfs-inspect log` has them.
touch "$tmp/not-a-dir"
logdir=$tmp/not-a-dir/logs
background_mount ""
if ((TRY_RC == 0)); then
  if grep -qF "messages are kept in memory only (ubtrfs-inspect log $mnt)" "$TRY_ERR" && [[ $(wc -l <"$TRY_ERR") == 1 ]] &&
    "$INSPECT" log "$mnt" | grep -qE "  info +mounted $img on $mnt "; then
    pass "no log destination at all: one warning on stderr, the ring still has the mount line"
  else
    failed "no log destination: stderr '$(cat "$TRY_ERR")', log '$("$INSPECT" log "$mnt" 2>&1 | tail -2)'"
  fi
  background_umount || failed "background unmount (no destination)"
else
  failed "background mount without any log destination: exit $TRY_RC: $(cat "$TRY_ERR")"
fi
logdir=$tmp/logdir

# 4. -o log_file= in the background (a relative path: the daemon opens it before it changes to /):
#    that file, not the automatic one; nothing said on stderr.
rm -rf "$logdir"
pushd "$tmp" >/dev/null
background_mount "log_file=chosen.log"
popd >/dev/null
if ((TRY_RC == 0)); then
  background_umount || failed "background unmount (log_file)"
  if grep -qE "ubtrfs\[[0-9]+\]: info: mounted $img on $mnt " "$tmp/chosen.log" && [[ ! -e $logdir ]] && [[ ! -s $TRY_ERR ]]; then
    pass "background -o log_file: the chosen file has the mount line, no automatic file"
  else
    failed "background -o log_file: $(head -c 300 "$tmp/chosen.log" 2>&1); dir: $(ls "$logdir" 2>&1); stderr: $(cat "$TRY_ERR")"
  fi
else
  failed "background mount with log_file: exit $TRY_RC: $(cat "$TRY_ERR")"
fi

# 5. -o log_file= in the foreground: the file and stderr both.
ubtrfs_mount "$img" "$mnt" "log_file=$tmp/fg.log" || failed "foreground mount with log_file"
fg_log=$(ubtrfs_log "$mnt")
ubtrfs_umount "$mnt" || failed "foreground unmount (log_file)"
if grep -qE "ubtrfs\[[0-9]+\]: info: mounted $img on $mnt " "$tmp/fg.log" && grep -qE "info: mounted $img on $mnt " "$fg_log"; then
  pass "foreground -o log_file: the file and stderr"
else
  failed "foreground -o log_file: file '$(head -c 200 "$tmp/fg.log")' stderr '$(head -c 200 "$fg_log")'"
fi

# 6. A log file that cannot be opened: the mount fails with exit 32 and says why.
background_mount "log_file=$tmp/no/such/dir.log"
if ((TRY_RC == 32)) && grep -qF "cannot open log file $tmp/no/such/dir.log: No such file or directory" "$TRY_ERR" && ! is_mounted "$mnt"; then
  pass "unopenable log_file: exit 32, $(cat "$TRY_ERR")"
else
  failed "unopenable log_file: exit $TRY_RC, $(cat "$TRY_ERR")"
fi

finish
