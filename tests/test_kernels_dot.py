"""Runtime dot-product kernels against gguf-py's dequantize + numpy.

For every format: the dequantize kernel equals gguf.quants.dequantize exactly; the integer-dot kernel
(activations quantized to Q8 as llama.cpp does) equals float64 dequant(W) @ (the same rounded
activations) to float32 rounding, and is within the activation rounding of dequant(W) @ x; the BLAS
batch path of the runtime agrees too. Weights are gguf-py quantizations of random rows where gguf-py
can quantize, random bytes with sane fp16 scales for the K-quants, and real tensors from the models.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants

from ggufq.files.gguf_reader import GGUFFile
from ggufq.kernels import gemm_q8
from ggufq.kernels.dot_common import FAKE_QUANT, Activations, quantize_q8_32, quantize_q8_k
from ggufq.kernels.registry import get_format, runtime_format
from ggufq.runtime.model import BLAS_MIN_TOKENS, Input, RunState, matmul

from .conftest import GEMMA, SMOL

FORMATS = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]
SCALE_OFFSETS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
                 T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def make_weights(qtype, rows, k, rng):
    """(the array the kernel takes, float32 dequantization by gguf-py)"""
    if qtype in (T.F32, T.F16):
        w = rng.standard_normal((rows, k)).astype(np.float32 if qtype == T.F32 else np.float16)
        return get_format(qtype).dot.weight_view(w), w.astype(np.float32)
    if qtype == T.BF16:
        raw = quants.quantize(rng.standard_normal((rows, k)).astype(np.float32), T.BF16)
        return raw.view(np.uint16).reshape(rows, k), quants.dequantize(raw, T.BF16).reshape(rows, k)
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        bs, ts = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, (rows, k // bs, ts), dtype=np.uint8)
        for o in SCALE_OFFSETS[qtype]:
            d = (rng.random((rows, k // bs)) * 0.02 + 0.001).astype(np.float16)
            raw[:, :, o:o + 2] = d.view(np.uint8).reshape(rows, k // bs, 2)
        raw = raw.reshape(rows, -1)
    else:
        raw = quants.quantize(rng.standard_normal((rows, k)).astype(np.float32), qtype)
    return raw, quants.dequantize(raw, qtype).reshape(rows, k)


def rounded(kind, x):
    if kind == "f32":
        return x.astype(np.float64)
    out = np.zeros_like(x)
    FAKE_QUANT[kind](x, out)
    return out.astype(np.float64)


def check_matmul(qtype, w, deq, x):
    kern = get_format(qtype).dot
    T_, k = x.shape
    acts = Activations(kern.act, T_, k).set(x)
    out = np.zeros((T_, w.shape[0]), np.float32)
    kern.matmul(w, acts.xf, acts.xq, acts.xd, acts.xs, out)
    exact = rounded(kern.act, x) @ deq.astype(np.float64).T
    scale = np.abs(exact).max()
    # the Q8_1 sums are stored through fp16 (as llama.cpp's block_q8_1.s): a relative 1e-3 of the min term
    tol = 1e-3 if qtype in (T.Q4_1, T.Q5_1) else 2e-6
    assert np.abs(out - exact).max() <= tol * scale, qtype.name
    # against the unrounded activations: off by at most what the rounding of x explains
    plain = x.astype(np.float64) @ deq.astype(np.float64).T
    bound = np.abs(x.astype(np.float64) - rounded(kern.act, x)) @ np.abs(deq.astype(np.float64)).T
    assert (np.abs(out - plain) <= bound * 1.001 + tol * scale).all(), qtype.name
    return out


@pytest.mark.parametrize("qtype", FORMATS, ids=lambda q: q.name)
def test_kernels_random(qtype):
    rng = np.random.default_rng(int(qtype))
    rows, k = 37, 512  # a row count that is not a multiple of 4
    w, deq = make_weights(qtype, rows, k, rng)
    got = np.zeros((5, k), np.float32)
    get_format(qtype).dot.dequant(w, 30, 35, got)
    np.testing.assert_array_equal(got, deq[30:35])
    for T_ in (1, 3):
        x = rng.standard_normal((T_, k)).astype(np.float32)
        x[0, 7] = 40.0  # an outlier, as real activations have
        check_matmul(qtype, w, deq, x)


@pytest.mark.parametrize("path,names", [
    (SMOL, ["blk.0.attn_q.weight", "blk.3.ffn_down.weight", "token_embd.weight"]),
    (GEMMA, ["blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_down.weight"]),
], ids=["smol", "gemma"])
def test_kernels_real_tensors(path, names):
    g = GGUFFile(path)
    rng = np.random.default_rng(1)
    for name in names:
        ti = g.tensors[name]
        rows = min(ti.shape[1], 300)
        kern = get_format(ti.qtype).dot
        w = kern.weight_view(ti.data)[:rows]
        deq = quants.dequantize(np.ascontiguousarray(ti.data[:rows]), ti.qtype).reshape(rows, -1)
        x = rng.standard_normal((2, ti.shape[0])).astype(np.float32)
        check_matmul(ti.qtype, w, deq, x)


@pytest.mark.parametrize("gemm", [True, False], ids=["gemm", "blas"])
def test_batch_path_matches_integer_path(gemm):
    """The runtime's batch path gives the integer kernels' numbers: its integer GEMM (kernels/gemm_q8.py,
    the activations quantized as those kernels quantize them), and the dequantized tiles through BLAS
    (activations rounded the same way; formats without an unpacker), for a tile count above one."""
    g = GGUFFile(GEMMA)
    from ggufq.runtime.config import Config
    from ggufq.runtime.weights import Weights
    c = Config.from_gguf(g)
    wts = Weights(g, c)
    for lin in wts.linears():
        lin.gemm = gemm and lin.gemm
    rs = RunState(c, wts, 128, BLAS_MIN_TOKENS + 4, "f16")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((BLAS_MIN_TOKENS + 4, c.n_embd)).astype(np.float32)
    for lin in (wts.layers[0].wq, wts.layers[0].w_gate, wts.output):
        assert lin.gemm == (gemm and lin.dot.unpack is not None and gemm_q8.usable(lin.dot.unpack_max))
        rows = lin.rows
        big = np.zeros((len(x), rows), np.float32)
        matmul(lin, Input(x, rs), big)            # batch path
        small = np.zeros((4, rows), np.float32)
        matmul(lin, Input(x[:4], rs), small)      # integer path
        scale = np.abs(small).max()
        assert np.abs(big[:4] - small).max() <= 2e-5 * scale, lin.name
    assert wts.output.tile_rows < wts.output.rows  # the tiled loops ran
    assert all(t.rows < wts.output.rows for t in rs.gemm_tiles.values())


def test_activation_quantizers():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 512)).astype(np.float32) * 5
    x[1, :256] = 0.0  # an all-zero Q8_K block
    xq, xd, xs = np.zeros((3, 512), np.int8), np.zeros((3, 16), np.float32), np.zeros((3, 16), np.float32)
    quantize_q8_32(x, xq, xd, xs)
    back = xq.reshape(3, 16, 32) * xd[:, :, None]
    assert np.abs(back.reshape(3, 512) - x).max() <= np.abs(x).max() / 127 * 0.51 + 1e-3
    np.testing.assert_allclose(xs, (xq.reshape(3, 16, 32).sum(-1) * xd), rtol=2e-3, atol=1e-6)
    kq, kd, ks = np.zeros((3, 512), np.int8), np.zeros((3, 2), np.float32), np.zeros((3, 32), np.int32)
    quantize_q8_k(x, kq, kd, ks)
    assert kd[1, 0] == 0 and not kq[1, :256].any()
    np.testing.assert_array_equal(ks, kq.reshape(3, 32, 16).astype(np.int32).sum(-1))
    back = kq.reshape(3, 2, 256) * kd[:, :, None]
    assert np.abs(back.reshape(3, 512) - x).max() <= np.abs(x).max() / 127 * 0.51 + 1e-3


def test_every_runtime_format_is_registered():
    """The runtime's formats are the registry classes with kernels, each with the activation form its
    family multiplies; the activation-only Q8_K and an unknown id have none."""
    acts = {T.F32: "f32", T.F16: "f32", T.BF16: "f32", T.Q2_K: "q8_k", T.Q3_K: "q8_k", T.Q4_K: "q8_k",
            T.Q5_K: "q8_k", T.Q6_K: "q8_k", T.IQ4_XS: "q8_k"}
    for q in FORMATS:
        fmt = runtime_format(q)
        assert fmt is get_format(q) and fmt.dot.act == acts.get(q, "q8_32"), q.name
    assert runtime_format(T.Q8_K) is None and runtime_format(T.IQ2_XXS) is None and runtime_format(999) is None


@pytest.mark.parametrize("qtype", FORMATS, ids=lambda q: q.name)
def test_decode_row_kernels_equal_the_matmul(qtype):
    """The decode step's row kernel of every format, found through the registry's table (kind = its
    index), gives the batch matmul's numbers bit for bit on a weight inside a read-only file buffer, for
    a range of rows, with row counts that llama.cpp's AVX2 build repacks (a multiple of 8) and not, in
    both arithmetics."""
    from ggufq.kernels.dot_rows import has_row_kernel, row_kind, row_table
    from ggufq.kernels.dot_simd import repacked
    from ggufq.runtime.decode import ROW_KERNELS, matvec_rows
    assert has_row_kernel(qtype) and ROW_KERNELS == row_table()
    rng = np.random.default_rng(100 + int(qtype))
    k = 512
    x = rng.standard_normal((1, k)).astype(np.float32)
    q32 = (np.zeros((1, k), np.int8), np.zeros((1, k // 32), np.float32), np.zeros((1, k // 32), np.float32))
    qk = (np.zeros((1, k), np.int8), np.zeros((1, k // 256), np.float32), np.zeros((1, k // 16), np.int32))
    quantize_q8_32(x, *q32)
    quantize_q8_k(x, *qk)
    acts = tuple(a.reshape(-1) for a in q32 + qk) + (x.reshape(-1),)
    dot = get_format(qtype).dot
    for rows in (40, 37):
        w, deq = make_weights(qtype, rows, k, rng)
        want = check_matmul(qtype, w, deq, x)[0]
        raw = np.ascontiguousarray(w).view(np.uint8).reshape(rows, -1)
        off = 64
        file = np.zeros(off + raw.size + 4, np.uint8)
        file[off:off + raw.size] = raw.reshape(-1)
        file.flags.writeable = False
        bufs = (file, file[:file.size // 2 * 2].view(np.uint16), file[:file.size // 4 * 4].view(np.float32))
        # the fast default's kernel, and llama.cpp-avx2's (the repacked one where that build repacks): each
        # equal to the batch matmul of the same arithmetic (float weights take the matmul's fastmath rows)
        for llama_cpp in (False, True):
            kind = row_kind(qtype, rows, llama_cpp)
            if llama_cpp:
                assert ROW_KERNELS[kind] is (dot.rows_repacked if dot.rows_repacked is not None and repacked(rows)
                                             else dot.rows)
            else:
                assert ROW_KERNELS[kind] is (dot.rows_fast or dot.rows)
            mm = dot.matmul_llama_cpp if llama_cpp and dot.act != "f32" and dot.matmul_llama_cpp else dot.matmul
            a = Activations(dot.act, 1, k).set(x)
            expect = np.zeros((1, rows), np.float32)
            mm(w, a.xf, a.xq, a.xd, a.xs, expect)
            if mm is dot.matmul:
                np.testing.assert_array_equal(expect[0], want)
            out = np.full(rows, np.nan, np.float32)
            matvec_rows(kind, bufs, off, raw.shape[1], 0, 3, k, acts, out)
            matvec_rows(kind, bufs, off, raw.shape[1], 3, rows, k, acts, out)
            np.testing.assert_array_equal(out, expect[0], err_msg=f"{qtype.name}, {rows} rows, {llama_cpp=}")


@pytest.mark.parametrize("k", [32, 608])
def test_q4_0_fast_kernel_odd_block_counts(k):
    """The fast Q4_0 kernel takes two blocks a step (dot_vnni on VNNI hosts): a row of one block, and of an
    odd number, equal dequantize + numpy too."""
    rng = np.random.default_rng(k)
    w, deq = make_weights(T.Q4_0, 21, k, rng)
    check_matmul(T.Q4_0, w, deq, rng.standard_normal((3, k)).astype(np.float32))


@pytest.mark.parametrize("k", [32, 96, 2048])
def test_q4_0_four_rows_equal_the_repacked_row_dot(k):
    """rows4_q4_0_x8 (four rows a call, two blocks a step, the last block alone when their count is odd)
    gives rowdot_q4_0_x8's numbers bit for bit for every row of a range that starts anywhere and ends
    anywhere (the last rows one at a time), for the decode row kernels of both arithmetics that call it,
    and equals dequantize + numpy to float rounding."""
    import numba as nb
    from ggufq.kernels.dot_simd import rowdot_q4_0_x8
    from ggufq.kernels.legacy_runtime import _rows_q4_0_x8

    @nb.njit
    def one_at_a_time(w, rb, rows, xq, xi, xd, si, nb_, out):
        for r in range(rows):
            out[r] = rowdot_q4_0_x8(w, r * rb, xq, xi, xd, xd, si, nb_)

    rng = np.random.default_rng(k + 7)
    rows = 13
    w, deq = make_weights(T.Q4_0, rows, k, rng)
    x = rng.standard_normal((2, k)).astype(np.float32)
    a = Activations("q8_32", 2, k).set(x)
    flat = np.ascontiguousarray(w).reshape(-1)
    rb, nb = w.shape[1], k // 32
    for t in range(2):
        xq, xd = a.xq.reshape(-1), a.xd.reshape(-1)
        want = np.zeros(rows, np.float32)
        one_at_a_time(flat, rb, rows, xq, t * k, xd, t * nb, nb, want)
        for r0, r1 in ((0, rows), (1, 10), (3, 4), (5, 5)):
            out = np.full(rows, np.nan, np.float32)
            _rows_q4_0_x8(flat, 0, rb, xq, t * k, xd, t * nb, nb, r0, r1, out)
            np.testing.assert_array_equal(out[r0:r1], want[r0:r1], err_msg=f"{k=} {t=} rows {r0}..{r1}")
            assert np.isnan(out[:r0]).all() and np.isnan(out[r1:]).all()
    exact = rounded("q8_32", x) @ deq.astype(np.float64).T
    got = np.zeros((2, rows), np.float32)
    get_format(T.Q4_0).dot.matmul_llama_cpp(w[:8], a.xf, a.xq, a.xd, a.xs, got[:, :8])   # 8 rows: repacked
    assert np.abs(got[:, :8] - exact[:, :8]).max() <= 2e-6 * np.abs(exact).max()
