"""Prompt-processing and generation speed, measured as llama-bench does; llama-bench itself, for ratios.

pp<P>: one batch of P random tokens into an empty KV cache; tg<N>: N tokens evaluated one at a time
from an empty cache. Each test runs once to warm up, then `reps` times; t/s is tokens over seconds.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from ggufq.errors import GGUFQError


def bench_model(model, n_prompt: int, n_gen: int, reps: int, seed: int = 0) -> dict[str, list[float]]:
    """{"pp512": [t/s per repetition], "tg128": [...]} for a loaded Model."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def runs(n, evaluate, warm_up):
        """Tokens per second of `reps` timed runs after one warm-up run, each from an empty cache."""
        toks = rng.integers(0, model.n_vocab, n)
        out = []
        for r in range(reps + 1):
            model.reset()
            t0 = time.perf_counter()
            evaluate(toks if r else warm_up(toks))
            if r:
                out.append(n / (time.perf_counter() - t0))
        return out

    def one_at_a_time(toks):
        for t in toks:
            model.eval([int(t)])

    results = {}
    if n_prompt:
        results[f"pp{n_prompt}"] = runs(n_prompt, model.eval, lambda toks: toks)
    if n_gen:  # the warm-up run generates two tokens: enough to compile and fill the caches
        results[f"tg{n_gen}"] = runs(n_gen, one_at_a_time, lambda toks: toks[:2])
    return results


def llama_bench(dir_: str, model: str, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict[str, float]:
    exe = Path(dir_) / "llama-bench"
    if not exe.exists():
        raise GGUFQError(f"{exe}: not found")
    cmd = [str(exe), "-m", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps),
           "-o", "json"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        raise GGUFQError(f"llama-bench failed: {(e.stderr or '').strip().splitlines()[-1:]}") from None
    res = {}
    for row in json.loads(out):
        name = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        res[name] = float(row["avg_ts"])
    return res
