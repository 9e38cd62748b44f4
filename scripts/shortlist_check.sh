#!/bin/sh
# Issue #25's shortlist figures: greedy output of 20 prompts (64 tokens each) with the full head, the exact
# shortlist and the lossy one; how many outputs are identical; the exact check's fire rate (from
# `pivot generate`'s summary line); the lossy sets' KLD and top-1 agreement (`pivot kld --shortlist-sizes`).
#
#   scripts/shortlist_check.sh WORK_DIR [SIZES]   (default sizes: 4096 8192 16384)
set -eu
WORK=$1; SIZES=${2:-"4096 8192 16384"}
. "$(dirname "$0")/weight_table_common.sh"
mkdir -p "$WORK"; cd "$WORK"
cat > prompts.txt <<'P'
The capital of France is
Once upon a time, in a small village,
The best way to learn a new language is
Photosynthesis is the process by which
In 1969, the first humans landed on
def fibonacci(n):
The stock market fell sharply today after
Here is a recipe for chocolate chip cookies:
The three laws of motion are
Water boils at 100 degrees Celsius because
My favourite book is
The Roman Empire began to decline when
To install Python on Linux, first
The main causes of climate change are
Dear Sir or Madam, I am writing to
A neural network is a
The quick brown fox
In mathematics, a prime number is
The football match ended with
Tokyo is famous for
P
run() {  # LABEL FLAGS
    i=0; : > "$1.out"; : > "$1.summary"
    while IFS= read -r p; do
        i=$((i + 1))
        "$PIVOT" generate -t "$THREADS" -m "$MODEL" -p "$p" -n 64 --temp 0 $2 2> err.txt | md5sum >> "$1.out"
        grep '^shortlist' err.txt >> "$1.summary" || true
    done < prompts.txt
}
run full ""
for n in $SIZES; do run "exact-$n" "--shortlist $n"; run "lossy-$n" "--shortlist $n --shortlist-lossy"; done
echo "| setting | prompts with greedy output identical to the full head (of 20) | exact check |"
echo "| --- | ---: | --- |"
for n in $SIZES; do for m in exact lossy; do
    same=$(paste -d' ' full.out "$m-$n.out" | awk '$1 == $3' | wc -l)
    fired=$(awk '{split($0, a, "could win on "); split(a[2], b, " "); w += b[1]; split(a[2], c, "of "); split(c[2], d, " "); r += d[1]} END {if (r) printf "outside tokens could win on %d of %d rows", w, r}' "$m-$n.summary")
    echo "| $m $n | $same | ${fired:-–} |"
done; done
"$PIVOT" kld -t "$THREADS" -m "$MODEL" -f "$TEXT" -c 512 --chunks 40 --shortlist-sizes "$(echo $SIZES | tr ' ' ',')" 2>/dev/null | grep '^|'
