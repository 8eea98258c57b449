#!/usr/bin/env bash
# Installs the ubtrfs daemon so that `mount -t fuse.ubtrfs IMAGE MNT -o OPTS` and fstab entries
# of type fuse.ubtrfs work.
#
# How mount(8) reaches the daemon (util-linux 2.38 + fuse3 on Debian): for type fuse.ubtrfs it
# runs the helper /sbin/mount.fuse.ubtrfs if present, else /sbin/mount.fuse (fuse3's mount.fuse3),
# which runs `ubtrfs SOURCE MOUNTPOINT -o OPTS` found through PATH. So the daemon must be on PATH:
# it is installed as PREFIX/sbin/ubtrfs (default /usr/local/sbin, on the default PATH). Where
# /sbin/mount.fuse is missing (only mount.fuse3 installed), a link /sbin/mount.fuse.ubtrfs ->
# mount.fuse3 is created; mount.fuse3 takes the type from its own name then.
# umount needs nothing: root uses umount(2) directly, users `fusermount3 -u`.
#
# Usage: scripts/install-mount-helper.sh [--prefix DIR] [--uninstall] [BINARY]
#   BINARY defaults to build/tools/daemon/ubtrfs next to this script's repository.
set -euo pipefail

prefix=/usr/local
uninstall=0
binary=
while [[ $# -gt 0 ]]; do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "install-mount-helper: unknown option $1" >&2; exit 1 ;;
    *) binary=$1; shift ;;
  esac
done
src=$(cd "$(dirname "$0")/.." && pwd)
binary=${binary:-$src/build/tools/daemon/ubtrfs}
dest=$prefix/sbin/ubtrfs
helper_link=/sbin/mount.fuse.ubtrfs

if [[ $uninstall == 1 ]]; then
  rm -f "$dest"
  if [[ -L $helper_link ]]; then rm -f "$helper_link"; fi
  echo "removed $dest"
  exit 0
fi

[[ -x $binary ]] || { echo "install-mount-helper: $binary is not an executable (build it: ninja ubtrfs)" >&2; exit 1; }
mount_fuse3=$(command -v mount.fuse3 || true)
[[ -z $mount_fuse3 && -x /sbin/mount.fuse3 ]] && mount_fuse3=/sbin/mount.fuse3
[[ -n $mount_fuse3 ]] || { echo "install-mount-helper: mount.fuse3 not found (install the fuse3 package)" >&2; exit 1; }

install -D -m 0755 "$binary" "$dest"
echo "installed $dest"
if [[ ! -e /sbin/mount.fuse && ! -e $helper_link ]]; then
  ln -s "$mount_fuse3" "$helper_link"
  echo "linked $helper_link -> $mount_fuse3"
fi
# mount.fuse3 looks the daemon up on PATH: make sure this PATH (and root's usual one) finds it.
std_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [[ ":$std_path:" != *":$prefix/sbin:"* ]]; then
  echo "install-mount-helper: warning: $dest is not on the standard PATH; mount -t fuse.ubtrfs finds it only with $prefix/sbin on PATH" >&2
fi
