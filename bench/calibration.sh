#!/bin/sh
# bench/calibration.sh [BUILD] - what calibration buys on books-22m: PPL and KLD (vs the BF16
# reference) on books-valid.txt with `slmc eval -c 256 --chunks 100` for Q2_K, Q3_K_S, Q3_K_M and
# Q4_K_M quantized
#   plain    slmc quantize, no calibration (llama-quantize's bytes)
#   imatrix  slmc quantize --imatrix, importance from slmc imatrix on books-train.txt (the column
#            is left out, with a note, while this build's quantize has no --imatrix)
#   gptq-par slmc quantize --method gptq --gptq-parallel: Hessians from the unquantized model,
#            one collection for all four mixes
#   gptq-seq slmc quantize --method gptq --gptq-sequential: layer L's Hessians through the
#            already quantized layers 0..L-1 (one collection per mix)
#   gptq     slmc quantize --method gptq (the default: --gptq-fp-target, sequential and fitting
#            the unquantized model's products; one collection per mix)
# beside llama.cpp's own imatrix results (../shared/reference/ppl-books-22m.json), then fit-to-size
# rows: --target-size set to each mix's tensor bytes, against that mix (equal size).
# Calibration: -c 256 --chunks 50 of books-train.txt for GPTQ (CALIB_CHUNKS), 100 for the imatrix
# (IMATRIX_CHUNKS, as llama.cpp's reference imatrix). Work files in $BENCH_DIR; a variant whose
# four evals are already there is not quantized again (delete eval-*.json to redo).
set -e
build=${1:-build}
S="$build/slmc"
SH=../shared
HF=$SH/models/books-22m/hf-bf16
BASE=$SH/reference/books-22m-BF16.gguf
TRAIN=$SH/text/books-train.txt
VALID=$SH/text/books-valid.txt
REF=$SH/reference/ppl-books-22m.json
DIR=${BENCH_DIR:-/tmp/slmc-bench-calib}
CALIB_CHUNKS=${CALIB_CHUNKS:-50}
IMATRIX_CHUNKS=${IMATRIX_CHUNKS:-100}
EVAL_CHUNKS=${EVAL_CHUNKS:-100}
MIXES="Q2_K Q3_K_S Q3_K_M Q4_K_M"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
for f in "$HF/config.json" "$BASE" "$TRAIN" "$VALID" "$REF"; do
    [ -e "$f" ] || { echo "SKIP bench/calibration.sh: $f not found"; exit 0; }
done
command -v python3 >/dev/null || { echo "bench: needs python3 to read the JSON reports" >&2; exit 1; }
mkdir -p "$DIR"
log() { echo "bench: $*" >&2; }
types=$(echo $MIXES | tr ' ' ',')

# The base log-probabilities once; every variant is compared with them.
if [ ! -f "$DIR/base.h5" ]; then
    log "BF16 reference logits"
    "$S" eval "$BASE" --text "$VALID" -c 256 --chunks "$EVAL_CHUNKS" --save-logits "$DIR/base.h5" --json -q >"$DIR/eval-base.json"
fi

ev() { # name model -> $DIR/eval-name.json
    [ -f "$DIR/eval-$1.json" ] && return 0
    log "eval $1"
    "$S" eval "$2" --text "$VALID" -c 256 --chunks "$EVAL_CHUNKS" --kl-logits "$DIR/base.h5" --json -q >"$DIR/eval-$1.json.tmp"
    mv "$DIR/eval-$1.json.tmp" "$DIR/eval-$1.json"
}

evaluated() { # variant -> true when every mix's eval is there
    for t in $MIXES; do [ -f "$DIR/eval-$1-$t.json" ] || return 1; done
}

