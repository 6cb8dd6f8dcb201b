#!/bin/sh
# bench/quantize.sh [BUILD] - quantize synthetic checkpoints: MB/s of source read and peak RSS
# (/usr/bin/time -v), beside a plain copy of the same files in the same run.
#   tinyllama-1.1b F16: Q8_0, Q4_K_M, Q2_K, and all three from one read
#   llama-2-7b F16 (13.5 GB, skipped when SKIP_7B=1): Q4_K_M, peak RSS must stay under 1 GB
# Medians of RUNS runs (default 1 for 7B, 3 otherwise). Checkpoints are cached in $BENCH_DIR.
set -e
build=${1:-build}
S="$build/slmc"
DIR=${BENCH_DIR:-/tmp/slmc-bench}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
mkdir -p "$DIR"
. bench/lib.inc

synth() { # shape -> path
    if [ ! -f "$DIR/$1-f16/config.json" ]; then
        echo "bench: writing synthetic $1 F16 checkpoint" >&2
        "$S" synth --shape "$1" --dtype f16 --seed 1 -o "$DIR/$1-f16" -q
    fi
}

synth tinyllama-1.1b
SRC="$DIR/tinyllama-1.1b-f16"
B=$(du -sb "$SRC" | cut -f1)
timed "tinyllama:cp" "$RUNS" "$B" -- sh -c "rm -rf '$DIR/cp' && cp -r '$SRC' '$DIR/cp'"
for t in Q8_0 Q4_K_M Q2_K; do
    timed "tinyllama:$t" "$RUNS" "$B" -- "$S" quantize "$SRC" "$DIR/out-$t.gguf" "$t" -t "$THREADS" -q
done
timed "tinyllama:Q8_0+Q4_K_M+Q2_K" "$RUNS" "$B" -- "$S" quantize "$SRC" --type Q8_0,Q4_K_M,Q2_K -o "$DIR/multi-{type}.gguf" -t "$THREADS" -q
rm -rf "$DIR/cp" "$DIR"/out-*.gguf "$DIR"/multi-*.gguf
if [ "${SKIP_7B:-0}" != 1 ]; then
    synth llama-2-7b
    SRC7="$DIR/llama-2-7b-f16"
    B7=$(du -sb "$SRC7" | cut -f1)
    timed "llama-2-7b:cp" 1 "$B7" -- sh -c "rm -rf '$DIR/cp7' && cp -r '$SRC7' '$DIR/cp7'"
    timed "llama-2-7b:Q4_K_M" 1 "$B7" -- "$S" quantize "$SRC7" "$DIR/out7.gguf" Q4_K_M -t "$THREADS" -q
    rm -rf "$DIR/cp7" "$DIR/out7.gguf"
fi

echo "# slmc bench/quantize: F16 synthetic checkpoints, -t $THREADS, $(nproc) cores; medians"
report
