#!/usr/bin/env bash
# Configures and builds Strata into $BUILD_DIR (default build/). Extra arguments go to cmake,
# e.g. scripts/build.sh -DSTRATA_SANITIZE=ON or -DSTRATA_CUDA=OFF. CUDA is on when nvcc exists.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "$@" > "$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; echo "build: configure failed (log above)" >&2; exit 1; }
grep -E "^-- Strata:" "$build/configure.log" || true
cmake --build "$build" -j "$jobs"
echo "build: done in $build"
