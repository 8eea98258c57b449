#!/usr/bin/env bash
# Oracle: the ubtrfs daemon's command line and lifecycle, through real FUSE mounts.
#   - --help names every option, --version prints one, bad command lines exit 1;
#   - refused mounts (unknown option, missing image, not btrfs, image locked by another daemon,
#     bad mount point) exit non-zero with one clear line, mount nothing and leave the image bytes
#     unchanged (sha256);
#   - a background mount returns only once usable; /proc/mounts shows `IMAGE MNT fuse.ubtrfs` with
#     default_permissions; files written survive unmount by `fusermount3 -u`, by `umount`, by
#     SIGTERM and SIGINT of a foreground daemon; a read-only mount writes nothing (EROFS, sha256);
#   - scripts/install-mount-helper.sh makes `mount -t fuse.ubtrfs` and fstab entries work, and
#     mount(8) refuses unknown options with the daemon's message;
#   - at the end, `btrfs check` (when available) finds the image clean.
# After an unmount the test waits for the daemon's final commit with `flock IMAGE true`: the daemon
# holds the image's flock until its final commit is done.
#
# Usage: UBTRFS_BIN=<build>/tools bash tests/oracle/daemon_cli_test.sh
# Exit: 0 all passed, 1 a failure, 77 skipped (no root, /dev/fuse, fusermount3 or binaries).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DAEMON=$UBTRFS_BIN/daemon/ubtrfs
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs

require_root
[[ -c /dev/fuse ]] || skip_or_fail "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_or_fail "fusermount3 not installed"
[[ -x $DAEMON ]] || skip_or_fail "$DAEMON not built (ninja ubtrfs)"
[[ -x $MKFS ]] || skip_or_fail "$MKFS not built (ninja mkfs.ubtrfs)"

tmp=$(make_tmpdir)
img=$tmp/fs.img
mnt=$tmp/mnt
mkdir -p "$mnt"
truncate -s 512M "$img"
"$MKFS" -f -q "$img"

is_mounted() { awk -v m="$1" '$2 == m {found=1} END {exit !found}' /proc/mounts; }
mount_line() { awk -v m="$1" '$2 == m' /proc/mounts; }
# wait_released IMG: the daemon has finished its final commit and exited.
wait_released() { timeout 60 flock "$1" true; }

# expect_refused NAME STATUS_WANTED(any|N) PATTERN -- CMD...: the command fails (with that status),
# says PATTERN on stderr, leaves nothing mounted on $mnt and the image bytes unchanged.
expect_refused() {
  local name=$1 want=$2 pattern=$3 before after rc=0
  shift 4
  before=$(hash_file "$img")
  "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  after=$(hash_file "$img")
  if [[ $rc == 0 ]]; then failed "$name: exit status 0"; is_mounted "$mnt" && umount "$mnt"; return; fi
  [[ $want == any || $rc == "$want" ]] && pass "$name: exit status $rc" || failed "$name: exit status $rc, want $want"
  grep -qE -- "$pattern" "$tmp/err" && pass "$name: message matches '$pattern'" \
    || failed "$name: stderr lacks '$pattern': $(head -c 400 "$tmp/err")"
  is_mounted "$mnt" && failed "$name: something is mounted on $mnt" || pass "$name: nothing mounted"
  [[ $before == "$after" ]] && pass "$name: image unchanged" || failed "$name: image bytes changed"
}

# ---- command line ---------------------------------------------------------------------------
help=$("$DAEMON" --help)
missing=
for opt in ro rw commit= cache_mb= log_level= allow_other default_permissions subvolid= subvol= \
           cow_overwrite= wb_inhibit= log_file= UBTRFS_SYSLOG_SOCKET UBTRFS_JOURNAL_SOCKET UBTRFS_LOG_DIR \
           -f -d -o --version; do
  grep -qF -- "$opt" <<<"$help" || missing+=" $opt"
