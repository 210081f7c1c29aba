"""Quantized files side by side against their full-precision base, per workload: the report behind
`ggufq compare`.

For every workload (a text) the base model's log-probabilities are computed once, in llama.cpp's KL-divergence
base format (ggufq/evaluate/kld.py), and cached beside the report, keyed by the base file, the text and the
chunking: adding a file to a comparison costs one run of that file. Each file is then scored on every
workload exactly as `ggufq perplexity --kl-divergence-base BASE --kl-divergence` scores it (the same
functions), so the report's figures are the ones that command prints:

    ppl        Mean PPL(Q)               kld_mean   Mean KLD
    kld_p99    99.0% KLD                 same_top   Same top p (percent)

plus its size, bits per weight (file bytes * 8 / parameters, as llama.cpp's loader prints them) and a short
speed bench (pp_tps: one batch of SPEED_PROMPT tokens; tg_tps: SPEED_GEN tokens one at a time; medians of
SPEED_REPS runs after a warm-up run).

A file is flagged when it is disproportionately worse on one workload than on another: its mean KLD
relative to the best file's changes by REGRESSION_RATIO or more between two workloads, or its rank among
the files moves by two places or more. An average over workloads hides exactly that.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ggufq.errors import GGUFQError

DATA = Path(__file__).resolve().parents[1] / "data"
DEFAULT_TEXTS = (DATA / "prose.txt",)
SPEED_PROMPT, SPEED_GEN, SPEED_REPS = 128, 32, 3
REGRESSION_RATIO = 2.0
FIGURES = ("ppl", "kld_mean", "kld_p99", "same_top")


@dataclass
class Workload:
    name: str
    path: Path
    text: str


def load_workloads(paths) -> list[Workload]:
    """Each text is one workload named by its file's stem; the bundled prose when none is given."""
    from ggufq.files.text import read_text
    out, seen = [], {}
    for p in [Path(p) for p in paths] or list(DEFAULT_TEXTS):
        name = p.stem
        if name in seen:
            raise GGUFQError(f"{p}: two texts would both be the workload {name!r} (also {seen[name]})")
        seen[name] = p
        out.append(Workload(name, p, read_text(str(p))))
    return out


@dataclass
class FileReport:
    path: str
    size_bytes: int
    bpw: float
    pp_tps: float | None = None
    tg_tps: float | None = None
    workloads: dict = field(default_factory=dict)   # name -> {"ppl", "kld_mean", "kld_p99", "same_top"}

    def as_json(self) -> dict:
        return {"path": self.path, "size_bytes": self.size_bytes, "bpw": self.bpw, "pp_tps": self.pp_tps,
                "tg_tps": self.tg_tps, "workloads": self.workloads}


@dataclass
class Report:
    base: str
    workloads: list[str]
    base_ppl: dict[str, float]
    files: list[FileReport]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        """Exactly the keys the comparison's JSON promises (the base's own PPL is in the Markdown)."""
        return {"base": self.base, "workloads": self.workloads, "files": [f.as_json() for f in self.files]}


@dataclass
class Settings:
    n_ctx: int = 512
    n_chunks: int = -1
    threads: int | None = None
    speed: bool = True
    arithmetic: str | None = None


