#!/bin/sh
# bench/families.sh [BUILD] - peak memory of converting and quantizing full-size synthetic
# checkpoints of the new families (issue #14's bar: under 256 MB each), beside a plain copy, and
# llama-quantize on the same GGUF where the peer build knows the architecture (llama only in
# b4747: it knows neither qwen3 nor gemma3).
#   llama-3.2-1b (tied, rope_freqs), qwen3-0.6b (q/k norms, tied), gemma-3-1b (262k vocabulary,
#   norms stored as 1 + w, sliding windows)
# BF16 checkpoints as published; convert HF -> GGUF (BF16), quantize the GGUF to Q4_K_M and Q8_0.
# Medians of RUNS runs (default 1). Checkpoints are cached in $BENCH_DIR.
set -e
build=${1:-build}
S="$build/slmc"
DIR=${BENCH_DIR:-/tmp/slmc-bench}
RUNS=${RUNS:-1}
THREADS=${THREADS:-2}
mkdir -p "$DIR"
. bench/lib.inc
PEER=${SLMC_PEER_BIN:-}
if [ -z "$PEER" ]; then for d in /tmp/slmc-peer/*/build/bin; do [ -x "$d/llama-quantize" ] && PEER=$d; done; fi

for shape in llama-3.2-1b qwen3-0.6b gemma-3-1b; do
    src="$DIR/$shape-bf16"
    if [ ! -f "$src/config.json" ]; then
        echo "bench: writing synthetic $shape BF16 checkpoint" >&2
        "$S" synth --shape "$shape" --dtype bf16 --seed 1 -o "$src" -t "$THREADS" -q
    fi
    B=$(du -sb "$src" | cut -f1)
    timed "$shape:cp" "$RUNS" "$B" -- sh -c "rm -rf '$DIR/cp' && cp -r '$src' '$DIR/cp'"
    rm -rf "$DIR/cp"
    timed "$shape:convert" "$RUNS" "$B" -- "$S" convert "$src" "$DIR/$shape.gguf" -t "$THREADS" -q
    for t in Q4_K_M Q8_0; do
        timed "$shape:quantize-$t" "$RUNS" "$B" -- "$S" quantize "$DIR/$shape.gguf" "$DIR/out.gguf" "$t" -t "$THREADS" -q
        if [ -n "$PEER" ] && [ "$shape" = llama-3.2-1b ]; then
            timed "$shape:llama-quantize-$t" "$RUNS" "$B" -- "$PEER/llama-quantize" "$DIR/$shape.gguf" "$DIR/out.gguf" "$t" "$THREADS"
        fi
        rm -f "$DIR/out.gguf"
    done
    rm -f "$DIR/$shape.gguf"
done

echo "# slmc bench/families: BF16 synthetic checkpoints, -t $THREADS, $(nproc) cores; medians of $RUNS"
report
awk '$1 !~ /llama-quantize|:cp$/ && $3 > 256 * 1024 { print "OVER 256 MB:", $1, $3 / 1024, "MB"; bad = 1 } END { exit bad }' "$DIR/results" &&
    echo "every slmc run stayed under 256 MB peak RSS"
