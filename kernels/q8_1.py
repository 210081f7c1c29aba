"""Q8_1, read only: blocks of 32 int8 values with two fp16 fields, the scale d and s = d * sum(q).

    Q8_1 36: d f16, s f16, qs int8[32]     w = d * q

llama.cpp quantizes activations to it for the Q4_1/Q5_1 dots (ggufq's own copy of that is
dot_common.quantize_q8_32); a GGUF may still hold a tensor of it, so it can be dequantized (inspect,
export). No quantizer and no runtime kernel: llama-quantize offers no Q8_1 type. (36 bytes as ggml's
block_q8_1; gguf-py's table says 40: ggufq/files/ggml_types.py corrects it.)
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from numba import njit, prange

from .numerics import dequant_blocks, get_f16
from .registry import QuantFormat


def q8_1_dequantize_ref(data) -> np.ndarray:
    """w = d * q per block, as dequantizing block_q8_1 reads it (s is redundant for that)."""
    b = np.ascontiguousarray(data, dtype=np.uint8)
    lead, nb = b.shape[:-1], b.shape[-1] // 36
    b = b.reshape(-1, 36)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    q = b[:, 4:].view(np.int8).astype(np.float32)
    return (q * d).astype(np.float32).reshape(*lead, nb * 32)


@njit(parallel=True, cache=True)
def dequantize_q8_1_nb(b, y):
    for i in prange(b.shape[0]):
        d = get_f16(b[i], 0)
        for j in range(32):
            q = np.int64(b[i, 4 + j])
            y[i, j] = np.float32(q - 256 if q >= 128 else q) * d


class Q8_1(QuantFormat, qtype=T.Q8_1):
    @classmethod
    def dequantize(cls, data):
        return dequant_blocks(cls, data, dequantize_q8_1_nb)

    @classmethod
    def dequantize_ref(cls, data):
        return q8_1_dequantize_ref(data)
