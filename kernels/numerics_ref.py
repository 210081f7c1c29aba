"""The shared numerics again in numpy (`np_*`), vectorised but with every sum in C's order: the readable
references the numba kernels are tested against (kernels/numerics.py)."""
from __future__ import annotations

import numpy as np

from .numerics import F32, GROUP_MAX_EPS


def np_nearest_int(v: np.ndarray) -> np.ndarray:
    val = (np.asarray(v, dtype=F32) + F32(12582912.0)).astype(F32)
    return (val.view(np.int32).astype(np.int64) & 0x007FFFFF) - 0x00400000


def np_fp16_bits(v: np.ndarray) -> np.ndarray:
    """float32 -> fp16 bits, round to nearest even (numpy's conversion equals ggml's for all inputs
    but NaN payloads, which are never produced here)."""
    with np.errstate(over="ignore"):
        return np.asarray(v, dtype=F32).astype(np.float16).view(np.uint16)


def np_fp16_to_f32(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(F32)


def np_c_trunc_int(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=F32)
    ok = np.abs(v) < F32(2147483648.0)
    return np.where(ok, np.trunc(np.where(ok, v, 0)), -2147483648).astype(np.int64)


def np_c_to_int8(v: np.ndarray) -> np.ndarray:
    t = np_c_trunc_int(v) & 0xFF
    return np.where(t >= 128, t - 256, t)


def np_c_roundf(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=F32)
    with np.errstate(invalid="ignore"):
        t = np.trunc(v)
        step = np.where(np.abs(v - t) >= F32(0.5), np.where(v > 0, F32(1), F32(-1)), F32(0)).astype(F32)
    return np.where(np.abs(v) < F32(8388608.0), t + step, v).astype(F32)


def np_safe_recip(d: np.ndarray) -> np.ndarray:
    """`d ? 1.0f/d : 0.0f`"""
    d = np.asarray(d, dtype=F32)
    out = np.zeros_like(d)
    with np.errstate(over="ignore", divide="ignore"):
        np.divide(F32(1.0), d, out=out, where=d != 0)
    return out


def np_absmax_signed(x: np.ndarray) -> np.ndarray:
    """Per row of x: the first element of largest magnitude (0.0 if all are zero), as the C loop
    `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` finds it."""
    ax = np.abs(x)
    idx = np.argmax(ax, axis=-1)
    v = np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]
    am = np.take_along_axis(ax, idx[..., None], axis=-1)[..., 0]
    return np.where(am > 0, v, F32(0.0)).astype(F32), am.astype(F32)


def np_first_min(x: np.ndarray) -> np.ndarray:
    """Per row: the first element equal to the minimum (C's `if (v < min) min = v;` keeps the sign of a
    zero it met first)."""
    idx = np.argmax(x == x.min(axis=-1, keepdims=True), axis=-1)
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0].astype(F32)


def np_first_max(x: np.ndarray) -> np.ndarray:
    idx = np.argmax(x == x.max(axis=-1, keepdims=True), axis=-1)
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0].astype(F32)


def np_seqsum(terms: np.ndarray) -> np.ndarray:
    """Sum along the last axis strictly left to right (float32), like a C accumulation loop."""
    s = np.zeros(terms.shape[:-1], dtype=F32)
    for i in range(terms.shape[-1]):
        s = (s + terms[..., i]).astype(F32)
    return s


def np_make_qx_quants(nmax: int, x: np.ndarray, rmse_type: int, qw: np.ndarray | None):
    """Vectorised make_qx_quants over rows of x (rmse_type >= 1). Returns (scale[B], L[B, n] int)."""
    B, n = x.shape
    mx, amax = np_absmax_signed(x)
    zero = amax < GROUP_MAX_EPS
    safe_mx = np.where(zero, F32(1.0), mx).astype(F32)
    if qw is not None:
        w = qw.astype(F32)
    elif rmse_type == 1:
        w = (x * x).astype(F32)
    elif rmse_type == 2:
        w = np.ones_like(x)
    elif rmse_type == 3:
        w = np.abs(x)
    else:
        w = np.sqrt(np.abs(x)).astype(F32)

    def trial(iscale):
        l = np.clip(np_nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        fl = l.astype(F32)
        return l, np_seqsum((w * x * fl).astype(F32)), np_seqsum((w * fl * fl).astype(F32))

    iscale = (F32(-nmax) / safe_mx).astype(F32)
    l, sumlx, suml2 = trial(iscale)
    L = l + nmax
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, F32(1)), F32(0)).astype(F32)
    best = (scale * sumlx).astype(F32)
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = (-(F32(nmax) + F32(0.1) * F32(is_)) / safe_mx).astype(F32)
        l, sumlx, suml2 = trial(iscale)
        better = (suml2 > 0) & ((sumlx * sumlx).astype(F32) > (best * suml2).astype(F32))
        L = np.where(better[:, None], l + nmax, L)
        with np.errstate(divide="ignore", invalid="ignore"):
            new_scale = (sumlx / np.where(suml2 != 0, suml2, F32(1))).astype(F32)
        scale = np.where(better, new_scale, scale).astype(F32)
        best = np.where(better, (scale * sumlx).astype(F32), best).astype(F32)
    L = np.where(zero[:, None], 0, L)
    scale = np.where(zero, F32(0.0), scale).astype(F32)
    return scale, L


