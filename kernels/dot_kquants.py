"""Runtime kernels for the K-quants Q4_K, Q5_K, Q6_K (super-blocks of 256 weights).

Activations are quantized to Q8_K (dot_common.quantize_q8_k: int8 values, a float32 scale per 256, and
the sum of every 16 values); per super-block the kernel forms int32 sums per sub-block, weights them by
the 6-bit (Q4_K/Q5_K) or 8-bit (Q6_K) sub-block scales, and takes the minimums through the activation
sums, in the lanes and order of llama.cpp's AVX2 ggml_vec_dot_q{4,5,6}_K_q8_K or of the repacked and
tiled kernels it picks instead (dot_simd.rowdot_q*_k*). Layouts (bytes per super-block):

    Q4_K 144: d f16, dmin f16, scales[12] (8 six-bit scales and mins), qs[128]
              sub-block j (32 values) = low (j even) or high (j odd) nibbles of qs[32 * (j // 2):][:32]
              w = d * sc[j] * q - dmin * m[j]
    Q5_K 176: d, dmin, scales[12], qh[32], qs[128]; bit j of qh[l] is the 5th bit of value l of sub-block j
    Q6_K 210: ql[128], qh[64], scales int8[16], d f16; w = d * sc[i // 16] * (q - 32), q six bits
"""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T

from .dot_common import load_f16, register
from .dot_simd import (repacked, rowdot_q4_k, rowdot_q4_k_tiled, rowdot_q4_k_x8, rowdot_q4_k_x8_gemm, rowdot_q5_k,
                       rowdot_q5_k_tiled, rowdot_q6_k, rowdot_q6_k_tiled)

i32 = np.int32
f32 = np.float32


@nb.njit(inline="always")
def _scale_min_k4(wf, o, j):
    """Sub-block j's 6-bit scale and min from the 12 packed bytes at wf[o:o + 12] (a flat array)."""
    if j < 4:
        return i32(wf[o + j] & 63), i32(wf[o + j + 4] & 63)
    sc = (wf[o + j + 4] & 15) | ((wf[o + j - 4] >> 6) << 4)
    m = (wf[o + j + 4] >> 4) | ((wf[o + j] >> 6) << 4)
    return i32(sc), i32(m)


# From this many tokens on llama.cpp multiplies the (not repacked) K-quants with ggml's tiled kernel
TILED_MIN_TOKENS = 8


# ---- Q4_K ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def matmul_q4_k(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf, xv, xdv, xsv = w.reshape(-1), xq.reshape(-1), xd.reshape(-1), xs.reshape(-1)
    if repacked(R):  # tokens by 4 through the gemm kernel, the rest through gemv
        t4 = Tn - Tn % 4
        for r in nb.prange(R):
            for t in range(t4):
                out[t, r] = rowdot_q4_k_x8_gemm(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
            for t in range(t4, Tn):
                out[t, r] = rowdot_q4_k_x8(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    if Tn >= TILED_MIN_TOKENS:
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q4_k_tiled(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q4_k(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)


@nb.njit(cache=True, parallel=True)
def dequant_q4_k(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        r = r0 + i
        for b in range(w.shape[1] // 144):
            o = b * 144
            d = load_f16(w, r, o)
            dmin = load_f16(w, r, o + 2)
            for c in range(4):
                sc, m = _scale_min_k4(w[r], o + 4, 2 * c)
                d1, m1 = d * f32(sc), dmin * f32(m)
                sc, m = _scale_min_k4(w[r], o + 4, 2 * c + 1)
                d2, m2 = d * f32(sc), dmin * f32(m)
                y = b * 256 + c * 64
                for l in range(32):
                    q = w[r, o + 16 + c * 32 + l]
                    out[i, y + l] = d1 * f32(q & 15) - m1
                    out[i, y + 32 + l] = d2 * f32(q >> 4) - m2


# ---- Q5_K ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def matmul_q5_k(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf, xv, xdv, xsv = w.reshape(-1), xq.reshape(-1), xd.reshape(-1), xs.reshape(-1)
    if Tn >= TILED_MIN_TOKENS:
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q5_k_tiled(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q5_k(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)


@nb.njit(cache=True, parallel=True)
def dequant_q5_k(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        r = r0 + i
        for b in range(w.shape[1] // 176):
            o = b * 176
            d = load_f16(w, r, o)
            dmin = load_f16(w, r, o + 2)
            for c in range(4):
                sc, m = _scale_min_k4(w[r], o + 4, 2 * c)
                d1, m1 = d * f32(sc), dmin * f32(m)
                sc, m = _scale_min_k4(w[r], o + 4, 2 * c + 1)
                d2, m2 = d * f32(sc), dmin * f32(m)
                y = b * 256 + c * 64
                for l in range(32):
                    q = w[r, o + 48 + c * 32 + l]
                    h = w[r, o + 16 + l] >> (2 * c)
                    out[i, y + l] = d1 * f32((q & 15) | ((h & 1) << 4)) - m1
                    out[i, y + 32 + l] = d2 * f32((q >> 4) | ((h & 2) << 3)) - m2


# ---- Q6_K ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def matmul_q6_k(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf, xv, xdv, xsv = w.reshape(-1), xq.reshape(-1), xd.reshape(-1), xs.reshape(-1)
    if Tn >= TILED_MIN_TOKENS:
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q6_k_tiled(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q6_k(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)


@nb.njit(cache=True, parallel=True)
def dequant_q6_k(w, r0, r1, out):
    wi = w.view(np.int8)
    for i in nb.prange(r1 - r0):
        r = r0 + i
        for b in range(w.shape[1] // 210):
            o = b * 210
            d = load_f16(w, r, o + 208)
            for n in range(2):
                y = b * 256 + n * 128
                for l in range(32):
                    so = o + 192 + n * 8 + l // 16
                    qa = w[r, o + n * 64 + l]
                    qb = w[r, o + n * 64 + l + 32]
                    h = w[r, o + 128 + n * 32 + l]
                    out[i, y + l] = d * f32(wi[r, so]) * f32(i32((qa & 15) | ((h & 3) << 4)) - 32)
                    out[i, y + l + 32] = d * f32(wi[r, so + 2]) * f32(i32((qb & 15) | (((h >> 2) & 3) << 4)) - 32)
                    out[i, y + l + 64] = d * f32(wi[r, so + 4]) * f32(i32((qa >> 4) | (((h >> 4) & 3) << 4)) - 32)
                    out[i, y + l + 96] = d * f32(wi[r, so + 6]) * f32(i32((qb >> 4) | (((h >> 6) & 3) << 4)) - 32)


register(T.Q4_K, "q8_k", matmul_q4_k, dequant_q4_k)
register(T.Q5_K, "q8_k", matmul_q5_k, dequant_q5_k)
register(T.Q6_K, "q8_k", matmul_q6_k, dequant_q6_k)
