#!/bin/sh
# demo.sh BUILD - the main job on the built-in default model, end to end.
# The default model today is the deterministic synthetic `small` Llama checkpoint (slmc synth):
# the demo writes it, inspects it, converts it to GGUF and back (byte-identical), and
# quantizes it to the whole Q2_K..Q8_0 family in one read, and evaluates every variant
# against the F16 model: size, PPL, KL divergence, top-token agreement.
set -e
build=${1:-build}
S="$build/slmc"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
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
echo "== 5. evaluate every variant against the F16 model (PPL, KL divergence, top-token agreement)"
# The evaluation text is this repository's own documentation: always there, offline.
cat README.md docs/*.md >"$OUT/eval.txt"
json_field() { awk -F': ' -v k="\"$1\"" '$1 ~ k {gsub(/,/, "", $2); print $2; exit}' "$2"; }
printf '  %-8s %10s %6s %10s %10s %9s\n' type bytes bpw PPL KLD same-top
for t in F16 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 Q4_K_S Q4_K_M Q5_0 Q5_1 Q5_K_S Q5_K_M Q6_K Q8_0; do
    f="$OUT/default-$t.gguf"
    "$S" eval "$f" --text "$OUT/eval.txt" -c 128 --chunks 8 --kl-base "$OUT/default-F16.gguf" --json -q >"$OUT/eval-$t.json"
    bytes=$(wc -c <"$f")
    params=$("$S" inspect "$f" --json --no-tensors | json_field n_params /dev/stdin)
    printf '  %-8s %10s %6.2f %10.3f %10.6f %8.2f%%\n' "$t" "$bytes" "$(awk "BEGIN{print 8*$bytes/$params}")" \
        "$(json_field ppl "$OUT/eval-$t.json")" "$(json_field kld_mean "$OUT/eval-$t.json")" \
        "$(awk "BEGIN{print 100*$(json_field same_top_p "$OUT/eval-$t.json")}")"
done
echo "(the default model has synthetic random weights, so its PPL is high; KLD shows what each type loses)"
