#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the quickstart experiment.
# Training (issue #4) and GRPO (issue #6) have not landed yet, so today this runs the best that
# exists: it resolves and validates the quickstart configs (SFT warm-up, then GRPO on countdown)
# and measures the CPU GEMM that training will run on. It says what it ran and where results are.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
out="$root/runs/quickstart"
mkdir -p "$out"
cd "$root"
for cfg in configs/tiny_moe_sft.yaml configs/tiny_moe_grpo_countdown.yaml; do
  name=$(basename "$cfg" .yaml)
  "$build/strata" config print "$cfg" --out "$out/$name.resolved.yaml"
  echo "run: $cfg is valid; resolved config in $out/$name.resolved.yaml"
done
if [ -x "$build/bench/gemm_bench" ]; then
  echo "run: measuring sgemm (OpenBLAS) at training shapes..."
  "$build/bench/gemm_bench" --benchmark_min_time=0.2 --benchmark_out="$out/gemm_bench.json" \
    --benchmark_out_format=json | tee "$out/gemm_bench.txt"
fi
cat <<MSG

run: what ran: config resolution of the quickstart (SFT warm-up, then GRPO on countdown) and the
     sgemm benchmark. Training lands with issue #4 and GRPO with #6; until then 'strata train'
     validates the config and exits 3 saying so.
run: results are in $out/
MSG
