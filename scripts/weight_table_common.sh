# Shared by the weight-table scripts (kquant_table.sh, gptq_table.sh, mq_table.sh, lsi_table.sh): paths, and
# `kld_row FILE` which prints "PPL|mean KLD|99% KLD|same top-1" of FILE against base-top1024.kld
# (wikitext-2 test, ctx 512, 40 windows), computing the base's top-1024 file first if needed.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=${PIVOT:-$ROOT/.build/release/pivot}
SHARED=${PIVOT_SHARED:-$ROOT/../shared}
MODEL=$SHARED/models/SmolLM2-135M-Instruct.Q4_1.gguf
CALIB=$SHARED/data/calibration.txt
TEXT=$SHARED/data/wikitext-2-raw-test.txt
THREADS=${THREADS:-2}

kld_row() {
    [ -f base-top1024.kld ] || "$PIVOT" kld -t "$THREADS" --base "$MODEL" -f "$TEXT" --ctx 512 --chunks 40 --save-base base-top1024.kld > /dev/null 2>&1
    kld=$("$PIVOT" kld -t "$THREADS" --base-file base-top1024.kld -m "$1" -f "$TEXT" --ctx 512 --chunks 40 2>/dev/null)
    printf '%s|%s|%s|%s' "$(echo "$kld" | awk '/^PPL\(compared\)/ {print $2}')" "$(echo "$kld" | awk '/^Mean/ {print $3, $4, $5}')" \
        "$(echo "$kld" | awk '/^99.0%/ {print $3}')" "$(echo "$kld" | awk '/^Same top/ {print $4, $5, $6, $7}')"
}

# MiB of a file, two decimals.
mib() { printf '%.2f' "$(echo "$(stat -c %s "$1") / 1048576" | bc -l)"; }
