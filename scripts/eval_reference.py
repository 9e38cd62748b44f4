#!/usr/bin/env python3
"""Float reference for `pivot eval --precision float`: the same GGUF model dequantized to float32 and run
by a plain numpy Llama forward pass, tokenized by HuggingFace `tokenizers` built from the GGUF
vocabulary, with lm-evaluation-harness's prompt construction and scoring re-implemented from its task
YAML files (hellaswag, arc, piqa, winogrande, boolq, openbookqa, mmlu, lambada_openai).

Not part of `swift test` (it needs numpy, gguf and tokenizers from PyPI):
    pip install numpy gguf tokenizers
    OPENBLAS_NUM_THREADS=1 python3 scripts/eval_reference.py --limit 200 --out eval/reference-float-200.json
    (one BLAS thread: numpy threads spinning against another job on the same cores run 5x slower)
    python3 scripts/eval_reference.py --compare eval/reference-float-200.json eval/results/float-1000
"""
import argparse, gzip, json, math, os, re, sys, time
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared")


def load_model(path):
    import gguf
    r = gguf.GGUFReader(path)
    meta = {f.name: f for f in r.fields.values()}

    def value(name):
        f = meta[name]
        return f.parts[f.data[0]].tolist()[0] if len(f.data) == 1 else [bytes(f.parts[i]).decode() for i in f.data]

    def strings(name):
        f = meta[name]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    weights = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32) for t in r.tensors}
    arch = bytes(meta["general.architecture"].parts[meta["general.architecture"].data[0]]).decode()
    cfg = dict(layers=value(f"{arch}.block_count"), heads=value(f"{arch}.attention.head_count"),
               kv_heads=value(f"{arch}.attention.head_count_kv"), eps=value(f"{arch}.attention.layer_norm_rms_epsilon"),
               theta=value(f"{arch}.rope.freq_base"), hidden=value(f"{arch}.embedding_length"))
    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    types = [int(meta["tokenizer.ggml.token_type"].parts[i][0]) for i in meta["tokenizer.ggml.token_type"].data]
    return cfg, weights, tokens, merges, types


def make_tokenizer(tokens, merges, types):
    from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True) for i, t in enumerate(types) if t == 3])
    return tok


class Model:
    def __init__(self, cfg, w):
        self.c, self.w = cfg, w
        d = cfg["hidden"] // cfg["heads"]
        self.d = d
        self.inv = (1.0 / (np.float32(cfg["theta"]) ** (np.arange(0, d, 2, dtype=np.float32) / d))).astype(np.float64)

    def norm(self, x, name):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.c["eps"]) * self.w[name]

    def rope(self, x, start):  # x: [T, H, d], llama.cpp layout: adjacent pairs rotate
        T = x.shape[0]
        ang = np.outer(np.arange(start, start + T), self.inv)
        cos, sin = np.cos(ang).astype(np.float32)[:, None, :], np.sin(ang).astype(np.float32)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    def forward(self, ids, cache, logits_from=0):
        """Runs ids after the cached positions; returns logits of rows logits_from.. and the extended cache."""
        c, w, d = self.c, self.w, self.d
        start = 0 if cache is None else cache[0][0].shape[0]
        x = w["token_embd.weight"][ids]
        new = []
        for l in range(c["layers"]):
            p = f"blk.{l}."
            h = self.norm(x, p + "attn_norm.weight")
            q = (h @ w[p + "attn_q.weight"].T).reshape(len(ids), c["heads"], d)
            k = (h @ w[p + "attn_k.weight"].T).reshape(len(ids), c["kv_heads"], d)
            v = (h @ w[p + "attn_v.weight"].T).reshape(len(ids), c["kv_heads"], d)
            q, k = self.rope(q, start), self.rope(k, start)
            if cache is not None:
                k, v = np.concatenate([cache[l][0], k]), np.concatenate([cache[l][1], v])
            new.append((k, v))
            g = c["heads"] // c["kv_heads"]
            kk, vv = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
            s = np.einsum("thd,shd->hts", q, kk) / np.sqrt(d)
            mask = np.arange(k.shape[0])[None, :] > (start + np.arange(len(ids)))[:, None]
            s = np.where(mask[None], -np.inf, s)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = np.einsum("hts,shd->thd", s, vv).reshape(len(ids), -1)
            x = x + a @ w[p + "attn_output.weight"].T
            h = self.norm(x, p + "ffn_norm.weight")
            gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
        out = w.get("output.weight", w["token_embd.weight"])
        return self.norm(x[logits_from:], "output_norm.weight") @ out.T, new


