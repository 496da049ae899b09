#!/usr/bin/env bash
# GRPO end to end through the real binary, on a tiny random model (fast, nothing learnt):
#   - two runs with the same seed and config give identical rollouts (samples.jsonl) and losses;
#   - a run stopped half way and resumed in a fresh process continues them exactly, with a
#     frozen reference policy (beta > 0, saved in the checkpoint) and num_iterations 2;
#   - every metric REFERENCE.md section 5 asks for is logged, and the held-out evaluation runs;
#   - a reward command that crashes is reported and scored 0 (policy zero) or stops the run.
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
common=(configs/tiny_dense.yaml --set train.mode=grpo --set train.steps=4 --set checkpoint.every=2
        --set checkpoint.keep_last=0 --set log.every=1 --set "train.out_dir=$tmp" --set train.eval_every=4
        --set grpo.group_size=4 --set grpo.prompts_per_step=2 --set grpo.max_new_tokens=12 --set grpo.samples_every=1
        --set grpo.eval_problems=4 --set grpo.eval_samples=2 --set "grpo.rewards={arithmetic: 1.0, format: 0.1}"
        --set grpo.beta=0.04 --set grpo.num_iterations=2 --set data.micro_batch_size=4)
fail=0; pass=0
check() { if eval "$2"; then pass=$((pass + 1)); else echo "FAIL: $1"; fail=$((fail + 1)); fi; }
run() { "$STRATA" train "${common[@]}" "$@" > "$tmp/$1.log" 2>&1; }

"$STRATA" train "${common[@]}" --set train.name=a > "$tmp/a.log" 2>&1 || { cat "$tmp/a.log"; exit 1; }
"$STRATA" train "${common[@]}" --set train.name=b > "$tmp/b.log" 2>&1 || { cat "$tmp/b.log"; exit 1; }
"$STRATA" train "${common[@]}" --set train.name=c --stop-after 2 > "$tmp/c1.log" 2>&1 || { cat "$tmp/c1.log"; exit 1; }
"$STRATA" train "${common[@]}" --set train.name=c > "$tmp/c2.log" 2>&1 || { cat "$tmp/c2.log"; exit 1; }

losses() { grep '"kind":"train"' "$1" | sed -E 's/.*"loss":([^,}]*).*"step":([0-9]+).*/\2 \1/; s/.*"step":([0-9]+).*"loss":([^,}]*).*/\1 \2/' | sort -n; }
check "same seed: identical rollouts" "cmp -s $tmp/a/samples.jsonl $tmp/b/samples.jsonl"
check "same seed: identical losses" "[ \"\$(losses $tmp/a/metrics.jsonl)\" = \"\$(losses $tmp/b/metrics.jsonl)\" ] && [ \$(losses $tmp/a/metrics.jsonl | wc -l) -eq 4 ]"
check "resumed in a fresh process at step 2" "grep -q 'at step 2' $tmp/c2.log"
check "resume: identical rollouts" "cmp -s $tmp/a/samples.jsonl $tmp/c/samples.jsonl"
check "resume: identical losses" "[ \"\$(losses $tmp/a/metrics.jsonl)\" = \"\$(losses $tmp/c/metrics.jsonl)\" ]"
check "resume: identical final weights, optimizer and reference" \
  "cmp -s $tmp/a/checkpoints/step_000004/rank-00000.safetensors $tmp/c/checkpoints/step_000004/rank-00000.safetensors"
check "reference policy in the checkpoint" "grep -q '\"ref.embed\"' $tmp/a/checkpoints/step_000002/manifest.json"
for key in reward reward_std accuracy reward_arithmetic reward_format zero_spread completion_len truncated kl clip_frac entropy rollout_tok_s mfu; do
  check "metric $key logged" "grep -q '\"$key\":' $tmp/a/metrics.jsonl"
done
check "held-out eval with pass@k" "grep '\"kind\":\"eval\"' $tmp/a/metrics.jsonl | grep -q 'eval_pass_at_2'"
check "samples.jsonl has prompts, completions, rewards" "head -1 $tmp/a/samples.jsonl | grep -q '\"completion\":.*\"prompt\":.*\"reward\":'"

crash=(--set train.steps=1 --set train.eval_every=0 --set "grpo.rewards={command: 1.0}" --set "grpo.reward_command=exit 7")
out=$("$STRATA" train "${common[@]}" "${crash[@]}" --set train.name=crash0 2>&1); rc=$?
check "crashing reward command scored 0 and reported (exit $rc)" "[ $rc -eq 0 ] && printf '%s' \"\$out\" | grep -q 'reward command .exit 7. exited with status 7'"
out=$("$STRATA" train "${common[@]}" "${crash[@]}" --set grpo.reward_command_on_failure=stop --set train.name=crash1 2>&1); rc=$?
check "crashing reward command with policy stop ends the run (exit $rc)" "[ $rc -ne 0 ] && printf '%s' \"\$out\" | grep -q 'reward_command_on_failure: stop'"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
