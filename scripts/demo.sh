#!/usr/bin/env bash
# The main job, end to end: install dependencies, build, make a demo image with mkfs.ubtrfs, mount
# it, write to it, and check it with btrfs check. Until the ubtrfs FUSE daemon lands (issue 3) the
# image is mounted with the kernel's btrfs driver, which is itself the proof that mkfs.ubtrfs writes
# genuine btrfs. The image stays mounted at demo/mnt for you to explore; unmount with
#   umount demo/mnt
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
[[ $(id -u) == 0 ]] || { echo "demo.sh: run as root (it installs packages and loop-mounts an image)" >&2; exit 1; }

scripts/install-deps.sh
scripts/build.sh build

demo=$src/demo
mkdir -p "$demo/mnt"
if mountpoint -q "$demo/mnt"; then umount "$demo/mnt"; fi
img=$demo/disk.img
rm -f "$img"
build/tools/mkfs/mkfs.ubtrfs -b 1G -L ubtrfs-demo "$img"
build/tools/inspect/ubtrfs-inspect dump-super "$img" | head -n 20

mount -o loop "$img" "$demo/mnt"
mkdir -p "$demo/mnt/docs"
cp README.md "$demo/mnt/docs/"
seq 1 100000 > "$demo/mnt/numbers.txt"
ln -s docs/README.md "$demo/mnt/readme-link"
sync
echo "--- files on the demo image"
ls -lR "$demo/mnt" | head -n 20
umount "$demo/mnt"

echo "--- btrfs check and fsck.ubtrfs on the demo image"
btrfs check "$img"
build/tools/fsck/fsck.ubtrfs "$img"
mount -o loop "$img" "$demo/mnt"
echo
echo "demo image $img is mounted at $demo/mnt (kernel btrfs); unmount with: umount $demo/mnt"
