#!/bin/sh
# bench/mpi_train.sh [BUILD] - `slmc train` on the books-22m shape as one process (-t CORES)
# and as `mpirun -np 2` (each rank CORES/2 threads), alternating, RUNS times each (default 3):
# the median wall time of each and their ratio, and whether the two wrote the same bytes (they
# must: docs/mpi.md). 8 sequences of 256 tokens a step (--batch 4 --grad-accum 2), STEPS steps.
# Needs ../shared, mpirun and an slmc built with MPI.
set -e
build=${1:-build}
S="$build/slmc"
SH=${SLMC_SHARED:-../shared}
STEPS=${STEPS:-4}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
mkdir -p "$DIR"
[ -d "$SH/models/books-22m/hf-bf16" ] || { echo "SKIP bench/mpi_train: $SH/models/books-22m not found"; exit 0; }
command -v mpirun >/dev/null 2>&1 || { echo "SKIP bench/mpi_train: mpirun is not installed"; exit 0; }
"$S" --version | grep -q "with MPI" || { echo "SKIP bench/mpi_train: $S was built without MPI"; exit 0; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
. "$(dirname "$0")/lib.inc"
CORES=$(nproc)
ARGS="--model $SH/models/books-22m/hf-bf16 --data $SH/text/books-valid.txt --max-tokens 60000 --steps $STEPS
      --seq-len 256 --batch 4 --grad-accum 2 --eval-every 0 --valid-frac 0.05 -q"
round=0
while [ $round -lt "$RUNS" ]; do
    # shellcheck disable=SC2086
    timed "train:one" 1 0 -- "$S" train $ARGS -t "$CORES" -o "$DIR/mpi-one.gguf"
    # shellcheck disable=SC2086
    timed "train:np2" 1 0 -- mpirun --oversubscribe -np 2 "$S" train $ARGS -t $((CORES / 2 > 0 ? CORES / 2 : 1)) \
        -o "$DIR/mpi-np2.gguf"
    round=$((round + 1))
done
echo "# slmc bench/mpi_train: books-22m shape, $STEPS steps of 8 x 256 tokens, median of $RUNS alternating runs, $CORES cores"
a=$(median train:one); b=$(median train:np2)
printf "%-26s %8s\n" run "wall s"
printf "%-26s %8.2f\n" "one process" "$a" "mpirun -np 2" "$b"
echo "speed-up of 2 ranks: $(ratio "$a" "$b")x"
cmp -s "$DIR/mpi-one.gguf" "$DIR/mpi-np2.gguf" && echo "outputs: byte-identical" || { echo "outputs DIFFER"; exit 1; }
