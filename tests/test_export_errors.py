"""ggufq export on bad input: one line on stderr, exit status 2, and no OUT_DIR (nor temp dir) left behind."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ggufq.convert import gguf_to_hf as export_mod
from ggufq.cli import main
from ggufq.errors import GGUFQError
from ggufq.files.safetensors import open_safetensors

from .conftest import SMOL
from .tiny_models import gguf_file, tiny_gguf


def _fails(capsys, args, out, expect):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ggufq export: error: "), err
    assert expect in err, err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return err


def test_tiny_llama_exports(tmp_path, capsys):
    g = tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "tiny-hf"
    assert main(["export", str(g), str(out), "--dtype", "f32", "--quiet"]) == 0
    t = open_safetensors(out)
    assert t["model.layers.0.self_attn.k_proj.weight"].shape == (16, 32)
    assert all(x.dtype == "F32" for x in t.values())
    tj = json.loads((out / "tokenizer.json").read_text())
    assert tj["model"]["vocab"] == {"a": 0, "b": 1, "ab": 2, "<s>": 3}


def test_truncated_header(tmp_path, capsys):
    bad = tmp_path / "trunc.gguf"
    with open(SMOL, "rb") as f:
        bad.write_bytes(f.read(100_000))
    _fails(capsys, ["export", str(bad), str(tmp_path / "out")], tmp_path / "out", "truncated")


def test_truncated_data(tmp_path, capsys):
    bad = tmp_path / "trunc.gguf"
    shutil.copyfile(SMOL, bad)
    with open(bad, "r+b") as f:
        f.truncate(bad.stat().st_size - 4096)
    _fails(capsys, ["export", str(bad), str(tmp_path / "out")], tmp_path / "out", "truncated")


def test_unknown_architecture(tmp_path, capsys):
    g = tiny_gguf(tmp_path / "x.gguf", arch="rwkv7")
    _fails(capsys, ["export", str(g), str(tmp_path / "out")], tmp_path / "out", "unsupported architecture 'rwkv7'")


def test_unsupported_pre_tokenizer(tmp_path, capsys):
    g = tiny_gguf(tmp_path / "x.gguf", pre="falcon")
    _fails(capsys, ["export", str(g), str(tmp_path / "out")], tmp_path / "out", "pre-tokenizer 'falcon'")


def test_missing_file_and_bad_size(tmp_path, capsys):
    _fails(capsys, ["export", str(tmp_path / "nope.gguf"), str(tmp_path / "out")], tmp_path / "out", "nope.gguf")
    g = tiny_gguf(tmp_path / "x.gguf")
    _fails(capsys, ["export", str(g), str(tmp_path / "out"), "--shard-size", "lots"], tmp_path / "out",
           "cannot read size")


def test_existing_out_dir_is_left_alone(tmp_path, capsys):
    g = tiny_gguf(tmp_path / "x.gguf")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(g), str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["export", str(g), str(out), "--quiet", "--force"]) == 0
    assert (out / "config.json").exists() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.gguf"]


def test_failure_while_writing_leaves_nothing(tmp_path, capsys, monkeypatch):
    g = tiny_gguf(tmp_path / "x.gguf")
    calls = []

    def boom(t, r0, r1):
        calls.append(t.name)
        if len(calls) == 3:
            raise GGUFQError(f"simulated failure on {t.name}")
        return real(t, r0, r1)

    real = export_mod.dequantize_rows
    monkeypatch.setattr(export_mod, "dequantize_rows", boom)
    _fails(capsys, ["export", str(g), str(tmp_path / "out"), "--quiet"], tmp_path / "out", "simulated failure")
    assert len(calls) == 3


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
def test_dtypes(tmp_path, dtype):
    from ggufq.convert.gguf_to_hf import export_gguf
    g = tiny_gguf(tmp_path / "x.gguf")
    r = export_gguf(g, tmp_path / "out", dtype=dtype, progress=False)
    t = open_safetensors(r.out_dir)
    assert t["model.layers.0.mlp.up_proj.weight"].dtype == dtype.upper()
    assert t["model.norm.weight"].dtype == "F32"
    assert json.loads((r.out_dir / "config.json").read_text())["torch_dtype"] == \
        {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]


def test_f16_overflow_is_refused(tmp_path, capsys):
    g = tmp_path / "big.gguf"
    with gguf_file(g, "llama") as w:
        for k, v in (("block_count", 1), ("embedding_length", 32), ("feed_forward_length", 64),
                     ("attention.head_count", 4)):
            w.add_uint32(f"llama.{k}", v)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(["a", "b"])
        emb = np.ones((2, 32), np.float32)
        emb[1, 3] = 1e6
        w.add_tensor("token_embd.weight", emb)
    _fails(capsys, ["export", str(g), str(tmp_path / "out"), "--dtype", "f16", "--quiet"], tmp_path / "out",
           "beyond float16's range")
    assert main(["export", str(g), str(tmp_path / "out"), "--dtype", "bf16", "--quiet"]) == 0


def test_unwritable_destination(tmp_path, capsys):
    g = tiny_gguf(tmp_path / "x.gguf")
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "hf"
    assert main(["export", str(g), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot create" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "x.gguf"]


def test_gguf_without_tokenizer_exports_weights_only(tmp_path, capsys):
    g = tiny_gguf(tmp_path / "x.gguf", tokens=())
    out = tmp_path / "hf"
    assert main(["export", str(g), str(out), "--quiet"]) == 0
    assert "no tokenizer" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                    "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 4
