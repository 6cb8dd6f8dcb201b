#!/bin/sh
# bench/imatrix.sh [BUILD] - slmc imatrix against llama-imatrix on books-22m: the importance
# matrix of the F32 conversion over 100 chunks of 256 tokens of books-train.txt (the settings
# of ../shared/reference/books-22m-imatrix.dat), its time, and the max / median relative error
# of the per-column mean x² (what llama-quantize uses) against llama.cpp's .dat.
set -e
build=${1:-build}
S="$build/slmc"
SHARED=${SLMC_SHARED:-../shared}
DIR=${BENCH_DIR:-/tmp/slmc-bench}
THREADS=${THREADS:-2}
REF="$SHARED/reference/books-22m-imatrix.dat"
for f in "$REF" "$SHARED/models/books-22m/hf-bf16" "$SHARED/text/books-train.txt"; do
    [ -e "$f" ] || { echo "SKIP bench/imatrix: $f not found"; exit 0; }
done
command -v python3 >/dev/null 2>&1 || { echo "SKIP bench/imatrix: needs python3 to compare the files"; exit 0; }
mkdir -p "$DIR"
F32="$DIR/books-22m-F32.gguf"
[ -f "$F32" ] || "$S" convert "$SHARED/models/books-22m/hf-bf16" "$F32" --outtype f32 -q
"$S" imatrix "$F32" --text "$SHARED/text/books-train.txt" -c 256 --chunks 100 -o "$DIR/imatrix.dat" \
    -t "$THREADS" -q --json >"$DIR/imatrix.json"
python3 - "$DIR/imatrix.dat" "$REF" "$DIR/imatrix.json" "$THREADS" <<'PY'
import json, struct, sys
def load(path):  # legacy .dat -> {name: mean x^2 per column} (value / ncall, as llama-quantize)
    b = open(path, 'rb').read()
    n, = struct.unpack_from('<i', b, 0); o = 4; d = {}
    for _ in range(n):
        l, = struct.unpack_from('<i', b, o); o += 4
        name = b[o:o + l].decode(); o += l
        ncall, nval = struct.unpack_from('<ii', b, o); o += 8
        d[name] = [v / ncall for v in struct.unpack_from('<%df' % nval, b, o)]; o += 4 * nval
    return d
ours, ref = load(sys.argv[1]), load(sys.argv[2])
run = json.load(open(sys.argv[3]))
assert set(ours) == set(ref), "entries differ: %s" % sorted(set(ours) ^ set(ref))
errs, worst = [], (0.0, '')
for name, r in ref.items():
    for a, b in zip(ours[name], r):
        e = abs(a - b) / max(abs(a), abs(b), 1e-30)
        errs.append(e)
        if e > worst[0]: worst = (e, name)
errs.sort()
print("# slmc bench/imatrix: books-22m F32, -c 256 --chunks 100 on books-train.txt, -t %s" % sys.argv[4])
print("entries          %d (%d columns)" % (len(ref), len(errs)))
print("time             %.1f s total, %.1f s in the forward passes (%.0f tokens/s)" %
      (run['seconds'], run['eval_seconds'], run['tokens_per_second']))
print("max rel error    %.3g (%s)" % worst)
print("median rel error %.3g" % errs[len(errs) // 2])
sys.exit(0 if worst[0] < 1e-3 else 1)
PY
