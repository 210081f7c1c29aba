"""The K-quants: super-blocks of 256 weights. Q4_K, Q5_K, Q6_K (and Q8_K, the activation format).

Byte-exact with llama.cpp's `ggml-quants.c` (see kernels/numerics.py for the shared numerics). Without an
importance matrix llama-quantize runs `quantize_row_q{4,5,6}_K_ref` (make_qkx2_quants per 32-block,
scales rounded against the largest one); with one it runs `quantize_row_q*_K_impl` (make_qkx3_quants on
weights qw * sqrt(sigma2 + x^2), then make_qp_quants for the 6-bit scales). Q6_K uses make_qx_quants.

Block layouts:
    Q4_K  d:f16 dmin:f16 scales[12] qs[128]              (144 bytes)  x = d*sc*q - dmin*m
    Q5_K  d:f16 dmin:f16 scales[12] qh[32] qs[128]       (176 bytes)  x = d*sc*q - dmin*m
    Q6_K  ql[128] qh[64] scales[16]:int8 d:f16           (210 bytes)  x = d*sc*(q - 32)
    Q8_K  d:f32 qs[256]:int8 bsums[16]:int16             (292 bytes)  x = d*q
The 6-bit scales and mins of Q4_K/Q5_K are packed by `pack_scales_k4` (get_scale_min_k4 unpacks).
"""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import kquants_ref
from .dot_common import load_f16
from .dot_simd import (repacked, rowdot_q4_k, rowdot_q4_k_tiled, rowdot_q4_k_x8, rowdot_q4_k_x8_gemm, rowdot_q5_k,
                       rowdot_q5_k_tiled, rowdot_q6_k, rowdot_q6_k_tiled)
from .numerics import (GROUP_MAX_EPS, BlockFormat, dequant_blocks, get_f16, make_qkx_quants, make_qx_quants,
                       nearest_int, put_f16)
from .dot_rows import row_kernel
from .dot_vnni import rowdot_q4_k_fast, rowdot_q6_k_fast
from .gemm_q8 import u32_at
from .registry import DotKernels, QuantFormat

QK_K = 256

# ================================================================================================
# Numba helpers
# ================================================================================================


