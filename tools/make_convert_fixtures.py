"""Golden fixtures for the converter: llama.cpp's convert_hf_to_gguf.py on the same folders ggufq's tests
convert, reduced to digests (every key, every tensor's type, shape and sha256).

    export LLAMA_CPP_REF=$(dirname $(dirname $(../shared/tools/llama-cpp-ref.sh)))   # the llama.cpp tree
    python tools/make_convert_fixtures.py [--python PY]   # PY: a Python with torch + transformers

Writes tests/data/convert/<case>-<outtype>.json. The cases: the BF16 folders exported from the two real
models (models/smollm2-hf, sharded; models/gemma3-hf, tokenizer.model) and tiny random Qwen2/Qwen3
checkpoints (tests/tiny_models.py, vocabulary from llama.cpp's ggml-vocab-qwen2.gguf).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ggufq.files.digest import digest, file_sha256  # noqa: E402
from tests.tiny_models import make_tiny  # noqa: E402

OUT = ROOT / "tests" / "data" / "convert"
OUTTYPES = ("f16", "bf16", "q8_0")
# llama.cpp's two-step pipeline: its converter to F16, then llama-quantize (file sha256 only)
QUANTIZED = ("Q4_0", "Q4_K_M", "Q5_K_M")


def cases(work: Path) -> dict[str, Path]:
    return {
        "smollm2": ROOT / "models" / "smollm2-hf",
        "gemma3": ROOT / "models" / "gemma3-hf",
        "tiny-qwen2": make_tiny(work / "tiny-qwen2", "qwen2"),
        "tiny-qwen3": make_tiny(work / "tiny-qwen3", "qwen3"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP_REF", str(Path.home() / ".cache/ggufq-ref/llama.cpp")))
    ap.add_argument("--python", default=str(Path.home() / ".cache/ggufq-ref/convvenv/bin/python"))
    ap.add_argument("--only", nargs="*", help="case names")
    args = ap.parse_args()
    tree = Path(args.llama_cpp)
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree / "gguf-py")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, folder in cases(work).items():
            if args.only and name not in args.only:
                continue
            for outtype in OUTTYPES:
                out = work / f"{name}-{outtype}.gguf"
                subprocess.run([args.python, str(tree / "convert_hf_to_gguf.py"), str(folder), "--outtype", outtype,
                                "--outfile", str(out)], check=True, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                d = digest(out)
                d["file_sha256"] = file_sha256(out)
                (OUT / f"{name}-{outtype}.json").write_text(json.dumps(d, indent=1, ensure_ascii=False) + "\n")
                print(f"{name} {outtype}: {len(d['tensors'])} tensors, {len(d['kv'])} keys")
                if outtype == "f16" and not name.startswith("tiny"):
                    quantized = {}
                    for qt in QUANTIZED:
                        q = work / f"{name}-{qt}.gguf"
                        subprocess.run([str(tree / "build" / "bin" / "llama-quantize"), str(out), str(q), qt, "2"],
                                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        quantized[qt] = file_sha256(q)
                        q.unlink()
                    (OUT / f"{name}-quantized.json").write_text(json.dumps(quantized, indent=1) + "\n")
                    print(f"{name} llama-quantize {', '.join(quantized)}")
                out.unlink()


if __name__ == "__main__":
    main()
