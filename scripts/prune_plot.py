#!/usr/bin/env python3
"""Mean KLD against file size: each pruning row without healing, with least squares and with distillation
(prune-table.md from `scripts/prune_table.sh WORK "" table`), beside the quantization-only files of the same
model (awq-table.md from scripts/awq_table.sh: AWQ+GPTQ and MQ). An SVG with a log-scale y axis.
   usage: prune_plot.py prune-table.md awq-table.md OUT.svg
"""
import math, sys
from collections import defaultdict

from svg_axes import log_y_grid

def cells(line): return [c.strip() for c in line.strip().strip("|").split("|")]
rows, current = defaultdict(dict), None
for line in open(sys.argv[1]):
    c = cells(line)
    if len(c) < 7 or not line.startswith("|") or c[0] in ("row", "---", "base", "vocabulary"): continue
    try: mib, kld = float(c[3]), float(c[6].split()[0])
    except ValueError: continue
    label = c[0].replace(" + vocabulary", "+vocab")
    rows[label][c[1]] = (mib, kld)
quant = defaultdict(list)
for line in open(sys.argv[2]):
    c = cells(line)
    if len(c) > 5 and c[1] in ("awq+gptq", "mq"):
        try: quant[c[1]].append((float(c[2]), float(c[5].split()[0])))
        except ValueError: pass
points = [p for r in rows.values() for p in r.values()] + [p for q in quant.values() for p in q]
W, H, L, R, T, B = 760, 460, 70, 190, 40, 50
x0, x1 = 0, max(x for x, _ in points) * 1.05
y0, y1 = math.log10(min(y for _, y in points)) - 0.1, math.log10(max(y for _, y in points)) + 0.1
px = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
py = lambda y: T + (1 - (math.log10(y) - y0) / (y1 - y0)) * (H - T - B)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="22" font-size="14">Pruning vs quantization: mean KLD against file size (SmolLM2-135M)</text>']
out += log_y_grid(y0, y1, py, L, W - R)
for v in range(0, int(x1) + 1, 10):
    out.append(f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{T}" y2="{H-B}" stroke="#eee"/>')
    out.append(f'<text x="{px(v):.1f}" y="{H-B+16}" text-anchor="middle">{v}</text>')
out.append(f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">file size (MiB)</text>')
out.append(f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">mean KLD vs base (log)</text>')
out.append(f'<rect x="{L}" y="{T}" width="{W-L-R}" height="{H-T-B}" fill="none" stroke="#333"/>')
style = {"none": "#999999", "lsq": "#1f77b4", "distill": "#2ca02c", "awq+gptq": "#ff7f0e", "mq": "#d62728"}
for label, healings in rows.items():
    pts = sorted(healings.values(), key=lambda p: -p[1])
    out.append('<polyline fill="none" stroke="#bbb" points="%s"/>' % " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts))
    x, y = healings.get("none", pts[0])
    out.append(f'<text x="{px(x)+6:.1f}" y="{py(y)+4:.1f}" font-size="11">{label}</text>')
    for h, (x, y) in healings.items():
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{style[h]}"/>')
for name, pts in quant.items():
    for x, y in pts:
        out.append(f'<rect x="{px(x)-4:.1f}" y="{py(y)-4:.1f}" width="8" height="8" fill="{style[name]}"/>')
legend = [("pruned, no healing", "none", "circle"), ("pruned + least squares", "lsq", "circle"), ("pruned + lsq + distillation", "distill", "circle"),
          ("quantized: AWQ+GPTQ", "awq+gptq", "rect"), ("quantized: MQ", "mq", "rect")]
for i, (text, key, shape) in enumerate(legend):
    y = T + 14 + i * 20
    out.append(f'<circle cx="{W-R+18}" cy="{y-4}" r="5" fill="{style[key]}"/>' if shape == "circle"
               else f'<rect x="{W-R+13}" y="{y-9}" width="10" height="10" fill="{style[key]}"/>')
    out.append(f'<text x="{W-R+30}" y="{y}">{text}</text>')
out.append("</svg>")
open(sys.argv[3], "w").write("\n".join(out))
