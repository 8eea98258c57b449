#!/usr/bin/env bash
# The shutdown ioctl through the daemon (issue 9 acceptance 4; fs/shutdown.cpp, tools/daemon/ioctl.cpp).
#
# Round 1, UBTRFS_IOC_SHUTDOWN with flags 2 (no flush: a power cut): files written and fsynced,
# more written without fsync, then the ioctl on the mount's root. A non-root caller of
# FS_IOC_GOINGDOWN gets EPERM and changes nothing. After the ioctl:
# write, create, mkdir, read, fsync fail with EIO while statfs answers; the image file does not
# change by one byte from the ioctl's return to the daemon's exit (unmount included); the daemon
# exits 0 and logged exactly one warning naming the caller's pid. Then the image is check-clean
# (btrfs check x3, the kernel reads every file, fsck.ubtrfs), and every fsynced file is intact as
# read by ubtrfs and by the kernel.
# Round 2, FS_IOC_GOINGDOWN (0x8004587d, what xfstests' godown sends; through FUSE it carries no
# flags, read as 0: sync first), then round 3, `ubtrfs-inspect shutdown --mode sync`
# (UBTRFS_IOC_SHUTDOWN with flags 0): data never fsynced survives both; unknown flags are EINVAL.
#
# Rules named here: shutdown_ioctl_writes_nothing_after_it_returns,
# shutdown_keeps_every_fsynced_file, shutdown_sync_first_keeps_everything,
# goingdown_without_flags_syncs_first.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs

require_ubtrfs
fs_is_kernel && skip_or_fail "the ubtrfs control ioctl has no kernel counterpart"
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/shutdown.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
truncate -s 1G "$img"
"$MKFS" -q "$img"

cat >"$tmp/tool.py" <<'PY'
# tool.py CMD ARGS: the workload and the probes of this test.
import errno, fcntl, hashlib, json, os, random, struct, sys

GOINGDOWN = 0x8004587D                 # _IOR('X', 125, __u32)
UBTRFS_SHUTDOWN = 0x4004D702           # _IOW(0xD7, 0x02, __u32)
cmd, args = sys.argv[1], sys.argv[2:]

def data(seed, n):
    return random.Random(seed).randbytes(n)

if cmd == "write":  # write MNT MANIFEST: fsynced files (manifest: name -> sha256) and unsynced ones
    mnt, manifest = args
    synced = {}
    os.mkdir(os.path.join(mnt, "d"))
    for i in range(40):
        name = f"d/synced{i}"
        buf = data(i, [100, 5000, 70000, 1 << 20][i % 4] + i)
        with open(os.path.join(mnt, name), "wb") as f:
            f.write(buf)
            f.flush()
            os.fsync(f.fileno())
        synced[name] = hashlib.sha256(buf).hexdigest()
    big = data(1000, 24 << 20)
    with open(os.path.join(mnt, "big"), "wb") as f:
        f.write(big)
        os.fsync(f.fileno())
    synced["big"] = hashlib.sha256(big).hexdigest()
    for i in range(40):
        with open(os.path.join(mnt, f"d/unsynced{i}"), "wb") as f:
            f.write(data(5000 + i, 3000 * i + 1))
    os.mkdir(os.path.join(mnt, "unsynced-dir"))
    with open(os.path.join(mnt, "big-unsynced"), "wb") as f:
        f.write(data(2000, 16 << 20))
    json.dump(synced, open(manifest, "w"))

elif cmd == "goingdown":  # goingdown MNT [UID]: FS_IOC_GOINGDOWN on the root; prints the errno (0: success)
    fd = os.open(args[0], os.O_RDONLY | os.O_DIRECTORY)
    if len(args) > 1:  # asked by another user, through the descriptor root opened
        os.setgroups([])
        os.setgid(int(args[1]))
        os.setuid(int(args[1]))
    try:
        fcntl.ioctl(fd, GOINGDOWN, struct.pack("I", 2))
        print(0)
    except OSError as e:
        print(e.errno)

elif cmd == "shutdown":  # shutdown MNT FLAGS: UBTRFS_IOC_SHUTDOWN; prints the errno
    fd = os.open(args[0], os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, UBTRFS_SHUTDOWN, struct.pack("I", int(args[1])))
        print(0)
    except OSError as e:
        print(e.errno)

