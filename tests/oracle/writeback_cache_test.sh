#!/usr/bin/env bash
# The FUSE writeback cache (-o writeback_cache=on; tools/daemon/page_cache_guard.h), issue 10.
#
# 1. Semantics through the kernel's page cache: 4 KiB writes in random order, partial-page
#    overwrites, O_APPEND from two descriptors, truncate down and up, a shared mmap write, then
#    fsync: every file equals its model through the mount, and after the unmount through the
#    kernel (mount -o loop,ro); btrfs check clean.
# 2. A full device with cached writers (rule
#    cached_write_gets_enospc_at_write_and_no_acknowledged_byte_is_lost): one writer opened while
#    there is room fills the device in 1 MiB writes; it must stop with ENOSPC (never EIO) from
#    write(), the daemon must say that the guard closed, every acknowledged byte must be in the
#    image the kernel reads, and after a delete a new open writes again.
# 3. An append-only file (chattr +a) takes appends with the cache on (its opens are direct I/O:
#    the kernel's page cache would rewrite the partial last page below EOF).
# 4. A mount point with a space in its name gets the cache too (section 4 below).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs

require_ubtrfs
fs_is_kernel && skip_or_fail "tests the ubtrfs daemon's writeback cache"
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v chattr >/dev/null || skip_or_fail "chattr not installed"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/wbc.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
log=$tmp/daemon.log
truncate -s 1G "$img"
"$MKFS" -q "$img"
ubtrfs_mount "$img" "$mnt" "writeback_cache=on,log_file=$log" || { echo "FAIL: mount" >&2; exit 1; }
grep -q 'writeback cache on' "$log" && pass "the daemon negotiates the writeback cache ($(grep -o 'kernel may keep.*' "$log" | head -1))" ||
  failed "the daemon did not turn the writeback cache on: $(grep -i 'writeback cache' "$log")"

cat >"$tmp/semantics.py" <<'PY'
# semantics.py MNT MODELDIR: the page-cache workload; writes each file's expected bytes to MODELDIR.
import mmap, os, random, sys
mnt, model = sys.argv[1], sys.argv[2]
rng = random.Random(7)
files = {}
def put(name, data):
    files[name] = bytearray(data)
