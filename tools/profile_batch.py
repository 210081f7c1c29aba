"""Where a prompt's time goes: a per-stage profile of one batch, with the threads each stage keeps busy.
A measurement, not a test.

    .venv/bin/python tools/profile_batch.py MODEL.gguf [-p 512] [-t 2] [-r 3] [--loop | --scaling 1,2]

Runs a batch of p tokens from an empty cache r + 1 times (the first to compile and warm) and profiles
the last. By default that is the compiled batch step (ggufq/runtime/batch.py), which counts each thread's
cycles per stage itself: working, and waiting at the barrier that ends the stage. Per stage: wall time
(a thread's work + wait, averaged over the threads), share of the batch, busy threads (the threads' work
over the wall time) and the wait (imbalance: the time threads idle at the barrier, the share that more
threads would not shorten). With --loop (GGUFQ_BATCH_STEP=0: the Python loop over layers), every kernel
call of the forward is timed from Python instead (the integer GEMM's quantizing, unpacking and products;
BLAS; attention; the element-wise ops), busy threads as the process's CPU time over the stage's wall time.
With --scaling 1,2 the batch step runs at each thread count and each stage's speed-up is printed.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as ggufq/__init__.py: before numpy loads

import argparse  # noqa: E402
import collections  # noqa: E402
import functools  # noqa: E402
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
    ap.add_argument("--loop", action="store_true", help="profile the Python loop over layers instead")
    ap.add_argument("--scaling", metavar="T1,T2,...", help="each stage's time at these thread counts instead")
    args = ap.parse_args()
    if args.scaling:
        return scaling(args.model, args.p, [int(t) for t in args.scaling.split(",")], args.r)
    if args.loop:
        os.environ["GGUFQ_BATCH_STEP"] = "0"
    from ggufq.runtime.model import Model
    if args.loop:
        instrument()
    m = Model.load(args.model, n_ctx=max(args.p, 512), n_threads=args.t)
    toks = np.arange(100, 100 + args.p) % m.n_vocab
    totals = []
    for i in range(args.r + 1):
        WALL.clear()
        CPU.clear()
        if m._batch is not None:
            m._batch.prof[:] = 0
        m.reset()
        w0, c0 = time.perf_counter(), time.process_time()
        m.eval(toks)
        totals.append((time.perf_counter() - w0, time.process_time() - c0))
    wall, cpu = totals[-1]
    print(f"{Path(args.model).name}: pp{args.p} on {args.t} threads, the last of {args.r + 1} runs: "
          f"{wall * 1e3:.0f} ms, {args.p / wall:.1f} t/s (runs: {', '.join(f'{w * 1e3:.0f}' for w, _ in totals)} ms); "
          f"{cpu / wall:.2f} threads busy on average")
    print()
    if not args.loop:
        return step_profile(m, wall, args.t)
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


@functools.cache
def cycle_rate() -> float:
    """The cycle counter's ticks a second, against perf_counter over 0.2 s (measured once a process)."""
    import numba as nb
    from ggufq.runtime.barrier import cycles
    read = nb.njit(lambda: cycles())
    read()
    c0, t0 = read(), time.perf_counter()
    time.sleep(0.2)
    return (read() - c0) / (time.perf_counter() - t0)


# The batch step's stages that are matrix products or attention (the compute-bound work, tiled so that it
# scales with threads); every other stage is element-wise float work over T x width activations (norms,
# RoPE, the roundings to 8 bits, the KV cache's conversion), whose share issue 17 asks to keep under 3%:
# it is the work that stops scaling first, bound by memory once many threads share it.
COMPUTE = ("products:", "product:", "attention")


def stage_table(m, nt: int) -> dict[str, tuple[float, float, float]]:
    """The last run's per stage (BatchStep.prof): seconds of wall time (a thread's work + wait, averaged
    over the threads), busy threads (work over wall), seconds waiting at its barrier (averaged)."""
    from ggufq.runtime.batch import STAGES
    prof = m._batch.prof[:nt].astype(np.float64)          # [thread, stage, (work, wait)]
    sec = 1.0 / cycle_rate()
    out = {}
    for i in np.argsort(-prof.sum(axis=(0, 2))):
        stage_wall = prof[:, i, :].sum() / nt * sec
        if stage_wall > 0:
            out[STAGES[i]] = (stage_wall, prof[:, i, 0].sum() * sec / stage_wall, prof[:, i, 1].sum() / nt * sec)
    return out


def step_profile(m, wall: float, nt: int) -> int:
    """The batch step's own cycle counts of the last run, as a table, and the shares issue 17 asks for."""
    if m._batch is None or not m._batch.prof.any():
        print("the batch step did not run (exact mode, float weights or GGUFQ_BATCH_STEP=0): try --loop")
        return 1
    table = stage_table(m, nt)
    print("| stage | ms | share | busy threads | waiting at its barrier |")
    print("|---|---:|---:|---:|---:|")
    for name, (w, busy, wait) in table.items():
        print(f"| {name} | {w * 1e3:.1f} | {100 * w / wall:.1f}% | {busy:.2f} | {100 * wait / wall:.1f}% |")
    total_wait = sum(wait for _, _, wait in table.values())
    outside = max(0.0, wall - sum(w for w, _, _ in table.values()))
    elementwise = sum(w for name, (w, _, _) in table.items() if not name.startswith(COMPUTE))
    few = [name for name, (_, busy, _) in table.items() if busy < 0.75 * nt]
    print(f"\nelement-wise float stages: {100 * elementwise / wall:.1f}% of the batch; outside the step "
          f"(embedding, Python, on one thread): {outside * 1e3:.1f} ms = {100 * outside / wall:.1f}%; threads idle "
          f"at barriers: {100 * total_wait / wall:.1f}%")
    print(f"stages with fewer than {0.75 * nt:.2f} busy threads: {', '.join(few) if few else 'none'}")
    return 0


def scaling(model: str, p: int, threads: list[int], r: int) -> int:
    """Each stage's time at each thread count (one process, the model loaded once per count), and its
    speed-up over the first count: the stages that stop scaling show here first."""
    from ggufq.runtime.model import Model
    tables, walls = [], []
    for nt in threads:
        m = Model.load(model, n_ctx=max(p, 512), n_threads=nt)
        toks = np.arange(100, 100 + p) % m.n_vocab
        best = None
        for _ in range(r + 1):
            m.reset()
            if m._batch is not None:
                m._batch.prof[:] = 0
            w0 = time.perf_counter()
            m.eval(toks)
            wall = time.perf_counter() - w0
            if m._batch is None:
                print("the batch step did not run: no per-stage scaling")
                return 1
            if best is None or wall < best[0]:
                best = (wall, stage_table(m, nt))
        walls.append(best[0])
        tables.append(best[1])
        del m
    t0 = threads[0]
    print(f"{Path(model).name}: pp{p}, the fastest of {r + 1} runs at each thread count\n")
    print("| stage | " + " | ".join(f"ms at -t {t}" for t in threads) + " | "
          + " | ".join(f"speed-up {t0} -> {t}" for t in threads[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(threads) - 1))
    for name in tables[-1]:
        ms = [tb.get(name, (0.0, 0, 0))[0] for tb in tables]
        print(f"| {name} | " + " | ".join(f"{x * 1e3:.1f}" for x in ms) + " | "
              + " | ".join(f"{ms[0] / x:.2f}x" if x else "-" for x in ms[1:]) + " |")
    print("| whole batch | " + " | ".join(f"{w * 1e3:.1f}" for w in walls) + " | "
          + " | ".join(f"{walls[0] / w:.2f}x" for w in walls[1:]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
