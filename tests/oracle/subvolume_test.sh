#!/usr/bin/env bash
# Subvolumes on a ubtrfs mount, judged by the kernel (issue 16; fs/subvolume.cpp,
# tools/daemon/ioctl.cpp, tools/ctl/subvolume_cmd.cpp).
#
# One script of btrfs-progs commands runs twice on fresh mkfs.ubtrfs images: on the kernel's btrfs
# with `btrfs`, on ubtrfs with `ubtrfs-ctl` — the one word changed — and the transcripts (every
# command's stdout, stderr and exit code, plus what the script sees in the tree) must be equal.
# Nothing is normalised: subvolume ids and generations come out the same because both start from
# the same image and make the same changes in the same order; paths are relative to the mount.
# Then the ubtrfs image must be check-clean (btrfs check both modes, kernel read, fsck.ubtrfs), the
# kernel must list its subvolumes, and the two implementations must continue each other's ids.
#
# Rules named here:
#   subvolume_same_transcript_as_kernel_btrfs (outputs, errors, exit codes of every command)
#   subvolume_create_name_visible_despite_cached_negative_dentry (the daemon invalidates it)
#   subvolume_create_needs_write_permission_on_the_parent (EACCES for others, allowed in one's own dir)
#   subvolume_create_v2_refuses_unknown_flags_and_qgroup_inherit (EOPNOTSUPP)
#   subvolume_inode_numbers_unique_across_subvolumes
#   subvolume_ids_continue_after_the_kernels (highest root objectid + 1)
#   subvolume_create_image_check_clean_and_listed_by_the_kernel
#   subvolume_list_show_get_default_same_transcript_as_kernel_btrfs (in the same comparison)
#   subvolume_set_default_is_what_the_kernel_mounts
#   subvolume_delete_same_transcript_as_kernel_btrfs (refusals: not a subvolume, holds subvolumes,
#     the default one, not root; several at once; -C) (in the same comparison)
#   subvolume_delete_leaves_a_dead_root_with_an_orphan_item
#   subvolume_delete_dead_roots_are_dropped_by_the_ubtrfs_cleaner and ..._by_the_kernels_cleaner
#     (their space comes back)
#   subvolume_snapshot_refusals_same_as_kernel_btrfs (not a subvolume, EXDEV, EBADF, EPERM for a
#     non-owner, unknown flags, a '/' in the name) (in the same comparison)
#   rmdir_of_an_empty_subvolume_deletes_it, rmdir_of_a_stand_in_removes_the_entry (in the comparison)
#   subvolume_snapshot_same_transcript_as_kernel_btrfs (rw, -r, nested, of the top level; list -s,
#     show's parent uuid and snapshot list, changes on either side; deleting them) (in the comparison)
#   read_only_subvolume_refuses_every_change_with_erofs (in the same comparison; deleting it works)
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
CTL=$UBTRFS_BIN/ctl/ubtrfs-ctl

require_ubtrfs
fs_is_kernel && skip_or_fail "compares ubtrfs with the kernel"
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v setpriv >/dev/null || skip_or_fail "setpriv not installed"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
[[ -x $CTL ]] || { echo "FAIL: $CTL not built" >&2; exit 1; }

tmp=$(make_tmpdir)
# The unprivileged part of the script runs as nobody, who must reach the mounts.
chmod 755 "$UBTRFS_TEST_ROOT" "$tmp"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)

# step ARGS...: runs one command in the current directory and prints it (the tool's name as CMD),
# its stdout, its stderr and its exit code.
step() {
  local out err rc=0 shown=() a
  for a in "$@"; do [[ $a == "$TOOL" ]] && shown+=(CMD) || shown+=("$a"); done
  out=$("$@" 2>"$tmp/stderr" | normalise) || rc=$?
  err=$(normalise <"$tmp/stderr")
  printf '$ %s\n%s%s%s%sexit %d\n' "${shown[*]}" "$out" "${out:+$'\n'}" "${err:+stderr: }$err" "${err:+$'\n'}" "$rc"
}

