#!/usr/bin/env bash
# Bad input through the ubtrfs daemon (issue 3, acceptance 4; the reader-level cases are in
# bad_input_test.sh).
#
# Refusals — each one mount attempt as mount(8) makes it (the daemon without -f): a non-zero exit
# (no signal, no timeout), a message on stderr naming the problem, nothing mounted, no daemon left
# running, the image file byte-identical. Cases: random bytes, zeros, an empty and a tiny file, a
# truncated image, a bad superblock checksum, an unknown incompat flag, an unknown compat_ro flag
# read-write (then -o ro must work), the log-tree image 004 read-write, one device of a two-device
# RAID1, a missing file, an unknown mount option, a read-write daemon on an image another daemon reads.
# Damage found at run time, on a read-only mount of a kernel-made image whose FS tree has dozens
# of leaves: a corrupt tree block (both DUP copies) holding a file's inode is EIO for that file
# while the daemon keeps serving the directory listing and every other file; a single flipped
# bit in a file's data is EIO on read (and the daemon's log names the block), other files read
# fine. Random corruption of FS tree blocks (valid checksum, so the tree checker sees it): walking
# the whole mount never kills the daemon, which then exits 0 on unmount with no sanitizer report.
#
# UBTRFS_FS=kernel runs the same cases against the kernel (messages are then in dmesg and not
# checked; the log-tree and lock cases are ubtrfs rules and skipped). Knob: UBTRFS_BAD_MOUNT_FUZZ
# (random-corruption iterations, default 10).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CORRUPT=$UBTRFS_BIN/corrupt/ubtrfs-corrupt
require_ubtrfs
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v zstd >/dev/null || skip_or_fail "zstd not installed"
[[ -x $CORRUPT ]] || { echo "FAIL: $CORRUPT not built" >&2; exit 1; }

started=$SECONDS
tmp=$(make_tmpdir)
mnt=$tmp/mnt

# set_super_field IMG OFFSET SIZE VALUE: rewrite a primary-superblock field, recompute its crc32c.
set_super_field() {
  python3 - "$@" <<'PY'
import struct, sys
path, off, size, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 0)
def crc32c(data, crc=0xFFFFFFFF):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF
with open(path, "r+b") as f:
    f.seek(65536); sb = bytearray(f.read(4096))
    sb[off:off + size] = val.to_bytes(size, "little")
    sb[0:32] = struct.pack("<I", crc32c(bytes(sb[32:]))) + b"\0" * 28
    f.seek(65536); f.write(sb)
PY
}
super_u64() { python3 -c "import sys;f=open(sys.argv[1],'rb');f.seek(65536+int(sys.argv[2]));print(int.from_bytes(f.read(8),'little'))" "$1" "$2"; }
# read_result PATH: "OK <sha256>" or the errno name of the first failing open/read.
read_result() {
  python3 - "$1" <<'PY'
import errno, hashlib, sys
try:
    with open(sys.argv[1], "rb") as f:
        print("OK", hashlib.sha256(f.read()).hexdigest())
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
PY
}

# mount_alive MNT: MNT is still mounted, its daemon runs, and the kernel still reaches it (stat of
# the root may fail with EIO when the root inode's leaf is the corrupt one, never with ENOTCONN).
mount_alive() {
  is_mounted "$1" || return 1
  fs_is_kernel || _pid_running "$(ubtrfs_pid "$1")" || return 1
  python3 -c 'import errno, os, sys
try:
    os.stat(sys.argv[1])
except OSError as e:
    sys.exit(1 if e.errno == errno.ENOTCONN else 0)' "$1"
}

