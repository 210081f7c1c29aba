"""A compact, comparable summary of a GGUF file: every key with its type and value (long arrays as a
sha256), every tensor with its type, shape and the sha256 of its bytes. Golden fixtures made from
llama.cpp's files are such summaries, so a test compares ours key for key and tensor for tensor."""
from __future__ import annotations

import hashlib
import json

import numpy as np

from ggufq.files.gguf_reader import GGUFFile


def _value(v):
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, list) and len(v) > 16:
        return {"len": len(v), "sha256": hashlib.sha256(json.dumps(v, ensure_ascii=False).encode()).hexdigest()}
    return v


def digest(path, skip_keys=()) -> dict:
    with GGUFFile(path) as g:
        kv = {k: {"type": int(x.vtype), "subtype": None if x.subtype is None else int(x.subtype),
                  "value": _value(x.value)} for k, x in g.kv.items() if k not in skip_keys}
        tensors = {t.name: {"type": t.qtype.name, "shape": list(t.shape),
                            "sha256": hashlib.sha256(memoryview(np.ascontiguousarray(t.data).view(np.uint8).reshape(-1))).hexdigest()}
                   for t in g.tensors.values()}
        return {"kv": kv, "kv_order": list(kv), "tensors": tensors, "tensor_order": list(tensors)}


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
