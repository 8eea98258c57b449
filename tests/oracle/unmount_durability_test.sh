#!/usr/bin/env bash
# Unmount right after heavy writes loses nothing (issue 3, acceptance 5).
#
# A writer (python, below) applies every operation twice: to the ubtrfs mount and to a shadow
# tree on the host file system, which is therefore the exact expected state, computed without
# reading anything back through the mount. Round 1 on a fresh mkfs.ubtrfs image: 2,400 files in
# 40 directories (inline, small and multi-extent sizes; some written in two parts, some
# overwritten in the middle, every 10th fsynced), three big files (64 MiB sequential with an
# fsync halfway, 32 MiB of scattered 64 KiB pwrites, an 8 MiB sparse one), renames and unlinks;
# then the unmount at once, no sync. Round 2 on a read-write remount: appends, overwrites,
# truncations, deletions, 500 new files (some fsynced); again the unmount at once.
# After each round the daemon must exit 0 (its final commit) and then every byte of the shadow
# tree must be there, with nothing else (paths, types, sizes, modes, sha256): as read by ubtrfs
# mounting the image again and as read by the kernel; and the image must be check-clean.
#
# UBTRFS_FS=kernel runs the same script on the kernel (mkfs.ubtrfs image, kernel mounts).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
IMAGE_SIZE=2G

require_ubtrfs
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

started=$SECONDS
tmp=$(make_tmpdir)
img=$tmp/durability.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
shadow=$tmp/shadow
mkdir -p "$shadow"
truncate -s "$IMAGE_SIZE" "$img"
"$MKFS" -q "$img"

cat >"$tmp/writer.py" <<'PY'
# writer.py MOUNT SHADOW ROUND: the same operations on both trees; fsync only on the mount.
import os, random, sys

mnt, shadow, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3])
fsyncs = 0

def both(rel):
    return ((os.path.join(mnt, rel), True), (os.path.join(shadow, rel), False))

def data(seed, n):
    return random.Random(seed).randbytes(n)

def write(rel, buf, sync=False, mode="wb", off=None):
    global fsyncs
    for path, is_mnt in both(rel):
        with open(path, mode) as f:
            if off is not None:
                f.seek(off)
            f.write(buf)
            if sync and is_mnt:
                f.flush()
                os.fsync(f.fileno())
                fsyncs += 1

def truncate(rel, size):
    for path, _ in both(rel):
        os.truncate(path, size)

def rename(a, b):
    for root in (mnt, shadow):
        os.rename(os.path.join(root, a), os.path.join(root, b))

def unlink(rel):
    for path, _ in both(rel):
        os.unlink(path)

def mkdir(rel):
    for path, _ in both(rel):
        os.mkdir(path)

