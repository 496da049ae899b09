#!/usr/bin/env bash
# Hugging Face interop for every supported architecture (scripts/test.sh --interop runs it with
# the pinned packages installed): a tiny random model of each architecture trains 3 steps under
# mpirun (MoE ones at pp 2 x dp 4 with ep 2 on 8 ranks, dense ones at pp 2 x dp 2 on 4 ranks),
# `strata export` writes it in Hugging Face form (fp32, and bf16 for one of them), and
# scripts/check_hf_export.py loads it with transformers and compares logits and greedy tokens
# with Strata's own forward of the export.
#
#   PYTHON=.venv/bin/python STRATA=build/strata scripts/interop_check.sh [ARCH...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA:-$root/build/strata}
python=${PYTHON:-python3}
out=${OUT:-$(mktemp -d)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_mpi_yield_when_idle=1 OPENBLAS_NUM_THREADS=1

dense=(configs/tiny_dense.yaml --set model.vocab_size=128)
moe=(configs/tiny_moe_sft.yaml --set data.task=arithmetic --set model.moe.aux_loss=seq --set model.d_model=64
     --set model.ffn_hidden=128 --set model.moe.expert_ffn_hidden=64)
declare -A model=(
  [llama]="${dense[*]} --set model.arch=llama"
  [qwen2]="${dense[*]} --set model.arch=qwen2 --set model.qkv_bias=true"
  [qwen3]="${dense[*]} --set model.arch=qwen3 --set model.qk_norm=true --set model.tie_embeddings=true"
  [mixtral]="${moe[*]} --set model.arch=mixtral --set model.qk_norm=false --set model.moe.expert_ffn_hidden=128"
  [qwen2_moe]="${moe[*]} --set model.arch=qwen2_moe --set model.qk_norm=false --set model.qkv_bias=true --set model.moe.n_shared_experts=1 --set model.moe.shared_expert_gate=true --set model.moe.norm_topk_prob=false"
  [qwen3_moe]="${moe[*]} --set model.arch=qwen3_moe"
  [glm4_moe]="${moe[*]} --set model.arch=glm4_moe --set model.qk_norm=false --set model.moe.scoring=sigmoid --set model.moe.n_shared_experts=1 --set model.moe.first_k_dense=1 --set model.moe.n_group=2 --set model.moe.topk_group=1 --set model.moe.routed_scaling_factor=2.5 --set model.moe.bias_update_rate=0.001"
)
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(llama qwen2 qwen3 mixtral qwen2_moe qwen3_moe glm4_moe)
cd "$root"
fail=0
for arch in "${archs[@]}"; do
  # shellcheck disable=SC2206
  cfg=(${model[$arch]})
  case "$arch" in
    llama | qwen2 | qwen3) ranks=4 layout=(--set parallel.pp=2) ;;
    *) ranks=8 layout=(--set parallel.pp=2 --set parallel.ep=2) ;;
  esac
  run=(train "${cfg[@]}" --set train.steps=3 --set train.eval_every=0 --set "train.out_dir=$out" --set "train.name=$arch"
       --set data.seq_len=48 --set data.micro_batch_size=2 --set data.global_batch_size=16 --set optim.lr=0.01 "${layout[@]}")
  if ! mpirun -np "$ranks" "$strata" "${run[@]}" > "$out/$arch.train.log" 2>&1; then
    echo "FAIL $arch: training on $ranks ranks:"; tail -5 "$out/$arch.train.log"; fail=$((fail + 1)); continue
  fi
  dtype=fp32; [ "$arch" = qwen3_moe ] && dtype=bf16
  if ! "$strata" export "$out/$arch" --out "$out/$arch.hf" --dtype "$dtype" --shard-mb 1 > "$out/$arch.export.log" 2>&1; then
    echo "FAIL $arch: export:"; tail -5 "$out/$arch.export.log"; fail=$((fail + 1)); continue
  fi
  echo "== $arch ($ranks ranks, $dtype export)"
  "$python" scripts/check_hf_export.py "$out/$arch.hf" --strata "$strata" || fail=$((fail + 1))
done
echo "interop: ${#archs[@]} architectures, $fail failed"
[ "$fail" -eq 0 ]
