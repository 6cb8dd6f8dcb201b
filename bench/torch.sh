#!/bin/sh
# bench/torch.sh [BUILD] - training speed of slmc beside PyTorch on this CPU (issue #15: slmc at
# least 1.5x PyTorch). Both sides train the same Llama shape (../shared books-22m: dim 256, ffn 768,
# 6 layers, 8/4 heads, vocab 32000, untied head; 21.1 M parameters) in fp32 on batch 4 x 256 tokens
# with THREADS threads (default 2):
#   train:   forward, cross-entropy, backward, clip 1, AdamW (lr 3e-4, weight decay 0.1)
#   distill: the same plus a no-grad teacher forward (the same shape), tau^2 KL(teacher || student)
#            at tau 2 + 0.5 CE
# slmc runs `slmc train` / `slmc distill` (teacher = student = the books-22m model) on
# books-valid.txt; PyTorch runs bench/train_torch.py (Debian's python3-torch, /usr/bin/python3) on
# random weights and tokens. Each run: one warm-up step, then STEPS timed steps (default 5), tok/s =
# 1024 x STEPS / seconds (slmc's from the "seconds" of its --metrics lines after step 1).
# PAIRS pairs (default 3) run in turn (slmc, torch, torch+, slmc, ...); the table gives the median
# tok/s of each and the median of the pairwise ratios slmc / torch (above 1: slmc faster).
#   torch   PyTorch as Debian installs it: the default libblas.so.3 (libblas3's reference BLAS
#           unless an OpenBLAS package is installed) and glibc malloc
#   torch+  PyTorch tuned: OpenBLAS (TORCH_BLAS, a folder with its libblas.so.3) and jemalloc that
#           keeps its pages (TORCH_MALLOC): in this VM page faults are dear and glibc hands the big
#           buffers back to the kernel each step. Both default to Debian's libopenblas0-pthread and
#           libjemalloc2, unpacked into BENCH_DIR with apt-get download when not installed (nothing
#           changes system-wide); TORCH_PLUS=0 leaves torch+ out; torch runs only with TORCH_PLAIN=1
#           (it takes most of the 20 minutes the script then needs).
# WORK=train or WORK=distill runs one half. Without ../shared or PyTorch (python3-torch is installed
# with scripts/bootstrap.sh when missing) it says so and exits 0.
set -e
build=${1:-build}
S="$build/slmc"
SH=${SLMC_SHARED:-../shared}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
PAIRS=${PAIRS:-3}
STEPS=${STEPS:-5}
THREADS=${THREADS:-2}
WORK=${WORK:-train distill}
TORCH_PLAIN=${TORCH_PLAIN:-0}
TORCH_PLUS=${TORCH_PLUS:-1}
PY=/usr/bin/python3
HERE=$(dirname "$0")
M="$SH/models/books-22m/hf-bf16"
mkdir -p "$DIR"
[ -d "$M" ] || { echo "SKIP bench/torch: $M not found"; exit 0; }
"$S" train --help >/dev/null 2>&1 || { echo "SKIP bench/torch: this slmc has no train command"; exit 0; }
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    sh "$HERE/../scripts/bootstrap.sh" python3-torch >/dev/null 2>&1 || true
    "$PY" -c 'import torch' >/dev/null 2>&1 ||
        { echo "SKIP bench/torch: no PyTorch for $PY (apt-get install python3-torch failed)"; exit 0; }
fi

# torch+: the libraries, from the installed packages or unpacked from their .deb files
LIBS="$DIR/torch-libs"
unpack() { # package -> unpacked under $LIBS/root (quietly nothing when apt cannot download)
    [ -d "$LIBS/root/usr/share/doc/$1" ] && return 0
    mkdir -p "$LIBS"
    (cd "$LIBS" && rm -f "$1"_*.deb && apt-get download "$1" >/dev/null 2>&1 && dpkg -x "$1"_*.deb root) || true
}
ML=/usr/lib/x86_64-linux-gnu
if [ "$TORCH_PLUS" = 1 ]; then
    if [ -z "${TORCH_BLAS:-}" ]; then
        [ -f "$ML/openblas-pthread/libblas.so.3" ] || unpack libopenblas0-pthread
        for d in "$ML/openblas-pthread" "$LIBS/root$ML/openblas-pthread"; do
            [ -f "$d/libblas.so.3" ] && TORCH_BLAS=$d && break
        done
    fi
    if [ -z "${TORCH_MALLOC:-}" ]; then
        [ -f "$ML/libjemalloc.so.2" ] || unpack libjemalloc2
        for f in "$ML/libjemalloc.so.2" "$LIBS/root$ML/libjemalloc.so.2"; do
            [ -f "$f" ] && TORCH_MALLOC=$f && break
        done
    fi
    [ -n "${TORCH_BLAS:-}${TORCH_MALLOC:-}" ] || TORCH_PLUS=0
fi

R="$DIR/torch-results"
rm -f "$R"
TOK=$((4 * 256))

