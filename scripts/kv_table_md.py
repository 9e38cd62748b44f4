#!/usr/bin/env python3
"""The KV-cache table of BENCHMARKS.md from the raw outputs of scripts/kv_table.sh (quality),
scripts/kv_speed.sh (speed) and the memory lines every verb prints.

    python3 scripts/kv_table_md.py QUALITY_DIR MEMORY_FILE SPEED_FILE [SPEED_FILE...]

Speed files are read in order; a later file's figure for a row replaces an earlier one's, and the
row is marked with the file's index so mixed sittings are visible.
"""
import json
import os
import re
import sys

ROWS = [  # (row name in the scripts, label, memory label)
    ("f32", "F32", "f32"), ("f16", "F16", "f16"),
    ("kivi-8", "KIVI-8", "kivi-8"), ("kivi-4", "KIVI-4", "kivi-4"), ("kivi-3", "KIVI-3", "kivi-3"), ("kivi-2", "KIVI-2", "kivi-2"),
    ("kivi-2-p1", "KIVI-2 + 1 pivot", "kivi-2 p1"), ("kivi-2-o1", "KIVI-2 + OTT 1/group", "kivi-2 o1/64"),
    ("kivi-2-p1-o1", "KIVI-2 + 1 pivot + OTT 1", "kivi-2 p1 o1/64"),
    ("kivi-2-g64-p1-o2", "KIVI-2 g64 + 1 pivot + OTT 2", "kivi-2 g64 p1 o2/64"),
    ("cskv-50", "CSKV 50%", "cskv-50%"), ("cskv-25", "CSKV 25%", "cskv-25%"), ("cskv-50-l4", "CSKV 50% + 4-bit latents", "cskv-50% l4"),
    ("q4_0-f16", "Q4_0 weights, F16", "f16"), ("q4_0-kivi-2-p1", "Q4_0 weights, KIVI-2 + 1 pivot (own)", "kivi-2 p1"),
    ("q4_0-kivi-2-p1-intact", "Q4_0 weights, KIVI-2 + 1 pivot from Q4_1 (IntactKV)", "kivi-2 p1"),
]


def read(path):
    return open(path).read() if os.path.exists(path) and os.path.getsize(path) > 0 else None


def ppl(text):
    m = text and re.search(r"PPL = ([\d.]+) \+/- ([\d.]+)", text)
    return f"{float(m.group(1)):.2f}" if m else "–"


def kld(text):
    if not text:
        return "–", "–"
    m = re.search(r"Mean\s+KLD:\s+([\d.]+) ± ([\d.]+)", text)
    t = re.search(r"Same top p:\s+([\d.]+)", text)
    return (f"{float(m.group(1)):.4f}" if m else "–"), (f"{float(t.group(1)):.1f} %" if t else "–")


def passkey(path):
    if not os.path.exists(path):
        return "–"
    p = json.load(open(path))[0]["passkey"]
    return ", ".join(f"{sum(row)}/{len(row)}" for row in p["accuracy"])


def main():
    quality, memory_file, speed_files = sys.argv[1], sys.argv[2], sys.argv[3:]
    memory = {}
    for line in open(memory_file):
        m = re.match(r"KV cache \((.+)\): ([\d.]+ (?:KiB|B))/token at (\d+) tokens, (.+)", line.strip())
        if m:
            ratio = re.search(r"([\d.]+)x smaller", m.group(4))
            memory[(m.group(1), int(m.group(3)))] = (m.group(2), ratio.group(1) + "x" if ratio else ("1x" if m.group(4) == "the size of F16" else "0.50x"))
    speed = {}
    for index, f in enumerate(speed_files):
        for line in open(f):
            parts = [p.strip() for p in line.split("|")]
            if len(parts) < 9:
                continue
            test = parts[7].replace("tg64 @ d", "d")
            speed[(parts[0], test)] = parts[8].split(" ±")[0] + ("" if len(speed_files) == 1 else f"<sup>{index + 1}</sup>")
    print("| cache | KV bytes/token @ 4096 (ratio to F16) | PPL ctx 512 | PPL ctx 2048 | KLD vs F16 cache | same top-1 "
          "| passkey 2k / 4k / 8k | pp512 t/s | decode t/s @ 512 / 2k / 8k |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for row, label, mem in ROWS:
        base = os.path.join(quality, row)
        size, ratio = memory.get((mem, 4096), ("?", "?"))
        k, top = kld(read(base + ".kld"))
        if row == "f16":
            k, top = "0", "100 %"
        tg = " / ".join(speed.get((row, d), "–") for d in ("d512", "d2048", "d8000"))
        print(f"| {label} | {size} ({ratio}) | {ppl(read(base + '.ppl512'))} | {ppl(read(base + '.ppl2048'))} | {k} | {top} "
              f"| {passkey(base + '.passkey.json')} | {speed.get((row, 'pp512'), '–')} | {tg} |")


if __name__ == "__main__":
    main()
