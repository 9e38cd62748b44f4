#!/bin/sh
# The server table of BENCHMARKS.md: `pivot serve` and llama.cpp's `llama-server` on the same model,
# same sitting, 16 slots each (F16 KV cache, 2 threads, 2048 tokens per slot), loaded by
# scripts/serve_bench.py with 1, 4, 8 and 16 concurrent clients (4 streamed chat requests per client,
# 64 generated tokens each, ignore_eos), the two servers alternating at each client count.
#
#   LLAMA_SERVER=/path/to/llama-server scripts/serve_table.sh
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=${PIVOT_BIN:-$ROOT/.build/release/pivot}
MODEL=${MODEL:-$ROOT/../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA_SERVER=${LLAMA_SERVER:?set LLAMA_SERVER to llama.cpp\'s llama-server binary}
SLOTS=${SLOTS:-16}
CLIENTS=${CLIENTS:-1 4 8 16}
REQUESTS=${REQUESTS:-4}
wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/health" > /dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }

echo "| server | clients | requests | requests/s | generated t/s | TTFT median ms | TTFT p90 ms |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
# Alternating: each client count runs on both servers, one server up at a time.
for c in $CLIENTS; do
  "$PIVOT" serve -m "$MODEL" -t 2 --port 18090 --parallel $SLOTS -c 2048 --kv-type f16 --quiet > /dev/null 2>&1 &
  PID=$!; wait_up 18090
  python3 "$ROOT/scripts/serve_bench.py" --base http://127.0.0.1:18090 --clients $c --requests $REQUESTS --label "pivot serve"
  kill $PID; wait $PID 2>/dev/null || true
  "$LLAMA_SERVER" -m "$MODEL" -t 2 --port 18091 -np $SLOTS -c $((SLOTS * 2048)) > /dev/null 2>&1 &
  PID=$!; wait_up 18091
  python3 "$ROOT/scripts/serve_bench.py" --base http://127.0.0.1:18091 --clients $c --requests $REQUESTS --label "llama-server"
  kill $PID; wait $PID 2>/dev/null || true
done
