#!/bin/sh
# train_families.sh - train, prune and distill every family the training graph takes (llama with
# Llama 3's rope_freqs, qwen2, qwen3: tests/data/configs), through the binary, on a generated text:
#   synth -> convert -> train (the loss falls) -> prune to about 65% of the parameters (heads and
#   FFN channels; qwen2 FFN channels only, its heads alone are refused since llama.cpp could not
#   load the file; the result evaluates in slmc and, where the peer knows the family, in llama.cpp
#   with the same PPL; its Hugging Face conversion describes the new shape) -> distill from the
#   trained model (the pruned student's held-out PPL falls).
# The families training does not take yet are refused with one line naming the file.
. tests/e2e/lib.inc
PEER=${SLMC_PEER_BIN:-/tmp/slmc-peer/llama.cpp-b4747/build/bin}

# two texts from one small grammar: one to train and calibrate on, one held out
gen() {
    awk -v seed="$1" -v n="$2" 'BEGIN { srand(seed);
        split("cat dog bird fish horse mouse owl fox", a, " "); split("sat ran flew swam jumped slept hid ate", v, " ");
        split("mat tree pond hill barn nest box field", p, " ");
        for (i = 0; i < n; i++) { x = int(rand() * 8) + 1;
            printf "the %s %s near the %s and the %s %s on the %s.\n", a[x], v[x], p[int(rand() * 8) + 1],
                a[x % 8 + 1], v[int(rand() * 8) + 1], p[x] } }'
}
gen 7 600 >"$T/train.txt"
gen 8 200 >"$T/valid.txt"

# ppl FILE: slmc's PPL of FILE on the held-out text
ppl() { "$SLMC" eval "$1" --text "$T/valid.txt" -c 64 --chunks 4 --json -q | sed -n 's/.*"ppl": *\([0-9.eE+-]*\).*/\1/p'; }

