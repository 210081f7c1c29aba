"""Golden token ids for the export tests, made with llama.cpp's llama-tokenize on the original GGUFs.

    python tools/make_export_fixtures.py [LLAMA_CPP_BUILD_BIN]   # default ~/.cache/ggufq-ref/llama.cpp/build/bin

Writes tests/data/export_tokenize_golden.json: for each model, the strings and the ids llama-tokenize gives
(SmolLM2: special tokens parsed, no BOS as the model says; Gemma 3: special tokens not parsed, with its
BOS), which the tests compare with the exported tokenizer.json (tokenizers) and tokenizer.model
(sentencepiece).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "export_tokenize_golden.json"

TEXTS = [
    "Hello world",
    " Hello world",
    "Hello World!",
    "  two leading spaces",
    "trailing spaces   ",
    "a\nb\n\nc\n\n\nd",
    "\t tab\t\ttabs \n",
    "   ",
    "\n",
    "Numbers: 1 12 123 1234 12345 3.14159 1,000,000 0x1F",
    "3 33 333 3333 33333 333333 3333333",
    "I've been told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like tea? We'Ve a'lL",
    "def f(x):\n    return x ** 2  # square\n",
    "if (a != b) { return a->c[i] >= 0 && !done; }",
    "------======= ''''''```````\"\"\"\"......!!!!!!??????",
    "Äpfel und Birnen, naïve café, Straße",
    "нещо на Български, Привет мир",
    "我想在apple工作1314151天～ 日本語のテキスト",
    "한국어 문장입니다",
    "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ 🦙🦙",
    "កាន់តែពិសេសអាច😁",
    "ied 4 ½ months",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text after a bos",
    "<unk> <pad> <eos> <mask>",
    "email: someone@example.com, url: https://example.org/a?b=c&d=e",
    "Mixed CASE words AND acronyms like NASA, GPU, CPU-bound.",
    "   \n\n   \t\t  multi\u00a0space\u2003chars",
    "The quick brown fox jumps over the lazy dog.",
]

MODELS = {
    "smollm2": ("models/SmolLM2-135M-Instruct.Q4_1.gguf", []),
    "gemma3": ("models/gemma-3-270m-q4_k_m.gguf", ["--no-parse-special"]),
}


def llama_tokenize(binary: Path, model: Path, text: str, extra: list[str]) -> list[int]:
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
    try:
        out = subprocess.run([str(binary), "-m", str(model), "-f", f.name, "--ids", "--no-escape",
                              "--log-disable", *extra], check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    bindir = Path(sys.argv[1] if len(sys.argv) > 1 else
                  os.path.expanduser("~/.cache/ggufq-ref/llama.cpp/build/bin"))
    binary = bindir / "llama-tokenize"
    golden = {}
    for name, (path, extra) in MODELS.items():
        golden[name] = {"gguf": path, "llama_tokenize_args": extra,
                        "cases": [{"text": t, "ids": llama_tokenize(binary, ROOT / path, t, extra)}
                                  for t in TEXTS]}
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {sum(len(g['cases']) for g in golden.values())} cases")


if __name__ == "__main__":
    main()
