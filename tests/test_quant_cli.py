"""`ggufq quantize` options and recipes: llama.cpp's per-tensor rules, overrides, errors, dry run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT

from ggufq.cli import main
from ggufq.files.gguf_reader import GGUFFile
from ggufq.quantize.recipes import ModelFacts, Options, plan, tensor_order, use_more_bits

from .conftest import DATA, GEMMA, SMOL
from .tiny_models import tiny_model


def types_of(path: Path) -> dict[str, str]:
    with GGUFFile(path) as g:
        return {n: t.qtype.name for n, t in g.tensors.items()}


def test_use_more_bits_and_k_m_mix_on_a_32_layer_model():
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    names = ["token_embd.weight", "output.weight"] + [f"blk.{i}.{n}.weight" for i in range(32)
                                                     for n in ("attn_v", "ffn_down", "attn_q")]
    tensors = [(n, (4096, 4096), GT.F16) for n in tensor_order(names)]
    facts = ModelFacts("llama", 32, n_head=32, n_head_kv=8)
    got = {c.name: c.dst_type for c in plan(tensors, facts, Options("Q4_K_M"))}
    assert got["output.weight"] == GT.Q6_K and got["token_embd.weight"] == GT.Q4_K
    more = {i for i in range(32) if use_more_bits(i, 32)}
    for i in range(32):
        assert got[f"blk.{i}.attn_v.weight"] == (GT.Q6_K if i in more else GT.Q4_K)
        assert got[f"blk.{i}.ffn_down.weight"] == (GT.Q6_K if i in more else GT.Q4_K)
        assert got[f"blk.{i}.attn_q.weight"] == GT.Q4_K
    s = {c.name: c.dst_type for c in plan(tensors, facts, Options("Q4_K_S"))}
    assert [s[f"blk.{i}.attn_v.weight"] for i in range(6)] == [GT.Q5_K] * 4 + [GT.Q4_K] * 2
    assert [s[f"blk.{i}.ffn_down.weight"] for i in range(6)] == [GT.Q5_K] * 4 + [GT.Q4_K] * 2
    q = {c.name: c.dst_type for c in plan(tensors, facts, Options("Q4_0"))}
    assert q["output.weight"] == GT.Q6_K and q["blk.0.ffn_down.weight"] == GT.Q4_0
    qi = {c.name: c.dst_type for c in plan(tensors, facts, Options("Q4_0", has_imatrix=True))}
    assert [qi[f"blk.{i}.ffn_down.weight"] for i in range(5)] == [GT.Q4_1] * 4 + [GT.Q4_0]


def test_fallbacks_and_unquantized_tensors():
    facts = ModelFacts("llama", 1)
    tensors = [("blk.0.attn_q.weight", (576, 64), GT.F16), ("blk.0.ffn_down.weight", (1536, 576), GT.F16),
               ("blk.0.attn_norm.weight", (576,), GT.F32), ("blk.0.attn_k.weight", (100, 64), GT.F16)]
    for ftype, want in (("Q4_K_M", GT.Q5_0), ("Q5_K_M", GT.Q5_1), ("Q6_K", GT.Q8_0)):
        got = {c.name: c for c in plan(tensors, facts, Options(ftype, pure=True))}
        assert got["blk.0.attn_q.weight"].dst_type == want
        assert got["blk.0.attn_norm.weight"].dst_type == GT.F32 and not got["blk.0.attn_norm.weight"].quantize
        assert got["blk.0.attn_k.weight"].dst_type == GT.F16  # 100 is not a multiple of 32 either
    assert plan(tensors, facts, Options("Q4_K_M", pure=True))[1].dst_type == GT.Q4_K


def test_dry_run_plan_matches_llama_quantize_types(capsys):
    """The plan printed for the shipped SmolLM2 equals the types llama-quantize chose (fixture)."""
    assert main(["quantize", "--dry-run", str(SMOL), "unused.gguf", "Q4_K_M"]) == 0
    out = capsys.readouterr().out
    want = json.loads((DATA / "quant_smol_Q4_K_M.json").read_text())["tensors"]
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip() and ln.split()[0] in want}
    assert len(lines) == len(want)
    for name, e in want.items():
        toks = lines[name].split()
        shown = toks[toks.index("->") + 1] if "->" in toks else toks[2]
        assert shown == e["type"], f"{name}: plan {shown}, llama-quantize {e['type']}"
    assert "bits per weight" in out.splitlines()[-1]
    assert not Path("unused.gguf").exists()


def test_overrides_pure_and_output_types(tmp_path):
    src = tiny_model(tmp_path / "tiny.gguf")
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(src), str(out), "Q4_K_M", "--tensor-type", r"attn_q=q8_0",
                 "--tensor-type", r"blk\.[0-3]\.ffn_up=Q5_K", "--output-tensor-type", "q5_0",
                 "--token-embedding-type", "Q6_K"]) == 0
    t = types_of(out)
    assert all(t[f"blk.{i}.attn_q.weight"] == "Q8_0" for i in range(8))
    assert [t[f"blk.{i}.ffn_up.weight"] for i in range(5)] == ["Q5_K"] * 4 + ["Q4_K"]
    assert t["output.weight"] == "Q5_0" and t["token_embd.weight"] == "Q6_K"
    assert t["blk.0.attn_norm.weight"] == "F32"
    assert [t[f"blk.{i}.attn_v.weight"] for i in range(8)] == \
        ["Q6_K" if use_more_bits(i, 8) else "Q4_K" for i in range(8)]
    with GGUFFile(out) as g:
        assert g.get("general.file_type") == 15 and g.get("general.quantization_version") == 2
        assert list(g.kv)[-2:] == ["general.quantization_version", "general.file_type"]
        assert g.kv["llama.block_count"].vtype.name == "UINT32"
    assert main(["quantize", "--pure", str(src), str(out), "Q5_K_M"]) == 0
    assert set(v for k, v in types_of(out).items() if not k.endswith("norm.weight")) == {"Q5_K"}
    assert main(["quantize", "--leave-output-tensor", str(src), str(out), "Q8_0"]) == 0
    assert types_of(out)["output.weight"] == "F16"


def test_tied_embeddings_take_the_output_type(tmp_path):
    src = tiny_model(tmp_path / "tied.gguf", tied=True)
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(src), str(out), "Q4_K_M"]) == 0
    assert types_of(out)["token_embd.weight"] == "Q6_K"
    src = tiny_model(tmp_path / "tied96.gguf", tied=True, ne0=96)  # 96 % 256 != 0 -> Q8_0
    assert main(["quantize", str(src), str(out), "Q4_K_M"]) == 0
    t = types_of(out)
    assert t["token_embd.weight"] == "Q8_0" and t["blk.0.attn_q.weight"] == "Q5_0"


def test_errors_are_one_line_and_leave_no_file(tmp_path, capsys):
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(SMOL), str(out), "Q4_0"]) == 2
    err = capsys.readouterr().err
    assert "requantizing is disabled" in err and len(err.strip().splitlines()) == 1
    bad = tiny_model(tmp_path / "nan.gguf", nan="blk.3.ffn_gate.weight", dtype=np.float32)
    assert main(["quantize", str(bad), str(out), "Q4_0"]) == 2
    err = capsys.readouterr().err
    assert "blk.3.ffn_gate.weight" in err and "NaN" in err
    bad16 = tiny_model(tmp_path / "nan16.gguf", nan="blk.2.attn_k.weight")
    assert main(["quantize", str(bad16), str(out), "Q8_0"]) == 2
    assert "blk.2.attn_k.weight" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".q.gguf*"))
    assert main(["quantize", str(bad), str(out), "Q3_Q"]) == 2
    assert "unknown quantization type" in capsys.readouterr().err
    assert main(["quantize", str(bad), str(out), "Q4_0", "--tensor-type", "nothing"]) == 2
    assert main(["quantize", str(tmp_path / "missing.gguf"), str(out), "Q4_0"]) == 2


def test_requantize_gemma_dry_run_shows_fallbacks(capsys):
    assert main(["quantize", "--dry-run", str(GEMMA), "x.gguf", "Q4_K_M"]) == 0
    out = capsys.readouterr().out
    assert "row 640 not divisible by 256: Q4_K -> Q5_0" in out
    assert "row 640 not divisible by 256: Q6_K -> Q8_0" in out


def test_imatrix_readers_gguf_and_legacy_dat(tmp_path):
    import struct

    from ggufq.files.imatrix_file import load_imatrix

    im = load_imatrix(DATA / "quant_smol_imatrix.gguf")
    assert len(im.entries) == 21 and im.chunk_count == 8 and im.chunk_size == 256
    with GGUFFile(DATA / "quant_smol_imatrix.gguf") as g:
        s = np.asarray(g.tensors["blk.1.ffn_down.weight.in_sum2"].data, dtype=np.float32)
        c = float(g.tensors["blk.1.ffn_down.weight.counts"].data[0])
    assert np.array_equal(im.get("blk.1.ffn_down.weight"), (s / np.float32(round(c))).astype(np.float32))
    # the legacy .dat layout: n_entries, then (name, ncall, nval, sums), then chunk count and dataset
    rng = np.random.default_rng(2)
    sums = {"blk.0.attn_q.weight": rng.random(64).astype(np.float32), "blk.0.ffn_down.weight": rng.random(32).astype(np.float32)}
    raw = struct.pack("<i", len(sums))
    for name, v in sums.items():
        raw += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 10, v.size) + v.tobytes()
    raw += struct.pack("<ii", 5, 4) + b"wiki"
    (tmp_path / "m.dat").write_bytes(raw)
    legacy = load_imatrix(tmp_path / "m.dat")
    assert legacy.is_legacy and legacy.chunk_count == 5 and legacy.datasets == ["wiki"]
    for name, v in sums.items():
        assert np.array_equal(legacy.get(name), (v / np.float32(10)).astype(np.float32))


def test_json_recipe_round_trip_and_float_inputs(tmp_path, capsys):
    """--dry-run --json prints a recipe; --recipe applies it; F32 and BF16 inputs quantize like the registry."""
    from ggufq.kernels import get_format

    src = tiny_model(tmp_path / "f32.gguf", dtype=np.float32, n_layer=2)
    assert main(["quantize", "--dry-run", "--json", str(src), "x.gguf", "Q4_0"]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["file_type"] == "Q4_0" and recipe["tensors"]["blk.1.ffn_up.weight"] == "Q4_0"
    recipe["tensors"]["blk.1.ffn_up.weight"] = "Q5_K"
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    out = tmp_path / "q.gguf"
    assert main(["quantize", "--recipe", str(tmp_path / "r.json"), str(src), str(out), "Q4_0"]) == 0
    with GGUFFile(src) as g, GGUFFile(out) as q:
        assert q.tensors["blk.1.ffn_up.weight"].qtype == GT.Q5_K
        x = np.asarray(g.tensors["blk.0.attn_q.weight"].data)
        assert np.array_equal(np.asarray(q.tensors["blk.0.attn_q.weight"].data), get_format(GT.Q4_0).quantize(x))
    bf = tmp_path / "bf16.gguf"
    assert main(["quantize", str(src), str(bf), "BF16"]) == 0
    assert main(["quantize", str(bf), str(out), "Q8_0"]) == 0
    with GGUFFile(bf) as b, GGUFFile(out) as q:
        assert b.tensors["blk.0.ffn_down.weight"].qtype == GT.BF16
        x = get_format(GT.BF16).dequantize(np.asarray(b.tensors["blk.0.ffn_down.weight"].data))
        assert np.array_equal(np.asarray(q.tensors["blk.0.ffn_down.weight"].data), get_format(GT.Q8_0).quantize(x))
    (tmp_path / "bad.json").write_text(json.dumps({"tensors": {"blk.0.attn_q.weight": "Q4_K", "nope": "Q8_0"}}))
    assert main(["quantize", "--recipe", str(tmp_path / "bad.json"), str(src), str(out), "Q4_0"]) == 2
    assert "not in the model" in capsys.readouterr().err
    assert main(["quantize", str(src), str(tmp_path / "no" / "dir.gguf"), "Q4_0"]) == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("short,model", [("smol", SMOL), ("gemma", GEMMA)])
def test_plans_for_every_file_type_match_llama_quantize(short, model, capsys):
    """Q4_1, Q5_0, Q5_1, Q4_K_S, Q5_K_S, Q6_K: every tensor's type as llama-quantize chose it."""
    plans = json.loads((DATA / f"quant_{short}_plans.json").read_text())["types"]
    fixtures = {t: json.loads((DATA / f"quant_{short}_{t}.json").read_text())["tensors"]
                for t in ("Q4_0", "Q8_0", "Q4_K_M", "Q5_K_M")}
    wanted = {**{t: p["types"] for t, p in plans.items()},
              **{t: {n: v["type"] for n, v in fx.items()} for t, fx in fixtures.items()}}
    assert len(wanted) == 10
    for ftype, types in wanted.items():
        assert main(["quantize", "--dry-run", "--json", str(model), "x.gguf", ftype]) == 0
        got = json.loads(capsys.readouterr().out)["tensors"]
        # the shipped file is quantized; tensors that stay as they are keep its types (F32 here)
        diff = {n: (got[n], t) for n, t in types.items() if got[n] != t}
        assert not diff, f"{short} {ftype}: {list(diff.items())[:5]}"
