#!/usr/bin/env bash
# The CLI contract: --help everywhere, one-line errors with exit 2 for unknown commands, flags and
# bad overrides, exit 3 (and a plain message) for capabilities that have not landed, and a resolved
# config that loads back to itself. Also checks that the README documents every config key.
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0

# expect NAME RC PATTERN CMD...: exit code RC and combined output matching the grep -E PATTERN.
expect() {
  local name=$1 want_rc=$2 pattern=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -eq "$want_rc" ] && printf '%s' "$out" | grep -qE -- "$pattern"; then
    pass=$((pass + 1))
  else
    echo "FAIL: $name: exit $rc (want $want_rc); output:"; printf '%s\n' "$out" | head -n 5
    fail=$((fail + 1))
  fi
}
# one_line NAME CMD...: exit 2 and exactly one line on stderr.
one_line() {
  local name=$1; shift
  local err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  if [ "$rc" -eq 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ]; then
    pass=$((pass + 1))
  else
    echo "FAIL: $name: exit $rc, stderr:"; printf '%s\n' "$err" | head -n 5
    fail=$((fail + 1))
  fi
}

expect help 0 "train" "$STRATA" --help
for sub in train plan generate eval export data config; do
  expect "help $sub" 0 "Usage|usage" "$STRATA" $sub --help
done
expect version 0 "^0\.1\.0" "$STRATA" --version
one_line "unknown command" "$STRATA" trian configs/tiny_dense.yaml
expect "unknown command suggests" 2 "did you mean train\?" "$STRATA" trian
one_line "unknown flag" "$STRATA" train configs/tiny_dense.yaml --bogus
one_line "no command" "$STRATA"
one_line "missing config" "$STRATA" config check
one_line "bad --set" "$STRATA" config check configs/tiny_dense.yaml --set optim.lr=fast
expect "bad --set message" 2 "^--set optim.lr=fast: optim.lr: expected a finite number" \
  "$STRATA" config check configs/tiny_dense.yaml --set optim.lr=fast
expect "missing file" 2 "nope.yaml: cannot open config file" "$STRATA" config check nope.yaml

