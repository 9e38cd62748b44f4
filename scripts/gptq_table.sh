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
. "$(dirname "$0")/weight_table_common.sh"
mkdir -p "$WORK"; cd "$WORK"

[ -f pivot-imatrix.gguf ] || "$PIVOT" imatrix -t "$THREADS" -m "$MODEL" -f "$CALIB" --calib-chunks 100 -o pivot-imatrix.gguf > /dev/null 2>&1
[ -f llama-imatrix.gguf ] || "$LLAMA/llama-imatrix" -m "$MODEL" -f "$CALIB" --chunks 100 -c 512 -t "$THREADS" -o llama-imatrix.gguf > llama-imatrix.log 2>&1

row() {  # type, method, file
    bpw=$(python3 -c "import os, sys; from gguf import GGUFReader; r=GGUFReader(sys.argv[1]); n=sum(int(t.n_elements) for t in r.tensors); print(f'{os.path.getsize(sys.argv[1])*8/n:.3f}')" "$3")
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$(mib "$3")" "$bpw" "$(kld_row "$3" | sed 's/|/ | /g')" >> gptq-table.md
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
