"""Tiny synthetic Hugging Face checkpoints (random weights, deterministic) for the converter tests.

The vocabulary comes from llama.cpp's own test vocabulary (models/vocab/ggml-vocab-qwen2.gguf), written
out as tokenizer.json by our exporter; the weights are random BF16 (or F16/F32) from a fixed seed, so the
same folder is made on every machine and llama.cpp's converter output on it is a stable golden fixture.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter, quants

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


# ---- tiny GGUF files, written directly ------------------------------------------------------------

@contextmanager
def gguf_file(path, arch: str):
    """A gguf.GGUFWriter for the block; the file is written out and closed when it ends."""
    w = GGUFWriter(str(path), arch)
    yield w
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tiny_gguf(path, arch="llama", pre="gpt-2", tokens=("a", "b", "ab", "<s>"), n_embd=32, n_head=4,
              extra=None, embd_rows=None):
    """A 1-block llama-shaped GGUF with a 4-token byte-level BPE vocabulary, F32 weights; `extra(w)` may
    add keys and tensors; embd_rows: the embedding's rows, if not one per token."""
    rng = np.random.default_rng(0)
    n_ff, n_vocab = 64, embd_rows or len(tokens) or 4
    with gguf_file(str(path), arch) as w:
        w.add_block_count(1)
        w.add_context_length(128)
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head // 2)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_freq_base(10000.0)
        if tokens:
            w.add_tokenizer_model("gpt2")
            w.add_tokenizer_pre(pre)
            w.add_token_list(list(tokens))
            w.add_token_types([1, 1, 1, 3])
            w.add_token_merges(["a b"])
            w.add_bos_token_id(3)
            w.add_add_bos_token(False)
        shapes = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,),
                  "blk.0.attn_norm.weight": (n_embd,), "blk.0.ffn_norm.weight": (n_embd,),
                  "blk.0.attn_q.weight": (n_embd, n_embd), "blk.0.attn_k.weight": (n_embd // 2, n_embd),
                  "blk.0.attn_v.weight": (n_embd // 2, n_embd), "blk.0.attn_output.weight": (n_embd, n_embd),
                  "blk.0.ffn_gate.weight": (n_ff, n_embd), "blk.0.ffn_up.weight": (n_ff, n_embd),
                  "blk.0.ffn_down.weight": (n_embd, n_ff)}
        if extra:
            extra(w)
        for name, shape in shapes.items():
            w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    return path


def tiny_model(path: Path, n_layer: int = 8, ne0: int = 256, nan: str | None = None, tied: bool = False,
               dtype=np.float16) -> Path:
    """A small llama-shaped GGUF: token_embd, per layer attn_q/k/v/output, ffn_up/gate/down, norms."""
    rng = np.random.default_rng(0)
    with gguf_file(path, "llama") as w:
        w.add_block_count(n_layer)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        w.add_file_type(1)

        def t(name, shape):
            a = (rng.normal(0, 0.05, shape)).astype(np.float32)
            if name == nan:
                a.reshape(-1)[7] = np.nan
            w.add_tensor(name, a.astype(dtype) if len(shape) > 1 else a)
        t("token_embd.weight", (64, ne0))
        if not tied:
            t("output.weight", (64, ne0))
        t("output_norm.weight", (ne0,))
        for i in range(n_layer):
            for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_gate"):
                t(f"blk.{i}.{n}.weight", (32, ne0))
            t(f"blk.{i}.ffn_down.weight", (ne0, 512))
            t(f"blk.{i}.attn_norm.weight", (ne0,))
    return path


def write_tiny(path, arch: str, seed: int = 0, types=None) -> None:
    """A random 2-layer model of `arch` (qwen2: q/k/v biases, untied head; qwen3: q/k norms, tied)."""
    rng = np.random.default_rng(seed)
    d, ff, H, Hkv, hd, V = 64, 96, 4, 2, 32 if arch == "qwen3" else 16, 300
    types = types or {}
    with gguf_file(str(path), arch) as w:
        w.add_block_count(2)
        w.add_context_length(64)
        w.add_embedding_length(d)
        w.add_feed_forward_length(ff)
        w.add_head_count(H)
        w.add_head_count_kv(Hkv)
        if arch == "qwen3":
            w.add_key_length(hd)
            w.add_value_length(hd)
        w.add_rope_freq_base(1000000.0)
        w.add_layer_norm_rms_eps(1e-6)

        def add(name, shape, qtype=T.F32, scale=0.2):
            a = (rng.standard_normal(shape) * scale).astype(np.float32)
            qtype = types.get(name.split(".")[-2], qtype) if len(shape) == 2 else qtype
            if qtype == T.F32:
                w.add_tensor(name, a)
            elif qtype == T.F16:
                w.add_tensor(name, a.astype(np.float16))
            else:
                w.add_tensor(name, quants.quantize(a, qtype), raw_dtype=qtype)

        add("token_embd.weight", (V, d), T.Q8_0, 1.0)
        add("output_norm.weight", (d,), scale=0.1)
        if arch == "qwen2":
            add("output.weight", (V, d), T.Q4_1)
        for i in range(2):
            p = f"blk.{i}."
            add(p + "attn_norm.weight", (d,))
            add(p + "attn_q.weight", (H * hd, d), T.Q5_0)
            add(p + "attn_k.weight", (Hkv * hd, d), T.Q8_0)
            add(p + "attn_v.weight", (Hkv * hd, d), T.F16)
            add(p + "attn_output.weight", (d, H * hd), T.Q4_0)
            add(p + "ffn_norm.weight", (d,))
            add(p + "ffn_gate.weight", (ff, d), T.Q5_1)
            add(p + "ffn_up.weight", (ff, d), T.BF16)
            add(p + "ffn_down.weight", (d, ff), T.Q8_0)
            if arch == "qwen2":
                add(p + "attn_q.bias", (H * hd,))
                add(p + "attn_k.bias", (Hkv * hd,))
                add(p + "attn_v.bias", (Hkv * hd,))
            else:
                add(p + "attn_q_norm.weight", (hd,))
                add(p + "attn_k_norm.weight", (hd,))