for f in configs/*.yaml; do
  expect "check $f" 0 ": OK$" "$STRATA" config check "$f"
done

# Not landed yet: plain message, exit 3.
expect "a layout the job does not have" 2 "parallel.dp: pp x dp = 1 x 2 = 2 ranks, but the job has 1" \
  "$STRATA" train configs/tiny_moe_grpo_countdown.yaml
expect "fp8 dispatch needs MoE" 2 "parallel.dispatch_fp8: needs an MoE model" \
  "$STRATA" train configs/tiny_dense.yaml --set parallel.dispatch_fp8=true
expect "tensorboard not written yet" 3 "log.tensorboard: TensorBoard event files are not written yet" \
  "$STRATA" train configs/tiny_dense.yaml --set log.tensorboard=true
# train.device: cuda. A CUDA build refuses MoE models and GRPO on every machine (exit 3) and trains
# a dense model where a GPU is; elsewhere it says why (no device: exit 1). A build without CUDA
# refuses the key in the config check (exit 2).
if "$STRATA" train configs/tiny_dense.yaml --set train.device=cuda --dry-run >/dev/null 2>&1; then
  expect "gpu moe refused" 3 "train.device: cuda: MoE models run on the CPU only so far" \
    "$STRATA" train configs/tiny_moe_sft.yaml --set train.device=cuda
  expect "gpu grpo refused" 3 "train.device: cuda: GRPO runs on the CPU only so far" \
    "$STRATA" train configs/tiny_moe_grpo_countdown.yaml --set train.device=cuda
  if ! command -v nvidia-smi >/dev/null; then
    expect "gpu training without a GPU" 1 "train.device: cuda: no CUDA device" \
      "$STRATA" train configs/tiny_dense.yaml --set train.device=cuda --set "train.out_dir=$tmp"
  fi
else
  expect "gpu refused without CUDA" 2 "built without CUDA" "$STRATA" train configs/tiny_dense.yaml --set train.device=cuda
fi
# strata plan: layout, per-rank memory and communication from the config alone; bad layouts exit 2.
expect "plan dp=2" 0 "world 2 = pp 1 x dp 2" "$STRATA" plan configs/tiny_dense.yaml --world 2 --set parallel.dp=2
expect "plan memory figures" 0 "allocator peak +[0-9]+\.[0-9]+ MB" \
  "$STRATA" plan configs/tiny_dense.yaml --world 2 --set parallel.dp=2
expect "plan comm volume" 0 "gradient all-reduce +[0-9.]+ [KMG]?B" \
  "$STRATA" plan configs/tiny_dense.yaml --world 2 --set parallel.dp=2
expect "plan bad --world" 2 "^strata plan: parallel.dp: pp x dp = 1 x 2 = 2 ranks, but the job has 3" \
  "$STRATA" plan configs/tiny_dense.yaml --world 3 --set parallel.dp=2
one_line "plan --world 0" "$STRATA" plan configs/tiny_dense.yaml --world 0
expect "plan missing config" 2 "nope.yaml: cannot open config file" "$STRATA" plan nope.yaml
# Pipeline plans: stages, schedule and timeline; layouts the pipeline cannot run exit 2 naming the key.
pp=(configs/tiny_moe_sft.yaml --world 2 --set parallel.pp=2 --set model.moe.aux_loss=seq)
expect "plan pp=2 stages" 0 "stage 1: blocks \[2,4\) \+ head" "$STRATA" plan "${pp[@]}"
expect "plan pp=2 timeline" 0 "^rank 1 \|" "$STRATA" plan "${pp[@]}" --set parallel.pipeline.schedule=zb_h1
expect "plan pp layout sum" 2 "parallel.pipeline.layout: assigns 5 blocks but model.n_layers=4" \
  "$STRATA" plan "${pp[@]}" --set "parallel.pipeline.layout=[2,3]"
expect "plan pp too deep" 2 "parallel.pp: pp x virtual_stages = 6 stages for only n_layers=4 blocks" \
  "$STRATA" plan "${pp[@]}" --set parallel.pipeline.schedule=interleaved_1f1b --set parallel.pipeline.virtual_stages=3
expect "plan pp switch aux loss" 2 "model.moe.aux_loss: switch is one loss over every MoE block" \
  "$STRATA" plan "${pp[@]}" --set model.moe.aux_loss=switch
expect "plan pp micro_batches" 2 "parallel.pipeline.micro_batches: 3 but data.global_batch_size" \
  "$STRATA" plan "${pp[@]}" --set parallel.pipeline.micro_batches=3
expect "plan interleaved m" 2 "interleaved_1f1b needs the micro-batches per pipeline .* = 1\) to be a multiple of pp = 2" \
  "$STRATA" plan "${pp[@]}" --set parallel.pipeline.schedule=interleaved_1f1b --set parallel.pipeline.virtual_stages=2 \
  --set data.micro_batch_size=16
expect "plan dualpipev" 2 "dualpipev is not implemented" "$STRATA" plan "${pp[@]}" --set parallel.pipeline.schedule=dualpipev

# scripts/launch.sh: the mpirun line it would run (--show), with the flags ranks sharing cores need.
cores=$(nproc)
expect "launch.sh oversubscribed" 0 "mpirun -np $((cores + 2)) .*--oversubscribe.* $STRATA train configs/tiny_dense.yaml" \
  env -u OPENBLAS_NUM_THREADS STRATA="$STRATA" scripts/launch.sh -n $((cores + 2)) --show -- train configs/tiny_dense.yaml
expect "launch.sh one BLAS thread per rank" 0 "OPENBLAS_NUM_THREADS=1 " \
  env -u OPENBLAS_NUM_THREADS STRATA="$STRATA" scripts/launch.sh -n "$cores" --show -- train configs/tiny_dense.yaml
expect "launch.sh needs -n" 2 "launch: -n RANKS is required" env STRATA="$STRATA" scripts/launch.sh -- train x
expect "launch.sh bad hostfile" 2 "launch: --hostfile nope.txt: cannot read it" \
  env STRATA="$STRATA" scripts/launch.sh -n 2 --hostfile nope.txt -- train x
expect "export without a checkpoint" 2 "^strata export: .*nope" "$STRATA" export nope --out "$tmp/x"
expect "train --dry-run" 0 "^train:" "$STRATA" train configs/tiny_moe_sft.yaml --dry-run --set optim.lr=0.01
expect "generate without a checkpoint" 2 "nope" "$STRATA" generate nope --prompt-ids 1
expect "generate text prompt needs a tokenizer" 2 "has no tokenizer.json" "$STRATA" generate hf:tests/golden/models/llama --prompt hi
one_line "generate bad ids" "$STRATA" generate hf:tests/golden/models/llama --prompt-ids "1 x"
one_line "generate id outside vocab" "$STRATA" generate hf:tests/golden/models/llama --prompt-ids "1 999"
# Greedy decoding of an imported Hugging Face model: 2 samples, 5 tokens each, identical.
out=$("$STRATA" generate hf:tests/golden/models/qwen3_moe --prompt-ids "1 2 3" --max-new-tokens 5 --temperature 0 --n 2 2>/dev/null)
if [ "$(printf '%s\n' "$out" | wc -l)" -eq 2 ] && [ "$(printf '%s\n' "$out" | sort -u | wc -l)" -eq 1 ] \
   && [ "$(printf '%s\n' "$out" | head -n1 | wc -w)" -eq 5 ]; then pass=$((pass + 1)); else
  echo "FAIL: greedy generate from hf: gave: $out"; fail=$((fail + 1)); fi

# --logits-out: the prompt's logits at every position (what scripts/check_hf_export.py compares).
"$STRATA" generate hf:tests/golden/models/qwen3_moe --prompt-ids "1 2 3" --max-new-tokens 2 --temperature 0 \
  --logits-out "$tmp/logits.json" >/dev/null 2>&1
if python3 -c "import json,sys; j=json.load(open('$tmp/logits.json')); sys.exit(not (j['ids']==[1,2,3] and len(j['logits'])==3 and all(len(r)==64 for r in j['logits'])))"; then
  pass=$((pass + 1)); else echo "FAIL: generate --logits-out"; fail=$((fail + 1)); fi

# data gen writes the requested examples, train and eval disjoint.
"$STRATA" data gen arithmetic --n 50 --out "$tmp/tr.jsonl" >/dev/null && "$STRATA" data gen arithmetic --n 50 --split eval --out "$tmp/ev.jsonl" >/dev/null
if [ "$(wc -l < "$tmp/tr.jsonl")" -eq 50 ] && [ -z "$(comm -12 <(grep -o '"prompt":"[^"]*"' "$tmp/tr.jsonl" | sort) <(grep -o '"prompt":"[^"]*"' "$tmp/ev.jsonl" | sort))" ]; then
  pass=$((pass + 1)); else echo "FAIL: data gen"; fail=$((fail + 1)); fi
expect "data gen bad task" 2 "" "$STRATA" data gen sudoku --out "$tmp/x.jsonl"
expect "data tokenize" 0 "" "$STRATA" data tokenize --input "$tmp/tr.jsonl" --out "$tmp/shards"
if ls "$tmp/shards"/tokens-*.bin >/dev/null 2>&1; then pass=$((pass + 1)); else echo "FAIL: no shards written"; fail=$((fail + 1)); fi

# NaN/Inf in the loss or gradients: stop names the step; skip goes on without updating.
nan=(configs/tiny_dense.yaml --set optim.lr=1e25 --set optim.grad_clip=0 --set train.steps=3 --set "train.out_dir=$tmp"
     --set log.every=1 --set data.seq_len=48 --set model.max_seq_len=48)
expect "nan_policy stop" 1 "step 1: non-finite loss or gradients" "$STRATA" train "${nan[@]}" --set train.nan_policy=stop --set train.name=nanstop
expect "nan_policy skip" 0 "skipping the update" "$STRATA" train "${nan[@]}" --set train.nan_policy=skip --set train.name=nanskip
# In fp8 an Inf is never saturated away: the operand that met it first is named.
expect "fp8 non-finite operand" 1 "non-finite values \([0-9]+\) in an fp8 operand, first in layers\.[0-9]+\.[a-z_.]+: [a-z_]+ of (forward|backward_input|backward_weight)" \
  "$STRATA" train "${nan[@]}" --set train.nan_policy=stop --set train.name=nanfp8 --set precision.mode=fp8

# Resolved config round trip through files, with overrides applied.
"$STRATA" config print configs/tiny_moe_grpo_countdown.yaml --set grpo.beta=0.04 --out "$tmp/a.yaml"
"$STRATA" config print "$tmp/a.yaml" --out "$tmp/b.yaml"
if cmp -s "$tmp/a.yaml" "$tmp/b.yaml" && grep -q "beta: 0.04" "$tmp/a.yaml"; then pass=$((pass + 1)); else
  echo "FAIL: resolved config does not round-trip"; diff "$tmp/a.yaml" "$tmp/b.yaml" | head; fail=$((fail + 1)); fi

# The README's config reference is the generated one.
"$STRATA" config docs > "$tmp/docs.md"
missing=$(grep -oE '^\| `[a-z0-9_.]+`' "$tmp/docs.md" | sed 's/^| //' | while read -r key; do
  grep -qF -- "$key" README.md || echo "$key"; done)
if [ -z "$missing" ]; then pass=$((pass + 1)); else
  echo "FAIL: README.md lacks config keys (regenerate with strata config docs):"; echo "$missing" | head; fail=$((fail + 1)); fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
