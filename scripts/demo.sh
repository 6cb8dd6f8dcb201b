#!/bin/sh
# demo.sh BUILD - the main job on the built-in default model, end to end, offline:
#   1. the default model: a small Llama trained by `slmc train` on the King James Bible
#      (scripts/default_model.sh; built once, then reused)
#   2. inspect it, convert GGUF -> Hugging Face -> GGUF (byte-identical)
#   3. `slmc pipeline examples/demo.yaml`: imatrix -> quantize Q2_K..Q8_0; prune -> distill ->
#      quantize; every variant evaluated against the default model (PPL, KLD, top-token
#      agreement) with quality gates; reports in JSON, Markdown and SVG
set -e
build=${1:-build}
S="$build/slmc"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
OUT=${DEMO_DIR:-demo-out}
MODEL_DIR="$build/default-model"
echo "== slmc demo: output in $OUT/"
echo "== 1. the default model"
sh scripts/default_model.sh "$build" "$MODEL_DIR"
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$MODEL_DIR/default.gguf" "$MODEL_DIR/train.txt" "$MODEL_DIR/valid.txt" examples/demo.yaml "$OUT/"
"$S" inspect "$OUT/default.gguf" --no-tensors | sed -n '1,6p;/^parameters/,$p'
printf 'sample: '
"$S" generate "$OUT/default.gguf" -p "And God said" -n 24 --temp 0 -q
echo "== 2. GGUF -> Hugging Face folder -> GGUF"
"$S" convert "$OUT/default.gguf" "$OUT/default-F16.gguf" -q
"$S" convert "$OUT/default-F16.gguf" "$OUT/default-hf" -q
"$S" convert "$OUT/default-hf" "$OUT/roundtrip.gguf" -q
cmp "$OUT/default-F16.gguf" "$OUT/roundtrip.gguf" && echo "round trip: byte-identical"
echo "== 3. pipeline: imatrix -> Q2_K..Q8_0; prune -> distill -> quantize; eval with gates"
rc=0
"$S" pipeline "$OUT/demo.yaml" --out "$OUT/pipeline" --jobs 2 -q || rc=$?
echo "reports: $OUT/pipeline/demo.report.md, .json, .svg (size against PPL and KLD)"
exit $rc
