"""The batch path's integer GEMM: quantized weights times 8-bit activations, many tokens per weight read.

A prompt multiplies every weight by hundreds of tokens. Dequantizing weights to float and calling sgemm
runs at the float unit's peak (16 multiply-adds an AVX-512 instruction); VNNI's `vpdpbusd` takes 64 byte
products an instruction. This is that product, for every format that can say its weights as

    w = s * q + m      per block of G weights (G = 16 or 32): q an unsigned byte, s and m floats

(Q4_0: q the nibble, s = d, m = -8 d; Q4_K: s = d * scale_j, m = -dmin * min_j; Q6_K: blocks of 16,
s = d * scale, m = -32 s; Q8_0: q = the int8 + 128, m = -128 d; ...). With activations a = da * qa in
blocks of 32 (per-block scale da, int8 qa, the block's sum xs = da * sum(qa) kept per G):

    w . a = sum over blocks of  s * da * isum(q, qa)  +  m * xs

The weights are first unpacked a tile of rows at a time (each format's `unpack`, registry.DotKernels) into
a layout where one vector holds 4 consecutive bytes of L rows (L = 16 with AVX-512, 8 with AVX2):

    tq uint32 [rowvecs, blocks * G/4, L]   bytes 4j..4j+3 of each block, for the L rows of a rowvec
    tsm float32 [2, rowvecs, blocks, L]   each row's s (tsm[0]) and m (tsm[1]) for the block

so that `vpdpbusd(acc, tq[v, step], broadcast(4 bytes of one token))` leaves in lane l the running sum of
row l: after G/4 steps each lane holds its row's block sum, one int-to-float conversion and two fma per
block take it into the token's float accumulator of L rows, and no horizontal sums are needed. The micro-
kernel holds ROWVECS rowvecs x TOKENS tokens of accumulators and runs over all blocks of a row; the driver
runs it over a tile of rows and all tokens, parallel over rowvecs (each thread's weights stay in its cache
while the tokens stream past).

AVX-VNNI hosts (client CPUs without AVX-512) take `vpdpbusd` on 8 rows a vector. Without VNNI the same
loop takes `vpmaddubsw` + `vpmaddwd` (AVX2, 8 rows a vector); that saturates at products over 2^15, so on
such hosts only formats whose q fits in 7 bits (`unpack_max` <= 127) take it.
"""
from __future__ import annotations

import os

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .dot_common import f16_to_f32, f32_to_f16, lazy_zeros
from .dot_simd import (AVX2, F32T, HOST_FEATURES, I8, I32, I64, _close_loop, _data_ptr, _fn, _maddubs, _open_loop,
                       _splat_val, _vec, _widen_pairs)

VNNI512 = "+avx512vnni" in HOST_FEATURES and "+avx512bw" in HOST_FEATURES
# vpdpbusd on 8 lanes: AVX-512 VNNI with VL, or AVX-VNNI (client CPUs without AVX-512)
VNNI256 = (VNNI512 and "+avx512vl" in HOST_FEATURES) or "+avxvnni" in HOST_FEATURES
# Rows a vector holds: 16 int32 lanes of a zmm register with AVX-512, 8 of a ymm with AVX2.
LANES = 16 if VNNI512 else 8
VNNI = VNNI512 or VNNI256   # the kernels' dot: vpdpbusd, else vpmaddubsw + vpmaddwd
ROWVECS = 2          # the micro-kernel's rows: ROWVECS * LANES
TOKENS = 4           # and tokens (accumulators: ROWVECS * TOKENS vectors, plus as many block sums)
AVAILABLE = AVX2     # no kernel for other targets: they keep the BLAS path
# GGUFQ_GEMM=0: batches through dequantized tiles and BLAS instead (for comparisons)
USE = os.environ.get("GGUFQ_GEMM", "1") != "0"


def usable(q_max: int) -> bool:
    """Whether this host's GEMM multiplies weights whose unpacked bytes reach q_max exactly."""
    return AVAILABLE and (VNNI or q_max <= 127)


