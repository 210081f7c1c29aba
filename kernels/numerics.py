"""The numerics every quantizer shares, byte-exact with llama.cpp's `ggml-quants.c`: float32 arithmetic in C's
order, no FMA (fastmath off), fp16 rounded to nearest even by the bit trick of `ggml_compute_fp32_to_fp16`,
`nearest_int` as the float trick it is, C's float -> integer truncation, the scale searches
(make_qx_quants, make_qkx_quants), and the argument handling of every format's quantize/dequantize."""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic


F32 = np.float32
GROUP_MAX_EPS = np.float32(1e-15)



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
def make_qkx_quants(n, nmax, x, xo, weights, wo, L, lo, Laux, search, use_mad):
    """make_qkx2_quants / make_qkx3_quants with explicit weights (they are the same code then).
    Laux: float32 scratch of n; search = (rmin, rdelta, nstep), the scale search's start, step and count.

    The levels are computed in float (clamped_level: ~30% faster; the search is bound by the latency
    of its float sums, 21 or 37 passes over each block).
    Returns (scale, the_min) where the_min = -min >= 0."""
    rmin, rdelta, nstep = search
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


# ---- argument handling shared by the formats' classes ----------------------------------------------

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


class BlockFormat:
    """What the quantized formats' registry classes share (mixed in before registry.QuantFormat):
    `_kernel` the numba quantizer, `_kernel(rows, qw, use_qw, out)`, or `_kernel(rows, out)` when the format
    ignores the importance matrix (uses_imatrix False, as llama.cpp's Q8_0 and Q8_K do); `_ref` and `_deref`
    the numpy references."""
    _kernel = None
    _ref = None
    _deref = None
    uses_imatrix = True

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        rows, qw, use = prepare_rows(cls, rows, imatrix if cls.uses_imatrix else None)
        out = cls.output_rows(rows.shape[0], rows.shape[1], out)
        if rows.shape[0]:
            if cls.uses_imatrix:
                cls._kernel(rows, qw, use, out)
            else:
                cls._kernel(rows, out)
        return out

    @classmethod
    def quantize_ref(cls, rows, imatrix=None):
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        with np.errstate(all="ignore"):  # the C code divides by zero and overflows in the same places
            return cls._ref(rows.reshape(-1, rows.shape[-1]), imatrix)

    @classmethod
    def dequantize_ref(cls, data):
        with np.errstate(all="ignore"):
            return cls._deref(data)
