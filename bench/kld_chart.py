#!/usr/bin/env python3
"""kld_chart.py TABLE.json OUT.svg - bench/iquants.sh's table as an SVG chart: KLD (log scale)
against bits per weight, one line per way of quantizing. Plain SVG, no plotting library."""
import json, math, sys

table = json.load(open(sys.argv[1]))
rows, below = table["mixes"], table.get("fit_below", [])
series = [("llama", "llama.cpp mix + imatrix", "#d62728"), ("imatrix", "slmc mix + imatrix", "#ff7f0e"),
          ("gptq", "slmc mix, GPTQ", "#2ca02c"), ("fit", "slmc fit-to-size + GPTQ", "#1f77b4")]
W, H, L, R, T, B = 760, 480, 70, 20, 40, 60
pts = [(r[k]["bpw"], r[k]["kld"]) for r in rows for k, _, _ in series] + [(e["bpw"], e["kld"]) for e in below]
x0, x1 = math.floor(min(p[0] for p in pts) * 2) / 2, math.ceil(max(p[0] for p in pts) * 2) / 2
y0, y1 = math.floor(math.log10(min(p[1] for p in pts))), math.ceil(math.log10(max(p[1] for p in pts)))
X = lambda v: L + (v - x0) / (x1 - x0) * (W - L - R)
Y = lambda v: T + (y1 - math.log10(v)) / (y1 - y0) * (H - T - B)
o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
     '<rect width="100%" height="100%" fill="white"/>',
     '<text x="%d" y="22" font-size="14">books-22m: KLD vs BF16 against size (books-valid, c 256, 100 chunks)</text>' % L]
for e in range(y0, y1 + 1):
    y = Y(10 ** e)
    o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (L, W - R, y, y))
    o.append('<text x="%d" y="%.1f" text-anchor="end">1e%d</text>' % (L - 6, y + 4, e))
v = x0
while v <= x1 + 1e-9:
    x = X(v)
    o.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/>' % (x, x, T, H - B))
    o.append('<text x="%.1f" y="%d" text-anchor="middle">%.1f</text>' % (x, H - B + 16, v))
    v += 0.5
o.append('<text x="%d" y="%d" text-anchor="middle">bits per weight (tensor data / parameters)</text>' % ((L + W - R) // 2, H - 22))
o.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">mean KLD (log)</text>' % ((T + H - B) // 2, (T + H - B) // 2))
for i, (k, label, color) in enumerate(series):
    s = sorted([(r[k]["bpw"], r[k]["kld"], r["mix"]) for r in rows] +
               ([(e["bpw"], e["kld"], "%.1f bpw" % e["target_bpw"]) for e in below] if k == "fit" else []))
    o.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' %
             (color, " ".join("%.1f,%.1f" % (X(a), Y(b)) for a, b, _ in s)))
    for a, b, m in s:
        o.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %s: %.3f bpw, KLD %.5f</title></circle>' %
                 (X(a), Y(b), color, label, m, a, b))
    o.append('<rect x="%d" y="%d" width="12" height="3" fill="%s"/>' % (W - R - 200, T + 10 + 16 * i, color))
    o.append('<text x="%d" y="%d">%s</text>' % (W - R - 184, T + 15 + 16 * i, label))
for r in rows:  # mix names under the llama.cpp points
    o.append('<text x="%.1f" y="%.1f" font-size="9" fill="#666" text-anchor="middle">%s</text>' %
             (X(r["llama"]["bpw"]), Y(r["llama"]["kld"]) - 6, r["mix"]))
o.append('</svg>')
open(sys.argv[2], "w").write("\n".join(o) + "\n")
