#!/bin/sh
# prune.sh - slmc prune through the binary: a synthetic model pruned on every axis to GGUF and
# to a Hugging Face folder, both evaluated and converted; scores saved and reused; usage and
# input errors; books-22m with a short calibration when ../shared is there.
. tests/e2e/lib.inc

expect 2 "prune without axes" -- "$SLMC" prune x y.gguf --method random
expect 2 "prune activation without --calib" -- "$SLMC" prune x y.gguf --ffn 0.5
expect 2 "prune --target-params with an axis" -- "$SLMC" prune x y.gguf --method random --target-params 0.5 --ffn 10
expect 2 "prune bad --method" -- "$SLMC" prune x y.gguf --method best --ffn 10
expect 2 "prune --reconstruct without --calib" -- "$SLMC" prune x y.gguf --from-scores s.h5 --ffn 10 --reconstruct
expect 2 "prune --reconstruct with --refit" -- "$SLMC" prune x y.gguf --calib c --ffn 10 --reconstruct --refit
expect 2 "prune bad --damp" -- "$SLMC" prune x y.gguf --calib c --ffn 10 --refit --damp -1

"$SLMC" synth --shape small -o "$T/small" -q || fail "synth small"
# calibration text: the vocabulary is made up, any text tokenizes (bytes)
i=0; while [ $i -lt 300 ]; do echo "line $i of a calibration text about pruning heads and channels."; i=$((i + 1)); done >"$T/calib.txt"

expect 0 "prune on every axis to GGUF" -- "$SLMC" prune "$T/small" "$T/p.gguf" --calib "$T/calib.txt" -c 64 --chunks 3 \
    --ffn 0.5 --heads 4 --layers 3 --hidden 192 --scores "$T/s.h5" --json -q
grep -q '"n_layer": 3' "$T/out" && grep -q '"n_ff": 384' "$T/out" && grep -q '"n_embd": 192' "$T/out" \
    && ok "summary shape 3 layers, ffn 384, width 192" || fail "summary: $(cat "$T/out")"
grep -q '"params_out"' "$T/out" && grep -q '"dropped_layers"' "$T/out" || fail "--json has params_out, dropped_layers"
[ -s "$T/s.h5" ] && ok "scores written" || fail "no scores file"
expect 0 "inspect the pruned GGUF" -- "$SLMC" inspect "$T/p.gguf"
grep -q "llama.block_count *3" "$T/out" && grep -q "llama.attention.head_count *4" "$T/out" \
    && grep -q "llama.attention.key_length *32" "$T/out" && grep -q "llama.embedding_length *192" "$T/out" \
    && ok "GGUF metadata of the new shape" || fail "metadata: $(grep llama\\. "$T/out")"
grep -q "tokenizer.ggml.tokens" "$T/out" && ok "tokenizer carried over" || fail "no tokenizer in the pruned GGUF"
expect 0 "eval the pruned GGUF" -- "$SLMC" eval "$T/p.gguf" --text "$T/calib.txt" -c 64 --chunks 2 --json -q
grep -q '"ppl": [0-9]' "$T/out" && ok "finite PPL" || fail "eval: $(cat "$T/out")"

# the same scores reused, to an HF folder, then converted back to GGUF: identical file
expect 0 "prune --from-scores to HF" -- "$SLMC" prune "$T/small" "$T/p-hf" --from-scores "$T/s.h5" \
    --ffn 0.5 --heads 4 --layers 3 --hidden 192 -q
grep -q '"head_dim": 32' "$T/p-hf/config.json" && grep -q '"num_attention_heads": 4' "$T/p-hf/config.json" \
    && ok "config.json of the new shape" || fail "config.json: $(cat "$T/p-hf/config.json")"
[ -f "$T/p-hf/tokenizer.model" ] && ok "tokenizer.model carried over" || fail "no tokenizer.model"
expect 0 "convert the HF result to GGUF" -- "$SLMC" convert "$T/p-hf" "$T/p2.gguf" -q
cmp -s "$T/p.gguf" "$T/p2.gguf" && ok "HF -> GGUF equals the direct GGUF" || fail "GGUF via HF differs"

