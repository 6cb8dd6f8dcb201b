#!/bin/sh
# convert.sh - the slmc binary on the real files in ../shared: inspect everything, convert
# round trips byte for byte, dequantizing a quantized GGUF (to F16/F32 GGUF and to HF), atomic
# output, refusal to overwrite an input, bad input.
. tests/e2e/lib.inc

if have_shared models; then
    # every GGUF in ../shared parses and inspects, as text and as JSON
    for f in "$SHARED"/models/tiny-random/*.gguf "$SHARED"/reference/*.gguf "$SHARED"/vocab/*.gguf; do
        expect 0 "inspect $(basename "$f")" -- "$SLMC" inspect "$f"
        expect 0 "inspect --json $(basename "$f")" -- "$SLMC" inspect --json "$f"
        if command -v python3 >/dev/null; then python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$T/out" || fail "inspect --json output is JSON"; fi
    done
    HF="$SHARED/models/books-22m/hf-bf16"
    expect 0 "inspect HF folder" -- "$SLMC" inspect "$HF" --json
    grep -q "\"n_params\": 21105920" "$T/out" || fail "books-22m has 21105920 parameters"
    L2C="$SHARED/models/stories260K/stories260K.bin"
    TOK="$SHARED/models/stories260K/tok512.bin"
    expect 0 "inspect llama2.c" -- "$SLMC" inspect "$L2C" --tokenizer "$TOK"
    expect_error "llama2.c without --tokenizer" "$L2C" -- "$SLMC" inspect "$L2C"

    # llama2.c -> GGUF -> HF -> GGUF: the second GGUF is byte-identical to the first
    expect 0 "llama2.c -> GGUF" -- "$SLMC" convert "$L2C" "$T/s1.gguf" --tokenizer "$TOK" -q
    expect 0 "GGUF -> HF" -- "$SLMC" convert "$T/s1.gguf" "$T/s-hf" -q
    [ -f "$T/s-hf/config.json" ] && [ -f "$T/s-hf/model.safetensors" ] || fail "HF folder has config.json and model.safetensors"
    expect 0 "HF -> GGUF" -- "$SLMC" convert "$T/s-hf" "$T/s2.gguf" -q
    cmp -s "$T/s1.gguf" "$T/s2.gguf" && ok "llama2.c -> GGUF -> HF -> GGUF is byte-identical" \
        || fail "llama2.c -> GGUF -> HF -> GGUF differs"

    # HF (BF16, 2 shards) -> GGUF -> HF -> GGUF: GGUFs identical; shards forced small
    expect 0 "HF -> GGUF" -- "$SLMC" convert "$HF" "$T/b1.gguf" -q
    expect 0 "GGUF -> HF sharded" -- "$SLMC" convert "$T/b1.gguf" "$T/b-hf" --shard-size 15MB -q
    [ -f "$T/b-hf/model.safetensors.index.json" ] || fail "15MB shards give an index file"
    expect 0 "sharded HF -> GGUF" -- "$SLMC" convert "$T/b-hf" "$T/b2.gguf" -q
    cmp -s "$T/b1.gguf" "$T/b2.gguf" && ok "HF -> GGUF -> HF -> GGUF is byte-identical" \
        || fail "HF -> GGUF -> HF -> GGUF differs"
    expect 0 "GGUF -> GGUF f16" -- "$SLMC" convert "$T/b1.gguf" "$T/b16.gguf" --outtype f16 --json
    grep -q '"outtype": "F16"' "$T/out" || fail "convert --json names the outtype"

    # a quantized GGUF (llama.cpp's Q4_K_M): --outtype dequantizes, as llama-quantize
    # --allow-requantize ... F32 does; HF output always holds the dequantized values
    Q4="$SHARED/reference/books-22m-Q4_K_M.gguf"
    expect 0 "Q4_K_M -> GGUF f16" -- "$SLMC" convert "$Q4" "$T/q16.gguf" --outtype f16 --json
    grep -q '"dequantized": true' "$T/out" || fail "convert --json says dequantized"
    grep -q "note: $Q4 has quantized tensors (Q4_K, Q6_K); the F16 weights are their dequantized values" "$T/err" \
        || fail "dequantizing convert prints a note: $(cat "$T/err")"
    expect 0 "inspect the F16 file" -- "$SLMC" inspect "$T/q16.gguf"
    grep -Eq ' Q[0-9]_[0-9K] ' "$T/out" && fail "F16 file has no quantized tensor"
    [ "$(grep -c ' F16 ' "$T/out")" -eq 44 ] || fail "F16 file: the 44 matrices are F16"
    [ "$(grep -c ' F32 ' "$T/out")" -eq 13 ] || fail "F16 file: the 13 norms stay F32"
    grep -Eq 'general.file_type +1$' "$T/out" || fail "F16 file has general.file_type 1"
    expect 0 "Q4_K_M -> GGUF f32, quiet" -- "$SLMC" convert "$Q4" "$T/q32.gguf" --outtype f32 -q
    [ -s "$T/err" ] && fail "-q prints nothing: $(cat "$T/err")"
    expect 0 "inspect the F32 file" -- "$SLMC" inspect "$T/q32.gguf"
    [ "$(grep -c ' F32 ' "$T/out")" -eq 57 ] || fail "F32 file: every tensor is F32"
    expect 0 "Q4_K_M -> GGUF without --outtype" -- "$SLMC" convert "$Q4" "$T/qcopy.gguf" --json
    grep -q '"dequantized": false' "$T/out" || fail "a plain copy is not dequantized"
    grep -q 'note:' "$T/err" && fail "a plain copy prints no dequantization note"
    expect 0 "inspect the copy" -- "$SLMC" inspect "$T/qcopy.gguf"
    [ "$(grep -c ' Q4_K ' "$T/out")" -eq 39 ] || fail "the copy keeps the Q4_K tensors"
    expect 0 "Q4_K_M -> HF" -- "$SLMC" convert "$Q4" "$T/q-hf" --json
    [ -f "$T/q-hf/config.json" ] && [ -f "$T/q-hf/model.safetensors" ] || fail "HF folder from Q4_K_M has config.json and weights"
    grep -q '"torch_dtype": "float32"' "$T/q-hf/config.json" || fail "HF from a quantized GGUF is F32 by default"
    grep -q '"dequantized": true' "$T/out" || fail "convert --json to HF says dequantized"
    grep -q "note: $Q4 has quantized tensors (Q4_K, Q6_K); the Hugging Face weights are their dequantized values" "$T/err" \
        || fail "HF from a quantized GGUF prints the note: $(cat "$T/err")"
    # back to GGUF F32: the same tensor data as the direct F32 conversion (the Q/K rows came
    # back in llama.cpp's order); the files end with the 84 MB of tensor data in the same order
    expect 0 "dequantized HF -> GGUF f32" -- "$SLMC" convert "$T/q-hf" "$T/q32-via-hf.gguf" --outtype f32 -q
    tail -c 84000000 "$T/q32.gguf" >"$T/a.bin"
    tail -c 84000000 "$T/q32-via-hf.gguf" >"$T/b.bin"
    cmp -s "$T/a.bin" "$T/b.bin" && ok "Q4_K_M -> HF -> GGUF F32 has the tensors of Q4_K_M -> GGUF F32" \
        || fail "Q4_K_M -> HF -> GGUF F32 differs from Q4_K_M -> GGUF F32"
    rm -f "$T/a.bin" "$T/b.bin" "$T/q32.gguf" "$T/q32-via-hf.gguf" "$T/q16.gguf"
    rm -rf "$T/q-hf"
    # a type slmc cannot decode: the Q2_K file's output.weight (Q6_K, 210 bytes per 256 values,
    # the first tensor info) relabelled MXFP4 (id 39, 136 bytes per 256: it fits in the same
    # place); tensor info = name, u32 n_dims, 2 x u64 ne, then u32 type
    cp "$SHARED/reference/books-22m-Q2_K.gguf" "$T/iq.gguf"
    chmod u+w "$T/iq.gguf"
    name=output.weight
    off=$(grep -obUa "$name" "$T/iq.gguf" | head -n 1 | cut -d: -f1)
    printf '\047\000\000\000' | dd of="$T/iq.gguf" bs=1 seek=$((off + ${#name} + 4 + 16)) conv=notrunc 2>/dev/null
    expect 0 "inspect the relabelled file" -- "$SLMC" inspect "$T/iq.gguf"
    grep -q "$name *MXFP4" "$T/out" || fail "$name is now MXFP4"
    expect_error "no decoder for MXFP4 (GGUF)" "$T/iq.gguf: tensor $name is MXFP4" -- "$SLMC" convert "$T/iq.gguf" "$T/iq32.gguf" --outtype f32
    expect_error "no decoder for MXFP4 (HF)" "$T/iq.gguf: tensor $name is MXFP4" -- "$SLMC" convert "$T/iq.gguf" "$T/iq-hf"
    [ -e "$T/iq32.gguf" ] || [ -e "$T/iq-hf" ] && fail "nothing written when a tensor cannot be decoded"
    expect 0 "MXFP4 copied as is without --outtype" -- "$SLMC" convert "$T/iq.gguf" "$T/iq-copy.gguf" -q

    # an output equal to an input is refused, and the input is untouched
    cp "$T/s1.gguf" "$T/keep.gguf"
    expect_error "output = input" "$T/keep.gguf" -- "$SLMC" convert "$T/keep.gguf" "$T/keep.gguf"
    cmp -s "$T/s1.gguf" "$T/keep.gguf" || fail "input untouched after refusal"
    expect_error "output inside the input folder" "$T/b-hf/x.gguf" -- "$SLMC" convert "$T/b-hf" "$T/b-hf/x.gguf"

    # an interrupted convert leaves nothing at the output path (or, if it finished, a whole file)
    for delay in 0.01 0.03 0.06 0.1 0.2; do
        rm -f "$T/int.gguf"
        "$SLMC" convert "$HF" "$T/int.gguf" --outtype f32 -q &
        pid=$!
        sleep $delay
        kill -9 $pid 2>/dev/null
        wait $pid 2>/dev/null
        if [ -e "$T/int.gguf" ]; then
            "$SLMC" inspect "$T/int.gguf" >/dev/null 2>&1 && ok "killed after ${delay}s: complete file" \
                || fail "killed after ${delay}s: partial file at the output path"
        else
            ok "killed after ${delay}s: nothing at the output path"
        fi
    done

    # bad input through the binary: truncations and a flipped magic, one clear line each
    size=$(wc -c <"$T/s1.gguf")
    for n in 3 8 16 24 100 1000 5000 $((size / 2)) $((size - 1)); do
        head -c "$n" "$T/s1.gguf" >"$T/trunc.gguf"
        expect_error "GGUF truncated to $n bytes" "$T/trunc.gguf" -- "$SLMC" inspect "$T/trunc.gguf"
    done
    { printf 'GGUG'; tail -c +5 "$T/s1.gguf"; } >"$T/magic.gguf"
    expect_error "flipped magic" "$T/magic.gguf" -- "$SLMC" inspect "$T/magic.gguf"
    mkdir "$T/bad-hf"
    cp "$T/s-hf/config.json" "$T/bad-hf/"
    head -c 1000 "$T/s-hf/model.safetensors" >"$T/bad-hf/model.safetensors"
    expect 1 "truncated safetensors" -- "$SLMC" convert "$T/bad-hf" "$T/bad.gguf"
    grep -q 'model.safetensors' "$T/err" || fail "message names the safetensors file: $(cat "$T/err")"
    [ -e "$T/bad.gguf" ] && fail "no output after a failed convert"
fi
finish
