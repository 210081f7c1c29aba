"""Perplexity and KL divergence as llama-perplexity computes them.

The whole text is tokenized once (with BOS when the model adds one), cut into chunks of n_ctx tokens;
each chunk is a fresh sequence whose first token is replaced by BOS when the model adds BOS, and only
the second half is scored (the model always has n_ctx/2 tokens of context): -log p(token[j+1]) for
j = n_ctx/2 .. n_ctx-2. The uncertainty is llama.cpp's (standard error of the mean NLL times PPL).
KL divergence replays the chunks of a base file of log-probabilities (ggufq/evaluate/kld.py).
"""
from __future__ import annotations

import math

from ggufq.errors import GGUFQError


def count_chunks(n_tokens: int, n_ctx: int, n_chunks: int = -1) -> int:
    """How many chunks of n_ctx tokens llama-perplexity scores (all, or at most n_chunks)."""
    if n_tokens < 2 * n_ctx:
        raise GGUFQError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of "
                         f"{n_ctx}; the text tokenizes to only {n_tokens} tokens")
    return n_tokens // n_ctx if n_chunks < 0 else min(n_chunks, n_tokens // n_ctx)


def chunk_tokens(tokens, i: int, n_ctx: int, add_bos: bool, bos_id: int | None) -> list[int]:
    """Chunk i as the model sees it: its first token replaced by BOS when the model adds one."""
    chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
    if add_bos:
        chunk[0] = bos_id
    return chunk


def perplexity(model, tokens: list[int], n_ctx: int, n_chunks: int = -1, add_bos: bool = False,
               bos_id: int | None = None, progress=None, on_logits=None) -> tuple[float, float, list[float]]:
    """(ppl, uncertainty, running estimates) of `tokens`, chunked as llama-perplexity does; `on_logits`
    sees each chunk's scored logits rows in order (the KL-divergence base writer)."""
    n_chunk = count_chunks(len(tokens), n_ctx, n_chunks)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    for i in range(n_chunk):
        v = model.nll(chunk_tokens(tokens, i, n_ctx, add_bos, bos_id), first, on_logits=on_logits)
        nll += float(v.sum())
        nll2 += float((v * v).sum())
        count += len(v)
        running.append(math.exp(nll / count))
        if progress:
            progress(i, running[-1])
    mean = nll / count
    var = nll2 / count - mean * mean
    ppl = math.exp(mean)
    err = math.sqrt(var / (count - 1)) * ppl if var > 0 else float("nan")
    return ppl, err, running


def kl_divergence(model, base, n_chunks: int = -1, add_bos: bool = False, bos_id: int | None = None,
                  on_chunk=None):
    """KL-divergence statistics (ggufq.kld.KLDivergence) of `model` against the base file's chunks."""
    from ggufq.evaluate.kld import KLDivergence

    if model.n_vocab != base.n_vocab:
        raise GGUFQError(f"{base.path}: inconsistent vocabulary ({base.n_vocab} in the base, {model.n_vocab} "
                         f"in the model)")
    n_ctx, first = base.n_ctx, base.n_ctx // 2
    n_chunk = base.n_chunk if n_chunks < 0 else min(n_chunks, base.n_chunk)
    kld = KLDivergence()
    for i in range(n_chunk):
        rows = base.chunk(i)
        for i0, logits in model.scored_logits(chunk_tokens(base.tokens, i, n_ctx, add_bos, bos_id), first):
            m = len(logits)
            start = i * n_ctx + i0 + 1
            kld.add(logits, rows[i0 - first:i0 - first + m], base.tokens[start:start + m])
        if on_chunk:
            on_chunk(i, kld)
    return kld
