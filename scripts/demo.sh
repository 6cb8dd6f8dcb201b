#!/bin/sh
# demo.sh BUILD - the main job on the built-in default model, end to end.
# Today the default model is the deterministic synthetic `tiny` Llama checkpoint (slmc synth);
# the demo writes it, inspects it, converts it to GGUF and back, and checks the round trip.
set -e
build=${1:-build}
S="$build/slmc"
OUT=${DEMO_DIR:-demo-out}
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== slmc demo: output in $OUT/"
echo "== 1. the default model: synthetic 'tiny' Llama checkpoint (Hugging Face layout, F16)"
"$S" synth --shape tiny --dtype f16 --seed 1 -o "$OUT/default-hf" -q
echo "== 2. inspect"
"$S" inspect "$OUT/default-hf" --no-tensors
echo "== 3. convert to GGUF (F16), and to a BF16 GGUF"
"$S" convert "$OUT/default-hf" "$OUT/default-F16.gguf"
"$S" convert "$OUT/default-hf" "$OUT/default-BF16.gguf" --outtype bf16
echo "== 4. GGUF back to a Hugging Face folder, and to GGUF again: byte-identical"
"$S" convert "$OUT/default-F16.gguf" "$OUT/roundtrip-hf"
"$S" convert "$OUT/roundtrip-hf" "$OUT/roundtrip-F16.gguf"
cmp "$OUT/default-F16.gguf" "$OUT/roundtrip-F16.gguf" && echo "round trip: identical"
echo "== sizes"
for f in "$OUT"/*.gguf; do
    printf '  %-40s %10s bytes\n' "$(basename "$f")" "$(wc -c <"$f")"
done
