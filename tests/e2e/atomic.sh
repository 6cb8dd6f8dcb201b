#!/bin/sh
# atomic.sh - interrupted runs: SIGTERM / SIGINT remove the temporary output, kill -9 leaves
# nothing at the output path; a full disk gives a clear error and leaves nothing behind.
. tests/e2e/lib.inc

for sig in TERM INT; do
    mkdir -p "$T/sig-$sig"
    "$SLMC" synth --shape tinyllama-1.1b -o "$T/sig-$sig/model" -q &
    pid=$!
    sleep 1
    kill -$sig $pid
    wait $pid
    rc=$?
    [ $rc -ne 0 ] || fail "synth interrupted by SIG$sig exits non-zero"
    left=$(ls -A "$T/sig-$sig")
    [ -z "$left" ] && ok "SIG$sig: nothing left behind" || fail "SIG$sig left: $left"
done

mkdir -p "$T/k9"
"$SLMC" synth --shape tinyllama-1.1b -o "$T/k9/model" -q &
pid=$!
sleep 1
kill -9 $pid
wait $pid 2>/dev/null
[ -e "$T/k9/model" ] && fail "kill -9 left a partial folder at the output path" || ok "kill -9: nothing at the output path"

# kill -9 during quantize: never a partial file at an output path, the input untouched
"$SLMC" synth --shape small -o "$T/src" -q
sum_before=$(cat "$T/src"/* | cksum)
for delay in 0.05 0.15 0.3 0.6; do
    rm -f "$T"/q-*.gguf
    "$SLMC" quantize "$T/src" --type Q2_K,Q3_K_M,Q4_K_M,Q5_K_M,Q6_K,Q8_0 -o "$T/q-{type}.gguf" -q &
    pid=$!
    sleep $delay
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    for f in "$T"/q-*.gguf; do
        [ -e "$f" ] || continue
        "$SLMC" inspect "$f" >/dev/null 2>&1 || fail "quantize killed after ${delay}s: partial $f"
    done
done
ok "quantize killed at 4 moments: only complete files at output paths"
[ "$(cat "$T/src"/* | cksum)" = "$sum_before" ] && ok "input untouched" || fail "input changed"

# a full disk: a small tmpfs (needs root and mount; skipped otherwise)
mkdir -p "$T/full"
if mount -t tmpfs -o size=256k tmpfs "$T/full" 2>/dev/null; then
    "$SLMC" synth --shape tiny -o "$T/full/model" -q 2>"$T/err"
    rc=$?
    [ $rc -eq 1 ] && ok "full disk: exit 1 ($(cat "$T/err"))" || fail "full disk: exit $rc"
    grep -q "No space left on device" "$T/err" || fail "full disk message says so: $(cat "$T/err")"
    left=$(ls -A "$T/full")
    [ -z "$left" ] && ok "full disk: nothing left behind" || fail "full disk left: $left"
    umount "$T/full"
else
    echo "SKIP: full-disk test needs permission to mount a tmpfs"
fi
finish