elif cmd == "probe":  # probe MNT: each operation after the shutdown, "name errno" per line
    mnt = args[0]
    def attempt(name, fn):
        try:
            fn()
            print(name, 0)
        except OSError as e:
            print(name, e.errno)
    def write_existing():
        fd = os.open(os.path.join(mnt, "d/unsynced1"), os.O_WRONLY)
        os.write(fd, b"x" * 4096)
    def read_existing():
        with open(os.path.join(mnt, "d/synced3"), "rb") as f:
            f.read()
    def fsync_existing():
        fd = os.open(os.path.join(mnt, "d/synced2"), os.O_RDONLY)
        os.fsync(fd)
    attempt("write", write_existing)
    attempt("create", lambda: open(os.path.join(mnt, "new-after"), "wb").close())
    attempt("mkdir", lambda: os.mkdir(os.path.join(mnt, "dir-after")))
    attempt("read", read_existing)
    attempt("fsync", fsync_existing)
    attempt("statfs", lambda: os.statvfs(mnt))

elif cmd == "verify":  # verify ROOT MANIFEST: every file of the manifest with its sha256
    root, manifest = args
    bad = 0
    for name, want in json.load(open(manifest)).items():
        try:
            got = hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
        except OSError as e:
            got = f"error {e}"
        if got != want:
            print(f"{name}: {got} != {want}")
            bad += 1
    sys.exit(1 if bad else 0)
PY

# ---- round 1: UBTRFS_IOC_SHUTDOWN, flags 2 (no flush) ----
ubtrfs_mount "$img" "$mnt" allow_other
log=$(ubtrfs_log "$mnt")
python3 "$tmp/tool.py" write "$mnt" "$tmp/manifest.json"

rc=$(python3 "$tmp/tool.py" goingdown "$mnt" 65534)
if [[ $rc == 1 ]]; then pass "FS_IOC_GOINGDOWN by a non-root caller is EPERM"; else failed "non-root FS_IOC_GOINGDOWN: errno $rc, want 1 (EPERM)"; fi
if grep -q "filesystem shut down" "$log"; then failed "a refused shutdown shut the filesystem down"; fi

rc=$(python3 "$tmp/tool.py" shutdown "$mnt" 2)
if [[ $rc == 0 ]]; then pass "UBTRFS_IOC_SHUTDOWN (no flush) succeeded"; else failed "UBTRFS_IOC_SHUTDOWN (no flush): errno $rc"; fi
after_ioctl=$(hash_file "$img")

probe=$(python3 "$tmp/tool.py" probe "$mnt")
for op in write create mkdir read fsync; do
  if grep -qx "$op 5" <<<"$probe"; then pass "$op after the shutdown is EIO"; else failed "$op after the shutdown: $(grep "^$op " <<<"$probe")"; fi
done
if grep -qx "statfs 0" <<<"$probe"; then pass "statfs still answers"; else failed "statfs after the shutdown: $probe"; fi

if ubtrfs_umount "$mnt"; then pass "unmount after the shutdown: the daemon exited 0"; else failed "unmount after the shutdown"; fi
if [[ $(hash_file "$img") == "$after_ioctl" ]]; then
  pass "the image did not change from the ioctl's return to the daemon's exit"
else
  failed "the image changed after the shutdown ioctl returned"
fi
n=$(grep -c "filesystem shut down by pid [0-9]* (python3) with UBTRFS_IOC_SHUTDOWN (no flush)" "$UBTRFS_LAST_LOG" || true)
if [[ $n == 1 ]] && grep "filesystem shut down by pid" "$UBTRFS_LAST_LOG" | grep -q "warn"; then
  pass "one warning names the caller"
else
  failed "want one warning naming the caller, found $n: $(grep "shut down" "$UBTRFS_LAST_LOG" | head -3)"
fi

# fsync goes through the tree log, so the image may carry a log (a power cut after fsyncs): the
# kernel replays it on a read-write mount (a read-only one refuses: "log replay required on RO
# media"). The kernel replays a copy; ubtrfs replays the image itself; both must hold every
# fsynced file and be check-clean after.
kcopy=$tmp/kernel-copy.img
cp --sparse=always "$img" "$kcopy"
kernel_mount "$kcopy" "$kmnt"
if out=$(python3 "$tmp/tool.py" verify "$kmnt" "$tmp/manifest.json"); then
  pass "every fsynced file intact through the kernel's replay"
else
  failed "fsynced files differ through the kernel's replay: $(head -5 <<<"$out")"
fi
kernel_umount "$kmnt"
if check_clean_full "$kcopy"; then pass "the kernel-replayed copy is check-clean"; else failed "the kernel-replayed copy is not check-clean"; fi
rm -f "$kcopy"