# expect_refused NAME IMG PATTERN [OPTS]: one mount attempt must fail cleanly; PATTERN (grep -iE)
# must match the message with the test's paths removed (a file name proves nothing).
expect_refused() {
  local name=$1 img=$2 pattern=$3 opts=${4:-} before after msg
  before=$( [[ -e $img ]] && sparse_hash "$img" || echo absent)
  ubtrfs_try_mount "$img" "$mnt" "$opts"
  after=$( [[ -e $img ]] && sparse_hash "$img" || echo absent)
  msg=$(grep -v '^\s*$' "$TRY_ERR" | head -3 | tr '\n' ' ' | sed "s#$tmp/##g" | cut -c1-240)
  if [[ $TRY_RC == 0 ]]; then
    failed "$name: mount succeeded"
  elif ((TRY_RC >= 124)); then
    failed "$name: exit $TRY_RC (timeout or signal): $msg"
  elif is_mounted "$mnt"; then
    failed "$name: exit $TRY_RC but $mnt is mounted"
  elif ! fs_is_kernel && [[ -n $(daemon_pids_of "$img") ]]; then
    failed "$name: exit $TRY_RC but a daemon is still running for $img"
  elif [[ $before != "$after" ]]; then
    failed "$name: the image changed"
  elif ! fs_is_kernel && ! sed "s#$tmp/[^ :]*##g" "$TRY_ERR" | grep -qiE -- "$pattern"; then
    failed "$name: exit $TRY_RC, message does not match /$pattern/: $msg"
  elif ! fs_is_kernel && sanitizer_report "$TRY_ERR" >/dev/null; then
    failed "$name: sanitizer report: $(sanitizer_report "$TRY_ERR")"
  else
    pass "$name: refused, exit $TRY_RC${msg:+: $msg}"
  fi
  if is_mounted "$mnt"; then umount "$mnt" || umount -l "$mnt"; fi
}

# ---- a kernel-made base image: 3,000 small files (FS tree of dozens of leaves) and data files ----
base=$tmp/base.img
truncate -s 256M "$base"
mkfs.btrfs -q "$base"
kernel_mount "$base" "$tmp/k"
mkdir "$tmp/k/many"
python3 - "$tmp/k/many" <<'PY'
import os, sys
for i in range(3000):
    with open(os.path.join(sys.argv[1], f"f{i:04}"), "w") as f:
        f.write(f"file {i}\n" * 20)
PY
head -c 200000 /dev/urandom >"$tmp/k/data.bin"
head -c 100000 /dev/urandom >"$tmp/k/other.bin"
sync
ino_victim=$(stat -c %i "$tmp/k/many/f1500")
ino_near=$(stat -c %i "$tmp/k/many/f0010")
ino_data=$(stat -c %i "$tmp/k/data.bin")
sha_near=$(read_result "$tmp/k/many/f0010")
sha_data=$(read_result "$tmp/k/data.bin")
sha_other=$(read_result "$tmp/k/other.bin")
kernel_umount "$tmp/k"
check_clean "$base" || { failed "the base image is not check-clean (test setup)"; finish; exit 1; }

# ---- refusals ----
head -c 1M /dev/urandom >"$tmp/random.img"
expect_refused "random bytes" "$tmp/random.img" "not a btrfs"
head -c 16M /dev/zero >"$tmp/zero.img"
expect_refused "zeros" "$tmp/zero.img" "not a btrfs"
: >"$tmp/empty.img"
expect_refused "empty file" "$tmp/empty.img" "too small|not a btrfs"
head -c 70000 /dev/zero >"$tmp/tiny.img"
expect_refused "tiny file" "$tmp/tiny.img" "too small|not a btrfs"
head -c 40M "$base" >"$tmp/truncated.img"
expect_refused "truncated image" "$tmp/truncated.img" "truncated|exceeds device size|beyond"

cp --sparse=always "$base" "$tmp/badsuper.img"
python3 -c "import sys;f=open(sys.argv[1],'r+b');f.seek(65536+300);b=f.read(1);f.seek(65536+300);f.write(bytes([b[0]^0x01]))" "$tmp/badsuper.img"
expect_refused "bad superblock checksum (one bit)" "$tmp/badsuper.img" "superblock checksum"

cp --sparse=always "$base" "$tmp/incompat.img"
set_super_field "$tmp/incompat.img" $((0xBC)) 8 $(($(super_u64 "$base" $((0xBC))) | (1 << 20)))
expect_refused "unknown incompat flag 0x100000" "$tmp/incompat.img" "incompat.*0x100000"

