#!/usr/bin/env bash
# strata export and model.init_from: hf: across layouts (the library round trip of every
# architecture is tests/trainer/hf_export_test.cc): a tiny MoE trained at pp 2 x dp 4 (ep 2) on 8
# ranks is exported in fp32 (several shards); starting a run from the export (model.init_from:
# hf:) at that layout and in one process is bit for bit the run that starts from the checkpoint. An injected write failure exits 1
# naming it and leaves no directory; an existing export is kept without --force.
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=${KEEP_TMP:-$(mktemp -d)}; [ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
common=(configs/tiny_moe_sft.yaml --set train.steps=2 --set log.every=1 --set "train.out_dir=$tmp" --set data.seq_len=48
        --set data.task=arithmetic --set data.global_batch_size=16 --set data.micro_batch_size=2 --set train.eval_every=0
        --set model.moe.aux_loss=seq --set checkpoint.keep_last=0)
. "$root/tests/cli/parity_lib.sh"
layout=(--set parallel.pp=2 --set parallel.ep=2)

run trained 8 "${layout[@]}"
out=$("$STRATA" export "$tmp/trained" --out "$tmp/hf" --dtype fp32 --shard-mb 1 2>&1); rc=$?
check "export of a pp 2 x ep 2 checkpoint ($(printf '%s' "$out" | tail -1))" "[ $rc -eq 0 ] && [ -f $tmp/hf/model.safetensors.index.json ]"
check "several shards, each named in the index" \
  "[ \$(ls $tmp/hf/model-*-of-*.safetensors | wc -l) -gt 1 ] && grep -q 'model-00002-of-' $tmp/hf/model.safetensors.index.json"
# Starting from the export or from the checkpoint itself must be the same run, bit for bit, at the
# training layout and in one process (one step: the same loss, gradients and updated weights).
one_step=(--set train.steps=1 --set checkpoint.every=1)
run hf_8 8 "${layout[@]}" "${one_step[@]}" --set "model.init_from=hf:$tmp/hf"
run ckpt_8 8 "${layout[@]}" "${one_step[@]}" --set "model.init_from=ckpt:$tmp/trained"
run hf_1 0 "${one_step[@]}" --set "model.init_from=hf:$tmp/hf"
run ckpt_1 0 "${one_step[@]}" --set "model.init_from=ckpt:$tmp/trained"
for n in 8 1; do
  w=$(weight_rel "ckpt_$n" "hf_$n" 1)
  check "init_from hf: on $n rank(s) trains as init_from ckpt: does, bit for bit (weights $w)" \
    "[ \"$w\" = 0.000000e+00 ] && [ \"\$(losses ckpt_$n)\" = \"\$(losses hf_$n)\" ]"
done
check "hf_8 says it initialised from the export" "grep -q 'initialised from hf:' $tmp/hf_8.log"

out=$(STRATA_EXPORT_FAULT=shard:2 "$STRATA" export "$tmp/trained" --out "$tmp/broken" --shard-mb 1 2>&1); rc=$?
check "an injected write failure exits 1 naming it ($out)" "[ $rc -eq 1 ] && printf '%s' \"\$out\" | grep -q 'write failed' && printf '%s' \"\$out\" | grep -q 'nothing was written'"
check "... and leaves no directory behind" "[ -z \"\$(ls -d $tmp/broken* 2>/dev/null)\" ]"
out=$("$STRATA" export "$tmp/trained" --out "$tmp/hf" 2>&1); rc=$?
check "an existing export is kept without --force" "[ $rc -eq 2 ] && printf '%s' \"\$out\" | grep -q 'pass --force'"
out=$("$STRATA" export "$tmp/trained" --out "$tmp/hf" --force 2>&1); rc=$?
check "--force replaces it (bf16 by default)" "[ $rc -eq 0 ] && grep -q '\"dtype\": \"bfloat16\"' $tmp/hf/config.json"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
