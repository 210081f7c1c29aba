"""Attention for a batch in tiles: the queries of one KV head a tile of tokens at a time, against blocks of
keys, with an online softmax (flash attention), on the calling thread.

The batch step (batch.py) first converts the layer's cache to float32 (cache_to_f32: keys transposed per
KV head, values by row, each row once), then gives each thread whole tiles: (KV head, QUERY_TILE tokens).
A tile holds the rows of every query head that reads this KV head (g = n_head / n_kv of them), four rows
at a time against each block of KEY_BLOCK keys through a float micro-kernel (kernels/gemm_f32.py) that
keeps the four rows' sums in registers: QK^T for the block, then PV. Keys a query cannot
see (later positions, or outside its sliding window) are skipped a block at a time and masked within one:
a prompt from an empty cache costs about half of the T x T products.

The numbers are the fast arithmetic's, not llama.cpp's: scores in float32 with the query pre-scaled, the
running maximum and sum per row (exp by ggml's polynomial, ops._exp_nonpositive), the weighted values
summed in float32 and divided once at the end. Tested against a float64 softmax(QK^T)V in numpy.

attend_tile is compiled with fastmath (its exp and max loops vectorize), but every sum it adds is in an
order written here (_lane_sum, _dot, explicit fma): with reassociation allowed, LLVM summed a row's
exponentials in one order in the copy of attend_tile compiled into the batch step and in another in the
copy called from Python, and the step's logits depended on which copy the process had loaded first.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ggufq.kernels import gemm_f32
from ggufq.kernels.dot_common import fma32
from ggufq.runtime.ops import _exp_nonpositive, kv_to_f32

QUERY_TILE = 32     # query tokens a tile
KEY_BLOCK = 64      # keys a block
f32 = np.float32
# a finite "minus infinity" for the running maximum: exp(LOW - m) is 0 for any real score m, and no
# infinity enters the arithmetic
LOW = f32(-1e30)
FAST = {"contract", "reassoc", "nsz", "arcp"}   # fastmath without nnan/ninf


def cache_rows(n_ctx: int) -> int:
    """Columns of cache_to_f32's kt for a cache of n_ctx rows: a block of keys to spare (the QK product
    runs over whole blocks)."""
    return n_ctx + KEY_BLOCK


def scratch_floats(n_head: int, n_kv: int, hd: int) -> int:
    """The floats attend_tile's scratch needs."""
    rows = -(-(n_head // n_kv * QUERY_TILE) // 4) * 4
    return 2 * rows * hd + 2 * rows + 4 * KEY_BLOCK




@nb.njit(inline="always")
def cache_to_f32(kc, vc, j0, j1, kt, vf, n_kv, hd):
    """Cache rows j0..j1 (fp16 bits or float32) as float32 in the layouts attend_tile multiplies: keys
    transposed per KV head (kt[a, c, j]: a query row times a block of keys is then a row of products),
    values as they are (vf[j]). Done once a layer, before the tiles."""
    for j in range(j0, j1):
        for a in range(n_kv):
            for c in range(hd):
                kt[a, c, j] = kv_to_f32(kc[j, a * hd + c])
                vf[j, a * hd + c] = kv_to_f32(vc[j, a * hd + c])


@nb.njit(cache=True)
def _lane_sum(p, n):
    """p[0] + ... + p[n - 1] in one order in every build: eight running sums (p[l], p[l + 8], ...), added
    pairwise, then the tail in turn. Not fastmath, so no caller's flags can reorder it (the eight adds of a
    step are still one vector add)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = f32(0.0)
    j = 0
    while j + 8 <= n:
        s0 += p[j]
        s1 += p[j + 1]
        s2 += p[j + 2]
        s3 += p[j + 3]
        s4 += p[j + 4]
        s5 += p[j + 5]
        s6 += p[j + 6]
        s7 += p[j + 7]
        j += 8
    tot = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    while j < n:
        tot += p[j]
        j += 1
    return tot


@nb.njit(cache=True)
def _dot(Q, r, kt, a, j, hd):
    """Q[r] . kt[a, :, j] in order (the scores of a head size the micro-kernel's vectors do not divide)."""
    s = f32(0.0)
    for c in range(hd):
        s = fma32(Q[r, c], kt[a, c, j], s)
    return s


@nb.njit(cache=True, fastmath=FAST)
def attend_tile(q, kt, vf, pos0, t0, t1, a, heads, window, scale, out, scr):
    """out[t, h] = softmax(scale * q[t, h] . K[0..p]) V for the tokens t0..t1 (at positions pos0 + t) and
    the query heads h of KV head a (h // g == a); q, out: float32[T, n_head * hd]; kt, vf: the layer's keys
    and values as cache_to_f32 leaves them, rows up to pos0 + t1 - 1 (kt: cache_rows columns); heads =
    (n_head, n_kv, hd); window > 0: only keys j > p - window. scr: float32[>= scratch_floats].
    Rows go four at a time through gemm_f32's micro-kernel; a row's keys outside its range score LOW, so
    weigh 0. A head size that is not a multiple of the kernel's vector takes plain loops."""
    n_head, n_kv, hd = heads
    g = n_head // n_kv
    nt = t1 - t0
    R = g * nt                      # row r: token t0 + r // g, query head a * g + r % g (a token's heads adjacent)
    Rp = -(-R // 4) * 4             # padded with rows of zeros, computed and never written out
    Qf = scr[:Rp * hd]
    Of = scr[Rp * hd:2 * Rp * hd]
    Q = Qf.reshape((Rp, hd))
    O = Of.reshape((Rp, hd))
    M = scr[2 * Rp * hd:2 * Rp * hd + Rp]
    S = scr[2 * Rp * hd + Rp:2 * Rp * hd + 2 * Rp]
    o = 2 * Rp * hd + 2 * Rp
    Pf = scr[o:o + 4 * KEY_BLOCK]
    P = Pf.reshape((4, KEY_BLOCK))
    for r in range(Rp):
        t, h = t0 + r // g, a * g + r % g
        for c in range(hd):
            Q[r, c] = q[t, h * hd + c] * scale if r < R else f32(0.0)
            O[r, c] = 0.0
        M[r] = LOW
        S[r] = 0.0
    simd = hd % gemm_f32.LANES == 0
    n_pad = kt.shape[2]
    ktf, vff = kt.reshape(-1), vf.reshape(-1)
    ldv = vf.shape[1]
    first = max(0, pos0 + t0 - window + 1) if window > 0 else 0
    for j0 in range(first // KEY_BLOCK * KEY_BLOCK, pos0 + t1, KEY_BLOCK):
        nk = min(KEY_BLOCK, pos0 + t1 - j0)
        for r0 in range(0, Rp, 4):
            # the keys the four rows see in this block (a zero row: its neighbour's token)
            p_lo = pos0 + t0 + r0 // g
            p_hi = pos0 + t0 + min(R - 1, r0 + 3) // g
            if j0 > p_hi or (window > 0 and j0 + nk <= p_lo - window + 1):
                continue
            if simd:    # all KEY_BLOCK columns: those past nk are masked below
                gemm_f32.product(Qf, r0 * hd, hd, ktf, a * hd * n_pad + j0, n_pad, hd, Pf, 0, KEY_BLOCK, KEY_BLOCK, 0)
            else:
                for i in range(4):
                    for j in range(nk):
                        P[i, j] = _dot(Q, r0 + i, kt, a, j0 + j, hd)
            for i in range(4):
                p = pos0 + t0 + min(R - 1, r0 + i) // g
                lo = max(0, p - window + 1) - j0 if window > 0 else -1
                hi = p + 1 - j0
                pr = P[i, :nk]      # loops from 0 over a slice: range(lo, hi) kept LLVM from vectorizing
                m = M[r0 + i]
                for j in range(nk):
                    sj = pr[j] if j >= lo and j < hi else LOW
                    pr[j] = sj
                    m = max(m, sj)
                corr = _exp_nonpositive(M[r0 + i] - m)
                for j in range(nk):
                    pr[j] = _exp_nonpositive(pr[j] - m)
                M[r0 + i] = m
                S[r0 + i] = fma32(S[r0 + i], corr, _lane_sum(pr, nk))
                if corr != f32(1.0):
                    orow = O[r0 + i]
                    for c in range(hd):
                        orow[c] *= corr
            if simd:
                gemm_f32.product(Pf, 0, KEY_BLOCK, vff, j0 * ldv + a * hd, ldv, nk, Of, r0 * hd, hd, hd, 1)
            else:
                for i in range(4):
                    for j in range(nk):
                        e = P[i, j]
                        for c in range(hd):
                            O[r0 + i, c] = fma32(e, vf[j0 + j, a * hd + c], O[r0 + i, c])
    for r in range(R):
        t, h = t0 + r // g, a * g + r % g
        inv = f32(1.0) / S[r] if S[r] > f32(0.0) else f32(0.0)
        for c in range(hd):
            out[t, h * hd + c] = O[r, c] * inv
