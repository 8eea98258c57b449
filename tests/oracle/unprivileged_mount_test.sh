#!/usr/bin/env bash
# A user who is not root (uid 65534, nobody) mounts an image they own with `ubtrfs IMG DIR`
# (libfuse runs the setuid fusermount3), writes, reads and fsyncs files, and unmounts with
# `fusermount3 -u`; the image is check-clean and the kernel reads what the user wrote. Before
# that, each thing only root grants is refused with one line naming the image and the cause
# (tools/daemon/user_mount.h): /dev/fuse not accessible, allow_other without user_allow_other in
# /etc/fuse.conf, an image the user may not write (rw) or read, a block device.
#
# /dev/fuse is 0600 on this machine (Debian's default is 0666): the test makes it 0666 for the
# user's mount and restores the mode at exit, whatever happens.
#
# Rules named here: user_mount_refusals_are_one_line_naming_the_image,
# user_mount_round_trip_through_fusermount3.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
USER_UID=65534

require_ubtrfs
fs_is_kernel && skip_or_fail "tests the ubtrfs daemon's user mounts"
require_kernel_btrfs
require_btrfs_check
command -v setpriv >/dev/null || skip_or_fail "setpriv (util-linux) not installed"
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
# The user must reach the daemon binary: a build tree under a 0700 home is not reachable.
setpriv --reuid=$USER_UID --regid=$USER_UID --clear-groups test -x "$UBTRFS_DAEMON" ||
  skip_or_fail "uid $USER_UID cannot execute $UBTRFS_DAEMON"

fuse_mode=$(stat -c %a /dev/fuse)
trap 'rc=$?; set +e; chmod "$fuse_mode" /dev/fuse; (exit $rc); _oracle_cleanup' EXIT

chmod 0755 "$UBTRFS_TEST_ROOT"
tmp=$(make_tmpdir)
chmod 0755 "$tmp"
img=$tmp/user.img
mnt=$tmp/mnt
xdg=$tmp/xdg
truncate -s 256M "$img"
"$MKFS" -q "$img"
# mkfs makes the top directory root's (as mkfs.btrfs does): give it to the user through a mount.
ubtrfs_mount "$img" "$mnt"
chown $USER_UID:$USER_UID "$mnt"
ubtrfs_umount "$mnt"
chown $USER_UID:$USER_UID "$img" "$mnt"
mkdir -m 0700 "$xdg" && chown $USER_UID:$USER_UID "$xdg"

# as_user CMD...: runs CMD as the user with a small clean environment.
as_user() {
  setpriv --reuid=$USER_UID --regid=$USER_UID --clear-groups \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/ XDG_RUNTIME_DIR="$xdg" "$@"
}

# expect_refusal NAME PATTERN CMD...: CMD exits 32 with exactly one line on stderr matching
# PATTERN and naming the image, and nothing is mounted.
expect_refusal() {
  local name=$1 pattern=$2 rc=0 err
  shift 2
  err=$(as_user "$@" 2>&1 >/dev/null) || rc=$?
  if ((rc != 32)); then
    failed "$name: exit $rc, expected 32 (stderr: $err)"
  elif [[ $(wc -l <<<"$err") != 1 ]]; then
    failed "$name: $(wc -l <<<"$err") lines on stderr, expected one: $err"
  elif ! grep -qE -- "$pattern" <<<"$err"; then
    failed "$name: message does not match '$pattern': $err"
  elif is_mounted "$mnt"; then
    failed "$name: $mnt is mounted after the refusal"
  else
    pass "$name: $err"
  fi
}

# 1. Refusals, each one line naming the image.
chmod 0600 /dev/fuse
expect_refusal "no access to /dev/fuse" "^ubtrfs: error: cannot mount $img: /dev/fuse is not readable and writable by uid $USER_UID \(mode 0600\)" \
  "$UBTRFS_DAEMON" "$img" "$mnt"
chmod 0666 /dev/fuse
if grep -qE '^[[:space:]]*user_allow_other' /etc/fuse.conf 2>/dev/null; then
  echo "note: /etc/fuse.conf has user_allow_other: the allow_other refusal is not checked"
