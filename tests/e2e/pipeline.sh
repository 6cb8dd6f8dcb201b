#!/bin/sh
# pipeline.sh - `slmc pipeline` on a synthetic model: a recipe quantizing to Q4_K_M and Q8_0 with
# eval gates; outputs equal direct `slmc quantize` runs; a rerun runs nothing and rewrites
# byte-identical files; a clean run with --jobs 2 gives the same bytes; a failing gate exits 3;
# recipe errors exit 1 naming FILE:LINE; two pipelines writing into one folder at once do not
# corrupt each other; SIGTERM leaves no temporary files.
. tests/e2e/lib.inc
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

if ! "$SLMC" pipeline --help >/dev/null 2>&1; then
    echo "SKIP: $SLMC has no pipeline command yet (register cmd_pipeline in cli/main.c)"
    finish
fi

"$SLMC" synth --shape small --seed 1 -o "$T/m" -q || { fail "synth"; finish; }
# Evaluation text: this repository's own documentation (always there, offline).
cat README.md docs/*.md >"$T/eval.txt"

cat >"$T/q.yaml" <<'EOF'
# two quantizations of the synthetic model, gated
name: q
source: m
eval:
  text: eval.txt
  ctx: 128
  chunks: 4
gates:
  max_size: 5MB
variants:
  - name: m
    steps:
      - quantize: {types: [Q4_K_M, Q8_0]}
    gates:
      max_kld: 0.05
      Q4_K_M: {max_kld: 2.0, max_ppl_increase: 500%}
EOF

# --- plan, run, outputs ---
expect 0 "dry run" -- "$SLMC" pipeline "$T/q.yaml" --out "$T/out" --dry-run
grep -q "5 steps, 0 cached, 5 to run" "$T/out" || fail "dry run plans 5 steps: $(head -1 "$T/out")"
[ -e "$T/out/cache" ] && fail "dry run wrote into --out"

expect 0 "pipeline: every gate passes" -- "$SLMC" pipeline "$T/q.yaml" --out "$T/o1" -t 2
cp "$T/out" "$T/md1"
for f in m-Q4_K_M.gguf m-Q8_0.gguf q.report.json q.report.md q.report.svg; do
    [ -s "$T/o1/$f" ] || fail "missing output $f"
done
grep -q '^| variant | size | bpw | PPL | ΔPPL | KLD | same top | gates |$' "$T/md1" || fail "Markdown table on stdout"
cmp -s "$T/md1" "$T/o1/q.report.md" || fail "stdout is the Markdown report"
[ "$(grep -c '✅ pass' "$T/o1/q.report.md")" -eq 2 ] || fail "two passing rows: $(cat "$T/o1/q.report.md")"
grep -q '"pass": true' "$T/o1/q.report.json" || fail "report.json pass"
grep -q '"ppl_increase_pct"' "$T/o1/q.report.json" || fail "report.json has ppl_increase_pct"
head -c 5 "$T/o1/q.report.svg" | grep -q '<svg' || fail "SVG chart"
grep -q '<circle' "$T/o1/q.report.svg" || fail "SVG has points"
# the variants are exactly what slmc quantize writes
"$SLMC" quantize "$T/m" --type Q4_K_M,Q8_0 -o "$T/ref-{type}.gguf" -q
cmp -s "$T/o1/m-Q4_K_M.gguf" "$T/ref-Q4_K_M.gguf" && cmp -s "$T/o1/m-Q8_0.gguf" "$T/ref-Q8_0.gguf" &&
    ok "outputs equal direct slmc quantize" || fail "outputs differ from slmc quantize"
# the report's figures are eval's own
"$SLMC" eval "$T/o1/m-Q8_0.gguf" --text "$T/eval.txt" -c 128 --chunks 4 --json -q >"$T/ev.json"
ppl=$(grep '"ppl":' "$T/ev.json" | head -1 | sed 's/.*: *//; s/,//')
grep -q "\"ppl\": $ppl" "$T/o1/q.report.json" && ok "report PPL $ppl = slmc eval" || fail "report PPL differs from eval ($ppl)"

# --- rerun: all cached, byte-identical (models, eval results, result records, reports; the
# source's saved log-probabilities, an HDF5 file eval writes, are left out: HDF5 stores object
# times; so are the cache's lock files and entry metadata, which name the process and time) ---
sums() { (cd "$1" && find . -type f ! -name '*.log' ! -name '*.h5' ! -name '*.lock' ! -name '*.meta.json' | sort | xargs sha256sum); }
sums "$T/o1" >"$T/sum1"
expect 0 "rerun plan" -- "$SLMC" pipeline "$T/q.yaml" --out "$T/o1" --dry-run --json
grep -q '"to_run": 0' "$T/out" && ok "rerun: nothing to run" || fail "rerun plans work: $(grep to_run "$T/out")"
expect 0 "rerun" -- "$SLMC" pipeline "$T/q.yaml" --out "$T/o1" -t 2
grep -q 'pipeline: \[' "$T/err" && fail "rerun ran a step: $(cat "$T/err")"
sums "$T/o1" >"$T/sum2"
cmp -s "$T/sum1" "$T/sum2" && ok "rerun: byte-identical files" || fail "rerun changed files: $(diff "$T/sum1" "$T/sum2")"

