#!/usr/bin/env python3
"""Reference loss and gradients of a Llama-family GGUF model, in GGUF tensor layout, with PyTorch.

  python3 scripts/torch_gradients.py --model MODEL.gguf --tokens TOKENS.json --out DIR [--double]

The model's weights are the GGUF tensors dequantized by gguf-py (`pip install gguf numpy`), kept in
GGUF layout: a matrix with GGUF shape [ne0, ne1] is the numpy array (ne1, ne0), i.e. [out][in],
and y = x @ W^T. Q/K rows stay as llama.cpp's converter permuted them, so RoPE here is the pairwise
("normal", non-NeoX) form: pairs (2i, 2i+1) of each head rotate by pos * theta^(-2i/d).

TOKENS.json: a JSON list of equal-length lists of token ids. Loss: mean next-token cross-entropy
(natural log) over every position except each sequence's last, averaged over all B*(T-1) rows.

Writes to DIR:
  loss.json          {"loss": float, "rows": int}
  <tensor name>.f32  raw little-endian float32 gradient of every parameter, same element order as
                     the GGUF tensor (row-major [ne1][ne0]; a 1-D norm weight is just [ne0]).
                     With --double the computation is float64 and the gradient is rounded to
                     float32 on writing (add --f64-files to also write <name>.f64 unrounded).
  index.json         {"model", "tokens", "dtype", "loss", "rows", "tensors": [{"name", "shape"
                     (numpy order [ne1, ne0]), "gguf_shape" ([ne0, ne1]), "type" (stored GGUF
                     type), "file"}]}
Not part of `swift test`.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def load(path, dtype):
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"{path}: architecture {arch}, this script covers llama")
    cfg = dict(
        layers=int(field(r, f"{arch}.block_count")),
        hidden=int(field(r, f"{arch}.embedding_length")),
        ffn=int(field(r, f"{arch}.feed_forward_length")),
        heads=int(field(r, f"{arch}.attention.head_count")),
        kv_heads=int(field(r, f"{arch}.attention.head_count_kv")),
        eps=float(field(r, f"{arch}.attention.layer_norm_rms_epsilon")),
        theta=float(field(r, f"{arch}.rope.freq_base", 10000.0)),
    )
    cfg["head_dim"] = cfg["hidden"] // cfg["heads"]
    if field(r, f"{arch}.rope.scaling.type") not in (None, "none"):
        raise SystemExit("RoPE scaling is not implemented here")
    params, meta = {}, {}
    for t in r.tensors:
        gguf_shape = [int(n) for n in t.shape]
        np_shape = tuple(reversed(gguf_shape))
        a = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(np_shape)
        params[t.name] = torch.tensor(a, dtype=dtype, requires_grad=True)
        meta[t.name] = dict(shape=list(np_shape), gguf_shape=gguf_shape, type=t.tensor_type.name)
    return cfg, params, meta


def rms_norm(x, g, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def rope_pairwise(x, cos, sin):
    # x [B, heads, T, d]; cos/sin [T, d/2]; pairs (2i, 2i+1).
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).flatten(-2)


def forward_loss(cfg, p, tokens):
    B, T = tokens.shape
    H, nh, nkv, d = cfg["hidden"], cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    dtype = p["token_embd.weight"].dtype
    # Angles in float64, then rounded to the compute type.
    inv = cfg["theta"] ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = torch.tensor(np.cos(ang), dtype=dtype), torch.tensor(np.sin(ang), dtype=dtype)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    group = nh // nkv

    x = p["token_embd.weight"][tokens]                                   # [B, T, H]
    for l in range(cfg["layers"]):
        w = lambda n: p[f"blk.{l}.{n}.weight"]
        h = rms_norm(x, w("attn_norm"), cfg["eps"])
        q = (h @ w("attn_q").T).view(B, T, nh, d).transpose(1, 2)       # [B, nh, T, d]
        k = (h @ w("attn_k").T).view(B, T, nkv, d).transpose(1, 2)
        v = (h @ w("attn_v").T).view(B, T, nkv, d).transpose(1, 2)
        q, k = rope_pairwise(q, cos, sin), rope_pairwise(k, cos, sin)
        k = k.repeat_interleave(group, dim=1)                            # head hq uses kv hq // group
        v = v.repeat_interleave(group, dim=1)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        s = s.masked_fill(~causal, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v                                 # [B, nh, T, d]
        x = x + a.transpose(1, 2).reshape(B, T, H) @ w("attn_output").T
        h = rms_norm(x, w("ffn_norm"), cfg["eps"])
        x = x + (F.silu(h @ w("ffn_gate").T) * (h @ w("ffn_up").T)) @ w("ffn_down").T
    x = rms_norm(x, p["output_norm.weight"], cfg["eps"])
    head = p["output.weight"] if "output.weight" in p else p["token_embd.weight"]
    logits = x[:, :-1] @ head.T                                          # last position is not scored
    targets = tokens[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="mean")
    return loss, targets.numel()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--double", action="store_true", help="compute in float64")
    ap.add_argument("--f64-files", action="store_true", help="with --double, also write <name>.f64")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.float64 if args.double else torch.float32

    with open(args.tokens) as f:
        seqs = json.load(f)
    if not seqs or len({len(s) for s in seqs}) != 1 or len(seqs[0]) < 2:
        raise SystemExit("tokens: need a non-empty list of equal-length lists (length >= 2)")
    tokens = torch.tensor(seqs, dtype=torch.long)

    t0 = time.time()
    cfg, params, meta = load(args.model, dtype)
    vocab = params["token_embd.weight"].shape[0]
    if int(tokens.max()) >= vocab or int(tokens.min()) < 0:
        raise SystemExit(f"tokens: ids must be in 0..<{vocab}")
    t1 = time.time()
    loss, rows = forward_loss(cfg, params, tokens)
    loss.backward()
    t2 = time.time()

    os.makedirs(args.out, exist_ok=True)
    entries = []
    for name, t in params.items():
        g = t.grad if t.grad is not None else torch.zeros_like(t)
        g = g.detach().contiguous()
        assert list(g.shape) == meta[name]["shape"]
        g.to(torch.float32).numpy().astype("<f4").tofile(os.path.join(args.out, name + ".f32"))
        if args.double and args.f64_files:
            g.numpy().astype("<f8").tofile(os.path.join(args.out, name + ".f64"))
        entries.append(dict(name=name, **meta[name], file=name + ".f32"))
    result = {"loss": float(loss.item()), "rows": int(rows)}
    with open(os.path.join(args.out, "loss.json"), "w") as f:
        json.dump(result, f)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(dict(model=os.path.abspath(args.model), tokens=os.path.abspath(args.tokens),
                       batch=list(tokens.shape), dtype=str(dtype).replace("torch.", ""),
                       config=cfg, **result, tensors=entries), f, indent=1)
    print(f"loss {result['loss']:.6f} over {rows} rows (ppl {math.exp(result['loss']):.3f}); "
          f"{str(dtype).replace('torch.', '')}; load {t1 - t0:.1f}s, forward+backward {t2 - t1:.1f}s; "
          f"{len(entries)} gradients in {args.out}")


if __name__ == "__main__":
    main()
