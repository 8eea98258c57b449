#!/usr/bin/env bash
# Configures and builds ubtrfs. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
# BUILD_DIR defaults to ./build; e.g. scripts/build.sh build-asan -DUBTRFS_SANITIZE=address
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$src/build}
shift || true
cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo} "$@" >/dev/null
ninja -C "$dir" ${NINJA_JOBS:+-j$NINJA_JOBS}