done
[[ -z $missing ]] && pass "--help names every option" || failed "--help lacks:$missing"
# Captured first: grep -q on a pipe exits at the first line, and the daemon's second write of a
# help longer than the pipe's stdio buffer then dies of SIGPIPE (pipefail made that a flake).
usage_h=$("$DAEMON" -h)
grep -q '^usage: ubtrfs IMAGE|DEVICE MOUNTPOINT' <<<"$usage_h" && pass "-h prints the usage line" || failed "-h usage"
"$DAEMON" --version | grep -qE '^ubtrfs [0-9]+\.[0-9]+' && pass "--version" || failed "--version output"
expect_refused "no arguments" 1 "expected IMAGE and MOUNTPOINT" -- "$DAEMON"
expect_refused "unknown flag" 1 "unknown command-line option '-z'" -- "$DAEMON" -z "$img" "$mnt"
expect_refused "unknown -o option" 1 "unknown mount option 'bogus'" -- "$DAEMON" "$img" "$mnt" -o rw,bogus
expect_refused "bad commit value" 1 "invalid value '0' for mount option 'commit'" -- "$DAEMON" "$img" "$mnt" -o commit=0
expect_refused "missing image" 32 "cannot open $tmp/nope.img" -- "$DAEMON" "$tmp/nope.img" "$mnt"
expect_refused "missing mount point" 32 "mount point $tmp/nomnt does not exist" -- "$DAEMON" "$img" "$tmp/nomnt"
truncate -s 64M "$tmp/zero.img"
zero_before=$(hash_file "$tmp/zero.img")
rc=0; "$DAEMON" "$tmp/zero.img" "$mnt" 2>"$tmp/err" || rc=$?
[[ $rc == 32 ]] && pass "not btrfs: exit 32" || failed "not btrfs: exit $rc"
grep -q "^ubtrfs: error: cannot mount $tmp/zero.img" "$tmp/err" && pass "not btrfs: message" \
  || failed "not btrfs: $(cat "$tmp/err")"
[[ $(hash_file "$tmp/zero.img") == "$zero_before" ]] && pass "not btrfs: image unchanged" || failed "not btrfs: changed"
is_mounted "$mnt" && { failed "not btrfs: mounted"; umount "$mnt"; } || pass "not btrfs: nothing mounted"

# ---- background mount, fusermount3 -u ---------------------------------------------------------
if "$DAEMON" "$img" "$mnt" -o commit=5; then pass "background mount returns 0"; else failed "background mount"; fi
line=$(mount_line "$mnt")
[[ $(awk '{print $1, $3}' <<<"$line") == "$img fuse.ubtrfs" ]] && pass "/proc/mounts: IMAGE MNT fuse.ubtrfs" \
  || failed "/proc/mounts line: $line"
grep -q 'default_permissions' <<<"$line" && pass "default_permissions always on" || failed "no default_permissions: $line"
grep -qE ' rw,' <<<"$line" && pass "mounted rw" || failed "not rw: $line"
pgrep -f "^$DAEMON $img $mnt" >/dev/null && pass "daemon runs detached" || failed "no daemon process"
# Rule a_background_daemon_keeps_the_callers_session_in_a_process_group_of_its_own: no terminal
# signal meant for the caller's process group reaches it, and it shares the caller's scheduling
# autogroup (a session of its own halved the FUSE round-trip rate: see lifecycle.cpp).
dpid=$(pgrep -f "^$DAEMON $img $mnt" | head -n 1)
read -r dsid dpgid < <(ps -o sid=,pgid= -p "${dpid:-0}") || true
[[ -n $dpid && $dsid == "$(ps -o sid= -p $$ | tr -d ' ')" && $dpgid == "$dpid" ]] \
  && pass "daemon: the caller's session, a process group of its own" \
  || failed "daemon pid ${dpid:-none}: session ${dsid:-?} (caller's $(ps -o sid= -p $$)), process group ${dpgid:-?}"
[[ $(ls -A "$mnt") == "" ]] && pass "fresh filesystem is empty" || failed "fresh fs lists: $(ls -A "$mnt")"
echo "hello ubtrfs" >"$mnt/a.txt" && mkdir "$mnt/dir" && echo nested >"$mnt/dir/b.txt" \
  && pass "create files and a directory" || failed "create files"
[[ $(cat "$mnt/a.txt") == "hello ubtrfs" ]] && pass "read back while mounted" || failed "read back"

