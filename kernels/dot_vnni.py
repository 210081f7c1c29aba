"""Whole-row dots for the fast arithmetic on AVX-512 VNNI hosts: two blocks of 32 a step, `vpdpbusd`.

The kernels of dot_simd.py reproduce llama.cpp's AVX2 build lane for lane: 32 weights a step in 8 int32
lanes (`vpsignb`, `vpmaddubsw`, `vpmaddwd`) and a float fma each block. Decoding a model that fits in
memory spends its time there, not waiting for memory (a 1B Q4_0 file: 25.8 GB/s from cache, 23.5 from
memory), so on hosts with AVX-512 VNNI the fast arithmetic takes these instead: two blocks a step in the
16 int32 lanes of a zmm register, the weights as unsigned bytes (the nibbles as they are stored) times the
signed activations by one `vpdpbusd`, the format's offset (8 for Q4_0) taken off exactly as
`vpdpbusd(offset bytes, activations)`, and one fma with the two blocks' scales (lanes 0-7 and 8-15). The
numbers differ from llama.cpp's only in the order of the float sums.

    rowdot_q4_0_fast, rowdot_q4_1_fast (w, wi, xq, xi, xd, xs, si, nb)   dot_simd's rowdot_q4_0's signature
    rowdot_q4_k_fast, rowdot_q6_k_fast (w, wo, nbk, xq, xo, xd, xdo, xs, xso)   rowdot_q4_k's

The K-quants take 64 weights a `vpdpbusd`: two sub-blocks of 32 (Q4_K: a byte's low and high nibbles),
or four of 16 (Q6_K), each in its own lanes, multiplied there by its scale in integers; the super-block's
int32 lanes are converted once and fused into the accumulator with d. The minimums (Q4_K) and Q6_K's
offset of 32 come from the activations' 16-sums, as in llama.cpp.
"""
from __future__ import annotations

from llvmlite import ir
from numba.extending import intrinsic

from numba import types

from .dot_simd import (F32T, I8, I32, I64, PREFETCH_BYTES, _close_loop, _fn, _is_arr, _is_int, _load_half,
                       _load_vec, _odd_last_block, _open_loop, _prefetch, _splat, _splat_val, _vec, rowdot_pointers)
from .dot_simd_k import _scales_mins_k4_vec, q8k_row_args, superblock
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

            def last_block(bl, vals):
                accf, mf = vals
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
                if has_min:
                    m = _load_half(builder, builder.gep(bp, [ir.Constant(I64, 2)]))
                    mf = builder.call(fma1, [m, builder.load(builder.gep(sp, [bl])), mf])
                return [acc_t, mf]

            accv, mv = _odd_last_block(builder, nbv, [accf, mf], last_block)
            return builder.fadd(_hsum16(builder, accv), mv)

        return types.float32(w, wi, xq, xi, xd, xs, si, nb), codegen

    return intrinsic(typer)


def _hsum16(builder, v):
    """The 16 lanes summed as a tree: (i + 8), then (i + 4), (i + 2), (i + 1)."""
    for width in (8, 4, 2, 1):
        lo = builder.shuffle_vector(v, ir.Constant(v.type, None), ir.Constant(_vec(I32, width), list(range(width))))
        hi = builder.shuffle_vector(v, ir.Constant(v.type, None),
                                    ir.Constant(_vec(I32, width), list(range(width, 2 * width))))
        v = builder.fadd(lo, hi)
    return builder.extract_element(v, ir.Constant(I32, 0))


def _to_i32(builder, v, n):
    """A vector of n integers of any width as <n x i32>."""
    w = v.type.element.width
    return v if w == 32 else (builder.trunc(v, _vec(I32, n)) if w > 32 else builder.sext(v, _vec(I32, n)))


def _dpwssd(builder, acc, a, b):
    """acc + the pairwise int16 products of a and b (16 lanes): where a's lanes are int16 values (high half
    their sign) and b's lanes hold an int16 in the low half and 0 in the high one, lane i gains a[i] * b[i]
    exactly: one `vpdpwssd` instead of `vpmulld` + add."""
    vi = _vec(I32, 16)
    return builder.call(_fn(builder, "llvm.x86.avx512.vpdpwssd.512", vi, [vi] * 3), [acc, a, b])


