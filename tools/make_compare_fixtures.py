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
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = "tests/data/ppl_text_austen.txt"
SMOL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
CTX, CHUNKS = 512, 2
FIGURES = {"ppl": r"Mean PPL\(Q\)\s+:\s+(\S+)", "kld_mean": r"Mean    KLD:\s+(\S+)",
           "kld_p99": r"99\.0%   KLD:\s+(\S+)", "same_top": r"Same top p:\s+(\S+)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin"))
    bin_dir = Path(ap.parse_args().llama_cpp)
    with tempfile.TemporaryDirectory() as tmp:
        f16, q, base = Path(tmp) / "F16.gguf", Path(tmp) / "Q4_K_M.gguf", Path(tmp) / "base.kld"
        quantize = str(bin_dir / "llama-quantize")
        subprocess.run([quantize, "--allow-requantize", str(ROOT / SMOL), str(f16), "F16", "2"], check=True,
                       capture_output=True)
        subprocess.run([quantize, str(f16), str(q), "Q4_K_M", "2"], check=True, capture_output=True)
        ppl = str(bin_dir / "llama-perplexity")
        subprocess.run([ppl, "-m", str(f16), "-f", TEXT, "-c", str(CTX), "--chunks", str(CHUNKS), "-t", "2",
                        "--kl-divergence-base", str(base)], cwd=ROOT, check=True, capture_output=True)
        out = subprocess.run([ppl, "-m", str(q), "-c", str(CTX), "-t", "2", "--kl-divergence-base", str(base),
                              "--kl-divergence"], cwd=ROOT, check=True, capture_output=True, text=True)
        text = out.stdout + out.stderr
    golden = {"text": TEXT, "ctx": CTX, "chunks": CHUNKS,
              "base": f"llama-quantize --allow-requantize {SMOL} OUT F16", "quantized": "llama-quantize F16 OUT Q4_K_M",
              "commands": [f"llama-perplexity -m F16 -f {TEXT} -c {CTX} --chunks {CHUNKS} -t 2 --kl-divergence-base BASE",
                           f"llama-perplexity -m Q4_K_M -c {CTX} -t 2 --kl-divergence-base BASE --kl-divergence"]}
    for key, pattern in FIGURES.items():
        golden[key] = float(re.search(pattern, text).group(1))
    path = ROOT / "tests/data/compare_golden.json"
    path.write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps(golden, indent=1))


if __name__ == "__main__":
    main()
