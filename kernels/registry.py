"""One registry of tensor formats, keyed by GGML type id.

Every format is one subclass of `QuantFormat`, declared with `qtype=` in its family's module of kernels/;
its block geometry comes from gguf's GGML_QUANT_SIZES (through ggufq/files/ggml_types.py), never retyped.
The class carries all that the rest reads: quantize (fast) and quantize_ref (readable), dequantize and
dequantize_ref, and for the runtime `dot` (DotKernels: the activation form it multiplies, the batch matmul, the row dequantizer,
the view of the file's bytes the kernels take). The converter, the recipes, the reader's size checks and
the runtime all look formats up here (`FORMATS[qtype]` or `get_format`), so adding a format means adding
one class, not editing if-chains; the decode step indexes a table built from it (kernels/dot_rows.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from gguf import GGMLQuantizationType

from ggufq.files.ggml_types import block_geometry

FORMATS: dict[GGMLQuantizationType, type["QuantFormat"]] = {}


def _same(a):
    return a


@dataclass(frozen=True)
class DotKernels:
    """A format's runtime kernels.

    act: "f32", "q8_32" or "q8_k", the activation form the kernel takes (dot_common.Activations)
    matmul(w, xf, xq, xd, xs, out[T, rows]): integer or float dots, parallel over rows
    dequant(w, r0, r1, out[r1 - r0, k]): float32 rows (the BLAS batch path, embeddings, dequantize)
    weight_view(TensorInfo.data) -> the array the kernels take
    matmul_llama_cpp: the same product in the numbers of llama.cpp's AVX2 build on every host, where
    `matmul` differs (the float types: matmul's fastmath sums follow the host's vector width); None: the same
    rows: the decode step's row kernel (kernels/dot_rows.py) with llama.cpp's numbers, None: a file with this
    format decodes through the batch path; rows_repacked: the kernel for matrices llama.cpp's AVX2 build
    repacks (dot_simd.repacked); rows_fast: the fast arithmetic's, where it is not `rows` (as `matmul`'s)
    unpack(w, r0, r1, tq, tsm): rows r0..r1 as bytes q with a scale and offset per block of `unpack_block`
    (16 or 32) for the batch GEMM (kernels/gemm_q8.py); `unpack_max` the largest q. None: batches of this
    format go through dequantized tiles and BLAS. unpack_rows(w, r0, r1, tq, tsm, v0): the same on the
    calling thread, into the tile from rowvec v0 (the compiled batch step's threads unpack their own rows)
    """
    act: str
    matmul: Callable
    dequant: Callable
    weight_view: Callable = _same
    matmul_llama_cpp: Callable | None = None
    rows: Callable | None = None
    rows_repacked: Callable | None = None
    rows_fast: Callable | None = None
    unpack: Callable | None = None
    unpack_rows: Callable | None = None
    unpack_block: int = 32
    unpack_max: int = 15


class QuantFormat:
    """A tensor format: rows of `block_size` weights stored as `type_size` bytes per block.

    quantize(rows[n, k] float32, imatrix[k] | None, out=None) -> uint8[n, k // block_size * type_size]
        (written into the flat uint8 buffer `out` when one is given: a converter reuses one buffer)
    dequantize(uint8[..., nbytes]) -> float32[..., nbytes // type_size * block_size]
    """

    qtype: GGMLQuantizationType
    block_size: int
    type_size: int
    name: str
    dot: DotKernels | None = None      # None: the runtime cannot multiply this format

    def __init_subclass__(cls, qtype: GGMLQuantizationType | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if qtype is None:
            return
        cls.qtype = GGMLQuantizationType(qtype)
        cls.block_size, cls.type_size = block_geometry(cls.qtype)
        cls.name = cls.qtype.name
        FORMATS[cls.qtype] = cls

    @classmethod
    def row_bytes(cls, n_per_row: int) -> int:
        if n_per_row % cls.block_size:
            raise ValueError(f"{cls.name}: row of {n_per_row} is not a multiple of {cls.block_size}")
        return n_per_row // cls.block_size * cls.type_size

    @classmethod
    def output_rows(cls, n_rows: int, n_per_row: int, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 [n_rows, row bytes] for quantize to fill: a view of `out` if given, else a new array."""
        shape = (n_rows, cls.row_bytes(n_per_row))
        if out is None:
            return np.empty(shape, dtype=np.uint8)
        return out[:shape[0] * shape[1]].reshape(shape)

    @classmethod
    def quantize(cls, rows: np.ndarray, imatrix: np.ndarray | None = None, out=None) -> np.ndarray:
        raise NotImplementedError(f"quantizing to {cls.name} is not supported")

    @classmethod
    def dequantize(cls, data: np.ndarray) -> np.ndarray:
        """By default the runtime's row dequantizer, each block taken as a row of its own."""
        if cls.dot is None:
            raise NotImplementedError(f"dequantizing {cls.name} is not supported")
        data = np.ascontiguousarray(data, dtype=np.uint8)
        lead, nb = data.shape[:-1], data.shape[-1] // cls.type_size
        blocks = data.reshape(-1, cls.type_size)
        y = np.empty((blocks.shape[0], cls.block_size), dtype=np.float32)
        if blocks.shape[0]:
            cls.dot.dequant(cls.dot.weight_view(blocks), 0, blocks.shape[0], y)
        return y.reshape(*lead, nb * cls.block_size)


def quantizable_types() -> list[GGMLQuantizationType]:
    """The types a tensor can be quantized (or converted) to: the formats that implement quantize."""
    # Q8_K is the K-quants' activation format: no matrix kernel takes it as weights (ggml's neither)
    return [t for t, f in FORMATS.items()
            if f.quantize.__func__ is not QuantFormat.quantize.__func__ and t != GGMLQuantizationType.Q8_K]


def get_format(qtype) -> type[QuantFormat]:
    try:
        return FORMATS[GGMLQuantizationType(qtype)]
    except (KeyError, ValueError):
        name = getattr(qtype, "name", qtype)
        raise KeyError(f"tensor type {name} is not supported") from None


def runtime_format(qtype) -> type[QuantFormat] | None:
    """The format of a tensor type if the runtime can multiply it, else None."""
    try:
        fmt = FORMATS.get(GGMLQuantizationType(qtype))
    except ValueError:
        return None
    return fmt if fmt is not None and fmt.dot is not None else None
