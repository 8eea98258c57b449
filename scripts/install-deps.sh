#!/usr/bin/env bash
# Installs everything ubtrfs needs to build and test on Debian 12 (run as root).
# Idempotent: packages already present are left alone. `--fuzz` adds clang 19 and its runtime
# (libFuzzer, ASan, UBSan) for scripts/fuzz.sh; CI's build and tests do not need them.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libfuse3-dev fuse3 liburing-dev libxxhash-dev libsodium-dev libspdlog-dev libfmt-dev catch2 libisal-dev
  libzstd-dev zlib1g-dev liblzo2-dev libcli11-dev nlohmann-json3-dev uuid-dev libblkid-dev
  btrfs-progs e2fsprogs zstd util-linux kmod xxd python3
  fio dbench fuse2fs
  go-md2man man-db  # man pages (packaging/man/*.md -> roff) and man -l in their test
  libcap2-bin xfsprogs attr  # capsh, xfs_io and getfattr/setfattr in the inode flags and kernel image tests
  btrfs-compsize  # the oracle of compression on write (compsize on the kernel mount)
  gdb  # the stacks of a daemon that stopped answering, printed by the tests that watch for it (lib.sh run_watched)
  libnbd-dev nbdkit nbdkit-plugin-dev  # io/nbd_device (libnbd); its tests (nbdkit; the header for their flush filter)
)
# scripts/fuzz.sh: libFuzzer, ASan, UBSan (clang 14, Debian 12's default, lacks what std::expected needs)
[[ ${1:-} == --fuzz ]] && packages+=(clang-19 libclang-rt-19-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The kernel btrfs driver and loop devices are test oracles; load them if they are modules.
modprobe btrfs 2>/dev/null || true
modprobe loop 2>/dev/null || true
