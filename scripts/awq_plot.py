#!/usr/bin/env python3
"""KLD against bits per projection weight, one line per method, from awq-table.md (scripts/awq_table.sh):
an SVG with a log-scale y axis.   usage: awq_plot.py awq-table.md OUT.svg
"""
import math, sys
from collections import defaultdict

from svg_axes import log_y_grid

rows = [l.strip().strip("|").split("|") for l in open(sys.argv[1]) if l.startswith("| Q")]
series = defaultdict(list)
for r in rows:
    cells = [c.strip() for c in r]
    try:
        series[cells[1]].append((float(cells[3]), float(cells[5].split()[0])))
    except (ValueError, IndexError):
        continue
W, H, L, R, T, B = 720, 440, 70, 170, 40, 50
xs = [x for s in series.values() for x, _ in s]; ys = [y for s in series.values() for _, y in s]
x0, x1 = min(xs) - 0.1, max(xs) + 0.1
y0, y1 = math.log10(min(ys)) - 0.05, math.log10(max(ys)) + 0.05
px = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
py = lambda y: T + (1 - (math.log10(y) - y0) / (y1 - y0)) * (H - T - B)
colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2 - 60}" y="22" font-size="14">Mean KLD vs bits per projection weight</text>']
out += log_y_grid(y0, y1, py, L, W - R)
for b in sorted(set(round(x, 2) for x in xs)):
    out.append(f'<line x1="{px(b):.1f}" x2="{px(b):.1f}" y1="{T}" y2="{H-B}" stroke="#eee"/>')
    out.append(f'<text x="{px(b):.1f}" y="{H-B+16}" text-anchor="middle">{b:.2f}</text>')
out.append(f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">bits per projection weight</text>')
out.append(f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">mean KLD vs base (log)</text>')
out.append(f'<rect x="{L}" y="{T}" width="{W-L-R}" height="{H-T-B}" fill="none" stroke="#333"/>')
for i, (name, points) in enumerate(series.items()):
    c = colors[i % len(colors)]
    pts = sorted(points)
    out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (c, " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)))
    out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{c}"/>' for x, y in pts]
    out.append(f'<line x1="{W-R+12}" x2="{W-R+32}" y1="{T+12+i*20}" y2="{T+12+i*20}" stroke="{c}" stroke-width="3"/>')
    out.append(f'<text x="{W-R+38}" y="{T+16+i*20}">{name}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out))
