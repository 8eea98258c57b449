#!/usr/bin/env bash
# file_remove_privs with FUSE_HANDLE_KILLPRIV_V2 (tools/daemon/fuse_init_ext.h, fs/remove_privs.cpp):
# the daemon negotiates the flag (so the kernel stops asking GETXATTR security.capability before
# every write) and takes over what the VFS did on the kernel side: a write, a truncate (also by
# O_TRUNC), a fallocate or a copy_file_range into a file by a caller without CAP_FSETID clears
# S_ISUID, and S_ISGID when the file is group-executable; the same by root (CAP_FSETID) keeps them;
# S_ISGID without group execute stays only for a caller in the file's group (its primary or a
# supplementary one: setattr_should_drop_sgid, Linux 6.2 on, as the kernel's btrfs does here;
# xfstests generic/683-685); chown clears them; security.capability goes on a write and a
# truncate, also when set on a file already written (the kernel marked it S_NOSEC). stat right after
# each call shows the new mode (the daemon invalidates the kernel's cached attributes), the stats
# show the flag on and every WRITE's flags read, and after the unmount the kernel reads the same
# modes from a check-clean image. Through FUSE over io_uring too when enable_uring is on (scripts/
# test.sh's sanitizer stages; the ring rebuilds the request layout the write flags are read from).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_ubtrfs
require_kernel_btrfs
require_btrfs_check
fs_is_kernel && skip_or_fail "tests the ubtrfs daemon's FUSE_HANDLE_KILLPRIV_V2"
for t in setpriv setcap getcap fallocate; do
  command -v $t >/dev/null || skip_or_fail "$t not installed"
done
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
USER_UID=65534
chmod 0755 "$UBTRFS_TEST_ROOT"

# as_user CMD...: CMD as an unprivileged user (no capabilities, no groups).
as_user() { setpriv --reuid=$USER_UID --regid=$USER_UID --clear-groups "$@"; }

