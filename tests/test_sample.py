"""The sampler: greedy, each filter of llama.cpp's chain, penalties, seeds, and the distribution it draws from."""
from __future__ import annotations

import numpy as np
import pytest

from ggufq.errors import GGUFQError
from ggufq.text.sample import Sampler, SamplingParams


def test_defaults_are_llama_cpp_defaults():
    p = SamplingParams()
    assert (p.temp, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.repeat_last_n) == (0.8, 40, 0.95, 0.05, 1.0, 64)
    assert (p.presence_penalty, p.frequency_penalty) == (0.0, 0.0)


def test_greedy_is_argmax_first_on_ties():
    s = Sampler(temp=0)
    logits = np.array([0.1, 3.0, -1.0, 3.0], np.float32)
    assert [s.sample(logits) for _ in range(5)] == [1] * 5


def test_top_k_top_p_min_p_candidates():
    logits = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.04, 0.01], np.float32))
    ids, _ = Sampler(top_k=3, top_p=1.0, min_p=0.0).candidates(logits)
    assert ids.tolist() == [0, 1, 2]
    ids, _ = Sampler(top_k=0, top_p=0.8, min_p=0.0).candidates(logits)  # 0.5+0.2+0.15 >= 0.8
    assert ids.tolist() == [0, 1, 2]
    ids, _ = Sampler(top_k=0, top_p=0.7, min_p=0.0).candidates(logits)  # exactly reaching p keeps that token
    assert ids.tolist() == [0, 1]
    ids, _ = Sampler(top_k=0, top_p=1.0, min_p=0.25).candidates(logits)  # p >= 0.25 * 0.5
    assert ids.tolist() == [0, 1, 2]
    ids, _ = Sampler(top_k=0, top_p=1.0, min_p=0.0).candidates(logits)
    assert ids.tolist() == [0, 1, 2, 3, 4, 5]


def test_draws_follow_the_tempered_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.2], np.float32))
    s = Sampler(temp=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1)
    n = 20000
    counts = np.bincount([s.sample(logits) for _ in range(n)], minlength=3) / n
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.015)
    s = Sampler(temp=0.5, top_k=0, top_p=1.0, min_p=0.0, seed=2)  # p^(1/T), renormalised
    want = np.array([0.25, 0.09, 0.04]) / 0.38
    counts = np.bincount([s.sample(logits) for _ in range(n)], minlength=3) / n
    assert np.allclose(counts, want, atol=0.015)


def test_seed_makes_runs_repeatable_and_samplers_independent():
    logits = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    s1, s2, s3 = Sampler(seed=7), Sampler(seed=7), Sampler(seed=8)
    r1 = [s1.sample(logits) for _ in range(50)]
    r2 = [s2.sample(logits) for _ in range(50)]
    r3 = [s3.sample(logits) for _ in range(50)]
    assert r1 == r2 and r1 != r3 and len(set(r1)) > 1


def test_repetition_presence_frequency_penalties():
    logits = np.array([2.0, -2.0, 1.0, 0.5], np.float32)
    s = Sampler(temp=0, repeat_penalty=2.0, repeat_last_n=2)
    for t in (0, 1):
        s.accept(t)
    out = s.apply_penalties(logits)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]  # positive divided, negative multiplied
    s.accept(3)  # the window holds the last 2 tokens only: 1 and 3
    assert s.apply_penalties(logits).tolist() == [2.0, -4.0, 1.0, 0.25]
    s = Sampler(temp=0, frequency_penalty=0.5, presence_penalty=0.25, repeat_last_n=10)
    for t in (2, 2, 3):
        s.accept(t)
    assert s.apply_penalties(logits).tolist() == [2.0, -2.0, 1.0 - 1.0 - 0.25, 0.5 - 0.5 - 0.25]
    # greedy sees the penalised logits
    s = Sampler(temp=0, repeat_penalty=4.0)
    s.accept(0)
    assert s.sample(logits) == 2


def test_bad_parameters_are_user_errors():
    for kw in ({"top_p": 1.5}, {"min_p": -0.1}, {"repeat_penalty": 0.0}, {"repeat_last_n": -2}):
        with pytest.raises(GGUFQError):
            Sampler(**kw)
