"""HF -> GGUF -> HF on the tiny synthetic Qwen2 (q/k/v biases, untied lm_head) and Qwen3 (q/k norms, tied
embeddings) checkpoints: converting to a BF16 GGUF and exporting back to BF16 gives every tensor back
bit for bit, and the config's architecture facts."""
from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

from ggufq.convert import convert
from ggufq.export import export_gguf
from ggufq.gguf_file import GGUFFile
from ggufq.safetensors import open_safetensors

from .tiny_models import make_tiny

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
    from .test_export_errors import tiny_gguf

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
    from .test_export_errors import tiny_gguf

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
    from .test_export_errors import _fails, tiny_gguf
    g = tiny_gguf(tmp_path / "x.gguf", n_embd=256, extra=lambda w: w.add_tensor(
        "rope_freqs.weight", np.linspace(1, 3, 32, dtype=np.float32)))
    _fails(capsys, ["export", str(g), str(tmp_path / "out")], tmp_path / "out", "rope_freqs.weight matches no")
