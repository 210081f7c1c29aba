"""`ggufq perplexity`: llama-perplexity's method on a text file.

The whole text is tokenized once (with BOS when the model adds one), cut into chunks of n_ctx tokens;
each chunk is a fresh sequence whose first token is replaced by BOS when the model adds BOS, and only
the second half is scored (the model always has n_ctx/2 tokens of context): -log p(token[j+1]) for
j = n_ctx/2 .. n_ctx-2. Prints the running estimate `[i]x.xxxx,` after each chunk and
`Final estimate: PPL = X +/- Y` with llama.cpp's uncertainty (standard error of the mean NLL times PPL).
"""
from __future__ import annotations

import math
import sys
import time

from ..errors import GGUFQError


def configure(p) -> None:
    p.add_argument("-m", "--model", required=True, help="GGUF file")
    p.add_argument("-f", "--file", required=True, help="plain text file")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("-b", "--batch-size", type=int, default=None,
                   help="tokens per forward pass (default: the chunk)")
    p.add_argument("--chunks", type=int, default=-1, help="score at most this many chunks (default all)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--kv-type", choices=("f16", "f32"), default="f16", help="KV cache type (default f16)")


def perplexity(model, tokens: list[int], n_ctx: int, n_chunks: int = -1, add_bos: bool = False,
               bos_id: int | None = None, progress=None) -> tuple[float, float, list[float]]:
    """(ppl, uncertainty, running estimates) of `tokens`, chunked as llama-perplexity does."""
    if len(tokens) < 2 * n_ctx:
        raise GGUFQError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of "
                         f"{n_ctx}; the text tokenizes to only {len(tokens)} tokens")
    n_chunk_max = len(tokens) // n_ctx
    n_chunk = n_chunk_max if n_chunks < 0 else min(n_chunks, n_chunk_max)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    for i in range(n_chunk):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if add_bos:
            chunk[0] = bos_id
        v = model.nll(chunk, first)
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


def run(args) -> int:
    from ..model import Model

    if args.ctx_size < 2:
        raise GGUFQError(f"-c {args.ctx_size}: the context must be at least 2 tokens")
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise GGUFQError(f"{args.file}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise GGUFQError(f"{args.file}: not UTF-8 text ({e.reason} at byte {e.start})") from None

    t0 = time.perf_counter()
    n_batch = min(args.batch_size or args.ctx_size, args.ctx_size)
    model = Model.load(args.model, n_ctx=args.ctx_size, n_threads=args.threads, kv_type=args.kv_type,
                       n_batch=n_batch)
    tok = model.tokenizer
    tokens = tok.encode(text, add_special=True, parse_special=False)
    print(f"perplexity: {len(tokens)} tokens, n_ctx={args.ctx_size}, batch={n_batch}, "
          f"add_bos={bool(tok.add_bos)}", file=sys.stderr)

    t_start = time.perf_counter()

    def progress(i, ppl):
        if i == 0:
            print(f"perplexity: {time.perf_counter() - t_start:.2f} seconds per pass", file=sys.stderr)
        print(f"[{i + 1}]{ppl:.4f},", end="", flush=True)

    ppl, err, running = perplexity(model, tokens, args.ctx_size, args.chunks, bool(tok.add_bos), tok.bos_id,
                                   progress)
    print()
    print(f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}")
    print(f"perplexity: {args.model}: {len(running)} chunks of {args.ctx_size} in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
