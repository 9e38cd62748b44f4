#!/usr/bin/env python3
"""Bits per weight of a GGUF file's block projections (blk.N.*.weight matrices, their sparse-outlier
tensors counted) and of all its tensor data, for the weight-method tables. Reads the header itself, so
Pivot's extension types (ids 1020-1042) count too.   usage: gguf_bits.py FILE  ->  "proj_bpw data_bpw"
"""
import struct
import sys

# ggml type id -> (weights per block, bytes per block); Pivot's group-wise types last.
SIZES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210)}
for bits, plane in ((2, 8), (3, 12), (4, 16)):
    for index, group in enumerate((32, 64, 128)):
        SIZES[1000 + 10 * bits + index] = (group, 4 + group // 32 * plane)


def read_tensors(path):
    with open(path, "rb") as f:
        data = f.read(64 << 20)
    pos = 4 + 4
    n_tensors, n_kv = struct.unpack_from("<QQ", data, pos)
    pos += 16

    def string(p):
        (n,) = struct.unpack_from("<Q", data, p)
        return data[p + 8:p + 8 + n].decode(), p + 8 + n

    scalar = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip_value(p, t):
        if t in scalar:
            return p + scalar[t]
        if t == 8:
            return string(p)[1]
        item, count = struct.unpack_from("<IQ", data, p)
        p += 12
        for _ in range(count):
            p = skip_value(p, item)
        return p

    for _ in range(n_kv):
        _, pos = string(pos)
        (t,) = struct.unpack_from("<I", data, pos)
        pos = skip_value(pos + 4, t)
    tensors = []
    for _ in range(n_tensors):
        name, pos = string(pos)
        (dims,) = struct.unpack_from("<I", data, pos)
        shape = struct.unpack_from("<%dQ" % dims, data, pos + 4)
        pos += 4 + 8 * dims
        ggml_type, _ = struct.unpack_from("<IQ", data, pos)
        pos += 12
        count = 1
        for d in shape:
            count *= d
        block, size = SIZES[ggml_type]
        tensors.append((name, len(shape), count, count // block * size))
    return tensors


tensors = read_tensors(sys.argv[1])
outlier = (".outlier_index", ".outlier_value")
proj = [t for t in tensors if t[0].startswith("blk.") and t[0].endswith(".weight") and t[1] == 2]
proj_bytes = sum(t[3] for t in proj) + sum(t[3] for t in tensors if t[0].endswith(outlier))
weights = sum(t[2] for t in tensors if not t[0].endswith(outlier))
print("%.4f %.4f" % (proj_bytes * 8 / sum(t[2] for t in proj), sum(t[3] for t in tensors) * 8 / weights))