expect 0 "prune --target-params 2M" -- "$SLMC" prune "$T/small" "$T/t.gguf" --from-scores "$T/s.h5" --target-params 2M --json -q
n=$(sed -n 's/.*"params_out": \([0-9]*\).*/\1/p' "$T/out")
[ -n "$n" ] && [ "$n" -le 2000000 ] && ok "target met ($n params)" || fail "params_out $n > 2M"
expect 0 "prune --drop-layers, magnitude" -- "$SLMC" prune "$T/small" "$T/d.gguf" --method magnitude --drop-layers 1,2 --json -q
grep -q '"dropped_layers": \[' "$T/out" && tr -d ' \n' <"$T/out" | grep -q '"dropped_layers":\[1,2\]' \
    && ok "dropped layers 1 and 2" || fail "dropped: $(cat "$T/out")"

# --reconstruct: re-selected channels and whole KV groups, refit projections; a valid model
expect 0 "prune --reconstruct" -- "$SLMC" prune "$T/small" "$T/r.gguf" --from-scores "$T/s.h5" --calib "$T/calib.txt" \
    -c 64 --chunks 3 --ffn 0.5 --heads 4 --head-groups --reconstruct --json -q
tr -d ' \n' <"$T/out" | grep -q '"mode":"reconstruct","passes":1,"chunks":3' && ok "reconstruction reported" \
    || fail "reconstruct summary: $(cat "$T/out")"
eb=$(sed -n 's/.*"ffn_err_before": \([0-9.e+-]*\).*/\1/p' "$T/out")
ea=$(sed -n 's/.*"ffn_err_after": \([0-9.e+-]*\).*/\1/p' "$T/out")
awk -v b="$eb" -v a="$ea" 'BEGIN { exit !(a > 0 && a < b) }' && ok "refit lowers the FFN output error ($eb -> $ea)" \
    || fail "FFN error $eb -> $ea"
expect 0 "eval the reconstructed GGUF" -- "$SLMC" eval "$T/r.gguf" --text "$T/calib.txt" -c 64 --chunks 2 --json -q
grep -q '"ppl": [0-9]' "$T/out" && ok "finite PPL after reconstruction" || fail "eval: $(cat "$T/out")"

expect_error "heads that do not fit the groups" "$T/small" -- "$SLMC" prune "$T/small" "$T/x.gguf" --method random --heads 3
expect_error "scores of another model" "$T/s.h5" -- "$SLMC" prune "$T/p.gguf" "$T/x.gguf" --from-scores "$T/s.h5" --ffn 100
expect_error "scores file that is not one" "$T/calib.txt" -- "$SLMC" prune "$T/small" "$T/x.gguf" --from-scores "$T/calib.txt" --ffn 100
[ ! -e "$T/x.gguf" ] && ok "no output left behind" || fail "an output was written after an error"

if have_shared models/books-22m/hf-bf16; then
    B="$SHARED/models/books-22m/hf-bf16"
    expect 0 "books-22m: --ffn 0.5 after 2 chunks of calibration" -- "$SLMC" prune "$B" "$T/b.gguf" \
        --calib "$SHARED/text/books-train.txt" -c 256 --chunks 2 --no-layer-ppl --ffn 0.5 --json -q
    # 6 layers x 384 channels x 3 matrices x 256 = 1769472 of 21105920 parameters
    grep -q '"params_out": 19336448' "$T/out" && ok "384 channels x 3 x 256 x 6 layers removed" \
        || fail "books summary: $(cat "$T/out")"
    expect 0 "books-22m pruned: eval" -- "$SLMC" eval "$T/b.gguf" --text "$SHARED/text/books-valid.txt" -c 256 --chunks 2 --json -q
    p=$(sed -n 's/.*"ppl": \([0-9.]*\).*/\1/p' "$T/out")
    # unpruned: 1218.9 on these 2 chunks (test_llm); this cut measures 1195.2 (a weak model's
    # FFN halves with little loss on two chunks), while a random half gives far more
    awk -v p="$p" 'BEGIN { exit !(p > 900 && p < 1600) }' && ok "books-22m PPL $p (unpruned 1218.9)" \
        || fail "books-22m PPL $p out of range"
fi
finish
