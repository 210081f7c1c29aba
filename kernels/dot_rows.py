"""The decode step's row kernels: rows r0..r1 of a quantized weight times one token's activations.

The decode step (ggufq/runtime/decode.py) runs a whole token in one parallel region, so it cannot call the
per-format parallel matmuls; it calls each matrix's row kernel on its thread's share of the rows. Every
format declares its row kernel in its own module with @row_kernel and names it in its registry entry
(DotKernels.rows, and rows_repacked where llama.cpp's AVX2 build runs the matrix repacked). All have one
signature: `row_table()` gathers them from the registry into one tuple, which the compiled step unrolls
(numba's literal_unroll: one direct call per entry) to call the one at a matrix's `kind` (`row_kind`), with
no if-chain to edit when a format is added. The row kernels call the same row dots as the matmuls, so the
numbers are the same.

Arguments of a row kernel (bufs, off, rb, r0, r1, k, acts, out):
  bufs  the mapped file as (uint8, uint16, float32) views, read-only; the float types read the last two
  off   the weight's first byte in the file; rb the bytes of a row; k the row's length in weights
  acts  the token in both of llama.cpp's quantized forms and as itself, a form a file does not use may be
        empty: q8_32 (a32q int8[k], a32d float32[k/32], a32s float32[k/32]), q8_k (akq int8[k],
        akd float32[k/256], aks int32[k/16]), x float32[k]
  out   float32[rows]: out[r] = W[r] . x for r in r0..r1
"""
from __future__ import annotations

import functools
import warnings

import numba as nb
from numba.core.errors import NumbaExperimentalFeatureWarning

from .registry import FORMATS

# numba calls unrolling a tuple of functions "experimental" (it is how the step picks a kernel); the
# warning comes once per compile and would reach users of `ggufq run` on a first run.
warnings.filterwarnings("ignore", category=NumbaExperimentalFeatureWarning)


def row_kernel(fn=None, *, fastmath=False):
    """Declares a format's row kernel (fastmath as the format's matmul has it, so the sums are equal)."""
    if fn is None:
        return lambda f: row_kernel(f, fastmath=fastmath)
    return nb.njit(cache=True, fastmath=fastmath)(fn)


def _entries() -> tuple[tuple[int, str, object], ...]:
    """(GGML type, variant, kernel) for every format with a row kernel, in type order; variant "llama.cpp"
    (llama.cpp's numbers), "repacked" (its kernel for repacked matrices) or "fast" (the fast arithmetic's,
    where the format has its own)."""
    return _entries_of(len(FORMATS))


@functools.lru_cache(maxsize=None)
def _entries_of(n_formats: int) -> tuple[tuple[int, str, object], ...]:
    # once per registry size (formats register when their modules are imported): a model's step asks
    # for 200+ matrices' kinds, and sorting the registry each time took 65 ms of a first token
    out = []
    for qtype in sorted(FORMATS, key=int):
        dot = FORMATS[qtype].dot
        if dot is not None and dot.rows is not None:
            out.append((int(qtype), "llama.cpp", dot.rows))
            if dot.rows_repacked is not None:
                out.append((int(qtype), "repacked", dot.rows_repacked))
            if dot.rows_fast is not None:
                out.append((int(qtype), "fast", dot.rows_fast))
    return tuple(out)


def row_table() -> tuple:
    """The row kernels of every registered format, in the order of their kinds (row_kind)."""
    return tuple(e[2] for e in _entries())


def has_row_kernel(qtype) -> bool:
    dot = FORMATS[qtype].dot if qtype in FORMATS else None
    return dot is not None and dot.rows is not None


def row_kind(qtype, rows: int, llama_cpp: bool = False) -> int:
    """The index in row_table() of the kernel for a weight of this type and row count: in llama.cpp's AVX2
    arithmetic the repacked kernel where that build repacks the matrix, else its plain one; in the fast
    arithmetic the format's fast kernel, else the plain one (as the batch path's `matmul`)."""
    from .dot_simd import repacked
    dot = FORMATS[qtype].dot
    if llama_cpp:
        variant = "repacked" if dot.rows_repacked is not None and bool(repacked(rows)) else "llama.cpp"
    else:
        variant = "fast" if dot.rows_fast is not None else "llama.cpp"
    return _kinds(len(FORMATS))[(int(qtype), variant)]


@functools.lru_cache(maxsize=None)
def _kinds(n_formats: int) -> dict[tuple[int, str], int]:
    return {e[:2]: i for i, e in enumerate(_entries_of(n_formats))}