# normalise: what must differ between two filesystems made apart — uuids are random, creation
# times are the clock's, the mounts are two directories — becomes UUID, TIME and MNT; and a
# subvolume's generation (list's "gen", show's "Generation") becomes G: it is the ROOT_ITEM's,
# rewritten only by a commit, and ubtrfs commits at other moments than the kernel (its cleaner asks
# for one to drop a deleted subvolume in the session). The creation generation (cgen, "Gen at
# creation") is compared as it is.
normalise() {
  sed -E -e "s|$MNT_REAL|MNT|g" -e 's/(^| )gen [0-9]+/\1gen G/g' -e 's/^(\tGeneration: \t\t)[0-9]+$/\1G/' \
    -e 's/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/UUID/g' \
    -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}( [+-][0-9]{4})?/TIME/g'
}

# seen PATH: whether PATH exists, as the caller's stat sees it (dentry cache included).
seen() { if stat "$1" >/dev/null 2>&1; then echo "seen $1: yes"; else echo "seen $1: no"; fi; }

# script: the btrfs-progs commands of the comparison, with TOOL = btrfs or ubtrfs-ctl, in the
# mount's root directory.
script() {
  seen late  # a cached negative dentry from here on (entry_timeout is a day on ubtrfs)
  step "$TOOL" subvolume create sv
  step "$TOOL" subvolume create sv
  mkdir d
  step "$TOOL" subvolume create d/inner
  step "$TOOL" subvolume create nodir/x
  step "$TOOL" subvolume create late
  seen late
  step "$TOOL" subvolume create sv/nested
  echo data >sv/nested/f
  step "$TOOL" subvolume create a/
  step "$TOOL" subvolume create d/..
  step ls -a sv d a sv/nested
  step stat -c '%n %s %F %a %h %u' sv d sv/nested sv/nested/f a
  # Permission: nobody may not create in root's directory, but may in a directory of its own.
  mkdir own && chown 65534:65534 own
  step "${NOBODY[@]}" "$TOOL" subvolume create nope
  step "${NOBODY[@]}" "$TOOL" subvolume create own/mine
  step stat -c '%n %U %G %a' own/mine
  # Listing: every column and filter, from the top and from inside a subvolume.
  step "$TOOL" subvolume list .
  step "$TOOL" subvolume list -p -c -g -u -q -R .
  step "$TOOL" subvolume list -t -p .
  step "$TOOL" subvolume list sv
  step "$TOOL" subvolume list -o sv
  step "$TOOL" subvolume list -a sv
  step "$TOOL" subvolume list -o .
  step "$TOOL" subvolume list -s .
  step "$TOOL" subvolume list -r .
  step "$TOOL" subvolume list -d .
  step "$TOOL" subvolume list nodir
  step "${NOBODY[@]}" "$TOOL" subvolume list .
  step "$TOOL" subvolume show sv/nested
  step "$TOOL" subvolume show .
  step "$TOOL" subvolume show d
  step "$TOOL" subvolume show -r 257 .
  step "$TOOL" subvolume show -r 4 .
  # The default subvolume: by path, by id, back to the top; refusals.
  step "$TOOL" subvolume get-default .
  step "$TOOL" subvolume set-default sv/nested
  step "$TOOL" subvolume get-default sv
  step "$TOOL" subvolume set-default 257 .
  step "$TOOL" subvolume get-default .
  step "$TOOL" subvolume set-default d
  step "$TOOL" subvolume set-default 999 .
  step "${NOBODY[@]}" "$TOOL" subvolume set-default 256 .
  step "$TOOL" subvolume set-default 0 .
  step "$TOOL" subvolume get-default .
  # Read-only subvolumes: the flag, every change refused with EROFS, reads and nested subvolumes
  # unaffected, and back.
  echo data >sv/file
  step "$TOOL" property get sv ro
  step "$TOOL" property set sv ro true
  step "$TOOL" property get sv ro
  step touch sv/new
  step mkdir sv/dir
  step sh -c 'echo more >>sv/file'
  step chmod 600 sv/file
  step mv sv/file sv/file2
  step rm sv/file
  step ln -s x sv/link
  step truncate -s 0 sv/file
  step cat sv/file
  step "$TOOL" subvolume create sv/inro
  step "$TOOL" subvolume list -r .
  step touch sv/nested/ok
  step "${NOBODY[@]}" "$TOOL" property set sv ro false
  step "$TOOL" property set sv ro false
  step touch sv/new
  step "$TOOL" property get d ro
  step "$TOOL" property set sv ro maybe
  step "$TOOL" property set a ro true
  step stat -c '%n %s' sv/file sv/new sv/nested/ok
  # Snapshots: read-write and read-only, of the top level and of a nested subvolume, how list and
  # show report them, changes on both sides; then the refusals.
  step "$TOOL" subvolume snapshot sv snap-rw
  step "$TOOL" subvolume snapshot -r sv d/snap-ro
  step "$TOOL" subvolume snapshot sv/nested d
  step "$TOOL" subvolume snapshot . top-snap
  echo changed >sv/file
  echo new >snap-rw/only-in-snap
  step cat sv/file snap-rw/file d/snap-ro/file
  step ls snap-rw d/snap-ro d/nested top-snap top-snap/sv
  # In a snapshot, an entry of a subvolume of the source leads to an empty stand-in directory.
  step ls -a top-snap/sv top-snap/d
  step touch top-snap/sv/x
  step mkdir top-snap/sv/y
  step stat -c '%n %F %a %h %u %s' top-snap/sv
  # rmdir: the stand-in's entry goes; an empty subvolume is deleted (by its owner too, without any
  # capability), a non-empty one is not.
  step rmdir top-snap/sv
  step ls -a top-snap
  step "$TOOL" subvolume create empty
  step rmdir sv
  step rmdir empty
  step "${NOBODY[@]}" "$TOOL" subvolume create own/nsub
  step "${NOBODY[@]}" rmdir own/nsub
  step ls -a own
  step touch d/snap-ro/x
  step "$TOOL" subvolume list -s .
  step "$TOOL" subvolume list -q -u -R .
  step "$TOOL" subvolume show d/snap-ro
  step "$TOOL" subvolume show sv
  step "$TOOL" property get d/snap-ro ro
  step "$TOOL" subvolume delete snap-rw top-snap d/nested
  step "$TOOL" subvolume snapshot d x
  step "$TOOL" subvolume snapshot sv sv/nested/f
  step "$TOOL" subvolume snapshot sv nodir/x
  step python3 "$SNAPPY" . x /tmp 0
  step python3 "$SNAPPY" . x fd:9999 0
  step "${NOBODY[@]}" "$PYTHON" "$SNAPPY" own x sv 0
  step python3 "$SNAPPY" . x sv 0x100
  step python3 "$SNAPPY" . 'a/b' sv 0
  # Deleting: by path, refusals, several at once, the dead roots until a commit, -C.
  seen late/x
  step "$TOOL" subvolume delete late
  seen late
  step "$TOOL" subvolume delete d
  step "$TOOL" subvolume delete nodir
  step "$TOOL" subvolume delete sv
  step "$TOOL" subvolume set-default d/inner
  step "$TOOL" subvolume delete d/inner
  step "$TOOL" subvolume set-default 0 .
  step "${NOBODY[@]}" "$TOOL" subvolume delete own/mine
  step "$TOOL" subvolume delete a own/mine nodir
  step "$TOOL" subvolume delete -C d/inner
  step "$TOOL" subvolume list .
  step ls -a . d
  step "$TOOL" subvolume set-default sv
}

