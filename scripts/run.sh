#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the best experiment Strata has today:
# SFT of a tiny model on 3-digit addition and subtraction with worked traces
# (configs/sft_arithmetic_tiny.yaml, ~6-9 minutes on 2 cores), then scores it on 500 held-out
# problems with `strata eval`. The planned quickstart (SFT warm-up, then GRPO on countdown, on a
# tiny MoE over several MPI ranks) replaces it when GRPO (#6) and the MPI layouts (#7, #8) land.
#
#   scripts/run.sh                  # the experiment; results under runs/sft_arithmetic_tiny/
#   RUN_CONFIG=configs/sft_arithmetic_tiny_moe.yaml scripts/run.sh   # the MoE variant
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
config=${RUN_CONFIG:-configs/sft_arithmetic_tiny.yaml}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$root"
name=$(basename "$config" .yaml)
run="runs/$name"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}

echo "run: training $config (resumes from $run/checkpoints/latest if a previous run stopped)"
start=$(date +%s)
"$build/strata" train "$config"
train_s=$(( $(date +%s) - start ))
echo "run: evaluating on 500 held-out problems"
"$build/strata" eval "$run" --task arithmetic --n 500 --out "$run/eval_completions.jsonl" | tee "$run/eval.txt"
if python3 -c "import matplotlib" 2>/dev/null; then
  python3 scripts/plot_metrics.py "$run" || true
fi
cat <<MSG

run: what ran: SFT of $config for the steps it sets ($train_s s of training here), then greedy
     evaluation on 500 held-out problems. GRPO (#6) and multi-rank layouts (#7-#9) are not in this
     build yet, so the planned SFT-then-GRPO quickstart on a tiny MoE over MPI ranks is not run.
run: results in $run/: metrics.jsonl (per-step loss, lr, tokens/s, MFU), eval.txt (accuracy),
     eval_completions.jsonl, checkpoints/, rank-00000.log, config.yaml
     try: build/strata generate $run --prompt "Compute 123+456" --temperature 0
MSG
