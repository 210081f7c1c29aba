"""Compile every kernel once, ahead of use: `python -m ggufq.runtime.warmup` (`make compile`, which `make demo`
and `make test` run), one progress line per group of kernels.

numba compiles a kernel on its first call and caches the machine code beside the sources (keyed by the
CPU), so without this the first `ggufq run` spent ~35 s compiling and reported it as 0.2 tokens/s, and
the first Q5_K_M quantize took 98 s. Each group runs the real code paths on the shipped models (the same
argument types as a user's files give, so the cache entries are the ones later commands look up):

  quantizers   every type ggufq writes, with and without an importance matrix, from F32 and F16 rows
  runtime      SmolLM2 in every weight type and Gemma 3: prompts under and over 64 tokens, decode steps
  evaluation   perplexity, a KL-divergence base and the KL divergence, an importance matrix
Once a whole warm-up has finished for this CPU (a stamp beside the cache) and no kernel's cache is stale, it
says so and stops at once.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
TEXT = ROOT / "tests" / "data" / "ppl_text_austen.txt"

# the weight types whose runtime kernels a file can ask for, as the quantize file types that give them
RUNTIME_TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_S", "Q5_K_S", "Q6_K",
                 "Q2_K", "Q3_K_S", "IQ4_NL", "IQ4_XS"]


def _quiet(argv: list[str]) -> None:
    from ggufq.cli import run_quiet
    rc, err = run_quiet(argv)
    if rc:
        raise SystemExit(f"warm-up: ggufq {' '.join(argv)} failed: {err.strip()}")


def quantizers() -> None:
    import numpy as np
    from gguf import GGMLQuantizationType as GT

    from ggufq.kernels.registry import quantizable_types
    from ggufq.quantize.recipes import quantize_tensor
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((8, 512), dtype=np.float32)
    imatrix = rng.random(512, dtype=np.float32) + np.float32(0.1)
    for t in quantizable_types():
        quantize_tensor("warm-up", rows, t)
        if t not in (GT.F32, GT.F16, GT.BF16):
            quantize_tensor("warm-up", rows, t, imatrix)


def runtime(tmp: Path) -> None:
    from ggufq.runtime.model import Model
    f16 = tmp / "f16.gguf"
    _quiet(["quantize", "--allow-requantize", str(SMOL), str(f16), "F16"])
    made = []
    for t in RUNTIME_TYPES[1:]:                  # F16 is the file above
        made.append(tmp / f"{t}.gguf")
        _quiet(["quantize", str(f16), str(made[-1]), t])  # from F16 rows: that conversion kernel too
    for path in [SMOL, GEMMA, f16, *made]:
        for arithmetic in ("fast", "llama.cpp-avx2"):
            m = Model.load(path, n_ctx=320, arithmetic=arithmetic)
            m.warm_up()
            m.eval(list(range(100, 170)))        # a prompt of 70: the BLAS path (sub-batches in llama.cpp's)
            for tok in range(3):
                m.eval([tok])
        if path in made:
            path.unlink()  # ~100 MB each
    m = Model.load(SMOL, n_ctx=128, kv_type="f32")  # a float32 KV cache (--kv-type f32): its own kernels
    m.eval(list(range(100, 170)))
    m.eval([1])


def evaluation(tmp: Path) -> None:
    text = tmp / "text.txt"
    text.write_text(TEXT.read_text(encoding="utf-8")[:4000], encoding="utf-8")
    base = tmp / "base.kld"
    f16 = tmp / "f16.gguf"
    _quiet(["perplexity", "-m", str(f16), "-f", str(text), "-c", "128", "--chunks", "1",
            "--kl-divergence-base", str(base)])
    _quiet(["perplexity", "-m", str(SMOL), "--kl-divergence-base", str(base), "--kl-divergence"])
    _quiet(["imatrix", "-m", str(f16), "-f", str(text), "-c", "128", "--chunks", "2", "-o", str(tmp / "imatrix.gguf")])


def _stamp() -> tuple[Path, str]:
    """A file beside the kernels' cache saying a whole warm-up finished for this CPU (numba's key for it),
    one per target (tools/isa.sh compiles for others beside the host's)."""
    import hashlib

    import numba
    from numba.core.registry import cpu_target
    key = f"numba {numba.__version__} {cpu_target.target_context.codegen().magic_tuple()}"
    name = f"ggufq-warmup-{hashlib.sha1(key.encode()).hexdigest()[:12]}.stamp"
    return ROOT / "kernels" / "__pycache__" / name, key


def main() -> int:
    for p in (SMOL, GEMMA):
        if not p.exists():
            print(f"warm-up: {p} is missing: run `make models` first", file=sys.stderr)
            return 2
    from ggufq.runtime.jit import silence
    from ggufq.runtime.threads import configure_batch_threads
    configure_batch_threads()
    silence()
    from ggufq.runtime.jit import quantizer_modules, runtime_modules, uncompiled
    stamp, key = _stamp()
    if stamp.exists() and stamp.read_text() == key and not uncompiled(quantizer_modules() + runtime_modules()):
        print("compiling kernels: every kernel is cached for this CPU")
        return 0
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ggufq-warmup-") as d:
        tmp = Path(d)
        for name, fn in (("quantizers", quantizers), ("runtime", lambda: runtime(tmp)),
                         ("evaluation", lambda: evaluation(tmp))):
            print(f"compiling kernels: {name} ...", end="", flush=True)
            t0 = time.perf_counter()
            fn()
            print(f" {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"compiling kernels: done in {time.perf_counter() - t_all:.1f} s (cached for this CPU)")
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
