"""The decode step: one token through the whole model in one compiled call, one parallel region.

Model._forward runs a batch as a Python loop over layers, one kernel call per operation; for a single
token that is a few hundred parallel regions, and each one wakes the sleeping workers (~20 us on this
machine, as much as a small matrix product takes). Here the token's forward is one numba function:
`for tid in prange(n_threads)`, every thread takes its share of the rows of each matrix product (and of
the attention heads), thread 0 does the small element-wise work, and the threads meet at a spinning
barrier between stages, as ggml's graph compute does. It reads top to bottom like Model._block, calls the
same compiled kernels (so the logits are bit-identical to the batch path with one token), and covers the
llama, qwen2, qwen3 and gemma3 families.

Used for a one-token eval when every matrix's format has a row kernel (kernels/dot_rows.py), activations are
quantized (not exact mode), and the threading layer runs every prange iteration on its own thread.
"""
from __future__ import annotations

from collections import namedtuple

import numba as nb
import numpy as np
from numba import literal_unroll

from ggufq.runtime import ops
from ggufq.runtime.barrier import barrier
from ggufq.kernels.dot_common import quantize_q8_32, quantize_q8_k
from ggufq.kernels.dot_rows import has_row_kernel, row_kind, row_table

# The registry's row kernels, fixed when this module is compiled; the tuple is a global, not an argument
# (typing a tuple of functions costs ~0.3 ms a call, a token's time). numba's cache of the step does not
# see it: ggufq/jit_cache.py drops the step with every kernel when a source changes.
ROW_KERNELS = row_table()

f32 = np.float32

# the seven matrices of a layer, in the order of the metadata rows
WQ, WK, WV, WO, WGATE, WUP, WDOWN = range(7)

# decode_step's arguments, grouped (numba takes named tuples as they are; the names are compile-time)
Shape = namedtuple("Shape", "n_layer n_head n_kv hd n_rot d n_ff")
# what the family's block does beyond llama's: q/k/v biases (qwen2), RMS norm of each q and k head (qwen3,
# gemma3), norms after attention and after the FFN (gemma3), q scaled before attention rather than in the
# softmax (gemma3), GeGLU rather than SwiGLU (gemma3); neox: RoPE on the two halves of a head
Flags = namedtuple("Flags", "neox bias qk_norm post_norms scale_q gelu")
# lw int64[n_layer, 7, 4]: per matrix (offset in buf, kind: the index of its row kernel in ROW_KERNELS, rows,
# row bytes), WQ..WDOWN; ow the same for the output matrix.
# norms float32[n_layer, 4, d]: attention, FFN, post-attention and post-FFN norms; qk_norm [n_layer, 2, hd];
# bias [n_layer, 3, n_head*hd]; windows: the sliding window of each layer (0: global); swa: local layers
StepWeights = namedtuple("StepWeights", "buf lw ow norms qk_norm bias out_norm windows swa eps attn_scale")
Rope = namedtuple("Rope", "cos_g sin_g cos_l sin_l")
# the run state's rows for one token; ad, aq, af: activation buffers for inputs of width d, n_head*hd, n_ff
Buffers = namedtuple("Buffers", "x xb xb2 q k v att_out hg hu logits ad aq af kc vc att")


@nb.njit(inline="always")
def _quantize(x, a):
    """x float32[1, k] into the activation buffers a = (q32, d32, s32, qk, dk, sk, x), each form only when
    its buffers are not empty (some matrix of this input uses it); the float types read x itself."""
    if a[1].size:
        quantize_q8_32(x, a[0], a[1], a[2])
    if a[4].size:
        quantize_q8_k(x, a[3], a[4], a[5])


@nb.njit(cache=True)
def matvec_rows(kind, buf, off, rb, r0, r1, k, acts, out):
    """out[r] = W[r] . x for r in r0..r1 by the row kernel at index `kind` of ROW_KERNELS (one function:
    the table unrolled here once, not at each of the step's products, keeps the compile short)."""
    i = 0
    for rows in literal_unroll(ROW_KERNELS):
        if i == kind:
            rows(buf, off, rb, r0, r1, k, acts, out)
        i += 1


