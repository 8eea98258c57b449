#!/usr/bin/env bash
# Inode flags through a real mount, with the kernel as oracle (issue 13; fs/inode_flags.h,
# tools/daemon/ioctl.cpp).
#
# chattr / lsattr on a ubtrfs mount (FS_IOC_GETFLAGS / SETFLAGS / FSGETXATTR through the daemon,
# and xfs_io's FS_IOC_FSSETXATTR), then every enforcement rule with real syscalls and their errno:
# an immutable file refuses writes (even on a descriptor opened before the flag), opens for
# writing, truncate, chmod, chown, explicit times and touch, xattr changes, fallocate, unlink,
# rename, rename over it and link; an immutable directory refuses new and removed names; an
# append-only file takes only appends (O_APPEND opens, no truncate, no punch, no unlink/rename);
# +C only takes on an empty file (whose data is then overwritten in place) and a +C directory
# passes it on; chattr by a non-owner and +i by
# root without CAP_LINUX_IMMUTABLE are EPERM. xfstests' _require_chattr pattern (touch, chattr
# +X, chattr -X) passes for every flag btrfs supports. After the unmount the image is check-clean,
# the kernel mounts it and lsattr shows the same flags and enforces them; flags the kernel sets
# are read back and enforced by ubtrfs. Flags are cleared before the end.
#
# Rules named here: chattr_moves_ctime_past_the_attribute_cache, immutable_file_refuses_every_change, immutable_directory_refuses_new_and_
# removed_names, append_only_file_takes_only_appends, nocow_only_on_empty_files_and_inherited,
# nodatacow_file_is_overwritten_in_place (the kernel reads it back),
# only_owner_and_cap_linux_immutable_change_flags, flags_read_the_same_by_ubtrfs_and_the_kernel.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs

require_ubtrfs
fs_is_kernel && skip_or_fail "compares ubtrfs with the kernel"
require_kernel_btrfs
require_btrfs_check
for tool in python3 chattr lsattr capsh; do command -v $tool >/dev/null || skip_or_fail "$tool not installed"; done
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/flags.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
truncate -s 1G "$img"
"$MKFS" -q "$img"

cat >"$tmp/sys.py" <<'PY'
# sys.py OP PATH [ARG]: runs one syscall, prints 0 or the errno it failed with.
import ctypes, errno, fcntl, os, struct, sys
SETFLAGS, GETFLAGS, IMMUTABLE = 0x40086602, 0x80086601, 0x10
libc = ctypes.CDLL(None, use_errno=True)
def fallocate(path, mode, flags=os.O_WRONLY):
    fd = os.open(path, flags)
    if libc.fallocate(fd, mode, ctypes.c_long(0), ctypes.c_long(4096)) != 0:
        raise OSError(ctypes.get_errno(), "fallocate")
op, path = sys.argv[1], sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else None
try:
    if op == "open_w": os.close(os.open(path, os.O_WRONLY))
    elif op == "open_rw": os.close(os.open(path, os.O_RDWR))
    elif op == "open_r": os.close(os.open(path, os.O_RDONLY))
    elif op == "append":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND); os.write(fd, b"+\n"); os.close(fd)
    elif op == "pwrite0":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND); os.pwrite(fd, b"X", 0); os.close(fd)
    elif op == "open_trunc": os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_TRUNC))
    elif op == "truncate": os.truncate(path, 0)
    elif op == "chmod": os.chmod(path, 0o600)
    elif op == "chown": os.chown(path, 1, 1)
    elif op == "utime_set": os.utime(path, (1, 1))
    elif op == "utime_now": os.utime(path, None)
    elif op == "unlink": os.unlink(path)
    elif op == "rmdir": os.rmdir(path)
    elif op == "rename": os.rename(path, arg)
    elif op == "link": os.link(path, arg)
    elif op == "create": os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    elif op == "mkdir": os.mkdir(path)
    elif op == "symlink": os.symlink("target", path)
    elif op == "setxattr": os.setxattr(path, "user.t", b"v")
    elif op == "removexattr": os.removexattr(path, "user.t")
    elif op == "prealloc": fallocate(path, 1, os.O_WRONLY | os.O_APPEND)      # FALLOC_FL_KEEP_SIZE
    elif op == "punch": fallocate(path, 3, os.O_WRONLY | os.O_APPEND)         # PUNCH_HOLE | KEEP_SIZE
    elif op == "write_after_immutable":
        # A descriptor opened for writing before chattr +i: the kernel's FUSE inode carries no
        # S_IMMUTABLE, so only the daemon can refuse the write.
        fd = os.open(path, os.O_WRONLY)
        old = struct.unpack("I", fcntl.ioctl(fd, GETFLAGS, bytes(4)))[0]
        fcntl.ioctl(fd, SETFLAGS, struct.pack("I", old | IMMUTABLE))
        os.pwrite(fd, b"X", 0)
    elif op == "setflags_as":  # setflags_as PATH UID: FS_IOC_SETFLAGS with +d as that uid
        fd = os.open(path, os.O_RDONLY)
        os.setgroups([]); os.setgid(int(arg)); os.setuid(int(arg))
        old = struct.unpack("I", fcntl.ioctl(fd, GETFLAGS, bytes(4)))[0]
        fcntl.ioctl(fd, SETFLAGS, struct.pack("I", old | 0x40))
    else: raise SystemExit("unknown op " + op)
    print(0)
