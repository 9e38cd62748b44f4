#!/usr/bin/env python3
"""Interoperability checks for GGUF files Pivot writes, with the `gguf` package (PyPI) as the
independent reader. Not part of `swift test`; needs `pip install gguf numpy`.

  same A.gguf B.gguf
      Tensor by tensor: same names, types, shapes and bytes (e.g. Pivot's Q4_K_M against
      llama-quantize's from the same input). Prints a table of types and the differing tensors.

  dequant QUANTIZED.gguf PIVOT_F32.gguf
      Dequantizes every tensor of QUANTIZED.gguf with gguf-py and compares it to the values Pivot's
      own dequantizer wrote into PIVOT_F32.gguf (`pivot quantize -m QUANTIZED.gguf --type F32 -o ...`).
      Exact equality is expected (both compute d·q − m in float); prints the largest difference.

Exit status 1 when anything differs.
"""
import sys
from collections import Counter

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def tensors(path):
    return {t.name: t for t in GGUFReader(path).tensors}


def same(a_path, b_path):
    a, b = tensors(a_path), tensors(b_path)
    if set(a) != set(b):
        print(f"tensor names differ: only in A {sorted(set(a) - set(b))[:5]}, only in B {sorted(set(b) - set(a))[:5]}")
        return 1
    types, differing = Counter(), []
    for name in sorted(a):
        ta, tb = a[name], b[name]
        types[ta.tensor_type.name] += 1
        if ta.tensor_type != tb.tensor_type or list(ta.shape) != list(tb.shape):
            differing.append(f"{name}: {ta.tensor_type.name}{list(ta.shape)} vs {tb.tensor_type.name}{list(tb.shape)}")
        elif not np.array_equal(np.asarray(ta.data).view(np.uint8), np.asarray(tb.data).view(np.uint8)):
            diff = np.count_nonzero(np.asarray(ta.data).view(np.uint8) != np.asarray(tb.data).view(np.uint8))
            differing.append(f"{name} ({ta.tensor_type.name}): {diff} of {ta.n_bytes} bytes differ")
    print(", ".join(f"{n} × {t}" for t, n in sorted(types.items())))
    print(f"{len(a) - len(differing)}/{len(a)} tensors byte-identical")
    for line in differing[:20]:
        print("  " + line)
    return 1 if differing else 0


def dequant(quantized_path, f32_path):
    q, f = tensors(quantized_path), tensors(f32_path)
    worst, worst_name, bad = 0.0, "", 0
    for name, t in sorted(q.items()):
        ours = np.asarray(f[name].data, dtype=np.float32).reshape(-1)
        theirs = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        if ours.shape != theirs.shape:
            print(f"{name}: {ours.shape} vs {theirs.shape}")
            bad += 1
            continue
        d = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
        if d > worst:
            worst, worst_name = d, name
        if d != 0:
            bad += 1
    types = Counter(t.tensor_type.name for t in q.values())
    print(", ".join(f"{n} × {t}" for t, n in sorted(types.items())))
    print(f"{len(q) - bad}/{len(q)} tensors dequantize identically; largest difference {worst:g}" + (f" ({worst_name})" if worst_name else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("same", "dequant"):
        print(__doc__)
        sys.exit(2)
    sys.exit((same if sys.argv[1] == "same" else dequant)(sys.argv[2], sys.argv[3]))
