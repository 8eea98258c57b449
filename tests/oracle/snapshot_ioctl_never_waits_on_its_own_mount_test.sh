#!/usr/bin/env bash
# Rule: a request handler never makes a system call that the kernel turns into a FUSE request to
# this same mount (tools/daemon/caller_fd.cpp). The snapshot ioctl learns its source subvolume
# from the caller's descriptor; it used fstat() on it, and a directory whose cached attributes
# were stale (an entry created in it since) then sent FUSE_GETATTR to the daemon from inside the
# ioctl's handler. On FUSE over io_uring a request goes to the queue of the sender's CPU, whose
# workers are pinned there: the GETATTR waited for a worker of the queue the ioctl occupied. With
# one worker per queue it never came (a hang at the first snapshot); with the default two, two
# such snapshots on one CPU at once hung the mount — once, for 30 minutes, in CI's TSan snapshot
# stress.
#   - on the ring with one worker per queue (fuse_uring=on,fuse_uring_threads=1), and through
#     /dev/fuse: a subvolume, then rounds of "create a file in it, snapshot it through a descriptor
#     opened before" (the create leaves the directory's attributes stale), each snapshot answered
#     within a watchdog's limit and its file there in the snapshot;
#   - the image is check-clean afterwards.
# Exit: 0 all passed, 1 a failure, 77 skipped (no root, /dev/fuse, or a kernel without the ring
# and UBTRFS_REQUIRE_ORACLES unset).
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
ROUNDS=${UBTRFS_SNAPSHOT_SELF_ROUNDS:-20}

require_ubtrfs
fs_is_kernel && skip_or_fail "tests the ubtrfs daemon's FUSE transport"
require_btrfs_check
[[ -x $MKFS ]] || { echo "FAIL: $MKFS not built" >&2; exit 1; }
use_fuse_uring_param

tmp=$(make_tmpdir)
cat >"$tmp/snap.py" <<'PY'
import fcntl, os, struct, sys
# BTRFS_IOC_SUBVOL_CREATE, SNAP_CREATE: struct btrfs_ioctl_vol_args {s64 fd; char name[4088]}
SUBVOL_CREATE, SNAP_CREATE = 0x5000940E, 0x50009401
mnt, rounds = sys.argv[1], int(sys.argv[2])
sys.stdout = open(sys.argv[3], "w")
def vol_args(fd, name): return bytearray(struct.pack("q4088s", fd, name.encode()))
top = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
fcntl.ioctl(top, SUBVOL_CREATE, vol_args(0, "sv"))
os.mkdir(os.path.join(mnt, "snaps"))
sv = os.open(os.path.join(mnt, "sv"), os.O_RDONLY | os.O_DIRECTORY)
snaps = os.open(os.path.join(mnt, "snaps"), os.O_RDONLY | os.O_DIRECTORY)
for i in range(rounds):
    # An entry made in the source leaves its cached attributes stale (the kernel's
    # fuse_dir_changed): a stat of `sv` now would ask the daemon.
    os.close(os.open(os.path.join(mnt, "sv", f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
    fcntl.ioctl(snaps, SNAP_CREATE, vol_args(sv, f"s{i}"))
    if not os.path.exists(os.path.join(mnt, "snaps", f"s{i}", f"f{i}")):
        print(f"snapshot s{i} lacks f{i}", flush=True); sys.exit(1)
print(f"{rounds} snapshots of a source with stale attributes", flush=True)
PY

# run_case OPTS LABEL
run_case() {
  local opts=$1 label=$2 img=$tmp/$2.img mnt=$tmp/$2.mnt rc=0
  truncate -s 1G "$img"
  "$MKFS" -q "$img"
  ubtrfs_mount "$img" "$mnt" "$opts" || { failed "$label: mount"; return; }
  run_watched 60 "$mnt" python3 "$tmp/snap.py" "$mnt" "$ROUNDS" "$tmp/$label.out" || rc=$?
  if ((rc == 124)); then
    failed "$label: the snapshots did not finish within 60 s: the mount is deadlocked (stacks above)"
    abort_fuse_mount "$mnt" || true
    return
  elif ((rc != 0)); then
    failed "$label: exit $rc: $(tail -3 "$tmp/$label.out")"
  else
    pass "$label: $(tail -1 "$tmp/$label.out")"
  fi
  ubtrfs_umount "$mnt" || failed "$label: unmount"
  check_clean_full "$img" && pass "$label: check-clean" || failed "$label: not check-clean"
}

echo Y >"$FUSE_URING_PARAM"
run_case "fuse_uring=on,fuse_uring_threads=1" ring1
echo "$FUSE_URING_SAVED" >"$FUSE_URING_PARAM"
run_case "fuse_uring=off" devfuse
finish