slmc_run() { # train|distill -> "WORK slmc tok/s" over the steps after the first
    work=$1
    if [ "$work" = distill ]; then set -- distill --teacher "$M" --student "$M"; else set -- train --model "$M"; fi
    rm -f "$DIR/torch-slmc.jsonl"
    "$S" "$@" --data "$SH/text/books-valid.txt" --max-tokens 60000 --steps $((STEPS + 1)) --seq-len 256 --batch 4 \
        --eval-every 0 --valid-frac 0.05 --eval-seqs 4 -t "$THREADS" -q --metrics "$DIR/torch-slmc.jsonl" \
        -o "$DIR/torch-slmc-out.gguf" >/dev/null 2>"$DIR/torch-err.txt" || { cat "$DIR/torch-err.txt" >&2; exit 1; }
    grep '"tokens_per_s"' "$DIR/torch-slmc.jsonl" | sed -E 's/.*"step": ?([0-9]+).*"seconds": ?([0-9.eE+-]+).*/\1 \2/' |
        awk -v w="$work" -v tok=$TOK 'NR == 1 { s1 = $1; t1 = $2 } { s = $1; t = $2 }
            END { printf "%s slmc %.2f\n", w, (s > s1 && t > t1) ? (s - s1) * tok / (t - t1) : 0 }' >>"$R"
    rm -f "$DIR/torch-slmc-out.gguf" "$DIR/torch-slmc-out.gguf.ckpt.h5"
}

torch_run() { # train|distill torch|torch+ -> "WORK WHO tok/s"; keeps the last output per WHO
    work=$1; who=$2
    if [ "$who" = torch+ ]; then
        set -- env OPENBLAS_NUM_THREADS="$THREADS" ${TORCH_BLAS:+LD_LIBRARY_PATH="$TORCH_BLAS"} \
            ${TORCH_MALLOC:+LD_PRELOAD="$TORCH_MALLOC"} MALLOC_CONF=retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1
    else
        set -- env OPENBLAS_NUM_THREADS="$THREADS"
    fi
    "$@" "$PY" "$HERE/train_torch.py" --config "$M/config.json" --mode "$work" --batch 4 --seq-len 256 \
        --steps "$STEPS" --threads "$THREADS" >"$DIR/torch-out-$who.txt" 2>"$DIR/torch-err.txt" ||
        { cat "$DIR/torch-err.txt" >&2; exit 1; }
    echo "$work $who $(awk '$1 == "tokens_per_s" { print $2 }' "$DIR/torch-out-$who.txt")" >>"$R"
}

WHO=
[ "$TORCH_PLAIN" = 1 ] && WHO="torch"
[ "$TORCH_PLUS" = 1 ] && WHO="$WHO torch+"
[ -n "$WHO" ] || { echo "SKIP bench/torch: TORCH_PLAIN=0 and no torch+"; exit 0; }
for work in $WORK; do
    i=0
    while [ $i -lt "$PAIRS" ]; do
        slmc_run "$work"
        for who in $WHO; do torch_run "$work" "$who"; done
        i=$((i + 1))
    done
done

slmc_params=$("$S" inspect "$M" --no-tensors 2>/dev/null | sed -n -E 's/^parameters:.*\(([0-9]+)\).*/\1/p')
echo "# slmc bench/torch: books-22m shape ($slmc_params parameters in slmc, $(awk '$1 == "params" { print $2 }' \
    "$DIR/torch-out-${WHO##* }.txt") in PyTorch), batch 4 x 256, $STEPS steps after 1 warm-up, $PAIRS pairs in turn, -t $THREADS, $(nproc) cores"
for who in $WHO; do
    echo "# $who: $(sed -n 's/^torch //p' "$DIR/torch-out-$who.txt"), $(sed -n 's/^libs //p' "$DIR/torch-out-$who.txt")"
done
awk -v who="$WHO" '
function median(v, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
{ if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }; n[$1, $2]++; v[$1, $2, n[$1, $2]] = $3 }
END {
    nw = split(who, ws, " ")
    printf "%-8s %12s", "work", "slmc tok/s"
    for (x = 1; x <= nw; x++) printf " %12s %13s", ws[x] " tok/s", "slmc/" ws[x]
    printf "\n"
    for (i = 1; i <= k; i++) {
        w = order[i]; ns = n[w, "slmc"]
        delete a; for (j = 1; j <= ns; j++) a[j] = v[w, "slmc", j]
        printf "%-8s %12.1f", w, median(a, ns)
        for (x = 1; x <= nw; x++) {
            t = ws[x]; m = ns < n[w, t] ? ns : n[w, t]
            delete b; delete q
            for (j = 1; j <= n[w, t]; j++) b[j] = v[w, t, j]
            for (j = 1; j <= m; j++) q[j] = v[w, t, j] > 0 ? v[w, "slmc", j] / v[w, t, j] : 0
            printf " %12.1f %13.2f", median(b, n[w, t]), median(q, m)
        }
        printf "\n"
    }
}' "$R"
