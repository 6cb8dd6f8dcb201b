#!/bin/sh
# bench/recovery.sh [BUILD] - distillation recovers a pruned model (issue: at least 80% of the
# PPL gap within 2,000 steps). books-22m is pruned to half its parameters (--target-params 0.5,
# activation ranking on books-train.txt), then, from the same pruned student and for the same
# STEPS steps (default 200, batch 4 x 256 tokens):
#   distill  KL(teacher || student) at tau 2 + 0.5 CE, the BF16 model as teacher
#   train    cross-entropy only
# PPL on books-valid.txt (-c 256, 50 chunks) of the teacher, the pruned student and both;
# recovered share of the gap = (PPL_pruned - PPL_x) / (PPL_pruned - PPL_teacher).
# The two runs go in parallel, one thread each (2 cores). Work files in $BENCH_DIR.
set -e
build=${1:-build}
S="$build/slmc"
SH=${SLMC_SHARED:-../shared}
STEPS=${STEPS:-200}
DIR=${BENCH_DIR:-/tmp/slmc-bench-recovery}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ -d "$SH/reference" ] || { echo "SKIP bench/recovery: $SH not found"; exit 0; }
mkdir -p "$DIR"
T="$SH/reference/books-22m-BF16.gguf"; TRAIN="$SH/text/books-train.txt"; VALID="$SH/text/books-valid.txt"
ppl() { "$S" eval "$1" --text "$VALID" -c 256 --chunks 50 --json -q | awk -F': ' '/"ppl"/ {gsub(/,/,"",$2); print $2}'; }
"$S" prune "$T" "$DIR/student.gguf" --calib "$TRAIN" -c 256 --chunks 8 --target-params 0.5 --json -q >"$DIR/prune.json"
COMMON="--data $TRAIN --steps $STEPS --warmup 20 --lr 1e-3 --seq-len 256 --batch 4 --eval-every 0 --max-tokens 2000000 -t 1 -q"
"$S" distill --teacher "$T" --student "$DIR/student.gguf" $COMMON --metrics "$DIR/distill.jsonl" -o "$DIR/distilled.gguf" &
p1=$!
"$S" train --model "$DIR/student.gguf" $COMMON --metrics "$DIR/train.jsonl" -o "$DIR/ce.gguf" &
p2=$!
wait $p1; wait $p2
pt=$(ppl "$T"); pp=$(ppl "$DIR/student.gguf"); pd=$(ppl "$DIR/distilled.gguf"); pc=$(ppl "$DIR/ce.gguf")
params=$(awk -F': ' '/"params_out"/ {gsub(/,/,"",$2); print $2}' "$DIR/prune.json")
echo "# slmc bench/recovery: books-22m pruned to $params parameters (of 21105920), $STEPS steps of 4 x 256 tokens"
printf '%-28s %10s %10s\n' model PPL recovered
printf '%-28s %10.2f\n' "teacher (BF16)" "$pt"
printf '%-28s %10.2f\n' "pruned student" "$pp"
printf '%-28s %10.2f %9.1f%%\n' "distilled ($STEPS steps)" "$pd" "$(awk "BEGIN{print 100*($pp-$pd)/($pp-$pt)}")"
printf '%-28s %10.2f %9.1f%%\n' "cross-entropy ($STEPS steps)" "$pc" "$(awk "BEGIN{print 100*($pp-$pc)/($pp-$pt)}")"
