#!/bin/sh
# e2e: the calibration commands under mpirun (docs/imatrix.md, eval.md, quantize.md, prune.md,
# "Under mpirun"). imatrix, eval (text and --json), quantize --method gptq and prune with a
# calibration text, run as one process and on 1, 2 and 3 ranks: the files are byte-identical
# and the printed figures the same (also with more ranks than chunks). A bad input fails in one
# line with a non-zero status and no output; a rank killed with kill -9 ends the job, and
# nothing is left at the output path.
#
# The sanitizer build (a binary linked with libasan) runs the comparisons with leak reports off
# for the mpirun lines (Open MPI's own allocations at exit are not ours) and leaves the kill -9
# run to the optimized build.
. "$(dirname "$0")/lib.inc"
command -v mpirun >/dev/null 2>&1 || { echo "SKIP: mpirun is not installed (Debian: openmpi-bin)"; finish; }
"$SLMC" --version | grep -q "with MPI" || { echo "SKIP: $SLMC was built without MPI (no libopenmpi-dev)"; finish; }
have_shared reference/stories260K-F32.gguf || finish
have_shared text/tinystories_sample.txt || finish
# Open MPI refuses root unless told; CI runs as root
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SANITIZED=
ldd "$SLMC" 2>/dev/null | grep -q 'libasan' && SANITIZED=1
# -q: no Open MPI banner after a failing rank, so slmc's line is the only one on stderr
MPI="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun -q --oversubscribe"
M="$SHARED/reference/stories260K-F32.gguf"
X="$SHARED/text/tinystories_sample.txt"

# run NAME N -- slmc args...: N = 0 one process (-t 2), else mpirun -np N; stdout in $T/NAME-N.out
run() {
    name=$1; n=$2; shift 2; [ "$1" = "--" ] && shift
    if [ "$n" -eq 0 ]; then "$SLMC" "$@" -t 2 >"$T/$name-$n.out" 2>"$T/err"
    else $MPI -np "$n" "$SLMC" "$@" >"$T/$name-$n.out" 2>"$T/err"; fi
    rc=$?
    [ $rc -eq 0 ] || { fail "$name on $n rank(s): exit $rc: $(head -c 300 "$T/err")"; return 1; }
}

# the printed figures without what depends on the clock, and without the run's file names
figures() { grep -v -E '"(seconds|eval_seconds|tokens_per_second)"|tokens/s$|^[0-9.]+s$' "$1" | sed "s#$T/[^ ]*##g"; }

# same NAME FILE-SUFFIXES...: NAME-N.<suffix> equal NAME-0.<suffix>, and the figures, for N = 1 2 3
same() {
    name=$1; shift
    for n in 1 2 3; do
        bad=
        for sfx in "$@"; do cmp -s "$T/$name-0.$sfx" "$T/$name-$n.$sfx" || bad="$bad $sfx"; done
        [ "$(figures "$T/$name-0.out")" = "$(figures "$T/$name-$n.out")" ] || bad="$bad printed-figures"
        if [ -z "$bad" ]; then ok "$name on $n rank(s): ${*:+$* and }figures identical to one process"
        else fail "$name on $n rank(s) differs from one process:$bad"; fi
    done
}

# ---- imatrix: GGUF and .dat, HDF5 export, PPL of the chunks; a merge on top
for n in 0 1 2 3; do
    run im "$n" -- imatrix "$M" --text "$X" -c 64 --chunks 7 --process-output -o "$T/im-$n.gguf" --hdf5 "$T/im-$n.h5" &&
        run imd "$n" -- imatrix "$M" --text "$X" -c 64 --chunks 5 --in-file "$T/im-$n.gguf" -o "$T/imd-$n.dat"
done
same im gguf h5
same imd dat
grep -q "PPL of the chunks" "$T/im-2.out" && ok "imatrix prints the chunks' PPL under mpirun" || fail "no PPL: $(cat "$T/im-2.out")"
# more ranks than chunks: rank 2 evaluates none and takes rank 0's entries
run im2c 0 -- imatrix "$M" --text "$X" -c 64 --chunks 2 -o "$T/im2c-0.dat"
run im2c 3 -- imatrix "$M" --text "$X" -c 64 --chunks 2 -o "$T/im2c-3.dat"
cmp -s "$T/im2c-0.dat" "$T/im2c-3.dat" && ok "imatrix: 2 chunks on 3 ranks as one process" || fail "imatrix: 2 chunks on 3 ranks differ"

