#!/usr/bin/env bash
# Trains the tiny MoE (configs/tiny_moe_sft.yaml) for the same steps with the same seed in five
# precisions -- fp32, bf16, fp8 blockwise, fp8 tensorwise_delayed, fp8 blockwise with
# cache_activations -- one after the other, then compares them with scripts/compare_precision.py:
# loss.png (loss curves and the smoothed relative gap to fp32) and table.md (final loss, eval loss,
# gaps to fp32 and bf16, step time and its ratio to fp32, tokens/s, memory, activation MB).
# 200 steps take about 6 minutes on 2 idle cores (more while other jobs share them;
# bf16 and fp8 are emulated on the CPU, so they are slower than fp32). The first call also builds
# Strata if build/strata is missing, and makes .venv with matplotlib if python3 has none.
#
#   scripts/compare_precision.sh                      # 200 steps; results in runs/compare_precision/
#   scripts/compare_precision.sh --steps 50           # or STEPS=50; --seed N / SEED=N, --out DIR / OUT_DIR=DIR
#   scripts/compare_precision.sh --table-only         # redo loss.png and table.md from the runs there
#
# Each precision trains from scratch (its run directory is replaced) into <out>/<name>/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
config=configs/tiny_moe_sft.yaml
steps=${STEPS:-200}
seed=${SEED:-1234}
out=${OUT_DIR:-runs/compare_precision}
train=1
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=${2:-}; shift $(( $# > 1 ? 2 : 1 )) ;;
    --seed) seed=${2:-}; shift $(( $# > 1 ? 2 : 1 )) ;;
    --out) out=${2:?compare_precision: --out needs a directory}; shift 2 ;;
    --table-only) train=0; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare_precision: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "compare_precision: --steps must be a positive integer, got $steps" >&2; exit 2; }
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "compare_precision: --seed must be a non-negative integer, got $seed" >&2; exit 2; }
cd "$root"

# One run at a time: 2 BLAS threads (the 2 cores of the project's machines; more do not help GEMMs
# this small), fewer on a 1-core machine, unless OPENBLAS_NUM_THREADS is set already.
cores=$(nproc)
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$(( cores < 2 ? cores : 2 ))}

# name and the --set overrides that make each precision
runs=(
  "fp32|precision.mode=fp32"
  "bf16|precision.mode=bf16"
  "fp8_blockwise|precision.mode=fp8 precision.fp8.recipe=blockwise"
  "fp8_delayed|precision.mode=fp8 precision.fp8.recipe=tensorwise_delayed"
  "fp8_blockwise_cache|precision.mode=fp8 precision.fp8.recipe=blockwise precision.fp8.cache_activations=true"
)

if [ "$train" = 1 ]; then
  if [ ! -x "$build/strata" ]; then
    "$root/scripts/setup.sh"
    "$root/scripts/build.sh"
  fi
  mkdir -p "$out"
  echo "compare_precision: $config, $steps steps, seed $seed, OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS, into $out/"
  all_start=$(date +%s)
  i=0
  for spec in "${runs[@]}"; do
    i=$((i + 1))
    name=${spec%%|*}
    sets=()
    for kv in ${spec#*|}; do sets+=(--set "$kv"); done
    rm -rf "${out:?}/$name"
    mkdir -p "$out/$name"
    log="$out/$name/console.log"
    printf 'compare_precision: [%d/%d] %-20s ' "$i" "${#runs[@]}" "$name"
    start=$(date +%s)
    if ! "$build/strata" train "$config" --resume never \
        --set train.out_dir="$out" --set train.name="$name" --set train.steps="$steps" \
        --set train.seed="$seed" --set checkpoint.every=0 --set log.every=1 "${sets[@]}" > "$log" 2>&1; then
      echo "FAILED"
      tail -n 20 "$log" >&2
      echo "compare_precision: $name failed; its console output is in $log" >&2
      exit 1
    fi
    echo "$(( $(date +%s) - start )) s, $(grep -E '^step ' "$log" | tail -n 1 | cut -d'|' -f2 | xargs)," \
      "load average $(cut -d' ' -f1 /proc/loadavg)"
  done
  echo "compare_precision: trained all five in $(( $(date +%s) - all_start )) s"
fi

# matplotlib: the system python3's if it has one, else .venv (made here, shared with the golden scripts).
py=python3
if ! python3 -c "import matplotlib" 2>/dev/null; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -c "import matplotlib" 2>/dev/null; then
    echo "compare_precision: installing matplotlib into .venv"
    .venv/bin/pip install -q matplotlib || echo "compare_precision: pip install matplotlib failed; writing the table only" >&2
  fi
  py=.venv/bin/python
fi
names=()
for spec in "${runs[@]}"; do names+=("${spec%%|*}"); done
"$py" scripts/compare_precision.py "$out" --runs "${names[@]}"
