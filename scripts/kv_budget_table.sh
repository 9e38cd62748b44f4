#!/bin/sh
# OTT's throughput claim on `pivot serve`: one fixed KV budget (what 4 F16 sequences of 4096 tokens
# need, 360 MiB for SmolLM2-135M), 16 clients each sending one streamed chat request with a
# different ~3k-token passage of calibration.txt (max_tokens 128, ignore_eos), F16 against KIVI-2 +
# 1 pivot + 1 outlier token per group. Prints the serve_bench row, the most sequences resident in
# the budget at once (pivot_sequences_resident, sampled from /metrics every 0.2 s) and the preemptions.
#
#   scripts/kv_budget_table.sh
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=${PIVOT_BIN:-$ROOT/.build/release/pivot}
MODEL=${MODEL:-$ROOT/../shared/models/SmolLM2-135M-Instruct.Q4_1.gguf}
TEXT=${TEXT:-$ROOT/../shared/data/calibration.txt}
BUDGET=${BUDGET:-360}
PORT=18097
wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }

echo "| KV cache | budget MiB | clients | requests | requests/s | generated t/s | TTFT median ms | TTFT p90 ms | most resident at once | preemptions |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for cache in "f16:--kv-type f16" "kivi-2 p1 o1:--kv-type kivi --kv-bits 2 --pivot 1 --outlier-tokens 1"; do
  label=${cache%%:*}; flags=${cache#*:}
  # shellcheck disable=SC2086
  "$PIVOT" serve -m "$MODEL" -t 2 --port $PORT --parallel 16 -c 4096 --kv-budget "$BUDGET" $flags --quiet > /dev/null 2>&1 &
  PID=$!; wait_up
  ( most=0; while kill -0 $PID 2> /dev/null; do
      b=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '$1 == "pivot_sequences_resident" { print int($2) }')
      [ -n "$b" ] && [ "$b" -gt "$most" ] && most=$b && echo "$most" > /tmp/kv_budget_most.$$
      sleep 0.2; done ) &
  WATCH=$!
  row=$(python3 "$ROOT/scripts/serve_bench.py" --base http://127.0.0.1:$PORT --clients 16 --requests 1 --max-tokens 128 \
        --long-prompt "$TEXT" --label "$label")
  preempted=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '$1 == "pivot_preemptions_total" { print int($2) }')
  kill $PID; wait $PID 2> /dev/null || true; wait $WATCH 2> /dev/null || true
  echo "$row" | sed "s/^| $label |/| $label | $BUDGET |/; s/ *$/ $(cat /tmp/kv_budget_most.$$ 2> /dev/null || echo '?') | $preempted |/"
  rm -f /tmp/kv_budget_most.$$
done
