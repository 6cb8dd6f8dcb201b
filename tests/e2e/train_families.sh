#!/bin/sh
# train_families.sh - train, prune and distill every family (tests/data/configs: llama with Llama
# 3's rope_freqs, qwen2, qwen3, gemma, gemma2, gemma3, phi2, phi3 with longrope factors, stablelm)
# through the binary, on a generated text:
#   synth -> convert -> train (the loss halves; the export evaluates in slmc and, where the peer
#   knows the family, in llama.cpp with the same PPL) -> prune to about 65% of the parameters
#   (heads and FFN channels; FFN channels only where llama.cpp fixes attn_q's width or the family
#   forbids heads, and qwen2's heads alone are refused since llama.cpp could not load the file;
#   the result evaluates in slmc and llama.cpp; its Hugging Face conversion describes the new
#   shape) -> distill from the trained model (the pruned student's held-out PPL falls).
. tests/e2e/lib.inc
PEER=${SLMC_PEER_BIN:-/tmp/slmc-peer/llama.cpp-b4747/build/bin}
# Under the sanitizers (make check-asan) the 26-layer gemma2 model and the kill -9 runs would take
# most of CI's time: the optimized build runs them, the sanitized one reports them skipped. The
# families other than llama (whose trained teacher serves the distillation checks) train and
# distil for a quarter of the steps there (the same code, run fewer times), so the checks that
# need the full runs (the loss halves, distillation lowers the PPL) are reported skipped too.
SANITIZED=
ldd "$SLMC" 2>/dev/null | grep -q 'libasan' && SANITIZED=1

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

# peer_check FAMILY FILE PPL WHAT: llama-perplexity gives the same PPL (b4747 lacks qwen3, gemma3)
peer_check() {
    case $1 in qwen3|gemma3) echo "SKIP: $1: llama.cpp b4747 does not know the family ($4)"; return ;; esac
    if [ ! -x "$PEER/llama-perplexity" ]; then echo "SKIP: $1: no llama.cpp peer (sh ../shared/peer/build.sh) ($4)"; return; fi
    "$PEER/llama-perplexity" -m "$2" -f "$T/valid.txt" -c 64 --chunks 4 -t 2 >"$T/peer.txt" 2>&1
    peer=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$T/peer.txt")
    awk -v a="$3" -v b="$peer" 'BEGIN { exit !(b > 0 && (a - b) / b < 2e-3 && (b - a) / b < 2e-3) }' \
        && ok "$1: llama.cpp runs the $4, PPL $peer (slmc $3)" \
        || fail "$1: llama-perplexity on the $4: '$peer' vs slmc $3: $(grep -i error "$T/peer.txt" | head -2)"
}

