#!/usr/bin/env bash
# Subvolume create and delete on a full filesystem (issue 16, "Bad input and faults"; fs/subvolume.cpp).
#
# Metadata is filled with big xattrs until setxattr fails with ENOSPC; then subvolumes are created
# until a create fails. The failing create must fail with ENOSPC at the call and leave nothing
# behind (no name, no root item, no half-made tree: `ubtrfs-ctl subvolume list` shows exactly the
# creates that succeeded, and btrfs check finds nothing), and deleting subvolumes on the full
# filesystem must still work (it needs no new metadata beyond what the reservation holds). The
# image is then check-clean and the kernel reads it.
#
# Rules named here: subvolume_create_on_a_full_filesystem_is_enospc_or_whole,
# subvolume_delete_works_on_a_full_filesystem.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
CTL=$UBTRFS_BIN/ctl/ubtrfs-ctl

require_ubtrfs
fs_is_kernel && skip_or_fail "tests ubtrfs's reservations"
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
[[ -x $MKFS && -x $CTL ]] || { echo "FAIL: $MKFS or $CTL not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/full.img
mnt=$tmp/mnt
truncate -s 128M "$img"
"$MKFS" -q "$img"
ubtrfs_mount "$img" "$mnt"
for i in 1 2 3; do "$CTL" subvolume create "$mnt/before$i" >/dev/null || failed "create before$i"; done
echo data >"$mnt/before1/file"

# Metadata to the brim: one 15,000-byte xattr per file (about one leaf each), until ENOSPC.
fill=$(python3 - "$mnt" <<'PY'
import errno, os, sys
d = os.path.join(sys.argv[1], "fill")
os.mkdir(d)
value = b"x" * 15000
for i in range(100000):
    p = os.path.join(d, str(i))
    try:
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
        os.setxattr(p, "user.fill", value)
    except OSError as e:
        print(f"{i} {errno.errorcode.get(e.errno, e.errno)}")
        break
PY
)
[[ $fill == *ENOSPC ]] && pass "metadata filled ($fill)" || failed "filling metadata ended with '$fill'"

made=0
err=""
for i in $(seq 1 200); do
  if "$CTL" subvolume create "$mnt/sv$i" >/dev/null 2>"$tmp/err"; then
    made=$((made + 1))
  else
    err=$(cat "$tmp/err")
    break
  fi
done
listed=$("$CTL" subvolume list "$mnt" | grep -c ' path sv' || true)
if [[ $err == *"No space left on device"* && $listed == "$made" && ! -e $mnt/sv$((made + 1)) ]]; then
  pass "subvolume_create_on_a_full_filesystem_is_enospc_or_whole ($made made, then ENOSPC, nothing half-made)"
else
  failed "creates on a full filesystem: $made made, $listed listed, then '$err'"
fi
# Deleting frees nothing until the dead roots are dropped, but must not fail for lack of space.
if "$CTL" subvolume delete "$mnt/before1" "$mnt/before2" >"$tmp/del" 2>&1 && [[ ! -e $mnt/before1 && ! -e $mnt/before2 ]]; then
  pass "subvolume_delete_works_on_a_full_filesystem (the global reserve, as the kernel)"
else
  failed "delete on a full filesystem: $(cat "$tmp/del")"
fi
[[ -d $mnt/before3 ]] && pass "the other subvolumes stay" || failed "before3 is gone"
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$img" && pass "image check-clean after the full-filesystem creates" || failed "image not check-clean"

finish
