"""Llama family (SmolLM2, Llama 2/3.x, Mistral-style): llama.cpp's LlamaModel."""
from __future__ import annotations

import math

import numpy as np

from ggufq.arch.base import TextArch


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half layout -> GGML's interleaved pairs, per head (llama.cpp's LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class Llama(TextArch):
    hf_architectures = ("LlamaForCausalLM", "MistralForCausalLM")
    gguf_arch = "llama"
    hf_model_type = "llama"
    config_defaults = {"vocab_size": 32000, "max_position_embeddings": 2048, "hidden_size": 4096,
                       "intermediate_size": 11008, "num_attention_heads": 32, "rms_norm_eps": 1e-6,
                       "rope_theta": 10000.0}

    @classmethod
    def with_config_defaults(cls, hparams):
        hp = super().with_config_defaults(hparams)
        if hp.get("head_dim") is None:  # LlamaConfig derives it
            hp["head_dim"] = hp["hidden_size"] // hp["num_attention_heads"]
        return hp

    def _heads(self, hf_name: str) -> int | None:
        n_head = self.find_hparam(["n_heads", "num_attention_heads"])
        n_kv = self.find_hparam(["n_kv_heads", "num_key_value_heads"], optional=True) or n_head
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return n_head
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return n_kv
        return None

    def set_gguf_parameters(self, w, file_type: int) -> None:
        super().set_gguf_parameters(w, file_type)
        w.add_vocab_size(self.hp["vocab_size"])
        rope_dim = self.hp.get("head_dim") or self.hp["hidden_size"] // self.hp["num_attention_heads"]
        w.add_rope_dimension_count(rope_dim)

    def set_vocab(self, w, vocab) -> None:
        cfg = vocab.folder / "tokenizer_config.json"
        if cfg.is_file():
            import json
            add_prefix_space = json.loads(cfg.read_text(encoding="utf-8")).get("add_prefix_space")
            if add_prefix_space is not None:
                w.add_add_space_prefix(add_prefix_space)
        vocab.add_to(w)
        if self.hp.get("vocab_size", 32000) == 49152:  # llama.cpp: granite-small / SmolLM vocabularies
            w.add_add_bos_token(False)

    def to_gguf(self, hf_name, data):
        n = self._heads(hf_name)
        return permute_qk(data, n) if n else data

    def row_local(self, hf_name):
        return self._heads(hf_name) is None  # the q/k permutation moves rows within each head

    def from_gguf(self, gguf_name, data):
        hf = self.hf_name(gguf_name) or ""
        n = self._heads(hf)
        return unpermute_qk(data, n) if n else data

    def extra_tensors(self):
        rope = self.rope_parameters.get("full_attention", self.rope_parameters)
        if not rope or rope.get("rope_type", "").lower() != "llama3":
            return []
        # Llama 3.1 frequency scaling, as llama.cpp's converter writes it (float32 arithmetic as torch does)
        base = rope.get("rope_theta", 10000.0)
        dim = self.hp.get("head_dim") or self.hp["hidden_size"] // self.hp["num_attention_heads"]
        freqs = (1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float32)
        factor = rope.get("factor", 8.0)
        low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
        old_ctx = rope.get("original_max_position_embeddings", 8192)
        low_wl, high_wl = old_ctx / low, old_ctx / high
        out = []
        for f in freqs:
            wl = 2 * math.pi / f
            if wl < high_wl:
                out.append(1)
            elif wl > low_wl:
                out.append(factor)
            else:
                smooth = (old_ctx / wl - low) / (high - low)
                out.append(1 / ((1 - smooth) / factor + smooth))
        return [("rope_freqs.weight", np.array(out, dtype=np.float32))]
