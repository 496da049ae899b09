#!/usr/bin/env bash
# Pipeline parallelism held to DESIGN.md's layout invariant, with its measured tolerance: a tiny
# 8-block MoE trained 10 steps by one process and by pp = 2 and pp = 4 under every schedule (GPipe,
# 1F1B, interleaved 1F1B with 2 chunks per rank, ZB-H1), in fp32 and fp8, and by dp = 2 x pp = 2 x
# ep = 2 (8 ranks, oversubscribed), gives the same losses and final weights within 4x the noise
# floor (one process at gradient accumulation 1, 2 and 4: the largest difference of any two).
# dp = 2 x pp = 2 overlaps the gradient reduction with the pipeline's drain. Also: tied embeddings (the first and last stage each hold the embedding and sum its gradient),
# an explicit parallel.pipeline.layout, recomputed activations, aux-free bias balancing across stages, the activation peak
# each schedule predicts (rank 0: GPipe holds all m micro-batches, 1F1B p), the held-out loss
# through the pipeline, and a pp = 2 checkpoint resumed at pp = 1 and pp = 4.
# Seed 1: at the config's seed 1234 this small model has a near-tie in one routing choice that
# flips with the micro-batch split, which widens the floor itself 10^4-fold (weights 1.3e-2).
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=${KEEP_TMP:-$(mktemp -d)}; [ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
common=(configs/tiny_moe_sft.yaml --set train.steps=10 --set log.every=1 --set "train.out_dir=$tmp" --set data.seq_len=64
        --set data.task=arithmetic --set data.global_batch_size=16 --set train.eval_every=5 --set checkpoint.keep_last=0
        --set checkpoint.every=5 --set model.moe.aux_loss=seq --set model.n_layers=8 --set model.d_model=64
        --set model.ffn_hidden=192 --set model.moe.expert_ffn_hidden=64 --set train.seed=1)
. "$root/tests/cli/parity_lib.sh"

# layout PREFIX NAME RANKS [args...]: trains at micro-batch 4 and holds it to the floor of PREFIX.
layout() {
  local prefix=$1 name=$2 ranks=$3; shift 3
  run "$name" "$ranks" "$@" --set data.micro_batch_size=4
  local l w; l=$(loss_rel "${prefix}_one" "$name" 10); w=$(weight_rel "${prefix}_one" "$name")
  echo "$name: loss $l, weights $w, bubble $(metric "$name" pp_bubble) (simulated $(metric "$name" pp_bubble_sim))"
  check "$name: losses within 4x the floor ($l <= $tol_loss)" "le $l $tol_loss"
  check "$name: final weights within 4x the floor ($w <= $tol_w)" "le $w $tol_w"
}
schedules=("gpipe" "1f1b" "interleaved_1f1b --set parallel.pipeline.virtual_stages=2" "zb_h1")

floor fp32
check "the fp32 noise floor is under 1e-5 relative in loss (4x: $tol_loss)" "le $tol_loss 4e-5"
for pp in 2 4; do
  for sched in "${schedules[@]}"; do
    # shellcheck disable=SC2086
    layout fp32 "fp32_pp${pp}_${sched%% *}" "$pp" --set "parallel.pp=$pp" --set parallel.pipeline.schedule=$sched
  done
done
el() { grep '"kind":"eval"' "$tmp/$1/metrics.jsonl" | tail -1 | sed -E 's/.*"eval_loss":([^,}]*).*/\1/'; }
e=$(rel "$(el fp32_one)" "$(el fp32_pp4_zb_h1)")
check "the held-out loss through 4 stages equals one process's ($e <= $tol_loss)" "le $e $tol_loss"
check "GPipe holds all 4 micro-batches on rank 0, 1F1B p = 2 of them, interleaved 1F1B (p=2, v=2) 5 chunks" \
  "[ \"\$(metric fp32_pp2_gpipe pp_act_peak)\" = 4.0 ] && [ \"\$(metric fp32_pp2_1f1b pp_act_peak)\" = 2.0 ] && [ \"\$(metric fp32_pp2_interleaved_1f1b pp_act_peak)\" = 5.0 ]"
peak() { metric "$1" tensor_peak_mb; }
check "ZB-H1 holds about 1F1B's memory ($(peak fp32_pp2_zb_h1) vs $(peak fp32_pp2_1f1b) MB), GPipe more ($(peak fp32_pp2_gpipe) MB)" \
  "awk -v z=\$(peak fp32_pp2_zb_h1) -v o=\$(peak fp32_pp2_1f1b) -v g=\$(peak fp32_pp2_gpipe) 'BEGIN { exit !(z <= 1.5 * o && g > o) }'"
check "the stages are balanced by cost and logged" "grep -q 'blocks per stage \[0,4) \[4,8) (balanced by cost)' $tmp/fp32_pp2_1f1b.log"
layout fp32 fp32_pp2_layout 2 --set parallel.pp=2 --set "parallel.pipeline.layout=[3,5]"
# Activations recomputed in the backward (model.recompute: full) instead of kept.
layout fp32 fp32_pp2_recompute 2 --set parallel.pp=2 --set model.recompute=full --set parallel.pipeline.schedule=zb_h1
check "parallel.pipeline.layout sets the split" "grep -q 'blocks per stage \[0,3) \[3,8) (parallel.pipeline.layout)' $tmp/fp32_pp2_layout.log"
# dp = 2 x pp = 2 x ep = 2: expert groups inside each stage, dense gradients over dp.
layout fp32 fp32_dp2_pp2_ep2 8 --set parallel.pp=2 --set parallel.ep=2 --set parallel.pipeline.schedule=1f1b
suffix=zero1 layout fp32 fp32_dp2_pp2_ep2_zero1 8 --set parallel.pp=2 --set parallel.ep=2 --set parallel.zero=1
# dp = 2 x pp = 2 with small buckets: a chunk's buckets start reducing once its last B (W for
# ZB-H1) has run, while the pipeline drains.
layout fp32 fp32_dp2_pp2_zb_overlap 4 --set parallel.pp=2 --set parallel.bucket_mb=0.05 --set parallel.pipeline.schedule=zb_h1
check "dp x pp: bucket reductions start while the pipeline drains ($(metric fp32_dp2_pp2_zb_overlap buckets_overlapped))" \
  "awk -v x=\$(metric fp32_dp2_pp2_zb_overlap buckets_overlapped) 'BEGIN { exit !(x > 0.5) }'"

# Resharded resume: pp = 2's step-5 checkpoint in one process and at pp = 4.
for ranks in 0 4; do
  name=resume_pp2_to_np${ranks}
  extra=(); [ "$ranks" -gt 0 ] && extra=(--set parallel.pp=4)
  run "$name" "$ranks" --set data.micro_batch_size=4 "${extra[@]}" --resume "$tmp/fp32_pp2_1f1b/checkpoints/step_000005"
  l=$(loss_rel fp32_one "$name" 5); w=$(weight_rel fp32_one "$name")
  echo "$name: loss $l (steps 6-10), weights $w"
  check "pp=2 checkpoint resumed on $ranks ranks: steps 6-10 within 4x the floor ($l)" "le $l $tol_loss"
  check "pp=2 checkpoint resumed on $ranks ranks: final weights within 4x the floor ($w)" "le $w $tol_w"
  check "$name resumed at step 5" "grep -q 'at step 5' $tmp/$name.log"
done
check "a pp = 2 checkpoint records its layout" "grep -q '\"pp\": *2' $tmp/fp32_pp2_1f1b/checkpoints/step_000010/manifest.json"

# Tied embeddings: one gradient, summed between the first and the last stage.
tied=(--set model.tie_embeddings=true)
floor tied "${tied[@]}"
layout tied tied_pp2 2 --set parallel.pp=2 "${tied[@]}"
layout tied tied_pp4_interleaved 4 --set parallel.pp=4 --set parallel.pipeline.schedule=interleaved_1f1b \
  --set parallel.pipeline.virtual_stages=2 "${tied[@]}"

# Aux-free bias balancing: every stage updates its blocks' biases from the global loads.
sigmoid=(--set model.arch=glm4_moe --set model.moe.scoring=sigmoid --set model.moe.bias_update_rate=0.001)
floor sigmoid "${sigmoid[@]}"
layout sigmoid sigmoid_pp2 2 --set parallel.pp=2 "${sigmoid[@]}"

floor fp8 --set precision.mode=fp8
for pp in 2 4; do
  for sched in "${schedules[@]}"; do
    # shellcheck disable=SC2086
    layout fp8 "fp8_pp${pp}_${sched%% *}" "$pp" --set precision.mode=fp8 --set "parallel.pp=$pp" \
      --set parallel.pipeline.schedule=$sched
  done
done
layout fp8 fp8_dp2_pp2_ep2 8 --set precision.mode=fp8 --set parallel.pp=2 --set parallel.ep=2

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
