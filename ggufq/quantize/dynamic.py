"""UD-Q4_K_XL: a type per tensor, chosen from measurements, within a byte budget.

Unsloth's dynamic quants mix Q4_K with Q5_K, Q6_K and Q8_0 per tensor; how they choose is not published.
This search is open and every number in it is measured on the model at hand:

1. Candidates. Each weight matrix can take the K-quant ladder Q4_K < Q5_K < Q6_K < Q8_0, or, when its
   rows are not a multiple of 256 (SmolLM2's 576), the 32-block ladder Q4_0 < Q5_0 < Q5_1 < Q8_0.
2. Error. For every (tensor, candidate): the imatrix-weighted squared rounding error
   sum_j imp_j * sum_rows (w - q(w))^2, with the quantizer's own weighted path; imp_j = E[x_j^2] over the
   calibration tokens, so this is E||(W - Q(W)) x||^2, the error energy the product adds to its output
   (without an imatrix entry, imp = 1). Rows are sampled for tensors over SAMPLE_ELEMENTS.
3. Gain. Error energy does not reach the logits the same way from every layer and kind of tensor. So the
   tensors are grouped by kind (attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, the
   embedding/output) and by quarter of depth, and each group is probed: that group alone at its cheapest
   candidate, everything else left as it is in the F16 file, KL divergence from the F16 model measured on
   the calibration text. gain(group) = KLD(group) / its error energy: KLD per unit of error.
4. Search. Every tensor starts at its cheapest candidate; predicted KLD = sum of gain * error (additive,
   as small independent perturbations are to first order). Upgrades are taken greedily by predicted
   KLD saved per byte, the best of all higher candidates of a tensor at each step (marginal analysis),
   while the file stays within the budget: by default the size of imatrix Q4_K_M plus 5%.

Tensors that are not weight matrices (norms) keep Q4_K_M's choice. The search is deterministic: the same
F16 file, imatrix and text give the same recipe (ties broken by tensor name).
"""
from __future__ import annotations

import heapq
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as GT

from ggufq.errors import GGUFQError
from ggufq.quantize.recipes import tensor_nbytes as nbytes

LADDER_K = (GT.Q4_K, GT.Q5_K, GT.Q6_K, GT.Q8_0)
LADDER_32 = (GT.Q4_0, GT.Q5_0, GT.Q5_1, GT.Q8_0)
SAMPLE_ELEMENTS = 1 << 21          # error measured on at most this many weights of a tensor (rows sampled)
DEFAULT_MARGIN = 1.05              # budget: imatrix Q4_K_M's size times this
PROBE_CTX = 512                    # default calibration chunk of the KLD probes (its second half scored)
KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
_BLK = re.compile(r"blk\.(\d+)\.([a-z_]+)\.weight$")




@dataclass
class Candidate:
    qtype: GT
    bytes: int
    error: float = 0.0             # imatrix-weighted squared error (whole tensor)


@dataclass
class TensorCase:
    name: str
    shape: tuple[int, ...]
    group: str
    candidates: list[Candidate] = field(default_factory=list)
    choice: int = 0                # index into candidates


