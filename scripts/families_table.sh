#!/bin/bash
# The model-family table (BENCHMARKS.md "Model families"): for each tiny random checkpoint of
# Tests/PivotTests/Fixtures/families (scripts/tiny_families.py), in the current directory:
#   convert  pivot convert HF → F32 GGUF (llama.cpp's names and keys)
#   hf/gguf  pivot perplexity on the HF folder and on the GGUF (the same numbers)
#   llama    llama-perplexity --kl-divergence-base on that GGUF, then pivot kld --base-file: mean KLD
#            of Pivot's distributions from llama.cpp's, and same top-1
#   quant    pivot quantize Q8_0 and Q4_K_M (block-32 fallback on 64-wide rows), then the same
#            llama.cpp comparison on each quantized file (Pivot's default int8 path)
#   eval     pivot eval arc_easy --limit 50 (the harness end to end; a random model scores near chance)
#   kv       pivot perplexity with the F16 and KIVI-4 caches (or the error a family gets)
#   serve    pivot serve, one /v1/completions request
#   speed    pivot bench and llama-bench, pp64 / tg32, 2 threads, on the F32 GGUF
# Needs llama.cpp built at $LLAMA (default /work/llama/build/bin).   scripts/families_table.sh [FAMILY...]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIVOT=${PIVOT:-$ROOT/.build/release/pivot}
LLAMA=${LLAMA:-/work/llama/build/bin}
FIX=$ROOT/Tests/PivotTests/Fixtures/families
THREADS=${THREADS:-2}
TEXT=${TEXT:-text.txt}
[ -f "$TEXT" ] || head -c 20000 "$ROOT/../shared/data/wikitext-2-raw-test.txt" | tr -cd '\11\12\15\40-\176' > "$TEXT"
FAMILIES=${*:-llama qwen2 qwen3 phi3 phi3-partial phi3-longrope olmo2 stablelm stablelm-qk gpt-neox falcon falcon-mha falcon2 falcon-40b gemma2 gemma3 mixtral qwen2-moe mamba mamba-untied mamba2}

ppl() { "$PIVOT" perplexity -t "$THREADS" -m "$1" -f "$TEXT" -c 64 --chunks 20 "${@:2}" 2>&1 | awk '/^PPL|Final|estimate/ {for (i=1;i<=NF;i++) if ($i+0 > 0) {print $i; exit}} /rror/ {sub(/^.*rror: /, ""); print "error: " $0; exit}'; }

# "mean KLD, same top-1" of Pivot on FILE against llama.cpp's logits on FILE (pivot kld --base-file reads
# llama-perplexity's --kl-divergence-base file; both score the second half of each 64-token window).
llama_kld() {
    "$LLAMA/llama-perplexity" -m "$1" -f "$TEXT" -c 64 --chunks 20 -t "$THREADS" --kl-divergence-base "$1.kld" > "$1.llama.log" 2>&1 \
        || { echo "✗ llama.cpp: $(grep -m1 -i error "$1.llama.log" | sed 's/.*error[^:]*: //')"; return; }
    local out; out=$("$PIVOT" kld -t "$THREADS" -m "$1" --base-file "$1.kld" -f "$TEXT" "${@:2}" 2>&1)
    local mean; mean=$(echo "$out" | awk '/^Mean/ {print $3}')
    [ -n "$mean" ] && echo "$mean, $(echo "$out" | awk '/^Same top/ {print $4}') %" || echo "✗ $(echo "$out" | tail -1)"
}

echo "| family | convert | PPL HF / GGUF | KLD from llama.cpp, F32 (same top-1) | Q8_0 | Q4_K_M | eval | F16 cache PPL | KIVI-4 cache PPL | serve | pp64 Pivot / llama.cpp | tg32 Pivot / llama.cpp |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for f in $FAMILIES; do
    hf=$FIX/$f
    "$PIVOT" convert -m "$hf" -o "$f.gguf" --type F32 > "$f.convert.log" 2>&1 && conv="✓ $(du -k "$f.gguf" | cut -f1) KiB" || conv="✗ $(tail -1 "$f.convert.log")"
    p_hf=$(ppl "$hf" --precision float); p_gg=$(ppl "$f.gguf" --precision float)
    f32=$(llama_kld "$f.gguf" --precision float)
    q=""
    for type in Q8_0 Q4_K_M; do
        "$PIVOT" quantize -t "$THREADS" -m "$f.gguf" -o "$f.$type.gguf" --type "$type" > "$f.$type.log" 2>&1 \
            && q="$q| $(llama_kld "$f.$type.gguf") " || q="$q| ✗ $(tail -1 "$f.$type.log") "
    done
    ev=$("$PIVOT" eval -t "$THREADS" -m "$f.gguf" arc_easy --limit 50 2>&1 | awk -F'|' '/^\| [^-c]/ {gsub(/^ +| +$/, "", $3); print $3; exit}')
    [ -n "$ev" ] || ev="✗"
    kv16=$(ppl "$f.gguf" --kv-type f16); kivi=$(ppl "$f.gguf" --kv-type kivi --kv-bits 4 --kv-group 16 --kv-window 16)
    port=$((18000 + RANDOM % 1000))
    "$PIVOT" serve -m "$f.gguf" --port $port -t "$THREADS" --quiet > "$f.serve.log" 2>&1 &
    pid=$!
    serve="✗"
    for _ in $(seq 50); do
        sleep 0.2
        out=$(curl -s -m 10 "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
              -d '{"prompt": "The tower is", "max_tokens": 8, "temperature": 0}' 2>/dev/null) || continue
        echo "$out" | grep -q '"completion_tokens" *: *8' && serve="✓ 8 tokens" || serve="✗ $(echo "$out" | head -c 80)"
        break
    done
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
    bench=$("$PIVOT" bench -t "$THREADS" -m "$f.gguf" -p 64 -n 32 -r 3 2>/dev/null < /dev/null)
    pp=$(echo "$bench" | awk -F'|' '/pp64/ {split($9, a, "±"); gsub(/ /, "", a[1]); print a[1]}'); tg=$(echo "$bench" | awk -F'|' '/tg32/ {split($9, a, "±"); gsub(/ /, "", a[1]); print a[1]}')
    lb=$("$LLAMA/llama-bench" -m "$f.gguf" -p 64 -n 32 -r 3 -t "$THREADS" 2>/dev/null)
    lpp=$(echo "$lb" | awk -F'|' '/pp64/ {split($(NF-1), a, "±"); gsub(/ /, "", a[1]); print a[1]}')
    ltg=$(echo "$lb" | awk -F'|' '/tg32/ {split($(NF-1), a, "±"); gsub(/ /, "", a[1]); print a[1]}')
    echo "| $f | $conv | $p_hf / $p_gg | $f32 $q| $ev | $kv16 | $kivi | $serve | $pp / $lpp | $tg / $ltg |"
done
