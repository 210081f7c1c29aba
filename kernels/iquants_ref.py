"""Readable references of the non-linear 4-bit formats (kernels/iquants.py): llama.cpp's
quantize_row_iq4_nl_impl written out as its C loops, one super-block at a time, in float32 scalars (C's
float arithmetic, no FMA), and the two dequantizers. Slow: for the tests, on a few rows."""
from __future__ import annotations

import numpy as np

from .numerics import F32, GROUP_MAX_EPS
from .numerics_ref import np_fp16_bits, np_fp16_to_f32

# kvalues_iq4nl: the 16 levels of IQ4_NL and IQ4_XS (ggml-common.h)
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
_V = [F32(v) for v in KVALUES_IQ4NL]


def best_index_of(v, x):
    """best_index_int8(16, kvalues_iq4nl, x): the nearest of the 16 float32 levels v, the lower one on a tie.
    (kernels/iquants.py compiles this same function for the numba quantizers.)"""
    if x <= v[0]:
        return 0
    if x >= v[15]:
        return 15
    ml, mu = 0, 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < v[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if x - v[mu - 1] < v[mu] - x else mu


def best_index(x: np.float32) -> int:
    return best_index_of(_V, x)


def _nearest_int(v: np.float32) -> int:
    """llama.cpp's nearest_int: round half to even through the float trick (|v| < 2^22 here)."""
    return int(np.rint(v))


def iq4_superblock(x, qw, ntry: int):
    """quantize_row_iq4_nl_impl(super_block_size = len(x), block_size 32): (d as fp16 bits, the 16-level
    indices L[len(x)], the 6-bit block scales or None when len(x) == 32)."""
    n = len(x)
    sigma2 = F32(0)
    for j in range(n):
        sigma2 = F32(sigma2 + F32(x[j] * x[j]))
    sigma2 = F32(sigma2 * F32(F32(2) / F32(n)))
    L = np.zeros(n, np.int64)
    scales = [F32(0)] * (n // 32)
    max_scale = amax_scale = F32(0)
    for ib in range(n // 32):
        xb = x[ib * 32:(ib + 1) * 32]
        if qw is not None:
            weight = [F32(qw[ib * 32 + j] * np.sqrt(F32(sigma2 + F32(xb[j] * xb[j])))) for j in range(32)]
        else:
            weight = [F32(xb[j] * xb[j]) for j in range(32)]
        amax = mx = F32(0)
        for j in range(32):
            ax = abs(xb[j])
            if ax > amax:
                amax, mx = ax, xb[j]
        if amax < GROUP_MAX_EPS:
            scales[ib] = F32(0)
            continue
        d = F32(-mx / _V[0]) if ntry > 0 else F32(mx / _V[0])
        idv = F32(F32(1) / d)
        sumqx = sumq2 = F32(0)
        for j in range(32):
            l = best_index(F32(idv * xb[j]))
            L[ib * 32 + j] = l
            q, w = _V[l], weight[j]
            sumqx = F32(sumqx + F32(F32(w * q) * xb[j]))
            sumq2 = F32(sumq2 + F32(F32(w * q) * q))
        d = F32(sumqx / sumq2) if sumq2 > 0 else F32(0)
        best = F32(d * sumqx)
        for itry in range(-ntry, ntry + 1):
            idv = F32(F32(itry + int(KVALUES_IQ4NL[0])) / mx)
            sumqx = sumq2 = F32(0)
            for j in range(32):
                q, w = _V[best_index(F32(idv * xb[j]))], weight[j]
                sumqx = F32(sumqx + F32(F32(w * q) * xb[j]))
                sumq2 = F32(sumq2 + F32(F32(w * q) * q))
            if sumq2 > 0 and F32(sumqx * sumqx) > F32(best * sumq2):
                d = F32(sumqx / sumq2)
                best = F32(d * sumqx)
        scales[ib] = d
        if abs(d) > amax_scale:
            amax_scale, max_scale = abs(d), d
    if n > 32:
        d = F32(-max_scale / F32(32))
        idv = F32(F32(1) / d) if d != 0 else F32(0)
        ls = np.zeros(n // 32, np.int64)
        for ib in range(n // 32):
            l = max(-32, min(31, _nearest_int(F32(idv * scales[ib]))))
            dl = F32(d * F32(l))
            idl = F32(F32(1) / dl) if dl != 0 else F32(0)
            for j in range(32):
                L[ib * 32 + j] = best_index(F32(idl * x[ib * 32 + j]))
            ls[ib] = l + 32
        return int(np_fp16_bits(np.array([d], F32))[0]), L, ls
    if ntry > 0:
        idv = F32(F32(1) / scales[0]) if scales[0] != 0 else F32(0)
        for j in range(32):
            L[j] = best_index(F32(idv * x[j]))
    return int(np_fp16_bits(np.array([scales[0]], F32))[0]), L, None


def _pack(L) -> list[int]:
    out = []
    for i in range(len(L) // 32):
        out += [int(L[32 * i + j]) | (int(L[32 * i + 16 + j]) << 4) for j in range(16)]
    return out


def _quantize_ref(rows, imatrix, n, header):
    """Each row's super-blocks of n weights as header(d, 6-bit scales) + the packed indices."""
    rows = np.asarray(rows, F32)
    out = []
    for x in rows:
        b = []
        for ib in range(len(x) // n):
            qw = None if imatrix is None else np.asarray(imatrix, F32)[ib * n:(ib + 1) * n]
            d, L, ls = iq4_superblock(x[ib * n:(ib + 1) * n], qw, 7)
            b += header(d, ls) + _pack(L)
        out.append(b)
    return np.array(out, np.uint8)


def _xs_header(d, ls):
    """block_iq4_xs: d, scales_h (the high 2 bits of each 6-bit scale), scales_l (the low 4 bits)."""
    scales_h, scales_l = 0, [0, 0, 0, 0]
    for i, l in enumerate(ls):
        scales_l[i // 2] |= (int(l) & 0xF) << (4 * (i % 2))
        scales_h |= (int(l) >> 4) << (2 * i)
    return [d & 0xFF, d >> 8, scales_h & 0xFF, scales_h >> 8] + scales_l


def iq4_nl_quantize_ref(rows, imatrix=None):
    return _quantize_ref(rows, imatrix, 32, lambda d, ls: [d & 0xFF, d >> 8])


def iq4_xs_quantize_ref(rows, imatrix=None):
    return _quantize_ref(rows, imatrix, 256, _xs_header)


def iq4_nl_dequantize_ref(data):
    blocks = np.asarray(data, np.uint8).reshape(-1, 18)
    d = np_fp16_to_f32(blocks[:, 0].astype(np.uint16) | (blocks[:, 1].astype(np.uint16) << 8))
    q = blocks[:, 2:]
    v = KVALUES_IQ4NL.astype(F32)
    y = np.concatenate([v[q & 0xF], v[q >> 4]], axis=1) * d[:, None]
    return y.astype(F32).reshape(*np.asarray(data).shape[:-1], -1)


def iq4_xs_dequantize_ref(data):
    blocks = np.asarray(data, np.uint8).reshape(-1, 136)
    d = np_fp16_to_f32(blocks[:, 0].astype(np.uint16) | (blocks[:, 1].astype(np.uint16) << 8))
    sh = blocks[:, 2].astype(np.int64) | (blocks[:, 3].astype(np.int64) << 8)
    v = KVALUES_IQ4NL.astype(F32)
    y = np.empty((blocks.shape[0], 256), F32)
    for ib in range(8):
        ls = ((blocks[:, 4 + ib // 2].astype(np.int64) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
        dl = (d * (ls - 32).astype(F32)).astype(F32)
        q = blocks[:, 8 + 16 * ib:8 + 16 * (ib + 1)]
        y[:, 32 * ib:32 * ib + 16] = dl[:, None] * v[q & 0xF]
        y[:, 32 * ib + 16:32 * ib + 32] = dl[:, None] * v[q >> 4]
    return y.reshape(*np.asarray(data).shape[:-1], -1)
