#!/bin/sh
# The pruning table of issue #25: blocks −2/−4/−6, FFN −25/−50%, vocabulary, and two combinations
# (~49% and ~23% of the parameters kept), each without healing, with least squares and with
# distillation; PPL and KLD against the base (its dequantized Q4_1 weights, float activations;
# wikitext-2 test, ctx 512, 40 windows, as the quantization tables), and whether llama.cpp loads each file.
#
#   scripts/prune_table.sh WORK_DIR [LLAMA_BIN_DIR] [PHASES...]  (phases: prune distill kld llama table; tasks and
#   bench run only when named: zero-shot tasks at LIMIT items (default 200) on TASK_FILES, and pivot bench
#   pp512/tg128 on BENCH_FILES, both lists of file stems, `base` meaning the default model)
#
# Block order: one-shot drop-alone KLD on 4 windows of calibration text (`pivot prune --layers 6` prints
# it); the sets below are its lowest 2/4/6/18. The vocabulary keeps the tokens of wikitext-2 test +
# calibration.txt (the in-corpus text the PPL runs on). Distillation heals the least-squares file of the
# rows in DISTILL_ROWS (default: L4 F25 F50 C49 C23; each costs ~4 min here): `pivot distill` with the
# unpruned model as teacher, 20 updates × 4 × 256 tokens of calibration text, exactly what
# `pivot prune --heal distill --steps 20 --lr 3e-4` runs after its least squares.
set -eu
WORK=$1; LLAMA=${2:-}; shift; [ $# -gt 0 ] && shift
PHASES=${*:-"prune distill kld llama table"}
. "$(dirname "$0")/weight_table_common.sh"
mkdir -p "$WORK"; cd "$WORK"
L2=14,17; L4=12,13,14,17; L6=7,12,13,14,17,26
L18=3,4,5,6,7,9,12,13,14,15,16,17,18,19,21,22,25,26
VOCAB="--vocab-corpus $TEXT --vocab-corpus $CALIB"
# row:flags of the structural part (the combinations get the vocabulary after healing).
ROWS="L2:--drop-layers=$L2 L4:--drop-layers=$L4 L6:--drop-layers=$L6 F25:--ffn=0.25 F50:--ffn=0.5
C49:--drop-layers=$L6,--ffn=0.5 C23:--drop-layers=$L18,--ffn=0.75"
HEALS="none lsq distill"
structural() {  # ROW FLAGS HEAL -> ROW-HEAL.gguf (no vocabulary stage)
    out="$1-$3.gguf"; [ -f "$out" ] && return 0
    case $3 in
        distill) [ -f "$1-lsq.gguf" ] || return 0
            "$PIVOT" distill -t "$THREADS" --teacher "$MODEL" -m "$1-lsq.gguf" -o "$out" --data "$CALIB" --steps 20 --batch 4 -c 256 \
                --lr 3e-4 --warmup 2 --checkpoint-every 20 > "$1-$3.log" 2>&1 ;;
        *) "$PIVOT" prune -t "$THREADS" -m "$MODEL" -o "$out" $2 --heal "$3" --calib "$CALIB" --calib-chunks 32 > "$1-$3.log" 2>&1 ;;
    esac
}
with_vocab() { [ -f "$2" ] || "$PIVOT" prune -t "$THREADS" -m "$1" -o "$2" $VOCAB > "${2%.gguf}.log" 2>&1; }
each_row() {  # calls $1 ROW FLAGS
    for r in $ROWS; do
        row=${r%%:*}; f=$(echo "${r#*:}" | sed 's/,--/ --/g; s/=/ /g'); "$1" "$row" "$f"
    done
}
prune_row() { for h in none lsq; do structural "$1" "$2" "$h"; done; }
DISTILL_ROWS=${DISTILL_ROWS:-"L4 F25 F50 C49 C23"}
distill_row() { case " $DISTILL_ROWS " in *" $1 "*) structural "$1" "$2" distill ;; esac; }
if echo "$PHASES" | grep -qw prune; then
    [ -f vocab.gguf ] || "$PIVOT" prune -t "$THREADS" -m "$MODEL" -o vocab.gguf $VOCAB > vocab.log 2>&1
    each_row prune_row
