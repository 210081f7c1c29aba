"""The batch step: a batch of tokens (a prompt, a perplexity window) through every layer in one compiled call.

As the decode step (decode.py) does for one token, a batch runs in one parallel region, `for tid in
prange(n_threads)`, its threads meeting at a spinning barrier between the stages, as ggml's graph compute
does; no Python runs between the operations, so no stage waits for the interpreter and every stage runs
on every thread. Each thread takes:
  - the element-wise work (norms, RoPE, the KV cache's writes, SwiGLU/GeGLU, the activations' rounding to
    8 bits) for its share of the tokens, fused: a token's norm is quantized while it is in L1;
  - for a weight product, its share of the weight rows, ROWVECS * LANES rows at a time: it unpacks them into
    its own tile (kernels/gemm_q8.py) and multiplies them by every token at once while they are in its L2
    (under BLAS_MIN_TOKENS tokens: the format's row kernels, each chunk of rows against every token);
  - in the GEMM's case, the FFN's gate and up products a span of columns at a time, each span's GLU and
    rounding to 8 bits done while its floats are in cache (_feed_forward_gemm), not as a stage of its own;
  - attention tiles (flash.py: one KV head and QUERY_TILE tokens; under FA_MAX_TOKENS tokens ggml's
    per-row flash attention, ops.attend_head), handed out by an atomic counter, the longest first.
The numbers are those of the batch path (Model._forward) in the fast arithmetic, but for the attention of
batches of FA_MAX_TOKENS or more, which is flash.py's rather than BLAS products.
"""
from __future__ import annotations

from collections import namedtuple

import numba as nb
import numpy as np
from numba import literal_unroll

from ggufq.kernels.dot_common import lazy_zeros, quantize_q8_32, quantize_q8_k
from ggufq.kernels.gemm_q8 import (LANES, ROWVECS, TOKENS, VNNI, micro_rowvecs, multiply_rowvecs,
                                   quantize_act_row)
from ggufq.kernels.registry import FORMATS
from ggufq.runtime import ops
from ggufq.runtime.barrier import atomic_add, barrier, cycles
from ggufq.runtime.decode import (WDOWN, WGATE, WK, WO, WQ, WUP, WV, Rope, Shape, act_buffers, family_flags,
                                  file_views, layer_arrays, matvec_rows, row_kind_of)
from ggufq.runtime.flash import QUERY_TILE, attend_tile, cache_rows, cache_to_f32, scratch_floats

f32 = np.float32
ROW_CHUNK = 16      # rows of a small batch's product that every token passes while they are in L1
PAD = 32            # 4-byte words between two threads' scratch rows
GLU_SPAN = 256      # the fused FFN's columns at a time (_feed_forward_gemm): a Q8_K activation block, 8 Q8_0's


def _unpackers() -> tuple:
    """The registry's distinct unpack_rows kernels (several formats share one)."""
    out = []
    for qtype in sorted(FORMATS, key=int):
        dot = FORMATS[qtype].dot
        if dot is not None and dot.unpack_rows is not None and dot.unpack_rows not in out:
            out.append(dot.unpack_rows)
    return tuple(out)


UNPACKERS = _unpackers()    # a global, fixed at compile time (as decode.ROW_KERNELS)

# lw int64[n_layer, 7, 8]: per matrix (offset in the file, row kernel kind, rows, row bytes, unpacker kind,
# block G, activations: 0 q8_32 / 1 q8_k, unused)
BatchWeights = namedtuple("BatchWeights", "buf lw norms qk_norm bias out_norm windows swa eps attn_scale")
# per input width (d, n_head*hd, n_ff) the activation buffers: for the row kernels (q8_32: q, d, s;
# q8_k: q, d, s; the float rows) and for the GEMM (q8_32: q, d, sums per 16, per 32; q8_k: the same); a form
# no matrix of the input reads is empty ([B, 0])
# kt, vf: a layer's cache in float32 for flash.attend_tile; tq, tsm, scratch, fscr: each thread's GEMM tile and
# attention scratch
Buffers = namedtuple("Buffers", "x xb xb2 q k v att_out hg hu ad aq af kc vc att kt vf tq tsm scratch fscr glu")