# ---- lm-evaluation-harness task definitions (prompt text, choices, gold), from its YAML files ----
def hs_pre(t):
    t = t.strip().replace(" [title]", ". ")
    t = re.sub("\\[.*?\\]", "", t)
    return t.replace("  ", " ")


def mc(ctx, choices, gold):
    return [(ctx, " " + ch) for ch in choices], gold, choices


def doc_hellaswag(d):
    ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
    return mc(hs_pre(d["activity_label"] + ": " + ctx), [hs_pre(e) for e in d["endings"]], int(d["label"]))


def doc_arc(d):
    return mc(d["query"] + "\nAnswer:", d["choices"], d["gold"])


def doc_piqa(d):
    return mc("Question: " + d["goal"] + "\nAnswer:", [d["sol1"], d["sol2"]], d["label"])


def doc_winogrande(d):
    i = d["sentence"].index("_")
    contexts = [d["sentence"][:i] + o for o in (d["option1"], d["option2"])]
    return [(c, " " + d["sentence"][i + 1:].strip()) for c in contexts], {"1": 0, "2": 1}[d["answer"]], contexts


def doc_boolq(d):
    return mc(d["passage"] + "\nQuestion: " + d["question"] + "?\nAnswer:", ["no", "yes"], 1 if d["answer"] else 0)


def doc_obqa(d):
    return mc(d["question_stem"], d["choices"]["text"], d["choices"]["label"].index(d["answerKey"].lstrip()))


def doc_mmlu(d):
    q = d["question"].strip() + "".join(f"\n{l}. {c}" for l, c in zip("ABCD", d["choices"])) + "\nAnswer:"
    head = f"The following are multiple choice questions (with answers) about {d['subject'].replace('_', ' ')}.\n\n"
    return mc(head + q, ["A", "B", "C", "D"], d["answer"])


def doc_lambada(d):
    return [(d["context"], " " + d["continuation"])], 0, [d["continuation"]]


TASKS = {"piqa": ("piqa_validation.jsonl", doc_piqa, True), "winogrande": ("winogrande_xl_validation.jsonl", doc_winogrande, False),
         "arc-challenge": ("arc_challenge_test.jsonl", doc_arc, True), "arc-easy": ("arc_easy_test.jsonl", doc_arc, True),
         "openbookqa": ("openbookqa_validation.jsonl", doc_obqa, True), "boolq": ("boolq_validation.jsonl", doc_boolq, False),
         "lambada": ("lambada_openai_test.jsonl", doc_lambada, False), "hellaswag": ("hellaswag_validation.jsonl", doc_hellaswag, True),
         "mmlu": ("mmlu_test.jsonl", doc_mmlu, False)}


