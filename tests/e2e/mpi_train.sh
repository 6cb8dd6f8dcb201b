#!/bin/sh
# e2e: `slmc train` and `slmc distill` under mpirun (docs/mpi.md). The same command line on
# 1, 2 and 3 ranks writes byte-identical models, checkpoints and logged losses, the same as one
# process without mpirun; a checkpoint resumes on another rank count; a failing or killed rank
# ends the whole job with a non-zero status and no output file.
. "$(dirname "$0")/lib.inc"
command -v mpirun >/dev/null 2>&1 || { echo "SKIP: mpirun is not installed (Debian: openmpi-bin)"; finish; }
"$SLMC" --version | grep -q "with MPI" || { echo "SKIP: $SLMC was built without MPI (no libopenmpi-dev)"; finish; }
have_shared models/stories260K/stories260K.bin || finish
# Open MPI refuses root unless told; CI runs as root
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# the sanitizer build: Open MPI's own allocations at exit are not ours to report; and the longer
# runs below are left to the optimized build
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
SANITIZED=
ldd "$SLMC" 2>/dev/null | grep -q 'libasan' && SANITIZED=1
MPI="mpirun --oversubscribe"
M="$SHARED/models/stories260K/stories260K.bin"
TOK="$SHARED/models/stories260K/tok512.bin"
DATA="$SHARED/text/tinyshakespeare.txt"
# 3 micro-batches of 2 sequences a step, the units the ranks share: 3 ranks take one each, 2 ranks
# 2 and 1
COMMON="--tokenizer $TOK --data $DATA --max-tokens 40000 --seq-len 32 --batch 2 --grad-accum 3 --lr 2e-3 --eval-every 5 --eval-seqs 7 -q"

# the metrics without what depends on the clock
losses() { sed -E 's/,"(tokens_per_s|seconds|matmul_share)":[^,}]*//g' "$1"; }

same_run() { # same_run NAME: NAME-N.gguf, .h5 and .jsonl equal NAME-0's for every N run
    name=$1; shift
    for n in "$@"; do
        if cmp -s "$T/$name-0.gguf" "$T/$name-$n.gguf" && cmp -s "$T/$name-0.h5" "$T/$name-$n.h5" &&
            [ "$(losses "$T/$name-0.jsonl")" = "$(losses "$T/$name-$n.jsonl")" ]; then
            ok "$name on $n rank(s): model, checkpoint and losses identical to one process"
        else
            fail "$name on $n rank(s) differs from one process"
            cmp "$T/$name-0.gguf" "$T/$name-$n.gguf"; cmp "$T/$name-0.h5" "$T/$name-$n.h5"
        fi
    done
}

# train: plain process, then 1, 2, 3 ranks
expect 0 "train, one process" -- $SLMC train --model "$M" $COMMON --steps 12 -t 2 --metrics "$T/tr-0.jsonl" \
    --checkpoint "$T/tr-0.h5" -o "$T/tr-0.gguf"
for n in 1 2 3; do
    expect 0 "train on $n rank(s)" -- $MPI -np $n $SLMC train --model "$M" $COMMON --steps 12 \
        --metrics "$T/tr-$n.jsonl" --checkpoint "$T/tr-$n.h5" -o "$T/tr-$n.gguf"
done
same_run tr 1 2 3
[ "$(grep -c eval_loss "$T/tr-2.jsonl")" -ge 2 ] && ok "held-out evaluations logged under mpirun" \
    || fail "no evaluation lines in the mpirun metrics"

if [ -n "$SANITIZED" ]; then
    echo "SKIP: resume on another rank count, LoRA, distillation, the teacher cache and kill -9 under the sanitizers: the optimized build runs them"
else
# stopped on 2 ranks (SIGINT to each: they agree to stop after the same step), resumed on 3:
# the same bytes as the run no one stopped
expect 0 "train 80 steps, one process" -- $SLMC train --model "$M" $COMMON --steps 80 -t 2 --eval-every 0 \
    --checkpoint "$T/full.h5" -o "$T/full.gguf"
$MPI -np 2 $SLMC train --model "$M" $COMMON --steps 80 --eval-every 0 --checkpoint-every 10 --checkpoint "$T/int.h5" \
    -o "$T/int.gguf" 2>"$T/int.err" &