# The stages between the step's barriers, for its profile: prof[tid, stage] = (cycles working, cycles
# waiting at the barrier that ends the stage); read by tools/profile_batch.py.
STAGES = ("residual, attention norm, activations to 8 bits", "products: q, k, v", "biases, q/k norms, RoPE, KV cache writes",
          "KV cache to float32", "attention", "attention output to 8 bits", "product: attention output",
          "residual, FFN norm, activations to 8 bits", "products: gate, up (large batches: and GLU, to 8 bits)",
          "SwiGLU/GeGLU, to 8 bits (small batches)",
          "product: down", "output norm")
LAST = len(STAGES) - 1


@nb.njit(inline="always")
def _meet(counter, nt, nbar, prof, tid, stage, last):
    """The barrier that ends `stage`, its work and wait cycles added to prof[tid, stage]; returns the
    barrier count and the time it was passed."""
    now = cycles()
    prof[tid, stage, 0] += now - last
    nbar = barrier(counter, nt, nbar)
    after = cycles()
    prof[tid, stage, 1] += after - now
    return nbar, after


@nb.njit(cache=True)
def unpack_rows(kind, w, r0, r1, tq, tsm, v0):
    """The unpacker at index `kind` of UNPACKERS (unrolled once here, as decode.matvec_rows)."""
    i = 0
    for fn in literal_unroll(UNPACKERS):
        if i == kind:
            fn(w, r0, r1, tq, tsm, v0)
        i += 1


@nb.njit(cache=True)
def _quantize_rows(x, a, t0, t1, small):
    """Tokens t0..t1 of x into the forms of `a` that some matrix reads (the row kernels' or the GEMM's)."""
    for t in range(t0, t1):
        if small:
            if a[1].shape[1]:
                quantize_q8_32(x[t:t + 1], a[0][t:t + 1], a[1][t:t + 1], a[2][t:t + 1])
            if a[4].shape[1]:
                quantize_q8_k(x[t:t + 1], a[3][t:t + 1], a[4][t:t + 1], a[5][t:t + 1])
        else:
            _round_for_gemm(x[t], a, t, 0, x.shape[1])