TRAIN="--data $T/train.txt --seq-len 32 --batch 4 --eval-every 0 -t 2 -q"
for f in llama qwen2 qwen3 gemma gemma2 gemma3 phi2 phi3 stablelm; do
    cfg=tests/data/configs/$f/config.json
    [ -f "$cfg" ] || { echo "SKIP: $cfg not found (run from the project root)"; continue; }
    if [ -n "$SANITIZED" ] && [ "$f" = gemma2 ]; then echo "SKIP: gemma2 (26 layers) under the sanitizers: the optimized build runs it"; continue; fi
    "$SLMC" synth --config "$cfg" --dtype f32 -o "$T/$f-hf" -q && "$SLMC" convert "$T/$f-hf" "$T/$f.gguf" -q \
        || { fail "$f: synth + convert"; continue; }

    steps=80
    [ "$f" = gemma2 ] && steps=25 # its test config has the 26 layers llama.cpp b4747 insists on
    [ -n "$SANITIZED" ] && [ "$f" != llama ] && steps=20 # llama's teacher serves the distillation checks below
    expect 0 "$f: train $steps steps" -- "$SLMC" train --model "$T/$f.gguf" $TRAIN --steps $steps --lr 3e-3 \
        --metrics "$T/$f-m.jsonl" -o "$T/$f-t.gguf"
    first=$(head -n 1 "$T/$f-m.jsonl" | sed -E 's/.*"loss": ?([0-9.eE+-]+).*/\1/')
    last=$(grep '"loss"' "$T/$f-m.jsonl" | tail -n 1 | sed -E 's/.*"loss": ?([0-9.eE+-]+).*/\1/')
    if [ -n "$SANITIZED" ] && [ "$f" != llama ]; then echo "SKIP: $f: the loss halving (80 steps) under the sanitizers: the optimized build checks it"
    else awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.5 * a) }' && ok "$f: loss $first -> $last" \
        || fail "$f: loss did not halve: $first -> $last"; fi
    p_trained=$(ppl "$T/$f-t.gguf")
    [ -n "$p_trained" ] && ok "$f: trained export evaluates (PPL $p_trained)" || fail "$f: trained export does not evaluate"
    peer_check "$f" "$T/$f-t.gguf" "$p_trained" "trained export"

    # pruning: the families the pruner does not take yet say so
    if "$SLMC" prune "$T/$f-t.gguf" "$T/$f-probe.gguf" --method random --ffn 0.5 -q 2>"$T/err" >/dev/null; then :; else
        if grep -q "cannot be pruned yet" "$T/err"; then echo "SKIP: $f: $(cat "$T/err")"; continue; fi
        fail "$f: prune --ffn 0.5: $(cat "$T/err")"; continue
    fi

    # llama.cpp sizes qwen2's, phi2's, phi3's and stablelm's attn_q (or qkv's Q rows) by n_embd, so
    # their heads go only with the hidden width: FFN channels alone here
    ff_in=$(sed -n 's/.*"intermediate_size": *\([0-9]*\).*/\1/p' "tests/data/configs/$f/config.json")
    case $f in
    qwen2|phi2|phi3|stablelm)
        expect_error "$f: heads alone refused (llama.cpp could not load it)" "$T/$f-t.gguf" -- "$SLMC" prune \
            "$T/$f-t.gguf" "$T/$f-x.gguf" --method random --heads 2 -q
        axes="--ffn 0.4"; heads=4; ff=$(awk -v f="$ff_in" 'BEGIN { printf "%d", f * 0.4 + 0.5 }') ;;
    *)
        axes="--heads 2 --ffn 0.6"; heads=2; ff=$(awk -v f="$ff_in" 'BEGIN { printf "%d", f * 0.6 + 0.5 }') ;;
    esac
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
    peer_check "$f" "$T/$f-p.gguf" "$p_pruned" "pruned file"
    expect 0 "$f: pruned file to Hugging Face" -- "$SLMC" convert "$T/$f-p.gguf" "$T/$f-p-hf" -q
    grep -q "\"num_attention_heads\": $heads" "$T/$f-p-hf/config.json" && grep -q "\"intermediate_size\": $ff" "$T/$f-p-hf/config.json" \
        && ok "$f: config.json of the pruned shape" || fail "$f: config.json: $(tr -d '\n' <"$T/$f-p-hf/config.json" | head -c 400)"

    dsteps=40
    [ "$f" = gemma2 ] && dsteps=12
    [ -n "$SANITIZED" ] && [ "$f" != llama ] && dsteps=10
    expect 0 "$f: distill $dsteps steps from the trained model" -- "$SLMC" distill --teacher "$T/$f-t.gguf" \
        --student "$T/$f-p.gguf" $TRAIN --steps $dsteps --lr 2e-3 -o "$T/$f-d.gguf"
    p_dist=$(ppl "$T/$f-d.gguf")
    if [ -n "$SANITIZED" ] && [ "$f" != llama ]; then
        [ -n "$p_dist" ] && ok "$f: the distilled student evaluates (PPL $p_dist)" || fail "$f: the distilled student does not evaluate"
        echo "SKIP: $f: distillation lowering the PPL ($dsteps steps) under the sanitizers: the optimized build checks it"
    else awk -v a="$p_pruned" -v b="$p_dist" 'BEGIN { exit !(b > 0 && b < a) }' \
        && ok "$f: held-out PPL of the pruned student $p_pruned -> $p_dist after distillation" \
        || fail "$f: distillation did not lower the held-out PPL: $p_pruned -> $p_dist"; fi
done

