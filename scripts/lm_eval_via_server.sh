#!/usr/bin/env bash
# lm-evaluation-harness's `local-completions` model against `pivot serve`: the harness sends each
# choice as a prompt with echo, logprobs 1 and max_tokens 1 and sums the continuation's token
# logprobs (it tokenizes through the server's /tokenize, /detokenize and /tokenizer_info:
# tokenizer_backend=remote, tokenized_requests=False). Tasks are local YAML over the files in
# shared/data/eval (arc_easy, hellaswag), so nothing is fetched from the hub.
#
#   scripts/lm_eval_via_server.sh [--limit 200] [--tasks arc_easy,hellaswag] [-m MODEL] [--url http://HOST:PORT]
#
# Without --url a server is started on a free port and stopped at the end. Needs `pip install lm-eval`.
set -euo pipefail

limit=200 tasks=arc_easy,hellaswag model="" url="" ctx=2048
while [ $# -gt 0 ]; do
  case "$1" in
    --limit) limit=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    -m|--model) model=$2; shift 2 ;;
    --url) url=$2; shift 2 ;;
    -c|--ctx-size) ctx=$2; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
data=${PIVOT_DATA:-$root/../shared/data/eval}
pivot=${PIVOT_BIN:-$root/.build/release/pivot}
work=$(mktemp -d)
server_pid=""
cleanup() { if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

# The tasks as lm-eval declares them, reading the local files (their fields as README.md in $data lists them).
cat > "$work/pivot_arc_easy.yaml" <<YAML
task: pivot_arc_easy
dataset_path: json
dataset_kwargs:
  data_files:
    test: $data/arc_easy_test.jsonl
output_type: multiple_choice
test_split: test
doc_to_text: "{{query}}\nAnswer:"
doc_to_target: "{{gold}}"
doc_to_choice: "{{choices}}"
metric_list:
  - metric: acc
  - metric: acc_norm
YAML
cat > "$work/pivot_hellaswag.yaml" <<YAML
task: pivot_hellaswag
dataset_path: json
dataset_kwargs:
  data_files:
    validation: $data/hellaswag_validation.jsonl
output_type: multiple_choice
validation_split: validation
process_docs: !function hellaswag_docs.prepare
doc_to_text: "{{query}}"
doc_to_target: "{{gold}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
  - metric: acc_norm
YAML
# HellaSwag's prompt: "activity: ctx_a Ctx_b", WikiHow's bracketed markup removed.
cat > "$work/hellaswag_docs.py" <<'PY'
import re


def clean(text):
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def prepare(dataset):
    def one(doc):
        context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {"query": clean(doc["activity_label"] + ": " + context),
                "choices": [clean(ending) for ending in doc["endings"]],
                "gold": int(doc["label"])}
    return dataset.map(one)
PY

if [ -z "$url" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # F32 cache as `pivot eval` uses by default; four slots batched (each request's logprobs are what it gets alone).
  args=(serve --port "$port" --parallel 4 -c "$ctx" --kv-type f32 --quiet)
  [ -n "$model" ] && args+=(-m "$model")
  env -u PIVOT_API_KEY "$pivot" "${args[@]}" </dev/null &
  server_pid=$!
  url=http://127.0.0.1:$port
  for _ in $(seq 1 120); do curl -sf "$url/health" >/dev/null 2>&1 && break; sleep 0.5; done
  curl -sf "$url/health" >/dev/null || { echo "pivot serve did not start" >&2; exit 1; }
fi

task_names=$(echo "$tasks" | sed 's/\([a-z_]*\)/pivot_\1/g')
HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 python3 -m lm_eval --model local-completions \
  --model_args "model=pivot,base_url=$url/v1/completions,tokenizer_backend=remote,tokenized_requests=False,num_concurrent=4,max_retries=2,max_length=$ctx" \
  --include_path "$work" --tasks "$task_names" --limit "$limit" --batch_size 1
