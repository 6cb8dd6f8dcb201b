#!/bin/sh
# bench/peer.sh [BUILD] - slmc beside llama.cpp (b4747, ../shared/peer/build.sh) on the same files,
# in one run: for each piece of work, PAIRS pairs (default 3) run in turn (slmc, llama.cpp, slmc,
# ...), and the table gives the median wall time of each, the median of the pairwise ratios
# slmc / llama.cpp (below 1: slmc faster) and the median peak RSS of each (/usr/bin/time -v).
#   eval:     books-22m BF16, F16, Q8_0, Q4_K_M, Q3_K_M, Q2_K (books-valid.txt, -c 256, CHUNKS chunks,
#             default 60), slmc eval vs llama-perplexity, THREADS threads (default 2)
#   quantize: a synthetic tinyllama-1.1b F16 GGUF to Q8_0, Q4_0, Q4_K_M, Q3_K_M, Q2_K, Q6_K
#             (QUANT_TYPES), slmc quantize vs llama-quantize
#   eval1b:   a full-size synthetic Llama-3.2-1B (slmc synth; BF16 GGUF, and F16/Q8_0/Q4_K_M/
#             Q3_K_M/Q2_K made from it by llama-quantize), books-valid.txt, -c 256, CHUNKS_1B
#             chunks (default 2), slmc eval vs llama-perplexity, each round also running both
#             with 1 chunk, and a second table of the time per further chunk ((t(CHUNKS_1B) -
#             t(1)) / (CHUNKS_1B - 1) of each round, and its ratio; medians over the rounds):
#             the evaluation's own speed, without what both programs
#             pay once per run (loading, tokenizing the text, the first touch of the mapped
#             weights, ~1 s in this VM when the page cache holds the file in 4 KB pages), which
#             is what llama-perplexity's own tokens/s leaves out too. Not in the default WORK
#             (about 20 minutes on 2 cores, 6 GB of files in BENCH_DIR): WORK=eval1b; TYPES_1B
#             picks some of the six types.
# WORK=eval or WORK=quantize runs one part. Without a peer build it says so and exits 0.
set -e
build=${1:-build}
S="$build/slmc"
SH=${SLMC_SHARED:-../shared}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
PAIRS=${PAIRS:-3}
THREADS=${THREADS:-2}
CHUNKS=${CHUNKS:-60}
WORK=${WORK:-eval quantize}
QUANT_TYPES=${QUANT_TYPES:-Q8_0 Q4_0 Q4_K_M Q3_K_M Q2_K Q6_K}
mkdir -p "$DIR"
[ -x /usr/bin/time ] || { echo "bench: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
PEER=${SLMC_PEER_BIN:-}
if [ -z "$PEER" ]; then for d in /tmp/slmc-peer/*/build/bin; do [ -x "$d/llama-perplexity" ] && PEER=$d; done; fi
if [ -z "$PEER" ]; then
    echo "SKIP bench/peer: no llama.cpp build (sh $SH/peer/build.sh, or set SLMC_PEER_BIN)"
    exit 0
fi
[ -d "$SH/reference" ] || { echo "SKIP bench/peer: $SH/reference not found"; exit 0; }
R="$DIR/peer-results"
rm -f "$R"

# run NAME WHO -- command...: one timed run, appended to $R as "NAME WHO wall_s rss_kb"
run() {
    name=$1; who=$2; shift 3
    sync
    /usr/bin/time -v -o "$DIR/time.txt" "$@" >"$DIR/out.txt" 2>"$DIR/err.txt" || { cat "$DIR/err.txt" >&2; exit 1; }
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$DIR/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$DIR/time.txt")
    echo "$name $who $wall $rss" >>"$R"
}

TEXT="$SH/text/books-valid.txt"
# eval_pair NAME FILE CHUNKS: one run of slmc eval, then one of llama-perplexity, on FILE, -c 256
eval_pair() {
    run "$1" slmc -- "$S" eval "$2" --text "$TEXT" -c 256 --chunks "$3" -t "$THREADS" -q
    run "$1" llama -- "$PEER/llama-perplexity" -m "$2" -f "$TEXT" -c 256 -b 256 --chunks "$3" -t "$THREADS"
}
# eval_pairs NAME FILE CHUNKS: PAIRS pairs in turn
eval_pairs() {
    i=0
    while [ $i -lt "$PAIRS" ]; do
        eval_pair "$1" "$2" "$3"
        i=$((i + 1))
    done
}
# eval_rounds NAME FILE CHUNKS: PAIRS rounds, each a pair with CHUNKS chunks (NAME) and then a
# pair with 1 chunk (NAME@1), so that the time per further chunk of each round comes from runs
# next to each other
eval_rounds() {
    i=0
    while [ $i -lt "$PAIRS" ]; do
        eval_pair "$1" "$2" "$3"
        eval_pair "$1@1" "$2" 1
        i=$((i + 1))
    done
}
if echo "$WORK" | grep -qw eval; then
    # the books-22m files: llama.cpp's own BF16/Q4_K_M/Q2_K, and F16/Q8_0/Q3_K_M made by llama-quantize
    [ -f "$DIR/books-F16.gguf" ] || "$PEER/llama-quantize" "$SH/reference/books-22m-BF16.gguf" "$DIR/books-F16.gguf" F16 >/dev/null 2>&1
    [ -f "$DIR/books-Q8_0.gguf" ] || "$PEER/llama-quantize" "$SH/reference/books-22m-BF16.gguf" "$DIR/books-Q8_0.gguf" Q8_0 >/dev/null 2>&1
    [ -f "$DIR/books-Q3_K_M.gguf" ] || "$PEER/llama-quantize" "$SH/reference/books-22m-BF16.gguf" "$DIR/books-Q3_K_M.gguf" Q3_K_M >/dev/null 2>&1
    for pair in "BF16:$SH/reference/books-22m-BF16.gguf" "F16:$DIR/books-F16.gguf" "Q8_0:$DIR/books-Q8_0.gguf" \
        "Q4_K_M:$SH/reference/books-22m-Q4_K_M.gguf" "Q3_K_M:$DIR/books-Q3_K_M.gguf" "Q2_K:$SH/reference/books-22m-Q2_K.gguf"; do
        eval_pairs "eval-books22m-${pair%%:*}" "${pair#*:}" "$CHUNKS"
    done
fi
if echo "$WORK" | grep -q eval1b; then
    CHUNKS_1B=${CHUNKS_1B:-2}
    B1="$DIR/llama-3.2-1b"
    if [ ! -f "$B1-BF16.gguf" ]; then
        [ -f "$B1-hf/config.json" ] || "$S" synth --shape llama-3.2-1b --dtype bf16 --seed 1 -o "$B1-hf" -q
        "$S" convert "$B1-hf" "$B1-BF16.gguf" -q
    fi
    for t in F16 Q8_0 Q4_K_M Q3_K_M Q2_K; do
        [ -f "$B1-$t.gguf" ] || "$PEER/llama-quantize" "$B1-BF16.gguf" "$B1-$t.gguf" "$t" "$THREADS" >/dev/null 2>&1
    done
    for t in ${TYPES_1B:-BF16 F16 Q8_0 Q4_K_M Q3_K_M Q2_K}; do
        if [ "$CHUNKS_1B" -gt 1 ]; then eval_rounds "eval-llama3.2-1b-$t" "$B1-$t.gguf" "$CHUNKS_1B"
        else eval_pairs "eval-llama3.2-1b-$t" "$B1-$t.gguf" 1; fi
    done
fi
if echo "$WORK" | grep -q quantize; then
    if [ ! -f "$DIR/tinyllama-f16.gguf" ]; then
        [ -f "$DIR/tinyllama-1.1b-f16/config.json" ] || "$S" synth --shape tinyllama-1.1b --dtype f16 --seed 1 -o "$DIR/tinyllama-1.1b-f16" -q
        "$S" convert "$DIR/tinyllama-1.1b-f16" "$DIR/tinyllama-f16.gguf" -q
    fi
    for t in $QUANT_TYPES; do
        i=0
        while [ $i -lt "$PAIRS" ]; do
            run "quantize-tinyllama-$t" slmc -- "$S" quantize "$DIR/tinyllama-f16.gguf" "$DIR/q.gguf" "$t" -t "$THREADS" -q
            run "quantize-tinyllama-$t" llama -- "$PEER/llama-quantize" "$DIR/tinyllama-f16.gguf" "$DIR/q.gguf" "$t" "$THREADS"
            i=$((i + 1))
        done
        rm -f "$DIR/q.gguf"
    done
fi

echo "# slmc bench/peer: slmc beside llama.cpp ($(basename "$(dirname "$(dirname "$PEER")")")), $PAIRS pairs in turn, -t $THREADS, $(nproc) cores"
awk '
function median(v, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
{
    if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }
    if ($2 == "slmc") { ns[$1]++; ws[$1, ns[$1]] = $3; rs[$1, ns[$1]] = $4 }
    else { nl[$1]++; wl[$1, nl[$1]] = $3; rl[$1, nl[$1]] = $4 }
}
END {
    printf "%-26s %10s %10s %14s %12s %12s\n", "work", "slmc s", "llama s", "slmc/llama", "slmc MB", "llama MB"
    for (i = 1; i <= k; i++) {
        w = order[i]; n = ns[w] < nl[w] ? ns[w] : nl[w]
        delete a; delete b; delete c; delete d; delete q
        for (j = 1; j <= n; j++) { a[j] = ws[w, j]; b[j] = wl[w, j]; c[j] = rs[w, j]; d[j] = rl[w, j]; q[j] = wl[w, j] > 0 ? ws[w, j] / wl[w, j] : 0 }
        printf "%-26s %10.2f %10.2f %14.2f %12.0f %12.0f\n", w, median(a, n), median(b, n), median(q, n), median(c, n) / 1024, median(d, n) / 1024
        nr[w] = n
    }
    head = 0
    for (i = 1; i <= k; i++) {
        w = order[i]; one = w "@1"
        if (!(one in nr) || chunks < 2) continue
        if (!head++) printf "\nper further chunk (%d chunks less 1, round by round; medians)\n%-26s %10s %10s %14s\n", chunks, "work", "slmc s", "llama s", "slmc/llama"
        n = nr[w] < nr[one] ? nr[w] : nr[one]
        delete a; delete b; delete q
        for (j = 1; j <= n; j++) {
            a[j] = (ws[w, j] - ws[one, j]) / (chunks - 1); b[j] = (wl[w, j] - wl[one, j]) / (chunks - 1)
            q[j] = b[j] > 0 ? a[j] / b[j] : 0
        }
        printf "%-26s %10.2f %10.2f %14.2f\n", w, median(a, n), median(b, n), median(q, n)
    }
}' chunks="${CHUNKS_1B:-0}" "$R"
