"""Choosing the next token from the logits, the way llama.cpp's default sampler chain does.

    s = Sampler(temp=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=42)
    tok = s.sample(logits)      # also remembers tok for the repetition penalties

The chain, in llama.cpp's default order: penalties (repeat, frequency, presence over the last
`repeat_last_n` tokens) -> top-k -> top-p -> min-p -> temperature -> draw. Temperature <= 0 is greedy:
the argmax after the penalties (the first one on ties). Defaults are llama.cpp's: temp 0.8, top-k 40,
top-p 0.95, min-p 0.05, repeat penalty 1.0 (off) over the last 64 tokens. The Sampler owns its random
generator (numpy PCG64, seeded by `seed`, random when None), so two samplers never share state; the
random draws are not llama.cpp's (std::mt19937), only the distribution they are drawn from is.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from ggufq.errors import GGUFQError


@dataclass
class SamplingParams:
    temp: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    def check(self) -> "SamplingParams":
        if not (0.0 <= self.top_p <= 1.0):
            raise GGUFQError(f"top-p must be in [0, 1], got {self.top_p}")
        if not (0.0 <= self.min_p <= 1.0):
            raise GGUFQError(f"min-p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise GGUFQError(f"repeat penalty must be > 0, got {self.repeat_penalty}")
        if self.repeat_last_n < -1:
            raise GGUFQError(f"repeat-last-n must be >= -1, got {self.repeat_last_n}")
        return self


class Sampler:
    """Penalties, top-k, top-p, min-p, temperature and a draw, with its own RNG and token history."""

    def __init__(self, temp: float = 0.8, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repeat_penalty: float = 1.0, repeat_last_n: int = 64, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, seed: int | None = None, n_ctx: int | None = None):
        self.p = SamplingParams(temp, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
                                frequency_penalty, seed).check()
        n = repeat_last_n if repeat_last_n >= 0 else (n_ctx or 4096)   # -1 = the context size, as llama.cpp
        self._history: deque[int] = deque(maxlen=max(n, 0))
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_params(cls, params: SamplingParams, n_ctx: int | None = None) -> "Sampler":
        p = params
        return cls(p.temp, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.repeat_last_n, p.presence_penalty,
                   p.frequency_penalty, p.seed, n_ctx)

    # ---------------------------------------------------------------- history
    def accept(self, token: int) -> None:
        """Remember a token (the prompt's, or a sampled one) for the repetition penalties."""
        if self._history.maxlen:
            self._history.append(int(token))

    def reset(self) -> None:
        self._history.clear()

    # ---------------------------------------------------------------- the chain
    def apply_penalties(self, logits: np.ndarray) -> np.ndarray:
        p = self.p
        if not self._history or (p.repeat_penalty == 1.0 and p.frequency_penalty == 0.0 and p.presence_penalty == 0.0):
            return logits
        logits = np.array(logits, dtype=np.float32, copy=True)
        counts = Counter(self._history)
        ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        cnt = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        ids_ok = ids < logits.shape[0]
        ids, cnt = ids[ids_ok], cnt[ids_ok]
        v = logits[ids]
        if p.repeat_penalty != 1.0:
            v = np.where(v <= 0, v * np.float32(p.repeat_penalty), v / np.float32(p.repeat_penalty))
        v = v - (cnt * np.float32(p.frequency_penalty) + np.float32(p.presence_penalty))
        logits[ids] = v.astype(np.float32)
        return logits

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids kept by top-k, top-p and min-p, and their logits (before temperature), best first."""
        p = self.p
        logits = np.asarray(logits, dtype=np.float32)
        n = logits.shape[0]
        k = p.top_k if 0 < p.top_k < n else n
        if k < n:
            ids = np.argpartition(-logits, k - 1)[:k]
        else:
            ids = np.arange(n)
        order = np.argsort(-logits[ids], kind="stable")
        ids = ids[order]
        vals = logits[ids].astype(np.float64)
        if p.top_p < 1.0 and len(ids) > 1:
            probs = np.exp(vals - vals[0])
            probs /= probs.sum()
            cum = np.cumsum(probs)
            keep = int(np.searchsorted(cum, p.top_p) + 1)  # smallest prefix with mass >= top_p
            ids, vals = ids[:max(1, keep)], vals[:max(1, keep)]
        if p.min_p > 0.0 and len(ids) > 1:
            keep = vals >= vals[0] + np.log(p.min_p)
            ids, vals = ids[keep], vals[keep]
        return ids, vals

    def sample(self, logits: np.ndarray) -> int:
        """The next token; it is also added to the history."""
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 1 or logits.shape[0] == 0:
            raise GGUFQError("sample() wants a 1-D array of logits")
        logits = self.apply_penalties(logits)
        if self.p.temp <= 0.0:
            tok = int(np.argmax(logits))
        else:
            ids, vals = self.candidates(logits)
            z = vals / self.p.temp
            probs = np.exp(z - z.max())
            probs /= probs.sum()
            tok = int(ids[self.rng.choice(len(ids), p=probs)]) if len(ids) > 1 else int(ids[0])
        self.accept(tok)
        return tok