evaluated plain || { log "plain quantization"; "$S" quantize "$HF" --type "$types" -o "$DIR/plain-{type}.gguf" -q; }
for v in gptqpar:--gptq-parallel gptqseq:--gptq-sequential gptq:; do
    name=${v%%:*} flag=${v#*:}
    evaluated "$name" && continue
    log "$name quantization (-c 256 --chunks $CALIB_CHUNKS${flag:+, $flag})"
    "$S" quantize "$HF" --type "$types" -o "$DIR/$name-{type}.gguf" --method gptq $flag --calib "$TRAIN" -c 256 \
        --chunks "$CALIB_CHUNKS" >"$DIR/$name.txt"
    tail -n 1 "$DIR/$name.txt" >&2
done

have_imatrix=0
if "$S" quantize --help 2>/dev/null | grep -qE -- '^ +--imatrix '; then
    log "imatrix (-c 256 --chunks $IMATRIX_CHUNKS, as the llama-imatrix reference)"
    if evaluated imatrix || "$S" imatrix "$HF" --text "$TRAIN" -c 256 --chunks "$IMATRIX_CHUNKS" -o "$DIR/imatrix.dat" -q >/dev/null &&
        "$S" quantize "$HF" --type "$types" -o "$DIR/imatrix-{type}.gguf" --imatrix "$DIR/imatrix.dat" -q; then
        have_imatrix=1
    else
        log "imatrix run failed; leaving its column out"
    fi
fi

for t in $MIXES; do
    ev "plain-$t" "$DIR/plain-$t.gguf"
    ev "gptqpar-$t" "$DIR/gptqpar-$t.gguf"
    ev "gptqseq-$t" "$DIR/gptqseq-$t.gguf"
    ev "gptq-$t" "$DIR/gptq-$t.gguf"
    [ $have_imatrix = 1 ] && ev "imatrix-$t" "$DIR/imatrix-$t.gguf"
done

# Fit-to-size at each mix's tensor bytes (plain and with GPTQ).
for t in Q3_K_M Q4_K_M; do
    bytes=$("$S" quantize "$HF" --type "$t" --dry-run --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['bytes'])")
    echo "$bytes" >"$DIR/size-$t"
    [ -f "$DIR/eval-fit-$t.json" ] ||
        "$S" quantize "$HF" "$DIR/fit-$t.gguf" --target-size "$bytes" --json -q >"$DIR/q-fit-$t.json"
    [ -f "$DIR/eval-fitgptq-$t.json" ] ||
        "$S" quantize "$HF" "$DIR/fitgptq-$t.gguf" --target-size "$bytes" --method gptq --calib "$TRAIN" -c 256 \
            --chunks "$CALIB_CHUNKS" --json -q >"$DIR/q-fitgptq-$t.json"
    ev "fit-$t" "$DIR/fit-$t.gguf"
    ev "fitgptq-$t" "$DIR/fitgptq-$t.gguf"
done

python3 - "$DIR" "$REF" "$have_imatrix" "$MIXES" "$HF" <<'EOF'
import json, os, sys
d, ref_path, have_im, mixes = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4].split()
ref = {r["label"]: r for r in json.load(open(ref_path))}
def ev(name):
    p = os.path.join(d, "eval-%s.json" % name)
    return json.load(open(p)) if os.path.exists(p) else None
def cell(e):
    return "%8.3f %9.6f" % (e["ppl"], e["kld_mean"]) if e else "%8s %9s" % ("-", "-")
def size(path):
    return os.path.getsize(path) / 1e6
base = ev("base")
print("books-22m on books-valid.txt, -c 256 --chunks %d; KLD vs BF16 (slmc PPL %.3f; llama.cpp %.3f)" %
      (base["chunks"], base["ppl"], ref["BF16"]["ppl"]))
print("calibration: books-train.txt, -c 256, %s chunks" % os.environ.get("CALIB_CHUNKS", "50"))
cols = (["plain", "imatrix"] if have_im else ["plain"]) + ["gptqpar", "gptqseq", "gptq"]
names = {"gptqpar": "gptq parallel", "gptqseq": "gptq sequential", "gptq": "gptq fp-target"}
hdr = "%-8s %7s" % ("mix", "MB") + "".join(" | %-18s" % names.get(c, c)[:18] for c in cols) + " | %-18s | %-18s" % ("llama.cpp plain", "llama.cpp imatrix")
print(hdr)
print("%-8s %7s" % ("", "") + "".join(" | %8s %9s" % ("PPL", "KLD") for _ in cols) + " | %8s %9s | %8s %9s" % ("PPL", "KLD", "PPL", "KLD"))
for t in mixes:
    row = "%-8s %7.2f" % (t, size(os.path.join(d, "plain-%s.gguf" % t)))
    for c in cols:
        row += " | " + cell(ev("%s-%s" % (c, t)))
    r0, r1 = ref.get(t), ref.get("imatrix-" + t)
    row += " | " + ("%8.3f %9.6f" % (r0["ppl"], r0["kld_mean"]) if r0 else "%18s" % "-")
    row += " | " + ("%8.3f %9.6f" % (r1["ppl"], r1["kld_mean"]) if r1 else "%18s" % "-")
    print(row)
if not have_im:
    print("(imatrix column left out: this build's `slmc quantize` has no --imatrix yet)")
print()
print("fit-to-size vs the mix of equal size (tensor data bytes = the mix's):")
print("%-20s %12s %8s %9s" % ("variant", "data bytes", "PPL", "KLD"))
for t in ["Q3_K_M", "Q4_K_M"]:
    target = int(open(os.path.join(d, "size-" + t)).read())
    for name, label in [("plain-" + t, t + " plain"), ("fit-" + t, "fit plain"), ("gptq-" + t, t + " gptq"),
                        ("fitgptq-" + t, "fit gptq")]:
        q = os.path.join(d, "q-%s.json" % name)
        got = json.load(open(q))[0]["bytes"] if os.path.exists(q) else target
        print("%-20s %12d %s" % (label, got, cell(ev(name))))
EOF
