"""The runtime's non-matmul layer operations, compiled with numba: one call per layer op.

Every function works on a batch of T token rows and writes into preallocated buffers. The element-wise
ops run on one thread (for one token a parallel region costs more than the work; the decode step calls
them inside its own parallel region) and have `_batch` twins, the same row code over the rows in
parallel, which the batch forward takes (`for_tokens`); the matrix products and attention are parallel. The numerics
follow ggml's CPU backend where it matters for matching llama.cpp: RMS norm sums in float64, GELU goes
through fp16 (ggml's table), the KV cache is fp16 by default.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ggufq.kernels.dot_common import f16_to_f32, f32_to_f16, float_to_half, fma32, half_to_float  # noqa: F401
from ggufq.kernels.numerics import f32_as_u32, u32_as_f32

f32 = np.float32


@intrinsic
def kv_to_f32(typingctx, v):
    """A KV-cache element as float32: uint16 holds fp16 bits, float32 passes through."""
    if isinstance(v, types.Integer) and v.bitwidth == 16:
        def codegen(context, builder, signature, args):
            return half_to_float(builder, args[0])
        return types.float32(v), codegen
    if v == types.float32:
        def codegen(context, builder, signature, args):
            return args[0]
        return types.float32(v), codegen
    return None


@intrinsic
def f32_to_kv(typingctx, x, cache):
    """A float32 as a KV-cache element of `cache`'s type: fp16 bits (rounded to nearest even, as numpy's
    float32 -> float16 assignment) for a uint16 cache, itself for a float32 one."""
    if x != types.float32 or not isinstance(cache, types.Array):
        return None
    if cache.dtype == types.uint16:
        def codegen(context, builder, signature, args):
            return float_to_half(builder, args[0])
        return types.uint16(x, cache), codegen
    if cache.dtype == types.float32:
        def codegen(context, builder, signature, args):
            return args[0]
        return types.float32(x, cache), codegen
    return None


@nb.njit(cache=True, inline="always")
def _rmsnorm_row(x, w, eps, out, i):
    ss = 0.0
    for j in range(x.shape[1]):
        ss += np.float64(x[i, j] * x[i, j])
    scale = f32(1.0) / np.sqrt(f32(ss / x.shape[1]) + eps)
    for j in range(x.shape[1]):
        out[i, j] = (x[i, j] * scale) * w[j]


@nb.njit(cache=True)
def rmsnorm(x, w, eps, out):
    """out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, row by row (x, out: [n, d]; may be the same).
    As ggml: each square in float32, summed in float64."""
    for i in range(x.shape[0]):
        _rmsnorm_row(x, w, eps, out, i)


@nb.njit(cache=True, parallel=True)
def rmsnorm_batch(x, w, eps, out):
    for i in nb.prange(x.shape[0]):
        _rmsnorm_row(x, w, eps, out, i)


@nb.njit(cache=True, inline="always")
def _add_rmsnorm_row(x, y, w, eps, out, i):
    ss = 0.0
    for j in range(x.shape[1]):
        v = x[i, j] + y[i, j]
        x[i, j] = v
        ss += np.float64(v * v)
    scale = f32(1.0) / np.sqrt(f32(ss / x.shape[1]) + eps)
    for j in range(x.shape[1]):
        out[i, j] = (x[i, j] * scale) * w[j]


@nb.njit(cache=True)
def add_rmsnorm(x, y, w, eps, out):
    """x += y, then out = rmsnorm(x) * w (the residual add fused with the next norm)."""
    for i in range(x.shape[0]):
        _add_rmsnorm_row(x, y, w, eps, out, i)


@nb.njit(cache=True, parallel=True)
def add_rmsnorm_batch(x, y, w, eps, out):
    for i in nb.prange(x.shape[0]):
        _add_rmsnorm_row(x, y, w, eps, out, i)


@nb.njit(cache=True)
def add_bias(x, b):
    n, d = x.shape
    for i in nb.prange(n):
        for j in range(d):
            x[i, j] += b[j]


@nb.njit(cache=True)
def scale_rows(x, s):
    n, d = x.shape
    for i in nb.prange(n):
        for j in range(d):
            x[i, j] *= s


def rope_table(n_ctx: int, n_rot: int, base: float, freq_scale: float = 1.0,
               freq_factors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [n_ctx, n_rot/2] of theta(p, i) = p * freq_scale * base^(-2i/n_rot) / factor[i],
    computed as ggml's rope cache does, in float32: theta starts at p and is multiplied by
    powf(base, -2/n_rot) once per pair (the rounding of that product chain is part of llama.cpp's numbers),
    and cosf/sinf are the C library's (glibc's sinf is not always correctly rounded; llama.cpp uses it)."""
    f = np.float32
    ff = np.ones(n_rot // 2, np.float32) if freq_factors is None else np.asarray(freq_factors, np.float32)
    cos = np.zeros((n_ctx, n_rot // 2), np.float32)
    sin = np.zeros((n_ctx, n_rot // 2), np.float32)
    _rope_table(f(base), f(-2.0) / f(n_rot), f(freq_scale), ff, freq_factors is not None, cos, sin)
    return cos, sin


@nb.njit(cache=True)
def _rope_table(base, exponent, freq_scale, ff, has_ff, cos, sin):
    theta_scale = math.pow(base, exponent)  # float32: libm's powf, as ggml_compute_forward_rope
    for p in range(cos.shape[0]):
        theta = f32(p)
        for i in range(cos.shape[1]):
            t = freq_scale * (theta / ff[i] if has_ff else theta)
            cos[p, i] = math.cos(t)  # float32 in, float32 out: libm's cosf
            sin[p, i] = math.sin(t)
            theta = theta * theta_scale


@nb.njit(cache=True, inline="always")
def _rope_head(x, idx, n_head, hd, n_rot, pos0, cos, sin, neox):
    t = idx // n_head
    o = (idx % n_head) * hd
    p = pos0 + t
    half = n_rot // 2
    for i in range(half):
        c = cos[p, i]
        s = sin[p, i]
        if neox:
            a = x[t, o + i]
            b = x[t, o + i + half]
            x[t, o + i] = fma32(a, c, -(b * s))
            x[t, o + i + half] = fma32(a, s, b * c)
        else:
            a = x[t, o + 2 * i]
            b = x[t, o + 2 * i + 1]
            x[t, o + 2 * i] = fma32(a, c, -(b * s))
            x[t, o + 2 * i + 1] = fma32(a, s, b * c)


@nb.njit(cache=True)
def rope(x, n_head, hd, n_rot, pos0, cos, sin, neox):
    """Rotate each head of x[T, n_head * hd] in place at positions pos0 + t.

    neox=False ("normal", llama): pairs (2i, 2i+1); neox=True (qwen2/3, gemma3): pairs (i, i + n_rot/2).
    Each output is one product fused into the other's rounded one, as ggml's rotate_pairs compiles
    (vfmsub231ss / vfmadd132ss, and vfmaddsub for the vectorized loop).
    """
    for idx in range(x.shape[0] * n_head):
        _rope_head(x, idx, n_head, hd, n_rot, pos0, cos, sin, neox)


@nb.njit(cache=True, parallel=True)
def rope_batch(x, n_head, hd, n_rot, pos0, cos, sin, neox):
    for idx in nb.prange(x.shape[0] * n_head):
        _rope_head(x, idx, n_head, hd, n_rot, pos0, cos, sin, neox)


# ggml_v_expf's constants (ggml-cpu/vec.h): exp(x) = 2^n * (1 + polynomial(b)), b = x - n*ln2 in two parts
_EXP_SHIFTER = f32(float.fromhex("0x1.8p23"))
_EXP_SHIFTER_BITS = np.int32(0x4B400000)


@nb.njit(cache=True, inline="always")
def _shifted_int(z):
    """z - _EXP_SHIFTER for z = _EXP_SHIFTER + n (|n| < 2^22: the same exponent), exactly n: read from z's
    bits, not subtracted. In a fastmath caller, LLVM may fold fma(x, c, S) - S into x * c (reassociation)
    where it emulates fma (a target without FMA), which drops the rounding to an integer this trick is
    for: e^x came out as 2^n (tools/isa.sh generic: softmax off by 4%)."""
    return f32(np.int32(f32_as_u32(z)) - _EXP_SHIFTER_BITS)
_LOG2E = f32(float.fromhex("0x1.715476p+0"))
_LN2_HI = f32(float.fromhex("0x1.62e4p-1"))
_LN2_LO = f32(float.fromhex("0x1.7f7d1cp-20"))
_EXP_P0 = f32(float.fromhex("0x1.0e4020p-7"))
_EXP_P1 = f32(float.fromhex("0x1.573e2ep-5"))
_EXP_P2 = f32(float.fromhex("0x1.555e66p-3"))
_EXP_P3 = f32(float.fromhex("0x1.fffdb6p-2"))
_EXP_P4 = f32(float.fromhex("0x1.ffffecp-1"))


@nb.njit(cache=True, inline="always")
def _silu_mul_row(gi, ui):
    for j in range(gi.shape[0]):
        x = gi[j]
        y = f32(0.0) - x
        z = fma32(y, _LOG2E, _EXP_SHIFTER)
        m = _shifted_int(z)
        b = fma32(-m, _LN2_LO, fma32(-m, _LN2_HI, y))
        e = np.uint32(f32_as_u32(z) << np.uint32(23))
        k = u32_as_f32(np.uint32(e + np.uint32(0x3F800000)))
        bb = b * b
        p = fma32(fma32(fma32(_EXP_P0, b, _EXP_P1), bb, fma32(_EXP_P2, b, _EXP_P3)), bb, _EXP_P4 * b)
        # 2^n out of float range: ggml's two-factor scaling, or its overflow/underflow value. All three
        # values are computed and one selected (ggml's blends): a branch here kept the loop scalar. In
        # range, the unused values are computed from harmless operands (1.0, 2^127): from the real ones
        # they are denormal for most activations near 0, and every denormal costs a microcode assist
        # (SmolLM2's activations ran 4x slower than random ones).
        far_range = abs(m) > f32(126.0)
        gb = np.uint32(0x82000000) if m <= f32(0.0) and far_range else np.uint32(0)
        s1 = u32_as_f32(np.uint32(gb + np.uint32(0x7F000000)))
        s2 = u32_as_f32(np.uint32(e - gb)) if far_range else f32(1.0)
        far = s1 * s1
        mid = fma32(s2, p, s2) * s1
        near = fma32(p, k, k)
        ex = near if abs(m) <= f32(126.0) else (far if abs(m) > f32(192.0) else mid)
        gi[j] = (x / (f32(1.0) + ex)) * ui[j]


@nb.njit(cache=True)
def silu_mul(g, u):
    """g = silu(g) * u, in place, with the numbers of ggml_vec_swiglu_f32's AVX2 loop:
    silu(x) = x / (1 + v_expf(0 - x)), where v_expf is ggml's polynomial exp (not libm's), lane by lane."""
    for i in range(g.shape[0]):
        _silu_mul_row(g[i], u[i])


@nb.njit(cache=True, parallel=True)
def silu_mul_batch(g, u):
    for i in nb.prange(g.shape[0]):
        _silu_mul_row(g[i], u[i])


@nb.njit(cache=True, inline="always")
def _gelu_mul_row(gi, ui):
    for j in range(gi.shape[0]):
        v = gi[j]
        if v <= -10.0:
            r = f32(0.0)
        elif v >= 10.0:
            r = v
        else:
            r = GELU_F16[f32_to_f16(v)]
        gi[j] = r * ui[j]


@nb.njit(cache=True)
def _gelu_f16_table():
    """ggml's table of GELU (the tanh form) for every fp16 input, each value rounded to fp16: what GEGLU
    reads per element (a tanh each cost ~10 ns; the lookup is one load)."""
    c = f32(math.sqrt(2.0 / math.pi))
    table = np.empty(65536, np.float32)
    for b in range(65536):
        h = f16_to_f32(np.uint16(b))
        inner = (c * h) * fma32(f32(0.044715) * h, h, f32(1.0))
        table[b] = f16_to_f32(f32_to_f16((f32(0.5) * h) * (f32(1.0) + math.tanh(inner))))
    return table


GELU_F16 = _gelu_f16_table()   # a global: frozen into the kernels that read it


@nb.njit(cache=True)
def gelu_mul(g, u):
    """g = gelu_tanh(g) * u, in place, through fp16 as ggml's table does (x rounded to fp16, the result
    stored as fp16, the table's formula as compiled: 1 + 0.044715 x^2 fused, libm's tanhf); exact 0 below
    -10 and identity above 10."""
    for i in range(g.shape[0]):
        _gelu_mul_row(g[i], u[i])


@nb.njit(cache=True, parallel=True)
def gelu_mul_batch(g, u):
    for i in nb.prange(g.shape[0]):
        _gelu_mul_row(g[i], u[i])


@nb.njit(cache=True, parallel=True)
def attention(q, kc, vc, pos0, n_head, n_kv, hd, window, scale, out, att, chunk):
    """Causal attention of q[T, n_head * hd] at positions pos0 + t over the cache rows 0..pos0+T-1
    (kc, vc: [n_ctx, n_kv * hd], fp16 bits or float32). Query head h reads KV head h // (n_head / n_kv).
    window > 0 keeps only keys with p - j < window (sliding-window layers); the numbers of ggml's flash
    attention (attend_head). att: scratch [T * n_head, >= 3 * hd + 32]; chunk: fa_chunk's."""
    T = q.shape[0]
    for idx in nb.prange(T * n_head):
        attend_head(q, kc, vc, idx // n_head, idx % n_head, pos0, (n_head, n_kv, hd), window, scale, out,
                    att[idx], chunk)


@nb.njit(cache=True)
def fa_chunk(n_ctx, window, pos, T, nth):
    """The key chunk of llama.cpp's split-KV flash attention for a single token at position pos, or 0
    when it does not split: a one-row batch whose KV view (the used cells padded to 256, at most the
    cache) has 512 cells or more is cut into one chunk per thread, the partial results merged. A
    sliding-window layer's cache holds window + 512 (a micro-batch) cells, padded to 256; past the window
    llama.cpp reuses its cells in another order, which is not modelled."""
    if T != 1 or nth <= 1:
        return 0
    size = n_ctx if window == 0 else min(n_ctx, (window + 512 + 255) // 256 * 256)
    n_view = min(size, max(256, (pos + 1 + 255) // 256 * 256))
    if n_view < 512:
        return 0
    return (n_view + nth - 1) // nth


@nb.njit(cache=True)
def attend_head(q, kc, vc, t, h, pos0, heads, window, scale, out, w, chunk):
    """One query head h of token t (position pos0 + t), with the numbers of ggml's CPU flash attention
    (ggml_compute_forward_flash_attn_ext_f16_one_chunk: what llama.cpp runs for batches under 64 rows):
    the query rounded to the cache's type (fp16 for an fp16 cache), then _attend_range over the keys.
    heads = (n_head, n_kv, hd).
    chunk > 0 (fa_chunk): the split-KV form, ranges of `chunk` keys merged as
    ggml_flash_attn_ext_reduce_partials does. w: scratch of 3 * hd + 32 floats.
    Its own function so that the batched attention and the compiled decode step share its numbers."""
    n_head, n_kv, hd = heads
    ko = (h // (n_head // n_kv)) * hd
    qo = h * hd
    p = pos0 + t
    lo = 0
    if window > 0 and p - window + 1 > 0:
        lo = p - window + 1
    qh = w[:hd]
    acc = w[hd:2 * hd]
    for i in range(hd):
        qh[i] = kv_to_f32(f32_to_kv(q[t, qo + i], kc))
    if chunk == 0:
        M, S = _attend_range(qh, kc, vc, ko, hd, lo, p + 1, scale, w)
        inv = f32(1.0) / S if S != f32(0.0) else f32(0.0)
        for i in range(hd):
            out[t, qo + i] = acc[i] * inv
        return
    vf = w[2 * hd + 32:3 * hd + 32]
    for i in range(hd):
        vf[i] = 0.0
    m_f = f32(-np.inf)
    s_f = f32(0.0)
    for c0 in range(0, p + 1, chunk):
        a = max(c0, lo)
        b = min(c0 + chunk, p + 1)
        if a >= b:
            continue
        m_c, s_c = _attend_range(qh, kc, vc, ko, hd, a, b, scale, w)
        if s_c == f32(0.0):
            continue
        m_n = max(m_f, m_c)
        so = math.exp(m_f - m_n)
        sn = math.exp(m_c - m_n)
        for i in range(hd):
            vf[i] = fma32(vf[i], so, acc[i] * sn)
        s_f = fma32(s_f, so, s_c * sn)
        m_f = m_n
    inv = f32(1.0) / s_f if s_f != f32(0.0) else f32(0.0)
    for i in range(hd):
        out[t, qo + i] = vf[i] * inv


@nb.njit(cache=True)
def _attend_range(qh, kc, vc, ko, hd, a, b, scale, w):
    """Keys a..b-1 of one head against the rounded query qh: each score in ggml_vec_dot_f16's AVX2 order
    (32 fused-multiply-add lanes, then GGML_F32x8_REDUCE's tree); an online softmax with expf and
    S = fma(S, ms, vs); the weighted sum of V kept in the cache's type and rounded at each step
    (ggml_vec_mad_f16: fma, then fp16), left unnormalized in w[hd:2*hd]. Returns (max score, sum)."""
    acc = w[hd:2 * hd]
    lanes = w[2 * hd:2 * hd + 32]
    for i in range(hd):
        acc[i] = 0.0
    n32 = hd - hd % 32
    M = f32(-np.inf)
    S = f32(0.0)
    for j in range(a, b):
        kj = kc[j, ko:ko + hd]
        for l in range(32):
            lanes[l] = 0.0
        for i0 in range(0, n32, 32):
            for l in range(32):
                lanes[l] = fma32(kv_to_f32(kj[i0 + l]), qh[i0 + l], lanes[l])
        for l in range(8):  # GGML_F32x8_REDUCE: x0 += x2, x1 += x3, x0 += x1, halves, two hadds
            lanes[l] += lanes[16 + l]
            lanes[8 + l] += lanes[24 + l]
        for l in range(8):
            lanes[l] += lanes[8 + l]
        sd = np.float64(((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) +
                        ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])))
        for i in range(n32, hd):
            sd += np.float64(kv_to_f32(kj[i]) * qh[i])
        s = f32(sd) * scale
        ms = f32(1.0)
        vs = f32(1.0)
        if s > M:
            m_old = M
            M = s
            ms = math.exp(m_old - M)
            for i in range(hd):
                acc[i] = kv_to_f32(f32_to_kv(acc[i] * ms, vc))
        else:
            vs = math.exp(s - M)
        vj = vc[j, ko:ko + hd]
        for i in range(hd):
            acc[i] = kv_to_f32(f32_to_kv(fma32(kv_to_f32(vj[i]), vs, acc[i]), vc))
        S = fma32(S, ms, vs)
    return M, S


@nb.njit(cache=True, inline="always")
def _exp_nonpositive(x):
    """e^x for x <= 0 by ggml_v_expf's polynomial (what ggml's softmax uses), with no branch for its
    out-of-range cases, so that a loop of it vectorizes: below -87, where 2^n leaves the normal floats,
    it gives 0 (ggml: a denormal under 1.2e-38, nothing beside a softmax's largest term, which is 1). The
    polynomial is evaluated at max(x, -87) so that no lane meets a denormal (a microcode assist each)."""
    xc = max(x, f32(-87.0))
    z = fma32(xc, _LOG2E, _EXP_SHIFTER)
    m = _shifted_int(z)
    b = fma32(-m, _LN2_LO, fma32(-m, _LN2_HI, xc))
    k = u32_as_f32(np.uint32(np.uint32(f32_as_u32(z) << np.uint32(23)) + np.uint32(0x3F800000)))
    bb = b * b
    p = fma32(fma32(fma32(_EXP_P0, b, _EXP_P1), bb, fma32(_EXP_P2, b, _EXP_P3)), bb, _EXP_P4 * b)
    return fma32(p, k, k) if x >= f32(-87.0) else f32(0.0)


@nb.njit(cache=True, nogil=True, fastmath=True)
def masked_softmax(s, pos0, T, window, scale, k0):
    """Rows of s[n_kv, g * T, n] (query row r is token r % T, at position pos0 + r % T; column j is key
    k0 + j) scaled, causally masked (and to the sliding window), softmaxed; the sum in float64 as ggml's
    soft_max, e^x by its polynomial (_exp_nonpositive). On the calling thread, without the GIL: each of
    attention_blas's workers runs it on its heads."""
    nkv, m, n = s.shape
    for idx in range(nkv * m):
        a = idx // m
        r = idx % m
        row = s[a, r]
        p = pos0 + r % T
        lo = k0
        if window > 0 and p - window + 1 > lo:
            lo = p - window + 1
        lo -= k0
        hi = min(n, p + 1 - k0)
        # the loops run over a slice from 0: numba's range(lo, hi) indexing keeps LLVM from vectorizing
        seg = row[lo:hi]
        mx = f32(-np.inf)
        for j in range(seg.shape[0]):
            v = seg[j] * scale
            seg[j] = v
            mx = max(mx, v)
        tot = 0.0
        for j in range(seg.shape[0]):
            e = _exp_nonpositive(seg[j] - mx)
            seg[j] = e
            tot += e
        inv = f32(1.0 / tot)
        for j in range(seg.shape[0]):
            seg[j] *= inv
        row[:lo] = 0.0
        row[hi:] = 0.0


# query rows per BLAS product in the batched attention: keys past a slice's last query are not multiplied
ATTN_SLICE = 64
_POOL = None


def attention_blas(q, kc, vc, pos0, n_head, n_kv, hd, window, scale, out):
    """The same as `attention`, for a batch: per KV head, Q K^T and A V as BLAS matrix products, the
    queries in slices of ATTN_SLICE, each against the keys it can see (causal, and the sliding window):
    a prompt from an empty cache multiplies about half of the T x T scores instead of all.
    The KV heads are shared out among numba's thread count of Python threads, each running single-threaded
    BLAS on its heads (numpy lets go of the GIL): OpenBLAS threading these small products ran 1.15x faster
    on 2 threads than on one; split by heads, 1.9x."""
    global _POOL
    nw = max(1, min(nb.get_num_threads(), n_kv))
    if nw == 1:
        _attend_heads(q, kc, vc, pos0, n_head, n_kv, hd, window, scale, out, 0, n_kv)
        return
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(nb.config.NUMBA_NUM_THREADS, thread_name_prefix="ggufq-attention")
    from ggufq.runtime.threads import set_blas_threads
    set_blas_threads(1)
    try:
        jobs = [_POOL.submit(_attend_heads, q, kc, vc, pos0, n_head, n_kv, hd, window, scale, out,
                             n_kv * i // nw, n_kv * (i + 1) // nw) for i in range(nw)]
        for job in jobs:
            job.result()
    finally:
        set_blas_threads(nb.get_num_threads())


def _attend_heads(q, kc, vc, pos0, n_head, n_kv, hd, window, scale, out, a0, a1):
    """attention_blas for the KV heads a0..a1 (and their query heads), on the calling thread."""
    T = q.shape[0]
    g = n_head // n_kv
    n = pos0 + T
    na = a1 - a0
    K = np.ascontiguousarray(kc[:n].reshape(n, n_kv, hd)[:, a0:a1].transpose(1, 2, 0), dtype=np.float32)
    V = np.ascontiguousarray(vc[:n].reshape(n, n_kv, hd)[:, a0:a1].transpose(1, 0, 2), dtype=np.float32)
    for t0 in range(0, T, ATTN_SLICE):
        t1 = min(T, t0 + ATTN_SLICE)
        Tc = t1 - t0
        nc = pos0 + t1
        k0 = max(0, pos0 + t0 - window + 1) if window > 0 else 0
        Q = np.ascontiguousarray(q[t0:t1].reshape(Tc, n_kv, g, hd)[:, a0:a1].transpose(1, 2, 0, 3))
        S = np.matmul(Q.reshape(na, g * Tc, hd), K[:, :, k0:nc])
        masked_softmax(S, pos0 + t0, Tc, window, f32(scale), k0)
        O = np.matmul(S, V[:, k0:nc])
        out[t0:t1].reshape(Tc, n_kv, g * hd)[:, a0:a1] = O.reshape(na, g, Tc, hd).transpose(2, 0, 1, 3).reshape(
            Tc, na, g * hd)


@nb.njit(cache=True, parallel=True)
def log_softmax_at(logits, targets, out):
    """out[i] = log softmax(logits[i])[targets[i]] in float64, as llama-perplexity's log_softmax
    (max subtracted in float32, the exp sum in double, in order); rows in parallel."""
    if targets.shape[0] < logits.shape[0] or out.shape[0] < logits.shape[0]:
        raise ValueError("log_softmax_at: fewer targets or outputs than rows")
    for i in nb.prange(logits.shape[0]):
        row = logits[i]
        mx = row[0]
        for j in range(1, row.shape[0]):
            if row[j] > mx:
                mx = row[j]
        s = 0.0
        for j in range(row.shape[0]):
            s += np.exp(np.float64(row[j] - mx))
        out[i] = np.float64(row[targets[i]] - mx) - np.log(s)


class _Batch:
    """The element-wise ops with their rows in parallel (the batch forward's), under the serial names."""
    rmsnorm = rmsnorm_batch
    add_rmsnorm = add_rmsnorm_batch
    rope = rope_batch
    silu_mul = silu_mul_batch
    gelu_mul = gelu_mul_batch
    add_bias = add_bias
    scale_rows = scale_rows


class _Serial:
    rmsnorm = rmsnorm
    add_rmsnorm = add_rmsnorm
    rope = rope
    silu_mul = silu_mul
    gelu_mul = gelu_mul
    add_bias = add_bias
    scale_rows = scale_rows


# from this many tokens the element-wise ops run their rows on all threads
PARALLEL_MIN_TOKENS = 16


def for_tokens(T: int):
    """The element-wise ops for a batch of T tokens: parallel from PARALLEL_MIN_TOKENS on."""
    return _Batch if T >= PARALLEL_MIN_TOKENS else _Serial
