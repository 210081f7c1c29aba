"""`ggufq imatrix`: an importance matrix for quantize --imatrix, as llama-imatrix computes it.

    ggufq imatrix -m MODEL.gguf -f CALIB.txt [-c 512] [--chunks N] [-b N] [-t N] [--process-output]
                  [-o imatrix.gguf] [--in-file F ...]

The text is tokenized with BOS when the model adds one and cut into chunks of -c tokens; every chunk
runs through the model with each blk.* matrix product's input activations summed (ggufq/imatrix.py).
Prints the running perplexity of each chunk's second half ([1]x,[2]y,...) as llama-imatrix does.
--in-file adds the numbers of earlier files (GGUF or the legacy .dat): with -f the new chunks are added
to them, without -f the files are merged.
"""
from __future__ import annotations

import sys
import time

from ..errors import GGUFQError
from ._args import count_or_all, positive_int, read_text


def configure(p) -> None:
    p.add_argument("-m", "--model", required=True, help="GGUF file (F16, or any type the runtime reads)")
    p.add_argument("-f", "--file", help="calibration text (UTF-8)")
    p.add_argument("-c", "--ctx-size", type=positive_int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=count_or_all, default=-1, help="at most this many chunks (default all)")
    p.add_argument("-b", "--batch-size", type=positive_int, default=None,
                   help="tokens per forward pass (default: the chunk; llama-imatrix skips passes under 16)")
    p.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: all free cores)")
    p.add_argument("--process-output", action="store_true", help="collect output.weight too")
    p.add_argument("-o", "--output", default="imatrix.gguf", help="output file (default imatrix.gguf)")
    p.add_argument("--in-file", action="append", default=[], metavar="FILE",
                   help="an earlier imatrix (GGUF or legacy .dat) to add in; repeatable")


def run(args) -> int:
    from ..gguf_writer import check_output_file
    from ..imatrix import ImatrixCollector, collect
    from ..imatrix_file import load_imatrix
    from ..model import Model

    if not args.file and not args.in_file:
        raise GGUFQError("-f FILE (a calibration text) or --in-file FILE (imatrices to merge) is needed")
    if args.batch_size is not None and args.batch_size < 16:
        raise GGUFQError(f"-b {args.batch_size}: llama-imatrix collects nothing from passes under 16 tokens")
    check_output_file(args.output, args.model, *args.in_file)
    text = None
    if args.file:
        text = read_text(args.file)

    t0 = time.perf_counter()
    col = ImatrixCollector(args.ctx_size, args.process_output)
    for path in args.in_file:
        col.merge(load_imatrix(path))
        print(f"imatrix: added {path}", file=sys.stderr)
    if text is not None:
        n_batch = min(args.batch_size or args.ctx_size, args.ctx_size)
        import numba
        # a fixed thread count: the same text gives the same file (BLAS splits its work by threads)
        model = Model.load(args.model, n_ctx=args.ctx_size, n_threads=args.threads or numba.config.NUMBA_NUM_THREADS,
                           n_batch=n_batch)
        tok = model.tokenizer
        tokens = tok.encode(text, add_special=True, parse_special=False)
        print(f"imatrix: {len(tokens)} tokens, n_ctx={args.ctx_size}, batch={n_batch}", file=sys.stderr)
        t_start = time.perf_counter()

        def progress(i, ppl):
            if i == 0:
                print(f"imatrix: {time.perf_counter() - t_start:.2f} seconds per pass", file=sys.stderr)
            print(f"[{i + 1}]{ppl:.4f},", end="", flush=True)

        running = collect(model, tokens, args.ctx_size, args.chunks, bool(tok.add_bos), tok.bos_id, col, progress)
        print()
        print(f"Final estimate: PPL = {running[-1]:.4f}")
        col.datasets.append(args.file)
        n_tok = len(running) * args.ctx_size
        secs = time.perf_counter() - t_start
        print(f"imatrix: {len(running)} chunks, {n_tok} tokens in {secs:.1f} s ({n_tok / secs:.1f} tokens/s)",
              file=sys.stderr)
    n = col.write(args.output)
    print(f"{args.output}: {n} entries, {col.chunk_count} chunks of {args.ctx_size}, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
