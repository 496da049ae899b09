#!/usr/bin/env bash
# Each malformed config under tests/configs/bad/ must make `strata config check` and
# `strata train` exit 2 with exactly one stderr line: the one its "# expect:" header promises.
set -u
root=${1:?repository root}
cd "$root" || exit 1
fail=0; n=0
for f in tests/configs/bad/*.yaml; do
  expected=$(head -n1 "$f" | sed 's/^# expect: //')
  for cmd in "config check" "train"; do
    err=$("$STRATA" $cmd "$f" 2>&1 >/dev/null); rc=$?
    lines=$(printf '%s\n' "$err" | wc -l)
    if [ "$rc" -ne 2 ] || [ "$lines" -ne 1 ] || [ "$err" != "$expected" ]; then
      echo "FAIL: strata $cmd $f: exit $rc, $lines line(s):"; echo "  got:      $err"; echo "  expected: $expected"
      fail=$((fail + 1))
    fi
    n=$((n + 1))
  done
done
echo "$((n - fail)) passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$n" -ge 20 ]
