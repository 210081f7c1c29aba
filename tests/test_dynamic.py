"""UD-Q4_K_XL, the dynamic recipe (ggufq/quantize/dynamic.py), end to end on a tiny model with a real vocabulary:
the budget is respected, the same inputs give the same recipe and bytes, and --save-recipe then --recipe
reproduces the file."""
from __future__ import annotations

import json

import pytest

from ggufq.cli import main
from ggufq.files.gguf_reader import GGUFFile

from .conftest import ROOT
from .tiny_models import make_tiny

TEXT = str(ROOT / "tests/data/ppl_text_austen.txt")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("ud")
    hf = make_tiny(d / "hf", "qwen2", dtype="F16", seed=3)
    f16, imat = d / "f16.gguf", d / "imatrix.gguf"
    assert main(["convert", str(hf), "--outtype", "f16", "--outfile", str(f16), "--no-progress"]) == 0
    assert main(["imatrix", "-m", str(f16), "-f", TEXT, "-c", "256", "--chunks", "2", "-o", str(imat)]) == 0
    return d, f16, imat


@pytest.fixture(scope="module")
def calib(tiny):
    """The first eighth of the text (~1,200 tokens, nine probe chunks of 128), under its own name: the
    searches' probes and the one-command imatrix (the whole text takes far longer and tests nothing more)."""
    text = open(TEXT, encoding="utf-8").read()
    short = tiny[0] / "calib" / "ppl_text_austen.txt"
    short.parent.mkdir()
    short.write_text(text[:text.index("\n", len(text) // 8) + 1], encoding="utf-8")
    return str(short)


def tensor_bytes(path) -> int:
    with GGUFFile(path) as g:
        return sum(t.nbytes for t in g.tensors.values())


def test_ud_recipe_budget_determinism_and_reuse(capsys, tiny, calib):
    """Two searches (a --dry-run and a real run) choose the same recipe; the file is within the default
    budget (imatrix Q4_K_M + 5%); --recipe gives the same bytes without searching; the file records it."""
    d, f16, imat = tiny
    q4km = d / "q4km.gguf"
    assert main(["quantize", str(f16), str(q4km), "Q4_K_M", "--imatrix", str(imat)]) == 0
    ud = d / "ud.gguf"
    common = ["UD-Q4_K_XL", "--imatrix", str(imat), "--calib", calib, "--calib-ctx", "128"]
    capsys.readouterr()
    assert main(["quantize", str(f16), str(d / "dry.gguf"), *common, "--dry-run", "--save-recipe",
                 str(d / "dry.json")]) == 0
    total = [line for line in capsys.readouterr().out.splitlines() if line.startswith("total ")][0]
    words = total.split()
    assert float(words[1]) <= float(words[4]) and "predicted KLD" in total and not (d / "dry.gguf").exists()
    assert main(["quantize", str(f16), str(ud), *common, "--save-recipe", str(d / "ud.json")]) == 0
    recipe = json.loads((d / "ud.json").read_text())
    assert recipe == json.loads((d / "dry.json").read_text()) and recipe["file_type"] == "UD-Q4_K_XL"
    assert tensor_bytes(ud) <= 1.05 * tensor_bytes(q4km)                    # the default budget
    assert len(set(recipe["tensors"].values()) - {"F32"}) >= 2              # a mixture, not one type
    again = d / "again.gguf"
    assert main(["quantize", str(f16), str(again), "UD-Q4_K_XL", "--imatrix", str(imat),
                 "--recipe", str(d / "ud.json")]) == 0
    assert again.read_bytes() == ud.read_bytes()                            # the recipe reproduces the file
    with GGUFFile(ud) as g:
        assert json.loads(g.get("ggufq.recipe")) == recipe


def test_ud_recipe_needs_its_inputs(capsys, tiny):
    d, f16, imat = tiny
    assert main(["quantize", str(f16), str(d / "y.gguf"), "UD-Q4_K_XL", "--calib", TEXT]) == 2
    assert "needs --imatrix" in capsys.readouterr().err
    # the imatrix's own text is used when --calib is not given (test_convert_to_ud_needs_a_text: when it is gone)
    assert main(["quantize", str(f16), str(d / "y.gguf"), "UD-Q4_K_XL", "--imatrix", str(imat), "--calib", TEXT,
                 "--target-size", "10KB"]) == 2
    assert "below the smallest mixture" in capsys.readouterr().err
    assert not (d / "y.gguf").exists()


def tensor_data(path) -> dict:
    with GGUFFile(path) as g:
        return {n: (t.qtype, bytes(t.data)) for n, t in g.tensors.items()}


def test_convert_to_ud_in_one_command_equals_the_three_steps(capsys, tiny, calib):
    """convert --outtype ud-q4_k_xl --calib TEXT = convert f16, `ggufq imatrix` on TEXT, then quantize with the
    recipe the one command recorded: the same tensors (their bytes depend on the imatrix, so the one
    command collected the same one); nothing is left beside the output. (The search itself gives the same
    recipe from the same inputs: test_ud_recipe_budget_determinism_and_reuse.)"""
    d, f16, _ = tiny
    out = d / "one" / "ud.gguf"
    hf = d / "hf"
    assert main(["convert", str(hf), "--outtype", "UD-Q4_K_XL", "--calib", calib, "--calib-ctx", "128",
                 "--outfile", str(out), "--no-progress"]) == 0
    assert "UD-Q4_K_XL" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["ud.gguf"]      # the temporary F16 file is gone
    imat = d / "imatrix128.gguf"
    assert main(["imatrix", "-m", str(f16), "-f", calib, "-c", "128", "-o", str(imat)]) == 0
    recipe = d / "one-command.json"
    with GGUFFile(out) as a:
        recipe.write_text(a.get("ggufq.recipe"))
        assert a.get("quantize.imatrix.file") == "ppl_text_austen.txt (collected by ggufq convert)"
    steps = d / "steps.gguf"
    assert main(["quantize", str(f16), str(steps), "UD-Q4_K_XL", "--imatrix", str(imat), "--recipe",
                 str(recipe)]) == 0
    assert tensor_data(out) == tensor_data(steps)


def test_convert_to_ud_needs_a_text(capsys, tiny, tmp_path):
    d, f16, _ = tiny
    hf, out = d / "hf", tmp_path / "x.gguf"
    assert main(["convert", str(hf), "--outtype", "ud-q4_k_xl", "--outfile", str(out)]) == 2
    assert "needs --calib TEXT" in capsys.readouterr().err
    # an imatrix whose calibration text is gone: the probes' text must be given
    gone = tmp_path / "gone.txt"
    gone.write_text(open(TEXT, encoding="utf-8").read())
    imat = tmp_path / "imatrix.gguf"
    assert main(["imatrix", "-m", str(f16), "-f", str(gone), "-c", "128", "--chunks", "2", "-o", str(imat)]) == 0
    gone.unlink()
    capsys.readouterr()
    assert main(["convert", str(hf), "--outtype", "ud-q4_k_xl", "--imatrix", str(imat), "--outfile", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs --calib TEXT" in err and "gone.txt" in err
    assert main(["convert", str(hf), "--outtype", "f16", "--calib", TEXT, "--outfile", str(out)]) == 2
    assert "--calib is for --outtype ud-q4_k_xl" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imatrix.gguf"]
