"""Golden perplexities from llama.cpp's llama-perplexity -> tests/data/ppl_golden.json.

    .venv/bin/python tools/make_ppl_fixtures.py [--llama-cpp DIR]

Files: the two shipped models, and SmolLM2 Q4_0 / Q8_0 / Q4_K_M / Q5_K_M made by `llama-quantize --allow-requantize` from
the shipped Q4_1 file (the test makes the same bytes with `ggufq quantize --allow-requantize`).
Each: `llama-perplexity -m FILE -f tests/data/ppl_text_austen.txt -c 512 --chunks 8 -t 2`.
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
GEMMA = "models/gemma-3-270m-q4_k_m.gguf"
CTX, CHUNKS = 512, 8


def llama_ppl(bin_dir: Path, model: str) -> dict:
    cmd = [str(bin_dir / "llama-perplexity"), "-m", model, "-f", TEXT, "-c", str(CTX), "--chunks", str(CHUNKS),
           "-t", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    running = [float(v) for v in re.findall(r"\[\d+\](\d+\.\d+),", text)]
    m = re.search(r"Final estimate: PPL = (\d+\.\d+) \+/- (\d+\.\d+)", text)
    return {"ppl": float(m.group(1)), "err": float(m.group(2)), "running": running}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin"))
    args = ap.parse_args()
    bin_dir = Path(args.llama_cpp)
    golden = {"text": TEXT, "ctx": CTX, "chunks": CHUNKS,
              "command": "llama-perplexity -m FILE -f " + TEXT + f" -c {CTX} --chunks {CHUNKS} -t 2",
              "models": {}}
    golden["models"]["smol-Q4_1"] = {"file": SMOL, **llama_ppl(bin_dir, SMOL)}
    golden["models"]["gemma-Q4_K_M"] = {"file": GEMMA, **llama_ppl(bin_dir, GEMMA)}
    with tempfile.TemporaryDirectory() as tmp:
        for t in ("Q4_0", "Q8_0", "Q4_K_M", "Q5_K_M"):
            out = str(Path(tmp) / f"smol-{t}.gguf")
            subprocess.run([str(bin_dir / "llama-quantize"), "--allow-requantize", str(ROOT / SMOL), out, t, "2"],
                           check=True, capture_output=True)
            golden["models"][f"smol-{t}"] = {"file": f"ggufq quantize --allow-requantize {SMOL} OUT {t}",
                                             "requantize_from": SMOL, "type": t, **llama_ppl(bin_dir, out)}
    path = ROOT / "tests/data/ppl_golden.json"
    path.write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps(golden, indent=1))


if __name__ == "__main__":
    main()
