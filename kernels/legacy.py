"""The 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: quantizers and registry classes.

Byte-exact with llama.cpp's `ggml-quants.c`: float32 arithmetic in C's order, no FMA (fastmath off),
fp16 rounded to nearest even by the same bit trick as `ggml_compute_fp32_to_fp16`, `nearest_int` as the
float trick it is, and C's float -> integer truncation. Each format has

* a readable numpy reference (legacy_ref.py: `<fmt>_quantize_ref` / `<fmt>_dequantize_ref`), vectorised over
  blocks but with every sum accumulated sequentially as the C loop does,
* a numba quantizer (`parallel=True`, `prange` over rows), tested for exact equality with the reference,
* the runtime's kernels (legacy_runtime.py): a row dequantizer (also the class's `dequantize`) and the batch
  matmul against activations quantized to Q8 blocks of 32 (the decode step's row kernels rows_* call the
  same dot_simd.rowdot_*),
* and its registry class, which carries all of them.

Which path llama-quantize takes: `ggml_quantize_chunk` -> `quantize_q4_0` & co. call the `_ref` quantizer
when there is no importance matrix and `quantize_row_X_impl` (weighted `make_qx_quants` /
`make_qkx3_quants`) when there is one. Q8_0 ignores the importance matrix.

Block layouts (little-endian):
    Q4_0  d:f16 qs[16]                 (18 bytes)   x = (q - 8) * d
    Q4_1  d:f16 m:f16 qs[16]           (20 bytes)   x = q * d + m
    Q5_0  d:f16 qh[4] qs[16]           (22 bytes)   x = (q - 16) * d
    Q5_1  d:f16 m:f16 qh[4] qs[16]     (24 bytes)   x = q * d + m
    Q8_0  d:f16 qs[32] int8            (34 bytes)   x = q * d
"""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from . import legacy_ref
from .legacy_runtime import (dequant_q4_0, dequant_q4_1, dequant_q5_0, dequant_q5_1, dequant_q8_0, matmul_q4_0,
                             matmul_q4_0_llama_cpp, matmul_q4_1, matmul_q5_0, matmul_q5_1, matmul_q8_0, rows_q4_0,
                             rows_q4_0_fast, rows_q4_0_x8, rows_q4_1, rows_q5_0, rows_q5_1, rows_q8_0,
                             unpack_q45_legacy, unpack_q8_0, unpack_rows_q45_legacy, unpack_rows_q8_0)
from .numerics import (BlockFormat, c_roundf, c_to_int8, c_trunc_int, f32_as_u32, make_qkx_quants, make_qx_quants,
                       put_f16, row_sigma2, u32_as_f32)
from .registry import DotKernels, QuantFormat


# ================================================================================================
# Numba kernels: one block at a time, prange over rows
# ================================================================================================

@njit(cache=True, inline="always")
def _store_nibbles(out, o, L):
    for j in range(16):
        out[o + j] = ((L[j] & 0xFF) | (L[j + 16] << 4)) & 0xFF


@njit(cache=True, inline="always")
def _store_qh(out, o, L):
    qh = 0
    for j in range(32):
        qh |= ((L[j] & 0x10) >> 4) << j
    for b in range(4):
        out[o + b] = (qh >> (8 * b)) & 0xFF


@njit(cache=True, inline="always")
def _block_absmax(x, xo):
    """The block's value of largest magnitude, the first one on a tie, as the C loop
    `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` finds it. For finite floats the magnitude's
    bits order like the magnitude, so two integer max-reductions (positive and negative values apart)
    give it without the C loop's serial chain, and they vectorize; only a tie between +a and -a needs
    the first index, and takes the C loop. Weights are checked finite before they get here."""
    pos = np.uint32(0)
    neg = np.uint32(0)
    for j in range(32):
        b = f32_as_u32(x[xo + j])
        m = np.uint32(b & np.uint32(0x7FFFFFFF))
        is_neg = b != m
        pos = np.uint32(max(pos, np.uint32(0) if is_neg else m))
        neg = np.uint32(max(neg, m if is_neg else np.uint32(0)))
    if pos > neg:
        return u32_as_f32(np.uint32(pos))
    if neg > pos:
        return u32_as_f32(np.uint32(neg | np.uint32(0x80000000)))
    if pos == np.uint32(0):
        return np.float32(0.0)  # all zeros, of either sign: C keeps max = 0.0f
    amax = np.float32(0.0)
    mx = np.float32(0.0)
    for j in range(32):
        v = x[xo + j]
        if amax < abs(v):
            amax = abs(v)
            mx = v
    return mx


