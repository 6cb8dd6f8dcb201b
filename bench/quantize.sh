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
[ -x /usr/bin/time ] || { echo "bench: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }

synth() { # shape -> path
    if [ ! -f "$DIR/$1-f16/config.json" ]; then
        echo "bench: writing synthetic $1 F16 checkpoint" >&2
        "$S" synth --shape "$1" --dtype f16 --seed 1 -o "$DIR/$1-f16" -q
    fi
}

run() { # name runs bytes -- command...
    name=$1; runs=$2; bytes=$3; shift 3; [ "$1" = "--" ] && shift
    i=0
    while [ $i -lt "$runs" ]; do
        sync
        /usr/bin/time -v -o "$DIR/time.txt" "$@" >/dev/null 2>"$DIR/stderr.txt" || { cat "$DIR/stderr.txt" >&2; exit 1; }
        wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$DIR/time.txt")
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$DIR/time.txt")
        echo "$name $wall $rss $bytes" >>"$DIR/qresults"
        i=$((i + 1))
    done
}

rm -f "$DIR/qresults"
synth tinyllama-1.1b
SRC="$DIR/tinyllama-1.1b-f16"
B=$(du -sb "$SRC" | cut -f1)
run "tinyllama:cp(baseline)" "$RUNS" "$B" -- sh -c "rm -rf '$DIR/cp' && cp -r '$SRC' '$DIR/cp'"
for t in Q8_0 Q4_K_M Q2_K; do
    run "tinyllama:$t" "$RUNS" "$B" -- "$S" quantize "$SRC" "$DIR/out-$t.gguf" "$t" -t "$THREADS" -q
done
run "tinyllama:Q8_0+Q4_K_M+Q2_K" "$RUNS" "$B" -- "$S" quantize "$SRC" --type Q8_0,Q4_K_M,Q2_K -o "$DIR/multi-{type}.gguf" -t "$THREADS" -q
rm -rf "$DIR/cp" "$DIR"/out-*.gguf "$DIR"/multi-*.gguf
if [ "${SKIP_7B:-0}" != 1 ]; then
    synth llama-2-7b
    SRC7="$DIR/llama-2-7b-f16"
    B7=$(du -sb "$SRC7" | cut -f1)
    run "llama-2-7b:cp(baseline)" 1 "$B7" -- sh -c "rm -rf '$DIR/cp7' && cp -r '$SRC7' '$DIR/cp7'"
    run "llama-2-7b:Q4_K_M" 1 "$B7" -- "$S" quantize "$SRC7" "$DIR/out7.gguf" Q4_K_M -t "$THREADS" -q
    rm -rf "$DIR/cp7" "$DIR/out7.gguf"
fi

echo "# slmc bench/quantize: F16 synthetic checkpoints, -t $THREADS, $(nproc) cores; medians"
awk '
{ n[$1]++; w[$1, n[$1]] = $2; r[$1, n[$1]] = $3; by[$1] = $4; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
function median(arr, name, cnt,   i, j, t, v) {
    for (i = 1; i <= cnt; i++) v[i] = arr[name, i]
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return cnt % 2 ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
}
END {
    printf "%-30s %9s %9s %12s %10s\n", "run", "wall s", "MB/s", "peak RSS MB", "x cp time"
    for (i = 1; i <= k; i++) {
        nm = order[i]; split(nm, parts, ":"); base = parts[1] ":cp(baseline)"
        mw = median(w, nm, n[nm]); mr = median(r, nm, n[nm]); bw = median(w, base, n[base])
        printf "%-30s %9.2f %9.0f %12.1f %10.2f\n", nm, mw, (mw > 0 ? by[nm] / mw / 1e6 : 0), mr / 1024, (bw > 0 ? mw / bw : 0)
    }
}' "$DIR/qresults"