# ---- eval: perplexity and KL divergence (base side by side, then saved by one process)
"$SLMC" quantize "$M" "$T/q8.gguf" Q8_0 -q >/dev/null || fail "quantize to Q8_0"
for n in 0 1 2 3; do
    run ev "$n" -- eval "$T/q8.gguf" --text "$X" -c 64 --chunks 7 --kl-base "$M" -q
    run evj "$n" -- eval "$T/q8.gguf" --text "$X" -c 64 --chunks 7 --kl-base "$M" --json -q
done
same ev
same evj
grep -q "Same top p" "$T/ev-3.out" && grep -q '"kld_mean"' "$T/evj-3.out" && ok "eval prints the KLD figures under mpirun" \
    || fail "eval KLD figures missing under mpirun"
expect 0 "save the base logits, one process" -- "$SLMC" eval "$M" --text "$X" -c 64 --chunks 7 --save-logits "$T/base.h5" -q
run evl 0 -- eval "$T/q8.gguf" --text "$X" --kl-logits "$T/base.h5" --json -q
run evl 2 -- eval "$T/q8.gguf" --text "$X" --kl-logits "$T/base.h5" --json -q
[ "$(figures "$T/evl-0.out")" = "$(figures "$T/evl-2.out")" ] && ok "--kl-logits read by 2 ranks: the figures of one process" \
    || fail "--kl-logits on 2 ranks differs"
