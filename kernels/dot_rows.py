"""Rows r0..r1 of a quantized weight times one token's activations, dispatched on the GGML type inside
compiled code (for the decode step, which runs a whole token in one parallel region and so cannot call
the per-format parallel matmuls).

The weight is addressed in the flat bytes of the mapped file: `off` is its first byte, `rb` the bytes
of a row. Activations come in both of llama.cpp's forms, the one a format does not use may be empty:
q8_32 (a32q int8[k], a32d / a32s float32[k/32]) and q8_k (akq int8[k], akd float32[k/256], aks
int32[k/16]), and as float32 for the float types. The row kernels are the ones the matmuls use, so the
numbers are the same.
"""
from __future__ import annotations

import numba as nb
from gguf import GGMLQuantizationType as T

from .floats import rows_bf16, rows_f16, rows_f32
from .dot_simd import (repacked, rowdot_q4_0, rowdot_q4_0_x8, rowdot_q4_1, rowdot_q4_k, rowdot_q4_k_x8, rowdot_q5_0,
                       rowdot_q5_1, rowdot_q5_k, rowdot_q6_k, rowdot_q8_0)

ROW_TYPES = (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K, T.F32, T.F16, T.BF16)

_Q4_0, _Q4_1, _Q5_0, _Q5_1, _Q8_0 = int(T.Q4_0), int(T.Q4_1), int(T.Q5_0), int(T.Q5_1), int(T.Q8_0)
_Q4_K, _Q5_K, _Q6_K = int(T.Q4_K), int(T.Q5_K), int(T.Q6_K)
_F32, _F16, _BF16 = int(T.F32), int(T.F16), int(T.BF16)
_Q4_0_X8, _Q4_K_X8 = 1000 + _Q4_0, 1000 + _Q4_K  # matrices llama.cpp runs repacked (dot_simd.repacked)


def row_kind(qtype, rows: int) -> int:
    """The `kind` matvec_rows takes for a weight of this type and row count."""
    kind = int(qtype)
    return kind + 1000 if kind in (_Q4_0, _Q4_K) and repacked(rows) else kind


@nb.njit(cache=True)
def matvec_rows(kind, bufs, off, rb, r0, r1, k, acts, out):
    """out[r] = W[r] . x for r in r0..r1. W: the weight of GGML type `kind` at byte `off` of the file, rows
    of `rb` bytes; bufs = the file as (uint8, uint16, float32), the last two for the float types;
    acts = (a32q, a32d, a32s, akq, akd, aks, xf), x in both quantized forms and as itself (float32[k])."""
    buf, buf16, buf32 = bufs
    a32q, a32d, a32s, akq, akd, aks, xf = acts
    n32 = k // 32
    nk = k // 256
    # An if-chain, one branch per kernel, each the same loop: the decode step is one compiled function, and
    # numba can neither call an intrinsic through a table nor cache a function made by a factory.
    if kind == _Q4_0:
        for r in range(r0, r1):
            out[r] = rowdot_q4_0(buf, off + r * rb, a32q, 0, a32d, a32s, 0, n32)
    elif kind == _Q4_0_X8:
        for r in range(r0, r1):
            out[r] = rowdot_q4_0_x8(buf, off + r * rb, a32q, 0, a32d, a32s, 0, n32)
    elif kind == _Q8_0:
        for r in range(r0, r1):
            out[r] = rowdot_q8_0(buf, off + r * rb, a32q, 0, a32d, a32s, 0, n32)
    elif kind == _Q4_K:
        for r in range(r0, r1):
            out[r] = rowdot_q4_k(buf, off + r * rb, nk, akq, 0, akd, 0, aks, 0)
    elif kind == _Q4_K_X8:
        for r in range(r0, r1):
            out[r] = rowdot_q4_k_x8(buf, off + r * rb, nk, akq, 0, akd, 0, aks, 0)
    elif kind == _Q6_K:
        for r in range(r0, r1):
            out[r] = rowdot_q6_k(buf, off + r * rb, nk, akq, 0, akd, 0, aks, 0)
    elif kind == _Q5_0:
        for r in range(r0, r1):
            out[r] = rowdot_q5_0(buf, off + r * rb, a32q, 0, a32d, a32s, 0, n32)
    elif kind == _Q5_K:
        for r in range(r0, r1):
            out[r] = rowdot_q5_k(buf, off + r * rb, nk, akq, 0, akd, 0, aks, 0)
    elif kind == _Q4_1:
        for r in range(r0, r1):
            out[r] = rowdot_q4_1(buf, off + r * rb, a32q, 0, a32d, a32s, 0, n32)
    elif kind == _Q5_1:
        for r in range(r0, r1):
            out[r] = rowdot_q5_1(buf, off + r * rb, a32q, 0, a32d, a32s, 0, n32)
    elif kind == _F16:
        rows_f16(buf16, off // 2, rb // 2, r0, r1, xf, out)
    elif kind == _BF16:
        rows_bf16(buf16, off // 2, rb // 2, r0, r1, xf, out)
    elif kind == _F32:
        rows_f32(buf32, off // 4, rb // 4, r0, r1, xf, out)