def group_of(name: str, n_layer: int) -> str | None:
    """The probe group of a weight matrix: its kind and quarter of depth; None for what is not searched."""
    if name in ("output.weight", "token_embd.weight"):
        return "embedding/output"
    m = _BLK.match(name)
    if not m or m.group(2) not in KINDS:
        return None
    quarter = min(3, 4 * int(m.group(1)) // max(n_layer, 1))
    return f"{m.group(2)}@q{quarter + 1}"


def measure_errors(g, cases: list[TensorCase], imatrix, progress=None) -> None:
    """Fill every candidate's weighted error (quantize with the imatrix, dequantize, compare)."""
    from ggufq.quantize.pipeline import _to_f32
    from ggufq.kernels import get_format
    from ggufq.quantize.recipes import quantize_tensor

    scratch = np.empty(0, np.float32)
    for case in cases:
        t = g.tensors[case.name]
        rows = t.n_rows
        step = max(1, (rows * t.shape[0]) // SAMPLE_ELEMENTS)
        raw = np.asarray(t.data).reshape(rows, -1)[::step]
        if scratch.size < raw.shape[0] * t.shape[0]:
            scratch = np.empty(raw.shape[0] * t.shape[0], np.float32)
        x, _ = _to_f32(t, raw, case.name, scratch)
        x = np.array(x, np.float32, copy=True)
        imp = imatrix.get(case.name) if imatrix is not None else None
        w = imp if imp is not None else np.ones(x.shape[1], np.float32)
        for c in case.candidates:
            q = quantize_tensor(case.name, x, c.qtype, imp)
            d = get_format(c.qtype).dequantize(q).reshape(x.shape)
            c.error = float(((d - x).astype(np.float64) ** 2 * w).sum()) * (rows / x.shape[0])
        if progress:
            progress(case.name)


class Prober:
    """KL divergence of mixtures from the F16 model on one calibration chunk, each mixture written to a
    temporary file by the quantizer and run by the runtime."""

    def __init__(self, f16_path: str, imatrix_path: str | None, tokens: list[int], tmp: Path,
                 n_ctx: int = PROBE_CTX, on_probe=None):
        from ggufq.evaluate.kld import encode_log_probs
        from ggufq.runtime.model import Model
        import numba
        self.f16, self.imatrix_path, self.tmp = f16_path, imatrix_path, tmp
        # a fixed thread count (not the load-following default): BLAS splits its work by threads, and the
        # same inputs must give the same probes, so the same recipe
        self.threads = numba.config.NUMBA_NUM_THREADS
        self.n_ctx = n_ctx
        m = Model.load(f16_path, n_ctx=n_ctx, n_threads=self.threads)
        tok = m.tokenizer
        self.chunk = np.array(tokens[:n_ctx], np.int64)
        if tok.add_bos and tok.bos_id is not None:
            self.chunk[0] = tok.bos_id
        self.first = n_ctx // 2
        self.base = np.concatenate([encode_log_probs(lg) for _, lg in m.scored_logits(self.chunk, self.first)])
        self.n_probes = 0
        self.on_probe = on_probe

    def kld(self, recipe: dict[str, GT]) -> float:
        """Mean KL(F16 || mixture) over the scored tokens; tensors not in `recipe` stay as in the F16 file."""
        from ggufq.cli import run_quiet
        from ggufq.evaluate.kld import KLDivergence
        from ggufq.runtime.model import Model
        rpath, out = self.tmp / "probe.json", self.tmp / "probe.gguf"
        rpath.write_text(json.dumps({"tensors": {n: t.name for n, t in recipe.items()}}))
        argv = ["quantize", self.f16, str(out), "F16", "--recipe", str(rpath)]
        if self.imatrix_path:
            argv += ["--imatrix", self.imatrix_path]
        rc, err = run_quiet(argv)
        if rc:
            raise GGUFQError(f"dynamic recipe: a probe file could not be written: {err.strip()}")
        m = Model.load(out, n_ctx=self.n_ctx, n_threads=self.threads)
        k = KLDivergence()
        for i0, logits in m.scored_logits(self.chunk, self.first):
            r = i0 - self.first
            k.add(logits, self.base[r:r + len(logits)], self.chunk[i0 + 1:i0 + 1 + len(logits)])
        del m
        out.unlink()
        self.n_probes += 1
        if self.on_probe:
            self.on_probe()
        return float(k.kld()[0])


@dataclass
class Result:
    recipe: dict[str, GT]                  # every searched tensor's type
    cases: list[TensorCase]
    gains: dict[str, float]
    probe_kld: dict[str, float]
    budget: int
    total_bytes: int
    predicted_kld: float
    seconds: float
    f16_groups: set = field(default_factory=set)
    measured: dict = field(default_factory=dict)    # calibration KLD of the mixture: stage1, final

    def lines(self) -> list[str]:
        out = [f"{'tensor':<32} {'type':<6} {'bytes':>11}  {'weighted error':>14}  {'predicted KLD':>13}  group"]
        for c in self.cases:
            cand = c.candidates[c.choice]
            if c.group in self.f16_groups:
                out.append(f"{c.name:<32} {'F16':<6} {nbytes(GT.F16, c.shape):>11}  {0.0:>14.6g}  {'measured':>13}  "
                           f"{c.group}")
                continue
            out.append(f"{c.name:<32} {cand.qtype.name:<6} {cand.bytes:>11}  {cand.error:>14.6g}  "
                       f"{self.gains[c.group] * cand.error:>13.6f}  {c.group}")
        kl = ", ".join(f"{k} {v:.6f}" for k, v in self.measured.items())
        out.append(f"total {self.total_bytes / 2**20:.2f} MiB of {self.budget / 2**20:.2f} MiB budget, predicted "
                   f"KLD {self.predicted_kld:.6f}, measured on the calibration chunk: {kl}; "
                   f"{len(self.gains)} groups probed, {self.seconds:.0f} s")
        return out


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]i?B?|B)?\s*", text, re.I)
    if not m:
        raise GGUFQError(f"--target-size {text!r}: expected a size such as 120MB or 1.5GB")
    unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
    mult = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[unit]
    if m.group(2) and "I" in m.group(2).upper():
        mult = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit]
    return int(float(m.group(1)) * mult)