@nb.njit(inline="always")
def _matvec(tid, nt, buf, meta, k, a, out):
    """This thread's share of out[0, :] = W . x; meta = (offset, kind, rows, row bytes): the kind indexes
    the registry's row kernels (ROW_KERNELS); buf = the file as (uint8, uint16, float32)."""
    R = meta[2]
    acts = (a[0].reshape(-1), a[1].reshape(-1), a[2].reshape(-1), a[3].reshape(-1), a[4].reshape(-1),
            a[5].reshape(-1), a[6].reshape(-1))
    matvec_rows(meta[1], buf, meta[0], meta[3], R * tid // nt, R * (tid + 1) // nt, k, acts, out.reshape(-1))


@nb.njit(inline="always")
def _product(tid, nt, counter, nbar, buf, meta, k, a, out):
    """out = W . x by every thread, between two barriers (x quantized into `a` by thread 0 before)."""
    nbar = barrier(counter, nt, nbar)
    _matvec(tid, nt, buf, meta, k, a, out)
    return barrier(counter, nt, nbar)


@nb.njit(inline="always")
def _store_kv(cache, pos, row):
    """cache[pos, :] = row (fp16 bits, rounded to nearest even as numpy's float16 is, or float32)."""
    for j in range(row.shape[0]):
        cache[pos, j] = ops.f32_to_kv(row[j], cache)


@nb.njit(cache=True, parallel=True)
def decode_step(nt, counter, pos, shape, flags, sw, rope, bufs):
    """One token at position pos through nt threads; bufs.x[1, d] holds its embedding, bufs.logits[1, n_vocab]
    receives the output. shape: Shape, flags: Flags, sw: StepWeights, rope: Rope, bufs: Buffers."""
    n_layer, n_head, n_kv, hd, n_rot, d, n_ff = shape
    buf, lw, ow, norms, qk_norm, bias, out_norm, windows, swa, eps, attn_scale = sw
    cos_g, sin_g, cos_l, sin_l = rope
    x, xb, xb2, q, k, v, att_out, hg, hu, logits, ad, aq, af, kc, vc, att = bufs
    nq = n_head * hd
    counter[0] = 0
    for tid in nb.prange(nt):
        nbar = 0
        for il in range(n_layer):
            # ---- attention: x = x + [PostNorm](Attention(RMSNorm(x))) ----
            if tid == 0:
                ops.rmsnorm(x, norms[il, 0], eps, xb)
                _quantize(xb, ad)
            nbar = barrier(counter, nt, nbar)
            _matvec(tid, nt, buf, lw[il, WQ], d, ad, q)
            _matvec(tid, nt, buf, lw[il, WK], d, ad, k)
            _matvec(tid, nt, buf, lw[il, WV], d, ad, v)
            nbar = barrier(counter, nt, nbar)
            if tid == 0:
                if flags.bias:
                    ops.add_bias(q, bias[il, 0])
                    ops.add_bias(k, bias[il, 1, :n_kv * hd])
                    ops.add_bias(v, bias[il, 2, :n_kv * hd])
                if flags.qk_norm:
                    qh = q.reshape(n_head, hd)
                    kh = k.reshape(n_kv, hd)
                    ops.rmsnorm(qh, qk_norm[il, 0], eps, qh)
                    ops.rmsnorm(kh, qk_norm[il, 1], eps, kh)
                cos, sin = (cos_l, sin_l) if swa[il] else (cos_g, sin_g)
                ops.rope(q, n_head, hd, n_rot, pos, cos, sin, flags.neox)
                ops.rope(k, n_kv, hd, n_rot, pos, cos, sin, flags.neox)
                _store_kv(kc[il], pos, k[0])
                _store_kv(vc[il], pos, v[0])
                if flags.scale_q:
                    ops.scale_rows(q, f32(attn_scale))
            nbar = barrier(counter, nt, nbar)
            scale = f32(1.0) if flags.scale_q else f32(attn_scale)
            chunk = ops.fa_chunk(kc.shape[1], windows[il], pos, 1, nt)
            for h in range(n_head * tid // nt, n_head * (tid + 1) // nt):
                ops.attend_head(q, kc[il], vc[il], 0, h, pos, (n_head, n_kv, hd), windows[il], scale, att_out,
                                att[h], chunk)
            nbar = barrier(counter, nt, nbar)
            if tid == 0:
                _quantize(att_out, aq)
            nbar = _product(tid, nt, counter, nbar, buf, lw[il, WO], nq, aq, xb2)
            # ---- feed-forward: x = x + [PostNorm](FFN(RMSNorm(x))) ----
            if tid == 0:
                if flags.post_norms:
                    ops.rmsnorm(xb2, norms[il, 2], eps, xb2)
                ops.add_rmsnorm(x, xb2, norms[il, 1], eps, xb)
                _quantize(xb, ad)
            nbar = barrier(counter, nt, nbar)
            _matvec(tid, nt, buf, lw[il, WGATE], d, ad, hg)
            _matvec(tid, nt, buf, lw[il, WUP], d, ad, hu)
            nbar = barrier(counter, nt, nbar)
            if tid == 0:
                if flags.gelu:
                    ops.gelu_mul(hg, hu)
                else:
                    ops.silu_mul(hg, hu)
                _quantize(hg, af)
            nbar = _product(tid, nt, counter, nbar, buf, lw[il, WDOWN], n_ff, af, xb2)
            if tid == 0:
                if flags.post_norms:
                    ops.rmsnorm(xb2, norms[il, 3], eps, xb2)
                for j in range(d):
                    x[0, j] += xb2[0, j]
        # ---- output ----
        if tid == 0:
            ops.rmsnorm(x, out_norm, eps, xb)
            _quantize(xb, ad)
        nbar = barrier(counter, nt, nbar)
        _matvec(tid, nt, buf, ow, d, ad, logits)


def row_kind_of(lin, rs) -> int:
    """The index in ROW_KERNELS of a matrix's row kernel in the run state's arithmetic."""
    return row_kind(lin.qtype, lin.rows, rs.llama_cpp)


def layer_arrays(model):
    """The layers' small tensors stacked for a compiled step: norms float32[n_layer, 4, d] (attention, FFN,
    post-attention, post-FFN), qk_norm [n_layer, 2, hd], bias [n_layer, 3, n_head * hd], the sliding window
    of each layer (0: global) and which layers are local."""
    c, w = model.config, model.weights
    hd, d, nq = c.head_dim, c.n_embd, c.n_head * c.head_dim
    zeros_d = np.zeros(d, np.float32)
    norms = np.array([[L.attn_norm, L.ffn_norm,
                            L.post_attn_norm if L.post_attn_norm is not None else zeros_d,
                            L.post_ffn_norm if L.post_ffn_norm is not None else zeros_d]
                           for L in w.layers], np.float32)
    has_qk = w.layers[0].q_norm is not None
    qk_norm = np.array([[L.q_norm, L.k_norm] if has_qk else [np.zeros(hd), np.zeros(hd)]
                             for L in w.layers], np.float32)
    has_bias = w.layers[0].bq is not None
    bias = np.zeros((c.n_layer, 3, nq), np.float32)
    if has_bias:
        for i, L in enumerate(w.layers):
            bias[i, 0] = L.bq
            bias[i, 1, :L.bk.size] = L.bk
            bias[i, 2, :L.bv.size] = L.bv
    windows = np.array([c.sliding_window if c.is_swa(i) else 0 for i in range(c.n_layer)], np.int64)
    swa = np.array([c.is_swa(i) for i in range(c.n_layer)], np.bool_)
    return norms, qk_norm, bias, windows, swa


def file_views(g):
    """The file's bytes as (uint8, uint16, float32) views, as the row kernels take them (dot_rows)."""
    b8 = np.frombuffer(g._mmap, dtype=np.uint8)
    return b8, b8[:b8.size // 2 * 2].view(np.uint16), b8[:b8.size // 4 * 4].view(np.float32)


def family_flags(model) -> Flags:
    """What the model's block does beyond llama's (Flags), for both compiled steps."""
    c, L0 = model.config, model.weights.layers[0]
    return Flags(neox=bool(c.neox), bias=L0.bq is not None, qk_norm=L0.q_norm is not None,
                 post_norms=bool(c.post_norms), scale_q=bool(c.scale_q), gelu=bool(c.gelu))


def act_buffers(rs, k, rows):
    """The first `rows` rows of the run state's activation buffers of width k for the row kernels:
    (q8_32: q, d, s) + (q8_k: q, d, s), a form no matrix of that width reads empty ([rows, 0])."""
    def get(kind):
        a = rs.acts.get((kind, k))
        if a is None:
            return (np.zeros((rows, 0), np.int8), np.zeros((rows, 0), np.float32),
                    np.zeros((rows, 0), np.float32 if kind == "q8_32" else np.int32))
        return a.xq[:rows], a.xd[:rows], a.xs[:rows]
    return get("q8_32") + get("q8_k")


class DecodeStep:
    """The arguments of decode_step gathered once from a loaded Model; run(pos) after the embedding of
    the token is in rs.x[0]."""

    def __init__(self, model):
        c, w, rs = model.config, model.weights, model.rs
        g = model.gguf
        self.buf = file_views(g)
        base = self.buf[0].ctypes.data
        hd, d, nq = c.head_dim, c.n_embd, c.n_head * c.head_dim

        def meta(lin):
            return [lin.w.ctypes.data - base, row_kind_of(lin, rs), lin.rows, lin.w.strides[0]]  # row bytes

        self.lw = np.array([[meta(m) for m in L.matrices()] for L in w.layers], np.int64)
        self.ow = np.array(meta(w.output), np.int64)
        self.norms, self.qk_norm, self.bias, windows, swa = layer_arrays(model)
        self.shape = Shape(c.n_layer, c.n_head, c.n_kv, hd, c.n_rot, d, c.n_ff)
        self.flags = family_flags(model)
        self.weights = StepWeights(self.buf, self.lw, self.ow, self.norms, self.qk_norm, self.bias, w.output_norm,
                                   windows, swa, np.float32(c.eps), float(c.attn_scale))
        self.rope = Rope(*model.rope_global, *model.rope_local)
        acts = (act_buffers(rs, d, 1) + (rs.xb[:1],), act_buffers(rs, nq, 1) + (rs.att_out[:1],),
                act_buffers(rs, c.n_ff, 1) + (rs.hg[:1],))
        self.bufs = Buffers(rs.x[:1], rs.xb[:1], rs.xb2[:1], rs.q[:1], rs.k[:1], rs.v[:1], rs.att_out[:1],
                            rs.hg[:1], rs.hu[:1], rs.logits, *acts, rs.kc_k, rs.vc_k, rs.att)
        self.counter = np.zeros(1, np.int64)
        self.rs = rs

    @staticmethod
    def supported(model) -> bool:
        """Every matrix the step multiplies has a row kernel (the embedding is only looked up). The
        families are the runtime's own: Config refuses any other architecture."""
        w = model.weights
        return all(has_row_kernel(m.qtype) for m in w.linears() if m is not w.token_embd or m is w.output)

    def run(self, pos: int, n_threads: int) -> np.ndarray:
        decode_step(n_threads, self.counter, pos, self.shape, self.flags, self.weights, self.rope, self.bufs)
        return self.rs.logits


