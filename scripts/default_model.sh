#!/bin/sh
# default_model.sh BUILD [DIR] - build slmc's built-in default model, reproducibly and offline:
#   text   the King James Bible (public domain) from Debian's bible-kjv package, verse labels
#          removed; the last 5% of its lines are held out as evaluation text
#   shape  slmc synth --shape small (Llama: dim 256, 4 layers, 8 heads / 4 KV heads, FFN 768,
#          a 1024-token SentencePiece-style vocabulary with byte fallback), seed 1
#   train  slmc train, cross-entropy, 160 steps of 8 x 128 tokens, seed 1 (deterministic for any
#          thread count), exported as an F16 GGUF: DIR/default.gguf
# Writes DIR/train.txt, DIR/valid.txt and DIR/default.gguf; does nothing when they exist.
set -e
build=${1:-build}
S="$build/slmc"
DIR=${2:-$build/default-model}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ -f "$DIR/default.gguf" ] && [ -f "$DIR/valid.txt" ] && exit 0
mkdir -p "$DIR"
if ! command -v bible >/dev/null 2>&1; then
    sh scripts/bootstrap.sh bible-kjv bible-kjv-text
fi
bible -f "Genesis 1:1-Revelation 22:21" 2>/dev/null | sed -E 's/^[0-9A-Za-z]+[0-9]+:[0-9]+ //' >"$DIR/kjv.txt"
lines=$(wc -l <"$DIR/kjv.txt")
keep=$((lines * 95 / 100))
head -n "$keep" "$DIR/kjv.txt" >"$DIR/train.txt"
tail -n +"$((keep + 1))" "$DIR/kjv.txt" >"$DIR/valid.txt"
rm -f "$DIR/kjv.txt"
rm -rf "$DIR/init"
"$S" synth --shape small --dtype f32 --seed 1 -o "$DIR/init" -q
echo "default model: training on the King James Bible (160 steps, about a minute on 2 cores)"
"$S" train --model "$DIR/init" --data "$DIR/train.txt" --steps 160 --seq-len 128 --batch 8 --lr 2e-3 \
    --min-lr 2e-4 --warmup 16 --seed 1 --eval-every 0 --log-every 40 --valid-frac 0.01 --outtype f16 \
    --checkpoint "$DIR/train.ckpt.h5" -o "$DIR/default.gguf"
rm -rf "$DIR/init" "$DIR/train.ckpt.h5"
