"""`ggufq perplexity`: llama-perplexity's method on a text file.

The whole text is tokenized once (with BOS when the model adds one), cut into chunks of n_ctx tokens;
each chunk is a fresh sequence whose first token is replaced by BOS when the model adds BOS, and only
the second half is scored (the model always has n_ctx/2 tokens of context): -log p(token[j+1]) for
j = n_ctx/2 .. n_ctx-2. Prints the running estimate `[i]x.xxxx,` after each chunk and
`Final estimate: PPL = X +/- Y` with llama.cpp's uncertainty (standard error of the mean NLL times PPL).

KL divergence, as llama-perplexity: `--kl-divergence-base BASE` on the full-precision model saves its
log-probabilities; `--kl-divergence-base BASE --kl-divergence` on a quantized one replays the same chunks
(the tokens are in the file, -f is not needed) and prints, per chunk and then in closing statistics, its
perplexity against the base's, KL(base || model), Δp and how often both pick the same top token
(ggufq/kld.py; the file is llama.cpp's, so a base made by either tool serves the other).
"""
from __future__ import annotations

import math
import sys
import time

from ..errors import GGUFQError
from ._args import count_or_all, positive_int, read_text


def configure(p) -> None:
    p.add_argument("-m", "--model", required=True, help="GGUF file")
    p.add_argument("-f", "--file", help="plain text file (not with --kl-divergence: the base file has the tokens)")
    p.add_argument("-c", "--ctx-size", type=positive_int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("-b", "--batch-size", type=positive_int, default=None,
                   help="tokens per forward pass (default: the chunk)")
    p.add_argument("--chunks", type=count_or_all, default=-1, help="score at most this many chunks (default all)")
    p.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: all cores)")
    p.add_argument("--kv-type", choices=("f16", "f32"), default="f16", help="KV cache type (default f16)")
    p.add_argument("--arithmetic", choices=("fast", "llama.cpp-avx2"), default=None,
                   help="fast (default), or llama.cpp's AVX2 numbers on any host: sub-batches of 63 tokens, "
                        "slower (default: $GGUFQ_ARITHMETIC or fast)")
    p.add_argument("--kl-divergence-base", metavar="FILE",
                   help="save this run's log-probabilities to FILE (the base); with --kl-divergence, read them")
    p.add_argument("--kl-divergence", action="store_true",
                   help="KL divergence and token statistics of this model against --kl-divergence-base")


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
    from ..kld import KLDivergence

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


KLD_HEADER = ("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
              "Δp RMS            Same top p")


def run_kl_divergence(args) -> int:
    from ..kld import BaseFile
    from ..model import Model

    if not args.kl_divergence_base:
        raise GGUFQError("--kl-divergence needs --kl-divergence-base FILE, the base model's log-probabilities")
    t0 = time.perf_counter()
    base = BaseFile(args.kl_divergence_base)
    n_batch = min(args.batch_size or base.n_ctx, base.n_ctx)
    model = Model.load(args.model, n_ctx=base.n_ctx, n_threads=args.threads, kv_type=args.kv_type,
                       n_batch=n_batch, arithmetic=args.arithmetic)
    tok = model.tokenizer

    def on_chunk(i, kld):
        if i == 0:
            print(f"kl-divergence: {base.n_chunk} chunks of {base.n_ctx} tokens from {base.path}, "
                  f"add_bos={bool(tok.add_bos)}", file=sys.stderr)
            print(KLD_HEADER)
        print(kld.chunk_line(i + 1), flush=True)

    kld = kl_divergence(model, base, args.chunks, bool(tok.add_bos), tok.bos_id, on_chunk)
    print()
    if kld.count >= 100:  # llama.cpp does no statistics on fewer values
        print("\n".join(kld.report()))
    print(f"kl-divergence: {args.model}: {kld.count} tokens in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def run(args) -> int:
    from ..model import Model

    if args.ctx_size < 2:
        raise GGUFQError(f"-c {args.ctx_size}: the context must be at least 2 tokens")
    if args.kl_divergence:
        return run_kl_divergence(args)
    if not args.file:
        raise GGUFQError("-f FILE is needed: the text to score")
    text = read_text(args.file)

    t0 = time.perf_counter()
    n_batch = min(args.batch_size or args.ctx_size, args.ctx_size)
    model = Model.load(args.model, n_ctx=args.ctx_size, n_threads=args.threads, kv_type=args.kv_type,
                       n_batch=n_batch, arithmetic=args.arithmetic)
    tok = model.tokenizer
    tokens = tok.encode(text, add_special=True, parse_special=False)
    print(f"perplexity: {len(tokens)} tokens, n_ctx={args.ctx_size}, batch={n_batch}, "
          f"add_bos={bool(tok.add_bos)}", file=sys.stderr)

    t_start = time.perf_counter()

    def progress(i, ppl):
        if i == 0:
            print(f"perplexity: {time.perf_counter() - t_start:.2f} seconds per pass", file=sys.stderr)
        print(f"[{i + 1}]{ppl:.4f},", end="", flush=True)

    writer = None
    if args.kl_divergence_base:
        from ..kld import BaseWriter
        n_chunk = count_chunks(len(tokens), args.ctx_size, args.chunks)
        writer = BaseWriter(args.kl_divergence_base, args.ctx_size, model.n_vocab, n_chunk, tokens)
        print(f"perplexity: saving all log-probabilities to {args.kl_divergence_base}", file=sys.stderr)
    try:
        ppl, err, running = perplexity(model, tokens, args.ctx_size, args.chunks, bool(tok.add_bos), tok.bos_id,
                                       progress, writer.add if writer else None)
    except BaseException:
        if writer:
            writer.close(ok=False)
        raise
    if writer:
        writer.close()
    print()
    print(f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}")
    print(f"perplexity: {args.model}: {len(running)} chunks of {args.ctx_size} in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