def _dot4(builder, acc, wv, av, lanes, vnni):
    """acc + per int32 lane the dot of its 4 unsigned weight bytes with the 4 signed activation bytes:
    vnni, `vpdpbusd` (16 lanes with AVX-512 VNNI, 8 with its VL form or AVX-VNNI); else `vpmaddubsw` +
    `vpmaddwd` (8 lanes, AVX2: exact while no pair of products passes 2^15). Where the host lacks the
    instruction, the same sums in portable IR, so that every kernel compiles on every host."""
    vi32 = _vec(I32, lanes)
    if vnni and ((lanes == 16 and VNNI512) or (lanes == 8 and VNNI256)):
        fn = _fn(builder, f"llvm.x86.avx512.vpdpbusd.{32 * lanes}", vi32, [vi32] * 3)
        return builder.call(fn, [acc, wv, av])
    if not vnni and lanes == 8 and AVX2:
        p16 = _maddubs(builder, builder.bitcast(wv, _vec(I8, 32)), builder.bitcast(av, _vec(I8, 32)))
        return builder.add(acc, _widen_pairs(builder, p16))
    n = 4 * lanes
    p = builder.mul(builder.zext(builder.bitcast(wv, _vec(I8, n)), _vec(I32, n)),
                    builder.sext(builder.bitcast(av, _vec(I8, n)), _vec(I32, n)))
    for j in range(4):
        acc = builder.add(acc, builder.shuffle_vector(p, ir.Constant(_vec(I32, n), None),
                                                      ir.Constant(_vec(I32, lanes), [4 * i + j for i in range(lanes)])))
    return acc


