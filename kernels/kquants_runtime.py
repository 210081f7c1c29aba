"""The runtime's kernels for the K-quants Q4_K, Q5_K, Q6_K: batch matmuls, row dequantizers, the GEMM's
unpackers and the decode step's row kernels (kquants.py has the quantizers and the registry classes that
carry these; the SIMD row dots are in dot_simd_k.py and dot_vnni.py)."""
from __future__ import annotations

import numba as nb
import numpy as np

from .dot_common import load_f16
from .dot_rows import row_kernel
from .dot_simd import repacked
from .dot_simd_k import (rowdot_q4_k, rowdot_q4_k_tiled, rowdot_q4_k_x8, rowdot_q4_k_x8_gemm, rowdot_q5_k,
                         rowdot_q5_k_tiled, rowdot_q6_k, rowdot_q6_k_tiled)
from .dot_vnni import rowdot_q4_k_fast, rowdot_q6_k_fast
from .gemm_q8 import u32_at


# Runtime kernels for the K-quants Q4_K, Q5_K, Q6_K (super-blocks of 256 weights).
#
# Activations are quantized to Q8_K (dot_common.quantize_q8_k: int8 values, a float32 scale per 256, and
# the sum of every 16 values); per super-block the kernel forms int32 sums per sub-block, weights them by
# the 6-bit (Q4_K/Q5_K) or 8-bit (Q6_K) sub-block scales, and takes the minimums through the activation
# sums, in the lanes and order of llama.cpp's AVX2 ggml_vec_dot_q{4,5,6}_K_q8_K or of the repacked and
# tiled kernels it picks instead (dot_simd_k.rowdot_q*_k*). Layouts (bytes per super-block):
#
#     Q4_K 144: d f16, dmin f16, scales[12] (8 six-bit scales and mins), qs[128]
#               sub-block j (32 values) = low (j even) or high (j odd) nibbles of qs[32 * (j // 2):][:32]
#               w = d * sc[j] * q - dmin * m[j]
#     Q5_K 176: d, dmin, scales[12], qh[32], qs[128]; bit j of qh[l] is the 5th bit of value l of sub-block j
#     Q6_K 210: ql[128], qh[64], scales int8[16], d f16; w = d * sc[i // 16] * (q - 32), q six bits

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


# The matmuls of the three formats share their outer loops and differ in the rowdot they call; they are
# written out for the reason kernels/legacy_runtime.py gives (a factory's kernels are not cached across runs).

