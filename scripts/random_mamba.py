#!/usr/bin/env python3
"""Writes a random-weight Mamba with Mamba-130m's body (hidden 768, 24 layers, state 16, expand 2,
Δ rank 48), or with --mamba2 Mamba2-130m's (24 heads of 64, state 128, one group), and the 260-token
byte-level tokenizer of scripts/tiny_families.py, for speed and
agreement figures at a realistic size (BENCHMARKS.md "Mamba"). No full Mamba checkpoint is reachable
here; with Mamba-130m's 50k vocabulary its tied head would add 38.6 M parameters this one lacks.
Weights are transformers' own initialization (seed 0), saved in F32.

    python3 scripts/random_mamba.py OUT_DIR [--mamba2]
"""
import os
import sys

import torch
import transformers as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_families import VOCAB, write_tokenizer  # noqa: E402


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = args[0] if args else "mamba-130m-body"
    if "--mamba2" in sys.argv:
        config = tf.Mamba2Config(vocab_size=VOCAB, hidden_size=768, num_heads=24, head_dim=64, n_groups=1, state_size=128,
                                 num_hidden_layers=24, expand=2, conv_kernel=4, tie_word_embeddings=True,
                                 bos_token_id=256, eos_token_id=256, pad_token_id=256)
        model_class = tf.Mamba2ForCausalLM
    else:
        config = tf.MambaConfig(vocab_size=VOCAB, hidden_size=768, state_size=16, num_hidden_layers=24, expand=2, conv_kernel=4,
                                tie_word_embeddings=True, bos_token_id=256, eos_token_id=256, pad_token_id=256)
        model_class = tf.MambaForCausalLM
    torch.manual_seed(0)
    model = model_class(config).eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer(out)
    print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
