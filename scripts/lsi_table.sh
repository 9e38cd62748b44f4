#!/bin/sh
# LSI rows of the weight-method table (issue #9): Pivot GPTQ with LSI singular-value increments at
# llama.cpp's Q2_K / Q3_K_M / Q4_K_M mixes (same types, same size as the GPTQ rows). Run after
# scripts/gptq_table.sh in the same WORK_DIR (it reuses base-top1024.kld).
#
#   scripts/lsi_table.sh WORK_DIR [TYPES...]
set -eu
WORK=$1; shift
TYPES=${*:-"Q2_K Q3_K_M Q4_K_M"}
. "$(dirname "$0")/weight_table_common.sh"
cd "$WORK"
if [ ! -f lsi-table.md ]; then
    echo "| type | method | MiB | PPL | mean KLD | 99% KLD | same top-1 |" > lsi-table.md
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |" >> lsi-table.md
fi
for t in $TYPES; do
    [ -f "pivot-gptq-lsi-$t.gguf" ] || "$PIVOT" quantize -t "$THREADS" -m "$MODEL" --type "$t" --method gptq --lsi --calib "$CALIB" -o "pivot-gptq-lsi-$t.gguf" > "pivot-gptq-lsi-$t.log" 2>/dev/null
    printf '| %s | Pivot GPTQ + LSI | %s | %s |\n' "$t" "$(mib "pivot-gptq-lsi-$t.gguf")" "$(kld_row "pivot-gptq-lsi-$t.gguf" | sed 's/|/ | /g')" >> lsi-table.md
done
cat lsi-table.md
