"""Whole-row dot products as numba intrinsics, with the numbers of llama.cpp's AVX2 kernels.

Numba widens every integer operation to int64, which LLVM cannot pack into 32 int8 lanes. These
intrinsics write the LLVM IR directly: load a block's packed weights as a byte vector, unpack them
(nibbles, high bits) with vector shifts and masks, and take the int8 dot product in 8 int32 lanes
(llama.cpp's sign trick, `vpsignb` + `vpmaddubsw` + `vpmaddwd`; elsewhere a portable sext/mul/reduce).
The float side then follows the llama.cpp kernel the row would go through, lane for lane and fma for
fma, so the logits are its bytes:

    rowdot_q4_0 .. rowdot_q8_0   ggml_vec_dot_q*_q8_* (8 float lanes, hsum_float_8)
    rowdot_q4_0_x8               the repacked ggml_gemv/gemm_q4_0_8x8_q8_0 (one float per block)
    rows4_q4_0_x8                its numbers for four rows a call, in the file's layout (the fast decode without VNNI)

The K-quants' row dots are in dot_simd_k.py, the low-bit formats' in dot_simd_lowbit.py.

Arguments: `w` and `x` are C-contiguous arrays addressed by a flat element index.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .dot_common import HOST_FEATURES, SOFT_HALF, half_to_float

I8, I16, I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
AVX2 = "+avx2" in HOST_FEATURES


@njit(cache=True)
def repacked(rows):
    """Whether llama.cpp's AVX2 build runs a Q4_0 or Q4_K matrix of this many rows repacked (8 rows
    interleaved, ggml_gemv/gemm_q4_0_8x8_q8_0 and _q4_K_8x8_q8_K): rows a multiple of 8. Its arithmetic is
    reproduced on every host (the portable kernels keep its lanes), so this does not ask the host."""
    return rows % 8 == 0


def _vec(t, n):
    return ir.VectorType(t, n)


def _splat(v, n, t=I8):
    return ir.Constant(_vec(t, n), [v] * n)


def _fn(builder, name, ret, args):
    mod = builder.module
    try:
        return mod.get_global(name)
    except KeyError:
        return ir.Function(mod, ir.FunctionType(ret, args), name=name)


def _dot_portable(builder, a, x, n):
    """sum(a * x) of two <n x i8> as one int32, for targets without AVX2 (LLVM vectorizes it)."""
    a16 = builder.sext(a, _vec(I16, n))
    x16 = builder.sext(x, _vec(I16, n))
    p = builder.sext(builder.mul(a16, x16), _vec(I32, n))
    red = _fn(builder, f"llvm.vector.reduce.add.v{n}i32", I32, [_vec(I32, n)])
    return builder.call(red, [p])


def _bits_to_bytes(builder, h, hty, n):
    """<n x i8> whose byte j is bit j of the integer h (0 or 1): spread the bytes of h so that lane j
    holds byte j // 8, keep bit j % 8, compare (a byte shuffle, an and, a compare on AVX2)."""
    if hty.bitwidth != 32:
        h = builder.trunc(h, I32) if hty.bitwidth > 32 else builder.zext(h, I32)
    b4 = builder.bitcast(h, _vec(I8, 4))
    spread = builder.shuffle_vector(b4, ir.Constant(_vec(I8, 4), None),
                                    ir.Constant(_vec(I32, n), [j // 8 for j in range(n)]))
    bits = builder.and_(spread, ir.Constant(_vec(I8, n), [1 << (j % 8) for j in range(n)]))
    return builder.zext(builder.icmp_unsigned("!=", bits, _splat(0, n)), _vec(I8, n))


def _is_int(*ts):
    return all(isinstance(t, types.Integer) for t in ts)


def _is_arr(*ts):
    return all(isinstance(t, types.Array) and t.dtype.bitwidth == 8 for t in ts)


# ---- whole-row dots: the loop over blocks in IR, float32 vector accumulators --------------------------
# Per block the int32 lane sums are converted to float and fused-multiply-added with the two scales into
# an 8-lane accumulator, and the minimum's term into a scalar one with fma, as llama.cpp's AVX2 loops do
# (vfmadd231ps / vfmadd231ss in its build); the horizontal sum is hsum_float_8's tree, once per row.

F32T = ir.FloatType()
I64 = ir.IntType(64)


def _dot_lanes(builder, a, x):
    """The 8 int32 partial sums of sum(a * x) over <32 x i8>: lane l sums the products of bytes 4l..4l+3
    (callers weight lanes by sub-block scales, so the portable path keeps the lanes too)."""
    if AVX2:
        sign = _fn(builder, "llvm.x86.avx2.psign.b", _vec(I8, 32), [_vec(I8, 32)] * 2)
        return _widen_pairs(builder, _maddubs(builder, builder.call(sign, [a, a]), builder.call(sign, [x, a])))
    p = builder.mul(builder.sext(a, _vec(I32, 32)), builder.sext(x, _vec(I32, 32)))
    undef = ir.Constant(_vec(I32, 32), None)
    parts = [builder.shuffle_vector(p, undef, ir.Constant(_vec(I32, 8), [4 * lane + k for lane in range(8)]))
             for k in range(4)]
    return builder.add(builder.add(parts[0], parts[1]), builder.add(parts[2], parts[3]))


def _scaled_lanes(builder, q, x, sc16):
    """_dot_lanes(q, x) times the scales: lane l of the 8 int32 lanes by sc16's i16 lanes 2l and 2l + 1 (equal).
    q holds unsigned weights (a K-quant's 0..63 before its offset), so on AVX2 vpmaddubsw takes them as they
    are and vpmaddwd multiplies by the scales while it adds the pairs: the same lanes as the sign trick, a
    vpmaddwd with ones and a vpmulld, in two instructions instead of five (pairs stay below 2 x 63 x 127)."""
    if AVX2:
        return builder.call(_fn(builder, "llvm.x86.avx2.pmadd.wd", _vec(I32, 8), [_vec(I16, 16)] * 2),
                            [_maddubs(builder, q, x), sc16])
    sc = builder.shuffle_vector(sc16, ir.Constant(sc16.type, None), ir.Constant(_vec(I32, 8), list(range(0, 16, 2))))
    return builder.mul(_dot_lanes(builder, q, x), builder.sext(sc, _vec(I32, 8)))


def _hsum8(builder, v):
    """llama.cpp's hsum_float_8: lanes i + (i + 4), then (0 + 2) + (1 + 3)."""
    e = [builder.extract_element(v, ir.Constant(I32, j)) for j in range(8)]
    s = [builder.fadd(e[j + 4], e[j]) for j in range(4)]
    return builder.fadd(builder.fadd(s[0], s[2]), builder.fadd(s[1], s[3]))


def _open_loop(builder, nbv):
    """Start a loop over nbv blocks (skipped when nbv <= 0): (entry, loop, done blocks, index phi)."""
    entry = builder.block
    loop = builder.append_basic_block("blocks")
    done = builder.append_basic_block("blocks_done")
    builder.cbranch(builder.icmp_signed(">", nbv, ir.Constant(I64, 0)), loop, done)
    builder.position_at_end(loop)
    return entry, loop, done, builder.phi(I64)


def _close_loop(builder, i, nbv, entry, loop, done, carried):
    """End a loop over blocks: i += 1 and back to `loop` while i < nbv, each (phi, start, next) of
    `carried` wired up; returns their values in `done` (the starts when the loop did not run)."""
    i2 = builder.add(i, ir.Constant(I64, 1))
    body_end = builder.block
    i.add_incoming(ir.Constant(I64, 0), entry)
    i.add_incoming(i2, body_end)
    for phi, start, nxt in carried:
        phi.add_incoming(start, entry)
        phi.add_incoming(nxt, body_end)
    builder.cbranch(builder.icmp_signed("<", i2, nbv), loop, done)
    builder.position_at_end(done)
    out = []
    for phi, start, nxt in carried:
        v = builder.phi(phi.type)
        v.add_incoming(start, entry)
        v.add_incoming(nxt, body_end)
        out.append(v)
    return out


def _odd_last_block(builder, nbv, values, body):
    """After a loop over pairs of blocks: when nbv is odd, values = body(last block's index, values) in a
    block of its own; returns the values as they are then (phis)."""
    head = builder.block
    tail = builder.append_basic_block("odd_block")
    end = builder.append_basic_block("pairs_end")
    builder.cbranch(builder.icmp_signed("!=", builder.and_(nbv, ir.Constant(I64, 1)), ir.Constant(I64, 0)), tail, end)
    builder.position_at_end(tail)
    tail_values = body(builder.sub(nbv, ir.Constant(I64, 1)), values)
    tail_end = builder.block
    builder.branch(end)
    builder.position_at_end(end)
    out = []
    for v, t in zip(values, tail_values):
        ph = builder.phi(v.type)
        ph.add_incoming(v, head)
        ph.add_incoming(t, tail_end)
        out.append(ph)
    return out


def _data_ptr(context, builder, aryty, ary, idx, elem):
    a = context.make_array(aryty)(context, builder, ary)
    return builder.bitcast(builder.gep(a.data, [idx]), elem.as_pointer())


def half_to_float_vec(builder, h):
    """A <n x i16> of half bits -> <n x float> (one vcvtph2ps with F16C; else element by element)."""
    n = h.type.count
    if not SOFT_HALF:
        return builder.fpext(builder.bitcast(h, _vec(ir.HalfType(), n)), _vec(F32T, n))
    out = ir.Constant(_vec(F32T, n), None)
    for j in range(n):
        out = builder.insert_element(out, half_to_float(builder, builder.extract_element(h, ir.Constant(I32, j))),
                                     ir.Constant(I32, j))
    return out


def _load_half(builder, p8):
    h = builder.load(builder.bitcast(p8, ir.IntType(16).as_pointer()), align=1)
    return half_to_float(builder, h)


# Weights are read once per token, straight from the mapped file: a matrix that does not fit in cache
# streams from memory, and the blocks of 18 to 34 bytes give the hardware prefetcher too little to run ahead
# of (a 37 MB Q4_0 matrix read at 2.3 GB/s a thread without this, 9-12 GB/s with it; 1 KB ahead gave 4,
# 8 KB no more than 4 KB). Each block asks for the line this far on; the K-quants' super-blocks for each of
# their lines (superblock).
PREFETCH_BYTES = 4096


def _prefetch(builder, p8, ahead):
    """llvm.prefetch of the cache line `ahead` bytes past p8 (read, keep in all levels)."""
    fn = _fn(builder, "llvm.prefetch.p0i8", ir.VoidType(), [ir.IntType(8).as_pointer(), I32, I32, I32])
    builder.call(fn, [builder.gep(p8, [ir.Constant(I64, ahead)]), ir.Constant(I32, 0), ir.Constant(I32, 3),
                      ir.Constant(I32, 1)])


def rowdot_pointers(context, builder, sig, args):
    """A rowdot's (w, wi, xq, xi, xd, xs, si, nb) as pointers to the row's first block, the token's
    values, its block scales and sums, and nb as an i64."""
    w_, wi_, xq_, xi_, xd_, xs_, si_, nb_ = args
    wp = _data_ptr(context, builder, sig.args[0], w_, wi_, I8)
    xp = _data_ptr(context, builder, sig.args[2], xq_, xi_, I8)
    dp = _data_ptr(context, builder, sig.args[4], xd_, si_, F32T)
    sp = _data_ptr(context, builder, sig.args[5], xs_, si_, F32T)
    return wp, xp, dp, sp, (builder.sext(nb_, I64) if sig.args[7].bitwidth < 64 else nb_)


def _make_rowdot(block_bytes, decode, has_min, repacked=False):
    """An intrinsic rowdot(w, wi, xq, xi, xd, xs, si, nb) -> float32: sum over nb blocks of one row of
    d_w * d_x * isum (+ m_w * s_x when has_min). decode(builder, block_ptr) -> <32 x i8> weights.
    repacked: the numbers of llama.cpp's 8-row interleaved kernels (ggml_gemv/gemm_q4_0_8x8_q8_0): one
    integer per block, acc = fma(isum, d_w * d_x, acc) in a single float."""

    def typer(typingctx, w, wi, xq, xi, xd, xs, si, nb):
        if not (_is_arr(w, xq) and _is_int(wi, xi, si, nb)):
            return None

        def codegen(context, builder, sig, args):
            wp, xp, dp, sp, nbv = rowdot_pointers(context, builder, sig, args)
            zero8 = ir.Constant(_vec(F32T, 8), [0.0] * 8)
            entry, loop, done, i = _open_loop(builder, nbv)
            acc = builder.phi(_vec(F32T, 8))
            accm = builder.phi(F32T)
            bp = builder.gep(wp, [builder.mul(i, ir.Constant(I64, block_bytes))])
            _prefetch(builder, bp, PREFETCH_BYTES)
            q = decode(builder, bp)
            xv = builder.load(builder.bitcast(builder.gep(xp, [builder.mul(i, ir.Constant(I64, 32))]),
                                              _vec(I8, 32).as_pointer()), align=1)
            ilanes = _dot_lanes(builder, q, xv)
            scale = builder.fmul(_load_half(builder, bp), builder.load(builder.gep(dp, [i])))
            if repacked:  # the block's integer total in lane 0, the other lanes 0
                red = _fn(builder, "llvm.vector.reduce.add.v8i32", I32, [_vec(I32, 8)])
                ilanes = builder.insert_element(ir.Constant(_vec(I32, 8), [0] * 8), builder.call(red, [ilanes]),
                                                ir.Constant(I32, 0))
            lanes = builder.sitofp(ilanes, _vec(F32T, 8))
            sv = builder.shuffle_vector(builder.insert_element(ir.Constant(_vec(F32T, 8), None), scale,
                                                               ir.Constant(I32, 0)),
                                        ir.Constant(_vec(F32T, 8), None), ir.Constant(_vec(I32, 8), [0] * 8))
            fma8 = _fn(builder, "llvm.fma.v8f32", _vec(F32T, 8), [_vec(F32T, 8)] * 3)
            acc2 = builder.call(fma8, [lanes, sv, acc])
            if has_min:
                m = _load_half(builder, builder.gep(bp, [ir.Constant(I64, 2)]))
                fma1 = _fn(builder, "llvm.fma.f32", F32T, [F32T] * 3)
                accm2 = builder.call(fma1, [m, builder.load(builder.gep(sp, [i])), accm])
            else:
                accm2 = accm
            accf, mf = _close_loop(builder, i, nbv, entry, loop, done,
                                   [(acc, zero8, acc2), (accm, ir.Constant(F32T, 0.0), accm2)])
            return builder.fadd(_hsum8(builder, accf), mf)

        return types.float32(w, wi, xq, xi, xd, xs, si, nb), codegen

    return intrinsic(typer)


def _nibbles(builder, p16, off):
    wv = builder.load(builder.bitcast(p16, _vec(I8, 16).as_pointer()), align=1)
    lo = builder.and_(wv, _splat(15, 16))
    hi = builder.lshr(wv, _splat(4, 16))
    q = builder.shuffle_vector(lo, hi, ir.Constant(_vec(I32, 32), list(range(32))))
    return builder.sub(q, _splat(off, 32)) if off else q


def _q5(builder, bp, qh_at, qs_at, off):
    q = _nibbles(builder, builder.gep(bp, [ir.Constant(I64, qs_at)]), 0)
    h = builder.load(builder.bitcast(builder.gep(bp, [ir.Constant(I64, qh_at)]), I32.as_pointer()), align=1)
    q = builder.or_(q, builder.shl(_bits_to_bytes(builder, h, types.uint32, 32), _splat(4, 32)))
    return builder.sub(q, _splat(off, 32)) if off else q


rowdot_q4_0 = _make_rowdot(18, lambda b, p: _nibbles(b, b.gep(p, [ir.Constant(I64, 2)]), 8), False)
# Q4_0 weights with a multiple of 8 rows: llama.cpp on AVX2 runs them repacked (q4_0_8x8_q8_0)
rowdot_q4_0_x8 = _make_rowdot(18, lambda b, p: _nibbles(b, b.gep(p, [ir.Constant(I64, 2)]), 8), False, True)
rowdot_q4_1 = _make_rowdot(20, lambda b, p: _nibbles(b, b.gep(p, [ir.Constant(I64, 4)]), 0), True)
rowdot_q5_0 = _make_rowdot(22, lambda b, p: _q5(b, p, 2, 6, 16), False)
rowdot_q5_1 = _make_rowdot(24, lambda b, p: _q5(b, p, 4, 8, 0), True)
rowdot_q8_0 = _make_rowdot(34, lambda b, p: b.load(b.bitcast(b.gep(p, [ir.Constant(I64, 2)]),
                                                             _vec(I8, 32).as_pointer()), align=1), False)



# ---- four Q4_0 rows at a time: the repacked kernel's numbers, in the file's own layout ------------------
# A decode step streams each weight once, and one row at a time the per-block float work (a scale
# converted and broadcast, 8 lanes converted and fused, per row) held a 1B file's layers to 15 GB/s on an
# AVX2 core pair. Four rows share each block's activations, their integer sums are gathered into 4 lanes
# by two horizontal adds, and one 4-lane fma takes the four rows' scales: 27 ms instead of 35 for those
# layers (same process, same memory). The nibbles are multiplied unsigned (vpmaddubsw needs no sign trick)
# and the offset 8 x sum(x) is taken off in integers, so each row's block total is exact and the float sum
# is llama.cpp's repacked one (ggml_gemv_q4_0_8x8_q8_0: acc = fma(isum, d_w * d_x, acc), block by block),
# equal to rowdot_q4_0_x8 bit for bit.

def _maddubs(builder, u8, s8):
    """<16 x i16>: the pairwise sums of u8 (unsigned) times s8 (signed) bytes (vpmaddubsw; its callers keep
    every pair below its saturation at 2^15)."""
    if AVX2:
        return builder.call(_fn(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(I16, 16), [_vec(I8, 32)] * 2), [u8, s8])
    p = builder.mul(builder.zext(u8, _vec(I16, 32)), builder.sext(s8, _vec(I16, 32)))
    return _pair_sums(builder, p, 16)


def _pair_sums(builder, v, n):
    """<n x T>: v[2i] + v[2i + 1] of a <2n x T> (of 16 int32 on AVX2: a vphaddd and a vpermq)."""
    undef = ir.Constant(v.type, None)
    if AVX2 and n == 8 and v.type.element == I32:
        lo, hi = (builder.shuffle_vector(v, undef, ir.Constant(_vec(I32, 8), list(range(h, h + 8)))) for h in (0, 8))
        h = _hadd(builder, lo, hi)
        return builder.shuffle_vector(h, ir.Constant(h.type, None), ir.Constant(_vec(I32, 8), [0, 1, 4, 5, 2, 3, 6, 7]))
    ev = builder.shuffle_vector(v, undef, ir.Constant(_vec(I32, n), [2 * i for i in range(n)]))
    od = builder.shuffle_vector(v, undef, ir.Constant(_vec(I32, n), [2 * i + 1 for i in range(n)]))
    return builder.add(ev, od)


def _widen_pairs(builder, v16):
    """<8 x i32>: the pairwise sums of a <16 x i16> (vpmaddwd with ones)."""
    if AVX2:
        fn = _fn(builder, "llvm.x86.avx2.pmadd.wd", _vec(I32, 8), [_vec(I16, 16)] * 2)
        return builder.call(fn, [v16, _splat(1, 16, I16)])
    return _pair_sums(builder, builder.sext(v16, _vec(I32, 16)), 8)


def _hadd(builder, a, b):
    """vphaddd: in each 128-bit half, a's two pair sums then b's."""
    if AVX2:
        return builder.call(_fn(builder, "llvm.x86.avx2.phadd.d", _vec(I32, 8), [_vec(I32, 8)] * 2), [a, b])
    ab = builder.shuffle_vector(a, b, ir.Constant(_vec(I32, 16), list(range(16))))
    order = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]
    return _pair_sums(builder, builder.shuffle_vector(ab, ir.Constant(ab.type, None),
                                                      ir.Constant(_vec(I32, 16), order)), 8)


def _gather4(builder, lanes):
    """Four rows' <8 x i32> lanes -> <8 x i32> [row 0..3 of the low half | row 0..3 of the high half]."""
    return _hadd(builder, _hadd(builder, lanes[0], lanes[1]), _hadd(builder, lanes[2], lanes[3]))


def _rows4_q4_0_step(builder, rows, xp, dp, b, two, acc):
    """acc (4 float lanes, one a row) after block b (and b + 1 when `two`) of the four rows at `rows`."""
    c = lambda v, t=I64: ir.Constant(t, v)  # noqa: E731
    v4f, v8f = _vec(F32T, 4), _vec(F32T, 8)
    fma4 = _fn(builder, "llvm.fma.v4f32", v4f, [v4f] * 3)
    n_blk = 2 if two else 1
    xb = builder.gep(xp, [builder.mul(b, c(32))])
    x0 = builder.load(builder.bitcast(xb, _vec(I8, 32).as_pointer()), align=1)
    if two:  # the two blocks' first 16 activations side by side, then their last 16
        x1 = builder.load(builder.bitcast(builder.gep(xb, [c(32)]), _vec(I8, 32).as_pointer()), align=1)
        xlo = builder.shuffle_vector(x0, x1, ir.Constant(_vec(I32, 32), list(range(16)) + list(range(32, 48))))
        xhi = builder.shuffle_vector(x0, x1, ir.Constant(_vec(I32, 32), list(range(16, 32)) + list(range(48, 64))))
    lanes, halves = [], ir.Constant(_vec(I16, 4 * n_blk), None)
    for r, rp in enumerate(rows):
        bp = builder.gep(rp, [builder.mul(b, c(18))])
        _prefetch(builder, bp, PREFETCH_BYTES)
        qa = builder.load(builder.bitcast(builder.gep(bp, [c(2)]), _vec(I8, 16).as_pointer()), align=1)
        qb = (builder.load(builder.bitcast(builder.gep(bp, [c(20)]), _vec(I8, 16).as_pointer()), align=1)
              if two else qa)
        y = builder.shuffle_vector(qa, qb, ir.Constant(_vec(I32, 32), list(range(32))))
        lo = builder.and_(y, _splat(15, 32))
        hi = builder.and_(builder.bitcast(builder.lshr(builder.bitcast(y, _vec(I16, 16)), _splat(4, 16, I16)),
                                          _vec(I8, 32)), _splat(15, 32))
        if two:   # lanes 0-3 block b, 4-7 block b + 1
            p = builder.add(_maddubs(builder, lo, xlo), _maddubs(builder, hi, xhi))
        else:     # the block's 32 nibbles in order
            q = builder.shuffle_vector(lo, hi, ir.Constant(_vec(I32, 32), list(range(16)) + list(range(48, 64))))
            p = _maddubs(builder, q, x0)
        lanes.append(_widen_pairs(builder, p))
        for j in range(n_blk):
            h = builder.load(builder.bitcast(builder.gep(bp, [c(18 * j)]), I16.as_pointer()), align=1)
            halves = builder.insert_element(halves, h, c(4 * j + r, I32))
    eight = _splat(8, 32)
    if two:
        off = _widen_pairs(builder, builder.add(_maddubs(builder, eight, xlo), _maddubs(builder, eight, xhi)))
    else:
        off = _widen_pairs(builder, _maddubs(builder, eight, x0))
    off = _hadd(builder, off, off)
    isum = builder.sub(_gather4(builder, lanes), _hadd(builder, off, off))   # [4 rows, block b | block b + 1]
    lo4, hi4 = ir.Constant(_vec(I32, 4), [0, 1, 2, 3]), ir.Constant(_vec(I32, 4), [4, 5, 6, 7])
    undef8 = ir.Constant(_vec(I32, 8), None)
    if not two:   # one block: its low and high halves' sums
        isum = builder.add(builder.shuffle_vector(isum, undef8, lo4), builder.shuffle_vector(isum, undef8, hi4))
    dw = half_to_float_vec(builder, halves)
    for j in range(n_blk):
        dx = builder.load(builder.gep(dp, [builder.add(b, c(j))]))
        s = builder.fmul(dw if not two else builder.shuffle_vector(dw, ir.Constant(v8f, None), lo4 if j == 0 else hi4),
                         _splat_val(builder, dx, 4, F32T))
        iv = isum if not two else builder.shuffle_vector(isum, undef8, lo4 if j == 0 else hi4)
        acc = builder.call(fma4, [builder.sitofp(iv, v4f), s, acc])
    return acc


@intrinsic
def rows4_q4_0_x8(typingctx, w, wi, rb, xq, xi, xd, si, nb, out, oi):
    """out[oi:oi + 4] = four Q4_0 rows (the first at byte wi of w, rb bytes apart) . one token's Q8_0
    activations (xq from xi, scales xd from si), nb blocks: rowdot_q4_0_x8's numbers, two blocks a step."""
    if not (_is_arr(w, xq) and _is_int(wi, rb, xi, si, nb, oi)):
        return None

    def codegen(context, builder, sig, args):
        w_, wi_, rb_, xq_, xi_, xd_, si_, nb_, out_, oi_ = args
        i64 = lambda v, t: builder.sext(v, I64) if t.bitwidth < 64 else v  # noqa: E731
        wp = _data_ptr(context, builder, sig.args[0], w_, wi_, I8)
        xp = _data_ptr(context, builder, sig.args[3], xq_, xi_, I8)
        dp = _data_ptr(context, builder, sig.args[5], xd_, si_, F32T)
        op = _data_ptr(context, builder, sig.args[8], out_, oi_, F32T)
        rbv, nbv = i64(rb_, sig.args[2]), i64(nb_, sig.args[7])
        rows = [builder.gep(wp, [builder.mul(rbv, ir.Constant(I64, r))]) for r in range(4)]
        v4f = _vec(F32T, 4)
        zero = ir.Constant(v4f, [0.0] * 4)
        pairs = builder.ashr(nbv, ir.Constant(I64, 1))
        entry, loop, done, i = _open_loop(builder, pairs)
        acc = builder.phi(v4f)
        acc2 = _rows4_q4_0_step(builder, rows, xp, dp, builder.mul(i, ir.Constant(I64, 2)), True, acc)
        (accf,) = _close_loop(builder, i, pairs, entry, loop, done, [(acc, zero, acc2)])
        (res,) = _odd_last_block(builder, nbv, [accf], lambda bl, v: [_rows4_q4_0_step(builder, rows, xp, dp, bl,
                                                                                          False, v[0])])
        builder.store(res, builder.bitcast(op, v4f.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(w, wi, rb, xq, xi, xd, si, nb, out, oi), codegen


# ---- dequantizing a block of the legacy formats into 32 floats (the BLAS batch path's weight tiles) --------

def _make_dequant32(decode, has_min):
    """An intrinsic dequant32(w, wo, out, oo): the block at byte wo of the flat uint8 array w as 32 float32 at
    out[oo:], d * q (+ m), in vector instructions with the rowdots' decoders (numba left the 16-weight
    loops of these blocks scalar). The same arithmetic as the scalar loop: one multiply (and one add)."""

    def typer(typingctx, w, wo, out, oo):
        if not (_is_arr(w) and isinstance(out, types.Array) and out.dtype == types.float32 and _is_int(wo, oo)):
            return None

        def codegen(context, builder, sig, args):
            w_, wo_, out_, oo_ = args
            bp = _data_ptr(context, builder, sig.args[0], w_, wo_, I8)
            op = _data_ptr(context, builder, sig.args[2], out_, oo_, F32T)
            y = builder.fmul(_splat_val(builder, _load_half(builder, bp), 32, F32T),
                             builder.sitofp(decode(builder, bp), _vec(F32T, 32)))
            if has_min:
                y = builder.fadd(y, _splat_val(builder, _load_half(builder, builder.gep(bp, [ir.Constant(I64, 2)])),
                                               32, F32T))
            builder.store(y, builder.bitcast(op, _vec(F32T, 32).as_pointer()), align=4)
            return context.get_dummy_value()

        return types.void(w, wo, out, oo), codegen

    return intrinsic(typer)


dequant32_q4_0 = _make_dequant32(lambda b, p: _nibbles(b, b.gep(p, [ir.Constant(I64, 2)]), 8), False)
dequant32_q4_1 = _make_dequant32(lambda b, p: _nibbles(b, b.gep(p, [ir.Constant(I64, 4)]), 0), True)
dequant32_q5_0 = _make_dequant32(lambda b, p: _q5(b, p, 2, 6, 16), False)
dequant32_q5_1 = _make_dequant32(lambda b, p: _q5(b, p, 4, 8, 0), True)
dequant32_q8_0 = _make_dequant32(lambda b, p: b.load(b.bitcast(b.gep(p, [ir.Constant(I64, 2)]),
                                                               _vec(I8, 32).as_pointer()), align=1), False)


# ---- small IR helpers of the row dots here and in dot_simd_k, dot_simd_lowbit, dot_vnni, gemm_* ----

def _load_vec(builder, p8, off, n=32):
    return builder.load(builder.bitcast(builder.gep(p8, [ir.Constant(I64, off)]), _vec(I8, n).as_pointer()),
                        align=1)


def _splat_val(builder, v, n, t):
    undef = ir.Constant(_vec(t, n), None)
    return builder.shuffle_vector(builder.insert_element(undef, v, ir.Constant(I32, 0)), undef,
                                  ir.Constant(_vec(I32, n), [0] * n))


def _byte(builder, p8, off, signed=False):
    b = builder.load(builder.gep(p8, [ir.Constant(I64, off)]))
    return builder.sext(b, I32) if signed else builder.zext(b, I32)
