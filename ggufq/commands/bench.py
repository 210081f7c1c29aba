"""`ggufq bench`: prompt-processing and generation speed, measured as llama-bench does.

pp<P>: one batch of P random tokens into an empty KV cache; tg<N>: N tokens evaluated one at a time
from an empty cache. Each test runs once to warm up, then -r times; t/s is tokens over seconds, shown
as mean ± standard deviation of the repetitions. --compare-llama-cpp DIR runs DIR/llama-bench with the
same settings in the same process's lifetime and prints the ratios.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from ggufq.commands._args import non_negative_int, positive_int
from ggufq.evaluate.bench import bench_model, llama_bench


def configure(p) -> None:
    p.add_argument("-m", "--model", required=True, help="GGUF file")
    p.add_argument("-t", "--threads", type=positive_int, default=None,
                   help="threads (default: the cores other processes leave free, as run and chat do)")
    p.add_argument("-p", "--n-prompt", type=non_negative_int, default=512, help="prompt tokens (default 512; 0 to skip)")
    p.add_argument("-n", "--n-gen", type=non_negative_int, default=128, help="generated tokens (default 128; 0 to skip)")
    p.add_argument("-b", "--batch-size", type=positive_int, default=512, help="tokens per forward pass (default 512)")
    p.add_argument("-r", "--repetitions", type=positive_int, default=3, help="repetitions (default 3)")
    p.add_argument("--kv-type", choices=("f16", "f32"), default="f16")
    p.add_argument("--compare-llama-cpp", metavar="DIR", help="also run DIR/llama-bench and print ratios")


def run(args) -> int:
    from ggufq.runtime.model import Model

    t0 = time.perf_counter()
    n_ctx = max(args.n_prompt + 1, args.n_gen + 1, 16)
    model = Model.load(args.model, n_ctx=n_ctx, n_threads=args.threads, kv_type=args.kv_type,
                       n_batch=max(1, min(args.batch_size, n_ctx)))
    from ggufq.runtime.jit import announce, runtime_modules
    announce("runtime", runtime_modules())  # each test's first run (not counted) compiles them
    size = Path(args.model).stat().st_size
    name = Path(args.model).name
    print(f"| model | size | threads | test | t/s |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    ours = {}
    for test, runs in bench_model(model, args.n_prompt, args.n_gen, args.repetitions).items():
        mean = statistics.fmean(runs)
        sd = statistics.stdev(runs) if len(runs) > 1 else 0.0
        ours[test] = mean
        print(f"| {name} | {size / 2**20:.2f} MiB | {args.threads or 'auto'} | {test} | {mean:.2f} ± {sd:.2f} |",
              flush=True)
    per_token = decode_weight_bytes(model)
    for test, v in ours.items():
        if test.startswith("tg"):  # decoding reads every matrix once a token: the figure to hold against
            print(f"{test}: {per_token / 1e6:.1f} MB of weights a token x {v:.2f} t/s = "   # the read bandwidth
                  f"{per_token * v / 1e9:.2f} GB/s of weights read")
    if args.compare_llama_cpp:
        ref = llama_bench(args.compare_llama_cpp, args.model, args.threads or os.cpu_count() or 1, args.n_prompt, args.n_gen,
                          args.repetitions)
        for test, v in ours.items():
            if test in ref:
                print(f"{test}: ggufq {v:.2f} t/s, llama.cpp {ref[test]:.2f} t/s, ratio {v / ref[test]:.2f}")
    print(f"bench: {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def decode_weight_bytes(model) -> int:
    """The bytes of weights one decoded token reads: every layer's matrices and the output matrix (the
    token's embedding row is negligible)."""
    w = model.weights
    return sum(m.w.nbytes for L in w.layers for m in L.matrices()) + w.output.w.nbytes
