#!/bin/sh
# LLM-MQ rows of the weight-method table (issue #9): for each of llama.cpp's Q2_K, Q3_K_M and
# Q4_K_M imatrix files, Pivot's mixed-precision file with the same tensor-data size (--bpw = that
# file's data bits per weight; the other tensors as --type), GPTQ rounding, with and without 0.5%
# sparse FP16 outliers (counted in the budget). Run after scripts/gptq_table.sh in the same WORK_DIR.
#
#   scripts/mq_table.sh WORK_DIR [TYPES...]     (OUTLIERS=no skips the outlier rows)
set -eu
WORK=$1; shift
TYPES=${*:-"Q2_K Q3_K_M Q4_K_M"}
OUTLIERS=${OUTLIERS:-yes}
. "$(dirname "$0")/weight_table_common.sh"
cd "$WORK"
# Bits per weight of the tensor data (outlier tensors' bytes counted, their elements not).
databpw() { python3 -c "import sys; from gguf import GGUFReader; r=GGUFReader(sys.argv[1]); ts=[t for t in r.tensors if not t.name.endswith(('.outlier_index','.outlier_value'))]; print(f'{sum(int(t.n_bytes) for t in r.tensors)*8/sum(int(t.n_elements) for t in ts):.4f}')" "$1"; }
row() {  # type, method, file
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$(mib "$3")" "$(databpw "$3")" "$(kld_row "$3" | sed 's/|/ | /g')" >> mq-table.md
}
if [ ! -f mq-table.md ]; then
    echo "| type | method | MiB | data bpw | PPL | mean KLD | 99% KLD | same top-1 |" > mq-table.md
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" >> mq-table.md
fi
for t in $TYPES; do
    target=$(databpw "llama-im-$t.gguf")
    echo "| $t | llama.cpp imatrix (reference size) | | $target | | | | |" >> mq-table.md
    [ -f "pivot-mq-$t.gguf" ] || "$PIVOT" quantize -t "$THREADS" -m "$MODEL" --type "$t" --method mq --bpw "$target" --calib "$CALIB" -o "pivot-mq-$t.gguf" > "pivot-mq-$t.log" 2>&1
    row "$t" "Pivot MQ (gradient sensitivities, exact allocation) + GPTQ" "pivot-mq-$t.gguf"
    [ "$OUTLIERS" = yes ] || continue
    [ -f "pivot-mq-o05-$t.gguf" ] || "$PIVOT" quantize -t "$THREADS" -m "$MODEL" --type "$t" --method mq --bpw "$target" --outliers 0.5 --calib "$CALIB" -o "pivot-mq-o05-$t.gguf" > "pivot-mq-o05-$t.log" 2>&1
    row "$t" "Pivot MQ + GPTQ + 0.5% FP16 outliers (Pivot only)" "pivot-mq-o05-$t.gguf"
done
cat mq-table.md
