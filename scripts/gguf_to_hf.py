#!/usr/bin/env python3
"""Writes a HuggingFace folder from a GGUF model (the default: SmolLM2-135M Q4_1, dequantized), for
checking `pivot convert`, HF loading and --quantize-on-load by hand. Not part of `swift test`.

Two layouts, as transformers writes them:
  --format current  transformers 5.x: `rope_parameters`, `dtype`, chat_template.jinja, BF16 weights,
                    sharded safetensors with an index
  --format legacy   transformers 4.x: top-level `rope_theta`, `torch_dtype`, the chat template inside
                    tokenizer_config.json, F32 weights in one model.safetensors

transformers itself needs torch (not installable here), so the files are written with numpy and the
`safetensors` and `gguf` packages in transformers' format: Q/K rows un-permuted to the rotate-half
layout, the GGUF vocabulary and merges as tokenizer.json.

    pip install gguf safetensors numpy
    python3 scripts/gguf_to_hf.py OUT_DIR [--gguf FILE] [--format current|legacy]
"""
import argparse
import json
import os

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def unpermute(w, heads):
    """GGUF's pairwise-RoPE rows (2i+j) back to HF's halves (j·d/2 + i), per head."""
    rows, cols = w.shape
    d = rows // heads
    return w.reshape(heads, d // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def to_bf16(x):
    """float32 → bfloat16 bits (round to nearest even), as uint16 viewed by safetensors as BF16."""
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--gguf", default=os.path.join(here, "..", "..", "shared", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--format", choices=["current", "legacy"], default="current")
    a = p.parse_args()
    r = GGUFReader(a.gguf)
    arch = field(r, "general.architecture")
    assert arch == "llama", f"only llama GGUFs are supported here (got {arch})"
    heads, kv_heads = field(r, "llama.attention.head_count"), field(r, "llama.attention.head_count_kv")
    layers = field(r, "llama.block_count")
    tensors = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(x) for x in reversed(t.shape)] if len(t.shape) > 1 else [-1])
        tensors[t.name] = w
    out = {}

    def put(name, w):
        out[name] = to_bf16(w) if a.format == "current" and w.ndim == 2 else w.astype(np.float32)

    put("model.embed_tokens.weight", tensors["token_embd.weight"])
    put("model.norm.weight", tensors["output_norm.weight"])
    if "output.weight" in tensors:
        put("lm_head.weight", tensors["output.weight"])
    for i in range(layers):
        for g, h in NAMES.items():
            w = tensors[f"blk.{i}.{g}.weight"]
            if g == "attn_q":
                w = unpermute(w, heads)
            elif g == "attn_k":
                w = unpermute(w, kv_heads)
            put(f"model.layers.{i}.{h}.weight", w)
    os.makedirs(a.out, exist_ok=True)
    if a.format == "current":
        # safetensors.numpy has no bfloat16: store the uint16 bits, then patch the dtype in the header.
        names = sorted(out)
        shards = [names[: len(names) // 2], names[len(names) // 2:]]
        weight_map = {}
        for k, shard in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            path = os.path.join(a.out, fname)
            save_file({n: out[n] for n in shard}, path)
            patch_bf16(path)
            weight_map.update({n: fname for n in shard})
        json.dump({"metadata": {"total_size": sum(v.nbytes for v in out.values())}, "weight_map": weight_map},
                  open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
    else:
        save_file(out, os.path.join(a.out, "model.safetensors"))

    theta = float(field(r, "llama.rope.freq_base"))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": field(r, "llama.embedding_length"), "intermediate_size": field(r, "llama.feed_forward_length"),
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": field(r, "llama.rope.dimension_count"), "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": field(r, "llama.context_length"), "vocab_size": len(r.fields["tokenizer.ggml.tokens"].data),
        "tie_word_embeddings": "output.weight" not in tensors, "hidden_act": "silu", "attention_bias": False,
        "bos_token_id": field(r, "tokenizer.ggml.bos_token_id"), "eos_token_id": field(r, "tokenizer.ggml.eos_token_id"),
    }
    if a.format == "current":
        config.update({"rope_parameters": {"rope_theta": theta, "rope_type": "default"}, "dtype": "bfloat16",
                       "transformers_version": "5.0.0"})
    else:
        config.update({"rope_theta": theta, "rope_scaling": None, "torch_dtype": "float32", "transformers_version": "4.46.0"})
    json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=2)

    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3]
    pre = field(r, "tokenizer.ggml.pre")
    assert pre == "smollm", f"pre-tokenizer {pre} is not written by this script"
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": merges if a.format == "legacy" else [m.split(" ", 1) for m in merges]},
    }
    json.dump(tokenizer, open(os.path.join(a.out, "tokenizer.json"), "w"), ensure_ascii=False)
    bos, eos = tokens[field(r, "tokenizer.ggml.bos_token_id")], tokens[field(r, "tokenizer.ggml.eos_token_id")]
    tok_config = {"bos_token": bos, "eos_token": eos, "unk_token": tokens[0], "add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token")),
                  "model_max_length": config["max_position_embeddings"], "tokenizer_class": "GPT2Tokenizer"}
    template = field(r, "tokenizer.chat_template")
    if a.format == "current":
        open(os.path.join(a.out, "chat_template.jinja"), "w").write(template)
    else:
        tok_config["chat_template"] = template
    json.dump(tok_config, open(os.path.join(a.out, "tokenizer_config.json"), "w"), indent=2)
    json.dump({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]},
              open(os.path.join(a.out, "generation_config.json"), "w"), indent=2)
    print(f"{a.out}: {a.format} HF folder, {len(out)} tensors")


def patch_bf16(path):
    """Marks the uint16 entries of a safetensors file as BF16 (their bits already are), rewriting the header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    for k, v in header.items():
        if k != "__metadata__" and v["dtype"] == "U16":
            v["dtype"] = "BF16"
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)


if __name__ == "__main__":
    main()
