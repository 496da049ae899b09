#!/usr/bin/env bash
# Exact resume: train N steps in one process; separately train N/2, let the process exit, start a
# new process that resumes from `latest` and trains N/2 more. Losses of every step and the final
# weights and optimizer state must be bitwise identical. Then a corrupted checkpoint is refused
# with a message naming the file and tensor, and the previous one still resumes. fp8 delayed
# scaling resumes exactly too (its amax histories are in the checkpoint).
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
common=(--set train.steps=8 --set checkpoint.every=2 --set checkpoint.keep_last=0 --set log.every=1
        --set "train.out_dir=$tmp" --set data.seq_len=48 --set model.max_seq_len=48 --set train.eval_every=0)
fail=0; pass=0
check() { if eval "$2"; then pass=$((pass + 1)); else echo "FAIL: $1"; fail=$((fail + 1)); fi; }

"$STRATA" train configs/tiny_dense.yaml "${common[@]}" --set train.name=whole > "$tmp/whole.log" 2>&1 || { cat "$tmp/whole.log"; exit 1; }
"$STRATA" train configs/tiny_dense.yaml "${common[@]}" --set train.name=split --stop-after 4 > "$tmp/a.log" 2>&1 || { cat "$tmp/a.log"; exit 1; }
check "first half stopped at step 4" "grep -q 'stopping after 4 steps' '$tmp/a.log'"
"$STRATA" train configs/tiny_dense.yaml "${common[@]}" --set train.name=split > "$tmp/b.log" 2>&1 || { cat "$tmp/b.log"; exit 1; }
check "second process resumed at step 4" "grep -q 'at step 4' '$tmp/b.log'"

losses() { grep '"kind":"train"' "$1" | sed -E 's/.*"loss":([^,}]*).*"step":([0-9]+).*/\2 \1/; s/.*"step":([0-9]+).*"loss":([^,}]*).*/\1 \2/' | sort -n; }
check "losses of all 8 steps identical" "[ \"\$(losses $tmp/whole/metrics.jsonl)\" = \"\$(losses $tmp/split/metrics.jsonl)\" ] && [ \$(losses $tmp/whole/metrics.jsonl | wc -l) -eq 8 ]"
check "final weights and optimizer state bitwise identical" \
  "cmp -s $tmp/whole/checkpoints/step_000008/rank-00000.safetensors $tmp/split/checkpoints/step_000008/rank-00000.safetensors"

# The same with fp8 delayed scaling: the amax histories (3 long, so entries are evicted across
# the resume) are checkpointed and restored, so the split run still equals the whole one.
fp8=(--set precision.mode=fp8 --set precision.fp8.recipe=tensorwise_delayed --set precision.fp8.amax_history_len=3)
"$STRATA" train configs/tiny_dense.yaml "${common[@]}" "${fp8[@]}" --set train.name=fp8_whole > "$tmp/c.log" 2>&1 || { cat "$tmp/c.log"; exit 1; }
"$STRATA" train configs/tiny_dense.yaml "${common[@]}" "${fp8[@]}" --set train.name=fp8_split --stop-after 4 > "$tmp/d.log" 2>&1 || { cat "$tmp/d.log"; exit 1; }
"$STRATA" train configs/tiny_dense.yaml "${common[@]}" "${fp8[@]}" --set train.name=fp8_split > "$tmp/e.log" 2>&1 || { cat "$tmp/e.log"; exit 1; }
check "fp8 checkpoint holds amax histories" "grep -q 'fp8.layers.0.attn.wq.amax_history' $tmp/fp8_split/checkpoints/step_000004/manifest.json"
check "fp8 delayed: losses of all 8 steps identical after resume" "[ \"\$(losses $tmp/fp8_whole/metrics.jsonl)\" = \"\$(losses $tmp/fp8_split/metrics.jsonl)\" ] && [ \$(losses $tmp/fp8_whole/metrics.jsonl | wc -l) -eq 8 ]"
check "fp8 delayed: final state bitwise identical" \
  "cmp -s $tmp/fp8_whole/checkpoints/step_000008/rank-00000.safetensors $tmp/fp8_split/checkpoints/step_000008/rank-00000.safetensors"

# Corrupt the newest checkpoint (flip one byte near the end of its data): refused by name,
# while the one before it still resumes.
f=$tmp/split/checkpoints/step_000008/rank-00000.safetensors
size=$(stat -c %s "$f")
printf '\xff' | dd of="$f" bs=1 seek=$((size - 3)) conv=notrunc 2>/dev/null
out=$("$STRATA" eval "$tmp/split" --task arithmetic --n 2 2>&1); rc=$?
check "corrupted checkpoint refused (exit $rc): $out" "[ $rc -ne 0 ] && printf '%s' \"\$out\" | grep -qE 'rank-00000.safetensors: [a-z_.0-9]+: checksum mismatch'"
out=$("$STRATA" eval "$tmp/split/checkpoints/step_000006" --task arithmetic --n 2 2>&1); rc=$?
check "previous checkpoint still loads (exit $rc): $out" "[ $rc -eq 0 ]"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
