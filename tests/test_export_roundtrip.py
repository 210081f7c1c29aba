"""HF -> GGUF -> HF on the tiny synthetic Qwen2 (q/k/v biases, untied lm_head) and Qwen3 (q/k norms, tied
embeddings) checkpoints: converting to a BF16 GGUF and exporting back to BF16 gives every tensor back
bit for bit, and the config's architecture facts."""
from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggufq.convert.hf_to_gguf import convert
from ggufq.convert.gguf_to_hf import export_gguf
from ggufq.files.gguf_reader import GGUFFile
from ggufq.convert.vocab_to_hf import write_hf_tokenizer
from ggufq.files.safetensors import TensorSpec, open_safetensors, write_safetensors
from kernels.floats import f32_to_bf16_bits

from .conftest import DATA
from .tiny_models import gguf_file, make_tiny

CONFIG_KEYS = ["architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rope_theta",
               "vocab_size", "tie_word_embeddings"]


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_tiny_round_trip_is_bit_exact(tmp_path, arch):
    src = make_tiny(tmp_path / f"tiny-{arch}", arch)
    gguf_path = tmp_path / "tiny.gguf"
    convert(src, gguf_path, "bf16", progress=False)
    out = export_gguf(gguf_path, tmp_path / "back", dtype="bf16", progress=False).out_dir

    a, b = open_safetensors(src), open_safetensors(out)
    assert set(a) == set(b)
    for name, t in a.items():
        u = b[name]
        assert u.shape == t.shape, name
        if u.dtype == "F32":  # 1-D tensors: llama.cpp's converter stores them F32; the values are the BF16 ones
            assert len(u.shape) == 1, name
            want = (t.data.astype(np.uint32) << 16).view(np.float32)
            assert np.array_equal(u.data, want), name
        else:
            assert u.dtype == "BF16" and np.array_equal(u.data, t.data), name

    c0 = json.loads((src / "config.json").read_text())
    c1 = json.loads((out / "config.json").read_text())
    assert {k: c1.get(k) for k in CONFIG_KEYS} == {k: c0.get(k) for k in CONFIG_KEYS}
    # special ids: the GGUF's, which llama.cpp's converter took from the tokenizer files first (the tiny
    # config's eos_token_id 151645 loses to tokenizer_config's eos_token <|endoftext|> = 151643)
    with GGUFFile(gguf_path) as g:
        assert (c1["bos_token_id"], c1["eos_token_id"]) == (g.get("tokenizer.ggml.bos_token_id"),
                                                            g.get("tokenizer.ggml.eos_token_id"))
    assert np.float32(c1["rms_norm_eps"]) == np.float32(c0["rms_norm_eps"])
    if "head_dim" in c0:
        assert c1.get("head_dim", c0["hidden_size"] // c0["num_attention_heads"]) == c0["head_dim"]
    t0 = json.loads((src / "tokenizer.json").read_text())
    t1 = json.loads((out / "tokenizer.json").read_text())
    assert t1 == t0  # the exported tokenizer survives the trip unchanged


# ---- RoPE scaling -------------------------------------------------------------------------------
def llama3_rope_freqs(theta, head_dim, factor, low, high, old_ctx):
    """Llama 3.1's frequency factors, written out from the model card's formula (independently of ggufq)."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    wavelen = 2 * np.pi / inv
    smooth = (old_ctx / wavelen - low) / (high - low)
    f = np.where(wavelen < old_ctx / high, 1.0,
                 np.where(wavelen > old_ctx / low, factor, 1 / ((1 - smooth) / factor + smooth)))
    return f.astype(np.float32)


@pytest.mark.parametrize("factor, ctx", [(32.0, 8192), (8.0, 8192), (16.0, 4096)])
def test_llama3_rope_freqs_become_rope_scaling(tmp_path, factor, ctx):
    from .tiny_models import tiny_gguf

    def extra(w):
        w.add_rope_freq_base(500000.0)
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(500000.0, 64, factor, 1.0, 4.0, ctx))
    g = tiny_gguf(tmp_path / "l3.gguf", n_embd=256, n_head=4, extra=extra)
    out = export_gguf(g, tmp_path / "hf", progress=False).out_dir
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": ctx}
    assert "rope_freqs.weight" not in open_safetensors(out)


def test_yarn_and_linear_keys_become_rope_scaling(tmp_path):
    from .tiny_models import tiny_gguf

    def yarn(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(4.0)
        w.add_rope_scaling_orig_ctx_len(32768)
    out = export_gguf(tiny_gguf(tmp_path / "y.gguf", extra=yarn), tmp_path / "y", progress=False).out_dir
    assert json.loads((out / "config.json").read_text())["rope_scaling"] == \
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}

    def linear(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(8.0)
    out = export_gguf(tiny_gguf(tmp_path / "l.gguf", extra=linear), tmp_path / "l", progress=False).out_dir
    assert json.loads((out / "config.json").read_text())["rope_scaling"] == {"rope_type": "linear", "factor": 8.0}


def test_unknown_rope_freqs_refused(tmp_path, capsys):
    from ggufq.cli import main
    from .test_export_errors import _fails
    from .tiny_models import tiny_gguf
    g = tiny_gguf(tmp_path / "x.gguf", n_embd=256, extra=lambda w: w.add_tensor(
        "rope_freqs.weight", np.linspace(1, 3, 32, dtype=np.float32)))
    _fails(capsys, ["export", str(g), str(tmp_path / "out")], tmp_path / "out", "rope_freqs.weight matches no")


# ---- against llama.cpp's converter --------------------------------------------------------------
TINY_LLAMA3 = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False, "hidden_act": "silu",
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
}


def make_tiny_llama3(out_dir: Path) -> Path:
    """A tiny Llama 3.2-style HF folder (q/k permuted by the converter, llama3 RoPE scaling) with a tiny
    SentencePiece vocabulary (unk, bos, eos, 256 bytes, a few words), deterministic BF16 weights. The
    tokenizer.model is written by our exporter from a vocabulary-only GGUF."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    words = ["\u2581the", "\u2581a", "\u2581cat", "th", "he", "at", "\u2581t", "\u2581c"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + words
    types = [2, 3, 3] + [6] * 256 + [1] * len(words)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(words))]
    vocab_gguf = out_dir.parent / f".{out_dir.name}-vocab.gguf"
    with gguf_file(vocab_gguf, "llama") as w:  # a vocabulary, no tensors
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
    with GGUFFile(vocab_gguf) as g:
        write_hf_tokenizer(g, out_dir)
    vocab_gguf.unlink()
    cfg = {**TINY_LLAMA3, "vocab_size": len(tokens)}
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    h, f, nh, nkv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = h // nh
    shapes = {"model.embed_tokens.weight": (len(tokens), h), "lm_head.weight": (len(tokens), h),
              "model.norm.weight": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (nh * hd, h), p + "self_attn.k_proj.weight": (nkv * hd, h),
                       p + "self_attn.v_proj.weight": (nkv * hd, h), p + "self_attn.o_proj.weight": (h, nh * hd),
                       p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
                       p + "mlp.down_proj.weight": (h, f)})
    rng = np.random.default_rng(3)
    arrays = {n: f32_to_bf16_bits(rng.standard_normal(s, dtype=np.float32) * np.float32(0.05)
                                  + np.float32(n.endswith("norm.weight")))
              for n, s in sorted(shapes.items())}
    write_safetensors(out_dir / "model.safetensors", [TensorSpec(n, "BF16", a.shape) for n, a in arrays.items()],
                      lambda s: arrays[s.name])
    return out_dir