except OSError as e:
    print(e.errno)
PY

EPERM=1
# expect ERRNO WHAT OP PATH [ARG]: the syscall fails with ERRNO (0: succeeds).
expect() {
  local want=$1 what=$2 got
  shift 2
  got=$(python3 "$tmp/sys.py" "$@")
  [[ $got == "$want" ]] && pass "$what" || failed "$what: errno $got, want $want"
}
# flags_of PATH...: lsattr's letters for each path (relative to the current directory).
flags_of() { lsattr -d "$@" 2>&1; }

ubtrfs_mount "$img" "$mnt" allow_other
cd "$mnt"

# ---- xfstests' _require_chattr: touch, chattr +X, chattr -X for every flag btrfs supports ----
for attr in i a A S d c m C D; do
  [[ $attr == D ]] && { mkdir -p req_d; target=req_d; } || { touch req_f; target=req_f; }
  if chattr "+$attr" "$target" && chattr "-$attr" "$target"; then pass "_require_chattr $attr"; else failed "_require_chattr $attr"; fi
done
rm -rf req_f req_d
chattr +j plain_missing 2>/dev/null && failed "chattr on a missing file succeeded" || true
touch unsupported
if chattr +s unsupported 2>/dev/null; then failed "chattr +s (FS_SECRM_FL) accepted"; else pass "chattr +s is refused (EOPNOTSUPP as btrfs)"; fi

# ---- the ctime moves with a flag change, seen at once (the daemon invalidates the kernel's cached
# attributes; xfstests generic/277) ----
touch ctimed
c1=$(stat -c %z ctimed)  # now in the kernel's attribute cache
chattr +A ctimed
chattr -A ctimed
c2=$(stat -c %z ctimed)
[[ $c1 != "$c2" ]] && pass "chattr moves the ctime, visible at once" || failed "ctime unchanged after chattr: $c1"

# ---- immutable file ----
echo content >imm
setfattr -n user.t -v v imm 2>/dev/null || python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.t", b"v")' imm
echo other >other
chattr +i imm
[[ $(flags_of imm) == "----i-----------------"* ]] && pass "lsattr shows i" || failed "lsattr after +i: $(flags_of imm)"
expect $EPERM "immutable: open O_WRONLY" open_w imm
expect $EPERM "immutable: open O_RDWR" open_rw imm
expect $EPERM "immutable: O_APPEND write" append imm
expect $EPERM "immutable: truncate" truncate imm
expect $EPERM "immutable: chmod" chmod imm
expect $EPERM "immutable: chown" chown imm
expect $EPERM "immutable: utime with times" utime_set imm
expect $EPERM "immutable: touch (utime now)" utime_now imm
expect $EPERM "immutable: setxattr" setxattr imm
expect $EPERM "immutable: removexattr" removexattr imm
expect $EPERM "immutable: unlink" unlink imm
expect $EPERM "immutable: rename" rename imm imm2
expect $EPERM "immutable: rename over it" rename other imm
expect $EPERM "immutable: link" link imm imm3
expect 0 "immutable: open O_RDONLY" open_r imm
[[ $(cat imm) == content ]] && pass "immutable: content unchanged" || failed "immutable content: $(cat imm)"
echo data >late
expect $EPERM "immutable: write on a descriptor opened before +i" write_after_immutable late
[[ $(cat late) == data ]] && pass "the early descriptor wrote nothing" || failed "late content: $(cat late)"

