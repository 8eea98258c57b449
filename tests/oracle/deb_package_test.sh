#!/usr/bin/env bash
# The Debian package end to end (cmake/packaging.cmake): `cpack -G DEB` builds it from this build
# tree; `apt-get install ./ubtrfs_*.deb` installs it (apt resolves the Depends dpkg-shlibdeps
# computed, plus fuse3); `mount -t fuse.ubtrfs` then works with only the installed files (PATH
# without the build tree or /usr/local: the daemon that serves the mount is /usr/sbin/ubtrfs); the
# image written through it is check-clean and passes the installed fsck.ubtrfs; `man` finds the
# pages; `dpkg -r ubtrfs` removes every file `dpkg -L` listed and every directory the package
# created, and dpkg forgets the package.
#
# It installs into the real system, so it skips when a ubtrfs package is already installed or
# /usr/sbin/ubtrfs exists outside dpkg (it never replaces what someone else installed), and at
# exit it removes the package it installed, whatever happened.
#
# Rule named here: deb_installs_mounts_and_removes_without_a_trace.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=$(cd "$UBTRFS_BIN/.." && pwd)
require_root
require_btrfs_check
for c in cpack dpkg dpkg-deb apt-get dpkg-shlibdeps mount.fuse3 man; do
  command -v $c >/dev/null || skip_or_fail "$c not installed"
done
[[ -c /dev/fuse ]] || skip_or_fail "no /dev/fuse"
[[ -f $build/CPackConfig.cmake ]] || skip_or_fail "no configured build at $build"
status=$(dpkg-query -W -f='${db:Status-Status}' ubtrfs 2>/dev/null || true)
[[ -z $status || $status == not-installed ]] || skip_or_fail "a ubtrfs package is already installed ($status)"
[[ ! -e /usr/sbin/ubtrfs ]] || skip_or_fail "/usr/sbin/ubtrfs exists outside dpkg"

installed=0
trap 'rc=$?; set +e; if ((installed)); then dpkg -r ubtrfs >/dev/null 2>&1 || true; fi; (exit $rc); _oracle_cleanup' EXIT

tmp=$(make_tmpdir)
# 1. Build the package from this build tree (cpack's work files stay under the test root).
if ! out=$(cd "$tmp" && cpack --config "$build/CPackConfig.cmake" -G DEB -B "$tmp/cpack" 2>&1); then
  failed "cpack: $out"
  finish
  exit 1
fi
deb=$(ls "$tmp"/cpack/ubtrfs_*.deb)
depends=$(dpkg-deb -f "$deb" Depends)
missing=
for d in fuse3 libfuse3-3 liburing2 libc6 libstdc++6; do
  tr ',' '\n' <<<"$depends" | sed 's/^ *//; s/ .*//' | grep -qxF "$d" || missing+=" $d"
done
if [[ -z $missing ]]; then pass "package $(basename "$deb"), Depends: $depends"; else failed "Depends lacks$missing: $depends"; fi

# Which of the package's directories exist before it is installed (those must stay afterwards).
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' | grep -v '^$' | sort >"$tmp/contents"
while read -r p; do [[ -d $p ]] && echo "$p"; done <"$tmp/contents" >"$tmp/dirs-before"

# 2. Install through apt (dependencies resolved by apt, nothing downloaded when they are there).
if out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" 2>&1); then
  installed=1
  pass "apt-get install ./$(basename "$deb")"
else
  failed "apt-get install: $(tail -n 20 <<<"$out")"
  finish
  exit 1
fi
dpkg -L ubtrfs | sort >"$tmp/listed"
for f in /usr/sbin/ubtrfs /usr/sbin/mkfs.ubtrfs /usr/sbin/fsck.ubtrfs /usr/bin/ubtrfs-inspect /usr/bin/ubtrfs-stress \
  /usr/share/man/man8/ubtrfs.8 /usr/share/bash-completion/completions/ubtrfs; do
  grep -qx "$f" "$tmp/listed" && [[ -e $f ]] || failed "$f not installed by the package"
