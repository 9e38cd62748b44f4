#!/bin/sh
# CSKV 50% + 4-bit latents: closed form vs trained factors (PPL ctx 512 / 2048; passkey later).
cd /work/wt-cskv/benchmarks/kv-cache/cskv-train
P=/work/wt-cskv/.build-cskv/release/pivot
M=/work/shared/models/SmolLM2-135M-Instruct.Q4_1.gguf
T=/work/shared/data/wikitext-2-raw-test.txt
BASE="--kv-type cskv --kv-rank 0.5 --kv-latent-bits 4"
run() { # name, extra flags
    name=$1; shift
    [ -s $name.ppl512 ] || $P perplexity -t 2 -m $M -f $T --ctx 512 --chunks 20 $BASE "$@" > $name.ppl512 2> $name.train.log
    [ -s $name.ppl2048 ] || $P perplexity -t 2 -m $M -f $T --ctx 2048 --chunks 5 $BASE "$@" > $name.ppl2048 2>/dev/null
    echo "$name: $(grep PPL $name.ppl512) / $(grep PPL $name.ppl2048)"
}
run closed
run t20 --kv-train-steps 20
run t100 --kv-train-steps 100
run t100-lr003 --kv-train-steps 100 --kv-train-lr 0.003
# passkey: closed form and the trained rows (pass "passkey" as $1)
[ "${1:-}" = passkey ] || exit 0
for row in closed:"" t20:"--kv-train-steps 20" t100:"--kv-train-steps 100"; do
    name=${row%%:*}; flags=${row#*:}
    [ -s $name.passkey.json ] || $P eval passkey -t 2 -m $M --passkey-contexts 2048,4096,8192 --passkey-depths 0,50,100 --trials 1 --json $name.passkey.json $BASE $flags > $name.passkey 2>/dev/null
    echo "$name passkey: $(tail -3 $name.passkey | tr '\n' ' ')"
done
