#!/bin/sh
# The speed columns of the KV-cache table in BENCHMARKS.md: decode t/s (tg64) with 512, 2048 and
# 8000 tokens already in the cache, and prefill (pp512), for each cache configuration, 2 threads.
# Run with other jobs stopped; rows alternate per depth so drift on a shared host spreads evenly.
#
#   [REPS=3] [Q4_0=FILE] scripts/kv_speed.sh OUT_FILE [ROW...]
set -eu
OUT=$1; shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=${PIVOT_BIN:-$ROOT/.build/release/pivot}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
Q4_0=${Q4_0:-q4_0.gguf}
ROWS=${*:-"f32 f16 kivi-8 kivi-4 kivi-3 kivi-2 kivi-2-p1-o1 kivi-2-g64-p1-o2 cskv-50 cskv-25 cskv-50-l4"}
flags() {
    case $1 in
        f32|f16) echo "--kv-type $1" ;;
        kivi-8|kivi-4|kivi-3|kivi-2) echo "--kv-type kivi --kv-bits ${1#kivi-}" ;;
        kivi-2-p1) echo "--kv-type kivi --kv-bits 2 --pivot 1" ;;
        kivi-2-o1) echo "--kv-type kivi --kv-bits 2 --outlier-tokens 1" ;;
        kivi-2-p1-o1) echo "--kv-type kivi --kv-bits 2 --pivot 1 --outlier-tokens 1" ;;
        # 4-bit weights: $Q4_0 is the Q4_0 file scripts/kv_table.sh makes (WORK_DIR/q4_0.gguf).
        q4_0-f16) echo "-m $Q4_0 --kv-type f16" ;;
        q4_0-kivi-2-p1) echo "-m $Q4_0 --kv-type kivi --kv-bits 2 --pivot 1" ;;
        q4_0-kivi-2-p1-intact) echo "-m $Q4_0 --kv-type kivi --kv-bits 2 --pivot 1 --intact-from SmolLM2-135M-Instruct.Q4_1.gguf" ;;
        kivi-2-g64-p1-o2) echo "--kv-type kivi --kv-bits 2 --kv-group 64 --pivot 1 --outlier-tokens 2" ;;
        cskv-50) echo "--kv-type cskv --kv-rank 0.5" ;;
        cskv-25) echo "--kv-type cskv --kv-rank 0.25" ;;
        cskv-50-l4) echo "--kv-type cskv --kv-rank 0.5 --kv-latent-bits 4" ;;
    esac
}
: > "$OUT"
for r in $ROWS; do "$PIVOT" bench -t "$THREADS" -p 512 -n 0 -r $REPS $(flags "$r") 2>/dev/null | grep '| pp' | sed "s/^/$r /" >> "$OUT"; done
for depth in 512 2048 8000; do
    for r in $ROWS; do "$PIVOT" bench -t "$THREADS" -p 0 -n 64 -d $depth -r $REPS $(flags "$r") 2>/dev/null | grep '| tg' | sed "s/^/$r /" >> "$OUT"; done
done
