"""`ggufq imatrix` against llama-imatrix in the same run: tokens per second of the collection.

    .venv/bin/python tools/bench_imatrix.py [--llama-cpp DIR] [-t 2] [--chunks 8] [-r 3]

(tools/bench_perplexity.py runs the same comparison for `ggufq perplexity`.)

SmolLM2 and Gemma 3 F16 (made with `ggufq quantize --allow-requantize`), the Austen text, chunks of
512. Each tool is timed as a whole process (median of -r runs, alternating); the ratio is of tokens per
second, ggufq over llama.cpp (target >= 1.0).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests/data/ppl_text_austen.txt"
MODELS = {"SmolLM2": ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf", "Gemma3": ROOT / "models/gemma-3-270m-q4_k_m.gguf"}


def timed(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def main(command: str = "imatrix", reference: str = "llama-imatrix", scored=lambda n_ctx: n_ctx) -> None:
    """Time `ggufq COMMAND` against llama.cpp's REFERENCE on the same F16 files and chunks; `scored` is how
    many tokens of a chunk count (all of them for the imatrix, the scored half for perplexity)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin"))
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("-r", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for label, model in MODELS.items():
            f16 = Path(d) / f"{label}-F16.gguf"
            subprocess.run([sys.executable, "-m", "ggufq", "quantize", "--allow-requantize", str(model), str(f16),
                            "F16"], check=True, capture_output=True)
            common = ["-m", str(f16), "-f", str(TEXT), "-c", "512", "--chunks", str(args.chunks), "-t", str(args.t)]
            out = (lambda name: ["-o", f"{d}/{name}.gguf"]) if command == "imatrix" else (lambda name: [])
            ours = [sys.executable, "-m", "ggufq", command, *common, *out("ours")]
            ref = [f"{args.llama_cpp}/{reference}", *common, *out("ref")]
            t_ours, t_ref = [], []
            for _ in range(args.r):
                t_ours.append(timed(ours))
                t_ref.append(timed(ref))
            n = scored(512) * args.chunks
            a, b = statistics.median(t_ours), statistics.median(t_ref)
            print(f"{label} F16, {args.chunks} x 512 tokens ({n} counted), -t {args.t}: ggufq {command} "
                  f"{n / a:.1f} t/s ({a:.2f} s), {reference} {n / b:.1f} t/s ({b:.2f} s), ratio {b / a:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