cp --sparse=always "$base" "$tmp/compat_ro.img"
set_super_field "$tmp/compat_ro.img" $((0xB4)) 8 $(($(super_u64 "$base" $((0xB4))) | (1 << 10)))
expect_refused "unknown compat_ro flag 0x400, read-write" "$tmp/compat_ro.img" "compat_ro.*0x400"
before=$(sparse_hash "$tmp/compat_ro.img")
if ubtrfs_mount "$tmp/compat_ro.img" "$mnt" ro; then
  if [[ $(read_result "$mnt/data.bin") == "$sha_data" ]]; then pass "unknown compat_ro flag: -o ro mounts and reads"; else failed "unknown compat_ro flag: -o ro read of data.bin"; fi
  ubtrfs_umount "$mnt" || failed "unknown compat_ro flag: unmount"
else
  failed "unknown compat_ro flag: -o ro refused"
fi
[[ $(sparse_hash "$tmp/compat_ro.img") == "$before" ]] || failed "unknown compat_ro flag: the ro mount changed the image"

if fs_is_kernel; then
  echo "note: the kernel accepts nologreplay only with ro: the refusal is ubtrfs's rule (skipped)"
else
  zstd -q -d --long=27 "$UBTRFS_SRC/images/004-log-tree/image.zst" -o "$tmp/logtree.img"
  expect_refused "log tree, read-write with nologreplay" "$tmp/logtree.img" "log tree.*nologreplay" nologreplay
fi

truncate -s 256M "$tmp/raid1-a.img" "$tmp/raid1-b.img"
mkfs.btrfs -q -f -d raid1 -m raid1 "$tmp/raid1-a.img" "$tmp/raid1-b.img" >/dev/null 2>&1
expect_refused "one device of a two-device RAID1" "$tmp/raid1-a.img" "2 devices|multi-device|single-device|raid1"

expect_refused "missing image" "$tmp/does-not-exist.img" "no such file|cannot open|does not exist"

if fs_is_kernel; then
  echo "note: unknown-option and image-lock cases are ubtrfs's (skipped)"
else
  expect_refused "unknown mount option" "$base" "unknown mount option 'no_such_option'" no_such_option
  # Readers share the image (a shared flock); a writer needs it alone.
  if ubtrfs_mount "$base" "$mnt" ro; then
    ubtrfs_try_mount "$base" "$tmp/second"
    if [[ $TRY_RC != 0 && $TRY_RC -lt 124 ]] && grep -qi "in use" "$TRY_ERR" && ! is_mounted "$tmp/second" &&
      [[ $(read_result "$mnt/data.bin") == "$sha_data" ]]; then
      pass "read-write daemon on an image a reader uses: refused ($(head -1 "$TRY_ERR" | sed "s#$tmp/##g" | cut -c1-160)); the first still serves"
    else
      failed "read-write daemon on an image a reader uses: exit $TRY_RC: $(head -c 300 "$TRY_ERR")"
      if is_mounted "$tmp/second"; then umount "$tmp/second"; fi
    fi
    ubtrfs_umount "$mnt" || failed "unmount after the lock case"
  else
    failed "mount of the healthy base image (lock case)"
  fi
fi

# The daemonizing path itself works (mount(8)'s way): exit 0 once mounted, exit after unmount.
ubtrfs_try_mount "$base" "$mnt" ro
if [[ $TRY_RC == 0 ]] && is_mounted "$mnt" && [[ $(read_result "$mnt/data.bin") == "$sha_data" ]]; then
  pass "control: the healthy image mounts through the daemonizing path and reads"
else
  failed "control: healthy image: exit $TRY_RC: $(head -c 300 "$TRY_ERR")"
fi
if is_mounted "$mnt"; then
  pids=$(fs_is_kernel || daemon_pids_of "$base")
  umount "$mnt"
  for _ in $(seq 1 100); do
    [[ -z $(fs_is_kernel || daemon_pids_of "$base") ]] && break
    sleep 0.1
  done
  if [[ -z $(fs_is_kernel || daemon_pids_of "$base") ]]; then pass "control: the daemon ($pids) exits after umount"; else failed "control: daemon still running 10 s after umount"; fi
fi

