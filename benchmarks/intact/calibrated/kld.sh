#!/bin/bash
# Calibrated IntactKV (issue #22): KLD rows against one stored base (same prefix on both sides).
cd /work/icalib
P=./pivot-kld; T="-t 1"; W=/work/shared/data/wikitext-2-raw-test.txt
log() { echo "$(date +%H:%M:%S) $*" >> results.txt; }
run() { name=$1; shift; log "== $name: $*"; "$@" > out-$name.txt 2> err-$name.txt; log "rc=$?"; grep -E "PPL|Mean|Same|KV cache|MiB" out-$name.txt >> results.txt; grep -E "prefix|loss|calibrat" err-$name.txt | tail -3 >> results.txt; }
[ -f base-bos.kld ] || run base $P kld $T --save-base base-bos.kld --prefix-bos -f $W -c 512 --chunks 40
K="kld $T --base-file base-bos.kld -f $W -c 512 --chunks 40 --prefix-bos"
for m in q4_0 gptq-Q3_K_M gptq-Q3_G64; do
  [ $m = q4_0 ] || while pgrep -f prep.sh > /dev/null; do sleep 10; done
  run f16-$m-plain $P $K --kv-type f16 -m $m.gguf
  run f16-$m-intact $P $K --kv-type f16 -m $m-intact.gguf
  run f16-$m-cal $P $K --kv-type f16 -m $m-cal.gguf
done
for m in q4_0; do
  run kivi-$m-plain $P $K --kv-type kivi --kv-bits 2 -m $m.gguf
  run kivi-$m-intact $P $K --kv-type kivi --kv-bits 2 -m $m-intact.gguf
  run kivi-$m-cal $P $K --kv-type kivi --kv-bits 2 -m $m-cal.gguf
done
log KLD DONE
