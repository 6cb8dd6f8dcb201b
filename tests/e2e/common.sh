# common.sh - helpers for the end-to-end scripts (sourced). $SLMC is the binary under test.
SLMC=${SLMC:-build/slmc}
SHARED=${SLMC_SHARED:-../shared}
T=$(mktemp -d /tmp/slmc-e2e-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# expect CODE DESCRIPTION -- command...   (stderr kept in $T/err, stdout in $T/out)
expect() {
    code=$1; shift; desc=$1; shift; [ "$1" = "--" ] && shift
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq "$code" ]; then ok "$desc"; else fail "$desc: exit $rc, expected $code"; sed 's/^/    /' "$T/err" | head -5; fi
}

# expect_error DESCRIPTION PATH -- command...: exit 1, one line "slmc: PATH...: ..." on stderr
expect_error() {
    desc=$1; shift; path=$1; shift; [ "$1" = "--" ] && shift
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -ne 1 ]; then fail "$desc: exit $rc, expected 1"; sed 's/^/    /' "$T/err" | head -5; return; fi
    if ! head -n 1 "$T/err" | grep -qF "slmc: $path"; then fail "$desc: message does not name $path: $(head -c 300 "$T/err")"; return; fi
    [ "$(wc -l <"$T/err")" -eq 1 ] || { fail "$desc: more than one line on stderr"; return; }
    ok "$desc ($(cat "$T/err"))"
}

have_shared() {
    if [ -e "$SHARED/$1" ]; then return 0; fi
    echo "SKIP: $SHARED/$1 not found"
    return 1
}

finish() {
    if [ "$fails" -ne 0 ]; then echo "$fails failure(s)"; exit 1; fi
    exit 0
}
