#!/usr/bin/env bash
# The GPU check: one prepared command for a machine with an NVIDIA Hopper GPU. It builds the CUDA
# targets (or takes the prebuilt bundle of scripts/pack_gpu_check.sh), runs every GPU test (each
# CUDA op against its CPU reference, LinearGemm on the GPU, the dense model's forward and
# backward and a whole train.device: cuda run against the CPU's, the caching allocator, the NCCL
# communicator on one rank), then the benchmarks, and prints a compact table last. About 5 minutes on one H200 from
# a clean checkout (16 cores), 2 from a bundle.
#
#   scripts/gpu_check.sh                  build in build-gpu/ (installs packages with setup.sh)
#   scripts/gpu_check.sh --bundle DIR     run the binaries of a bundle (no compiler needed); DIR may
#                                         be the bundle's .tar.xz
#   OUT=dir scripts/gpu_check.sh          also write the full logs under dir
#   BENCH_ARGS=--quick, BENCH_TIMEOUT=s, TEST_TIMEOUT=s   smaller benchmarks; per-binary time limits
#
# Exit status: 0 only when every GPU test ran and passed (a skipped GPU test on a GPU machine is a
# failure: it means the binary did not see the device) and the benchmark ran.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
bundle=""
if [ "${1:-}" = --bundle ]; then
  src=${2:?--bundle needs a directory or a .tar.xz from scripts/pack_gpu_check.sh}
  if [ -f "$src" ]; then  # the compressed bundle: unpack next to the logs
    tar -xJf "$src" -C "$out" || { echo "gpu_check: cannot unpack $src" >&2; exit 1; }
    src=$out/$(tar -tJf "$src" | head -1 | cut -d/ -f1)
  fi
  bundle=$(cd "$src" && pwd) || { echo "gpu_check: no bundle at $src" >&2; exit 1; }
fi

say() { echo "gpu_check: $*"; }
fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null && nvidia-smi -L | tee "$out/gpu.txt" || say "nvidia-smi not found"

if [ -n "$bundle" ]; then
  bin=$bundle/bin
  # The bundle carries every library the build machine linked but the CUDA ones: those come from
  # this machine's toolkit (and NCCL from it or from PyTorch's wheel).
  nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib"))' 2>/dev/null || true)
  export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${nccl_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  build=${BUILD_DIR:-$root/build-gpu}
  "$root/scripts/setup.sh" || fail "package setup"
  t0=$(date +%s)
  cmake -S "$root" -B "$build" -DSTRATA_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
        > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; fail "configure"; }
  cmake --build "$build" -j "$(nproc)" --target strata_kernels_tests strata_core_tests strata_model_tests strata_trainer_tests strata_parallel_tests gpu_bench gpu_linear_bench gpu_block_bench gpu_model_bench \
        > "$out/build.log" 2>&1 || { grep -E "error|Error" "$out/build.log" | head -30; fail "build"; }
  say "built in $(( $(date +%s) - t0 )) s"
  bin=$build/tests
  cp "$build/bench/gpu_bench" "$build/bench/gpu_linear_bench" "$build/bench/gpu_block_bench" "$build/bench/gpu_model_bench" "$bin/" 2>/dev/null || true
fi
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-8}
export STRATA_SOURCE_DIR=$root  # the trainer test's configs, wherever the binaries were built
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# Every GPU test: the Cuda* suites (ops, LinearGemm, allocator, casts) and the NCCL communicator.
declare -A result
run_tests() {  # name binary filter
  local name=$1 exe=$2 filter=$3 log=$out/$1.log
  [ -x "$exe" ] || { result[$name]="missing binary $exe"; return 1; }
  timeout "${TEST_TIMEOUT:-300}" "$exe" --gtest_filter="$filter" --gtest_color=no > "$log" 2>&1
  local rc=$?
  local passed failed skipped
  passed=$(grep -c '^\[       OK \]' "$log")
  failed=$(grep -c '^\[  FAILED  \] .*(' "$log")
  skipped=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$log")  # the per-test lines, not the summary
  result[$name]="$passed passed, $failed failed, $skipped skipped"
  grep -E '^\[  FAILED  \]|: Failure$|rel_err|CHECK failed' "$log" | head -20
  [ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$skipped" -eq 0 ]
}
status=0
t0=$(date +%s)
run_tests kernels "$bin/strata_kernels_tests" 'Cuda*:*Cuda*' || status=1
run_tests core "$bin/strata_core_tests" 'Caching*' || status=1
run_tests model "$bin/strata_model_tests" 'Cuda*' || status=1
run_tests trainer "$bin/strata_trainer_tests" 'Cuda*' || status=1
# The NCCL tests initialise MPI as a singleton, which Open MPI does through its orted: a bundle on
# a machine without Open MPI cannot run them, and says so.
if command -v orted >/dev/null || command -v mpirun >/dev/null; then
  run_tests nccl "$bin/strata_parallel_tests" 'NcclCommunicator.*:-NcclCommunicator.RefusesWithoutAGpuSayingWhy' || status=1
else
  result[nccl]="not run: no Open MPI on this machine (orted/mpirun missing)"
fi
say "tests took $(( $(date +%s) - t0 )) s"

t0=$(date +%s)
# Each benchmark is cut at BENCH_TIMEOUT seconds (exit 124: said, and the table keeps the rest).
: > "$out/bench.txt"
for b in gpu_bench gpu_linear_bench gpu_block_bench gpu_model_bench; do
  timeout "${BENCH_TIMEOUT:-240}" "$bin/$b" ${BENCH_ARGS:-} >> "$out/bench.txt" 2>&1 || { status=1; say "$b failed (exit $?)"; }
done
say "benchmark took $(( $(date +%s) - t0 )) s"

echo
echo "==================== Strata GPU check ===================="
head -1 "$out/gpu.txt" 2>/dev/null || true
for k in kernels core model trainer nccl; do printf '  tests %-8s %s\n' "$k" "${result[$k]:-not run}"; done
grep -E '^(gemm|linear|block|model) ' "$out/bench.txt" | sed 's/^/  /'
[ $status -eq 0 ] && echo "  result   PASS" || echo "  result   FAIL (logs in $out)"
exit $status