# A second daemon on the same image is refused while the first runs (no hash: the first writes).
mkdir -p "$tmp/mnt2"
rc=0; "$DAEMON" "$img" "$tmp/mnt2" 2>"$tmp/err" || rc=$?
[[ $rc == 32 ]] && pass "second daemon: exit 32" || failed "second daemon: exit $rc"
grep -q "$img is in use by another ubtrfs daemon" "$tmp/err" && pass "second daemon: EBUSY message" \
  || failed "second daemon: $(cat "$tmp/err")"
is_mounted "$tmp/mnt2" && { failed "second daemon mounted"; umount "$tmp/mnt2"; } || pass "second daemon: nothing mounted"
rc=0; "$DAEMON" "$img" "$tmp/mnt2" -o ro 2>"$tmp/err" || rc=$?
[[ $rc == 32 ]] && grep -q "in use by another ubtrfs daemon" "$tmp/err" && pass "read-only daemon refused beside a writer" \
  || failed "ro beside rw: exit $rc $(cat "$tmp/err")"

fusermount3 -u "$mnt" && pass "fusermount3 -u" || failed "fusermount3 -u"
wait_released "$img" && pass "daemon releases the image after fusermount3 -u" || failed "daemon still holds the image"
is_mounted "$mnt" && failed "still mounted after fusermount3 -u" || pass "unmounted by fusermount3 -u"

# ---- foreground mount, SIGTERM ----------------------------------------------------------------
"$DAEMON" "$img" "$mnt" -f -o log_level=info 2>"$tmp/fg.log" &
pid=$!
for _ in $(seq 100); do is_mounted "$mnt" && break; sleep 0.1; done
is_mounted "$mnt" && pass "foreground mount" || failed "foreground mount: $(cat "$tmp/fg.log")"
[[ $(cat "$mnt/a.txt" 2>/dev/null) == "hello ubtrfs" && $(cat "$mnt/dir/b.txt" 2>/dev/null) == nested ]] \
  && pass "data survives fusermount3 -u" || failed "data lost after fusermount3 -u"
echo "after sigterm" >"$mnt/c.txt"
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
[[ $rc == 0 ]] && pass "SIGTERM: exit 0" || failed "SIGTERM: exit $rc"
is_mounted "$mnt" && { failed "SIGTERM: still mounted"; umount "$mnt"; } || pass "SIGTERM: unmounted"
grep -qE "mounted $img on $mnt \(rw, subvolume [0-9]+, generation [0-9]+\)" "$tmp/fg.log" \
  && pass "mount logged with image, mode, generation" || failed "mount log: $(cat "$tmp/fg.log")"
grep -qE "unmounted $img from $mnt \(rw, generation [0-9]+\)" "$tmp/fg.log" \
  && pass "unmount logged with generation" || failed "unmount log: $(cat "$tmp/fg.log")"

# ---- SIGINT, then umount(8) -------------------------------------------------------------------
"$DAEMON" "$img" "$mnt" -f 2>"$tmp/fg2.log" &
pid=$!
for _ in $(seq 100); do is_mounted "$mnt" && break; sleep 0.1; done
[[ $(cat "$mnt/c.txt" 2>/dev/null) == "after sigterm" ]] && pass "data survives SIGTERM" || failed "data lost after SIGTERM"
echo "after sigint" >"$mnt/d.txt"
kill -INT "$pid"
rc=0; wait "$pid" || rc=$?
[[ $rc == 0 ]] && ! is_mounted "$mnt" && pass "SIGINT: exit 0, unmounted" || failed "SIGINT: exit $rc"

"$DAEMON" "$img" "$mnt"
[[ $(cat "$mnt/d.txt" 2>/dev/null) == "after sigint" ]] && pass "data survives SIGINT" || failed "data lost after SIGINT"
echo "after umount" >"$mnt/e.txt"
umount "$mnt" && pass "umount(8)" || failed "umount(8)"
wait_released "$img" || failed "daemon holds the image after umount"

# ---- allow_other, default_permissions and POSIX ACLs (the kernel checks permissions) ----------
chmod 0755 "$UBTRFS_TEST_ROOT" "$tmp"
"$DAEMON" "$img" "$mnt" -o allow_other
grep -q 'allow_other' <<<"$(mount_line "$mnt")" && pass "allow_other forwarded" || failed "allow_other: $(mount_line "$mnt")"
chmod 0755 "$mnt"
echo secret >"$mnt/priv" && chmod 0600 "$mnt/priv"
if su nobody -s /bin/sh -c "cat $mnt/priv" >/dev/null 2>&1; then failed "mode 0600 readable by nobody"; else
  pass "mode 0600 denies another user"; fi