# --- a clean run with two jobs gives the same bytes ---
expect 0 "clean run, --jobs 2" -- "$SLMC" pipeline "$T/q.yaml" --out "$T/o2" -t 2 --jobs 2
sums "$T/o2" >"$T/sum3"
cmp -s "$T/sum1" "$T/sum3" && ok "clean rerun with --jobs 2: byte-identical" || fail "clean rerun differs: $(diff "$T/sum1" "$T/sum3")"

# --- a failing gate exits 3 (the cache is shared: only the report changes) ---
sed -e 's/^name: q/name: strict/' -e 's/max_kld: 0.05/max_kld: 0.0001/' "$T/q.yaml" >"$T/strict.yaml"
expect 3 "a failing gate exits 3" -- "$SLMC" pipeline "$T/strict.yaml" --out "$T/o1" -t 2
grep -q '❌ KLD' "$T/o1/strict.report.md" || fail "failing row in the Markdown: $(cat "$T/o1/strict.report.md")"
grep -q '"pass": false' "$T/o1/strict.report.json" || fail "report.json pass false"

# --- errors ---
printf 'source: m\nsteps:\n  - quantize: {types: [Q4_K_M, Q9]}\n' >"$T/bad.yaml"
expect_error "bad recipe names FILE:LINE" "$T/bad.yaml:3: quantize: unknown type 'Q9'" -- "$SLMC" pipeline "$T/bad.yaml" --out "$T/o3"
printf 'source: nothing-here\nsteps:\n  - quantize: {types: Q8_0}\n' >"$T/nosrc.yaml"
expect_error "missing source" "$T/nothing-here: source model" -- "$SLMC" pipeline "$T/nosrc.yaml" --out "$T/o3"
expect 2 "usage error" -- "$SLMC" pipeline
printf 'source: m\nsteps:\n  - convert: {outtype: f16}\n  - quantize: {types: Q8_0, method: gptq}\n' >"$T/fails.yaml"
expect_error "a failing step" "$T/fails.yaml: quantize Q8_0 [fails] failed (exit 2)" -- "$SLMC" pipeline "$T/fails.yaml" --out "$T/o3" -q

# --- two pipelines into one folder at once ---
sed -e 's/^name: q/name: other/' -e 's/Q4_K_M, Q8_0/Q4_0, Q8_0/' -e 's/Q4_K_M: {/Q4_0: {/' "$T/q.yaml" >"$T/other.yaml"
"$SLMC" pipeline "$T/q.yaml" --out "$T/shared" -t 1 -q >/dev/null 2>"$T/e1" &
p1=$!
"$SLMC" pipeline "$T/other.yaml" --out "$T/shared" -t 1 -q >/dev/null 2>"$T/e2" &
p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
[ $r1 -eq 0 ] && [ $r2 -eq 0 ] && ok "two concurrent pipelines both succeed" || fail "concurrent: exits $r1 $r2: $(cat "$T/e1" "$T/e2")"
"$SLMC" quantize "$T/m" "$T/ref-Q4_0.gguf" Q4_0 -q
for t in Q4_K_M Q8_0 Q4_0; do
    cmp -s "$T/shared/m-$t.gguf" "$T/ref-$t.gguf" || fail "concurrent: m-$t.gguf corrupted"
done
cmp -s "$T/shared/q.report.json" "$T/o1/q.report.json" || fail "concurrent: q.report.json differs from the lone run: $(diff "$T/shared/q.report.json" "$T/o1/q.report.json")"
grep -q '"recipe": "other"' "$T/shared/other.report.json" || fail "concurrent: other.report.json"
left=$(find "$T/shared" -name '.*tmp*')
[ -z "$left" ] && ok "concurrent: no temporary files left" || fail "concurrent left: $left"

# --- SIGTERM stops the children and leaves no temporary folder ---
sed -e 's/^name: q/name: slow/' -e 's/chunks: 4/chunks: 40/' "$T/q.yaml" >"$T/slow.yaml"
"$SLMC" pipeline "$T/slow.yaml" --out "$T/o4" -t 1 -q >/dev/null 2>&1 &
pid=$!
sleep 1
kill -TERM $pid
wait $pid
rc=$?
[ $rc -ne 0 ] || fail "SIGTERM: pipeline exits non-zero"
left=$(find "$T/o4" -name '.*tmp*')
[ -z "$left" ] && ok "SIGTERM: no temporary files left" || fail "SIGTERM left: $left"
finish