# snap.py DIR NAME SOURCE FLAGS: BTRFS_IOC_SNAP_CREATE_V2 on DIR with a descriptor of SOURCE (a path,
# or fd:N for a number this process has not open); prints 0 or the errno.
SNAPPY=$tmp/snap.py
PYTHON=$(command -v /usr/bin/python3 || command -v python3)  # one that nobody may run (not a per-user shim)
cat >"$SNAPPY" <<'PY'
import fcntl, os, struct, sys
SNAP_CREATE_V2 = 0x50009417
d, name, src, flags = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4], 0)
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
sfd = int(src[3:]) if src.startswith("fd:") else os.open(src, os.O_RDONLY | os.O_DIRECTORY)
args = struct.pack("<qQQ32x", sfd, 0, flags) + name.encode()
try:
    fcntl.ioctl(fd, SNAP_CREATE_V2, bytearray(args.ljust(4096, b"\0")))
    print(0)
except OSError as e:
    print(e.errno)
PY

# ---- the script on the kernel, then on ubtrfs ----
kimg=$tmp/kernel.img
uimg=$tmp/ubtrfs.img
truncate -s 512M "$kimg" "$uimg"
"$MKFS" -q "$kimg"
"$MKFS" -q "$uimg"
kmnt=$tmp/kmnt
umnt=$tmp/umnt

