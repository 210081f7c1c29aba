"""The 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 — and the numerics every quantizer shares.

Byte-exact with llama.cpp's `ggml-quants.c`: float32 arithmetic in C's order, no FMA (fastmath off),
fp16 rounded to nearest even by the same bit trick as `ggml_compute_fp32_to_fp16`, `nearest_int` as the
float trick it is, and C's float -> integer truncation. Each format has

* a readable numpy reference (`<fmt>_quantize_ref` / `<fmt>_dequantize_ref`), vectorised over blocks but
  with every sum accumulated sequentially as the C loop does, and
* a numba kernel (`parallel=True`, `prange` over rows), tested for exact equality with the reference;
  the `QuantFormat` classmethods call the numba kernels.

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

import numpy as np
from gguf import GGMLQuantizationType as T
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .registry import QuantFormat

F32 = np.float32
GROUP_MAX_EPS = np.float32(1e-15)

# ================================================================================================
# Shared scalar numerics (numba)
# ================================================================================================


@intrinsic
def f32_as_u32(typingctx, x):
    """Reinterpret a float32's bits as uint32 (C's memcpy)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@intrinsic
def u32_as_f32(typingctx, x):
    """Reinterpret uint32 bits as a float32."""
    if x != types.uint32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@njit(cache=True, inline="always")
def nearest_int(fval):
    """llama.cpp's nearest_int: add 1.5 * 2**23 and read the mantissa (round half to even)."""
    val = fval + np.float32(12582912.0)
    i = np.int64(f32_as_u32(val))
    return (i & 0x007FFFFF) - 0x00400000


@njit(cache=True, inline="always")
def clamped_level(v, lo, hi):
    """min(hi, max(lo, nearest_int(v))) as a float32, through rint where that is the same (|v| < 2^22):
    it keeps the K-quant searches free of int <-> float conversions. Inf, NaN and huge v (an infinite
    scale on subnormal blocks) take nearest_int's bit trick, whose result there is not rint's."""
    if abs(v) < np.float32(4194304.0):
        r = np.rint(v)
    else:
        r = np.float32(nearest_int(v))
    return min(hi, max(lo, r))


@njit(cache=True, inline="always")
def fp32_to_fp16(f):
    """ggml_compute_fp32_to_fp16, bit for bit: round to nearest even, NaN -> 0x7E00."""
    base = (abs(f) * np.float32(5.192296858534828e+33)) * np.float32(7.703719777548943e-34)  # 2^112, 2^-110
    w = np.int64(f32_as_u32(f))
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = u32_as_f32(np.uint32((bias >> 1) + 0x07800000)) + base
    bits = np.int64(f32_as_u32(base))
    exp_bits = (bits >> 13) & 0x00007C00
    mantissa_bits = bits & 0x00000FFF
    nonsign = exp_bits + mantissa_bits
    if shl1_w > 0xFF000000:
        nonsign = 0x7E00
    return (sign >> 16) | nonsign


@njit(cache=True, inline="always")
def fp16_to_fp32(h):
    """Exact fp16 -> float32 from the 16 bits."""
    h = np.int64(h)
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = np.float32(m) * np.float32(5.960464477539063e-08)  # 2^-24, exact
        return -v if sign else v
    if e == 31:
        return u32_as_f32(np.uint32(sign | 0x7F800000 | (m << 13)))
    return u32_as_f32(np.uint32(sign | ((e + 112) << 23) | (m << 13)))


@njit(cache=True, inline="always")
def fp16_round(f):
    """float32 -> fp16 -> float32, as GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(f))."""
    return fp16_to_fp32(fp32_to_fp16(f))


@njit(cache=True, inline="always")
def put_f16(out, o, f):
    h = fp32_to_fp16(f)
    out[o] = h & 0xFF
    out[o + 1] = (h >> 8) & 0xFF
    return h


@njit(cache=True, inline="always")
def get_f16(buf, o):
    return fp16_to_fp32(np.int64(buf[o]) | (np.int64(buf[o + 1]) << 8))


