#!/usr/bin/env bash
# The main job, end to end: install dependencies, build, make a demo image with mkfs.ubtrfs, mount
# it with the ubtrfs FUSE daemon, write to it, unmount (final commit), check it with btrfs check and
# fsck.ubtrfs, show that the kernel's btrfs reads the same files, then mount it again with ubtrfs
# and leave it mounted at demo/mnt for you to explore. Unmount with
#   umount demo/mnt        (or fusermount3 -u demo/mnt)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
[[ $(id -u) == 0 ]] || { echo "demo.sh: run as root (it installs packages and loop-mounts an image)" >&2; exit 1; }

scripts/install-deps.sh
scripts/build.sh build
# `mount -t fuse.ubtrfs` and fstab entries find the daemon through mount.fuse3 and $PATH.
scripts/install-mount-helper.sh build/tools/daemon/ubtrfs

demo=$src/demo
mkdir -p "$demo/mnt"
if mountpoint -q "$demo/mnt"; then umount "$demo/mnt"; fi
img=$demo/disk.img
# A previous demo's daemon may still be finishing its final commit: wait for its image lock.
[[ -e $img ]] && flock "$img" true
rm -f "$img"
build/tools/mkfs/mkfs.ubtrfs -b 1G -L ubtrfs-demo "$img"
build/tools/inspect/ubtrfs-inspect dump-super "$img" | head -n 20

echo "--- mounting with ubtrfs (FUSE)"
mount -t fuse.ubtrfs "$img" "$demo/mnt" -o commit=5
grep " $demo/mnt " /proc/mounts
mkdir -p "$demo/mnt/docs"
cp README.md "$demo/mnt/docs/"
seq 1 100000 > "$demo/mnt/numbers.txt"
ln -s docs/README.md "$demo/mnt/readme-link"
setfattr -n user.demo -v hello "$demo/mnt/numbers.txt" 2>/dev/null || true
echo "--- files on the demo image"
ls -lR "$demo/mnt" | head -n 20
df -h "$demo/mnt"
umount "$demo/mnt"
flock "$img" true  # the daemon holds the image lock until its final commit is on disk

echo "--- btrfs check and fsck.ubtrfs on the image ubtrfs wrote"
btrfs check "$img"
build/tools/fsck/fsck.ubtrfs "$img"
echo "--- the kernel's btrfs reads the same files"
mount -o loop,ro "$img" "$demo/mnt"
cmp "$demo/mnt/docs/README.md" README.md && echo "docs/README.md: identical"
wc -l < "$demo/mnt/numbers.txt"
umount "$demo/mnt"

mount -t fuse.ubtrfs "$img" "$demo/mnt"
echo
echo "demo image $img is mounted at $demo/mnt by ubtrfs; unmount with: umount $demo/mnt"