kernel_mount "$kimg" "$kmnt" commit=300
chmod 755 "$kmnt"
TOOL=btrfs
(cd "$kmnt" && MNT_REAL=$(pwd -P) && TOOL=$(command -v btrfs) && script) >"$tmp/kernel.txt"
kernel_umount "$kmnt"

# commit=300 (here and on the kernel above): no periodic commit in either session, so generations and
# what the cleaner drops depend only on the commits the script makes (timing-free under load).
ubtrfs_mount "$uimg" "$umnt" allow_other,commit=300
chmod 755 "$umnt"
(cd "$umnt" && MNT_REAL=$(pwd -P) && TOOL=$CTL && script) >"$tmp/ubtrfs.txt"
# Inode numbers: every subvolume's root directory is objectid 256 in its own tree; on ubtrfs
# (one st_dev) the numbers must still differ, so find -samefile, du and tar tell them apart.
"$CTL" subvolume create "$umnt/third" >/dev/null || failed "create third"
inos=$(stat -c %i "$umnt" "$umnt/sv" "$umnt/third" "$umnt/sv/nested" | sort -u | wc -l)
[[ $inos == 4 ]] && pass "subvolume_inode_numbers_unique_across_subvolumes" ||
  failed "st_ino of 4 subvolume roots: $(stat -c '%i %n' "$umnt" "$umnt/sv" "$umnt/third" "$umnt/sv/nested" | tr '\n' ' ')"
[[ $(find "$umnt" -samefile "$umnt/sv" | wc -l) == 1 ]] && pass "find -samefile finds one subvolume root" ||
  failed "find -samefile sv: $(find "$umnt" -samefile "$umnt/sv" | tr '\n' ' ')"

cat >"$tmp/v2.py" <<'PY'
# v2.py DIR NAME FLAGS: BTRFS_IOC_SUBVOL_CREATE_V2 on DIR; prints 0 or the errno.
import fcntl, os, struct, sys
SUBVOL_CREATE_V2 = 0x50009418
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
args = struct.pack("<qQQ32x", 0, 0, int(sys.argv[3], 0)) + sys.argv[2].encode()
try:
    fcntl.ioctl(fd, SUBVOL_CREATE_V2, bytearray(args.ljust(4096, b"\0")))
    print(0)
except OSError as e:
    print(e.errno)
