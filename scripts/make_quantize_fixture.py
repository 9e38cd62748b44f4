#!/usr/bin/env python3
"""Writes Tests/PivotTests/Fixtures/llama-quantize.json: FNV-1a 64 hashes of the bytes
llama-quantize produces for a few tensors of the default model, with and without an importance
matrix, so `swift test` checks Pivot's quantizers byte for byte without llama.cpp at hand.

  python3 scripts/make_quantize_fixture.py /path/to/llama-quantize [MODEL.gguf]

The importance matrix is synthetic (a fixed function of the column), written in llama-imatrix's
GGUF form; `--pure` keeps every projection at the requested type, so 1536-wide ffn_down tensors
exercise the K-quants and 576-wide attn_q tensors the block-32 types.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader, GGUFWriter

MODEL_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "PivotTests", "Fixtures", "llama-quantize.json")
TENSORS = {"blk.0.ffn_down.weight": ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"],
           "blk.0.attn_q.weight": ["Q4_0", "Q5_0", "Q5_1", "Q8_0"]}
# Q4_1 is left out: the model is stored as Q4_1, and llama-quantize copies a tensor already in the target type.


def importance(columns):
    """The synthetic per-column importance (Swift's test computes the same)."""
    c = np.arange(columns, dtype=np.int64)
    return (0.25 + ((c * 7919) % 97).astype(np.float32) / 24.0).astype(np.float32)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data.tobytes():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def write_imatrix(path, model):
    w = GGUFWriter(path, arch="")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["synthetic"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 512)
    for t in GGUFReader(model).tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2 and not t.name.endswith("norm.weight"):
            columns = int(t.shape[0])  # ggml ne0
            w.add_tensor(t.name + ".in_sum2", importance(columns).reshape(1, columns))
            w.add_tensor(t.name + ".counts", np.ones((1, 1), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    quantize = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else MODEL_DEFAULT
    fixture = {"model": os.path.basename(model), "importance": "0.25 + ((c * 7919) % 97) / 24", "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        imatrix = os.path.join(tmp, "imatrix.gguf")
        write_imatrix(imatrix, model)
        for name, types in TENSORS.items():
            for qtype in types:
                for weighted in (False, True):
                    out = os.path.join(tmp, "out.gguf")
                    args = [quantize, "--allow-requantize", "--pure"] + (["--imatrix", imatrix] if weighted else [])
                    ftype = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}.get(qtype, qtype)
                    subprocess.run(args + [model, out, ftype], check=True, capture_output=True)
                    t = next(t for t in GGUFReader(out).tensors if t.name == name)
                    assert t.tensor_type.name == qtype, (name, qtype, t.tensor_type.name)
                    fixture["cases"].append({"tensor": name, "type": qtype, "importance": weighted,
                                             "bytes": int(t.n_bytes), "fnv1a64": fnv1a64(np.asarray(t.data))})
                    print(name, qtype, "imatrix" if weighted else "plain", fixture["cases"][-1]["fnv1a64"])
    with open(OUT, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
