#!/usr/bin/env bash
# One rank's CHECK failure ends the whole job: non-zero exit within the timeout, with the failing
# rank's message (rank, file:line, condition, values, hint) in the output.
set -u
probe=${1:?probe binary}
out=$(timeout 60 mpirun -np 3 "$probe" 2>&1); rc=$?
if [ "$rc" -eq 124 ]; then echo "FAIL: the job hung after rank 1 failed"; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0 after rank 1 failed"; exit 1; fi
if ! printf '%s' "$out" | grep -qE '\[rank 1\] .*mpi_abort_probe.cc:[0-9]+: CHECK failed: got == 4 \(3 vs 4\): probe failure on purpose'; then
  echo "FAIL: rank 1's message is missing; output was:"; printf '%s\n' "$out"; exit 1
fi
echo "1 passed, 0 failed (exit $rc, rank 1's error printed)"
