"""Unquantized formats: F32, F16, BF16. Stored little-endian, one element per 'block'."""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .dot_common import f16_to_f32, f32_to_f16, fma32, low16
from .numerics import f32_as_u32, u32_as_f32

from .dot_rows import row_kernel
from .registry import DotKernels, QuantFormat


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even, NaN kept quiet: what ggml_fp32_to_bf16 does."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = (bits.astype(np.uint64) + (0x7FFF + ((bits >> 16) & 1))) >> 16
    out = rounded.astype(np.uint16)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 64).astype(np.uint16)
    return out


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(bits).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


# ---- runtime kernels -----------------------------------------------------------------------------
# Runtime kernels for unquantized weights: F32, F16, BF16 (float32 activations, float32 sums).
#
# F16 and BF16 rows are read as their uint16 bits and widened on the fly (F16 with the F16C instruction,
# BF16 by a 16-bit shift); prange over rows.

f32 = np.float32


@intrinsic
def bf16_to_f32(typingctx, h):
    """The low 16 bits of an integer, read as a bfloat16 -> float32 (exact): the bits shifted up by 16."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = builder.zext(low16(builder, args[0], h), ir.IntType(32))
        return builder.bitcast(builder.shl(v, ir.Constant(ir.IntType(32), 16)), ir.FloatType())

    return types.float32(h), codegen


# One row times one token, the float sums in whatever order fastmath lets LLVM vectorize them, in two
# callers that run the same loop and so get the same numbers: the batch matmuls (parallel over rows) and
# rows_* (a range of rows, the decode step's row kernels: kernels/dot_rows.py). The loop is written out in each:
# a numba `inline="always"` helper loses the vectorization (measured: 3.7 GB/s instead of 18.5), as
# does indexing w at a computed offset (numba's negative-index wraparound), hence the row slice; and a
# call per row costs more than the row (numba refcounts its array arguments). Three types written out
# because numba's cache keys a function by its name and source line, so one factory making several
# functions would share (and mix up) cache entries.

@nb.njit(cache=True, parallel=True, fastmath=True)
def matmul_f32(w, xf, xq, xd, xs, out):
    R, k = w.shape
    w = w.reshape(-1)
    for r in nb.prange(R):
        wr = w[r * k:(r + 1) * k]
        for t in range(xf.shape[0]):
            acc = f32(0.0)
            for i in range(k):
                acc += wr[i] * xf[t, i]
            out[t, r] = acc


@row_kernel(fastmath=True)
def rows_f32(bufs, off, rb, r0, r1, k, acts, out):
    """out[r] = row r . x for r in r0..r1 (kernels/dot_rows.py); float32 from byte off, rb bytes a row."""
    w, wo, rs, x = bufs[2], off // 4, rb // 4, acts[6]
    for r in range(r0, r1):
        wr = w[wo + r * rs:wo + r * rs + k]
        acc = f32(0.0)
        for i in range(k):
            acc += wr[i] * x[i]
        out[r] = acc


@nb.njit(cache=True, parallel=True, fastmath=True)
def matmul_f16(w, xf, xq, xd, xs, out):
    R, k = w.shape
    w = w.reshape(-1)
    for r in nb.prange(R):
        wr = w[r * k:(r + 1) * k]
        for t in range(xf.shape[0]):
            acc = f32(0.0)
            for i in range(k):
                acc += f16_to_f32(wr[i]) * xf[t, i]
            out[t, r] = acc


@row_kernel(fastmath=True)
def rows_f16(bufs, off, rb, r0, r1, k, acts, out):
    """out[r] = row r . x for r in r0..r1 (kernels/dot_rows.py); fp16 bits from byte off, rb bytes a row."""
    w, wo, rs, x = bufs[1], off // 2, rb // 2, acts[6]
    for r in range(r0, r1):
        wr = w[wo + r * rs:wo + r * rs + k]
        acc = f32(0.0)
        for i in range(k):
            acc += f16_to_f32(wr[i]) * x[i]
        out[r] = acc


@nb.njit(cache=True, parallel=True, fastmath=True)
def matmul_bf16(w, xf, xq, xd, xs, out):
    R, k = w.shape
    w = w.reshape(-1)
    for r in nb.prange(R):
        wr = w[r * k:(r + 1) * k]
        for t in range(xf.shape[0]):
            acc = f32(0.0)
            for i in range(k):
                acc += bf16_to_f32(wr[i]) * xf[t, i]
            out[t, r] = acc


@row_kernel(fastmath=True)
def rows_bf16(bufs, off, rb, r0, r1, k, acts, out):
    """out[r] = row r . x for r in r0..r1 (kernels/dot_rows.py); bf16 bits from byte off, rb bytes a row."""
    w, wo, rs, x = bufs[1], off // 2, rb // 2, acts[6]
    for r in range(r0, r1):
        wr = w[wo + r * rs:wo + r * rs + k]
        acc = f32(0.0)
        for i in range(k):
            acc += bf16_to_f32(wr[i]) * x[i]
        out[r] = acc


# ---- llama.cpp's numbers (the llama.cpp-avx2 arithmetic) ------------------------------------------
# ggml-cpu multiplies float weights through llamafile's tinyBLAS: the activations are first rounded to
# the weight's type (vec_dot_type: fp16 for F16, bf16 for BF16), then every output is 8 float lanes of
# fused multiply-adds over the row (tinyBLAS<8, __m256>, k a multiple of 8) and hsum's tree. Written
# lane by lane, with no fastmath, these numbers are the same on every x86-64 host (the fastmath loops
# above are vectorized to the host's width, so their sums are not); a row whose length is not a
# multiple of 8 (tinyBLAS declines it) ends with its tail added in order.

@nb.njit(inline="always")
def _round_bf16(x):
    """float32 -> the nearest bfloat16, ties to even, NaN kept quiet (ggml_compute_fp32_to_bf16)."""
    u = np.int64(f32_as_u32(x))
    if (u & 0x7fffffff) > 0x7f800000:
        h = (u >> 16) | 64
    else:
        h = (u + (0x7fff + ((u >> 16) & 1))) >> 16
    return u32_as_f32(np.uint32((h << 16) & 0xffffffff))


@nb.njit(inline="always")
def _hsum8(l):
    """hsum(__m256): the two halves added, then _mm_movehl_ps and _mm_movehdup_ps."""
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))


@nb.njit(cache=True, parallel=True)
def matmul_lanes(w, kind, xf, out):
    """out[T, rows] = x[T, k] . W; w: the weights flat (float32, or fp16/bf16 bits as uint16), kind 0 =
    F32, 1 = F16, 2 = BF16; x rounded to the weight's type first."""
    R = out.shape[1]
    T, k = xf.shape
    k8 = k - k % 8
    xr = np.empty((T, k), np.float32)
    for t in range(T):
        for i in range(k):
            v = xf[t, i]
            if kind == 1:
                v = f16_to_f32(f32_to_f16(v))
            elif kind == 2:
                v = _round_bf16(v)
            xr[t, i] = v
    for r in nb.prange(R):
        lanes = np.empty(8, np.float32)
        for t in range(T):
            for l in range(8):
                lanes[l] = 0.0
            for i0 in range(0, k8, 8):
                for l in range(8):
                    j = r * k + i0 + l
                    if kind == 1:
                        wv = f16_to_f32(w[j])
                    elif kind == 2:
                        wv = bf16_to_f32(w[j])
                    else:
                        wv = f32(w[j])
                    lanes[l] = fma32(wv, xr[t, i0 + l], lanes[l])
            acc = _hsum8(lanes)
            for i in range(k8, k):
                j = r * k + i
                wv = f16_to_f32(w[j]) if kind == 1 else (bf16_to_f32(w[j]) if kind == 2 else f32(w[j]))
                acc += wv * xr[t, i]
            out[t, r] = acc


