#!/bin/sh
# bench/eval.sh [BUILD] - evaluation speed (tokens/s of `slmc eval`, -t 2, n_ctx 256) on the
# largest shared model for BF16, Q8_0 and Q4_K_M, with the single-thread figure beside each
# as the baseline; medians of RUNS runs (default 3). Needs ../shared.
set -e
build=${1:-build}
S="$build/slmc"
SH=${SLMC_SHARED:-../shared}
RUNS=${RUNS:-3}
CHUNKS=${CHUNKS:-20}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
mkdir -p "$DIR"
[ -d "$SH/reference" ] || { echo "SKIP bench/eval: $SH/reference not found"; exit 0; }
TEXT="$SH/text/books-valid.txt"
[ -f "$DIR/books-Q8_0.gguf" ] || "$S" quantize "$SH/models/books-22m/hf-bf16" "$DIR/books-Q8_0.gguf" Q8_0 -q

tps() { # model threads -> tokens/s (median of RUNS)
    i=0; vals=""
    while [ $i -lt "$RUNS" ]; do
        v=$("$S" eval "$1" --text "$TEXT" -c 256 --chunks "$CHUNKS" -t "$2" --json -q | awk -F': ' '/"tokens_per_second"/ {gsub(/,/,"",$2); print $2}')
        vals="$vals $v"; i=$((i + 1))
    done
    echo $vals | tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}

echo "# slmc bench/eval: books-22m, n_ctx 256, $CHUNKS chunks, medians of $RUNS, $(nproc) cores, OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}"
printf '%-10s %14s %14s %8s\n' type "tok/s -t 1" "tok/s -t 2" speedup
for pair in "BF16:$SH/reference/books-22m-BF16.gguf" "Q8_0:$DIR/books-Q8_0.gguf" "Q4_K_M:$SH/reference/books-22m-Q4_K_M.gguf" "Q2_K:$SH/reference/books-22m-Q2_K.gguf"; do
    name=${pair%%:*}; file=${pair#*:}
    t1=$(tps "$file" 1); t2=$(tps "$file" 2)
    printf '%-10s %14.0f %14.0f %8.2f\n' "$name" "$t1" "$t2" "$(awk "BEGIN{print $t2/$t1}")"
done