@njit(cache=True, inline="always")
def _block_amax(x, xo):
    """max |v| over the block (finite weights): an integer max over the magnitudes' bits, which vectorizes
    where C's fmaxf chain does not."""
    m = np.uint32(0)
    for j in range(32):
        m = max(m, np.uint32(f32_as_u32(x[xo + j]) & np.uint32(0x7FFFFFFF)))
    return u32_as_f32(np.uint32(m))


@njit(cache=True, inline="always")
def _roundf_small(v):
    """roundf (half away from zero) for |v| < 2^31, branch-free: the truncation and its exact remainder."""
    t = np.int32(v)
    f = v - np.float32(t)
    return t + np.int32(f >= np.float32(0.5)) - np.int32(f <= np.float32(-0.5))


@njit(cache=True, inline="always")
def _plain_scale(d):
    """True when 1/d is finite (d is 0 or a normal float), so x*id stays within the block's range and the
    C float->int casts need none of their out-of-range behaviour."""
    return d == np.float32(0.0) or (abs(d) >= np.float32(1.1754943508222875e-38) and abs(d) < np.float32(np.inf))


@njit(cache=True)
def _block_minmax(x, xo):
    mn = np.float32(3.4028234663852886e+38)
    mx = np.float32(-3.4028234663852886e+38)
    for j in range(32):
        v = x[xo + j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return mn, mx


@njit(cache=True)
def _weights_row(x, qw, sigma2, w):
    for j in range(x.shape[0]):
        w[j] = qw[j] * np.sqrt(sigma2 + x[j] * x[j])


@njit(parallel=True, cache=True)
def quantize_q4_0_nb(rows, qw, use_qw, out):
    n, k = rows.shape
    nb = k // 32
    for r in prange(n):
        x = rows[r]
        o = out[r]
        L = np.empty(32, dtype=np.int64)
        L8 = np.empty(32, dtype=np.int8)
        wq = np.empty(32, dtype=np.float32)
        if use_qw:
            w = np.empty(k, dtype=np.float32)
            _weights_row(x, qw, row_sigma2(x, k), w)
            for ib in range(nb):
                d = make_qx_quants(32, 8, x, ib * 32, L8, 0, 1, w, ib * 32, True, wq)
                put_f16(o, ib * 18, d)
                for j in range(32):
                    L[j] = L8[j]
                _store_nibbles(o, ib * 18 + 2, L)
            continue
        for ib in range(nb):
            xo = ib * 32
            d = _block_absmax(x, xo) / np.float32(-8.0)
            idv = np.float32(1.0) / d if d != np.float32(0.0) else np.float32(0.0)
            put_f16(o, ib * 18, d)
            if _plain_scale(d):  # x*id + 8.5 lies in [0.5, 16.5]: C's (int8_t) is a plain truncation
                for j in range(16):
                    a = min(np.int32(15), np.int32(x[xo + j] * idv + np.float32(8.5)))
                    b = min(np.int32(15), np.int32(x[xo + j + 16] * idv + np.float32(8.5)))
                    o[ib * 18 + 2 + j] = a | (b << 4)
                continue
            for j in range(32):
                L[j] = min(15, c_to_int8(x[xo + j] * idv + np.float32(8.5))) & 0xFF
            _store_nibbles(o, ib * 18 + 2, L)


@njit(parallel=True, cache=True)
def quantize_q4_1_nb(rows, qw, use_qw, out):
    n, k = rows.shape
    nb = k // 32
    for r in prange(n):
        x = rows[r]
        o = out[r]
        L = np.empty(32, dtype=np.int64)
        if use_qw:
            w = np.empty(k, dtype=np.float32)
            _weights_row(x, qw, row_sigma2(x, k), w)
            Lu = np.empty(32, dtype=np.uint8)
            Laux = np.empty(32, dtype=np.float32)
            for ib in range(nb):
                d, the_min = make_qkx_quants(32, 15, x, ib * 32, w, ib * 32, Lu, 0, Laux,
                                             (np.float32(-0.9), np.float32(0.05), 36), False)
                put_f16(o, ib * 20, d)
                put_f16(o, ib * 20 + 2, -the_min)
                for j in range(32):
                    L[j] = Lu[j]
                _store_nibbles(o, ib * 20 + 4, L)
            continue
        for ib in range(nb):
            xo = ib * 32
            mn, mx = _block_minmax(x, xo)
            d = (mx - mn) / np.float32(15.0)
            idv = np.float32(1.0) / d if d != np.float32(0.0) else np.float32(0.0)
            put_f16(o, ib * 20, d)
            put_f16(o, ib * 20 + 2, mn)
            if _plain_scale(d):
                for j in range(16):
                    a = min(15, np.int64((x[xo + j] - mn) * idv + np.float32(0.5)))
                    b = min(15, np.int64((x[xo + j + 16] - mn) * idv + np.float32(0.5)))
                    o[ib * 20 + 4 + j] = a | (b << 4)
                continue
            for j in range(32):
                L[j] = min(15, c_to_int8((x[xo + j] - mn) * idv + np.float32(0.5))) & 0xFF
            _store_nibbles(o, ib * 20 + 4, L)


@njit(parallel=True, cache=True)
def quantize_q5_0_nb(rows, qw, use_qw, out):
    n, k = rows.shape
    nb = k // 32
    for r in prange(n):
        x = rows[r]
        o = out[r]
        L = np.empty(32, dtype=np.int64)
        L8 = np.empty(32, dtype=np.int8)
        wq = np.empty(32, dtype=np.float32)
        w = np.empty(k if use_qw else 0, dtype=np.float32)
        if use_qw:
            _weights_row(x, qw, row_sigma2(x, k), w)
        for ib in range(nb):
            xo = ib * 32
            if use_qw:
                d = make_qx_quants(32, 16, x, xo, L8, 0, 1, w, xo, True, wq)
                for j in range(32):
                    L[j] = L8[j] & 0xFF
            else:
                d = _block_absmax(x, xo) / np.float32(-16.0)
                idv = np.float32(1.0) / d if d != np.float32(0.0) else np.float32(0.0)
                if _plain_scale(d):
                    for j in range(32):
                        L[j] = min(np.int32(31), np.int32(x[xo + j] * idv + np.float32(16.5)))
                else:
                    for j in range(32):
                        L[j] = min(31, c_to_int8(x[xo + j] * idv + np.float32(16.5))) & 0xFF
            put_f16(o, ib * 22, d)
            _store_qh(o, ib * 22 + 2, L)
            for j in range(32):
                L[j] &= 0x0F
            _store_nibbles(o, ib * 22 + 6, L)


@njit(parallel=True, cache=True)
def quantize_q5_1_nb(rows, qw, use_qw, out):
    n, k = rows.shape
    nb = k // 32
    for r in prange(n):
        x = rows[r]
        o = out[r]
        L = np.empty(32, dtype=np.int64)
        Lu = np.empty(32, dtype=np.uint8)
        Laux = np.empty(32, dtype=np.float32)
        w = np.empty(k if use_qw else 0, dtype=np.float32)
        if use_qw:
            _weights_row(x, qw, row_sigma2(x, k), w)
        for ib in range(nb):
            xo = ib * 32
            if use_qw:
                d, the_min = make_qkx_quants(32, 31, x, xo, w, xo, Lu, 0, Laux,
                                             (np.float32(-0.9), np.float32(0.05), 36), False)
                m = -the_min
                for j in range(32):
                    L[j] = Lu[j]
            else:
                m, mx = _block_minmax(x, xo)
                d = (mx - m) / np.float32(31.0)
                idv = np.float32(1.0) / d if d != np.float32(0.0) else np.float32(0.0)
                if _plain_scale(d):
                    for j in range(32):
                        L[j] = np.int64((x[xo + j] - m) * idv + np.float32(0.5))
                else:
                    for j in range(32):
                        L[j] = c_trunc_int((x[xo + j] - m) * idv + np.float32(0.5)) & 0xFF
            put_f16(o, ib * 24, d)
            put_f16(o, ib * 24 + 2, m)
            _store_qh(o, ib * 24 + 4, L)
            for j in range(32):
                L[j] &= 0x0F
            _store_nibbles(o, ib * 24 + 8, L)


@njit(parallel=True, cache=True)
def quantize_q8_0_nb(rows, out):
    n, k = rows.shape
    nb = k // 32
    for r in prange(n):
        x = rows[r]
        o = out[r]
        for ib in range(nb):
            xo = ib * 32
            d = _block_amax(x, xo) / np.float32(127.0)
            idv = np.float32(1.0) / d if d != np.float32(0.0) else np.float32(0.0)
            put_f16(o, ib * 34, d)
            if _plain_scale(d):  # |x * id| <= 127.00002: roundf and (int8_t) are plain
                for j in range(32):
                    o[ib * 34 + 2 + j] = np.uint8(_roundf_small(x[xo + j] * idv) & 0xFF)
                continue
            for j in range(32):
                o[ib * 34 + 2 + j] = c_to_int8(c_roundf(x[xo + j] * idv)) & 0xFF


# ================================================================================================
# Registry entries
# ================================================================================================
# One class per format, the same few lines each (as in kquants.py): the place to read what a format has.

class Q4_0(BlockFormat, QuantFormat, qtype=T.Q4_0):
    _kernel = staticmethod(quantize_q4_0_nb)
    dot = DotKernels("q8_32", matmul_q4_0, dequant_q4_0, rows=rows_q4_0, rows_repacked=rows_q4_0_x8,
                     rows_fast=rows_q4_0_fast, matmul_llama_cpp=matmul_q4_0_llama_cpp,
                     unpack=unpack_q45_legacy, unpack_rows=unpack_rows_q45_legacy)
    _ref = staticmethod(legacy_ref.q4_0_quantize_ref)
    _deref = staticmethod(legacy_ref.q4_0_dequantize_ref)


class Q4_1(BlockFormat, QuantFormat, qtype=T.Q4_1):
    _kernel = staticmethod(quantize_q4_1_nb)
    dot = DotKernels("q8_32", matmul_q4_1, dequant_q4_1, rows=rows_q4_1,
                     unpack=unpack_q45_legacy, unpack_rows=unpack_rows_q45_legacy)
    _ref = staticmethod(legacy_ref.q4_1_quantize_ref)
    _deref = staticmethod(legacy_ref.q4_1_dequantize_ref)


class Q5_0(BlockFormat, QuantFormat, qtype=T.Q5_0):
    _kernel = staticmethod(quantize_q5_0_nb)
    dot = DotKernels("q8_32", matmul_q5_0, dequant_q5_0, rows=rows_q5_0,
                     unpack=unpack_q45_legacy, unpack_rows=unpack_rows_q45_legacy, unpack_max=31)
    _ref = staticmethod(legacy_ref.q5_0_quantize_ref)
    _deref = staticmethod(legacy_ref.q5_0_dequantize_ref)


class Q5_1(BlockFormat, QuantFormat, qtype=T.Q5_1):
    _kernel = staticmethod(quantize_q5_1_nb)
    dot = DotKernels("q8_32", matmul_q5_1, dequant_q5_1, rows=rows_q5_1,
                     unpack=unpack_q45_legacy, unpack_rows=unpack_rows_q45_legacy, unpack_max=31)
    _ref = staticmethod(legacy_ref.q5_1_quantize_ref)
    _deref = staticmethod(legacy_ref.q5_1_dequantize_ref)


class Q8_0(BlockFormat, QuantFormat, qtype=T.Q8_0):
    uses_imatrix = False  # quantize_q8_0 ignores quant_weights
    _kernel = staticmethod(quantize_q8_0_nb)
    dot = DotKernels("q8_32", matmul_q8_0, dequant_q8_0, rows=rows_q8_0,
                     unpack=unpack_q8_0, unpack_rows=unpack_rows_q8_0, unpack_max=255)
    _ref = staticmethod(legacy_ref.q8_0_quantize_ref)
    _deref = staticmethod(legacy_ref.q8_0_dequantize_ref)
