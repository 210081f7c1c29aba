"""Numpy references of the K-quants (kernels/kquants.py), vectorised over super-blocks, every sum in C's
order."""
from __future__ import annotations

import numpy as np

from .numerics import F32, GROUP_MAX_EPS
from .numerics_ref import (np_absmax_signed, np_fp16_bits, np_fp16_to_f32, np_make_qkx_quants, np_make_qx_quants,
                           np_nearest_int, np_seqsum)

QK_K = 256


def np_make_qp_quants(nmax: int, x: np.ndarray, qw: np.ndarray):
    """Vectorised make_qp_quants over rows of x (non-negative values). Returns (scale[B], L[B, n])."""
    B, n = x.shape
    x = x.astype(F32)
    qw = qw.astype(F32)
    mx = x.max(axis=1)
    zero = mx < GROUP_MAX_EPS
    smx = np.where(zero, F32(1.0), mx).astype(F32)
    iscale = (F32(nmax) / smx).astype(F32)
    L = np_nearest_int(iscale[:, None] * x) & 0xFF
    scale = (F32(1.0) / iscale).astype(F32)
    diff = (x - (scale[:, None] * L.astype(F32)).astype(F32)).astype(F32)
    best = np_seqsum((qw * diff * diff).astype(F32))
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = ((F32(0.1) * F32(is_) + F32(nmax)) / smx).astype(F32)
        scale_is = (F32(1.0) / iscale_is).astype(F32)
        l = np.minimum(nmax, np_nearest_int(iscale_is[:, None] * x))
        diff = (x - (scale_is[:, None] * l.astype(F32)).astype(F32)).astype(F32)
        mse = np_seqsum((qw * diff * diff).astype(F32))
        better = mse < best
        best = np.where(better, mse, best)
        iscale = np.where(better, iscale_is, iscale).astype(F32)
    L = np.minimum(nmax, np_nearest_int(iscale[:, None] * x)) & 0xFF
    fl = L.astype(F32)
    sumlx = np_seqsum((qw * x * fl).astype(F32))
    suml2 = np_seqsum((qw * fl * fl).astype(F32))
    active = np.ones(B, dtype=bool)
    for _ in range(5):
        changed = np.zeros(B, dtype=bool)
        for i in range(n):
            w = qw[:, i]
            xi = x[:, i]
            li = L[:, i].astype(F32)
            slx = (sumlx - (w * xi * li).astype(F32)).astype(F32)
            sl2 = (suml2 - (w * li * li).astype(F32)).astype(F32)
            ok = active & (slx > 0) & (sl2 > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                q = ((xi * sl2).astype(F32) / np.where(ok, slx, F32(1))).astype(F32)
            new_l = np.minimum(nmax, np_nearest_int(np.where(ok, q, F32(0))))
            ok &= new_l != L[:, i]
            fn = new_l.astype(F32)
            slx2 = (slx + (w * xi * fn).astype(F32)).astype(F32)
            sl22 = (sl2 + (w * fn * fn).astype(F32)).astype(F32)
            ok &= (slx2 * slx2 * suml2).astype(F32) > (sumlx * sumlx * sl22).astype(F32)
            L[:, i] = np.where(ok, new_l & 0xFF, L[:, i])
            sumlx = np.where(ok, slx2, sumlx).astype(F32)
            suml2 = np.where(ok, sl22, suml2).astype(F32)
            changed |= ok
        active &= changed
        if not active.any():
            break
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 > 0, sumlx / np.where(suml2 > 0, suml2, F32(1)), F32(0)).astype(F32)
    scale = np.where(zero, F32(0.0), scale).astype(F32)
    L = np.where(zero[:, None], 0, L)
    return scale, L


