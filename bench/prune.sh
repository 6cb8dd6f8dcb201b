#!/bin/sh
# bench/prune.sh [BUILD] - structured pruning of books-22m: PPL on books-valid.txt (-c 256,
# --chunks 50) after cutting 25% and 50% of the BLOCK parameters (the 4.72M parameters inside
# the 6 layers; the two 32000x256 embeddings, 16.4M of the 21.1M, are not counted), for each
# axis alone and a mixed cut, ranked by activation (calibration on books-train.txt), weight
# magnitude and random (seed 42) importance. One table; the "cut" columns give the share of
# block and of all parameters each shape really removes (axes come in steps: heads by whole
# KV groups, layers by sixths).
#   heads   attention is only 25% of the block parameters, so this axis alone cannot reach the
#           cuts: its rows cut 25% / 50% of the attention parameters (whole KV groups)
#   layers  the nearest whole layers at or above the cut: keep 4 (33%) and 3 (50%)
#   hidden  the residual width; it also narrows the embeddings
#   mixed   every width axis at once (and one layer at 50%), fixed shapes near the cut
#   search  --target-params 0.75 / 0.5 --target-scope blocks with activation scores (the shape
#           the search picks is then applied with the other rankings)
# Two more columns: activation with --reconstruct (heads and FFN channels re-chosen per layer by
# structured OBS, attn_output / ffn_down refit) and magnitude with --refit (its own choice, the
# same refit), both on the calibration chunks of the activation scores.
set -e
build=${1:-build}
S=${SLMC:-$build/slmc}
SHARED=${SLMC_SHARED:-../shared}
DIR=${BENCH_DIR:-/tmp/slmc-bench}/prune
THREADS=${THREADS:-2}
CHUNKS=${CHUNKS:-50}
CALIB_CHUNKS=${CALIB_CHUNKS:-32}
M="$SHARED/models/books-22m/hf-bf16"
VALID="$SHARED/text/books-valid.txt"
TRAIN="$SHARED/text/books-train.txt"
for f in "$M" "$VALID" "$TRAIN"; do
    [ -e "$f" ] || { echo "SKIP bench/prune: $f not found"; exit 0; }
done
mkdir -p "$DIR"
export OMP_WAIT_POLICY=passive

ppl() { # ppl MODEL -> prints PPL
    "$S" eval "$1" --text "$VALID" -c 256 --chunks "$CHUNKS" -t "$THREADS" -q --json | sed -n 's/.*"ppl": \([0-9.e+-]*\),*/\1/p'
}
json_field() { sed -n "s/.*\"$1\": \([0-9.e+-]*\),*/\1/p" "$2"; }

t0=$(date +%s)
"$S" prune "$M" --calib "$TRAIN" -c 256 --chunks "$CALIB_CHUNKS" --scores "$DIR/activation.h5" -t "$THREADS" -q
"$S" prune "$M" --method magnitude --scores "$DIR/magnitude.h5" -q
"$S" prune "$M" --method random --seed 42 --scores "$DIR/random.h5" -q
base=$(ppl "$M")

# the mixed shapes, chosen once with activation scores
for frac in 0.75 0.5; do
    "$S" prune "$M" "$DIR/mixed-$frac.gguf" --from-scores "$DIR/activation.h5" --target-params $frac \
        --target-scope blocks --json -q >"$DIR/mixed-$frac.json"
done
mixed_flags() { # the shape of mixed-FRAC.json as axis flags
    python3 - "$DIR/mixed-$1.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); a, b = j["shape_in"], j["shape_out"]
f = []
if b["n_layer"] < a["n_layer"]: f += ["--layers", str(b["n_layer"])]
if b["n_head"] < a["n_head"]:
    f += ["--heads", str(b["n_head"])]
    if b["n_head_kv"] < a["n_head_kv"]: f += ["--head-groups"]
if b["n_ff"] < a["n_ff"]: f += ["--ffn", str(b["n_ff"])]
if b["n_embd"] < a["n_embd"]: f += ["--hidden", str(b["n_embd"])]
print(" ".join(f))
PY
}

rows="ffn-25:--ffn 512
ffn-50:--ffn 256
heads-25att:--heads 6 --head-groups
heads-50att:--heads 4 --head-groups
layers-33:--layers 4
layers-50:--layers 3
hidden-25:--hidden 192
hidden-50:--hidden 128
mixed-25:--heads 6 --head-groups --ffn 624 --hidden 240
mixed-50:--layers 5 --heads 6 --head-groups --ffn 512 --hidden 224
search-25:$(mixed_flags 0.75)
search-50:$(mixed_flags 0.5)"

out="$DIR/table.md"
{
    echo "# slmc bench/prune: books-22m (21.1M params, 4.72M in the blocks), PPL on books-valid.txt, -c 256 --chunks $CHUNKS"
    echo "# activation scores: $CALIB_CHUNKS chunks of 256 tokens of books-train.txt; unpruned PPL $base"
    echo
    echo "| cut | flags | block params cut | all params cut | activation | activation + reconstruct | magnitude | magnitude + refit | random |"
    echo "|---|---|---|---|---|---|---|---|---|"
} >"$out"
cat "$out"
# variant: label, scores file, extra flags (reconstruct / refit run on the calibration text)
recon="--calib $TRAIN -c 256 --chunks $CALIB_CHUNKS -t $THREADS"
variants="activation:activation:
activation-reconstruct:activation:--reconstruct $recon
magnitude:magnitude:
magnitude-refit:magnitude:--refit $recon
random:random:"
echo "$rows" | while IFS=: read -r name flags; do
    line="| $name | \`$flags\` |"
    cuts=""
    for v in $(echo "$variants" | cut -d: -f1); do
        scores=$(echo "$variants" | grep "^$v:" | cut -d: -f2)
        extra=$(echo "$variants" | grep "^$v:" | cut -d: -f3-)
        # shellcheck disable=SC2086
        "$S" prune "$M" "$DIR/$name-$v.gguf" --from-scores "$DIR/$scores.h5" $flags $extra --json -q >"$DIR/$name-$v.json"
        if [ -z "$cuts" ]; then
            cb=$(json_field block_params_removed_frac "$DIR/$name-$v.json")
            ca=$(json_field params_removed_frac "$DIR/$name-$v.json")
            cuts=$(awk -v b="$cb" -v a="$ca" 'BEGIN { printf "%.1f%% | %.1f%%", b * 100, a * 100 }')
            line="$line $cuts |"
        fi
        p=$(ppl "$DIR/$name-$v.gguf")
        line="$line $(printf '%.2f' "$p") |"
        rm -f "$DIR/$name-$v.gguf"
    done
    echo "$line" | tee -a "$out"
done
echo
echo "$(($(date +%s) - t0)) s; table in $out"
