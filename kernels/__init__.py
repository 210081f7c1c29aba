"""Numba kernels, one module per format family; importing this package fills the registry."""
from .registry import FORMATS, QuantFormat, get_format  # noqa: F401
from . import floats  # noqa: F401

__all__ = ["FORMATS", "QuantFormat", "get_format"]
from . import legacy  # noqa: F401
from . import kquants  # noqa: F401
# Runtime kernels last: they also attach themselves as `.dot` to the format classes above.
from . import dot_float, dot_legacy, dot_kquants  # noqa: F401  (runtime kernels, filling dot_common.DOT)