@njit(cache=True, inline="always")
def pack_scales_k4(out, o, j, ls, lm):
    """Store the 6-bit scale ls and min lm of 32-block j into the 12 scale bytes at out[o:o+12]."""
    if j < 4:
        out[o + j] = ls
        out[o + j + 4] = lm
    else:
        out[o + j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
        out[o + j - 4] |= (ls >> 4) << 6
        out[o + j] |= (lm >> 4) << 6


@njit(cache=True, inline="always")
def get_scale_min_k4(j, q, o):
    if j < 4:
        return np.int64(q[o + j]) & 63, np.int64(q[o + j + 4]) & 63
    d = (np.int64(q[o + j + 4]) & 0xF) | ((np.int64(q[o + j - 4]) >> 6) << 4)
    m = (np.int64(q[o + j + 4]) >> 4) | ((np.int64(q[o + j]) >> 6) << 4)
    return d, m


@njit(cache=True)
def make_qp_quants(n, nmax, x, L, qw):
    """make_qp_quants: quantize the n non-negative values x to [0, nmax] with weights qw."""
    mx = np.float32(0.0)
    for i in range(n):
        mx = max(mx, x[i])
    if mx < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    iscale = np.float32(nmax) / mx
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = np.float32(1.0) / iscale
    best_mse = np.float32(0.0)
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        best_mse += qw[i] * diff * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (np.float32(0.1) * np.float32(is_) + np.float32(nmax)) / mx
        scale_is = np.float32(1.0) / iscale_is
        mse = np.float32(0.0)
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * np.float32(l)
            mse += qw[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        fl = np.float32(L[i])
        sumlx += qw[i] * x[i] * fl
        suml2 += qw[i] * fl * fl
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            li = np.float32(L[i])
            slx = sumlx - w * x[i] * li
            sl2 = suml2 - w * li * li
            if slx > np.float32(0.0) and sl2 > np.float32(0.0):
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != np.int64(L[i]):
                    fn = np.float32(new_l)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > np.float32(0.0) else np.float32(0.0)


@njit(inline="always")
def _superblock_scratch():
    """One row's buffers for _qk_superblock: L, Laux, weights, scales, mins, Ls, Lm, sw."""
    return (np.empty(256, dtype=np.uint8), np.empty(32, dtype=np.float32), np.empty(32, dtype=np.float32),
            np.empty(8, dtype=np.float32), np.empty(8, dtype=np.float32), np.empty(8, dtype=np.uint8),
            np.empty(8, dtype=np.uint8), np.empty(8, dtype=np.float32))


@njit(cache=True)
def _qk_superblock(x, xo, qw, use_qw, nmax, out, o, scratch):
    """Shared by Q4_K (nmax 15) and Q5_K (nmax 31): choose L[0:256] and write d, dmin, scales[12] at o.
    scratch = (L, Laux, weights, scales, mins, Ls, Lm, sw), the row's buffers (_superblock_scratch)."""
    L, Laux, weights, scales, mins, Ls, Lm, sw = scratch
    if not use_qw:
        # quantize_row_q{4,5}_K_ref
        max_scale = np.float32(0.0)
        max_min = np.float32(0.0)
        for j in range(8):
            sum_x2 = np.float32(0.0)
            for l in range(32):
                sum_x2 += x[xo + 32 * j + l] * x[xo + 32 * j + l]
            av_x = np.sqrt(sum_x2 / np.float32(32.0))
            for l in range(32):
                weights[l] = av_x + abs(x[xo + 32 * j + l])
            if nmax == 15:
                s, m = make_qkx_quants(32, 15, x, xo + 32 * j, weights, 0, L, 32 * j, Laux,
                                       (np.float32(-1.0), np.float32(0.1), 20), False)
            else:
                s, m = make_qkx_quants(32, 31, x, xo + 32 * j, weights, 0, L, 32 * j, Laux,
                                       (np.float32(-0.5), np.float32(0.1), 15), False)
            scales[j] = s
            mins[j] = m
            if s > max_scale:
                max_scale = s
            if m > max_min:
                max_min = m
        inv_scale = np.float32(63.0) / max_scale if max_scale > np.float32(0.0) else np.float32(0.0)
        inv_min = np.float32(63.0) / max_min if max_min > np.float32(0.0) else np.float32(0.0)
        for j in range(12):
            out[o + 4 + j] = 0
        for j in range(8):
            ls = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
            lm = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
            pack_scales_k4(out, o + 4, j, ls, lm)
        put_f16(out, o, max_scale / np.float32(63.0))
        put_f16(out, o + 2, max_min / np.float32(63.0))
    else:
        # quantize_row_q{4,5}_K_impl with quant_weights
        sum_x2 = np.float32(0.0)
        for l in range(256):
            sum_x2 += x[xo + l] * x[xo + l]
        sigma2 = np.float32(2.0) * sum_x2 / np.float32(256.0)
        for j in range(8):
            for l in range(32):
                xv = x[xo + 32 * j + l]
                weights[l] = qw[xo + 32 * j + l] * np.sqrt(sigma2 + xv * xv)
            sumw = np.float32(0.0)
            for l in range(32):
                sumw += weights[l]
            sw[j] = sumw
            s, m = make_qkx_quants(32, nmax, x, xo + 32 * j, weights, 0, L, 32 * j, Laux,
                                   (np.float32(-0.9), np.float32(0.05), 36), False)
            scales[j] = s
            mins[j] = m
        d_block = make_qp_quants(8, 63, scales, Ls, sw)
        m_block = make_qp_quants(8, 63, mins, Lm, sw)
        for j in range(12):
            out[o + 4 + j] = 0
        for j in range(8):
            ls = np.int64(Ls[j])
            lm = np.int64(Lm[j])
            if nmax == 31:
                ls = min(63, ls)
                lm = min(63, lm)
            pack_scales_k4(out, o + 4, j, ls, lm)
        put_f16(out, o, d_block)
        put_f16(out, o + 2, m_block)
    dd = get_f16(out, o)
    dmin = get_f16(out, o + 2)
    for j in range(8):
        sc, m = get_scale_min_k4(j, out, o + 4)
        d = dd * np.float32(sc)
        if d == np.float32(0.0):
            continue
        dm = dmin * np.float32(m)
        for ii in range(32):
            l = nearest_int((x[xo + 32 * j + ii] + dm) / d)
            L[32 * j + ii] = max(0, min(nmax, l))


@njit(parallel=True, cache=True)
def quantize_q4_k_nb(rows, qw, use_qw, out):
    n, k = rows.shape
    nb = k // QK_K
    for r in prange(n):
        x = rows[r]
        o = out[r]
        scratch = _superblock_scratch()
        L = scratch[0]
        for i in range(nb):
            ob = i * 144
            _qk_superblock(x, i * 256, qw, use_qw, 15, o, ob, scratch)
            for jj in range(4):
                for l in range(32):
                    o[ob + 16 + jj * 32 + l] = (L[jj * 64 + l] | (L[jj * 64 + l + 32] << 4)) & 0xFF


@njit(parallel=True, cache=True)
def quantize_q5_k_nb(rows, qw, use_qw, out):
    n, k = rows.shape
    nb = k // QK_K
    for r in prange(n):
        x = rows[r]
        o = out[r]
        scratch = _superblock_scratch()
        L = scratch[0]
        for i in range(nb):
            ob = i * 176
            _qk_superblock(x, i * 256, qw, use_qw, 31, o, ob, scratch)
            for j in range(32):
                o[ob + 16 + j] = 0
            m1 = 1
            m2 = 2
            for nn in range(4):
                for j in range(32):
                    l1 = np.int64(L[nn * 64 + j])
                    if l1 > 15:
                        l1 -= 16
                        o[ob + 16 + j] |= m1
                    l2 = np.int64(L[nn * 64 + j + 32])
                    if l2 > 15:
                        l2 -= 16
                        o[ob + 16 + j] |= m2
                    o[ob + 48 + nn * 32 + j] = (l1 | (l2 << 4)) & 0xFF
                m1 <<= 2
                m2 <<= 2


@njit(parallel=True, cache=True)
def quantize_q6_k_nb(rows, qw, use_qw, out):
    n, k = rows.shape
    nb = k // QK_K
    for r in prange(n):
        x = rows[r]
        o = out[r]
        L = np.empty(256, dtype=np.int8)
        scales = np.empty(16, dtype=np.float32)
        wq = np.empty(16, dtype=np.float32)
        for i in range(nb):
            xo = i * 256
            ob = i * 210
            max_scale = np.float32(0.0)
            max_abs_scale = np.float32(0.0)
            for ib in range(16):
                s = make_qx_quants(16, 32, x, xo + 16 * ib, L, 16 * ib, 1, qw, xo + 16 * ib, use_qw, wq)
                scales[ib] = s
                if abs(s) > max_abs_scale:
                    max_abs_scale = abs(s)
                    max_scale = s
            if max_abs_scale < GROUP_MAX_EPS:
                for j in range(210):
                    o[ob + j] = 0
                continue
            iscale = np.float32(-128.0) / max_scale
            put_f16(o, ob + 208, np.float32(1.0) / iscale)
            for ib in range(16):
                o[ob + 192 + ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF
            dd = get_f16(o, ob + 208)
            for j in range(16):
                sc = np.int64(o[ob + 192 + j])
                if sc >= 128:
                    sc -= 256
                d = dd * np.float32(sc)
                if d == np.float32(0.0):
                    continue
                for ii in range(16):
                    l = nearest_int(x[xo + 16 * j + ii] / d)
                    L[16 * j + ii] = max(-32, min(31, l)) + 32
            for jj in range(2):
                for l in range(32):
                    b = jj * 128
                    q1 = np.int64(L[b + l]) & 0xF
                    q2 = np.int64(L[b + l + 32]) & 0xF
                    q3 = np.int64(L[b + l + 64]) & 0xF
                    q4 = np.int64(L[b + l + 96]) & 0xF
                    o[ob + jj * 64 + l] = q1 | (q3 << 4)
                    o[ob + jj * 64 + l + 32] = q2 | (q4 << 4)
                    o[ob + 128 + jj * 32 + l] = ((np.int64(L[b + l]) >> 4) | ((np.int64(L[b + l + 32]) >> 4) << 2)
                                                 | ((np.int64(L[b + l + 64]) >> 4) << 4)
                                                 | ((np.int64(L[b + l + 96]) >> 4) << 6)) & 0xFF


@njit(parallel=True, cache=True)
def quantize_q8_k_nb(rows, out):
    n, k = rows.shape
    nb = k // QK_K
    for r in prange(n):
        x = rows[r]
        o = out[r]
        for i in range(nb):
            xo = i * 256
            ob = i * 292
            mx = np.float32(0.0)
            amax = np.float32(0.0)
            for j in range(256):
                if abs(x[xo + j]) > amax:
                    amax = abs(x[xo + j])
                    mx = x[xo + j]
            if amax == np.float32(0.0):
                for j in range(292):
                    o[ob + j] = 0
                continue
            iscale = np.float32(-127.0) / mx
            for j in range(256):
                o[ob + 4 + j] = min(127, nearest_int(iscale * x[xo + j])) & 0xFF
            for j in range(16):
                s = 0
                for ii in range(16):
                    v = np.int64(o[ob + 4 + j * 16 + ii])
                    s += v - 256 if v >= 128 else v
                o[ob + 260 + 2 * j] = s & 0xFF
                o[ob + 261 + 2 * j] = (s >> 8) & 0xFF
            d = np.float32(1.0) / iscale
            o[ob:ob + 4] = np.array([d], dtype=np.float32).view(np.uint8)


@njit(cache=True, inline="always")
def _i8f(v):
    v = np.int64(v)
    return np.float32(v - 256 if v >= 128 else v)


@njit(parallel=True, cache=True)
def dequantize_q8_k_nb(b, y):
    for i in prange(b.shape[0]):
        d = b[i, 0:4].copy().view(np.float32)[0]
        for j in range(256):
            v = np.int64(b[i, 4 + j])
            y[i, j] = d * np.float32(v - 256 if v >= 128 else v)


# ================================================================================================
# Runtime kernels (the decode step's row dots are in dot_simd.py)
# ================================================================================================

# Runtime kernels for the K-quants Q4_K, Q5_K, Q6_K (super-blocks of 256 weights).
#
# Activations are quantized to Q8_K (dot_common.quantize_q8_k: int8 values, a float32 scale per 256, and
# the sum of every 16 values); per super-block the kernel forms int32 sums per sub-block, weights them by
# the 6-bit (Q4_K/Q5_K) or 8-bit (Q6_K) sub-block scales, and takes the minimums through the activation
# sums, in the lanes and order of llama.cpp's AVX2 ggml_vec_dot_q{4,5,6}_K_q8_K or of the repacked and
# tiled kernels it picks instead (dot_simd.rowdot_q*_k*). Layouts (bytes per super-block):
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
# written out for the reason kernels/legacy.py gives (a factory's kernels are not cached across runs).

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


# ================================================================================================
# Registry entries
# ================================================================================================
# One class per format, the same few lines each (as in legacy.py): the place to read what a format has.

class Q4_K(BlockFormat, QuantFormat, qtype=T.Q4_K):
    _kernel = staticmethod(quantize_q4_k_nb)
    dot = DotKernels("q8_k", matmul_q4_k, dequant_q4_k, rows=rows_q4_k, rows_repacked=rows_q4_k_x8,
                     rows_fast=rows_q4_k_fast, matmul_llama_cpp=matmul_q4_k_llama_cpp,
                     unpack=unpack_q45_k, unpack_rows=unpack_rows_q45_k)
    _ref = staticmethod(kquants_ref.q4_k_quantize_ref)
    _deref = staticmethod(kquants_ref.q4_k_dequantize_ref)


class Q5_K(BlockFormat, QuantFormat, qtype=T.Q5_K):
    _kernel = staticmethod(quantize_q5_k_nb)
    dot = DotKernels("q8_k", matmul_q5_k, dequant_q5_k, rows=rows_q5_k,
                     unpack=unpack_q45_k, unpack_rows=unpack_rows_q45_k, unpack_max=31)
    _ref = staticmethod(kquants_ref.q5_k_quantize_ref)
    _deref = staticmethod(kquants_ref.q5_k_dequantize_ref)


class Q6_K(BlockFormat, QuantFormat, qtype=T.Q6_K):
    _kernel = staticmethod(quantize_q6_k_nb)
    dot = DotKernels("q8_k", matmul_q6_k, dequant_q6_k, rows=rows_q6_k, rows_fast=rows_q6_k_fast,
                     matmul_llama_cpp=matmul_q6_k_llama_cpp,
                     unpack=unpack_q6_k, unpack_rows=unpack_rows_q6_k, unpack_block=16, unpack_max=63)
    _ref = staticmethod(kquants_ref.q6_k_quantize_ref)
    _deref = staticmethod(kquants_ref.q6_k_dequantize_ref)


class Q8_K(BlockFormat, QuantFormat, qtype=T.Q8_K):
    """The activation format of the K-quant dot products (quantize_row_q8_K_ref); no importance matrix."""
    uses_imatrix = False
    _kernel = staticmethod(quantize_q8_k_nb)
    _ref = staticmethod(kquants_ref.q8_k_quantize_ref)
    _deref = staticmethod(kquants_ref.q8_k_dequantize_ref)

    @classmethod
    def dequantize(cls, data):
        return dequant_blocks(cls, data, dequantize_q8_k_nb)