TRAIN="--data $T/train.txt --seq-len 32 --batch 4 --eval-every 0 -t 2 -q"
for f in llama qwen2 qwen3; do
    cfg=tests/data/configs/$f/config.json
    [ -f "$cfg" ] || { echo "SKIP: $cfg not found (run from the project root)"; continue; }
    "$SLMC" synth --config "$cfg" --dtype f32 -o "$T/$f-hf" -q && "$SLMC" convert "$T/$f-hf" "$T/$f.gguf" -q \
        || { fail "$f: synth + convert"; continue; }

    expect 0 "$f: train 80 steps" -- "$SLMC" train --model "$T/$f.gguf" $TRAIN --steps 80 --lr 3e-3 \
        --metrics "$T/$f-m.jsonl" -o "$T/$f-t.gguf"
    first=$(head -n 1 "$T/$f-m.jsonl" | sed -E 's/.*"loss": ?([0-9.eE+-]+).*/\1/')
    last=$(grep '"loss"' "$T/$f-m.jsonl" | tail -n 1 | sed -E 's/.*"loss": ?([0-9.eE+-]+).*/\1/')
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.5 * a) }' && ok "$f: loss $first -> $last" \
        || fail "$f: loss did not halve: $first -> $last"

    # qwen2: llama.cpp sizes attn_q as n_embd x n_embd, so heads go only with the hidden width
    if [ "$f" = qwen2 ]; then
        expect_error "qwen2: heads alone refused (llama.cpp could not load it)" "$T/$f-t.gguf" -- "$SLMC" prune \
            "$T/$f-t.gguf" "$T/$f-x.gguf" --method random --heads 2 -q
        axes="--ffn 0.4"; heads=4; ff=205
    else
        axes="--heads 2 --ffn 0.6"; heads=2; ff=307
    fi
    expect 0 "$f: prune $axes" -- "$SLMC" prune "$T/$f-t.gguf" "$T/$f-p.gguf" \
        --calib "$T/train.txt" -c 64 --chunks 3 $axes --json -q
    pin=$(sed -n 's/.*"params_in": *\([0-9]*\).*/\1/p' "$T/out"); pout=$(sed -n 's/.*"params_out": *\([0-9]*\).*/\1/p' "$T/out")
    awk -v a="$pin" -v b="$pout" 'BEGIN { exit !(b > 0 && b <= 0.7 * a) }' && ok "$f: $pout of $pin parameters kept" \
        || fail "$f: kept $pout of $pin parameters (want <= 70%)"
    expect 0 "$f: inspect the pruned file" -- "$SLMC" inspect "$T/$f-p.gguf"
    grep -q "$f.attention.head_count *$heads" "$T/out" && grep -q "$f.feed_forward_length *$ff" "$T/out" \
        || fail "$f: pruned metadata: $(grep "$f\\." "$T/out" | head -5)"
    p_pruned=$(ppl "$T/$f-p.gguf")
    [ -n "$p_pruned" ] && ok "$f: pruned file evaluates (PPL $p_pruned)" || fail "$f: pruned file does not evaluate"
    if [ "$f" = llama ]; then
        "$SLMC" inspect "$T/$f-p.gguf" | grep -q rope_freqs.weight && ok "llama: rope_freqs kept" || fail "llama: rope_freqs lost"
    fi
    if [ "$f" = qwen3 ]; then
        "$SLMC" inspect "$T/$f-p.gguf" | grep -q blk.0.attn_q_norm.weight && ok "qwen3: head norms kept" || fail "qwen3: head norms lost"
    fi
    # llama.cpp b4747 knows llama and qwen2 (not qwen3)
    if [ -x "$PEER/llama-perplexity" ] && [ "$f" != qwen3 ]; then
        "$PEER/llama-perplexity" -m "$T/$f-p.gguf" -f "$T/valid.txt" -c 64 --chunks 4 -t 2 >"$T/peer.txt" 2>&1
        peer=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$T/peer.txt")
        awk -v a="$p_pruned" -v b="$peer" 'BEGIN { exit !(b > 0 && (a - b) / b < 1e-3 && (b - a) / b < 1e-3) }' \
            && ok "$f: llama.cpp runs the pruned file, PPL $peer (slmc $p_pruned)" \
            || fail "$f: llama-perplexity on the pruned file: '$peer' vs slmc $p_pruned"
    else
        echo "SKIP: $f: no llama.cpp peer that knows the family (sh ../shared/peer/build.sh; b4747 lacks qwen3)"
    fi
    expect 0 "$f: pruned file to Hugging Face" -- "$SLMC" convert "$T/$f-p.gguf" "$T/$f-p-hf" -q
    grep -q "\"num_attention_heads\": $heads" "$T/$f-p-hf/config.json" && grep -q "\"intermediate_size\": $ff" "$T/$f-p-hf/config.json" \
        && ok "$f: config.json of the pruned shape" || fail "$f: config.json: $(tr -d '\n' <"$T/$f-p-hf/config.json" | head -c 400)"

    expect 0 "$f: distill 40 steps from the trained model" -- "$SLMC" distill --teacher "$T/$f-t.gguf" \
        --student "$T/$f-p.gguf" $TRAIN --steps 40 --lr 2e-3 -o "$T/$f-d.gguf"
    p_dist=$(ppl "$T/$f-d.gguf")
    awk -v a="$p_pruned" -v b="$p_dist" 'BEGIN { exit !(b > 0 && b < a) }' \
        && ok "$f: held-out PPL of the pruned student $p_pruned -> $p_dist after distillation" \
        || fail "$f: distillation did not lower the held-out PPL: $p_pruned -> $p_dist"
done

# the families the graph does not cover yet: one line naming the file
for f in gemma2 phi2; do
    cfg=tests/data/configs/$f/config.json
    [ -f "$cfg" ] || continue
    "$SLMC" synth --config "$cfg" --dtype f16 -o "$T/$f-hf" -q || { fail "$f: synth"; continue; }
    expect_error "$f: train refused" "$T/$f-hf" -- "$SLMC" train --model "$T/$f-hf" $TRAIN --steps 1 -o "$T/$f-t.gguf"
    expect_error "$f: prune refused" "$T/$f-hf" -- "$SLMC" prune "$T/$f-hf" "$T/$f-p.gguf" --method random --ffn 0.5 -q
done
finish
