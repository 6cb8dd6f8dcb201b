#!/bin/sh
# run_tests.sh BUILD - run every Check suite in BUILD/tests and every end-to-end script in
# tests/e2e/, then print one closing line "N passed, N failed".
build=${1:-build}
# OpenMP threads sleep instead of spinning at barriers: the suite stays fast when the machine
# is shared (spinning threads starve each other on 2 busy cores).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
passed=0; failed=0
log=$(mktemp)
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    # Check prints "100%: Checks: 7, Failures: 0, Errors: 0"
    line=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
        f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2/' | awk '{print $1+$2}')
        passed=$((passed + n - f)); failed=$((failed + f))
    elif [ $rc -ne 0 ]; then
        echo "FAIL $t (exit $rc, no Check summary)"; failed=$((failed + 1))
    fi
done
for e in tests/e2e/*.sh; do
    [ -f "$e" ] || continue
    if SLMC="$build/slmc" sh "$e" >"$log" 2>&1; then
        echo "PASS $e"; passed=$((passed + 1))
        grep -E '^SKIP' "$log" || true
    else
        cat "$log"; echo "FAIL $e"; failed=$((failed + 1))
    fi
done
rm -f "$log"
echo "$build: $passed passed, $failed failed"
[ $failed -eq 0 ]