PY
rc_v2_ok=$(python3 "$tmp/v2.py" "$umnt" byv2 0)
rc_v2_bad=$(python3 "$tmp/v2.py" "$umnt" badflags 0x100)
rc_v2_qg=$(python3 "$tmp/v2.py" "$umnt" qgroup 4)
[[ $rc_v2_ok == 0 && -d $umnt/byv2 ]] && pass "BTRFS_IOC_SUBVOL_CREATE_V2 creates" || failed "SUBVOL_CREATE_V2: errno $rc_v2_ok"
[[ $rc_v2_bad == 95 && $rc_v2_qg == 95 && ! -e $umnt/badflags && ! -e $umnt/qgroup ]] &&
  pass "subvolume_create_v2_refuses_unknown_flags_and_qgroup_inherit" ||
  failed "SUBVOL_CREATE_V2 flags 0x100: errno $rc_v2_bad, QGROUP_INHERIT: errno $rc_v2_qg (want 95 for both, nothing created)"
head -c 8M /dev/urandom >"$umnt/third/big"  # the space deleting it must give back (below)
third_id=$("$CTL" subvolume list "$umnt" | awk '$NF == "third" {print $2}')
"$CTL" subvolume delete -i "$third_id" "$umnt" >"$tmp/del-i.txt" 2>&1 && [[ ! -e $umnt/third ]] &&
  grep -qx "Delete subvolume (no-commit): '$umnt/third'" "$tmp/del-i.txt" && pass "subvolume delete -i ID (SNAP_DESTROY_V2 by id)" ||
  failed "delete -i $third_id: $(cat "$tmp/del-i.txt"), third: $(ls -d "$umnt/third" 2>&1)"
# Deleted in this session: the cleaner drops each after a commit once the kernel holds none of its
# inodes (as the kernel's cleaner, after the commit); what is left is dead on disk at the unmount.
dead_ids=$("$CTL" subvolume list -d "$umnt" | awk '{print $2}')
session_log=$(ubtrfs_log "$umnt")
ubtrfs_umount "$umnt" || failed "unmount"
dropped_ids=$(grep -oE 'deleted subvolume [0-9]+ dropped' "$session_log" | awk '{print $3}')

if diff -u "$tmp/kernel.txt" "$tmp/ubtrfs.txt"; then
  pass "subvolume_same_transcript_as_kernel_btrfs ($(grep -c '^\$ ' "$tmp/ubtrfs.txt") commands)"
else
  failed "the transcripts differ (kernel -, ubtrfs +)"
fi
grep -q '^seen late: yes' "$tmp/ubtrfs.txt" && pass "subvolume_create_name_visible_despite_cached_negative_dentry" ||
  failed "a subvolume created over a cached negative dentry stays invisible"
grep -A2 '^\$ setpriv .* CMD subvolume create nope' "$tmp/ubtrfs.txt" | grep -q 'Permission denied' &&
  grep -A2 '^\$ setpriv .* CMD subvolume create own/mine' "$tmp/ubtrfs.txt" | grep -q '^exit 0' &&
  pass "subvolume_create_needs_write_permission_on_the_parent" || failed "permission: $(grep -A3 'setpriv' "$tmp/ubtrfs.txt")"

# ---- dead roots on disk, dropped by ubtrfs's cleaner at the next mount and by the kernel's ----
# As the kernel leaves them before its cleaner runs: ROOT_ITEM refs 0 and an ORPHAN_ITEM (-5 48 id)
# in the root tree, no ROOT_REF / ROOT_BACKREF left.
dump=$(btrfs inspect-internal dump-tree -t root "$uimg")
dead_ok=1
for id in $dead_ids; do
  grep -q "key (ORPHAN ORPHAN_ITEM $id)" <<<"$dump" || dead_ok=0
  grep -A3 "key ($id ROOT_ITEM " <<<"$dump" | grep -q "refs 0" || dead_ok=0
  grep -qE "key \($id ROOT_BACKREF|ROOT_REF $id\)" <<<"$dump" && dead_ok=0
done
for id in $dropped_ids; do  # dropped in the session: nothing of it is left
  grep -qE "key \((ORPHAN ORPHAN_ITEM $id|$id ROOT_ITEM )" <<<"$dump" && dead_ok=0
