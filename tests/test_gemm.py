"""The batch path's integer GEMM (kernels/gemm_q8.py) against dequantize + numpy in float64.

For every format with an unpacker: the product of a matrix (rows not a multiple of the lanes, more than
one tile) and a batch (tokens not a multiple of the micro-kernel's) equals dequant(W) @ (the activations
as quantized) to float32 rounding, with every micro-kernel: 16 lanes (vpdpbusd on AVX-512 VNNI hosts), 8
lanes with vpdpbusd (AVX-VNNI or AVX-512 VL) and with vpmaddubsw + vpmaddwd (AVX2); each falls back to
portable IR on a host without its instruction. The activations are rounded as the
format's integer kernels round them (quantize_q8_32 / quantize_q8_k), value for value.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from ggufq.kernels import gemm_q8
from ggufq.kernels.dot_common import Activations
from ggufq.kernels.registry import get_format

from .test_kernels_dot import make_weights

FORMATS = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K, T.Q2_K, T.Q3_K, T.IQ4_NL, T.IQ4_XS]


# weights made by our quantizers (llama-quantize's bytes, tests/test_lowbit.py), which gguf-py lacks
OWN_QUANTIZER = (T.Q2_K, T.Q3_K, T.IQ4_NL, T.IQ4_XS)
# the 8-lane kernels: vpdpbusd (vnni) and vpmaddubsw, which saturates on bytes over 127 (Q8_0 keeps BLAS on
# hosts without VNNI)
CASES = [(q, lanes, vnni) for q in FORMATS for lanes, vnni in ((16, True), (8, True), (8, False))
         if vnni or get_format(q).dot.unpack_max <= 127]


@pytest.mark.parametrize("qtype,lanes,vnni", CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_gemm_against_numpy(qtype, lanes, vnni, monkeypatch):
    dot = get_format(qtype).dot
    rng = np.random.default_rng(int(qtype) * 10 + lanes)
    rows, k, n_tok = 3 * lanes * gemm_q8.ROWVECS + 5, 512, 2 * gemm_q8.TOKENS + 3
    if qtype in OWN_QUANTIZER:
        w = get_format(qtype).quantize(rng.standard_normal((rows, k)).astype(np.float32))
        deq = get_format(qtype).dequantize(w)
    else:
        w, deq = make_weights(qtype, rows, k, rng)
    x = rng.standard_normal((n_tok, k)).astype(np.float32)
    x[1, :256] = 0.0                                            # an all-zero block of activations
    monkeypatch.setattr(gemm_q8, "TILE_BYTES", 2 * lanes * gemm_q8.ROWVECS * k)   # two tiles
    qk = 256 if dot.act == "q8_k" else 32
    acts = gemm_q8.GemmActs(n_tok, k, qk).set(x)
    tile = gemm_q8.Tile(k, dot.unpack_block, rows, lanes, vnni)
    assert tile.rows < rows
    out = np.full((n_tok, rows), np.nan, np.float32)
    tile.multiply(dot.unpack, w, acts, n_tok, out)
    xa = (acts.aq[:n_tok].astype(np.float64).reshape(n_tok, -1, 32) * acts.ad[:n_tok, :, None]).reshape(n_tok, k)
    exact = xa @ deq.astype(np.float64).T
    assert np.abs(out - exact).max() <= 2e-6 * np.abs(exact).max(), qtype.name

    # the activations are the integer kernels' (their scales stored per 32 values)
    ref = Activations(dot.act, n_tok, k).set(x)
    np.testing.assert_array_equal(acts.aq[:n_tok], ref.xq)
    d = ref.xd if qk == 32 else np.repeat(ref.xd, 8, axis=1)
    np.testing.assert_array_equal(acts.ad[:n_tok], d)
    sums = acts.aq[:n_tok].astype(np.int64).reshape(n_tok, -1, 16).sum(axis=2)
    np.testing.assert_allclose(acts.ax16[:n_tok], np.repeat(acts.ad[:n_tok], 2, axis=1) * sums, rtol=1e-6)
    np.testing.assert_allclose(acts.ax32[:n_tok], acts.ad[:n_tok] * sums.reshape(n_tok, -1, 2).sum(axis=2), rtol=1e-6)
    assert not acts.aq[n_tok:].any() and not acts.ad[n_tok:].any()

