#!/bin/sh
# pipeline_shared.sh - `slmc pipeline` with one step cache shared by several processes (as CI
# jobs on many machines would share a network folder): two pipelines started together compute
# each step once between them and write byte-identical reports; one killed with kill -9 in the
# middle of a step leaves nothing incomplete, and the other takes the step over; --matrix is
# valid JSON listing the variants; --only each variant then --report equals one full run;
# --only with an unknown name and --report with a variant not run yet fail naming it.
# Uses a synthetic model (slmc synth), not ../shared.
. tests/e2e/lib.inc
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

if ! "$SLMC" pipeline --help 2>/dev/null | grep -q -- '--report'; then
    echo "SKIP: $SLMC pipeline has no --matrix/--only/--report yet"
    finish
fi
have_python=true
command -v python3 >/dev/null 2>&1 || { have_python=false; echo "SKIP: python3 not found: JSON and cache checks left out"; }

"$SLMC" synth --shape small --seed 1 -o "$T/m" -q || { fail "synth"; finish; }
cat README.md docs/*.md >"$T/eval.txt"

# Two variants: k shares an imatrix between its two types; z's gate fails on purpose, so the
# exit status of a whole run is 3 and that of --only is its variant's.
cat >"$T/sh.yaml" <<'EOF'
name: sh
source: m
eval: {text: eval.txt, ctx: 128, chunks: 4}
gates: {max_size: 5MB}
variants:
  - name: k
    steps:
      - imatrix: {text: eval.txt, ctx: 128, chunks: 4}
      - quantize: {types: [Q4_K_M, Q8_0]}
    gates:
      Q4_K_M: {max_kld: 2.0}
  - name: z
    steps:
      - quantize: {types: Q4_0}
    gates: {max_kld: 0.01}
EOF
R="$T/sh.yaml"

# same_reports DESC DIR1 DIR2: the JSON, Markdown and SVG reports are byte-identical
same_reports() {
    for e in json md svg; do
        cmp -s "$2/sh.report.$e" "$3/sh.report.$e" || { fail "$1: sh.report.$e differs: $(diff "$2/sh.report.$e" "$3/sh.report.$e" | head -5)"; return; }
    done
    ok "$1"
}

# cache_complete DESC CACHE: every step output has a metadata file, and every metadata file
# lists files that exist with the sizes it gives (an entry is complete or absent)
cache_complete() {
    $have_python || return 0
    if python3 - "$2" >"$T/py.out" 2>&1 <<'EOF'
import json, os, sys
cache = sys.argv[1]
names = [n for n in os.listdir(cache) if not n.startswith('.')]
bad = []
for n in names:
    key, ext = n[:64], n[64:]
    if ext in ('.lock', '.meta.json', '.failed.log'):
        continue
    if key + '.meta.json' not in names:
        bad.append('no metadata for ' + n)
for n in names:
    if not n.endswith('.meta.json'):
        continue
    m = json.load(open(os.path.join(cache, n)))
    for f, size in m['files'].items():
        p = os.path.join(cache, f)
        if not os.path.isfile(p) or os.path.getsize(p) != size:
            bad.append('%s: %s missing or not %d bytes' % (n, f, size))
print('; '.join(bad))
sys.exit(1 if bad else 0)
EOF
    then ok "$1"; else fail "$1: $(cat "$T/py.out")"; fi
}

# the key (first 12 hex digits, as the notes print it) of each step, from the dry run's JSON
"$SLMC" pipeline "$R" --out "$T/plan" --cache "$T/plan-cache" --dry-run --json >"$T/plan.json" 2>/dev/null
keys=$(sed -n 's/^ *"key": "\([0-9a-f]\{12\}\).*/\1/p' "$T/plan.json")
[ "$(echo "$keys" | wc -l)" -eq 8 ] && ok "plan: 8 steps" || fail "plan: expected 8 steps: $keys"

# --- the undisturbed run: one process, its own cache ---
expect 3 "full run (variant z's gate fails: exit 3)" -- "$SLMC" pipeline "$R" --out "$T/full" -t 1
grep -q '"pass": false' "$T/full/sh.report.json" || fail "full run: report pass false"