@njit(cache=True, inline="always")
def c_trunc_int(v):
    """C's (int) of a float on x86 (cvttss2si): truncation; NaN and out-of-range give INT_MIN."""
    if not (abs(v) < np.float32(2147483648.0)):
        return -2147483648
    return np.int64(v)


@njit(cache=True, inline="always")
def c_to_int8(v):
    """C's (int8_t) of a float: truncate to int32, keep the low byte, read it signed."""
    t = c_trunc_int(v) & 0xFF
    return t - 256 if t >= 128 else t


@njit(cache=True, inline="always")
def c_roundf(v):
    """roundf: half away from zero (exact: v - trunc(v) is representable)."""
    if not (abs(v) < np.float32(8388608.0)):
        return v
    t = np.float32(np.int64(v))
    if abs(v - t) >= np.float32(0.5):
        t = t + (np.float32(1.0) if v > np.float32(0.0) else np.float32(-1.0))
    return t


@njit(cache=True)
def row_sigma2(x, n):
    """sum(x^2)/n over a whole row, accumulated in order (the legacy _impl quantizers' sigma2)."""
    s = np.float32(0.0)
    for j in range(n):
        s += x[j] * x[j]
    return s / np.float32(n)


@njit(cache=True, inline="always")
def make_qx_quants(n, nmax, x, xo, L, lo, rmse_type, qw, qwo, use_qw, w):
    """make_qx_quants for rmse_type >= 0 (the only ones these formats use). L[lo + i] in [0, 2*nmax).
    `w` is scratch for the n weights (qw[qwo:qwo+n] or the rmse_type weights of x)."""
    mx = np.float32(0.0)
    amax = np.float32(0.0)
    for i in range(n):
        ax = abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[lo + i] = 0
        return np.float32(0.0)
    iscale = np.float32(-nmax) / mx
    if rmse_type == 0:
        for i in range(n):
            l = nearest_int(iscale * x[xo + i])
            L[lo + i] = nmax + max(-nmax, min(nmax - 1, l))
        return np.float32(1.0) / iscale
    for i in range(n):
        xi = x[xo + i]
        if use_qw:
            w[i] = qw[qwo + i]
        elif rmse_type == 1:
            w[i] = xi * xi
        elif rmse_type == 2:
            w[i] = np.float32(1.0)
        elif rmse_type == 3:
            w[i] = abs(xi)
        else:
            w[i] = np.sqrt(abs(xi))
    lo_l = np.float32(-nmax)
    hi_l = np.float32(nmax - 1)
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        xi = x[xo + i]
        fl = clamped_level(iscale * xi, lo_l, hi_l)
        L[lo + i] = np.int32(fl) + nmax
        sumlx += w[i] * xi * fl
        suml2 += w[i] * fl * fl
    scale = sumlx / suml2 if suml2 != np.float32(0.0) else np.float32(0.0)
    best = scale * sumlx
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = -(np.float32(nmax) + np.float32(0.1) * np.float32(is_)) / mx
        sumlx = np.float32(0.0)
        suml2 = np.float32(0.0)
        for i in range(n):
            xi = x[xo + i]
            fl = clamped_level(iscale * xi, lo_l, hi_l)
            sumlx += w[i] * xi * fl
            suml2 += w[i] * fl * fl
        if suml2 > np.float32(0.0) and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[lo + i] = np.int32(clamped_level(iscale * x[xo + i], lo_l, hi_l)) + nmax
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(cache=True, inline="always")
def make_qkx_quants(n, nmax, x, xo, weights, wo, L, lo, Laux, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants / make_qkx3_quants with explicit weights (they are the same code then).
    Laux: float32 scratch of n.

    The levels are computed in float (clamped_level: ~30% faster; the search is bound by the latency
    of its float sums, 21 or 37 passes over each block).
    Returns (scale, the_min) where the_min = -min >= 0."""
    mn = x[xo]
    mx = x[xo]
    sum_w = weights[wo]
    sum_x = sum_w * x[xo]
    for i in range(1, n):
        xi = x[xo + i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        w = weights[wo + i]
        sum_w += w
        sum_x += w * xi
    if mn > np.float32(0.0):
        mn = np.float32(0.0)
    if mx <= mn:  # qkx2 tests max == min; with min <= max the two agree
        for i in range(n):
            L[lo + i] = 0
        return np.float32(0.0), -mn
    fnmax = np.float32(nmax)
    zero = np.float32(0.0)
    iscale = fnmax / (mx - mn)
    scale = np.float32(1.0) / iscale
    best_error = np.float32(0.0)
    for i in range(n):
        fl = clamped_level(iscale * (x[xo + i] - mn), zero, fnmax)
        L[lo + i] = np.int32(fl)
        diff = scale * fl + mn - x[xo + i]
        diff = abs(diff) if use_mad else diff * diff
        best_error += weights[wo + i] * diff
    if nstep < 1:
        return scale, -mn
    for is_ in range(nstep + 1):
        iscale = (rmin + rdelta * np.float32(is_) + fnmax) / (mx - mn)
        sum_l = np.float32(0.0)
        sum_l2 = np.float32(0.0)
        sum_xl = np.float32(0.0)
        for i in range(n):
            xi = x[xo + i]
            fl = clamped_level(iscale * (xi - mn), zero, fnmax)
            Laux[i] = fl
            w = weights[wo + i]
            sum_l += w * fl
            sum_l2 += w * fl * fl
            sum_xl += w * fl * xi
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > np.float32(0.0):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > np.float32(0.0):
                this_min = np.float32(0.0)
                this_scale = sum_xl / sum_l2
            cur_error = np.float32(0.0)
            for i in range(n):
                diff = this_scale * Laux[i] + this_min - x[xo + i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += weights[wo + i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[lo + i] = np.int32(Laux[i])
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn




def f16_to_f32_rows(src, dst):
    """fp16 bits [n, k] -> float32 [n, k], exact; returns how many values were Inf or NaN. Parallel over
    rows: the first touch of the input's pages (page faults on the mapped file) is half its time."""
    return _f16_to_f32_rows(src, dst.view(np.uint32))


@njit(parallel=True, cache=True)
def _f16_to_f32_rows(src, dst):
    # Written so that LLVM vectorizes it (a 65536-entry table lookup is a gather, 4x slower): the half's
    # exponent and mantissa bits, shifted into float32's place, read as a float32 and scaled by 2^112,
    # are the value exactly, subnormals included; Inf/NaN only need their exponent set to all ones.
    # Every step stays in uint32: numba widens mixed integer arithmetic to 64 bits, which AVX2 cannot
    # convert to float.
    n, k = src.shape
    c = 0
    for r in prange(n):
        s = src[r]
        d = dst[r]
        cr = 0
        for j in range(k):
            h = np.uint32(s[j])
            em = np.uint32(np.uint32(h & np.uint32(0x7FFF)) << np.uint32(13))
            special = em >= np.uint32(0x0F800000)
            cr += special
            v = f32_as_u32(u32_as_f32(em) * np.float32(5.192296858534828e+33))
            d[j] = np.uint32(em + np.uint32(0x70000000) if special else v) | \
                np.uint32(np.uint32(h & np.uint32(0x8000)) << np.uint32(16))
        c += cr
    return c


@njit(cache=True)
def count_nonfinite(x):
    """How many values of the float32 [n, k] array are Inf or NaN."""
    n, k = x.shape
    c = 0
    for r in range(n):
        for j in range(k):
            c += (f32_as_u32(x[r, j]) & 0x7F800000) == 0x7F800000
    return c


# ================================================================================================
# Shared numpy helpers (reference implementations)
# ================================================================================================

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


# ================================================================================================
# Numpy references
# ================================================================================================

def q4_0_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    if imatrix is not None:
        w = _weighted_blocks(rows.reshape(nrows, -1), imatrix, 32)
        d, L = np_make_qx_quants(8, x, 1, w)
        return _out([np_fp16_bits(d)[:, None], _pack_nibbles(L.astype(np.int64))], nrows)
    mx, _ = np_absmax_signed(x)
    d = (mx / F32(-8)).astype(F32)
    idv = np_safe_recip(d)
    with np.errstate(invalid="ignore", over="ignore"):
        v = ((x * idv[:, None]).astype(F32) + F32(8.5)).astype(F32)
    xi = np.minimum(15, np_c_to_int8(v)) & 0xFF
    return _out([np_fp16_bits(d)[:, None], _pack_nibbles(xi)], nrows)


def q4_1_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    if imatrix is not None:
        w = _weighted_blocks(rows.reshape(nrows, -1), imatrix, 32)
        d, the_min, L = np_make_qkx_quants(15, x, w, -0.9, 0.05, 36)
        return _out([np_fp16_bits(d)[:, None], np_fp16_bits(-the_min)[:, None], _pack_nibbles(L)], nrows)
    mn = np_first_min(x)
    mx = np_first_max(x)
    d = ((mx - mn) / F32(15)).astype(F32)
    idv = np_safe_recip(d)
    with np.errstate(invalid="ignore", over="ignore"):
        v = (((x - mn[:, None]).astype(F32) * idv[:, None]).astype(F32) + F32(0.5)).astype(F32)
    xi = np.minimum(15, np_c_to_int8(v)) & 0xFF
    return _out([np_fp16_bits(d)[:, None], np_fp16_bits(mn)[:, None], _pack_nibbles(xi)], nrows)


def q5_0_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    if imatrix is not None:
        w = _weighted_blocks(rows.reshape(nrows, -1), imatrix, 32)
        d, L = np_make_qx_quants(16, x, 1, w)
        xi = L.astype(np.int64) & 0xFF
    else:
        mx, _ = np_absmax_signed(x)
        d = (mx / F32(-16)).astype(F32)
        idv = np_safe_recip(d)
        with np.errstate(invalid="ignore", over="ignore"):
            v = ((x * idv[:, None]).astype(F32) + F32(16.5)).astype(F32)
        xi = np.minimum(31, np_c_to_int8(v)) & 0xFF
    return _out([np_fp16_bits(d)[:, None], _pack_qh(xi), _pack_nibbles(xi & 0x0F)], nrows)


def q5_1_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    if imatrix is not None:
        w = _weighted_blocks(rows.reshape(nrows, -1), imatrix, 32)
        d, the_min, L = np_make_qkx_quants(31, x, w, -0.9, 0.05, 36)
        m = (-the_min).astype(F32)
        xi = L.astype(np.int64)
    else:
        m = np_first_min(x)
        mx = np_first_max(x)
        d = ((mx - m) / F32(31)).astype(F32)
        idv = np_safe_recip(d)
        with np.errstate(invalid="ignore", over="ignore"):
            v = (((x - m[:, None]).astype(F32) * idv[:, None]).astype(F32) + F32(0.5)).astype(F32)
        xi = np_c_trunc_int(v) & 0xFF  # (uint8_t)(x0 + 0.5f)
    return _out([np_fp16_bits(d)[:, None], np_fp16_bits(m)[:, None], _pack_qh(xi), _pack_nibbles(xi & 0x0F)],
                nrows)


def q8_0_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    amax = np.abs(x).max(axis=1)
    d = (amax / F32(127)).astype(F32)
    idv = np_safe_recip(d)
    with np.errstate(invalid="ignore", over="ignore"):
        q = np_c_to_int8(np_c_roundf((x * idv[:, None]).astype(F32)))
    return _out([np_fp16_bits(d)[:, None], q.astype(np.int8)], nrows)


def _split(data, type_size):
    data = np.ascontiguousarray(data, dtype=np.uint8)
    lead = data.shape[:-1]
    nb = data.shape[-1] // type_size
    return data.reshape(-1, type_size), lead, nb


def _unnibble(qs):
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int64)