def np_make_qkx_quants(nmax: int, x: np.ndarray, weights: np.ndarray, rmin: float, rdelta: float,
                       nstep: int, use_mad: bool = False):
    """Vectorised make_qkx2_quants / make_qkx3_quants (explicit weights) over rows of x.
    Returns (scale[B], the_min[B], L[B, n] int)."""
    B, n = x.shape
    x = x.astype(F32)
    w = weights.astype(F32)
    mn = np_first_min(x)
    mx = np_first_max(x)
    sum_w = np_seqsum(w)
    sum_x = np_seqsum((w * x).astype(F32))
    mn = np.where(mn > 0, F32(0.0), mn).astype(F32)
    flat = mx <= mn
    rng = np.where(flat, F32(1.0), (mx - mn)).astype(F32)
    iscale = (F32(nmax) / rng).astype(F32)
    scale = (F32(1.0) / iscale).astype(F32)
    xm = (x - mn[:, None]).astype(F32)
    L = np.clip(np_nearest_int(iscale[:, None] * xm), 0, nmax)
    diff = ((scale[:, None] * L.astype(F32)).astype(F32) + mn[:, None] - x).astype(F32)
    diff = np.abs(diff) if use_mad else (diff * diff).astype(F32)
    best = np_seqsum((w * diff).astype(F32))
    for is_ in range(nstep + 1):
        # the C loop reads the current `min`, which an accepted step has replaced
        rng = np.where(flat, F32(1.0), (mx - mn)).astype(F32)
        xm = (x - mn[:, None]).astype(F32)
        iscale = ((F32(rmin) + F32(rdelta) * F32(is_) + F32(nmax)) / rng).astype(F32)
        la = np.clip(np_nearest_int(iscale[:, None] * xm), 0, nmax)
        fl = la.astype(F32)
        sum_l = np_seqsum((w * fl).astype(F32))
        sum_l2 = np_seqsum((w * fl * fl).astype(F32))
        sum_xl = np_seqsum((w * fl * x).astype(F32))
        D = (sum_w * sum_l2 - sum_l * sum_l).astype(F32)
        ok = D > 0
        Ds = np.where(ok, D, F32(1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            this_scale = ((sum_w * sum_xl - sum_x * sum_l) / Ds).astype(F32)
            this_min = ((sum_l2 * sum_x - sum_l * sum_xl) / Ds).astype(F32)
            pos = this_min > 0
            this_min = np.where(pos, F32(0.0), this_min).astype(F32)
            this_scale = np.where(pos, (sum_xl / np.where(sum_l2 != 0, sum_l2, F32(0))).astype(F32),
                                  this_scale).astype(F32)
        d2 = ((this_scale[:, None] * fl).astype(F32) + this_min[:, None] - x).astype(F32)
        d2 = np.abs(d2) if use_mad else (d2 * d2).astype(F32)
        cur = np_seqsum((w * d2).astype(F32))
        better = ok & (cur < best)
        L = np.where(better[:, None], la, L)
        best = np.where(better, cur, best)
        scale = np.where(better, this_scale, scale).astype(F32)
        mn = np.where(better, this_min, mn).astype(F32)
    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, F32(0.0), scale).astype(F32)
    return scale, (-mn).astype(F32), L


def _blocks(rows: np.ndarray, qk: int) -> tuple[np.ndarray, int]:
    rows = np.ascontiguousarray(rows, dtype=F32)
    if rows.ndim == 1:
        rows = rows[None]
    if rows.shape[-1] % qk:
        raise ValueError(f"row of {rows.shape[-1]} is not a multiple of {qk}")
    return rows.reshape(-1, qk), rows.shape[0]


def _weighted_blocks(rows: np.ndarray, imatrix: np.ndarray, qk: int) -> np.ndarray:
    """weight[j] = qw[j] * sqrt(sigma2 + x[j]^2) with sigma2 = sum(x^2)/n over the whole row."""
    rows = np.ascontiguousarray(rows, dtype=F32)
    n = rows.shape[1]
    sigma2 = (np_seqsum((rows * rows).astype(F32)) / F32(n)).astype(F32)
    qw = np.asarray(imatrix, dtype=F32)[None, :]
    w = (qw * np.sqrt((sigma2[:, None] + (rows * rows).astype(F32)).astype(F32))).astype(F32)
    return w.reshape(-1, qk)


def _pack_nibbles(L: np.ndarray) -> np.ndarray:
    """qs[j] = L[j] | L[j + 16] << 4 for 32-element blocks (both uint8 already)."""
    return ((L[:, :16] & 0xFF) | ((L[:, 16:] << 4) & 0xFF)).astype(np.uint8)


def _pack_qh(L: np.ndarray) -> np.ndarray:
    bits = ((L >> 4) & 1).astype(np.uint64)
    qh = np.zeros(L.shape[0], dtype=np.uint64)
    for j in range(32):
        qh |= bits[:, j] << np.uint64(j)
    return qh.astype("<u4").view(np.uint8).reshape(-1, 4)


def _out(parts, nrows):
    return np.concatenate([np.ascontiguousarray(p).view(np.uint8).reshape(p.shape[0], -1) for p in parts],
                          axis=1).reshape(nrows, -1)
