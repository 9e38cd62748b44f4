#!/usr/bin/env python3
"""Writes a deeper copy of a GGUF model: its blocks repeated `k` times (blk.i of copy r becomes
blk.(i + r·n)), everything else unchanged. The result is a model too large for the CPU's caches,
for measuring decode against the DRAM roofline (its outputs are meaningless; only bytes matter).

    pip install gguf numpy
    scripts/deepen_gguf.py IN.gguf OUT.gguf K
"""
import re
import sys

import gguf


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    source, target, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    blocks_key = f"{arch}.block_count"
    blocks = reader.fields[blocks_key].contents()
    writer = gguf.GGUFWriter(target, arch)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = blocks * k if field.name == blocks_key else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    block = re.compile(r"^blk\.(\d+)\.(.*)$")
    plan = []
    for tensor in reader.tensors:
        match = block.match(tensor.name)
        copies = [f"blk.{int(match.group(1)) + r * blocks}.{match.group(2)}" for r in range(k)] if match else [tensor.name]
        plan += [(name, tensor) for name in copies]
    plan.sort(key=lambda item: (0, int(block.match(item[0]).group(1))) if block.match(item[0]) else (-1, 0))
    for name, tensor in plan:
        writer.add_tensor_info(name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, tensor in plan:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    print(f"{target}: {blocks * k} blocks from {blocks}")


if __name__ == "__main__":
    main()
