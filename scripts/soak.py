#!/usr/bin/env python3
"""Soak test for `pivot serve`: CLIENTS threads loop for MINUTES over a mix of requests —
streamed chat (max_tokens 32-64), whole chat, completions, cancelled streams (closed after the
first 1-3 chunks) and long prompts (~1,500 tokens of varied sentences, max_tokens 16) — and
count per kind: ok, 503 (allowed: the queue limit) and other errors (not allowed).

    .build/release/pivot serve --port 8080 &
    python3 scripts/soak.py --base http://127.0.0.1:8080 [--minutes 10] [--clients 16] [--pid $!]

With --pid it samples the server's resident memory (VmRSS in /proc/PID/status) every 10 s
and reports it after warm-up (the first sample at or after 1 minute), its maximum and its last
value, with one value per minute, so a reader can see whether it stays flat.

Passes (exit 0) when no request failed other than with 503, /health answers 200 afterwards,
the server goes idle (no slot processing, nothing waiting) within --idle-wait seconds of the
last client stopping (so cancelled requests did not leak slots) and, with --pid, the process
is still alive. Memory growth is reported, not judged.
"""
import argparse, http.client, json, os, random, socket, statistics, sys, threading, time, urllib.parse
from collections import Counter, defaultdict

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--base", default="http://127.0.0.1:8080")
parser.add_argument("--minutes", type=float, default=10)
parser.add_argument("--clients", type=int, default=16)
parser.add_argument("--pid", type=int, help="server process id: sample its VmRSS")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--timeout", type=float, default=300, help="seconds a request may take (queueing included)")
parser.add_argument("--sample-seconds", type=float, default=10, help="RSS sampling interval")
parser.add_argument("--warmup-seconds", type=float, default=60, help="RSS after this long is the baseline")
parser.add_argument("--long-sentences", type=int, default=70, help="sentences in a long prompt (about 21 tokens each)")
parser.add_argument("--idle-wait", type=float, default=120, help="seconds the server may take to go idle after the run")
parser.add_argument("--api-key", default=os.environ.get("PIVOT_API_KEY"), help="sent as 'Authorization: Bearer KEY' (default: $PIVOT_API_KEY)")
args = parser.parse_args()

base = urllib.parse.urlsplit(args.base)
HOST, PORT = base.hostname or "127.0.0.1", base.port or 80
HEADERS = {"Content-Type": "application/json"}
if args.api_key:
    HEADERS["Authorization"] = f"Bearer {args.api_key}"
CHAT, COMP = "/v1/chat/completions", "/v1/completions"

TOPICS = ["the sea", "a city at night", "autumn leaves", "a robot", "the moon", "coffee", "a library", "mountains",
          "a train journey", "winter", "a garden", "the desert", "rain", "a lighthouse", "music", "a forest"]
ADJECTIVES = ["quiet", "red", "ancient", "curious", "heavy", "bright", "narrow", "patient", "broken", "golden", "tired", "noisy"]
NOUNS = ["fisherman", "engineer", "cat", "merchant", "teacher", "river", "clock", "painter", "soldier", "farmer", "violin", "bridge"]
VERBS = ["repaired", "watched", "carried", "followed", "described", "ignored", "measured", "painted", "borrowed", "found"]
PLACES = ["the harbour", "an old mill", "the market square", "a snowy pass", "the station", "a small island", "the museum",
          "a crowded tavern", "the northern gate", "a quiet chapel"]

def long_prompt(rng):
    """About 21 tokens a sentence (70 make ~1,500; the report gives the real count from usage); every
    sentence is drawn anew, so prompts share little beyond the first words."""
    sentences = []
    for _ in range(args.long_sentences):
        sentences.append(f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} "
                         f"{rng.choice(NOUNS)} near {rng.choice(PLACES)} at {rng.randrange(1, 13)} o'clock on day {rng.randrange(1, 366)}.")
    return " ".join(sentences)

def sampling(rng, max_tokens):
    return {"max_tokens": max_tokens, "temperature": rng.choice([0, 0.7, 1.0]), "top_p": rng.choice([1.0, 0.9]),
            "seed": rng.randrange(1 << 31), "ignore_eos": True}

