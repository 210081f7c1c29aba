"""ggufq export on the two real models: the folder it writes is checked against the original GGUF.

- tokenizer.json (tokenizers) and tokenizer.model (sentencepiece) give llama-tokenize's ids on the GGUF
  (tests/data/export_tokenize_golden.json, made by tools/make_export_fixtures.py);
- tokenizer_config.json / special_tokens_map.json / config.json / generation_config.json carry the GGUF's
  facts;
- every tensor, read back through ggufq.safetensors, equals the GGUF's dequantized tensor (gguf.quants):
  bit-exact for the 1-D F32 ones (Gemma's norms exactly 1 lower), BF16-rounded for the rest; q/k
  un-permutation checked by permuting back.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from gguf.quants import dequantize

from ggufq.arch.llama import permute_qk
from ggufq.cli import main
from ggufq.convert.gguf_to_hf import export_gguf
from ggufq.files.gguf_reader import GGUFFile
from ggufq.files.safetensors import open_safetensors
from kernels.floats import bf16_bits_to_f32, f32_to_bf16_bits

from .conftest import DATA, GEMMA, SMOL

GOLDEN = json.loads((DATA / "export_tokenize_golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "smollm2-hf"
    assert main(["export", SMOL, str(out), "--dtype", "bf16", "--shard-size", "100MB", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "gemma3-hf"
    r = export_gguf(GEMMA, out, dtype="bf16", progress=False)
    assert r.out_dir == out and r.n_tensors == 236
    return out


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


# ---- files --------------------------------------------------------------------------------------
def test_smollm2_folder_is_sharded_like_hf(smol_dir):
    names = sorted(p.name for p in smol_dir.iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model-00001-of-00003.safetensors",
                     "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                     "model.safetensors.index.json", "special_tokens_map.json", "tokenizer.json",
                     "tokenizer_config.json"]
    index = _json(smol_dir / "model.safetensors.index.json")
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [n for n in names if n.startswith("model-")]
    for s in shards:
        assert (smol_dir / s).stat().st_size <= 100 * 10**6
    tensors = open_safetensors(smol_dir)
    assert set(tensors) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(t.data.nbytes for t in tensors.values())
    assert not [p for p in smol_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_gemma3_folder_single_file(gemma_dir):
    names = sorted(p.name for p in gemma_dir.iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model.safetensors",
                     "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"]


def test_cli_summary_line(tmp_path, capsys):
    out = tmp_path / "smol-f16"
    assert main(["export", SMOL, str(out), "--dtype", "f16", "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"{re.escape(str(out))}: 272 tensors, 134\.5 M parameters, [\d.]+ MiB in 1 shard\(s\), "
                        r"f16, tokenizer\.json, [\d.]+ s", line), line
    t = open_safetensors(out)
    assert t["model.layers.0.mlp.down_proj.weight"].dtype == "F16"
    assert t["model.layers.0.input_layernorm.weight"].dtype == "F32"


# ---- tokenizers ---------------------------------------------------------------------------------
def test_smollm2_tokenizer_json_matches_llama_tokenize(smol_dir):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(smol_dir / "tokenizer.json"))
    cases = GOLDEN["smollm2"]["cases"]
    got = [tok.encode(c["text"]).ids for c in cases]  # add_bos is False for SmolLM2: nothing added
    assert [c["ids"] for c in cases] == got
    assert len(cases) >= 30


def test_gemma3_tokenizer_model_matches_llama_tokenize(gemma_dir):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(gemma_dir / "tokenizer.model"))
    cases = GOLDEN["gemma3"]["cases"]
    assert [c["ids"] for c in cases] == [[sp.bos_id()] + sp.encode(c["text"]) for c in cases]


def test_smollm2_tokenizer_config(smol_dir):
    g = GGUFFile(SMOL)
    cfg = _json(smol_dir / "tokenizer_config.json")
    assert cfg["chat_template"] == g.get("tokenizer.chat_template")
    assert cfg["add_bos_token"] is False and cfg["add_prefix_space"] is False
    assert (cfg["bos_token"], cfg["eos_token"], cfg["unk_token"], cfg["pad_token"]) == \
        ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_end|>")
    added = cfg["added_tokens_decoder"]
    assert sorted(map(int, added)) == list(range(17))  # the 17 CONTROL tokens
    assert all(a["special"] and a["content"] == g.get("tokenizer.ggml.tokens")[int(i)] for i, a in added.items())
    tj = _json(smol_dir / "tokenizer.json")
    assert [t["content"] for t in tj["added_tokens"]] == [a["content"] for a in added.values()]
    assert tj["pre_tokenizer"]["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}
    assert len(tj["model"]["vocab"]) == 49152 and len(tj["model"]["merges"]) == 48900
    assert [" ".join(m) for m in tj["model"]["merges"][:3]] == list(g.get("tokenizer.ggml.merges")[:3])
    stm = _json(smol_dir / "special_tokens_map.json")
    assert stm["eos_token"]["content"] == "<|im_end|>"


def test_gemma3_tokenizer_files(gemma_dir):
    from sentencepiece import sentencepiece_model_pb2 as pb
    g = GGUFFile(GEMMA)
    tokens, types = g.get("tokenizer.ggml.tokens"), g.get("tokenizer.ggml.token_type")
    scores = g.get("tokenizer.ggml.scores")
    m = pb.ModelProto()
    m.ParseFromString((gemma_dir / "tokenizer.model").read_bytes())
    assert len(m.pieces) == 262144
    assert not m.normalizer_spec.add_dummy_prefix and m.normalizer_spec.escape_whitespaces
    assert m.trainer_spec.byte_fallback and m.trainer_spec.model_type == m.trainer_spec.BPE
    assert (m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id) == (3, 2, 1, 0)
    ptypes = np.array([p.type for p in m.pieces])
    expect = np.asarray(types).copy()
    expect[3] = 2  # SentencePiece's one UNKNOWN piece; tokenizer_config marks it special again -> CONTROL
    assert np.array_equal(ptypes, expect)
    assert np.array_equal(np.array([p.score for p in m.pieces], np.float32), scores)
    assert [p.piece for p in m.pieces if p.type != 4] == [t for t, ty in zip(tokens, types) if ty != 4]
    user = [p.piece for p in m.pieces if p.type == 4]
    assert user == [t.replace(" ", "\u2581") for t, ty in zip(tokens, types) if ty == 4]

    cfg = _json(gemma_dir / "tokenizer_config.json")
    assert (cfg["add_bos_token"], cfg["add_eos_token"], cfg["add_sep_token"]) == (True, False, False)
    assert "chat_template" not in cfg
    assert (cfg["bos_token"], cfg["eos_token"], cfg["unk_token"], cfg["pad_token"]) == \
        ("<bos>", "<eos>", "<unk>", "<pad>")
    added = cfg["added_tokens_decoder"]
    assert len(added) == int(np.sum((types == 3) | (types == 4))) == 6249 + 165
    assert added["107"] == {"content": "\n", "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": False}
    assert all(a["special"] == (types[int(i)] == 3) for i, a in added.items())


# ---- config -------------------------------------------------------------------------------------
def test_smollm2_config(smol_dir):
    c = _json(smol_dir / "config.json")
    assert c["architectures"] == ["LlamaForCausalLM"] and c["model_type"] == "llama"
    assert (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]) == (576, 1536, 30)
    assert (c["num_attention_heads"], c["num_key_value_heads"]) == (9, 3)
    assert (c["rope_theta"], c["max_position_embeddings"], c["vocab_size"]) == (100000.0, 8192, 49152)
    assert c["tie_word_embeddings"] is True and c["hidden_act"] == "silu"
    assert np.float32(c["rms_norm_eps"]) == np.float32(1e-5)
    assert (c["bos_token_id"], c["eos_token_id"], c["pad_token_id"]) == (1, 2, 2)
    assert c["torch_dtype"] == "bfloat16"
    assert _json(smol_dir / "generation_config.json")["eos_token_id"] == 2
    card = (smol_dir / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nname: \"Smollm2 135M 8k Lc100K Mix1 Ep2\"\n") and 'license: "apache-2.0"' in card


def test_gemma3_config(gemma_dir):
    c = _json(gemma_dir / "config.json")
    assert c["architectures"] == ["Gemma3ForCausalLM"] and c["model_type"] == "gemma3_text"
    assert (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]) == (640, 2048, 18)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (4, 1, 256)
    assert c["query_pre_attn_scalar"] == 256 and c["sliding_window"] == 512
    assert c["hidden_activation"] == "gelu_pytorch_tanh"
    assert (c["rope_theta"], c["rope_local_base_freq"]) == (1000000.0, 10000.0)
    assert c["layer_types"] == (["sliding_attention"] * 5 + ["full_attention"]) * 3
    assert c["tie_word_embeddings"] is True and c["vocab_size"] == 262144
    assert (c["bos_token_id"], c["eos_token_id"], c["pad_token_id"], c["unk_token_id"]) == (2, 1, 0, 3)


# ---- tensors ------------------------------------------------------------------------------------
def _hf_name(gguf_name: str, table: dict[str, str]) -> str:
    m = re.match(r"blk\.(\d+)\.(.*)", gguf_name)
    return table[m.group(2)].format(i=m.group(1)) if m else table[gguf_name]


LLAMA_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
               "attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
               "attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
               "attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
               "attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
               "attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
               "ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
               "ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
               "ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
               "ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight"}
GEMMA_NAMES = {**LLAMA_NAMES,
               "ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
               "post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
               "post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
               "attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
               "attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight"}


def _check_tensors(gguf_path, folder, names, heads, norm_shift):
    g = GGUFFile(gguf_path)
    st = open_safetensors(folder)
    assert len(st) == len(g.tensors)
    counts = {"f32": 0, "bf16": 0, "permuted": 0}
    for t in g.tensors.values():
        hf = _hf_name(t.name, names)
        dtype, shape, data = st[hf]
        assert shape == tuple(reversed(t.shape)), hf
        ref = dequantize(np.ascontiguousarray(t.data), t.qtype).astype(np.float32).reshape(shape)
        if len(t.shape) == 1 and t.qtype.name == "F32":
            assert dtype == "F32", hf
            want = ref - np.float32(1) if norm_shift and t.name.endswith("norm.weight") else ref
            assert np.array_equal(data, want), hf
            if norm_shift and t.name.endswith("norm.weight"):
                assert np.array_equal(data + np.float32(1), ref), hf  # the converter's +1 restores the GGUF
            counts["f32"] += 1
            continue
        assert dtype == "BF16", hf
        x = bf16_bits_to_f32(data).reshape(shape)
        n = heads.get(t.name.split(".")[-2]) if heads else None
        if n:
            assert not np.array_equal(x, bf16_bits_to_f32(f32_to_bf16_bits(ref)).reshape(shape)), hf
            x = permute_qk(x, n)  # llama.cpp's converter permutation undoes our un-permutation
            counts["permuted"] += 1
        assert np.array_equal(f32_to_bf16_bits(x), f32_to_bf16_bits(ref)), hf
        counts["bf16"] += 1
    return counts


def test_smollm2_tensors_match_gguf(smol_dir):
    counts = _check_tensors(SMOL, smol_dir, LLAMA_NAMES, {"attn_q": 9, "attn_k": 3}, norm_shift=False)
    assert counts == {"f32": 61, "bf16": 211, "permuted": 60}


def test_gemma3_tensors_match_gguf(gemma_dir):
    counts = _check_tensors(GEMMA, gemma_dir, GEMMA_NAMES, None, norm_shift=True)
    assert counts == {"f32": 109, "bf16": 127, "permuted": 0}


# ---- the converter's view -----------------------------------------------------------------------
def test_smollm2_converter_reads_back_vocabulary(smol_dir):
    """ggufq's converter (llama.cpp's get_vocab_base, pre-tokenizer hash) finds `smollm` and the same
    tokens and types in the exported folder."""
    from ggufq.convert.vocab_from_hf import bpe_vocab
    g = GGUFFile(SMOL)
    tokens, types, pre = bpe_vocab(smol_dir, _json(smol_dir / "config.json"))
    assert pre == "smollm"
    assert tokens == list(g.get("tokenizer.ggml.tokens"))
    assert list(types) == g.get("tokenizer.ggml.token_type").tolist()


def test_gemma3_converter_reads_back_vocabulary(gemma_dir):
    """ggufq's converter (llama.cpp's _create_vocab_sentencepiece) finds the GGUF's tokens, scores and
    types in the exported tokenizer.model + tokenizer_config.json."""
    from ggufq.convert.vocab_from_hf import sentencepiece_vocab
    g = GGUFFile(GEMMA)
    tokens, scores, types = sentencepiece_vocab(gemma_dir, _json(gemma_dir / "config.json"))
    assert [t.decode() for t in tokens] == list(g.get("tokenizer.ggml.tokens"))
    assert np.array_equal(np.array(scores, np.float32), g.get("tokenizer.ggml.scores"))
    assert list(types) == g.get("tokenizer.ggml.token_type").tolist()
