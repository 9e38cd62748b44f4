#!/usr/bin/env python3
"""Speed reference for one training step of the default model in float with PyTorch + transformers.

  python3 scripts/torch_train_speed.py [--model MODEL.gguf] [--threads 2,1] [--attn sdpa,eager]
                                       [--batch 4] [--seq 512] [--warmup 2] [--steps 5]
                                       [--lock /tmp/pivot-build.lock] [--json OUT.json]

LlamaForCausalLM built from the GGUF's llama.* metadata (SmolLM2-135M: hidden 576, ffn 1536,
30 layers, 9/3 heads, vocab 49152, tied embeddings, rope theta, rms eps, 8192 positions), float32,
random weights (speed does not depend on the values), batch × seq random token ids, labels = inputs.
A step is forward + loss + backward + torch.optim.AdamW(lr=1e-4).step() + zero_grad; the
--no-optimizer rows stop after backward (+ zero_grad). Warm-up steps are not timed; the median of
the timed steps is reported with tokens/s = batch*seq / seconds, peak RSS (getrusage maxrss of the
process that ran only that row) and achieved GFLOP/s against 6 × params × tokens (the usual
estimate: it leaves out attention's T² work and the optimizer).

Every row runs in its own process, started as `flock LOCK python3 this --one ...`, so timings never
overlap a build holding LOCK and peak RSS is per row. Also prints torch.mm [2048×576]·[576×1536]
float32 GFLOP/s as a GEMM reference (and the same shape as F.linear, x·Wᵀ, the layout training uses).
Not part of `swift test`.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_MODEL = "/work/shared/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def model_config(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    g = lambda k, d=None: r.fields[f"{arch}.{k}"].contents() if f"{arch}.{k}" in r.fields else d
    names = {t.name for t in r.tensors}
    vocab = g("vocab_size") or len(r.fields["tokenizer.ggml.tokens"].contents())
    return dict(vocab_size=int(vocab), hidden_size=int(g("embedding_length")),
                intermediate_size=int(g("feed_forward_length")), num_hidden_layers=int(g("block_count")),
                num_attention_heads=int(g("attention.head_count")),
                num_key_value_heads=int(g("attention.head_count_kv")),
                rms_norm_eps=float(g("attention.layer_norm_rms_epsilon")),
                rope_theta=float(g("rope.freq_base", 10000.0)),
                max_position_embeddings=int(g("context_length", 8192)),
                tie_word_embeddings="output.weight" not in names)


def one_row(a):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    a.threads = int(a.threads)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = json.loads(a.config)
    theta = c.pop("rope_theta")
    cfg = LlamaConfig(**c, rope_parameters={"rope_type": "default", "rope_theta": theta}, hidden_act="silu",
                      attention_bias=False, mlp_bias=False, use_cache=False)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation=a.attn, dtype=torch.float32)
    assert model.config._attn_implementation == a.attn
    assert model.lm_head.weight is model.model.embed_tokens.weight or not cfg.tie_word_embeddings
    model.train()
    params = sum(p.numel() for p in model.parameters())   # tied embedding counted once
    opt = None if a.no_optimizer else torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq))
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
        t = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(t)
    sec = statistics.median(times)
    tokens = a.batch * a.seq
    flop = 6 * params * tokens
    print(json.dumps(dict(attn=a.attn, threads=a.threads, optimizer=opt is not None, params=params,
                          tokens=tokens, times=times, seconds=sec, tokens_per_s=tokens / sec,
                          flop=flop, gflops=flop / sec / 1e9, loss=float(loss.item()),
                          peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


def one_gemm(a):
    import torch
    import torch.nn.functional as F
    a.threads = int(a.threads)
    torch.set_num_threads(a.threads)
    M, K, N = 2048, 576, 1536
    x, w, wt = torch.randn(M, K), torch.randn(K, N), torch.randn(N, K)
    out = {}
    for name, fn in (("mm", lambda: torch.mm(x, w)), ("linear", lambda: F.linear(x, wt))):
        for _ in range(5):
            fn()
        ts = []
        for _ in range(30):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        s = statistics.median(ts)
        out[name] = dict(seconds=s, gflops=2 * M * K * N / s / 1e9)
    print(json.dumps(dict(threads=a.threads, **out)))


def run_child(args, extra):
    cmd = ["flock", args.lock, sys.executable, os.path.abspath(__file__)] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--attn", default="sdpa,eager")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-optimizer-rows", default="sdpa",
                    help="attention implementations that also get a --no-optimizer row ('' for none)")
    ap.add_argument("--lock", default="/tmp/pivot-build.lock")
    ap.add_argument("--json", help="also write all rows here")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gemm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-optimizer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return one_row(a) if not a.gemm else None
    if a.gemm:
        return one_gemm(a)

    config = model_config(a.model)
    print(f"# {os.path.basename(a.model)} as LlamaForCausalLM float32: {json.dumps(config)}")
    import torch, transformers
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, "
          f"batch {a.batch} x {a.seq}, warm-up {a.warmup}, timed {a.steps} (median); each row under flock {a.lock}")
    rows = []
    threads = [int(t) for t in a.threads.split(",")]
    attns = [x for x in a.attn.split(",") if x]
    no_opt = [x for x in a.no_optimizer_rows.split(",") if x]
    hdr = f"{'attention':9} {'thr':>3} {'step':>13} {'s/step':>8} {'tok/s':>8} {'GFLOP/s':>8} {'peak RSS':>10}  steps (s)"
    print(hdr)
    for t in threads:
        plan = [(x, False) for x in attns] + [(x, True) for x in no_opt]
        for attn, no in plan:
            extra = ["--one", "--threads", str(t), "--attn", attn, "--batch", str(a.batch), "--seq", str(a.seq),
                     "--warmup", str(a.warmup), "--steps", str(a.steps), "--config", json.dumps(config)]
            r = run_child(a, extra + (["--no-optimizer"] if no else []))
            rows.append(r)
            step = "fwd+bwd+AdamW" if r["optimizer"] else "fwd+bwd"
            print(f"{attn:9} {t:>3} {step:>13} {r['seconds']:8.2f} {r['tokens_per_s']:8.1f} {r['gflops']:8.1f} "
                  f"{r['peak_rss_mib']:7.0f} MiB  {' '.join(f'{x:.2f}' for x in r['times'])}", flush=True)
    p = rows[0]["params"]
    print(f"# params {p:,} (tied embedding once); FLOP estimate 6 x params x tokens = 6 x {p:,} x "
          f"{rows[0]['tokens']} = {rows[0]['flop'] / 1e12:.3f} TFLOP/step")
    gemms = []
    for t in threads:
        g = run_child(a, ["--gemm", "--threads", str(t)])
        gemms.append(g)
        print(f"# GEMM [2048x576]·[576x1536] f32, {t} thread(s): torch.mm {g['mm']['gflops']:.1f} GFLOP/s "
              f"({g['mm']['seconds'] * 1e3:.2f} ms); F.linear (x·Wᵀ) {g['linear']['gflops']:.1f} GFLOP/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(config=config, rows=rows, gemm=gemms), f, indent=1)


if __name__ == "__main__":
    main()
