"""Runtime kernels for unquantized weights: F32, F16, BF16 (float32 activations, float32 sums).

F16 and BF16 rows are read as their uint16 bits and widened on the fly (F16 with the F16C instruction,
BF16 by a 16-bit shift), four rows per activation load, prange over groups of rows.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from gguf import GGMLQuantizationType as T
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .dot_common import f16_to_f32, register

f32 = np.float32


@intrinsic
def bf16_to_f32(typingctx, h):
    """The low 16 bits of an integer, read as a bfloat16 -> float32 (exact)."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if h.bitwidth > 16:
            v = builder.trunc(v, ir.IntType(16))
        v = builder.zext(v, ir.IntType(32))
        return builder.bitcast(builder.shl(v, ir.Constant(ir.IntType(32), 16)), ir.FloatType())

    return types.float32(h), codegen


# The three are the same loop; written out because numba's cache keys a function by its name and
# source line, so one factory making three functions would share (and mix up) cache entries.

@nb.njit(cache=True, parallel=True, fastmath=True)
def matmul_f32(w, xf, xq, xd, xs, out):
    R, k = w.shape
    Tn = xf.shape[0]
    for g in nb.prange((R + 3) // 4):
        r0 = g * 4
        r1, r2, r3 = min(r0 + 1, R - 1), min(r0 + 2, R - 1), min(r0 + 3, R - 1)
        for t in range(Tn):
            a0 = f32(0.0)
            a1 = f32(0.0)
            a2 = f32(0.0)
            a3 = f32(0.0)
            for i in range(k):
                x = xf[t, i]
                a0 += f32(w[r0, i]) * x
                a1 += f32(w[r1, i]) * x
                a2 += f32(w[r2, i]) * x
                a3 += f32(w[r3, i]) * x
            out[t, r0] = a0
            if r0 + 1 < R:
                out[t, r0 + 1] = a1
            if r0 + 2 < R:
                out[t, r0 + 2] = a2
            if r0 + 3 < R:
                out[t, r0 + 3] = a3


@nb.njit(cache=True, parallel=True)
def dequant_f32(w, r0, r1, out):
    k = w.shape[1]
    for i in nb.prange(r1 - r0):
        for j in range(k):
            out[i, j] = f32(w[r0 + i, j])


@nb.njit(cache=True, parallel=True, fastmath=True)
def matmul_f16(w, xf, xq, xd, xs, out):
    R, k = w.shape
    Tn = xf.shape[0]
    for g in nb.prange((R + 3) // 4):
        r0 = g * 4
        r1, r2, r3 = min(r0 + 1, R - 1), min(r0 + 2, R - 1), min(r0 + 3, R - 1)
        for t in range(Tn):
            a0 = f32(0.0)
            a1 = f32(0.0)
            a2 = f32(0.0)
            a3 = f32(0.0)
            for i in range(k):
                x = xf[t, i]
                a0 += f16_to_f32(w[r0, i]) * x
                a1 += f16_to_f32(w[r1, i]) * x
                a2 += f16_to_f32(w[r2, i]) * x
                a3 += f16_to_f32(w[r3, i]) * x
            out[t, r0] = a0
            if r0 + 1 < R:
                out[t, r0 + 1] = a1
            if r0 + 2 < R:
                out[t, r0 + 2] = a2
            if r0 + 3 < R:
                out[t, r0 + 3] = a3


@nb.njit(cache=True, parallel=True)
def dequant_f16(w, r0, r1, out):
    k = w.shape[1]
    for i in nb.prange(r1 - r0):
        for j in range(k):
            out[i, j] = f16_to_f32(w[r0 + i, j])


@nb.njit(cache=True, parallel=True, fastmath=True)
def matmul_bf16(w, xf, xq, xd, xs, out):
    R, k = w.shape
    Tn = xf.shape[0]
    for g in nb.prange((R + 3) // 4):
        r0 = g * 4
        r1, r2, r3 = min(r0 + 1, R - 1), min(r0 + 2, R - 1), min(r0 + 3, R - 1)
        for t in range(Tn):
            a0 = f32(0.0)
            a1 = f32(0.0)
            a2 = f32(0.0)
            a3 = f32(0.0)
            for i in range(k):
                x = xf[t, i]
                a0 += bf16_to_f32(w[r0, i]) * x
                a1 += bf16_to_f32(w[r1, i]) * x
                a2 += bf16_to_f32(w[r2, i]) * x
                a3 += bf16_to_f32(w[r3, i]) * x
            out[t, r0] = a0
            if r0 + 1 < R:
                out[t, r0 + 1] = a1
            if r0 + 2 < R:
                out[t, r0 + 2] = a2
            if r0 + 3 < R:
                out[t, r0 + 3] = a3


@nb.njit(cache=True, parallel=True)
def dequant_bf16(w, r0, r1, out):
    k = w.shape[1]
    for i in nb.prange(r1 - r0):
        for j in range(k):
            out[i, j] = bf16_to_f32(w[r0 + i, j])


def _as_u16(a):
    return a.view(np.uint16)


register(T.F32, "f32", matmul_f32, dequant_f32)
register(T.F16, "f32", matmul_f16, dequant_f16, _as_u16)
register(T.BF16, "f32", matmul_bf16, dequant_bf16, _as_u16)
