"""K-quant whole-row dots as numba intrinsics, with the numbers of llama.cpp's AVX2 kernels (dot_simd.py has
the 32-weight formats' and the IR helpers both use):

    rowdot_q4_k/q5_k/q6_k        ggml_vec_dot_q*_K_q8_K
    rowdot_q4_k_x8(_gemm)        the repacked ggml_gemv/gemm_q4_K_8x8_q8_K
    rowdot_q*_k_tiled            ggml's tiled K-quant matmul (batches of 8 tokens or more)

Arguments: `w` and `x` are C-contiguous arrays addressed by a flat element index.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .dot_simd import (F32T, I8, I16, I32, I64, PREFETCH_BYTES, _close_loop, _data_ptr, _fn, _hsum8, _is_arr,
                       _is_int, _load_half, _load_vec, _open_loop, _pair_sums, _prefetch, _scaled_lanes, _splat,
                       _splat_val, _vec)


# ---- K-quant whole-row dots: llama.cpp's AVX2 ggml_vec_dot_q{4,5,6}_K_q8_K, lane for lane -------------
# Per super-block of 256 the int8 products are summed into the 8 int32 lanes of the AVX2 code (each lane
# holds 4 consecutive bytes of every 32-byte group, weighted by its sub-block's scale); the lanes are
# converted to float and fused-multiply-added with d into an 8-lane accumulator. The minimums' term:
# Q4_K keeps 4 float lanes of it (fma with -d_y * dmin), Q5_K one float (its integer total, fma), Q6_K
# subtracts 32 * scale * bsum from the integer lanes. The row's result is hsum_float_8 (+ the minimums).

def _scales_mins_k4_vec(builder, bp):
    """get_scale_min_k4 for j = 0..7 from the 12 bytes at bp + 4 of a Q4_K/Q5_K super-block, as <16 x i8>:
    the scales, then the minimums. In four 32-bit words, as llama.cpp's kernels do (utmp and kmask1..3):
    12 integer operations where a byte-by-byte form took about 90 of a Q4_K super-block's 190 instructions
    (AVX2 code)."""
    c = lambda v: ir.Constant(I32, v)  # noqa: E731
    u = [builder.load(builder.bitcast(builder.gep(bp, [ir.Constant(I64, 4 + 4 * k)]), I32.as_pointer()), align=1)
         for k in range(3)]
    m1, m2, m3 = c(0x3F3F3F3F), c(0x0F0F0F0F), c(0x03030303)
    u3 = builder.or_(builder.and_(builder.lshr(u[2], c(4)), m2), builder.shl(builder.and_(builder.lshr(u[1], c(6)), m3), c(4)))
    u2 = builder.and_(u[1], m1)
    u1 = builder.or_(builder.and_(u[2], m2), builder.shl(builder.and_(builder.lshr(u[0], c(6)), m3), c(4)))
    u0 = builder.and_(u[0], m1)
    v = ir.Constant(_vec(I32, 4), None)
    for k, w in enumerate((u0, u1, u2, u3)):
        v = builder.insert_element(v, w, c(k))
    return builder.bitcast(v, _vec(I8, 16))


def superblock(builder, wp, xp, dp, i, block_bytes):
    """Super-block i of a K-quant row: its first byte, its 256 activations and their scale; and every cache
    line of the super-block PREFETCH_BYTES on asked for. A super-block spans 84 to 210 bytes: one prefetch
    at its start left every other line of a Q4_K row (144 bytes) and two of three of a Q6_K row to the
    hardware, and a Llama-3.2-1B-shaped Q4_K_M file decoded at 25 t/s instead of 32 (medians of eight
    interleaved process pairs on an AMD EPYC VM)."""
    bp = builder.gep(wp, [builder.mul(i, ir.Constant(I64, block_bytes))])
    for o in range(0, block_bytes, 64):     # gaps of at most 64 bytes, to the next super-block's first
        _prefetch(builder, bp, PREFETCH_BYTES + o)
    return bp, builder.gep(xp, [builder.mul(i, ir.Constant(I64, 256))]), builder.load(builder.gep(dp, [i]))


def q8k_row_args(context, builder, sig, args):
    """The pointers of a Q8_K rowdot's arguments (w, wo, nbk, xq, xo, xd, xdo, xs, xso): the row's first
    block, the activations, their scales and their 16-sums (and that array's element type), the block
    count as i64."""
    w_, wo_, nb_, xq_, xo_, xd_, xdo_, xs_, xso_ = args
    sty = context.get_value_type(sig.args[7].dtype)
    return (_data_ptr(context, builder, sig.args[0], w_, wo_, I8),
            _data_ptr(context, builder, sig.args[3], xq_, xo_, I8),
            _data_ptr(context, builder, sig.args[5], xd_, xdo_, F32T),
            _data_ptr(context, builder, sig.args[7], xs_, xso_, sty), sty,
            builder.sext(nb_, I64) if sig.args[2].bitwidth < 64 else nb_)


def _make_rowdot_k(kind):
    """An intrinsic rowdot(w, wo, nbk, xq, xo, xd, xdo, xs, xso) -> float32: one row of nbk super-blocks at
    byte wo of w times one token's Q8_K activations (xq from xo, scales xd from xdo, int32 16-sums xs
    from xso). kind: "q4_k", "q5_k" or "q6_k"."""
    tiled = kind.endswith("_tiled")  # ggml's tiled K-quant matmul (batches of 8+ tokens): per super-block
    kind = kind.removesuffix("_tiled")  # res = d * isum (- dmin * imin, fused), acc = fma(res, d_y, acc)
    block_bytes = {"q4_k": 144, "q4_k_x8": 144, "q4_k_x8_gemm": 144, "q5_k": 176, "q6_k": 210}[kind]
    x8 = kind.startswith("q4_k_x8")
    per_pair = kind == "q4_k_x8_gemm"  # the 4-row kernel accumulates floats after each pair of sub-blocks
    if x8:
        kind = "q4_k"

    def typer(typingctx, w, wo, nbk, xq, xo, xd, xdo, xs, xso):
        if not (_is_arr(w, xq) and _is_int(wo, nbk, xo, xdo, xso)):
            return None

        def codegen(context, builder, sig, args):
            wp, xp, dp, sp, sty, nbv = q8k_row_args(context, builder, sig, args)
            f8, f4 = _vec(F32T, 8), _vec(F32T, 4)
            zero8, zero4 = ir.Constant(f8, [0.0] * 8), ir.Constant(f4, [0.0] * 4)
            fma8 = _fn(builder, "llvm.fma.v8f32", f8, [f8] * 3)
            fma4 = _fn(builder, "llvm.fma.v4f32", f4, [f4] * 3)
            fma1 = _fn(builder, "llvm.fma.f32", F32T, [F32T] * 3)
            c32 = lambda v: ir.Constant(I32, v)  # noqa: E731

            entry, loop, done, i = _open_loop(builder, nbv)
            acc = builder.phi(f8)
            accm = builder.phi(f4 if kind == "q4_k" else F32T)

            bp, xb, yd = superblock(builder, wp, xp, dp, i, block_bytes)
            bsum = builder.gep(sp, [builder.mul(i, ir.Constant(I64, 16))])
            # the 16 sums of 16 activations as <16 x i32> (one vector load of the runtime's int32 sums)
            bsv = builder.load(builder.bitcast(bsum, _vec(sty, 16).as_pointer()), align=4)
            if sty.width != 32:
                bsv = builder.trunc(bsv, _vec(I32, 16)) if sty.width > 32 else builder.sext(bsv, _vec(I32, 16))
            sumi = ir.Constant(_vec(I32, 8), [0] * 8)
            if kind in ("q4_k", "q5_k"):
                dw = _load_half(builder, bp)
                mw = _load_half(builder, builder.gep(bp, [ir.Constant(I64, 2)]))
                d = builder.fmul(yd, dw)  # = fl(d_w * d_y) of the repacked kernels too
                dmin = builder.fmul(builder.fneg(yd), mw)  # = -fl(dmin_w * d_y)
                scm = _scales_mins_k4_vec(builder, bp)   # <16 x i8>: the 8 scales, then the 8 minimums
                qs_at = 48 if kind == "q5_k" else 16
                hv = _load_vec(builder, bp, 16) if kind == "q5_k" else None
                mins = builder.zext(builder.shuffle_vector(scm, ir.Constant(scm.type, None),
                                                           ir.Constant(_vec(I32, 8), list(range(8, 16)))), _vec(I32, 8))
                # prod[k]: the minimums of sub-blocks 2k, 2k + 1 times their activations' 32-sums
                prodv = _pair_sums(builder, builder.mul(mins, _pair_sums(builder, bsv, 8)), 4)
                prod = [builder.extract_element(prodv, c32(k)) for k in range(4)]
                red = _fn(builder, "llvm.vector.reduce.add.v8i32", I32, [_vec(I32, 8)])
                if x8:
                    dxv, mxv = _splat_val(builder, d, 8, F32T), _splat_val(builder, builder.fneg(dmin), 4, F32T)
                    acc_p, accm_p = acc, accm
                for c in range(4):
                    qv = _load_vec(builder, bp, qs_at + 32 * c)
                    halves = [builder.and_(qv, _splat(15, 32)), builder.lshr(qv, _splat(4, 32))]
                    for h in range(2):
                        q = halves[h]
                        if hv is not None:
                            bit = builder.and_(builder.lshr(hv, _splat(2 * c + h, 32)), _splat(1, 32))
                            q = builder.or_(q, builder.shl(bit, _splat(4, 32)))
                        xv = _load_vec(builder, xb, 64 * c + 32 * h)
                        sc16 = builder.zext(builder.shuffle_vector(scm, ir.Constant(scm.type, None),
                                                                   ir.Constant(_vec(I32, 16), [2 * c + h] * 16)),
                                            _vec(I16, 16))
                        sumi = builder.add(sumi, _scaled_lanes(builder, q, xv, sc16))
                    if per_pair:  # ggml_gemm_q4_K_8x8_q8_K: fma after every pair of sub-blocks
                        isum = builder.sitofp(builder.call(red, [sumi]), F32T)
                        acc_p = builder.call(fma8, [_splat_val(builder, isum, 8, F32T), dxv, acc_p])
                        pv = builder.insert_element(ir.Constant(f4, [0.0] * 4), builder.sitofp(prod[c], F32T), c32(0))
                        accm_p = builder.call(fma4, [pv, mxv, accm_p])
                        sumi = ir.Constant(_vec(I32, 8), [0] * 8)
                if tiled:
                    isum = builder.sitofp(builder.call(red, [sumi]), F32T)
                    imin = builder.sitofp(builder.add(builder.add(prod[0], prod[1]), builder.add(prod[2], prod[3])), F32T)
                    res = builder.call(fma1, [builder.fneg(mw), imin, builder.fmul(dw, isum)])
                    acc2 = builder.call(fma8, [_splat_val(builder, res, 8, F32T), _splat_val(builder, yd, 8, F32T), acc])
                    accm2 = accm
                elif per_pair:
                    acc2, accm2 = acc_p, accm_p
                elif x8:  # one integer total per row, scaled by fl(d_w * d_y): ggml_gemv_q4_K_8x8_q8_K
                    isum = builder.sitofp(builder.call(red, [sumi]), F32T)
                    imin = builder.add(builder.add(prod[0], prod[1]), builder.add(prod[2], prod[3]))
                    acc2 = builder.call(fma8, [_splat_val(builder, isum, 8, F32T), dxv, acc])
                    pv = builder.insert_element(ir.Constant(f4, [0.0] * 4), builder.sitofp(imin, F32T), c32(0))
                    accm2 = builder.call(fma4, [pv, mxv, accm])
                else:
                    acc2 = builder.call(fma8, [_splat_val(builder, d, 8, F32T), builder.sitofp(sumi, f8), acc])
                if x8 or tiled:
                    pass  # accm2 made above
                elif kind == "q4_k":
                    pv = ir.Constant(_vec(I32, 4), None)
                    for k in range(4):
                        pv = builder.insert_element(pv, prod[k], c32(k))
                    accm2 = builder.call(fma4, [_splat_val(builder, dmin, 4, F32T), builder.sitofp(pv, f4), accm])
                else:
                    tot = builder.add(builder.add(prod[0], prod[1]), builder.add(prod[2], prod[3]))
                    accm2 = builder.call(fma1, [dmin, builder.sitofp(tot, F32T), accm])
            else:  # q6_k
                d = builder.fmul(yd, _load_half(builder, builder.gep(bp, [ir.Constant(I64, 208)])))
                scv = _load_vec(builder, bp, 192, 16)   # the 16 sub-block scales, int8
                for j in range(2):
                    ql1, ql2 = _load_vec(builder, bp, 64 * j), _load_vec(builder, bp, 64 * j + 32)
                    qh = _load_vec(builder, bp, 128 + 32 * j)
                    # bits 2k, 2k + 1 of qh moved to bits 4, 5: one shift (none for k = 2) and a mask
                    hb = [builder.and_(builder.shl(qh, _splat(4 - 2 * k, 32)) if k < 2 else
                                       (builder.lshr(qh, _splat(2, 32)) if k == 3 else qh), _splat(0x30, 32))
                          for k in range(4)]
                    qk = [builder.or_(builder.and_(ql1, _splat(15, 32)), hb[0]),
                          builder.or_(builder.and_(ql2, _splat(15, 32)), hb[1]),
                          builder.or_(builder.lshr(ql1, _splat(4, 32)), hb[2]),
                          builder.or_(builder.lshr(ql2, _splat(4, 32)), hb[3])]
                    for k in range(4):
                        a = 8 * j + 2 * k   # this step's 32 weights: sub-blocks a and a + 1
                        sc16 = builder.sext(builder.shuffle_vector(scv, ir.Constant(scv.type, None),
                                                                   ir.Constant(_vec(I32, 16), [a] * 8 + [a + 1] * 8)),
                                            _vec(I16, 16))
                        sumi = builder.add(sumi, _scaled_lanes(builder, qk[k], _load_vec(builder, xb, 128 * j + 32 * k),
                                                               sc16))
                # the offset 32: lane l less 32 x (its two sub-blocks' scale x 16-sum), in vector operations
                prod = builder.mul(bsv, builder.sext(scv, _vec(I32, 16)))
                sumi = builder.sub(sumi, builder.shl(_pair_sums(builder, prod, 8), _splat(5, 8, I32)))
                if tiled:
                    red = _fn(builder, "llvm.vector.reduce.add.v8i32", I32, [_vec(I32, 8)])
                    dw = _load_half(builder, builder.gep(bp, [ir.Constant(I64, 208)]))
                    res = builder.fmul(dw, builder.sitofp(builder.call(red, [sumi]), F32T))
                    acc2 = builder.call(fma8, [_splat_val(builder, res, 8, F32T), _splat_val(builder, yd, 8, F32T), acc])
                else:
                    acc2 = builder.call(fma8, [_splat_val(builder, d, 8, F32T), builder.sitofp(sumi, f8), acc])
                accm2 = accm

            accf, mf = _close_loop(builder, i, nbv, entry, loop, done,
                                   [(acc, zero8, acc2), (accm, zero4 if kind == "q4_k" else ir.Constant(F32T, 0.0), accm2)])
            if tiled:
                return builder.extract_element(accf, c32(0))
            if x8:  # acc_row - acc_min_rows, lane 0 holds this row
                return builder.fsub(builder.extract_element(accf, c32(0)), builder.extract_element(mf, c32(0)))
            total = _hsum8(builder, accf)
            if kind == "q4_k":  # acc_m + movehl, then + movehdup: (m0 + m2) + (m1 + m3)
                e = [builder.extract_element(mf, c32(k)) for k in range(4)]
                mf = builder.fadd(builder.fadd(e[0], e[2]), builder.fadd(e[1], e[3]))
            if kind == "q6_k":
                return total
            return builder.fadd(total, mf)

        return types.float32(w, wo, nbk, xq, xo, xd, xdo, xs, xso), codegen

    return intrinsic(typer)


rowdot_q4_k = _make_rowdot_k("q4_k")
# Q4_K weights with a multiple of 8 rows: llama.cpp on AVX2 repacks them 8 rows interleaved and runs
# ggml_gemv_q4_K_8x8_q8_K, whose per-row numbers are these (integer sums over the whole super-block)
rowdot_q4_k_x8 = _make_rowdot_k("q4_k_x8")
# ... and ggml_gemm_q4_K_8x8_q8_K for 4 tokens at a time (a float fma after each pair of sub-blocks)
rowdot_q4_k_x8_gemm = _make_rowdot_k("q4_k_x8_gemm")
# ggml's tiled matmul, which llama.cpp uses for the (not repacked) K-quants from 8 tokens on
rowdot_q4_k_tiled = _make_rowdot_k("q4_k_tiled")
rowdot_q5_k_tiled = _make_rowdot_k("q5_k_tiled")
rowdot_q6_k_tiled = _make_rowdot_k("q6_k_tiled")
rowdot_q5_k = _make_rowdot_k("q5_k")
rowdot_q6_k = _make_rowdot_k("q6_k")
