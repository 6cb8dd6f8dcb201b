#!/bin/sh
# families.sh - every model family's test config (tests/data/configs/<family>/config.json) through
# the binary: synth -> convert to GGUF (BF16 or F16) -> inspect -> back to Hugging Face (the same
# safetensors bytes) -> GGUF again (the same file). Then, when a llama.cpp build is at hand
# ($SLMC_PEER_BIN, else /tmp/slmc-peer/*/build/bin), llama.cpp loads and runs each GGUF of the
# families its b4747 knows (qwen3 and gemma3 came later): llama-cli generates a few tokens and
# llama-perplexity scores a text longer than the sliding windows.
. tests/e2e/lib.inc

CONFIGS=tests/data/configs
FAMILIES="llama qwen2 qwen3 gemma gemma2 gemma3 phi2 phi3 stablelm"

# llama.cpp's binaries: $SLMC_PEER_BIN, else the first peer build found
if [ -z "$SLMC_PEER_BIN" ]; then
    for d in /tmp/slmc-peer/*/build/bin; do
        if [ -x "$d/llama-cli" ] || [ -x "$d/llama-perplexity" ]; then SLMC_PEER_BIN=$d; break; fi
    done
fi
TIMEOUT=""
command -v timeout >/dev/null && TIMEOUT="timeout 300"

# a text of a few hundred tokens for llama-perplexity (the made-up vocabulary splits it finely)
i=0
while [ $i -lt 40 ]; do
    echo "Once upon a time there was a little cat that lived in a house by the sea, and every day it went out to look at the boats."
    i=$((i + 1))
done >"$T/text.txt"

# key FAMILY GGUF_KEY: the GGUF's metadata (inspect's table, in $T/out) has the key
key() { grep -q "^  $2 " "$T/out" && ok "$1: $2 written" || fail "$1: $2 missing from the GGUF"; }
nokey() { grep -q "^  $2 " "$T/out" && fail "$1: $2 written (llama.cpp's converter writes none)" || ok "$1: no $2"; }
tensor() { grep -q "^  $2 " "$T/out" && ok "$1: tensor $2" || fail "$1: tensor $2 missing from the GGUF"; }

for f in $FAMILIES; do
    cfg="$CONFIGS/$f/config.json"
    if [ ! -f "$cfg" ]; then fail "$cfg not found (run from the project root)"; continue; fi
    case $f in llama|gemma*) dt=bf16 ;; *) dt=f16 ;; esac
    expect 0 "$f: synth --config ($dt)" -- "$SLMC" synth --config "$cfg" --dtype $dt -o "$T/$f-hf" -q
    [ -f "$T/$f-hf/model.safetensors" ] || { fail "$f: synth wrote no model.safetensors"; continue; }
    expect 0 "$f: HF -> GGUF" -- "$SLMC" convert "$T/$f-hf" "$T/$f.gguf" -q
    [ -f "$T/$f.gguf" ] || continue
    expect 0 "$f: inspect the GGUF" -- "$SLMC" inspect "$T/$f.gguf"
    grep -qx "architecture: $f" "$T/out" || fail "$f: inspect says $(grep '^architecture' "$T/out")"
    case $f in
    llama) tensor $f rope_freqs.weight; nokey $f llama.rope.scaling.type ;;
    qwen2) tensor $f blk.1.attn_k.bias ;;
    qwen3) tensor $f blk.1.attn_q_norm.weight; key $f qwen3.attention.key_length ;;
    gemma) nokey $f gemma.rope.freq_base; nokey $f output.weight; key $f gemma.attention.key_length ;;
    gemma2) key $f gemma2.attn_logit_softcapping; key $f gemma2.final_logit_softcapping
            key $f gemma2.attention.sliding_window; tensor $f blk.25.post_ffw_norm.weight ;;
    gemma3) key $f gemma3.attention.sliding_window; key $f gemma3.rope.scaling.type; tensor $f blk.5.attn_k_norm.weight ;;
    phi2) key $f phi2.attention.layer_norm_epsilon; key $f phi2.rope.dimension_count; tensor $f output.bias ;;
    phi3) tensor $f rope_factors_long.weight; tensor $f rope_factors_short.weight
          key $f phi3.rope.scaling.attn_factor; key $f phi3.rope.scaling.original_context_length
          key $f phi3.attention.sliding_window ;;
    stablelm) key $f stablelm.attention.layer_norm_epsilon; key $f stablelm.rope.dimension_count
              tensor $f blk.0.attn_q.bias; tensor $f output_norm.bias ;;
    esac
    expect 0 "$f: GGUF -> HF" -- "$SLMC" convert "$T/$f.gguf" "$T/$f-back" -q
    same=1
    for s in "$T/$f-hf"/*.safetensors; do cmp -s "$s" "$T/$f-back/$(basename "$s")" || same=0; done
    [ $same = 1 ] && ok "$f: HF -> GGUF -> HF gives the same safetensors bytes" \
        || fail "$f: HF -> GGUF -> HF changed the safetensors"
    expect 0 "$f: HF -> GGUF again" -- "$SLMC" convert "$T/$f-back" "$T/$f-2.gguf" -q
    cmp -s "$T/$f.gguf" "$T/$f-2.gguf" && ok "$f: GGUF -> HF -> GGUF gives the same file" \
        || fail "$f: GGUF -> HF -> GGUF changed the file"
done

# llama.cpp loads and runs what slmc wrote
if [ -z "$SLMC_PEER_BIN" ] || { [ ! -x "$SLMC_PEER_BIN/llama-cli" ] && [ ! -x "$SLMC_PEER_BIN/llama-perplexity" ]; }; then
    echo "SKIP: llama.cpp loading: no llama-cli or llama-perplexity in ${SLMC_PEER_BIN:-/tmp/slmc-peer/*/build/bin} (set SLMC_PEER_BIN to a llama.cpp bin folder)"
