#!/usr/bin/env bash
# GRPO under data parallelism (DESIGN.md's layout invariant): at dp = 2 the ranks sample disjoint
# groups, yet the rollouts (every group, written in one process's order: grpo.samples_groups 0)
# and the first GRPO step equal one process's: the same samples.jsonl for step 1, the step's
# gradient norm and the weights after it within 4x the noise floor (one process at micro-batches of 16, 8 and 4:
# same maths, another summation order). The rewards come from a `command` (so advantages are not
# all zero on a random model), which must run on both ranks (the ones holding the rollouts), once
# per rank. A frozen reference (beta > 0) and two iterations per step exercise the global
# denominators, the KL and the ratio; the held-out evaluation is split over the ranks and gives
# one process's figures. Then the dp = 2 checkpoint resumes in one process. The same at pp = 2
# (rollouts decode through the two stages; only the last stage scores, so the command runs on
# rank 1 alone), and its checkpoint resumes in one process. Last, the tiny MoE under expert
# parallelism (ep = 2, and ep = 2 x edp = 2) and pipelines (pp = 2 with ZB-H1 and interleaved
# 1F1B, dp 2 (ep 2) x pp 2 on 8 ranks) against one process the same way.
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=${KEEP_TMP:-$(mktemp -d)}; [ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
# Reward: the input line's length mod 7, in tenths, logged with the rank that scored it.
cat > "$tmp/reward.sh" <<'EOF'
#!/bin/bash
echo "${OMPI_COMM_WORLD_RANK:-single}" >> "$REWARD_LOG"
while IFS= read -r line; do echo "{\"reward\": 0.$(( ${#line} % 7 ))}"; done
EOF
chmod +x "$tmp/reward.sh"
common=(configs/tiny_dense.yaml --set train.mode=grpo --set train.steps=3 --set checkpoint.every=1
        --set checkpoint.keep_last=0 --set log.every=1 --set "train.out_dir=$tmp" --set train.eval_every=3
        --set grpo.group_size=4 --set grpo.prompts_per_step=4 --set grpo.max_new_tokens=12
        --set grpo.samples_every=1 --set grpo.samples_groups=0 --set grpo.eval_problems=6 --set grpo.eval_samples=2
        --set "grpo.rewards={command: 1.0, format: 0.1}" --set "grpo.reward_command=$tmp/reward.sh"
        --set grpo.beta=0.04 --set grpo.num_iterations=2 --set optim.lr=0.01 --set data.global_batch_size=16)
. "$root/tests/cli/parity_lib.sh"
run() {  # parity_lib's, with the reward command's log per run
  local name=$1 ranks=$2; shift 2
  local launcher=(); [ "$ranks" -gt 0 ] && launcher=(mpirun -np "$ranks")
  REWARD_LOG=$tmp/$name.rewards timeout 300 "${launcher[@]}" "$STRATA" train "${common[@]}" --set "train.name=$name" "$@" \
    > "$tmp/$name.log" 2>&1 || { echo "run $name failed:"; cat "$tmp/$name.log"; exit 1; }
}
# The first step's gradient norm (its loss is ~0 by construction: ratio 1, advantages of zero mean).
step_gnorm() { grep '"kind":"train"' "$tmp/$1/metrics.jsonl" | grep "\"step\":$2[,}]" | sed -E 's/.*"grad_norm":([^,}]*).*/\1/'; }
weight1() { weight_rel "$1" "$2" 1; }
step1() { grep '"step":1,' "$tmp/$1/samples.jsonl"; }
# floor PREFIX: one process at micro-batches of 4 (PREFIXone, the reference), 8 and 16; sets
# floor_g and floor_w to the largest first-step difference of any two.
floor() {
  local a b
  run "${1}one" 0 --set data.micro_batch_size=4
  run "${1}mb8" 0 --set data.micro_batch_size=8
  run "${1}mb16" 0 --set data.micro_batch_size=16
  floor_g=0; floor_w=0
  for pair in "one mb8" "one mb16" "mb8 mb16"; do
    read -r a b <<< "$pair"
    floor_g=$(max "$floor_g" "$(rel "$(step_gnorm "$1$a" 1)" "$(step_gnorm "$1$b" 1)")")
    floor_w=$(max "$floor_w" "$(weight1 "$1$a" "$1$b")")
  done
}

floor ""
run two 2 --set data.micro_batch_size=4
l=$(rel "$(step_gnorm one 1)" "$(step_gnorm two 1)"); w=$(weight1 one two)
echo "noise floor of the first step: grad norm $floor_g, weights $floor_w; dp=2: grad norm $l, weights $w"
echo "first step grad norm: $(step_gnorm one 1) (one process), $(step_gnorm two 1) (dp=2)"

check "the first step learns something (non-zero gradient)" "awk -v x=$(step_gnorm one 1) 'BEGIN { exit !(x != 0) }'"
check "dp=2 rollouts of step 1 equal one process's ($(step1 two | wc -l) samples)" \
  "[ \$(step1 one | wc -l) -eq 16 ] && [ \"\$(step1 one)\" = \"\$(step1 two)\" ]"
check "dp=2 first-step gradient norm within 4x the floor ($l)" "le $l \$(awk -v f=$floor_g 'BEGIN { print 4 * f }')"
check "dp=2 weights after the first step within 4x the floor ($w)" "le $w \$(awk -v f=$floor_w 'BEGIN { print 4 * f }')"
check "the reward command ran once on each of the two ranks" \
  "[ \"\$(sort $tmp/two.rewards | tr '\n' ' ')\" = '0 1 ' ]"
e1=$(grep '"kind":"eval"' "$tmp/one/metrics.jsonl" | tail -1 | sed -E 's/.*"eval_reward":([^,}]*).*/\1/')
e2=$(grep '"kind":"eval"' "$tmp/two/metrics.jsonl" | tail -1 | sed -E 's/.*"eval_reward":([^,}]*).*/\1/')
check "the held-out evaluation split over ranks gives one process's mean reward ($e1 vs $e2)" "le \$(rel $e1 $e2) 1e-3"
check "rank 0 alone prints the step lines" "[ \$(grep -c '^step' $tmp/two.log) -eq 3 ]"
# The dp = 2 run's step-1 checkpoint continues in one process.
run resumed 0 --set data.micro_batch_size=4 --resume "$tmp/two/checkpoints/step_000001"
check "the dp=2 checkpoint resumes in one process at step 1" "grep -q 'at step 1' $tmp/resumed.log"
check "... and continues with 2 more steps" "[ \$(grep -c '\"kind\":\"train\"' $tmp/resumed/metrics.jsonl) -eq 2 ]"

# Pipeline parallelism: two stages of one block each.
run pp2 2 --set data.micro_batch_size=4 --set parallel.pp=2
l=$(rel "$(step_gnorm one 1)" "$(step_gnorm pp2 1)"); w=$(weight1 one pp2)
echo "pp=2: grad norm $l, weights $w"
check "pp=2 rollouts of step 1 equal one process's" "[ \"\$(step1 one)\" = \"\$(step1 pp2)\" ] && [ \$(step1 pp2 | wc -l) -eq 16 ]"
check "pp=2 first-step gradient norm within 4x the floor ($l)" "le $l \$(awk -v f=$floor_g 'BEGIN { print 4 * f }')"
check "pp=2 weights after the first step within 4x the floor ($w)" "le $w \$(awk -v f=$floor_w 'BEGIN { print 4 * f }')"
check "pp=2: the reward command ran on the last stage only" "[ \"\$(sort -u $tmp/pp2.rewards | tr '\n' ' ')\" = '1 ' ]"
e3=$(grep '"kind":"eval"' "$tmp/pp2/metrics.jsonl" | tail -1 | sed -E 's/.*"eval_reward":([^,}]*).*/\1/')
check "pp=2 held-out evaluation through the stages gives one process's mean reward ($e1 vs $e3)" "le \$(rel $e1 $e3) 1e-3"
run pp2_resumed 0 --set data.micro_batch_size=4 --resume "$tmp/pp2/checkpoints/step_000001"
check "the pp=2 checkpoint (with the reference policy) resumes in one process" "grep -q 'at step 1' $tmp/pp2_resumed.log"

# The same on the tiny MoE with expert parallelism: ep = 2 (dp = 2) and ep = 2 x edp = 2 (dp = 4,
# oversubscribed) decode in lockstep over the expert group and give one process's step-1
# rollouts and first step; the held-out set of 5 problems leaves ranks unequal (padded).
common[0]=configs/tiny_moe_sft.yaml
common+=(--set data.task=arithmetic --set model.moe.aux_loss=seq --set grpo.eval_problems=5 --set optim.warmup_steps=0)
floor moe_
echo "MoE noise floor of the first step: grad norm $floor_g, weights $floor_w"
for layout in "2 2 1" "4 2 1" "2 1 2 zb_h1" "2 1 2 interleaved_1f1b" "8 2 2 1f1b"; do
  read -r ranks ep pp sched <<< "$layout"
  name=moe_np${ranks}_ep${ep}${sched:+_pp${pp}_$sched}
  extra=(); [ "$pp" -gt 1 ] && extra=(--set "parallel.pp=$pp" --set "parallel.pipeline.schedule=$sched")
  [ "${sched:-}" = interleaved_1f1b ] && extra+=(--set parallel.pipeline.virtual_stages=2)
  run "$name" "$ranks" --set data.micro_batch_size=4 --set "parallel.ep=$ep" "${extra[@]}"
  l=$(rel "$(step_gnorm moe_one 1)" "$(step_gnorm "$name" 1)"); w=$(weight1 moe_one "$name")
  echo "$name: grad norm $l, weights $w"
  check "$name: step-1 rollouts equal one process's" "[ \"\$(step1 moe_one)\" = \"\$(step1 $name)\" ] && [ \$(step1 $name | wc -l) -eq 16 ]"
  check "$name: first-step gradient norm within 4x the floor ($l)" "le $l \$(awk -v f=$floor_g 'BEGIN { print 4 * f }')"
  check "$name: weights after the first step within 4x the floor ($w)" "le $w \$(awk -v f=$floor_w 'BEGIN { print 4 * f }')"
  check "$name: the padded held-out evaluation gives one process's reward" \
    "le \$(rel \$(grep '\"kind\":\"eval\"' $tmp/moe_one/metrics.jsonl | tail -1 | sed -E 's/.*\"eval_reward\":([^,}]*).*/\1/') \$(grep '\"kind\":\"eval\"' $tmp/$name/metrics.jsonl | tail -1 | sed -E 's/.*\"eval_reward\":([^,}]*).*/\1/')) 1e-3"
done

# Dynamic sampling drops zero-spread groups, so the ranks of ep = 2 end up with different numbers
# of micro-batches (one row each): the shorter one pads with empty micro-batches to keep the
# all-to-alls matched, and three steps still equal one process within 4x the floor of one process
# at micro-batches of 1, 2 and 4.
pad=(--set grpo.group_size=2 --set grpo.dynamic_sampling=true --set grpo.max_sampling_rounds=1 --set train.steps=3
     --set train.eval_every=0)
run pad_mb1 0 "${pad[@]}" --set data.micro_batch_size=1
run pad_mb2 0 "${pad[@]}" --set data.micro_batch_size=2
run pad_mb4 0 "${pad[@]}" --set data.micro_batch_size=4
run pad_ep2 2 "${pad[@]}" --set data.micro_batch_size=1 --set parallel.ep=2
floor_l=$(max "$(loss_rel pad_mb1 pad_mb2 3)" "$(max "$(loss_rel pad_mb1 pad_mb4 3)" "$(loss_rel pad_mb2 pad_mb4 3)")")
l=$(loss_rel pad_mb1 pad_ep2 3)
echo "dynamic sampling at ep=2: loss $l (floor $floor_l), zero-spread groups $(grep -o '"zero_spread":[0-9.]*' $tmp/pad_ep2/metrics.jsonl | cut -d: -f2 | tr '\n' ' ')"
check "dynamic sampling filtered some group (so the ranks' micro-batch counts can differ)" \
  "grep -q '\"zero_spread\":0\.[1-9]' $tmp/pad_ep2/metrics.jsonl"
check "dynamic sampling at ep=2 (padded micro-batches): 3 steps within 4x the floor ($l)" \
  "le $l \$(awk -v f=$floor_l 'BEGIN { print 4 * f }')"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