run_round() {
  local transport=$1 opts=$2 tmp img mnt
  tmp=$(make_tmpdir)
  chmod 0755 "$tmp"
  img=$tmp/img
  mnt=$tmp/mnt
  truncate -s 1G "$img"
  "$MKFS" -q "$img" >/dev/null
  ubtrfs_mount "$img" "$mnt" "allow_other${opts:+,$opts}" || { failed "$transport: mount"; return; }
  chmod 0777 "$mnt"
  local stats
  stats=$("$UBTRFS_BIN/inspect/ubtrfs-inspect" stats --json "$mnt" 2>/dev/null)
  local on used
  on=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["fuse"]["kill_priv_v2"]["on"])' "$stats" 2>/dev/null)
  used=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["fuse"]["transport"])' "$stats" 2>/dev/null)
  [[ $on == True ]] && pass "$transport: FUSE_HANDLE_KILLPRIV_V2 negotiated (transport $used)" ||
    failed "$transport: FUSE_HANDLE_KILLPRIV_V2 not negotiated: $stats"
  if [[ $transport == io_uring && $used != io_uring ]]; then failed "$transport: the mount serves through $used"; fi

  # mk NAME MODE: a fresh file with one line, then the mode (chmod after: no umask, no sgid rule).
  mk() { rm -f "$mnt/$1"; echo x >"$mnt/$1"; chmod "$2" "$mnt/$1"; }
  # want NAME MODE WHAT: stat (the kernel's view, right away) says MODE.
  want() {
    local got
    got=$(stat -c %a "$mnt/$1")
    [[ $got == "$2" ]] && pass "$transport: $3: mode $got" || failed "$transport: $3: mode $got, want $2"
  }
  mk a 4777; as_user sh -c "echo y >> '$mnt/a'"; want a 777 "write by a user without CAP_FSETID clears S_ISUID"
  mk b 4777; sh -c "echo y >> '$mnt/b'"; want b 4777 "write by root keeps S_ISUID"
  mk c 2777; as_user sh -c "echo y >> '$mnt/c'"; want c 777 "write by a user clears S_ISGID of a group-executable file"
  mk d 2767; as_user sh -c "echo y >> '$mnt/d'"; want d 767 "write by a user outside the group clears S_ISGID without group execute"
  mk o 2767; chgrp $USER_UID "$mnt/o"; chmod 2767 "$mnt/o"; as_user sh -c "echo y >> '$mnt/o'"
  want o 2767 "write by a user of the file's group keeps S_ISGID without group execute"
  mk p 2767; chgrp 4242 "$mnt/p"; chmod 2767 "$mnt/p"
  setpriv --reuid=$USER_UID --regid=$USER_UID --groups=4242 sh -c "echo y >> '$mnt/p'"
  want p 2767 "write by a user with the file's group as a supplementary group keeps S_ISGID without group execute"
  mk q 2767; as_user fallocate -l 8192 "$mnt/q"; want q 767 "fallocate by a user outside the group clears S_ISGID without group execute"
  mk r 0640; chown $USER_UID:4242 "$mnt/r"
  setpriv --reuid=$USER_UID --regid=$USER_UID --groups=4242 chmod 2770 "$mnt/r"
  want r 2770 "chmod g+s by the owner with the file's group as a supplementary group keeps S_ISGID"
  mk e 6777; as_user dd if=/dev/zero of="$mnt/e" bs=4k count=1 seek=3 conv=notrunc status=none
  want e 777 "pwrite past EOF by a user clears S_ISUID and S_ISGID"
  mk f 4777; as_user truncate -s 100 "$mnt/f"; want f 777 "truncate by a user clears S_ISUID"
  mk g 4777; truncate -s 100 "$mnt/g"; want g 4777 "truncate by root keeps S_ISUID"
  mk h 4777; as_user sh -c ": > '$mnt/h'"; want h 777 "open(O_TRUNC) by a user clears S_ISUID"
  mk i 4777; as_user fallocate -l 8192 "$mnt/i"; want i 777 "fallocate by a user clears S_ISUID"
  mk j 4777; echo data >"$mnt/src"; chmod 0644 "$mnt/src"
  as_user python3 -c "import os,sys; s=os.open(sys.argv[1], os.O_RDONLY); d=os.open(sys.argv[2], os.O_WRONLY); os.copy_file_range(s, d, 5, 0, 0)" \
    "$mnt/src" "$mnt/j"
  want j 777 "copy_file_range into a file by a user clears S_ISUID"
  mk k 4777; chown $USER_UID "$mnt/k"; want k 777 "chown clears S_ISUID"
  mk l 755; setcap cap_net_raw+ep "$mnt/l"; echo y >>"$mnt/l"
  [[ -z $(getcap "$mnt/l") ]] && pass "$transport: a write takes security.capability away" ||
    failed "$transport: security.capability survived a write: $(getcap "$mnt/l")"
  mk m 755; echo y >>"$mnt/m"; setcap cap_net_raw+ep "$mnt/m"; echo y >>"$mnt/m"
  [[ -z $(getcap "$mnt/m") ]] && pass "$transport: a write takes away security.capability set on a file already written" ||
    failed "$transport: security.capability set after a write survived the next: $(getcap "$mnt/m")"
  mk n 755; setcap cap_net_raw+ep "$mnt/n"; truncate -s 1 "$mnt/n"
  [[ -z $(getcap "$mnt/n") ]] && pass "$transport: a truncate takes security.capability away" ||
    failed "$transport: security.capability survived a truncate: $(getcap "$mnt/n")"
  stats=$("$UBTRFS_BIN/inspect/ubtrfs-inspect" stats --json "$mnt" 2>/dev/null)
  local unreadable
  unreadable=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["fuse"]["kill_priv_v2"]["unreadable_write_flags"])' "$stats" 2>/dev/null)
  [[ $unreadable == 0 ]] && pass "$transport: every WRITE's write_flags were read from the request" ||
    failed "$transport: $unreadable WRITEs' write_flags could not be read (the caller's capabilities decided)"
  ubtrfs_umount "$mnt" || failed "$transport: unmount"
  if check_clean "$img"; then pass "$transport: check-clean"; else failed "$transport: the image is not check-clean"; fi
  local kmnt=$tmp/kernel got=""
  if kernel_mount "$img" "$kmnt" ro; then
    for x in a b c d e f g h i j k o p q r; do got+="$x=$(stat -c %a "$kmnt/$x") "; done
    kernel_umount "$kmnt"
  fi
  [[ $got == "a=777 b=4777 c=777 d=767 e=777 f=777 g=4777 h=777 i=777 j=777 k=777 o=2767 p=2767 q=767 r=2770 " ]] &&
    pass "$transport: the kernel reads the same modes from the image" || failed "$transport: the kernel reads: $got"
}

run_round /dev/fuse fuse_uring=off
if [[ $(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null) == Y ]]; then
  run_round io_uring fuse_uring=on
else
  echo "FUSE over io_uring is not enabled (enable_uring=N): the ring round runs in scripts/test.sh's sanitizer stages"
fi
finish