# ---- a corrupt tree block under one file ----
leaf_victim=$("$CORRUPT" "$base" --tree fs --key "$ino_victim INODE_ITEM 0" --locate | awk '{print $2}')
leaf_near=$("$CORRUPT" "$base" --tree fs --key "$ino_near INODE_ITEM 0" --locate | awk '{print $2}')
leaf_data=$("$CORRUPT" "$base" --tree fs --key "$ino_data INODE_ITEM 0" --locate | awk '{print $2}')
leaf_dir=$("$CORRUPT" "$base" --tree fs --key "256 INODE_ITEM 0" --locate | awk '{print $2}')
echo "leaves: victim inode $ino_victim in $leaf_victim; f0010 in $leaf_near; data.bin in $leaf_data; root dir in $leaf_dir"
if [[ -z $leaf_victim || $leaf_victim == "$leaf_near" || $leaf_victim == "$leaf_data" || $leaf_victim == "$leaf_dir" ]]; then
  failed "test setup: the victim's leaf is not separate from the others"
else
  img=$tmp/badleaf.img
  cp --sparse=always "$base" "$img"
  "$CORRUPT" "$img" --block "$leaf_victim" --flip-byte 2000 --no-recsum >/dev/null
  before=$(sparse_hash "$img")
  if ubtrfs_mount "$img" "$mnt" ro; then
    got=$(read_result "$mnt/many/f1500")
    if [[ $got == EIO ]]; then pass "corrupt leaf: the file whose inode it holds reads as EIO"; else failed "corrupt leaf: many/f1500 gave '$got', want EIO"; fi
    if [[ $(read_result "$mnt/many/f0010") == "$sha_near" && $(read_result "$mnt/data.bin") == "$sha_data" &&
      $(read_result "$mnt/other.bin") == "$sha_other" ]]; then
      pass "corrupt leaf: files in other leaves read correctly afterwards"
    else
      failed "corrupt leaf: other files unreadable or wrong"
    fi
    n=$(find "$mnt/many" -mindepth 1 -maxdepth 1 -name 'f*' -printf . 2>/dev/null | wc -c)
    if [[ $n == 3000 ]]; then pass "corrupt leaf: the directory still lists all 3000 names"; else failed "corrupt leaf: the directory lists $n of 3000 names"; fi
    if mount_alive "$mnt" && stat "$mnt" >/dev/null 2>&1; then
      pass "corrupt leaf: the daemon is still serving"
    else
      failed "corrupt leaf: the mount died"
    fi
    if ubtrfs_umount "$mnt"; then pass "corrupt leaf: unmount, daemon exit 0"; else failed "corrupt leaf: unmount"; fi
  else
    failed "corrupt leaf: mount refused (the damage is below the root, the mount must work)"
  fi
  if [[ $(sparse_hash "$img") == "$before" ]]; then pass "corrupt leaf: the image is unchanged"; else failed "corrupt leaf: the ro mount changed the image"; fi
fi

# ---- one flipped bit in a file's data ----
btrfs inspect-internal dump-tree -t 5 "$base" >"$tmp/fs-tree.txt"
data_bytenr=$(awk -v key="($ino_data EXTENT_DATA 0)" 'index($0, key) { want = 1 } want && /disk byte/ { print $5; exit }' "$tmp/fs-tree.txt")
if [[ -z $data_bytenr || $data_bytenr == 0 ]]; then
  failed "test setup: no extent found for data.bin"
