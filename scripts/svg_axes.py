"""Shared by the SVG plot scripts (awq_plot.py, prune_plot.py): the gridlines and labels of a log-scale y axis."""
import math


def log_y_grid(y0, y1, py, left, right):
    """SVG elements for 1-2-5 gridlines between log10 bounds y0..y1; `py` maps a value to its y pixel."""
    out = []
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if y0 <= math.log10(v) <= y1:
                out.append(f'<line x1="{left}" x2="{right}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#ddd"/>')
                out.append(f'<text x="{left-6}" y="{py(v)+4:.1f}" text-anchor="end">{v:g}</text>')
    return out
