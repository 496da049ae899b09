#!/usr/bin/env bash
# Launches strata on RANKS MPI ranks, on this machine or on the nodes of a hostfile, with the
# mpirun flags a user would otherwise have to remember: --allow-run-as-root as root,
# --oversubscribe when the ranks of a node outnumber its cores, and one BLAS/OpenMP thread per rank
# when ranks share cores (otherwise cores / ranks-per-node threads each). Prints the command, then
# runs it; strata's exit status is the script's.
#
#   scripts/launch.sh -n RANKS [--hostfile FILE] [--show] [--] strata-args...
#   scripts/launch.sh -n 2 -- train configs/tiny_dense.yaml --set train.steps=4
#
#   -n RANKS          number of ranks (the world size; the config's parallel.dp/pp/ep must fit it)
#   --hostfile FILE   run on the nodes FILE lists (Open MPI format, below); default: this machine
#   --show            print the mpirun command and exit
#   STRATA=PATH       the binary (default: $BUILD_DIR/strata, BUILD_DIR defaulting to build/)
#   CORES_PER_NODE=N  cores of each node of a hostfile (default: this machine's, from nproc)
#   MPIRUN_ARGS="..." extra mpirun arguments, e.g. "--mca btl self,vader" on one machine
#   OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, when set, are kept as they are.
#
# Several nodes: the same build at the same path on every node (a shared filesystem, or the same
# image), passwordless ssh from the first node to the others, and a hostfile naming each node and
# how many ranks it takes:
#
#   # hosts.txt
#   node1 slots=8
#   node2 slots=8
#
#   scripts/launch.sh -n 16 --hostfile hosts.txt -- train configs/my.yaml --set parallel.dp=16
#
# Ranks fill node1's slots first (ranks 0-7), then node2's (8-15): with the default rank order
# (ep fastest) expert groups of up to 8 share a node. mpirun does not forward the environment to
# other nodes; this script exports the thread counts, PATH, LD_LIBRARY_PATH and every STRATA_*
# variable with -x. Each rank writes <run dir>/rank-XXXXX.log; rank 0 prints to the console.
#
# Under Slurm, srun is the equivalent (strata joins MPI when srun starts it; Open MPI must be built
# with PMIx/Slurm support):
#
#   srun -N 2 --ntasks-per-node 8 --cpus-per-task 4 \
#        --export=ALL,OPENBLAS_NUM_THREADS=4,OMP_NUM_THREADS=4 build/strata train configs/my.yaml
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage() {  # the comment block above
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
  exit "$1"
}
die() { echo "launch: $*" >&2; exit 2; }

ranks="" hostfile="" show=0
while [ $# -gt 0 ]; do
  case $1 in
    -n|-np|--ranks) [ $# -ge 2 ] || die "$1 needs a number of ranks"; ranks=$2; shift 2 ;;
    --hostfile) [ $# -ge 2 ] || die "--hostfile needs a file"; hostfile=$2; shift 2 ;;
    --show) show=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (strata's own arguments go after --; see scripts/launch.sh --help)" ;;
    *) break ;;
  esac
done
[ -n "$ranks" ] || die "-n RANKS is required (scripts/launch.sh -n 2 -- train CONFIG)"
[[ $ranks =~ ^[1-9][0-9]*$ ]] || die "-n: expected a number of ranks >= 1, got \"$ranks\""
[ $# -gt 0 ] || die "no strata command given (scripts/launch.sh -n $ranks -- train CONFIG)"

strata=${STRATA:-${BUILD_DIR:-$root/build}/strata}
[ -x "$strata" ] || die "$strata: not built (run scripts/build.sh, or set STRATA=path/to/strata)"
command -v mpirun > /dev/null || die "mpirun not found (scripts/setup.sh installs Open MPI)"

# Ranks per node and cores per node decide oversubscription and the threads each rank gets.
nodes=1
cores=${CORES_PER_NODE:-$(nproc)}
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || die "--hostfile $hostfile: cannot read it"
  nodes=$(grep -cvE '^[[:space:]]*(#|$)' "$hostfile" || true)
  [ "$nodes" -ge 1 ] || die "--hostfile $hostfile names no node"
fi
per_node=$(( (ranks + nodes - 1) / nodes ))
threads=$(( cores / per_node )); [ "$threads" -ge 1 ] || threads=1

args=(-np "$ranks")
if [ -n "$hostfile" ]; then args+=(--hostfile "$hostfile"); fi
if [ "$(id -u)" -eq 0 ]; then args+=(--allow-run-as-root); fi
if [ "$per_node" -gt "$cores" ]; then
  args+=(--oversubscribe --bind-to none)  # ranks share cores: let the OS schedule them
elif [ "$threads" -gt 1 ]; then
  args+=(--bind-to none)  # Open MPI binds 1-2 ranks to one core each, which would starve BLAS threads
else
  args+=(--bind-to core)  # one rank per core
fi
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
for var in OPENBLAS_NUM_THREADS OMP_NUM_THREADS PATH LD_LIBRARY_PATH $(compgen -e STRATA_ || true); do
  if [ -n "${!var+set}" ]; then args+=(-x "$var"); fi
done
if [ -n "${MPIRUN_ARGS:-}" ]; then
  # shellcheck disable=SC2206  # split into words on purpose
  args+=(${MPIRUN_ARGS})
fi

cmd=(mpirun "${args[@]}" "$strata" "$@")
echo "launch: $ranks ranks on $nodes node(s), $per_node per node, $cores cores each," \
     "OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS OMP_NUM_THREADS=$OMP_NUM_THREADS" >&2
echo "launch: ${cmd[*]}" >&2
[ "$show" -eq 1 ] && exit 0
exec "${cmd[@]}"
