"""Make tests/data/logits_fixtures.json: sha256 of the float32 logits llama.cpp computes for fixed token
sequences (a prompt decoded as one batch, then tokens one at a time), both real models.

    python tools/make_logits_fixtures.py [LLAMA_CPP_BIN_DIR]   # default ~/.cache/ggufq-ref/llama.cpp/build/bin

Runs tools/llama_logits.c (built here against the reference build): context 512, 2 threads, llama.cpp's
default flash attention (on for CPU), `NPROMPT=N llama_logits MODEL OUT.f32 ID...`. The runtime must
reproduce these bytes exactly: same kernels' arithmetic, same order, same fused multiply-adds.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# (model, requantized to, prompt ids, ids decoded one at a time after it). Between them they take every
# kernel llama.cpp runs for these files: Q4_1/Q5_0/Q8_0 block dots, Q8_0 through tinyBLAS, Q4_0 and
# Q4_K repacked (gemv, and gemm for 4 tokens at a time), Q5_K/Q6_K dots and their tiled kernel (8+
# tokens), flash attention, RoPE in both modes. Requantized files: `llama-quantize --allow-requantize
# models/SmolLM2-135M-Instruct.Q4_1.gguf OUT TYPE 2` (ggufq quantize writes the same bytes).
SMOL_CHAT = [1, 4093, 198, 1780, 314, 260, 31469, 6740, 335, 2591, 47, 2, 198, 1, 520, 9531, 198]
GEMMA_CHAT = [2, 105, 2364, 107, 3689, 563, 506, 92900, 10565, 580, 10824, 236881, 106, 107, 105, 4368, 107]
CASES = [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", None, [504, 3575, 282, 4649, 314],
     [7042, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723, 216, 35]),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", None, SMOL_CHAT, [504, 31469, 6740]),
    ("gemma-3-270m-q4_k_m.gguf", None, [2, 818, 5279, 529, 7001, 563], [9079, 236761, 107, 1, 2]),
    ("gemma-3-270m-q4_k_m.gguf", None, GEMMA_CHAT, [818, 5279, 529]),
    # 40-token prompts of tests/data/ppl_text_austen.txt, then 260 single steps: past 256 cells llama.cpp
    # splits a token's attention over its 2 threads and merges the partial softmaxes
    ("SmolLM2-135M-Instruct.Q4_1.gguf", None, "austen:40", "austen:260"),
    ("gemma-3-270m-q4_k_m.gguf", None, "austen:40", "austen:260"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_0", SMOL_CHAT, [504, 31469]),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q5_K_M", SMOL_CHAT, [504, 31469]),
]


def build(bin_dir: Path) -> Path:
    exe = Path("/tmp/llama_logits")
    tree = bin_dir.parent.parent
    subprocess.run(["gcc", "-O2", str(ROOT / "tools" / "llama_logits.c"), f"-I{tree}/include",
                    f"-I{tree}/ggml/include", f"-L{bin_dir}", "-lllama", "-lggml", "-lggml-base",
                    f"-Wl,-rpath,{bin_dir}", "-o", str(exe)], check=True)
    return exe


def austen_ids(model: str, n: int) -> list[int]:
    """The first n tokens of tests/data/ppl_text_austen.txt's first 3000 characters (ggufq's tokenizer,
    which equals llama-tokenize's: tests/test_tokenizer*.py)."""
    sys.path.insert(0, str(ROOT))
    from ggufq.runtime.model import Model
    m = Model.load(str(ROOT / "models" / model), n_ctx=64)
    text = (ROOT / "tests" / "data" / "ppl_text_austen.txt").read_text(encoding="utf-8")[:3000]
    return m.tokenizer.encode(text)[:n]


def main() -> int:
    bin_dir = Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin")
    exe = build(bin_dir)
    out = {"command": "NPROMPT=len(prompt) llama_logits MODEL OUT.f32 PROMPT_IDS... DECODE_IDS... "
                      "(tools/llama_logits.c: n_ctx 512, 2 threads, default flash attention)", "cases": []}
    for model, requant, prompt, decode in CASES:
        if isinstance(prompt, str):  # "austen:N" prompt, "austen:M" steps after it
            ids = austen_ids(model, int(prompt.split(":")[1]) + int(decode.split(":")[1]))
            prompt, decode = ids[:int(prompt.split(":")[1])], ids[int(prompt.split(":")[1]):]
        f32 = Path("/tmp/llama_logits_fixture.f32")
        path = ROOT / "models" / model
        if requant:
            path = Path(f"/tmp/llama_logits_fixture.{requant}.gguf")
            subprocess.run([str(bin_dir / "llama-quantize"), "--allow-requantize", str(ROOT / "models" / model),
                            str(path), requant, "2"], check=True, capture_output=True)
        subprocess.run([str(exe), str(path), str(f32)] + [str(i) for i in prompt + decode],
                       check=True, capture_output=True, env=dict(os.environ, NPROMPT=str(len(prompt))))
        logits = np.fromfile(f32, dtype=np.float32)
        out["cases"].append({"model": model, "requantize": requant, "prompt": prompt, "decode": decode,
                             "sha256": hashlib.sha256(logits.tobytes()).hexdigest(),
                             "argmax": int(logits.argmax()), "first8": [float(v) for v in logits[:8]]})
        f32.unlink()
        if requant:
            path.unlink()
    # ggml's GELU table (ggml_table_gelu_f16 after ggml_cpu_init), over the fp16 inputs in (-10, 10) that
    # ggml_vec_geglu_f32 looks up: sha256 of those entries' fp16 bits
    import ctypes
    lib = ctypes.CDLL(str(bin_dir / "libggml-cpu.so"))
    lib.ggml_cpu_init()
    tab = np.frombuffer(bytes((ctypes.c_uint16 * 65536).in_dll(lib, "ggml_table_gelu_f16")), dtype=np.uint16)
    h = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    inside = np.isfinite(h) & (h > -10) & (h < 10)
    out["gelu_table_sha256"] = hashlib.sha256(tab[inside].tobytes()).hexdigest()
    (ROOT / "tests" / "data" / "logits_fixtures.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
