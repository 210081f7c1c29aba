"""Where each string of a GGUF string array starts: the walk over 8-byte lengths that opening a file
does once per array (a vocabulary's 49k-262k tokens, its merges). The Python loop took 40-70 ms of a
SmolLM2 load (98k strings), a twentieth of a first token; this walk takes well under 1 ms.
ggufq/files/gguf_reader.py keeps the Python loop as the reference, for the error messages, and for
commands that never import numba (this module's load would cost them more than it saves)."""
import numba as nb
import numpy as np


@nb.njit(cache=True)
def string_starts(buf, pos, n, starts):
    """Fill starts[:n] with the first byte of each of n length-prefixed strings from buf[pos]; the end of
    the array, or -1 if a length or a string runs past the end of buf (the caller then says which)."""
    size = buf.shape[0]
    for i in range(n):
        if pos + 8 > size:
            return -1
        length = np.uint64(0)
        for b in range(8):   # little-endian u64
            length |= np.uint64(buf[pos + b]) << np.uint64(8 * b)
        pos += 8
        if length > np.uint64(size - pos):
            return -1
        starts[i] = pos
        pos += np.int64(length)
    return pos
