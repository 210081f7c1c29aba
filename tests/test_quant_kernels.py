"""The numba quantizers equal their numpy references exactly, on random and on hard rows.

Hard rows: zeros, signed zeros, constants, one huge outlier, float32 subnormals, +-max fp16, ties of
+-a (the first one wins, as in the C loops), tiny values. Also: fp16 rounding and nearest_int equal the
C tricks, and a round-trip RMSE table per format with asserted bounds.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from numba import types, vectorize
from numba.extending import intrinsic

from ggufq.errors import GGUFQError
from ggufq.kernels import get_format
from ggufq.kernels import dot_common, numerics, numerics_ref

FORMATS = [GT.Q4_0, GT.Q4_1, GT.Q5_0, GT.Q5_1, GT.Q8_0, GT.Q4_K, GT.Q5_K, GT.Q6_K, GT.Q8_K]
K = 512  # two super-blocks


def hard_rows(k: int = K) -> np.ndarray:
    rng = np.random.default_rng(7)
    rows = []
    rows.append(np.zeros(k))
    z = np.zeros(k)
    z[::2] = -0.0
    rows.append(z)
    rows.append(np.full(k, 0.25))
    rows.append(np.full(k, -3.0))
    r = rng.normal(0, 0.02, k)
    r[5] = 1e4
    rows.append(r)
    r = rng.normal(0, 0.02, k)
    r[300] = -1e4
    rows.append(r)
    rows.append(rng.normal(0, 1, k) * 1e-40)  # float32 subnormals
    rows.append(np.where(rng.random(k) < 0.5, 65504.0, -65504.0))
    r = np.tile([0.5, -0.5, 0.25, -0.25], k // 4)  # ties of +-a
    rows.append(r)
    rows.append(np.tile([-0.5, 0.5], k // 2))
    rows.append(rng.normal(0, 1, k) * 1e-8)
    r = rng.normal(0, 1, k)
    r[:32] = 0.0
    r[256:288] = 7.0
    rows.append(r)
    rows.append(np.abs(rng.normal(0, 1, k)))  # all positive: min > 0 paths
    rows.append(-np.abs(rng.normal(0, 1, k)))
    rows.append(np.round(rng.normal(0, 4, k)))  # exact small integers: rounding ties
    r = rng.standard_cauchy(k)
    rows.append(np.clip(r, -1e3, 1e3))
    return np.array(rows, dtype=np.float32)


def random_rows(n: int = 24, k: int = K) -> np.ndarray:
    rng = np.random.default_rng(1)
    scale = np.exp(rng.normal(-3, 1.5, (n, 1)))
    return (rng.normal(0, 1, (n, k)) * scale).astype(np.float32)


@pytest.mark.parametrize("qtype", FORMATS, ids=lambda t: t.name)
@pytest.mark.parametrize("kind", ["random", "hard"])
def test_numba_equals_numpy_reference(qtype, kind):
    fmt = get_format(qtype)
    rows = random_rows() if kind == "random" else hard_rows()
    q = fmt.quantize(rows)
    r = fmt.quantize_ref(rows)
    assert q.shape == r.shape == (rows.shape[0], fmt.row_bytes(K))
    bad = np.nonzero((q != r).any(axis=1))[0]
    assert bad.size == 0, f"{qtype.name}: rows {bad.tolist()} differ from the numpy reference"
    dq = fmt.dequantize(q)
    dr = fmt.dequantize_ref(q)
    assert dq.shape == rows.shape
    assert np.array_equal(dq.view(np.uint32), dr.view(np.uint32)), f"{qtype.name}: dequantize differs"


@pytest.mark.parametrize("qtype", [t for t in FORMATS if t not in (GT.Q8_0, GT.Q8_K)], ids=lambda t: t.name)
def test_numba_equals_numpy_reference_with_imatrix(qtype):
    fmt = get_format(qtype)
    rng = np.random.default_rng(3)
    rows = np.concatenate([random_rows(12), hard_rows()])
    for qw in (rng.random(K).astype(np.float32) * 10, np.ones(K, np.float32),
               np.where(rng.random(K) < 0.3, 0.0, 1.0).astype(np.float32)):
        q = fmt.quantize(rows, qw)
        r = fmt.quantize_ref(rows, qw)
        bad = np.nonzero((q != r).any(axis=1))[0]
        assert bad.size == 0, f"{qtype.name} with imatrix: rows {bad.tolist()} differ"
        assert not np.array_equal(q, fmt.quantize(rows)) or qtype == GT.Q8_0


# the numba scalar helpers, applied elementwise (compiled in the test process, not cached)
_fp16_bits_nb = vectorize(["uint16(float32)"])(lambda v: numerics.fp32_to_fp16(v))
_fp16_back_nb = vectorize(["float32(uint16)"])(lambda h: numerics.fp16_to_fp32(h))
_nearest_int_nb = vectorize(["int64(float32)"])(lambda v: numerics.nearest_int(v))


@intrinsic
def _soft_half_to_float(typingctx, h):
    return types.float32(h), lambda context, builder, sig, args: dot_common.half_to_float(builder, args[0], soft=True)


@intrinsic
def _soft_float_to_half(typingctx, x):
    return types.uint16(x), lambda context, builder, sig, args: dot_common.float_to_half(builder, args[0], soft=True)


_soft_back_nb = vectorize(["float32(uint16)"])(lambda h: _soft_half_to_float(h))
_soft_bits_nb = vectorize(["uint16(float32)"])(lambda v: _soft_float_to_half(v))


def test_fp16_rounding_and_nearest_int():
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    # plus exact fp16 ties, the fp16 subnormal range and overflow
    h = np.arange(0, 0x7C00, dtype=np.uint32)
    mid = ((h.astype(np.float64) + 0.5)).astype(np.float32)  # not used as values, just a shape helper
    lo = h.astype(np.uint16).view(np.float16).astype(np.float32)
    hi = (h + 1).astype(np.uint16).view(np.float16).astype(np.float32)
    ties = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2).astype(np.float32)
    extra = np.concatenate([ties, -ties, np.float32([65504, 65519.99, 65520, 1e6, -1e6, 6e-8, 3e-8, 2.9e-8])])
    x = np.concatenate([x, extra, rng.normal(0, 1, 100_000).astype(np.float32)])
    assert mid.size == h.size
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).view(np.uint16)
    assert np.array_equal(_fp16_bits_nb(x), expected)
    all_h = np.arange(0, 65536, dtype=np.uint32).astype(np.uint16)
    finite = ~np.isnan(all_h.view(np.float16))
    back = _fp16_back_nb(all_h)
    assert np.array_equal(back[finite].view(np.uint32), all_h.view(np.float16)[finite].astype(np.float32).view(np.uint32))
    # the kernels' IR conversions in integer operations (CPUs without F16C): every half (NaNs too), and the
    # floats above, as numpy converts them
    assert np.array_equal(_soft_back_nb(all_h).view(np.uint32), all_h.view(np.float16).astype(np.float32).view(np.uint32))
    assert np.array_equal(_soft_bits_nb(x), expected)
    assert _soft_bits_nb(np.float32([np.inf, -np.inf, np.nan])).tolist() == [0x7C00, 0xFC00, 0x7E00]
    # the converter's row conversion (vectorized, not through fp16_to_fp32): every half, Inf/NaN counted
    rows = np.empty((256, 256), np.float32)
    assert numerics.f16_to_f32_rows(all_h.reshape(256, 256), rows) == 2 * 1024
    rows = rows.reshape(-1)
    assert np.array_equal(rows[finite].view(np.uint32), all_h.view(np.float16)[finite].astype(np.float32).view(np.uint32))
    assert np.isnan(rows[~finite]).all()
    v = np.concatenate([rng.normal(0, 1000, 100_000), np.arange(-50, 50) + 0.5]).astype(np.float32)
    assert np.array_equal(_nearest_int_nb(v), numerics_ref.np_nearest_int(v))
    assert np.array_equal(numerics_ref.np_nearest_int(v), np.rint(v).astype(np.int64))  # round half to even


def test_nan_and_inf_are_refused_naming_the_tensor():
    from ggufq.quantize.recipes import quantize_tensor

    x = np.ones((4, 64), np.float32)
    x[2, 3] = np.nan
    with pytest.raises(GGUFQError, match="blk.7.ffn_up.weight"):
        quantize_tensor("blk.7.ffn_up.weight", x, GT.Q4_0)
    x[2, 3] = np.inf
    with pytest.raises(GGUFQError, match="NaN or Inf"):
        quantize_tensor("w", x, GT.Q8_0)
    with pytest.raises(GGUFQError, match="not a multiple"):
        quantize_tensor("w", np.ones((2, 96), np.float32), GT.Q4_K)


# format -> upper bound of RMSE / std on N(0,1) rows
RMSE_BOUNDS = {GT.Q4_0: 0.100, GT.Q4_1: 0.092, GT.Q5_0: 0.050, GT.Q5_1: 0.045, GT.Q8_0: 0.0064,
               GT.Q4_K: 0.085, GT.Q5_K: 0.043, GT.Q6_K: 0.021, GT.Q8_K: 0.0083}


def test_round_trip_rmse_table(capsys):
    rng = np.random.default_rng(11)
    rows = rng.normal(0, 1, (64, 4096)).astype(np.float32)
    lines = [f"{'format':<6} {'bpw':>6} {'rmse/std':>9} {'max abs':>8} {'bound':>7}"]
    results = {}
    for qtype in FORMATS:
        fmt = get_format(qtype)
        q = fmt.quantize(rows)
        y = fmt.dequantize(q)
        rmse = float(np.sqrt(np.mean((y - rows) ** 2)) / rows.std())
        results[qtype] = rmse
        bpw = 8 * fmt.type_size / fmt.block_size
        lines.append(f"{qtype.name:<6} {bpw:6.3f} {rmse:9.5f} {float(np.abs(y - rows).max()):8.4f} "
                     f"{RMSE_BOUNDS[qtype]:7.4f}")
    with capsys.disabled():
        print("\nround-trip RMSE on N(0,1) rows (64 x 4096):\n" + "\n".join(lines))
    for qtype, rmse in results.items():
        assert rmse < RMSE_BOUNDS[qtype], f"{qtype.name}: rmse {rmse:.5f}"
    # more bits, less error
    assert results[GT.Q8_0] < results[GT.Q6_K] < results[GT.Q5_K] < results[GT.Q4_K] < results[GT.Q4_0]
    assert results[GT.Q5_1] < results[GT.Q4_1]


def test_q8_1_dequantizes_as_its_reference():
    """Q8_1, a read-only format (kernels/q8_1.py): the numba dequantizer equals the numpy reference, and a
    hand-made block gives d * q."""
    rng = np.random.default_rng(81)
    fmt = get_format(GT.Q8_1)
    blocks = rng.integers(0, 256, (64, 36), dtype=np.uint8)
    blocks[:, 0:2] = np.array([0.25], np.float16).view(np.uint8)  # finite scales (random bits may be NaN)
    np.testing.assert_array_equal(fmt.dequantize(blocks.reshape(2, -1)), fmt.dequantize_ref(blocks.reshape(2, -1)))
    one = np.zeros(36, np.uint8)
    one[0:2] = np.array([0.5], np.float16).view(np.uint8)
    one[4:] = np.arange(-16, 16, dtype=np.int8).view(np.uint8)
    np.testing.assert_array_equal(fmt.dequantize(one), 0.5 * np.arange(-16, 16, dtype=np.float32))
    from ggufq.kernels.registry import quantizable_types
    assert GT.Q8_1 not in quantizable_types()  # read only: quantize, convert and the recipes refuse it


@pytest.mark.parametrize("qtype", [GT.Q4_0, GT.Q4_1, GT.Q5_0, GT.Q5_1, GT.Q8_0, GT.Q4_K, GT.Q5_K, GT.Q6_K],
                         ids=lambda q: q.name)
def test_dequantize_is_ggmls_bit_for_bit(qtype):
    """dequantize (the runtime's row dequantizer) gives gguf's floats bit for bit, the sign of every zero
    included: a requantize to F16 or an export to BF16 writes those bits (Q5_0's -0.0 once came out +0.0)."""
    from gguf import quants
    rng = np.random.default_rng(int(qtype))
    x = rng.standard_normal((8, 512)).astype(np.float32)
    x[0, :64] = 0.0
    x[1] = -np.abs(x[1])
    fmt = get_format(qtype)
    raw = fmt.quantize(x)
    ours = fmt.dequantize(raw)
    ref = quants.dequantize(raw, qtype).reshape(ours.shape).astype(np.float32)
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))