# --- --matrix ---
expect 0 "--matrix" -- "$SLMC" pipeline "$R" --matrix --out "$T/nowhere"
[ "$(wc -l <"$T/out")" -eq 1 ] && ok "--matrix: one line" || fail "--matrix: not one line: $(cat "$T/out")"
[ -e "$T/nowhere" ] && fail "--matrix wrote into --out"
if $have_python; then
    v=$(python3 -c 'import json,sys; m=json.load(sys.stdin); print(" ".join(e["variant"] for e in m["include"]))' <"$T/out")
    [ "$v" = "k z" ] && ok "--matrix: valid JSON, variants k z" || fail "--matrix: variants '$v': $(cat "$T/out")"
    f=$(python3 -c 'import json,sys; m=json.load(sys.stdin); print(" ".join(m["include"][0]["files"]))' <"$T/out")
    [ "$f" = "k-Q4_K_M.gguf k-Q8_0.gguf" ] && ok "--matrix: output files" || fail "--matrix: files '$f'"
fi

# --- --only each variant (own --out, one --cache), then --report ---
expect 0 "--only k" -- "$SLMC" pipeline "$R" --only k --out "$T/ok" --cache "$T/c-only" -t 1
grep -q '| k-Q4_K_M |' "$T/out" && ! grep -q 'z-Q4_0' "$T/out" && ok "--only k prints its rows" || fail "--only k stdout: $(cat "$T/out")"
[ -s "$T/ok/k-Q4_K_M.gguf" ] && [ -s "$T/ok/k-Q8_0.gguf" ] && [ ! -e "$T/ok/z-Q4_0.gguf" ] &&
    ok "--only k publishes k only" || fail "--only k published: $(ls "$T/ok")"
[ -e "$T/ok/cache" ] && fail "--cache elsewhere, yet --only wrote OUT/cache"
cmp -s "$T/ok/k-Q4_K_M.gguf" "$T/full/k-Q4_K_M.gguf" || fail "--only k: k-Q4_K_M.gguf differs from the full run's"
expect_error "--report with variant z not run yet" "$R: variant 'z' has not been run yet" -- \
    "$SLMC" pipeline "$R" --report --out "$T/rep" --cache "$T/c-only"
grep -q "'k'" "$T/err" && fail "--report names k, which ran"
expect 3 "--only z (its gate fails: exit 3)" -- "$SLMC" pipeline "$R" --only z --out "$T/oz" --cache "$T/c-only" -t 1
grep -q 'reused eval \[source\]' "$T/err" && ok "--only z reuses the source's eval from --only k" || fail "--only z: $(cat "$T/err")"
expect 3 "--report (gates as a full run: exit 3)" -- "$SLMC" pipeline "$R" --report --out "$T/rep" --cache "$T/c-only"
grep -q 'pipeline: \[' "$T/err" && fail "--report ran a step: $(cat "$T/err")"
cmp -s "$T/out" "$T/rep/sh.report.md" || fail "--report: stdout is not the Markdown report"
same_reports "--only k, --only z, --report: the full run's reports" "$T/full" "$T/rep"

# --- errors ---
expect_error "--only with an unknown variant" "$R: --only nope: no such variant (the recipe has: k, z)" -- \
    "$SLMC" pipeline "$R" --only nope --out "$T/bad" --cache "$T/c-only"
expect_usage "--only without a value" "--only" -- "$SLMC" pipeline "$R" --only
expect_usage "--matrix with --report" "--matrix" -- "$SLMC" pipeline "$R" --matrix --report
expect_usage "--report with --only" "--report" -- "$SLMC" pipeline "$R" --report --only k

# --- two processes at once, one shared cache, different --out ---
C="$T/c-two"
"$SLMC" pipeline "$R" --out "$T/a" --cache "$C" -t 1 >/dev/null 2>"$T/ea" &
pa=$!
"$SLMC" pipeline "$R" --out "$T/b" --cache "$C" -t 1 >/dev/null 2>"$T/eb" &
pb=$!
wait $pa; ra=$?
wait $pb; rb=$?
[ $ra -eq 3 ] && [ $rb -eq 3 ] && ok "two at once: both finish (exit 3, the gate)" || fail "two at once: exits $ra $rb: $(cat "$T/ea" "$T/eb")"
once=true
for k in $keys; do
    n=$(cat "$T/ea" "$T/eb" | grep -c "computed .* key $k")
    r=$(cat "$T/ea" "$T/eb" | grep -c -e "reused .* key $k" -e "waited for .* key $k")
    if [ "$n" -ne 1 ] || [ "$r" -ne 1 ]; then once=false; fail "two at once: step $k computed $n times, reused $r times"; fi
