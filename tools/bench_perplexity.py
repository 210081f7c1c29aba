"""`ggufq perplexity` against llama-perplexity in the same run: scored tokens per second.

    .venv/bin/python tools/bench_perplexity.py [--llama-cpp DIR] [-t 2] [--chunks 8] [-r 3]

The same files, text and timing as tools/bench_imatrix.py (whole processes, median of -r alternating
runs): SmolLM2 and Gemma 3 F16, chunks of 512, of which the second half is scored (255 tokens a chunk).
The ratio is ggufq's scored tokens per second over llama-perplexity's (target >= 1.0: the comparison, the
imatrix and the dynamic recipe all stand on this batch speed).
"""
from __future__ import annotations

from bench_imatrix import main

if __name__ == "__main__":
    main("perplexity", "llama-perplexity", scored=lambda n_ctx: n_ctx - 1 - n_ctx // 2)
