"""Writing GGUF files atomically and one tensor (or one slab of rows) at a time.

gguf's GGUFWriter writes the header, the metadata and the tensor table byte for byte as llama.cpp's
tools do; its write_tensor_data wants each tensor whole. `TensorStream` continues from the tensor table
with the same layout (each tensor padded to the alignment) but takes a tensor in slabs, so a converter
never holds more than a slab of a large tensor. The file is written under a temporary name in the
output's folder and renamed into place only when complete; an error or interrupt removes it.
"""
from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np


class TensorStream:
    def __init__(self, writer: gguf.GGUFWriter):
        if writer.state is not gguf.gguf_writer.WriterState.TI_DATA:
            raise ValueError("write the header, metadata and tensor table first")
        self.w = writer
        self.fout = writer.fout[0]
        self._names = [name for tensors in writer.tensors for name in tensors]
        self._sizes = {name: ti.nbytes for tensors in writer.tensors for name, ti in tensors.items()}
        self._next = 0
        self._open: str | None = None
        self._written = 0

    def begin(self, name: str) -> None:
        expected = self._names[self._next]
        if name != expected:
            raise ValueError(f"tensor {name} written out of order (expected {expected})")
        self.w.write_padding(self.fout, self.fout.tell())
        self._open, self._written = name, 0

    def write(self, data: np.ndarray) -> None:
        data = np.ascontiguousarray(data)
        self.fout.write(memoryview(data.reshape(-1).view(np.uint8)))
        self._written += data.nbytes

    def end(self) -> None:
        want = self._sizes[self._open]
        if self._written != want:
            raise ValueError(f"tensor {self._open}: wrote {self._written} bytes, table says {want}")
        self.w.write_padding(self.fout, self._written)
        self._open = None
        self._next += 1

    def tensor(self, name: str, data: np.ndarray) -> None:
        self.begin(name)
        self.write(data)
        self.end()

    def finish(self) -> None:
        if self._next != len(self._names):
            raise ValueError(f"{len(self._names) - self._next} tensors were never written")
        self.fout.flush()


def check_output_file(path: str | Path, *inputs: str | Path) -> Path:
    """Refuse an output path before any work is done: a folder, one of the inputs, or a place that cannot
    be written (a missing or read-only folder). Returns the path."""
    from ggufq.errors import GGUFQError

    path = Path(path)
    if path.is_dir():
        raise GGUFQError(f"{path}: is a folder; give the output file's name (e.g. {path / 'model.gguf'})")
    for p in inputs:
        if p is not None and path.exists() and path.resolve() == Path(p).resolve():
            raise GGUFQError(f"{path}: the output would overwrite the input")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:  # atomic_output makes missing folders
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise GGUFQError(f"{path}: cannot write in {parent}")
    return path
