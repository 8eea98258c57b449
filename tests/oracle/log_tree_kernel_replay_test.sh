#!/usr/bin/env bash
# The kernel replays a tree log the ubtrfs daemon left (issue 9, acceptance 2): the daemon is
# killed with SIGKILL right after a series of fsyncs, so the image holds the last commit plus the
# log those fsyncs wrote (superblock log_root != 0). `btrfs check` must find it clean (it ignores
# the log), the kernel must mount it (replaying the log: "start tree-log replay") and show every
# fsynced file byte for byte, and the image must be check-clean again after the kernel's unmount,
# with log_root back to 0.
#
# Workload (round 2, after a committed round 1 that made d/ and some files): a rename + fsync
# (falls back to a full commit), then through the log: a new file in a committed directory,
# appends each followed by fsync, an overwrite in the middle, a punched hole, a truncate down then
# up, hard links, an xattr, a small (inline) file.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
INSPECT=$UBTRFS_BIN/inspect/ubtrfs-inspect

require_ubtrfs
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v fallocate >/dev/null || skip_or_fail "fallocate(1) not installed"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
[[ -x $INSPECT ]] || { echo "FAIL: $INSPECT not built" >&2; exit 1; }
fs_is_kernel && skip_or_fail "ubtrfs-only test (kills the daemon)"

tmp=$(make_tmpdir)
img=$tmp/log.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
shadow=$tmp/shadow
mkdir -p "$shadow"
truncate -s 1G "$img"
"$MKFS" -q "$img"

cat >"$tmp/ops.py" <<'PY'
# ops.py MOUNT SHADOW ROUND: the same changes on both trees; fsync only on the mount.
import os, random, subprocess, sys

mnt, shadow, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3])

def data(seed, n):
    return random.Random(seed).randbytes(n)

def paths(rel):
    return os.path.join(mnt, rel), os.path.join(shadow, rel)

def write(rel, buf, off=0, sync=True, create=False):
    for i, p in enumerate(paths(rel)):
        fd = os.open(p, os.O_WRONLY | (os.O_CREAT if create else 0), 0o644)
        os.pwrite(fd, buf, off)
        if sync and i == 0:
            os.fsync(fd)
        os.close(fd)

def fsync(rel):
    fd = os.open(paths(rel)[0], os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)

if rnd == 1:
    for p in paths("d"):
        os.mkdir(p)
    for name, n, seed in [("keep", 65536, 1), ("punch", 65536, 2), ("trunc", 65536, 3),
                          ("linked", 20000, 4), ("xa", 5000, 5), ("old", 7000, 6)]:
        write("d/" + name, data(seed, n), sync=False, create=True)
    sys.exit(0)

# A renamed file: the log cannot express it, the fsync commits.
os.rename(os.path.join(mnt, "d/old"), os.path.join(mnt, "d/renamed"))
os.rename(os.path.join(shadow, "d/old"), os.path.join(shadow, "d/renamed"))
write("d/renamed", data(7, 3000), off=7000)
# Through the log from here on.
write("d/new", data(8, 10000), create=True)
for i in range(5):
    write("d/append", data(20 + i, 4096), off=i * 4096, create=True)
write("d/keep", data(30, 10000), off=20000)
for p in paths("d/punch"):
    subprocess.check_call(["fallocate", "-p", "-o", "8192", "-l", "16384", p])
fsync("d/punch")
for p in paths("d/trunc"):
    os.truncate(p, 10000)
    os.truncate(p, 50000)
fsync("d/trunc")
for m, s in [(os.path.join(mnt, "d"), os.path.join(shadow, "d"))]:
    os.link(os.path.join(m, "linked"), os.path.join(m, "linked2"))
    os.link(os.path.join(s, "linked"), os.path.join(s, "linked2"))
os.link(os.path.join(mnt, "d/linked"), os.path.join(mnt, "linked3"))
os.link(os.path.join(shadow, "d/linked"), os.path.join(shadow, "linked3"))
fsync("d/linked")
os.setxattr(os.path.join(mnt, "d/xa"), "user.logged", b"hello")
fsync("d/xa")
write("d/small", data(9, 100), create=True)
PY

# Round 1, committed by the unmount.
ubtrfs_mount "$img" "$mnt" "commit=300"
python3 "$tmp/ops.py" "$mnt" "$shadow" 1
ubtrfs_umount "$mnt"

# Round 2, then the crash: SIGKILL, no commit.
ubtrfs_mount "$img" "$mnt" "commit=300"
python3 "$tmp/ops.py" "$mnt" "$shadow" 2
stats=$("$INSPECT" stats "$mnt" --json)
logged=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tree_log"]["fsyncs_logged"])' <<<"$stats")
committed=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tree_log"]["fsyncs_committed"]["unlinked_name"])' <<<"$stats")
# 1 new + 5 appends + overwrite + punch + trunc + link + xattr + small = 12
if ((logged >= 12)); then pass "fsyncs served by the log: $logged"; else failed "fsyncs served by the log: $logged, want >= 12"; fi
if ((committed == 1)); then pass "the renamed file's fsync committed"; else failed "unlinked_name fallbacks: $committed, want 1"; fi
pid=$(ubtrfs_pid "$mnt")
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true

log_root=$(btrfs inspect-internal dump-super "$img" | awk '$1 == "log_root" {print $2}')
if [[ $log_root != 0 ]]; then pass "the crash image has a log tree at $log_root"; else failed "the crash image has no log tree"; fi
if check_clean "$img"; then pass "btrfs check of the crash image"; else failed "btrfs check of the crash image"; fi
# btrfs-progs reads our log root tree (it prints that tree only): the subvolume's log root item.
if dump=$(btrfs inspect-internal dump-tree -t tree_log "$img" 2>&1) && grep -q "owner TREE_LOG" <<<"$dump" &&
  grep -q "key (TREE_LOG ROOT_ITEM 5)" <<<"$dump"; then
  pass "btrfs inspect-internal dump-tree -t tree_log reads the log root tree"
else
  failed "dump-tree -t tree_log: $(head -c 2000 <<<"$dump")"
fi

kernel_mount "$img" "$kmnt"
if dmesg 2>/dev/null | tail -50 | grep -q "start tree-log replay"; then pass "kernel: start tree-log replay"; fi
while read -r rel; do
  if cmp -s "$shadow/$rel" "$kmnt/$rel"; then pass "kernel reads $rel as written"; else failed "kernel reads $rel differently ($(stat -c %s "$kmnt/$rel" 2>&1) bytes, want $(stat -c %s "$shadow/$rel"))"; fi
done < <(cd "$shadow" && find . -type f | sed 's|^\./||' | sort)
xv=$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.logged").decode())' "$kmnt/d/xa" 2>&1)
if [[ $xv == hello ]]; then pass "kernel reads the fsynced xattr"; else failed "xattr after replay: $xv"; fi
kernel_umount "$kmnt"

log_root=$(btrfs inspect-internal dump-super "$img" | awk '$1 == "log_root" {print $2}')
if [[ $log_root == 0 ]]; then pass "log_root is 0 after the kernel's replay"; else failed "log_root $log_root after the kernel's replay"; fi
if check_clean "$img"; then pass "btrfs check after the kernel's replay"; else failed "btrfs check after the kernel's replay"; fi
finish