else
  expect_refusal "allow_other without user_allow_other" "^ubtrfs: error: cannot mount $img: allow_other by a user needs a line 'user_allow_other' in /etc/fuse.conf" \
    "$UBTRFS_DAEMON" "$img" "$mnt" -o allow_other
fi
ro_img=$tmp/root-owned.img
cp --sparse=always "$img" "$ro_img"
chown 0:0 "$ro_img"
chmod 0644 "$ro_img"
expect_refusal "image not writable" "^ubtrfs: error: cannot mount $ro_img: it is not writable by uid $USER_UID \(Permission denied\); mount it with -o ro" \
  "$UBTRFS_DAEMON" "$ro_img" "$mnt"
chmod 0600 "$ro_img"
expect_refusal "image not readable" "^ubtrfs: error: cannot mount $ro_img: Permission denied for uid $USER_UID" \
  "$UBTRFS_DAEMON" "$ro_img" "$mnt" -o ro
loop=$(losetup -f --show "$ro_img")
chmod 0660 "$loop"
expect_refusal "block device" "^ubtrfs: error: cannot mount $loop: Permission denied for uid $USER_UID; a block device needs" \
  "$UBTRFS_DAEMON" "$loop" "$mnt"
losetup -d "$loop"

# 2. The user's mount: background daemon, as mount.fuse3 would start it.
out=$(as_user "$UBTRFS_DAEMON" "$img" "$mnt" 2>&1) || { failed "user mount: $out"; finish; exit 1; }
line=$(awk -v m="$mnt" '$2 == m' /proc/mounts)
if [[ $line == "$img $mnt fuse.ubtrfs "*"user_id=$USER_UID,"* ]]; then pass "mounted by uid $USER_UID: $line"
else failed "mount line: '$line'"; fi
if [[ -s $xdg/ubtrfs/$(tr / - <<<"${img#/}").log ]] && grep -q "logging to $xdg/ubtrfs/" <<<"$out"; then
  pass "the user's log is in \$XDG_RUNTIME_DIR/ubtrfs and named on stderr"
else
  failed "no log under $xdg/ubtrfs (daemon said: $out)"
fi
if as_user python3 - "$mnt" <<'PY'
import os, sys
mnt = sys.argv[1]
os.makedirs(f"{mnt}/dir/sub")
for i in range(20):
    with open(f"{mnt}/dir/sub/f{i}", "wb") as f:
        f.write(bytes([i]) * (4096 * i + 100))
        f.flush()
        os.fsync(f.fileno())
os.link(f"{mnt}/dir/sub/f3", f"{mnt}/dir/link3")
os.symlink("sub/f4", f"{mnt}/dir/sym4")
os.rename(f"{mnt}/dir/sub/f5", f"{mnt}/dir/f5")
os.unlink(f"{mnt}/dir/sub/f6")
for i in range(20):
    if i in (5, 6): continue
    with open(f"{mnt}/dir/sub/f{i}", "rb") as f:
        assert f.read() == bytes([i]) * (4096 * i + 100), i
st = os.stat(f"{mnt}/dir/sub/f7")
assert st.st_uid == os.getuid(), st
PY
then pass "user wrote, fsynced and read back files"; else failed "file operations as uid $USER_UID"; fi
as_user find "$mnt" -printf '%P %s %U\n' | sort >"$tmp/expected"
if as_user fusermount3 -u "$mnt"; then pass "fusermount3 -u by the user"; else failed "fusermount3 -u"; fi
# The lock is released after the final commit: then the image may be read.
if flock -w 60 "$img" true && ! is_mounted "$mnt"; then pass "daemon finished its final commit"
else failed "daemon did not release $img"; fi

# 3. Oracles: btrfs check and the kernel read exactly what the user wrote.
if check_clean "$img"; then pass "btrfs check clean"; else failed "btrfs check"; fi
kmnt=$tmp/kernel
kernel_mount "$img" "$kmnt" ro
find "$kmnt" -printf '%P %s %U\n' | sort >"$tmp/kernel.list"
if diff "$tmp/expected" "$tmp/kernel.list" >&2; then pass "the kernel sees the user's tree ($(wc -l <"$tmp/kernel.list") entries)"
else failed "kernel's tree differs from the user's"; fi
kernel_umount "$kmnt"
finish