# the distillation options on llama's trained teacher and pruned student: every loss; the
# teacher saved once (top 16 of 320 ids) and a second run from the cache alone
if [ -f "$T/llama-p.gguf" ]; then
    for loss in reverse-kl jsd tvd; do
        expect 0 "distill --loss $loss" -- "$SLMC" distill --teacher "$T/llama-t.gguf" --student "$T/llama-p.gguf" \
            $TRAIN --steps 10 --lr 2e-3 --loss $loss --jsd-beta 0.3 --metrics "$T/l-$loss.jsonl" -o "$T/l-$loss.gguf"
        grep -q '"kl"' "$T/l-$loss.jsonl" || fail "distill --loss $loss: no divergence in the metrics"
    done
    expect 0 "distill --save-teacher (top 16)" -- "$SLMC" distill --teacher "$T/llama-t.gguf" --student "$T/llama-p.gguf" \
        $TRAIN --steps 20 --lr 2e-3 --save-teacher "$T/teacher.h5" --top-k 16 --metrics "$T/live.jsonl" -o "$T/live.gguf"
    [ -s "$T/teacher.h5" ] && [ ! -e "$T/teacher.h5.tmp" ] && ok "teacher cache written" || fail "no teacher cache"
    expect 0 "distill --teacher-cache" -- "$SLMC" distill --teacher-cache "$T/teacher.h5" --student "$T/llama-p.gguf" \
        $TRAIN --steps 20 --lr 2e-3 --metrics "$T/cached.jsonl" -o "$T/cached.gguf"
    kl_live=$(head -n 1 "$T/live.jsonl" | sed -E 's/.*"kl": ?([0-9.eE+-]+).*/\1/')
    kl_cached=$(head -n 1 "$T/cached.jsonl" | sed -E 's/.*"kl": ?([0-9.eE+-]+).*/\1/')
    awk -v a="$kl_live" -v b="$kl_cached" 'BEGIN { exit !(b > 0 && b <= a && b > 0.8 * a) }' \
        && ok "first-step KL from the cache $kl_cached, live $kl_live (the rest merged into one bucket)" \
        || fail "first-step KL: cache $kl_cached vs live $kl_live"
    p_cached=$(ppl "$T/cached.gguf"); p_pruned=$(ppl "$T/llama-p.gguf")
    awk -v a="$p_pruned" -v b="$p_cached" 'BEGIN { exit !(b > 0 && b < a) }' \
        && ok "distilled from the cache: held-out PPL $p_pruned -> $p_cached" || fail "cache distill: $p_pruned -> $p_cached"
    expect 0 "distill into LoRA adapters (rank 8)" -- "$SLMC" distill --teacher "$T/llama-t.gguf" \
        --student "$T/llama-p.gguf" $TRAIN --steps 30 --lr 5e-3 --lora-rank 8 -o "$T/lora.gguf"
    p_lora=$(ppl "$T/lora.gguf")
    awk -v a="$p_pruned" -v b="$p_lora" 'BEGIN { exit !(b > 0 && b < a) }' \
        && ok "LoRA distillation, merged on export: held-out PPL $p_pruned -> $p_lora" || fail "LoRA: $p_pruned -> $p_lora"
    "$SLMC" inspect "$T/lora.gguf" | grep -q "lora_" && fail "the merged export holds adapter tensors" || ok "no adapter tensors in the export"
    peer_check llama "$T/lora.gguf" "$p_lora" "merged LoRA export"
    "$SLMC" prune "$T/llama-t.gguf" "$T/narrow.gguf" --method magnitude --hidden 192 --ffn 0.6 -q >/dev/null 2>&1 \
        || fail "prune --hidden 192 for the alignment test"
    p_narrow=$(ppl "$T/narrow.gguf")
    expect 0 "distill with hidden-state alignment 1:1,2:2 (a 192-wide student: projections)" -- "$SLMC" distill \
        --teacher "$T/llama-t.gguf" --student "$T/narrow.gguf" $TRAIN --steps 30 --lr 2e-3 --align-layers 1:1,2:2 \
        --align-weight 0.01 --metrics "$T/align.jsonl" -o "$T/aligned.gguf"
    a1=$(head -n 1 "$T/align.jsonl" | sed -E 's/.*"align": ?([0-9.eE+-]+).*/\1/')
    a2=$(grep '"align"' "$T/align.jsonl" | tail -n 1 | sed -E 's/.*"align": ?([0-9.eE+-]+).*/\1/')
    p_aligned=$(ppl "$T/aligned.gguf")
    awk -v a="$a1" -v b="$a2" -v p="$p_narrow" -v q="$p_aligned" 'BEGIN { exit !(b < a && q < p) }' \
        && ok "alignment term $a1 -> $a2, held-out PPL $p_narrow -> $p_aligned" || fail "alignment: $a1 -> $a2, PPL $p_narrow -> $p_aligned"
    "$SLMC" inspect "$T/aligned.gguf" | grep -q "align\." && fail "the projection was exported" || ok "the projections stay out of the export"
    expect_usage "--align-layers with a teacher cache" "--align-layers" -- "$SLMC" distill --teacher-cache "$T/teacher.h5" \
        --student "$T/llama-p.gguf" $TRAIN --align-layers 1:1 -o "$T/x.gguf"
    expect_error "--align-layers past the teacher's layers" "$T/llama-p.gguf" -- "$SLMC" distill --teacher "$T/llama-t.gguf" \
        --student "$T/llama-p.gguf" $TRAIN --steps 2 --align-layers 1:9 -o "$T/x.gguf"
    expect_error "a cache at another temperature" "$T/teacher.h5" -- "$SLMC" distill --teacher-cache "$T/teacher.h5" \
        --student "$T/llama-p.gguf" $TRAIN --steps 2 --temperature 1 -o "$T/x.gguf"
    expect_error "a cache that never saw the sequences" "$T/teacher.h5" -- "$SLMC" distill --teacher-cache "$T/teacher.h5" \
        --student "$T/llama-p.gguf" $TRAIN --steps 200 -o "$T/x.gguf"
    expect_error "not a cache" "$T/train.txt" -- "$SLMC" distill --teacher-cache "$T/train.txt" \
        --student "$T/llama-p.gguf" $TRAIN --steps 2 -o "$T/x.gguf"
    expect_usage "--loss unknown" "--loss" -- "$SLMC" distill --teacher "$T/llama-t.gguf" --student "$T/llama-p.gguf" \
        $TRAIN --loss hellinger -o "$T/x.gguf"
    expect_usage "--jsd-beta 1" "--jsd-beta" -- "$SLMC" distill --teacher "$T/llama-t.gguf" --student "$T/llama-p.gguf" \
        $TRAIN --loss jsd --jsd-beta 1 -o "$T/x.gguf"
    expect_usage "--save-teacher without a teacher" "--save-teacher" -- "$SLMC" distill --teacher-cache "$T/teacher.h5" \
        --save-teacher "$T/y.h5" --student "$T/llama-p.gguf" $TRAIN -o "$T/x.gguf"
