#!/usr/bin/env python3
"""QLLM-Eval's weight-activation table for issue #26: W8A8, W4A8, W4A6, W4A4 of the default model with
and without SmoothQuant: a sweep of alpha 0.3-0.8 (perplexity), then at the alpha with the lowest perplexity on
each row, perplexity and
three tasks (arc-easy, piqa, winogrande, first 100 items each; perplexity over 20 windows of 512), then the
W4A8 rows with a KIVI-4 and KIVI-2 cache (perplexity over 10 windows). The sweep: perplexity over 10 windows.

  scripts/smooth_table.py WORK_DIR [PHASES...]   phases: quantize sweep main kv (default: all)

W8 = a Q8_0 file, W4 = a Q4_0 file (llama.cpp's mix, imatrix rounding); An = per-token symmetric
n-bit activations before every block projection (`act_bits`, the existing simulation), then Pivot's
int8 kernels as deployed (which hold activations as int8 per 32 values: finer than any per-token grid
here, and the same for every row; float precision would be 3x slower on these 2 cores); "W8A8-int8-path"
is the int8 kernels alone on the same Q8_0 file, and W16A16 the base file with float activations. Calibration: shared/data/calibration.txt, 128 chunks of 512, the
statistics cached in WORK_DIR (shared with scripts/awq_table.sh). Matrix specs and reports
(report.md, plots) go to WORK_DIR/wa-sweep, wa-main, wa-kv.
"""
import json, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIVOT = os.environ.get("PIVOT", os.path.join(ROOT, ".build/release/pivot"))
SHARED = os.environ.get("PIVOT_SHARED", os.path.join(ROOT, "../shared"))
MODEL = os.path.join(SHARED, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
CALIB = os.path.join(SHARED, "data/calibration.txt")
THREADS = os.environ.get("THREADS", "2")
SWEEP = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
ROWS = [("W8A8", "Q8_0", 8), ("W4A8", "Q4_0", 8), ("W4A6", "Q4_0", 6), ("W4A4", "Q4_0", 4)]


def run(args, log):
    with open(log, "w") as f:
        subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, check=True, stdin=subprocess.DEVNULL)


def path(kind, wtype):
    return os.path.abspath(f"wa-{kind}-{wtype}.gguf")


def quantize():
    if not os.path.exists("pivot-imatrix.gguf"):
        run([PIVOT, "imatrix", "-t", THREADS, "-m", MODEL, "-f", CALIB, "--calib-chunks", "128", "-o", "pivot-imatrix.gguf"], "imatrix.log")
    for wtype in ("Q8_0", "Q4_0"):
        if not os.path.exists(path("none", wtype)):
            run([PIVOT, "quantize", "-t", THREADS, "-m", MODEL, "--type", wtype, "--imatrix", "pivot-imatrix.gguf",
                 "-o", path("none", wtype)], f"wa-none-{wtype}.log")
        for alpha in SWEEP:
            if not os.path.exists(path(f"sq{alpha}", wtype)):
                run([PIVOT, "quantize", "-t", THREADS, "-m", MODEL, "--type", wtype, "--method", "smooth", "--alpha", str(alpha),
                     "--calib", CALIB, "--calib-cache", "calibration-cache.gguf", "-o", path(f"sq{alpha}", wtype)], f"wa-sq{alpha}-{wtype}.log")


def configuration(row, kind, extra=None):
    name, wtype, bits = row
    c = {"name": f"{name}-{kind}", "model": path(kind, wtype), "precision": "int8", "act_bits": bits, "bits": bits}
    c.update(extra or {})
    return c


def matrix(folder, configurations, tasks):
    os.makedirs(folder, exist_ok=True)
    spec = os.path.join(folder, "spec.json")
    with open(spec, "w") as f:
        json.dump({"configurations": configurations, "tasks": tasks}, f, indent=1)
    run([PIVOT, "eval", "--matrix", spec, "--out", folder, "-t", THREADS], folder + ".log")
    with open(os.path.join(folder, "report.json")) as f:
        return json.load(f)


def perplexities(report):
    """configuration name -> wikitext perplexity, from a report.json."""
    out = {}
    for cell in report:
        if cell["spec"]["task"] == "wikitext":
            out[cell["configuration"]["name"]] = cell["metrics"]["perplexity"]["value"]
    return out


def best_alphas():
    report = matrix("wa-sweep", [configuration(r, k) for r in ROWS for k in ["none"] + [f"sq{a}" for a in SWEEP]],
                    [{"task": "wikitext", "windows": 10}])
    ppl = perplexities(report)
    best = {}
    with open("wa-sweep.md", "w") as f:
        f.write("| row | none | " + " | ".join(f"α {a}" for a in SWEEP) + " | best |\n")
        f.write("| --- | ---: | " + " | ".join("---:" for _ in SWEEP) + " | --- |\n")
        for r in ROWS:
            values = {a: ppl[f"{r[0]}-sq{a}"] for a in SWEEP}
            best[r[0]] = min(values, key=values.get)
            f.write(f"| {r[0]} | {ppl[r[0] + '-none']:.3f} | " + " | ".join(f"{values[a]:.3f}" for a in SWEEP) + f" | α {best[r[0]]} |\n")
    with open("wa-best.json", "w") as f:
        json.dump(best, f)
    print(open("wa-sweep.md").read())
    return best


def variants(best):
    # The lowest activation bits first: where smoothing matters most is measured first.
    for r in sorted(ROWS, key=lambda r: (r[0] != "W8A8", r[2])):
        kinds = ["none", f"sq{best[r[0]]}"]  # α 0.5 of every row is in the sweep table (time: 2 cores)
        yield r, kinds


def main_table(best):
    configurations = [{"name": "W16A16", "precision": "float", "bits": 16},
                      {"name": "W8A8-int8-path", "model": path("none", "Q8_0"), "precision": "int8", "bits": 8}]
    configurations += [configuration(r, k) for r, kinds in variants(best) for k in kinds]
    matrix("wa-main", configurations, [{"task": "wikitext", "windows": 20}, {"task": "arc-easy", "limit": 100},
                                       {"task": "piqa", "limit": 100}, {"task": "winogrande", "limit": 100}])


def kv_table(best):
    configurations = []
    for r, kinds in variants(best):
        if r[0] != "W4A8":
            continue  # the KV columns for the settings a deployment would use (time: 2 cores)
        for k in kinds:
            for kv in (4, 2):
                configurations.append(configuration(r, k, {"name": f"{r[0]}-{k}-KV{kv}", "kv_type": "kivi", "kv_bits": kv}))
    matrix("wa-kv", configurations, [{"task": "wikitext", "windows": 10}])


if __name__ == "__main__":
    os.makedirs(sys.argv[1], exist_ok=True)
    os.chdir(sys.argv[1])
    phases = sys.argv[2:] or ["quantize", "sweep", "main", "kv"]
    best = json.load(open("wa-best.json")) if os.path.exists("wa-best.json") else None
    for phase in phases:
        if phase == "quantize": quantize()
        elif phase == "sweep": best = best_alphas()
        elif phase == "main": main_table(best)
        elif phase == "kv": kv_table(best)
        else: sys.exit(f"unknown phase {phase}")
