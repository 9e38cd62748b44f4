#!/bin/sh
# Pivot-only points of the weight-method table (issue #9): 2.5, 2.8, 3.0 and 3.5 bits per projection
# weight, where GGUF has no type for 576-wide rows, with Pivot's group-wise types (Q2_G64 = 2.5,
# Q2_G32 = 3.0, Q3_G64 = 3.5 bits per weight): uniform imatrix and GPTQ files, and LLM-MQ
# allocations (gradient sensitivities, exact knapsack over standard + group-wise types, GPTQ
# rounding) at the same bits per projection weight, ± LSI and ± 0.5% FP16 outliers. References: the
# base (Q4_1) and llama.cpp's smallest file (Q2_K with an importance matrix).
#
#   scripts/extension_table.sh WORK_DIR [PHASES...]   (phases: quantize kld tg arc hellaswag table; default all)
#
# Run in the WORK_DIR of scripts/gptq_table.sh (it reads base-top1024.kld, pivot-imatrix.gguf and
# llama-im-Q2_K.gguf there). arc-easy and hellaswag run on the rows marked "tasks" (about 2 minutes per task
# and file on 2 cores). Each measurement is kept beside its file (FILE.kld, .tg, .arc, .hs), so
# phases can run separately; `table` writes extension-table.md from them.
set -eu
WORK=$1; shift
PHASES=${*:-"quantize kld tg arc hellaswag table"}
. "$(dirname "$0")/weight_table_common.sh"
BITS="python3 $ROOT/scripts/gguf_bits.py"
cd "$WORK"
CAL="--calib $CALIB --calib-cache calibration-cache.gguf"

# file | method | pivot quantize arguments (empty: not ours) | "tasks" to run the arc/hellaswag phases on it
ROWS="ext-mq-3.0.gguf|MQ + GPTQ, 3.0 bits/proj|--type Q2_G32 --method mq --bpw 3.0 --bpw-scope projections $CAL|tasks
ext-im-Q2_G64.gguf|imatrix, uniform Q2_G64|--type Q2_G64 --imatrix pivot-imatrix.gguf|tasks
ext-gptq-Q2_G64.gguf|GPTQ, uniform Q2_G64|--type Q2_G64 --method gptq $CAL|tasks
ext-mq-2.5.gguf|MQ + GPTQ, 2.5 bits/proj|--type Q2_G64 --method mq --bpw 2.5 --bpw-scope projections $CAL|tasks
ext-mq-2.8.gguf|MQ + GPTQ, 2.8 bits/proj|--type Q2_G64 --method mq --bpw 2.8 --bpw-scope projections $CAL|tasks
ext-gptq-Q2_G32.gguf|GPTQ, uniform Q2_G32|--type Q2_G32 --method gptq $CAL|tasks
ext-mq-o05-3.0.gguf|MQ + GPTQ + 0.5% FP16 outliers, 3.0 bits/proj (outliers counted)|--type Q2_G32 --method mq --bpw 3.0 --bpw-scope projections --outliers 0.5 $CAL|tasks
ext-gptq-Q3_G64.gguf|GPTQ, uniform Q3_G64|--type Q3_G64 --method gptq $CAL|tasks
ext-mq-3.5.gguf|MQ + GPTQ, 3.5 bits/proj|--type Q3_G64 --method mq --bpw 3.5 --bpw-scope projections $CAL|tasks
ext-mq-lsi-3.0.gguf|MQ + LSI + GPTQ, 3.0 bits/proj|--type Q2_G32 --method mq --bpw 3.0 --bpw-scope projections --lsi $CAL|tasks
ext-gq-2.8.gguf|GPTQ + second-order allocation (Σ E[x²]·ΔW²), 2.8 bits/proj|--type Q2_G64 --method gptq --bpw 2.8 --bpw-scope projections $CAL|tasks
ext-gq-3.0.gguf|GPTQ + second-order allocation, 3.0 bits/proj|--type Q2_G32 --method gptq --bpw 3.0 --bpw-scope projections $CAL|tasks
ext-gq-3.5.gguf|GPTQ + second-order allocation, 3.5 bits/proj|--type Q3_G64 --method gptq --bpw 3.5 --bpw-scope projections $CAL|tasks
llama-im-Q2_K.gguf|llama.cpp Q2_K imatrix (smallest standard file)||tasks
$MODEL|base (Q4_1, as shipped)||tasks"

each() {  # calls $1 FILE METHOD ARGS for every row
    echo "$ROWS" | while IFS='|' read -r file method args tasks; do "$1" "$file" "$method" "$args" "$tasks" < /dev/null; done
}
quantize() { [ -z "$3" ] || [ -f "$1" ] || "$PIVOT" quantize -t "$THREADS" -m "$MODEL" -o "$1" $3 > "${1%.gguf}.log" 2>&1; }
# Measurements are kept under the file's base name in WORK_DIR (the base model's directory is read-only).
out() { basename "$1" .gguf; }
kld() { [ -f "$(out "$1").kld" ] || kld_row "$1" > "$(out "$1").kld"; }
tg() { [ -f "$(out "$1").tg" ] || "$PIVOT" bench -t "$THREADS" -m "$1" -p 0 -n 128 -r 3 2>/dev/null | awk -F'|' '/tg128/ {gsub(/ /, "", $9); print $9}' > "$(out "$1").tg"; }
task() {  # file task suffix
    [ -f "$(out "$1").$3" ] || "$PIVOT" eval "$2" -t "$THREADS" -m "$1" --limit 500 2>&1 | sed -n 's/.*acc_norm \([0-9.]*\) ± \([0-9.]*\).*/\1 ± \2/p' | tail -1 > "$(out "$1").$3"
}
arc() { [ "$4" != tasks ] || task "$1" arc-easy arc; }
hellaswag() { [ "$4" != tasks ] || task "$1" hellaswag hs; }
cell() { [ -f "$(out "$1").$2" ] && sed 's/|/ | /g' "$(out "$1").$2" || echo "$3"; }
row() {
    set -- "$1" "$2" "$($BITS "$1")"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$(mib "$1")" "${3% *}" "${3#* }" "$(cell "$1" kld '| | |')" \
        "$(cell "$1" hs '')" "$(cell "$1" arc '')" "$(cell "$1" tg '')" >> extension-table.md
}
table() {
    echo "| method | MiB | bits/proj weight | data bpw | PPL | mean KLD | 99% KLD | same top-1 | hellaswag@500 acc_norm | arc-easy@500 acc_norm | tg128 t/s |" > extension-table.md
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" >> extension-table.md
    each row
    cat extension-table.md
}
for phase in $PHASES; do
    case $phase in
        quantize|kld|tg|arc|hellaswag) each "$phase" ;;
        table) table ;;
        *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
done
