"""Unquantized formats: F32, F16, BF16. Stored little-endian, one element per 'block'."""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .registry import QuantFormat


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even, NaN kept quiet: what ggml_fp32_to_bf16 does."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = (bits.astype(np.uint64) + (0x7FFF + ((bits >> 16) & 1))) >> 16
    out = rounded.astype(np.uint16)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 64).astype(np.uint16)
    return out


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(bits).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


class F32(QuantFormat, qtype=T.F32):
    dtype = np.float32

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        return np.ascontiguousarray(rows, dtype=np.float32).view(np.uint8)

    @classmethod
    def dequantize(cls, data):
        return np.ascontiguousarray(data).view(np.float32)


class F16(QuantFormat, qtype=T.F16):
    dtype = np.float16

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        return np.ascontiguousarray(rows, dtype=np.float32).astype(np.float16).view(np.uint8)

    @classmethod
    def dequantize(cls, data):
        return np.ascontiguousarray(data).view(np.float16).astype(np.float32)


class BF16(QuantFormat, qtype=T.BF16):
    dtype = np.uint16

    @classmethod
    def quantize(cls, rows, imatrix=None, out=None):
        return f32_to_bf16_bits(rows).view(np.uint8)

    @classmethod
    def dequantize(cls, data):
        return bf16_bits_to_f32(data)
