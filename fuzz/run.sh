#!/bin/sh
# run.sh SECONDS - build every fuzz/fuzz_*.c with clang's libFuzzer and run each for SECONDS.
#
# Each harness links against the file-reading layers, $SRC: codec/*.c, formats/*.c and the
# recipe parser (pipeline/recipe.c with the report and sha256 its tests use). Its corpus, build-fuzz/corpus-NAME, is seeded from
# fuzz/seeds/NAME/ (when present) and from small files the unit tests save when run with
# SLMC_FUZZ_SEEDS=DIR (tests/test_NAME writes DIR/NAME/). Prints one summary line per harness
# with libFuzzer's execution count; exits non-zero when a harness crashes or fails to build.
set -u
secs=${1:-60}
cd "$(dirname "$0")/.." || exit 1
out=build-fuzz
mkdir -p "$out"
CC=${FUZZ_CC:-clang}
PKGS="zlib libzstd hdf5 jansson libpcre2-8 yaml-0.1"
pkg=$(pkg-config --cflags --libs $PKGS) || { echo "fuzz: pkg-config failed for $PKGS" >&2; exit 1; }
SRC="codec/*.c formats/*.c pipeline/recipe.c pipeline/report.c pipeline/sha256.c"
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=c11 -D_GNU_SOURCE -I."

# Seeds from the unit tests: build tests/test_NAME.c against formats/ (plain, no sanitizers,
# warnings not fatal: only its output files matter here) and run it with SLMC_FUZZ_SEEDS.
gen="$out/seeds-gen"
rm -rf "$gen"
mkdir -p "$gen"
for h in fuzz/fuzz_*.c; do
    name=$(basename "$h" .c); name=${name#fuzz_}
    [ -f "tests/test_$name.c" ] || continue
    if $CC -std=c11 -D_GNU_SOURCE -O1 -w -I. $(pkg-config --cflags check) -o "$out/seedgen_$name" \
        "tests/test_$name.c" tests/testutil.c $SRC $pkg $(pkg-config --libs check) -lm \
        >"$out/seedgen-$name.log" 2>&1; then
        SLMC_FUZZ_SEEDS="$gen" "$out/seedgen_$name" >>"$out/seedgen-$name.log" 2>&1 || true
    fi
done

summary=""
status=0
for h in fuzz/fuzz_*.c; do
    name=$(basename "$h" .c); name=${name#fuzz_}
    bin="$out/fuzz_$name"
    # formats/ needs no OpenMP; retry with -fopenmp if the link asks for it
    if ! $CC $flags -o "$bin" "$h" $SRC $pkg -lm 2>"$out/build-$name.log" &&
       ! $CC $flags -fopenmp -o "$bin" "$h" $SRC $pkg -lm 2>"$out/build-$name.log"; then
        cat "$out/build-$name.log" >&2
        summary="$summary
$name: BUILD FAILED"
        status=1
        continue
    fi
    corpus="$out/corpus-$name"
    mkdir -p "$corpus"
    [ -d "fuzz/seeds/$name" ] && cp -f fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null
    [ -d "$gen/$name" ] && cp -f "$gen/$name"/* "$corpus"/ 2>/dev/null
    log="$out/fuzz-$name.log"
    "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$out/crash-$name-" \
        "$corpus" >"$log" 2>&1
    rc=$?
    runs=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 | sed -E 's/^Done ([0-9]+) runs.*/\1/')
    if [ $rc -ne 0 ]; then
        tail -n 40 "$log" >&2
        summary="$summary
$name: CRASH (exit $rc) after ${runs:-?} runs, see $log and $out/crash-$name-*"
        status=1
    else
        summary="$summary
$name: ${runs:-?} runs in ${secs}s, corpus $(ls "$corpus" | wc -l) files"
    fi
done
echo "fuzz summary:$summary"
exit $status
