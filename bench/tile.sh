#!/bin/sh
# bench/tile.sh [BUILD] - the float tile beside its ceiling (bench/tile.c): the register tile's
# loop alone in L1, then kern_matmul on each matrix shape of Llama-3.2-1B with F16 and BF16
# weights (rows from memory), and what these make of one -c 256 chunk of that model. THREADS
# threads (default 2), medians of RUNS runs (default 5). About a minute; 0.5 GB of memory.
set -e
build=${1:-build}
make -s --no-print-directory "$build/bench_tile" BUILD="$build"
"$build/bench_tile" "${THREADS:-2}" "${RUNS:-5}"
