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
(ggufq/evaluate/kld.py; the file is llama.cpp's, so a base made by either tool serves the other).
"""
from __future__ import annotations

import sys
import time

from ggufq.errors import GGUFQError
from ggufq.commands._args import count_or_all, positive_int
from ggufq.files.text import read_text
from ggufq.evaluate.perplexity import count_chunks, kl_divergence, perplexity


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


KLD_HEADER = ("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
              "Δp RMS            Same top p")


def run_kl_divergence(args) -> int:
    from ggufq.evaluate.kld import BaseFile
    from ggufq.runtime.model import Model

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
    from ggufq.runtime.model import Model

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
        from ggufq.evaluate.kld import BaseWriter
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
