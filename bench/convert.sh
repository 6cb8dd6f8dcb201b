#!/bin/sh
# bench/convert.sh [BUILD] - inspect and convert on a synthetic tinyllama-1.1b F16 checkpoint,
# wall time and peak RSS (/usr/bin/time -v), beside `cp` of the same files in the same run.
# Medians of RUNS runs (default 3). The checkpoint is cached in $BENCH_DIR.
set -e
build=${1:-build}
S="$build/slmc"
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
mkdir -p "$DIR"
. bench/lib.inc
SRC="$DIR/tinyllama-1.1b-f16"
if [ ! -f "$SRC/config.json" ]; then
    echo "bench: writing synthetic tinyllama-1.1b F16 checkpoint to $SRC" >&2
    "$S" synth --shape tinyllama-1.1b --dtype f16 --seed 1 -o "$SRC" -q
fi
B=$(du -sb "$SRC" | cut -f1)
timed "hf:cp" "$RUNS" "$B" -- sh -c "rm -rf '$DIR/cp-out' && cp -r '$SRC' '$DIR/cp-out'"
timed "hf:inspect" "$RUNS" "$B" -- "$S" inspect "$SRC"
timed "hf:convert->GGUF" "$RUNS" "$B" -- sh -c "rm -f '$DIR/out.gguf' && '$S' convert '$SRC' '$DIR/out.gguf' -q"
timed "hf:convert->GGUF(bf16)" "$RUNS" "$B" -- sh -c "rm -f '$DIR/o16.gguf' && '$S' convert '$SRC' '$DIR/o16.gguf' --outtype bf16 -q"
timed "gguf:cp" "$RUNS" "$B" -- sh -c "rm -f '$DIR/cp.gguf' && cp '$DIR/out.gguf' '$DIR/cp.gguf'"
timed "gguf:inspect" "$RUNS" "$B" -- "$S" inspect "$DIR/out.gguf"
timed "gguf:convert->HF" "$RUNS" "$B" -- sh -c "rm -rf '$DIR/out-hf' && '$S' convert '$DIR/out.gguf' '$DIR/out-hf' -q"
echo "# slmc bench/convert: synthetic tinyllama-1.1b F16 ($(awk "BEGIN{printf \"%.2f\", $B/1e9}") GB), medians of $RUNS, $(nproc) cores"
report
rm -rf "$DIR/cp-out" "$DIR/cp.gguf" "$DIR/out-hf" "$DIR/o16.gguf" "$DIR/out.gguf"
