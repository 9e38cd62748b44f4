#!/bin/sh
# The weight-only table of issue #26: at the sizes of llama.cpp's Q4_K_M, Q3_K_M and Q2_K files and at
# Pivot's group-wise 3.0 / 3.5-bit points (Q2_G32, Q3_G64), RTN, imatrix, AWQ, GPTQ, AWQ+GPTQ, MQ and
# AWQ+MQ files of the default model; PPL and KLD against the base (its dequantized Q4_1 weights,
# float activations; wikitext-2 test, ctx 512, 40 windows), hellaswag@500, and whether llama.cpp loads
# each standard file (llama-perplexity over 2 windows).
#
#   scripts/awq_table.sh WORK_DIR [LLAMA_BIN_DIR] [PHASES...]  (phases: quantize kld hellaswag llama table)
#
# Calibration: shared/data/calibration.txt, 128 chunks of 512 tokens (the importance matrix of the
# imatrix rows too); the Hessians and activation statistics are cached in WORK_DIR. Each measurement is
# kept beside its file (FILE.kld, .hs, .llama), so phases can run separately; `table` writes awq-table.md.
set -eu
WORK=$1; LLAMA=${2:-}; shift; [ $# -gt 0 ] && shift
PHASES=${*:-"quantize kld hellaswag llama table"}
. "$(dirname "$0")/weight_table_common.sh"
BITS="python3 $ROOT/scripts/gguf_bits.py"
mkdir -p "$WORK"; cd "$WORK"
CAL="--calib $CALIB --calib-cache calibration-cache.gguf"
# point:method cells. At the Q4_K_M size MQ returns the base file itself (Q4_1 costs it nothing: the base
# is the dequantized Q4_1 file), so it has no row there; AWQ+MQ runs at one point.
# Q3_G64 has no RTN and MQ rows (left out of the 2026-12-06 sitting for time).
CELLS=${CELLS:-"$(for p in Q4_K_M Q3_K_M Q2_K Q2_G32 Q3_G64; do for m in rtn imatrix awq gptq awq+gptq mq; do
    case "$p:$m" in Q4_K_M:mq|Q3_G64:rtn|Q3_G64:mq) ;; *) echo "$p:$m" ;; esac; done
    if [ "$p" = Q3_K_M ]; then echo "$p:awq+mq"; fi; done)"}

[ -f pivot-imatrix.gguf ] || "$PIVOT" imatrix -t "$THREADS" -m "$MODEL" -f "$CALIB" --calib-chunks 128 -o pivot-imatrix.gguf > /dev/null 2>&1

# MQ's budget: the data bits per weight of the imatrix file of the same mix (standard points), or
# the group-wise type's bits per projection weight.
budget() {
    case $1 in
        Q2_G32) echo "--bpw 3.0 --bpw-scope projections" ;;
        Q3_G64) echo "--bpw 3.5 --bpw-scope projections" ;;
        *) echo "--bpw $($BITS "awq-imatrix-$1.gguf" | cut -d' ' -f2)" ;;
    esac
}
args() {  # point method
    case $2 in
        rtn) echo "--type $1" ;;
        imatrix) echo "--type $1 --imatrix pivot-imatrix.gguf" ;;
        mq|awq+mq) echo "--type $1 --method $2 $(budget "$1") $CAL" ;;
        *) echo "--type $1 --method $2 $CAL" ;;
    esac
}
file() { echo "awq-$2-$1.gguf" | tr '+' '_'; }
each() {  # calls $1 POINT METHOD FILE for every cell
    for c in $CELLS; do "$1" "${c%%:*}" "${c#*:}" "$(file "${c%%:*}" "${c#*:}")" < /dev/null; done
}
quantize() { [ -f "$3" ] || "$PIVOT" quantize -t "$THREADS" -m "$MODEL" -o "$3" $(args "$1" "$2") > "${3%.gguf}.log" 2>&1; }
kld() { [ ! -f "$3" ] || [ -s "${3%.gguf}.kld" ] || kld_row "$3" > "${3%.gguf}.kld"; }
hellaswag() {
    [ ! -f "$3" ] || [ -s "${3%.gguf}.hs" ] || "$PIVOT" eval hellaswag -t "$THREADS" -m "$3" --limit 500 2>&1 \
        | sed -n 's/.*acc_norm \([0-9.]*\) ± \([0-9.]*\).*/\1 ± \2/p' | tail -1 > "${3%.gguf}.hs"
}
llama() {  # standard files only: does llama.cpp load and run it?
    case $1 in Q2_G32|Q3_G64) return ;; esac
    [ -n "$LLAMA" ] && [ -f "$3" ] || return 0
    [ -s "${3%.gguf}.llama" ] || { "$LLAMA/llama-perplexity" -m "$3" -f "$TEXT" -c 512 --chunks 2 -t "$THREADS" 2>&1 \
        | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' > "${3%.gguf}.llama"; }
}
cell() { [ -s "$1" ] && sed 's/|/ | /g' "$1" || echo "$2"; }
row() {
    if [ ! -f "$3" ]; then printf '| %s | %s | not made in this sitting | | | | | | | |\n' "$1" "$2" >> awq-table.md; return; fi
    bits=$($BITS "$3")
    case $1 in Q2_G32|Q3_G64) loads="Pivot only (group-wise type)" ;; *) loads=$(cell "${3%.gguf}.llama" "") ;; esac
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$(mib "$3")" "${bits% *}" "$(cell "${3%.gguf}.kld" '| | |')" \
        "$(cell "${3%.gguf}.hs" '')" "$loads" >> awq-table.md
}
table() {
    echo "| point | method | MiB | bits/proj weight | PPL | mean KLD | 99% KLD | same top-1 | hellaswag@500 acc_norm | llama.cpp PPL (2 windows) |" > awq-table.md
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |" >> awq-table.md
    each row
    cat awq-table.md
}
for phase in $PHASES; do
    case $phase in
        quantize|kld|hellaswag|llama) each "$phase" ;;
        table) table ;;
        *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
done