@nb.njit(inline="always")
def _round_for_gemm(h, a, t, c0, c1):
    """Columns c0..c1 of token t (h: their float32 values) into the GEMM's forms of `a` that some matrix
    reads: q, d, sums per 16 and per 32, a block of 32 (q8_32) or 256 (q8_k) at a time."""
    if a[8].shape[1]:
        quantize_act_row(h, a[7][t, c0:c1], a[8][t, c0 // 32:c1 // 32], a[9][t, c0 // 16:c1 // 16],
                         a[10][t, c0 // 32:c1 // 32], 32)
    if a[12].shape[1]:
        quantize_act_row(h, a[11][t, c0:c1], a[12][t, c0 // 32:c1 // 32], a[13][t, c0 // 16:c1 // 16],
                         a[14][t, c0 // 32:c1 // 32], 256)


@nb.njit(cache=True)
def _product(tid, nt, buf, meta, k, a, T, small, out, tq, tsm, scratch):
    """This thread's share of out[:T] = x W^T: whole groups of ROWVECS * LANES rows, each unpacked into the
    thread's tile and multiplied by every token (the GEMM); under BLAS_MIN_TOKENS tokens, chunks of rows
    through the format's row kernel, token by token."""
    R, rb = meta[2], meta[3]
    if small:
        r_lo, r_hi = R * tid // nt, R * (tid + 1) // nt
        for c0 in range(r_lo, r_hi, ROW_CHUNK):
            c1 = min(r_hi, c0 + ROW_CHUNK)
            for t in range(T):
                acts = (a[0][t], a[1][t], a[2][t], a[3][t], a[4][t], a[5][t], a[6][t])
                matvec_rows(meta[1], buf, meta[0], rb, c0, c1, k, acts, out[t])
        return
    ng = -(-R // (ROWVECS * LANES))
    _gemm_groups(buf, meta, k, a, T, out, tq, tsm, scratch, ng * tid // nt, ng * (tid + 1) // nt)


@nb.njit(inline="always")
def _tile(buf, meta, k, a, tq, tsm, tq0, ts0):
    """Matrix meta's rows and its unpacked tile's layout at tq[tq0:], tsm[ts0:] (a group of ROWVECS * LANES
    rows), with the flat activations its format reads: w, tq3, tsm4, rstride, sstride, G, aqf, adf, axf."""
    R, rb, G, L = meta[2], meta[3], meta[5], LANES
    w = buf[0][meta[0]:meta[0] + R * rb].reshape((R, rb))
    nbk = k // G
    rstride = nbk * (G // 4) * L
    sstride = ROWVECS * nbk * L
    tq3 = tq[tq0:tq0 + ROWVECS * rstride].reshape((ROWVECS, k // 4, L))
    tsm4 = tsm[ts0:ts0 + 2 * sstride].reshape((2, ROWVECS, nbk, L))
    if meta[6] == 0:   # the tuple's items are picked by constant indices (their types differ)
        aqf, adf, axf = a[7].reshape(-1), a[8].reshape(-1), (a[9] if G == 16 else a[10]).reshape(-1)
    else:
        aqf, adf, axf = a[11].reshape(-1), a[12].reshape(-1), (a[13] if G == 16 else a[14]).reshape(-1)
    return w, tq3, tsm4, rstride, sstride, G, aqf, adf, axf


@nb.njit(inline="always")
def _unpack_group(meta, w, gi, tq3, tsm4):
    """Rows gi * W .. of w into the tile; the rows past the matrix get zero scales and offsets. Their count."""
    W, L = ROWVECS * LANES, LANES
    r0 = gi * W
    n = min(W, meta[2] - r0)
    unpack_rows(meta[4], w, r0, r0 + n, tq3, tsm4, 0)
    for i in range(n, W):
        for b in range(tsm4.shape[2]):
            tsm4[0, i // L, b, i % L] = 0.0
            tsm4[1, i // L, b, i % L] = 0.0
    return n


@nb.njit(cache=True)
def _gemm_groups(buf, meta, k, a, T, out, tq, tsm, scratch, g0, g1):
    """out[:T, rows of groups g0..g1] = x W^T: each group of ROWVECS * LANES rows unpacked into the thread's
    tile and multiplied by every token while it is in L2."""
    w, tq3, tsm4, rstride, sstride, G, aqf, adf, axf = _tile(buf, meta, k, a, tq, tsm, 0, 0)
    for gi in range(g0, g1):
        n = _unpack_group(meta, w, gi, tq3, tsm4)
        multiply_rowvecs(tq, 0, tsm, 0, rstride, sstride, G, LANES, VNNI, aqf, adf, axf, k, T, scratch, out,
                         gi * ROWVECS * LANES, n)


@nb.njit(cache=True)
def _feed_forward_gemm(tid, nt, buf, m_gate, m_up, d, ad, T, gelu, af, glu, tq, tsm, scratch):
    """The FFN's first half for a large batch, fused: GLU(x W_gate^T, x W_up^T) rounded to 8 bits for the
    down product, this thread's share of the n_ff columns a span at a time. Per group of rows, the gate's
    and the up's rows are unpacked side by side in the thread's tile, and each TOKENS tokens' products go
    through the GLU while in registers, into glu (this thread's float32[T, span]); a finished span is
    rounded into af. The gate's and up's float32[T, n_ff] outputs are never written: apart, the GLU read
    and wrote 2 x T x n_ff floats from memory (32 MB a layer at 512 tokens on a 1B model) as a stage of its
    own: 2.4% of a 1B pp512. A span is whole activation blocks (Q8_K's 256 values: a block's scale needs all
    of them) and whole groups; the numbers are the unfused ones (element-wise, block-local)."""
    n_ff, W, span = m_gate[2], ROWVECS * LANES, GLU_SPAN
    wg, tqg, tsg, rsg, ssg, Gg, aqg, adg, axg = _tile(buf, m_gate, d, ad, tq, tsm, 0, 0)
    tq_u, ts_u = ROWVECS * rsg, 2 * ssg     # the up rows' tile after the gate's
    wu, tqu, tsu, rsu, ssu, Gu, aqu, adu, axu = _tile(buf, m_up, d, ad, tq, tsm, tq_u, ts_u)
    sg, su = scratch[:TOKENS * W], scratch[TOKENS * W:2 * TOKENS * W]
    n_span = -(-n_ff // span)
    for si in range(n_span * tid // nt, n_span * (tid + 1) // nt):
        c0, c1 = si * span, min(n_ff, (si + 1) * span)
        for gi in range(c0 // W, -(-c1 // W)):
            n = _unpack_group(m_gate, wg, gi, tqg, tsg)
            _unpack_group(m_up, wu, gi, tqu, tsu)
            j0 = gi * W - c0
            for t0 in range(0, T, TOKENS):
                micro_rowvecs(tq, 0, tsm, 0, rsg, ssg, Gg, LANES, VNNI, aqg, adg, axg, d, t0, sg)
                micro_rowvecs(tq, tq_u, tsm, ts_u, rsu, ssu, Gu, LANES, VNNI, aqu, adu, axu, d, t0, su)
                for t in range(min(TOKENS, T - t0)):
                    g, u = sg[t * W:t * W + n], su[t * W:t * W + n]
                    if gelu:
                        ops._gelu_mul_row(g, u)
                    else:
                        ops._silu_mul_row(g, u)
                    for j in range(n):
                        glu[t0 + t, j0 + j] = g[j]
        for t in range(T):
            _round_for_gemm(glu[t, :c1 - c0], af, t, c0, c1)


@nb.njit(cache=True)
def _attention(tid, nt, counter, il, q, kc, vc, kt, vf, pos0, T, small, heads, window, scale, out, att, fscr):
    """This thread's attention: under FA_MAX_TOKENS tokens its share of the (token, head) rows by ggml's
    flash attention; else tiles of (KV head, QUERY_TILE tokens) from the layer's counter, the last first."""
    n_head, n_kv, hd = heads
    if small:   # one token past 512 cells: llama.cpp's split-KV form, as the decode step (fa_chunk)
        chunk = ops.fa_chunk(kc.shape[0], window, pos0, T, nt)
        n = T * n_head
        for idx in range(n * tid // nt, n * (tid + 1) // nt):
            ops.attend_head(q, kc, vc, idx // n_head, idx % n_head, pos0, heads, window, scale, out, att[idx], chunk)
        return
    n_tiles = -(-T // QUERY_TILE)
    while True:
        u = atomic_add(counter, 1 + il, 1)
        if u >= n_tiles * n_kv:
            break
        tile = n_tiles - 1 - u // n_kv
        attend_tile(q, kt, vf, pos0, tile * QUERY_TILE, min(T, (tile + 1) * QUERY_TILE), u % n_kv, heads, window,
                    scale, out, fscr)


@nb.njit(cache=True, parallel=True)
def batch_step(nt, counter, pos0, T, small, shape, flags, bw, rope, bufs, prof):
    """Tokens 0..T of bufs.x (their embeddings) at positions pos0.. through every layer on nt threads; the
    final-normed hidden states in bufs.xb[:T]. small: T < BLAS_MIN_TOKENS (the row kernels and ggml's
    attention). counter: int64[n_layer + 1]; prof: int64[>= nt, len(STAGES), 2], added to (_meet)."""
    n_layer, n_head, n_kv, hd, n_rot, d, n_ff = shape
    buf, lw, norms, qk_norm, bias, out_norm, windows, swa, eps, attn_scale = bw
    cos_g, sin_g, cos_l, sin_l = rope
    x, xb, xb2, q, k, v, att_out, hg, hu, ad, aq, af, kc, vc, att, kt, vf, tq, tsm, scratch, fscr, glu = bufs
    nq, nkv = n_head * hd, n_kv * hd
    heads = (n_head, n_kv, hd)
    qh = q.reshape((q.shape[0] * n_head, hd))
    kh = k.reshape((k.shape[0] * n_kv, hd))
    for i in range(counter.shape[0]):
        counter[i] = 0
    for tid in nb.prange(nt):
        nbar = 0
        last = cycles()
        t0, t1 = T * tid // nt, T * (tid + 1) // nt     # this thread's tokens in the element-wise stages
        tqt, tsmt, scr, fs = tq[tid], tsm[tid], scratch[tid], fscr[tid]
        for il in range(n_layer):
            # ---- attention: x = x + [PostNorm](Attention(RMSNorm(x))) ----
            for t in range(t0, t1):
                ops._rmsnorm_row(x, norms[il, 0], eps, xb, t)
            _quantize_rows(xb, ad, t0, t1, small)
            nbar, last = _meet(counter, nt, nbar, prof, tid, 0, last)
            _product(tid, nt, buf, lw[il, WQ], d, ad, T, small, q, tqt, tsmt, scr)
            _product(tid, nt, buf, lw[il, WK], d, ad, T, small, k, tqt, tsmt, scr)
            _product(tid, nt, buf, lw[il, WV], d, ad, T, small, v, tqt, tsmt, scr)
            nbar, last = _meet(counter, nt, nbar, prof, tid, 1, last)
            cos, sin = (cos_l, sin_l) if swa[il] else (cos_g, sin_g)
            for t in range(t0, t1):
                if flags.bias:
                    for j in range(nq):
                        q[t, j] += bias[il, 0, j]
                    for j in range(nkv):
                        k[t, j] += bias[il, 1, j]
                        v[t, j] += bias[il, 2, j]
                for h in range(n_head):
                    if flags.qk_norm:
                        ops._rmsnorm_row(qh, qk_norm[il, 0], eps, qh, t * n_head + h)
                    ops._rope_head(q, t * n_head + h, n_head, hd, n_rot, pos0, cos, sin, flags.neox)
                for h in range(n_kv):
                    if flags.qk_norm:
                        ops._rmsnorm_row(kh, qk_norm[il, 1], eps, kh, t * n_kv + h)
                    ops._rope_head(k, t * n_kv + h, n_kv, hd, n_rot, pos0, cos, sin, flags.neox)
                for j in range(nkv):
                    kc[il, pos0 + t, j] = ops.f32_to_kv(k[t, j], kc)
                    vc[il, pos0 + t, j] = ops.f32_to_kv(v[t, j], vc)
                if flags.scale_q:
                    for j in range(nq):
                        q[t, j] *= f32(attn_scale)
            nbar, last = _meet(counter, nt, nbar, prof, tid, 2, last)
            if not small:   # the cache as float32 for the tiles, each thread a share of its rows
                n = pos0 + T
                cache_to_f32(kc[il], vc[il], n * tid // nt, n * (tid + 1) // nt, kt, vf, n_kv, hd)
                nbar, last = _meet(counter, nt, nbar, prof, tid, 3, last)
            scale = f32(1.0) if flags.scale_q else f32(attn_scale)
            _attention(tid, nt, counter, il, q, kc[il], vc[il], kt, vf, pos0, T, small, heads, windows[il], scale,
                       att_out, att, fs)
            nbar, last = _meet(counter, nt, nbar, prof, tid, 4, last)
            _quantize_rows(att_out, aq, t0, t1, small)
            nbar, last = _meet(counter, nt, nbar, prof, tid, 5, last)
            _product(tid, nt, buf, lw[il, WO], nq, aq, T, small, xb2, tqt, tsmt, scr)
            nbar, last = _meet(counter, nt, nbar, prof, tid, 6, last)
            # ---- feed-forward: x = x + [PostNorm](FFN(RMSNorm(x))) ----
            for t in range(t0, t1):
                if flags.post_norms:
                    ops._rmsnorm_row(xb2, norms[il, 2], eps, xb2, t)
                ops._add_rmsnorm_row(x, xb2, norms[il, 1], eps, xb, t)
            _quantize_rows(xb, ad, t0, t1, small)
            nbar, last = _meet(counter, nt, nbar, prof, tid, 7, last)
            if small:
                _product(tid, nt, buf, lw[il, WGATE], d, ad, T, small, hg, tqt, tsmt, scr)
                _product(tid, nt, buf, lw[il, WUP], d, ad, T, small, hu, tqt, tsmt, scr)
                nbar, last = _meet(counter, nt, nbar, prof, tid, 8, last)
                for t in range(t0, t1):
                    if flags.gelu:
                        ops._gelu_mul_row(hg[t], hu[t])
                    else:
                        ops._silu_mul_row(hg[t], hu[t])
                _quantize_rows(hg, af, t0, t1, small)
                nbar, last = _meet(counter, nt, nbar, prof, tid, 9, last)
            else:
                _feed_forward_gemm(tid, nt, buf, lw[il, WGATE], lw[il, WUP], d, ad, T, flags.gelu, af, glu[tid],
                                   tqt, tsmt, scr)
                nbar, last = _meet(counter, nt, nbar, prof, tid, 8, last)
            _product(tid, nt, buf, lw[il, WDOWN], n_ff, af, T, small, xb2, tqt, tsmt, scr)
            nbar, last = _meet(counter, nt, nbar, prof, tid, 10, last)
            for t in range(t0, t1):     # the next layer's norm reads only these tokens: no barrier
                if flags.post_norms:
                    ops._rmsnorm_row(xb2, norms[il, 3], eps, xb2, t)
                for j in range(d):
                    x[t, j] += xb2[t, j]
        for t in range(t0, t1):
            ops._rmsnorm_row(x, out_norm, eps, xb, t)
        prof[tid, LAST, 0] += cycles() - last


class BatchStep:
    """batch_step's arguments gathered once from a loaded Model; run(pos0, T) after the embeddings of the
    T tokens are in rs.x[:T]. supported(model, T): whether a batch of T tokens can take it."""

    def __init__(self, model):
        c, w, rs = model.config, model.weights, model.rs
        self.buf = file_views(model.gguf)
        base = self.buf[0].ctypes.data
        unpackers = list(UNPACKERS)

        def meta(lin):
            dot = lin.dot
            return [lin.w.ctypes.data - base, row_kind_of(lin, rs), lin.rows, lin.w.strides[0],
                    unpackers.index(dot.unpack_rows) if dot.unpack_rows is not None else -1,
                    dot.unpack_block, 1 if dot.act == "q8_k" else 0, 0]

        self.lw = np.array([[meta(m) for m in L.matrices()] for L in w.layers], np.int64)
        hd, d, nq = c.head_dim, c.n_embd, c.n_head * c.head_dim
        norms, qk_norm, bias, windows, swa = layer_arrays(model)
        self.shape = Shape(c.n_layer, c.n_head, c.n_kv, hd, c.n_rot, d, c.n_ff)
        self.flags = family_flags(model)
        self.weights = BatchWeights(self.buf, self.lw, norms, qk_norm, bias, w.output_norm, windows, swa,
                                    np.float32(c.eps), float(c.attn_scale))
        self.rope = Rope(*model.rope_global, *model.rope_local)
        B = rs.x.shape[0]
        acts = tuple(act_buffers(rs, kk, B) + (x,) + self._gemm_buffers(rs, kk, B)
                     for kk, x in ((d, rs.xb), (nq, rs.att_out), (c.n_ff, rs.hg)))
        nt = nb.config.NUMBA_NUM_THREADS
        kmax = max(d, nq, c.n_ff, 2 * d)    # 2 * d: the fused FFN's tile, the gate's and the up's rows side by side
        # each thread's row padded by 128 bytes: no two threads write one cache line (false sharing)
        tq = np.zeros((nt, ROWVECS * kmax // 4 * LANES + PAD), np.uint32)
        tsm = np.zeros((nt, 2 * ROWVECS * kmax // 16 * LANES + PAD), np.float32)
        scratch = np.zeros((nt, 2 * TOKENS * ROWVECS * LANES + PAD), np.float32)
        glu = lazy_zeros((nt, B, GLU_SPAN), np.float32)
        fscr = np.zeros((nt, scratch_floats(c.n_head, c.n_kv, hd) + PAD), np.float32)
        n_ctx = rs.kc.shape[1]
        kt = lazy_zeros((c.n_kv, hd, cache_rows(n_ctx)), np.float32)
        vf = lazy_zeros((n_ctx, c.n_kv * hd), np.float32)
        self.bufs = Buffers(rs.x, rs.xb, rs.xb2, rs.q, rs.k, rs.v, rs.att_out, rs.hg, rs.hu, *acts, rs.kc_k, rs.vc_k,
                            rs.att, kt, vf, tq, tsm, scratch, fscr, glu)
        self.counter = np.zeros(c.n_layer + 1, np.int64)
        self.prof = np.zeros((nt, len(STAGES), 2), np.int64)   # cycles per stage (_meet), since load
        mats = [m for L in w.layers for m in L.matrices()]
        self._gemm = all(m.gemm and m.dot.unpack_rows is not None for m in mats) and bool(rs.gemm_acts)
        self.rs = rs

    @staticmethod
    def _gemm_buffers(rs, k, B):
        def get(kind):
            a = rs.gemm_acts.get((kind, k))
            if a is None:
                return (np.zeros((B, 0), np.int8),) + (np.zeros((B, 0), np.float32),) * 3
            return a.aq, a.ad, a.ax16, a.ax32
        return get("q8_32") + get("q8_k")

    def supported(self, small: bool) -> bool:
        """Under BLAS_MIN_TOKENS tokens every matrix has a row kernel (Model checks, as for the decode step);
        from there on every matrix takes the GEMM (float weights keep BLAS, in the Python loop)."""
        return small or self._gemm

    def run(self, pos0: int, T: int, small: bool, n_threads: int) -> None:
        batch_step(n_threads, self.counter, pos0, T, small, self.shape, self.flags, self.weights, self.rope,
                   self.bufs, self.prof)
