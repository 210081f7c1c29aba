"""Whole-row dots for the fast arithmetic on AVX-512 VNNI hosts: two blocks of 32 a step, `vpdpbusd`.

The kernels of dot_simd.py reproduce llama.cpp's AVX2 build lane for lane: 32 weights a step in 8 int32
lanes (`vpsignb`, `vpmaddubsw`, `vpmaddwd`) and a float fma each block. Decoding a model that fits in
memory spends its time there, not waiting for memory (a 1B Q4_0 file: 25.8 GB/s from cache, 23.5 from
memory), so on hosts with AVX-512 VNNI the fast arithmetic takes these instead: two blocks a step in the
16 int32 lanes of a zmm register, the weights as unsigned bytes (the nibbles as they are stored) times the
signed activations by one `vpdpbusd`, the format's offset (8 for Q4_0) taken off exactly as
`vpdpbusd(offset bytes, activations)`, and one fma with the two blocks' scales (lanes 0-7 and 8-15). The
numbers differ from llama.cpp's only in the order of the float sums.

    rowdot_q4_0_vnni(w, wi, xq, xi, xd, xs, si, nb)    the signature of dot_simd's rowdots
"""
from __future__ import annotations

from llvmlite import ir
from numba.extending import intrinsic

from numba import types

from .dot_simd import (F32T, I8, I32, I64, PREFETCH_BYTES, _close_loop, _fn, _is_arr, _is_int, _load_half,
                       _open_loop, _prefetch, _splat, _splat_val, _vec, rowdot_pointers)
from .gemm_q8 import VNNI512


def _dpbusd(builder, acc, u8, s8, lanes):
    vi = _vec(I32, lanes)
    fn = _fn(builder, f"llvm.x86.avx512.vpdpbusd.{32 * lanes}", vi, [vi] * 3)
    return builder.call(fn, [acc, builder.bitcast(u8, vi), builder.bitcast(s8, vi)])


def _nibble_pairs(builder, p0, p1):
    """<64 x i8>: the low then the high nibbles of the 16 bytes at p0, then those of the 16 at p1."""
    v16 = _vec(I8, 16).as_pointer()
    q = builder.shuffle_vector(builder.load(builder.bitcast(p0, v16), align=1),
                               builder.load(builder.bitcast(p1, v16), align=1),
                               ir.Constant(_vec(I32, 32), list(range(32))))
    lo = builder.and_(q, _splat(15, 32))
    hi = builder.lshr(q, _splat(4, 32))
    order = list(range(16)) + list(range(32, 48)) + list(range(16, 32)) + list(range(48, 64))
    return builder.shuffle_vector(lo, hi, ir.Constant(_vec(I32, 64), order))


def _nibbles_one(builder, p0):
    """<32 x i8>: the low then the high nibbles of the 16 bytes at p0."""
    q = builder.load(builder.bitcast(p0, _vec(I8, 16).as_pointer()), align=1)
    return builder.shuffle_vector(builder.and_(q, _splat(15, 16)), builder.lshr(q, _splat(4, 16)),
                                  ir.Constant(_vec(I32, 32), list(range(32))))


