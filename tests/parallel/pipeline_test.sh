#!/usr/bin/env bash
# The pipeline executor under mpirun on 2 and 4 ranks (pipeline_probe): every schedule's executed
# trace equals its op list, the measured activation peak equals the schedule's prediction, and
# the gradients equal the closed form.
set -u
probe=${1:?probe binary}
fail=0; pass=0
for np in 2 4; do
  out=$(timeout 120 mpirun -np "$np" "$probe" 2>&1); rc=$?
  if [ "$rc" -eq 0 ] && [ "$(printf '%s\n' "$out" | grep -c 'pipeline ok')" -eq "$np" ]; then
    pass=$((pass + 1)); printf '%s\n' "$out" | grep 'rank 0'
  else echo "FAIL: pipeline on $np ranks (exit $rc):"; printf '%s\n' "$out"; fail=$((fail + 1)); fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
