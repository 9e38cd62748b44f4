#!/usr/bin/env python3
"""Writes Tests/PivotKernelsTests/Fixtures/ggml-dequantize.json: random blocks of every block format,
with sane f16 scales, and the floats the `gguf` package (llama.cpp's Python reader) dequantizes them
to, and rows of floats with the bytes the package's ports of ggml's reference quantizers give. The Swift
dequantizers and block-32 quantizers must reproduce them. `pip install gguf numpy`, then run it."""
import json, os
import numpy as np
from gguf import GGMLQuantizationType as T, quants

HALF_OFFSETS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
                "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
SIZES = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
         "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}

rng = np.random.default_rng(2026)
out = {}
for name, (elements, size) in SIZES.items():
    blocks = 3
    raw = rng.integers(0, 256, size=blocks * size, dtype=np.uint8)
    for b in range(blocks):
        for i, off in enumerate(HALF_OFFSETS[name]):
            value = rng.uniform(0.001, 0.05) if i == 0 else (rng.uniform(-0.3, 0.1) if name in ("Q4_1", "Q5_1") else rng.uniform(0.001, 0.02))
            raw[b * size + off: b * size + off + 2] = np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)
    values = quants.dequantize(raw.reshape(1, -1), getattr(T, name)).reshape(-1).astype(np.float32)
    assert values.size == blocks * elements
    out[name] = {"bytes": raw.tobytes().hex(), "values": [float(v) for v in values]}
# Quantization: random rows (with exact zeros, ties and outliers) quantized by the package's ggml reference port.
floats = rng.normal(size=(4, 256)).astype(np.float32)
floats[0, :32] = 0
floats[1, 5] = 40.0
floats[2] = np.round(floats[2] * 4) / 4
floats[3, :64] = np.linspace(-1, 1, 64, dtype=np.float32)
for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
    q = quants.quantize(floats, getattr(T, name))
    out["quantize " + name] = {"bytes": q.tobytes().hex(), "values": [float(v) for v in floats.reshape(-1)]}
path = os.path.join(os.path.dirname(__file__), "..", "Tests", "PivotKernelsTests", "Fixtures", "ggml-dequantize.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", path, os.path.getsize(path), "bytes")