done
$once && ok "two at once: each of the 8 steps computed once, reused or waited for by the other"
# the notes name the process: each one's own pid where it computed, the other's where it reused
who=$( (grep 'computed .* in ' "$T/ea" | grep -v "(pid $pa on host "; grep 'computed .* in ' "$T/eb" | grep -v "(pid $pb on host ";
        grep -e 'reused .*computed by' -e 'waited for' "$T/ea" | grep -v -e "computed by pid \\($pa\\|$pb\\) on host " -e "waited for pid \\($pa\\|$pb\\) on host ";
        grep -e 'reused .*computed by' -e 'waited for' "$T/eb" | grep -v -e "computed by pid \\($pa\\|$pb\\) on host " -e "waited for pid \\($pa\\|$pb\\) on host ") )
[ -z "$who" ] && ok "two at once: the notes name the pid and host that computed each step" || fail "two at once: notes: $who"
same_reports "two at once: the two reports are byte-identical" "$T/a" "$T/b"
same_reports "two at once: the full run's reports" "$T/full" "$T/a"
left=$(find "$C" "$T/a" "$T/b" -name '.*tmp*')
[ -z "$left" ] && ok "two at once: no temporary files left" || fail "two at once left: $left"
cache_complete "two at once: every cache entry complete" "$C"

# --- one of two killed with kill -9 in the middle of a step ---
# As soon as a step's working folder appears, its owner is frozen (SIGSTOP: it keeps the step's
# lock and cannot finish), the other pipeline is let run until it waits for that step, and the
# frozen one is killed with kill -9: the kernel releases its lock, the survivor takes the step
# over, and nothing of the dead process looks finished.
C="$T/c-kill"
mkdir "$C"
"$SLMC" pipeline "$R" --out "$T/k1" --cache "$C" -t 1 >/dev/null 2>"$T/e1" &
p1=$!
"$SLMC" pipeline "$R" --out "$T/k2" --cache "$C" -t 1 >/dev/null 2>"$T/e2" &
p2=$!
tmp=""
for i in $(seq 600); do
    tmp=$(ls -a "$C" | grep '^\.tmp-' | head -n 1)
    [ -n "$tmp" ] && break
    sleep 0.05
done
if [ -z "$tmp" ]; then
    fail "kill -9: no step's working folder appeared"
    kill -9 $p1 $p2 2>/dev/null
    finish
fi
victim=$(echo "$tmp" | sed 's/^.*-\([0-9][0-9]*\)-[A-Za-z0-9]*$/\1/')
key=$(echo "$tmp" | cut -c6-17)
kill -STOP "$victim"
if [ "$victim" = "$p1" ]; then survivor=$p2; elog="$T/e2"; out="$T/k2"; else survivor=$p1; elog="$T/e1"; out="$T/k1"; fi
[ "$victim" = "$p1" ] || [ "$victim" = "$p2" ] || fail "kill -9: working folder $tmp of neither pipeline ($p1 $p2)"
for i in $(seq 600); do
    grep -q "waiting for .* key $key" "$elog" && break
    sleep 0.05
done
grep -q "waiting for .* key $key: pid $victim on host " "$elog" && ok "kill -9: the other waits for step $key (locked by pid $victim)" ||
    fail "kill -9: the survivor does not wait for $key: $(cat "$elog")"
kill -9 "$victim"
wait "$victim" 2>/dev/null
wait "$survivor"
rs=$?
[ $rs -eq 3 ] && ok "kill -9: the survivor finishes (exit 3, the gate)" || fail "kill -9: survivor exit $rs: $(cat "$elog")"
if grep -q "took over .* key $key: pid $victim on host .* stopped without finishing it" "$elog"; then
    ok "kill -9: the survivor took step $key over"
elif grep -q "waited for pid $victim on host .* key $key" "$elog"; then
    # frozen in the instant between committing the step and removing its working folder
    ok "kill -9: the killed process had committed step $key; the survivor reused it"
else
    fail "kill -9: neither a take-over nor a reuse of $key: $(cat "$elog")"
fi
left=$(ls -a "$C" | grep -e "-$victim-" -e '\.tmp-')
[ -z "$left" ] && ok "kill -9: no temporary of the killed process left" || fail "kill -9: left in the cache: $left"
cache_complete "kill -9: every cache entry complete" "$C"
same_reports "kill -9: the undisturbed run's reports" "$T/full" "$out"
expect 0 "kill -9: plan on the cache" -- "$SLMC" pipeline "$R" --out "$T/k3" --cache "$C" --dry-run --json
grep -q '"to_run": 0' "$T/out" && ok "kill -9: nothing left to run" || fail "kill -9: still to run: $(grep to_run "$T/out")"
finish
