"""Golden figures for `ggufq compare` from llama.cpp's llama-perplexity -> tests/data/compare_golden.json.

    .venv/bin/python tools/make_compare_fixtures.py [--llama-cpp DIR]

Base: SmolLM2 F16 (`llama-quantize --allow-requantize models/SmolLM2-135M-Instruct.Q4_1.gguf OUT F16`);
quantized: `llama-quantize F16 OUT Q4_K_M` (the test makes both with `ggufq quantize`, byte-identical). Then
    llama-perplexity -m F16 -f tests/data/ppl_text_austen.txt -c 512 --chunks 2 -t 2 --kl-divergence-base BASE
    llama-perplexity -m Q4_K_M -c 512 -t 2 --kl-divergence-base BASE --kl-divergence
Kept: the closing statistics the comparison reports (PPL, mean KLD, 99% KLD, same top p).
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from make_kld_fixtures import ROOT, llama_kld

CTX, CHUNKS = 512, 2
FIGURES = {"ppl": r"Mean PPL\(Q\)\s+:\s+(\S+)", "kld_mean": r"Mean    KLD:\s+(\S+)",
           "kld_p99": r"99\.0%   KLD:\s+(\S+)", "same_top": r"Same top p:\s+(\S+)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin"))
    with tempfile.TemporaryDirectory() as tmp:
        golden, text, _ = llama_kld(Path(ap.parse_args().llama_cpp), "Q4_K_M", CTX, CHUNKS, tmp)
    for key, pattern in FIGURES.items():
        golden[key] = float(re.search(pattern, text).group(1))
    path = ROOT / "tests/data/compare_golden.json"
    path.write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps(golden, indent=1))


if __name__ == "__main__":
    main()
