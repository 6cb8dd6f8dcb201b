#!/bin/sh
# outputs_digest.sh BUILD [SHARED] - run every command on the real models in ../shared with
# fixed settings and print one line per result: the SHA-256 of each written file, and the
# figures eval prints (timings left out). Two builds that print the same lines write the same
# bytes and compute the same numbers: run it before and after a refactor and diff the output.
#   sh scripts/outputs_digest.sh build >before.txt; ...; sh scripts/outputs_digest.sh build >after.txt
set -e
build=${1:-build}
S="$build/slmc"
SH=${2:-${SLMC_SHARED:-../shared}}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ -d "$SH/models" ] || { echo "outputs_digest: $SH/models not found" >&2; exit 1; }
T=$(mktemp -d /tmp/slmc-digest-XXXXXX)
trap 'rm -rf "$T"' EXIT
HF="$SH/models/books-22m/hf-bf16"; BF16="$SH/reference/books-22m-BF16.gguf"
TRAIN="$SH/text/books-train.txt"; VALID="$SH/text/books-valid.txt"
L2C="$SH/models/stories260K/stories260K.bin"; TOK="$SH/models/stories260K/tok512.bin"
digest() { for f in "$@"; do printf '%s %s\n' "$(sha256sum <"$f" | cut -c1-16)" "$(basename "$f")"; done; }
json_figures() { grep -v '"seconds"\|"tokens_per_s\|per_second' "$1" | sed "s|$T|T|g" | tr -d ' \n'; echo; }

"$S" convert "$HF" "$T/books-bf16.gguf" -q
"$S" convert "$L2C" "$T/stories.gguf" --tokenizer "$TOK" -q
"$S" convert "$T/books-bf16.gguf" "$T/books-hf" -q
digest "$T/books-bf16.gguf" "$T/stories.gguf" "$T"/books-hf/*.safetensors
"$S" quantize "$HF" --type Q8_0,Q6_K,Q5_K_M,Q5_0,Q4_K_M,Q4_K_S,Q4_1,Q4_0,Q3_K_M,Q3_K_S,Q2_K -o "$T/books-{type}.gguf" -q -t 2
digest "$T"/books-Q*.gguf
"$S" quantize "$HF" "$T/books-imat-Q2_K.gguf" Q2_K --imatrix "$SH/reference/books-22m-imatrix.dat" -q
"$S" quantize "$HF" "$T/books-gptq-Q3_K_M.gguf" Q3_K_M --method gptq --calib "$TRAIN" -c 128 --chunks 6 -q
"$S" quantize "$HF" "$T/books-fit.gguf" --target-bpw 4.2 -q
digest "$T/books-imat-Q2_K.gguf" "$T/books-gptq-Q3_K_M.gguf" "$T/books-fit.gguf"
"$S" imatrix "$BF16" --text "$TRAIN" -c 128 --chunks 6 -o "$T/imat.dat" -q >/dev/null
"$S" imatrix "$T/stories.gguf" --text "$SH/text/tinyshakespeare.txt" -c 64 --chunks 6 -o "$T/imat.gguf" -q >/dev/null
digest "$T/imat.dat" "$T/imat.gguf"
for q in Q8_0 Q4_K_M Q4_1 Q2_K; do
    "$S" eval "$T/books-$q.gguf" --text "$VALID" -c 256 --chunks 6 --kl-base "$BF16" --json -q >"$T/e.json"
    printf 'eval %s ' "$q"; json_figures "$T/e.json"
done
"$S" eval "$BF16" --text "$VALID" -c 256 --chunks 6 --json -q >"$T/e.json"; printf 'eval BF16 '; json_figures "$T/e.json"
"$S" eval "$T/stories.gguf" --text "$SH/text/tinystories_sample.txt" -c 128 --json -q >"$T/e.json"; printf 'eval stories '; json_figures "$T/e.json"
printf 'generate '; "$S" generate "$T/stories.gguf" -p "Once upon a time" -n 40 --temp 0 -q | cksum
printf 'generate sampled '; "$S" generate "$T/stories.gguf" -p "The cat" -n 40 --seed 7 -q | cksum
"$S" prune "$HF" "$T/pruned.gguf" --ffn 0.5 --heads 4 --calib "$TRAIN" -c 128 --chunks 4 -q >/dev/null
"$S" prune "$HF" "$T/pruned-obs.gguf" --ffn 0.5 --reconstruct --calib "$TRAIN" -c 128 --chunks 4 -q >/dev/null
"$S" prune "$HF" "$T/pruned-layers.gguf" --layers 2 --hidden 0.75 --calib "$TRAIN" -c 128 --chunks 4 -q >/dev/null
digest "$T/pruned.gguf" "$T/pruned-obs.gguf" "$T/pruned-layers.gguf"
"$S" synth --shape small --dtype f32 --seed 3 -o "$T/init" -q
head -c 400000 "$TRAIN" >"$T/small.txt"
"$S" train --model "$T/init" --data "$T/small.txt" --steps 12 --seq-len 64 --batch 4 --lr 2e-3 --warmup 2 \
    --eval-every 6 --seed 2 -o "$T/trained.gguf" --metrics "$T/train.jsonl" -q -t 2
"$S" distill --teacher "$T/trained.gguf" --student "$T/init" --data "$T/small.txt" --steps 8 --seq-len 64 --batch 2 \
    --seed 2 -o "$T/distilled.gguf" -q -t 2
digest "$T/trained.gguf" "$T/distilled.gguf" # (the HDF5 checkpoint holds a time stamp)
printf 'train losses '; grep -o '"loss":[^,]*' "$T/train.jsonl" | tr '\n' ' ' | cksum
