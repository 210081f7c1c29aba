"""Runtime kernels for the 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Weights are read in place (uint8[rows, row_bytes] straight from the mapped file) against activations
quantized to Q8 blocks of 32 (dot_common.quantize_q8_32): per block an int32 sum of int8 products, then
one float multiply by the two scales, as llama.cpp's ggml_vec_dot_q4_0_q8_0 and friends; the block sums
and the loop over a row's blocks are one SIMD intrinsic per format (dot_simd.rowdot_*), with float32
vector accumulators; prange over rows. Layouts (bytes per block):

    Q4_0 18: d f16, qs[16]          w = d * (nibble - 8); low nibbles are values 0..15, high 16..31
    Q4_1 20: d f16, m f16, qs[16]   w = d * nibble + m
    Q5_0 22: d f16, qh u32, qs[16]  w = d * ((nibble | bit << 4) - 16); bit j of qh is value j's 5th bit
    Q5_1 24: d, m f16, qh, qs[16]   w = d * (nibble | bit << 4) + m
    Q8_0 34: d f16, qs int8[32]     w = d * q
"""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T

from .dot_common import load_f16, register
from .dot_simd import repacked, rowdot_q4_0, rowdot_q4_0_x8, rowdot_q4_1, rowdot_q5_0, rowdot_q5_1, rowdot_q8_0

i32 = np.int32
f32 = np.float32


# ---- dequantization (the BLAS batch path and embeddings) ----------------------------------------
# ---- Q4_0 ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def dequant_q4_0(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        r = r0 + i
        for b in range(w.shape[1] // 18):
            o = b * 18
            d = load_f16(w, r, o)
            for j in range(16):
                q = w[r, o + 2 + j]
                out[i, b * 32 + j] = d * f32(i32(q & 15) - 8)
                out[i, b * 32 + 16 + j] = d * f32(i32(q >> 4) - 8)


# ---- Q4_1 ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def dequant_q4_1(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        r = r0 + i
        for b in range(w.shape[1] // 20):
            o = b * 20
            d = load_f16(w, r, o)
            m = load_f16(w, r, o + 2)
            for j in range(16):
                q = w[r, o + 4 + j]
                out[i, b * 32 + j] = d * f32(q & 15) + m
                out[i, b * 32 + 16 + j] = d * f32(q >> 4) + m


# ---- Q5_0 / Q5_1 ---------------------------------------------------------------------------------

@nb.njit(inline="always")
def _qh(w, r, o):
    return (np.uint32(w[r, o]) | (np.uint32(w[r, o + 1]) << np.uint32(8))
            | (np.uint32(w[r, o + 2]) << np.uint32(16)) | (np.uint32(w[r, o + 3]) << np.uint32(24)))


@nb.njit(inline="always")
def _q5_dequant_block(w, r, o_qs, h, d, m, off, out, i, yo):
    for j in range(16):
        q = w[r, o_qs + j]
        lo = i32(q & 15) | i32(((h >> np.uint32(j)) & np.uint32(1)) << np.uint32(4))
        hi = i32(q >> 4) | i32(((h >> np.uint32(j + 16)) & np.uint32(1)) << np.uint32(4))
        out[i, yo + j] = d * f32(lo - off) + m
        out[i, yo + 16 + j] = d * f32(hi - off) + m


@nb.njit(cache=True, parallel=True)
def dequant_q5_0(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        r = r0 + i
        for b in range(w.shape[1] // 22):
            o = b * 22
            _q5_dequant_block(w, r, o + 6, _qh(w, r, o + 2), load_f16(w, r, o), f32(0.0), 16, out, i, b * 32)


@nb.njit(cache=True, parallel=True)
def dequant_q5_1(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        r = r0 + i
        for b in range(w.shape[1] // 24):
            o = b * 24
            _q5_dequant_block(w, r, o + 8, _qh(w, r, o + 4), load_f16(w, r, o), load_f16(w, r, o + 2), 0,
                              out, i, b * 32)


# ---- Q8_0 ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def dequant_q8_0(w, r0, r1, out):
    wi = w.view(np.int8)
    for i in nb.prange(r1 - r0):
        r = r0 + i
        for b in range(w.shape[1] // 34):
            o = b * 34
            d = load_f16(w, r, o)
            for j in range(32):
                out[i, b * 32 + j] = d * f32(wi[r, o + 2 + j])


# ---- integer dots: one row per iteration, the block loop inside the rowdot intrinsic --------------

@nb.njit(cache=True, parallel=True)
def matmul_q4_0(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    if repacked(R):  # one float accumulation per block
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q4_0_x8(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)
        return
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q4_0(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


@nb.njit(cache=True, parallel=True)
def matmul_q4_1(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q4_1(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


@nb.njit(cache=True, parallel=True)
def matmul_q5_0(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q5_0(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


@nb.njit(cache=True, parallel=True)
def matmul_q5_1(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q5_1(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


@nb.njit(cache=True, parallel=True)
def matmul_q8_0(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q8_0(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


register(T.Q4_0, "q8_32", matmul_q4_0, dequant_q4_0)
register(T.Q4_1, "q8_32", matmul_q4_1, dequant_q4_1)
register(T.Q5_0, "q8_32", matmul_q5_0, dequant_q5_0)
register(T.Q5_1, "q8_32", matmul_q5_1, dequant_q5_1)
register(T.Q8_0, "q8_32", matmul_q8_0, dequant_q8_0)
