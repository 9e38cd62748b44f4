#!/bin/bash
# IntactKV figures: Q4_0 (pivot quantize of the default Q4_1) against the default model (float activations, F32 cache).
cd /work/intact-bench
P=./pivot-bench; W=/work/shared/data/wikitext-2-raw-test.txt
run() {
  name=$1; shift
  echo "== $name: pivot kld -f wikitext-2-raw-test.txt -c 512 --chunks 40 $*" >> results.txt
  flock /tmp/pivot-build.lock $P kld -f $W -c 512 --chunks 40 "$@" > out-$name.txt 2> err-$name.txt
  grep -E "PPL|Mean|Same|prefix" out-$name.txt err-$name.txt | sed 's/^[^:]*://' >> results.txt
}
for kv in "f16" "kivi --kv-bits 2"; do
  tag=${kv%% *}
  run $tag-none -m q4_0.gguf --kv-type $kv
  run $tag-bos-plain -m q4_0.gguf --kv-type $kv --prefix-bos
  run $tag-bos-intact -m q4_0-bos.gguf --kv-type $kv --prefix-bos
  run $tag-chat-plain -m q4_0.gguf --kv-type $kv --prefix-chat
  run $tag-chat-intact -m q4_0-chat.gguf --kv-type $kv --prefix-chat
  [ $tag = f16 ] && run $tag-bos-self -m q4_0-selfbos.gguf --kv-type $kv --prefix-bos
done
echo DONE >> results.txt
