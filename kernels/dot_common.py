"""What every runtime dot-product kernel shares: fp16 conversion and activation quantization.

llama.cpp never multiplies quantized weights by float activations: it first quantizes the activations
to 8 bits per block (its `vec_dot_type`) and takes integer dot products. We do the same:

    kind "q8_32"  blocks of 32: int8 values, a scale d (rounded through fp16, as block_q8_0/q8_1 store
                  it) and s = d * sum(q) (block_q8_1's second field, used by the formats with a minimum)
    kind "q8_k"   blocks of 256: int8 values, a float32 scale d and the sums of each 16 values (bsums)
    kind "f32"    float weights: the activations stay float32

Every kernel of one kind has the same signature, so the runtime calls them all the same way:

    matmul(w, act.xf, act.xq, act.xd, act.xs, out)   w: weight rows as stored (uint8[rows, row_bytes],
                                                     float32 or uint16 [rows, k]); out: float32[T, rows]
    dequant(w, r0, r1, out)                          rows r0..r1 of w as float32 into out[r1 - r0, k]

A format's kernels are its registry class's `dot` (registry.DotKernels).
"""
from __future__ import annotations

import mmap
import platform

import numba as nb
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _host_features() -> str:
    """LLVM's feature string of the CPU numba compiles for ("+avx2,+avx512vnni,..."): the host's, unless
    NUMBA_CPU_FEATURES names another target (with NUMBA_CPU_NAME), so that the instructions our IR asks
    for are the ones the target has: tools/isa.sh runs the AVX2 or the portable paths on any x86 host."""
    from numba.core import config
    if config.CPU_FEATURES is not None:
        return config.CPU_FEATURES
    try:
        return llvm_binding.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - unknown host
        return ""


HOST_FEATURES = _host_features()

# ---- fp16 <-> fp32, one instruction each with F16C ------------------------------------------------
# Without F16C (x86-64 before Ivy Bridge, Atom-class Celerons) LLVM lowers `half` conversions to calls of
# __extendhfsf2 / __truncsfhf2, which numba's JIT cannot resolve (it aborts): there they are integer code.
SOFT_HALF = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") and "+f16c" not in HOST_FEATURES


def half_to_float(builder, h, soft=SOFT_HALF):
    """An i16 of IEEE half bits -> float (exact). soft: in integer operations: the exponent and mantissa
    moved into a float's places and scaled by 2^112 (which makes subnormals right too), Inf/NaN kept."""
    if not soft:
        return builder.fpext(builder.bitcast(h, ir.HalfType()), ir.FloatType())
    i32, c = ir.IntType(32), (lambda v: ir.Constant(ir.IntType(32), v))  # noqa: E731
    u = builder.zext(h, i32)
    body = builder.shl(builder.and_(u, c(0x7FFF)), c(13))
    scaled = builder.fmul(builder.bitcast(body, ir.FloatType()), ir.Constant(ir.FloatType(), 2.0 ** 112))
    special = builder.icmp_unsigned(">=", body, c(0x0F800000))          # exponent 31: Inf or NaN
    bits = builder.select(special, builder.or_(body, c(0x70000000)), builder.bitcast(scaled, i32))
    sign = builder.shl(builder.and_(u, c(0x8000)), c(16))
    return builder.bitcast(builder.or_(bits, sign), ir.FloatType())


def float_to_half(builder, x, soft=SOFT_HALF):
    """A float -> i16 of IEEE half bits, rounded to nearest even (F16C's and numpy's). soft: in integer
    operations (F. Giesen's float_to_half_fast3_rtne): subnormal results by adding 0.5, normal ones by
    rounding the 13 dropped bits, overflow to Inf, NaN kept quiet."""
    if not soft:
        return builder.bitcast(builder.fptrunc(x, ir.HalfType()), ir.IntType(16))
    i32, f = ir.IntType(32), ir.FloatType()
    c = lambda v: ir.Constant(i32, v)  # noqa: E731
    u = builder.bitcast(x, i32)
    sign = builder.and_(builder.lshr(u, c(16)), c(0x8000))
    a = builder.and_(u, c(0x7FFFFFFF))
    inf_nan = builder.select(builder.icmp_unsigned(">", a, c(0x7F800000)), c(0x7E00), c(0x7C00))
    sub = builder.sub(builder.bitcast(builder.fadd(builder.bitcast(a, f), ir.Constant(f, 0.5)), i32),
                      c(0x3F000000))
    odd = builder.and_(builder.lshr(a, c(13)), c(1))
    norm = builder.lshr(builder.add(builder.add(a, c(((15 - 127) << 23) + 0xFFF)), odd), c(13))
    r = builder.select(builder.icmp_unsigned("<", a, c(0x38800000)), sub, norm)
    r = builder.select(builder.icmp_unsigned(">=", a, c(0x47800000)), inf_nan, r)
    return builder.trunc(builder.or_(r, sign), ir.IntType(16))