def test_llama_cpp_converted_tiny_llama3_exports_back_exactly(tmp_path):
    """tests/data/export_tiny_llama3.gguf is llama.cpp's convert_hf_to_gguf.py --outtype bf16 of
    make_tiny_llama3 (q/k permuted, rope_freqs written): exporting it gives the HF folder back, every tensor
    bit for bit (so our un-permutation inverts llama.cpp's permutation) and the RoPE scaling."""
    src = make_tiny_llama3(tmp_path / "src")
    out = export_gguf(DATA / "export_tiny_llama3.gguf", tmp_path / "back", progress=False).out_dir
    a, b = open_safetensors(src), open_safetensors(out)
    assert set(a) == set(b)
    for name, t in a.items():
        u = b[name]
        if u.dtype == "F32":
            assert np.array_equal(u.data, (t.data.astype(np.uint32) << 16).view(np.float32)), name
        else:
            assert np.array_equal(u.data, t.data), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"] == TINY_LLAMA3["rope_scaling"]
    for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "rope_theta", "tie_word_embeddings"):
        assert cfg[k] == TINY_LLAMA3[k]
    from sentencepiece import sentencepiece_model_pb2 as pb
    m0, m1 = pb.ModelProto(), pb.ModelProto()
    m0.ParseFromString((src / "tokenizer.model").read_bytes())
    m1.ParseFromString((out / "tokenizer.model").read_bytes())
    assert [(p.piece, p.type) for p in m1.pieces] == [(p.piece, p.type) for p in m0.pieces]
    # scores come back too, except the control tokens': llama.cpp's converter gives every token listed in
    # added_tokens_decoder the score -1000
    assert [p.score if p.type != 3 else -1000.0 for p in m0.pieces] == [p.score for p in m1.pieces]
    assert m1.normalizer_spec == m0.normalizer_spec and m1.trainer_spec == m0.trainer_spec
