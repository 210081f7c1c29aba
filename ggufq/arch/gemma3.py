"""Gemma 3 text (Gemma3ForCausalLM): llama.cpp's Gemma3Model."""
from __future__ import annotations

import math

import numpy as np

from ggufq.arch.base import DENSE_TENSORS, TextArch

GEMMA3_TENSORS = {
    **{k: v for k, v in DENSE_TENSORS.items() if k != "blk.{i}.ffn_norm.weight"},
    "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
    "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}


class Gemma3(TextArch):
    hf_architectures = ("Gemma3ForCausalLM",)
    gguf_arch = "gemma3"
    hf_model_type = "gemma3_text"
    tensors = GEMMA3_TENSORS
    neox_rope = True

    @classmethod
    def runtime_config(cls, g, c) -> None:
        """Embeddings scaled by sqrt(n_embd), q scaled before attention, norms after each sub-layer, GeGLU,
        logits soft-capped, local (sliding-window) layers with their own RoPE base between global ones."""
        c.embd_scale = math.sqrt(c.n_embd)
        c.scale_q = c.post_norms = c.gelu = True
        c.logit_softcap = float(g.arch_get("final_logit_softcapping", 0.0) or 0.0)
        if c.n_layer == 62:  # Gemma 3 27B scales by the model width per head (as llama.cpp)
            c.attn_scale = 1.0 / math.sqrt(c.n_embd / c.n_head)
        window = int(g.arch_get("attention.sliding_window", 0) or 0)
        if window > 0:
            c.sliding_window = window
            c.rope_base_swa = float(g.arch_get("rope.freq_base_swa", 10000.0))
            pattern = g.arch_get("attention.sliding_window_pattern", 6)
            if isinstance(pattern, int):
                c.swa_layers = tuple(pattern == 0 or il % pattern < pattern - 1 for il in range(c.n_layer))
            else:
                c.swa_layers = tuple(bool(v) for v in pattern)[:c.n_layer]
    config_defaults = {"vocab_size": 262208, "max_position_embeddings": 131072, "hidden_size": 2304,
                       "intermediate_size": 9216, "num_attention_heads": 8, "num_key_value_heads": 4,
                       "head_dim": 256, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
                       "rope_local_base_freq": 10000.0, "sliding_window": 4096, "query_pre_attn_scalar": 256}

    def set_gguf_parameters(self, w, file_type: int) -> None:
        super().set_gguf_parameters(w, file_type)
        hp = self.hp
        w.add_context_length(hp.get("max_position_embeddings", 131072))
        w.add_head_count(hp.get("num_attention_heads", 8))
        w.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
        w.add_key_length(hp.get("head_dim", 256))
        w.add_value_length(hp.get("head_dim", 256))
        w.add_rope_freq_base(self.rope_parameters.get("full_attention", self.rope_parameters)
                             .get("rope_theta", 1_000_000.0))
        if hp.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(hp["final_logit_softcapping"])
        if hp.get("sliding_window_pattern") != 1:
            w.add_sliding_window(hp["sliding_window"])
        w.add_head_count_kv(hp.get("num_key_value_heads", 4))

    def set_vocab(self, w, vocab) -> None:
        vocab.add_to(w)
        if vocab.model == "llama":
            w.add_add_space_prefix(False)

    @staticmethod
    def _shifted(name: str) -> bool:
        return name.endswith("norm.weight")  # Gemma3RMSNorm computes x * (1 + w)

    def gguf_shape(self, hf_name, shape):
        if "embed_tokens.weight" in hf_name and self.n_vocab_real is not None:
            return (min(shape[0], self.n_vocab_real), *shape[1:])  # drop rows past the vocabulary
        return tuple(shape)

    def to_gguf(self, hf_name, data):
        if self._shifted(hf_name):
            data = data + data.dtype.type(1)
        return data

    def from_gguf(self, gguf_name, data):
        return data - np.float32(1) if self._shifted(gguf_name) else data

    @classmethod
    def hf_config(cls, g):
        cfg = super().hf_config(g)
        a = g.arch_get
        head_dim = a("attention.key_length", 256)
        n_layer = a("block_count")
        pattern = 6  # Gemma 3: five sliding-window layers, then one global
        cfg.update({
            "head_dim": head_dim,
            "hidden_activation": "gelu_pytorch_tanh",
            # llama.cpp scales queries by 1/sqrt(n_embd / n_head) for the 27B (62 blocks), 1/sqrt(head_dim) else
            "query_pre_attn_scalar": a("embedding_length") // a("attention.head_count") if n_layer == 62 else head_dim,
            "sliding_window": a("attention.sliding_window", 512),
            "rope_local_base_freq": a("rope.freq_base_swa", 10000.0),
            "rope_theta": a("rope.freq_base", 1_000_000.0),
            "rope_scaling": None,
            "attn_logit_softcapping": None,
            "final_logit_softcapping": a("final_logit_softcapping"),
            "layer_types": ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                            for i in range(n_layer)],
            "_sliding_window_pattern": pattern,
        })
        cfg.pop("hidden_act", None)
        return cfg