# ---- immutable directory ----
mkdir idir
echo x >idir/inner
mkdir idir/sub
chattr +i idir
expect $EPERM "immutable dir: create" create idir/new
expect $EPERM "immutable dir: mkdir" mkdir idir/newdir
expect $EPERM "immutable dir: symlink" symlink idir/ln
expect $EPERM "immutable dir: link into" link other idir/hard
expect $EPERM "immutable dir: unlink" unlink idir/inner
expect $EPERM "immutable dir: rmdir" rmdir idir/sub
expect $EPERM "immutable dir: rename out" rename idir/inner moved
expect $EPERM "immutable dir: rename in" rename other idir/in
expect 0 "immutable dir: its files stay writable" append idir/inner

# ---- append-only file ----
echo line1 >log
chattr +a log
expect 0 "append-only: O_APPEND write" append log
expect $EPERM "append-only: open O_WRONLY without O_APPEND" open_w log
expect $EPERM "append-only: open O_RDWR without O_APPEND" open_rw log
expect $EPERM "append-only: O_TRUNC" open_trunc log
expect $EPERM "append-only: truncate" truncate log
expect $EPERM "append-only: chmod" chmod log
expect $EPERM "append-only: setxattr" setxattr log
expect $EPERM "append-only: unlink" unlink log
expect $EPERM "append-only: rename" rename log log2
expect $EPERM "append-only: link" link log log3
expect $EPERM "append-only: punch hole" punch log
expect 0 "append-only: preallocate (KEEP_SIZE)" prealloc log
expect 0 "append-only: touch (utime now)" utime_now log
[[ $(cat log) == $'line1\n+' ]] && pass "append-only: content is the original plus the append" || failed "log content: $(cat log | od -c | head -3)"

# ---- nocow, nodump, noatime, sync, compression, and their inheritance ----
touch nocow
echo data >full
chattr +C nocow full
[[ $(flags_of nocow) == "---------------C------"* ]] && pass "+C on an empty file" || failed "+C empty: $(flags_of nocow)"
[[ $(flags_of full) == "----------------------"* ]] && pass "+C on a non-empty file is silently ignored" || failed "+C full: $(flags_of full)"
head -c 200000 /dev/urandom >nocow
sync nocow  # on disk, so the overwrite below goes into the extent in place (fs/file_nocow.cpp)
dd if=/dev/urandom of=nocow bs=4096 seek=5 count=3 conv=notrunc status=none
dd if=/dev/urandom of=nocow bs=1000 seek=150 count=1 conv=notrunc status=none
nocow_sum=$(sha256sum <nocow)
mkdir cdir
chattr +C cdir
echo x >cdir/child
[[ $(flags_of cdir/child) == "---------------C------"* ]] && pass "a +C directory passes C on" || failed "inherited C: $(flags_of cdir/child)"
mkdir zdir
chattr +c zdir
echo x >zdir/child
[[ $(flags_of zdir/child) == "--------c-------------"* ]] && pass "a +c directory passes c on" || failed "inherited c: $(flags_of zdir/child)"
echo x >misc
chattr +dAS misc
[[ $(flags_of misc) == "--S---dA--------------"* ]] && pass "+dAS" || failed "+dAS: $(flags_of misc)"
expect 0 "sync file takes writes" append misc
if command -v xfs_io >/dev/null; then
  echo x >xfsio
  xfs_io -r -c "chattr +i" xfsio && [[ $(flags_of xfsio) == "----i-----------------"* ]] &&
    pass "xfs_io chattr +i (FS_IOC_FSSETXATTR)" || failed "xfs_io chattr +i: $(flags_of xfsio)"
  # -r: xfs_io opens read-write by default, which an immutable file refuses (as on the kernel).
  xfs_io -r -c "chattr -i" xfsio && [[ $(flags_of xfsio) == "----------------------"* ]] &&
    pass "xfs_io chattr -i" || failed "xfs_io chattr -i: $(flags_of xfsio)"
  xflags=$(xfs_io -r -c "lsattr" misc | cut -d' ' -f1)
  [[ $xflags == *s* && $xflags == *A* && $xflags == *d* && $xflags != *i* ]] &&
    pass "xfs_io lsattr (FS_IOC_FSGETXATTR) shows sync, noatime, nodump" || failed "xfs_io lsattr misc: $(xfs_io -r -c lsattr misc)"
