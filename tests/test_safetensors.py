"""ggufq.safetensors: round trips (single file, sharded with index), HF shard naming, and hostile files
refused with one GGUFQError line."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from ggufq.cli import main  # noqa: F401  (the package imports cleanly without torch)
from ggufq.errors import GGUFQError
from ggufq.files.safetensors import (TensorSpec, open_safetensors, parse_size, plan_shards, read_header,
                               write_safetensors, write_safetensors_sharded)
from kernels.floats import f32_to_bf16_bits

RNG = np.random.default_rng(1)
ARRAYS = {
    "w.f32": RNG.standard_normal((3, 5)).astype(np.float32),
    "w.bf16": f32_to_bf16_bits(RNG.standard_normal((4, 8))),
    "w.f16": RNG.standard_normal((2, 2, 3)).astype(np.float16),
    "empty": np.zeros((0, 4), np.float32),
    "scalar_vec": np.array([1.5], np.float32),
}
SPECS = [TensorSpec("w.f32", "F32", (3, 5)), TensorSpec("w.bf16", "BF16", (4, 8)),
         TensorSpec("w.f16", "F16", (2, 2, 3)), TensorSpec("empty", "F32", (0, 4)),
         TensorSpec("scalar_vec", "F32", (1,))]


def test_round_trip_single(tmp_path):
    files = write_safetensors_sharded(tmp_path, SPECS, lambda s: ARRAYS[s.name], 10**9)
    assert files == ["model.safetensors"]
    start, header = read_header(tmp_path / "model.safetensors")
    assert start % 8 == 0 and header["__metadata__"] == {"format": "pt"}
    t = open_safetensors(tmp_path)
    assert list(t) == [s.name for s in SPECS]
    for s in SPECS:
        assert t[s.name].dtype == s.dtype and t[s.name].shape == s.shape
        assert np.array_equal(t[s.name].data, ARRAYS[s.name])
        if s.nbytes:
            assert not t[s.name].data.flags.writeable  # a view of the read-only mapping


def test_round_trip_sharded_and_chunks(tmp_path):
    # produce may yield row blocks; the file is the same as from whole arrays
    def chunks(s):
        a = ARRAYS[s.name]
        return (a[i:i + 1] for i in range(a.shape[0])) if a.ndim > 1 and a.shape[0] else a
    files = write_safetensors_sharded(tmp_path, SPECS, chunks, 70)  # 60 | 64 | 24+0+4 bytes
    assert files == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                     "model-00003-of-00003.safetensors", "model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(s.nbytes for s in SPECS)
    assert index["weight_map"]["w.f32"] == "model-00001-of-00003.safetensors"
    t = open_safetensors(tmp_path / "model.safetensors.index.json")
    for s in SPECS:
        assert np.array_equal(t[s.name].data, ARRAYS[s.name])


def test_plan_shards():
    specs = [TensorSpec(f"t{i}", "F32", (n,)) for i, n in enumerate([10, 10, 30, 5, 1])]  # bytes 40 40 120 20 4
    assert [[s.name for s in sh] for sh in plan_shards(specs, 80)] == [["t0", "t1"], ["t2"], ["t3", "t4"]]
    assert len(plan_shards(specs, 10**6)) == 1


def test_writer_checks_what_it_is_given(tmp_path):
    with pytest.raises(ValueError, match="expected F32"):
        write_safetensors(tmp_path / "x.safetensors", [TensorSpec("a", "F32", (2,))],
                          lambda s: np.zeros(2, np.float64))
    with pytest.raises(ValueError, match="bytes"):
        write_safetensors(tmp_path / "x.safetensors", [TensorSpec("a", "F32", (2, 2))],
                          lambda s: iter([np.zeros((1, 2), np.float32)]))


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("100MB") == 10**8
    assert parse_size("512MiB") == 512 * 2**20 and parse_size("1000") == 1000 and parse_size("1.5G") == 1.5e9
    for bad in ("", "lots", "-1GB", "0", "5XB"):
        with pytest.raises(GGUFQError):
            parse_size(bad)


def _file(tmp_path, header, data=b"", raw_len=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw) if raw_len is None else raw_len) + raw + data)
    return p


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize("header, data, raw_len, message", [
    (GOOD, b"\0" * 8, 10**12, "does not fit"),
    (GOOD, b"\0" * 8, 10**6, "does not fit"),
    (b"{not json", b"", None, "not valid JSON"),
    (b"\xff\xfe{}", b"", None, "not valid UTF-8"),
    (b"[1, 2]", b"", None, "not a JSON object"),
    (GOOD, b"\0" * 4, None, "outside"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "needs 12 bytes"),
    ({"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, None, "dtype 'I64'"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "invalid shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, None, "outside"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, "exactly dtype"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlap"),
    ({"__metadata__": {"format": 1}, **GOOD}, b"\0" * 8, None, "__metadata__"),
])
def test_hostile_files(tmp_path, header, data, raw_len, message):
    p = _file(tmp_path, header, data, raw_len)
    with pytest.raises(GGUFQError, match=message) as e:
        open_safetensors(p)
    assert "\n" not in str(e.value)


def test_short_and_missing_files(tmp_path):
    (tmp_path / "short.safetensors").write_bytes(b"\1\0")
    with pytest.raises(GGUFQError, match="only 2 bytes"):
        open_safetensors(tmp_path / "short.safetensors")
    with pytest.raises(GGUFQError, match="no such file"):
        open_safetensors(tmp_path / "absent.safetensors")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(GGUFQError, match="no model.safetensors"):
        open_safetensors(empty)


@pytest.mark.parametrize("weight_map, message", [
    ({"w.f32": "../model.safetensors"}, "not a plain file name"),
    ({"w.f32": "missing.safetensors"}, "missing"),
    ({"w.f32": "model.safetensors", "nope": "model.safetensors"}, "'nope' is not in"),
    ({"w.f32": "model.safetensors"}, "does not list"),
    ("not a map", "weight_map"),
])
def test_hostile_index(tmp_path, weight_map, message):
    write_safetensors_sharded(tmp_path, SPECS, lambda s: ARRAYS[s.name], 10**9)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(GGUFQError, match=message):
        open_safetensors(tmp_path)


def test_index_not_json(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{")
    with pytest.raises(GGUFQError, match="not valid JSON"):
        open_safetensors(tmp_path)
