#!/bin/sh
# run_tests.sh BUILD - run every Check suite in BUILD/tests and every end-to-end script in
# tests/e2e/, then print one closing line "BUILD: N passed, N failed, N skipped".
#
# Counting:
#   Check suites  one per test; a test that printed "SKIP where: why" (tests/testutil.h:
#                 test_skip, SKIP_TEST, SHARED_OR_SKIP) counts as skipped, not passed.
#   e2e scripts   one per check line: "ok: ..." passed, "FAIL: ..." failed, "SKIP..." skipped
#                 (a block of checks that could not run); a script that exits non-zero
#                 without a FAIL line counts one failure.
build=${1:-build}
# OpenMP threads sleep instead of spinning at barriers: the suite stays fast when the machine
# is shared (spinning threads starve each other on 2 busy cores).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# every Check test in a process of its own (test_skip prints once per test)
export CK_FORK=yes
# timeouts are guards against hangs, not speed checks: give slow or busy machines (and the
# sanitizer build) room
export CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-4}
passed=0; failed=0; skipped=0
log=$(mktemp)
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    t0=$(date +%s)
    "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    echo "time $t: $(( $(date +%s) - t0 )) s"
    # Check prints "100%: Checks: 7, Failures: 0, Errors: 0"
    line=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
        f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2/' | awk '{print $1+$2}')
        s=$(grep -cE '^SKIP [^ ]+: ' "$log")
        p=$((n - f - s))
        [ $p -lt 0 ] && p=0
        passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    elif [ $rc -ne 0 ]; then
        echo "FAIL $t (exit $rc, no Check summary)"; failed=$((failed + 1))
    fi
done
for e in tests/e2e/*.sh; do
    [ -f "$e" ] || continue
    t0=$(date +%s)
    SLMC="$build/slmc" sh "$e" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    p=$(grep -c '^ok: ' "$log"); f=$(grep -c '^FAIL: ' "$log"); s=$(grep -c '^SKIP' "$log")
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    if [ $rc -eq 0 ] && [ "$f" -eq 0 ]; then
        if [ "$s" -gt 0 ]; then echo "PASS $e ($p checks, $s skipped, $secs s)"; else echo "PASS $e ($p checks, $secs s)"; fi
        grep -E '^SKIP' "$log" || true
    else
        cat "$log"; echo "FAIL $e ($secs s)"
    fi
done
rm -f "$log"
echo "$build: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
