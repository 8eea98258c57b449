#!/usr/bin/env bash
# The DEV_ITEM's bytes_used (chunk tree and superblock copy) counts exactly the device's DEV_EXTENTs
# in every commit, also when chunks are planned while a commit runs and under ENOSPC (btrfs keeps
# device->bytes_used and commit_bytes_used apart for this: btrfs_commit_device_sizes). xfstests
# generic/129, 256 and 610 left images whose DEV_ITEM counted device space of chunks whose
# DEV_EXTENTs were not in the committed dev tree (494,927,872 vs 293,601,280).
#
# Rule: dev_item_bytes_used_equals_dev_extents_after_enospc_storm. Through the ubtrfs daemon, on a
# small image with a 1 s commit interval, rounds of a randomized ENOSPC storm (writers racing to
# fill the device with files of random sizes, fallocate, hole punches, truncates, fsyncs, deletes
# when full, refills; a seed per round, printed); after each round the unmount's final commit, then
# on the image: the superblock's and the chunk tree's DEV_ITEM bytes_used equal the sum of the
# DEV_EXTENT lengths (btrfs inspect-internal, btrfs-progs' own reading), btrfs check and fsck.ubtrfs
# are clean, and the next mount does not warn about the device item. Kept under ~60 s
# (UBTRFS_STORM_ROUNDS, UBTRFS_STORM_SECONDS, UBTRFS_STORM_SEED change it).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_ubtrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
FSCK=$UBTRFS_BIN/fsck/fsck.ubtrfs
[[ -x $MKFS && -x $FSCK ]] || { echo "FAIL: $MKFS or $FSCK not built" >&2; exit 1; }
rounds=${UBTRFS_STORM_ROUNDS:-12}
seconds=${UBTRFS_STORM_SECONDS:-4}
size=${UBTRFS_STORM_SIZE:-1G}
seed0=${UBTRFS_STORM_SEED:-$RANDOM}

dir=$(make_tmpdir)
img=$dir/img

# dev_figures IMG: "SUPER CHUNK_TREE EXTENTS" — the superblock's dev_item.bytes_used, the chunk
# tree's DEV_ITEM bytes_used and the sum of the DEV_EXTENT lengths, as btrfs-progs reads them.
dev_figures() {
  local sb ct ext
  sb=$(btrfs inspect-internal dump-super "$1" | awk '$1 == "dev_item.bytes_used" {print $2}')
  ct=$(btrfs inspect-internal dump-tree -t chunk "$1" |
    awk '/DEV_ITEM/ {d = 1} d && /bytes_used/ {for (i = 1; i <= NF; i++) if ($i == "bytes_used") {print $(i + 1); exit}}')
  ext=$(btrfs inspect-internal dump-tree -t dev "$1" |
    awk '/DEV_EXTENT/ {e = 1; next} e && /length/ {for (i = 1; i <= NF; i++) if ($i == "length") s += $(i + 1); e = 0} END {print s + 0}')
  echo "$sb $ct $ext"
}

storm() {  # MNT SEED SECONDS
  python3 - "$@" <<'PY'
import errno, os, random, sys, time
mnt, seed, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
NWORKERS = 6
OK_ERRORS = {errno.ENOSPC, errno.ENOENT, errno.EROFS}
GONE = {errno.ENOTCONN, errno.ECONNABORTED}  # the daemon was killed (the crash rounds)

def worker(k):
    rng = random.Random(seed * 100 + k)
    d = os.path.join(mnt, f"w{k}")
    os.makedirs(d, exist_ok=True)
    files, n = [], 0
    buf = os.urandom(1 << 20)
    end = time.monotonic() + seconds
    full = 0
    while time.monotonic() < end:
        op = rng.random()
        try:
            if op < 0.45 or not files:
                name = os.path.join(d, f"f{n}"); n += 1
                files.append(name)
                size = rng.choice([4096, 65536, 1 << 20, 8 << 20, 32 << 20])
                with open(name, "wb") as f:
                    off = 0
                    while off < size:
                        piece = min(size - off, rng.choice([4096, 131072, 1 << 20]))
                        f.write(buf[:piece]); off += piece
                    if rng.random() < 0.3:
                        f.flush(); os.fsync(f.fileno())
            elif op < 0.60:
                name = rng.choice(files)
                fd = os.open(name, os.O_RDWR)
                try:
                    os.posix_fallocate(fd, rng.randrange(0, 16 << 20, 4096), rng.choice([65536, 1 << 20, 16 << 20]))
                finally:
                    os.close(fd)
            elif op < 0.70:
                name = rng.choice(files)
                fd = os.open(name, os.O_RDWR)
                try:
                    import fcntl  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE through fallocate(1)'s syscall
                    import ctypes
                    libc = ctypes.CDLL(None, use_errno=True)
                    off = rng.randrange(0, 8 << 20, 4096)
                    if libc.fallocate(fd, 3, ctypes.c_long(off), ctypes.c_long(rng.choice([4096, 1 << 20]))) != 0:
                        e = ctypes.get_errno()
                        if e not in OK_ERRORS and e != errno.EOPNOTSUPP:
                            raise OSError(e, os.strerror(e))
                finally:
                    os.close(fd)
            elif op < 0.78:
                os.truncate(rng.choice(files), rng.randrange(0, 4 << 20))
            else:
                # Delete: more of it once the device filled up, then refill.
                for _ in range(1 + 3 * min(full, 3)):
                    if not files:
                        break
                    name = files.pop(rng.randrange(len(files)))
                    os.unlink(name)
                full = max(0, full - 1)
        except OSError as e:
            if e.errno in GONE:
                return 0
            if e.errno not in OK_ERRORS:
                print(f"worker {k}: {e}", file=sys.stderr)
                return 1
            if e.errno == errno.ENOSPC:
                full += 1
            if e.errno == errno.EROFS:
                print(f"worker {k}: filesystem turned read-only", file=sys.stderr)
                return 1
    return 0

pids = []
for k in range(NWORKERS):
    pid = os.fork()
    if pid == 0:
        os._exit(worker(k))
    pids.append(pid)
bad = 0
for pid in pids:
    _, st = os.waitpid(pid, 0)
    bad |= os.waitstatus_to_exitcode(st) != 0
sys.exit(1 if bad else 0)
PY
}

