"""`ggufq imatrix` against llama-imatrix (tests/data/imatrix_{smol,gemma}.gguf, tools/make_imatrix_fixtures.py):
the same tensors and counts, and per column the same sum of squared activations within 1% for at least
99% of the columns, on both shipped models' F16 files (2 chunks of 512 tokens of the Austen text)."""
from __future__ import annotations

import numpy as np
import pytest

from ggufq.cli import main
from ggufq.files.gguf_reader import GGUFFile
from ggufq.files.imatrix_file import load_imatrix

from .conftest import DATA, GEMMA, ROOT, SMOL

TEXT = "tests/data/ppl_text_austen.txt"


def read(path):
    with GGUFFile(path) as g:
        kv = {k: g.get(k) for k in ("general.type", "imatrix.chunk_count", "imatrix.chunk_size")}
        tensors = {n: np.array(t.data, np.float32).reshape(-1) for n, t in g.tensors.items()}
        return kv, list(g.get("imatrix.datasets")), tensors


@pytest.mark.parametrize("key, model", [("smol", SMOL), ("gemma", GEMMA)])
def test_imatrix_matches_llama_imatrix(capsys, tmp_path, key, model):
    f16, out = tmp_path / "F16.gguf", tmp_path / "imatrix.gguf"
    assert main(["quantize", "--allow-requantize", model, str(f16), "F16"]) == 0
    assert main(["imatrix", "-m", str(f16), "-f", str(ROOT / TEXT), "-c", "512", "--chunks", "2",
                 "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "[2]" in stdout and "Final estimate: PPL" in stdout
    ours_kv, _, ours = read(out)
    ref_kv, ref_datasets, ref = read(DATA / f"imatrix_{key}.gguf")
    assert ours_kv == ref_kv and ref_datasets == [TEXT]
    assert list(ours) == list(ref)  # the same tensors, in the same (name) order
    close = total = 0
    for name, r in ref.items():
        o = ours[name]
        if name.endswith(".counts"):
            assert o.tolist() == r.tolist(), name
            continue
        rel = np.abs(o - r) / np.maximum(np.abs(r), 1e-30)
        close += int((rel <= 0.01).sum())
        total += r.size
    # our activations are llama.cpp's to float rounding (its batch of 512 tokens is tiled otherwise than
    # ours); a column's sum over 1024 tokens moves by far less than 1% but for columns whose activations
    # are all tiny
    assert close >= 0.99 * total, (close, total)


def test_in_file_merges_and_quantize_reads_the_result(capsys, tmp_path):
    """Two files merged are their sums and counts added; quantize --imatrix takes the result."""
    a = DATA / "imatrix_smol.gguf"
    out = tmp_path / "merged.gguf"
    assert main(["imatrix", "-m", SMOL, "--in-file", str(a), "--in-file", str(a), "-o", str(out)]) == 0
    capsys.readouterr()
    kv, datasets, merged = read(out)
    _, _, ref = read(a)
    assert kv["imatrix.chunk_count"] == 4 and datasets == [TEXT, TEXT]
    for name, r in ref.items():
        np.testing.assert_array_equal(merged[name], r + r)
    # the importances (sum / count) are those of the single file
    m, s = load_imatrix(out), load_imatrix(a)
    for name in s.entries:
        np.testing.assert_allclose(m.entries[name], s.entries[name], rtol=1e-6)


def test_imatrix_bad_inputs(capsys, tmp_path):
    assert main(["imatrix", "-m", SMOL]) == 2
    assert "-f FILE" in capsys.readouterr().err
    assert main(["imatrix", "-m", SMOL, "-f", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "x.gguf")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["imatrix", "-m", SMOL, "-f", str(ROOT / TEXT), "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
