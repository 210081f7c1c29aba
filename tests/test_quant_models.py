"""`ggufq quantize` on the two real models equals llama-quantize, file for file and tensor for tensor.

Golden digests come from llama.cpp's own llama-quantize (tools/make_quant_fixtures.py, listed in
tests/data/README). Each model is converted to F16 once (module fixture); every quantized file is compared
by whole-file sha256 (metadata, order, alignment, bytes) and, on a mismatch, tensor by tensor.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ggufq.cli import main
from ggufq.files.gguf_reader import GGUFFile

from .conftest import DATA, GEMMA, SMOL

MODELS = {"smol": Path(SMOL), "gemma": Path(GEMMA)}
IMATRIX = DATA / "quant_smol_imatrix.gguf"


def fixture(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8)).hexdigest()


def tensor_mismatches(path: Path, expected: dict) -> list[str]:
    bad = []
    with GGUFFile(path) as g:
        if sorted(g.tensors) != sorted(expected):  # the order is checked by the whole-file digests
            bad.append(f"tensor names differ: {sorted(set(g.tensors) ^ set(expected))[:5]}")
        for name, e in expected.items():
            t = g.tensors.get(name)
            if t is None:
                bad.append(f"{name}: missing")
            elif t.qtype.name != e["type"] or list(t.shape) != e["shape"]:
                bad.append(f"{name}: {t.qtype.name}{list(t.shape)} != {e['type']}{e['shape']}")
            elif sha(t.data) != e["sha256"]:
                bad.append(f"{name}: {t.qtype.name} bytes differ")
    return bad


def assert_same_file(path: Path, fx: dict) -> None:
    bad = tensor_mismatches(path, fx["tensors"])
    assert not bad, f"{len(bad)} tensors differ from llama-quantize: {bad[:8]}"
    if "file_sha256" in fx:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == fx["file_sha256"], \
            "tensors equal but metadata/layout differ from llama-quantize"


@pytest.fixture(scope="module")
def f16_files(tmp_path_factory):
    """F16 GGUFs made from the shipped models by `ggufq quantize --allow-requantize ... F16`, once each."""
    made: dict[str, Path] = {}

    def get(short: str) -> Path:
        if short not in made:
            out = tmp_path_factory.mktemp(f"quant_{short}") / "f16.gguf"
            assert main(["quantize", "--allow-requantize", str(MODELS[short]), str(out), "F16", "-t", "2"]) == 0
            made[short] = out
        return made[short]
    yield get
    for p in made.values():
        p.unlink(missing_ok=True)


@pytest.fixture(params=list(MODELS))
def f16(request, f16_files):
    return request.param, f16_files(request.param)


def test_f16_from_shipped_model_equals_llama_quantize(f16):
    short, path = f16
    assert_same_file(path, fixture(f"quant_{short}_F16.json"))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "Q4_K_M", "Q5_K_M"])
def test_quantized_file_equals_llama_quantize(f16, qtype, tmp_path):
    short, path = f16
    out = tmp_path / f"{qtype}.gguf"
    assert main(["quantize", str(path), str(out), qtype, "-t", "2"]) == 0
    assert_same_file(out, fixture(f"quant_{short}_{qtype}.json"))
    out.unlink()


@pytest.mark.parametrize("short,qtype", [("smol", "Q4_K_S"), ("gemma", "Q6_K")])
def test_more_file_types_equal_llama_quantize(f16_files, short, qtype, tmp_path):
    out = tmp_path / f"{qtype}.gguf"
    assert main(["quantize", str(f16_files(short)), str(out), qtype, "-t", "2"]) == 0
    want = fixture(f"quant_{short}_plans.json")["types"][qtype]["file_sha256"]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want
    out.unlink()


def test_pure_types_on_real_tensors(f16):
    """Q4_1, Q5_0, Q5_1, Q6_K (and their fallbacks) on real tensors, as `llama-quantize --pure` makes them."""
    from gguf import GGMLQuantizationType as GT

    from ggufq.quantize.recipes import quantize_tensor

    short, path = f16
    fx = fixture(f"quant_{short}_pure.json")["types"]
    seen = set()
    with GGUFFile(path) as g:
        for ftype, tensors in fx.items():
            for name, e in tensors.items():
                x = np.asarray(g.tensors[name].data, dtype=np.float32)
                q = quantize_tensor(name, x, GT[e["type"]])
                assert sha(q) == e["sha256"], f"{ftype}: {name} as {e['type']} differs from llama.cpp"
                seen.add(e["type"])
    assert {"Q4_1", "Q5_0", "Q5_1", "Q6_K"} <= seen


def test_imatrix_quantization_equals_llama_quantize(f16_files, tmp_path):
    """With an importance matrix (the _impl quantizers, and Q4_0's ffn_down -> Q4_1 rule)."""
    from gguf import GGMLQuantizationType as GT

    from ggufq.files.imatrix_file import load_imatrix
    from ggufq.quantize.recipes import quantize_tensor

    path = f16_files("smol")
    for qtype in ("Q4_0",):  # whole file: the _impl quantizers, Q4_1 for ffn_down of layers 0-2, Q8_0, Q6_K
        out = tmp_path / f"im_{qtype}.gguf"
        assert main(["quantize", "--imatrix", str(IMATRIX), str(path), str(out), qtype, "-t", "2"]) == 0
        fx = fixture(f"quant_smol_imatrix_{qtype}.json")
        bad = tensor_mismatches(out, fx["tensors"])
        assert not bad, f"{qtype} with imatrix: {bad[:8]}"
        with GGUFFile(out) as g:
            assert g.get("quantize.imatrix.entries_count") == 21
            assert g.get("quantize.imatrix.chunks_count") == 8
            assert list(g.kv)[-6:-4] == ["general.quantization_version", "general.file_type"]
        out.unlink()
    im = load_imatrix(IMATRIX)
    types = set()
    with GGUFFile(path) as g:
        for ftype, tensors in fixture("quant_smol_imatrix_pure.json")["types"].items():
            for name, e in tensors.items():
                x = np.asarray(g.tensors[name].data, dtype=np.float32)
                q = quantize_tensor(name, x, GT[e["type"]], im.get(name))
                assert sha(q) == e["sha256"], f"{ftype} with imatrix: {name} as {e['type']} differs"
                types.add(e["type"])
    assert {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"} <= types
