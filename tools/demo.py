"""`make demo`: the main job end to end on SmolLM2-135M-Instruct, each step shown as the command a user
would type. The model was fetched by `make models`; its BF16 Hugging Face folder (models/smollm2-hf)
was written by `ggufq export`."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out"
SMOL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
HF = ROOT / "models" / "smollm2-hf"
TEXT = ROOT / "tests" / "data" / "ppl_text_austen.txt"


def step(title: str, *args) -> None:
    print(f"\n== {title}\n$ ggufq {' '.join(shlex.quote(str(a)) for a in args)}", flush=True)
    r = subprocess.run([sys.executable, "-m", "ggufq", *map(str, args)], cwd=ROOT)
    if r.returncode:
        sys.exit(f"demo: step '{title}' failed with status {r.returncode}")


def have(command: str) -> bool:
    return (ROOT / "ggufq" / "commands" / f"{command}.py").exists()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    f16 = OUT / "smollm2-f16.gguf"
    step("what the shipped file holds", "inspect", SMOL)
    step("Hugging Face folder (exported from the shipped GGUF) -> GGUF F16", "convert", HF, "--outtype", "f16",
         "--outfile", f16)
    step("the same folder straight to Q8_0", "convert", HF, "--outtype", "q8_0", "--outfile", OUT / "smollm2-q8_0.gguf")
    model = f16
    if have("quantize"):
        model = OUT / "smollm2-q4_k_m.gguf"
        step("quantize like llama-quantize", "quantize", f16, model, "Q4_K_M")
    if have("run"):
        step("complete a prompt (greedy)", "run", "-m", model, "-p", "The capital of France is", "-n", "24",
             "--temp", "0")
    if have("chat"):
        print("\n== one chat turn (stdin is a pipe)\n$ echo 'Give me one tip for learning Python.' | ggufq chat -m "
              f"{model.relative_to(ROOT)} -n 48 --temp 0", flush=True)
        r = subprocess.run([sys.executable, "-m", "ggufq", "chat", "-m", str(model), "-n", "48", "--temp", "0"],
                           input="Give me one tip for learning Python.\n", text=True, cwd=ROOT)
        if r.returncode:
            sys.exit("demo: chat failed")
    if have("perplexity") and TEXT.exists():
        step("perplexity on 4 chunks of 512 tokens", "perplexity", "-m", model, "-f", TEXT, "-c", "512",
             "--chunks", "4")
        base = OUT / "smollm2-f16.kld"
        step("the F16 model's log-probabilities as a KL-divergence base", "perplexity", "-m", f16, "-f", TEXT,
             "-c", "512", "--chunks", "4", "--kl-divergence-base", base)
        step("how far the quantized model is from F16", "perplexity", "-m", model, "--kl-divergence-base", base,
             "--kl-divergence")
    if have("imatrix"):
        # the dynamic recipe: an imatrix and probes on the first half of the text, scored on the second
        text = TEXT.read_text(encoding="utf-8")
        cut = text.index("\n\n", len(text) // 2)
        calib, held = OUT / "calib.txt", OUT / "heldout.txt"
        calib.write_text(text[:cut], encoding="utf-8")
        held.write_text(text[cut + 2:], encoding="utf-8")
        imat, ud = OUT / "smollm2-imatrix.gguf", OUT / "smollm2-ud-q4_k_xl.gguf"
        step("an importance matrix from the first half of the text", "imatrix", "-m", f16, "-f", calib, "-o", imat)
        step("UD-Q4_K_XL: a type per tensor from measurements (imatrix errors, KLD probes)", "quantize", f16, ud,
             "UD-Q4_K_XL", "--imatrix", imat, "--calib", calib, "--save-recipe", OUT / "smollm2-ud-q4_k_xl.json")
        base = OUT / "smollm2-f16-heldout.kld"
        step("F16 log-probabilities on the held-out half", "perplexity", "-m", f16, "-f", held, "-c", "512",
             "--chunks", "4", "--kl-divergence-base", base)
        for q in (model, ud):
            step(f"{q.name} against F16 on the held-out half", "perplexity", "-m", q, "--kl-divergence-base", base,
                 "--kl-divergence")
    if have("compare"):
        q4_0 = OUT / "smollm2-q4_0.gguf"
        step("Q4_0 too, for the comparison", "quantize", f16, q4_0, "Q4_0")
        files = [q4_0, model, OUT / "smollm2-q8_0.gguf"] + ([ud] if have("imatrix") else [])
        data = ROOT / "ggufq" / "data"
        step("the files side by side on two bundled workloads (prose, code)", "compare", "--base", f16,
             "-f", data / "prose.txt", "-f", data / "code.txt", "-c", "512", "--chunks", "2", "-o",
             OUT / "compare", *files)
        print(f"\nthe comparison: {OUT / 'compare.md'}, {OUT / 'compare.json'}, {OUT / 'compare.png'}")
    print("\ndemo done: outputs in out/")


if __name__ == "__main__":
    main()