def search(g, f16_path: str, imatrix, imatrix_path: str | None, calib_tokens: list[int], base_choices,
           target_bytes: int | None = None, log=None, probe_ctx: int = PROBE_CTX) -> Result:
    """The dynamic recipe for the F16 file `g` (an open GGUFFile): see the module docstring.
    base_choices: imatrix Q4_K_M's plan (recipes.TensorChoice list), whose size sets the default budget
    and whose types the tensors outside the search keep."""
    from tqdm import tqdm
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))  # lines above the bar on a terminal
    t0 = time.perf_counter()
    from ggufq.runtime.config import Config
    n_layer = Config.from_gguf(g).n_layer
    if len(calib_tokens) < probe_ctx:
        raise GGUFQError(f"dynamic recipe: the calibration text has {len(calib_tokens)} tokens; the probes need "
                         f"{probe_ctx} (--calib-ctx)")
    fixed = 0
    cases = []
    for c in base_choices:
        grp = group_of(c.name, n_layer) if len(c.shape) == 2 else None
        if grp is None:
            fixed += nbytes(c.dst_type, c.shape)
            continue
        ladder = LADDER_K if c.shape[0] % 256 == 0 else LADDER_32
        cases.append(TensorCase(c.name, c.shape, grp, [Candidate(t, nbytes(t, c.shape)) for t in ladder]))
    base_bytes = sum(nbytes(c.dst_type, c.shape) for c in base_choices)
    budget = target_bytes if target_bytes is not None else int(base_bytes * DEFAULT_MARGIN)
    floor = fixed + sum(c.candidates[0].bytes for c in cases)
    if budget < floor:
        raise GGUFQError(f"the budget of {budget / 2**20:.2f} MiB is below the smallest mixture "
                         f"({floor / 2**20:.2f} MiB, every tensor at Q4_K or Q4_0)")

    groups = sorted({c.group for c in cases})
    # one step per tensor's errors, per probe (a group, the mixture, a group in F16 over it, the final mixture)
    with tqdm(total=len(cases) + 2 * len(groups) + 2, unit="step", desc="UD-Q4_K_XL", file=sys.stderr,
              disable=None, leave=False) as bar:
        log(f"dynamic recipe: {len(cases)} tensors, {len(LADDER_K)} candidates each: measuring rounding errors")
        measure_errors(g, cases, imatrix, progress=lambda name: bar.update(1))
        log(f"dynamic recipe: errors measured ({time.perf_counter() - t0:.0f} s); probing groups")
        gains, probe_kld = {}, {}
        with tempfile.TemporaryDirectory(prefix="ggufq-ud-", dir=os.path.dirname(os.path.abspath(f16_path))) as d:
            prober = Prober(f16_path, imatrix_path, calib_tokens, Path(d), probe_ctx, on_probe=lambda: bar.update(1))
            for grp in groups:
                members = [c for c in cases if c.group == grp]
                kld = prober.kld({c.name: c.candidates[0].qtype for c in members})
                err = sum(c.candidates[0].error for c in members)
                probe_kld[grp] = kld
                gains[grp] = max(kld, 0.0) / err if err > 0 else 0.0
                log(f"  probe {grp:<22} KLD {kld:.6f}  ({time.perf_counter() - t0:.0f} s)")
            total = _greedy(cases, gains, floor, budget)
            total, f16_groups, measured = _f16_stage(cases, groups, prober, budget, total, log, t0)
        recipe = {c.name: (GT.F16 if c.group in f16_groups else c.candidates[c.choice].qtype) for c in cases}
        predicted = sum(gains[c.group] * c.candidates[c.choice].error for c in cases if c.group not in f16_groups)
        return Result(recipe, cases, gains, probe_kld, budget, total, predicted, time.perf_counter() - t0,
                      f16_groups, measured)