ubtrfs_mount "$img" "$mnt"
if out=$(python3 "$tmp/tool.py" verify "$mnt" "$tmp/manifest.json"); then
  pass "every fsynced file intact through ubtrfs"
else
  failed "fsynced files differ through ubtrfs: $(head -5 <<<"$out")"
fi
ubtrfs_umount "$mnt" || failed "unmount of the remount"
if check_clean_full "$img"; then pass "image check-clean after the shutdown and ubtrfs's replay"; else failed "image after the shutdown and ubtrfs's replay is not check-clean"; fi
kernel_mount "$img" "$kmnt" ro
if out=$(python3 "$tmp/tool.py" verify "$kmnt" "$tmp/manifest.json"); then
  pass "every fsynced file intact through the kernel"
else
  failed "fsynced files differ through the kernel: $(head -5 <<<"$out")"
fi
kernel_umount "$kmnt"

# ---- rounds 2 and 3: FS_IOC_GOINGDOWN, then UBTRFS_IOC_SHUTDOWN flags 0 (both sync first) ----
for round in goingdown inspect; do
  ubtrfs_mount "$img" "$mnt"
  python3 - "$mnt" "$tmp/manifest-$round.json" "$round" <<'PY'
import hashlib, json, os, random, sys
mnt, manifest, tag = sys.argv[1:]
out = {}
for i in range(20):
    buf = random.Random(f"{tag}{i}").randbytes(40000 * i + 7)
    with open(os.path.join(mnt, f"never-synced-{tag}{i}"), "wb") as f:
        f.write(buf)
    out[f"never-synced-{tag}{i}"] = hashlib.sha256(buf).hexdigest()
json.dump(out, open(manifest, "w"))
PY
  if [[ $round == goingdown ]]; then
    rc=$(python3 "$tmp/tool.py" goingdown "$mnt")
    if [[ $rc == 0 ]]; then pass "FS_IOC_GOINGDOWN succeeded"; else failed "FS_IOC_GOINGDOWN: errno $rc"; fi
    probe=$(python3 "$tmp/tool.py" probe "$mnt")
    if grep -qx "create 5" <<<"$probe"; then pass "create after FS_IOC_GOINGDOWN is EIO"; else failed "create after FS_IOC_GOINGDOWN: $probe"; fi
  else
    rc=$(python3 "$tmp/tool.py" shutdown "$mnt" 7)
    if [[ $rc == 22 ]]; then pass "UBTRFS_IOC_SHUTDOWN with unknown flags is EINVAL"; else failed "flags 7: errno $rc, want 22"; fi
    if out=$("$UBTRFS_BIN/inspect/ubtrfs-inspect" shutdown "$mnt" --mode sync 2>&1); then
      pass "ubtrfs-inspect shutdown --mode sync (UBTRFS_IOC_SHUTDOWN, flags 0) succeeded"
    else
      failed "ubtrfs-inspect shutdown --mode sync: $out"
    fi
  fi
  after_ioctl=$(hash_file "$img")
  if ubtrfs_umount "$mnt"; then pass "$round: unmount after the sync-first shutdown"; else failed "$round: unmount after the sync-first shutdown"; fi
  [[ $(hash_file "$img") == "$after_ioctl" ]] || failed "$round: the image changed after the sync-first shutdown returned"
  if [[ $round == goingdown ]]; then
    n=$(grep -c "filesystem shut down by pid [0-9]* (python3) with FS_IOC_GOINGDOWN (sync first)" "$UBTRFS_LAST_LOG" || true)
    [[ $n == 1 ]] && pass "one warning names the FS_IOC_GOINGDOWN caller" || failed "want one GOINGDOWN warning, found $n"
  fi
  check_clean "$img" || failed "$round: image after the sync-first shutdown is not btrfs-check clean"
  ubtrfs_mount "$img" "$mnt"
  if out=$(python3 "$tmp/tool.py" verify "$mnt" "$tmp/manifest-$round.json"); then
    pass "$round: the sync-first shutdown kept the data never fsynced"
  else
    failed "$round: the sync-first shutdown lost data: $(head -5 <<<"$out")"
  fi
  python3 "$tmp/tool.py" verify "$mnt" "$tmp/manifest.json" >/dev/null || failed "round 1 files lost in round $round"
  ubtrfs_umount "$mnt" || failed "$round: final unmount"
done

finish
