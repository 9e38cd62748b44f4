#!/bin/bash
# Continuation of run.sh: the rest of the F16 rows with KLD, then the KIVI-2 rows PPL only (time).
cd /work/intact-bench
P=./pivot-bench; W=/work/shared/data/wikitext-2-raw-test.txt
while kill -0 29429 2>/dev/null; do sleep 5; done
kld() {
  name=$1; shift
  echo "== $name: pivot kld -f wikitext-2-raw-test.txt -c 512 --chunks 40 $*" >> results.txt
  flock /tmp/pivot-build.lock $P kld -f $W -c 512 --chunks 40 "$@" > out-$name.txt 2> err-$name.txt
  grep -E "PPL|Mean|Same" out-$name.txt >> results.txt; grep prefix err-$name.txt >> results.txt
}
ppl() {
  name=$1; shift
  echo "== $name: pivot perplexity -f wikitext-2-raw-test.txt -c 512 --chunks 40 $*" >> results.txt
  flock /tmp/pivot-build.lock $P perplexity -f $W -c 512 --chunks 40 "$@" > out-$name.txt 2> err-$name.txt
  grep -E "PPL|KV cache" out-$name.txt >> results.txt; grep prefix err-$name.txt >> results.txt
}
{ echo "== f16-bos-intact (run2.sh)"; grep -E "PPL|Mean|Same" out-f16-bos-intact.txt; grep prefix err-f16-bos-intact.txt; } >> results.txt
kld f16-chat-intact -m q4_0-chat.gguf --kv-type f16 --prefix-chat
ppl kivi-none -m q4_0.gguf --kv-type kivi --kv-bits 2
ppl kivi-chat-intact -m q4_0-chat.gguf --kv-type kivi --kv-bits 2 --prefix-chat
ppl kivi-bos-intact -m q4_0-bos.gguf --kv-type kivi --kv-bits 2 --prefix-bos
kld f16-chat-plain -m q4_0.gguf --kv-type f16 --prefix-chat
ppl kivi-chat-plain -m q4_0.gguf --kv-type kivi --kv-bits 2 --prefix-chat
ppl kivi-bos-plain -m q4_0.gguf --kv-type kivi --kv-bits 2 --prefix-bos
ppl f16-bos-self -m q4_0-selfbos.gguf --kv-type f16 --prefix-bos
echo DONE >> results.txt
