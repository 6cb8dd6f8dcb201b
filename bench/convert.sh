#!/bin/sh
# bench/convert.sh [BUILD] - inspect and convert on a synthetic tinyllama-1.1b F16 checkpoint,
# wall time and peak RSS (/usr/bin/time -v), beside `cp` of the same files in the same run.
# Medians of RUNS runs (default 3). The checkpoint is cached in $BENCH_DIR.
set -e
build=${1:-build}
S="$build/slmc"
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
SHAPE=${SHAPE:-tinyllama-1.1b}
mkdir -p "$DIR"
SRC="$DIR/$SHAPE-f16"
if [ ! -f "$SRC/config.json" ]; then
    echo "bench: writing synthetic $SHAPE F16 checkpoint to $SRC" >&2
    "$S" synth --shape "$SHAPE" --dtype f16 --seed 1 -o "$SRC" -q
fi
[ -x /usr/bin/time ] || { echo "bench: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }

# measure NAME -- command...: append "NAME wall_s rss_kb" for each run to $DIR/results
measure() {
    name=$1; shift; [ "$1" = "--" ] && shift
    i=0
    while [ $i -lt "$RUNS" ]; do
        sync
        /usr/bin/time -v -o "$DIR/time.txt" "$@" >/dev/null 2>"$DIR/stderr.txt" || { cat "$DIR/stderr.txt" >&2; exit 1; }
        wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$DIR/time.txt")
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$DIR/time.txt")
        echo "$name $wall $rss" >>"$DIR/results"
        i=$((i + 1))
    done
}

rm -f "$DIR/results"
bytes=$(du -sb "$SRC" | cut -f1)
measure "cp-r(baseline)" -- sh -c "rm -rf '$DIR/cp-out' && cp -r '$SRC' '$DIR/cp-out'"
measure "inspect(HF)" -- "$S" inspect "$SRC"
measure "convert(HF->GGUF)" -- sh -c "rm -f '$DIR/out.gguf' && '$S' convert '$SRC' '$DIR/out.gguf' -q"
measure "inspect(GGUF)" -- "$S" inspect "$DIR/out.gguf"
measure "cp(GGUF,baseline)" -- sh -c "rm -f '$DIR/cp.gguf' && cp '$DIR/out.gguf' '$DIR/cp.gguf'"
measure "convert(GGUF->HF)" -- sh -c "rm -rf '$DIR/out-hf' && '$S' convert '$DIR/out.gguf' '$DIR/out-hf' -q"
measure "convert(HF->GGUF,bf16)" -- sh -c "rm -f '$DIR/out-bf16.gguf' && '$S' convert '$SRC' '$DIR/out-bf16.gguf' --outtype bf16 -q"

echo "# slmc bench/convert: $SHAPE F16, $(awk "BEGIN{printf \"%.2f\", $bytes/1e9}") GB, medians of $RUNS runs, $(nproc) cores"
awk -v bytes="$bytes" '
{ n[$1]++; w[$1, n[$1]] = $2; r[$1, n[$1]] = $3; if (!($1 in seen)) { seen[$1]=1; order[++k]=$1 } }
function median(arr, name, cnt,   i, j, t, v) {
    for (i = 1; i <= cnt; i++) v[i] = arr[name, i]
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return cnt % 2 ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
}
END {
    base = median(w, "cp-r(baseline)", n["cp-r(baseline)"])
    printf "%-24s %10s %10s %12s %10s\n", "operation", "wall s", "MB/s", "peak RSS MB", "x cp time"
    for (i = 1; i <= k; i++) {
        nm = order[i]; mw = median(w, nm, n[nm]); mr = median(r, nm, n[nm])
        printf "%-24s %10.2f %10.0f %12.1f %10.2f\n", nm, mw, (mw > 0 ? bytes / mw / 1e6 : 0), mr / 1024, (base > 0 ? mw / base : 0)
    }
}' "$DIR/results"
rm -rf "$DIR/cp-out" "$DIR/cp.gguf" "$DIR/out-hf" "$DIR/out-bf16.gguf"
