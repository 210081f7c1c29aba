"""Make the golden quantization fixtures in tests/data/ with llama.cpp's own tools.

    .venv/bin/python tools/make_quant_fixtures.py [--llama-bin DIR]

DIR defaults to $LLAMA_CPP_DIR or ~/.cache/ggufq-ref/llama.cpp/build/bin (llama-quantize, llama-imatrix).
For each real model (models/*.gguf, see models/fetch.py):

  F16       llama-quantize --allow-requantize MODEL F16.gguf F16 2
  Q4_0 ...  llama-quantize F16.gguf OUT.gguf TYPE 2                 (TYPE in Q4_0 Q8_0 Q4_K_M Q5_K_M)
  pure      llama-quantize --pure F16.gguf OUT.gguf TYPE 2          (TYPE in Q4_1 Q5_0 Q5_1 Q6_K; a few tensors kept)
  plans     llama-quantize F16.gguf OUT.gguf TYPE 2  (TYPE in Q4_1 Q5_0 Q5_1 Q4_K_S Q5_K_S Q6_K: types + file sha256)

and for SmolLM2 with an importance matrix (tests/data/quant_smol_imatrix.gguf, made once with
`llama-imatrix -m F16.gguf -f TEXT -c 256 --chunks 8` and trimmed to layers 0-2):

  imatrix   llama-quantize --imatrix IMATRIX F16.gguf OUT.gguf Q4_0 2
  imatrix pure  ... --pure ... TYPE 2  (TYPE in Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K; a few tensors kept)

Each fixture is JSON: the command, the whole file's sha256 (when the file does not embed a path) and, per
tensor, its type, GGML shape and the sha256 of its bytes. The lines for tests/data/README are printed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ggufq.files.gguf_reader import GGUFFile  # noqa: E402

DATA = ROOT / "tests" / "data"
MODELS = {
    "smol": ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma": ROOT / "models" / "gemma-3-270m-q4_k_m.gguf",
}
FULL_TYPES = ["Q4_0", "Q8_0", "Q4_K_M", "Q5_K_M"]
PURE_TYPES = ["Q4_1", "Q5_0", "Q5_1", "Q6_K"]
PLAN_TYPES = ["Q4_1", "Q5_0", "Q5_1", "Q4_K_S", "Q5_K_S", "Q6_K"]
IMATRIX_FULL = ["Q4_0"]
IMATRIX_PURE = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
SUBSET = {
    "smol": ["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.ffn_up.weight", "blk.2.attn_v.weight"],
    "gemma": ["blk.0.attn_output.weight", "blk.0.ffn_down.weight", "blk.0.attn_q.weight"],
}
IMATRIX_LAYERS = (0, 1, 2)
IMATRIX_FILE = DATA / "quant_smol_imatrix.gguf"


def sha256(b) -> str:
    return hashlib.sha256(memoryview(b)).hexdigest()


def describe(path: Path, keep: list[str] | None = None, whole: bool = True) -> dict:
    with GGUFFile(path) as g:
        tensors = {}
        for name, t in g.tensors.items():
            if keep is None or name in keep:
                tensors[name] = {"type": t.qtype.name, "shape": list(t.shape),
                                 "sha256": sha256(t.data.reshape(-1).view("u1"))}
    out = {"tensors": tensors}
    if whole:
        out["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stdout[-2000:] + r.stderr[-2000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")


def write(name: str, payload: dict, readme: list[str]) -> None:
    path = DATA / name
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    readme.append(f"{name}: {payload['command']}")
    print("wrote", path.relative_to(ROOT))


def make_imatrix(bin_dir: Path, f16: Path, work: Path) -> None:
    """llama-imatrix on llama.cpp's README + docs/build.md, then keep layers IMATRIX_LAYERS."""
    import numpy as np
    from gguf import GGUFWriter

    src = bin_dir.parents[1]
    text = work / "text.txt"
    text.write_bytes((src / "README.md").read_bytes() + (src / "docs" / "build.md").read_bytes())
    full = work / "imatrix.gguf"
    run([str(bin_dir / "llama-imatrix"), "-m", str(f16), "-f", str(text), "-o", str(full), "-c", "256",
         "--chunks", "8", "-t", "2"])
    with GGUFFile(full) as g:
        w = GGUFWriter(IMATRIX_FILE, arch="", use_temp_file=False)
        w.kv_data[0].clear()
        for key, kv in g.kv.items():
            w.add_key_value(key, kv.value, kv.vtype, sub_type=kv.subtype)
        for name, t in g.tensors.items():
            if any(name.startswith(f"blk.{i}.") for i in IMATRIX_LAYERS):
                w.add_tensor(name, np.array(t.data, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    print("wrote", IMATRIX_FILE.relative_to(ROOT))


def pure_digests(q, f16, work, short, types, flags) -> dict:
    """llama-quantize FLAGS F16 OUT TYPE for each type: digests of the SUBSET tensors."""
    out_map = {}
    for t in types:
        out = work / f"{short}.{'.'.join(f.strip('-') for f in flags if f.startswith('--'))}.{t}.gguf"
        run([q, *flags, str(f16), str(out), t, "2"])
        out_map[t] = describe(out, SUBSET[short], whole=False)["tensors"]
        out.unlink()
    return out_map


def f16_of_each_model(q: str):
    """(short name, F16.gguf, work folder) for each real model, the F16 file made by llama-quantize in a
    temporary folder and removed after its turn."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for short, model in MODELS.items():
            f16 = work / f"{short}.F16.gguf"
            run([q, "--allow-requantize", str(model), str(f16), "F16", "2"])
            yield short, f16, work
            f16.unlink(missing_ok=True)


def llama_bin_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--llama-bin", default=os.environ.get("LLAMA_CPP_DIR",
                                                          str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    llama_bin_arg(ap)
    ap.add_argument("--new-imatrix", action="store_true", help="re-run llama-imatrix even if the file exists")
    args = ap.parse_args()
    bin_dir = Path(args.llama_bin)
    q = str(bin_dir / "llama-quantize")
    readme: list[str] = []
    for short, f16, work in f16_of_each_model(q):
        model = MODELS[short]
        write(f"quant_{short}_F16.json",
              {"command": f"llama-quantize --allow-requantize models/{model.name} F16.gguf F16 2",
               **describe(f16)}, readme)
        for t in FULL_TYPES:
            out = work / f"{short}.{t}.gguf"
            run([q, str(f16), str(out), t, "2"])
            write(f"quant_{short}_{t}.json",
                  {"command": f"llama-quantize F16.gguf {t}.gguf {t} 2 (F16.gguf from quant_{short}_F16.json)",
                   **describe(out)}, readme)
            out.unlink()
        pure = pure_digests(q, f16, work, short, PURE_TYPES, ["--pure"])
        plans = {}
        for t in PLAN_TYPES:
            out = work / f"{short}.plan.{t}.gguf"
            run([q, str(f16), str(out), t, "2"])
            d = describe(out)
            plans[t] = {"file_sha256": d["file_sha256"],
                        "types": {n: v["type"] for n, v in d["tensors"].items()}}
            out.unlink()
        write(f"quant_{short}_plans.json",
              {"command": f"llama-quantize F16.gguf OUT.gguf TYPE 2 for TYPE in {' '.join(PLAN_TYPES)}: "
                          f"each tensor's type and the file's sha256", "types": plans}, readme)
        write(f"quant_{short}_pure.json",
              {"command": f"llama-quantize --pure F16.gguf OUT.gguf TYPE 2 for TYPE in {' '.join(PURE_TYPES)}; "
                          f"tensors {' '.join(SUBSET[short])}", "types": pure}, readme)
        if short == "smol":
            if args.new_imatrix or not IMATRIX_FILE.exists():
                make_imatrix(bin_dir, f16, work)
                readme.append(f"{IMATRIX_FILE.name}: llama-imatrix -m F16.gguf -f (llama.cpp README.md + "
                              f"docs/build.md) -c 256 --chunks 8 -t 2, kept layers "
                              f"{','.join(map(str, IMATRIX_LAYERS))} (tools/make_quant_fixtures.py)")
            im = str(IMATRIX_FILE)
            for t in IMATRIX_FULL:
                out = work / f"{short}.imatrix.{t}.gguf"
                run([q, "--imatrix", im, str(f16), str(out), t, "2"])
                write(f"quant_{short}_imatrix_{t}.json",
                      {"command": f"llama-quantize --imatrix tests/data/{IMATRIX_FILE.name} F16.gguf {t}.gguf {t} 2",
                       **describe(out, whole=False)}, readme)
                out.unlink()
            pure = pure_digests(q, f16, work, short, IMATRIX_PURE, ["--pure", "--imatrix", im])
            write(f"quant_{short}_imatrix_pure.json",
                  {"command": f"llama-quantize --pure --imatrix tests/data/{IMATRIX_FILE.name} F16.gguf OUT.gguf "
                              f"TYPE 2 for TYPE in {' '.join(IMATRIX_PURE)}; tensors {' '.join(SUBSET[short])}",
                   "types": pure}, readme)
    print_readme(readme)
    return 0


def print_readme(readme: list[str]) -> None:
    print("\n# lines for tests/data/README")
    for line in readme:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
