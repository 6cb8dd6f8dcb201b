#!/bin/sh
# eval.sh - slmc eval and generate through the binary, against llama.cpp's reference figures.
. tests/e2e/lib.inc

expect 2 "eval without --text" -- "$SLMC" eval x.gguf
expect 2 "generate without -p" -- "$SLMC" generate x.gguf

if have_shared reference/stories260K-F32.gguf; then
    M="$SHARED/reference/stories260K-F32.gguf"
    expect 0 "eval stories260K" -- "$SLMC" eval "$M" --text "$SHARED/text/tinystories_sample.txt" -c 128 -q
    grep -q "PPL = 6.685[56]" "$T/out" && ok "PPL 6.6856 as llama-perplexity" || fail "PPL differs: $(cat "$T/out")"
    expect 0 "eval --json" -- "$SLMC" eval "$M" --text "$SHARED/text/tinystories_sample.txt" -c 128 --chunks 4 --json -q
    for k in ppl ppl_stderr n_ctx chunks tokens seconds; do
        grep -q "\"$k\":" "$T/out" || fail "--json has $k"
    done
    grep -q '"chunks": 4' "$T/out" || fail "--chunks 4 honoured"
    printf 'Once upon a time' >"$T/short.txt"
    expect_error "text too short" "$T/short.txt" -- "$SLMC" eval "$M" --text "$T/short.txt" -c 128

    # KLD: side by side == through a saved base
    L2C="$SHARED/models/stories260K/stories260K.bin"; TOK="$SHARED/models/stories260K/tok512.bin"
    "$SLMC" quantize "$L2C" "$T/s-q8.gguf" Q8_0 --tokenizer "$TOK" -q || fail "quantize stories to Q8_0"
    expect 0 "--save-logits" -- "$SLMC" eval "$M" --text "$SHARED/text/tinystories_sample.txt" -c 128 --save-logits "$T/base.h5" -q
    [ -f "$T/base.h5" ] || fail "base logits saved"
    expect 0 "--kl-logits" -- "$SLMC" eval "$T/s-q8.gguf" --text "$SHARED/text/tinystories_sample.txt" --kl-logits "$T/base.h5" --json -q
    a=$(grep '"kld_mean"' "$T/out")
    expect 0 "--kl-base" -- "$SLMC" eval "$T/s-q8.gguf" --text "$SHARED/text/tinystories_sample.txt" -c 128 --kl-base "$M" --json -q
    b=$(grep '"kld_mean"' "$T/out")
    [ -n "$a" ] && [ "$a" = "$b" ] && ok "saved base gives the same KLD ($a)" || fail "KLD differs: '$a' vs '$b'"
    grep -q '"same_top_p"' "$T/out" || fail "--json has same_top_p"
    expect_error "logits file for another text" "$T/base.h5" -- "$SLMC" eval "$T/s-q8.gguf" --text "$SHARED/text/tinyshakespeare.txt" --kl-logits "$T/base.h5" --chunks 2

    # generate: greedy reproduces llama2.c's documented sample
    expect 0 "generate greedy" -- "$SLMC" generate "$L2C" --tokenizer "$TOK" -p "Once upon a time" -n 30 --temp 0 -q
    grep -q "Once upon a time, there was a little girl named Lily. She loved to play outside" "$T/out" \
        && ok "greedy text as llama2.c" || fail "greedy text: $(cat "$T/out")"
    expect 0 "generate seeded" -- "$SLMC" generate "$L2C" --tokenizer "$TOK" -p "Once" -n 30 --seed 7 -q
    cp "$T/out" "$T/g1"
    expect 0 "generate seeded again" -- "$SLMC" generate "$L2C" --tokenizer "$TOK" -p "Once" -n 30 --seed 7 -q
    cmp -s "$T/out" "$T/g1" && ok "same seed, same text" || fail "same seed gave another text"
fi
finish
