"""Make tests/data/tok_fixtures.json: llama-tokenize's output on varied prompts for the two real models.

    python tools/make_tok_fixtures.py [LLAMA_CPP_BIN_DIR]   # default ~/.cache/ggufq-ref/llama.cpp/build/bin

Each prompt is written to a file and tokenized with
    llama-tokenize -m MODEL -f FILE --no-escape --log-disable [--ids] [--no-parse-special] [--no-bos]
The ids lists and, for the plain (no --ids) runs, the exact stdout bytes (base64) are stored; for the long
texts (tests/data/ppl_text_austen.txt) only the number of ids and the sha256 of their JSON list.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]

PROMPTS = [
    "Hello world",
    " Hello world",
    "Hello, world! How are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see they've done it, didn't they? We'd LOVE IT'S",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i); }",
    "3.14159 2718281828 1,000,000 $42.50 100% 2024-01-15 0x1F",
    "12345678901234567890",
    "héllo wörld café naïve résumé Ærøskøbing",
    "Привет мир! Γειά σου Κόσμε",
    "你好，世界！这是一个测试。日本語のテキストです。한국어 텍스트",
    "emoji: 🚀🔥😀👍🏽 👨‍👩‍👧‍👦 ✅ 😶‍🌫️",
    "   leading spaces and trailing   ",
    "tabs\tand\t\ttabs\n\nnew\n\n\nlines\r\n",
    "a  b   c    d     e      f",
    "\n",
    " ",
    "",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<|endoftext|>text after<|endoftext|>",
    "<bos><eos> <pad>",
    "<im_start> < |im_start| > <|im_start|",
    "Ünïcödé ʕ•ᴥ•ʔ ∑∫∂√∞ ≠ ≤ ≥ → ← ↑ ↓",
    "‘quotes’ “double” — dash – en-dash … ellipsis",
    "Zero\u200bwidth\u00a0nbsp\u2003emspace\u3000ideographic",
    "https://example.com/path?query=1&b=2#frag user@example.com",
    "<html><body><div class=\"x\">Hi</div></body></html>",
    "\\n is not a newline here, nor is \\t",
]
VARIANTS = [[], ["--no-parse-special"], ["--no-bos"]]
PLAIN_PROMPTS = [0, 5, 12, 19, 20]  # also stored as llama-tokenize's id -> 'piece' lines


def run(bin_dir: Path, model: Path, path: str, extra: list[str]) -> bytes:
    cmd = [str(bin_dir / "llama-tokenize"), "-m", str(model), "-f", path, "--no-escape", "--log-disable", *extra]
    return subprocess.run(cmd, check=True, capture_output=True).stdout


LONG_TEXTS = ["ppl_text_austen.txt"]  # in tests/data; only the ids' count and sha256 are stored


def long_text_cases(bin_dir: Path) -> dict:
    import hashlib
    out = {}
    for name in MODELS:
        for fname in LONG_TEXTS:
            r = run(bin_dir, ROOT / "models" / name, str(ROOT / "tests" / "data" / fname), ["--ids"])
            ids = json.loads(r)
            out.setdefault(name, []).append({"file": fname, "n": len(ids),
                                             "sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()})
    return out


def main() -> None:
    bin_dir = Path(sys.argv[1] if len(sys.argv) > 1 else
                   os.path.expanduser("~/.cache/ggufq-ref/llama.cpp/build/bin"))
    out = {"command": "llama-tokenize -m MODEL -f PROMPT_FILE --no-escape --log-disable [--ids] [VARIANT]",
           "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            model = ROOT / "models" / name
            cases = []
            for k, text in enumerate(PROMPTS):
                path = os.path.join(tmp, "p.txt")
                with open(path, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
                for variant in VARIANTS:
                    ids = json.loads(run(bin_dir, model, path, ["--ids", *variant]))
                    case = {"text": text, "args": variant, "ids": ids}
                    if k in PLAIN_PROMPTS and not variant:
                        case["plain_stdout_b64"] = base64.b64encode(run(bin_dir, model, path, variant)).decode()
                    cases.append(case)
            out["models"][name] = cases
            print(f"{name}: {len(cases)} cases")
    out["long_texts"] = long_text_cases(bin_dir)
    dst = ROOT / "tests" / "data" / "tok_fixtures.json"
    dst.write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