done
# Every subvolume the session deleted (the daemon logs each) is dead on disk or dropped already.
deleted=$(grep -cE "deleted subvolume [0-9]+ '" "$session_log")
(($(wc -w <<<"$dead_ids $dropped_ids") == deleted && deleted >= 8 && dead_ok)) &&
  pass "subvolume_delete_leaves_a_dead_root_with_an_orphan_item (dead $(echo $dead_ids), dropped $(echo $dropped_ids))" ||
  failed "$deleted deleted; dead roots '$(echo $dead_ids)', dropped '$(echo $dropped_ids)': $(grep -E 'ORPHAN|ROOT_REF|ROOT_BACKREF' <<<"$dump" | tr -s ' \t' ' ' | tr '\n' ';')"
check_clean "$uimg" && pass "subvolume_create_and_delete_image_check_clean (btrfs check, both modes, dead roots not yet dropped)" ||
  failed "image not check-clean after the creates"
# bytes_used of the superblock (every extent's bytes).
super_used() { btrfs inspect-internal dump-super "$1" | awk '$1 == "bytes_used" {print $2}'; }
highest=$(grep -oE 'key \([0-9]+ ROOT_ITEM' <<<"$dump" | tr -dc '0-9\n' | sort -n | tail -1)
used0=$(super_used "$uimg")
# ubtrfs mounts (in the default subvolume set above, sv): ids continue above every ROOT_ITEM there
# was at mount, dead ones included; its cleaner drops the dead roots it does not hold.
ubtrfs_mount "$uimg" "$umnt"
"$CTL" subvolume create "$umnt/again" >/dev/null || failed "create over dead roots"
again_id=$("$CTL" subvolume list "$umnt" | awk '$NF == "again" {print $2}')
for _ in $(seq 1 100); do
  [[ -z $("$CTL" subvolume list -d "$umnt") ]] && break
  sleep 0.2
done
left=$("$CTL" subvolume list -d "$umnt")
ubtrfs_umount "$umnt" || failed "unmount"
used1=$(super_used "$uimg")
[[ $again_id == $((highest + 1)) ]] && pass "subvolume ids skip dead roots (again = $again_id)" ||
  failed "again got id '$again_id', want $((highest + 1))"
[[ -z $left ]] && ((used0 - used1 >= 8 << 20)) &&
  pass "subvolume_delete_dead_roots_are_dropped_by_the_ubtrfs_cleaner (bytes_used $used0 -> $used1)" ||
  failed "after ubtrfs's cleaner: deleted left '$left', bytes_used $used0 -> $used1 (want 8 MiB less)"
check_clean "$uimg" && pass "image check-clean after ubtrfs's cleaner" || failed "not check-clean after ubtrfs's cleaner"

# ---- the kernel's view of ubtrfs's image, and ids continued by each side ----
# The script's last command made sv the default subvolume: a mount without subvol= lands in it.
# (commit=1: the kernel's cleaner runs after a commit, which would otherwise come in 30 s.)
kernel_mount "$uimg" "$kmnt" commit=1
[[ -d $kmnt/nested && ! -e $kmnt/sv ]] && pass "subvolume_set_default_is_what_the_kernel_mounts" ||
  failed "the kernel's default mount shows: $(ls "$kmnt" | tr '\n' ' ') (want sv's: nested)"
