#!/bin/sh
# e2e: `slmc train` and `slmc distill` on stories260K: loss goes down, the export evaluates,
# SIGINT leaves a checkpoint, --resume continues to the same result as an uninterrupted run.
. "$(dirname "$0")/lib.inc"
have_shared models/stories260K/stories260K.bin || finish
M="$SHARED/models/stories260K/stories260K.bin"
TOK="$SHARED/models/stories260K/tok512.bin"
DATA="$SHARED/text/tinyshakespeare.txt"
$SLMC train --help >/dev/null 2>&1 || { echo "SKIP: this slmc has no train command (not registered in cli/main.c)"; finish; }
COMMON="--tokenizer $TOK --data $DATA --max-tokens 60000 --seq-len 32 --batch 2 --lr 2e-3 --eval-every 0 -t 2 -q"

expect 0 "train 20 steps" -- $SLMC train --model "$M" $COMMON --steps 20 --metrics "$T/m.jsonl" -o "$T/out.gguf"
first=$(head -n 1 "$T/m.jsonl" | sed -E 's/.*"loss": ?([0-9.eE+-]+).*/\1/')
last=$(grep '"loss"' "$T/m.jsonl" | tail -n 1 | sed -E 's/.*"loss": ?([0-9.eE+-]+).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' && ok "loss $first -> $last" || fail "loss did not decrease: $first -> $last"
grep -q '"eval_ppl"' "$T/m.jsonl" && ok "final evaluation in the metrics" || fail "no eval_ppl line"
expect 0 "exported GGUF evaluates" -- $SLMC eval "$T/out.gguf" --text "$DATA" -c 64 --chunks 4 --json -q

# kill -9 mid-run, then --resume from the last periodic checkpoint == the uninterrupted run
expect 0 "train 300 steps uninterrupted" -- $SLMC train --model "$M" $COMMON --steps 300 --checkpoint "$T/full.h5" -o "$T/full.gguf"
$SLMC train --model "$M" $COMMON --steps 300 --checkpoint-every 5 --checkpoint "$T/k9.h5" -o "$T/k9.gguf" 2>/dev/null &
pid=$!
i=0
while [ ! -s "$T/k9.h5" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
sleep 0.2
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
[ -e "$T/k9.gguf" ] && fail "kill -9 left an output file" || ok "kill -9: no output file"
expect 0 "resume after kill -9" -- $SLMC train --model "$M" $COMMON --steps 300 --resume "$T/k9.h5" \
    --checkpoint "$T/k9b.h5" --metrics "$T/k9.jsonl" -o "$T/k9.gguf"
n=$(grep -c '"loss"' "$T/k9.jsonl")
[ "$n" -gt 0 ] && [ "$n" -lt 300 ] && ok "resumed mid-run ($n steps left)" || fail "resume ran $n steps"
cmp -s "$T/full.gguf" "$T/k9.gguf" && ok "resumed export is byte-identical to the uninterrupted run" \
    || fail "resumed export differs from the uninterrupted run"

# SIGINT: a checkpoint is written and the run exits 130
$SLMC train --model "$M" $COMMON --steps 100000 --checkpoint "$T/int.h5" -o "$T/int.gguf" 2>"$T/err" &
pid=$!
sleep 2
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] && [ -s "$T/int.h5" ] && ok "SIGINT leaves a checkpoint" || fail "SIGINT: exit $rc, $(cat "$T/err")"

# distill from the original model into the trained one (same vocabulary)
expect 0 "distill 10 steps, reverse KL" -- $SLMC distill --teacher "$M" --student "$T/out.gguf" $COMMON --steps 10 \
    --temperature 2 --alpha 0.5 --reverse-kl --metrics "$T/d.jsonl" -o "$T/dist"
grep -q '"kl"' "$T/d.jsonl" && ok "distill reports the KL term" || fail "no kl in distill metrics"
[ -f "$T/dist/config.json" ] && ls "$T/dist" | grep -q safetensors && ok "HF folder export" || fail "no HF folder"

expect_error "missing data file" "$T/nope.txt" -- $SLMC train --model "$M" --tokenizer "$TOK" --data "$T/nope.txt" -o "$T/y.gguf" -q
expect 2 "distill needs a teacher" -- $SLMC distill --student "$M" --data "$DATA" -o "$T/z.gguf"
finish