def chat_body(rng, max_tokens, stream):
    body = {"messages": [{"role": "user", "content": f"Write a short paragraph about {rng.choice(TOPICS)}."}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(sampling(rng, max_tokens))
    return body


class Failed(Exception):
    """A request that broke the rules: anything but 200 (or 503), or a 200 with a broken reply."""


def post(path, body):
    conn = http.client.HTTPConnection(HOST, PORT, timeout=args.timeout)
    conn.request("POST", path, body=json.dumps(body).encode(), headers=HEADERS)
    return conn, conn.getresponse()


def check_status(conn, response):
    """None for 200; 'busy' for 503; raises Failed otherwise."""
    if response.status == 200:
        return None
    text = response.read(400).decode("utf-8", "replace")
    conn.close()
    if response.status == 503:
        return "busy"
    raise Failed(f"HTTP {response.status}: {text}")


def events(response):
    """The SSE data payloads of a streamed reply, '[DONE]' last."""
    for raw in response:
        line = raw.decode("utf-8").strip()
        if line.startswith("data: "):
            yield line[6:]


def run_stream(rng, path, body, close_after=None):
    """A streamed request; with close_after, the connection is closed after that many chunks."""
    start = time.perf_counter()
    conn, response = post(path, body)
    if check_status(conn, response):
        return "busy", {}
    first, chunks, usage, done = None, 0, None, False
    try:
        for data in events(response):
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise Failed(f"error in the stream: {json.dumps(chunk)[:300]}")
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") if path == CHAT else choice.get("text")
                if piece is not None:
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - start
            if close_after is not None and chunks >= close_after:
                response.close(); conn.close()
                return "ok", {"seconds": time.perf_counter() - start, "ttft": first, "tokens": 0}
    finally:
        conn.close()
    if close_after is not None:
        raise Failed(f"the stream ended after {chunks} chunk(s), before the client could cancel it")
    if not done:
        raise Failed(f"the stream ended without data: [DONE] after {chunks} chunk(s)")
    if chunks == 0:
        raise Failed("the stream carried no content chunks")
    return "ok", {"seconds": time.perf_counter() - start, "ttft": first,
                  "tokens": (usage or {}).get("completion_tokens", chunks)}


def run_whole(path, body):
    start = time.perf_counter()
    conn, response = post(path, body)
    try:
        if check_status(conn, response):
            return "busy", {}
        reply = json.loads(response.read())
    finally:
        conn.close()
    choice = (reply.get("choices") or [{}])[0]
    text = choice.get("message", {}).get("content") if path == CHAT else choice.get("text")
    if not isinstance(text, str):
        raise Failed(f"reply without text: {json.dumps(reply)[:300]}")
    usage = reply.get("usage") or {}
    return "ok", {"seconds": time.perf_counter() - start, "tokens": usage.get("completion_tokens", 0),
                  "prompt_tokens": usage.get("prompt_tokens")}


def stream_chat(rng):
    return run_stream(rng, CHAT, chat_body(rng, rng.randint(32, 64), True))

def whole_chat(rng):
    return run_whole(CHAT, chat_body(rng, rng.randint(16, 48), False))

def completion(rng):
    body = {"prompt": f"Once upon a time, near {rng.choice(PLACES)}, a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"}
    body.update(sampling(rng, rng.randint(16, 48)))
    return run_whole(COMP, body)

def cancelled(rng):
    path = rng.choice([CHAT, COMP])
    body = chat_body(rng, 64, True) if path == CHAT else dict(prompt=f"A long story about {rng.choice(TOPICS)}:", stream=True,
                                                                 **sampling(rng, 64))
    return run_stream(rng, path, body, close_after=rng.randint(1, 3))

def long_request(rng):
    text = long_prompt(rng)
    if rng.random() < 0.5:
        body = {"messages": [{"role": "user", "content": text + "\n\nIn one sentence, who appears most often above?"}]}
        path = CHAT
    else:
        body = {"prompt": text + "\n\nThe person who appears most often above is"}
        path = COMP
    body.update(sampling(rng, 16))
    return run_whole(path, body)

KINDS = [("stream_chat", stream_chat, 3), ("whole_chat", whole_chat, 2), ("completion", completion, 2),
         ("cancelled", cancelled, 2), ("long_prompt", long_request, 1)]

# ---------------------------------------------------------------- helpers around the run

def get(path, timeout=30):
    """(status, body bytes), or (error text, b"")."""
    try:
        conn = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
        conn.request("GET", path, headers=HEADERS)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, body
    except (OSError, http.client.HTTPException) as error:
        return f"{type(error).__name__}: {error}", b""

def request_counts(metrics):
    """pivot_requests_total summed by status, from /metrics text."""
    counts = Counter()
    for line in metrics.decode("utf-8", "replace").splitlines():
        if line.startswith("pivot_requests_total{") and 'status="' in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            try:
                counts[status] += float(line.rsplit(None, 1)[1])
            except ValueError:
                pass
    return counts

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None

status, _ = get("/health")
if status != 200:
    print(f"GET /health before the run: {status}; is the server at {args.base} up?")
    sys.exit(1)
if args.pid and rss_kib(args.pid) is None:
    print(f"cannot read VmRSS from /proc/{args.pid}/status")
    sys.exit(1)
metrics_status, metrics_before = get("/metrics")

# ---------------------------------------------------------------- the run

lock = threading.Lock()
stats = defaultdict(lambda: {"ok": 0, "busy": 0, "errors": 0, "seconds": [], "ttft": [], "tokens": 0, "prompt_tokens": []})
error_examples = defaultdict(list)
start = time.monotonic()
deadline = start + args.minutes * 60
stop_sampling = threading.Event()
samples = []  # (seconds since start, VmRSS KiB or None)

def client(c):
    rng = random.Random(args.seed * 1000 + c)
    names, functions, weights = zip(*[(n, f, w) for n, f, w in KINDS])
    while time.monotonic() < deadline:
        i = rng.choices(range(len(KINDS)), weights)[0]
        name = names[i]
        try:
            outcome, info = functions[i](rng)
        except Failed as error:
            outcome, info = "error", {"why": str(error)}
        except Exception as error:  # timeouts, resets, bad JSON, a reply of the wrong shape
            outcome, info = "error", {"why": f"{type(error).__name__}: {error}"}
        with lock:
            s = stats[name]
            if outcome == "ok":
                s["ok"] += 1
                s["seconds"].append(info["seconds"])
                if info.get("ttft") is not None:
                    s["ttft"].append(info["ttft"])
                s["tokens"] += info.get("tokens") or 0
                if info.get("prompt_tokens"):
                    s["prompt_tokens"].append(info["prompt_tokens"])
            elif outcome == "busy":
                s["busy"] += 1
            else:
                s["errors"] += 1
                if len(error_examples[name]) < 5:
                    error_examples[name].append(f"{time.monotonic() - start:.0f} s: {info['why'][:300]}")
        if outcome == "busy":
            time.sleep(0.5 + rng.random())  # back off a little, as a client would after a 503

def sampler():
    while True:
        samples.append((time.monotonic() - start, rss_kib(args.pid)))
        if stop_sampling.wait(args.sample_seconds):
            return

def progress():
    minute = 1
    while not stop_sampling.wait(max(0.0, start + minute * 60 - time.monotonic())):
        with lock:
            done = sum(s["ok"] for s in stats.values()); busy = sum(s["busy"] for s in stats.values())
            errors = sum(s["errors"] for s in stats.values())
        rss = f", RSS {samples[-1][1] / 1024:.0f} MiB" if args.pid and samples and samples[-1][1] else ""
        print(f"[{minute:3d} min] ok {done}, 503 {busy}, errors {errors}{rss}", flush=True)
        minute += 1

print(f"soak: {args.clients} clients for {args.minutes:g} min against {args.base}" + (f", sampling pid {args.pid}" if args.pid else ""), flush=True)
helpers = [threading.Thread(target=progress, daemon=True)]
if args.pid:
    helpers.append(threading.Thread(target=sampler, daemon=True))
for t in helpers: t.start()
threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(args.clients)]
for t in threads: t.start()
for t in threads: t.join()
wall = time.monotonic() - start

# After the last client: the server should go idle (cancelled requests must free their slots).
idle_after, health = None, None
waited_from = time.monotonic()
while time.monotonic() - waited_from < args.idle_wait:
    status, body = get("/health")
    if status == 200:
        try:
            health = json.loads(body)
        except ValueError:
            health = None
        if health and health.get("slots_processing") == 0 and health.get("requests_waiting") == 0:
            idle_after = time.monotonic() - waited_from
            break
    time.sleep(1)
if args.pid:
    samples.append((time.monotonic() - start, rss_kib(args.pid)))
stop_sampling.set()

# ---------------------------------------------------------------- report

def fmt(values, q):
    if not values:
        return "-"
    values = sorted(values)
    return f"{values[min(len(values) - 1, int(q * len(values)))]:.2f}"

print(f"\n{sum(s['ok'] + s['busy'] + s['errors'] for s in stats.values())} requests in {wall:.0f} s from {args.clients} clients\n")
print("| kind | requests | ok | 503 | errors | median s | p95 s | median ttft s | tokens |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, _, _ in KINDS:
    s = stats[name]
    n = s["ok"] + s["busy"] + s["errors"]
    print(f"| {name} | {n} | {s['ok']} | {s['busy']} | {s['errors']} | {fmt(s['seconds'], 0.5)} | {fmt(s['seconds'], 0.95)} | "
          f"{fmt(s['ttft'], 0.5)} | {s['tokens']} |")
total_tokens = sum(s["tokens"] for s in stats.values())
print(f"\ngenerated tokens (completed requests): {total_tokens}, {total_tokens / wall:.1f}/s")
if stats["long_prompt"]["prompt_tokens"]:
    p = stats["long_prompt"]["prompt_tokens"]
    print(f"long prompts: {statistics.mean(p):.0f} prompt tokens on average ({min(p)}-{max(p)})")

errors_total = sum(s["errors"] for s in stats.values())
if errors_total:
    print("\nerrors (first 5 per kind):")
    for name, examples in error_examples.items():
        for example in examples:
            print(f"  {name} at {example}")

if metrics_status == 200:
    status, metrics_after = get("/metrics")
    if status == 200:
        delta = request_counts(metrics_after) - request_counts(metrics_before)
        print("\nserver-side answers during the run (/metrics pivot_requests_total): "
              + ", ".join(f"{k}×{v:.0f}" for k, v in sorted(delta.items())))

process_alive = True
if args.pid:
    known = [(t, kib) for t, kib in samples if kib is not None]
    process_alive = rss_kib(args.pid) is not None
    if known:
        after_warmup = [(t, kib) for t, kib in known if t >= args.warmup_seconds]
        mib = lambda kib: kib / 1024
        first = known[0][1]
        last = known[-1][1]
        peak = max(kib for _, kib in known)
        print(f"\nserver RSS (pid {args.pid}, every {args.sample_seconds:g} s): start {mib(first):.0f} MiB, "
              f"max {mib(peak):.0f} MiB, last {mib(last):.0f} MiB")
        if after_warmup:
            base_t, base_kib = after_warmup[0]
            peak_after = max(kib for _, kib in after_warmup)
            print(f"after warm-up ({base_t:.0f} s): {mib(base_kib):.0f} MiB; max since {mib(peak_after):.0f} MiB; "
                  f"last {mib(last):.0f} MiB ({mib(last - base_kib):+.0f} MiB, {100 * (last - base_kib) / base_kib:+.1f}%)")
        else:
            print(f"no sample after the {args.warmup_seconds:g} s warm-up (run too short)")
        by_minute = {}
        for t, kib in known:
            by_minute.setdefault(int(t // 60), kib)
        print("RSS at each minute (MiB): " + " ".join(f"{mib(kib):.0f}" for _, kib in sorted(by_minute.items())))
    if not process_alive:
        print(f"server process {args.pid} is gone")

health_status, health_body = get("/health")
print(f"\nafterwards: GET /health → {health_status} {health_body[:160].decode('utf-8', 'replace')}")
if idle_after is not None:
    print(f"server idle {idle_after:.0f} s after the last client stopped")
else:
    print(f"server NOT idle {args.idle_wait:g} s after the last client stopped: {health}")

busy_total = sum(s["busy"] for s in stats.values())
passed = errors_total == 0 and health_status == 200 and idle_after is not None and process_alive
reasons = []
if errors_total: reasons.append(f"{errors_total} non-503 error(s)")
if health_status != 200: reasons.append(f"/health {health_status}")
if idle_after is None: reasons.append("server did not go idle")
if not process_alive: reasons.append("server process gone")
print(f"\nRESULT: {'PASS' if passed else 'FAIL'} — {sum(s['ok'] for s in stats.values())} ok, {busy_total} × 503 (allowed), "
      f"{errors_total} other error(s)" + ("" if passed else "; " + "; ".join(reasons)))
sys.exit(0 if passed else 1)