$MPI -np 2 "$SLMC" eval "$M" --text "$X" -c 64 --save-logits "$T/no.h5" -q >"$T/out" 2>"$T/err"
rc=$?
[ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^slmc: rank 0: $T/no.h5: saving logits does not run under mpirun" "$T/err" &&
    [ ! -e "$T/no.h5" ] && ok "--save-logits on 2 ranks refused in one line ($(cat "$T/err"))" \
    || fail "--save-logits on 2 ranks: exit $rc, $(head -c 300 "$T/err")"

# ---- quantize --method gptq: the fp target (default), two types with --gptq-parallel; plain
G="--method gptq --calib $X -c 64 --chunks 5 -q"
for n in 0 1 2 3; do
    run gq "$n" -- quantize "$M" "$T/gq-$n.gguf" Q4_K_M $G
    run gp "$n" -- quantize "$M" --type Q4_K_M,Q3_K_S -o "$T/gp-$n-{type}.gguf" $G --gptq-parallel
    mv "$T/gp-$n-Q4_K_M.gguf" "$T/gp-$n.q4" 2>/dev/null; mv "$T/gp-$n-Q3_K_S.gguf" "$T/gp-$n.q3" 2>/dev/null
done
same gq gguf
same gp q4 q3
run gs 0 -- quantize "$M" "$T/gs-0.gguf" Q4_K_M --method gptq --calib "$X" -c 64 --chunks 2 --gptq-sequential -q
run gs 3 -- quantize "$M" "$T/gs-3.gguf" Q4_K_M --method gptq --calib "$X" -c 64 --chunks 2 --gptq-sequential -q
cmp -s "$T/gs-0.gguf" "$T/gs-3.gguf" && ok "gptq sequential: 2 chunks on 3 ranks as one process" \
    || fail "gptq sequential: 2 chunks on 3 ranks differ"
# 11 chunks: more than the 8 units GPTQ sums them in (runs of 1 or 2 chunks, quant/gptq.c), so a
# rank's units span several chunks and a unit is not a chunk
for n in 0 1 2 3; do
    run gu "$n" -- quantize "$M" "$T/gu-$n.gguf" Q4_K_M --method gptq --calib "$X" -c 32 --chunks 11 -q
done
same gu gguf
run pq 0 -- quantize "$M" "$T/pq-0.gguf" Q4_K_M -q
run pq 2 -- quantize "$M" "$T/pq-2.gguf" Q4_K_M -q
cmp -s "$T/pq-0.gguf" "$T/pq-2.gguf" && ok "plain quantize on 2 ranks: rank 0 writes the same file" || fail "plain quantize on 2 ranks differs"

# ---- prune: activation scores with the PPL without each layer, OBS reconstruction
P="--calib $X -c 64 --chunks 6 --ffn 0.75 --heads 4 --layers 4 --reconstruct --json -q"
for n in 0 1 2 3; do run pr "$n" -- prune "$M" "$T/pr-$n.gguf" --scores "$T/pr-$n.h5" $P; done
same pr gguf h5
run prf 0 -- prune "$M" "$T/prf-0.gguf" --calib "$X" -c 64 --chunks 2 --ffn 0.5 --refit -q
run prf 3 -- prune "$M" "$T/prf-3.gguf" --calib "$X" -c 64 --chunks 2 --ffn 0.5 --refit -q
cmp -s "$T/prf-0.gguf" "$T/prf-3.gguf" && ok "prune --refit: 2 chunks on 3 ranks as one process" || fail "prune --refit: 2 chunks on 3 ranks differ"

# ---- a bad input: every rank fails alike, one line, non-zero, no output
bad_input() { # bad_input WHAT OUT -- slmc args...
    what=$1; out=$2; shift 2; [ "$1" = "--" ] && shift
    $MPI -np 2 "$SLMC" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^slmc: rank 0: $T/nope" "$T/err" && [ ! -e "$out" ]; then
        ok "$what on 2 ranks: one line, exit $rc ($(cat "$T/err"))"
    else
        fail "$what on 2 ranks: exit $rc, $(head -c 300 "$T/err")"
    fi
}
bad_input "imatrix, missing model" "$T/x.dat" -- imatrix "$T/nope.gguf" --text "$X" -o "$T/x.dat"
bad_input "eval, missing text" "$T/x" -- eval "$M" --text "$T/nope.txt"
bad_input "gptq, missing calibration text" "$T/x.gguf" -- quantize "$M" "$T/x.gguf" Q4_K_M --method gptq --calib "$T/nope.txt"
bad_input "prune, missing calibration text" "$T/x.gguf" -- prune "$M" "$T/x.gguf" --calib "$T/nope.txt" --ffn 0.5
# rank 0 cannot write: the others learn it, the same line
$MPI -np 2 "$SLMC" imatrix "$M" --text "$X" -c 64 --chunks 3 -o "$T/no/dir/x.dat" >"$T/out" 2>"$T/err"
rc=$?
[ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^slmc: rank 0: $T/no/dir/x.dat" "$T/err" \
    && ok "imatrix output not writable on 2 ranks: one line, exit $rc" || fail "unwritable output on 2 ranks: exit $rc, $(head -c 300 "$T/err")"

# ---- a rank killed with kill -9 in the middle: mpirun ends the job non-zero, no output
if [ -n "$SANITIZED" ]; then
    echo "SKIP: kill -9 of a rank under the sanitizers: the optimized build runs it"
elif have_shared models/books-22m/hf-bf16 && have_shared text/books-valid.txt; then
    $MPI -np 2 "$SLMC" imatrix "$SHARED/models/books-22m/hf-bf16" --text "$SHARED/text/books-valid.txt" -c 128 \
        -o "$T/k.dat" >/dev/null 2>"$T/k.err" &
    mpid=$!
    i=0
    while [ "$(pgrep -P $mpid | wc -l)" -lt 2 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    sleep 1.5 # the ranks have tokenized the text and are evaluating their chunks
    victim=$(pgrep -P $mpid | tail -n 1)
    [ -n "$victim" ] && kill -9 "$victim" 2>/dev/null
    i=0
    while kill -0 $mpid 2>/dev/null && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
    if kill -0 $mpid 2>/dev/null; then
        fail "kill -9 of one rank: the job still runs after 30 s"
        for p in $(pgrep -P $mpid); do kill -9 "$p"; done
        kill -9 $mpid
    fi
    wait $mpid
    rc=$?
    if [ -n "$victim" ] && [ $rc -ne 0 ] && [ ! -e "$T/k.dat" ] && ! ls "$T" | grep -q "^k\.dat"; then
        ok "kill -9 of one rank: the job ends (exit $rc), nothing at the output path"
    else
        fail "kill -9 of one rank: victim '$victim', exit $rc, files: $(ls "$T" | grep '^k\.' | tr '\n' ' ')"
    fi
fi
finish
