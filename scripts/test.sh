#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest, including the mpirun tests).
# This is what CI runs (.ci/run). GPU tests skip with a message when no GPU is present.
#
#   scripts/test.sh --interop   instead: installs the pinned torch / transformers / safetensors
#                               (scripts/requirements-golden.txt, ~3 GB) into .venv and checks the
#                               Hugging Face export of every architecture (scripts/interop_check.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
if [ "${1:-}" = --interop ]; then
  venv=${VENV:-$root/.venv}
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$root/scripts/requirements-golden.txt"
  PYTHON="$venv/bin/python" STRATA="$build/strata" exec "$root/scripts/interop_check.sh"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader
export OPENBLAS_NUM_THREADS=1
cd "$build"
ctest --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 600
