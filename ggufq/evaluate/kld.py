"""KL divergence of a model from a base run, as llama-perplexity's --kl-divergence-base / --kl-divergence.

A base run (the full-precision model) saves, for every scored position of every chunk, its log-probabilities
over the whole vocabulary; a later run of a quantized model reads them back and measures, token by token,
KL(base || model), the change in the probability of the right token (Δp) and whether both pick the same top
token. The file is llama.cpp's own, so a base made by either tool is read by the other:

    "_logits_"  n_ctx u32  n_vocab i32  n_chunk i32  tokens i32[n_chunk * n_ctx]
    then per chunk, per scored position (n_ctx/2 .. n_ctx-2), nv = 2*ceil(n_vocab/2) + 4 uint16:
    float32 scale, float32 min_log_prob, then each token's log-prob as round((logit - min) / scale)

where min is the smallest logit but at most 16 below the largest (the log-prob of everything under it is
taken as min_log_prob: those tokens carry < e^-16 of the probability). The arithmetic is llama.cpp's in
float32 (sums of exponentials in float64), vectorized over rows.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ggufq.errors import GGUFQError

MAGIC = b"_logits_"
HEADER = np.dtype([("magic", "S8"), ("n_ctx", "<u4"), ("n_vocab", "<i4"), ("n_chunk", "<i4")])
F32 = np.float32


def row_words(n_vocab: int) -> int:
    """uint16 words per scored position: 4 for the two float32 header values, then the vocabulary padded
    to an even count (llama.cpp's nv)."""
    return 2 * ((n_vocab + 1) // 2) + 4


def scored_per_chunk(n_ctx: int) -> int:
    return n_ctx - 1 - n_ctx // 2


def _log_sum_exp(logits: np.ndarray, top: np.ndarray) -> np.ndarray:
    """float32 log(sum_i expf(logit_i - top)) per row, the sum in float64 as the C loop keeps it."""
    return np.log(np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64)).astype(F32)


def encode_log_probs(logits: np.ndarray) -> np.ndarray:
    """Rows of float32 logits [m, n_vocab] -> the base file's uint16 rows [m, nv] (llama.cpp's log_softmax
    with a uint16 output)."""
    logits = np.asarray(logits, dtype=F32)
    m, n_vocab = logits.shape
    top = logits.max(axis=1)
    low = np.maximum(logits.min(axis=1), top - F32(16))
    min_log_prob = (low - top) - _log_sum_exp(logits, top)
    scale = (top - low) / F32(65535)
    out = np.zeros((m, row_words(n_vocab)), np.uint16)
    out[:, :4] = np.stack([scale, min_log_prob], axis=1).astype(F32).view(np.uint16)
    with np.errstate(divide="ignore"):
        inv = np.where(scale != 0, F32(1) / scale, F32(0)).astype(F32)
    steps = np.rint(inv[:, None] * (logits - low[:, None]))  # nearest_int: round half to even
    out[:, 4:4 + n_vocab] = np.where(logits > low[:, None], steps, 0).astype(np.uint16)
    return out


def decode_log_probs(rows: np.ndarray, n_vocab: int) -> np.ndarray:
    """The base file's uint16 rows -> float32 log-probabilities [m, n_vocab] (scale * q + min_log_prob)."""
    head = np.ascontiguousarray(rows[:, :4]).view(F32)
    return head[:, :1] * rows[:, 4:4 + n_vocab].astype(F32) + head[:, 1:2]


class BaseWriter:
    """Writes a base file through files.atomic.AtomicFile: renamed into place on close (nothing
    half-written is left behind on an error)."""

    def __init__(self, path: str | os.PathLike, n_ctx: int, n_vocab: int, n_chunk: int, tokens: np.ndarray):
        from ggufq.files.atomic import AtomicFile
        self.path = Path(path)
        self.f = AtomicFile(self.path)
        header = np.array([(MAGIC, n_ctx, n_vocab, n_chunk)], dtype=HEADER)
        self.f.write(header.tobytes())
        self.f.write(np.asarray(tokens[:n_chunk * n_ctx], dtype="<i4").tobytes())

    def add(self, logits: np.ndarray) -> None:
        self.f.write(encode_log_probs(logits).tobytes())

    def close(self, ok: bool = True) -> None:
        if ok:
            self.f.commit()
        else:
            self.f.abort()


class BaseFile:
    """A base file, checked against its own header before anything is read, mapped rather than loaded."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        try:
            size = os.path.getsize(self.path)
        except OSError as e:
            raise GGUFQError(f"{self.path}: cannot open: {e.strerror}") from None
        if size < HEADER.itemsize:
            raise GGUFQError(f"{self.path} does not look like a file containing log-probabilities")
        head = np.fromfile(self.path, dtype=HEADER, count=1)[0]
        if bytes(head["magic"]) != MAGIC:
            raise GGUFQError(f"{self.path} does not look like a file containing log-probabilities")
        self.n_ctx, self.n_vocab, self.n_chunk = int(head["n_ctx"]), int(head["n_vocab"]), int(head["n_chunk"])
        if self.n_ctx < 4 or self.n_vocab < 1 or self.n_chunk < 1:
            raise GGUFQError(f"{self.path}: implausible header (n_ctx {self.n_ctx}, n_vocab {self.n_vocab}, "
                             f"{self.n_chunk} chunks)")
        self.nv = row_words(self.n_vocab)
        self.rows = scored_per_chunk(self.n_ctx)
        tokens_at = HEADER.itemsize
        probs_at = tokens_at + 4 * self.n_ctx * self.n_chunk
        need = probs_at + 2 * self.nv * self.rows * self.n_chunk
        if size < need:
            raise GGUFQError(f"{self.path}: truncated: {self.n_chunk} chunks of {self.n_ctx} tokens over "
                             f"{self.n_vocab} need {need} bytes, the file has {size}")
        self.tokens = np.fromfile(self.path, dtype="<i4", count=self.n_ctx * self.n_chunk, offset=tokens_at)
        if self.tokens.min() < 0 or self.tokens.max() >= self.n_vocab:
            raise GGUFQError(f"{self.path}: token ids out of the vocabulary's range")
        self._probs = np.memmap(self.path, dtype="<u2", mode="r", offset=probs_at,
                                shape=(self.n_chunk, self.rows, self.nv))

    def chunk(self, i: int) -> np.ndarray:
        """uint16 [scored positions, nv] of chunk i."""
        return self._probs[i]


def _mean_and_uncertainty(total: float, total2: float, count: int) -> tuple[float, float]:
    if count < 1:
        return 0.0, 0.0
    f = total / count
    df = total2 / count - f * f
    return f, (math.sqrt(df / (count - 1)) if df > 0 and count > 10 else 0.0)


def _covariance(a: float, b: float, ab: float, count: int) -> float:
    if count < 10:
        return 0.0
    return (ab / count - (a / count) * (b / count)) / (count - 1)


def _sqrt(v: float) -> float:
    """C's sqrt: NaN below zero (rounding can leave a variance of a difference just under it)."""
    return math.sqrt(v) if v >= 0 else float("nan")


def _percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama.cpp's linear interpolation between the two nearest ranks (in float32, as it computes)."""
    v = sorted_values
    if fraction <= 0:
        return float(v[0])
    if fraction >= 1:
        return float(v[-1])
    p = F32(fraction) * F32(len(v) - 1)
    ip = int(p)
    p = F32(p - F32(ip))
    return float((F32(1) - p) * v[ip] + p * v[min(ip + 1, len(v) - 1)])


def _median(sorted_values: np.ndarray) -> float:
    v, n = sorted_values, len(sorted_values)
    return float(F32(0.5) * (v[n // 2] + v[n // 2 - 1])) if n % 2 == 0 else float(v[n // 2])


@dataclass
class KLDivergence:
    """The running sums of llama.cpp's kl_divergence_result, and every token's KLD and Δp for the
    percentiles."""
    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_base: float = 0.0
    sum_nll_base2: float = 0.0
    sum_nll_nll_base: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_p_diff: float = 0.0
    sum_p_diff2: float = 0.0
    sum_p_diff4: float = 0.0
    max_p_diff: float = 0.0
    n_same_top: int = 0
    count: int = 0
    kld_values: list = field(default_factory=list)
    p_diff_values: list = field(default_factory=list)

    def add(self, logits: np.ndarray, base_rows: np.ndarray, next_tokens: np.ndarray) -> None:
        """Score the model's float32 logits [m, n_vocab] against the base's uint16 rows [m, nv] for the
        m positions whose next tokens are `next_tokens`."""
        logits = np.asarray(logits, dtype=F32)
        m, n_vocab = logits.shape
        r = np.arange(m)
        tok = np.asarray(next_tokens, dtype=np.int64)
        imax = logits.argmax(axis=1)
        top = logits[r, imax]
        lse = _log_sum_exp(logits, top)
        nll = (top + lse) - logits[r, tok]
        log_p_base = decode_log_probs(base_rows, n_vocab)
        nll_base = -log_p_base[r, tok]
        top_lse = top + lse
        terms = np.exp(log_p_base) * ((log_p_base - logits) + top_lse[:, None])
        kld = np.where(log_p_base > F32(-16), terms, F32(0)).sum(axis=1, dtype=np.float64)
        p_diff = np.exp(-nll) - np.exp(-nll_base)

        nll64, nll_base64, p_diff64 = nll.astype(np.float64), nll_base.astype(np.float64), p_diff.astype(np.float64)
        self.sum_nll += float(nll64.sum())
        self.sum_nll2 += float((nll64 * nll64).sum())
        self.sum_nll_base += float(nll_base64.sum())
        self.sum_nll_base2 += float((nll_base64 * nll_base64).sum())
        self.sum_nll_nll_base += float((nll64 * nll_base64).sum())
        self.sum_kld += float(kld.sum())
        self.sum_kld2 += float((kld * kld).sum())
        self.sum_p_diff += float(p_diff64.sum())
        self.sum_p_diff2 += float((p_diff64 ** 2).sum())
        self.sum_p_diff4 += float((p_diff64 ** 4).sum())
        self.max_p_diff = max(self.max_p_diff, float(np.abs(p_diff).max()))
        self.n_same_top += int((imax == log_p_base.argmax(axis=1)).sum())
        self.count += m
        self.kld_values.append(kld.astype(F32))
        self.p_diff_values.append(p_diff.astype(F32))

    # ---- the figures llama-perplexity prints ----------------------------------------------------------
    def _log_ppls(self) -> tuple[float, float, float, float, float]:
        """Mean NLL and its uncertainty for the model and for the base, and their covariance."""
        q, dq = _mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)
        b, db = _mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)
        return q, dq, b, db, _covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, self.count)

    def ppl(self) -> tuple[float, float]:
        q, dq = self._log_ppls()[:2]
        return math.exp(q), math.exp(q) * dq

    def ppl_base(self) -> tuple[float, float]:
        b, db = self._log_ppls()[2:4]
        return math.exp(b), math.exp(b) * db

    def log_ppl_ratio(self) -> tuple[float, float]:
        q, dq, b, db, cov = self._log_ppls()
        return q - b, _sqrt(dq * dq + db * db - 2.0 * cov)

    def kld(self) -> tuple[float, float]:
        return _mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count)

    def p_diff_rms(self) -> tuple[float, float]:
        mse, dmse = _mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, self.count)
        rms = math.sqrt(mse)
        return rms, (0.5 / rms * dmse if rms > 0 else 0.0)

    def same_top(self) -> tuple[float, float]:
        p = self.n_same_top / self.count
        return p, math.sqrt(p * (1 - p) / (self.count - 1)) if self.count > 1 else 0.0

    def chunk_line(self, i: int) -> str:
        """The line llama-perplexity prints after chunk i (1-based)."""
        ppl, dppl = self.ppl()
        ratio, dratio = self.log_ppl_ratio()
        kld, dkld = self.kld()
        rms, drms = self.p_diff_rms()
        top, dtop = self.same_top()
        return (f"{i:4d}    {ppl:9.4f} ± {dppl:9.4f}    {ratio:10.5f} ± {dratio:10.5f}    {kld:10.5f} ± {dkld:10.5f}"
                f"    {100 * rms:6.3f} ± {100 * drms:6.3f} %    {100 * top:6.3f} ± {100 * dtop:6.3f} %")

    def report(self) -> list[str]:
        """llama-perplexity's closing statistics, line for line."""
        kld_v = np.sort(np.concatenate(self.kld_values))
        dp_v = np.sort(np.concatenate(self.p_diff_values))
        ppl, dppl = self.ppl()
        ppl_b, dppl_b = self.ppl_base()
        _, dq, _, db, cov = self._log_ppls()
        cor = cov / (dq * db) if dq * db > 0 else float("nan")
        ratio, dratio = self.log_ppl_ratio()
        ppl_cov = ppl * ppl_b * cov
        kld, dkld = self.kld()
        mean_dp, dmean_dp = _mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, self.count)
        rms, drms = self.p_diff_rms()
        top, dtop = self.same_top()
        lines = [
            "====== Perplexity statistics ======",
            f"Mean PPL(Q)                   : {ppl:10.6f} ± {dppl:10.6f}",
            f"Mean PPL(base)                : {ppl_b:10.6f} ± {dppl_b:10.6f}",
            f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * cor:6.2f}%",
            f"Mean ln(PPL(Q)/PPL(base))     : {ratio:10.6f} ± {dratio:10.6f}",
            f"Mean PPL(Q)/PPL(base)         : {math.exp(ratio):10.6f} ± {math.exp(ratio) * dratio:10.6f}",
            f"Mean PPL(Q)-PPL(base)         : {ppl - ppl_b:10.6f} ± "
            f"{_sqrt(dppl * dppl + dppl_b * dppl_b - 2 * ppl_cov):10.6f}",
            "",
            "====== KL divergence statistics ======",
            f"Mean    KLD: {kld:10.6f} ± {dkld:10.6f}",
            f"Maximum KLD: {float(kld_v[-1]):10.6f}",
        ]
        for label, frac in (("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9)):
            lines.append(f"{label}   KLD: {_percentile(kld_v, frac):10.6f}")
        lines.append(f"Median  KLD: {_median(kld_v):10.6f}")
        for label, frac in (("10.0%", 0.1), (" 5.0%", 0.05), (" 1.0%", 0.01), (" 0.1%", 0.001)):
            lines.append(f"{label}   KLD: {_percentile(kld_v, frac):10.6f}")
        lines += [f"Minimum KLD: {float(kld_v[0]):10.6f}", "",
                  "====== Token probability statistics ======",
                  f"Mean    Δp: {100 * mean_dp:6.3f} ± {100 * dmean_dp:5.3f} %",
                  f"Maximum Δp: {100 * float(dp_v[-1]):6.3f}%"]
        for label, frac in (("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9), ("75.0%", 0.75)):
            lines.append(f"{label}   Δp: {100 * _percentile(dp_v, frac):6.3f}%")
        lines.append(f"Median  Δp: {100 * _median(dp_v):6.3f}%")
        for label, frac in (("25.0%", 0.25), ("10.0%", 0.1), (" 5.0%", 0.05), (" 1.0%", 0.01), (" 0.1%", 0.001)):
            lines.append(f"{label}   Δp: {100 * _percentile(dp_v, frac):6.3f}%")
        lines += [f"Minimum Δp: {100 * float(dp_v[0]):6.3f}%",
                  f"RMS Δp    : {100 * rms:6.3f} ± {100 * drms:5.3f} %",
                  f"Same top p: {100 * top:6.3f} ± {100 * dtop:5.3f} %"]
        return lines
