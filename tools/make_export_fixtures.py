"""Golden token ids for the export tests, made with llama.cpp's llama-tokenize on the original GGUFs.

    python tools/make_export_fixtures.py [LLAMA_CPP_BUILD_BIN]   # default ~/.cache/ggufq-ref/llama.cpp/build/bin
    python tools/make_export_fixtures.py --converter [LLAMA_CPP_DIR [PYTHON]]
    python tools/make_export_fixtures.py --tiny-llama3 [LLAMA_CPP_DIR [PYTHON]]

--tiny-llama3 writes tests/data/export_tiny_llama3.gguf: llama.cpp's convert_hf_to_gguf.py --outtype bf16
on the tiny Llama 3 folder of tests/test_export_roundtrip.py (make_tiny_llama3).

The second form writes nothing: it exports both real models, runs llama.cpp's convert_hf_to_gguf.py on the
folders (--outtype f16; PYTHON needs torch + transformers, default ~/.cache/ggufq-ref/convvenv/bin/python)
and prints every metadata key that differs from the original GGUF, and whether each tensor came back
(F32 tensors bit-exact, the others equal to f16(bf16(original))).

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


def compare_with_converter(llama_dir: Path, python: str) -> None:
    import numpy as np
    from gguf.quants import dequantize

    sys.path.insert(0, str(ROOT))
    from ggufq.convert.gguf_to_hf import export_gguf
    from ggufq.files.gguf_reader import GGUFFile
    from kernels.floats import bf16_bits_to_f32, f32_to_bf16_bits

    env = {**os.environ, "PYTHONPATH": str(llama_dir / "gguf-py")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, _) in MODELS.items():
            folder, out = Path(tmp) / name, Path(tmp) / f"{name}.gguf"
            export_gguf(ROOT / path, folder, dtype="bf16", progress=False)
            subprocess.run([python, str(llama_dir / "convert_hf_to_gguf.py"), str(folder), "--outtype", "f16",
                            "--outfile", str(out)], check=True, env=env, capture_output=True)
            a, b = GGUFFile(ROOT / path), GGUFFile(out)
            print(f"== {path} -> ggufq export -> convert_hf_to_gguf.py")
            plain = lambda v: v.tolist() if isinstance(v, np.ndarray) else v  # noqa: E731
            for k in dict.fromkeys([*a.kv, *b.kv]):
                va, vb = plain(a.get(k)), plain(b.get(k))
                if k not in b.kv or k not in a.kv or va != vb:
                    print(f"  {k}: original {str(va)[:60]!r}, re-converted {str(vb)[:60]!r}")
            same = {"f32 exact": 0, "f16(bf16) exact": 0, "different": 0}
            for n, t in a.tensors.items():
                x = dequantize(np.ascontiguousarray(t.data), t.qtype).astype(np.float32)
                u = b.tensors.get(n)
                y = None if u is None else np.asarray(u.data, np.float32)
                if u is not None and u.qtype.name == "F32" and np.array_equal(x, y):
                    same["f32 exact"] += 1
                elif u is not None and np.array_equal(
                        bf16_bits_to_f32(f32_to_bf16_bits(x)).astype(np.float16).astype(np.float32), y):
                    same["f16(bf16) exact"] += 1
                else:
                    same["different"] += 1
                    print(f"  tensor {n} differs")
            print(f"  tensors: {same}; pre-tokenizer {b.get('tokenizer.ggml.pre')!r}")


def make_tiny_llama3_fixture(llama_dir: Path, python: str) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.test_export_roundtrip import make_tiny_llama3

    out = ROOT / "tests" / "data" / "export_tiny_llama3.gguf"
    env = {**os.environ, "PYTHONPATH": str(llama_dir / "gguf-py")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_llama3(Path(tmp) / "tiny-llama3")
        subprocess.run([python, str(llama_dir / "convert_hf_to_gguf.py"), str(folder), "--outtype", "bf16",
                        "--outfile", str(out)], check=True, env=env, capture_output=True)
    print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size} bytes)")


def main() -> None:
    if sys.argv[1:2] in (["--converter"], ["--tiny-llama3"]):
        llama_dir = Path(sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/ggufq-ref/llama.cpp"))
        python = sys.argv[3] if len(sys.argv) > 3 else os.path.expanduser("~/.cache/ggufq-ref/convvenv/bin/python")
        if sys.argv[1] == "--tiny-llama3":
            make_tiny_llama3_fixture(llama_dir, python)
        else:
            compare_with_converter(llama_dir, python)
        return
    if sys.argv[1:2] == ["--converter"]:
        llama_dir = Path(sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/ggufq-ref/llama.cpp"))
        python = sys.argv[3] if len(sys.argv) > 3 else os.path.expanduser("~/.cache/ggufq-ref/convvenv/bin/python")
        compare_with_converter(llama_dir, python)
        return
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
