#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest, including the mpirun tests).
# This is what CI runs (.ci/run). GPU tests skip with a message when no GPU is present.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader
export OPENBLAS_NUM_THREADS=1
cd "$build"
ctest --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 600
