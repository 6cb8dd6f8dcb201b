#!/bin/sh
# convert.sh - the slmc binary on the real files in ../shared: inspect everything, convert
# round trips byte for byte, atomic output, refusal to overwrite an input, bad input.
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
