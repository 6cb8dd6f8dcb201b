#!/bin/sh
# bench/iquants.sh [BUILD] - KLD against size on books-22m for the low-bit mixes (#17): every
# i-quant mix and the K-quant mixes between them, four ways, all measured by the same evaluator:
#   llama    llama-quantize --imatrix (llama.cpp's reference imatrix, books-22m-imatrix.dat)
#   imatrix  slmc quantize --imatrix, the same imatrix (llama.cpp's plans and kernels: the bytes
#            should equal llama's except where slmc's Q4_K/Q6_K search goes further)
#   gptq     slmc quantize --method gptq (fp target, -c 256 --chunks 50 of books-train.txt) with
#            the same imatrix for what GPTQ does not calibrate (token_embd)
#   fit      slmc quantize --target-size (llama's file's tensor bytes) --method gptq --imatrix:
#            each tensor's type chosen among all block types to fit exactly that size
#   fit at FIT_BPW: the same at fixed sizes below the smallest mix
# KLD and PPL: slmc eval -c 256 --chunks 100 on books-valid.txt against the BF16 logits (slmc's
# KLD is llama-perplexity's; docs/eval.md). The table goes to stdout; with SVG=FILE also a chart
# (bench/kld_chart.py). Needs ../shared and the peer llama.cpp (../shared/peer/build.sh); work
# files in $BENCH_DIR (a file already there is not made again: delete it to redo).
set -e
build=${1:-build}
S="$build/slmc"
SH=${SHARED:-../shared}
BASE=$SH/reference/books-22m-BF16.gguf
IM=$SH/reference/books-22m-imatrix.dat
TRAIN=$SH/text/books-train.txt
VALID=$SH/text/books-valid.txt
DIR=${BENCH_DIR:-/tmp/slmc-bench-iquants}
CALIB_CHUNKS=${CALIB_CHUNKS:-50}
EVAL_CHUNKS=${EVAL_CHUNKS:-100}
MIXES=${MIXES:-"IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M Q2_K IQ3_XXS IQ3_XS IQ3_S IQ3_M Q3_K_M IQ4_XS IQ4_NL"}
# sizes below the smallest mix (on books-22m the mixes keep the 32000-row embedding and output
# matrices, 78% of the weights, at 2.6 bits or more): fit-to-size + GPTQ alone
FIT_BPW=${FIT_BPW:-"1.8 2.2 2.6 3.0"}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
for f in "$BASE" "$IM" "$TRAIN" "$VALID" "$SH/peer/build.sh"; do
    [ -e "$f" ] || { echo "SKIP bench/iquants.sh: $f not found"; exit 0; }
done
command -v python3 >/dev/null || { echo "bench: needs python3 to read the JSON reports" >&2; exit 1; }
PEER=$(sh "$SH/peer/build.sh")
mkdir -p "$DIR"
log() { echo "bench: $*" >&2; }

if [ ! -f "$DIR/base.h5" ]; then
    log "BF16 reference logits"
    "$S" eval "$BASE" --text "$VALID" -c 256 --chunks "$EVAL_CHUNKS" --save-logits "$DIR/base.h5" --json -q >"$DIR/eval-base.json"
fi
ev() { # name -> $DIR/eval-name.json from $DIR/name.gguf
    [ -f "$DIR/eval-$1.json" ] && return 0
    log "eval $1"
    "$S" eval "$DIR/$1.gguf" --text "$VALID" -c 256 --chunks "$EVAL_CHUNKS" --kl-logits "$DIR/base.h5" --json -q \
        >"$DIR/eval-$1.json.tmp"
    mv "$DIR/eval-$1.json.tmp" "$DIR/eval-$1.json"
}
tensor_bytes() { "$S" inspect "$1" --json --no-tensors | python3 -c "import json,sys; print(json.load(sys.stdin)['n_bytes'])"; }

