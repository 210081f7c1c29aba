"""Where a prompt's time goes: a per-stage profile of one batch of the batch path, with the threads each
stage keeps busy. A measurement, not a test.

    .venv/bin/python tools/profile_batch.py MODEL.gguf [-p 512] [-t 2] [-r 3]

Runs a batch of p tokens from an empty cache r + 1 times (the first to compile and warm) and times every
stage of the forward in the last: the weight products (the integer GEMM: quantizing the activations, unpacking
weight tiles, the GEMM; formats without one: the float activations' rounding to the kernels' 8-bit grid,
dequantizing weight tiles, and BLAS sgemm), attention (its BLAS products and softmax, in worker
threads), and the element-wise ops. For each stage: wall time, share of the batch, and the average number
of busy threads (the process's CPU time over the stage's wall time: spinning threads count as
busy). The rest ("outside the stages") is Python between the calls, the embedding and the KV cache's
writes. Stages at about 1 busy thread on an n-thread run are the serial share that limits the speed-up
from more threads (Amdahl).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as ggufq/__init__.py: before numpy loads

import argparse  # noqa: E402
import collections  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

WALL: dict[str, float] = collections.defaultdict(float)
CPU: dict[str, float] = collections.defaultdict(float)
_active: list[str] = []


def timed(label: str, fn):
    """fn, its time added to `label` (and not to an enclosing stage's own time)."""
    def run(*a, **k):
        w0, c0 = time.perf_counter(), time.process_time()
        _active.append(label)
        try:
            return fn(*a, **k)
        finally:
            _active.pop()
            dw, dc = time.perf_counter() - w0, time.process_time() - c0
            WALL[label] += dw
            CPU[label] += dc
            if _active:  # the enclosing stage's own time excludes this one
                WALL[_active[-1]] -= dw
                CPU[_active[-1]] -= dc
    return run


def instrument() -> None:
    from ggufq.runtime import model as M
    from ggufq.runtime import ops
    for name in ("rmsnorm", "add_rmsnorm", "rope", "silu_mul", "gelu_mul", "add_bias", "scale_rows"):
        for ns in (ops._Batch, ops._Serial):
            setattr(ns, name, timed(f"element-wise: {name}", getattr(ns, name)))
    M.ops.attention_blas = timed("attention: BLAS products, softmax, copies", ops.attention_blas)
    M.ops.attention = timed("attention: small-batch kernel", ops.attention)
    M.matmul = timed("weights: dequantize tiles, other", M.matmul)
    from ggufq.kernels import gemm_q8
    gemm_q8.gemm_tile = timed("weights: integer GEMM", gemm_q8.gemm_tile)
    gemm_q8.quantize_acts = timed("weights: activations to 8 bits (GEMM)", gemm_q8.quantize_acts)
    gemm_q8.Tile.multiply = timed("weights: unpack tiles (GEMM), other", gemm_q8.Tile.multiply)
    for kind, fn in list(M.FAKE_QUANT.items()):
        M.FAKE_QUANT[kind] = timed("weights: activations to the 8-bit grid", fn)

    class _NP:  # the model's numpy, its matmul timed (only the weight products call it there)
        def __getattr__(self, name):
            return getattr(np, name)
        matmul = staticmethod(timed("weights: BLAS sgemm", np.matmul))
    M.np = _NP()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=3)
    args = ap.parse_args()
    from ggufq.runtime.model import Model
    instrument()
    m = Model.load(args.model, n_ctx=max(args.p, 512), n_threads=args.t)
    toks = np.arange(100, 100 + args.p) % m.n_vocab
    totals = []
    for i in range(args.r + 1):
        WALL.clear()
        CPU.clear()
        m.reset()
        w0, c0 = time.perf_counter(), time.process_time()
        m.eval(toks)
        totals.append((time.perf_counter() - w0, time.process_time() - c0))
    wall, cpu = totals[-1]
    print(f"{Path(args.model).name}: pp{args.p} on {args.t} threads, the last of {args.r + 1} runs: "
          f"{wall * 1e3:.0f} ms, {args.p / wall:.1f} t/s (runs: {', '.join(f'{w * 1e3:.0f}' for w, _ in totals)} ms); "
          f"{cpu / wall:.2f} threads busy on average")
    print()
    print("| stage | ms | share | busy threads |")
    print("|---|---:|---:|---:|")
    rest_w, rest_c = wall - sum(WALL.values()), cpu - sum(CPU.values())
    rows = sorted(WALL.items(), key=lambda kv: -kv[1]) + [("outside the stages", rest_w)]
    for label, w in rows:
        c = CPU.get(label, rest_c)
        print(f"| {label} | {w * 1e3:.1f} | {100 * w / wall:.1f}% | {c / w if w > 0 else 0:.2f} |")
    serial = sum(w for label, w in rows if (CPU.get(label, rest_c) / w if w > 0 else 0) < 1.5)
    print(f"\nstages with fewer than 1.5 busy threads: {100 * serial / wall:.1f}% of the batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
