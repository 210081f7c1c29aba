"""Architectures: how a Hugging Face text model maps onto GGUF and back.

One class per family; each knows its tensor-name table (GGUF template <-> HF template), its
hyper-parameters in both directions, and the tensor transforms llama.cpp's converter applies
(llama's q/k permutation, Gemma's norm shift) together with their inverses for export.
Aliases (Mistral is a llama) live in the class's `hf_architectures`.
"""
from __future__ import annotations

from ggufq.errors import GGUFQError
from ggufq.arch.base import TextArch
from ggufq.arch.gemma3 import Gemma3
from ggufq.arch.llama import Llama
from ggufq.arch.qwen import Qwen2, Qwen3

ARCHES: tuple[type[TextArch], ...] = (Llama, Qwen2, Qwen3, Gemma3)


def arch_for_hf(hparams: dict) -> type[TextArch]:
    names = hparams.get("architectures") or []
    for cls in ARCHES:
        if any(n in cls.hf_architectures for n in names):
            return cls
    known = ", ".join(n for c in ARCHES for n in c.hf_architectures)
    raise GGUFQError(f"unsupported architecture {', '.join(names) or '(none in config.json)'}; "
                     f"supported: {known}")


def arch_for_gguf(name: str) -> type[TextArch]:
    for cls in ARCHES:
        if cls.gguf_arch == name:
            return cls
    raise GGUFQError(f"unsupported architecture {name!r}; supported: "
                     + ", ".join(c.gguf_arch for c in ARCHES))
