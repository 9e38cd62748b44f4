#!/bin/sh
# Speed table of issue #24: pp512 and tg128 of each GGUF file with llama.cpp (native build and a
# ggml-cpu built for AVX2 only) and Pivot on each kernel path this CPU runs, same sitting, rounds
# alternating engines, 2 threads. Stop other jobs first.
#
#   scripts/isa_speed.sh LLAMA_BIN_DIR LLAMA_AVX2_LIB_DIR FILE.gguf...
set -eu
LLAMA=$1; AVX2=$2; shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=$ROOT/.build/release/pivot
PATHS=${PATHS:-"avx512 avxvnni avx2"}
t_s() { awk -F'|' -v test="$1" '$0 ~ test {gsub(/ /, "", $(NF-1)); print $(NF-1)}'; }
header="| file | llama.cpp native pp512 | llama.cpp AVX2 pp512"
for p in $PATHS; do header="$header | Pivot $p pp512"; done
header="$header | llama.cpp native tg128 | llama.cpp AVX2 tg128"
for p in $PATHS; do header="$header | Pivot $p tg128"; done
echo "$header |"
echo "| --- $(for _ in $(seq 1 $((4 + 2 * $(echo $PATHS | wc -w)))); do printf '| ---: '; done)|"
for f in "$@"; do
    ln=$("$LLAMA/llama-bench" -m "$f" -t 2 -p 512 -n 128 -r 3 2>/dev/null)
    la=$(LD_LIBRARY_PATH=$AVX2 "$LLAMA/llama-bench" -m "$f" -t 2 -p 512 -n 128 -r 3 2>/dev/null)
    pp=""; tg=""
    for p in $PATHS; do
        pv=$(PIVOT_ISA=$p "$PIVOT" bench -m "$f" -t 2 -p 512 -n 128 -r 3 2>/dev/null)
        pp="$pp | $(echo "$pv" | t_s pp512)"; tg="$tg | $(echo "$pv" | t_s tg128)"
    done
    echo "| $(basename "$f") | $(echo "$ln" | t_s pp512) | $(echo "$la" | t_s pp512)$pp | $(echo "$ln" | t_s tg128) | $(echo "$la" | t_s tg128)$tg |"
done