done
if [[ $(man -w ubtrfs 2>/dev/null) == /usr/share/man/man8/ubtrfs.8* && $(man -w mkfs.ubtrfs 2>/dev/null) == /usr/share/man/* ]]; then
  pass "man finds the installed pages"
else
  failed "man -w ubtrfs: $(man -w ubtrfs 2>&1)"
fi

# 3. mount -t fuse.ubtrfs with the installed files only, in a private mount namespace where an
#    empty tmpfs hides /usr/local (mount(8) puts /usr/local/sbin first on the helper's PATH, and a
#    developer's `ubtrfs` there would serve the mount instead) — a clean system's view. The mount
#    lives and dies inside the namespace: its script unmounts at exit whatever happens, and waits
#    for the daemon's final commit (the image's flock).
img=$tmp/deb.img
truncate -s 256M "$img"
cat >"$tmp/inside.sh" <<'SH'
set -euo pipefail
img=$1 mnt=$2 out=$3
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
trap 'rc=$?; set +e; umount "$mnt" 2>/dev/null; flock -w 60 "$img" true; (exit $rc); _oracle_cleanup' EXIT
mount -t tmpfs -o size=1M,mode=0755 none /usr/local
mkdir -p "$mnt"
mkfs.ubtrfs -q "$img"
mount -t fuse.ubtrfs -o log_file="$out/daemon.log" "$img" "$mnt"
awk -v m="$mnt" '$2 == m {print $1, $3}' /proc/mounts >"$out/mountline"
for p in /proc/[0-9]*; do
  # The daemon: argv[0] ubtrfs (mount.fuse3 runs it through sh by that name), serving $img.
  args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
  if [[ ${args%% *} == *ubtrfs && $args == *" $img $mnt "* ]]; then readlink "$p/exe" >>"$out/daemon_exe" || true; fi
done
mkdir "$mnt/d"
head -c 1000000 /dev/urandom >"$mnt/d/file"
sync -f "$mnt/d/file"
b2sum <"$mnt/d/file" | cut -d' ' -f1 >"$out/hash"  # compared with hash_file
umount "$mnt"
flock -w 60 "$img" true
echo done >"$out/done"
SH
if out=$(env -i unshare -m --propagation private bash "$tmp/inside.sh" "$img" "$tmp/mnt" "$tmp" 2>&1) && [[ -f $tmp/done ]]; then
  pass "mount -t fuse.ubtrfs, write, umount: $(cat "$tmp/mountline")"
else
  failed "mount -t fuse.ubtrfs in a clean namespace: $out"
fi
exe=$(sort -u "$tmp/daemon_exe" 2>/dev/null | tr '\n' ' ')
if [[ $exe == "/usr/sbin/ubtrfs " ]]; then pass "the daemon serving it was the installed /usr/sbin/ubtrfs"
else failed "the daemon serving the mount was '$exe', not /usr/sbin/ubtrfs"; fi
if [[ -f $tmp/done ]]; then
  if check_clean "$img" && env -i PATH=/usr/sbin:/usr/bin fsck.ubtrfs "$img" >/dev/null; then
    pass "btrfs check and the installed fsck.ubtrfs find the image clean"
  else
    failed "the image written through the package is not clean"
  fi
  kernel_mount "$img" "$tmp/kernel" ro
  if [[ $(hash_file "$tmp/kernel/d/file") == "$(cat "$tmp/hash")" ]]; then pass "the kernel reads the file back"
  else failed "the kernel reads other data"; fi
  kernel_umount "$tmp/kernel"
fi

# 4. dpkg -r leaves nothing behind.
if out=$(dpkg -r ubtrfs 2>&1); then installed=0; pass "dpkg -r ubtrfs"; else failed "dpkg -r: $out"; fi
left=()
while read -r p; do
  [[ $p == / || $p == /. ]] && continue
  if [[ -e $p || -L $p ]] && ! grep -qx "$p" "$tmp/dirs-before"; then left+=("$p"); fi
done < <(sort -u "$tmp/listed" "$tmp/contents")
if ((${#left[@]} == 0)); then pass "nothing left of the $(wc -l <"$tmp/listed") paths dpkg -L listed"
else failed "left after dpkg -r: ${left[*]}"; fi
status=$(dpkg-query -W -f='${db:Status-Status}' ubtrfs 2>/dev/null || true)
[[ -z $status || $status == not-installed ]] && pass "dpkg forgot the package" || failed "dpkg status after removal: $status"
finish
