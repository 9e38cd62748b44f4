#!/bin/sh
# The tg128 column of the weight-method tables: `pivot bench -p 0 -n 128 -r 3` (2 threads) for each
# file, in two alternating rounds (the host drifts), printed as "| file | round 1 | round 2 |".
# Run with nothing else on the machine.   scripts/tg_column.sh FILE...
set -eu
. "$(dirname "$0")/weight_table_common.sh"
tg() { "$PIVOT" bench -t "$THREADS" -m "$1" -p 0 -n 128 -r 3 2>/dev/null < /dev/null | awk -F'|' '/tg128/ {gsub(/ /, "", $9); print $9}'; }
for f in "$@"; do echo "$f $(tg "$f")"; done > /tmp/tg-round1.$$
for f in "$@"; do echo "$(tg "$f")"; done > /tmp/tg-round2.$$
paste -d' ' /tmp/tg-round1.$$ /tmp/tg-round2.$$ | awk '{printf "| %s | %s | %s |\n", $1, $2, $3}'
rm -f /tmp/tg-round1.$$ /tmp/tg-round2.$$