def _make_microkernel(G, lanes, rowvecs, tokens, vnni):
    """micro(tq, tq0, tsm, ts0, rstride, sstride, nb, aq, a0, k, ad, ad0, nad, ax, ax0, out):
    out[(t * rowvecs + v) * lanes + l] = row (v, l) . token t, over nb blocks of G.
    tq: the unpacked bytes as uint32, rowvec v's at tq0 + v * rstride; tsm: the scales s at ts0 (rowvec v
    at v * nb * lanes), the offsets m sstride further on; aq int8 tokens of k from a0; ad their scales per
    32 (nad a token), from ad0; ax the sums per block of G (nb a token), from ax0."""
    steps = G // 4
    vf = _vec(F32T, lanes)
    vi = _vec(I32, lanes)

    def typer(typingctx, tq, tq0, ts, ts0, rstride, sstride, nbk, aq, a0, k, ad, ad0, nad, ax, ax0, out):
        def codegen(context, builder, sig, args):
            (tq_, tq0_, ts_, ts0_, rstride_, sstride_, nb_, aq_, a0_, k_, ad_, ad0_, nad_, ax_, ax0_,
             out_) = args
            tqp = _data_ptr(context, builder, sig.args[0], tq_, tq0_, I32)
            tsp = _data_ptr(context, builder, sig.args[2], ts_, ts0_, F32T)
            tmp = builder.gep(tsp, [sstride_])           # tm follows ts in the same array
            aqp = _data_ptr(context, builder, sig.args[7], aq_, a0_, I8)
            adp = _data_ptr(context, builder, sig.args[10], ad_, ad0_, F32T)
            axp = _data_ptr(context, builder, sig.args[13], ax_, ax0_, F32T)
            outp = _data_ptr(context, builder, sig.args[15], out_, ir.Constant(I64, 0), F32T)
            fma = _fn(builder, f"llvm.fma.v{lanes}f32", vf, [vf] * 3)
            zero_f = ir.Constant(vf, [0.0] * lanes)
            zero_i = ir.Constant(vi, [0] * lanes)
            entry, loop, done, b = _open_loop(builder, nb_)
            accs = [[builder.phi(vf) for _ in range(tokens)] for _ in range(rowvecs)]
            # the block's weight scales and offsets, per rowvec
            sw, mw = [], []
            for v in range(rowvecs):
                base = builder.add(builder.mul(ir.Constant(I64, v), builder.mul(nb_, ir.Constant(I64, lanes))),
                                   builder.mul(b, ir.Constant(I64, lanes)))
                sw.append(builder.load(builder.bitcast(builder.gep(tsp, [base]), vf.as_pointer()), align=4))
                mw.append(builder.load(builder.bitcast(builder.gep(tmp, [base]), vf.as_pointer()), align=4))
            ab = builder.mul(b, ir.Constant(I64, G))                         # the block's first weight
            adi = builder.lshr(ab, ir.Constant(I64, 5))                      # its activation scale's index
            isums = [[zero_i] * tokens for _ in range(rowvecs)]
            for s in range(steps):
                wvs = []
                for v in range(rowvecs):
                    idx = builder.add(builder.mul(ir.Constant(I64, v), rstride_),
                                      builder.mul(builder.add(builder.mul(b, ir.Constant(I64, steps)),
                                                              ir.Constant(I64, s)), ir.Constant(I64, lanes)))
                    wvs.append(builder.load(builder.bitcast(builder.gep(tqp, [idx]), vi.as_pointer()), align=4))
                for t in range(tokens):
                    ai = builder.add(builder.mul(ir.Constant(I64, t), k_), builder.add(ab, ir.Constant(I64, 4 * s)))
                    a4 = builder.load(builder.bitcast(builder.gep(aqp, [ai]), I32.as_pointer()), align=1)
                    av = _splat_val(builder, a4, lanes, I32)
                    for v in range(rowvecs):
                        isums[v][t] = _dot4(builder, isums[v][t], wvs[v], av, lanes, vnni)
            nxt = [[None] * tokens for _ in range(rowvecs)]
            for t in range(tokens):
                da = builder.load(builder.gep(adp, [builder.add(builder.mul(ir.Constant(I64, t), nad_), adi)]))
                xs = builder.load(builder.gep(axp, [builder.add(builder.mul(ir.Constant(I64, t), nb_), b)]))
                dav, xsv = _splat_val(builder, da, lanes, F32T), _splat_val(builder, xs, lanes, F32T)
                for v in range(rowvecs):
                    f = builder.sitofp(isums[v][t], vf)
                    acc = builder.call(fma, [f, builder.fmul(sw[v], dav), accs[v][t]])
                    nxt[v][t] = builder.call(fma, [mw[v], xsv, acc])
            carried = [(accs[v][t], zero_f, nxt[v][t]) for v in range(rowvecs) for t in range(tokens)]
            final = _close_loop(builder, b, nb_, entry, loop, done, carried)
            for n, (v, t) in enumerate((v, t) for v in range(rowvecs) for t in range(tokens)):
                o = ir.Constant(I64, (t * rowvecs + v) * lanes)
                builder.store(final[n], builder.bitcast(builder.gep(outp, [o]), vf.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.none(tq, tq0, ts, ts0, rstride, sstride, nbk, aq, a0, k, ad, ad0, nad, ax, ax0, out), codegen

    return intrinsic(typer)


# the kernels per (block, lanes, dot): 16 lanes where VNNI512, else 8; vpdpbusd where VNNI, else vpmaddubsw
# (Tile.lanes and Tile.vnni; a test may take any)
_micro_16_16 = _make_microkernel(16, 16, ROWVECS, TOKENS, True)
_micro_32_16 = _make_microkernel(32, 16, ROWVECS, TOKENS, True)
_micro_16_8v = _make_microkernel(16, 8, ROWVECS, TOKENS, True)
_micro_32_8v = _make_microkernel(32, 8, ROWVECS, TOKENS, True)
_micro_16_8 = _make_microkernel(16, 8, ROWVECS, TOKENS, False)
_micro_32_8 = _make_microkernel(32, 8, ROWVECS, TOKENS, False)


@nb.njit(cache=True, parallel=True, fastmath=True)
def quantize_acts(x, aq, ad, ax16, ax32, qk):
    """x float32[T, k] -> aq int8[T, k] and ad float32[T, k/32], each 32 values' scale, rounded as the
    integer kernels round them: qk = 32 as quantize_row_q8_0 (d per 32, stored through fp16), qk = 256
    as quantize_row_q8_K (d per 256, from the signed value of largest magnitude, repeated in its 8 entries).
    ax16/ax32 the blocks' d * sum(q) per 16 and per 32 values (float32): the terms of the weights' offsets.
    (fastmath lets LLVM vectorize the max and the rounding, which it computes exactly all the same: the
    test compares with dot_common's quantizers value for value.)"""
    for t in nb.prange(x.shape[0]):
        quantize_act_row(x[t], aq[t], ad[t], ax16[t], ax32[t], qk)


@nb.njit(cache=True, fastmath=True)
def quantize_act_row(x, aq, ad, ax16, ax32, qk):
    """One token of quantize_acts (x float32[k], the others its rows): its own compiled function, so that
    callers without fastmath (the batch step) get the vectorized loops too."""
    k = x.shape[0]
    for o in range(0, k, qk):
        xb, qb = x[o:o + qk], aq[o:o + qk]
        amax = np.float32(0.0)
        for j in range(qk):
            amax = max(amax, abs(xb[j]))
        if qk == 32:
            d = amax / np.float32(127.0)
            idn = np.float32(127.0) / amax if amax > 0 else np.float32(0.0)
            d = f16_to_f32(f32_to_f16(d))
            for j in range(32):
                qb[j] = np.int8(np.rint(xb[j] * idn))
        else:
            mx = np.float32(0.0)
            for j in range(qk):
                if abs(xb[j]) == amax:
                    mx = xb[j]
                    break
            iscale = np.float32(-127.0) / mx if amax > 0 else np.float32(0.0)
            d = np.float32(1.0) / iscale if amax > 0 else np.float32(0.0)
            for j in range(qk):
                qb[j] = np.int8(min(np.rint(iscale * xb[j]), np.float32(127.0)))
        for b in range(qk // 32):
            s0 = np.int32(0)
            s1 = np.int32(0)
            for j in range(16):
                s0 += np.int32(qb[32 * b + j])
                s1 += np.int32(qb[32 * b + 16 + j])
            ad[o // 32 + b] = d
            ax16[o // 16 + 2 * b] = d * np.float32(s0)
            ax16[o // 16 + 2 * b + 1] = d * np.float32(s1)
            ax32[o // 32 + b] = d * np.float32(s0 + s1)


@nb.njit(cache=True, parallel=True)
def gemm_tile(tq, tsm, nrv, G, L, vnni, aq, ad, ax, T, out, r0, n):
    """out[t, r0 + r] = (row r of the unpacked tile) . (token t) for r < n, t < T.
    tq, tsm: the tile (flat, nrv rowvecs of L lanes, nrv a multiple of ROWVECS; vnni: the 8-lane kernel's
    dot, the 16-lane one always has vpdpbusd); aq, ad, ax: quantize_acts's output
    with at least T rounded up to TOKENS rows (the rows past T zero); ax the sums per block of G."""
    k = aq.shape[1]
    nbk = k // G
    rstride = nbk * (G // 4) * L
    sstride = tsm.size // 2
    aqf, adf, axf = aq.reshape(-1), ad.reshape(-1), ax.reshape(-1)
    for g in nb.prange(nrv // ROWVECS):
        scratch = np.empty(TOKENS * ROWVECS * L, np.float32)
        v0 = g * ROWVECS
        multiply_rowvecs(tq, v0 * rstride, tsm, v0 * nbk * L, rstride, sstride, G, L, vnni, aqf, adf, axf, k, T,
                         scratch, out, r0 + v0 * L, min(ROWVECS * L, n - v0 * L))


@nb.njit(inline="always")
def multiply_rowvecs(tq, tq0, tsm, ts0, rstride, sstride, G, L, vnni, aqf, adf, axf, k, T, scratch, out, c0, n):
    """ROWVECS rowvecs of an unpacked tile (from tq[tq0], tsm[ts0]; rstride, sstride as gemm_tile's) times
    tokens 0..T of the flat activations: out[t, c0 + j] = row j . token t for j < n. scratch: float32
    [TOKENS * ROWVECS * L]."""
    width = ROWVECS * L
    for t0 in range(0, T, TOKENS):
        micro_rowvecs(tq, tq0, tsm, ts0, rstride, sstride, G, L, vnni, aqf, adf, axf, k, t0, scratch)
        for t in range(min(TOKENS, T - t0)):
            for j in range(n):
                out[t0 + t, c0 + j] = scratch[t * width + j]


@nb.njit(inline="always")
def micro_rowvecs(tq, tq0, tsm, ts0, rstride, sstride, G, L, vnni, aqf, adf, axf, k, t0, scratch):
    """The micro-kernel for the tile's (G, L, vnni): scratch[t * ROWVECS * L + j] = row j . token t0 + t
    for the TOKENS tokens from t0 (multiply_rowvecs's step; the batch step's fused FFN calls it too)."""
    nbk = k // G
    nad = k // 32
    a = (tq, tq0, tsm, ts0, rstride, sstride, nbk, aqf, t0 * k, k, adf, t0 * nad, nad, axf, t0 * nbk, scratch)
    if L == 16:
        if G == 16:
            _micro_16_16(*a)
        else:
            _micro_32_16(*a)
    elif vnni:
        if G == 16:
            _micro_16_8v(*a)
        else:
            _micro_32_8v(*a)
    elif G == 16:
        _micro_16_8(*a)
    else:
        _micro_32_8(*a)


@nb.njit(inline="always")
def u32_at(wr, o):
    """The 4 bytes wr[o:o+4] of a uint8 row as one little-endian uint32 (one load after LLVM)."""
    return (np.uint32(wr[o]) | (np.uint32(wr[o + 1]) << np.uint32(8)) | (np.uint32(wr[o + 2]) << np.uint32(16))
            | (np.uint32(wr[o + 3]) << np.uint32(24)))


# ---- the driver's buffers -------------------------------------------------------------------------

TILE_BYTES = 4 << 20     # unpacked weight bytes a tile (its rows unpacked by one parallel pass)


class Tile:
    """Buffers for one unpacked tile of weight rows of length k in blocks of G (reused between calls)."""

    def __init__(self, k: int, G: int, rows: int, lanes: int = LANES, vnni: bool = VNNI):
        self.lanes = L = lanes
        self.vnni = vnni
        span = ROWVECS * L
        self.G = G
        self.rows = max(span, min(-(-rows // span) * span, TILE_BYTES // k // span * span))
        nrv = self.rows // L
        self.tq = lazy_zeros((nrv, k // 4, L), np.uint32)
        self.tsm = lazy_zeros((2, nrv, k // G, L), np.float32)

    def multiply(self, unpack, w, acts: "GemmActs", T: int, out: np.ndarray) -> None:
        """out[T, rows of w] = w @ tokens.T, tile by tile."""
        R, L = w.shape[0], self.lanes
        ax = acts.ax16 if self.G == 16 else acts.ax32
        for r0 in range(0, R, self.rows):
            n = min(self.rows, R - r0)
            nrv = -(-n // (ROWVECS * L)) * ROWVECS
            if n < self.rows:   # rows past the matrix in the last rowvecs multiply by zero scales
                self.tsm[:, n // L:nrv] = 0
            unpack(w, r0, r0 + n, self.tq, self.tsm)
            gemm_tile(self.tq.reshape(-1), self.tsm.reshape(-1), nrv, self.G, L, self.vnni, acts.aq, acts.ad, ax, T,
                      out, r0, n)


class GemmActs:
    """Tokens quantized for gemm_tile, up to T rows (rounded up to TOKENS, the padding rows zero), in
    blocks of qk = 32 or 256 as the format's integer kernels take them (its `act`: q8_32 or q8_k)."""

    def __init__(self, T: int, k: int, qk: int):
        self.qk = qk
        Tp = -(-T // TOKENS) * TOKENS
        self.aq = lazy_zeros((Tp, k), np.int8)
        self.ad = lazy_zeros((Tp, k // 32), np.float32)
        self.ax16 = lazy_zeros((Tp, k // 16), np.float32)
        self.ax32 = lazy_zeros((Tp, k // 32), np.float32)

    def set(self, x: np.ndarray) -> "GemmActs":
        T = x.shape[0]
        quantize_acts(x, self.aq[:T], self.ad[:T], self.ax16[:T], self.ax32[:T], self.qk)
        for a in (self.aq, self.ad, self.ax16, self.ax32):   # the rows the micro-kernel reads past T
            a[T:-(-T // TOKENS) * TOKENS] = 0
        return self
