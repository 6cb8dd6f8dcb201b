#!/bin/sh
# cli.sh - command-line conventions: help, version, usage errors and their exit codes.
. tests/e2e/lib.inc

expect 0 "--version" -- "$SLMC" --version
grep -q '^slmc ' "$T/out" || fail "--version prints 'slmc VERSION'"
expect 0 "help" -- "$SLMC" help
grep -q 'inspect' "$T/out" || fail "help lists inspect"
expect 2 "no command" -- "$SLMC"
expect 2 "unknown command" -- "$SLMC" frobnicate
for cmd in inspect convert synth; do
    expect 0 "$cmd --help" -- "$SLMC" "$cmd" --help
    grep -q "^Usage: slmc $cmd" "$T/out" || fail "$cmd --help starts with Usage"
    expect 0 "help $cmd" -- "$SLMC" help "$cmd"
    expect 2 "$cmd with a bad option" -- "$SLMC" "$cmd" --no-such-option
done
expect 2 "inspect without a model" -- "$SLMC" inspect
expect 2 "convert with one path" -- "$SLMC" convert a.gguf
expect 2 "convert --outtype q4" -- "$SLMC" convert a b --outtype q4_k
expect_error "inspect a missing file" "$T/missing.gguf" -- "$SLMC" inspect "$T/missing.gguf"
printf 'hello world, not a model' >"$T/junk.bin"
expect_error "inspect a junk file" "$T/junk.bin" -- "$SLMC" inspect "$T/junk.bin"
finish
