#!/bin/sh
# Speed table of BENCHMARKS.md: pp512 and tg128 of each GGUF file with Pivot and llama.cpp, same
# sitting, alternating, 2 threads. Stop other jobs first (kill -STOP), as every figure here assumes.
#
#   scripts/kquant_speed.sh LLAMA_BIN_DIR [LLAMA_AVX2_LIB_DIR] FILE.gguf...
#
# With a second llama.cpp ggml-cpu library built for AVX2 only (GGML_NATIVE=OFF, the ISA Pivot is
# built for), its figures get their own column; the first is llama.cpp as built (-march=native).
set -eu
LLAMA=$1; shift
AVX2=""
if [ -d "$1" ]; then AVX2=$1; shift; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=$ROOT/.build/release/pivot
t_s() { awk -F'|' -v test="$1" '$0 ~ test {gsub(/ /, "", $(NF-1)); print $(NF-1)}'; }
echo "| file | llama.cpp native pp512 | llama.cpp AVX2 pp512 | Pivot pp512 | llama.cpp native tg128 | llama.cpp AVX2 tg128 | Pivot tg128 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for f in "$@"; do
    ln=$("$LLAMA/llama-bench" -m "$f" -t 2 -p 512 -n 128 -r 3 2>/dev/null)
    la="-"; la_tg="-"
    if [ -n "$AVX2" ]; then
        l2=$(LD_LIBRARY_PATH=$AVX2 "$LLAMA/llama-bench" -m "$f" -t 2 -p 512 -n 128 -r 3 2>/dev/null)
        la=$(echo "$l2" | t_s pp512); la_tg=$(echo "$l2" | t_s tg128)
    fi
    pv=$("$PIVOT" bench -m "$f" -t 2 -p 512 -n 128 -r 3 2>/dev/null)
    echo "| $(basename "$f") | $(echo "$ln" | t_s pp512) | $la | $(echo "$pv" | t_s pp512) | $(echo "$ln" | t_s tg128) | $la_tg | $(echo "$pv" | t_s tg128) |"
done
