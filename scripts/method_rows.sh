#!/bin/sh
# LSI and outlier rows of the weight-method table (issue #9) at llama.cpp's Q2_K / Q3_K_M / Q4_K_M sizes:
# imatrix + LSI and GPTQ + LSI on llama.cpp's mix (same types, same size as the rows without), MQ + LSI and
# MQ + 0.5% FP16 outliers at the size of llama.cpp's imatrix file (--bpw = its data bits per weight; the
# outliers counted in the budget). Run after scripts/gptq_table.sh and mq_table.sh in the same WORK_DIR.
#
#   scripts/method_rows.sh WORK_DIR "ROW..."     rows: TYPE:im-lsi, TYPE:gptq-lsi, TYPE:mq-lsi, TYPE:mq-o05
#   e.g. scripts/method_rows.sh /work/kq "Q3_K_M:im-lsi Q3_K_M:mq-lsi Q2_K:mq-o05 Q4_K_M:mq-o05"
#
# LSI costs ~8 min per file on 2 cores; --calib-cache shares the Hessians and gradients between rows.
# Appends to method-rows.md; each file's measurement is kept beside it (FILE.kld, FILE.tg).
set -eu
WORK=$1; ROWS=$2
. "$(dirname "$0")/weight_table_common.sh"
cd "$WORK"
CAL="--calib $CALIB --calib-cache calibration-cache.gguf"
[ -f method-rows.md ] || printf '%s\n%s\n' '| type | method | MiB | data bpw | PPL | mean KLD | 99% KLD | same top-1 | tg128 t/s |' \
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |' > method-rows.md
for row in $ROWS; do
    t=${row%%:*}; kind=${row#*:}
    target=$(python3 "$ROOT/scripts/gguf_bits.py" "llama-im-$t.gguf" | cut -d' ' -f2)
    case $kind in
        im-lsi) label="Pivot imatrix + LSI"; args="--type $t --lsi $CAL" ;;
        gptq-lsi) label="Pivot GPTQ + LSI"; args="--type $t --method gptq --lsi $CAL" ;;
        mq-lsi) label="Pivot MQ + LSI + GPTQ"; args="--type $t --method mq --bpw $target --lsi $CAL" ;;
        mq-o05) label="Pivot MQ + GPTQ + 0.5% FP16 outliers (Pivot only)"; args="--type $t --method mq --bpw $target --outliers 0.5 $CAL" ;;
        *) echo "unknown row $row" >&2; exit 2 ;;
    esac
    file="pivot-$kind-$t.gguf"
    [ -f "$file" ] || "$PIVOT" quantize -t "$THREADS" -m "$MODEL" -o "$file" $args > "${file%.gguf}.log" 2>&1 < /dev/null
    [ -f "${file%.gguf}.kld" ] || kld_row "$file" > "${file%.gguf}.kld"
    [ -f "${file%.gguf}.tg" ] || "$PIVOT" bench -t "$THREADS" -m "$file" -p 0 -n 128 -r 3 2>/dev/null < /dev/null | awk -F'|' '/tg128/ {gsub(/ /, "", $9); print $9}' > "${file%.gguf}.tg"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$label" "$(mib "$file")" "$(python3 "$ROOT/scripts/gguf_bits.py" "$file" | cut -d' ' -f2)" \
        "$(sed 's/|/ | /g' "${file%.gguf}.kld")" "$(cat "${file%.gguf}.tg")" >> method-rows.md
done
cat method-rows.md