btrfs subvolume set-default 5 "$kmnt" || failed "kernel set-default 5"
# A dead root ubtrfs leaves (deleted in the last session, so not dropped by ubtrfs yet) is found
# and dropped by the kernel's cleaner too.
kernel_umount "$kmnt"
ubtrfs_mount "$uimg" "$umnt"
"$CTL" subvolume create "$umnt/doomed" >/dev/null && head -c 8M /dev/urandom >"$umnt/doomed/big" || failed "doomed"
doomed_id=$("$CTL" subvolume list "$umnt" | awk '$NF == "doomed" {print $2}')
"$CTL" subvolume delete "$umnt/doomed" >/dev/null || failed "delete doomed"
ubtrfs_umount "$umnt" || failed "unmount"
used2=$(super_used "$uimg")
# Deleted and unmounted at once: a dead root on disk, exactly as the kernel leaves one.
dump=$(btrfs inspect-internal dump-tree -t root "$uimg")
grep -q "key (ORPHAN ORPHAN_ITEM $doomed_id)" <<<"$dump" && grep -A3 "key ($doomed_id ROOT_ITEM " <<<"$dump" | grep -q "refs 0" &&
  ! grep -qE "key \($doomed_id ROOT_BACKREF|ROOT_REF $doomed_id\)" <<<"$dump" &&
  pass "a dead root: ROOT_ITEM refs 0, ORPHAN_ITEM, no root refs (subvolume $doomed_id)" ||
  failed "dead root $doomed_id: $(grep -E "ORPHAN|$doomed_id" <<<"$dump" | tr -s ' \t' ' ' | tr '\n' ';')"
kernel_mount "$uimg" "$kmnt" commit=1
btrfs subvolume sync "$kmnt" >/dev/null || failed "btrfs subvolume sync"
left=$(btrfs subvolume list -d "$kmnt")
kernel_umount "$kmnt"
used3=$(super_used "$uimg")
[[ -z $left ]] && ((used2 - used3 >= 8 << 20)) &&
  pass "subvolume_delete_dead_roots_are_dropped_by_the_kernels_cleaner (bytes_used $used2 -> $used3)" ||
  failed "after the kernel's cleaner: deleted left '$left', bytes_used $used2 -> $used3 (want 8 MiB less)"
kernel_mount "$uimg" "$kmnt"
list=$(btrfs subvolume list "$kmnt" | awk '{print $NF}' | tr '\n' ' ')
want="sv sv/nested d/snap-ro byv2 sv/again "
[[ $list == "$want" ]] && pass "subvolume_create_image_listed_by_the_kernel ($list)" ||
  failed "kernel subvolume list: '$list', want '$want'"
[[ $(cat "$kmnt/sv/nested/f") == data && $(cat "$kmnt/d/snap-ro/file") == data && $(cat "$kmnt/sv/file") == changed ]] &&
  pass "the kernel reads a nested subvolume, and a snapshot taken before the source changed" ||
  failed "kernel reads: sv/nested/f, d/snap-ro/file, sv/file"
max_live=$(btrfs subvolume list "$kmnt" | awk '{print $2}' | sort -n | tail -1)
btrfs subvolume create "$kmnt/kern" >/dev/null || failed "kernel create"
kernel_umount "$kmnt"
ubtrfs_mount "$uimg" "$umnt"
"$CTL" subvolume create "$umnt/after" >/dev/null || failed "ubtrfs create after the kernel's"
[[ $("$CTL" subvolume get-default "$umnt") == "ID 5 (FS_TREE)" ]] && pass "ubtrfs reads the default the kernel set" ||
  failed "get-default after the kernel's set-default 5: $("$CTL" subvolume get-default "$umnt" 2>&1)"
ubtrfs_umount "$umnt" || failed "unmount"
kernel_mount "$uimg" "$kmnt" ro
kern_id=$(btrfs subvolume list "$kmnt" | awk '$NF == "kern" {print $2}')
after_id=$(btrfs subvolume list "$kmnt" | awk '$NF == "after" {print $2}')
kernel_umount "$kmnt"
((kern_id > max_live && after_id == kern_id + 1)) &&
  pass "subvolume_ids_continue_after_the_kernels (kern $kern_id, after $after_id)" ||
  failed "ids: kern '$kern_id' (live max $max_live), after '$after_id'"
check_clean_full "$uimg" && pass "image check-clean (btrfs check x2, kernel read, fsck.ubtrfs) after the kernel's and ubtrfs's changes" ||
  failed "not check-clean at the end"

finish
