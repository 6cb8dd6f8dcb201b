#!/bin/sh
# quantize.sh - slmc quantize through the binary: one read, many variants; determinism across
# thread counts; dry run; refusals.
. tests/e2e/lib.inc

"$SLMC" synth --shape small -o "$T/tiny" -q || fail "synth tiny"
expect 0 "quantize the family in one run" -- "$SLMC" quantize "$T/tiny" --type Q2_K,Q3_K_S,Q4_0,Q4_K_M,Q5_K_M,Q6_K,Q8_0 -o "$T/tiny-{type}.gguf" -q
for t in Q2_K Q3_K_S Q4_0 Q4_K_M Q5_K_M Q6_K Q8_0; do
    [ -f "$T/tiny-$t.gguf" ] || fail "tiny-$t.gguf written"
    expect 0 "inspect tiny-$t" -- "$SLMC" inspect "$T/tiny-$t.gguf" --json
done
grep -q '"Q8_0"' "$T/out" || fail "Q8_0 file has Q8_0 tensors"
expect 0 "quantize -t 1" -- "$SLMC" quantize "$T/tiny" "$T/t1.gguf" Q4_K_M -t 1 -q
expect 0 "quantize -t 2" -- "$SLMC" quantize "$T/tiny" "$T/t2.gguf" Q4_K_M -t 2 -q
cmp -s "$T/t1.gguf" "$T/t2.gguf" && ok "-t 1 and -t 2 give identical bytes" || fail "-t 1 and -t 2 differ"
cmp -s "$T/t1.gguf" "$T/tiny-Q4_K_M.gguf" && ok "multi-type output equals a single run" || fail "multi-type output differs from a single run"
expect 0 "dry run" -- "$SLMC" quantize "$T/tiny" "$T/dry.gguf" Q3_K_M --dry-run
[ -e "$T/dry.gguf" ] && fail "dry run wrote a file"
grep -q 'blk.0.attn_v.weight' "$T/out" || fail "dry run lists the tensors"
expect 0 "dry run --json" -- "$SLMC" quantize "$T/tiny" --type Q4_K_M --dry-run --json
grep -q '"plan"' "$T/out" || fail "dry run JSON has the plan"
expect 0 "--tensor-type override" -- "$SLMC" quantize "$T/tiny" "$T/ov.gguf" Q4_0 --tensor-type 'ffn_down=Q8_0' --json -q
grep -q '"Q8_0": 4' "$T/out" || fail "the four ffn_down tensors in Q8_0: $(cat "$T/out")"
expect 2 "unknown type" -- "$SLMC" quantize "$T/tiny" "$T/x.gguf" Q7_K
expect 2 "several types need {type}" -- "$SLMC" quantize "$T/tiny" --type Q4_0,Q8_0 -o "$T/x.gguf"
expect_error "requantize refused" "$T/tiny-Q4_0.gguf" -- "$SLMC" quantize "$T/tiny-Q4_0.gguf" "$T/rq.gguf" Q8_0
expect 0 "requantize allowed" -- "$SLMC" quantize "$T/tiny-Q4_0.gguf" "$T/rq.gguf" Q8_0 --allow-requantize -q
cp "$T/tiny-Q8_0.gguf" "$T/self.gguf"
expect_error "output = input" "$T/self.gguf" -- "$SLMC" quantize "$T/self.gguf" "$T/self.gguf" Q4_0 --allow-requantize
# rows of 128: k-quants fall back as llama-quantize does (Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q6_K -> Q8_0)
"$SLMC" synth --shape tiny -o "$T/tiny128" -q || fail "synth tiny"
expect 0 "Q2_K on 128-wide rows" -- "$SLMC" quantize "$T/tiny128" "$T/fb.gguf" Q2_K --json -q
grep -q '"IQ4_NL"' "$T/out" && ok "Q2_K falls back to IQ4_NL" || fail "no IQ4_NL fallback: $(cat "$T/out")"
expect 0 "Q4_K_M on 128-wide rows" -- "$SLMC" quantize "$T/tiny128" "$T/fb4.gguf" Q4_K_M --json -q
grep -q '"Q5_0"' "$T/out" && ok "Q4_K falls back to Q5_0" || fail "no Q5_0 fallback: $(cat "$T/out")"
# --method gptq modes: the sequential ones calibrate once per type, so several types at once give
# the bytes of single runs; flags that do not go together are refused
"$SLMC" synth --shape small -o "$T/small" -q || fail "synth small"
i=0; while [ $i -lt 200 ]; do echo "line $i of a calibration text for sequential gptq."; i=$((i + 1)); done >"$T/calib.txt"
G="--method gptq --calib $T/calib.txt -c 32 --chunks 2"
expect 0 "gptq (fp target) two types" -- "$SLMC" quantize "$T/small" --type Q4_K_M,Q8_0 -o "$T/g-{type}.gguf" $G --json -q
grep -q '"gptq_mode": "fp-target"' "$T/out" || fail "JSON names the gptq mode: $(cat "$T/out")"
expect 0 "gptq (fp target) Q4_K_M alone" -- "$SLMC" quantize "$T/small" "$T/g1.gguf" Q4_K_M $G -q
cmp -s "$T/g1.gguf" "$T/g-Q4_K_M.gguf" && ok "fp-target multi-type = single run" || fail "fp-target multi-type differs from a single run"
expect 0 "gptq --gptq-parallel" -- "$SLMC" quantize "$T/small" "$T/gp.gguf" Q4_K_M $G --gptq-parallel -q
cmp -s "$T/gp.gguf" "$T/g1.gguf" && fail "parallel and fp-target give the same bytes" || ok "parallel differs from fp-target"
expect 2 "two gptq modes" -- "$SLMC" quantize "$T/small" "$T/x.gguf" Q4_K_M $G --gptq-parallel --gptq-sequential
expect 2 "--gptq-ridge outside the fp target" -- "$SLMC" quantize "$T/small" "$T/x.gguf" Q4_K_M $G --gptq-sequential --gptq-ridge 2
expect 2 "--gptq-sequential without gptq" -- "$SLMC" quantize "$T/small" "$T/x.gguf" Q4_K_M --gptq-sequential
# --imatrix: llama-imatrix's .dat changes the blocks; include/exclude choose where it applies
if have_shared reference/books-22m-imatrix.dat; then
    HF="$SHARED/models/books-22m/hf-bf16"; IM="$SHARED/reference/books-22m-imatrix.dat"
    expect 0 "plain Q3_K_M" -- "$SLMC" quantize "$HF" "$T/b-plain.gguf" Q3_K_M -q
    expect 0 "imatrix Q3_K_M" -- "$SLMC" quantize "$HF" "$T/b-im.gguf" Q3_K_M --imatrix "$IM" -q
    cmp -s "$T/b-plain.gguf" "$T/b-im.gguf" && fail "--imatrix changed nothing" || ok "--imatrix changes the blocks"
    expect 0 "imatrix for no tensor" -- "$SLMC" quantize "$HF" "$T/b-none.gguf" Q3_K_M --imatrix "$IM" --include-weights no.such.tensor -q
    cmp -s "$T/b-plain.gguf" "$T/b-none.gguf" && ok "--include-weights of nothing = plain" || fail "--include-weights of nothing differs from plain"
    expect 2 "--include-weights without --imatrix" -- "$SLMC" quantize "$HF" "$T/x.gguf" Q3_K_M --include-weights a
    printf 'not an imatrix' >"$T/bad.dat"
    expect_error "bad imatrix file" "$T/bad.dat" -- "$SLMC" quantize "$HF" "$T/x.gguf" Q3_K_M --imatrix "$T/bad.dat"
    # very low-bit types without importance data: refused as llama-quantize does, before any file
    MISSING="missing importance matrix for tensor blk.0.attn_k.weight in a very low-bit quantization (IQ2_XXS"
    expect_error "IQ2_XXS without --imatrix" "$HF" -- "$SLMC" quantize "$HF" "$T/iq2.gguf" IQ2_XXS
    grep -qF "$MISSING" "$T/err" && ok "the refusal names the tensor and type" || fail "refusal message: $(cat "$T/err")"
    [ -e "$T/iq2.gguf" ] && fail "refused IQ2_XXS wrote a file"
    expect_error "Q4_K_M,IQ2_M without --imatrix" "$HF" -- "$SLMC" quantize "$HF" --type Q4_K_M,IQ2_M -o "$T/two-{type}.gguf"
    ls "$T"/two-* >/dev/null 2>&1 && fail "a refused run wrote a file" || ok "no output of a refused run"
    expect 0 "IQ2_XXS plan with --imatrix" -- "$SLMC" quantize "$HF" --type IQ2_XXS --dry-run --json --imatrix "$IM" -q
    grep -q '"IQ2_XXS": 36' "$T/out" || fail "IQ2_XXS plan: $(cat "$T/out")"
    # i-quant mixes write files the evaluator runs, within a few % of the BF16 model's PPL
    expect 0 "IQ1_S,IQ3_M with --imatrix" -- "$SLMC" quantize "$HF" --type IQ1_S,IQ3_M -o "$T/iq-{type}.gguf" --imatrix "$IM" -q
    ppl_of() { "$SLMC" eval "$1" --text "$SHARED/text/books-valid.txt" -c 128 --chunks 4 --json -q |
        sed -n 's/.*"ppl": *\([0-9.]*\).*/\1/p' | head -n 1; }
    p0=$(ppl_of "$HF")
    for m in IQ1_S IQ3_M; do
        p=$(ppl_of "$T/iq-$m.gguf")
        awk -v a="$p" -v b="$p0" 'BEGIN { exit !(a > 0 && a / b < 1.1 && a / b > 0.95) }' &&
            ok "$m PPL $p vs BF16 $p0" || fail "$m PPL '$p' vs BF16 '$p0'"
    done
    "$SLMC" inspect "$T/iq-IQ1_S.gguf" --json -q | grep -q '"type": "IQ1_S"' && ok "IQ1_S tensors written" ||
        fail "no IQ1_S tensor in the IQ1_S file"
fi
finish
