"""One registry of tensor formats, keyed by GGML type id.

Every format is one subclass of `QuantFormat`, declared with `qtype=`; its block geometry comes from the
gguf package's GGML_QUANT_SIZES, never retyped. The converter, the recipes, the reader's size checks and
the runtime all look formats up here (`FORMATS[qtype]` or `get_format`), so adding a format means adding
one class, not editing if-chains.
"""
from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

FORMATS: dict[GGMLQuantizationType, type["QuantFormat"]] = {}


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

    def __init_subclass__(cls, qtype: GGMLQuantizationType | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if qtype is None:
            return
        cls.qtype = GGMLQuantizationType(qtype)
        cls.block_size, cls.type_size = GGML_QUANT_SIZES[cls.qtype]
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
        raise NotImplementedError(f"dequantizing {cls.name} is not supported")


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
