#!/bin/sh
# The weight-method table of BENCHMARKS.md (issue #9): at the sizes of llama.cpp's Q2_K, Q3_K_M and
# Q4_K_M files, llama.cpp's quantizer with and without an importance matrix beside Pivot's RTN,
# imatrix and GPTQ files (same llama.cpp mix, so the same tensor types and size); `pivot kld`
# against the base (the default model's dequantized Q4_1 weights, float activations), wikitext-2
# test, ctx 512, 40 windows.
#
#   scripts/gptq_table.sh LLAMA_BIN_DIR WORK_DIR [TYPES...]
#
# Needs llama-quantize and llama-imatrix in LLAMA_BIN_DIR (built outside the repository) and a
# release build of pivot. Writes WORK_DIR/gptq-table.md.
set -eu
LLAMA=$1; WORK=$2; shift 2
TYPES=${*:-"Q2_K Q3_K_M Q4_K_M"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=$ROOT/.build/release/pivot
SHARED=${PIVOT_SHARED:-$ROOT/../shared}
MODEL=$SHARED/models/SmolLM2-135M-Instruct.Q4_1.gguf
CALIB=$SHARED/data/calibration.txt
TEXT=$SHARED/data/wikitext-2-raw-test.txt
THREADS=${THREADS:-2}
mkdir -p "$WORK"; cd "$WORK"

[ -f pivot-imatrix.gguf ] || "$PIVOT" imatrix -t "$THREADS" -m "$MODEL" -f "$CALIB" --calib-chunks 100 -o pivot-imatrix.gguf > /dev/null 2>&1
[ -f llama-imatrix.gguf ] || "$LLAMA/llama-imatrix" -m "$MODEL" -f "$CALIB" --chunks 100 -c 512 -t "$THREADS" -o llama-imatrix.gguf > llama-imatrix.log 2>&1
[ -f base-top1024.kld ] || "$PIVOT" kld -t "$THREADS" --base "$MODEL" -f "$TEXT" --ctx 512 --chunks 40 --save-base base-top1024.kld > /dev/null 2>&1

row() {  # type, method, file
    size=$(stat -c %s "$3")
    kld=$("$PIVOT" kld -t "$THREADS" --base-file base-top1024.kld -m "$3" -f "$TEXT" --ctx 512 --chunks 40 2>/dev/null)
    mean=$(echo "$kld" | awk '/^Mean/ {print $3, $4, $5}')
    p99=$(echo "$kld" | awk '/^99.0%/ {print $3}')
    top=$(echo "$kld" | awk '/^Same top/ {print $4, $5, $6, $7}')
    ppl=$(echo "$kld" | awk '/^PPL\(compared\)/ {print $2}')
    bpw=$(python3 -c "import sys; from gguf import GGUFReader; r=GGUFReader(sys.argv[1]); n=sum(int(t.n_elements) for t in r.tensors); print(f'{$size*8/n:.3f}')" "$3")
    printf '| %s | %s | %.2f | %s | %s | %s | %s | %s |\n' "$1" "$2" "$(echo "$size / 1048576" | bc -l)" "$bpw" "$ppl" "$mean" "$p99" "$top" >> gptq-table.md
}

echo "| type | method | MiB | bpw | PPL | mean KLD | 99% KLD | same top-1 |" > gptq-table.md
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" >> gptq-table.md
for t in $TYPES; do
    [ -f "llama-$t.gguf" ] || "$LLAMA/llama-quantize" --allow-requantize "$MODEL" "llama-$t.gguf" "$t" > /dev/null 2>&1
    [ -f "llama-im-$t.gguf" ] || "$LLAMA/llama-quantize" --allow-requantize --imatrix llama-imatrix.gguf "$MODEL" "llama-im-$t.gguf" "$t" > /dev/null 2>&1
    [ -f "pivot-im-$t.gguf" ] || "$PIVOT" quantize -t "$THREADS" -m "$MODEL" --type "$t" --imatrix pivot-imatrix.gguf -o "pivot-im-$t.gguf" > /dev/null 2>&1
    [ -f "pivot-gptq-$t.gguf" ] || "$PIVOT" quantize -t "$THREADS" -m "$MODEL" --type "$t" --method gptq --calib "$CALIB" -o "pivot-gptq-$t.gguf" > "pivot-gptq-$t.log" 2>&1
    row "$t" "llama.cpp RTN (= Pivot RTN, byte-identical)" "llama-$t.gguf"
    row "$t" "llama.cpp imatrix" "llama-im-$t.gguf"
    row "$t" "Pivot imatrix" "pivot-im-$t.gguf"
    row "$t" "Pivot GPTQ (act-order, 128 × 512 calibration tokens)" "pivot-gptq-$t.gguf"
done
cat gptq-table.md
