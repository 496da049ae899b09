#!/usr/bin/env bash
# DESIGN.md's layout invariant for data parallelism and ZeRO-1, with its measured tolerance.
#
# For fp32 and fp8 separately: the noise floor is the single process with gradient accumulation 1
# versus 2 (and 4) over the same global batch of 8 (same maths, another summation order), in losses
# over 10 steps and in final weights (tests/cli/ckpt_compare.py: max over tensors of
# ||a - b||_inf / ||a||_inf). The fp32 loss floor must stay under 1e-5. Then dp = 2 and dp = 4
# (oversubscribed on 2 cores), each with and without ZeRO-1, must give the single process's losses
# and final weights to 4x that floor. ZeRO-1's per-rank optimizer bytes (optim_mb) must be 1/dp of
# plain dp's (to 5%, the bucket padding), and `strata plan` predicts each layout's allocator peak
# to 5%. A checkpoint saved at step 5 by dp = 4 (with and without
# ZeRO-1) resumes at dp = 2 and dp = 1 (and with ZeRO switched) and continues the trajectory, to
# the same tolerance, through step 10.
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=${KEEP_TMP:-$(mktemp -d)}; [ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
common=(configs/tiny_dense.yaml --set train.steps=10 --set log.every=1 --set "train.out_dir=$tmp" --set data.seq_len=48
        --set model.max_seq_len=48 --set data.global_batch_size=8 --set train.eval_every=0
        --set checkpoint.keep_last=0 --set checkpoint.every=5)
. "$root/tests/cli/parity_lib.sh"

for precision in fp32 fp8; do
  p=(--set "precision.mode=$precision")
  # One process at gradient accumulation 1, 2 and 4 (micro-batches of 8, 4, 2): the floor is the
  # largest difference between any two (one pair alone understates it: a weight whose gradient is
  # near zero moves by ~lr under Adam whatever its size, so the weight floor is heavy-tailed).
  run "${precision}_accum1" 0 "${p[@]}" --set data.micro_batch_size=8
  run "${precision}_accum2" 0 "${p[@]}" --set data.micro_batch_size=4
  run "${precision}_one" 0 "${p[@]}" --set data.micro_batch_size=2  # the reference: the layouts' micro-batch
  noise_floor 10 "${precision}_accum1" "${precision}_accum2" "${precision}_one"
  tol_loss=$(awk -v f="$floor_loss" 'BEGIN { printf "%.6e", 4 * f }')
  tol_w=$(awk -v f="$floor_w" 'BEGIN { printf "%.6e", 4 * f }')
  [ "$precision" = fp32 ] && { fp32_tol_loss=$tol_loss; fp32_tol_w=$tol_w; }
  echo "$precision noise floor: loss $floor_loss, weights $floor_w (tolerance 4x)"
  if [ "$precision" = fp32 ]; then
    check "the fp32 noise floor is under 1e-5 relative in loss ($floor_loss)" "le $floor_loss 1e-5"
  fi
  for layout in "2 0" "2 1" "4 0" "4 1"; do
    read -r dp zero <<< "$layout"
    name=${precision}_dp${dp}_zero${zero}
    run "$name" "$dp" "${p[@]}" --set data.micro_batch_size=2 --set "parallel.zero=$zero"
    l=$(loss_rel "${precision}_one" "$name" 10); w=$(weight_rel "${precision}_one" "$name")
    echo "$name: loss $l, weights $w"
    check "$name: losses within 4x the floor ($l <= $tol_loss)" "le $l $tol_loss"
    check "$name: final weights within 4x the floor ($w <= $tol_w)" "le $w $tol_w"
  done
  for dp in 2 4; do
    for zero in 0 1; do  # `strata plan` predicts every rank's allocator peak (tensor_peak_mb, rank 0's)
      planned=$("$STRATA" plan "${common[@]}" "${p[@]}" --world "$dp" --set "parallel.dp=$dp" --set "parallel.zero=$zero" \
                --set data.micro_batch_size=2 | awk '/allocator peak/ { print $3 }')
      measured=$(metric "${precision}_dp${dp}_zero${zero}" tensor_peak_mb)
      check "$precision dp=$dp zero=$zero: strata plan's peak ${planned} MB within 5% of the measured ${measured} MB" \
        "awk -v a=${planned:-0} -v b=$measured 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 0.05 * b) }'"
    done
    plain=$(metric "${precision}_dp${dp}_zero0" optim_mb); sharded=$(metric "${precision}_dp${dp}_zero1" optim_mb)
    echo "$precision dp=$dp optimizer state per rank: $plain MB plain, $sharded MB with ZeRO-1"
    check "$precision dp=$dp: ZeRO-1 holds 1/$dp of the optimizer bytes ($sharded vs $plain MB)" \
      "awk -v s=$sharded -v p=$plain -v d=$dp 'BEGIN { r = s * d / p; exit !(r >= 0.999 && r <= 1.05) }'"
  done
done

# Resharded resume (fp32): dp = 4's step-5 checkpoint continues at dp = 2 and dp = 1.
for zero in 0 1; do
  src=fp32_dp4_zero${zero}/checkpoints/step_000005
  for target in "2 0" "2 1" "0 0"; do
    read -r ranks z <<< "$target"
    name=resume_zero${zero}_to_${ranks}_zero${z}
    run "$name" "$ranks" --set data.micro_batch_size=2 --set "parallel.zero=$z" --resume "$tmp/$src"
    l=$(loss_rel fp32_one "$name" 5); w=$(weight_rel fp32_one "$name")
    echo "$name: loss $l (steps 6-10), weights $w"
    check "dp=4 zero=$zero checkpoint resumed on $((ranks > 0 ? ranks : 1)) rank(s) zero=$z: losses of steps 6-10 within 4x the floor ($l)" \
      "le $l $fp32_tol_loss"
    check "dp=4 zero=$zero checkpoint resumed on $((ranks > 0 ? ranks : 1)) rank(s) zero=$z: final weights within 4x the floor ($w)" \
      "le $w $fp32_tol_w"
    check "$name resumed at step 5" "grep -q 'at step 5' $tmp/$name.log"
  done
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
