#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the quickstart experiment, DeepSeek-R1's
# recipe in miniature on a tiny Qwen3-style MoE (1.9M parameters, 8 experts, top-2):
#   1. SFT warm-up (configs/quickstart_sft.yaml, ~5 minutes on 2 cores) on 3-digit addition and
#      subtraction with worked traces from an imperfect teacher that forgets carries in 60% of its
#      traces; trained to a plateau (held-out accuracy of its last two checkpoints is printed).
#   2. GRPO (configs/quickstart_grpo.yaml, ~6 minutes) from that checkpoint on the exact-answer
#      verifier: the model samples its own rollouts and learns which carries to keep.
#   3. `strata eval` of both on 500 held-out problems (greedy accuracy, and pass@1 / pass@8 from 8
#      samples), answers scored leniently on the answer alone, so format learning does not count.
# Training runs on RANKS MPI ranks (default 2, one BLAS thread each, through scripts/launch.sh),
# data-parallel with the MoE experts split over them (dp = 2 x ep = 2: each rank holds 4 of the 8
# experts of every layer and tokens travel to their experts by all-to-all); it gives the
# single-process result (tests/cli/dp_parity_test.sh, ep_parity_test.sh). EP=1 keeps every
# expert on every rank; RANKS=1 trains in one process with two BLAS threads.
#
#   scripts/run.sh            # results under runs/quickstart_sft/ and runs/quickstart_grpo/
#   RANKS=1 scripts/run.sh    # the same in one process
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$root"
ranks=${RANKS:-2}
ep=${EP:-$ranks}  # experts split over the ranks (must divide 8 and the rank count)
user_threads=${OPENBLAS_NUM_THREADS:-}  # unset: launch.sh gives each rank its share of the cores
sft=runs/quickstart_sft
grpo=runs/quickstart_grpo

train() {  # config
  if [ "$ranks" -gt 1 ]; then
    local threads=(-u OPENBLAS_NUM_THREADS); [ -n "$user_threads" ] && threads=("OPENBLAS_NUM_THREADS=$user_threads")
    env "${threads[@]}" BUILD_DIR="$build" MPIRUN_ARGS="${MPIRUN_ARGS:---mca btl self,vader}" \
      "$root/scripts/launch.sh" -n "$ranks" -- train "$1" --set "parallel.ep=$ep"
  else
    "$build/strata" train "$1"
  fi
}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}  # evaluation runs in one process
evaluate() {  # checkpoint, output prefix
  "$build/strata" eval "$1" --task arithmetic --n 500 --out "$2_greedy.jsonl" | tee "$2_greedy.txt"
  "$build/strata" eval "$1" --task arithmetic --n 500 --samples 8 --temperature 1 | tee "$2_sampled.txt"
}
accuracy() { grep -o 'accuracy [0-9.]*%' "$1" | cut -d' ' -f2; }
pass() { grep -o "pass@$2 [0-9.]*%" "$1" | cut -d' ' -f2; }

echo "run: 1/3 SFT warm-up (configs/quickstart_sft.yaml on $ranks rank(s), ep $ep; resumes if a previous run stopped)"
start=$(date +%s)
train configs/quickstart_sft.yaml
sft_s=$(( $(date +%s) - start ))
# The plateau: the last two checkpoints score the same on held-out problems.
prev=$(ls -d "$sft"/checkpoints/step_* | sort | tail -2 | head -1)
"$build/strata" eval "$prev" --task arithmetic --n 500 > "$sft/eval_previous.txt"
evaluate "$sft" "$sft/eval"

echo "run: 2/3 GRPO from the SFT checkpoint (configs/quickstart_grpo.yaml on $ranks rank(s), ep $ep)"
start=$(date +%s)
train configs/quickstart_grpo.yaml
grpo_s=$(( $(date +%s) - start ))
echo "run: 3/3 evaluating the GRPO model"
evaluate "$grpo" "$grpo/eval"
if python3 -c "import matplotlib" 2>/dev/null; then
  python3 scripts/plot_metrics.py "$grpo" || true
fi

cat <<MSG

run: held-out answer accuracy on 500 problems (greedy; pass@k from 8 samples at temperature 1)
     SFT  $(basename "$prev"): $(accuracy "$sft/eval_previous.txt")   final: $(accuracy "$sft/eval_greedy.txt")   pass@1 $(pass "$sft/eval_sampled.txt" 1)  pass@8 $(pass "$sft/eval_sampled.txt" 8)   (${sft_s} s)
     GRPO final: $(accuracy "$grpo/eval_greedy.txt")   pass@1 $(pass "$grpo/eval_sampled.txt" 1)  pass@8 $(pass "$grpo/eval_sampled.txt" 8)   (${grpo_s} s)
run: results in $sft/ and $grpo/: metrics.jsonl (per-step loss, reward, accuracy, KL, entropy,
     rollout tokens/s, MFU), samples.jsonl (what the model wrote, with rewards), eval_*.txt,
     eval_greedy.jsonl (every held-out completion), checkpoints/, rank-00000.log, config.yaml
     plot: python3 scripts/plot_metrics.py $grpo      try: build/strata generate $grpo --prompt "Compute 347+589" --temperature 0
MSG
