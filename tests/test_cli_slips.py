"""A user's slips on the command line: one line on stderr, exit 1 (usage) or 2 (bad input), nothing on
stdout, no temporary file left, and no work done before the refusal."""
from __future__ import annotations

import time

import pytest

from ggufq.cli import main

from .conftest import DATA, SMOL, SMOL_HF


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def nothing_left(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.mark.parametrize("argv, message", [
    (["quantize", "--allow-requantize", SMOL, "{dir}", "Q8_0"], "is a folder"),
    (["quantize", "--allow-requantize", SMOL, "{dir}/x.gguf", "Q8_0", "--tensor-type", "(=Q8_0"],
     "is not a regular expression"),
    (["quantize", "--allow-requantize", SMOL, "{dir}/x.gguf", "Q8_0", "--tensor-type", "ffn_down=IQ2_XXS"],
     "'IQ2_XXS' has no quantizer"),
    (["quantize", "--allow-requantize", SMOL, "{dir}/x.gguf", "Q8_0", "--tensor-type", "ffn_down=IQ2_XXS", "--dry-run"],
     "'IQ2_XXS' has no quantizer"),
    (["quantize", "--allow-requantize", SMOL, "{dir}/x.gguf", "Q8_0", "--output-tensor-type", "Q9_K"],
     "is not a tensor type"),
    (["quantize", "--allow-requantize", SMOL, SMOL, "Q8_0"], "would overwrite the input"),
    (["convert", str(SMOL_HF), "--outtype", "q8_0", "--outfile", "{dir}"], "is a folder"),
])
def test_bad_input_is_one_line_and_status_2(capsys, tmp_path, argv, message):
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    t0 = time.perf_counter()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in one_line(err) and out == ""
    assert time.perf_counter() - t0 < 5  # refused before the work (a quantize or convert takes longer)
    nothing_left(tmp_path)
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("argv, message", [
    (["quantize", SMOL, "x.gguf", "Q4_0", "-t", "0"], "-t/--threads: must be at least 1"),
    (["run", "-m", SMOL, "-p", "hi", "-c", "-5"], "-c/--ctx-size: must be 0 or more"),
    (["chat", "-m", SMOL, "-t", "-1"], "-t/--threads: must be at least 1"),
    (["perplexity", "-m", SMOL, "-f", "x.txt", "-c", "0"], "-c/--ctx-size: must be at least 1"),
    (["perplexity", "-m", SMOL, "-f", "x.txt", "--chunks", "-3"], "--chunks: must be -1 (all)"),
    (["bench", "-m", SMOL, "-r", "zero"], "invalid int value"),
    (["quantize", SMOL], "the following arguments are required"),
])
def test_usage_errors_are_one_line_and_status_1(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    out, err = capsys.readouterr()
    assert message in one_line(err) and out == ""


def test_inspect_says_what_an_imatrix_file_is(capsys):
    assert main(["inspect", str(DATA / "quant_smol_imatrix.gguf")]) == 0
    out = capsys.readouterr().out
    assert "an importance matrix (llama-imatrix)" in out.splitlines()[0]
    assert "architecture ?" not in out and "21 matrices with importances" in out


def test_quantize_and_convert_print_the_same_size_for_the_same_bytes(capsys, tmp_path):
    """Both print the output file's size in MiB with two decimals (metadata included)."""
    q = tmp_path / "q.gguf"
    c = tmp_path / "c.gguf"
    assert main(["convert", str(SMOL_HF), "--outtype", "q8_0", "--outfile", str(c), "--no-progress"]) == 0
    conv = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["quantize", "--allow-requantize", SMOL, str(q), "Q8_0"]) == 0
    quant = capsys.readouterr().out.strip().splitlines()[-1]
    for line, path in ((conv, c), (quant, q)):
        assert f": {path.stat().st_size / 2**20:.2f} MiB" in line, line