MiB = 1 << 20
r = random.Random(rnd)
if rnd == 1:
    for d in range(40):
        mkdir(f"d{d:02}")
    names = []
    for i in range(2400):
        rel = f"d{i % 40:02}/f{i:04}"
        kind = r.random()
        size = 0 if kind < 0.05 else r.randrange(1, 4000) if kind < 0.55 else r.randrange(4096, 200000)
        buf = data(f"f{i}", size)
        if i % 7 == 3 and size > 2:
            write(rel, buf[: size // 2])
            write(rel, buf[size // 2 :], sync=(i % 10 == 0), mode="ab")
        else:
            write(rel, buf, sync=(i % 10 == 0))
        if i % 13 == 5 and size > 100:
            write(rel, data(f"ow{i}", min(5000, size // 2)), mode="r+b", off=size // 3)
        names.append(rel)
    for i, rel in enumerate(names):
        if i % 19 == 4:
            unlink(rel)
        elif i % 17 == 2:
            rename(rel, rel + ".mv")
    # Big files: sequential with an fsync halfway, scattered pwrites, sparse.
    mkdir("big")
    write("big/seq-64m", b"")
    for c in range(64):
        write("big/seq-64m", data(f"seq{c}", MiB), mode="ab", sync=(c == 31))
    write("big/scattered-32m", b"")
    truncate("big/scattered-32m", 32 * MiB)
    order = list(range(512))
    r.shuffle(order)
    for c in order[:400]:
        write("big/scattered-32m", data(f"sc{c}", 64 << 10), mode="r+b", off=c * (64 << 10))
    write("big/sparse-8m", b"")
    truncate("big/sparse-8m", 8 * MiB)
    for off in (0, 3 * MiB + 4096, 8 * MiB - 10000):
        write("big/sparse-8m", data(f"sp{off}", 10000), mode="r+b", off=off)
else:
    write("big/seq-64m", data("append", 4 * MiB + 123), mode="ab")
    write("big/scattered-32m", data("head", MiB), mode="r+b", off=0, sync=True)
    truncate("big/sparse-8m", MiB)
    truncate("d05/f0005", 0) if os.path.exists(os.path.join(shadow, "d05/f0005")) else None
    victims = sorted(os.path.relpath(os.path.join(dp, f), shadow)
                     for dp, _, fs in os.walk(shadow) for f in fs if not dp.endswith("big"))
    for rel in victims[::24]:
        unlink(rel)
    mkdir("round2")
    for i in range(500):
        write(f"round2/n{i:03}", data(f"n{i}", r.randrange(0, 30000)), sync=(i % 25 == 0))
    rename("d01", "round2/d01-moved")
print(f"writer round {rnd}: done, {fsyncs} fsyncs")
PY

# digest ROOT: every path below ROOT with type and mode, regular files with size and sha256.
digest() {
  (
    cd "$1" || exit 1
    export LC_ALL=C
    find . -mindepth 1 \( -type f -printf '%P %y %m %s\n' -o -printf '%P %y %m\n' \) | sort
    find . -type f -print0 | sort -z | xargs -0 -r sha256sum
  )
}

# verify ROUND: what ubtrfs and the kernel read from the image equals the shadow tree; check-clean.
verify() {
  local round=$1 t
  digest "$shadow" >"$tmp/want-$round"
  if ubtrfs_mount "$img" "$mnt" ro; then
    digest "$mnt" >"$tmp/ubtrfs-$round"
    if diff -u "$tmp/want-$round" "$tmp/ubtrfs-$round" >"$tmp/diff"; then
      pass "round $round: remounted, every byte is there ($(grep -c ' f ' "$tmp/want-$round") files)"
    else
      failed "round $round: the remount differs from what was written:"
      head -30 "$tmp/diff" >&2
    fi
    ubtrfs_umount "$mnt" || failed "round $round: read-only unmount"
  else
    failed "round $round: remount refused"
  fi
  if kernel_mount "$img" "$kmnt" ro; then
    digest "$kmnt" >"$tmp/kernel-$round"
    if diff -u "$tmp/want-$round" "$tmp/kernel-$round" >"$tmp/diff"; then
      pass "round $round: the kernel reads every byte that was written"
    else
      failed "round $round: the kernel's view differs from what was written:"
      head -30 "$tmp/diff" >&2
    fi
    kernel_umount "$kmnt"
  else
    failed "round $round: the kernel refused to mount the image"
  fi
  t=$SECONDS
  if check_clean_full "$img"; then pass "round $round: check-clean ($((SECONDS - t)) s)"; else failed "round $round: not check-clean"; fi
}

for round in 1 2; do
  if ! ubtrfs_mount "$img" "$mnt"; then
    failed "round $round: read-write mount refused"
    break
  fi
  t=$SECONDS
  if python3 "$tmp/writer.py" "$mnt" "$shadow" "$round"; then
    pass "round $round: writes done ($((SECONDS - t)) s)"
  else
    failed "round $round: the writer failed"
  fi
  # At once: no sync, no sleep.
  t=$SECONDS
  if ubtrfs_umount "$mnt"; then pass "round $round: unmount right after the writes, daemon exit 0 ($((SECONDS - t)) s)"; else failed "round $round: unmount"; fi
  verify "$round"
done

echo "unmount_durability_test: $((SECONDS - started)) s"
finish
