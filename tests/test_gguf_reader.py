"""The validated reader agrees with gguf's GGUFReader on the real models and refuses hostile files."""
from __future__ import annotations

import struct
import subprocess
import sys

import gguf
import numpy as np
import pytest

from ggufq.errors import GGUFFormatError
from ggufq.files.gguf_reader import GGUFFile

from .conftest import GEMMA, SMOL


@pytest.mark.parametrize("path", [SMOL, GEMMA], ids=["smollm2", "gemma3"])
def test_reader_agrees_with_gguf_package(path):
    ref = gguf.GGUFReader(path)
    g = GGUFFile(path)
    mapped = np.frombuffer(g._mmap, np.uint8)
    ref_keys = [k for k in ref.fields if not k.startswith("GGUF.")]
    assert list(g.kv) == ref_keys
    for key in ref_keys:
        f = ref.fields[key]
        kv = g.kv[key]
        assert kv.vtype == f.types[0], key
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            assert kv.subtype == f.types[-1], key
            if f.types[-1] == gguf.GGUFValueType.STRING:
                assert kv.value == [bytes(f.parts[i]).decode() for i in f.data], key
            else:
                assert np.array_equal(kv.value, np.array([f.parts[i][0] for i in f.data])), key
        elif f.types[0] == gguf.GGUFValueType.STRING:
            assert kv.value == bytes(f.parts[-1]).decode(), key
        else:
            assert kv.value == f.parts[-1][0], key
    assert [t.name for t in ref.tensors] == list(g.tensors)
    for t in ref.tensors:
        mine = g.tensors[t.name]
        assert mine.qtype == t.tensor_type
        assert list(mine.shape) == [int(x) for x in t.shape]
        assert mine.offset == t.data_offset
        assert mine.nbytes == t.n_bytes
        assert np.shares_memory(mine.data, mapped)  # a view of the file's mapping, not a copy
        assert np.array_equal(mine.data.reshape(-1).view(np.uint8), np.asarray(t.data).reshape(-1).view(np.uint8))
    g.close()


def _header(n_tensors=0, n_kv=0, version=3):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _kv_str(key, val):
    kb, vb = key.encode(), val
    return struct.pack("<Q", len(kb)) + kb + struct.pack("<I", 8) + struct.pack("<Q", len(vb)) + vb


def _tensor_info(name, dims, ttype, offset):
    nb = name.encode()
    return (struct.pack("<Q", len(nb)) + nb + struct.pack("<I", len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ttype, offset))


def _pad(b, align=32):
    return b + b"\0" * (-len(b) % align)


def _file(tmp_path, content: bytes, name="bad.gguf"):
    p = tmp_path / name
    p.write_bytes(content)
    return p


HOSTILE = {
    "empty": b"",
    "bad magic": b"GGUX" + b"\0" * 40,
    "version 1": _header(version=1) + b"\0" * 16,
    "version 99": _header(version=99) + b"\0" * 16,
    "huge kv count": _header(0, 1 << 60),
    "huge tensor count": _header(1 << 60, 0),
    "string past end": _header(0, 1) + struct.pack("<Q", 1 << 40) + b"abc",
    "bad utf8 key": _header(0, 1) + struct.pack("<Q", 2) + b"\xff\xfe" + struct.pack("<I", 4) + b"\0" * 4,
    "unknown value type": _header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 99) + b"\0" * 8,
    "array past end": _header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 4, 1 << 50),
    "duplicate key": _header(0, 2) + _kv_str("a", b"x") + _kv_str("a", b"y"),
    "too many dims": _pad(_header(1, 0) + _tensor_info("t", [1, 1, 1, 1, 1], 0, 0)) + b"\0" * 64,
    "unknown tensor type": _pad(_header(1, 0) + _tensor_info("t", [4], 77, 0)) + b"\0" * 64,
    "partial block": _pad(_header(1, 0) + _tensor_info("t", [33], 2, 0)) + b"\0" * 64,
    "unaligned offset": _pad(_header(1, 0) + _tensor_info("t", [4], 0, 3)) + b"\0" * 64,
    "data past end": _pad(_header(1, 0) + _tensor_info("t", [1024], 0, 0)) + b"\0" * 64,
    "overlap": _pad(_header(2, 0) + _tensor_info("a", [16], 0, 0) + _tensor_info("b", [16], 0, 32)) + b"\0" * 128,
    "duplicate tensor": _pad(_header(2, 0) + _tensor_info("a", [8], 0, 0) + _tensor_info("a", [8], 0, 32)) + b"\0" * 64,
    "zero dim": _pad(_header(1, 0) + _tensor_info("t", [0], 0, 0)) + b"\0" * 64,
    "bad alignment": _header(0, 1) + struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, 3),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_are_refused(tmp_path, name):
    p = _file(tmp_path, HOSTILE[name])
    with pytest.raises(GGUFFormatError):
        GGUFFile(p)


