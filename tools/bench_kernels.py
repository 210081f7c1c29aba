"""Kernel speed of every format the runtime multiplies, in GB/s of weights read, beside Q4_K's: a benchmark,
not a test.

    .venv/bin/python tools/bench_kernels.py [-r 7] [--k 4096] [--small-rows 512] [--large-rows 16384]

For each format: a matrix of random weights (256 rows quantized by the format's quantizer, tiled to the
size: the bytes the kernels read are real blocks), then the median of r timings of
  - the decode step's row kernel on one thread, one token, the matrix in cache (small-rows x k);
  - the same on a matrix that does not fit in cache (large-rows x k, tens of MB);
  - the batch matmul (parallel, -t threads) on 1 token of the large matrix.
GB/s is the weight bytes over the time; "vs Q4_K" the ratio to Q4_K's figure in the same column.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def median_time(fn, repeat: int) -> float:
    fn()  # compile / warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-r", "--repeat", type=int, default=7)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=4096, help="row length (weights)")
    ap.add_argument("--small-rows", type=int, default=512)
    ap.add_argument("--large-rows", type=int, default=16384)
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import numba
    from gguf import GGMLQuantizationType as T

    from ggufq.kernels import FORMATS
    from ggufq.kernels.dot_common import Activations
    numba.set_num_threads(args.threads)

    k = args.k
    rng = np.random.default_rng(0)
    base = (rng.standard_normal((256, k)) * 0.02).astype(np.float32)
    x = rng.standard_normal((1, k)).astype(np.float32)
    order = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS,
             T.F16, T.BF16]
    rows_out = []
    for qt in order:
        fmt = FORMATS.get(qt)
        if fmt is None or fmt.dot is None or fmt.dot.rows is None:
            continue
        try:
            q = fmt.quantize(base)
        except NotImplementedError:
            continue
        dot = fmt.dot
        acts = Activations(dot.act, 1, k).set(x)
        a = (acts.xq[0] if dot.act == "q8_32" else np.zeros(0, np.int8),
             acts.xd[0] if dot.act == "q8_32" else np.zeros(0, np.float32),
             acts.xs[0] if dot.act == "q8_32" else np.zeros(0, np.float32),
             acts.xq[0] if dot.act == "q8_k" else np.zeros(0, np.int8),
             acts.xd[0] if dot.act == "q8_k" else np.zeros(0, np.float32),
             acts.xs[0] if dot.act == "q8_k" else np.zeros(0, np.int32),
             x[0].copy())
        figures = []
        for n_rows in (args.small_rows, args.large_rows):
            w = np.tile(q, (n_rows // 256, 1))
            rb = w.shape[1]
            flat = w.reshape(-1)
            bufs = (flat, flat[:flat.size // 2 * 2].view(np.uint16), flat[:flat.size // 4 * 4].view(np.float32))
            out = np.zeros(n_rows, np.float32)
            t = median_time(lambda: dot.rows(bufs, 0, rb, 0, n_rows, k, a, out), args.repeat)
            figures.append(w.nbytes / t / 1e9)
        w = dot.weight_view(np.tile(q, (args.large_rows // 256, 1)))
        out2 = np.zeros((1, args.large_rows), np.float32)
        t = median_time(lambda: dot.matmul(w, acts.xf, acts.xq, acts.xd, acts.xs, out2), args.repeat)
        figures.append(np.tile(q, (1, 1)).nbytes * (args.large_rows // 256) / t / 1e9)
        rows_out.append((qt.name, fmt.type_size * 8 / fmt.block_size, figures))
    ref = dict((n, f) for n, _, f in rows_out)["Q4_K"]
    print(f"k = {k}; row kernel on 1 thread ({args.small_rows} rows: in cache; {args.large_rows} rows: not), "
          f"batch matmul of 1 token on {args.threads} threads; median of {args.repeat}; GB/s of weights read")
    print()
    print("| format | bits/weight | row 1t cache GB/s | vs Q4_K | row 1t memory GB/s | vs Q4_K "
          f"| matmul {args.threads}t memory GB/s | vs Q4_K |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, bpw, f in rows_out:
        cells = " | ".join(f"{v:.2f} | {v / r:.2f}x" for v, r in zip(f, ref))
        print(f"| {name} | {bpw:.4g} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
