"""A float32 micro-kernel for attention's small products: C[4, n] (+)= A[4, K] @ B[K, n].

numba's vectorized loops reload their operands every step (they cannot prove the arrays apart), so a dot
of four query rows with a key ran at ~25 GMAC/s a core. This kernel, written in LLVM IR as the integer
GEMM's (gemm_q8.py), keeps a 4 x (NV * LANES) block of C in registers across the whole K loop: each step
loads NV vectors of B's row k and four scalars of A's column k, broadcast, and does 4 * NV multiply-adds.
llvm.fmuladd lets LLVM fuse them where the target has FMA (so the sums differ between hosts: the fast
arithmetic only). The layouts are flat float32 arrays with row strides:

    A[r, k] = a[a0 + r * lda + k]    B[k, j] = b[b0 + k * ldb + j]    C[r, j] = c[c0 + r * ldc + j]

product(a, a0, lda, b, b0, ldb, K, c, c0, ldc, n, accumulate) covers n columns, a multiple of LANES,
in blocks of 4 * LANES then single vectors; accumulate: 1 adds to C, 0 overwrites it (int64).
"""
from __future__ import annotations

import numba as nb
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .dot_simd import F32T, HOST_FEATURES, I64, _close_loop, _data_ptr, _fn, _open_loop, _splat_val, _vec

# 16 floats a vector where AVX-512F is, else 8 (AVX2; the portable IR splits them for narrower targets)
LANES = 16 if "+avx512f" in HOST_FEATURES else 8
ROWS = 4


def _make_block(lanes, nv):
    """block(a, a0, lda, b, b0, ldb, K, c, c0, ldc, accumulate): C[4, nv * lanes] (+)= A[4, K] B[K, :]."""
    vf = _vec(F32T, lanes)

    def typer(typingctx, a, a0, lda, b, b0, ldb, K, c, c0, ldc, accumulate):
        def codegen(context, builder, sig, args):
            a_, a0_, lda_, b_, b0_, ldb_, K_, c_, c0_, ldc_, acc_ = args
            ap = _data_ptr(context, builder, sig.args[0], a_, a0_, F32T)
            bp = _data_ptr(context, builder, sig.args[3], b_, b0_, F32T)
            cp = _data_ptr(context, builder, sig.args[7], c_, c0_, F32T)
            fma = _fn(builder, f"llvm.fmuladd.v{lanes}f32", vf, [vf] * 3)
            zero = ir.Constant(vf, [0.0] * lanes)

            def c_ptr(r, v):
                o = builder.add(builder.mul(ir.Constant(I64, r), ldc_), ir.Constant(I64, v * lanes))
                return builder.bitcast(builder.gep(cp, [o]), vf.as_pointer())

            starts = []
            for r in range(ROWS):
                for v in range(nv):
                    old = builder.load(c_ptr(r, v), align=4)
                    starts.append(builder.select(builder.icmp_signed("!=", acc_, ir.Constant(I64, 0)), old, zero))
            entry, loop, done, k = _open_loop(builder, K_)
            accs = [builder.phi(vf) for _ in range(ROWS * nv)]
            brow = builder.mul(k, ldb_)
            bv = [builder.load(builder.bitcast(builder.gep(bp, [builder.add(brow, ir.Constant(I64, v * lanes))]),
                                               vf.as_pointer()), align=4) for v in range(nv)]
            nxt = []
            for r in range(ROWS):
                x = builder.load(builder.gep(ap, [builder.add(builder.mul(ir.Constant(I64, r), lda_), k)]))
                xv = _splat_val(builder, x, lanes, F32T)
                for v in range(nv):
                    nxt.append(builder.call(fma, [xv, bv[v], accs[r * nv + v]]))
            final = _close_loop(builder, k, K_, entry, loop, done, list(zip(accs, starts, nxt)))
            for r in range(ROWS):
                for v in range(nv):
                    builder.store(final[r * nv + v], c_ptr(r, v), align=4)
            return context.get_dummy_value()

        sig = types.none(a, a0, lda, b, b0, ldb, K, c, c0, ldc, accumulate)
        return sig, codegen

    return intrinsic(typer)


_block4 = _make_block(LANES, 4)
_block1 = _make_block(LANES, 1)


@nb.njit(inline="always")
def product(a, a0, lda, b, b0, ldb, K, c, c0, ldc, n, accumulate):
    """C[4, :n] (+)= A[4, :K] @ B[:K, :n] (module docstring), n a multiple of LANES."""
    j = 0
    while j + 4 * LANES <= n:
        _block4(a, a0, lda, b, b0 + j, ldb, K, c, c0 + j, ldc, accumulate)
        j += 4 * LANES
    while j < n:
        _block1(a, a0, lda, b, b0 + j, ldb, K, c, c0 + j, ldc, accumulate)
        j += LANES