def _make_rowdot_vnni_q4(block_bytes, qs_at, offset, has_min):
    """rowdot(w, wi, xq, xi, xd, xs, si, nb) -> float32 over nb blocks of a Q4_0 (offset 8) or Q4_1 (its
    minimum, has_min: m * s_x per block) row: the nibbles at qs_at of each block, d its first fp16."""

    def typer(typingctx, w, wi, xq, xi, xd, xs, si, nb):
        if not (_is_arr(w, xq) and _is_int(wi, xi, si, nb)):
            return None

        def codegen(context, builder, sig, args):
            wp, xp, dp, sp, nbv = rowdot_pointers(context, builder, sig, args)
            v16f, v8f = _vec(F32T, 16), _vec(F32T, 8)
            fma16 = _fn(builder, "llvm.fma.v16f32", v16f, [v16f] * 3)
            fma1 = _fn(builder, "llvm.fma.f32", F32T, [F32T] * 3)
            zero16i = ir.Constant(_vec(I32, 16), [0] * 16)
            pairs = builder.ashr(nbv, ir.Constant(I64, 1))
            entry, loop, done, i = _open_loop(builder, pairs)
            acc = builder.phi(v16f)
            accm = builder.phi(F32T)
            b0 = builder.mul(i, ir.Constant(I64, 2))
            bp0 = builder.gep(wp, [builder.mul(b0, ir.Constant(I64, block_bytes))])
            bp1 = builder.gep(bp0, [ir.Constant(I64, block_bytes)])
            _prefetch(builder, bp0, PREFETCH_BYTES)
            q = _nibble_pairs(builder, builder.gep(bp0, [ir.Constant(I64, qs_at)]),
                              builder.gep(bp1, [ir.Constant(I64, qs_at)]))
            a = builder.load(builder.bitcast(builder.gep(xp, [builder.mul(b0, ir.Constant(I64, 32))]),
                                             _vec(I8, 64).as_pointer()), align=1)
            isum = _dpbusd(builder, zero16i, q, a, 16)
            if offset:
                isum = builder.sub(isum, _dpbusd(builder, zero16i, _splat(offset, 64), a, 16))
            s0 = builder.fmul(_load_half(builder, bp0), builder.load(builder.gep(dp, [b0])))
            s1 = builder.fmul(_load_half(builder, bp1),
                              builder.load(builder.gep(dp, [builder.add(b0, ir.Constant(I64, 1))])))
            sv = builder.insert_element(builder.insert_element(ir.Constant(v16f, None), s0, ir.Constant(I32, 0)),
                                        s1, ir.Constant(I32, 8))
            sv = builder.shuffle_vector(sv, ir.Constant(v16f, None), ir.Constant(_vec(I32, 16), [0] * 8 + [8] * 8))
            acc2 = builder.call(fma16, [builder.sitofp(isum, v16f), sv, acc])
            accm2 = accm
            if has_min:
                for j, bp in ((0, bp0), (1, bp1)):
                    m = _load_half(builder, builder.gep(bp, [ir.Constant(I64, 2)]))
                    xs_j = builder.load(builder.gep(sp, [builder.add(b0, ir.Constant(I64, j))]))
                    accm2 = builder.call(fma1, [m, xs_j, accm2])
            accf, mf = _close_loop(builder, i, pairs, entry, loop, done,
                                   [(acc, ir.Constant(v16f, [0.0] * 16), acc2), (accm, ir.Constant(F32T, 0.0), accm2)])
            # an odd last block: the same in 8 lanes
            odd = builder.icmp_signed("!=", builder.and_(nbv, ir.Constant(I64, 1)), ir.Constant(I64, 0))
            head = builder.block
            tail = builder.append_basic_block("odd_block")
            end = builder.append_basic_block("rowdot_end")
            builder.cbranch(odd, tail, end)
            builder.position_at_end(tail)
            bl = builder.sub(nbv, ir.Constant(I64, 1))
            bp = builder.gep(wp, [builder.mul(bl, ir.Constant(I64, block_bytes))])
            q = _nibbles_one(builder, builder.gep(bp, [ir.Constant(I64, qs_at)]))
            a = builder.load(builder.bitcast(builder.gep(xp, [builder.mul(bl, ir.Constant(I64, 32))]),
                                             _vec(I8, 32).as_pointer()), align=1)
            zero8i = ir.Constant(_vec(I32, 8), [0] * 8)
            isum = _dpbusd(builder, zero8i, q, a, 8)
            if offset:
                isum = builder.sub(isum, _dpbusd(builder, zero8i, _splat(offset, 32), a, 8))
            s = builder.fmul(_load_half(builder, bp), builder.load(builder.gep(dp, [bl])))
            part = builder.fmul(builder.sitofp(isum, v8f), _splat_val(builder, s, 8, F32T))
            acc_t = builder.fadd(accf, builder.shuffle_vector(part, ir.Constant(v8f, [0.0] * 8),
                                                               ir.Constant(_vec(I32, 16), list(range(16)))))
            accm_t = mf
            if has_min:
                m = _load_half(builder, builder.gep(bp, [ir.Constant(I64, 2)]))
                accm_t = builder.call(fma1, [m, builder.load(builder.gep(sp, [bl])), mf])
            tail_end = builder.block
            builder.branch(end)
            builder.position_at_end(end)
            accv = builder.phi(v16f)
            accv.add_incoming(accf, head)
            accv.add_incoming(acc_t, tail_end)
            mv = builder.phi(F32T)
            mv.add_incoming(mf, head)
            mv.add_incoming(accm_t, tail_end)
            # the 16 lanes summed as a tree: (i + 8), then (i + 4), (i + 2), (i + 1)
            v = accv
            for width in (8, 4, 2, 1):
                lo = builder.shuffle_vector(v, ir.Constant(v.type, None),
                                            ir.Constant(_vec(I32, width), list(range(width))))
                hi = builder.shuffle_vector(v, ir.Constant(v.type, None),
                                            ir.Constant(_vec(I32, width), list(range(width, 2 * width))))
                v = builder.fadd(lo, hi)
            return builder.fadd(builder.extract_element(v, ir.Constant(I32, 0)), mv)

        return types.float32(w, wi, xq, xi, xd, xs, si, nb), codegen

    return intrinsic(typer)


if VNNI512:
    rowdot_q4_0_fast = _make_rowdot_vnni_q4(18, 2, 8, False)
    rowdot_q4_1_fast = _make_rowdot_vnni_q4(20, 4, 0, True)
else:  # the AVX2 kernels are the fast ones there
    from .dot_simd import rowdot_q4_0 as rowdot_q4_0_fast, rowdot_q4_1 as rowdot_q4_1_fast  # noqa: F401
