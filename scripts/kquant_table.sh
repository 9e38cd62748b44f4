#!/bin/sh
# The K-quant table of BENCHMARKS.md: for each type, the file Pivot writes and the one llama.cpp
# writes from the same input, without and with an importance matrix from the same calibration
# text; size, bits per weight, and `pivot kld` against the unquantized base (the default model's
# dequantized weights, float activations) over wikitext-2 test, ctx 512, 40 windows — which also
# prints the file's perplexity. Imatrix rows for Q2_K, Q3_K_M and Q4_K_M.
#
#   scripts/kquant_table.sh LLAMA_BIN_DIR WORK_DIR [TYPES...]
#
# Needs llama-quantize and llama-imatrix in LLAMA_BIN_DIR (built outside the repository) and a
# release build of pivot. Writes WORK_DIR/kquant-table.md; speed is measured separately
# (scripts/kquant_speed.sh) with other jobs stopped.
set -eu
LLAMA=$1; WORK=$2; shift 2
TYPES=${*:-"Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K Q8_0"}
. "$(dirname "$0")/weight_table_common.sh"  # ROOT, PIVOT, MODEL, CALIB, TEXT, THREADS
mkdir -p "$WORK"; cd "$WORK"

[ -f pivot-imatrix.gguf ] || "$PIVOT" imatrix -t "$THREADS" -m "$MODEL" -f "$CALIB" --calib-chunks 100 -o pivot-imatrix.gguf
[ -f llama-imatrix.gguf ] || "$LLAMA/llama-imatrix" -m "$MODEL" -f "$CALIB" --chunks 100 -c 512 -t "$THREADS" -o llama-imatrix.gguf > llama-imatrix.log 2>&1

# The base's top-1024 log-probabilities per token, computed once (KLD is then a lower bound, ~95%
# of the exact value on this model: see EVAL.md); the PPL column is exact.
[ -f base-top1024.kld ] || "$PIVOT" kld -t "$THREADS" --base "$MODEL" -f "$TEXT" --ctx 512 --chunks 40 --save-base base-top1024.kld > /dev/null 2>&1

row() {  # writer, file, type, imatrix
    size=$(stat -c %s "$2")
    kld=$("$PIVOT" kld -t "$THREADS" --base-file base-top1024.kld -m "$2" -f "$TEXT" --ctx 512 --chunks 40 2>/dev/null)
    mean=$(echo "$kld" | awk '/^Mean/ {print $3, $4, $5}')
    top=$(echo "$kld" | awk '/^Same top/ {print $4, $5, $6, $7}')
    ppl=$(echo "$kld" | awk '/^PPL\(compared\)/ {print $2}')
    bpw=$(python3 -c "import sys; from gguf import GGUFReader; r=GGUFReader(sys.argv[1]); n=sum(int(t.n_elements) for t in r.tensors); print(f'{$size*8/n:.2f}')" "$2")
    printf '| %s | %s | %s | %.2f | %s | %s | %s | %s |\n' "$3" "$1" "$4" "$(echo "$size / 1048576" | bc -l)" "$bpw" "$ppl" "$mean" "$top" >> kquant-table.md
}

echo "| type | written by | imatrix | MiB | bpw | PPL | mean KLD | same top-1 |" > kquant-table.md
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |" >> kquant-table.md
for t in $TYPES; do
    "$PIVOT" quantize -t "$THREADS" -m "$MODEL" --type "$t" -o "pivot-$t.gguf" > /dev/null 2>&1
    "$LLAMA/llama-quantize" --allow-requantize "$MODEL" "llama-$t.gguf" "$t" > /dev/null 2>&1
    same=$(python3 "$ROOT/scripts/check_gguf_interop.py" same "llama-$t.gguf" "pivot-$t.gguf" | tail -n +2 | head -1)
    row "Pivot = llama.cpp ($same)" "pivot-$t.gguf" "$t" "no"
    case "$t" in Q2_K|Q3_K_M|Q4_K_M) weighted=yes ;; *) weighted=no ;; esac  # where an imatrix matters most
    if [ "$weighted" = yes ]; then
        "$PIVOT" quantize -t "$THREADS" -m "$MODEL" --type "$t" --imatrix pivot-imatrix.gguf -o "pivot-im-$t.gguf" > /dev/null 2>&1
        "$LLAMA/llama-quantize" --allow-requantize --imatrix llama-imatrix.gguf "$MODEL" "llama-im-$t.gguf" "$t" > /dev/null 2>&1
        row "Pivot" "pivot-im-$t.gguf" "$t" "Pivot's"
        row "llama.cpp" "llama-im-$t.gguf" "$t" "llama.cpp's"
    fi
done
cat kquant-table.md
