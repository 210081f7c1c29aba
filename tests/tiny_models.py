"""Tiny synthetic Hugging Face checkpoints (random weights, deterministic) for the converter tests.

The vocabulary comes from llama.cpp's own test vocabulary (models/vocab/ggml-vocab-qwen2.gguf), written
out as tokenizer.json by our exporter; the weights are random BF16 (or F16/F32) from a fixed seed, so the
same folder is made on every machine and llama.cpp's converter output on it is a stable golden fixture.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ggufq.files.gguf_reader import GGUFFile
from ggufq.convert.vocab_to_hf import write_hf_tokenizer
from ggufq.kernels.floats import f32_to_bf16_bits
from ggufq.files.safetensors import TensorSpec, write_safetensors

from .conftest import MODELS

QWEN2_VOCAB = MODELS / "vocab" / "ggml-vocab-qwen2.gguf"

TINY = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16}


def tiny_config(arch: str, n_vocab: int) -> dict:
    cfg = {
        "architectures": [{"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[arch]],
        "model_type": arch, **TINY, "vocab_size": n_vocab, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": arch == "qwen3",
        "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 151643, "eos_token_id": 151645,
    }
    if arch == "qwen2":
        cfg.pop("head_dim")
    return cfg


def tiny_tensors(arch: str, n_vocab: int) -> dict[str, tuple[int, ...]]:
    h, f, hd = TINY["hidden_size"], TINY["intermediate_size"], TINY["head_dim"]
    nq, nkv = TINY["num_attention_heads"] * hd, TINY["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (n_vocab, h), "model.norm.weight": (h,)}
    if arch == "qwen2":
        shapes["lm_head.weight"] = (n_vocab, h)
    for i in range(TINY["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (nq, h), p + "self_attn.k_proj.weight": (nkv, h),
            p + "self_attn.v_proj.weight": (nkv, h), p + "self_attn.o_proj.weight": (h, nq),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f),
        })
        if arch == "qwen2":
            shapes.update({p + "self_attn.q_proj.bias": (nq,), p + "self_attn.k_proj.bias": (nkv,),
                           p + "self_attn.v_proj.bias": (nkv,)})
        else:
            shapes.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    return shapes


def make_tiny(out_dir: Path, arch: str, dtype: str = "BF16", seed: int = 0) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with GGUFFile(QWEN2_VOCAB) as g:
        write_hf_tokenizer(g, out_dir)
        n_vocab = len(g.get("tokenizer.ggml.tokens"))
    (out_dir / "config.json").write_text(json.dumps(tiny_config(arch, n_vocab), indent=2))
    rng = np.random.default_rng(seed)
    shapes = tiny_tensors(arch, n_vocab)
    arrays = {}
    for name in sorted(shapes):
        shape = shapes[name]
        x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.05)
        if name.endswith("norm.weight"):
            x = x + np.float32(1.0)
        arrays[name] = x
    specs = [TensorSpec(n, dtype, shapes[n]) for n in sorted(shapes)]

    def produce(s):
        x = arrays[s.name]
        return {"BF16": lambda: f32_to_bf16_bits(x), "F16": lambda: x.astype(np.float16),
                "F32": lambda: x}[s.dtype]()

    write_safetensors(out_dir / "model.safetensors", specs, produce)
    return out_dir