def _greedy(cases: list[TensorCase], gains: dict[str, float], total: int, budget: int) -> int:
    """Stage 1, marginal analysis: the best upgrade of each tensor in a heap, keyed by predicted KLD saved
    per byte; returns the total size."""
    def pred(c, i):
        return gains[c.group] * c.candidates[i].error

    def best_upgrade(ci):
        c = cases[ci]
        best = None
        for j in range(c.choice + 1, len(c.candidates)):
            db = c.candidates[j].bytes - c.candidates[c.choice].bytes
            dk = pred(c, c.choice) - pred(c, j)
            if db > 0 and dk > 0 and (best is None or dk / db > best[0]):
                best = (dk / db, j, db)
        return best

    heap = []
    for ci in range(len(cases)):
        b = best_upgrade(ci)
        if b:
            heapq.heappush(heap, (-b[0], cases[ci].name, ci, b[1], b[2]))
    while heap:
        _, _, ci, j, db = heapq.heappop(heap)
        if total + db > budget:
            continue                    # too big now; a smaller upgrade of another tensor may still fit
        cases[ci].choice = j
        total += db
        b = best_upgrade(ci)
        if b:
            heapq.heappush(heap, (-b[0], cases[ci].name, ci, b[1], b[2]))
    return total


def _f16_stage(cases, groups, prober, budget: int, total: int, log, t0):
    """Stage 2, measured: what budget is left buys whole groups in F16, chosen by measured KLD.

    Every quantized type multiplies 8-bit activations (Q8_0 / Q8_K), F16 weights fp16 ones: that rounding
    is in no weight's error, and it is the whole divergence of a file whose weights sit on their source's
    grid (Gemma 3 here, dequantized from Q4_K_M: stage 1 finds the source types, and their error is ~0).
    So each group that fits in the remaining budget is probed in F16 on top of the stage-1 mixture, and
    the measured savings per byte are taken greedily; the whole mixture is measured again and kept only
    if it is better. Returns (total bytes, groups in F16, {"stage1": KLD, "final": KLD})."""
    mixture = {c.name: c.candidates[c.choice].qtype for c in cases}
    k0 = prober.kld(mixture)
    measured = {"stage1": k0}
    options = []
    for grp in groups:
        members = [c for c in cases if c.group == grp]
        db = sum(nbytes(GT.F16, c.shape) - c.candidates[c.choice].bytes for c in members)
        if db <= 0 or total + db > budget:
            continue
        k = prober.kld({**mixture, **{c.name: GT.F16 for c in members}})
        log(f"  probe {grp:<22} in F16 over the mixture: KLD {k:.6f} (mixture {k0:.6f}, "
            f"{time.perf_counter() - t0:.0f} s)")
        if k < k0:
            options.append(((k0 - k) / db, grp, db))
    chosen = []
    extra = 0
    for _, grp, db in sorted(options, key=lambda o: (-o[0], o[1])):
        if total + extra + db <= budget:
            chosen.append(grp)
            extra += db
    if not chosen:
        measured["final"] = k0
        return total, set(), measured
    k1 = prober.kld({**mixture, **{c.name: GT.F16 for c in cases if c.group in chosen}})
    log(f"  mixture with {', '.join(chosen)} in F16: KLD {k1:.6f} (without: {k0:.6f})")
    if k1 >= k0:
        measured["final"] = k0
        return total, set(), measured
    measured["final"] = k1
    return total + extra, set(chosen), measured
