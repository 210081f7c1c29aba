"""A model's hyper-parameters as the runtime needs them, read from the GGUF's metadata (llama.cpp's
names: `<arch>.block_count`, `<arch>.attention.head_count`, ...)."""
from __future__ import annotations

import math
from dataclasses import dataclass

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

        n_layer, n_embd = int(req("block_count")), int(req("embedding_length"))
        n_head = int(req("attention.head_count"))
        n_kv = g.arch_get("attention.head_count_kv", n_head)
        for name, v in (("attention.head_count", n_head), ("attention.head_count_kv", n_kv),
                        ("feed_forward_length", g.arch_get("feed_forward_length"))):
            if not isinstance(v, int):
                raise GGUFQError(f"{g.path}: {arch}.{name} = {v!r}: per-layer values are not supported")
        head_dim = int(g.arch_get("attention.key_length", n_embd // n_head))
        if int(g.arch_get("attention.value_length", head_dim)) != head_dim:
            raise GGUFQError(f"{g.path}: {arch}.attention.value_length differs from key_length: not supported")
        emb = g.tensors.get("token_embd.weight")
        if emb is None:
            raise GGUFQError(f"{g.path}: missing tensor token_embd.weight")
        n_vocab = int(emb.shape[1])
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
        family.runtime_config(g, c)
        return c

    def is_swa(self, il: int) -> bool:
        return bool(self.swa_layers) and self.swa_layers[il]
