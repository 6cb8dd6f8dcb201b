#!/bin/sh
# cli.sh - command-line conventions: help, version, usage errors and their exit codes.
. tests/e2e/lib.inc

expect 0 "--version" -- "$SLMC" --version
grep -q '^slmc ' "$T/out" || fail "--version prints 'slmc VERSION'"
expect 0 "help" -- "$SLMC" help
grep -q 'inspect' "$T/out" || fail "help lists inspect"
expect 2 "no command" -- "$SLMC"
expect 2 "unknown command" -- "$SLMC" frobnicate
for cmd in inspect convert synth quantize prune imatrix eval generate train distill pipeline; do
    expect 0 "$cmd --help" -- "$SLMC" "$cmd" --help
    grep -q "^Usage: slmc $cmd" "$T/out" || fail "$cmd --help starts with Usage"
    expect 0 "help $cmd" -- "$SLMC" help "$cmd"
    expect 2 "$cmd with a bad option" -- "$SLMC" "$cmd" --no-such-option
done
expect 2 "inspect without a model" -- "$SLMC" inspect
expect 2 "convert with one path" -- "$SLMC" convert a.gguf
expect 2 "convert --outtype q4" -- "$SLMC" convert a b --outtype q4_k
expect_error "inspect a missing file" "$T/missing.gguf" -- "$SLMC" inspect "$T/missing.gguf"
# Numeric flags: the whole value must be a number in range, checked before any work (the
# model and text paths below do not exist: the flag is refused first, nothing is written).
M="$T/none.gguf"; X="$T/none.txt"
for cmd in inspect convert synth quantize prune imatrix eval generate train distill pipeline; do
    for v in abc 0 -1 2x 1e3 99999 ''; do
        expect_usage "$cmd -t '$v'" "-t/--threads" -- "$SLMC" "$cmd" -t "$v" "$M"
    done
done
bad() { flag=$1; shift; expect_usage "$* $flag" "$flag" -- "$SLMC" "$@"; }
for v in -3 0 abc 1.5 1e2 99999999999; do
    bad --chunks eval "$M" --text "$X" --chunks "$v"
    bad --chunks imatrix "$M" --text "$X" -o "$T/i.dat" --chunks "$v"
    bad --chunks quantize "$M" "$T/o.gguf" Q4_K_M --method gptq --calib "$X" --chunks "$v"
    bad --chunks prune "$M" "$T/o.gguf" --ffn 0.5 --calib "$X" --chunks "$v"
done
for v in abc 0 1e3 -256; do bad -c/--ctx eval "$M" --text "$X" -c "$v"; done
bad -c/--ctx imatrix "$M" --text "$X" -o "$T/i.dat" -c 8
bad -c/--ctx generate "$M" -p hi -c x
bad -n/--n-predict generate "$M" -p hi -n abc
bad --temp generate "$M" -p hi --temp nan
bad --temp generate "$M" -p hi --temp -0.5
bad --top-p generate "$M" -p hi --top-p 0
bad --top-p generate "$M" -p hi --top-p 1.5
bad --top-k generate "$M" -p hi --top-k 4.5
bad --seed generate "$M" -p hi --seed -1
bad --seed generate "$M" -p hi --seed 18446744073709551616
for cmd in train distill; do
    bad --steps $cmd --model "$M" --data "$X" -o "$T/o.gguf" --steps 1e99
    bad --steps $cmd --model "$M" --data "$X" -o "$T/o.gguf" --steps 0
    bad --lr $cmd --model "$M" --data "$X" -o "$T/o.gguf" --lr nan
    bad --lr $cmd --model "$M" --data "$X" -o "$T/o.gguf" --lr inf
    bad --lr $cmd --model "$M" --data "$X" -o "$T/o.gguf" --lr -1e-3
    bad --lr $cmd --model "$M" --data "$X" -o "$T/o.gguf" --lr 0
    bad --batch $cmd --model "$M" --data "$X" -o "$T/o.gguf" --batch 0
    bad --seq-len $cmd --model "$M" --data "$X" -o "$T/o.gguf" --seq-len 1
    bad --grad-accum $cmd --model "$M" --data "$X" -o "$T/o.gguf" --grad-accum x
    bad --valid-frac $cmd --model "$M" --data "$X" -o "$T/o.gguf" --valid-frac 1
    bad --seed $cmd --model "$M" --data "$X" -o "$T/o.gguf" --seed 12a
    bad --max-tokens $cmd --model "$M" --data "$X" -o "$T/o.gguf" --max-tokens -5
done
bad --temperature distill --teacher "$M" --student "$M" --data "$X" -o "$T/o.gguf" --temperature 0
bad --alpha distill --teacher "$M" --student "$M" --data "$X" -o "$T/o.gguf" --alpha nan
bad --damp quantize "$M" "$T/o.gguf" Q4_K_M --method gptq --calib "$X" --damp nan
bad --target-bpw quantize "$M" "$T/o.gguf" --target-bpw 40
bad --target-size quantize "$M" "$T/o.gguf" --target-size 12XB
bad --target-size quantize "$M" "$T/o.gguf" --target-size -5MB
bad --damp prune "$M" "$T/o.gguf" --ffn 0.5 --calib "$X" --damp inf
bad --seed prune "$M" "$T/o.gguf" --ffn 0.5 --calib "$X" --seed 1.5
bad --seed synth --shape small -o "$T/s" --seed abc
bad --shard-size synth --shape small -o "$T/s" --shard-size 0
bad --shard-size convert "$M" "$T/o" --shard-size abc
bad -j/--jobs pipeline "$X" -j 0
bad -j/--jobs pipeline "$X" -j many
ls "$T" | grep -qv -e '^out$' -e '^err$' && fail "a refused command left a file: $(ls "$T")" || ok "refused commands wrote nothing"

printf 'hello world, not a model' >"$T/junk.bin"
expect_error "inspect a junk file" "$T/junk.bin" -- "$SLMC" inspect "$T/junk.bin"
finish
