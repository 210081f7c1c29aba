"""A model's hyper-parameters as the runtime needs them, read from the GGUF's metadata (llama.cpp's
names: `<arch>.block_count`, `<arch>.attention.head_count`, ...)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ggufq.errors import GGUFQError
from ggufq.files.gguf_reader import GGUFFile




@dataclass
class Config:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_kv: int
    head_dim: int            # key_length (= value_length here)
    n_vocab: int
    n_ctx_train: int
    eps: float
    n_rot: int
    rope_base: float
    rope_freq_scale: float   # 1 / linear scaling factor
    neox: bool
    attn_scale: float
    # what a family changes (set by its ggufq/arch class's runtime_config)
    sliding_window: int = 0          # gemma3: window of the local layers
    swa_layers: tuple = ()           # gemma3: which layers are local
    rope_base_swa: float = 10000.0
    embd_scale: float = 1.0
    logit_softcap: float = 0.0
    scale_q: bool = False            # gemma3 scales q before attention (then rounded), llama in the softmax
    post_norms: bool = False         # gemma3: RMS norms after attention and after the FFN
    gelu: bool = False               # gemma3: GeGLU feed-forward (llama: SwiGLU)

    @classmethod
    def from_gguf(cls, g: GGUFFile) -> "Config":
        from ggufq.arch import ARCHES
        arch = g.arch
        family = next((a for a in ARCHES if a.gguf_arch == arch), None)
        if family is None:
            raise GGUFQError(f"{g.path}: architecture {arch!r} is not supported by the runtime "
                             f"(supported: {', '.join(sorted(a.gguf_arch for a in ARCHES))})")

        def req(suffix):
            v = g.arch_get(suffix)
            if v is None:
                raise GGUFQError(f"{g.path}: missing metadata key {arch}.{suffix}")
            return v

        def count(suffix, value=None, low=1, high=1 << 20):
            """A size from the header, checked before anything is divided by it or allocated with it."""
            v = req(suffix) if value is None else value
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise GGUFQError(f"{g.path}: {arch}.{suffix} = {v!r}: per-layer values are not supported"
                                 if isinstance(v, (list, np.ndarray)) else f"{g.path}: {arch}.{suffix} = {v!r} "
                                 "is not an integer")
            if not low <= int(v) <= high:
                raise GGUFQError(f"{g.path}: {arch}.{suffix} = {int(v)} is out of range ({low} to {high})")
            return int(v)

        n_layer, n_embd = count("block_count", high=4096), count("embedding_length", high=1 << 17)
        n_head = count("attention.head_count", high=4096)
        n_kv = count("attention.head_count_kv", g.arch_get("attention.head_count_kv", n_head), high=n_head)
        count("feed_forward_length", high=1 << 20)
        count("context_length", high=1 << 24)
        head_dim = count("attention.key_length", g.arch_get("attention.key_length", max(n_embd // n_head, 1)),
                         high=1 << 12)
        if int(g.arch_get("attention.value_length", head_dim)) != head_dim:
            raise GGUFQError(f"{g.path}: {arch}.attention.value_length differs from key_length: not supported")
        emb = g.tensors.get("token_embd.weight")
        if emb is None:
            raise GGUFQError(f"{g.path}: missing tensor token_embd.weight")
        n_vocab = int(emb.shape[1])
        n_tokens = g.length("tokenizer.ggml.tokens")
        if n_tokens is not None and n_tokens != n_vocab:  # ids past either end would index out of range
            raise GGUFQError(f"{g.path}: the vocabulary has {n_tokens} tokens but token_embd.weight has "
                             f"{n_vocab} rows")
        scaling = g.arch_get("rope.scaling.type", "none" if g.arch_get("rope.scaling.factor") is None else "linear")
        if scaling not in ("none", "linear"):
            raise GGUFQError(f"{g.path}: {arch}.rope.scaling.type {scaling!r} is not supported (none, linear)")
        factor = float(g.arch_get("rope.scaling.factor", 0.0) or 0.0)
        c = cls(arch=arch, n_layer=n_layer, n_embd=n_embd, n_ff=int(req("feed_forward_length")),
                n_head=n_head, n_kv=int(n_kv), head_dim=head_dim, n_vocab=n_vocab,
                n_ctx_train=int(req("context_length")), eps=float(req("attention.layer_norm_rms_epsilon")),
                n_rot=int(g.arch_get("rope.dimension_count", head_dim)),
                rope_base=float(g.arch_get("rope.freq_base", 10000.0)),
                rope_freq_scale=1.0 / factor if scaling == "linear" and factor else 1.0,
                neox=family.neox_rope, attn_scale=1.0 / math.sqrt(head_dim))
        if n_head % c.n_kv:
            raise GGUFQError(f"{g.path}: {n_head} heads is not a multiple of {c.n_kv} KV heads")
        count("rope.dimension_count", c.n_rot, low=2, high=head_dim)
        if c.n_rot % 2:
            raise GGUFQError(f"{g.path}: {arch}.rope.dimension_count = {c.n_rot} is odd")
        if not (0.0 < c.eps < 1.0) or not (0.0 < c.rope_base < float("inf")):
            raise GGUFQError(f"{g.path}: {arch}: rms epsilon {c.eps} or RoPE base {c.rope_base} out of range")
        if f"blk.{n_layer - 1}.attn_norm.weight" not in g.tensors:
            raise GGUFQError(f"{g.path}: {arch}.block_count = {n_layer}, but the file has no layer {n_layer - 1}")
        family.runtime_config(g, c)
        return c

    def is_swa(self, il: int) -> bool:
        return bool(self.swa_layers) and self.swa_layers[il]
