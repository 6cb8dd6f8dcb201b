#!/bin/sh
# make_iq_refs.sh [SHARED] - llama.cpp's blocks of the i-quant and ternary types for two tensors of
# books-22m, the reference vectors of tests/test_quants_iq1.c .. test_quants_iq4.c (tests/data/iquant/).
#
# For each type, with the peer llama-quantize (../shared/peer/build.sh) and llama.cpp's imatrix:
#   llama-quantize --imatrix books-22m-imatrix.dat --pure --output-tensor-type q8_0
#                  --token-embedding-type q8_0 books-22m-BF16.gguf T.gguf MIX
# (MIX: the mix whose base type is TYPE: TYPE's own name, but IQ2_M for IQ2_S)
# (--pure: every layer matrix gets TYPE; the two outer tensors have no imatrix entry, which the
# 1- and 2-bit types refuse), then llama-quantize --allow-requantize T.gguf F32 for llama.cpp's own
# dequantization. Kept: W.TYPE (the raw blocks) and W.TYPE.dequant.sha256 (SHA-256 of the F32
# values llama.cpp decodes them to), for W = blk.0.attn_q.weight and blk.1.ffn_down.weight.
# IQ3_XXS and IQ3_S, which llama-quantize also writes without an imatrix, once more without it:
# W.TYPE.noimatrix.
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${1:-$here/../shared}
bin=$(sh "$shared/peer/build.sh")
out=$here/tests/data/iquant
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
for type in IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ4_NL IQ4_XS TQ1_0 TQ2_0; do
    # the llama-quantize mix whose base type is ggml type $type: the same name, except the IQ2_S
    # mix, whose base type is IQ2_XS (ggml's IQ2_S is the IQ2_M mix's)
    mix=$type
    [ "$type" = IQ2_S ] && mix=IQ2_M
    "$bin/llama-quantize" --imatrix "$shared/reference/books-22m-imatrix.dat" --pure --output-tensor-type q8_0 \
        --token-embedding-type q8_0 "$shared/reference/books-22m-BF16.gguf" "$tmp/q.gguf" "$mix" >"$tmp/log" 2>&1 ||
        { tail -n 5 "$tmp/log" >&2; exit 1; }
    "$bin/llama-quantize" --allow-requantize "$tmp/q.gguf" "$tmp/f.gguf" F32 >"$tmp/log" 2>&1 ||
        { tail -n 5 "$tmp/log" >&2; exit 1; }
    for w in blk.0.attn_q.weight blk.1.ffn_down.weight; do
        python3 "$here/scripts/gguf_tensor.py" "$tmp/q.gguf" "$w" "$out/$w.$type"
        python3 "$here/scripts/gguf_tensor.py" "$tmp/f.gguf" "$w" "$tmp/deq"
        sha256sum <"$tmp/deq" | cut -d' ' -f1 >"$out/$w.$type.dequant.sha256"
    done
    echo "$type: done"
done
for type in IQ3_XXS IQ3_S; do
    "$bin/llama-quantize" --pure --output-tensor-type q8_0 --token-embedding-type q8_0 \
        "$shared/reference/books-22m-BF16.gguf" "$tmp/q.gguf" "$type" >"$tmp/log" 2>&1 || { tail -n 5 "$tmp/log" >&2; exit 1; }
    for w in blk.0.attn_q.weight blk.1.ffn_down.weight; do
        python3 "$here/scripts/gguf_tensor.py" "$tmp/q.gguf" "$w" "$out/$w.$type.noimatrix"
    done
    echo "$type without imatrix: done"
done
