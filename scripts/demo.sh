#!/bin/sh
# demo.sh BUILD - the main job on the built-in default model, end to end.
# The default model today is the deterministic synthetic `small` Llama checkpoint (slmc synth):
# the demo writes it, inspects it, converts it to GGUF and back (byte-identical), and
# quantizes it to the whole Q2_K..Q8_0 family in one read, printing the size table.
set -e
build=${1:-build}
S="$build/slmc"
OUT=${DEMO_DIR:-demo-out}
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== slmc demo: output in $OUT/"
echo "== 1. the default model: synthetic 'small' Llama checkpoint (Hugging Face layout, F16)"
"$S" synth --shape small --dtype f16 --seed 1 -o "$OUT/default-hf" -q
echo "== 2. inspect"
"$S" inspect "$OUT/default-hf" --no-tensors
echo "== 3. convert to GGUF, back to a Hugging Face folder, and to GGUF again"
"$S" convert "$OUT/default-hf" "$OUT/default-F16.gguf"
"$S" convert "$OUT/default-F16.gguf" "$OUT/roundtrip-hf"
"$S" convert "$OUT/roundtrip-hf" "$OUT/roundtrip-F16.gguf"
cmp "$OUT/default-F16.gguf" "$OUT/roundtrip-F16.gguf" && echo "round trip: byte-identical"
echo "== 4. quantize to the Q2_K..Q8_0 family in one read of the source"
"$S" quantize "$OUT/default-hf" --type Q2_K,Q3_K_S,Q3_K_M,Q3_K_L,Q4_0,Q4_1,Q4_K_S,Q4_K_M,Q5_0,Q5_1,Q5_K_S,Q5_K_M,Q6_K,Q8_0 \
    -o "$OUT/default-{type}.gguf"
echo "== sizes"
printf '  %-28s %12s\n' file bytes
for f in "$OUT"/*.gguf; do
    printf '  %-28s %12s\n' "$(basename "$f")" "$(wc -c <"$f")"
done