def np_pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """[B, 8] 6-bit scales and mins -> [B, 12] bytes."""
    s = np.zeros((ls.shape[0], 12), dtype=np.int64)
    s[:, 0:4] = ls[:, 0:4]
    s[:, 4:8] = lm[:, 0:4]
    s[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    s[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    s[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return (s & 0xFF).astype(np.uint8)


def np_unpack_scales_k4(s: np.ndarray):
    s = s.astype(np.int64)
    sc = np.empty((s.shape[0], 8), dtype=np.int64)
    mn = np.empty_like(sc)
    sc[:, 0:4] = s[:, 0:4] & 63
    mn[:, 0:4] = s[:, 4:8] & 63
    sc[:, 4:8] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:8] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, mn


def _np_qk_scales(rows: np.ndarray, imatrix, nmax: int):
    """Shared Q4_K / Q5_K reference: returns (x[B,256], d bits, dmin bits, scale bytes[B,12], L[B,256])."""
    x = np.ascontiguousarray(rows, dtype=F32).reshape(-1, QK_K)
    B = x.shape[0]
    xs = x.reshape(B * 8, 32)
    if imatrix is None:
        sum_x2 = np_seqsum((xs * xs).astype(F32))
        av_x = np.sqrt((sum_x2 / F32(32)).astype(F32)).astype(F32)
        w = (av_x[:, None] + np.abs(xs)).astype(F32)
        rmin, rdelta, nstep = (-1.0, 0.1, 20) if nmax == 15 else (-0.5, 0.1, 15)
        scales, mins, L = np_make_qkx_quants(nmax, xs, w, rmin, rdelta, nstep)
        scales = scales.reshape(B, 8)
        mins = mins.reshape(B, 8)
        max_scale = np.zeros(B, dtype=F32)
        max_min = np.zeros(B, dtype=F32)
        for j in range(8):
            max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
            max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
        with np.errstate(divide="ignore"):
            inv_scale = np.where(max_scale > 0, F32(63.0) / np.where(max_scale > 0, max_scale, F32(1)),
                                 F32(0)).astype(F32)
            inv_min = np.where(max_min > 0, F32(63.0) / np.where(max_min > 0, max_min, F32(1)),
                               F32(0)).astype(F32)
        ls = np.minimum(63, np_nearest_int(inv_scale[:, None] * scales) & 0xFF)
        lm = np.minimum(63, np_nearest_int(inv_min[:, None] * mins) & 0xFF)
        d = (max_scale / F32(63.0)).astype(F32)
        dmin = (max_min / F32(63.0)).astype(F32)
    else:
        qw = np.asarray(imatrix, dtype=F32).reshape(-1)
        nrow = x.size // np.shape(rows)[-1]
        qwb = np.broadcast_to(qw[None, :], (nrow, qw.shape[0])).reshape(B * 8, 32)
        sum_x2 = np_seqsum((x * x).astype(F32))
        sigma2 = (F32(2.0) * sum_x2 / F32(256.0)).astype(F32)
        s2 = np.repeat(sigma2, 8)
        w = (qwb * np.sqrt((s2[:, None] + (xs * xs).astype(F32)).astype(F32))).astype(F32)
        sw = np_seqsum(w).reshape(B, 8)
        scales, mins, L = np_make_qkx_quants(nmax, xs, w, -0.9, 0.05, 36)
        d, ls = np_make_qp_quants(63, scales.reshape(B, 8), sw)
        dmin, lm = np_make_qp_quants(63, mins.reshape(B, 8), sw)
        if nmax == 31:
            ls = np.minimum(63, ls)
            lm = np.minimum(63, lm)
    sbytes = np_pack_scales_k4(ls, lm)
    dbits = np_fp16_bits(d)
    mbits = np_fp16_bits(dmin)
    sc, m = np_unpack_scales_k4(sbytes)
    dd = (np_fp16_to_f32(dbits)[:, None] * sc.astype(F32)).astype(F32)
    dm = (np_fp16_to_f32(mbits)[:, None] * m.astype(F32)).astype(F32)
    L = L.reshape(B, 8, 32)
    xb = x.reshape(B, 8, 32)
    ok = dd != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = ((xb + dm[:, :, None]).astype(F32) / np.where(ok, dd, F32(1))[:, :, None]).astype(F32)
    lnew = np.clip(np_nearest_int(np.where(ok[:, :, None], q, F32(0))), 0, nmax)
    L = np.where(ok[:, :, None], lnew, L).reshape(B, 256)
    return x, dbits, mbits, sbytes, L


def q4_k_quantize_ref(rows, imatrix=None):
    nrow = int(np.prod(np.shape(rows)[:-1])) if np.ndim(rows) > 1 else 1
    x, dbits, mbits, sbytes, L = _np_qk_scales(rows, imatrix, 15)
    L4 = L.reshape(-1, 4, 2, 32)
    qs = ((L4[:, :, 0, :] | (L4[:, :, 1, :] << 4)) & 0xFF).astype(np.uint8).reshape(-1, 128)
    blk = np.concatenate([dbits[:, None].view(np.uint8), mbits[:, None].view(np.uint8), sbytes, qs], axis=1)
    return blk.reshape(nrow, -1)


def q5_k_quantize_ref(rows, imatrix=None):
    nrow = int(np.prod(np.shape(rows)[:-1])) if np.ndim(rows) > 1 else 1
    x, dbits, mbits, sbytes, L = _np_qk_scales(rows, imatrix, 31)
    L4 = L.reshape(-1, 4, 2, 32)
    hi = (L4 > 15).astype(np.int64)
    lo = np.where(L4 > 15, L4 - 16, L4)
    qs = ((lo[:, :, 0, :] | (lo[:, :, 1, :] << 4)) & 0xFF).astype(np.uint8).reshape(-1, 128)
    qh = np.zeros((L4.shape[0], 32), dtype=np.int64)
    for nn in range(4):
        qh |= hi[:, nn, 0, :] << (2 * nn)
        qh |= hi[:, nn, 1, :] << (2 * nn + 1)
    blk = np.concatenate([dbits[:, None].view(np.uint8), mbits[:, None].view(np.uint8), sbytes,
                          qh.astype(np.uint8), qs], axis=1)
    return blk.reshape(nrow, -1)


def q6_k_quantize_ref(rows, imatrix=None):
    nrow = int(np.prod(np.shape(rows)[:-1])) if np.ndim(rows) > 1 else 1
    x = np.ascontiguousarray(rows, dtype=F32).reshape(-1, QK_K)
    B = x.shape[0]
    xs = x.reshape(B * 16, 16)
    qw = None
    if imatrix is not None:
        qv = np.asarray(imatrix, dtype=F32).reshape(-1)
        qw = np.broadcast_to(qv[None, :], (nrow, qv.shape[0])).reshape(B * 16, 16)
    scales, L = np_make_qx_quants(32, xs, 1, qw)
    scales = scales.reshape(B, 16)
    L = L.reshape(B, 16, 16)
    max_scale = np.zeros(B, dtype=F32)
    max_abs = np.zeros(B, dtype=F32)
    for ib in range(16):
        a = np.abs(scales[:, ib])
        up = a > max_abs
        max_abs = np.where(up, a, max_abs)
        max_scale = np.where(up, scales[:, ib], max_scale)
    zero = max_abs < GROUP_MAX_EPS
    with np.errstate(divide="ignore"):
        iscale = (F32(-128.0) / np.where(zero, F32(1), max_scale)).astype(F32)
    dbits = np_fp16_bits((F32(1.0) / iscale).astype(F32))
    sc = np.minimum(127, np_nearest_int(iscale[:, None] * scales))
    d = (np_fp16_to_f32(dbits)[:, None] * sc.astype(F32)).astype(F32)
    ok = d != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (x.reshape(B, 16, 16) / np.where(ok, d, F32(1))[:, :, None]).astype(F32)
    lnew = np.clip(np_nearest_int(np.where(ok[:, :, None], q, F32(0))), -32, 31) + 32
    L = np.where(ok[:, :, None], lnew, L).reshape(B, 2, 4, 32)
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(B, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
          | ((L[:, :, 3] >> 4) << 6)).reshape(B, 64)
    blk = np.concatenate([ql.astype(np.uint8), (qh & 0xFF).astype(np.uint8), (sc & 0xFF).astype(np.uint8),
                          dbits[:, None].view(np.uint8)], axis=1)
    blk[zero] = 0
    return blk.reshape(nrow, -1)


def q8_k_quantize_ref(rows, imatrix=None):
    nrow = int(np.prod(np.shape(rows)[:-1])) if np.ndim(rows) > 1 else 1
    x = np.ascontiguousarray(rows, dtype=F32).reshape(-1, QK_K)
    mx, amax = np_absmax_signed(x)
    zero = amax == 0
    with np.errstate(divide="ignore"):
        iscale = (F32(-127.0) / np.where(zero, F32(1), mx)).astype(F32)
    q = np.minimum(127, np_nearest_int(iscale[:, None] * x))
    q = np.where(zero[:, None], 0, q)
    bsums = q.reshape(-1, 16, 16).sum(axis=2).astype("<i2")
    d = np.where(zero, F32(0), (F32(1.0) / iscale).astype(F32)).astype("<f4")
    blk = np.concatenate([d[:, None].view(np.uint8), q.astype(np.int8).view(np.uint8), bsums.view(np.uint8)],
                         axis=1)
    return blk.reshape(nrow, -1)


def _sb(data, ts):
    data = np.ascontiguousarray(data, dtype=np.uint8)
    return data.reshape(-1, ts), data.shape[:-1], data.shape[-1] // ts


def _scales_mins(b):
    """Q4_K/Q5_K super-blocks: d, dmin and the 8 six-bit scales and mins of each."""
    d = np_fp16_to_f32(b[:, 0:2].copy().view("<u2")[:, 0])
    dmin = np_fp16_to_f32(b[:, 2:4].copy().view("<u2")[:, 0])
    sc, m = np_unpack_scales_k4(b[:, 4:16])
    return d, dmin, sc, m


def _scaled(d, dmin, sc, m, q):
    """x = d * sc * q - dmin * m per 32-block, each product rounded to float32 as the C code does."""
    d1 = (d[:, None] * sc.astype(F32)).astype(F32)
    m1 = (dmin[:, None] * m.astype(F32)).astype(F32)
    return ((d1[:, :, None] * q.astype(F32)).astype(F32) - m1[:, :, None]).astype(F32)


def q4_k_dequantize_ref(data):
    b, lead, nb = _sb(data, 144)
    d, dmin, sc, m = _scales_mins(b)
    qs = b[:, 16:].reshape(-1, 4, 32).astype(np.int64)
    q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
    return _scaled(d, dmin, sc, m, q).reshape(*lead, nb * 256)


def q5_k_dequantize_ref(data):
    b, lead, nb = _sb(data, 176)
    d, dmin, sc, m = _scales_mins(b)
    qh = b[:, 16:48].astype(np.int64)
    qs = b[:, 48:].reshape(-1, 4, 32).astype(np.int64)
    q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
    h = (qh[:, None, :] >> np.arange(8)[None, :, None]) & 1
    q = q + 16 * h
    return _scaled(d, dmin, sc, m, q).reshape(*lead, nb * 256)


def q6_k_dequantize_ref(data):
    b, lead, nb = _sb(data, 210)
    ql = b[:, 0:128].reshape(-1, 2, 64).astype(np.int64)
    qh = b[:, 128:192].reshape(-1, 2, 32).astype(np.int64)
    sc = b[:, 192:208].view(np.int8).astype(F32).reshape(-1, 16)
    d = np_fp16_to_f32(b[:, 208:210].copy().view("<u2")[:, 0])
    q = np.stack([(ql[:, :, :32] & 0xF) | (((qh >> 0) & 3) << 4),
                  (ql[:, :, 32:] & 0xF) | (((qh >> 2) & 3) << 4),
                  (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4),
                  (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4)], axis=2) - 32  # [B, 2, 4, 32]
    # element (n, t, l) uses scale sc[8n + 2t + l//16]
    s = sc.reshape(-1, 2, 4, 2)[:, :, :, np.arange(32) // 16]  # [B, 2, 4, 32]
    y = ((d[:, None, None, None] * s).astype(F32) * q.astype(F32)).astype(F32)
    return y.reshape(*lead, nb * 256)


def q8_k_dequantize_ref(data):
    b, lead, nb = _sb(data, 292)
    d = b[:, 0:4].copy().view("<f4")[:, 0]
    y = (d[:, None] * b[:, 4:260].view(np.int8).astype(F32)).astype(F32)
    return y.reshape(*lead, nb * 256)
