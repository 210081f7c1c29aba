"""Make tests/data/gen_fixtures.json: llama-completion's greedy continuations on fixed prompts, both real models.

    python tools/make_gen_fixtures.py [LLAMA_CPP_BIN_DIR]   # default ~/.cache/ggufq-ref/llama.cpp/build/bin

For each prompt (given as on a command line: llama-completion processes escapes such as \\n):
    llama-completion -m MODEL -no-cnv --temp 0 --no-display-prompt -n 32 -t 2 -p PROMPT
stdout is stored as is; it is the continuation followed by llama-completion's own "\\n\\n" at exit (and
" [end of text]\\n" before it when an end-of-generation token came first).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_PREDICT = 32
PROMPTS = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": [
        "The capital of France is",
        "def fibonacci(n):",
        "<|im_start|>user\\nWhat is the tallest mountain on Earth?<|im_end|>\\n<|im_start|>assistant\\n",
    ],
    "gemma-3-270m-q4_k_m.gguf": [
        "The capital of France is",
        "def fibonacci(n):",
        "<start_of_turn>user\\nWhat is the tallest mountain on Earth?<end_of_turn>\\n<start_of_turn>model\\n",
    ],
}


def greedy_margins(bin_dir: Path, model: Path, prompt: str) -> tuple[list[int], list[float]]:
    """llama.cpp's greedy ids with its top-2 logit margin at each step (tools/llama_greedy_margins.c)."""
    exe = Path("/tmp/llama_greedy_margins")
    tree = bin_dir.parent.parent
    if not exe.exists():
        subprocess.run(["gcc", "-O2", str(ROOT / "tools" / "llama_greedy_margins.c"), f"-I{tree}/include",
                        f"-I{tree}/ggml/include", f"-L{bin_dir}", "-lllama", "-lggml", "-lggml-base",
                        f"-Wl,-rpath,{bin_dir}", "-o", str(exe)], check=True)
    text = prompt.encode().decode("unicode_escape").encode("latin-1").decode("utf-8")  # as -p escapes
    r = subprocess.run([str(exe), str(model), str(N_PREDICT), text], capture_output=True, check=True, text=True)
    rows = [line.split() for line in r.stdout.splitlines()]
    return [int(a) for a, _ in rows], [round(float(b), 4) for _, b in rows]


def main() -> None:
    bin_dir = Path(sys.argv[1] if len(sys.argv) > 1 else
                   os.path.expanduser("~/.cache/ggufq-ref/llama.cpp/build/bin"))
    out = {"command": f"llama-completion -m MODEL -no-cnv --temp 0 --no-display-prompt -n {N_PREDICT} -t 2 -p PROMPT",
           "n_predict": N_PREDICT, "models": {}}
    for name, prompts in PROMPTS.items():
        cases = []
        for prompt in prompts:
            cmd = [str(bin_dir / "llama-completion"), "-m", str(ROOT / "models" / name), "-no-cnv", "--temp", "0",
                   "--no-display-prompt", "-n", str(N_PREDICT), "-t", "2", "-p", prompt]
            r = subprocess.run(cmd, capture_output=True, check=True, stdin=subprocess.DEVNULL)
            ids, margins = greedy_margins(bin_dir, ROOT / "models" / name, prompt)
            cases.append({"prompt_arg": prompt, "stdout": r.stdout.decode("utf-8"), "llama_ids": ids,
                          "margins": margins})
            print(f"{name}: {prompt!r} -> {r.stdout.decode('utf-8')!r}", flush=True)
        out["models"][name] = cases
    dst = ROOT / "tests" / "data" / "gen_fixtures.json"
    dst.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
