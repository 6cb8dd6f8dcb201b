#!/bin/sh
# bench/distill.sh [BUILD] - training speed of `slmc train` on the books-22m shape (dim 256,
# ffn 768, 6 layers, 8/4 heads, vocab 32000) with -t 2: tokens/s of the forward + backward +
# AdamW step (batch 4 x 256 tokens), and the share of the student's forward + backward spent
# in matrix products; -t 1 beside it as the baseline. Each figure is the median of RUNS runs
# (default 3): the 2 cores are shared, so single runs vary a lot. Needs ../shared.
set -e
build=${1:-build}
S="$build/slmc"
SH=${SLMC_SHARED:-../shared}
STEPS=${STEPS:-6}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
mkdir -p "$DIR"
[ -d "$SH/models/books-22m/hf-bf16" ] || { echo "SKIP bench/distill: $SH/models/books-22m not found"; exit 0; }
"$S" train --help >/dev/null 2>&1 || { echo "SKIP bench/distill: this slmc has no train command"; exit 0; }
run() { # threads -> "tok/s matmul_share" of the last step
    rm -f "$DIR/distill.jsonl"
    "$S" train --model "$SH/models/books-22m/hf-bf16" --data "$SH/text/books-valid.txt" --max-tokens 60000 \
        --steps "$STEPS" --seq-len 256 --batch 4 --eval-every 0 --valid-frac 0.05 --eval-seqs 4 -t "$1" -q \
        --metrics "$DIR/distill.jsonl" -o "$DIR/distill-out.gguf" >/dev/null
    grep '"tokens_per_s"' "$DIR/distill.jsonl" | tail -n 1 |
        sed -E 's/.*"tokens_per_s": ?([0-9.eE+-]+).*"matmul_share": ?([0-9.eE+-]+).*/\1 \2/'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
echo "# slmc bench/distill: books-22m shape, batch 4 x 256, $STEPS steps, median of $RUNS runs, $(nproc) cores, OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}"
printf '%-8s %12s %14s\n' threads "tok/s" "matmul share"
for t in 1 2; do
    rm -f "$DIR/runs"
    i=0
    while [ $i -lt "$RUNS" ]; do run $t >>"$DIR/runs"; i=$((i + 1)); done
    tps=$(cut -d' ' -f1 "$DIR/runs" | median)
    share=$(cut -d' ' -f2 "$DIR/runs" | median)
    printf '%-8s %12.0f %13.0f%%\n' "-t $t" "$tps" "$(echo "$share" | awk '{print $1 * 100}')"
done
