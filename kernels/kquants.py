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
This module has the quantizers and the registry classes; the runtime's kernels are in kquants_runtime.py.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import kquants_ref
from .kquants_runtime import (dequant_q4_k, dequant_q5_k, dequant_q6_k, matmul_q4_k, matmul_q4_k_llama_cpp,
                              matmul_q5_k, matmul_q6_k, matmul_q6_k_llama_cpp, rows_q4_k, rows_q4_k_fast,
                              rows_q4_k_x8, rows_q5_k, rows_q6_k, rows_q6_k_fast, unpack_q45_k, unpack_q6_k,
                              unpack_rows_q45_k, unpack_rows_q6_k)
from .numerics import (GROUP_MAX_EPS, BlockFormat, dequant_blocks, get_f16, make_qkx_quants, make_qx_quants,
                       nearest_int, put_f16)
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
