"""Qwen2 (biases on q/k/v) and Qwen3 (q/k RMS norms): llama.cpp's Qwen2Model and Qwen3Model."""
from __future__ import annotations

from ggufq.arch.base import DENSE_TENSORS, TextArch

QWEN2_TENSORS = {
    **DENSE_TENSORS,
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
}

QWEN3_TENSORS = {
    **DENSE_TENSORS,
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}


_QWEN_DEFAULTS = {"vocab_size": 151936, "max_position_embeddings": 32768, "hidden_size": 4096,
                  "intermediate_size": 22016, "num_attention_heads": 32, "rms_norm_eps": 1e-6,
                  "rope_theta": 10000.0}


class Qwen2(TextArch):
    hf_architectures = ("Qwen2ForCausalLM",)
    gguf_arch = "qwen2"
    neox_rope = True
    hf_model_type = "qwen2"
    tensors = QWEN2_TENSORS
    config_defaults = _QWEN_DEFAULTS


class Qwen3(Qwen2):
    """Qwen2 without the q/k/v biases, with an RMS norm of each q and k head (in the tensor table)."""
    hf_architectures = ("Qwen3ForCausalLM",)
    gguf_arch = "qwen3"
    hf_model_type = "qwen3"
    tensors = QWEN3_TENSORS
    config_defaults = {**_QWEN_DEFAULTS, "head_dim": 128}
