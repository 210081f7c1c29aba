"""The runtime's kernels for the 32-weight block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: batch matmuls, row
dequantizers, the GEMM's unpackers and the decode step's row kernels (legacy.py has the quantizers and the
registry classes that carry these; the SIMD row dots are in dot_simd.py and dot_vnni.py)."""
from __future__ import annotations

import numba as nb
import numpy as np

from .dot_common import load_f16
from .dot_rows import row_kernel
from .dot_simd import (dequant32_q4_0, dequant32_q4_1, dequant32_q5_0, dequant32_q5_1, dequant32_q8_0, repacked,
                       rowdot_q4_0, rowdot_q4_0_x8, rowdot_q4_1, rowdot_q5_0, rowdot_q5_1, rowdot_q8_0,
                       rows4_q4_0_x8)
from .dot_vnni import rowdot_q4_0_fast
from .gemm_q8 import VNNI512, u32_at

# The fast arithmetic's Q4_0 dot where there is no AVX-512 VNNI: four rows at a time (dot_simd.rows4_q4_0_x8,
# the repacked kernel's numbers); on VNNI hosts dot_vnni's row dot, two blocks a step, is faster.
FAST_FOUR_ROWS = not VNNI512


# Runtime kernels for the 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
#
# Weights are read in place (uint8[rows, row_bytes] straight from the mapped file) against activations
# quantized to Q8 blocks of 32 (dot_common.quantize_q8_32): per block an int32 sum of int8 products, then
# one float multiply by the two scales, as llama.cpp's ggml_vec_dot_q4_0_q8_0 and friends; the block sums
# and the loop over a row's blocks are one SIMD intrinsic per format (dot_simd.rowdot_*), with float32
# vector accumulators; prange over rows. Layouts (bytes per block):
#
#     Q4_0 18: d f16, qs[16]          w = d * (nibble - 8); low nibbles are values 0..15, high 16..31
#     Q4_1 20: d f16, m f16, qs[16]   w = d * nibble + m
#     Q5_0 22: d f16, qh u32, qs[16]  w = d * ((nibble | bit << 4) - 16); bit j of qh is value j's 5th bit
#     Q5_1 24: d, m f16, qh, qs[16]   w = d * (nibble | bit << 4) + m
#     Q8_0 34: d f16, qs int8[32]     w = d * q

i32 = np.int32
f32 = np.float32


