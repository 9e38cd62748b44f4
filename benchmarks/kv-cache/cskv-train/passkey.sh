#!/bin/sh
# Passkey for the closed form and 100 trained steps, then one learning-rate variant (20 steps at 0.03).
cd /work/wt-cskv/benchmarks/kv-cache/cskv-train
P=/work/wt-cskv/.build-cskv/release/pivot
M=/work/shared/models/SmolLM2-135M-Instruct.Q4_1.gguf
T=/work/shared/data/wikitext-2-raw-test.txt
BASE="--kv-type cskv --kv-rank 0.5 --kv-latent-bits 4"
for row in closed: t100:"--kv-train-steps 100"; do
    name=${row%%:*}; flags=${row#*:}
    [ -s $name.passkey.json ] || $P eval passkey -t 2 -m $M --passkey-contexts 2048,4096,8192 --passkey-depths 0,50,100 --trials 1 --json $name.passkey.json $BASE $flags > $name.passkey 2>/dev/null
    echo "$name passkey done $(date)"
done
$P perplexity -t 2 -m $M -f $T --ctx 512 --chunks 20 $BASE --kv-train-steps 20 --kv-train-lr 0.03 > t20-lr03.ppl512 2> t20-lr03.train.log
echo "t20-lr03: $(grep PPL t20-lr03.ppl512)"
