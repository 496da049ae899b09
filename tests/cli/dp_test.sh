#!/usr/bin/env bash
# Data parallelism under mpirun (DESIGN.md's invariant): the same global batch and seed at dp = 2
# (4 micro-batches of 2, two per rank) gives the single process's loss at
# every step to 1e-6 relative (only the summation order of the gradient all-reduce differs); every
# rank writes its own log, rank 0 the metrics and checkpoints; a checkpoint saved at dp = 2
# resumes in one process and at dp = 2 again, continuing the same trajectory; a layout that does
# not fit the job is refused with a message naming the keys.
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
common=(configs/tiny_dense.yaml --set train.steps=6 --set log.every=1 --set "train.out_dir=$tmp" --set data.seq_len=48
        --set model.max_seq_len=48 --set checkpoint.every=3 --set checkpoint.keep_last=0 --set data.micro_batch_size=2
        --set train.eval_every=0)
fail=0; pass=0
check() { if eval "$2"; then pass=$((pass + 1)); else echo "FAIL: $1"; fail=$((fail + 1)); fi; }
mpi() { timeout 300 mpirun -np "$1" "${@:2}"; }

"$STRATA" train "${common[@]}" --set train.name=one > "$tmp/one.log" 2>&1 || { cat "$tmp/one.log"; exit 1; }
mpi 2 "$STRATA" train "${common[@]}" --set train.name=two > "$tmp/two.log" 2>&1 || { cat "$tmp/two.log"; exit 1; }
# Resume the dp = 2 run's step-3 checkpoint in one process, and at dp = 2, for steps 4-6.
mkdir -p "$tmp/r1/checkpoints" "$tmp/r2/checkpoints"
"$STRATA" train "${common[@]}" --set train.name=r1 --resume "$tmp/two/checkpoints/step_000003" > "$tmp/r1.log" 2>&1 || { cat "$tmp/r1.log"; exit 1; }
mpi 2 "$STRATA" train "${common[@]}" --set train.name=r2 --resume "$tmp/two/checkpoints/step_000003" > "$tmp/r2.log" 2>&1 || { cat "$tmp/r2.log"; exit 1; }

losses() { grep '"kind":"train"' "$1" | sed -E 's/.*"loss":([^,}]*).*"step":([0-9]+).*/\2 \1/; s/.*"step":([0-9]+).*"loss":([^,}]*).*/\1 \2/' | sort -n; }
close() {  # two "step loss" lists agree on every shared step to 1e-6 relative, and share $3 steps
  join <(losses "$1") <(losses "$2") | awk -v want="$3" '{ d = $2 - $3; if (d < 0) d = -d; if (d > 1e-6 * ($2 < 0 ? -$2 : $2)) bad = 1; n++ }
    END { exit !(n == want && !bad) }'
}
check "dp=2 losses equal one process's (6 steps, 1e-6)" "close $tmp/one/metrics.jsonl $tmp/two/metrics.jsonl 6"
check "every rank writes its own log" "[ -s $tmp/two/rank-00000.log ] && [ -s $tmp/two/rank-00001.log ]"
check "rank 0 alone prints the step lines" "[ \$(grep -c '^step' $tmp/two.log) -eq 6 ]"
check "dp=2 checkpoint resumed in one process continues the trajectory" "close $tmp/one/metrics.jsonl $tmp/r1/metrics.jsonl 3"
check "dp=2 checkpoint resumed at dp=2 continues the trajectory" "close $tmp/one/metrics.jsonl $tmp/r2/metrics.jsonl 3"
out=$(mpi 2 "$STRATA" train "${common[@]}" --set train.name=bad --set parallel.dp=4 2>&1); rc=$?
check "a layout that does not fit is refused (exit $rc)" "[ $rc -ne 0 ] && printf '%s' \"\$out\" | grep -q 'parallel.dp: pp x dp = 1 x 4 = 4 ranks, but the job has 2'"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