def encode_pair(tok, context, continuation):
    """lm-eval's _encode_pair: trailing whitespace of the context moves to the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        continuation, context = context[-n:] + continuation, context[:-n]
    whole = tok.encode(context + continuation).ids
    ctx = tok.encode(context).ids
    return whole, len(ctx)


def loglikelihoods(model, tok, requests):
    encoded = [encode_pair(tok, c, x) for c, x in requests]
    # Run the longest prefix all requests share once (a plain KV cache), then each remainder.
    shared = min(s for _, s in encoded)
    for ids, _ in encoded[1:]:
        while shared and ids[:shared] != encoded[0][0][:shared]:
            shared -= 1
    prefix_logits, cache = model.forward(encoded[0][0][:shared], None, logits_from=shared - 1) if shared else (None, None)
    out = []
    for ids, start in encoded:
        logits, _ = model.forward(ids[shared:], cache) if len(ids) > shared else (None, None)
        rows = prefix_logits[-1:] if shared else np.zeros((0, 1))
        rows = np.concatenate([rows, logits]) if logits is not None else rows
        base = shared - 1 if shared else 0  # position of rows[0]
        ll, greedy = 0.0, True
        for j in range(start, len(ids)):
            row = rows[j - 1 - base].astype(np.float64)
            lse = row.max() + np.log(np.exp(row - row.max()).sum())
            ll += row[ids[j]] - lse
            greedy &= int(row.argmax()) == ids[j]
        out.append((ll, greedy))
    return out


def run(args):
    cfg, w, tokens, merges, types = load_model(args.model)
    model, tok = Model(cfg, w), make_tokenizer(tokens, merges, types)
    # Resumable: tasks already in --out with the same number of items are kept and skipped.
    results = json.load(open(args.out)) if os.path.exists(args.out) else {}
    for name in args.tasks:
        if results.get(name, {}).get("items") == args.limit:
            print(f"{name}: done earlier, skipped", flush=True)
            continue
        file, doc_fn, has_norm = TASKS[name]
        with open(os.path.join(args.data, file)) as f:
            docs = [json.loads(line) for _, line in zip(range(args.limit), f)]
        per_item, t0 = [], time.time()
        for d in docs:
            reqs, gold, choices = doc_fn(d)
            lls = loglikelihoods(model, tok, reqs)
            if name == "lambada":
                per_item.append({"acc": int(lls[0][1]), "ll": lls[0][0]})
            else:
                ll = np.array([x for x, _ in lls])
                norm = ll / np.array([float(len(c)) for c in choices])
                per_item.append({"acc": int(np.argmax(ll) == gold), "acc_norm": int(np.argmax(norm) == gold), "lls": ll.tolist()})
        acc = float(np.mean([p["acc"] for p in per_item]))
        entry = {"items": len(docs), "acc": acc, "per_item": per_item}
        if has_norm:
            entry["acc_norm"] = float(np.mean([p["acc_norm"] for p in per_item]))
        if name == "lambada":
            entry["perplexity"] = math.exp(-np.mean([p["ll"] for p in per_item]))
        results[name] = entry
        print(f"{name}: {len(docs)} items, acc {acc:.4f}" + (f", acc_norm {entry['acc_norm']:.4f}" if has_norm else "")
              + (f", ppl {entry['perplexity']:.3f}" if name == "lambada" else "") + f" ({time.time() - t0:.0f} s)", flush=True)
        with open(args.out, "w") as f:
            json.dump(results, f)


def compare(reference_path, results_dir):
    """Item by item: the reference's acc/acc_norm against Pivot's cells/*.items.jsonl over their common
    first items; prints a table and exits 1 if any item disagrees."""
    ref = json.load(open(reference_path))
    cells_dir = os.path.join(results_dir, "cells")
    bad = 0
    print(f"{'task':14s} {'items':>5s} {'acc ref':>8s} {'acc pivot':>9s} {'norm ref':>8s} {'norm pivot':>10s} {'max |d ll|':>10s}  differing items")
    for name, entry in ref.items():
        files = sorted(f for f in os.listdir(cells_dir) if f.endswith((".items.jsonl", ".items.jsonl.gz"))
                       and f.split("__", 1)[1].split("@")[0].split(".")[0] == name)
        if not files:
            continue
        path = os.path.join(cells_dir, files[0])
        # The committed results keep per-item outcomes gzip-compressed; fresh runs write them plain.
        ours = [json.loads(line) for line in (gzip.open(path, "rt") if path.endswith(".gz") else open(path))]
        n = min(len(ours), len(entry["per_item"]))
        theirs = entry["per_item"][:n]
        keys = [("acc", "acc")] + ([("acc_norm", "accNorm")] if "acc_norm" in entry else [])
        diff = [i for i in range(n) if any(int(theirs[i][r]) != int(ours[i][p]) for r, p in keys)]
        bad += len(diff)
        mean = lambda xs: sum(xs) / max(1, len(xs))
        norm = (f"{mean([t['acc_norm'] for t in theirs]):8.4f} {mean([int(o['accNorm']) for o in ours[:n]]):10.4f}"
                if "acc_norm" in entry else f"{'-':>8s} {'-':>10s}")
        ref_lls = [t.get("lls", [t.get("ll")]) for t in theirs]
        delta = max(abs(a - b) for r, o in zip(ref_lls, ours) for a, b in zip(r, o["logLikelihoods"]))
        print(f"{name:14s} {n:5d} {mean([t['acc'] for t in theirs]):8.4f} {mean([int(o['acc']) for o in ours[:n]]):9.4f} {norm} {delta:10.2e}  {diff[:10]}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(SHARED, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data", default=os.path.join(SHARED, "data", "eval"))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--out", default="reference-float.json")
    ap.add_argument("--compare", nargs=2, metavar=("REFERENCE", "RESULTS_DIR"))
    a = ap.parse_args()
    compare(*a.compare) if a.compare else run(a)
