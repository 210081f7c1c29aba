"""`ggufq compare --base BASE.gguf [-f TEXT]... FILE...`: quantized files side by side against their
full-precision base, per workload (ggufq/evaluate/compare.py): PREFIX.md, PREFIX.json, PREFIX.png."""
from __future__ import annotations

import sys
from pathlib import Path

from ggufq.commands._args import count_or_all, positive_int


def configure(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="GGUF files to compare (the base's vocabulary)")
    p.add_argument("--base", required=True, help="the full-precision model (F16/BF16/F32 GGUF)")
    p.add_argument("-f", "--file", action="append", default=[], metavar="TEXT",
                   help="a workload: a UTF-8 text, named by its file's stem (repeatable; default: bundled prose)")
    p.add_argument("-c", "--ctx-size", type=positive_int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=count_or_all, default=-1, help="at most this many chunks per workload "
                                                                     "(default all)")
    p.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: all free cores)")
    p.add_argument("--no-speed", action="store_true", help="skip the short speed bench")
    p.add_argument("-o", "--output", default="compare", metavar="PREFIX",
                   help="writes PREFIX.md, PREFIX.json, PREFIX.png (default: compare); the base's "
                        "log-probabilities are cached in PREFIX's folder, in .ggufq-compare-cache/")
    p.add_argument("--arithmetic", choices=("fast", "llama.cpp-avx2"), default=None,
                   help="the runtime's arithmetic, as for perplexity (default: $GGUFQ_ARITHMETIC or fast)")


def run(args) -> int:
    from ggufq.errors import GGUFQError
    from ggufq.evaluate.compare import Settings, compare, load_workloads, markdown, report_paths, write_report
    from ggufq.files.gguf_writer import check_output_file

    if args.ctx_size < 4:
        raise GGUFQError(f"-c {args.ctx_size}: the context must be at least 4 tokens")
    for f in [args.base, *args.files]:
        if not Path(f).is_file():
            raise GGUFQError(f"{f}: no such file")
    for p in report_paths(args.output):
        check_output_file(p, args.base, *args.files)
    workloads = load_workloads(args.file)
    settings = Settings(args.ctx_size, args.chunks, args.threads, not args.no_speed, args.arithmetic)
    cache = Path(args.output).parent / ".ggufq-compare-cache"
    report = compare(args.base, args.files, workloads, settings, cache)
    paths = write_report(report, args.output)
    sys.stdout.write(markdown(report))
    print(f"compare: the report is in {', '.join(map(str, paths))}", file=sys.stderr)
    return 0