mpid=$!
i=0
while [ ! -s "$T/int.h5" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
pkill -INT -P $mpid 2>/dev/null
wait $mpid
rc=$?
if [ $rc -ne 0 ] && [ -s "$T/int.h5" ] && [ ! -e "$T/int.gguf" ] && grep -q "interrupted at step" "$T/int.err"; then
    ok "SIGINT to the ranks: '$(grep -o 'interrupted at step [0-9]*' "$T/int.err")', a checkpoint, no model"
else
    fail "SIGINT under mpirun: exit $rc, $(head -c 300 "$T/int.err")"
fi
expect 0 "resume the 2-rank checkpoint on 3 ranks" -- $MPI -np 3 $SLMC train --model "$M" $COMMON --steps 80 \
    --eval-every 0 --resume "$T/int.h5" --checkpoint "$T/res.h5" -o "$T/res.gguf"
cmp -s "$T/full.gguf" "$T/res.gguf" && cmp -s "$T/full.h5" "$T/res.h5" \
    && ok "resumed on 3 ranks: the uninterrupted run's model and checkpoint" \
    || fail "resumed on 3 ranks differs from the uninterrupted run"

# LoRA: only the adapters are summed
expect 0 "LoRA, one process" -- $SLMC train --model "$M" $COMMON --steps 6 -t 2 --lora-rank 4 \
    --metrics "$T/lo-0.jsonl" --checkpoint "$T/lo-0.h5" -o "$T/lo-0.gguf"
expect 0 "LoRA on 3 ranks" -- $MPI -np 3 $SLMC train --model "$M" $COMMON --steps 6 --lora-rank 4 \
    --metrics "$T/lo-3.jsonl" --checkpoint "$T/lo-3.h5" -o "$T/lo-3.gguf"
same_run lo 3

# distillation from a live teacher (each rank runs its own), with hidden-state alignment
D="--teacher $M --student $T/tr-0.gguf --align-layers 2:3 --temperature 2 --alpha 0.5"
expect 0 "distill, one process" -- $SLMC distill $D $COMMON --steps 6 -t 2 --metrics "$T/di-0.jsonl" \
    --checkpoint "$T/di-0.h5" -o "$T/di-0.gguf"
for n in 2 3; do
    expect 0 "distill on $n ranks" -- $MPI -np $n $SLMC distill $D $COMMON --steps 6 --metrics "$T/di-$n.jsonl" \
        --checkpoint "$T/di-$n.h5" -o "$T/di-$n.gguf"
done
same_run di 2 3

# a teacher cache is written by one process and read by every rank
expect 0 "save a teacher cache, one process" -- $SLMC distill --teacher "$M" --student "$T/tr-0.gguf" $COMMON \
    --steps 4 -t 2 --save-teacher "$T/cache.h5" --top-k 16 -o "$T/sv.gguf"
expect 0 "distill from the cache, one process" -- $SLMC distill --teacher-cache "$T/cache.h5" --student "$T/tr-0.gguf" \
    $COMMON --steps 4 -t 2 --metrics "$T/ca-0.jsonl" --checkpoint "$T/ca-0.h5" -o "$T/ca-0.gguf"
expect 0 "distill from the cache on 2 ranks" -- $MPI -np 2 $SLMC distill --teacher-cache "$T/cache.h5" \
    --student "$T/tr-0.gguf" $COMMON --steps 4 --metrics "$T/ca-2.jsonl" --checkpoint "$T/ca-2.h5" -o "$T/ca-2.gguf"
same_run ca 2
fi
$MPI -np 2 $SLMC distill --teacher "$M" --student "$T/tr-0.gguf" $COMMON --steps 4 --save-teacher "$T/c2.h5" \
    -o "$T/c2.gguf" >"$T/out" 2>"$T/err"
rc=$?
[ $rc -ne 0 ] && [ "$(grep -c '^slmc:' "$T/err")" -eq 1 ] && grep -q "c2.h5: a teacher cache is written by one process" "$T/err" &&
    [ ! -e "$T/c2.h5" ] && [ ! -e "$T/c2.gguf" ] \
    && ok "--save-teacher on 2 ranks refused in one line ($(grep '^slmc:' "$T/err"))" \
    || fail "--save-teacher on 2 ranks: exit $rc, $(head -c 300 "$T/err")"

# errors: every rank fails the same way, the message is printed once
$MPI -np 2 $SLMC train --model "$M" --tokenizer "$TOK" --data "$T/nope.txt" -o "$T/y.gguf" -q >"$T/out" 2>"$T/err"
rc=$?
[ $rc -ne 0 ] && [ "$(grep -c '^slmc:' "$T/err")" -eq 1 ] && grep -q "^slmc: rank 0: $T/nope.txt" "$T/err" && [ ! -e "$T/y.gguf" ] \
    && ok "missing data on 2 ranks: one line, exit $rc ($(grep '^slmc:' "$T/err"))" \
    || fail "missing data on 2 ranks: exit $rc, $(head -c 300 "$T/err")"
# a command that does not split its work refuses several ranks
$MPI -np 2 $SLMC inspect "$M" --tokenizer "$TOK" >"$T/out" 2>"$T/err"
rc=$?
[ $rc -ne 0 ] && grep -q "^slmc: inspect does not run under mpirun with 2 ranks" "$T/err" \
    && ok "inspect refuses 2 ranks" || fail "inspect on 2 ranks: exit $rc, $(head -c 300 "$T/err")"

# a rank killed with kill -9: mpirun ends the job non-zero, nothing at the output path
[ -n "$SANITIZED" ] && finish
$MPI -np 2 $SLMC train --model "$M" $COMMON --steps 100000 --eval-every 0 --checkpoint-every 3 \
    --checkpoint "$T/k.h5" -o "$T/k.gguf" >/dev/null 2>"$T/k.err" &
mpid=$!
i=0
while [ ! -s "$T/k.h5" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
victim=$(pgrep -P $mpid | tail -n 1)
kill -9 "$victim" 2>/dev/null
i=0
while kill -0 $mpid 2>/dev/null && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
if kill -0 $mpid 2>/dev/null; then
    fail "kill -9 of one rank: the job still runs after 30 s"
    pkill -9 -P $mpid; kill -9 $mpid
fi
wait $mpid
rc=$?
if [ $rc -ne 0 ] && [ ! -e "$T/k.gguf" ] && ! ls "$T" | grep -q "^k.gguf."; then
    ok "kill -9 of one rank: the job ends (exit $rc, '$(grep -m1 -o 'exited on signal [0-9]*[^.]*' "$T/k.err")'), no output"
else
    fail "kill -9 of one rank: exit $rc, files: $(ls "$T" | grep '^k\.' | tr '\n' ' ')"
fi
finish
