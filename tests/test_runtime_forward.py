"""The runtime's forward pass against a float64 numpy reference (tests/runtime_reference.py).

With exact=True (float32 activations, f32 KV cache) the logits equal the reference to float rounding:
the architecture is right. In the default mode (activations rounded to 8 bits per block as llama.cpp
does, f16 KV) they differ by what that rounding explains: high correlation, same top token, a bounded
deviation. Both the batch (BLAS) path and the one-token (integer kernel) path are checked, on the two real
models and on tiny random qwen2 / qwen3 GGUFs written here.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from ggufq.errors import GGUFQError
from ggufq.runtime.model import Model

from .conftest import GEMMA, SMOL
from .tiny_models import gguf_file, write_tiny
from .runtime_reference import reference_logits

PROMPT = "The capital of France is Paris. The capital of Germany is Berlin, and the capital"


def stats(got, ref):
    dev = (np.abs(got - ref).max(-1) / ref.std(-1)).max()
    corr = min(np.corrcoef(got[i], ref[i])[0, 1] for i in range(len(ref)))
    agree = (got.argmax(-1) == ref.argmax(-1)).mean()
    return dev, corr, agree


@pytest.mark.parametrize("path", [SMOL, GEMMA], ids=["smollm2", "gemma3"])
def test_real_model_matches_reference(path):
    m = Model.load(path, n_ctx=128)
    tokens = (m.tokenizer.encode(PROMPT) * 2)[:20]       # 20 tokens: the batch (BLAS) path
    ref = reference_logits(path, tokens)

    exact = Model.load(path, n_ctx=128, exact=True, kv_type="f32").logits(tokens)
    dev, corr, agree = stats(exact, ref)
    # gemma's GELU goes through fp16 as ggml's table does: a few 1e-3 of a logit's spread
    assert dev < 5e-3 and corr > 0.99999, (dev, corr)

    dev, corr, agree = stats(m.logits(tokens), ref)
    assert dev < 0.6 and corr > 0.995 and agree >= 0.95, (dev, corr, agree)

    m.reset()
    step = np.stack([m.eval([t]) for t in tokens])        # one token at a time: integer kernels, KV cache
    assert m.n_past == len(tokens)
    dev, corr, agree = stats(step, ref)
    assert dev < 0.6 and corr > 0.995 and agree >= 0.95, (dev, corr, agree)

    # prefix reuse: drop the last 5 positions and evaluate them again as one batch: the same logits, bit
    # for bit, as that batch after the same prefix evaluated from scratch (a batch of 5 is not the same
    # arithmetic as 5 single steps: llama.cpp's repacked kernels take 4 tokens at a time)
    m.truncate(len(tokens) - 5)
    again = m.eval(tokens[-5:])
    m.reset()
    for t in tokens[:-5]:
        m.eval([t])
    np.testing.assert_array_equal(again, m.eval(tokens[-5:]))
    dev, corr, agree = stats(again[None], ref[-1:])
    assert dev < 0.6 and corr > 0.995, (dev, corr)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_tiny_qwen_matches_reference(tmp_path, arch):
    path = tmp_path / f"tiny-{arch}.gguf"
    write_tiny(path, arch)
    tokens = np.random.default_rng(5).integers(0, 300, 24)
    ref = reference_logits(str(path), tokens)
    exact = Model.load(path, exact=True, kv_type="f32").logits(tokens)
    dev, corr, _ = stats(exact, ref)
    assert dev < 1e-4 and corr > 0.999999, (dev, corr)
    m = Model.load(path)
    assert m.n_ctx == 64 and m.n_vocab == 300
    batch = m.logits(tokens)
    m.reset()
    for got in (batch, np.stack([m.eval([t]) for t in tokens])):
        dev, corr, agree = stats(got, ref)
        assert dev < 0.3 and corr > 0.995 and agree >= 0.9, (dev, corr, agree)


TINY_TYPES = {"qwen2": {"attn_v": T.F32},                   # and F16 / BF16 / Q4_1 / Q5_x as write_tiny has
              "qwen3": {"attn_v": T.Q8_0, "ffn_up": T.Q4_0}}  # quantized types only


@pytest.mark.parametrize("case", ["smollm2", "gemma3", "qwen2", "qwen3"])
def test_decode_step_equals_batch_path(tmp_path, case):
    """The compiled one-token step (decode.py) gives the batch path's logits bit for bit, token after
    token through the KV cache (f16 and f32), on every family's branches (qwen2 biases, qwen3 q/k norms,
    gemma3 sliding window and post norms) and every weight type (F32, F16, BF16 and the quantized ones)."""
    if case in TINY_TYPES:
        path = tmp_path / f"tiny-{case}.gguf"
        write_tiny(path, case, types=TINY_TYPES[case])
    else:
        path = {"smollm2": SMOL, "gemma3": GEMMA}[case]
    tokens = np.random.default_rng(3).integers(0, 300, 10)
    for kv in ("f16", "f32"):
        outs = []
        for step in (True, False):
            m = Model.load(path, n_ctx=64, kv_type=kv, decode_step=step)
            m.eval(tokens[:3])
            outs.append(np.stack([m.eval([t]) for t in tokens[3:]]))
            assert (m._step is not None) == step
        assert np.array_equal(outs[0], outs[1]), case


def test_context_limit_and_errors(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny(path, "qwen2")
    with pytest.raises(GGUFQError, match="exceeds the model's training context of 64"):
        Model.load(path, n_ctx=65)
    m = Model.load(path, n_ctx=16)
    m.eval(list(range(10)))
    with pytest.raises(GGUFQError, match="context full"):
        m.eval(list(range(7)))
    m.truncate(4)
    assert m.eval([1, 2, 3]).shape == (300,) and m.n_past == 7


def test_unsupported_type_arch_and_key(tmp_path, monkeypatch):
    bad_type = tmp_path / "q2k.gguf"
    write_tiny(bad_type, "qwen2", types={"ffn_down": T.Q4_0})
    Model.load(bad_type)  # Q4_0 is fine
    # A tensor type the runtime has no kernel for: patch the type id of one tensor in place (Q4_0 -> Q4_0's
    # same-size cousin IQ4_NL: 18 bytes per 32, so the file stays valid for the reader), and take IQ4_NL's
    # kernels out of the registry for this test (it has them since IQ4_NL landed; every other type of 18
    # bytes per 32 would do, but there is none).
    from ggufq.kernels import get_format
    monkeypatch.setattr(get_format(T.IQ4_NL), "dot", None)
    from ggufq.files.gguf_reader import GGUFFile
    g = GGUFFile(bad_type)
    ti = g.tensors["blk.0.ffn_down.weight"]
    data = bytearray(bad_type.read_bytes())
    name = b"blk.0.ffn_down.weight"
    at = data.index(name) + len(name) + 4 + 8 * len(ti.shape)
    assert int.from_bytes(data[at:at + 4], "little") == int(T.Q4_0)
    data[at:at + 4] = int(T.IQ4_NL).to_bytes(4, "little")
    bad_type.write_bytes(bytes(data))
    with pytest.raises(GGUFQError, match="blk.0.ffn_down.weight has type IQ4_NL"):
        Model.load(bad_type)

    arch = tmp_path / "arch.gguf"
    with gguf_file(arch, "mamba") as w:
        w.add_block_count(1)
    with pytest.raises(GGUFQError, match="architecture 'mamba' is not supported"):
        Model.load(arch)

    key = tmp_path / "key.gguf"
    with gguf_file(key, "llama") as w:
        w.add_block_count(1)
        w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    with pytest.raises(GGUFQError, match="missing metadata key llama.embedding_length"):
        Model.load(key)