def test_truncated_real_model_is_refused(tmp_path):
    data = open(SMOL, "rb").read(3_000_000)
    with pytest.raises(GGUFFormatError, match="truncated"):
        GGUFFile(_file(tmp_path, data))
    header_only = open(SMOL, "rb").read(200_000)  # cut inside the vocabulary
    with pytest.raises(GGUFFormatError):
        GGUFFile(_file(tmp_path, header_only, "h.gguf"))


def test_cli_reports_one_line_and_exit_2(tmp_path):
    p = _file(tmp_path, HOSTILE["huge kv count"])
    r = subprocess.run([sys.executable, "-m", "ggufq", "inspect", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_inspect_json_totals():
    import json
    r = subprocess.run([sys.executable, "-m", "ggufq", "inspect", SMOL, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["architecture"] == "llama"
    assert s["tokenizer"]["vocab_size"] == 49152 and s["tokenizer"]["chat_template"] is True
    assert s["hparams"]["block_count"] == 30 and s["tokenizer"]["pre"] == "smollm"
    assert s["totals"]["tensors"] == 272
    ref = gguf.GGUFReader(SMOL)
    n_bytes = sum(int(t.n_bytes) for t in ref.tensors)
    assert s["totals"]["bytes"] == n_bytes
    assert s["totals"]["bits_per_weight"] == pytest.approx(8 * n_bytes / sum(int(t.n_elements) for t in ref.tensors))


def test_bad_utf8_in_a_string_array_is_one_line(tmp_path):
    # arrays of strings are walked when the file opens and decoded when first read (quantize never reads
    # the vocabulary as str): a bad element still ends in a GGUFFormatError, and the CLI in one line
    key = b"tokenizer.ggml.tokens"
    items = [b"ok", b"\xff\xfe", b"fine"]
    array = struct.pack("<IQ", 8, len(items)) + b"".join(struct.pack("<Q", len(s)) + s for s in items)
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<I", 9) + array
    arch = _kv_str("general.architecture", b"llama")
    p = _file(tmp_path, _header(0, 2) + arch + kv)
    with GGUFFile(p) as g:
        assert g.kv[key.decode()].span[1] == p.stat().st_size  # the walk found the array's end
        with pytest.raises(GGUFFormatError, match="not valid UTF-8"):
            g.get(key.decode())
    r = subprocess.run([sys.executable, "-m", "ggufq", "inspect", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "UTF-8" in r.stderr


def test_in_memory_file_equals_the_mapped_one(monkeypatch):
    """GGUFFile(in_memory=True) (the runtime's default for files that fit) reads the same metadata and
    tensor bytes as the mapping, and closes; Model.load keeps a file mapped when GGUFQ_MMAP=1."""
    from ggufq.runtime.model import fits_in_memory
    with GGUFFile(SMOL) as mapped, GGUFFile(SMOL, in_memory=True) as read:
        assert read.get("tokenizer.ggml.tokens") == mapped.get("tokenizer.ggml.tokens")
        assert list(read.tensors) == list(mapped.tensors)
        for name, t in mapped.tensors.items():
            np.testing.assert_array_equal(read.tensors[name].data, t.data)
            assert not read.tensors[name].data.flags.writeable
    assert fits_in_memory(SMOL)
    monkeypatch.setenv("GGUFQ_MMAP", "1")
    assert not fits_in_memory(SMOL)


def test_compiled_string_walk_equals_the_python_one(tmp_path, monkeypatch):
    """Where numba is loaded (the runtime, quantizers) a large string array's starts come from a compiled
    walk (kernels/gguf_strings.py); elsewhere from the Python loop. Same starts on both vocabularies, the
    same message for an array cut short."""
    import numba  # noqa: F401
    cut = _file(tmp_path, open(SMOL, "rb").read(300_000))   # inside SmolLM2's 49k tokens

    def walk(path):
        with GGUFFile(path) as g:
            return {k: kv.raw.starts for k, kv in g.kv.items() if hasattr(kv.raw, "starts")}

    def refusal():
        with pytest.raises(GGUFFormatError) as e:
            GGUFFile(cut)
        return str(e.value)

    for path in (SMOL, GEMMA):
        fast, message = walk(path), refusal()
        with monkeypatch.context() as m:
            m.delitem(sys.modules, "numba")
            ref, ref_message = walk(path), refusal()
        assert isinstance(fast["tokenizer.ggml.tokens"], np.ndarray)   # the compiled walk ran
        assert not isinstance(ref["tokenizer.ggml.tokens"], np.ndarray)
        assert list(fast) == list(ref)
        for k in ref:
            np.testing.assert_array_equal(np.asarray(fast[k], np.uint64), np.frombuffer(ref[k], np.uint64))
        assert message == ref_message and "needs" in message