def _unqh(qh4):
    qh = qh4.copy().view("<u4")[:, 0].astype(np.int64)
    return (qh[:, None] >> np.arange(32)) & 1


def q4_0_dequantize_ref(data):
    b, lead, nb = _split(data, 18)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    y = ((_unnibble(b[:, 2:]) - 8).astype(F32) * d[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


def q4_1_dequantize_ref(data):
    b, lead, nb = _split(data, 20)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    m = np_fp16_to_f32(b[:, 2:4].copy().view("<u2")[:, 0])
    y = ((_unnibble(b[:, 4:]).astype(F32) * d[:, None]).astype(F32) + m[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


def q5_0_dequantize_ref(data):
    b, lead, nb = _split(data, 22)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    q = _unnibble(b[:, 6:]) | (_unqh(b[:, 2:6]) << 4)
    y = ((q - 16).astype(F32) * d[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


def q5_1_dequantize_ref(data):
    b, lead, nb = _split(data, 24)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    m = np_fp16_to_f32(b[:, 2:4].copy().view("<u2")[:, 0])
    q = _unnibble(b[:, 8:]) | (_unqh(b[:, 4:8]) << 4)
    y = ((q.astype(F32) * d[:, None]).astype(F32) + m[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


def q8_0_dequantize_ref(data):
    b, lead, nb = _split(data, 34)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    y = (b[:, 2:].view(np.int8).astype(F32) * d[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


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
                                             np.float32(-0.9), np.float32(0.05), 36, False)
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
                                             np.float32(-0.9), np.float32(0.05), 36, False)
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


@njit(parallel=True, cache=True)
def dequantize_q4_0_nb(b, y):
    for i in prange(b.shape[0]):
        d = get_f16(b[i], 0)
        for j in range(16):
            q = np.int64(b[i, 2 + j])
            y[i, j] = np.float32((q & 0x0F) - 8) * d
            y[i, j + 16] = np.float32((q >> 4) - 8) * d


@njit(parallel=True, cache=True)
def dequantize_q4_1_nb(b, y):
    for i in prange(b.shape[0]):
        d = get_f16(b[i], 0)
        m = get_f16(b[i], 2)
        for j in range(16):
            q = np.int64(b[i, 4 + j])
            y[i, j] = np.float32(q & 0x0F) * d + m
            y[i, j + 16] = np.float32(q >> 4) * d + m


@njit(parallel=True, cache=True)
def dequantize_q5_0_nb(b, y):
    for i in prange(b.shape[0]):
        d = get_f16(b[i], 0)
        qh = (np.int64(b[i, 2]) | (np.int64(b[i, 3]) << 8) | (np.int64(b[i, 4]) << 16)
              | (np.int64(b[i, 5]) << 24))
        for j in range(16):
            q = np.int64(b[i, 6 + j])
            y[i, j] = np.float32(((q & 0x0F) | (((qh >> j) << 4) & 0x10)) - 16) * d
            y[i, j + 16] = np.float32(((q >> 4) | ((qh >> (j + 12)) & 0x10)) - 16) * d


@njit(parallel=True, cache=True)
def dequantize_q5_1_nb(b, y):
    for i in prange(b.shape[0]):
        d = get_f16(b[i], 0)
        m = get_f16(b[i], 2)
        qh = (np.int64(b[i, 4]) | (np.int64(b[i, 5]) << 8) | (np.int64(b[i, 6]) << 16)
              | (np.int64(b[i, 7]) << 24))
        for j in range(16):
            q = np.int64(b[i, 8 + j])
            y[i, j] = np.float32((q & 0x0F) | (((qh >> j) << 4) & 0x10)) * d + m
            y[i, j + 16] = np.float32((q >> 4) | ((qh >> (j + 12)) & 0x10)) * d + m


@njit(parallel=True, cache=True)
def dequantize_q8_0_nb(b, y):
    for i in prange(b.shape[0]):
        d = get_f16(b[i], 0)
        for j in range(32):
            q = np.int64(b[i, 2 + j])
            if q >= 128:
                q -= 256
            y[i, j] = np.float32(q) * d


# ================================================================================================
# Registry entries
# ================================================================================================

_EMPTY_QW = np.zeros(0, dtype=np.float32)


def prepare_rows(cls, rows, imatrix):
    """Common argument handling: float32 C-contiguous [n, k] rows, an imatrix of k floats or None."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[None]
    if rows.ndim != 2:
        rows = rows.reshape(-1, rows.shape[-1])
    k = rows.shape[1]
    cls.row_bytes(k)  # raises on a partial block
    if imatrix is None:
        return rows, _EMPTY_QW, False
    qw = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
    if qw.shape[0] != k:
        raise ValueError(f"{cls.name}: importance matrix has {qw.shape[0]} values for rows of {k}")
    return rows, qw, True


def dequant_blocks(cls, data, kernel):
    data = np.ascontiguousarray(data, dtype=np.uint8)
    lead = data.shape[:-1]
    nb = data.shape[-1] // cls.type_size
    b = data.reshape(-1, cls.type_size)
    y = np.empty((b.shape[0], cls.block_size), dtype=np.float32)
    if b.shape[0]:
        kernel(b, y)
    return y.reshape(*lead, nb * cls.block_size)


class _Legacy(QuantFormat):
    _kernel = None
    _dekernel = None
    _ref = None
    _deref = None
    uses_imatrix = True

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        rows, qw, use = prepare_rows(cls, rows, imatrix)
        out = cls.output_rows(rows.shape[0], rows.shape[1], out)
        if rows.shape[0]:
            cls._kernel(rows, qw, use, out)
        return out

    @classmethod
    def dequantize(cls, data):
        return dequant_blocks(cls, data, cls._dekernel)

    @classmethod
    def quantize_ref(cls, rows, imatrix=None):
        with np.errstate(all="ignore"):  # the C code divides by zero and overflows in the same places
            return cls._ref(np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, np.shape(rows)[-1]), imatrix)

    @classmethod
    def dequantize_ref(cls, data):
        with np.errstate(all="ignore"):
            return cls._deref(data)


class Q4_0(_Legacy, qtype=T.Q4_0):
    _kernel = staticmethod(quantize_q4_0_nb)
    _dekernel = staticmethod(dequantize_q4_0_nb)
    _ref = staticmethod(q4_0_quantize_ref)
    _deref = staticmethod(q4_0_dequantize_ref)


class Q4_1(_Legacy, qtype=T.Q4_1):
    _kernel = staticmethod(quantize_q4_1_nb)
    _dekernel = staticmethod(dequantize_q4_1_nb)
    _ref = staticmethod(q4_1_quantize_ref)
    _deref = staticmethod(q4_1_dequantize_ref)


class Q5_0(_Legacy, qtype=T.Q5_0):
    _kernel = staticmethod(quantize_q5_0_nb)
    _dekernel = staticmethod(dequantize_q5_0_nb)
    _ref = staticmethod(q5_0_quantize_ref)
    _deref = staticmethod(q5_0_dequantize_ref)


class Q5_1(_Legacy, qtype=T.Q5_1):
    _kernel = staticmethod(quantize_q5_1_nb)
    _dekernel = staticmethod(dequantize_q5_1_nb)
    _ref = staticmethod(q5_1_quantize_ref)
    _deref = staticmethod(q5_1_dequantize_ref)


class Q8_0(_Legacy, qtype=T.Q8_0):
    uses_imatrix = False  # quantize_q8_0 ignores quant_weights
    _dekernel = staticmethod(dequantize_q8_0_nb)
    _ref = staticmethod(q8_0_quantize_ref)
    _deref = staticmethod(q8_0_dequantize_ref)

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        rows, _, _ = prepare_rows(cls, rows, None)
        out = cls.output_rows(rows.shape[0], rows.shape[1], out)
        if rows.shape[0]:
            quantize_q8_0_nb(rows, out)
        return out