# user:65534:r-- with mask r--: the daemon must turn the mask into the mode's group bits.
python3 - "$mnt/priv" <<'PY'
import os, struct, sys
e = lambda tag, perm, id: struct.pack('<HHI', tag, perm, id)
acl = struct.pack('<I', 2) + e(1, 6, 0xffffffff) + e(2, 4, 65534) + e(4, 0, 0xffffffff) + e(0x10, 4, 0xffffffff) + e(0x20, 0, 0xffffffff)
os.setxattr(sys.argv[1], 'system.posix_acl_access', acl)
PY
[[ $(stat -c %a "$mnt/priv") == 640 ]] && pass "access ACL sets the group bits to the mask" \
  || failed "mode after ACL: $(stat -c %a "$mnt/priv")"
[[ $(su nobody -s /bin/sh -c "cat $mnt/priv" 2>/dev/null) == secret ]] && pass "ACL grants read to the named user" \
  || failed "ACL read not granted"
if su nobody -s /bin/sh -c "echo x >>$mnt/priv" 2>/dev/null; then failed "ACL granted write"; else
  pass "ACL denies write to the named user"; fi
rm "$mnt/priv"
fuse_umount_retrying_busy "$mnt"
wait_released "$img"

# ---- read-only ---------------------------------------------------------------------------------
before=$(hash_file "$img")
"$DAEMON" "$img" "$mnt" -o ro && pass "ro mount" || failed "ro mount"
grep -qE ' ro,' <<<"$(mount_line "$mnt")" && pass "kernel mount is ro" || failed "ro not in $(mount_line "$mnt")"
[[ $(cat "$mnt/e.txt" 2>/dev/null) == "after umount" ]] && pass "data survives umount(8)" || failed "data lost after umount"
if touch "$mnt/new" 2>"$tmp/err"; then failed "write on ro mount succeeded"; else
  grep -q "Read-only file system" "$tmp/err" && pass "ro mount: EROFS" || failed "ro write: $(cat "$tmp/err")"
fi
# A second read-only daemon may share the image.
mkdir -p "$tmp/mnt2"
"$DAEMON" "$img" "$tmp/mnt2" -o ro && pass "two read-only daemons share an image" || failed "second ro daemon"
mkdir -p "$tmp/mnt3"
rc=0; "$DAEMON" "$img" "$tmp/mnt3" -o rw 2>"$tmp/err" || rc=$?
[[ $rc == 32 ]] && grep -q "is in use by another ubtrfs daemon" "$tmp/err" && ! is_mounted "$tmp/mnt3" \
  && pass "writer refused beside readers" || failed "writer beside readers: exit $rc $(cat "$tmp/err")"
fusermount3 -u "$tmp/mnt2" 2>/dev/null || true
fuse_umount_retrying_busy "$mnt"
wait_released "$img" || true
[[ $(hash_file "$img") == "$before" ]] && pass "ro mount leaves the image unchanged" || failed "ro mount changed the image"

# ---- mount(8) and fstab through the install script ----------------------------------------------
# mount(8) runs helpers with a sanitized PATH (/usr/local/sbin is on it, a test directory is not),
# so this installs into the default prefix; a binary already there is put back at exit.
installed=/usr/local/sbin/ubtrfs
backup=
if [[ -e $installed ]]; then backup=$tmp/ubtrfs.previous; cp -p "$installed" "$backup"; fi
_restore_installed() {
  local rc=$?
  if [[ -n $backup ]]; then cp -p "$backup" "$installed"; else rm -f "$installed"; fi
  (exit $rc)
  _oracle_cleanup
}
trap _restore_installed EXIT
if bash "$UBTRFS_SRC/scripts/install-mount-helper.sh" "$DAEMON" >"$tmp/inst.log" 2>&1; then
  pass "install-mount-helper.sh"
else
  failed "install-mount-helper.sh: $(cat "$tmp/inst.log")"