# ---- Q4_K ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def _matmul_q4_k(w, xf, xq, xd, xs, out, variant):
    """variant 0: llama.cpp's AVX2 kernels (tiled from 8 tokens on), 1: its repacked ones, 2: the fast one
    (dot_vnni, every batch size: the batch GEMM takes over from 64 tokens)."""
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf, xv, xdv, xsv = w.reshape(-1), xq.reshape(-1), xd.reshape(-1), xs.reshape(-1)
    if variant == 1:  # tokens by 4 through the gemm kernel, the rest through gemv
        t4 = Tn - Tn % 4
        for r in nb.prange(R):
            for t in range(t4):
                out[t, r] = rowdot_q4_k_x8_gemm(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
            for t in range(t4, Tn):
                out[t, r] = rowdot_q4_k_x8(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    if variant == 2:
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q4_k_fast(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    if Tn >= TILED_MIN_TOKENS:
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q4_k_tiled(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q4_k(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)


@nb.njit(cache=True)
def matmul_q4_k(w, xf, xq, xd, xs, out):
    """The fast default: 64 weights a step with VNNI (dot_vnni), else llama.cpp's AVX2 kernel; never the
    repacked kernels (their numbers are llama.cpp's AVX2 build's only)."""
    _matmul_q4_k(w, xf, xq, xd, xs, out, 2)


@nb.njit(cache=True)
def matmul_q4_k_llama_cpp(w, xf, xq, xd, xs, out):
    """llama.cpp's AVX2 numbers: the repacked kernels' where it repacks the matrix (dot_simd.repacked)."""
    _matmul_q4_k(w, xf, xq, xd, xs, out, 1 if repacked(w.shape[0]) else 0)


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
def _matmul_q6_k(w, xf, xq, xd, xs, out, fast):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf, xv, xdv, xsv = w.reshape(-1), xq.reshape(-1), xd.reshape(-1), xs.reshape(-1)
    if fast:
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q6_k_fast(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    if Tn >= TILED_MIN_TOKENS:
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q6_k_tiled(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
        return
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q6_k(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)


@nb.njit(cache=True)
def matmul_q6_k(w, xf, xq, xd, xs, out):
    """The fast default: 64 weights a step with VNNI (dot_vnni), else llama.cpp's AVX2 kernel."""
    _matmul_q6_k(w, xf, xq, xd, xs, out, True)


@nb.njit(cache=True)
def matmul_q6_k_llama_cpp(w, xf, xq, xd, xs, out):
    _matmul_q6_k(w, xf, xq, xd, xs, out, False)


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


# ---- unpacking for the batch GEMM (kernels/gemm_q8.py): w = s * q + m per sub-block, q a byte -------
# Q4_K/Q5_K in blocks of 32 (s = d * scale, m = -dmin * min), Q6_K in blocks of 16 (s = d * scale, m = -32 s);
# bytes 4j..4j+3 of a block go to tq[rowvec, block * G/4 + j, lane] as one uint32.

_NIB = np.uint32(0x0F0F0F0F)


@nb.njit(cache=True)
def unpack_rows_q45_k(w, r0, r1, tq, tsm, v0):
    """Q4_K (144-byte super-blocks) or Q5_K (176: a fifth bit per weight in qh)."""
    L = tq.shape[2]
    bb = w.shape[1] * 64 // tq.shape[1]        # bytes a super-block: k = 4 * tq.shape[1]
    q0 = bb - 128
    for i in range(r1 - r0):
        wr, v, l = w[r0 + i], v0 + i // L, i % L
        for sb in range(w.shape[1] // bb):
            o = sb * bb
            d = load_f16(w, r0 + i, o)
            dmin = load_f16(w, r0 + i, o + 2)
            for j in range(8):
                sc, m = _scale_min_k4(wr, o + 4, j)
                tsm[0, v, sb * 8 + j, l] = d * f32(sc)
                tsm[1, v, sb * 8 + j, l] = -(dmin * f32(m))
            for c in range(4):
                bi = sb * 8 + 2 * c
                for s in range(8):
                    q = u32_at(wr, o + q0 + c * 32 + 4 * s)
                    lo, hi = q & _NIB, (q >> np.uint32(4)) & _NIB
                    if bb == 176:
                        h = u32_at(wr, o + 16 + 4 * s) >> np.uint32(2 * c)
                        lo |= (h & np.uint32(0x01010101)) << np.uint32(4)
                        hi |= (h & np.uint32(0x02020202)) << np.uint32(3)
                    tq[v, bi * 8 + s, l] = lo
                    tq[v, bi * 8 + 8 + s, l] = hi


@nb.njit(cache=True, parallel=True)
def unpack_q45_k(w, r0, r1, tq, tsm):
    """Rows r0..r1 into the tile from rowvec 0, a rowvec of rows on each thread (unpack_rows_q45_k)."""
    L = tq.shape[2]
    for c in nb.prange(-(-(r1 - r0) // L)):
        unpack_rows_q45_k(w, r0 + c * L, min(r1, r0 + (c + 1) * L), tq, tsm, c)


@nb.njit(cache=True)
def unpack_rows_q6_k(w, r0, r1, tq, tsm, v0):
    """Q6_K (210-byte super-blocks), in blocks of 16: q = the 6-bit value, s = d * scale, m = -32 s."""
    L = tq.shape[2]
    wi = w.view(np.int8)
    for i in range(r1 - r0):
        wr, v, l = w[r0 + i], v0 + i // L, i % L
        for sb in range(w.shape[1] // 210):
            o = sb * 210
            d = load_f16(w, r0 + i, o + 208)
            for j in range(16):
                sc = d * f32(wi[r0 + i, o + 192 + j])
                tsm[0, v, sb * 16 + j, l] = sc
                tsm[1, v, sb * 16 + j, l] = f32(-32.0) * sc
            for n in range(2):
                for s in range(8):
                    a = u32_at(wr, o + n * 64 + 4 * s)
                    b = u32_at(wr, o + n * 64 + 32 + 4 * s)
                    h = u32_at(wr, o + 128 + n * 32 + 4 * s)
                    at = (sb * 16 + n * 8 + s // 4) * 4 + s % 4
                    tq[v, at, l] = (a & _NIB) | ((h & np.uint32(0x03030303)) << np.uint32(4))
                    tq[v, at + 8, l] = (b & _NIB) | ((h & np.uint32(0x0C0C0C0C)) << np.uint32(2))
                    tq[v, at + 16, l] = ((a >> np.uint32(4)) & _NIB) | (h & np.uint32(0x30303030))
                    tq[v, at + 24, l] = ((b >> np.uint32(4)) & _NIB) | ((h >> np.uint32(2)) & np.uint32(0x30303030))


@nb.njit(cache=True, parallel=True)
def unpack_q6_k(w, r0, r1, tq, tsm):
    """Rows r0..r1 into the tile from rowvec 0, a rowvec of rows on each thread (unpack_rows_q6_k)."""
    L = tq.shape[2]
    for c in nb.prange(-(-(r1 - r0) // L)):
        unpack_rows_q6_k(w, r0 + c * L, min(r1, r0 + (c + 1) * L), tq, tsm, c)


# ---- the decode step's row kernels (kernels/dot_rows.py): rows r0..r1, the weight at byte `off` -----

@row_kernel
def rows_q4_k(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q4_k(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)


@row_kernel
def rows_q4_k_fast(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q4_k_fast(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)


@row_kernel
def rows_q4_k_x8(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q4_k_x8(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)


@row_kernel
def rows_q5_k(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q5_k(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)


@row_kernel
def rows_q6_k(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q6_k(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)


@row_kernel
def rows_q6_k_fast(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q6_k_fast(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)