def _make_rowdot_vnni_k(kind):
    """rowdot(w, wo, nbk, xq, xo, xd, xdo, xs, xso) -> float32 over nbk super-blocks of a Q4_K or Q6_K row
    times Q8_K activations (the arguments of dot_simd_k's rowdot_q4_k). A `vpdpbusd` lane sums 4 products
    (at most 4 * 63 * 128 < 2^15), so the scale goes on by `vpdpwssd`; the minimums' term (Q4_K, with
    -d_y * dmin) and Q6_K's offset (32 * scale * 16-sum) are lane-wise too, summed once at the row's end."""
    block_bytes = {"q4_k": 144, "q6_k": 210}[kind]

    def typer(typingctx, w, wo, nbk, xq, xo, xd, xdo, xs, xso):
        if not (_is_arr(w, xq) and _is_int(wo, nbk, xo, xdo, xso)):
            return None

        def codegen(context, builder, sig, args):
            wp, xp, dp, sp, sty, nbv = q8k_row_args(context, builder, sig, args)
            v16f, v16i = _vec(F32T, 16), _vec(I32, 16)
            fma16 = _fn(builder, "llvm.fma.v16f32", v16f, [v16f] * 3)
            zero16i, zero16f = ir.Constant(v16i, [0] * 16), ir.Constant(v16f, [0.0] * 16)

            entry, loop, done, i = _open_loop(builder, nbv)
            acc = builder.phi(v16f)
            accm = builder.phi(v16f)
            bp, xb, yd = superblock(builder, wp, xp, dp, i, block_bytes)
            bsv = builder.load(builder.bitcast(builder.gep(sp, [builder.mul(i, ir.Constant(I64, 16))]),
                                               _vec(sty, 16).as_pointer()), align=4)
            bsv = _to_i32(builder, bsv, 16)
            sums = [zero16i, zero16i]   # two chains: vpdpwssd's latency (5 cycles) would bound one
            if kind == "q4_k":
                d = builder.fmul(yd, _load_half(builder, bp))
                dmin = builder.fmul(builder.fneg(yd), _load_half(builder, builder.gep(bp, [ir.Constant(I64, 2)])))
                scm = builder.zext(_scales_mins_k4_vec(builder, bp), v16i)   # 8 scales, 8 minimums
                for c in range(4):  # bytes 32c..32c+31: sub-block 2c in the low nibbles, 2c + 1 in the high
                    qv = _load_vec(builder, bp, 16 + 32 * c)
                    q = builder.shuffle_vector(builder.and_(qv, _splat(15, 32)), builder.lshr(qv, _splat(4, 32)),
                                               ir.Constant(_vec(I32, 64), list(range(64))))
                    p = _dpbusd(builder, zero16i, q, _load_vec(builder, xb, 64 * c, 64), 16)
                    s16 = builder.shuffle_vector(scm, ir.Constant(v16i, None),
                                                 ir.Constant(v16i, [2 * c] * 8 + [2 * c + 1] * 8))
                    sums[c % 2] = _dpwssd(builder, sums[c % 2], p, s16)
                sumi = builder.add(*sums)
                m16 = builder.shuffle_vector(scm, ir.Constant(v16i, None),
                                             ir.Constant(v16i, [8 + j // 2 for j in range(16)]))
                accm2 = builder.call(fma16, [_splat_val(builder, dmin, 16, F32T),
                                             builder.sitofp(builder.mul(m16, bsv), v16f), accm])
            else:  # q6_k: 6-bit values 0..63 (offset 32), a signed scale per 16
                d = builder.fmul(yd, _load_half(builder, builder.gep(bp, [ir.Constant(I64, 208)])))
                scv = builder.sext(_load_vec(builder, bp, 192, 16), v16i)
                # vpdpwssd's operand: the scale in the low int16 of its lane, the high one 0 (not its sign)
                scw = builder.and_(scv, ir.Constant(v16i, [0xFFFF] * 16))
                for j in range(2):  # 128 weights: low nibbles at ql[64j..], 2 high bits each at qh[32j..]
                    ql = _load_vec(builder, bp, 64 * j, 64)
                    qh = _load_vec(builder, bp, 128 + 32 * j)
                    qh = builder.shuffle_vector(qh, builder.lshr(qh, _splat(2, 32)),
                                                ir.Constant(_vec(I32, 64), list(range(64))))
                    q = [builder.or_(builder.and_(ql, _splat(15, 64)),
                                     builder.and_(builder.shl(qh, _splat(4, 64)), _splat(0x30, 64))),
                         builder.or_(builder.lshr(ql, _splat(4, 64)), builder.and_(qh, _splat(0x30, 64)))]
                    for h in range(2):  # weights 128j + 64h ..: four sub-blocks of 16, four lanes each
                        p = _dpbusd(builder, zero16i, q[h], _load_vec(builder, xb, 128 * j + 64 * h, 64), 16)
                        s16 = builder.shuffle_vector(scw, ir.Constant(v16i, None),
                                                     ir.Constant(v16i, [8 * j + 4 * h + lane // 4 for lane in range(16)]))
                        sums[h] = _dpwssd(builder, sums[h], p, s16)
                sumi = builder.sub(builder.add(*sums), builder.shl(builder.mul(scv, bsv), _splat(5, 16, I32)))
                accm2 = accm
            acc2 = builder.call(fma16, [_splat_val(builder, d, 16, F32T), builder.sitofp(sumi, v16f), acc])
            accf, mf = _close_loop(builder, i, nbv, entry, loop, done, [(acc, zero16f, acc2), (accm, zero16f, accm2)])
            if kind == "q6_k":
                return _hsum16(builder, accf)
            return builder.fadd(_hsum16(builder, accf), _hsum16(builder, mf))

        return types.float32(w, wo, nbk, xq, xo, xd, xdo, xs, xso), codegen

    return intrinsic(typer)


if VNNI512:
    rowdot_q4_0_fast = _make_rowdot_vnni_q4(18, 2, 8, False)
    rowdot_q4_1_fast = _make_rowdot_vnni_q4(20, 4, 0, True)
    rowdot_q4_k_fast = _make_rowdot_vnni_k("q4_k")
    rowdot_q6_k_fast = _make_rowdot_vnni_k("q6_k")
else:  # the AVX2 kernels are the fast ones there
    from .dot_simd import rowdot_q4_0 as rowdot_q4_0_fast, rowdot_q4_1 as rowdot_q4_1_fast  # noqa: F401
    from .dot_simd_k import rowdot_q4_k as rowdot_q4_k_fast, rowdot_q6_k as rowdot_q6_k_fast  # noqa: F401