fi

# ---- who may change flags ----
echo x >owned
expect $EPERM "chattr by a non-owner" setflags_as owned 65534
chown 65534 owned
expect 0 "chattr +d by the owner" setflags_as owned 65534
if capsh --drop=cap_linux_immutable -- -c "chattr +i owned" 2>/dev/null; then
  failed "chattr +i without CAP_LINUX_IMMUTABLE succeeded"
else
  pass "chattr +i without CAP_LINUX_IMMUTABLE is refused"
fi

checked="imm late idir idir/inner log nocow full cdir cdir/child zdir zdir/child misc owned"
# shellcheck disable=SC2086
ubtrfs_view=$(flags_of $checked)
cd /
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$img" && pass "image check-clean (btrfs check, data csums, kernel read, fsck.ubtrfs) with the flags set" ||
  failed "image not check-clean"

# ---- the kernel: same flags, enforced; it sets some of its own ----
kernel_mount "$img" "$kmnt"
cd "$kmnt"
# shellcheck disable=SC2086
kernel_view=$(flags_of $checked)
[[ $kernel_view == "$ubtrfs_view" ]] && pass "the kernel's lsattr shows ubtrfs's flags" ||
  failed "lsattr differs: ubtrfs:"$'\n'"$ubtrfs_view"$'\n'"kernel:"$'\n'"$kernel_view"
[[ $(sha256sum <nocow) == "$nocow_sum" ]] && pass "the kernel reads the nocow file overwritten in place" ||
  failed "nocow content differs under the kernel"
expect $EPERM "the kernel enforces ubtrfs's immutable flag" append imm
expect $EPERM "the kernel enforces ubtrfs's append-only flag" open_w log
[[ $(getfattr --only-values -n btrfs.compression zdir/child 2>/dev/null) == zlib ]] &&
  pass "the kernel sees the compression property" || failed "btrfs.compression of zdir/child: $(getfattr -n btrfs.compression zdir/child 2>&1)"
echo k >k_imm
chattr +i k_imm
echo k >k_app
chattr +a k_app
touch k_nocow
chattr +C k_nocow
mkdir k_dir
chattr +cD k_dir
echo k >k_misc
chattr +dAS k_misc
kchecked="k_imm k_app k_nocow k_dir k_misc"
# shellcheck disable=SC2086
kernel_set=$(flags_of $kchecked)
cd /
kernel_umount "$kmnt"

ubtrfs_mount "$img" "$mnt" allow_other
cd "$mnt"
# shellcheck disable=SC2086
[[ $(flags_of $kchecked) == "$kernel_set" ]] && pass "ubtrfs reads the kernel's flags" ||
  failed "lsattr of kernel-set flags differs: kernel:"$'\n'"$kernel_set"$'\n'"ubtrfs:"$'\n'"$(flags_of $kchecked)"
expect $EPERM "ubtrfs enforces the kernel's immutable flag" append k_imm
expect $EPERM "ubtrfs enforces the kernel's append-only flag" open_w k_app
expect 0 "and its appends" append k_app
echo x >k_dir/new
[[ $(flags_of k_dir/new) == "--------c-------------"* ]] && pass "a kernel +c directory passes c on in ubtrfs" ||
  failed "k_dir/new: $(flags_of k_dir/new)"

# ---- clear everything, then the image must still be clean ----
chattr -R -ia "$mnt" 2>/dev/null || true
chattr -ia "$mnt"/* 2>/dev/null || true
if rm -rf ./*; then pass "every file removable once the flags are cleared"; else failed "rm -rf after clearing"; fi
cd /
ubtrfs_umount "$mnt" || failed "unmount"
check_clean_full "$img" && pass "image check-clean at the end" || failed "image not check-clean at the end"

finish
