"""The low-bit K-quants' readable reference (kquants_low.py has the numba quantizers, the runtime kernels and
the registry classes): llama.cpp's quantize_row_q3_K_ref / _impl one block at a time in C's order, and
quantize_row_q2_K_ref / _impl vectorised over sub-blocks; the tests hold the numba quantizers to these byte
for byte."""
from __future__ import annotations

import numpy as np

from .kquants_ref import np_make_qp_quants
from .numerics import F32, GROUP_MAX_EPS
from .numerics_ref import (np_fp16_bits, np_fp16_to_f32, np_make_qkx_quants, np_make_qx_quants, np_nearest_int,
                           np_seqsum)


def _nearest(v) -> int:
    return int(np.rint(F32(v)))


def make_q3_quants_ref(x, nmax: int = 4):
    """make_q3_quants(16, nmax, x, L, do_rmse = true): (scale, L + nmax)."""
    amax = mx = F32(0)
    for v in x:
        if abs(v) > amax:
            amax, mx = abs(v), v
    if amax < GROUP_MAX_EPS:
        return F32(0), [0] * len(x)
    iscale = F32(F32(-nmax) / mx)
    L, sumlx, suml2 = [], F32(0), F32(0)
    for v in x:
        l = max(-nmax, min(nmax - 1, _nearest(F32(iscale * v))))
        L.append(l)
        w = F32(v * v)
        sumlx = F32(sumlx + F32(F32(w * v) * F32(l)))
        suml2 = F32(suml2 + F32(F32(w * F32(l)) * F32(l)))
    for _ in range(5):
        changed = 0
        for i, v in enumerate(x):
            w = F32(v * v)
            slx = F32(sumlx - F32(F32(w * v) * F32(L[i])))
            if slx > 0:
                sl2 = F32(suml2 - F32(F32(w * F32(L[i])) * F32(L[i])))
                new_l = max(-nmax, min(nmax - 1, _nearest(F32(F32(v * sl2) / slx))))
                if new_l != L[i]:
                    slx = F32(slx + F32(F32(w * v) * F32(new_l)))
                    sl2 = F32(sl2 + F32(F32(w * F32(new_l)) * F32(new_l)))
                    if sl2 > 0 and F32(F32(slx * slx) * suml2) > F32(F32(sumlx * sumlx) * sl2):
                        L[i], sumlx, suml2 = new_l, slx, sl2
                        changed += 1
        if not changed:
            break
    return (F32(sumlx / suml2) if suml2 > 0 else F32(0)), [l + nmax for l in L]