# ---- dequantization (the BLAS batch path and embeddings) ----------------------------------------
# ---- Q4_0 ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def dequant_q4_0(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        wr, orow = w[r0 + i], out[i]
        for b in range(w.shape[1] // 18):
            dequant32_q4_0(wr, b * 18, orow, b * 32)


# ---- Q4_1 ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def dequant_q4_1(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        wr, orow = w[r0 + i], out[i]
        for b in range(w.shape[1] // 20):
            dequant32_q4_1(wr, b * 20, orow, b * 32)


# ---- Q5_0 / Q5_1 ---------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def dequant_q5_0(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        wr, orow = w[r0 + i], out[i]
        for b in range(w.shape[1] // 22):
            dequant32_q5_0(wr, b * 22, orow, b * 32)


@nb.njit(cache=True, parallel=True)
def dequant_q5_1(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        wr, orow = w[r0 + i], out[i]
        for b in range(w.shape[1] // 24):
            dequant32_q5_1(wr, b * 24, orow, b * 32)


# ---- Q8_0 ----------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def dequant_q8_0(w, r0, r1, out):
    for i in nb.prange(r1 - r0):
        wr, orow = w[r0 + i], out[i]
        for b in range(w.shape[1] // 34):
            dequant32_q8_0(wr, b * 34, orow, b * 32)


# ---- unpacking for the batch GEMM (kernels/gemm_q8.py): w = s * q + m per block of 32, q a byte ------
# Bytes 4j..4j+3 of a block go to tq[rowvec, block * 8 + j, lane] as one uint32.

_NIB = np.uint32(0x0F0F0F0F)


@nb.njit(inline="always")
def _spread_bits(h, j):
    """Bits 4j..4j+3 of h, each moved to bit 4 of its own byte (Q5's fifth bits, 4 weights at a time)."""
    b = (h >> np.uint32(4 * j)) & np.uint32(15)
    return (((b & np.uint32(1)) << np.uint32(4)) | ((b & np.uint32(2)) << np.uint32(11))
            | ((b & np.uint32(4)) << np.uint32(18)) | ((b & np.uint32(8)) << np.uint32(25)))


@nb.njit(cache=True)
def unpack_rows_q45_legacy(w, r0, r1, tq, tsm, v0):
    """Q4_0 (18-byte blocks: d, qs; q = the nibble, m = -8 d), Q4_1 (20: d, m, qs), Q5_0 (22: d, qh, qs;
    a fifth bit from qh, m = -16 d) or Q5_1 (24: d, m, qh, qs), told apart by the row's bytes a block."""
    L = tq.shape[2]
    bb = w.shape[1] * 8 // tq.shape[1]     # bytes a block: k = 4 * tq.shape[1]
    five = bb >= 22
    for i in range(r1 - r0):
        wr, v, l = w[r0 + i], v0 + i // L, i % L
        for b in range(w.shape[1] // bb):
            o = b * bb
            d = load_f16(w, r0 + i, o)
            tsm[0, v, b, l] = d
            if bb == 20 or bb == 24:
                tsm[1, v, b, l] = load_f16(w, r0 + i, o + 2)
            else:
                tsm[1, v, b, l] = np.float32(-16.0 if five else -8.0) * d
            h = u32_at(wr, o + bb - 20) if five else np.uint32(0)
            for j in range(4):
                c = u32_at(wr, o + bb - 16 + 4 * j)
                lo, hi = c & _NIB, (c >> np.uint32(4)) & _NIB
                if five:
                    lo |= _spread_bits(h, j)
                    hi |= _spread_bits(h, 4 + j)
                tq[v, b * 8 + j, l] = lo
                tq[v, b * 8 + 4 + j, l] = hi


@nb.njit(cache=True, parallel=True)
def unpack_q45_legacy(w, r0, r1, tq, tsm):
    """Rows r0..r1 into the tile from rowvec 0, a rowvec of rows on each thread (unpack_rows_q45_legacy)."""
    L = tq.shape[2]
    for c in nb.prange(-(-(r1 - r0) // L)):
        unpack_rows_q45_legacy(w, r0 + c * L, min(r1, r0 + (c + 1) * L), tq, tsm, c)


@nb.njit(cache=True)
def unpack_rows_q8_0(w, r0, r1, tq, tsm, v0):
    """Q8_0: q = the int8 + 128 (its sign bit flipped), m = -128 d."""
    L = tq.shape[2]
    for i in range(r1 - r0):
        wr, v, l = w[r0 + i], v0 + i // L, i % L
        for b in range(w.shape[1] // 34):
            o = b * 34
            d = load_f16(w, r0 + i, o)
            tsm[0, v, b, l] = d
            tsm[1, v, b, l] = np.float32(-128.0) * d
            for j in range(8):
                tq[v, b * 8 + j, l] = u32_at(wr, o + 2 + 4 * j) ^ np.uint32(0x80808080)


@nb.njit(cache=True, parallel=True)
def unpack_q8_0(w, r0, r1, tq, tsm):
    """Rows r0..r1 into the tile from rowvec 0, a rowvec of rows on each thread (unpack_rows_q8_0)."""
    L = tq.shape[2]
    for c in nb.prange(-(-(r1 - r0) // L)):
        unpack_rows_q8_0(w, r0 + c * L, min(r1, r0 + (c + 1) * L), tq, tsm, c)


# ---- integer dots: one row per iteration, the block loop inside the rowdot intrinsic --------------
# The five matmuls differ only in their rowdot. They are written out because a factory's kernels cannot be
# cached: numba keys a closure's cache entry by its cell contents, and a dispatcher pickles differently in
# every process, so each run would compile them again (measured: the index grows by one entry per run).

@nb.njit(cache=True)
def _rows_q4_0_x8(w, wi, rb, xq, xi, xd, si, nb, r0, r1, out):
    """out[r] = row r . x for r in r0..r1 (rows rb bytes apart from byte wi), with the repacked kernel's
    numbers: four rows a call to rows4_q4_0_x8, the last r1 - r0 mod 4 by rowdot_q4_0_x8."""
    r = r0
    while r + 4 <= r1:
        rows4_q4_0_x8(w, wi + r * rb, rb, xq, xi, xd, si, nb, out, r)
        r += 4
    for j in range(r, r1):
        out[j] = rowdot_q4_0_x8(w, wi + j * rb, xq, xi, xd, xd, si, nb)


@nb.njit(cache=True, parallel=True)
def _matmul_q4_0(w, xf, xq, xd, xs, out, variant):
    """variant 0: llama.cpp's AVX2 kernel, 1: its repacked one, 2: the fast one (dot_vnni, or the repacked
    numbers four rows at a time where there is no VNNI: FAST_FOUR_ROWS)."""
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    if variant == 1 or (variant == 2 and FAST_FOUR_ROWS):
        for g in nb.prange((R + 3) // 4):
            for t in range(Tn):
                _rows_q4_0_x8(wf, 0, rb, xv, t * k, dv, t * nbk, nbk, 4 * g, min(R, 4 * g + 4), out[t])
        return
    if variant == 2:
        for r in nb.prange(R):
            for t in range(Tn):
                out[t, r] = rowdot_q4_0_fast(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)
        return
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q4_0(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


@nb.njit(cache=True)
def matmul_q4_0(w, xf, xq, xd, xs, out):
    """The fast default: two blocks a step with VNNI (dot_vnni), else four rows at a time with the repacked
    kernel's numbers (FAST_FOUR_ROWS)."""
    _matmul_q4_0(w, xf, xq, xd, xs, out, 2)


@nb.njit(cache=True)
def matmul_q4_0_llama_cpp(w, xf, xq, xd, xs, out):
    """llama.cpp's AVX2 numbers: the repacked kernel's where it repacks the matrix (dot_simd.repacked)."""
    _matmul_q4_0(w, xf, xq, xd, xs, out, 1 if repacked(w.shape[0]) else 0)


@nb.njit(cache=True, parallel=True)
def matmul_q4_1(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q4_1(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


@nb.njit(cache=True, parallel=True)
def matmul_q5_0(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q5_0(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


@nb.njit(cache=True, parallel=True)
def matmul_q5_1(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q5_1(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


@nb.njit(cache=True, parallel=True)
def matmul_q8_0(w, xf, xq, xd, xs, out):
    R, rb = w.shape
    Tn, nbk = xd.shape
    k = xq.shape[1]
    wf = w.reshape(-1)
    xv = xq.reshape(-1)
    dv = xd.reshape(-1)
    sv = xs.reshape(-1)
    for r in nb.prange(R):
        for t in range(Tn):
            out[t, r] = rowdot_q8_0(wf, r * rb, xv, t * k, dv, sv, t * nbk, nbk)


# ---- the decode step's row kernels (kernels/dot_rows.py): rows r0..r1, the weight at byte `off` -----

@row_kernel
def rows_q4_0(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q4_0(bufs[0], off + r * rb, acts[0], 0, acts[1], acts[2], 0, k // 32)


@row_kernel
def rows_q4_0_fast(bufs, off, rb, r0, r1, k, acts, out):
    if FAST_FOUR_ROWS:
        _rows_q4_0_x8(bufs[0], off, rb, acts[0], 0, acts[1], 0, k // 32, r0, r1, out)
    else:
        for r in range(r0, r1):
            out[r] = rowdot_q4_0_fast(bufs[0], off + r * rb, acts[0], 0, acts[1], acts[2], 0, k // 32)


@row_kernel
def rows_q4_0_x8(bufs, off, rb, r0, r1, k, acts, out):
    _rows_q4_0_x8(bufs[0], off, rb, acts[0], 0, acts[1], 0, k // 32, r0, r1, out)


@row_kernel
def rows_q4_1(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q4_1(bufs[0], off + r * rb, acts[0], 0, acts[1], acts[2], 0, k // 32)


@row_kernel
def rows_q5_0(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q5_0(bufs[0], off + r * rb, acts[0], 0, acts[1], acts[2], 0, k // 32)


@row_kernel
def rows_q5_1(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q5_1(bufs[0], off + r * rb, acts[0], 0, acts[1], acts[2], 0, k // 32)


@row_kernel
def rows_q8_0(bufs, off, rb, r0, r1, k, acts, out):
    for r in range(r0, r1):
        out[r] = rowdot_q8_0(bufs[0], off + r * rb, acts[0], 0, acts[1], acts[2], 0, k // 32)