fi
# kill -9 mid-run, then --resume: byte-identical to the uninterrupted run, for a family other than
# llama with each of its runs: qwen3 distilled with JSD from its trained teacher, gemma3 into LoRA
# adapters with reverse KL, phi3 trained with cross-entropy
kill9_case() { # NAME -- command... (with -o OUT and --checkpoint CK appended)
    name=$1; shift 2
    if [ -n "$SANITIZED" ]; then echo "SKIP: $name: kill -9 and resume under the sanitizers: the optimized build runs it"; return; fi
    "$@" --steps 60 --checkpoint "$T/$name-full.h5" -o "$T/$name-full.gguf" >/dev/null 2>&1 || { fail "$name: uninterrupted run"; return; }
    "$@" --steps 60 --checkpoint-every 3 --checkpoint "$T/$name-k9.h5" -o "$T/$name-k9.gguf" >/dev/null 2>&1 &
    pid=$!
    i=0
    while [ ! -s "$T/$name-k9.h5" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
    sleep 0.3
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    [ -e "$T/$name-k9.gguf" ] && { ok "$name: finished before the kill (nothing to resume)"; return; }
    "$@" --steps 60 --resume "$T/$name-k9.h5" --checkpoint "$T/$name-k9b.h5" -o "$T/$name-k9.gguf" >/dev/null 2>&1 \
        || { fail "$name: resume after kill -9"; return; }
    cmp -s "$T/$name-full.gguf" "$T/$name-k9.gguf" && ok "$name: resumed after kill -9, byte-identical export" \
        || fail "$name: the resumed export differs from the uninterrupted run"
}
[ -f "$T/qwen3-t.gguf" ] && kill9_case qwen3-jsd -- "$SLMC" distill --teacher "$T/qwen3-t.gguf" --student "$T/qwen3-p.gguf" \
    $TRAIN --lr 2e-3 --loss jsd
[ -f "$T/gemma3-t.gguf" ] && kill9_case gemma3-lora -- "$SLMC" distill --teacher "$T/gemma3-t.gguf" --student "$T/gemma3-p.gguf" \
    $TRAIN --lr 2e-3 --loss reverse-kl --lora-rank 4
[ -f "$T/phi3.gguf" ] && kill9_case phi3-ce -- "$SLMC" train --model "$T/phi3.gguf" $TRAIN --lr 3e-3
finish