else
  img=$tmp/baddata.img
  cp --sparse=always "$base" "$img"
  # ubtrfs-corrupt inverts the whole byte; inverting 7 of its bits back leaves one bit flipped.
  phys=$("$CORRUPT" "$img" --data "$data_bytenr" --flip-byte 5000 | grep -oP 'physical \K[0-9]+' | head -1)
  python3 -c "import sys;f=open(sys.argv[1],'r+b');o=int(sys.argv[2]);f.seek(o);b=f.read(1);f.seek(o);f.write(bytes([b[0]^0xFE]))" "$img" "$phys"
  if ubtrfs_mount "$img" "$mnt" ro; then
    got=$(read_result "$mnt/data.bin")
    if [[ $got == EIO ]]; then pass "flipped data bit: reading the file is EIO"; else failed "flipped data bit: data.bin gave '$got', want EIO"; fi
    if [[ $(read_result "$mnt/other.bin") == "$sha_other" ]]; then pass "flipped data bit: other files read correctly"; else failed "flipped data bit: other.bin wrong"; fi
    log=$(ubtrfs_log "$mnt")
    if ubtrfs_umount "$mnt"; then pass "flipped data bit: unmount, daemon exit 0"; else failed "flipped data bit: unmount"; fi
    if ! fs_is_kernel; then
      if grep -qE "($data_bytenr|$((data_bytenr + 4096)))" "$log" && grep -qE "\b$ino_data\b" "$log"; then
        pass "flipped data bit: the daemon log names the inode and the bytenr: $(grep -m1 -E "($data_bytenr|$((data_bytenr + 4096)))" "$log" | cut -c1-200)"
      else
        failed "flipped data bit: no log line naming inode $ino_data and bytenr $data_bytenr/$((data_bytenr + 4096)): $(tail -3 "$log")"
      fi
    fi
  else
    failed "flipped data bit: mount refused"
  fi
fi

# ---- random corruption of FS tree blocks: never a dead daemon ----
iters=${UBTRFS_BAD_MOUNT_FUZZ:-10}
nodesize=$(btrfs inspect-internal dump-super "$base" | awk '$1 == "nodesize" { print $2 }')
grep -oP '^(leaf|node) \K[0-9]+' "$tmp/fs-tree.txt" | sort -u >"$tmp/blocks"
deaths=0
for ((i = 0; i < iters; i++)); do
  img=$tmp/fuzz.img
  cp --sparse=always "$base" "$img"
  blk=$(shuf -n 1 "$tmp/blocks")
  for _ in 1 2 3; do
    "$CORRUPT" "$img" --block "$blk" --flip-byte $((32 + (RANDOM * 32768 + RANDOM) % (nodesize - 32))) >/dev/null 2>&1 || true
  done
  if ! ubtrfs_mount "$img" "$mnt" ro 2>"$tmp/fuzz.err"; then
    # Refusing the mount is fine (a corrupt root leaf) as long as nothing crashed.
    if grep -qE 'status (1[3-9][0-9]|2[0-9][0-9])|Sanitizer|runtime error|not mounted after' "$tmp/fuzz.err"; then
      deaths=$((deaths + 1)); echo "fuzz $i (block $blk): mount crashed: $(head -c 400 "$tmp/fuzz.err")" >&2
    fi
    continue
  fi
  # Stat everything, read at most 1 MiB of each file (a corrupt i_size can make a file petabytes
  # of holes); errors are expected, a hang is not.
  rc=0
  timeout 120 python3 - "$mnt" <<'PY' >/dev/null 2>&1 || rc=$?
import os, sys
for dirpath, dirnames, filenames in os.walk(sys.argv[1], onerror=lambda e: None):
    for name in dirnames + filenames:
        path = os.path.join(dirpath, name)
        try:
            os.lstat(path)
            if name in filenames and not os.path.islink(path):
                with open(path, "rb") as f:
                    f.read(1 << 20)
        except OSError:
            pass
PY
  if [[ $rc == 124 ]]; then
    deaths=$((deaths + 1)); echo "fuzz $i (block $blk): walking the mount hung for 120 s" >&2
  fi
  if ! mount_alive "$mnt"; then
    deaths=$((deaths + 1)); echo "fuzz $i (block $blk): the mount died while walking" >&2
    tail -n 20 "$(ubtrfs_log "$mnt")" >&2 2>/dev/null || true
  fi
  if ! ubtrfs_umount "$mnt" 2>"$tmp/fuzz.err"; then
    deaths=$((deaths + 1)); echo "fuzz $i (block $blk): $(head -c 600 "$tmp/fuzz.err")" >&2
    is_mounted "$mnt" && umount -l "$mnt"
  fi
done
if ((deaths == 0)); then pass "random FS tree corruption: $iters images walked, the daemon never died"; else failed "random FS tree corruption: $deaths of $iters runs killed or broke the daemon"; fi

echo "bad_input_mount_test: $((SECONDS - started)) s"
finish
