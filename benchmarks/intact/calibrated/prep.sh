#!/bin/bash
# Calibrated IntactKV (issue #22): the quantized files, intact and calibrated pivots.
cd /work/icalib
P="./pivot-prep"; T="-t 1"; C=/work/shared/data/calibration.txt
BASE=/work/shared/models/SmolLM2-135M-Instruct.Q4_1.gguf
log() { echo "$(date +%H:%M:%S) $*" >> results.txt; }
run() { name=$1; shift; log "== $name: $*"; "$@" > out-$name.txt 2> err-$name.txt; log "rc=$?"; grep -E "PPL|Mean|Same|KV cache|MiB" out-$name.txt >> results.txt; grep -E "prefix|loss|calibrat|MiB" err-$name.txt | tail -3 >> results.txt; }
[ -f gptq-Q3_K_M.gguf ] || run q3km $P quantize -m $BASE -o gptq-Q3_K_M.gguf --type Q3_K_M --method gptq --calib $C
[ -f gptq-Q3_G64.gguf ] || run q3g64 $P quantize -m $BASE -o gptq-Q3_G64.gguf --type Q3_G64 --method gptq --calib $C
[ -f q4_0.gguf ] || cp /work/intact-bench/q4_0.gguf q4_0.gguf
for m in q4_0 gptq-Q3_K_M gptq-Q3_G64; do
  [ -f $m-intact.gguf ] || run $m-intact $P intact -m $m.gguf --from $BASE --prefix-bos -o $m-intact.gguf
  [ -f $m-cal.gguf ] || run $m-cal $P intact $T -m $m.gguf --from $BASE --prefix-bos --calibrate --data $C --steps 20 --batch 4 -c 256 -o $m-cal.gguf
done
log PREP DONE
