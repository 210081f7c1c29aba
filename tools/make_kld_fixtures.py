"""Golden KL-divergence figures from llama.cpp's llama-perplexity -> tests/data/kld_golden.json.

    .venv/bin/python tools/make_kld_fixtures.py [--llama-cpp DIR]

Base: SmolLM2 F16 (`llama-quantize --allow-requantize models/SmolLM2-135M-Instruct.Q4_1.gguf OUT F16`);
quantized model: that F16 file through `llama-quantize F16 OUT Q4_0` (the test makes both with
`ggufq quantize`, byte-identical). Then
    llama-perplexity -m F16 -f tests/data/ppl_text_austen.txt -c 128 --chunks 4 -t 2 --kl-divergence-base BASE
    llama-perplexity -m Q4_0 -c 128 -t 2 --kl-divergence-base BASE --kl-divergence
Kept: the sha256 of the base file's header and token ids (the log-prob rows depend on the float rounding of
the base model's logits), and the closing statistics of the second run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = "tests/data/ppl_text_austen.txt"
SMOL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
CTX, CHUNKS = 128, 4

FIGURES = {  # golden key: the statistic's line in llama-perplexity's output
    "ppl_q": r"Mean PPL\(Q\)\s+:\s+(\S+)",
    "ppl_base": r"Mean PPL\(base\)\s+:\s+(\S+)",
    "ln_ppl_ratio": r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s+:\s+(\S+)",
    "kld_mean": r"Mean    KLD:\s+(\S+)",
    "kld_median": r"Median  KLD:\s+(\S+)",
    "kld_99": r"99\.0%   KLD:\s+(\S+)",
    "kld_max": r"Maximum KLD:\s+(\S+)",
    "dp_mean_pct": r"Mean    Δp:\s+(\S+)",
    "dp_rms_pct": r"RMS Δp    :\s+(\S+)",
    "same_top_pct": r"Same top p:\s+(\S+)",
}


def header_sha256(path: Path, n_tokens: int) -> str:
    """sha256 of the base file's magic, n_ctx, n_vocab, n_chunk and token ids."""
    return hashlib.sha256(path.read_bytes()[:20 + 4 * n_tokens]).hexdigest()


def llama_kld(bin_dir: Path, qtype: str, ctx: int, chunks: int, tmp: str) -> tuple[dict, str, Path]:
    """llama.cpp end to end: SmolLM2 F16 and qtype by llama-quantize, the F16 base on TEXT, then the
    quantized file's --kl-divergence run. Returns (the golden's description, that run's output, the base)."""
    f16, q, base = Path(tmp) / "smol-F16.gguf", Path(tmp) / f"smol-{qtype}.gguf", Path(tmp) / "base.kld"
    quantize = str(bin_dir / "llama-quantize")
    subprocess.run([quantize, "--allow-requantize", str(ROOT / SMOL), str(f16), "F16", "2"], check=True,
                   capture_output=True)
    subprocess.run([quantize, str(f16), str(q), qtype, "2"], check=True, capture_output=True)
    ppl = str(bin_dir / "llama-perplexity")
    subprocess.run([ppl, "-m", str(f16), "-f", TEXT, "-c", str(ctx), "--chunks", str(chunks), "-t", "2",
                    "--kl-divergence-base", str(base)], cwd=ROOT, check=True, capture_output=True)
    out = subprocess.run([ppl, "-m", str(q), "-c", str(ctx), "-t", "2", "--kl-divergence-base", str(base),
                          "--kl-divergence"], cwd=ROOT, check=True, capture_output=True, text=True)
    about = {"text": TEXT, "ctx": ctx, "chunks": chunks, "base": f"llama-quantize --allow-requantize {SMOL} OUT F16",
             "quantized": f"llama-quantize F16 OUT {qtype}",
             "commands": [f"llama-perplexity -m F16 -f {TEXT} -c {ctx} --chunks {chunks} -t 2 --kl-divergence-base BASE",
                          f"llama-perplexity -m {qtype} -c {ctx} -t 2 --kl-divergence-base BASE --kl-divergence"]}
    return about, out.stdout + out.stderr, base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        golden, text, base = llama_kld(Path(args.llama_cpp), "Q4_0", CTX, CHUNKS, tmp)
        golden["base_header_sha256"] = header_sha256(base, CTX * CHUNKS)
        golden["base_bytes"] = base.stat().st_size
        for key, pattern in FIGURES.items():
            golden[key] = float(re.search(pattern, text).group(1))
    path = ROOT / "tests/data/kld_golden.json"
    path.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(golden, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