def low16(builder, v, ty):
    """The low 16 bits of an integer value of numba type `ty`, as an LLVM i16."""
    if ty.bitwidth == 16:
        return v
    return builder.trunc(v, ir.IntType(16)) if ty.bitwidth > 16 else builder.zext(v, ir.IntType(16))


@intrinsic
def f16_to_f32(typingctx, h):
    """The low 16 bits of an integer, read as an IEEE half -> float32 (exact)."""
    if isinstance(h, types.Integer):
        return types.float32(h), lambda context, builder, signature, args: half_to_float(
            builder, low16(builder, args[0], h))


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma.f32), for the places where llama.cpp's build fuses a multiply-add
    (GCC contracts `x*y + z` in ggml-cpu, which is compiled with -march=native)."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        mod = builder.module
        try:
            fn = mod.get_global("llvm.fma.f32")
        except KeyError:
            fn = ir.Function(mod, ir.FunctionType(f, [f, f, f]), name="llvm.fma.f32")
        return builder.call(fn, list(args))
    return types.float32(a, b, c), codegen


@intrinsic
def f32_to_f16(typingctx, x):
    """float32 -> uint16 bits of an IEEE half, rounded to nearest even (what F16C and ggml do)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return float_to_half(builder, args[0])

    return types.uint16(x), codegen


def _to_i32(builder, v, ty):
    if ty.bitwidth == 32:
        return v
    if ty.bitwidth > 32:
        return builder.trunc(v, ir.IntType(32))
    return builder.sext(v, ir.IntType(32)) if ty.signed else builder.zext(v, ir.IntType(32))


@intrinsic
def mac(typingctx, acc, a, b):
    """acc + a * b in int32 arithmetic (numba would widen every step to int64, which LLVM then cannot
    pack into 32-bit SIMD lanes). Each argument is first truncated or extended to int32."""
    if not all(isinstance(t, types.Integer) for t in (acc, a, b)):
        return None

    def codegen(context, builder, signature, args):
        x = _to_i32(builder, args[1], a)
        y = _to_i32(builder, args[2], b)
        return builder.add(_to_i32(builder, args[0], acc), builder.mul(x, y, flags=["nsw"]), flags=["nsw"])

    return types.int32(acc, a, b), codegen


@nb.njit(inline="always")
def load_f16(w, r, o):
    """The fp16 stored little-endian at bytes o, o+1 of row r of a uint8 array, as float32."""
    return f16_to_f32(np.uint32(w[r, o]) | (np.uint32(w[r, o + 1]) << np.uint32(8)))


# ---- activation quantization ----------------------------------------------------------------------


@nb.njit(inline="always")
def _q8_32_scale(x, t, o):
    """Block x[t, o:o+32] of a Q8 block of 32: (d, 1/d) from its largest magnitude, 1/d = 0 for a zero block."""
    amax = np.float32(0.0)
    for j in range(32):
        a = abs(x[t, o + j])
        if a > amax:
            amax = a
    return amax / np.float32(127.0), (np.float32(127.0) / amax if amax > 0 else np.float32(0.0))


@nb.njit(inline="always")
def _q8_k_scale(x, t, o):
    """Block x[t, o:o+256] of Q8_K: the value of largest magnitude (its sign sets the scale's), 0 if none."""
    amax = np.float32(0.0)
    mx = np.float32(0.0)
    for j in range(256):
        a = abs(x[t, o + j])
        if a > amax:
            amax = a
            mx = x[t, o + j]
    return mx


@nb.njit(cache=True)
def quantize_q8_32(x, xq, xd, xs):
    """(One thread: used for a handful of tokens.)
    x float32[T, k] -> xq int8[T, k], xd/xs float32[T, k/32]: llama.cpp's quantize_row_q8_1
    (Q8_0 is the same values without s). The scale is stored through fp16, as the block does."""
    T, k = x.shape
    for t in nb.prange(T):
        for b in range(k // 32):
            o = b * 32
            d, idn = _q8_32_scale(x, t, o)
            s = 0
            for j in range(32):
                q = np.int32(np.round(x[t, o + j] * idn))
                xq[t, o + j] = q
                s += q
            xd[t, b] = f16_to_f32(f32_to_f16(d))
            xs[t, b] = f16_to_f32(f32_to_f16(d * np.float32(s)))


@nb.njit(cache=True)
def quantize_q8_k(x, xq, xd, xs):
    """x float32[T, k] -> xq int8[T, k], xd float32[T, k/256], xs int32[T, k/16] (bsums):
    llama.cpp's quantize_row_q8_K (scale from the signed value of largest magnitude)."""
    T, k = x.shape
    for t in nb.prange(T):
        for b in range(k // 256):
            o = b * 256
            mx = _q8_k_scale(x, t, o)
            if mx == 0:
                xd[t, b] = 0
                for j in range(256):
                    xq[t, o + j] = 0
                for j in range(16):
                    xs[t, b * 16 + j] = 0
                continue
            iscale = np.float32(-127.0) / mx
            for g in range(16):
                s = 0
                for j in range(16):
                    q = np.int32(np.round(iscale * x[t, o + g * 16 + j]))
                    if q > 127:
                        q = 127
                    xq[t, o + g * 16 + j] = q
                    s += q
                xs[t, b * 16 + g] = s
            xd[t, b] = np.float32(1.0) / iscale


@nb.njit(inline="always")
def _fake_q8_32_block(x, out, t, o):
    d, idn = _q8_32_scale(x, t, o)
    d = f16_to_f32(f32_to_f16(d))
    for j in range(32):
        out[t, o + j] = np.round(x[t, o + j] * idn) * d


@nb.njit(inline="always")
def _fake_q8_k_block(x, out, t, o):
    mx = _q8_k_scale(x, t, o)
    if mx == 0:
        for j in range(256):
            out[t, o + j] = 0
        return
    iscale = np.float32(-127.0) / mx
    d = np.float32(1.0) / iscale
    for j in range(256):
        q = np.round(iscale * x[t, o + j])
        if q > 127:
            q = np.float32(127.0)
        out[t, o + j] = q * d


@nb.njit(cache=True, parallel=True)
def fake_quant(x, out, qk):
    """x rounded the way quantize_q8_32 (qk = 32) or quantize_q8_k (qk = 256) rounds it, back in float32:
    the BLAS batch path multiplies these, so its numbers are the integer kernels' (to float rounding)."""
    T, k = x.shape
    for t in nb.prange(T):
        for o in range(0, k, qk):
            if qk == 32:
                _fake_q8_32_block(x, out, t, o)
            else:
                _fake_q8_k_block(x, out, t, o)


def lazy_zeros(shape, dtype) -> np.ndarray:
    """np.zeros in fresh anonymous pages (a private mapping) for a buffer a run may never fill: only the
    pages it touches count in the process's memory. (np.zeros's calloc gives that only above glibc's
    mmap threshold, which rises to 32 MB once a large block is freed: a 1B model's 120 MB of batch
    buffers then took 35 MB of RSS before any batch ran.)"""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if n < 1 << 16:
        return np.zeros(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, n), dtype=dtype).reshape(shape)


class Activations:
    """One activation matrix x[T, k] in the form a kind of kernel wants, buffers reused between calls."""

    def __init__(self, kind: str, T: int, k: int):
        self.kind, self.k = kind, k
        self.xf = lazy_zeros((T, k), np.float32)
        if kind == "q8_32":
            self.xq = lazy_zeros((T, k), np.int8)
            self.xd = lazy_zeros((T, k // 32), np.float32)
            self.xs = lazy_zeros((T, k // 32), np.float32)
        elif kind == "q8_k":
            self.xq = lazy_zeros((T, k), np.int8)
            self.xd = lazy_zeros((T, k // 256), np.float32)
            self.xs = lazy_zeros((T, k // 16), np.int32)
        else:
            self.xq = np.zeros((T, 0), np.int8)
            self.xd = self.xs = np.zeros((T, 0), np.float32)

    def set(self, x: np.ndarray) -> "Activations":
        """Quantize x[T, k] (T <= capacity); returns a view object sized to T."""
        T = x.shape[0]
        v = _View(self, T)
        if self.kind == "q8_32":
            quantize_q8_32(x, v.xq, v.xd, v.xs)
        elif self.kind == "q8_k":
            quantize_q8_k(x, v.xq, v.xd, v.xs)
        v.xf = x
        return v


class _View:
    __slots__ = ("kind", "xf", "xq", "xd", "xs")

    def __init__(self, a: Activations, T: int):
        self.kind = a.kind
        self.xf, self.xq, self.xd, self.xs = a.xf[:T], a.xq[:T], a.xd[:T], a.xs[:T]


FAKE_QUANT = {"q8_32": lambda x, out: fake_quant(x, out, 32), "q8_k": lambda x, out: fake_quant(x, out, 256)}
