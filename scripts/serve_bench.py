#!/usr/bin/env python3
"""Load test for an OpenAI-compatible server (`pivot serve` or llama.cpp's `llama-server`):
C concurrent clients each send R streamed chat requests (different short questions, greedy,
max_tokens fixed, ignore_eos so every request generates exactly that many tokens); prints
requests/s, generated tokens/s and time to first token (median and p90) as one Markdown row.

    python3 scripts/serve_bench.py --base http://127.0.0.1:8080 --clients 4 --requests 4 --label pivot
"""
import argparse, json, statistics, threading, time, urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--base", default="http://127.0.0.1:8080")
parser.add_argument("--clients", type=int, default=1)
parser.add_argument("--requests", type=int, default=4, help="requests per client")
parser.add_argument("--max-tokens", type=int, default=64)
parser.add_argument("--label", default="server")
parser.add_argument("--long-prompt", metavar="FILE",
                    help="instead of short questions: each request's prompt is a different passage of FILE "
                         "(about --prompt-words words, no shared prefix), to load the KV cache")
parser.add_argument("--prompt-words", type=int, default=2400)
args = parser.parse_args()
passages = open(args.long_prompt, encoding="utf-8").read().split() if args.long_prompt else []

topics = ["the sea", "a city at night", "autumn leaves", "a robot", "the moon", "coffee", "a library", "mountains",
          "a train journey", "winter", "a garden", "the desert", "rain", "a lighthouse", "music", "a forest"]

def question(i):
    if not passages:
        return f"Write a short paragraph about {topics[i % len(topics)]}."
    start = (i * 7919 * args.prompt_words) % max(1, len(passages) - args.prompt_words)
    return "Summarize this text.\n\n" + " ".join(passages[start:start + args.prompt_words])

def one(i):
    body = {"messages": [{"role": "user", "content": question(i)}],
            "max_tokens": args.max_tokens, "temperature": 0, "stream": True, "ignore_eos": True}
    request = urllib.request.Request(args.base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter(); first = None; pieces = 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                pieces += 1
                if first is None:
                    first = time.perf_counter() - start
    return first, time.perf_counter() - start

results = []; lock = threading.Lock()
def client(c):
    for r in range(args.requests):
        ttft, total = one(c * args.requests + r)
        with lock:
            results.append((ttft, total))

one(99)  # warm-up
t0 = time.perf_counter()
threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
for t in threads: t.start()
for t in threads: t.join()
wall = time.perf_counter() - t0
ttfts = sorted(r[0] for r in results)
n = len(results)
p90 = ttfts[min(n - 1, int(0.9 * n))]
print(f"| {args.label} | {args.clients} | {n} | {n / wall:.2f} | {n * args.max_tokens / wall:.1f} | "
      f"{statistics.median(ttfts) * 1000:.0f} | {p90 * 1000:.0f} |")
