"""Numpy references of the 32-weight block formats (kernels/legacy.py): `<fmt>_quantize_ref` and
`<fmt>_dequantize_ref`, vectorised over blocks, every sum accumulated as the C loop does."""
from __future__ import annotations

import numpy as np
from .numerics import F32
from .numerics_ref import _blocks, _out, _pack_nibbles, _pack_qh, _weighted_blocks, np_absmax_signed, np_c_roundf, np_c_to_int8, np_c_trunc_int, np_first_max, np_first_min, np_fp16_bits, np_fp16_to_f32, np_make_qkx_quants, np_make_qx_quants, np_safe_recip


def _signed_levels(x, n: int):
    """quantize_row_q4_0_ref / q5_0_ref: d = (the value of largest magnitude) / -n, levels
    min(2n - 1, (int8)(x / d + n + 0.5)); returns (d, levels as bytes)."""
    mx, _ = np_absmax_signed(x)
    d = (mx / F32(-n)).astype(F32)
    idv = np_safe_recip(d)
    with np.errstate(invalid="ignore", over="ignore"):
        v = ((x * idv[:, None]).astype(F32) + F32(n + 0.5)).astype(F32)
    return d, np.minimum(2 * n - 1, np_c_to_int8(v)) & 0xFF


def q4_0_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    if imatrix is not None:
        w = _weighted_blocks(rows.reshape(nrows, -1), imatrix, 32)
        d, L = np_make_qx_quants(8, x, 1, w)
        return _out([np_fp16_bits(d)[:, None], _pack_nibbles(L.astype(np.int64))], nrows)
    d, xi = _signed_levels(x, 8)
    return _out([np_fp16_bits(d)[:, None], _pack_nibbles(xi)], nrows)


def _min_max_levels(x, nmax: int):
    """quantize_row_q4_1_ref / q5_1_ref: the block's min and d = (max - min) / nmax; the levels before
    their rounding, (x - min) / d + 0.5. Returns (d, min, levels)."""
    mn = np_first_min(x)
    mx = np_first_max(x)
    d = ((mx - mn) / F32(nmax)).astype(F32)
    idv = np_safe_recip(d)
    with np.errstate(invalid="ignore", over="ignore"):
        v = (((x - mn[:, None]).astype(F32) * idv[:, None]).astype(F32) + F32(0.5)).astype(F32)
    return d, mn, v


def q4_1_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    if imatrix is not None:
        w = _weighted_blocks(rows.reshape(nrows, -1), imatrix, 32)
        d, the_min, L = np_make_qkx_quants(15, x, w, -0.9, 0.05, 36)
        return _out([np_fp16_bits(d)[:, None], np_fp16_bits(-the_min)[:, None], _pack_nibbles(L)], nrows)
    d, mn, v = _min_max_levels(x, 15)
    xi = np.minimum(15, np_c_to_int8(v)) & 0xFF
    return _out([np_fp16_bits(d)[:, None], np_fp16_bits(mn)[:, None], _pack_nibbles(xi)], nrows)


def q5_0_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    if imatrix is not None:
        w = _weighted_blocks(rows.reshape(nrows, -1), imatrix, 32)
        d, L = np_make_qx_quants(16, x, 1, w)
        xi = L.astype(np.int64) & 0xFF
    else:
        d, xi = _signed_levels(x, 16)
    return _out([np_fp16_bits(d)[:, None], _pack_qh(xi), _pack_nibbles(xi & 0x0F)], nrows)


def q5_1_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    if imatrix is not None:
        w = _weighted_blocks(rows.reshape(nrows, -1), imatrix, 32)
        d, the_min, L = np_make_qkx_quants(31, x, w, -0.9, 0.05, 36)
        m = (-the_min).astype(F32)
        xi = L.astype(np.int64)
    else:
        d, m, v = _min_max_levels(x, 31)
        xi = np_c_trunc_int(v) & 0xFF  # (uint8_t)(x0 + 0.5f)
    return _out([np_fp16_bits(d)[:, None], np_fp16_bits(m)[:, None], _pack_qh(xi), _pack_nibbles(xi & 0x0F)],
                nrows)


def q8_0_quantize_ref(rows, imatrix=None):
    x, nrows = _blocks(rows, 32)
    amax = np.abs(x).max(axis=1)
    d = (amax / F32(127)).astype(F32)
    idv = np_safe_recip(d)
    with np.errstate(invalid="ignore", over="ignore"):
        q = np_c_to_int8(np_c_roundf((x * idv[:, None]).astype(F32)))
    return _out([np_fp16_bits(d)[:, None], q.astype(np.int8)], nrows)


def _split(data, type_size):
    data = np.ascontiguousarray(data, dtype=np.uint8)
    lead = data.shape[:-1]
    nb = data.shape[-1] // type_size
    return data.reshape(-1, type_size), lead, nb


def _unnibble(qs):
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int64)


def _unqh(qh4):
    qh = qh4.copy().view("<u4")[:, 0].astype(np.int64)
    return (qh[:, None] >> np.arange(32)) & 1


def q4_0_dequantize_ref(data):
    b, lead, nb = _split(data, 18)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    y = ((_unnibble(b[:, 2:]) - 8).astype(F32) * d[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


def q4_1_dequantize_ref(data):
    b, lead, nb = _split(data, 20)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    m = np_fp16_to_f32(b[:, 2:4].copy().view("<u2")[:, 0])
    y = ((_unnibble(b[:, 4:]).astype(F32) * d[:, None]).astype(F32) + m[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


def q5_0_dequantize_ref(data):
    b, lead, nb = _split(data, 22)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    q = _unnibble(b[:, 6:]) | (_unqh(b[:, 2:6]) << 4)
    y = ((q - 16).astype(F32) * d[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


def q5_1_dequantize_ref(data):
    b, lead, nb = _split(data, 24)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    m = np_fp16_to_f32(b[:, 2:4].copy().view("<u2")[:, 0])
    q = _unnibble(b[:, 8:]) | (_unqh(b[:, 4:8]) << 4)
    y = ((q.astype(F32) * d[:, None]).astype(F32) + m[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)


def q8_0_dequantize_ref(data):
    b, lead, nb = _split(data, 34)
    d = np_fp16_to_f32(b[:, :2].copy().view("<u2")[:, 0])
    y = (b[:, 2:].view(np.int8).astype(F32) * d[:, None]).astype(F32)
    return y.reshape(*lead, nb * 32)
