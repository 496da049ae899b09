#!/usr/bin/env bash
# The MPI Communicator under mpirun: every collective on 3 and on 4 ranks (communicator_probe
# collectives), and a collective that one rank never reaches times out on the others with a
# message naming the collective and, on rank 0, the missing rank. GradBuckets on 1 and 3 ranks.
set -u
probe=${1:?probe binary}
fail=0; pass=0
for np in 3 4; do
  out=$(timeout 120 mpirun -np "$np" "$probe" collectives 2>&1); rc=$?
  if [ "$rc" -eq 0 ] && [ "$(printf '%s\n' "$out" | grep -c 'collectives ok')" -eq "$np" ]; then
    pass=$((pass + 1)); else echo "FAIL: collectives on $np ranks (exit $rc):"; printf '%s\n' "$out"; fail=$((fail + 1)); fi
done
for np in 1 3; do  # GradBuckets: split, padding, in-order starts, reduced values, shards
  out=$(timeout 120 mpirun -np "$np" "$probe" buckets 2>&1); rc=$?
  if [ "$rc" -eq 0 ] && [ "$(printf '%s\n' "$out" | grep -c 'buckets ok')" -eq "$np" ]; then
    pass=$((pass + 1)); else echo "FAIL: buckets on $np ranks (exit $rc):"; printf '%s\n' "$out"; fail=$((fail + 1)); fi
done
out=$(timeout 120 mpirun -np 3 "$probe" hang 2>&1); rc=$?
if printf '%s' "$out" | grep -q 'rank 0: all_reduce #2 on world \[0,1,2\] timed out after 1s; rank 2 did not arrive' &&
   printf '%s' "$out" | grep -q 'rank 1: all_reduce #2 on world \[0,1,2\] timed out after 1s'; then
  pass=$((pass + 1)); else echo "FAIL: timeout message (exit $rc):"; printf '%s\n' "$out"; fail=$((fail + 1)); fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
