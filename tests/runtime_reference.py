"""A float64 numpy forward pass, written from the papers / Hugging Face modelling code, for the tests.

Weights are dequantized by gguf-py (one tensor at a time); no KV cache, no batching tricks: the whole
sequence at once. Families: llama (+ qwen2 biases, qwen3 q/k norm) and gemma3.
"""
from __future__ import annotations

import math

import numpy as np
from gguf import GGMLQuantizationType, quants

from ggufq.files.gguf_reader import GGUFFile


def _raw(ti, rows=None):
    """A tensor's rows as gguf-py's dequantize wants them (BF16 as bytes)."""
    a = ti.data if rows is None else ti.data[rows]
    a = np.ascontiguousarray(a)
    return a.view(np.uint8) if ti.qtype == GGMLQuantizationType.BF16 else a


def _w(g: GGUFFile, name: str) -> np.ndarray:
    ti = g.tensors[name]
    a = quants.dequantize(_raw(ti), ti.qtype)
    return np.asarray(a, np.float64).reshape(tuple(reversed(ti.shape)))


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope(x, pos, base, n_rot, neox, scale=1.0):
    """x [T, H, hd]"""
    half = n_rot // 2
    inv = base ** (-2.0 * np.arange(half) / n_rot) * scale
    th = pos[:, None] * inv[None, :]
    c, s = np.cos(th)[:, None, :], np.sin(th)[:, None, :]
    x = x.copy()
    if neox:
        a, b = x[..., :half].copy(), x[..., half:n_rot].copy()
        x[..., :half], x[..., half:n_rot] = a * c - b * s, a * s + b * c
    else:
        a, b = x[..., 0:n_rot:2].copy(), x[..., 1:n_rot:2].copy()
        x[..., 0:n_rot:2], x[..., 1:n_rot:2] = a * c - b * s, a * s + b * c
    return x


def _attend(q, k, v, scale, window):
    """q [T, H, hd], k/v [T, Hkv, hd]; causal, GQA (head h reads kv head h // (H / Hkv))."""
    T, H, hd = q.shape
    g = H // k.shape[1]
    k = np.repeat(k, g, axis=1)
    v = np.repeat(v, g, axis=1)
    s = np.einsum("thd,shd->hts", q, k) * scale
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    mask = j > i
    if window:
        mask |= (i - j) >= window
    s = np.where(mask[None], -np.inf, s)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return np.einsum("hts,shd->thd", s, v).reshape(T, H * hd)


def reference_logits(path: str, tokens) -> np.ndarray:
    g = GGUFFile(path)
    arch = g.arch
    get = g.arch_get
    n_layer, d = get("block_count"), get("embedding_length")
    H = get("attention.head_count")
    Hkv = get("attention.head_count_kv", H)
    hd = get("attention.key_length", d // H)
    eps = get("attention.layer_norm_rms_epsilon")
    base = get("rope.freq_base", 10000.0)
    n_rot = get("rope.dimension_count", hd)
    neox = arch in ("qwen2", "qwen3", "gemma3")
    gemma = arch == "gemma3"
    tokens = np.asarray(tokens)
    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    et = g.tensors["token_embd.weight"]
    x = np.asarray(quants.dequantize(_raw(et, tokens), et.qtype), np.float64).reshape(T, d)
    if gemma:
        x *= math.sqrt(d)
    window = get("attention.sliding_window", 0) if gemma else 0
    for il in range(n_layer):
        p = f"blk.{il}."
        local = gemma and window and il % 6 < 5
        has = lambda n: p + n in g.tensors  # noqa: E731
        h = _rms(x, _w(g, p + "attn_norm.weight"), eps)
        q = h @ _w(g, p + "attn_q.weight").T
        k = h @ _w(g, p + "attn_k.weight").T
        v = h @ _w(g, p + "attn_v.weight").T
        if has("attn_q.bias"):
            q, k, v = q + _w(g, p + "attn_q.bias"), k + _w(g, p + "attn_k.bias"), v + _w(g, p + "attn_v.bias")
        q, k, v = q.reshape(T, H, hd), k.reshape(T, Hkv, hd), v.reshape(T, Hkv, hd)
        if has("attn_q_norm.weight"):
            q = _rms(q, _w(g, p + "attn_q_norm.weight"), eps)
            k = _rms(k, _w(g, p + "attn_k_norm.weight"), eps)
        b = 10000.0 if local else base
        q, k = _rope(q, pos, b, n_rot, neox), _rope(k, pos, b, n_rot, neox)
        a = _attend(q, k, v, 1.0 / math.sqrt(hd), window if local else 0)
        o = a @ _w(g, p + "attn_output.weight").T
        if gemma:
            o = _rms(o, _w(g, p + "post_attention_norm.weight"), eps)
        x = x + o
        h = _rms(x, _w(g, p + "ffn_norm.weight"), eps)
        gt = h @ _w(g, p + "ffn_gate.weight").T
        up = h @ _w(g, p + "ffn_up.weight").T
        if gemma:
            act = 0.5 * gt * (1 + np.tanh(math.sqrt(2 / math.pi) * (gt + 0.044715 * gt ** 3)))
        else:
            act = gt / (1 + np.exp(-gt))
        o = (act * up) @ _w(g, p + "ffn_down.weight").T
        if gemma:
            o = _rms(o, _w(g, p + "post_ffw_norm.weight"), eps)
        x = x + o
    x = _rms(x, _w(g, "output_norm.weight"), eps)
    ot = g.tensors.get("output.weight", et)
    out = np.zeros((T, ot.shape[1]))
    for r in range(0, ot.shape[1], 16384):  # a slab of rows at a time: the tied matrix can be large
        w = quants.dequantize(_raw(ot, slice(r, r + 16384)), ot.qtype)
        out[:, r:r + 16384] = x @ np.asarray(w, np.float64).reshape(-1, d).T
    return out
