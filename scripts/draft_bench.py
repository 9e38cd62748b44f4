#!/usr/bin/env python3
"""Drafting benchmark: plain greedy decoding against `--draft ngram` on the same prompts, alternating,
with decode tokens/s per prompt and per set.

Two sets built at run time from real text (nothing is committed): input-grounded prompts that repeat,
rewrite, extract from or edit a wikitext-2 passage or one of this project's own source files, and
free-generation prompts. Each prompt is a ChatML user turn (the default model is an instruct model).
With --llama-lookup DIR (a llama.cpp build's bin folder), llama.cpp's llama-lookup runs on the same
prompts with --spec-draft-n-max 10 against itself with 0 (no drafts).

    python3 scripts/draft_bench.py [--pivot .build/release/pivot] [-n 128] [--llama-lookup /path/to/build/bin]
"""
import argparse, os, re, subprocess, statistics, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def chat(text):
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def prompts():
    wiki = open(os.path.join(SHARED, "data", "wikitext-2-raw-test.txt"), encoding="utf-8").read()
    paragraphs = [p.strip() for p in wiki.split("\n") if len(p.strip()) > 400 and not p.strip().startswith("=")]
    passages = [" ".join(p.split()[:110]) for p in paragraphs[:6]]
    source = lambda path, lines: "\n".join(open(os.path.join(ROOT, path), encoding="utf-8").read().split("\n")[lines[0]:lines[1]])
    code = [source("Sources/Pivot/Decode/Sampler.swift", (18, 34)), source("Sources/Pivot/Eval/TaskRunner.swift", (118, 128)),
            source("Sources/PivotKernels/FloatKernels.swift", (36, 46))]
    grounded = [
        ("repeat passage 1", chat(f"Repeat the following text exactly.\n\n{passages[0]}")),
        ("repeat passage 2", chat(f"Copy this paragraph word for word:\n\n{passages[1]}")),
        ("rewrite passage", chat(f"Rewrite the following text, keeping every sentence:\n\n{passages[2]}")),
        ("extract sentences", chat(f"{passages[3]}\n\nQuote the first three sentences of the text above.")),
        ("edit passage", chat(f"Correct any spelling mistakes in this text and return the whole text:\n\n{passages[4]}")),
        ("summarize passage", chat(f"Summarize this text, quoting its key phrases:\n\n{passages[5]}")),
        ("repeat code", chat(f"Repeat this Swift code exactly:\n\n{code[0]}")),
        ("edit code", chat(f"Rename the variable `logits` to `scores` in this Swift code and show the full result:\n\n{code[0]}")),
        ("comment code", chat(f"Add a comment above each line of this Swift code:\n\n{code[1]}")),
        ("port code", chat(f"Rewrite this Swift function with the same names:\n\n{code[2]}")),
    ]
    free = [
        ("story", chat("Write a short story about a lighthouse keeper.")),
        ("explain", chat("Explain how rainbows form.")),
        ("poem", chat("Write a poem about autumn leaves.")),
        ("list", chat("Give me ten ideas for a weekend trip.")),
        ("history", chat("Tell me about the history of the printing press.")),
        ("advice", chat("How can I sleep better?")),
    ]
    return {"input-grounded": grounded, "free generation": free}


def run_pivot(binary, prompt, n, draft):
    args = [binary, "generate", "-p", prompt, "-n", str(n), "--temp", "0", "-t", "2"] + (["--draft", "ngram"] if draft else [])
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    m = re.search(r"generated: (\d+) tokens, ([\d.]+) t/s", r.stderr)
    d = re.search(r"(\d+) drafted, (\d+) accepted .*?([\d.]+) tokens per step", r.stderr)
    return r.stdout, int(m.group(1)), float(m.group(2)), (tuple(float(x) for x in d.groups()) if d else None)


def run_llama(bin_dir, model, prompt, n, lookup):
    # Plain decoding is the same program with no drafts, so both sides share everything else.
    args = [os.path.join(bin_dir, "llama-lookup"), "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "-t", "2",
            "--spec-draft-n-max", "10" if lookup else "0", "-c", "4096"]
    r = subprocess.run(args, capture_output=True, text=True)
    m = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) s", r.stderr + r.stdout)
    return (int(m.group(1)), float(m.group(2))) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pivot", default=os.path.join(ROOT, ".build", "release", "pivot"))
    ap.add_argument("--model", default=os.path.join(SHARED, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--llama-lookup", metavar="BIN_DIR")
    a = ap.parse_args()
    print("| set | prompt | tokens | plain t/s | ngram t/s | speedup | accepted / drafted | tokens per step | same output |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    totals = {}
    for name, items in prompts().items():
        plain_time = fast_time = tokens_plain = tokens_fast = 0
        llama = {"plain": [0, 0.0], "lookup": [0, 0.0]}
        for label, prompt in items:
            out0, n0, rate0, _ = run_pivot(a.pivot, prompt, a.n, False)
            out1, n1, rate1, d = run_pivot(a.pivot, prompt, a.n, True)
            plain_time += n0 / rate0; fast_time += n1 / rate1; tokens_plain += n0; tokens_fast += n1
            acc = f"{int(d[1])} / {int(d[0])}" if d else "-"
            print(f"| {name} | {label} | {n1} | {rate0:.1f} | {rate1:.1f} | {rate1 / rate0:.2f}x | {acc} | {d[2] if d else 0:.2f} | {'yes' if out0 == out1 else 'NO'} |")
            if a.llama_lookup:
                for kind in ("plain", "lookup"):
                    r = run_llama(a.llama_lookup, a.model, prompt, a.n, kind == "lookup")
                    if r:
                        llama[kind][0] += r[0]; llama[kind][1] += r[1]
        totals[name] = (tokens_plain / plain_time, tokens_fast / fast_time, llama)
    print()
    print("| set | Pivot plain t/s | Pivot ngram t/s | Pivot speedup | llama.cpp plain t/s | llama-lookup t/s | llama.cpp speedup |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (p, f, llama) in totals.items():
        lp = llama["plain"][0] / llama["plain"][1] if llama["plain"][1] else 0
        ll = llama["lookup"][0] / llama["lookup"][1] if llama["lookup"][1] else 0
        extra = f"{lp:.1f} | {ll:.1f} | {ll / lp:.2f}x" if lp and ll else "- | - | -"
        print(f"| {name} | {p:.1f} | {f:.1f} | {f / p:.2f}x | {extra} |")


if __name__ == "__main__":
    main()
