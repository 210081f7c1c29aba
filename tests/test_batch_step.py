"""The compiled batch step (ggufq/runtime/batch.py) and its attention tiles (ggufq/runtime/flash.py).

The step must give the Python loop's numbers (Model._block, GGUFQ_BATCH_STEP=0) bit for bit: under
BLAS_MIN_TOKENS tokens as it is, and from there on with the loop's BLAS attention swapped for the same
flash tiles (the one place the step computes differently). The tiles themselves are checked against
softmax(QK^T)V in float64.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import ggufq.runtime.model as model_mod
from ggufq.runtime import ops
from ggufq.runtime.flash import QUERY_TILE, attend_tile, cache_rows, cache_to_f32, scratch_floats
from ggufq.runtime.model import Model

from .conftest import GEMMA, SMOL
from .tiny_models import write_tiny


def _flash_everything(q, kc, vc, pos0, n_head, n_kv, hd, window, scale, out):
    """Attention of a whole batch by flash.py's tiles (ops.attention_blas's signature)."""
    n = pos0 + q.shape[0]
    kt = np.zeros((n_kv, hd, cache_rows(n)), np.float32)
    vf = np.zeros((n, n_kv * hd), np.float32)
    bits = (lambda a: a.view(np.uint16)) if kc.dtype == np.float16 else (lambda a: a)
    cache_to_f32(bits(kc), bits(vc), 0, n, kt, vf, n_kv, hd)
    scr = np.zeros(scratch_floats(n_head, n_kv, hd), np.float32)
    T_ = q.shape[0]
    for t0 in range(0, T_, QUERY_TILE):
        for a in range(n_kv):
            attend_tile(q, kt, vf, pos0, t0, min(T_, t0 + QUERY_TILE), a, (n_head, n_kv, hd), window,
                        np.float32(scale), out, scr)


@pytest.mark.parametrize("kv", ["f16", "f32"])
@pytest.mark.parametrize("n_head,n_kv,window", [(9, 3, 0), (8, 2, 40), (4, 4, 0)])
def test_flash_tiles_match_float64_softmax(kv, n_head, n_kv, window):
    rng = np.random.default_rng(n_head + window)
    hd, n_ctx, T_, pos0 = 64, 256, 77, 45
    q = rng.standard_normal((T_, n_head * hd)).astype(np.float32)
    kc = (rng.standard_normal((n_ctx, n_kv * hd)) * 2).astype(np.float16 if kv == "f16" else np.float32)
    vc = rng.standard_normal((n_ctx, n_kv * hd)).astype(kc.dtype)
    out = np.full_like(q, np.nan)
    _flash_everything(q, kc, vc, pos0, n_head, n_kv, hd, window, 0.125, out)
    K, V = kc.astype(np.float64), vc.astype(np.float64)
    g = n_head // n_kv
    for t in range(T_):
        p = pos0 + t
        lo = max(0, p - window + 1) if window else 0
        for h in range(n_head):
            a = h // g
            s = K[lo:p + 1, a * hd:(a + 1) * hd] @ q[t, h * hd:(h + 1) * hd].astype(np.float64) * 0.125
            e = np.exp(s - s.max())
            ref = (e / e.sum()) @ V[lo:p + 1, a * hd:(a + 1) * hd]
            np.testing.assert_allclose(out[t, h * hd:(h + 1) * hd], ref, rtol=0, atol=2e-5)


QUANTIZED = {m: T.Q8_0 for m in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}


@pytest.mark.parametrize("case", ["smollm2", "gemma3", "qwen2", "qwen3"])
def test_batch_step_equals_the_python_loop(tmp_path, monkeypatch, case):
    """Small batches (row kernels, ggml's per-row attention) and large ones (the GEMM, flash tiles) after a
    prefix in the KV cache, f16 and f32 caches, every family's branches: qwen2 biases, qwen3 q/k norms,
    gemma3 post norms, scaled queries, GeGLU and sliding windows."""
    if case in ("qwen2", "qwen3"):
        path = tmp_path / f"tiny-{case}.gguf"
        write_tiny(path, case, types={**QUANTIZED, "attn_q": T.Q4_0, "ffn_down": T.Q5_1})
        n_ctx, sizes = 64, (7, 64)      # the tiny models' context is 64
    else:
        path = {"smollm2": SMOL, "gemma3": GEMMA}[case]
        n_ctx, sizes = 256, (7, 100)
    monkeypatch.setattr(ops, "attention_blas", _flash_everything)
    tokens = np.random.default_rng(4).integers(0, 300, 5 + max(sizes))

    def run(m, T_):
        """The logits of T_ tokens from an empty cache, and the last one's after a prefix of 5."""
        fresh = m.logits(tokens[:T_])
        m.reset()
        if 5 + T_ > m.n_ctx:
            return [fresh]
        m.eval(tokens[:5])
        return [fresh, m.eval(tokens[5:5 + T_])]

    for kv in ("f16", "f32"):
        m = Model.load(path, n_ctx=n_ctx, kv_type=kv)
        for T_ in sizes:
            monkeypatch.setattr(model_mod, "BATCH_STEP", True)
            with monkeypatch.context() as mp:   # the step runs every batch: the loop is not called
                mp.setattr(Model, "_block", lambda *a: pytest.fail("the Python loop ran"))
                got = run(m, T_)
            monkeypatch.setattr(model_mod, "BATCH_STEP", False)
            for a, b in zip(got, run(m, T_)):
                assert np.array_equal(a, b), (case, kv, T_)


def test_exp_polynomial_survives_fastmath():
    """ops._exp_nonpositive (ggml's e^x: softmax, the flash tiles) inlined into a fastmath caller gives its
    plain numbers to the last bits (where fma is emulated, fastmath may reorder the polynomial: an ulp or
    two; with FMA they are equal). Its rounding trick (z = fma(x, log2 e, 1.5 * 2^23), n = z - 1.5 * 2^23) was
    folded into x * log2 e under reassociation on a target without FMA, and e^x came out as 2^n."""
    import numba as nb

    def exps(v):
        out = np.empty_like(v)
        for i in range(v.size):
            out[i] = ops._exp_nonpositive(v[i])
        return out

    x = -np.geomspace(1e-6, 100, 20001).astype(np.float32)
    plain = nb.njit(exps)(x)
    fast = nb.njit(fastmath=True)(exps)(x)
    np.testing.assert_allclose(fast, plain, rtol=3e-7, atol=0)
    np.testing.assert_allclose(plain[x > -80], np.exp(x[x > -80].astype(np.float64)), rtol=1e-6)


def test_one_token_batch_past_512_cells_is_the_decode_step(monkeypatch):
    """A one-token batch (decode_step=False) attends in llama.cpp's split-KV form past 512 cells, as the
    decode step and the Python loop do (ops.fa_chunk): the same logits, bit for bit."""
    tokens = np.random.default_rng(1).integers(0, 5000, 604)
    outs = []
    for step, batch in ((True, True), (False, True), (False, False)):
        monkeypatch.setattr(model_mod, "BATCH_STEP", batch)
        m = Model.load(SMOL, n_ctx=1024, decode_step=step, n_threads=2)
        for s in range(0, 600, 60):     # the prefix in small batches: the same numbers on every path
            m.eval(tokens[s:s + 60])
        outs.append(np.stack([m.eval([t]) for t in tokens[600:]]))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
