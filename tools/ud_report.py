"""UD-Q4_K_XL against llama.cpp's quants, scored by llama-perplexity on text neither was calibrated on.

    .venv/bin/python tools/ud_report.py [--llama-cpp DIR] [--models smol,gemma] [--out DIR]

For each shipped model: its F16 file (`ggufq quantize --allow-requantize`), an imatrix from the first half
of tests/data/ppl_text_austen.txt (`ggufq imatrix -c 512`), then
  Q4_0, Q4_K_M                 llama-quantize
  imatrix Q4_K_M               llama-quantize --imatrix (the same imatrix)
  hand recipe                  imatrix Q4_K_M + attn_v=q8_0, ffn_down=q6_k, attn_k=q8_0, attn_output=q6_k
  UD-Q4_K_XL                   ggufq quantize ... UD-Q4_K_XL --imatrix ... --calib (first half)
each scored by `llama-perplexity --kl-divergence` against the F16 model on the second half (held out),
chunks of 512. Prints a Markdown table: size, bits per weight, PPL, mean and 99th-percentile KLD, same
top token, and the KLD and size of each file relative to imatrix Q4_K_M.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "tests/data/ppl_text_austen.txt"
MODELS = {"smol": ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf", "gemma": ROOT / "models/gemma-3-270m-q4_k_m.gguf"}
HAND = ["--tensor-type", "attn_v=q8_0", "--tensor-type", "ffn_down=q6_k", "--tensor-type", "attn_k=q8_0",
        "--tensor-type", "attn_output=q6_k"]
FIG = {"ppl": r"Mean PPL\(Q\)\s+:\s+(\S+)", "kld": r"Mean    KLD:\s+(\S+)", "kld99": r"99\.0%   KLD:\s+(\S+)",
       "top": r"Same top p:\s+(\S+)"}


def run(cmd, **kw) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, **kw)
    if r.returncode:
        sys.exit(f"ud_report: {' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return r.stdout + r.stderr


def n_params(path: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from ggufq.files.gguf_reader import GGUFFile
    with GGUFFile(path) as g:
        return sum(t.n_elements for t in g.tensors.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin"))
    ap.add_argument("--models", default="smol,gemma")
    ap.add_argument("--out", default=str(ROOT / "out" / "ud"))
    args = ap.parse_args()
    bin_dir, out = Path(args.llama_cpp), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = TEXT.read_text(encoding="utf-8")
    cut = text.index("\n\n", len(text) // 2)
    calib, held = out / "calib.txt", out / "heldout.txt"
    calib.write_text(text[:cut], encoding="utf-8")
    held.write_text(text[cut + 2:], encoding="utf-8")
    gq = [sys.executable, "-m", "ggufq"]
    for key in args.models.split(","):
        d = out / key
        d.mkdir(exist_ok=True)
        f16, imat = d / "F16.gguf", d / "imatrix.gguf"
        run([*gq, "quantize", "--allow-requantize", MODELS[key], f16, "F16"])
        run([*gq, "imatrix", "-m", f16, "-f", calib, "-c", "512", "-o", imat])
        files = {"Q4_0": d / "Q4_0.gguf", "Q4_K_M": d / "Q4_K_M.gguf", "imatrix Q4_K_M": d / "iQ4_K_M.gguf",
                 "hand recipe": d / "hand.gguf", "UD-Q4_K_XL": d / "UD-Q4_K_XL.gguf"}
        q = bin_dir / "llama-quantize"
        run([q, f16, files["Q4_0"], "Q4_0", "2"])
        run([q, f16, files["Q4_K_M"], "Q4_K_M", "2"])
        run([q, "--imatrix", imat, f16, files["imatrix Q4_K_M"], "Q4_K_M", "2"])
        run([q, "--imatrix", imat, *HAND, f16, files["hand recipe"], "Q4_K_M", "2"])
        run([*gq, "quantize", f16, files["UD-Q4_K_XL"], "UD-Q4_K_XL", "--imatrix", imat, "--calib", calib,
             "--save-recipe", d / "UD-Q4_K_XL.json"])
        base = d / "F16.kld"
        ppl = bin_dir / "llama-perplexity"
        f16_out = run([ppl, "-m", f16, "-f", held, "-c", "512", "-t", "2", "--kl-divergence-base", base])
        f16_ppl = float(re.search(r"Final estimate: PPL = (\S+)", f16_out).group(1))
        n = n_params(f16)
        rows = [("F16", f16, {"ppl": f16_ppl, "kld": 0.0, "kld99": 0.0, "top": 100.0})]
        for label, path in files.items():
            o = run([ppl, "-m", path, "-c", "512", "-t", "2", "--kl-divergence-base", base, "--kl-divergence"])
            rows.append((label, path, {k: float(re.search(p, o).group(1)) for k, p in FIG.items()}))
        ref = next(r for r in rows if r[0] == "imatrix Q4_K_M")
        print(f"\n### {key}: held-out half of the Austen text, chunks of 512 (llama-perplexity)\n")
        print("| file | MiB | bpw | PPL | mean KLD | KLD p99 | same top % | KLD / iQ4_K_M | size / iQ4_K_M |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, path, f in rows:
            size = path.stat().st_size
            kr = f["kld"] / ref[2]["kld"] if ref[2]["kld"] else float("nan")
            print(f"| {label} | {size / 2**20:.2f} | {8 * size / n:.2f} | {f['ppl']:.4f} | {f['kld']:.6f} | "
                  f"{f['kld99']:.6f} | {f['top']:.2f} | {kr:.2f} | {size / ref[1].stat().st_size:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