def _lanes(kind):
    def matmul(w, xf, xq, xd, xs, out):
        matmul_lanes(w.reshape(-1), kind, xf, out)
    return matmul


@nb.njit(cache=True, parallel=True)
def dequant_f32(w, r0, r1, out):
    k = w.shape[1]
    for i in nb.prange(r1 - r0):
        for j in range(k):
            out[i, j] = f32(w[r0 + i, j])


@nb.njit(cache=True, parallel=True)
def dequant_f16(w, r0, r1, out):
    k = w.shape[1]
    for i in nb.prange(r1 - r0):
        for j in range(k):
            out[i, j] = f16_to_f32(w[r0 + i, j])


@nb.njit(cache=True, parallel=True)
def dequant_bf16(w, r0, r1, out):
    k = w.shape[1]
    for i in nb.prange(r1 - r0):
        for j in range(k):
            out[i, j] = bf16_to_f32(w[r0 + i, j])


def _as_u16(a):
    return a.view(np.uint16)


class F32(QuantFormat, qtype=T.F32):
    dtype = np.float32
    dot = DotKernels("f32", matmul_f32, dequant_f32, matmul_llama_cpp=_lanes(0), rows=rows_f32)

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        return np.ascontiguousarray(rows, dtype=np.float32).view(np.uint8)

    @classmethod
    def dequantize(cls, data):
        return np.ascontiguousarray(data).view(np.float32)


class F16(QuantFormat, qtype=T.F16):
    dtype = np.float16
    dot = DotKernels("f32", matmul_f16, dequant_f16, _as_u16, matmul_llama_cpp=_lanes(1), rows=rows_f16)

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        return np.ascontiguousarray(rows, dtype=np.float32).astype(np.float16).view(np.uint8)

    @classmethod
    def dequantize(cls, data):
        return np.ascontiguousarray(data).view(np.float16).astype(np.float32)


class BF16(QuantFormat, qtype=T.BF16):
    dtype = np.uint16
    dot = DotKernels("f32", matmul_bf16, dequant_bf16, _as_u16, matmul_llama_cpp=_lanes(2), rows=rows_bf16)

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        return f32_to_bf16_bits(rows).view(np.uint8)

    @classmethod
    def dequantize(cls, data):
        return bf16_bits_to_f32(data)
