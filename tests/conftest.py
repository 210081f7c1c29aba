"""Shared paths. The real models are fetched by `make models` (models/fetch.py) before the suite runs;
if they are missing, the fetch runs here, so `pytest` alone works too."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DATA = Path(__file__).resolve().parent / "data"
SMOL = str(MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = str(MODELS / "gemma-3-270m-q4_k_m.gguf")
SMOL_HF = MODELS / "smollm2-hf"
GEMMA_HF = MODELS / "gemma3-hf"


def pytest_sessionstart(session):
    if not (Path(SMOL).exists() and Path(GEMMA).exists()):
        subprocess.run([sys.executable, str(MODELS / "fetch.py"), "--gguf-only"], check=True)
    if not (MODELS / "vocab" / ".complete").exists():
        subprocess.run([sys.executable, str(MODELS / "fetch_vocabs.py")], check=True)


def hf_folders() -> tuple[Path, Path]:
    """The BF16 Hugging Face folders exported from the real models (made on first use)."""
    if not ((SMOL_HF / "config.json").exists() and (GEMMA_HF / "config.json").exists()):
        subprocess.run([sys.executable, str(MODELS / "fetch.py")], check=True)
    return SMOL_HF, GEMMA_HF


@pytest.fixture(scope="module")
def vocab_dir() -> Path:
    """llama.cpp's tokenizer test vocabularies (models/vocab, fetched by models/fetch_vocabs.py)."""
    spec = importlib.util.spec_from_file_location("fetch_vocabs", MODELS / "fetch_vocabs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fetch_vocabs()


@pytest.fixture
def llama_cpp_arithmetic(monkeypatch):
    """Models loaded in the test compute in llama.cpp's AVX2 arithmetic (ggufq.model.ARITHMETICS): the
    numbers golden fixtures from llama.cpp are compared with, the same on every x86-64 host."""
    monkeypatch.setenv("GGUFQ_ARITHMETIC", "llama.cpp-avx2")
