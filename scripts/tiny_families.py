#!/usr/bin/env python3
"""Writes tiny random-weight HuggingFace checkpoints of each model family and transformers' logits on
them: the independent reference Pivot's families are checked against (Tests/PivotTests/Model/
FamilyTests.swift reads the committed fixtures; scripts/families_table.sh adds llama.cpp).

Each family is built from its transformers config class with a fixed seed, its weights redrawn so
that logits spread (norm weights and biases random too, so a wrong norm or a dropped bias shows), and
rounded to BF16 so the saved checkpoint is exactly the model the reference ran. The reference runs in
float64. The tokenizer is byte-level BPE over the 256 bytes plus four special tokens (<|endoftext|> is 256), no merges.

    pip install --user torch==2.13.0+cpu transformers safetensors
    python3 scripts/tiny_families.py [OUT_DIR] [--family NAME ...]

OUT_DIR defaults to Tests/PivotTests/Fixtures/families. Each family gets OUT_DIR/NAME/ (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, reference.json: the token ids and float32
logits of every position, base64, little-endian, rows of vocab_size).
"""
import argparse
import base64
import json
import os

import numpy as np
import torch
import transformers as tf

VOCAB = 260
# Phi-3's tokens too: llama.cpp looks them up by text in any model named phi3.
SPECIALS = ["<|endoftext|>", "<unk>", "<s>", "</s>"]
TEXT = "Tiny models of every family: norms, rotary, windows 012"
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
             bos_token_id=256, eos_token_id=256)


def families():
    """name → (config class, model class, config kwargs)."""
    s = SMALL
    return {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(s)),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, dict(s)),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, dict(s, head_dim=16)),
        "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM, dict(s, pad_token_id=0)),
        "phi3-partial": (tf.Phi3Config, tf.Phi3ForCausalLM,
                         dict(s, pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75})),
        # Phi-3.5/Phi-4-mini style: LongRoPE (short factors up to the original 512 positions, an attention factor
        # from 2048 / 512) over a partial rotary share. llama.cpp takes the long factors past its context of at
        # least 256 per sequence, so the original context stays above that.
        "phi3-longrope": (tf.Phi3Config, tf.Phi3ForCausalLM,
                          dict(s, pad_token_id=0, original_max_position_embeddings=512, max_position_embeddings=2048,
                               rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                                                "original_max_position_embeddings": 512,
                                                "short_factor": [1.0, 1.1, 1.3, 1.7, 2.2, 3.0],
                                                "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]})),
        "olmo2": (tf.Olmo2Config, tf.Olmo2ForCausalLM, dict(s, pad_token_id=0)),
        "stablelm": (tf.StableLmConfig, tf.StableLmForCausalLM, dict(s, use_qkv_bias=True, layer_norm_eps=1e-5)),
        # StableLM 2 12B: per-head Q/K LayerNorms and a parallel residual.
        "stablelm-qk": (tf.StableLmConfig, tf.StableLmForCausalLM,
                        dict(s, use_qkv_bias=False, qk_layernorm=True, use_parallel_residual=True, layer_norm_eps=1e-5)),
        "gpt-neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM,
                     dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                          max_position_embeddings=256, tie_word_embeddings=False, hidden_act="gelu",
                          use_parallel_residual=True, attention_bias=True, bos_token_id=256, eos_token_id=256)),
        "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
                   dict(s, head_dim=16, num_hidden_layers=2, tie_word_embeddings=True, sliding_window=6, query_pre_attn_scalar=16,
                        layer_types=["sliding_attention", "full_attention"], pad_token_id=0)),
        # A query_pre_attn_scalar apart from head_dim: transformers only (llama.cpp infers the scale from the size).
        "gemma3-scaled": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
                          dict(s, head_dim=16, num_hidden_layers=2, tie_word_embeddings=True, sliding_window=6, query_pre_attn_scalar=24,
                               layer_types=["sliding_attention", "full_attention"], pad_token_id=0)),
        "falcon": (tf.FalconConfig, tf.FalconForCausalLM,
                   dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256,
                        tie_word_embeddings=False, multi_query=True, parallel_attn=True, new_decoder_architecture=False, bias=False,
                        alibi=False, bos_token_id=256, eos_token_id=256)),
        "falcon-mha": (tf.FalconConfig, tf.FalconForCausalLM,
                       dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256,
                            tie_word_embeddings=True, multi_query=False, parallel_attn=True, new_decoder_architecture=False, bias=False,
                            alibi=False, bos_token_id=256, eos_token_id=256)),
        # Falcon2-11B's layout: grouped key/value heads, one norm per block.
        "falcon2": (tf.FalconConfig, tf.FalconForCausalLM,
                    dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False, new_decoder_architecture=True,
                         num_ln_in_parallel_attn=1, parallel_attn=True, bias=False, alibi=False, bos_token_id=256, eos_token_id=256)),
        # Falcon-40B/180B's layout: grouped key/value heads, a norm each for attention and the MLP.
        "falcon-40b": (tf.FalconConfig, tf.FalconForCausalLM,
                       dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                            max_position_embeddings=256, tie_word_embeddings=False, new_decoder_architecture=True,
                            num_ln_in_parallel_attn=2, parallel_attn=True, bias=False, alibi=False, bos_token_id=256, eos_token_id=256)),
        "mixtral": (tf.MixtralConfig, tf.MixtralForCausalLM, dict(s, num_local_experts=4, num_experts_per_tok=2, intermediate_size=64)),
        "qwen2-moe": (tf.Qwen2MoeConfig, tf.Qwen2MoeForCausalLM,
                      dict(s, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=96)),
        # Renormalized top-k and a dense layer: transformers only (llama.cpp's qwen2moe has neither).
        "qwen2-moe-dense": (tf.Qwen2MoeConfig, tf.Qwen2MoeForCausalLM,
                            dict(s, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=96,
                                 norm_topk_prob=True, mlp_only_layers=[1])),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM,
                   dict(s, head_dim=16, num_hidden_layers=2, tie_word_embeddings=True, sliding_window=6, query_pre_attn_scalar=16,
                        attn_logit_softcapping=5.0, final_logit_softcapping=8.0,
                        layer_types=["sliding_attention", "full_attention"], pad_token_id=0)),
        # A state-space model: selective scan and a recurrent state instead of attention and a KV cache.
        "mamba": (tf.MambaConfig, tf.MambaForCausalLM,
                  dict(vocab_size=VOCAB, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, conv_kernel=4,
                       tie_word_embeddings=True, bos_token_id=256, eos_token_id=256, pad_token_id=256)),
        # An untied head, a shorter convolution, an explicit Δ rank and a smaller state.
        "mamba-untied": (tf.MambaConfig, tf.MambaForCausalLM,
                         dict(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=3, expand=2, conv_kernel=3,
                              time_step_rank=8, tie_word_embeddings=False, bos_token_id=256, eos_token_id=256, pad_token_id=256)),
        # Biases on in_proj/out_proj: transformers only (llama.cpp's mamba loads no such tensors).
        "mamba-bias": (tf.MambaConfig, tf.MambaForCausalLM,
                       dict(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, use_bias=True,
                            tie_word_embeddings=True, bos_token_id=256, eos_token_id=256, pad_token_id=256)),
        # Mamba-2: heads with one A and Δ each, B and C in groups, a gated group RMSNorm before out_proj.
        # Its vocabulary padded to a multiple of 16 beyond the tokenizer's 260, as Mamba-2 checkpoints are.
        "mamba2": (tf.Mamba2Config, tf.Mamba2ForCausalLM,
                   dict(vocab_size=272, hidden_size=64, num_heads=8, head_dim=16, n_groups=2, state_size=16, expand=2,
                        num_hidden_layers=2, conv_kernel=4, chunk_size=16, tie_word_embeddings=False, bos_token_id=256,
                        eos_token_id=256, pad_token_id=256)),
    }


