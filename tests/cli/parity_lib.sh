# Shared by the layout-parity tests (dp_parity_test.sh, ep_parity_test.sh, grpo_dp_test.sh):
# source it after setting `root` (repository root), `tmp` (the runs' out_dir) and the array
# `common` (the config and --set arguments every run shares). It defines:
#   check DESCRIPTION EXPR      counts a pass or prints "FAIL: DESCRIPTION" (pass / fail counters)
#   run NAME RANKS [args...]    one `strata train` as train.name NAME (RANKS 0: one process, else
#                               mpirun -np RANKS), output in $tmp/NAME.log; exits on failure
#   losses NAME                 "step loss" lines of a run, sorted for join
#   metric NAME KEY             KEY of the run's last train record
#   loss_rel A B N              the largest relative loss difference of two runs over the N steps
#                               both must share ("nan" otherwise)
#   weight_rel A B [STEP]       ckpt_compare.py's max_rel of the two runs' step-STEP checkpoints
#   rel X Y, max X Y, le X Y    |X - Y| / |X|; the larger (nan-aware); X <= Y (false for nan)
#   noise_floor STEPS A B C     the noise floor of three one-process runs of the same maths: sets
#                               floor_loss and floor_w to the largest difference of any two
#   floor PREFIX [args...]      one process over 10 steps at micro-batches of 16, 8 and 4 (PREFIX_one:
#                               the reference); sets tol_loss and tol_w to 4x their noise floor
fail=0; pass=0
check() { if eval "$2"; then pass=$((pass + 1)); else echo "FAIL: $1"; fail=$((fail + 1)); fi; }
run() {
  local name=$1 ranks=$2; shift 2
  local launcher=(); [ "$ranks" -gt 0 ] && launcher=(mpirun -np "$ranks")
  timeout 300 "${launcher[@]}" "$STRATA" train "${common[@]}" --set "train.name=$name" "$@" > "$tmp/$name.log" 2>&1 ||
    { echo "run $name failed:"; tail -n 30 "$tmp/$name.log"; exit 1; }
}
losses() { grep '"kind":"train"' "$tmp/$1/metrics.jsonl" | sed -E 's/.*"loss":([^,}]*).*"step":([0-9]+).*/\2 \1/' | sort -k1,1; }
metric() { grep '"kind":"train"' "$tmp/$1/metrics.jsonl" | tail -1 | sed -E "s/.*\"$2\":([^,}]*).*/\1/"; }
loss_rel() {
  join <(losses "$1") <(losses "$2") | awk -v want="$3" '{ d = $2 - $3; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r; n++ }
    END { if (n != want) print "nan"; else printf "%.6e\n", m }'
}
weight_rel() {
  local step; step=$(printf 'step_%06d' "${3:-10}")
  python3 "$root/tests/cli/ckpt_compare.py" "$tmp/$1/checkpoints/$step" "$tmp/$2/checkpoints/$step" | tail -1 | cut -d' ' -f2
}
rel() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; s = (a < 0 ? -a : a); printf "%.6e\n", (s > 0 ? d / s : d) }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan") print "nan"; else print (a > b ? a : b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a <= b) }'; }
noise_floor() {
  local steps=$1 a b; shift
  floor_loss=0; floor_w=0
  for pair in "$1 $2" "$1 $3" "$2 $3"; do
    read -r a b <<< "$pair"
    floor_loss=$(max "$floor_loss" "$(loss_rel "$a" "$b" "$steps")")
    floor_w=$(max "$floor_w" "$(weight_rel "$a" "$b")")
  done
}
floor() {
  local prefix=$1; shift
  run "${prefix}_mb16" 0 "$@" --set data.micro_batch_size=16
  run "${prefix}_mb8" 0 "$@" --set data.micro_batch_size=8
  run "${prefix}_one" 0 "$@" --set data.micro_batch_size=4
  noise_floor 10 "${prefix}_mb16" "${prefix}_mb8" "${prefix}_one"
  tol_loss=$(awk -v f="$floor_loss" 'BEGIN { printf "%.6e", 4 * f }')
  tol_w=$(awk -v f="$floor_w" 'BEGIN { printf "%.6e", 4 * f }')
  echo "$prefix noise floor: loss $floor_loss, weights $floor_w"
}
