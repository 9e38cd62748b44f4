#!/bin/sh
# The quality columns of the KV-cache table in BENCHMARKS.md, for each cache configuration of the
# default model (int8 activations): wikitext-2 test PPL at ctx 512 (20 windows) and ctx 2048
# (5 windows), exact KLD against the same model with an F16 cache (ctx 512, 20 windows, both
# sides run), and passkey retrieval at 2k/4k/8k (depths 0/50/100 %, one key each).
# Passkey (the slowest column: ~42k prompt tokens per row) runs for the rows in $PASSKEY_ROWS.
# Speed is measured separately with other jobs stopped (scripts/kv_speed.sh).
#
#   scripts/kv_table.sh WORK_DIR [ROW...]      ROW: one of the names below (default: all)
set -eu
WORK=$1; shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=${PIVOT_BIN:-$ROOT/.build/release/pivot}
SHARED=${PIVOT_SHARED:-$ROOT/../shared}
TEXT=$SHARED/data/wikitext-2-raw-test.txt
THREADS=${THREADS:-1}
MODEL=${MODEL:-$SHARED/models/SmolLM2-135M-Instruct.Q4_1.gguf}
Q4_0=${Q4_0:-$WORK/q4_0.gguf}
mkdir -p "$WORK"; cd "$WORK"
[ -f "$Q4_0" ] || "$PIVOT" quantize -m "$MODEL" -o "$Q4_0" --type Q4_0 > /dev/null 2>&1

flags() {
    case $1 in
        f32) echo "--kv-type f32" ;;
        f16) echo "--kv-type f16" ;;
        kivi-8|kivi-4|kivi-3|kivi-2) echo "--kv-type kivi --kv-bits ${1#kivi-}" ;;
        kivi-2-p1) echo "--kv-type kivi --kv-bits 2 --pivot 1" ;;
        kivi-2-p4) echo "--kv-type kivi --kv-bits 2 --pivot 4" ;;
        kivi-2-o1) echo "--kv-type kivi --kv-bits 2 --outlier-tokens 1" ;;
        kivi-2-p1-o1) echo "--kv-type kivi --kv-bits 2 --pivot 1 --outlier-tokens 1" ;;
        kivi-2-g64) echo "--kv-type kivi --kv-bits 2 --kv-group 64" ;;
        kivi-2-g64-p1-o2) echo "--kv-type kivi --kv-bits 2 --kv-group 64 --pivot 1 --outlier-tokens 2" ;;
        # 4-bit weights (Q4_0 requantized from the default model by `pivot quantize`, in $Q4_0), pivots
        # from the model's own int8 run or, IntactKV, from the unquantized base with float activations.
        q4_0-f16) echo "-m $Q4_0 --kv-type f16" ;;
        q4_0-kivi-2-p1) echo "-m $Q4_0 --kv-type kivi --kv-bits 2 --pivot 1" ;;
        q4_0-kivi-2-p1-intact) echo "-m $Q4_0 --kv-type kivi --kv-bits 2 --pivot 1 --intact-from $MODEL" ;;
        # CSKV: factors calibrated once on calibration.txt (cached in ~/.cache/pivot/cskv).
        cskv-50) echo "--kv-type cskv --kv-rank 0.5" ;;
        cskv-25) echo "--kv-type cskv --kv-rank 0.25" ;;
        cskv-50-l4) echo "--kv-type cskv --kv-rank 0.5 --kv-latent-bits 4" ;;
        *) echo "unknown row $1" >&2; exit 1 ;;
    esac
}

PASSKEY_ROWS=${PASSKEY_ROWS:-"f16 kivi-4 kivi-2 kivi-2-p1-o1 kivi-2-g64-p1-o2"}
ROWS=${*:-"f32 f16 kivi-8 kivi-4 kivi-3 kivi-2 kivi-2-p1 kivi-2-o1 kivi-2-p1-o1 kivi-2-g64-p1-o2 q4_0-f16 q4_0-kivi-2-p1 q4_0-kivi-2-p1-intact cskv-50 cskv-25 cskv-50-l4"}
for r in $ROWS; do
    f=$(flags "$r")
    [ -s "$r.ppl512" ] || "$PIVOT" perplexity -t "$THREADS" -m "$MODEL" -f "$TEXT" --ctx 512 --chunks 20 $f > "$r.ppl512" 2>/dev/null
    [ -s "$r.ppl2048" ] || "$PIVOT" perplexity -t "$THREADS" -m "$MODEL" -f "$TEXT" --ctx 2048 --chunks 5 $f > "$r.ppl2048" 2>/dev/null
    [ -s "$r.kld" ] || "$PIVOT" kld -t "$THREADS" --base "$MODEL" --base-precision int8 --base-kv-type f16 -m "$MODEL" -f "$TEXT" --ctx 512 --chunks 20 $f > "$r.kld" 2>/dev/null
    case " $PASSKEY_ROWS " in *" $r "*) ;; *) echo "$r done (no passkey)"; continue ;; esac
    [ -s "$r.passkey.json" ] || "$PIVOT" eval passkey -t "$THREADS" -m "$MODEL" --passkey-contexts 2048,4096,8192 --passkey-depths 0,50,100 --trials 1 --json "$r.passkey.json" $f > "$r.passkey" 2>/dev/null
    echo "$r done"
done
