"""`ggufq compare`: the report's figures are the ones `ggufq perplexity` prints for the same file, text and
chunks; the Q4_K_M file's mean KLD is llama-perplexity's (tests/data/compare_golden.json, within 5%); the
report's three files; the regression notes; bad inputs leave no report."""
from __future__ import annotations

import json
import re
import struct

import pytest

from ggufq.cli import main
from ggufq.evaluate.compare import FileReport, Report, pareto_front, regressions

from .conftest import DATA, GEMMA, SMOL

GOLDEN = json.loads((DATA / "compare_golden.json").read_text(encoding="utf-8"))
TEXT = str(DATA / "ppl_text_austen.txt")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """SmolLM2 F16 and two files quantized from it (byte-identical to llama-quantize's)."""
    d = tmp_path_factory.mktemp("compare")
    f16, q4km, q4_0 = d / "F16.gguf", d / "Q4_K_M.gguf", d / "Q4_0.gguf"
    assert main(["quantize", "--allow-requantize", SMOL, str(f16), "F16"]) == 0
    assert main(["quantize", str(f16), str(q4km), "Q4_K_M"]) == 0
    assert main(["quantize", str(f16), str(q4_0), "Q4_0"]) == 0
    return d, f16, q4km, q4_0


def printed(pattern: str, text: str) -> float:
    return float(re.search(pattern, text).group(1))


def test_report_equals_perplexity_and_llama_cpp(smol, capsys):
    d, f16, q4km, q4_0 = smol
    prefix = d / "report"
    args = ["-c", str(GOLDEN["ctx"]), "--chunks", str(GOLDEN["chunks"]), "-t", "2"]
    assert main(["compare", "--base", str(f16), "-f", TEXT, *args, "-o", str(prefix), str(q4km), str(q4_0)]) == 0
    table = capsys.readouterr().out
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert set(report) == {"base", "workloads", "files"} and report["workloads"] == ["ppl_text_austen"]
    assert [f["path"] for f in report["files"]] == [str(q4km), str(q4_0)]
    for f, path in zip(report["files"], (q4km, q4_0)):
        assert set(f) == {"path", "size_bytes", "bpw", "pp_tps", "tg_tps", "workloads"}
        assert f["pp_tps"] > 0 and f["tg_tps"] > 0
        assert f["size_bytes"] == path.stat().st_size
    fig = report["files"][0]["workloads"]["ppl_text_austen"]
    # the same figures as `perplexity --kl-divergence` against the cached base, to the digits it prints
    cached = sorted((d / ".ggufq-compare-cache").glob("F16.ppl_text_austen.*.kld"))
    assert len(cached) == 1
    assert main(["perplexity", "-m", str(q4km), "--kl-divergence-base", str(cached[0]), "--kl-divergence",
                 *args]) == 0
    out = capsys.readouterr().out
    for key, pattern, fmt in (("ppl", r"Mean PPL\(Q\)\s+:\s+(\S+)", "10.6f"), ("kld_mean", r"Mean    KLD:\s+(\S+)", "10.6f"),
                              ("kld_p99", r"99\.0%   KLD:\s+(\S+)", "10.6f"), ("same_top", r"Same top p:\s+(\S+)", "6.3f")):
        assert format(fig[key], fmt) == format(printed(pattern, out), fmt), key
    # the base's PPL: what `perplexity -f` prints for the base on the same chunks
    assert main(["perplexity", "-m", str(f16), "-f", TEXT, *args]) == 0
    base_ppl = printed(r"Final estimate: PPL = (\S+)", capsys.readouterr().out)
    assert f"| F16.gguf (base) | {f16.stat().st_size / 2**20:.2f} |  |  |  | {base_ppl:.4f} |" in table
    # llama-perplexity's mean KLD for llama-quantize's Q4_K_M (the same bytes) on the same chunks
    assert fig["kld_mean"] == pytest.approx(GOLDEN["kld_mean"], rel=0.05)
    assert fig["ppl"] == pytest.approx(GOLDEN["ppl"], rel=0.01)
    # Q4_K_M beats Q4_0: its figures are the column's best, in bold
    assert f"**{fig['kld_mean']:.6f}**" in table
    # the plot: a PNG of the promised size (one panel per workload)
    png = prefix.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (550, 420) and len(png) > 10_000