fi
echo "$PHASES" | grep -qw distill && each_row distill_row
for c in C49 C23; do for h in $HEALS; do [ -f "$c-$h.gguf" ] && with_vocab "$c-$h.gguf" "$c-$h-vocab.gguf"; done; done
if echo "$PHASES" | grep -qw kld; then
    for f in *.gguf; do
        case $f in *vocab*) [ -f "${f%.gguf}.ppl" ] || "$PIVOT" perplexity -t "$THREADS" -m "$f" -f "$TEXT" -c 512 --chunks 40 2>/dev/null | grep '^PPL' > "${f%.gguf}.ppl" ;;
                   *) [ -f "${f%.gguf}.kld" ] || kld_row "$f" > "${f%.gguf}.kld" ;; esac
    done
    [ -f base.ppl ] || "$PIVOT" perplexity -t "$THREADS" -m "$MODEL" -f "$TEXT" -c 512 --chunks 40 2>/dev/null | grep '^PPL' > base.ppl
    for c in C49 C23; do for h in $HEALS; do [ -f "$c-$h.gguf" ] && { [ -f "$c-$h.ppl" ] || "$PIVOT" perplexity -t "$THREADS" -m "$c-$h.gguf" -f "$TEXT" -c 512 --chunks 40 2>/dev/null | grep '^PPL' > "$c-$h.ppl"; }; done; done
fi
if [ -n "$LLAMA" ] && echo "$PHASES" | grep -qw llama; then
    for f in *.gguf; do
        [ -f "${f%.gguf}.llama" ] || "$LLAMA/llama-perplexity" -m "$f" -f "$TEXT" -c 512 --chunks 2 -t "$THREADS" 2>&1 \
            | grep -o 'Final estimate: PPL = [0-9.]*' > "${f%.gguf}.llama" || echo "FAILED" > "${f%.gguf}.llama"
    done
fi
path_of() { [ "$1" = base ] && echo "$MODEL" || echo "$1.gguf"; }
if echo "$PHASES" | grep -qw tasks; then
    for f in ${TASK_FILES:-base L4-distill F25-distill C49-distill-vocab}; do
        [ -f "$f.tasks" ] || "$PIVOT" eval -t "$THREADS" -m "$(path_of "$f")" hellaswag arc_easy piqa winogrande boolq --limit "${LIMIT:-200}" 2>/dev/null \
            | grep '^|' > "$f.tasks"
    done
fi
if echo "$PHASES" | grep -qw bench; then
    for f in ${BENCH_FILES:-base L6-lsq F50-lsq vocab C49-lsq-vocab C23-lsq-vocab}; do
        [ -f "$f.bench" ] || "$PIVOT" bench -t "$THREADS" -m "$(path_of "$f")" -p 512 -n 128 -r 3 2>/dev/null | grep -E '^\| .*(pp|tg)' > "$f.bench"
    done
fi
if echo "$PHASES" | grep -qw table; then
    params() { "$PIVOT" inspect -m "$1" | awk '/^parameters/ {print $2}'; }
    echo "| row | healing | parameters (M) | MiB | PPL (llama-style, 40×512) | PPL (KLD run) | mean KLD | 99% KLD | same top-1 | llama.cpp loads |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    line() {  # LABEL HEAL FILE KLDFILE PPLFILE
        k=$( [ -f "$4" ] && cat "$4" || echo "–|–|–|–"); p=$( [ -f "$5" ] && awk '{print $3}' "$5" || echo "–")
        l=$( [ -f "${3%.gguf}.llama" ] && { grep -q FAILED "${3%.gguf}.llama" && echo no || echo yes; } || echo "–")
        echo "| $1 | $2 | $(params "$3") | $(mib "$3") | $p | $k | $l |"
    }
    line base – "$MODEL" /dev/null base.ppl
    for r in $ROWS; do row=${r%%:*}; for h in $HEALS; do [ -f "$row-$h.gguf" ] || continue
        case $row in C*) line "$row + vocabulary" "$h" "$row-$h-vocab.gguf" "$row-$h.kld" "$row-$h-vocab.ppl" ;;
                     *) line "$row" "$h" "$row-$h.gguf" "$row-$h.kld" "$row-$h.ppl" ;; esac
    done; done
    line vocabulary – vocab.gguf /dev/null vocab.ppl
fi
