"""ggufq convert writes what llama.cpp's convert_hf_to_gguf.py writes: same keys in the same order with
the same values, same tensors with the same bytes (tests/data/convert/*.json, tools/make_convert_fixtures.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ggufq.convert.hf_to_gguf import convert
from ggufq.files.digest import digest, file_sha256

from .conftest import DATA, hf_folders
from .tiny_models import make_tiny

OUTTYPES = ("f16", "bf16", "q8_0")


def assert_same_as_llama_cpp(out: Path, fixture: str):
    want = json.loads((DATA / "convert" / fixture).read_text())
    got = digest(out)
    assert got["kv_order"] == want["kv_order"]
    for k in want["kv"]:
        assert got["kv"][k] == want["kv"][k], k
    assert got["tensor_order"] == want["tensor_order"]
    bad = [n for n in want["tensors"] if got["tensors"][n] != want["tensors"][n]]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"
    assert file_sha256(out) == want["file_sha256"]  # and so the whole file is byte-identical


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    return {a: make_tiny(base / f"tiny-{a}", a) for a in ("qwen2", "qwen3")}


@pytest.mark.parametrize("outtype", OUTTYPES)
@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_tiny_checkpoints_match_llama_cpp(tiny, tmp_path, arch, outtype):
    out = tmp_path / "out.gguf"
    convert(tiny[arch], out, outtype, progress=False)
    assert_same_as_llama_cpp(out, f"tiny-{arch}-{outtype}.json")


@pytest.mark.parametrize("outtype", OUTTYPES)
@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_real_models_match_llama_cpp(tmp_path, model, outtype):
    smol, gemma = hf_folders()
    out = tmp_path / "out.gguf"
    convert({"smollm2": smol, "gemma3": gemma}[model], out, outtype, progress=False)
    assert_same_as_llama_cpp(out, f"{model}-{outtype}.json")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ggufq", *map(str, args)], capture_output=True, text=True)


def _assert_one_line_error(r, out: Path):
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*")), "temporary file left behind"


def test_bad_inputs_fail_cleanly(tiny, tmp_path):
    import shutil
    out = tmp_path / "o" / "x.gguf"
    out.parent.mkdir()
    # missing config.json
    d = tmp_path / "noconfig"
    d.mkdir()
    _assert_one_line_error(_cli("convert", d, "--outfile", out), out)
    # unknown architecture
    d = tmp_path / "unknown"
    shutil.copytree(tiny["qwen2"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FancyNewForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    r = _cli("convert", d, "--outfile", out)
    _assert_one_line_error(r, out)
    assert "FancyNewForCausalLM" in r.stderr
    # missing tokenizer
    d = tmp_path / "notok"
    shutil.copytree(tiny["qwen2"], d)
    (d / "tokenizer.json").unlink()
    _assert_one_line_error(_cli("convert", d, "--outfile", out), out)
    # broken safetensors header: a length past the end of the file
    d = tmp_path / "badst"
    shutil.copytree(tiny["qwen2"], d)
    raw = bytearray((d / "model.safetensors").read_bytes()[:4096])
    raw[:8] = (10**9).to_bytes(8, "little")
    (d / "model.safetensors").write_bytes(raw)
    _assert_one_line_error(_cli("convert", d, "--outfile", out), out)
    # truncated tensor data
    d = tmp_path / "trunc"
    shutil.copytree(tiny["qwen2"], d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    _assert_one_line_error(_cli("convert", d, "--outfile", out), out)


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_export_convert_round_trip_is_byte_identical(tmp_path, model):
    smol, gemma = hf_folders()
    first = tmp_path / "first.gguf"
    convert({"smollm2": smol, "gemma3": gemma}[model], first, "f16", progress=False)
    r = _cli("export", first, tmp_path / "hf", "--dtype", "f16")
    assert r.returncode == 0, r.stderr
    second = tmp_path / "second.gguf"
    convert(tmp_path / "hf", second, "f16", progress=False)
    assert file_sha256(first) == file_sha256(second)


@pytest.mark.parametrize("model,qtype", [("smollm2", "Q4_K_M"), ("smollm2", "Q4_0"), ("gemma3", "Q5_K_M")])
def test_quantized_convert_equals_llama_cpp_convert_then_llama_quantize(tmp_path, model, qtype):
    """One streaming pass HF -> Q4_K_M equals llama.cpp's converter to F16 followed by llama-quantize."""
    smol, gemma = hf_folders()
    out = tmp_path / "q.gguf"
    convert({"smollm2": smol, "gemma3": gemma}[model], out, qtype, progress=False)
    want = json.loads((DATA / "convert" / f"{model}-quantized.json").read_text())[qtype]
    assert file_sha256(out) == want