for t in $MIXES; do
    [ -f "$DIR/llama-$t.gguf" ] || {
        log "llama-quantize $t"
        "$PEER/llama-quantize" --imatrix "$IM" "$BASE" "$DIR/llama-$t.gguf" "$t" >"$DIR/llama-$t.log" 2>&1 ||
            { tail -n 5 "$DIR/llama-$t.log" >&2; exit 1; }
    }
    [ -f "$DIR/imatrix-$t.gguf" ] || { log "slmc quantize --imatrix $t"; "$S" quantize "$BASE" "$DIR/imatrix-$t.gguf" "$t" --imatrix "$IM" -q; }
    [ -f "$DIR/gptq-$t.gguf" ] || {
        log "slmc quantize --method gptq $t"
        "$S" quantize "$BASE" "$DIR/gptq-$t.gguf" "$t" --method gptq --imatrix "$IM" --calib "$TRAIN" -c 256 \
            --chunks "$CALIB_CHUNKS" -q
    }
    [ -f "$DIR/fit-$t.gguf" ] || {
        bytes=$(tensor_bytes "$DIR/llama-$t.gguf")
        log "slmc quantize --target-size $bytes --method gptq ($t's size)"
        "$S" quantize "$BASE" "$DIR/fit-$t.gguf" --target-size "$bytes" --method gptq --imatrix "$IM" --calib "$TRAIN" \
            -c 256 --chunks "$CALIB_CHUNKS" -q
    }
    for v in llama imatrix gptq fit; do
        ev "$v-$t"
        [ -f "$DIR/bytes-$v-$t" ] || tensor_bytes "$DIR/$v-$t.gguf" >"$DIR/bytes-$v-$t"
    done
done

for b in $FIT_BPW; do
    [ -f "$DIR/fitbpw-$b.gguf" ] || {
        log "slmc quantize --target-bpw $b --method gptq"
        "$S" quantize "$BASE" "$DIR/fitbpw-$b.gguf" --target-bpw "$b" --method gptq --imatrix "$IM" --calib "$TRAIN" \
            -c 256 --chunks "$CALIB_CHUNKS" -q
    }
    ev "fitbpw-$b"
    [ -f "$DIR/bytes-fitbpw-$b" ] || tensor_bytes "$DIR/fitbpw-$b.gguf" >"$DIR/bytes-fitbpw-$b"
done

n_params=$("$S" inspect "$BASE" --json --no-tensors | python3 -c "import json,sys; print(json.load(sys.stdin)['n_params'])")
python3 - "$DIR" "$MIXES" "$n_params" "$FIT_BPW" <<'EOF'
import json, os, sys
d, mixes, n_params = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
params = json.load(open(os.path.join(d, "eval-base.json")))
rows = []
def get(v, t):  # (tensor bytes, PPL, KLD) of variant v of mix (or size) t
    e = json.load(open(os.path.join(d, "eval-%s-%s.json" % (v, t))))
    b = int(open(os.path.join(d, "bytes-%s-%s" % (v, t))).read())
    return b, e["ppl"], e["kld_mean"]
print("books-22m, books-valid.txt -c 256 --chunks %d, KLD vs BF16 (PPL %.3f); imatrix: llama.cpp's" %
      (params["chunks"], params["ppl"]))
print("bpw = tensor data bits / %d parameters" % n_params)
print("%-8s | %-25s | %-25s | %-25s | %-25s | %s" % ("mix", "llama.cpp mix + imatrix", "slmc mix + imatrix",
      "slmc mix, GPTQ", "slmc fit-to-size + GPTQ", "fit/llama KLD"))
print("%-8s |" % "" + " %5s %8s %10s |" % ("bpw", "PPL", "KLD") * 4)
out = []
for t in mixes:
    cells = [get(v, t) for v in ("llama", "imatrix", "gptq", "fit")]
    row = "%-8s |" % t
    for b, p, k in cells:
        row += " %5.3f %8.3f %10.6f |" % (8.0 * b / n_params, p, k)
    row += " %.3f" % (cells[3][2] / cells[0][2])
    print(row)
    out.append({"mix": t, **{v: {"bytes": c[0], "bpw": 8.0 * c[0] / n_params, "ppl": c[1], "kld": c[2]}
                              for v, c in zip(("llama", "imatrix", "gptq", "fit"), cells)}})
print()
print("fit-to-size + GPTQ below the smallest mix:")
print("%-8s | %5s %8s %10s" % ("target", "bpw", "PPL", "KLD"))
extra = []
for b in sys.argv[4].split():
    by, p, k = get("fitbpw", b)
    print("%-8s | %5.3f %8.3f %10.6f" % (b, 8.0 * by / n_params, p, k))
    extra.append({"target_bpw": float(b), "bytes": by, "bpw": 8.0 * by / n_params, "ppl": p, "kld": k})
json.dump({"mixes": out, "fit_below": extra}, open(os.path.join(d, "table.json"), "w"), indent=1)
EOF
if [ -n "$SVG" ]; then python3 "$(dirname "$0")/kld_chart.py" "$DIR/table.json" "$SVG"; log "chart: $SVG"; fi