def test_second_run_reuses_the_base_and_adds_a_workload(smol, capsys, tmp_path):
    """The base's log-probabilities are cached per workload: a second comparison computes only the new one;
    two workloads give a column group each and a panel each."""
    d, f16, q4km, q4_0 = smol
    code = tmp_path / "code.txt"
    code.write_text((DATA.parent.parent / "ggufq/data/code.txt").read_text(encoding="utf-8"), encoding="utf-8")
    args = ["-c", "256", "--chunks", "2", "-t", "2", "--no-speed", "-o", str(tmp_path / "r")]
    assert main(["compare", "--base", str(f16), "-f", TEXT, *args, str(q4_0)]) == 0
    capsys.readouterr()
    assert main(["compare", "--base", str(f16), "-f", TEXT, "-f", str(code), *args, str(q4_0), str(q4km)]) == 0
    err = capsys.readouterr().err
    assert "on code" in err and "on ppl_text_austen" not in err        # only the new workload's base is run
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["workloads"] == ["ppl_text_austen", "code"]
    assert all(f["pp_tps"] is None for f in report["files"])
    png = (tmp_path / "r.png").read_bytes()
    assert struct.unpack(">II", png[16:24]) == (1100, 420)


def report_of(klds: dict[str, list[float]]) -> Report:
    names = list(klds)
    files = []
    for i in range(len(klds[names[0]])):
        files.append(FileReport(f"f{i}.gguf", 100 * (i + 1), 4.0, workloads={
            w: {"ppl": 10.0, "kld_mean": klds[w][i], "kld_p99": 0.0, "same_top": 90.0} for w in names}))
    return Report("base.gguf", names, {w: 9.0 for w in names}, files)


def test_regressions_an_average_hides():
    # f1 is as good as f0 on prose but 3x worse on code: flagged; f2 is uniformly worse: not flagged
    notes = regressions(report_of({"prose": [0.010, 0.010, 0.050], "code": [0.010, 0.030, 0.050]}))
    assert len(notes) == 1 and notes[0].startswith("f1.gguf: its mean KLD is 3.00x the best file's on code")
    assert regressions(report_of({"prose": [0.01, 0.02, 0.05], "code": [0.02, 0.04, 0.10]})) == []
    # a rank that moves by two places
    notes = regressions(report_of({"a": [0.010, 0.011, 0.012], "b": [0.012, 0.011, 0.010]}))
    assert notes == ["f0.gguf: ranks 1 of 3 on a but 3 on b", "f2.gguf: ranks 1 of 3 on b but 3 on a"]
    assert regressions(report_of({"only": [0.01, 0.05]})) == []


def test_pareto_front():
    # (size, kld): (2, 0.5) is beaten by (1, 0.4); (3, 0.1) and (4, 0.05) are on the front
    assert pareto_front([(1, 0.4), (2, 0.5), (3, 0.1), (4, 0.05), (5, 0.05)]) == [0, 2, 3]


def test_bad_inputs_leave_no_report(smol, capsys, tmp_path):
    d, f16, q4km, _ = smol
    prefix = tmp_path / "bad"
    common = ["--base", str(f16), "-c", "128", "--chunks", "1", "--no-speed", "-o", str(prefix)]
    assert main(["compare", *common, "-f", TEXT, GEMMA]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vocabulary is not the base's" in err
    assert main(["compare", *common, "-f", str(tmp_path / "missing.txt"), str(q4km)]) == 2
    assert "missing.txt: cannot read" in capsys.readouterr().err
    blocker = tmp_path / "afile"   # a file where the prefix wants a folder (root ignores permission bits)
    blocker.write_text("")
    assert main(["compare", "--base", str(f16), "-f", TEXT, "-o", str(blocker / "r"), str(q4km)]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert not list(tmp_path.glob("bad*")) and not list(tmp_path.glob(".bad*"))


def test_interrupt_leaves_no_report(smol, capsys, tmp_path, monkeypatch):
    """Ctrl-C in the middle of the scoring: exit 130, no report file, no temporary file, and the base files
    that were finished stay cached (each was renamed into place whole)."""
    import ggufq.evaluate.compare as compare_mod
    d, f16, q4km, q4_0 = smol
    real, calls = compare_mod.score, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(compare_mod, "score", interrupted)
    prefix = tmp_path / "r"
    assert main(["compare", "--base", str(f16), "-f", TEXT, "-c", "128", "--chunks", "1", "--no-speed", "-t", "2",
                 "-o", str(prefix), str(q4km), str(q4_0)]) == 130
    assert "interrupted" in capsys.readouterr().err
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".ggufq-compare-cache"]
    assert [p.suffix for p in sorted((tmp_path / ".ggufq-compare-cache").iterdir())] == [".json", ".kld"]
