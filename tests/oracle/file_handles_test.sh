#!/usr/bin/env bash
# File handles on a ubtrfs mount (name_to_handle_at / open_by_handle_at; tools/daemon/fuse_ops.cpp
# FUSE_CAP_EXPORT_SUPPORT, Filesystem::lookup of ".", Filesystem::generation; issue 11 acceptance 1,
# xfstests generic/426, 467, 477, 756, 777).
#
# Handles of files, directories and a hard link are taken, the kernel's dentry and inode caches are
# dropped (so each open must go to the daemon: LOOKUP(ino, ".")), and every handle opens the right
# object; a deleted file's handle is ESTALE. The same after an unmount and a fresh mount (node ids
# and generations are stable). And after the remount, a new file that reuses a deleted file's inode
# number (btrfs continues from the highest objectid left) must not be reachable through the
# deleted file's handle: ESTALE, by the inode generation.
#
# Rules named here: file_handles_survive_cache_drop_and_remount,
# handle_of_deleted_inode_is_estale_even_when_its_number_is_reused.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs

require_root
require_ubtrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"

tmp=$(make_tmpdir)
img=$tmp/handles.img
mnt=$tmp/mnt
truncate -s 512M "$img"
"$MKFS" -q "$img"

cat >"$tmp/fh.py" <<'PY'
# fh.py save MNT FILE NAME...: handles of the names (relative to MNT) into FILE (json, hex)
# fh.py open MNT FILE NAME...: open each handle; print "NAME ok INO CONTENT-OR-LISTING" or "NAME errno E"
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MAX_HANDLE_SZ = 128
class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]
def name_to_handle(path):
    fh = FileHandle()
    fh.handle_bytes = MAX_HANDLE_SZ
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(-100, path.encode(), ctypes.byref(fh), ctypes.byref(mount_id), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return {"type": fh.handle_type, "bytes": bytes(fh.f_handle[:fh.handle_bytes]).hex()}
def open_by_handle(mount_fd, h):
    fh = FileHandle()
    raw = bytes.fromhex(h["bytes"])
    fh.handle_bytes = len(raw)
    fh.handle_type = h["type"]
    ctypes.memmove(fh.f_handle, raw, len(raw))
    fd = libc.open_by_handle_at(mount_fd, ctypes.byref(fh), os.O_RDONLY)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd
cmd, mnt, store, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
if cmd == "save":
    saved = json.load(open(store)) if os.path.exists(store) else {}
    for n in names:
        saved[n] = name_to_handle(os.path.join(mnt, n))
    json.dump(saved, open(store, "w"))
else:
    saved = json.load(open(store))
    mfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    for n in names:
        try:
            fd = open_by_handle(mfd, saved[n])
        except OSError as e:
            print(n, "errno", e.errno)
            continue
        st = os.fstat(fd)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            what = ",".join(sorted(os.listdir(f"/proc/self/fd/{fd}")))
        else:
            what = os.read(fd, 100).decode()
        os.close(fd)
        print(n, "ok", st.st_ino, what)
PY
fh() { python3 "$tmp/fh.py" "$@"; }
drop_caches() { sync; echo 2 >/proc/sys/vm/drop_caches; }

ubtrfs_mount "$img" "$mnt"
mkdir -p "$mnt/d1/d2"
for f in a b c; do echo "content-$f" >"$mnt/$f"; done
echo inner >"$mnt/d1/d2/inner"
ln "$mnt/a" "$mnt/d1/link-to-a"
echo doomed >"$mnt/doomed"
doomed_ino=$(stat -c %i "$mnt/doomed")
names=(a b c d1 d1/d2 d1/d2/inner d1/link-to-a doomed)
fh save "$mnt" "$tmp/handles.json" "${names[@]}" || failed "name_to_handle_at on ubtrfs"
expect_ok() {  # expect_ok OUTPUT NAME WANT
  if grep -q "^$2 ok [0-9]* $3\$" <<<"$1"; then pass "$4: $2 opens by handle"; else failed "$4: $2: $(grep "^$2 " <<<"$1")"; fi
}
check_all() {  # check_all LABEL
  local out
  out=$(fh open "$mnt" "$tmp/handles.json" a b c d1 d1/d2 d1/d2/inner d1/link-to-a)
  expect_ok "$out" a content-a "$1"
  expect_ok "$out" b content-b "$1"
  expect_ok "$out" c content-c "$1"
  expect_ok "$out" d1 "d2,link-to-a" "$1"
  expect_ok "$out" d1/d2 inner "$1"
  expect_ok "$out" d1/d2/inner inner "$1"
  expect_ok "$out" d1/link-to-a content-a "$1"
  # The hard link and its first name are one inode: the same handle target.
  [[ $(grep "^a " <<<"$out" | cut -d' ' -f3) == $(grep "^d1/link-to-a " <<<"$out" | cut -d' ' -f3) ]] &&
    pass "$1: the hard link's handle opens the same inode" || failed "$1: hard link inode differs"
}
drop_caches
check_all "after dropping the caches"
rm "$mnt/doomed"
drop_caches
out=$(fh open "$mnt" "$tmp/handles.json" doomed)
[[ $out == "doomed errno 116" ]] && pass "a deleted file's handle is ESTALE" || failed "deleted file's handle: $out"

# The highest inodes deleted before the remount: the next new file gets the lowest of their numbers.
echo last >"$mnt/last"
fh save "$mnt" "$tmp/handles.json" last
last_ino=$(stat -c %i "$mnt/last")
rm "$mnt/last"
ubtrfs_umount "$mnt" || failed "unmount"
ubtrfs_mount "$img" "$mnt"
check_all "after a remount"
echo newcomer >"$mnt/newcomer"
new_ino=$(stat -c %i "$mnt/newcomer")
drop_caches
out=$(fh open "$mnt" "$tmp/handles.json" last doomed)
if [[ $new_ino == "$last_ino" || $new_ino == "$doomed_ino" ]]; then
  pass "the new file reuses a deleted file's inode number ($new_ino): the case under test"
else
  failed "the new file got inode $new_ino, not a deleted one's ($doomed_ino, $last_ino): the reuse case did not happen"
fi
grep -qx "last errno 116" <<<"$out" && pass "the reused number's old handle is ESTALE" || failed "old handle of a reused number: $out"
grep -qx "doomed errno 116" <<<"$out" && pass "a deleted file's handle is ESTALE after the remount" || failed "deleted after remount: $out"
ubtrfs_umount "$mnt" || failed "final unmount"
check_clean "$img" && pass "image check-clean" || failed "image not check-clean"
finish
