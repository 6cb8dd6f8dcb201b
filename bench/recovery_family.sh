#!/bin/sh
# bench/recovery_family.sh [BUILD] - the recovery experiment of bench/recovery.sh on a family other
# than Llama (FAMILY=qwen3, default; or gemma3): a model of books-22m's size in that family's
# shape (hidden 256, 6 layers, 8 query / 4 KV heads of 32, FFN 768, books-22m's 32000-token
# SentencePiece vocabulary) is trained from random weights with `slmc train` on books-train.txt
# (TEACHER_STEPS steps, default 1000, of 4 x 256 tokens), pruned to half its parameters
# (--target-params 0.5, activation ranking), then the same pruned student trains for STEPS steps
# (default 200) three ways:
#   distill        KL(teacher || student) at tau 2 + 0.5 CE, the trained model as live teacher
#   distill-cache  the same loss from the teacher's top-K log-probabilities saved once
#                  (--save-teacher, then --teacher-cache; K = 64 by default)
#   train          cross-entropy only
# and prints the PPL on books-valid.txt (-c 256, 50 chunks) of each, with the recovered share of
# the gap (PPL_pruned - PPL_x) / (PPL_pruned - PPL_teacher). Work files (the teacher is kept and
# reused) in $BENCH_DIR. About 25 minutes on 2 cores with the defaults.
set -e
build=${1:-build}
S="$build/slmc"
SH=${SLMC_SHARED:-../shared}
FAMILY=${FAMILY:-qwen3}
STEPS=${STEPS:-200}
TEACHER_STEPS=${TEACHER_STEPS:-1000}
TOPK=${TOPK:-64}
DIR=${BENCH_DIR:-/tmp/slmc-bench-recovery-$FAMILY}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ -d "$SH/models/books-22m/hf-bf16" ] || { echo "SKIP bench/recovery_family: $SH/models/books-22m not found"; exit 0; }
mkdir -p "$DIR"
TRAIN="$SH/text/books-train.txt"; VALID="$SH/text/books-valid.txt"
ppl() { "$S" eval "$1" --text "$VALID" -c 256 --chunks 50 --json -q | awk -F': ' '/"ppl"/ {gsub(/,/,"",$2); print $2}'; }

case $FAMILY in
qwen3) head='"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
  "rms_norm_eps": 1e-06, "attention_bias": false, "use_sliding_window": false,' ;;
gemma3) head='"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh",
  "rms_norm_eps": 1e-06, "sliding_window": 64, "query_pre_attn_scalar": 32, "rope_local_base_freq": 10000.0,' ;;
*) echo "bench/recovery_family: FAMILY is qwen3 or gemma3, not $FAMILY" >&2; exit 2 ;;
esac

# the teacher: trained once, kept
if [ ! -f "$DIR/teacher.gguf" ]; then
    cat >"$DIR/config.json" <<EOF
{ $head
  "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 6, "num_attention_heads": 8,
  "num_key_value_heads": 4, "head_dim": 32, "vocab_size": 32000, "max_position_embeddings": 256,
  "rope_theta": 10000.0, "rope_scaling": null, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2 }
EOF
    rm -rf "$DIR/init-hf"
    "$S" synth --config "$DIR/config.json" --dtype f32 --seed 1 -o "$DIR/init-hf" -q
    cp "$SH/models/books-22m/hf-bf16/tokenizer.model" "$SH/models/books-22m/hf-bf16/tokenizer_config.json" "$DIR/init-hf/"
    "$S" convert "$DIR/init-hf" "$DIR/init.gguf" -q
    "$S" train --model "$DIR/init.gguf" --data "$TRAIN" --steps "$TEACHER_STEPS" --warmup 50 --lr 2e-3 --min-lr 2e-4 \
        --seq-len 256 --batch 4 --eval-every 0 -t 2 -q --metrics "$DIR/teacher.jsonl" -o "$DIR/teacher.gguf"
fi
T="$DIR/teacher.gguf"
"$S" prune "$T" "$DIR/student.gguf" --calib "$TRAIN" -c 256 --chunks 8 --target-params 0.5 --json -q >"$DIR/prune.json"
COMMON="--data $TRAIN --steps $STEPS --warmup 20 --lr 1e-3 --seq-len 256 --batch 4 --eval-every 0 --max-tokens 2000000 -q"
"$S" distill --teacher "$T" --student "$DIR/student.gguf" $COMMON -t 1 --metrics "$DIR/distill.jsonl" -o "$DIR/distilled.gguf" &
p1=$!
"$S" train --model "$DIR/student.gguf" $COMMON -t 1 --metrics "$DIR/train.jsonl" -o "$DIR/ce.gguf" &
p2=$!
wait $p1; wait $p2
cached=""
if "$S" distill --help 2>&1 | grep -q -- --save-teacher; then
    "$S" distill --teacher "$T" --student "$DIR/student.gguf" $COMMON -t 2 --top-k "$TOPK" \
        --save-teacher "$DIR/teacher-cache.h5" --metrics "$DIR/distill-save.jsonl" -o "$DIR/distilled-save.gguf"
    "$S" distill --teacher-cache "$DIR/teacher-cache.h5" --student "$DIR/student.gguf" $COMMON -t 2 \
        --metrics "$DIR/distill-cache.jsonl" -o "$DIR/distilled-cache.gguf"
    cached=1
fi
pt=$(ppl "$T"); pp=$(ppl "$DIR/student.gguf"); pd=$(ppl "$DIR/distilled.gguf"); pc=$(ppl "$DIR/ce.gguf")
params=$(awk -F': ' '/"params_in"/ {gsub(/,/,"",$2); a=$2} /"params_out"/ {gsub(/,/,"",$2); b=$2} END {print b " of " a}' "$DIR/prune.json")
echo "# slmc bench/recovery_family: a $FAMILY-shaped model trained $TEACHER_STEPS steps on books-train.txt, pruned to $params parameters, $STEPS steps of 4 x 256 tokens"
printf '%-34s %10s %10s\n' model PPL recovered
printf '%-34s %10.2f\n' "teacher" "$pt"
printf '%-34s %10.2f\n' "pruned student" "$pp"
printf '%-34s %10.2f %9.1f%%\n' "distilled ($STEPS steps)" "$pd" "$(awk "BEGIN{print 100*($pp-$pd)/($pp-$pt)}")"
if [ -n "$cached" ]; then
    pk=$(ppl "$DIR/distilled-cache.gguf")
    printf '%-34s %10.2f %9.1f%%\n' "distilled, cached top-$TOPK ($STEPS)" "$pk" "$(awk "BEGIN{print 100*($pp-$pk)/($pp-$pt)}")"
fi
printf '%-34s %10.2f %9.1f%%\n' "cross-entropy ($STEPS steps)" "$pc" "$(awk "BEGIN{print 100*($pp-$pc)/($pp-$pt)}")"