else
    for f in $FAMILIES; do
        [ -f "$T/$f.gguf" ] || continue
        case $f in qwen3|gemma3)
            echo "SKIP: $f: llama.cpp b4747 has no $f architecture"; continue ;;
        esac
        if [ -x "$SLMC_PEER_BIN/llama-cli" ]; then
            $TIMEOUT "$SLMC_PEER_BIN/llama-cli" -m "$T/$f.gguf" -p "Once upon a time" -n 8 --temp 0 -no-cnv -c 128 -t 1 \
                </dev/null >"$T/out" 2>"$T/err"
            rc=$?
            if [ $rc -eq 0 ]; then ok "$f: llama-cli loads the GGUF and generates"
            else fail "$f: llama-cli exit $rc"; grep -iE "error|fail|abort" "$T/err" | head -5 | sed 's/^/    /'; fi
        fi
        if [ -x "$SLMC_PEER_BIN/llama-perplexity" ]; then
            $TIMEOUT "$SLMC_PEER_BIN/llama-perplexity" -m "$T/$f.gguf" -f "$T/text.txt" -c 128 -b 128 --chunks 2 -t 1 \
                </dev/null >"$T/out" 2>"$T/err"
            rc=$?
            if [ $rc -eq 0 ] && grep -q "Final estimate: PPL" "$T/out" "$T/err"; then
                ok "$f: llama-perplexity runs ($(grep -ho 'PPL = [0-9.]*' "$T/out" "$T/err" | head -1))"
            else
                fail "$f: llama-perplexity exit $rc"; grep -iE "error|fail|abort" "$T/err" | head -5 | sed 's/^/    /'
            fi
        fi
    done
fi


# Bad input per family: a config.json without a field the family needs, or with an unknown
# model_type, activation or rope_type, is refused in one line naming config.json and the field,
# and nothing is written.
needed() { # the field each family's converter cannot do without
    case "$1" in
    gemma2) echo attn_logit_softcapping ;; gemma3) echo sliding_window ;; gemma) echo head_dim ;;
    phi3) echo original_max_position_embeddings ;; phi2 | stablelm) echo partial_rotary_factor ;;
    *) echo intermediate_size ;;
    esac
}
for cfg in tests/data/configs/*/config.json; do
    f=$(basename "$(dirname "$cfg")")
    d="$T/bad-$f"
    "$SLMC" synth --config "$cfg" --dtype f16 -o "$d" -q 2>/dev/null || { fail "$f: synth for the bad-config cases"; continue; }
    cp "$d/config.json" "$T/good.json"
    field=$(needed "$f")
    bad_case() { # DESCRIPTION FIELD-IN-MESSAGE
        rm -f "$T/out.gguf"
        expect_error "$f: $1" "$d/config.json" -- "$SLMC" convert "$d" "$T/out.gguf" -q
        grep -q "$2" "$T/err" || fail "$f: $1: the message does not name $2: $(cat "$T/err")"
        [ -e "$T/out.gguf" ] && fail "$f: $1: an output was written"
        cp "$T/good.json" "$d/config.json"
    }
    grep -v "\"$field\":" "$T/good.json" >"$d/config.json"
    bad_case "config.json without $field" "$field"
    sed 's/"model_type": "[^"]*"/"model_type": "bogus"/' "$T/good.json" >"$d/config.json"
    bad_case "unknown model_type" model_type
    sed 's/"\(hidden_act\|hidden_activation\)": "[^"]*"/"\1": "relu6"/' "$T/good.json" >"$d/config.json"
    bad_case "unknown activation" relu6
    if grep -q '"rope_type"\|"type": "' "$T/good.json"; then # a rope_scaling object already: change its type
        sed 's/"\(rope_type\|type\)": "[^"]*"/"\1": "bogus"/' "$T/good.json" >"$d/config.json"
    else
        sed 's/"rope_theta": \([0-9.e+]*\),/"rope_theta": \1, "rope_scaling": {"rope_type": "bogus", "factor": 2.0},/' \
            "$T/good.json" | grep -v '"rope_scaling": null' >"$d/config.json"
    fi
    grep -q '"bogus"' "$d/config.json" && bad_case "unknown rope_type" 'rope_scaling.*bogus'
    rm -rf "$d"
done

finish
