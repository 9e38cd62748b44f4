"""torch.mm GFLOP/s on the shapes SGEMMThroughputTests times (the reference for Pivot's sgemm).

Usage: python3 scripts/sgemm_torch.py
"""
import time

import torch

TOKENS, HIDDEN = 2048, 576


def shapes():
    for out in (1536, 576, 192, 49152):
        # (name, m, n, k, make operands, run)
        yield f"forward  Y=X·Wᵀ  out={out}", TOKENS, out, HIDDEN, \
            lambda o=out: (torch.randn(TOKENS, HIDDEN), torch.randn(o, HIDDEN)), \
            lambda x, w: torch.mm(x, w.t())
        yield f"dX=dY·W         out={out}", TOKENS, HIDDEN, out, \
            lambda o=out: (torch.randn(TOKENS, o), torch.randn(o, HIDDEN)), \
            lambda dy, w: torch.mm(dy, w)
        dw = {}
        yield f"dW+=dYᵀ·X       out={out}", out, HIDDEN, TOKENS, \
            lambda o=out: (torch.randn(TOKENS, o), torch.randn(TOKENS, HIDDEN)), \
            lambda dy, x, dw=dw: dw.setdefault("w", torch.zeros(dy.shape[1], x.shape[1])).addmm_(dy.t(), x)
    yield "attention tile 64³", 64, 64, 64, lambda: (torch.randn(64, 64), torch.randn(64, 64)), \
        lambda q, k: torch.mm(q, k.t())


def main():
    for name, m, n, k, make, run in shapes():
        operands = make()
        line = f"{name:30s} m={m} n={n} k={k}:"
        for threads in (1, 2):
            torch.set_num_threads(threads)
            run(*operands)
            runs, start = 0, time.perf_counter()
            while runs < 3 or time.perf_counter() - start < 0.3:
                run(*operands)
                runs += 1
            elapsed = time.perf_counter() - start
            line += f"  {threads}T {2 * m * n * k * runs / elapsed / 1e9:6.1f} GFLOP/s"
        print(line, flush=True)


if __name__ == "__main__":
    with torch.no_grad():
        main()
