"""Whole-row dots of the low-bit formats on 8-bit activations, as numba intrinsics (kernels/dot_simd.py says
why IR): Q2_K, Q3_K and IQ4_XS with Q8_K activations (ggml_vec_dot_q2_K_q8_K, _q3_K_q8_K, _iq4_xs_q8_K),
IQ4_NL with Q8_0 (ggml_vec_dot_iq4_nl_q8_0), the activation forms llama.cpp gives them.

Per block the weights are unpacked to a <32 x i8> vector (2-bit fields by shift and mask, Q3_K's high bit
from hmask, the IQ4 indices looked up in kvalues_iq4nl with a byte shuffle), dotted with 32 activations
into 8 int32 lanes (dot_simd._dot_lanes), weighted by the sub-block scales, and per super-block converted
to float and fused-multiply-added with d_w * d_x into 8 float lanes; Q2_K's minimums go through the
activations' sums of 16. The integer sums are exact; the float order is this file's, not a llama.cpp
build's lane for lane (no golden logits are made for these types: their test is against dequantize and
numpy, and perplexity against llama-perplexity's).

Arguments: rowdot_<fmt>(w, wo, nbk, xq, xo, xd, xdo, xs, xso) for the Q8_K ones, as dot_simd's K-quants;
rowdot_iq4_nl(w, wi, xq, xi, xd, xs, si, nb) as dot_simd's Q4_0.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .dot_simd import (AVX2, F32T, I8, I32, I64, _byte, _close_loop, _dot_lanes, _dot_portable, _fn, _hsum8,
                       _is_arr, _is_int, _load_half, _load_vec, _make_rowdot, _nibbles, _open_loop, _splat,
                       _splat_val, _vec)
from .dot_simd_k import q8k_row_args, superblock
from .iquants_ref import KVALUES_IQ4NL


def _c32(v):
    return ir.Constant(I32, v)


def _dot_two_scales(builder, q, x, sa, sb):
    """sum(q * x) over <32 x i8> as 8 int32 lanes, bytes 0..15 weighted by sa and 16..31 by sb (i32
    values): two sub-blocks of 16 in one 32-byte vector (Q2_K, Q3_K)."""
    if AVX2:  # lane j holds bytes 4j..4j+3
        sv = ir.Constant(_vec(I32, 8), None)
        for lane in range(8):
            sv = builder.insert_element(sv, sa if lane < 4 else sb, _c32(lane))
        return builder.mul(_dot_lanes(builder, q, x), sv)
    halves = []
    for part in (range(16), range(16, 32)):
        idx = ir.Constant(_vec(I32, 16), list(part))
        undef = ir.Constant(_vec(I8, 32), None)
        halves.append(_dot_portable(builder, builder.shuffle_vector(q, undef, idx),
                                    builder.shuffle_vector(x, undef, idx), 16))
    total = builder.add(builder.mul(halves[0], sa), builder.mul(halves[1], sb))
    return builder.insert_element(ir.Constant(_vec(I32, 8), [0] * 8), total, _c32(0))


def _iq4_values(builder, idx):
    """<32 x i8> indices 0..15 -> kvalues_iq4nl[idx]: vpshufb on AVX2 (the table in both 128-bit halves),
    elsewhere a chain of selects LLVM vectorizes."""
    kv = [int(v) for v in KVALUES_IQ4NL]
    if AVX2:
        shuf = _fn(builder, "llvm.x86.avx2.pshuf.b", _vec(I8, 32), [_vec(I8, 32)] * 2)
        return builder.call(shuf, [ir.Constant(_vec(I8, 32), kv * 2), idx])
    out = _splat(kv[0], 32)
    for c in range(1, 16):
        out = builder.select(builder.icmp_unsigned("==", idx, _splat(c, 32)), _splat(kv[c], 32), out)
    return out


def _q3_scale(builder, bp, j):
    """Q3_K's sub-block j scale (6 bits, minus 32) from the 12 bytes at bp + 96."""
    if j < 8:
        low = builder.and_(_byte(builder, bp, 96 + j), _c32(15))
    else:
        low = builder.lshr(_byte(builder, bp, 96 + j - 8), _c32(4))
    high = builder.and_(builder.lshr(_byte(builder, bp, 104 + j % 4), _c32(2 * (j // 4))), _c32(3))
    return builder.sub(builder.or_(low, builder.shl(high, _c32(4))), _c32(32))


def _q2_k_block(builder, bp, xb):
    """Q2_K super-block: (weighted int32 lanes, its 16 scale bytes)."""
    sc = [_byte(builder, bp, j) for j in range(16)]
    sumi = ir.Constant(_vec(I32, 8), [0] * 8)
    for c in range(2):
        qv = _load_vec(builder, bp, 16 + 32 * c)
        for s in range(4):
            q = builder.and_(builder.lshr(qv, _splat(2 * s, 32)), _splat(3, 32))
            j = 8 * c + 2 * s
            sumi = builder.add(sumi, _dot_two_scales(builder, q, _load_vec(builder, xb, 128 * c + 32 * s),
                                                     builder.and_(sc[j], _c32(15)), builder.and_(sc[j + 1], _c32(15))))
    return sumi, sc


def _q3_k_block(builder, bp, xb):
    """Q3_K super-block: weighted int32 lanes; weight 128c + 32s + l is ((qs >> 2s) & 3) + 4 * hbit - 4."""
    hm = _load_vec(builder, bp, 0)
    sumi = ir.Constant(_vec(I32, 8), [0] * 8)
    for c in range(2):
        qv = _load_vec(builder, bp, 32 + 32 * c)
        for s in range(4):
            low = builder.and_(builder.lshr(qv, _splat(2 * s, 32)), _splat(3, 32))
            hb = builder.and_(builder.lshr(hm, _splat(4 * c + s, 32)), _splat(1, 32))
            q = builder.sub(builder.or_(low, builder.shl(hb, _splat(2, 32))), _splat(4, 32))
            j = 8 * c + 2 * s
            sumi = builder.add(sumi, _dot_two_scales(builder, q, _load_vec(builder, xb, 128 * c + 32 * s),
                                                     _q3_scale(builder, bp, j), _q3_scale(builder, bp, j + 1)))
    return sumi


def _iq4_xs_block(builder, bp, xb):
    """IQ4_XS super-block: 8 blocks of 32, each its 6-bit scale (minus 32) times its integer dot."""
    sh = builder.zext(builder.load(builder.bitcast(builder.gep(bp, [ir.Constant(I64, 2)]),
                                                   ir.IntType(16).as_pointer()), align=1), I32)
    sumi = ir.Constant(_vec(I32, 8), [0] * 8)
    for ib in range(8):
        low = builder.and_(builder.lshr(_byte(builder, bp, 4 + ib // 2), _c32(4 * (ib % 2))), _c32(15))
        high = builder.and_(builder.lshr(sh, _c32(2 * ib)), _c32(3))
        ls = builder.sub(builder.or_(low, builder.shl(high, _c32(4))), _c32(32))
        q = _iq4_values(builder, _nibbles(builder, builder.gep(bp, [ir.Constant(I64, 8 + 16 * ib)]), 0))
        lanes = _dot_lanes(builder, q, _load_vec(builder, xb, 32 * ib))
        sumi = builder.add(sumi, builder.mul(lanes, _splat_val(builder, ls, 8, I32)))
    return sumi


def _make_rowdot_q8k(kind):
    """rowdot(w, wo, nbk, xq, xo, xd, xdo, xs, xso) -> float32 for kind "q2_k", "q3_k" or "iq4_xs"."""
    block_bytes, d_at = {"q2_k": (84, 80), "q3_k": (110, 108), "iq4_xs": (136, 0)}[kind]

    def typer(typingctx, w, wo, nbk, xq, xo, xd, xdo, xs, xso):
        if not (_is_arr(w, xq) and _is_int(wo, nbk, xo, xdo, xso)):
            return None

        def codegen(context, builder, sig, args):
            wp, xp, dp, sp, sty, nbv = q8k_row_args(context, builder, sig, args)
            f8 = _vec(F32T, 8)
            fma8 = _fn(builder, "llvm.fma.v8f32", f8, [f8] * 3)
            fma1 = _fn(builder, "llvm.fma.f32", F32T, [F32T] * 3)
            entry, loop, done, i = _open_loop(builder, nbv)
            acc = builder.phi(f8)
            accm = builder.phi(F32T)
            bp, xb, yd = superblock(builder, wp, xp, dp, i, block_bytes)
            d = builder.fmul(yd, _load_half(builder, builder.gep(bp, [ir.Constant(I64, d_at)])))
            accm2 = accm
            if kind == "q2_k":
                sumi, sc = _q2_k_block(builder, bp, xb)
                bsum = builder.gep(sp, [builder.mul(i, ir.Constant(I64, 16))])
                summs = _c32(0)
                for j in range(16):
                    b = builder.load(builder.gep(bsum, [ir.Constant(I64, j)]))
                    b = builder.trunc(b, I32) if sty.width > 32 else (builder.sext(b, I32) if sty.width < 32 else b)
                    summs = builder.add(summs, builder.mul(b, builder.lshr(sc[j], _c32(4))))
                dmin = builder.fmul(yd, _load_half(builder, builder.gep(bp, [ir.Constant(I64, 82)])))
                accm2 = builder.call(fma1, [builder.fneg(dmin), builder.sitofp(summs, F32T), accm])
            elif kind == "q3_k":
                sumi = _q3_k_block(builder, bp, xb)
            else:
                sumi = _iq4_xs_block(builder, bp, xb)
            acc2 = builder.call(fma8, [_splat_val(builder, d, 8, F32T), builder.sitofp(sumi, f8), acc])
            accf, mf = _close_loop(builder, i, nbv, entry, loop, done,
                                   [(acc, ir.Constant(f8, [0.0] * 8), acc2), (accm, ir.Constant(F32T, 0.0), accm2)])
            return builder.fadd(_hsum8(builder, accf), mf)

        return types.float32(w, wo, nbk, xq, xo, xd, xdo, xs, xso), codegen

    return intrinsic(typer)


rowdot_q2_k = _make_rowdot_q8k("q2_k")
rowdot_q3_k = _make_rowdot_q8k("q3_k")
rowdot_iq4_xs = _make_rowdot_q8k("iq4_xs")
# IQ4_NL: 18-byte blocks of 32 (fp16 d, 16 bytes of index nibbles), Q8_0 activations, as Q4_0's dot
rowdot_iq4_nl = _make_rowdot(18, lambda b, p: _iq4_values(b, _nibbles(b, b.gep(p, [ir.Constant(I64, 2)]), 0)), False)