fi
cmp -s "$installed" "$DAEMON" && pass "installed $installed" || failed "$installed is not the built daemon"
if mount -t fuse.ubtrfs "$img" "$mnt" -o commit=10,noatime; then
  pass "mount -t fuse.ubtrfs"
  [[ $(awk '{print $1, $3}' <<<"$(mount_line "$mnt")") == "$img fuse.ubtrfs" ]] && pass "mount(8): /proc/mounts type" \
    || failed "mount(8) line: $(mount_line "$mnt")"
  grep -q noatime <<<"$(mount_line "$mnt")" && pass "generic flag noatime reaches the kernel mount" \
    || failed "noatime lost: $(mount_line "$mnt")"
  echo "via mount" >"$mnt/f.txt"
  umount "$mnt"
  wait_released "$img"
else
  failed "mount -t fuse.ubtrfs"
fi
expect_refused "mount(8) unknown option" any "unknown mount option 'frobnicate'" -- \
  mount -t fuse.ubtrfs "$img" "$mnt" -o frobnicate
echo "$img $mnt fuse.ubtrfs ro,commit=20 0 0" >"$tmp/fstab"
if mount --fstab "$tmp/fstab" "$mnt"; then
  grep -qE ' ro,' <<<"$(mount_line "$mnt")" && pass "fstab entry mounts (ro)" || failed "fstab: $(mount_line "$mnt")"
  [[ $(cat "$mnt/f.txt" 2>/dev/null) == "via mount" ]] && pass "data written through mount(8) persists" \
    || failed "f.txt lost"
  umount "$mnt"
  wait_released "$img"
else
  failed "mount --fstab"
fi

# ---- a write-protected block device -----------------------------------------------------------
# Rule a_write_protected_device_mounts_read_only: as mount(8) does for a kernel filesystem, the
# daemon warns and mounts read-only; root could open the device for writing, and ubtrfs used to
# mount it read-write, accept writes and lose them at the first commit (EPERM). mkfs.ubtrfs
# refuses it. The device is not written.
if command -v losetup >/dev/null && command -v blockdev >/dev/null && losetup -f >/dev/null 2>&1; then
  wp_img=$tmp/wp.img
  truncate -s 300M "$wp_img"
  "$MKFS" -f -q "$wp_img"
  wp_dev=$(losetup -f --show "$wp_img")
  blockdev --setro "$wp_dev"
  wp_before=$(hash_file "$wp_img")
  rc=0; "$DAEMON" "$wp_dev" "$mnt" 2>"$tmp/wp.err" || rc=$?
  [[ $rc == 0 ]] && grep -q "$wp_dev: device write-protected, mounting read-only" "$tmp/wp.err" \
    && pass "write-protected device: mounted with the warning" || failed "write-protected device: exit $rc: $(cat "$tmp/wp.err")"
  grep -qE ' ro,' <<<"$(mount_line "$mnt")" && pass "write-protected device: the mount is ro" \
    || failed "write-protected device: $(mount_line "$mnt")"
  if touch "$mnt/new" 2>"$tmp/wp.err"; then failed "write-protected device: a create succeeded"
  else grep -q "Read-only file system" "$tmp/wp.err" && pass "write-protected device: a create fails with EROFS" \
    || failed "write-protected device: create: $(cat "$tmp/wp.err")"; fi
  is_mounted "$mnt" && fusermount3 -u "$mnt"
  wait_released "$wp_dev" || failed "write-protected device: the daemon holds it after the unmount"
  rc=0; "$MKFS" -f -q "$wp_dev" 2>"$tmp/wp.err" || rc=$?
  [[ $rc != 0 ]] && grep -q "write-protected" "$tmp/wp.err" && pass "write-protected device: mkfs.ubtrfs refuses it" \
    || failed "write-protected device: mkfs exit $rc: $(cat "$tmp/wp.err")"
  [[ $(hash_file "$wp_img") == "$wp_before" ]] && pass "write-protected device: not written" \
    || failed "write-protected device: the image changed"
  blockdev --setrw "$wp_dev"
  losetup -d "$wp_dev"
fi

# ---- the image is a valid btrfs after all that -------------------------------------------------
if command -v btrfs >/dev/null; then
  check_clean "$img" && pass "btrfs check clean after the daemon runs" || failed "btrfs check"
fi
finish
