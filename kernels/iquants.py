"""The non-linear 4-bit formats, IQ4_NL and IQ4_XS: weights stored as indices into llama.cpp's 16-level grid
`kvalues_iq4nl`, with one fp16 scale per 32 (IQ4_NL: 18 bytes a block) or an fp16 super-scale and 6-bit
scales per 32 of 256 (IQ4_XS: 136 bytes, 4.25 bits a weight). IQ4_NL is the fallback of IQ4_XS for rows
that are not a multiple of 256.

Quantizers: llama.cpp's quantize_row_iq4_nl_impl (ntry 7, as llama-quantize calls it with and without an
importance matrix), byte for byte; the readable reference is kernels/iquants_ref.py. Runtime: integer dots
on 8-bit activations as llama.cpp's (IQ4_NL with Q8_0, IQ4_XS with Q8_K: kernels/dot_simd_lowbit.py), the
same in the batch matmul and the decode row kernel; perplexity agrees with llama-perplexity's within its
rounding (tests/test_lowbit.py), not bit for bit.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T

from . import iquants_ref
from .dot_rows import row_kernel
from .dot_simd_lowbit import rowdot_iq4_nl, rowdot_iq4_xs
from .numerics import GROUP_MAX_EPS, BlockFormat, fp16_to_fp32, nearest_int, put_f16
from .registry import DotKernels, QuantFormat

KVALUES = iquants_ref.KVALUES_IQ4NL
_KV = KVALUES.astype(np.float32)


_best_index = nb.njit(cache=True, inline="always")(iquants_ref.best_index_of)


@nb.njit(cache=True)
def _superblock(x, xo, n, qw, use_qw, v, L, weight, scales):
    """quantize_row_iq4_nl_impl(n, 32, x[xo:xo+n], ntry = 7): fills L[n] and, for n > 32, scales[n/32]
    with the 6-bit block scales (offset by 32); returns the fp16 bits of d."""
    f = np.float32
    sigma2 = f(0.0)
    for j in range(n):
        sigma2 += x[xo + j] * x[xo + j]
    sigma2 *= f(2.0) / f(n)
    max_scale = f(0.0)
    amax_scale = f(0.0)
    for ib in range(n // 32):
        b = xo + ib * 32
        for j in range(32):
            if use_qw:
                weight[j] = qw[b - xo + j] * np.sqrt(sigma2 + x[b + j] * x[b + j])
            else:
                weight[j] = x[b + j] * x[b + j]
        amax = f(0.0)
        mx = f(0.0)
        for j in range(32):
            ax = abs(x[b + j])
            if ax > amax:
                amax = ax
                mx = x[b + j]
        if amax < GROUP_MAX_EPS:
            scales[ib] = f(0.0)
            continue
        d = -mx / v[0]
        idv = f(1.0) / d
        sumqx = f(0.0)
        sumq2 = f(0.0)
        for j in range(32):
            l = _best_index(v, idv * x[b + j])
            L[ib * 32 + j] = l
            wq = weight[j] * v[l]
            sumqx += wq * x[b + j]
            sumq2 += wq * v[l]
        d = sumqx / sumq2 if sumq2 > f(0.0) else f(0.0)
        best = d * sumqx
        for itry in range(-7, 8):
            idv = f(itry - 127) / mx
            sumqx = f(0.0)
            sumq2 = f(0.0)
            for j in range(32):
                q = v[_best_index(v, idv * x[b + j])]
                wq = weight[j] * q
                sumqx += wq * x[b + j]
                sumq2 += wq * q
            if sumq2 > f(0.0) and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        scales[ib] = d
        if abs(d) > amax_scale:
            amax_scale = abs(d)
            max_scale = d
    if n > 32:
        d = -max_scale / f(32.0)
        idv = f(1.0) / d if d != f(0.0) else f(0.0)
        for ib in range(n // 32):
            l = max(-32, min(31, nearest_int(idv * scales[ib])))
            dl = d * f(l)
            idl = f(1.0) / dl if dl != f(0.0) else f(0.0)
            for j in range(32):
                L[ib * 32 + j] = _best_index(v, idl * x[xo + ib * 32 + j])
            scales[ib] = f(l + 32)
        return d
    idv = f(1.0) / scales[0] if scales[0] != f(0.0) else f(0.0)
    for j in range(32):
        L[j] = _best_index(v, idv * x[xo + j])
    return scales[0]


@nb.njit(cache=True, inline="always")
def _pack(o, at, L, n):
    for i in range(n // 32):
        for j in range(16):
            o[at + 16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4)


@nb.njit(parallel=True, cache=True)
def quantize_iq4_nb(rows, qw, use_qw, out, n):
    """Rows into super-blocks of n weights: IQ4_NL (n = 32: d, indices) or IQ4_XS (n = 256: d, scales_h,
    scales_l, indices)."""
    nrows, k = rows.shape
    size = 18 if n == 32 else 136
    head = 2 if n == 32 else 8
    for r in nb.prange(nrows):
        L = np.zeros(n, np.int64)
        weight = np.empty(32, np.float32)
        scales = np.empty(n // 32, np.float32)
        for ib in range(k // n):
            o = ib * size
            d = _superblock(rows[r], ib * n, n, qw[ib * n:] if use_qw else qw, use_qw, _KV, L, weight, scales)
            put_f16(out[r], o, d)
            if n == 256:
                sh = 0
                for i in range(4):
                    lo = np.int64(scales[2 * i])
                    hi = np.int64(scales[2 * i + 1])
                    out[r][o + 4 + i] = (lo & 0xF) | ((hi & 0xF) << 4)
                    sh |= ((lo >> 4) << (4 * i)) | ((hi >> 4) << (4 * i + 2))
                out[r][o + 2] = sh & 0xFF
                out[r][o + 3] = sh >> 8
            _pack(out[r], o + head, L, n)


def quantize_iq4_nl_nb(rows, qw, use_qw, out):
    quantize_iq4_nb(rows, qw, use_qw, out, 32)


def quantize_iq4_xs_nb(rows, qw, use_qw, out):
    quantize_iq4_nb(rows, qw, use_qw, out, 256)


# ---- runtime: rows dequantized, dotted with float activations ----------------------------------------

@nb.njit(cache=True, inline="always")
def _dequant_row_iq4_nl(w, off, k, v, y):
    for b in range(k // 32):
        o = off + b * 18
        d = fp16_to_fp32(np.int64(w[o]) | (np.int64(w[o + 1]) << 8))
        for j in range(16):
            q = w[o + 2 + j]
            y[b * 32 + j] = d * v[q & 0xF]
            y[b * 32 + 16 + j] = d * v[q >> 4]


@nb.njit(cache=True, inline="always")
def _dequant_row_iq4_xs(w, off, k, v, y):
    for b in range(k // 256):
        o = off + b * 136
        d = fp16_to_fp32(np.int64(w[o]) | (np.int64(w[o + 1]) << 8))
        sh = np.int64(w[o + 2]) | (np.int64(w[o + 3]) << 8)
        for ib in range(8):
            ls = ((np.int64(w[o + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
            dl = d * np.float32(ls - 32)
            for j in range(16):
                q = w[o + 8 + 16 * ib + j]
                y[b * 256 + 32 * ib + j] = dl * v[q & 0xF]
                y[b * 256 + 32 * ib + 16 + j] = dl * v[q >> 4]


@nb.njit(cache=True, inline="always")
def _dequant_row(w, off, rb, k, y):
    """A row of either format; which one, its length says (IQ4_XS: 136 bytes per 256, IQ4_NL: 18 per 32)."""
    if rb * 256 == k * 136:
        _dequant_row_iq4_xs(w, off, k, _KV, y)
    else:
        _dequant_row_iq4_nl(w, off, k, _KV, y)


@nb.njit(parallel=True, cache=True)
def dequant_iq4(w, r0, r1, out):
    rb, k = w.shape[1], out.shape[1]
    for i in nb.prange(r1 - r0):
        _dequant_row(w[r0 + i], 0, rb, k, out[i])


# ---- unpacking for the batch GEMM (kernels/gemm_q8.py): blocks of 32, q = the level + 128 (1..241) -------

_KV_U8 = (KVALUES.astype(np.int32) + 128).astype(np.uint32)


@nb.njit(cache=True, inline="always")
def _levels4(wr, o, shift):
    """The 4 nibbles (low: shift 0, high: 4) of the bytes wr[o:o+4] as levels + 128, one uint32."""
    c = np.uint32(0)
    for n in range(4):
        c |= _KV_U8[(wr[o + n] >> shift) & 15] << np.uint32(8 * n)
    return c


@nb.njit(cache=True)
def unpack_rows_iq4(w, r0, r1, tq, tsm, v0):
    """IQ4_NL (18-byte blocks: s = d) or IQ4_XS (136 per 256: s = d * (6-bit scale - 32)); m = -128 s."""
    L = tq.shape[2]
    k = tq.shape[1] * 4
    xs = w.shape[1] * 256 == k * 136
    for i in range(r1 - r0):
        wr, v, l = w[r0 + i], v0 + i // L, i % L
        for b in range(k // 32):
            if xs:
                o = (b // 8) * 136
                ib = b % 8
                sh = np.int64(wr[o + 2]) | (np.int64(wr[o + 3]) << 8)
                ls = ((np.int64(wr[o + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
                s = fp16_to_fp32(np.int64(wr[o]) | (np.int64(wr[o + 1]) << 8)) * np.float32(ls - 32)
                qs = o + 8 + 16 * ib
            else:
                o = b * 18
                s = fp16_to_fp32(np.int64(wr[o]) | (np.int64(wr[o + 1]) << 8))
                qs = o + 2
            tsm[0, v, b, l] = s
            tsm[1, v, b, l] = np.float32(-128.0) * s
            for c in range(4):
                tq[v, b * 8 + c, l] = _levels4(wr, qs + 4 * c, 0)
                tq[v, b * 8 + 4 + c, l] = _levels4(wr, qs + 4 * c, 4)


@nb.njit(cache=True, parallel=True)
def unpack_iq4(w, r0, r1, tq, tsm):
    """Rows r0..r1 into the tile from rowvec 0, a rowvec of rows on each thread (unpack_rows_iq4)."""
    L = tq.shape[2]
    for c in nb.prange(-(-(r1 - r0) // L)):
        unpack_rows_iq4(w, r0 + c * L, min(r1, r0 + (c + 1) * L), tq, tsm, c)


# The integer dots (kernels/dot_simd_lowbit.py): IQ4_NL on Q8_0 activations, IQ4_XS on Q8_K, as llama.cpp.
# One matmul and one row kernel for both, as one dequantizer: a row's length says which (_dequant_row).

@nb.njit(parallel=True, cache=True)
def matmul_iq4(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    xs_ = rb * 256 == k * 136
    wf, xv, xdv, xsv = w.reshape(-1), xq.reshape(-1), xd.reshape(-1), xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            if xs_:
                out[t, r] = rowdot_iq4_xs(wf, r * rb, nbk, xv, t * k, xdv, t * nbk, xsv, t * nbk * 16)
            else:
                out[t, r] = rowdot_iq4_nl(wf, r * rb, xv, t * k, xdv, xsv, t * nbk, nbk)


@row_kernel
def rows_iq4(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        if rb * 256 == k * 136:
            out[r] = rowdot_iq4_xs(bufs[0], off + r * rb, k // 256, acts[3], 0, acts[4], 0, acts[5], 0)
        else:
            out[r] = rowdot_iq4_nl(bufs[0], off + r * rb, acts[0], 0, acts[1], acts[2], 0, k // 32)


# ---- registry entries ---------------------------------------------------------------------------------

class IQ4_NL(BlockFormat, QuantFormat, qtype=T.IQ4_NL):
    _kernel = staticmethod(quantize_iq4_nl_nb)
    _ref = staticmethod(iquants_ref.iq4_nl_quantize_ref)
    _deref = staticmethod(iquants_ref.iq4_nl_dequantize_ref)
    dot = DotKernels("q8_32", matmul_iq4, dequant_iq4, rows=rows_iq4,
                     unpack=unpack_iq4, unpack_rows=unpack_rows_iq4, unpack_max=241)


class IQ4_XS(BlockFormat, QuantFormat, qtype=T.IQ4_XS):
    _kernel = staticmethod(quantize_iq4_xs_nb)
    _ref = staticmethod(iquants_ref.iq4_xs_quantize_ref)
    _deref = staticmethod(iquants_ref.iq4_xs_dequantize_ref)
    dot = DotKernels("q8_k", matmul_iq4, dequant_iq4, rows=rows_iq4,
                     unpack=unpack_iq4, unpack_rows=unpack_rows_iq4, unpack_max=241)