# Configs saved without `layer_types` (Gemma 2 alternates from layer 0; Gemma 3 counts its pattern).
HUB_STYLE = {"gemma2": {}, "gemma3": {"sliding_window_pattern": 2}}


def bytes_to_unicode():
    """GPT-2's map of bytes to printable characters (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer(out):
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 256 + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(SPECIALS)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": []},
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "<|endoftext|>", "add_bos_token": False,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f)


def randomize(model, seed):
    """Weights that make logits spread: N(0, 1/fan_in) matrices, N(0,1) embeddings, norm weights
    near 1 (Gemma stores w for 1+w: near 0), biases N(0, 0.1²), then rounded to BF16."""
    g = torch.Generator().manual_seed(seed)
    gemma = "gemma" in type(model).__name__.lower()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                # Gemma multiplies embeddings by √hidden, and a tied head reads the table as weights: drawn 1/√hidden.
                small = gemma or model.config.tie_word_embeddings
                std = (p.shape[-1] ** -0.5 if small else 1.0) if ("embed" in name or "word_embeddings" in name) else p.shape[-1] ** -0.5
                if name.endswith("A_log"):
                    std = 0.5  # A = −exp(A_log) spread around −1: states that decay at different rates
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1)
            else:
                base = 0.0 if gemma else 1.0
                p.copy_(base + torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1)
            p.copy_(p.to(torch.bfloat16).to(p.dtype))


def build(name, out_root):
    config_class, model_class, kwargs = families()[name]
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    config = config_class(**kwargs)
    torch.manual_seed(0)
    model = model_class(config).to(torch.float64).eval()
    if hasattr(model, "set_experts_implementation") and getattr(config, "_experts_implementation", None) is not None:
        model.set_experts_implementation("eager")  # grouped_mm has no float64 kernel
    randomize(model, seed=sum(map(ord, name)))
    alphabet = bytes_to_unicode()
    ids = list(TEXT.encode("utf-8"))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float32).numpy()
    greedy = [int(i) for i in logits.argmax(axis=-1)]
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    write_tokenizer(out)
    assert logits.shape == (len(ids), config.vocab_size)
    reference = {"family": name, "transformers": tf.__version__, "torch": torch.__version__, "text": TEXT,
                 "tokens": ids, "vocab_size": config.vocab_size, "greedy": greedy,
                 "logits_f32_base64": base64.b64encode(np.ascontiguousarray(logits, dtype="<f4").tobytes()).decode()}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f)
    if name in HUB_STYLE:
        # As checkpoints written before transformers 4.53 say it: no layer_types, a pattern instead.
        path = os.path.join(out, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg.pop("layer_types", None)
        cfg.update(HUB_STYLE[name])
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name:14s} {config.model_type:12s} {sum(p.numel() for p in model.parameters()):8d} params  {size / 1024:6.0f} KiB  "
          f"logit std {logits.std():.2f}  -> {out}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default=os.path.join(here, "..", "Tests", "PivotTests", "Fixtures", "families"))
    p.add_argument("--family", action="append", choices=sorted(families()))
    a = p.parse_args()
    for name in a.family or families():
        build(name, a.out)


if __name__ == "__main__":
    main()
