#!/usr/bin/env bash
# One rank failing ends the whole job promptly, with that rank's reason (DESIGN.md "Failures").
# Under `mpirun -np 2`, rank 1 fails on purpose before step 2 (STRATA_FAULT_INJECT, see
# trainer/fault_injection.h) in each way a run can fail: a returned error, an uncaught exception,
# a CHECK, SIGSEGV, and a hang that rank 0's next collective catches after parallel.timeout_s.
# For each: mpirun exits non-zero; the job ends within 10 s of the failure (timed from rank 0's
# "step 2" line, the last one before the fault; for the hang, 10 s past the timeout) and within
# 10 s (+ the timeout) of a clean run's whole time; the output names rank 1 and the cause; rank 1
# wrote rank-00001.log in the run directory, and the cause is in it. Then, in one process: the
# same messages without MPI, the hook in the GRPO loop, and a malformed STRATA_FAULT_INJECT.
set -u
root=${1:?repository root}
cd "$root" || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
timeout_s=2
common=(configs/tiny_dense.yaml --set train.steps=4 --set log.every=1 --set "train.out_dir=$tmp"
        --set train.eval_every=0 --set checkpoint.every=0 --set checkpoint.keep_last=1
        --set "parallel.timeout_s=$timeout_s")
fail=0; pass=0
check() { if eval "$2"; then pass=$((pass + 1)); else echo "FAIL: $1"; fail=$((fail + 1)); fi; }
now() { date +%s.%N; }

# launch NAME [strata args...]: runs the job with every output line stamped with its arrival time
# ("<seconds> <line>" in $tmp/NAME.out); sets rc, total (launch to exit) and after (exit minus
# the arrival of rank 0's last "step" line, i.e. time since the fault; -1 without such a line).
launch() {
  local name=$1; shift
  local t0; t0=$(now)
  timeout 120 mpirun -np 2 "$STRATA" train "${common[@]}" --set "train.name=$name" "$@" 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; done > "$tmp/$name.out"
  rc=${PIPESTATUS[0]}
  local t1; t1=$(now)
  total=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  local t_step; t_step=$(awk '$2 == "step" { t = $1 } END { print t }' "$tmp/$name.out")
  after=$(awk -v a="${t_step:-}" -v b="$t1" 'BEGIN { if (a == "") print -1; else printf "%.2f", b - a }')
}
says() { grep -qE -- "$2" "$tmp/$1.out"; }         # the job's output matches the regex
logged() { grep -qE -- "$2" "$tmp/$1/rank-00001.log" 2>/dev/null; }  # rank 1's log does
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= 0 && a < b) }'; }

launch clean
clean_total=$total
check "a clean 2-rank run succeeds (exit $rc) and rank 1 writes rank-00001.log in the run directory" \
  "[ $rc -eq 0 ] && [ -s $tmp/clean/rank-00001.log ] && [ -s $tmp/clean/rank-00000.log ]"
echo "clean run: ${clean_total}s"

# kind, regex naming rank 1 and the cause, regex the cause leaves in rank 1's log, extra seconds
declare -a kinds=(
  "error|strata train: injected fault on rank 1 at step 2|injected fault on rank 1 at step 2|0"
  "throw|rank 1: uncaught exception: injected fault on rank 1 at step 2|rank 1: uncaught exception: injected fault|0"
  "check|\\[rank 1\\] trainer/fault_injection.cc:[0-9]+: CHECK failed: false: injected fault on rank 1 at step 2|CHECK failed: false: injected fault on rank 1|0"
  "segv|rank 1: fatal signal SIGSEGV \\(Segmentation fault\\)|rank 1: fatal signal SIGSEGV|0"
  "hang|all_reduce #[0-9]+ on world \\[0,1\\] timed out after ${timeout_s}s; rank 1 did not arrive|injected fault on rank 1 at step 2: hanging|$timeout_s"
)
for spec in "${kinds[@]}"; do
  IFS='|' read -r kind cause in_log extra <<< "$spec"
  STRATA_FAULT_INJECT="rank=1,step=2,kind=$kind" launch "$kind"
  echo "$kind: exit $rc, ${total}s in all, ${after}s from rank 0's last step line to exit"
  check "$kind: mpirun exits non-zero (exit $rc)" "[ $rc -ne 0 ] && [ $rc -ne 124 ]"
  check "$kind: the job ends within 10 s of the fault (${after}s after step 2's line, limit $((10 + extra))s)" \
    "lt $after $((10 + extra))"
  check "$kind: the job ends within a clean run + 10 s (${total}s vs clean ${clean_total}s + $((10 + extra))s)" \
    "lt $total \$(awk -v c=$clean_total -v e=$((10 + extra)) 'BEGIN { print c + e }')"
  check "$kind: the output names rank 1 and the cause" "says $kind '$cause'"
  check "$kind: rank 1's log (rank-00001.log) records the cause" "logged $kind '$in_log'"
  says "$kind" "$cause" || { echo "--- output of $kind:"; cut -d' ' -f2- "$tmp/$kind.out"; }
done
check "segv: the stack of the crash is in rank 1's log" "logged segv '^stack '"
check "error: rank 1 says it ends the job" "says error 'rank 1: failed \\(exit code 1\\); ending every rank of the job'"

# One process: the same reasons without MPI ("strata:" instead of "rank R:").
single() { STRATA_FAULT_INJECT=$1 "$STRATA" train "${common[@]}" --set "train.name=single_$2" "${@:3}" > "$tmp/single_$2.out" 2>&1; rc=$?; }
single "rank=0,step=1,kind=throw" throw
check "one process: an uncaught exception is reported (exit $rc)" \
  "[ $rc -ne 0 ] && grep -q '^strata: uncaught exception: injected fault on rank 0 at step 1' $tmp/single_throw.out"
single "rank=0,step=1,kind=segv" segv
check "one process: SIGSEGV is reported and ends the process by the signal (exit $rc)" \
  "[ $rc -eq 139 ] && grep -q '^strata: fatal signal SIGSEGV (Segmentation fault)' $tmp/single_segv.out"
single "rank=0,step=1,kind=error" grpo --set train.mode=grpo --set grpo.group_size=2 --set grpo.prompts_per_step=2 \
  --set grpo.max_new_tokens=4 --set data.micro_batch_size=4 --set data.task=countdown --set data.seq_len=256 \
  --set model.max_seq_len=256
check "the GRPO loop injects too (exit $rc)" \
  "[ $rc -eq 1 ] && grep -q 'strata train: injected fault on rank 0 at step 1' $tmp/single_grpo.out"
single "rank=1,kind=segv" bad
check "a malformed STRATA_FAULT_INJECT is refused by name (exit $rc)" \
  "[ $rc -eq 2 ] && grep -q 'STRATA_FAULT_INJECT=\"rank=1,kind=segv\": missing step' $tmp/single_bad.out"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
