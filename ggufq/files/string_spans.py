"""The bounds of a GGUF string array's elements (u64 length, then the bytes, one after another), found by a
compiled loop: the reader's hot spot on a vocabulary (ggufq/files/gguf_reader.py, which imports this only
for long arrays, so that opening a small file does not load numba)."""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def string_spans(buf, pos, n):
    """(spans int64[n, 2] of [start, end), the position after the array, 0) for the n strings from byte pos
    of buf (uint8); (spans, pos, 1) as soon as a length or a string would run past the end."""
    size = buf.shape[0]
    spans = np.empty((n, 2), np.int64)
    for i in range(n):
        if pos + 8 > size:
            return spans, pos, 1
        length = np.uint64(0)
        for b in range(8):
            length |= np.uint64(buf[pos + b]) << np.uint64(8 * b)
        pos += 8
        if length > np.uint64(size - pos):
            return spans, pos, 1
        spans[i, 0] = pos
        pos += np.int64(length)
        spans[i, 1] = pos
    return spans, pos, 0
