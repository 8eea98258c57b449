#!/usr/bin/env bash
# The filesystem label round trip with the kernel (issue 13; fs/label.cpp, tools/daemon/ioctl.cpp).
#
# mkfs.ubtrfs -L sets it (btrfs-progs and blkid read it from the image); `btrfs filesystem label
# MNT` on a ubtrfs mount gets it and sets it (FS_IOC_GETFSLABEL / FS_IOC_SETFSLABEL through the
# daemon); the new label is in every superblock copy as soon as the ioctl returns (before any
# unmount); a non-root caller gets EPERM, a label of 256 bytes without a NUL EINVAL, and 255 bytes
# are accepted. After the unmount the kernel mounts the image and reports the label; the kernel
# sets another one; ubtrfs mounts that image and returns the kernel's label through the ioctl. The
# image is check-clean at the end.
#
# Rules named here: label_set_is_durable_in_every_superblock_copy_when_the_ioctl_returns,
# label_round_trip_with_the_kernel.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs

require_ubtrfs
fs_is_kernel && skip_or_fail "compares ubtrfs with the kernel"
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v blkid >/dev/null || skip_or_fail "blkid not installed"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/label.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
truncate -s 1G "$img"  # superblock copies at 64 KiB and 64 MiB (256 GiB is beyond the device)
"$MKFS" -q -L made-by-mkfs "$img"

cat >"$tmp/label.py" <<'PY'
# label.py get MNT | set MNT LABEL [UID] | setraw MNT BYTES: prints the label or the errno (0: success)
import fcntl, os, sys
GET, SET, MAX = 0x81009431, 0x41009432, 256   # FS_IOC_GETFSLABEL, FS_IOC_SETFSLABEL, FSLABEL_MAX
cmd, mnt = sys.argv[1], sys.argv[2]
fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
try:
    if cmd == "get":
        buf = fcntl.ioctl(fd, GET, bytes(MAX))
        print(buf.split(b"\0", 1)[0].decode())
    else:
        if cmd == "set":
            raw = sys.argv[3].encode() + b"\0"
            if len(sys.argv) > 4:
                os.setgroups([])
                os.setgid(int(sys.argv[4]))
                os.setuid(int(sys.argv[4]))
        else:
            raw = b"z" * int(sys.argv[3])
        fcntl.ioctl(fd, SET, raw.ljust(MAX, b"\0")[:MAX])
        print(0)
except OSError as e:
    print(e.errno)
PY

# label_copies IMG: the label of each superblock copy inside the image, one per line.
label_copies() {
  local off
  for off in 65536 67108864; do
    python3 -c 'import sys; f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2]) + 0x12b); print(f.read(256).split(b"\0", 1)[0].decode())' "$1" "$off"
  done
}

# ---- mkfs -L, and ubtrfs getting and setting it ----
[[ $(btrfs filesystem label "$img") == made-by-mkfs ]] && pass "mkfs.ubtrfs -L: btrfs-progs reads the label" ||
  failed "btrfs filesystem label IMG after mkfs -L: $(btrfs filesystem label "$img")"
[[ $(blkid -p -s LABEL -o value "$img") == made-by-mkfs ]] && pass "mkfs.ubtrfs -L: blkid reads the label" ||
  failed "blkid after mkfs -L: $(blkid -p -s LABEL -o value "$img")"

ubtrfs_mount "$img" "$mnt" allow_other
[[ $(btrfs filesystem label "$mnt") == made-by-mkfs ]] && pass "btrfs filesystem label MNT gets it through ubtrfs" ||
  failed "get through ubtrfs: $(btrfs filesystem label "$mnt" 2>&1)"
if btrfs filesystem label "$mnt" set-by-ubtrfs; then pass "btrfs filesystem label MNT LABEL sets it through ubtrfs"; else failed "set through ubtrfs"; fi
[[ $(python3 "$tmp/label.py" get "$mnt") == set-by-ubtrfs ]] && pass "FS_IOC_GETFSLABEL returns the new label" ||
  failed "FS_IOC_GETFSLABEL after the set: $(python3 "$tmp/label.py" get "$mnt")"
# Durable at once: every copy in the image, while still mounted.
copies=$(label_copies "$img" | sort -u)
[[ $copies == set-by-ubtrfs ]] && pass "every superblock copy holds the new label when the ioctl returns" ||
  failed "superblock copies after the set: $(label_copies "$img" | tr '\n' ' ')"
[[ $(blkid -p -s LABEL -o value "$img") == set-by-ubtrfs ]] && pass "blkid sees the new label while mounted" ||
  failed "blkid while mounted: $(blkid -p -s LABEL -o value "$img")"

rc=$(python3 "$tmp/label.py" set "$mnt" by-nobody 65534)
[[ $rc == 1 ]] && pass "FS_IOC_SETFSLABEL by a non-root caller is EPERM" || failed "non-root set: errno $rc, want 1"
rc=$(python3 "$tmp/label.py" setraw "$mnt" 256)
[[ $rc == 22 ]] && pass "a 256-byte label (no NUL) is EINVAL" || failed "256-byte label: errno $rc, want 22"
long=$(printf 'l%.0s' {1..255})
rc=$(python3 "$tmp/label.py" set "$mnt" "$long")
[[ $rc == 0 && $(python3 "$tmp/label.py" get "$mnt") == "$long" ]] && pass "a 255-byte label is accepted" ||
  failed "255-byte label: errno $rc"
[[ $(python3 "$tmp/label.py" set "$mnt" set-by-ubtrfs) == 0 ]] || failed "set back"
ubtrfs_umount "$mnt" || failed "unmount"

# ---- the kernel reads it, sets another, ubtrfs reads that ----
[[ $(btrfs filesystem label "$img") == set-by-ubtrfs ]] && pass "btrfs-progs reads ubtrfs's label after unmount" ||
  failed "btrfs filesystem label IMG: $(btrfs filesystem label "$img")"
kernel_mount "$img" "$kmnt"
[[ $(btrfs filesystem label "$kmnt") == set-by-ubtrfs ]] && pass "the kernel reports ubtrfs's label" ||
  failed "kernel label: $(btrfs filesystem label "$kmnt")"
btrfs filesystem label "$kmnt" set-by-kernel || failed "kernel set"
kernel_umount "$kmnt"
ubtrfs_mount "$img" "$mnt"
[[ $(python3 "$tmp/label.py" get "$mnt") == set-by-kernel ]] && pass "ubtrfs returns the kernel's label" ||
  failed "ubtrfs get after the kernel set: $(python3 "$tmp/label.py" get "$mnt")"
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$img" && pass "image check-clean" || failed "image not check-clean"

finish
