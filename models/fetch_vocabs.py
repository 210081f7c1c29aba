"""Fetch llama.cpp's tokenizer test vocabularies (models/ggml-vocab-*.gguf with their .inp/.out test cases).

    python models/fetch_vocabs.py        # idempotent: does nothing when models/vocab/ is complete

llama.cpp's source is vendored in the llama-cpp-python sdist on PyPI; only `vendor/llama.cpp/models/
ggml-vocab-*` is extracted from it, into models/vocab/ (git-ignored). The version is pinned so that the
vocabularies and their expected ids stay those of the llama.cpp the fixtures were checked against.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOCAB_DIR = HERE / "vocab"
SDIST = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
MEMBER_PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-"
STAMP = VOCAB_DIR / ".complete"
ALIGNMENT = 32


def fetch_vocabs() -> Path:
    """Make sure models/vocab/ holds the vocab files; return the folder."""
    if STAMP.exists():
        return VOCAB_DIR
    cache = HERE / "cache"
    cache.mkdir(exist_ok=True)
    sdist = cache / SDIST_FILE
    if not sdist.exists():
        print(f"fetching {SDIST} sdist from PyPI (llama.cpp vocab tests)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "-d", str(cache), SDIST], check=True)
    tmp = VOCAB_DIR.with_name("vocab.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    n = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for m in tar:
            if not m.isfile() or not m.name.startswith(MEMBER_PREFIX):
                continue
            name = os.path.basename(m.name)
            if "/" in name or name.startswith("."):
                continue
            with tar.extractfile(m) as src, open(tmp / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                if name.endswith(".gguf"):
                    # vocab-only files end right after their metadata; pad them to the 32-byte alignment
                    # so that they have the (empty) data section a strict reader expects
                    dst.write(b"\0" * (-dst.tell() % ALIGNMENT))
            n += 1
    if n == 0:
        sys.exit(f"fetch_vocabs: no ggml-vocab-* files in {sdist}")
    (tmp / ".complete").write_text(f"{n} files from {SDIST}\n")
    shutil.rmtree(VOCAB_DIR, ignore_errors=True)
    os.replace(tmp, VOCAB_DIR)
    print(f"vocab tests ready: {n} files in models/vocab", flush=True)
    return VOCAB_DIR


if __name__ == "__main__":
    fetch_vocabs()
