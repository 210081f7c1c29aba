"""Golden importance matrices from llama.cpp's llama-imatrix -> tests/data/imatrix_{smol,gemma}.gguf.

    .venv/bin/python tools/make_imatrix_fixtures.py [--llama-cpp DIR]

For each shipped model: `llama-quantize --allow-requantize MODEL F16.gguf F16 2` (the test makes the
same bytes with `ggufq quantize`), then
    llama-imatrix -m F16.gguf -f tests/data/ppl_text_austen.txt -c 512 --chunks 2 -t 2 -o OUT.gguf
The whole output file is kept: every tensor's in_sum2 and counts, the chunk count and size. The text's
dataset path is stored as the command saw it (relative to the repository).
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = "tests/data/ppl_text_austen.txt"
MODELS = {"smol": "models/SmolLM2-135M-Instruct.Q4_1.gguf", "gemma": "models/gemma-3-270m-q4_k_m.gguf"}
CTX, CHUNKS = 512, 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin"))
    args = ap.parse_args()
    bin_dir = Path(args.llama_cpp)
    with tempfile.TemporaryDirectory() as tmp:
        for key, model in MODELS.items():
            f16 = Path(tmp) / f"{key}-F16.gguf"
            subprocess.run([str(bin_dir / "llama-quantize"), "--allow-requantize", str(ROOT / model), str(f16),
                            "F16", "2"], check=True, capture_output=True)
            out = ROOT / "tests" / "data" / f"imatrix_{key}.gguf"
            subprocess.run([str(bin_dir / "llama-imatrix"), "-m", str(f16), "-f", TEXT, "-c", str(CTX),
                            "--chunks", str(CHUNKS), "-t", "2", "-o", str(out)], cwd=ROOT, check=True,
                           capture_output=True)
            print(f"{out.relative_to(ROOT)}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