def _pack_scales(ls) -> list[int]:
    """16 six-bit scales (offset by 32) into 12 bytes: low nibbles in 0..7, high 2 bits in 8..11."""
    sc = [0] * 12
    for j, l in enumerate(ls):
        if j < 8:
            sc[j] = l & 0xF
        else:
            sc[j - 8] |= (l & 0xF) << 4
        sc[j % 4 + 8] |= (l >> 4) << (2 * (j // 4))
    return sc


def _unpack_scale(sc, j) -> int:
    s = sc[j] & 0xF if j < 8 else sc[j - 8] >> 4
    return (s | (((sc[8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32


def _levels_and_bits(x, d_bits, sc, L) -> list[int]:
    """The final levels from the stored scales (a sub-block whose scale is 0 keeps the search's levels L),
    then hmask and qs (C's loops)."""
    d_all = F32(np_fp16_to_f32(np.array([d_bits], np.uint16))[0])
    L = [int(v) for v in L]
    for j in range(16):
        d = F32(d_all * F32(_unpack_scale(sc, j)))
        if not d:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-4, min(3, _nearest(F32(x[16 * j + ii] / d)))) + 4
    hmask, m, hm = [0] * 32, 0, 1
    for j in range(256):
        if L[j] > 3:
            hmask[m] |= hm
            L[j] -= 4
        m += 1
        if m == 32:
            m, hm = 0, hm << 1
    qs = []
    for j in (0, 128):
        qs += [L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6) for l in range(32)]
    return hmask + qs + sc + [d_bits & 0xFF, d_bits >> 8]


def q3_k_block_ref(x, qw=None) -> list[int]:
    x = np.asarray(x, F32)
    if qw is None:
        scales, L = [], []
        for j in range(16):
            s, Lj = make_q3_quants_ref(x[16 * j:16 * (j + 1)])
            scales.append(s)
            L += Lj
        amax = max_scale = F32(0)
        for s in scales:
            if abs(s) > amax:
                amax, max_scale = abs(s), s
        if max_scale:
            iscale = F32(F32(-32) / max_scale)
            Ls = [max(-32, min(31, _nearest(F32(iscale * s)))) + 32 for s in scales]
            d_bits = int(np_fp16_bits(np.array([F32(F32(1) / iscale)], F32))[0])
        else:
            Ls, d_bits = [32] * 16, int(np_fp16_bits(np.array([0], F32))[0])
        sc = _pack_scales(Ls) if max_scale else [0] * 12
        return _levels_and_bits(x, d_bits, sc, L)
    sumx2 = F32(0)
    for v in x:
        sumx2 = F32(sumx2 + F32(v * v))
    sigma2 = F32(F32(F32(2) * sumx2) / F32(256))
    weight = (np.asarray(qw, F32) * np.sqrt((sigma2 + x * x).astype(F32))).astype(F32).reshape(16, 16)
    sw = np.zeros(16, F32)
    for j in range(16):
        s = F32(0)
        for w in weight[j]:
            s = F32(s + w)
        sw[j] = s
    scales, L = np_make_qx_quants(4, x.reshape(16, 16), 1, weight)
    d_block, Ls = np_make_qx_quants(32, scales.astype(F32).reshape(1, 16), 1, sw.reshape(1, 16))
    d_bits = int(np_fp16_bits(np.array([d_block[0]], F32))[0])
    return _levels_and_bits(x, d_bits, _pack_scales([int(v) for v in Ls[0]]), L.reshape(-1))


def q3_k_quantize_ref(rows, imatrix=None):
    rows = np.asarray(rows, F32)
    out = []
    for x in rows:
        b = []
        for ib in range(len(x) // 256):
            qw = None if imatrix is None else np.asarray(imatrix, F32)[ib * 256:(ib + 1) * 256]
            b += q3_k_block_ref(x[ib * 256:(ib + 1) * 256], qw)
        out.append(b)
    return np.array(out, np.uint8)


def q3_k_dequantize_ref(data):
    blocks = np.asarray(data, np.uint8).reshape(-1, 110)
    y = np.empty((blocks.shape[0], 256), F32)
    for i, b in enumerate(blocks):
        hmask, qs, sc = b[:32], b[32:96], [int(v) for v in b[96:108]]
        d_all = F32(np_fp16_to_f32(np.array([int(b[108]) | (int(b[109]) << 8)], np.uint16))[0])
        for j in range(16):  # sub-block j: weights 16j .. 16j+15
            dl = F32(d_all * F32(_unpack_scale(sc, j)))
            for ii in range(16):
                k = 16 * j + ii
                half, within = divmod(k, 128)
                shift, l = divmod(within, 32)
                q = (int(qs[32 * half + l]) >> (2 * shift)) & 3
                high = (int(hmask[l]) >> (4 * half + shift)) & 1
                y[i, k] = F32(dl * F32(q - (0 if high else 4)))
    return y.reshape(*np.asarray(data).shape[:-1], -1)


def _pack_2bit(L):
    """[B, 256] levels 0..3 -> [B, 64] qs: byte 32h + l holds weights 128h + l + 32s at bits 2s."""
    L = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)).reshape(-1, 64)


def q2_k_quantize_ref(rows, imatrix=None):
    """quantize_row_q2_K_ref (no imatrix) / quantize_row_q2_K_impl (imatrix), vectorised over sub-blocks."""
    rows = np.asarray(rows, F32)
    nrow = rows.shape[0]
    x = rows.reshape(-1, 256)
    B = x.shape[0]
    xs = x.reshape(B * 16, 16)
    if imatrix is None:
        scales, mins, L = np_make_qkx_quants(3, xs, np.abs(xs), -0.5, 0.1, 15, use_mad=True)
        scales, mins = scales.reshape(B, 16), mins.reshape(B, 16)
        max_scale = np.maximum(scales.max(axis=1), F32(0))   # the C loop starts from 0
        max_min = np.maximum(mins.max(axis=1), F32(0))
        q4scale = F32(15)
        with np.errstate(divide="ignore"):
            iscale = (q4scale / max_scale).astype(F32)
            imin = (q4scale / max_min).astype(F32)
        ls = np.where(max_scale[:, None] > 0, np_nearest_int(iscale[:, None] * scales), 0)
        lm = np.where(max_min[:, None] > 0, np_nearest_int(imin[:, None] * mins), 0)
        d = np.where(max_scale > 0, max_scale / q4scale, F32(0)).astype(F32)
        dmin = np.where(max_min > 0, max_min / q4scale, F32(0)).astype(F32)
    else:
        qw = np.broadcast_to(np.asarray(imatrix, F32).reshape(1, -1), rows.shape).reshape(B * 16, 16)
        sigma2 = np.repeat((np_seqsum((x * x).astype(F32)) / F32(256)).astype(F32), 16)
        w = (qw * np.sqrt((sigma2[:, None] + (xs * xs).astype(F32)).astype(F32))).astype(F32)
        sw = np_seqsum(w).reshape(B, 16)
        scales, mins, L = np_make_qkx_quants(3, xs, w, -0.9, 0.05, 36)
        d, ls = np_make_qp_quants(15, scales.reshape(B, 16), sw)
        dmin, lm = np_make_qp_quants(15, mins.reshape(B, 16), sw)
    sc = ((ls & 0xF) | ((lm << 4) & 0xFF)).astype(np.uint8)
    dbits, mbits = np_fp16_bits(d), np_fp16_bits(dmin)
    dl = (np_fp16_to_f32(dbits)[:, None] * (sc & 0xF).astype(F32)).astype(F32)      # requantize with
    ml = (np_fp16_to_f32(mbits)[:, None] * (sc >> 4).astype(F32)).astype(F32)       # the stored scales
    ok = (dl != 0)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = ((x.reshape(B, 16, 16) + ml[:, :, None]).astype(F32) / np.where(ok, dl[:, :, None], F32(1))).astype(F32)
    L = np.where(ok, np.clip(np_nearest_int(np.where(ok, q, F32(0))), 0, 3), L.reshape(B, 16, 16))
    blk = np.concatenate([sc, _pack_2bit(L.reshape(B, 256)), dbits[:, None].view(np.uint8),
                          mbits[:, None].view(np.uint8)], axis=1)
    return blk.reshape(nrow, -1)


def q2_k_dequantize_ref(data):
    """dequantize_row_q2_K: weight 128h + 32s + l is dl * ((qs[32h + l] >> 2s) & 3) - ml, with the scale
    and min of its sub-block (16 weights)."""
    b = np.asarray(data, np.uint8).reshape(-1, 84)
    sc = b[:, :16]
    d = np_fp16_to_f32(b[:, 80:82].copy().view(np.uint16))[:, 0]
    dmin = np_fp16_to_f32(b[:, 82:84].copy().view(np.uint16))[:, 0]
    dl = (d[:, None] * (sc & 0xF).astype(F32)).astype(F32)
    ml = (dmin[:, None] * (sc >> 4).astype(F32)).astype(F32)
    qs = b[:, 16:80].reshape(-1, 2, 1, 32)
    q = ((qs >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3).reshape(-1, 16, 16).astype(F32)
    y = ((dl[:, :, None] * q).astype(F32) - ml[:, :, None]).astype(F32)
    return y.reshape(*np.asarray(data).shape[:-1], -1)
