#!/usr/bin/env bash
# Writes into preallocated space go in place (btrfs run_delalloc_nocow + btrfs_mark_extent_written
# for a PREALLOC extent only this inode references): they need no data space and add nothing to
# st_blocks, whose fallocate already counted the extent (xfstests generic/568: a 2-byte write
# across a block boundary inside a fallocated range made a file grow from 8 KiB to 16 KiB).
#
# Rule: write_into_prealloc_on_full_fs_allocates_nothing. Through the ubtrfs daemon: fallocate two
# files (1 MiB, and generic/568's 2 bytes across a block boundary), fill the image until no data
# space is left (writes fail with ENOSPC even after a commit), then write into the fallocated
# ranges (unaligned, across block boundaries, a whole block): every write succeeds in full,
# st_blocks stays what fallocate made it (before and after the commit that converts the extents),
# the free data space does not shrink, the content reads back right; after the unmount the image is
# check-clean (btrfs check x3, kernel read, fsck.ubtrfs) and the kernel reads the same bytes.
# UBTRFS_FS=kernel runs the same script on the kernel (proves the test's logic).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_ubtrfs
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v fallocate >/dev/null || skip_or_fail "fallocate (util-linux) not installed"
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

dir=$(make_tmpdir)
img=$dir/img
mnt=$dir/mnt
kmnt=$dir/kernel
truncate -s 128M "$img"
"$MKFS" -q "$img"
ubtrfs_mount "$img" "$mnt"

fallocate -l 1M "$mnt/pre"
fallocate -o 4095 -l 2 "$mnt/edge"   # generic/568: one byte in each of two blocks
sync -f "$mnt"  # the PREALLOC extents are in the tree before the fill

# The whole run inside one python: the fill, the writes, the figures; it prints "name sha256" of
# the expected contents for the kernel's read below, and FAIL lines for what went wrong.
rc=0
out=$(python3 - "$mnt" <<'PY'
import errno, hashlib, os, sys
mnt = sys.argv[1]
fails = []
def fail(msg):
    fails.append(msg)
    print("FAIL: " + msg, file=sys.stderr)

def blocks(name):
    return os.stat(os.path.join(mnt, name)).st_blocks * 512

def data_free():
    s = os.statvfs(mnt)
    return s.f_bfree * s.f_frsize

def commit(names):
    # fsync: ubtrfs commits the transaction (syncfs does not reach a FUSE daemon on every kernel).
    for name in names:
        fd = os.open(os.path.join(mnt, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

# Fill: append to one file until ENOSPC; commit (space pinned by the last transaction comes back)
# and go on, until a write right after a commit still fails.
fd = os.open(os.path.join(mnt, "fill"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
chunk = os.urandom(1 << 20)
for round_ in range(50):
    wrote = 0
    for size in (1 << 20, 4096):
        while True:
            try:
                n = os.write(fd, chunk[:size])
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            wrote += n
            if n < size:
                continue
    commit(["fill"])
    if wrote == 0:
        break
else:
    fail("the image never filled up")
os.close(fd)
# Really full: a new block anywhere is ENOSPC.
try:
    with open(os.path.join(mnt, "fill"), "ab") as f:
        f.write(b"x" * 4096)
        f.flush()
        os.fsync(f.fileno())
    fail("a 4 KiB append still succeeded after the fill")
except OSError as e:
    if e.errno != errno.ENOSPC:
        fail(f"append after the fill: {e}")
print(f"filled: fill is {os.stat(os.path.join(mnt, 'fill')).st_size} bytes, data free {data_free()}", file=sys.stderr)

# Each write meets only sectors no earlier write touched: a sector written before may have been
# converted to REG by a commit since, and rewriting it is a copy-on-write that needs data space
# (btrfs too: can_nocow_extent takes REG extents only of NODATACOW inodes).
model = {"pre": bytearray(1 << 20), "edge": bytearray(4097)}
writes = [("edge", 4095, b"ab"), ("pre", 4095, b"cd"), ("pre", 100000, os.urandom(65536)),
          ("pre", (1 << 20) - 4096, os.urandom(4096)), ("pre", 20479, os.urandom(4098))]
before = {name: blocks(name) for name in model}
free_before = data_free()
for name, off, data in writes:
    fd = os.open(os.path.join(mnt, name), os.O_WRONLY)
    try:
        n = os.pwrite(fd, data, off)
        if n != len(data):
            fail(f"write of {len(data)} bytes at {off} into {name}: short write of {n}")
    except OSError as e:
        fail(f"write of {len(data)} bytes at {off} into {name}: {e}")
    finally:
        os.close(fd)
    model[name][off:off + len(data)] = data
for when in ("before the commit", "after the commit"):
    for name in model:
        if blocks(name) != before[name]:
            fail(f"{name} {when}: allocated {blocks(name)} bytes, fallocate made it {before[name]}")
    if when == "before the commit":
        commit(model)
if data_free() < free_before:
    fail(f"free data space shrank from {free_before} to {data_free()} bytes")
print(f"st_blocks: " + ", ".join(f"{n} {before[n]} -> {blocks(n)}" for n in model), file=sys.stderr)
for name, want in model.items():
    with open(os.path.join(mnt, name), "rb") as f:
        got = f.read()
    if got != bytes(want):
        fail(f"{name} reads back wrong through ubtrfs ({len(got)} bytes, want {len(want)})")
    print(name, hashlib.blake2b(want).hexdigest())  # compared with hash_file (b2sum)
sys.exit(1 if fails else 0)
PY
) || rc=$?
if ((rc == 0)); then pass "writes into fallocated space on a full image: in full, st_blocks unchanged, content right"
else failed "writes into fallocated space on a full image (see above)"; fi

if ubtrfs_umount "$mnt"; then pass "unmount (final commit)"; else failed "unmount"; fi
if check_clean_full "$img"; then pass "image check-clean"; else failed "image not check-clean"; fi
kernel_mount "$img" "$kmnt" ro
while read -r name want; do
  got=$(hash_file "$kmnt/$name")
  if [[ $got == "$want" ]]; then pass "kernel reads $name as written"
  else failed "kernel reads $name as $got, written $want"; fi
done <<<"$out"
kernel_umount "$kmnt"
finish
