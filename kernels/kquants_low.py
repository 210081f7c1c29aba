"""The low-bit K-quants, 256 weights a block in 16 sub-blocks of 16.

Q3_K: 3-bit levels (2 low bits in qs, the high bit in hmask), 6-bit scales, one fp16 super-scale: 110 bytes,
3.4375 bits a weight. Q2_K: 2-bit levels, a 4-bit scale and a 4-bit min per sub-block, fp16 d and dmin:
84 bytes, 2.625 bits a weight.

Q3_K's quantizer: llama.cpp's quantize_row_q3_K_ref without an importance matrix (make_q3_quants with its
coordinate search) and quantize_row_q3_K_impl with one (make_qx_quants, weighted), byte for byte; the
readable reference is kquants_low_ref.q3_k_quantize_ref, in C's order. Q2_K's: quantize_row_q2_K_ref (make_qkx2_quants,
absolute-error search) and quantize_row_q2_K_impl (make_qkx3_quants weighted, make_qp_quants for the 4-bit
scales and mins), byte for byte; its reference kquants_low_ref.q2_k_quantize_ref is vectorised over sub-blocks. Runtime:
integer dots on Q8_K activations as llama.cpp's (kernels/dot_simd_lowbit.py), the same in the batch matmul
and the decode row kernel; dequantize (the BLAS batch path, tests) a row at a time in float.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T

from .dot_rows import row_kernel
from .dot_simd_lowbit import rowdot_q2_k, rowdot_q3_k
from .gemm_q8 import u32_at
from .kquants import make_qp_quants
from .kquants_low_ref import q2_k_dequantize_ref, q2_k_quantize_ref, q3_k_dequantize_ref, q3_k_quantize_ref
from .numerics import (GROUP_MAX_EPS, BlockFormat, fp16_to_fp32, get_f16, make_qkx_quants, make_qx_quants,
                       nearest_int, put_f16)
from .registry import DotKernels, QuantFormat


# ---- numba ---------------------------------------------------------------------------------------------

@nb.njit(cache=True)
def _make_q3_quants(x, xo, L, lo):
    """make_q3_quants(16, 4, x[xo:xo+16], L[lo:lo+16], true)."""
    f = np.float32
    amax = f(0.0)
    mx = f(0.0)
    for i in range(16):
        ax = abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < GROUP_MAX_EPS:
        for i in range(16):
            L[lo + i] = 0
        return f(0.0)
    iscale = f(-4.0) / mx
    sumlx = f(0.0)
    suml2 = f(0.0)
    for i in range(16):
        v = x[xo + i]
        l = max(-4, min(3, nearest_int(iscale * v)))
        L[lo + i] = l
        w = v * v
        sumlx += w * v * f(l)
        suml2 += w * f(l) * f(l)
    for _ in range(5):
        changed = 0
        for i in range(16):
            v = x[xo + i]
            w = v * v
            li = f(L[lo + i])
            slx = sumlx - w * v * li
            if slx > f(0.0):
                sl2 = suml2 - w * li * li
                new_l = max(-4, min(3, nearest_int(v * sl2 / slx)))
                if new_l != L[lo + i]:
                    slx += w * v * f(new_l)
                    sl2 += w * f(new_l) * f(new_l)
                    if sl2 > f(0.0) and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[lo + i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        changed += 1
        if changed == 0:
            break
    for i in range(16):
        L[lo + i] += 4
    return sumlx / suml2 if suml2 > f(0.0) else f(0.0)


@nb.njit(cache=True, inline="always")
def _store_scale(o, at, j, l):
    if j < 8:
        o[at + j] = l & 0xF
    else:
        o[at + j - 8] |= (l & 0xF) << 4
    o[at + 8 + j % 4] |= (l >> 4) << (2 * (j // 4))


@nb.njit(cache=True, inline="always")
def _scale_of(o, at, j):
    s = o[at + j] & 0xF if j < 8 else o[at + j - 8] >> 4
    return (np.int64(s) | ((np.int64(o[at + 8 + j % 4]) >> (2 * (j // 4))) & 3) << 4) - 32


@nb.njit(cache=True)
def _finish_block(x, xo, o, at, L):
    """Levels from the stored scales and d (at + 108), then hmask (at) and qs (at + 32)."""
    d_all = fp16_to_fp32(np.int64(o[at + 108]) | (np.int64(o[at + 109]) << 8))
    for j in range(16):
        d = d_all * np.float32(_scale_of(o, at + 96, j))
        if d == np.float32(0.0):
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-4, min(3, nearest_int(x[xo + 16 * j + ii] / d))) + 4
    for i in range(32):
        o[at + i] = 0
    m = 0
    hm = 1
    for j in range(256):
        if L[j] > 3:
            o[at + m] |= hm
            L[j] -= 4
        m += 1
        if m == 32:
            m = 0
            hm <<= 1
    for j in range(0, 256, 128):
        for l in range(32):
            o[at + 32 + j // 4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6)


@nb.njit(parallel=True, cache=True)
def quantize_q3_k_nb(rows, qw, use_qw, out):
    n, k = rows.shape
    for r in nb.prange(n):
        x = rows[r]
        o = out[r]
        L = np.zeros(256, np.int64)
        L8 = np.zeros(256, np.int8)
        Ls = np.zeros(16, np.int8)
        scales = np.zeros(16, np.float32)
        weight = np.zeros(256, np.float32)
        sw = np.zeros(16, np.float32)
        wscratch = np.zeros(16, np.float32)
        for ib in range(k // 256):
            xo = ib * 256
            at = ib * 110
            for i in range(12):
                o[at + 96 + i] = 0
            if use_qw:
                sumx2 = np.float32(0.0)
                for j in range(256):
                    sumx2 += x[xo + j] * x[xo + j]
                sigma2 = np.float32(2.0) * sumx2 / np.float32(256.0)
                for j in range(16):
                    s = np.float32(0.0)
                    for l in range(16):
                        v = x[xo + 16 * j + l]
                        weight[16 * j + l] = qw[xo + 16 * j + l] * np.sqrt(sigma2 + v * v)
                        s += weight[16 * j + l]
                    sw[j] = s
                    scales[j] = make_qx_quants(16, 4, x, xo + 16 * j, L8, 16 * j, 1, weight, 16 * j, True, wscratch)
                for j in range(256):
                    L[j] = L8[j]
                d_block = make_qx_quants(16, 32, scales, 0, Ls, 0, 1, sw, 0, True, wscratch)
                for j in range(16):
                    _store_scale(o, at + 96, j, np.int64(Ls[j]))
                put_f16(o, at + 108, d_block)
            else:
                max_scale = np.float32(0.0)
                amax = np.float32(0.0)
                for j in range(16):
                    scales[j] = _make_q3_quants(x, xo + 16 * j, L, 16 * j)
                    if abs(scales[j]) > amax:
                        amax = abs(scales[j])
                        max_scale = scales[j]
                if max_scale != np.float32(0.0):
                    iscale = np.float32(-32.0) / max_scale
                    for j in range(16):
                        _store_scale(o, at + 96, j, max(-32, min(31, nearest_int(iscale * scales[j]))) + 32)
                    put_f16(o, at + 108, np.float32(1.0) / iscale)
                else:
                    put_f16(o, at + 108, np.float32(0.0))
            _finish_block(x, xo, o, at, L)


@nb.njit(parallel=True, cache=True)
def quantize_q2_k_nb(rows, qw, use_qw, out):
    """quantize_row_q2_K_ref / quantize_row_q2_K_impl; block: scales[16] at 0, qs[64] at 16, d at 80,
    dmin at 82."""
    n, k = rows.shape
    f = np.float32
    for r in nb.prange(n):
        x = rows[r]
        o = out[r]
        L = np.zeros(256, np.uint8)
        Laux = np.zeros(16, np.float32)
        weight = np.zeros(16, np.float32)
        scales = np.zeros(16, np.float32)
        mins = np.zeros(16, np.float32)
        sw = np.zeros(16, np.float32)
        Ls = np.zeros(16, np.uint8)
        Lm = np.zeros(16, np.uint8)
        for ib in range(k // 256):
            xo = ib * 256
            at = ib * 84
            if use_qw:
                sumx2 = f(0.0)
                for j in range(256):
                    sumx2 += x[xo + j] * x[xo + j]
                sigma2 = sumx2 / f(256.0)
                for j in range(16):
                    s = f(0.0)
                    for l in range(16):
                        v = x[xo + 16 * j + l]
                        weight[l] = qw[xo + 16 * j + l] * np.sqrt(sigma2 + v * v)
                        s += weight[l]
                    sw[j] = s
                    scales[j], mins[j] = make_qkx_quants(16, 3, x, xo + 16 * j, weight, 0, L, 16 * j, Laux,
                                                         (f(-0.9), f(0.05), 36), False)
                dm = make_qp_quants(16, 15, scales, Ls, sw)
                mm = make_qp_quants(16, 15, mins, Lm, sw)
                for j in range(16):
                    o[at + j] = Ls[j] | (Lm[j] << 4)
                put_f16(o, at + 80, dm)
                put_f16(o, at + 82, mm)
            else:
                max_scale = f(0.0)
                max_min = f(0.0)
                for j in range(16):
                    for l in range(16):
                        weight[l] = abs(x[xo + 16 * j + l])
                    scales[j], mins[j] = make_qkx_quants(16, 3, x, xo + 16 * j, weight, 0, L, 16 * j, Laux,
                                                         (f(-0.5), f(0.1), 15), True)
                    max_scale = max(max_scale, scales[j])
                    max_min = max(max_min, mins[j])
                for j in range(16):
                    o[at + j] = 0
                if max_scale > f(0.0):
                    iscale = f(15.0) / max_scale
                    for j in range(16):
                        o[at + j] = nearest_int(iscale * scales[j]) & 0xFF
                    put_f16(o, at + 80, max_scale / f(15.0))
                else:
                    put_f16(o, at + 80, f(0.0))
                if max_min > f(0.0):
                    iscale = f(15.0) / max_min
                    for j in range(16):
                        o[at + j] |= (nearest_int(iscale * mins[j]) << 4) & 0xFF
                    put_f16(o, at + 82, max_min / f(15.0))
                else:
                    put_f16(o, at + 82, f(0.0))
            dd = get_f16(o, at + 80)
            dmin = get_f16(o, at + 82)
            for j in range(16):
                d = dd * f(o[at + j] & 0xF)
                if d == f(0.0):
                    continue
                dm = dmin * f(o[at + j] >> 4)
                for ii in range(16):
                    L[16 * j + ii] = max(0, min(3, nearest_int((x[xo + 16 * j + ii] + dm) / d)))
            for j in range(0, 256, 128):
                for l in range(32):
                    o[at + 16 + j // 4 + l] = (L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4)
                                               | (L[j + l + 96] << 6))


# ---- runtime -------------------------------------------------------------------------------------------

@nb.njit(cache=True, inline="always")
def _dequant_row_q3_k(w, off, k, y):
    for b in range(k // 256):
        at = off + b * 110
        d_all = fp16_to_fp32(np.int64(w[at + 108]) | (np.int64(w[at + 109]) << 8))
        for j in range(16):
            dl = d_all * np.float32(_scale_of(w, at + 96, j))
            for ii in range(16):
                kk = 16 * j + ii
                half = kk // 128
                within = kk % 128
                shift = within // 32
                l = within % 32
                q = (np.int64(w[at + 32 + 32 * half + l]) >> (2 * shift)) & 3
                high = (np.int64(w[at + l]) >> (4 * half + shift)) & 1
                y[b * 256 + kk] = dl * np.float32(q - (0 if high else 4))


@nb.njit(cache=True, inline="always")
def _dequant_row_q2_k(w, off, k, y):
    for b in range(k // 256):
        at = off + b * 84
        d = get_f16(w, at + 80)
        dmin = get_f16(w, at + 82)
        for j in range(16):
            sc = np.int64(w[at + j])
            dl = d * np.float32(sc & 0xF)
            ml = dmin * np.float32(sc >> 4)
            base = 128 * (j // 8) + 32 * ((j % 8) // 2) + 16 * (j % 2)
            q0 = at + 16 + 32 * (j // 8) + 16 * (j % 2)
            shift = 2 * ((j % 8) // 2)
            for l in range(16):
                y[b * 256 + base + l] = dl * np.float32((np.int64(w[q0 + l]) >> shift) & 3) - ml


# ---- unpacking for the batch GEMM (kernels/gemm_q8.py): blocks of 16, w = s * q + m, q a byte ----------
# Q2_K: q the 2-bit value, s = d * (scale & 15), m = -dmin * (scale >> 4); Q3_K: q the 2 low bits plus 4 x
# the hmask bit (0..7), s = d * (6-bit scale - 32), m = -4 s. Sub-block j holds weights 16 j .. 16 j + 15.


@nb.njit(cache=True)
def unpack_rows_k_low(w, r0, r1, tq, tsm, v0):
    """Q2_K (84-byte super-blocks) or Q3_K (110), told apart by the row's length."""
    L = tq.shape[2]
    k = tq.shape[1] * 4
    q2 = _is_q2_k(w.shape[1], k)
    bb = 84 if q2 else 110
    for i in range(r1 - r0):
        wr, v, l = w[r0 + i], v0 + i // L, i % L
        for sb in range(k // 256):
            at = sb * bb
            d = get_f16(wr, at + 80) if q2 else fp16_to_fp32(np.int64(wr[at + 108]) | (np.int64(wr[at + 109]) << 8))
            dmin = get_f16(wr, at + 82) if q2 else np.float32(0.0)
            for j in range(16):
                bi = sb * 16 + j
                if q2:
                    sc = np.int64(wr[at + j])
                    tsm[0, v, bi, l] = d * np.float32(sc & 0xF)
                    tsm[1, v, bi, l] = -(dmin * np.float32(sc >> 4))
                    q0 = at + 16 + 32 * (j // 8) + 16 * (j % 2)
                    shift = np.uint32(2 * ((j % 8) // 2))
                    for c in range(4):
                        tq[v, bi * 4 + c, l] = (u32_at(wr, q0 + 4 * c) >> shift) & np.uint32(0x03030303)
                else:
                    s = d * np.float32(_scale_of(wr, at + 96, j))
                    tsm[0, v, bi, l] = s
                    tsm[1, v, bi, l] = np.float32(-4.0) * s
                    half, shift = j // 8, (j % 8) // 2
                    for c in range(4):
                        q = (u32_at(wr, at + 32 + 32 * half + 16 * (j % 2) + 4 * c) >> np.uint32(2 * shift)) \
                            & np.uint32(0x03030303)
                        h = (u32_at(wr, at + 16 * (j % 2) + 4 * c) >> np.uint32(4 * half + shift)) \
                            & np.uint32(0x01010101)
                        tq[v, bi * 4 + c, l] = q | (h << np.uint32(2))


@nb.njit(cache=True, parallel=True)
def unpack_k_low(w, r0, r1, tq, tsm):
    """Rows r0..r1 into the tile from rowvec 0, a rowvec of rows on each thread (unpack_rows_k_low)."""
    L = tq.shape[2]
    for c in nb.prange(-(-(r1 - r0) // L)):
        unpack_rows_k_low(w, r0 + c * L, min(r1, r0 + (c + 1) * L), tq, tsm, c)


# One dequantizer, matmul and row kernel for both formats: a row's length says which (Q2_K: 84 bytes a
# block of 256, Q3_K: 110), as kernels/iquants.py does for its two.

@nb.njit(cache=True, inline="always")
def _is_q2_k(rb, k):
    return rb * 256 == k * 84


@nb.njit(parallel=True, cache=True)
def dequant_k_low(w, r0, r1, out):
    rb, k = w.shape[1], out.shape[1]
    for i in nb.prange(r1 - r0):
        if _is_q2_k(rb, k):
            _dequant_row_q2_k(w[r0 + i], 0, k, out[i])
        else:
            _dequant_row_q3_k(w[r0 + i], 0, k, out[i])


@nb.njit(parallel=True, cache=True)
def matmul_k_low(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    q2 = _is_q2_k(rb, k)
    wf, xv, xdv, xsv = w.reshape(-1), xq.reshape(-1), xd.reshape(-1), xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            if q2:
                out[t, r] = rowdot_q2_k(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
            else:
                out[t, r] = rowdot_q3_k(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)


@row_kernel
def rows_k_low(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        if _is_q2_k(rb, k):
            out[r] = rowdot_q2_k(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)
        else:
            out[r] = rowdot_q3_k(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)


# the pair's runtime functions tell the two apart by a row's length
_K_LOW_DOT = DotKernels("q8_k", matmul_k_low, dequant_k_low, rows=rows_k_low,
                     unpack=unpack_k_low, unpack_rows=unpack_rows_k_low, unpack_block=16,
                        unpack_max=7)


class Q3_K(BlockFormat, QuantFormat, qtype=T.Q3_K):
    _kernel = staticmethod(quantize_q3_k_nb)
    _ref = staticmethod(q3_k_quantize_ref)
    _deref = staticmethod(q3_k_dequantize_ref)
    dot = _K_LOW_DOT


class Q2_K(BlockFormat, QuantFormat, qtype=T.Q2_K):
    _kernel = staticmethod(quantize_q2_k_nb)
    _ref = staticmethod(q2_k_quantize_ref)
    _deref = staticmethod(q2_k_dequantize_ref)
    dot = _K_LOW_DOT