started=$SECONDS
for ((r = 1; r <= rounds; r++)); do
  seed=$((seed0 + r))
  # A fresh image each round: chunks are created only until the device is fully allocated.
  rm -f "$img"
  truncate -s "$size" "$img"
  "$MKFS" -q "$img"
  mnt=$dir/mnt$r
  ubtrfs_mount "$img" "$mnt" commit=1 || { failed "round $r: mount"; break; }
  pid=$(ubtrfs_pid "$mnt")
  if ((r % 3)); then
    # A crash in the middle of the storm, while chunks are still being created (a 1 GiB device is
    # fully allocated about 2 s into the storm): the image keeps its last commit, which must be
    # consistent as every commit must (a chunk planned while that commit ran is not in it).
    storm "$mnt" "$seed" "$seconds" &
    spid=$!
    sleep "$(python3 -c "import random; random.seed($seed); print(round(random.uniform(0.3, 1.8), 2))")"
    disown "$pid" 2>/dev/null || true  # no "Killed" notice from bash
    kill -KILL "$pid"
    wait "$spid" || true
    umount -l "$mnt" 2>/dev/null || true
    while _pid_running "$pid"; do sleep 0.05; done
    how="killed mid-storm"
  else
    if storm "$mnt" "$seed" "$seconds"; then pass "round $r: storm (seed $seed)"; else failed "round $r: storm (seed $seed)"; fi
    if ubtrfs_umount "$mnt"; then pass "round $r: unmount (final commit)"; else failed "round $r: unmount"; break; fi
    how="unmounted"
  fi
  read -r sb ct ext <<<"$(dev_figures "$img")"
  echo "  round $r ($how, seed $seed): superblock dev_item.bytes_used $sb, chunk tree DEV_ITEM bytes_used $ct, DEV_EXTENTs sum $ext"
  if [[ -n $ext && $sb == "$ext" && $ct == "$ext" ]]; then pass "round $r: DEV_ITEM bytes_used equals the DEV_EXTENTs"
  else failed "round $r ($how): DEV_ITEM bytes_used (superblock $sb, chunk tree $ct) differs from the DEV_EXTENTs' $ext"; fi
  if check_clean "$img"; then pass "round $r: btrfs check"; else failed "round $r ($how): btrfs check"; fi
  if out=$("$FSCK" "$img" 2>&1); then pass "round $r: fsck.ubtrfs"
  else failed "round $r ($how): fsck.ubtrfs: $(head -n 20 <<<"$out")"; fi
  # The next mount reads the device extents and compares (FsInfo::load_device_space).
  ubtrfs_mount "$img" "$mnt" || { failed "round $r: remount"; break; }
  if grep -q "device item bytes_used" "$(ubtrfs_log "$mnt")"; then
    failed "round $r: the next mount warns: $(grep -m1 'device item bytes_used' "$(ubtrfs_log "$mnt")")"
  else
    pass "round $r: the next mount finds the device item right"
  fi
  ubtrfs_umount "$mnt" || failed "round $r: unmount after the remount"
done
echo "dev_item_bytes_used_equals_dev_extents_after_enospc_storm_test: $((SECONDS - started)) s, seeds from $((seed0 + 1))"
finish