# random-order 4 KiB writes over 3 MiB, then partial-page overwrites
p = os.path.join(mnt, "random")
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
m = bytearray(3 << 20)
blocks = list(range(len(m) // 4096)); rng.shuffle(blocks)
for b in blocks:
    chunk = rng.randbytes(4096); os.pwrite(fd, chunk, b * 4096); m[b*4096:(b+1)*4096] = chunk
for _ in range(200):
    off = rng.randrange(0, len(m) - 5000); n = rng.randrange(1, 5000)
    chunk = rng.randbytes(n); os.pwrite(fd, chunk, off); m[off:off+n] = chunk
os.fsync(fd); os.close(fd); put("random", m)
# O_APPEND from two descriptors, interleaved
p = os.path.join(mnt, "append")
a = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
b = os.open(p, os.O_WRONLY | os.O_APPEND)
m = bytearray()
for i in range(300):
    chunk = rng.randbytes(rng.randrange(1, 9000))
    os.write(a if i % 2 else b, chunk); m += chunk
os.close(a); os.close(b); put("append", m)
# truncate down inside a page, then up (the gap reads as zeros), then write past EOF
p = os.path.join(mnt, "trunc")
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
m = bytearray(rng.randbytes(1 << 20)); os.write(fd, m)
os.ftruncate(fd, 300001); del m[300001:]
os.ftruncate(fd, 700000); m += bytes(700000 - len(m))
chunk = rng.randbytes(10000); os.pwrite(fd, chunk, 900000); m += bytes(900000 - len(m)); m += chunk
os.fsync(fd); os.close(fd); put("trunc", m)
# a shared mmap write
p = os.path.join(mnt, "mmap")
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
os.ftruncate(fd, 256 << 10)
mm = mmap.mmap(fd, 256 << 10)
m = bytearray(256 << 10)
for _ in range(50):
    off = rng.randrange(0, (256 << 10) - 3000); chunk = rng.randbytes(3000)
    mm[off:off+3000] = chunk; m[off:off+3000] = chunk
mm.flush(); mm.close(); os.fsync(fd); os.close(fd); put("mmap", m)
bad = 0
for name, data in files.items():
    with open(os.path.join(mnt, name), "rb") as f: got = f.read()
    st = os.stat(os.path.join(mnt, name))
    if got != bytes(data) or st.st_size != len(data):
        print(f"mismatch through the mount: {name}: size {st.st_size} vs {len(data)}"); bad += 1
    with open(os.path.join(model, name), "wb") as f: f.write(data)
print(f"files {len(files)} bad {bad}")
sys.exit(1 if bad else 0)
PY
mkdir -p "$tmp/model"
if out=$(python3 "$tmp/semantics.py" "$mnt" "$tmp/model" 2>&1); then
  pass "random 4 KiB writes, partial pages, O_APPEND x2, truncate down/up, mmap: every file equals its model through the mount ($out)"
else
  failed "page-cache semantics through the mount: $out"
fi

# 3. append-only with the cache on
echo first >"$mnt/appendonly"
chattr +a "$mnt/appendonly"
for i in 1 2 3; do echo "line $i" >>"$mnt/appendonly"; done
if [[ $(cat "$mnt/appendonly") == $'first\nline 1\nline 2\nline 3' ]] && ! (echo x >"$mnt/appendonly") 2>/dev/null; then
  pass "an append-only file takes appends and refuses an overwrite with the cache on"
else
  failed "append-only file with the cache on: content '$(cat "$mnt/appendonly")'"
fi
chattr -a "$mnt/appendonly"

# 4. the elastic dirty window (tools/daemon/dirty_window.h, rule
#    dirty_window_grows_for_a_writer_and_is_given_back_at_its_close): 2,000 small files do not
#    grow it; a writer pushing 48 MiB grows the kernel's limit above its floor with the held space
#    raised first; df's Avail stays a
#    promise meanwhile; a second after the close the limit is back at its floor and the held space
#    with it, so df again shows everything but what was written.
cat >"$tmp/window.py" <<'PY'
# window.py MNT INSPECT MODEL: the window's life for one cached writer; prints what it saw.
import json, os, subprocess, sys, time
mnt, inspect, model = sys.argv[1], sys.argv[2], sys.argv[3]
def wb():
    return json.loads(subprocess.check_output([inspect, "stats", "--json", mnt]))["writeback_cache"]
def avail():
    s = os.statvfs(mnt); return s.f_bavail * s.f_frsize
problems = []
w0, a0 = wb(), avail()
if w0["limit_bytes"] != w0["floor_bytes"]: problems.append(f"idle limit {w0['limit_bytes']} is not the floor {w0['floor_bytes']}")
# Many small files (each written back at its close) never grow it.
os.mkdir(os.path.join(mnt, "small"))
for i in range(2000):
    with open(os.path.join(mnt, "small", f"s{i}"), "wb") as f: f.write(bytes([i % 251]) * 4096)
time.sleep(0.3)
ws = wb()
if ws["grows"] != w0["grows"] or ws["limit_bytes"] != w0["floor_bytes"]:
    problems.append(f"2,000 small files grew the window: {ws}")
a0 = avail()
chunk = bytes((i * 13 + 5) % 253 for i in range(1 << 20))
fd = os.open(os.path.join(mnt, "window"), os.O_CREAT | os.O_WRONLY, 0o644)
for _ in range(48): os.write(fd, chunk)
grown = None
for _ in range(30):  # the window thread looks every 100 ms
    w = wb()
    if w["limit_bytes"] > w0["floor_bytes"]: grown = w; break
    os.write(fd, chunk); time.sleep(0.1)
written = os.lseek(fd, 0, os.SEEK_CUR)
a_open = avail()
if grown is None: problems.append(f"the window did not grow: {wb()}")
else:
    if grown["held_bytes"] < grown["bound_bytes"]: problems.append(f"held {grown['held_bytes']} < bound {grown['bound_bytes']} of the grown limit")
    if grown["grows"] < 1: problems.append("grows counter is 0")
if a_open > a0 - written + (1 << 20): problems.append(f"df promised {a_open} while open, more than {a0} - {written} written")
os.fsync(fd); os.close(fd)
open(os.path.join(model, "window"), "wb").write(chunk * (written // len(chunk)))
time.sleep(1.6)
w1, a1 = wb(), avail()
if w1["limit_bytes"] != w0["floor_bytes"]: problems.append(f"limit {w1['limit_bytes']} not back at the floor {w0['floor_bytes']} after the close")
if w1["held_bytes"] != w0["held_bytes"]: problems.append(f"held {w1['held_bytes']} not back to {w0['held_bytes']} after the close")
drop = a0 - a1
if abs(drop - written) > max(2 << 20, written // 50): problems.append(f"df dropped by {drop} for {written} written")
print(f"floor {w0['floor_bytes'] >> 10} KiB, grown to {grown['limit_bytes'] >> 20 if grown else 0} MiB "
      f"(held {grown['held_bytes'] >> 20 if grown else 0} MiB), df while open {a_open >> 20} MiB of {a0 >> 20}, "
      f"after the close: limit {w1['limit_bytes'] >> 10} KiB, held {w1['held_bytes'] >> 10} KiB, df dropped {drop >> 20} MiB "
      f"for {written >> 20} MiB written")
for p in problems: print("problem:", p)
sys.exit(1 if problems else 0)
PY
sleep 1.2  # the earlier writers' closes: the window is idle
if out=$(python3 "$tmp/window.py" "$mnt" "$UBTRFS_BIN/inspect/ubtrfs-inspect" "$tmp/model" 2>&1); then
  pass "the dirty window grows for a writer and is given back at its close: $out"
else
  failed "the elastic dirty window: $out"
fi

# 2. fill the device with one cached writer
cat >"$tmp/fill.py" <<'PY'
# fill.py MNT OUT: one writer, opened while there is room, writes 1 MiB chunks until an error.
import errno, os, sys
mnt, out = sys.argv[1], sys.argv[2]
fd = os.open(os.path.join(mnt, "fill"), os.O_CREAT | os.O_WRONLY, 0o644)
chunk = bytes((i * 7 + 3) % 251 for i in range(1 << 20))
acked = 0; err = 0
while True:
    try:
        n = os.write(fd, chunk)
    except OSError as e:
        err = e.errno; break
    acked += n
    if n < len(chunk): 
        try: os.write(fd, chunk[n:])
        except OSError as e: err = e.errno
        break
try:
    os.close(fd)
    close_err = 0
except OSError as e:
    close_err = e.errno
open(out, "w").write(f"{acked} {err} {close_err}\n")
print(f"acknowledged {acked} bytes, then errno {err} ({errno.errorcode.get(err, '?')}), close errno {close_err}")
PY
dd if=/dev/urandom of="$mnt/victim" bs=1M count=16 status=none
fill_out=$(python3 "$tmp/fill.py" "$mnt" "$tmp/fill.res" 2>&1)
read -r acked werr cerr <"$tmp/fill.res"
if [[ $werr == 28 && $cerr == 0 ]]; then
  pass "the cached writer stopped with ENOSPC from write() and a clean close ($fill_out)"
else
  failed "the cached writer's stop: $fill_out (want errno 28 from write, 0 from close)"
fi
grep -q 'the device is full apart from' "$log" && pass "the daemon closed the guard: $(grep -o 'the device is full apart from.*held' "$log" | head -1)" ||
  failed "the daemon never closed the guard"
if grep -q 'page-cache write of inode .* failed' "$log"; then
  failed "a page-cache write failed in the daemon: $(grep 'page-cache write of inode' "$log" | head -2)"
else
  pass "no page-cache write failed in the daemon"
fi
avail_full=$(df -B1 --output=avail "$mnt" | tail -1)
rm "$mnt/victim"
sync -f "$mnt" 2>/dev/null || true
if dd if=/dev/zero of="$mnt/after" bs=1M count=4 conv=fsync status=none 2>"$tmp/after.err"; then
  pass "after a delete, a new open writes 4 MiB again (df said $((avail_full >> 10)) KiB free when full)"
else
  failed "writing after the delete: $(cat "$tmp/after.err")"
fi
ubtrfs_umount "$mnt" || failed "unmount (the daemon's final commit)"

# the kernel's view of every acknowledged byte
mkdir -p "$kmnt"
if kernel_mount "$img" "$kmnt" ro; then
  for f in random append trunc mmap window; do
    cmp -s "$tmp/model/$f" "$kmnt/$f" && pass "kernel reads $f as modelled" || failed "kernel read of $f differs from the model"
  done
  if python3 - "$kmnt/fill" "$acked" <<'PY'; then
import sys
path, acked = sys.argv[1], int(sys.argv[2])
chunk = bytes((i * 7 + 3) % 251 for i in range(1 << 20))
data = open(path, "rb").read()
ok = len(data) >= acked and all(data[o:o + len(chunk)][: max(0, min(len(chunk), acked - o))] == chunk[: max(0, min(len(chunk), acked - o))] for o in range(0, acked, len(chunk)))
print(f"fill: {len(data)} bytes on disk, {acked} acknowledged")
sys.exit(0 if ok else 1)
PY
    pass "every acknowledged byte of the filled file is in the image ($acked bytes)"
  else
    failed "acknowledged bytes of the filled file are missing or wrong in the image"
  fi
  kernel_umount "$kmnt"
else
  failed "the kernel could not mount the image"
fi
check_clean "$img" && pass "btrfs check clean" || failed "btrfs check"

# 4. A mount point whose name /proc/self/mountinfo escapes (a space is "\040" there): the daemon
#    still finds its bdi and turns the cache on (rule
#    the_writeback_cache_finds_the_bdi_of_a_mount_point_with_a_space; it was silently off: the
#    escaped name never matched, so the dirty limit could not be set).
img2=$tmp/space.img
mnt2="$tmp/mount point"
log2=$tmp/space.log
truncate -s 1G "$img2"
"$MKFS" -q "$img2"
if ubtrfs_mount "$img2" "$mnt2" "writeback_cache=on,log_file=$log2"; then
  if grep -q 'writeback cache on' "$log2" &&
    [[ $("$UBTRFS_BIN/inspect/ubtrfs-inspect" stats --json "$mnt2" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["writeback_cache"]["on"])') == True ]]; then
    pass "a mount point with a space gets the writeback cache"
  else
    failed "a mount point with a space: the writeback cache is off: $(grep -i 'writeback cache' "$log2")"
  fi
  ubtrfs_umount "$mnt2" || failed "unmount of the mount point with a space"
else
  failed "mount at a mount point with a space"
fi
finish
