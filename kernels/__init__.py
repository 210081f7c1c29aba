"""Numba kernels, one module per format family, each format one registry class (registry.py) carrying its
quantizers and its runtime kernels; importing this package fills the registry."""
from . import floats, iquants, kquants, kquants_low, legacy, q8_1  # noqa: F401  (each declares its formats' classes)
from .registry import FORMATS, QuantFormat, get_format  # noqa: F401

__all__ = ["FORMATS", "QuantFormat", "get_format"]