def vocabulary_digest(path) -> str:
    """The tokenizer's token list, hashed: files compared with a base must share its vocabulary."""
    from ggufq.files.gguf_reader import GGUFFile
    with GGUFFile(path) as g:
        tokens = g.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise GGUFQError(f"{path}: no tokenizer in the file")
        h = hashlib.sha256()
        for t in tokens:
            h.update(str(t).encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()


def parameter_count(path) -> int:
    from ggufq.files.gguf_reader import GGUFFile
    with GGUFFile(path) as g:
        return sum(t.n_elements for t in g.tensors.values())


class BaseCache:
    """The base model's log-probabilities per workload, computed once: `<dir>/<base>.<workload>.<key>.kld`
    (llama.cpp's base format, usable by `perplexity --kl-divergence-base`) and its perplexity beside it."""

    def __init__(self, base: str, folder: Path, s: Settings):
        self.base, self.folder, self.s = base, folder, s
        st = os.stat(base)
        self.identity = f"{os.path.abspath(base)}|{st.st_size}|{st.st_mtime_ns}"

    def path(self, w: Workload) -> Path:
        key = hashlib.sha256(f"{self.identity}|{w.text}|{self.s.n_ctx}|{self.s.n_chunks}|{self.s.arithmetic}"
                             .encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return self.folder / f"{Path(self.base).stem}.{w.name}.{key}.kld"

    def cached(self, w: Workload) -> bool:
        p = self.path(w)
        return p.exists() and p.with_suffix(".json").exists()

    def get(self, w: Workload, model=None, on_chunk=None) -> tuple[Path, float]:
        """(base file, base PPL) for workload w, computing them with `model` (the base, loaded) if needed."""
        from ggufq.evaluate.kld import BaseWriter
        from ggufq.evaluate.perplexity import count_chunks, perplexity
        from ggufq.files.atomic import atomic_output
        p = self.path(w)
        meta = p.with_suffix(".json")
        if not self.cached(w):
            tok = model.tokenizer
            tokens = tok.encode(w.text, add_special=True, parse_special=False)
            n_chunk = count_chunks(len(tokens), self.s.n_ctx, self.s.n_chunks)
            self.folder.mkdir(parents=True, exist_ok=True)
            writer = BaseWriter(p, self.s.n_ctx, model.n_vocab, n_chunk, tokens)
            try:
                ppl, _, _ = perplexity(model, tokens, self.s.n_ctx, self.s.n_chunks, bool(tok.add_bos), tok.bos_id,
                                       on_chunk, writer.add)
            except BaseException:
                writer.close(ok=False)
                raise
            writer.close()
            with atomic_output(meta) as tmp:
                Path(tmp).write_text(json.dumps({"base": self.identity, "workload": str(w.path), "ppl": ppl}))
        return p, float(json.loads(meta.read_text())["ppl"])


def score(model, base_file: Path, n_chunks: int, on_chunk=None) -> dict:
    """The figures `perplexity --kl-divergence` prints for this model against one base file."""
    from ggufq.evaluate.kld import BaseFile, _percentile
    from ggufq.evaluate.perplexity import kl_divergence
    tok = model.tokenizer
    k = kl_divergence(model, BaseFile(base_file), n_chunks, bool(tok.add_bos), tok.bos_id, on_chunk)
    values = np.sort(np.concatenate(k.kld_values))
    return {"ppl": k.ppl()[0], "kld_mean": k.kld()[0], "kld_p99": _percentile(values, 0.99),
            "same_top": 100 * k.same_top()[0]}


def speed(path: str, s: Settings) -> tuple[float, float]:
    """(pp_tps, tg_tps): medians of a short bench (ggufq/evaluate/bench.py)."""
    from ggufq.evaluate.bench import bench_model
    from ggufq.runtime.model import Model
    model = Model.load(path, n_ctx=max(SPEED_PROMPT, SPEED_GEN) + 1, n_threads=s.threads, n_batch=SPEED_PROMPT)
    r = bench_model(model, SPEED_PROMPT, SPEED_GEN, SPEED_REPS)
    return statistics.median(r[f"pp{SPEED_PROMPT}"]), statistics.median(r[f"tg{SPEED_GEN}"])


def compare(base: str, files: list[str], workloads: list[Workload], s: Settings, cache_dir: Path,
            log=None) -> Report:
    """Score every file on every workload against the base (see the module docstring)."""
    from tqdm import tqdm

    from ggufq.evaluate.perplexity import count_chunks
    from ggufq.runtime.model import Model

    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    vocab = vocabulary_digest(base)
    for f in files:  # every input checked before any work
        if vocabulary_digest(f) != vocab:
            raise GGUFQError(f"{f}: its vocabulary is not the base's ({base}): the KL divergence needs the same "
                             f"tokens")
    cache = BaseCache(base, cache_dir, s)
    load = dict(n_ctx=s.n_ctx, n_threads=s.threads, n_batch=s.n_ctx, arithmetic=s.arithmetic)
    base_model = Model.load(base, **load)
    tok = base_model.tokenizer
    chunks = {}
    for w in workloads:
        n_tok = len(tok.encode(w.text, add_special=True, parse_special=False))
        try:
            chunks[w.name] = count_chunks(n_tok, s.n_ctx, s.n_chunks)
        except GGUFQError as e:
            raise GGUFQError(f"{w.path}: {e}") from None
    todo = sum(chunks[w.name] for w in workloads if not cache.cached(w))
    total = todo + len(files) * sum(chunks.values()) + (len(files) if s.speed else 0)
    with tqdm(total=total, unit="step", desc="compare", file=sys.stderr, disable=None, leave=False) as bar:
        step = lambda *_: bar.update(1)  # noqa: E731
        base_ppl, base_files = {}, {}
        for w in workloads:
            if not cache.cached(w):
                log(f"compare: the base's log-probabilities on {w.name} ({chunks[w.name]} chunks of {s.n_ctx})")
            base_files[w.name], base_ppl[w.name] = cache.get(w, base_model, step)
        del base_model
        reports = []
        for f in files:
            r = FileReport(f, os.path.getsize(f), 8 * os.path.getsize(f) / max(parameter_count(f), 1))
            model = Model.load(f, **load)
            for w in workloads:
                bar.set_postfix_str(f"{Path(f).name} on {w.name}")
                r.workloads[w.name] = score(model, base_files[w.name], s.n_chunks, step)
            del model
            if s.speed:
                bar.set_postfix_str(f"{Path(f).name}: speed")
                r.pp_tps, r.tg_tps = speed(f, s)
                bar.update(1)
            reports.append(r)
    report = Report(base, [w.name for w in workloads], base_ppl, reports)
    report.notes = regressions(report)
    return report


def regressions(report: Report, ratio: float = REGRESSION_RATIO) -> list[str]:
    """Files whose mean KLD, relative to the best file's, changes sharply between workloads, or whose rank
    among the files moves by two places or more."""
    names = report.workloads
    if len(names) < 2 or len(report.files) < 2:
        return []
    best = {w: min(f.workloads[w]["kld_mean"] for f in report.files) for w in names}
    rank = {w: sorted(range(len(report.files)), key=lambda i: report.files[i].workloads[w]["kld_mean"]) for w in names}
    notes = []
    for i, f in enumerate(report.files):
        rel = {w: f.workloads[w]["kld_mean"] / best[w] if best[w] > 0 else 1.0 for w in names}
        hi, lo = max(names, key=lambda w: rel[w]), min(names, key=lambda w: rel[w])
        places = {w: rank[w].index(i) + 1 for w in names}
        worst, best_place = max(names, key=lambda w: places[w]), min(names, key=lambda w: places[w])
        label = Path(f.path).name
        if rel[hi] >= ratio * rel[lo]:
            notes.append(f"{label}: its mean KLD is {rel[hi]:.2f}x the best file's on {hi} but {rel[lo]:.2f}x on "
                         f"{lo}: worse on {hi} than its average shows")
        elif places[worst] - places[best_place] >= 2:
            notes.append(f"{label}: ranks {places[best_place]} of {len(report.files)} on {best_place} but "
                         f"{places[worst]} on {worst}")
    return notes


# ---- the report's three files -------------------------------------------------------------------------

def markdown(report: Report) -> str:
    """One row per file (the base first), a column group per workload; the best figure of each column in bold."""
    ws = report.workloads
    cols = ["ppl", "kld_mean", "kld_p99", "same_top"]
    head = ["file", "MiB", "bpw", "pp t/s", "tg t/s"] + [f"{w} {c}" for w in ws for c in
                                                          ("PPL", "mean KLD", "KLD p99", "same top %")]
    better = {"ppl": min, "kld_mean": min, "kld_p99": min, "same_top": max}
    best = {(w, c): better[c](f.workloads[w][c] for f in report.files) for w in ws for c in cols}
    speed_best = {k: max((getattr(f, k) for f in report.files if getattr(f, k) is not None), default=None)
                  for k in ("pp_tps", "tg_tps")}

    def cell(v, fmt, is_best):
        if v is None:
            return "-"
        s = format(v, fmt)
        return f"**{s}**" if is_best else s

    size_best = min(f.size_bytes for f in report.files)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    base_row = [f"{Path(report.base).name} (base)", f"{os.path.getsize(report.base) / 2**20:.2f}", "", "", ""]
    for w in ws:
        base_row += [f"{report.base_ppl[w]:.4f}", "0", "0", "100"]
    lines.append("| " + " | ".join(base_row) + " |")
    for f in report.files:
        row = [Path(f.path).name, cell(f.size_bytes / 2**20, ".2f", f.size_bytes == size_best), f"{f.bpw:.2f}",
               cell(f.pp_tps, ".1f", f.pp_tps == speed_best["pp_tps"]),
               cell(f.tg_tps, ".1f", f.tg_tps == speed_best["tg_tps"])]
        for w in ws:
            fw = f.workloads[w]
            row += [cell(fw["ppl"], ".4f", fw["ppl"] == best[(w, "ppl")]),
                    cell(fw["kld_mean"], ".6f", fw["kld_mean"] == best[(w, "kld_mean")]),
                    cell(fw["kld_p99"], ".6f", fw["kld_p99"] == best[(w, "kld_p99")]),
                    cell(fw["same_top"], ".2f", fw["same_top"] == best[(w, "same_top")])]
        lines.append("| " + " | ".join(row) + " |")
    out = [f"# ggufq compare: {len(report.files)} files against {Path(report.base).name}", "",
           f"Workloads: {', '.join(ws)}. PPL, mean and 99th-percentile KL divergence from the base, top-token "
           f"agreement with the base; best of each column in bold.", ""] + lines
    if report.notes:
        out += ["", "Regressions an average hides:", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indexes of the points no other point beats on both size and KLD (smaller is better), by size."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def plot(report: Report, path) -> None:
    """Mean KLD against size, one panel per workload, one labelled point per file, the Pareto front drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = report.workloads
    fig, axes = plt.subplots(1, len(ws), figsize=(5.5 * len(ws), 4.2), squeeze=False)
    for ax, w in zip(axes[0], ws):
        pts = [(f.size_bytes / 2**20, f.workloads[w]["kld_mean"]) for f in report.files]
        for f, (x, y) in zip(report.files, pts):
            ax.scatter([x], [y], zorder=3)
            ax.annotate(Path(f.path).stem, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front(pts)
        ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="post", color="grey",
                linestyle="--", linewidth=1, label="Pareto front")
        if all(y > 0 for _, y in pts):
            ax.set_yscale("log")
        ax.set_title(w)
        ax.set_xlabel("size (MiB)")
        ax.set_ylabel("mean KL divergence from the base")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"against {Path(report.base).name}")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def report_paths(prefix) -> tuple[Path, Path, Path]:
    p = Path(prefix)
    return p.with_name(p.name + ".md"), p.with_name(p.name + ".json"), p.with_name(p.name + ".png")


def write_report(report: Report, prefix) -> tuple[Path, Path, Path]:
    """PREFIX.md, PREFIX.json and PREFIX.png, each complete before any is renamed into place."""
    from ggufq.files.atomic import atomic_outputs
    paths = report_paths(prefix)
    try:
        with atomic_outputs(paths) as (md, js, png):
            md.write_text(markdown(report), encoding="utf-8")
            js.write_text(json.dumps(report.as_json(), indent=1) + "\n", encoding="utf-8")
            plot(report, png)
    except OSError as e:
        raise GGUFQError(f"cannot write the report {prefix}.*: {e.strerror}") from None
    return paths
