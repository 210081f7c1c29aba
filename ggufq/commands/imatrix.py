"""`ggufq imatrix`: an importance matrix for quantize --imatrix, as llama-imatrix computes it.

    ggufq imatrix -m MODEL.gguf -f CALIB.txt [-c 512] [--chunks N] [-b N] [-t N] [--process-output]
                  [-o imatrix.gguf] [--in-file F ...]

The text is tokenized with BOS when the model adds one and cut into chunks of -c tokens; every chunk
runs through the model with each blk.* matrix product's input activations summed (ggufq/quantize/imatrix.py).
Prints the running perplexity of each chunk's second half ([1]x,[2]y,...) as llama-imatrix does.
--in-file adds the numbers of earlier files (GGUF or the legacy .dat): with -f the new chunks are added
to them, without -f the files are merged.
"""
from __future__ import annotations

import sys

from ggufq.errors import GGUFQError
from ggufq.commands._args import count_or_all, positive_int
from ggufq.files.text import read_text


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
    from ggufq.files.gguf_writer import check_output_file
    from ggufq.quantize.imatrix import compute_imatrix

    if not args.file and not args.in_file:
        raise GGUFQError("-f FILE (a calibration text) or --in-file FILE (imatrices to merge) is needed")
    if args.batch_size is not None and args.batch_size < 16:
        raise GGUFQError(f"-b {args.batch_size}: llama-imatrix collects nothing from passes under 16 tokens")
    check_output_file(args.output, args.model, *args.in_file)
    text = read_text(args.file) if args.file else None
    r = compute_imatrix(args.model, text, args.output, args.ctx_size, args.chunks, args.batch_size, args.threads,
                        args.process_output, args.in_file, dataset=args.file)
    if r["tokens"]:
        print(f"imatrix: {len(r['running'])} chunks, {r['tokens']} tokens in {r['seconds']:.1f} s "
              f"({r['tokens'] / r['seconds']:.1f} tokens/s)", file=sys.stderr)
    print(f"{args.output}: {r['entries']} entries, {r['chunks']} chunks of {args.ctx_size}, {r['seconds']:.1f} s")
    return 0
