#!/bin/sh
# bench/mpi_calib.sh [BUILD] - the calibration commands as one process (-t CORES) and as
# `mpirun -np 2` (each rank CORES/2 threads, cli_apply_threads' default), alternating, RUNS
# times each (default 3): the median wall time of each, their ratio, and whether the two gave
# the same bytes / figures (they must: docs/imatrix.md and docs/eval.md, "Under mpirun").
# A third run, one process with the threads of one rank (-t CORES/2), shows how the split over
# ranks scales by itself (what more machines would add), apart from the cores one machine has.
#   imatrix   books-22m on books-valid.txt, CHUNKS chunks of 256 (default 40), .dat output
#   eval      books-22m Q4_K_M on books-valid.txt, the same chunks: PPL
#   eval-kld  the same with --kl-base books-22m BF16 (two models per chunk)
# The wall time includes opening the model and tokenizing the whole text, which every rank does
# itself, and Open MPI's start-up (about 0.4 s here; MPIRUN_ARGS="--mca pml ob1" saves about
# half of it on one machine): the parts that do not shrink with more ranks. Needs ../shared,
# mpirun and an slmc built with MPI.
set -e
build=${1:-build}
S="$build/slmc"
SH=${SLMC_SHARED:-../shared}
RUNS=${RUNS:-3}
CHUNKS=${CHUNKS:-40}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
mkdir -p "$DIR"
for f in models/books-22m/hf-bf16 reference/books-22m-Q4_K_M.gguf reference/books-22m-BF16.gguf text/books-valid.txt; do
    [ -e "$SH/$f" ] || { echo "SKIP bench/mpi_calib: $SH/$f not found"; exit 0; }
done
command -v mpirun >/dev/null 2>&1 || { echo "SKIP bench/mpi_calib: mpirun is not installed"; exit 0; }
"$S" --version | grep -q "with MPI" || { echo "SKIP bench/mpi_calib: $S was built without MPI"; exit 0; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
. "$(dirname "$0")/lib.inc"
CORES=$(nproc)
HALF=$((CORES / 2 > 0 ? CORES / 2 : 1))
TEXT="$SH/text/books-valid.txt"
MPI="mpirun -q --oversubscribe ${MPIRUN_ARGS:-} -np 2"
IM="imatrix $SH/models/books-22m/hf-bf16 --text $TEXT -c 256 --chunks $CHUNKS -q"
EV="eval $SH/reference/books-22m-Q4_K_M.gguf --text $TEXT -c 256 --chunks $CHUNKS -q"
KL="$EV --kl-base $SH/reference/books-22m-BF16.gguf"

# the figures a run prints, without the clock
figures() { grep -v -E 'tokens/s$' "$1"; }

round=0 # (not i: timed in lib.inc counts with i)
while [ $round -lt "$RUNS" ]; do
    # shellcheck disable=SC2086
    {
        timed "imatrix:one" 1 0 -- "$S" $IM -t "$CORES" -o "$DIR/mpi-im-one.dat"
        timed "imatrix:half" 1 0 -- "$S" $IM -t "$HALF" -o "$DIR/mpi-im-half.dat"
        timed "imatrix:np2" 1 0 -- $MPI "$S" $IM -t "$HALF" -o "$DIR/mpi-im-np2.dat"
        timed "eval:one" 1 0 -- sh -c "\"$S\" $EV -t $CORES >\"$DIR/mpi-ev-one.txt\""
        timed "eval:half" 1 0 -- sh -c "\"$S\" $EV -t $HALF >/dev/null"
        timed "eval:np2" 1 0 -- sh -c "$MPI \"$S\" $EV -t $HALF >\"$DIR/mpi-ev-np2.txt\""
        timed "eval-kld:one" 1 0 -- sh -c "\"$S\" $KL -t $CORES >\"$DIR/mpi-kl-one.txt\""
        timed "eval-kld:half" 1 0 -- sh -c "\"$S\" $KL -t $HALF >/dev/null"
        timed "eval-kld:np2" 1 0 -- sh -c "$MPI \"$S\" $KL -t $HALF >\"$DIR/mpi-kl-np2.txt\""
    }
    round=$((round + 1))
done
echo "# slmc bench/mpi_calib: books-22m, $CHUNKS chunks of 256 of books-valid.txt, median of $RUNS alternating runs,"
echo "# $CORES cores: one process -t $CORES (one), one process -t $HALF (one-half), mpirun -np 2 ${MPIRUN_ARGS:+$MPIRUN_ARGS }-t $HALF per rank (np2)"
printf "%-10s %9s %9s %9s %10s %10s\n" command "one s" "one-half s" "np2 s" one/np2 half/np2
for c in imatrix eval eval-kld; do
    a=$(median "$c:one"); h=$(median "$c:half"); b=$(median "$c:np2")
    printf "%-10s %9.2f %9.2f %9.2f %9sx %9sx\n" "$c" "$a" "$h" "$b" "$(ratio "$a" "$b")" "$(ratio "$h" "$b")"
done
cmp -s "$DIR/mpi-im-one.dat" "$DIR/mpi-im-np2.dat" && echo "imatrix outputs: byte-identical" || { echo "imatrix outputs DIFFER"; exit 1; }
[ "$(figures "$DIR/mpi-ev-one.txt")" = "$(figures "$DIR/mpi-ev-np2.txt")" ] &&
    [ "$(figures "$DIR/mpi-kl-one.txt")" = "$(figures "$DIR/mpi-kl-np2.txt")" ] &&
    echo "eval figures: identical" || { echo "eval figures DIFFER"; exit 1; }
